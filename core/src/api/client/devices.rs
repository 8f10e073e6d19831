//! Device management: `GET /devices`, `GET|PUT|DELETE /devices/{deviceId}`,
//! `POST /delete_devices` ([spec](https://spec.matrix.org/latest/client-server-api/#device-management)).

use axum::extract::State;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::{
        device::{
            Device, delete_device::v3 as delete_one, delete_devices::v3 as delete_many,
            get_device::v3 as get_one, get_devices::v3 as get_all, update_device::v3 as update_one,
        },
        uiaa::AuthType,
    },
};

use super::uia::{self, Subject};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
    storage::DeviceRecord,
    streams::{Stream, notifier::WakeKey},
};

fn to_device(record: DeviceRecord) -> Device {
    let mut device = Device::new(record.device_id.into());
    device.display_name = record.display_name;
    device.last_seen_ip = record.last_seen_ip;
    device.last_seen_ts = record
        .last_seen_ts
        .and_then(|ts| UInt::try_from(ts).ok())
        .map(MilliSecondsSinceUnixEpoch);
    device
}

/// `GET /_matrix/client/v3/devices`
pub async fn get_devices(
    State(state): State<AppState>,
    req: Ruma<get_all::Request>,
) -> ApiResult<RumaResponse<get_all::Response>> {
    let devices = state
        .storage
        .devices(req.session().user_id.as_str())
        .await?;
    Ok(RumaResponse(get_all::Response::new(
        devices.into_iter().map(to_device).collect(),
    )))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device(
    State(state): State<AppState>,
    req: Ruma<get_one::Request>,
) -> ApiResult<RumaResponse<get_one::Response>> {
    let device = state
        .storage
        .device(req.session().user_id.as_str(), req.body.device_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Device not found"))?;
    Ok(RumaResponse(get_one::Response::new(to_device(device))))
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update_device(
    State(state): State<AppState>,
    req: Ruma<update_one::Request>,
) -> ApiResult<RumaResponse<update_one::Response>> {
    let renamed = state
        .storage
        .rename_device(
            req.session().user_id.as_str(),
            req.body.device_id.as_str(),
            req.body.display_name.as_deref(),
        )
        .await?;
    if !renamed {
        return Err(MatrixError::not_found("Device not found"));
    }
    Ok(RumaResponse(update_one::Response::new()))
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}` (user-interactive auth)
pub async fn delete_device(
    State(state): State<AppState>,
    req: Ruma<delete_one::Request>,
) -> ApiResult<RumaResponse<delete_one::Response>> {
    let session = req.session();
    let user_id = session.user_id.as_str();
    if state
        .storage
        .device(user_id, req.body.device_id.as_str())
        .await?
        .is_none()
    {
        return Err(MatrixError::not_found("Device not found"));
    }
    uia::authenticate(
        &state,
        "DELETE /devices",
        req.body.auth.as_ref(),
        &[&[AuthType::Password]],
        Subject::User(&session.user_id),
    )
    .await?;
    remove_devices(&state, user_id, &[req.body.device_id.to_string()]).await?;
    Ok(RumaResponse(delete_one::Response::new()))
}

/// `POST /_matrix/client/v3/delete_devices` (user-interactive auth)
pub async fn delete_devices(
    State(state): State<AppState>,
    req: Ruma<delete_many::Request>,
) -> ApiResult<RumaResponse<delete_many::Response>> {
    let session = req.session();
    uia::authenticate(
        &state,
        "POST /delete_devices",
        req.body.auth.as_ref(),
        &[&[AuthType::Password]],
        Subject::User(&session.user_id),
    )
    .await?;
    let ids: Vec<String> = req.body.devices.iter().map(ToString::to_string).collect();
    remove_devices(&state, session.user_id.as_str(), &ids).await?;
    Ok(RumaResponse(delete_many::Response::new()))
}

async fn remove_devices(state: &AppState, user_id: &str, device_ids: &[String]) -> ApiResult<()> {
    state.storage.delete_devices(user_id, device_ids).await?;
    announce_device_change(state, user_id).await?;
    for device_id in device_ids {
        state.tokens.forget_device(user_id, device_id);
    }
    Ok(())
}

/// Tells everyone sharing a room with the user that their devices changed
/// (`device_lists.changed` in their next sync).
pub async fn announce_device_change(state: &AppState, user_id: &str) -> ApiResult<()> {
    let position = state.storage.record_device_list_change(user_id).await?;
    let mut keys = Vec::new();
    if let Ok(user) = ruma::OwnedUserId::try_from(user_id) {
        keys.push(WakeKey::User(user));
    }
    for room in state.storage.rooms_with_membership(user_id, "join").await? {
        if let Ok(room) = ruma::OwnedRoomId::try_from(room) {
            keys.push(WakeKey::Room(room));
        }
    }
    state.live.publish(Stream::DeviceLists, position, &keys);
    Ok(())
}
