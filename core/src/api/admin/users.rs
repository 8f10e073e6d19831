//! `GET|PUT /_synapse/admin/v2/users/{userId}`: Synapse's Query User
//! Account and Create or Modify Account APIs.

use std::collections::BTreeSet;

use axum::{
    Json,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ruma::{UserId, api::error::ErrorKind};
use serde_json::{Map, Value, json};

use super::{JsonObject, ServerAdmin, local_user_id, register::USER_TYPES};
use crate::{
    api::{
        client::{
            account::deactivate_account,
            devices::announce_device_change,
            profile::save_profile,
            threepids::{self, canonical_address},
        },
        error::{ApiResult, MatrixError},
        plugin_hooks,
    },
    auth::username,
    state::AppState,
    storage::NewUser,
};

const NOT_LOCAL: &str = "This endpoint can only be used with local users";
/// Synapse's limits.
const MAX_PASSWORD_LENGTH: usize = 512;
const MAX_DISPLAYNAME_LENGTH: usize = 256;
const MAX_AVATAR_URL_LENGTH: usize = 1000;

/// `GET /_synapse/admin/v2/users/{userId}`: 404 `M_NOT_FOUND` for an
/// unknown user.
pub async fn get_user(
    State(state): State<AppState>,
    _admin: ServerAdmin,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = local_user_id(&state, &user_id, "Can only look up local users")?;
    let view = user_view(&state, &user)
        .await?
        .ok_or_else(|| MatrixError::not_found("User not found"))?;
    Ok(Json(view))
}

/// The user as Synapse's admin API shows them; `creation_ts` in seconds,
/// as Synapse stores it.
async fn user_view(state: &AppState, user: &UserId) -> ApiResult<Option<Value>> {
    let Some(record) = state.storage.admin_user(user.as_str()).await? else {
        return Ok(None);
    };
    let threepids: Vec<Value> = state
        .storage
        .user_threepids(user.as_str())
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "medium": t.medium,
                "address": t.address,
                "added_at": t.added_at,
                "validated_at": t.validated_at,
            })
        })
        .collect();
    let external_ids: Vec<Value> = state
        .storage
        .external_ids_of(user.as_str())
        .await?
        .into_iter()
        .map(|(auth_provider, external_id)| {
            json!({ "auth_provider": auth_provider, "external_id": external_id })
        })
        .collect();
    Ok(Some(json!({
        "name": record.user_id,
        "displayname": record.displayname,
        "avatar_url": record.avatar_url,
        "threepids": threepids,
        "external_ids": external_ids,
        "is_guest": record.is_guest,
        "admin": record.is_admin,
        "deactivated": record.deactivated,
        "erased": false,
        "shadow_banned": record.shadow_banned,
        "locked": false,
        "creation_ts": record.created_ts / 1000,
        "appservice_id": null,
        "consent_server_notice_sent": null,
        "consent_version": null,
        "consent_ts": null,
        "user_type": record.user_type,
    })))
}

/// The body of `PUT /_synapse/admin/v2/users/{userId}`, checked field by
/// field as Synapse does; an absent field changes nothing.
struct Changes {
    password: Option<String>,
    logout_devices: bool,
    displayname: Option<Option<String>>,
    avatar_url: Option<Option<String>>,
    threepids: Option<BTreeSet<(String, String)>>,
    external_ids: Option<Vec<(String, String)>>,
    admin: Option<bool>,
    deactivated: Option<bool>,
    user_type: Option<Option<String>>,
}

fn boolean(body: &Map<String, Value>, key: &str) -> ApiResult<Option<bool>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(_) => Err(MatrixError::bad_json(format!(
            "'{key}' parameter is not of type boolean"
        ))),
    }
}

/// A string field that may be `null` (which clears it).
fn nullable_string(body: &Map<String, Value>, key: &str) -> ApiResult<Option<Option<String>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(value)) => Ok(Some(Some(value.clone()))),
        Some(_) => Err(MatrixError::bad_json(format!("{key} must be a string"))),
    }
}

/// A list of objects each with the string fields `a` and `b`.
fn pairs(
    body: &Map<String, Value>,
    key: &str,
    a: &str,
    b: &str,
) -> ApiResult<Option<Vec<(String, String)>>> {
    let Some(list) = body.get(key) else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| MatrixError::bad_json(format!("{key} must be a list")))?;
    let mut found = Vec::with_capacity(list.len());
    for item in list {
        let item = item
            .as_object()
            .ok_or_else(|| MatrixError::bad_json(format!("Each of {key} must be an object")))?;
        let field = |name: &str| match item.get(name) {
            None => Err(MatrixError::missing_param(format!(
                "Missing params: ['{name}']"
            ))),
            Some(Value::String(value)) => Ok(value.clone()),
            Some(_) => Err(MatrixError::bad_json(format!(
                "{name} in {key} must be a string"
            ))),
        };
        found.push((field(a)?, field(b)?));
    }
    Ok(Some(found))
}

