//! The client-server API, one file per section of the spec.

pub mod account;
pub mod account_data;
pub mod auth_providers;
pub mod capabilities;
pub mod create_room;
pub mod cross_signing;
pub mod devices;
pub mod directory;
pub mod events;
pub mod filter;
pub mod key_backup;
pub mod keys;
pub mod membership;
pub mod presence;
pub mod profile;
pub mod push;
pub mod receipts;
pub mod register;
pub mod report;
pub mod room_access;
pub mod session;
pub mod sso;
pub mod sync;
pub mod threepids;
pub mod timeline;
pub mod to_device;
pub mod typing;
pub mod uia;
pub mod upgrade;
pub mod versions;

use axum::Router;
use ruma::api::client::{
    account as acct, alias, backup as bk, config, context, device, directory as dir, discovery,
    filter as flt, keys as k, knock, membership as member, message, presence as pres,
    profile as prof, push as psh, read_marker, receipt, redact, room, session as sess, state as st,
    sync::sync_events, tag, to_device as td, typing as typ, user_directory,
};

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
        .endpoint::<sess::sso_login::v3::Request, _, _>(sso::redirect)
        .endpoint::<sess::sso_login_with_provider::v3::Request, _, _>(sso::redirect_to_idp)
        .merge(sso::routes())
        .endpoint::<acct::register::v3::Request, _, _>(register::register)
        .endpoint::<acct::get_username_availability::v3::Request, _, _>(
            register::get_username_availability,
        )
        .endpoint::<acct::whoami::v3::Request, _, _>(account::whoami)
        .endpoint::<acct::change_password::v3::Request, _, _>(account::change_password)
        .endpoint::<acct::deactivate::v3::Request, _, _>(account::deactivate)
        .endpoint::<acct::get_3pids::v3::Request, _, _>(threepids::get_threepids)
        .endpoint::<acct::delete_3pid::v3::Request, _, _>(threepids::delete_threepid)
        .endpoint::<device::get_devices::v3::Request, _, _>(devices::get_devices)
        .endpoint::<device::get_device::v3::Request, _, _>(devices::get_device)
        .endpoint::<device::update_device::v3::Request, _, _>(devices::update_device)
        .endpoint::<device::delete_device::v3::Request, _, _>(devices::delete_device)
        .endpoint::<device::delete_devices::v3::Request, _, _>(devices::delete_devices)
        // Rooms
        .endpoint::<room::create_room::v3::Request, _, _>(create_room::create_room)
        .endpoint::<member::join_room_by_id::v3::Request, _, _>(membership::join_room_by_id)
        .endpoint::<member::join_room_by_id_or_alias::v3::Request, _, _>(
            membership::join_room_by_id_or_alias,
        )
        .endpoint::<knock::knock_room::v3::Request, _, _>(membership::knock)
        .endpoint::<member::invite_user::v3::Request, _, _>(membership::invite)
        .endpoint::<member::leave_room::v3::Request, _, _>(membership::leave)
        .endpoint::<member::forget_room::v3::Request, _, _>(membership::forget)
        .endpoint::<member::kick_user::v3::Request, _, _>(membership::kick)
        .endpoint::<member::ban_user::v3::Request, _, _>(membership::ban)
        .endpoint::<member::unban_user::v3::Request, _, _>(membership::unban)
        .endpoint::<member::joined_rooms::v3::Request, _, _>(membership::get_joined_rooms)
        .endpoint::<message::send_message_event::v3::Request, _, _>(events::send_message_event)
        .endpoint::<st::send_state_event::v3::Request, _, _>(events::send_state_event)
        .endpoint::<st::get_state_event_for_key::v3::Request, _, _>(events::get_state_event)
        .endpoint::<st::get_state_events::v3::Request, _, _>(events::get_state)
        .endpoint::<redact::redact_event::v3::Request, _, _>(events::redact)
        .endpoint::<room::get_room_event::v3::Request, _, _>(events::get_event)
        .endpoint::<message::get_message_events::v3::Request, _, _>(timeline::get_messages)
        .endpoint::<context::get_context::v3::Request, _, _>(timeline::get_context)
        .endpoint::<member::get_member_events::v3::Request, _, _>(timeline::get_members)
        .endpoint::<member::joined_members::v3::Request, _, _>(timeline::get_joined_members)
        .endpoint::<room::get_event_by_timestamp::v1::Request, _, _>(timeline::timestamp_to_event)
        .endpoint::<room::upgrade_room::v3::Request, _, _>(upgrade::upgrade)
        .endpoint::<room::report_content::v3::Request, _, _>(report::report_event)
        .endpoint::<room::report_room::v3::Request, _, _>(report::report_room)
        // Aliases and the room directory
        .endpoint::<alias::create_alias::v3::Request, _, _>(directory::put_alias)
        .endpoint::<alias::get_alias::v3::Request, _, _>(directory::get_alias)
        .endpoint::<alias::delete_alias::v3::Request, _, _>(directory::delete_alias)
        .endpoint::<room::aliases::v3::Request, _, _>(directory::get_room_aliases)
        .endpoint::<dir::get_room_visibility::v3::Request, _, _>(directory::get_visibility)
        .endpoint::<dir::set_room_visibility::v3::Request, _, _>(directory::set_visibility)
        .endpoint::<dir::get_public_rooms::v3::Request, _, _>(directory::get_public_rooms)
        .endpoint::<dir::get_public_rooms_filtered::v3::Request, _, _>(directory::post_public_rooms)
        // Profiles and the user directory
        .endpoint::<prof::get_profile::v3::Request, _, _>(profile::get)
        .endpoint::<prof::get_profile_field::v3::Request, _, _>(profile::get_field)
        .endpoint::<prof::set_profile_field::v3::Request, _, _>(profile::set_field)
        .endpoint::<user_directory::search_users::v3::Request, _, _>(profile::search_users)
        // Sync and what it carries
        .endpoint::<sync_events::v3::Request, _, _>(sync::sync)
        .endpoint::<flt::create_filter::v3::Request, _, _>(filter::create)
        .endpoint::<flt::get_filter::v3::Request, _, _>(filter::get)
        .endpoint::<typ::create_typing_event::v3::Request, _, _>(typing::set_typing)
        .endpoint::<receipt::create_receipt::v3::Request, _, _>(receipts::create)
        .endpoint::<read_marker::set_read_marker::v3::Request, _, _>(receipts::set_read_markers)
        .endpoint::<config::set_global_account_data::v3::Request, _, _>(
            account_data::set_global_data,
        )
        .endpoint::<config::get_global_account_data::v3::Request, _, _>(
            account_data::get_global_data,
        )
        .endpoint::<config::set_room_account_data::v3::Request, _, _>(account_data::set_room_data)
        .endpoint::<config::get_room_account_data::v3::Request, _, _>(account_data::get_room_data)
        .endpoint::<tag::get_tags::v3::Request, _, _>(account_data::get_room_tags)
        .endpoint::<tag::create_tag::v3::Request, _, _>(account_data::put_room_tag)
        .endpoint::<tag::delete_tag::v3::Request, _, _>(account_data::delete_room_tag)
        .endpoint::<pres::set_presence::v3::Request, _, _>(presence::set)
        .endpoint::<pres::get_presence::v3::Request, _, _>(presence::get)
        .endpoint::<td::send_event_to_device::v3::Request, _, _>(to_device::send)
        // End-to-end encryption
        .endpoint::<k::upload_keys::v3::Request, _, _>(keys::upload)
        .endpoint::<k::get_keys::v3::Request, _, _>(keys::query)
        .endpoint::<k::claim_keys::v3::Request, _, _>(keys::claim)
        .endpoint::<k::get_key_changes::v3::Request, _, _>(keys::changes)
        .endpoint::<k::upload_signing_keys::v3::Request, _, _>(cross_signing::upload_signing_keys)
        .endpoint::<k::upload_signatures::v3::Request, _, _>(cross_signing::upload_signatures)
        .endpoint::<bk::create_backup_version::v3::Request, _, _>(key_backup::create_version)
        .endpoint::<bk::get_latest_backup_info::v3::Request, _, _>(key_backup::get_latest_version)
        .endpoint::<bk::get_backup_info::v3::Request, _, _>(key_backup::get_version)
        .endpoint::<bk::update_backup_version::v3::Request, _, _>(key_backup::update_version)
        .endpoint::<bk::delete_backup_version::v3::Request, _, _>(key_backup::delete_version)
        .endpoint::<bk::add_backup_keys::v3::Request, _, _>(key_backup::put_keys)
        .endpoint::<bk::add_backup_keys_for_room::v3::Request, _, _>(key_backup::put_room_keys)
        .endpoint::<bk::add_backup_keys_for_session::v3::Request, _, _>(key_backup::put_session_key)
        .endpoint::<bk::get_backup_keys::v3::Request, _, _>(key_backup::get_keys)
        .endpoint::<bk::get_backup_keys_for_room::v3::Request, _, _>(key_backup::get_room_keys)
        .endpoint::<bk::get_backup_keys_for_session::v3::Request, _, _>(key_backup::get_session_key)
        .endpoint::<bk::delete_backup_keys::v3::Request, _, _>(key_backup::delete_keys)
        .endpoint::<bk::delete_backup_keys_for_room::v3::Request, _, _>(
            key_backup::delete_room_keys,
        )
        .endpoint::<bk::delete_backup_keys_for_session::v3::Request, _, _>(
            key_backup::delete_session_key,
        )
        // Push
        .endpoint::<psh::get_pushrules_all::v3::Request, _, _>(push::get_all)
        .endpoint::<psh::get_pushrules_global_scope::v3::Request, _, _>(push::get_global)
        .endpoint::<psh::get_pushrule::v3::Request, _, _>(push::get_rule)
        .endpoint::<psh::set_pushrule::v3::Request, _, _>(push::set_rule)
        .endpoint::<psh::delete_pushrule::v3::Request, _, _>(push::delete_rule)
        .endpoint::<psh::get_pushrule_enabled::v3::Request, _, _>(push::get_enabled)
        .endpoint::<psh::set_pushrule_enabled::v3::Request, _, _>(push::set_enabled)
        .endpoint::<psh::get_pushrule_actions::v3::Request, _, _>(push::get_actions)
        .endpoint::<psh::set_pushrule_actions::v3::Request, _, _>(push::set_actions)
        .endpoint::<psh::get_pushers::v3::Request, _, _>(push::get_pushers)
        .endpoint::<psh::set_pusher::v3::Request, _, _>(push::set_pusher)
        .endpoint::<psh::get_notifications::v3::Request, _, _>(push::get_notifications)
}
