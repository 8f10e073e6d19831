//! Receipts and read markers (spec: "Receipts", "Read and unread markers").

use axum::extract::State;
use ruma::{
    EventId, RoomId, UserId,
    api::client::{
        read_marker::set_read_marker::v3 as set_read_marker,
        receipt::create_receipt::v3::{self as create_receipt, ReceiptType},
    },
    events::receipt::ReceiptThread,
};
use serde_json::json;

use super::room_access::{event_in_room, require_joined};
use crate::{
    api::{
        client::account_data,
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
    storage::{ephemeral::ReceiptRow, now_ms},
    streams::{Stream, notifier::WakeKey},
};

/// Records a receipt of `kind` by `user` at an event of the room.
async fn record(
    state: &AppState,
    user: &UserId,
    room_id: &RoomId,
    event_id: &EventId,
    kind: &str,
    thread_id: String,
) -> ApiResult<()> {
    let event = event_in_room(state, room_id, event_id).await?;
    let receipt = ReceiptRow {
        room_id: room_id.to_string(),
        receipt_type: kind.to_owned(),
        user_id: user.to_string(),
        thread_id,
        event_id: event_id.to_string(),
        ts: now_ms(),
    };
    if let Some(position) = state
        .storage
        .set_receipt(&receipt, event.stream_ordering)
        .await?
    {
        // The reader's unread counts change too: wake their own syncs.
        state.live.publish(
            Stream::Receipts,
            position,
            &[
                WakeKey::Room(room_id.to_owned()),
                WakeKey::User(user.to_owned()),
            ],
        );
    }
    Ok(())
}

async fn fully_read(
    state: &AppState,
    user: &UserId,
    room_id: &RoomId,
    event_id: &EventId,
) -> ApiResult<()> {
    event_in_room(state, room_id, event_id).await?;
    account_data::store(
        state,
        user,
        Some(room_id),
        "m.fully_read",
        &json!({ "event_id": event_id }),
    )
    .await
}

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub async fn create(
    State(state): State<AppState>,
    req: Ruma<create_receipt::Request>,
) -> ApiResult<RumaResponse<create_receipt::Response>> {
    let user = &req.session().user_id;
    let body = &req.body;
    require_joined(&state, &body.room_id, user).await?;
    let thread_id = match &body.thread {
        ReceiptThread::Unthreaded => String::new(),
        ReceiptThread::Main => "main".to_owned(),
        ReceiptThread::Thread(root) => root.to_string(),
        _ => return Err(MatrixError::invalid_param("Unknown thread_id")),
    };
    match &body.receipt_type {
        ReceiptType::FullyRead => {
            if !thread_id.is_empty() {
                return Err(MatrixError::invalid_param(
                    "m.fully_read cannot be threaded",
                ));
            }
            fully_read(&state, user, &body.room_id, &body.event_id).await?;
        }
        ReceiptType::Read | ReceiptType::ReadPrivate => {
            let kind = body.receipt_type.to_string();
            record(
                &state,
                user,
                &body.room_id,
                &body.event_id,
                &kind,
                thread_id,
            )
            .await?;
        }
        other => {
            return Err(MatrixError::invalid_param(format!(
                "Unknown receipt type {other}"
            )));
        }
    }
    Ok(RumaResponse(create_receipt::Response::new()))
}

/// `POST /rooms/{roomId}/read_markers`
pub async fn set_read_markers(
    State(state): State<AppState>,
    req: Ruma<set_read_marker::Request>,
) -> ApiResult<RumaResponse<set_read_marker::Response>> {
    let user = &req.session().user_id;
    let body = &req.body;
    require_joined(&state, &body.room_id, user).await?;
    if let Some(event_id) = &body.fully_read {
        fully_read(&state, user, &body.room_id, event_id).await?;
    }
    if let Some(event_id) = &body.read_receipt {
        record(
            &state,
            user,
            &body.room_id,
            event_id,
            "m.read",
            String::new(),
        )
        .await?;
    }
    if let Some(event_id) = &body.private_read_receipt {
        record(
            &state,
            user,
            &body.room_id,
            event_id,
            "m.read.private",
            String::new(),
        )
        .await?;
    }
    Ok(RumaResponse(set_read_marker::Response::new()))
}