impl Changes {
    fn parse(body: &Map<String, Value>) -> ApiResult<Self> {
        let password = match body.get("password") {
            None | Some(Value::Null) => None,
            Some(Value::String(password)) if password.len() <= MAX_PASSWORD_LENGTH => {
                Some(password.clone())
            }
            Some(_) => {
                return Err(MatrixError::unknown(
                    StatusCode::BAD_REQUEST,
                    "Invalid password",
                ));
            }
        };
        let displayname = nullable_string(body, "displayname")?;
        if let Some(Some(name)) = &displayname
            && name.len() > MAX_DISPLAYNAME_LENGTH
        {
            return Err(MatrixError::unknown(
                StatusCode::BAD_REQUEST,
                format!("Displayname is too long (max {MAX_DISPLAYNAME_LENGTH})"),
            ));
        }
        let avatar_url = nullable_string(body, "avatar_url")?;
        if let Some(Some(url)) = &avatar_url
            && url.len() > MAX_AVATAR_URL_LENGTH
        {
            return Err(MatrixError::unknown(
                StatusCode::BAD_REQUEST,
                format!("Avatar URL is too long (max {MAX_AVATAR_URL_LENGTH})"),
            ));
        }
        let threepids = pairs(body, "threepids", "medium", "address")?
            .map(|list| {
                list.into_iter()
                    .map(|(medium, address)| {
                        let address = canonical_address(&medium, &address)?;
                        Ok((medium, address))
                    })
                    .collect::<ApiResult<BTreeSet<_>>>()
            })
            .transpose()?;
        let external_ids =
            pairs(body, "external_ids", "auth_provider", "external_id")?.map(|mut list| {
                list.sort();
                list.dedup();
                list
            });
        let user_type = nullable_string(body, "user_type")?;
        if let Some(Some(user_type)) = &user_type
            && !USER_TYPES.contains(&user_type.as_str())
        {
            return Err(MatrixError::unknown(
                StatusCode::BAD_REQUEST,
                "Invalid user type",
            ));
        }
        Ok(Self {
            password,
            logout_devices: boolean(body, "logout_devices")?.unwrap_or(true),
            displayname,
            avatar_url,
            threepids,
            external_ids,
            admin: boolean(body, "admin")?,
            deactivated: boolean(body, "deactivated")?,
            user_type,
        })
    }
}

/// `PUT /_synapse/admin/v2/users/{userId}`: modifies an existing local user
/// (200) or creates one (201), answering with the user as `GET` shows them.
/// `threepids` replaces the user's identifiers: each removed one is
/// reported to the plugins (`on_remove_user_third_party_identifier`), then
/// each added one (`on_add_user_third_party_identifier`); an identifier of
/// another user is 409 `M_THREEPID_IN_USE`. `deactivated: true` deactivates
/// as `POST /_synapse/admin/v1/deactivate` does; `false` reactivates (with
/// a `password` when passwords are in use) and tells the plugins
/// (`on_user_deactivation_status_changed` with `by_admin`).
pub async fn put_user(
    State(state): State<AppState>,
    admin: ServerAdmin,
    Path(user_id): Path<String>,
    JsonObject(body): JsonObject<Map<String, Value>>,
) -> ApiResult<Response> {
    let user = local_user_id(&state, &user_id, NOT_LOCAL)?;
    let changes = Changes::parse(&body)?;
    if let Some(threepids) = &changes.threepids {
        for (medium, address) in threepids {
            if let Some(owner) = state.storage.user_by_threepid(medium, address).await?
                && owner != user.as_str()
            {
                return Err(threepids::in_use());
            }
        }
    }
    let status = match state.storage.user(user.as_str()).await? {
        Some(existing) => {
            modify(
                &state,
                &admin,
                &user,
                existing.is_admin,
                existing.deactivated,
                changes,
            )
            .await?;
            StatusCode::OK
        }
        None => {
            create(&state, &user, changes).await?;
            StatusCode::CREATED
        }
    };
    let view = user_view(&state, &user)
        .await?
        .ok_or_else(MatrixError::internal)?;
    Ok((status, Json(view)).into_response())
}

