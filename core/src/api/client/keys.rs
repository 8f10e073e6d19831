//! Device keys for end-to-end encryption (spec: "End-to-End Encryption",
//! key management API): `/keys/upload`, `/keys/query`, `/keys/claim` and
//! `/keys/changes`, and the device-list updates `/sync` shares with them.
//!
//! Keys are stored as the JSON text their device signed and handed out as
//! such; only signatures uploaded later and the device's display name are
//! added when they are served.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::State;
use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use ruma::{
    CanonicalJsonValue, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UInt,
    UserId,
    api::client::keys::{
        claim_keys::v3 as claim, get_key_changes::v3 as changes, get_keys::v3 as query,
        upload_keys::v3 as upload,
    },
    encryption::OneTimeKey,
    serde::Raw,
    signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::{Value, json, value::RawValue};

use super::devices::announce_device_change;
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
    storage::keys::{KeySignatureRow, OneTimeKeyRow},
    streams::{Positions, Stream},
};

/// Matrix's unpadded base64, read leniently (padding tolerated).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether `object` carries a valid ed25519 signature by `signer` with the
/// key `ed25519:<key_name>`, whose public key is `public_key` (base64).
pub(super) fn has_valid_signature(
    object: &Value,
    signer: &str,
    key_name: &str,
    public_key: &str,
) -> bool {
    let Some(signature) = object["signatures"][signer][format!("ed25519:{key_name}")].as_str()
    else {
        return false;
    };
    let (Ok(signature), Ok(public_key)) = (BASE64.decode(signature), BASE64.decode(public_key))
    else {
        return false;
    };
    let Ok(CanonicalJsonValue::Object(object)) = CanonicalJsonValue::try_from(object.clone())
    else {
        return false;
    };
    let Ok(canonical) = to_canonical_json_string_for_signing(&object) else {
        return false;
    };
    verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        canonical.as_bytes(),
    )
    .is_ok()
}

/// The signed part of a key object: without `signatures` and `unsigned`.
pub(super) fn signed_part(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    object
}

pub(super) fn parse_object(raw: &RawValue, what: &str) -> ApiResult<Value> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(MatrixError::bad_json(format!(
            "{what} must be a JSON object"
        ))),
    }
}

/// `POST /keys/upload`
pub async fn upload(
    State(state): State<AppState>,
    req: Ruma<upload::Request>,
) -> ApiResult<RumaResponse<upload::Response>> {
    let session = req.session();
    let user = session.user_id.as_str();
    let device = session.device_id.as_str();
    let body = &req.body;

    if let Some(device_keys) = &body.device_keys {
        let keys = parse_object(device_keys.json(), "device_keys")?;
        if keys["user_id"].as_str() != Some(user) || keys["device_id"].as_str() != Some(device) {
            return Err(MatrixError::invalid_param(
                "device_keys must name the user and device of the access token",
            ));
        }
        let own_key = keys["keys"][format!("ed25519:{device}")]
            .as_str()
            .unwrap_or_default();
        if !has_valid_signature(&keys, user, device, own_key) {
            return Err(MatrixError::invalid_param(
                "device_keys must be signed by the device's own ed25519 key",
            ));
        }
        let stored = state.storage.device_keys(user, device).await?;
        let unchanged = stored
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .is_some_and(|s| s == keys);
        if !unchanged {
            state
                .storage
                .set_device_keys(user, device, device_keys.json().get())
                .await?;
            announce_device_change(&state, user).await?;
        }
    }

    let one_time = key_rows(&body.one_time_keys)?;
    let fallback = key_rows(&body.fallback_keys)?;
    let existing = state
        .storage
        .existing_one_time_keys(user, device, &one_time)
        .await?;
    let mut new_keys = Vec::new();
    for key in one_time {
        match existing.get(&(key.algorithm.clone(), key.key_id.clone())) {
            Some(stored) if same_json(stored, &key.json) => {}
            Some(_) => {
                return Err(MatrixError::invalid_param(format!(
                    "One-time key {}:{} already exists with different content",
                    key.algorithm, key.key_id
                )));
            }
            None => new_keys.push(key),
        }
    }
    if !new_keys.is_empty() || !fallback.is_empty() {
        state
            .storage
            .add_device_keys(user, device, &new_keys, &fallback)
            .await?;
    }
    let counts = one_time_key_counts(&state, user, device).await?.0;
    Ok(RumaResponse(upload::Response::new(counts)))
}

