//! Server-side key backups (spec: "Server-side key backups"):
//! `/room_keys/version[/{version}]` and `/room_keys/keys[/{roomId}[/{sessionId}]]`.
//! The server stores encrypted session keys it cannot read and keeps, of
//! two copies of one session, the better one.

use std::collections::BTreeMap;

use axum::extract::State;
use http::StatusCode;
use ruma::{
    OwnedRoomId, UInt,
    api::{
        client::backup::{
            BackupAlgorithm, KeyBackupData, RoomKeyBackup, add_backup_keys,
            add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
            delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session,
            delete_backup_version, get_backup_info, get_backup_keys, get_backup_keys_for_room,
            get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
        },
        error::{ErrorKind, WrongRoomKeysVersionErrorData},
    },
    serde::Raw,
};
use serde_json::{Value, value::RawValue};

use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    auth::tokens::Session,
    state::AppState,
    storage::key_backup::{BackedUpSession, BackupScope, BackupVersion},
};

/// The `{algorithm, auth_data}` body of a version: checked, kept as sent.
fn algorithm_json(algorithm: &Raw<BackupAlgorithm>) -> ApiResult<(String, String)> {
    let value: Value = serde_json::from_str(algorithm.json().get())
        .map_err(|_| MatrixError::bad_json("The body must be JSON"))?;
    let Some(name) = value["algorithm"].as_str() else {
        return Err(MatrixError::missing_param("`algorithm` must be a string"));
    };
    if !value["auth_data"].is_object() {
        return Err(MatrixError::missing_param("`auth_data` must be an object"));
    }
    Ok((name.to_owned(), algorithm.json().get().to_owned()))
}

fn no_backup() -> MatrixError {
    MatrixError::not_found("Unknown backup version")
}

/// The version named, which must exist (404 otherwise).
async fn existing_version(
    state: &AppState,
    session: &Session,
    version: &str,
) -> ApiResult<BackupVersion> {
    let number = version.parse::<i64>().map_err(|_| no_backup())?;
    state
        .storage
        .backup_version(session.user_id.as_str(), Some(number))
        .await?
        .ok_or_else(no_backup)
}

/// Keys may only be added to the current version: 403
/// `M_WRONG_ROOM_KEYS_VERSION` (with the current version) otherwise.
async fn current_version_for_upload(
    state: &AppState,
    session: &Session,
    version: &str,
) -> ApiResult<i64> {
    let current = state
        .storage
        .backup_version(session.user_id.as_str(), None)
        .await?
        .ok_or_else(no_backup)?;
    if version.parse::<i64>().ok() != Some(current.version) {
        return Err(MatrixError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(
                current.version.to_string(),
            )),
            "Keys may only be added to the current backup version",
        ));
    }
    Ok(current.version)
}

fn raw_algorithm(json: &str) -> ApiResult<Raw<BackupAlgorithm>> {
    Ok(Raw::from_json(raw_value(json)?))
}

fn raw_value(json: &str) -> ApiResult<Box<RawValue>> {
    RawValue::from_string(json.to_owned()).map_err(|_| MatrixError::internal())
}

fn uint(n: i64) -> UInt {
    UInt::try_from(n).unwrap_or_default()
}

/// `POST /room_keys/version`
pub async fn create_version(
    State(state): State<AppState>,
    req: Ruma<create_backup_version::v3::Request>,
) -> ApiResult<RumaResponse<create_backup_version::v3::Response>> {
    let (_, json) = algorithm_json(&req.body.algorithm)?;
    let version = state
        .storage
        .create_backup_version(req.session().user_id.as_str(), &json)
        .await?;
    Ok(RumaResponse(create_backup_version::v3::Response::new(
        version.to_string(),
    )))
}

