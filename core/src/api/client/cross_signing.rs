//! Cross-signing (spec: "Cross-signing"): a user's master, self-signing and
//! user-signing keys, and the signatures that tie devices and other users'
//! master keys to them.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::api::client::{
    keys::{upload_signatures::v3 as signatures, upload_signing_keys::v3 as signing_keys},
    uiaa::AuthType,
};
use serde_json::{Value, json};

use super::{
    devices::announce_device_change,
    keys::{has_valid_signature, parse_object, signed_part},
    uia::{self, Subject},
};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
    storage::keys::{CrossSigningKeyRow, KeySignatureRow},
};

/// A cross-signing key's single ed25519 public key, if it is well formed
/// for `user` and `usage`.
fn check_key(key: &Value, user: &str, usage: &str) -> ApiResult<String> {
    let invalid = |problem: &str| MatrixError::invalid_param(format!("{usage} key: {problem}"));
    if key["user_id"].as_str() != Some(user) {
        return Err(invalid("user_id must be the uploading user"));
    }
    let usages = key["usage"].as_array().cloned().unwrap_or_default();
    if !usages.iter().any(|u| u.as_str() == Some(usage)) {
        return Err(invalid("usage must include the key's role"));
    }
    let keys = key["keys"].as_object().cloned().unwrap_or_default();
    let mut entries = keys.iter();
    match (entries.next(), entries.next()) {
        (Some((id, Value::String(public))), None) if id == &format!("ed25519:{public}") => {
            Ok(public.clone())
        }
        _ => Err(invalid(
            "keys must hold exactly one `ed25519:<public key>` entry",
        )),
    }
}

/// `POST /keys/device_signing/upload`: as Synapse, the first upload needs no
/// user-interactive auth, nor does re-uploading the keys already stored;
/// replacing keys does.
pub async fn upload_signing_keys(
    State(state): State<AppState>,
    req: Ruma<signing_keys::Request>,
) -> ApiResult<RumaResponse<signing_keys::Response>> {
    let session = req.session();
    let user = session.user_id.as_str();
    let body = &req.body;
    let stored = state.storage.cross_signing_keys(&[user.to_owned()]).await?;
    let stored_key = |kind: &str| stored.iter().find(|k| k.key_type == kind);

    let mut uploads = Vec::new();
    for (kind, key) in [
        ("master", &body.master_key),
        ("self_signing", &body.self_signing_key),
        ("user_signing", &body.user_signing_key),
    ] {
        if let Some(key) = key {
            let value = parse_object(key.json(), kind)?;
            let public_key = check_key(&value, user, kind)?;
            uploads.push((kind, value, public_key, key.json().get().to_owned()));
        }
    }
    if uploads.is_empty() {
        return Ok(RumaResponse(signing_keys::Response::new()));
    }

    // The subkeys must be signed by the master key they are uploaded with,
    // or else the stored one.
    let master = uploads
        .iter()
        .find(|(kind, ..)| *kind == "master")
        .map(|(_, _, public, _)| public.clone())
        .or_else(|| stored_key("master").map(|k| k.public_key.clone()))
        .ok_or_else(|| {
            MatrixError::invalid_param("Upload a master key before (or with) its subkeys")
        })?;
    for (kind, value, ..) in &uploads {
        if *kind != "master" && !has_valid_signature(value, user, &master, &master) {
            return Err(MatrixError::invalid_param(format!(
                "{kind} key: must be signed by the master key"
            )));
        }
    }

    let replaces_keys = uploads.iter().any(|(kind, value, ..)| {
        stored_key(kind).is_some_and(|stored| {
            serde_json::from_str::<Value>(&stored.json).ok().as_ref() != Some(value)
        })
    });
    if stored_key("master").is_some() && replaces_keys {
        uia::authenticate(
            &state,
            "POST /keys/device_signing/upload",
            body.auth.as_ref(),
            &[&[AuthType::Password]],
            Subject::User(&session.user_id),
        )
        .await?;
    }

    let rows: Vec<CrossSigningKeyRow> = uploads
        .into_iter()
        .map(|(kind, _, public_key, json)| CrossSigningKeyRow {
            user_id: user.to_owned(),
            key_type: kind.to_owned(),
            public_key,
            json,
        })
        .collect();
    state.storage.set_cross_signing_keys(&rows).await?;
    announce_device_change(&state, user).await?;
    Ok(RumaResponse(signing_keys::Response::new()))
}

/// `POST /keys/signatures/upload`: a user signs their own devices with their
/// self-signing key, their master key with a device, or another user's
/// master key with their user-signing key. Each signature is checked
/// against the key as stored; bad ones are reported per key.
pub async fn upload_signatures(
    State(state): State<AppState>,
    req: Ruma<signatures::Request>,
) -> ApiResult<RumaResponse<signatures::Response>> {
    let signer = req.session().user_id.as_str();
    let own_keys = state
        .storage
        .cross_signing_keys(&[signer.to_owned()])
        .await?;
    let own_key = |kind: &str| {
        own_keys
            .iter()
            .find(|k| k.key_type == kind)
            .map(|k| k.public_key.clone())
    };
    let mut accepted = Vec::new();
    let mut failures: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (target, keys) in &req.body.signed_keys {
        let objects: BTreeMap<String, Value> = serde_json::to_value(keys)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        for (key_id, object) in objects {
            let outcome = if target.as_str() == signer {
                sign_own_key(&state, signer, &key_id, &object, &own_key).await?
            } else {
                sign_other_master(&state, signer, target.as_str(), &key_id, &object, &own_key)
                    .await?
            };
            match outcome {
                Ok(mut rows) => accepted.append(&mut rows),
                Err((errcode, error)) => {
                    failures
                        .entry(target.to_string())
                        .or_default()
                        .insert(key_id, json!({ "errcode": errcode, "error": error }));
                }
            }
        }
    }
    if !accepted.is_empty() {
        state.storage.add_key_signatures(&accepted).await?;
        announce_device_change(&state, signer).await?;
    }
    let mut response = signatures::Response::new();
    response.failures =
        serde_json::from_value(json!(failures)).map_err(|_| MatrixError::internal())?;
    Ok(RumaResponse(response))
}