fn key_rows(keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>) -> ApiResult<Vec<OneTimeKeyRow>> {
    keys.iter()
        .map(|(id, key)| {
            let json = key.json().get();
            if serde_json::from_str::<Value>(json).is_err() {
                return Err(MatrixError::bad_json(format!("Key {id} is not JSON")));
            }
            Ok(OneTimeKeyRow {
                algorithm: id.algorithm().to_string(),
                key_id: id.key_name().to_string(),
                json: json.to_owned(),
            })
        })
        .collect()
}

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A device's one-time key counts (always with `signed_curve25519`, as
/// clients expect) and the algorithms of its unused fallback keys.
pub(super) async fn one_time_key_counts(
    state: &AppState,
    user: &str,
    device: &str,
) -> ApiResult<(
    BTreeMap<OneTimeKeyAlgorithm, UInt>,
    Vec<OneTimeKeyAlgorithm>,
)> {
    let stored = state.storage.key_counts(user, device).await?;
    let mut counts = BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN)]);
    for (algorithm, count) in stored.one_time {
        counts.insert(
            algorithm.as_str().into(),
            UInt::try_from(count).unwrap_or_default(),
        );
    }
    let fallback = stored
        .unused_fallback
        .iter()
        .map(|a| a.as_str().into())
        .collect();
    Ok((counts, fallback))
}

/// `POST /keys/query`
pub async fn query(
    State(state): State<AppState>,
    req: Ruma<query::Request>,
) -> ApiResult<RumaResponse<query::Response>> {
    let requester = req.session().user_id.as_str();
    let mut response = query::Response::new();
    let mut local = Vec::new();
    for (user, devices) in &req.body.device_keys {
        if user.server_name() == state.server_name {
            local.push((user.clone(), devices));
        } else {
            federation_failure(&mut response.failures, user);
        }
    }
    let users: Vec<String> = local.iter().map(|(u, _)| u.to_string()).collect();
    let signatures = visible_signatures(&state, requester, &users).await?;

    let mut wanted: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (user, devices) in &local {
        response.device_keys.entry(user.clone()).or_default();
        wanted.insert(
            user.as_str(),
            devices.iter().map(|d| d.as_str()).collect::<HashSet<_>>(),
        );
    }
    for row in state.storage.device_keys_of(&users).await? {
        let devices = &wanted[row.user_id.as_str()];
        if !devices.is_empty() && !devices.contains(row.device_id.as_str()) {
            continue;
        }
        let mut keys: Value = serde_json::from_str(&row.json).unwrap_or_default();
        merge_signatures(&mut keys, &signatures, &row.user_id, &row.device_id);
        keys["unsigned"] = json!({ "device_display_name": row.display_name });
        let Ok(user) = OwnedUserId::try_from(row.user_id.as_str()) else {
            continue;
        };
        let device = OwnedDeviceId::from(row.device_id.as_str());
        response
            .device_keys
            .entry(user)
            .or_default()
            .insert(device, to_raw(&keys)?);
    }
    for row in state.storage.cross_signing_keys(&users).await? {
        let Ok(user) = OwnedUserId::try_from(row.user_id.as_str()) else {
            continue;
        };
        let mut key: Value = serde_json::from_str(&row.json).unwrap_or_default();
        merge_signatures(&mut key, &signatures, &row.user_id, &row.public_key);
        let key = to_raw(&key)?;
        match row.key_type.as_str() {
            "master" => response.master_keys.insert(user, key),
            "self_signing" => response.self_signing_keys.insert(user, key),
            // The user-signing key is private to its owner.
            "user_signing" if row.user_id == requester => {
                response.user_signing_keys.insert(user, key)
            }
            _ => None,
        };
    }
    Ok(RumaResponse(response))
}

/// Detached signatures on the users' keys that `requester` may see: those
/// the key's owner made, and those `requester` made. (Another user's
/// signature of someone's master key is their private trust decision.)
async fn visible_signatures(
    state: &AppState,
    requester: &str,
    users: &[String],
) -> ApiResult<Vec<KeySignatureRow>> {
    Ok(state
        .storage
        .key_signatures_on(users)
        .await?
        .into_iter()
        .filter(|s| s.signer_user_id == s.target_user_id || s.signer_user_id == requester)
        .collect())
}

fn merge_signatures(key: &mut Value, signatures: &[KeySignatureRow], user: &str, key_id: &str) {
    for sig in signatures
        .iter()
        .filter(|s| s.target_user_id == user && s.target_key_id == key_id)
    {
        if !key["signatures"].is_object() {
            key["signatures"] = json!({});
        }
        if !key["signatures"][&sig.signer_user_id].is_object() {
            key["signatures"][&sig.signer_user_id] = json!({});
        }
        key["signatures"][&sig.signer_user_id][&sig.signer_key_id] = json!(sig.signature);
    }
}

fn to_raw<T>(value: &Value) -> ApiResult<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(value).map_err(|_| MatrixError::internal())?,
    ))
}

