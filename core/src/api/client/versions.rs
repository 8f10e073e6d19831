//! Discovery: `GET /_matrix/client/versions` and `GET /.well-known/matrix/client`.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_supported_versions,
};

use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
};

/// Spec versions whose endpoints in this server's scope are served.
const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12",
];

/// `GET /_matrix/client/versions`
pub async fn get_versions(
    _req: Ruma<get_supported_versions::Request>,
) -> ApiResult<RumaResponse<get_supported_versions::Response>> {
    let mut response = get_supported_versions::Response::new(
        SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    );
    response.unstable_features = BTreeMap::new();
    Ok(RumaResponse(response))
}

/// `GET /.well-known/matrix/client`: only when `public_baseurl` is set.
pub async fn get_well_known_client(
    State(state): State<AppState>,
    _req: Ruma<discover_homeserver::Request>,
) -> ApiResult<RumaResponse<discover_homeserver::Response>> {
    let base_url = state
        .config
        .public_baseurl
        .clone()
        .ok_or_else(|| MatrixError::not_found("No .well-known configured"))?;
    Ok(RumaResponse(discover_homeserver::Response::new(
        HomeserverInfo::new(base_url),
    )))
}
