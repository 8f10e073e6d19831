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
    rooms::versions,
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
    let available: BTreeMap<RoomVersionId, RoomVersionStability> = versions::SUPPORTED
        .iter()
        .filter_map(|v| versions::supported(v))
        .map(|(v, _)| (v, RoomVersionStability::Stable))
        .collect();
    let (default_version, _) = versions::supported(&state.config.default_room_version)
        .expect("the configuration validates default_room_version");
    caps.room_versions = RoomVersionsCapability::new(default_version, available);
    Ok(RumaResponse(capabilities::Response::new(caps)))
}
