//! Automatically accepts invites, as the Synapse module
//! `synapse-auto-accept-invite` does: when a local user is invited to a
//! room, the plugin joins them to it, and when the invite is for a direct
//! chat (`is_direct`), adds the room to the user's `m.direct` account data
//! under the inviter.
//!
//! Configuration (the module's keys):
//!
//! * `accept_invites_only_for_direct_messages` (default `false`): only
//!   invites to direct chats are accepted;
//! * `accept_invites_only_from_local_users` (default `false`): only invites
//!   sent by users of this server are accepted.
//!
//! Needs the `actions` grant (joining, and the account data). The invitee
//! must be a user of this server: the host refuses to act for anyone else.

use std::sync::OnceLock;

use myelin_sdk::{
    Callback, Event, Plugin, RulesCallback, ThirdPartyRules, actions, log,
    serde_json::{Value, json},
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    accept_invites_only_for_direct_messages: bool,
    accept_invites_only_from_local_users: bool,
    /// Synapse's key for choosing a worker; meaningless here, accepted so
    /// that a Synapse configuration can be copied over.
    worker_to_run_on: Option<String>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct AutoAcceptInvite;

impl Plugin for AutoAcceptInvite {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let config: Config = myelin_sdk::parse_config(config)?;
        CONFIG.get_or_init(|| config);
        Ok(Vec::new())
    }
}

/// `example.org` from `@alice:example.org`.
fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map_or("", |(_, server)| server)
}

impl ThirdPartyRules for AutoAcceptInvite {
    fn register() -> Vec<RulesCallback> {
        vec![RulesCallback::OnNewEvent]
    }

    fn on_new_event(event: &Event) {
        let config = CONFIG.get_or_init(Config::default);
        if event.event_type != "m.room.member" {
            return;
        }
        let Some(invitee) = event.state_key.as_deref() else {
            return;
        };
        let content = event.content_json();
        if content["membership"] != "invite" || invitee == event.sender {
            return;
        }
        let is_direct = content["is_direct"] == true;
        if config.accept_invites_only_for_direct_messages && !is_direct {
            return;
        }
        // The invitee is local (the host acts only for local users), so an
        // inviter on the same server is local too.
        if config.accept_invites_only_from_local_users
            && server_of(&event.sender) != server_of(invitee)
        {
            return;
        }
        if let Err(err) =
            actions::update_room_membership(invitee, invitee, &event.room_id, "join", None)
        {
            log::warn(format!(
                "could not accept {invitee}'s invite to {}: {err:?}",
                event.room_id
            ));
            return;
        }
        if is_direct {
            mark_direct(invitee, &event.sender, &event.room_id);
        }
    }
}

/// Adds the room to the invitee's `m.direct` list for the inviter.
fn mark_direct(invitee: &str, inviter: &str, room_id: &str) {
    let mut direct = match actions::account_data(invitee, None, "m.direct") {
        Ok(Some(Value::Object(direct))) => direct,
        Ok(_) => Default::default(),
        Err(err) => {
            log::warn(format!("could not read {invitee}'s m.direct: {err:?}"));
            return;
        }
    };
    let rooms = direct.entry(inviter).or_insert_with(|| json!([]));
    if !rooms.is_array() {
        *rooms = json!([]);
    }
    let list = rooms.as_array_mut().expect("made an array above");
    if !list.iter().any(|r| r == room_id) {
        list.push(room_id.into());
    }
    if let Err(err) = actions::set_account_data(invitee, None, "m.direct", &Value::Object(direct)) {
        log::warn(format!("could not update {invitee}'s m.direct: {err:?}"));
    }
}

myelin_sdk::export_plugin!(AutoAcceptInvite: ThirdPartyRules);