type Outcome = Result<Vec<KeySignatureRow>, (&'static str, String)>;

/// The uploaded object must be the stored key, as signed by its owner.
fn matches_stored(object: &Value, stored_json: &str) -> bool {
    serde_json::from_str::<Value>(stored_json)
        .is_ok_and(|stored| signed_part(&stored) == signed_part(object))
}

async fn sign_own_key(
    state: &AppState,
    user: &str,
    key_id: &str,
    object: &Value,
    own_key: &(dyn Fn(&str) -> Option<String> + Sync),
) -> ApiResult<Outcome> {
    let row = |signer_key: String, signature: &Value| KeySignatureRow {
        signer_user_id: user.to_owned(),
        signer_key_id: format!("ed25519:{signer_key}"),
        target_user_id: user.to_owned(),
        target_key_id: key_id.to_owned(),
        signature: signature.as_str().unwrap_or_default().to_owned(),
    };
    // The master key, signed by one or more of the user's devices.
    if own_key("master").as_deref() == Some(key_id) {
        let stored = state.storage.cross_signing_keys(&[user.to_owned()]).await?;
        let master = stored.iter().find(|k| k.key_type == "master");
        if !master.is_some_and(|m| matches_stored(object, &m.json)) {
            return Ok(Err((
                "M_INVALID_SIGNATURE",
                "Master key does not match the stored one".into(),
            )));
        }
        let mut rows = Vec::new();
        let signatures = object["signatures"][user]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (signing_key, signature) in &signatures {
            let Some(device) = signing_key.strip_prefix("ed25519:") else {
                continue;
            };
            if device == key_id {
                continue; // the master key's own signature
            }
            let Some(device_keys) = state.storage.device_keys(user, device).await? else {
                continue;
            };
            let device_keys: Value = serde_json::from_str(&device_keys).unwrap_or_default();
            let public = device_keys["keys"][signing_key]
                .as_str()
                .unwrap_or_default();
            if !has_valid_signature(object, user, device, public) {
                return Ok(Err((
                    "M_INVALID_SIGNATURE",
                    format!("Invalid signature by device {device}"),
                )));
            }
            rows.push(row(device.to_owned(), signature));
        }
        return Ok(Ok(rows));
    }
    // One of the user's devices, signed by their self-signing key.
    let Some(stored) = state.storage.device_keys(user, key_id).await? else {
        return Ok(Err((
            "M_NOT_FOUND",
            format!("Unknown device or key {key_id}"),
        )));
    };
    let Some(self_signing) = own_key("self_signing") else {
        return Ok(Err(("M_NOT_FOUND", "No self-signing key uploaded".into())));
    };
    if !matches_stored(object, &stored) {
        return Ok(Err((
            "M_INVALID_SIGNATURE",
            "Device keys do not match the stored ones".into(),
        )));
    }
    if !has_valid_signature(object, user, &self_signing, &self_signing) {
        return Ok(Err((
            "M_INVALID_SIGNATURE",
            "Invalid self-signing signature".into(),
        )));
    }
    let signature = &object["signatures"][user][format!("ed25519:{self_signing}")];
    Ok(Ok(vec![row(self_signing.clone(), signature)]))
}

async fn sign_other_master(
    state: &AppState,
    signer: &str,
    target: &str,
    key_id: &str,
    object: &Value,
    own_key: &(dyn Fn(&str) -> Option<String> + Sync),
) -> ApiResult<Outcome> {
    let Some(user_signing) = own_key("user_signing") else {
        return Ok(Err(("M_NOT_FOUND", "No user-signing key uploaded".into())));
    };
    let stored = state
        .storage
        .cross_signing_keys(&[target.to_owned()])
        .await?;
    let Some(master) = stored.iter().find(|k| k.key_type == "master") else {
        return Ok(Err(("M_NOT_FOUND", format!("{target} has no master key"))));
    };
    if master.public_key != key_id || !matches_stored(object, &master.json) {
        return Ok(Err((
            "M_INVALID_SIGNATURE",
            "Only a user's current master key can be signed".into(),
        )));
    }
    if !has_valid_signature(object, signer, &user_signing, &user_signing) {
        return Ok(Err((
            "M_INVALID_SIGNATURE",
            "Invalid user-signing signature".into(),
        )));
    }
    let signature = object["signatures"][signer][format!("ed25519:{user_signing}")]
        .as_str()
        .unwrap_or_default();
    Ok(Ok(vec![KeySignatureRow {
        signer_user_id: signer.to_owned(),
        signer_key_id: format!("ed25519:{user_signing}"),
        target_user_id: target.to_owned(),
        target_key_id: key_id.to_owned(),
        signature: signature.to_owned(),
    }]))
}
