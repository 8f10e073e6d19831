//! The client-server API, one file per section of the spec.

pub mod account;
pub mod capabilities;
pub mod devices;
pub mod register;
pub mod session;
pub mod uia;
pub mod versions;

use axum::Router;
use ruma::api::client::{account as acct, device, discovery, session as sess};

use super::RumaRouter;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .endpoint::<discovery::get_supported_versions::Request, _, _>(versions::get_versions)
        .endpoint::<discovery::discover_homeserver::Request, _, _>(versions::get_well_known_client)
        .endpoint::<discovery::get_capabilities::v3::Request, _, _>(capabilities::get_capabilities)
        .endpoint::<sess::get_login_types::v3::Request, _, _>(session::get_login_types)
        .endpoint::<sess::login::v3::Request, _, _>(session::login)
        .endpoint::<sess::refresh_token::v3::Request, _, _>(session::refresh)
        .endpoint::<sess::logout::v3::Request, _, _>(session::logout)
        .endpoint::<sess::logout_all::v3::Request, _, _>(session::logout_all)
        .endpoint::<acct::register::v3::Request, _, _>(register::register)
        .endpoint::<acct::get_username_availability::v3::Request, _, _>(
            register::get_username_availability,
        )
        .endpoint::<acct::whoami::v3::Request, _, _>(account::whoami)
        .endpoint::<acct::change_password::v3::Request, _, _>(account::change_password)
        .endpoint::<acct::deactivate::v3::Request, _, _>(account::deactivate)
        .endpoint::<device::get_devices::v3::Request, _, _>(devices::get_devices)
        .endpoint::<device::get_device::v3::Request, _, _>(devices::get_device)
        .endpoint::<device::update_device::v3::Request, _, _>(devices::update_device)
        .endpoint::<device::delete_device::v3::Request, _, _>(devices::delete_device)
        .endpoint::<device::delete_devices::v3::Request, _, _>(devices::delete_devices)
}