/// `GET /room_keys/version`
pub async fn get_latest_version(
    State(state): State<AppState>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> ApiResult<RumaResponse<get_latest_backup_info::v3::Response>> {
    let version = state
        .storage
        .backup_version(req.session().user_id.as_str(), None)
        .await?
        .ok_or_else(|| MatrixError::not_found("No current backup version"))?;
    Ok(RumaResponse(get_latest_backup_info::v3::Response::new(
        raw_algorithm(&version.algorithm)?,
        uint(version.count),
        version.etag.to_string(),
        version.version.to_string(),
    )))
}

/// `GET /room_keys/version/{version}`
pub async fn get_version(
    State(state): State<AppState>,
    req: Ruma<get_backup_info::v3::Request>,
) -> ApiResult<RumaResponse<get_backup_info::v3::Response>> {
    let version = existing_version(&state, req.session(), &req.body.version).await?;
    Ok(RumaResponse(get_backup_info::v3::Response::new(
        raw_algorithm(&version.algorithm)?,
        uint(version.count),
        version.etag.to_string(),
        version.version.to_string(),
    )))
}

/// `PUT /room_keys/version/{version}`: only `auth_data` may change.
pub async fn update_version(
    State(state): State<AppState>,
    req: Ruma<update_backup_version::v3::Request>,
) -> ApiResult<RumaResponse<update_backup_version::v3::Response>> {
    let session = req.session();
    let stored = existing_version(&state, session, &req.body.version).await?;
    let (name, json) = algorithm_json(&req.body.algorithm)?;
    let body: Value = serde_json::from_str(&json).unwrap_or_default();
    if let Some(version) = body.get("version")
        && version.as_str() != Some(req.body.version.as_str())
    {
        return Err(MatrixError::invalid_param(
            "The version in the body does not match the one in the path",
        ));
    }
    let stored_algorithm: Value = serde_json::from_str(&stored.algorithm).unwrap_or_default();
    if stored_algorithm["algorithm"].as_str() != Some(name.as_str()) {
        return Err(MatrixError::invalid_param(
            "The algorithm of a backup version cannot change",
        ));
    }
    let mut kept = body;
    if let Some(map) = kept.as_object_mut() {
        map.remove("version");
    }
    state
        .storage
        .update_backup_version(session.user_id.as_str(), stored.version, &kept.to_string())
        .await?;
    Ok(RumaResponse(update_backup_version::v3::Response::new()))
}

/// `DELETE /room_keys/version/{version}`
pub async fn delete_version(
    State(state): State<AppState>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> ApiResult<RumaResponse<delete_backup_version::v3::Response>> {
    let version = req.body.version.parse::<i64>().map_err(|_| no_backup())?;
    if !state
        .storage
        .delete_backup_version(req.session().user_id.as_str(), version)
        .await?
    {
        return Err(no_backup());
    }
    Ok(RumaResponse(delete_backup_version::v3::Response::new()))
}

/// A session key as uploaded, with the fields the replacement rule reads.
fn session_row(
    room_id: &OwnedRoomId,
    session_id: &str,
    data: &Raw<KeyBackupData>,
) -> ApiResult<BackedUpSession> {
    let parsed = data
        .deserialize()
        .map_err(|e| MatrixError::bad_json(format!("Invalid key backup data: {e}")))?;
    Ok(BackedUpSession {
        room_id: room_id.to_string(),
        session_id: session_id.to_owned(),
        first_message_index: u64::from(parsed.first_message_index) as i64,
        forwarded_count: u64::from(parsed.forwarded_count) as i64,
        is_verified: parsed.is_verified,
        json: data.json().get().to_owned(),
    })
}

async fn store_sessions(
    state: &AppState,
    session: &Session,
    version: &str,
    sessions: Vec<BackedUpSession>,
) -> ApiResult<(String, UInt)> {
    let version = current_version_for_upload(state, session, version).await?;
    let (etag, count) = state
        .storage
        .back_up_sessions(session.user_id.as_str(), version, &sessions)
        .await?;
    Ok((etag.to_string(), uint(count)))
}

/// `PUT /room_keys/keys`
pub async fn put_keys(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> ApiResult<RumaResponse<add_backup_keys::v3::Response>> {
    let mut sessions = Vec::new();
    for (room, backup) in &req.body.rooms {
        for (session_id, data) in &backup.sessions {
            sessions.push(session_row(room, session_id, data)?);
        }
    }
    let (etag, count) = store_sessions(&state, req.session(), &req.body.version, sessions).await?;
    Ok(RumaResponse(add_backup_keys::v3::Response::new(
        etag, count,
    )))
}

/// `PUT /room_keys/keys/{roomId}`
pub async fn put_room_keys(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> ApiResult<RumaResponse<add_backup_keys_for_room::v3::Response>> {
    let body = &req.body;
    let sessions = body
        .sessions
        .iter()
        .map(|(session_id, data)| session_row(&body.room_id, session_id, data))
        .collect::<ApiResult<Vec<_>>>()?;
    let (etag, count) = store_sessions(&state, req.session(), &body.version, sessions).await?;
    Ok(RumaResponse(add_backup_keys_for_room::v3::Response::new(
        etag, count,
    )))
}

/// `PUT /room_keys/keys/{roomId}/{sessionId}`
pub async fn put_session_key(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> ApiResult<RumaResponse<add_backup_keys_for_session::v3::Response>> {
    let body = &req.body;
    let sessions = vec![session_row(
        &body.room_id,
        &body.session_id,
        &body.session_data,
    )?];
    let (etag, count) = store_sessions(&state, req.session(), &body.version, sessions).await?;
    Ok(RumaResponse(
        add_backup_keys_for_session::v3::Response::new(etag, count),
    ))
}

async fn read_sessions(
    state: &AppState,
    session: &Session,
    version: &str,
    scope: BackupScope<'_>,
) -> ApiResult<Vec<BackedUpSession>> {
    let version = existing_version(state, session, version).await?;
    Ok(state
        .storage
        .backed_up_sessions(session.user_id.as_str(), version.version, scope)
        .await?)
}

fn by_session(rows: Vec<BackedUpSession>) -> ApiResult<BTreeMap<String, Raw<KeyBackupData>>> {
    rows.into_iter()
        .map(|row| Ok((row.session_id, Raw::from_json(raw_value(&row.json)?))))
        .collect()
}

/// `GET /room_keys/keys`
pub async fn get_keys(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> ApiResult<RumaResponse<get_backup_keys::v3::Response>> {
    let rows = read_sessions(&state, req.session(), &req.body.version, BackupScope::All).await?;
    let mut rooms: BTreeMap<OwnedRoomId, Vec<BackedUpSession>> = BTreeMap::new();
    for row in rows {
        if let Ok(room) = OwnedRoomId::try_from(row.room_id.as_str()) {
            rooms.entry(room).or_default().push(row);
        }
    }
    let rooms = rooms
        .into_iter()
        .map(|(room, rows)| Ok((room, RoomKeyBackup::new(by_session(rows)?))))
        .collect::<ApiResult<_>>()?;
    Ok(RumaResponse(get_backup_keys::v3::Response::new(rooms)))
}

/// `GET /room_keys/keys/{roomId}`
pub async fn get_room_keys(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> ApiResult<RumaResponse<get_backup_keys_for_room::v3::Response>> {
    let body = &req.body;
    let scope = BackupScope::Room(body.room_id.as_str());
    let rows = read_sessions(&state, req.session(), &body.version, scope).await?;
    Ok(RumaResponse(get_backup_keys_for_room::v3::Response::new(
        by_session(rows)?,
    )))
}

/// `GET /room_keys/keys/{roomId}/{sessionId}`
pub async fn get_session_key(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> ApiResult<RumaResponse<get_backup_keys_for_session::v3::Response>> {
    let body = &req.body;
    let scope = BackupScope::Session(body.room_id.as_str(), &body.session_id);
    let row = read_sessions(&state, req.session(), &body.version, scope)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| MatrixError::not_found("No backed-up key for this session"))?;
    Ok(RumaResponse(
        get_backup_keys_for_session::v3::Response::new(Raw::from_json(raw_value(&row.json)?)),
    ))
}

async fn delete_sessions(
    state: &AppState,
    session: &Session,
    version: &str,
    scope: BackupScope<'_>,
) -> ApiResult<(String, UInt)> {
    let version = existing_version(state, session, version).await?;
    let (etag, count) = state
        .storage
        .delete_backed_up_sessions(session.user_id.as_str(), version.version, scope)
        .await?;
    Ok((etag.to_string(), uint(count)))
}

/// `DELETE /room_keys/keys`
pub async fn delete_keys(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> ApiResult<RumaResponse<delete_backup_keys::v3::Response>> {
    let (etag, count) =
        delete_sessions(&state, req.session(), &req.body.version, BackupScope::All).await?;
    Ok(RumaResponse(delete_backup_keys::v3::Response::new(
        etag, count,
    )))
}

/// `DELETE /room_keys/keys/{roomId}`
pub async fn delete_room_keys(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> ApiResult<RumaResponse<delete_backup_keys_for_room::v3::Response>> {
    let body = &req.body;
    let scope = BackupScope::Room(body.room_id.as_str());
    let (etag, count) = delete_sessions(&state, req.session(), &body.version, scope).await?;
    Ok(RumaResponse(
        delete_backup_keys_for_room::v3::Response::new(etag, count),
    ))
}

/// `DELETE /room_keys/keys/{roomId}/{sessionId}`
pub async fn delete_session_key(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> ApiResult<RumaResponse<delete_backup_keys_for_session::v3::Response>> {
    let body = &req.body;
    let scope = BackupScope::Session(body.room_id.as_str(), &body.session_id);
    let (etag, count) = delete_sessions(&state, req.session(), &body.version, scope).await?;
    Ok(RumaResponse(
        delete_backup_keys_for_session::v3::Response::new(etag, count),
    ))
}
