//! `PUT /sendToDevice/{eventType}/{txnId}` (spec: "Send-to-Device messaging").

use axum::extract::State;
use ruma::api::client::to_device::send_event_to_device::v3 as send_to_device;
use ruma::to_device::DeviceIdOrAllDevices;

use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
    storage::ephemeral::ToDeviceMessage,
    streams::{Stream, notifier::WakeKey},
};

/// The largest content one message may carry (as events are capped).
pub const MAX_MESSAGE_BYTES: usize = 65_536;

pub async fn send(
    State(state): State<AppState>,
    req: Ruma<send_to_device::Request>,
) -> ApiResult<RumaResponse<send_to_device::Response>> {
    let session = req.session();
    let body = &req.body;
    let mut messages = Vec::new();
    let mut recipients = Vec::new();
    for (user, devices) in &body.messages {
        // Only local users until federation exists.
        if user.server_name() != state.server_name {
            continue;
        }
        for (device, content) in devices {
            let content = content.json().get();
            if content.len() > MAX_MESSAGE_BYTES {
                return Err(MatrixError::new(
                    http::StatusCode::PAYLOAD_TOO_LARGE,
                    ruma::api::error::ErrorKind::TooLarge,
                    format!("A to-device message is over {MAX_MESSAGE_BYTES} bytes"),
                ));
            }
            if !content.trim_start().starts_with('{') {
                return Err(MatrixError::bad_json(
                    "Message content must be a JSON object",
                ));
            }
            let device_ids = match device {
                DeviceIdOrAllDevices::DeviceId(id) => vec![id.to_string()],
                DeviceIdOrAllDevices::AllDevices => state
                    .storage
                    .devices(user.as_str())
                    .await?
                    .into_iter()
                    .map(|d| d.device_id)
                    .collect(),
            };
            for device_id in device_ids {
                messages.push(ToDeviceMessage {
                    user_id: user.to_string(),
                    device_id,
                    content: content.to_owned(),
                });
            }
            recipients.push(WakeKey::User(user.clone()));
        }
    }
    let queued = state
        .storage
        .queue_to_device(
            (session.user_id.as_str(), session.device_id.as_str()),
            body.txn_id.as_str(),
            &body.event_type.to_string(),
            &messages,
        )
        .await?;
    if let Some(position) = queued
        && !messages.is_empty()
    {
        state.live.publish(Stream::ToDevice, position, &recipients);
    }
    Ok(RumaResponse(send_to_device::Response::new()))
}