/// Users on other servers cannot be asked: this server does not federate yet.
fn federation_failure(failures: &mut BTreeMap<String, Value>, user: &UserId) {
    failures.insert(
        user.server_name().to_string(),
        json!({ "status": 503, "message": "This server does not federate yet" }),
    );
}

/// `POST /keys/claim`
pub async fn claim(
    State(state): State<AppState>,
    req: Ruma<claim::Request>,
) -> ApiResult<RumaResponse<claim::Response>> {
    let mut response = claim::Response::new(BTreeMap::new());
    for (user, devices) in &req.body.one_time_keys {
        if user.server_name() != state.server_name {
            federation_failure(&mut response.failures, user);
            continue;
        }
        for (device, algorithm) in devices {
            let Some((key_id, json)) = state
                .storage
                .claim_key(user.as_str(), device.as_str(), algorithm.as_str())
                .await?
            else {
                // An unknown device, or one with no keys left: nothing for it.
                continue;
            };
            let Ok(id) = OwnedOneTimeKeyId::try_from(format!("{algorithm}:{key_id}")) else {
                continue;
            };
            let key = RawValue::from_string(json).map_err(|_| MatrixError::internal())?;
            response
                .one_time_keys
                .entry(user.clone())
                .or_default()
                .entry(device.clone())
                .or_default()
                .insert(id, Raw::from_json(key));
        }
    }
    Ok(RumaResponse(response))
}

/// `GET /keys/changes`
pub async fn changes(
    State(state): State<AppState>,
    req: Ruma<changes::Request>,
) -> ApiResult<RumaResponse<changes::Response>> {
    let user = &req.session().user_id;
    let parse = |token: &str| {
        token
            .parse::<Positions>()
            .map_err(|_| MatrixError::invalid_param(format!("Invalid token `{token}`")))
    };
    let from = parse(&req.body.from)?;
    let to = parse(&req.body.to)?.earliest(&state.live.positions.current());
    let (changed, left) = device_list_updates(&state, user, &from, &to, None).await?;
    Ok(RumaResponse(changes::Response::new(changed, left)))
}

/// Whose device lists a user must re-fetch, and whose to forget, for the
/// range `(since, upto]`: users sharing a room whose devices or keys
/// changed, or who newly share a room with the user (`changed`), and users
/// who no longer share any room with them (`left`). `sharing` is the
/// user's current room-mates when the caller has already read them.
pub(super) async fn device_list_updates(
    state: &AppState,
    user: &UserId,
    since: &Positions,
    upto: &Positions,
    sharing: Option<&HashSet<String>>,
) -> ApiResult<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    let devices_changed = upto.get(Stream::DeviceLists) > since.get(Stream::DeviceLists);
    let membership = if upto.get(Stream::Events) > since.get(Stream::Events) {
        state
            .storage
            .membership_changes_between(
                user.as_str(),
                since.get(Stream::Events),
                upto.get(Stream::Events),
            )
            .await?
    } else {
        Vec::new()
    };
    if !devices_changed && membership.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let read;
    let sharing = match sharing {
        Some(sharing) => sharing,
        None => {
            read = state
                .storage
                .users_sharing_rooms(user.as_str())
                .await?
                .into_iter()
                .collect::<HashSet<String>>();
            &read
        }
    };

    let mut changed = HashSet::new();
    let mut gone = HashSet::new();
    for (room, member, membership) in membership {
        let joined = membership == "join";
        if member == user.as_str() && matches!(membership.as_str(), "invite" | "knock") {
            // Invited or knocking, the user shares nothing yet.
            continue;
        }
        if member == user.as_str() {
            // The user joined or left a room: everyone in it is new or gone.
            let members = state.storage.room_members_with(&room, "join").await?;
            let members = members.into_iter().filter(|m| m != user.as_str());
            if joined {
                changed.extend(members);
            } else {
                gone.extend(members);
            }
        } else if joined {
            changed.insert(member);
        } else {
            gone.insert(member);
        }
    }
    if devices_changed {
        changed.extend(
            state
                .storage
                .device_list_changes_since(
                    since.get(Stream::DeviceLists),
                    upto.get(Stream::DeviceLists),
                )
                .await?,
        );
    }
    let collect = |users: HashSet<String>, keep: &dyn Fn(&String) -> bool| {
        let mut users: Vec<OwnedUserId> = users
            .into_iter()
            .filter(|u| keep(u))
            .filter_map(|u| OwnedUserId::try_from(u).ok())
            .collect();
        users.sort();
        users
    };
    let changed = collect(changed, &|u| sharing.contains(u));
    let left = collect(gone, &|u| !sharing.contains(u) && u != user.as_str());
    Ok((changed, left))
}
