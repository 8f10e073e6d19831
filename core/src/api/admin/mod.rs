//! Synapse-compatible admin endpoints under `/_synapse/admin`.

pub mod register;

use axum::{Router, routing::get};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/_synapse/admin/v1/register",
        get(register::get_nonce).post(register::register_with_shared_secret),
    )
}
