//! Turning plugin answers into Matrix errors, and server data into the
//! records the plugin contract speaks.

use http::StatusCode;
use myelin_plugin_api::{Event, Verdict};
use ruma::api::error::StandardErrorBody;

use super::error::{ApiResult, MatrixError};
use crate::rooms::pdu::Pdu;

/// A plugin's refusal as the client sees it: 403 with the plugin's code.
pub fn refusal(errcode: &str, message: &str) -> MatrixError {
    let body: Option<StandardErrorBody> =
        serde_json::from_value(serde_json::json!({ "errcode": errcode, "error": message })).ok();
    match body {
        Some(body) => MatrixError::new(StatusCode::FORBIDDEN, body.kind, body.message),
        None => MatrixError::forbidden(message),
    }
}

/// `Ok` when the plugins allow the action.
pub fn check(verdict: Verdict) -> ApiResult<()> {
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Reject { errcode, message } => Err(refusal(&errcode, &message)),
    }
}

/// An event as plugins see it.
pub fn event(pdu: &Pdu) -> Event {
    let unsigned = pdu
        .object()
        .get("unsigned")
        .map(|u| serde_json::Value::from(u.clone()).to_string());
    Event {
        event_id: pdu.event_id.to_string(),
        room_id: pdu.room_id.to_string(),
        sender: pdu.sender.to_string(),
        event_type: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        origin_server_ts: pdu.origin_server_ts.get().into(),
        content: pdu.content.get().to_owned(),
        unsigned,
    }
}
