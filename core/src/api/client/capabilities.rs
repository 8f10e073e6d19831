//! `GET /_matrix/client/v3/capabilities`

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    RoomVersionId,
    api::client::discovery::get_capabilities::v3::{
        self as capabilities, Capabilities, ChangePasswordCapability, RoomVersionStability,
        RoomVersionsCapability, ThirdPartyIdChangesCapability,
    },
};

use crate::{
    api::{
        error::ApiResult,
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
};

pub async fn get_capabilities(
    State(state): State<AppState>,
    _req: Ruma<capabilities::Request>,
) -> ApiResult<RumaResponse<capabilities::Response>> {
    let password = &state.config.password_config;
    let mut caps = Capabilities::new();
    caps.change_password =
        ChangePasswordCapability::new(password.login_enabled() && password.localdb_enabled);
    caps.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    let available: BTreeMap<RoomVersionId, RoomVersionStability> = [
        RoomVersionId::V1,
        RoomVersionId::V2,
        RoomVersionId::V3,
        RoomVersionId::V4,
        RoomVersionId::V5,
        RoomVersionId::V6,
        RoomVersionId::V7,
        RoomVersionId::V8,
        RoomVersionId::V9,
        RoomVersionId::V10,
        RoomVersionId::V11,
    ]
    .into_iter()
    .map(|v| (v, RoomVersionStability::Stable))
    .collect();
    caps.room_versions = RoomVersionsCapability::new(RoomVersionId::V10, available);
    Ok(RumaResponse(capabilities::Response::new(caps)))
}