/// Synapse's order: display name, identifiers, external IDs, avatar,
/// admin flag, password, (de)activation, user type.
async fn modify(
    state: &AppState,
    admin: &ServerAdmin,
    user: &UserId,
    is_admin: bool,
    deactivated: bool,
    changes: Changes,
) -> ApiResult<()> {
    if changes.deactivated == Some(false)
        && deactivated
        && changes.password.is_none()
        && state.config.password_config.reauth_enabled()
        && state.config.password_config.localdb_enabled
    {
        return Err(MatrixError::unknown(
            StatusCode::BAD_REQUEST,
            "Must provide a password to re-activate an account.",
        ));
    }
    if changes.admin == Some(false) && is_admin && admin.user_id.as_str() == user.as_str() {
        return Err(MatrixError::unknown(
            StatusCode::BAD_REQUEST,
            "You may not demote yourself.",
        ));
    }
    let user_id = user.as_str();
    if let Some(displayname) = changes.displayname {
        let mut profile = state.storage.profile(user_id).await?.unwrap_or_default();
        profile.displayname = displayname.filter(|n| !n.is_empty());
        save_profile(state, user, &profile, &["displayname"], Some(true), false).await?;
    }
    if let Some(wanted) = &changes.threepids {
        let current: BTreeSet<(String, String)> = state
            .storage
            .user_threepids(user_id)
            .await?
            .into_iter()
            .map(|t| (t.medium, t.address))
            .collect();
        for (medium, address) in current.difference(wanted) {
            threepids::unbind(state, user_id, medium, address).await?;
        }
        for (medium, address) in wanted.difference(&current) {
            threepids::bind(state, user_id, medium, address).await?;
        }
    }
    if let Some(ids) = &changes.external_ids {
        set_external_ids(state, user_id, ids).await?;
    }
    if let Some(avatar_url) = changes.avatar_url {
        let mut profile = state.storage.profile(user_id).await?.unwrap_or_default();
        profile.avatar_url = avatar_url.filter(|u| !u.is_empty());
        save_profile(state, user, &profile, &["avatar_url"], Some(true), false).await?;
    }
    if let Some(set_admin) = changes.admin
        && set_admin != is_admin
    {
        state.storage.set_admin(user_id, set_admin).await?;
        tracing::info!(%user_id, admin = set_admin, "changed a user's admin flag");
    }
    if let Some(password) = &changes.password {
        let hash = state.passwords.hash(password).await;
        state.storage.set_password_hash(user_id, &hash).await?;
        if changes.logout_devices {
            let devices = state.storage.other_device_ids(user_id, None).await?;
            state.storage.delete_devices(user_id, &devices).await?;
            state.tokens.forget_user(user_id, None);
            announce_device_change(state, user_id).await?;
        }
    }
    match changes.deactivated {
        Some(true) if !deactivated => deactivate_account(state, user, true, false).await?,
        Some(false) if deactivated => {
            state.storage.reactivate_user(user_id).await?;
            tracing::info!(%user_id, "reactivated account");
            plugin_hooks::deactivation_status_changed(state, user_id, false, true).await;
        }
        _ => {}
    }
    if let Some(user_type) = &changes.user_type {
        state
            .storage
            .set_user_type(user_id, user_type.as_deref())
            .await?;
    }
    Ok(())
}

/// A new account, as Synapse's admin API registers one: the display name
/// defaults to the localpart; the plugins hear of the registration, then of
/// each identifier.
async fn create(state: &AppState, user: &UserId, changes: Changes) -> ApiResult<()> {
    let localpart = user.localpart();
    username::check_localpart(localpart, state.server_name.as_str(), false)
        .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, e.0))?;
    let password_hash = match &changes.password {
        Some(password) => Some(state.passwords.hash(password).await),
        None => None,
    };
    let created = state
        .storage
        .create_user(&NewUser {
            user_id: user.to_string(),
            password_hash,
            is_admin: changes.admin.unwrap_or(false),
            user_type: changes.user_type.clone().flatten(),
            displayname: Some(
                changes
                    .displayname
                    .clone()
                    .flatten()
                    .unwrap_or_else(|| localpart.to_owned()),
            ),
            ..NewUser::default()
        })
        .await?;
    if !created {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UserInUse,
            "User ID already taken.",
        ));
    }
    tracing::info!(user_id = %user, "an admin created an account");
    plugin_hooks::user_registered(state, user.as_str()).await;
    if let Some(wanted) = &changes.threepids {
        for (medium, address) in wanted {
            threepids::bind(state, user.as_str(), medium, address).await?;
        }
    }
    if let Some(ids) = &changes.external_ids {
        set_external_ids(state, user.as_str(), ids).await?;
    }
    if let Some(Some(avatar_url)) = changes.avatar_url {
        let mut profile = state
            .storage
            .profile(user.as_str())
            .await?
            .unwrap_or_default();
        profile.avatar_url = Some(avatar_url).filter(|u| !u.is_empty());
        save_profile(state, user, &profile, &["avatar_url"], Some(true), false).await?;
    }
    Ok(())
}

async fn set_external_ids(
    state: &AppState,
    user_id: &str,
    ids: &[(String, String)],
) -> ApiResult<()> {
    if !state.storage.replace_external_ids(user_id, ids).await? {
        return Err(MatrixError::unknown(
            StatusCode::CONFLICT,
            "External id is already in use.",
        ));
    }
    Ok(())
}
