//! Exercises the account validity, account data, presence router and
//! account-level third-party rules callbacks, driven by its configuration,
//! and makes each notification visible from outside through the `actions`
//! grant: it writes account data the tests read back.
//!
//! Configuration (every key optional):
//!
//! * `expired_users`: `is_user_expired` answers `Some(true)` for them,
//!   `None` for everyone else. With `"trap_expiry": true` it traps instead.
//! * `on_user_registration` sets the new user's global
//!   `com.example.registered` to `{"user_id": ...}`; `on_user_login` sets
//!   the user's `com.example.login` to `{"type": ..., "idp": ...}`.
//! * `watched_types` (default `["com.example.watched"]`): an update of one
//!   of these account data types sets the user's global
//!   `com.example.seen.<type>` to `{"type", "room_id", "content"}`.
//! * `undeactivatable_users`: `check_can_deactivate_user` refuses them.
//! * `on_profile_update` sets the user's `com.example.profile` to
//!   `{"displayname", "avatar_url", "by_admin", "deactivation"}`.
//! * `deactivation_observer`: `on_user_deactivation_status_changed` sets
//!   this user's `com.example.deactivated` to `{"user_id", "deactivated",
//!   "by_admin"}` (the deactivated user's own account data is out of reach).
//! * `shutdown_forbidden_for`: `check_can_shutdown_room` refuses room
//!   deletions these admins ask for.
//! * `rules_observer`: every call of `check_can_shutdown_room`,
//!   `check_can_deactivate_user`, `on_user_deactivation_status_changed`,
//!   `on_add_user_third_party_identifier`,
//!   `on_remove_user_third_party_identifier` and `on_threepid_bind` is
//!   appended, in order, to this user's `com.example.rules_log`
//!   (`{"calls": [{"callback", ...arguments}]}`).
//! * `presence_watchers`: users who receive everyone's presence (`all`);
//!   `presence_follows`: `{user: [users whose presence they receive]}`.
//!   With neither, the plugin does not route presence.
//!
//! * `threepid_users` (`{address: user_id}`): as a password auth provider,
//!   `check_3pid_auth` vouches for these e-mail addresses' users with the
//!   password `open-sesame` (and denies others).
//! * `registration_username_prefix`: `get_username_for_registration`
//!   answers the requested username with this prefix, and
//!   `get_displayname_for_registration` `Registered <username>`.
//!
//! * `threepid_inviters_refused`: `user_may_send_threepid_invite` refuses
//!   third-party invites by these users (`M_FORBIDDEN`, "no 3PID invites
//!   from you").
//! * `threepid_addresses_refused`: `check_threepid_can_be_invited` refuses
//!   these addresses.
//!
//! A refused action is logged as `action refused`.

use std::{collections::BTreeMap, sync::OnceLock};

use myelin_sdk::{
    AccountDataCallbacks, AccountValidity, ActionError, AuthCallback, AuthRegistration, AuthResult,
    AuthenticatedUser, Callback, DataCallback, InterestedUsers, PasswordAuthProvider, Plugin,
    PresenceRouter, PresenceState, RulesCallback, SpamChecker, SpamVerdict, ThirdPartyRules,
    UserProfile, ValidityCallback, actions, log,
    serde_json::{Value, json},
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    expired_users: Vec<String>,
    #[serde(default)]
    trap_expiry: bool,
    #[serde(default = "default_watched")]
    watched_types: Vec<String>,
    #[serde(default)]
    undeactivatable_users: Vec<String>,
    deactivation_observer: Option<String>,
    #[serde(default)]
    shutdown_forbidden_for: Vec<String>,
    rules_observer: Option<String>,
    #[serde(default)]
    presence_watchers: Vec<String>,
    #[serde(default)]
    presence_follows: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    threepid_users: BTreeMap<String, String>,
    registration_username_prefix: Option<String>,
    #[serde(default)]
    threepid_inviters_refused: Vec<String>,
    #[serde(default)]
    threepid_addresses_refused: Vec<String>,
}

fn default_watched() -> Vec<String> {
    vec!["com.example.watched".to_owned()]
}

static CONFIG: OnceLock<Config> = OnceLock::new();

fn config() -> &'static Config {
    CONFIG.get_or_init(Config::default)
}

/// Sets `user_id`'s global account data, logging a refusal.
fn record(user_id: &str, data_type: &str, content: Value) {
    if let Err(err) = actions::set_account_data(user_id, None, data_type, &content) {
        log::error(format!(
            "action refused: {data_type} for {user_id}: {}",
            describe(err)
        ));
    }
}

fn describe(err: ActionError) -> String {
    match err {
        ActionError::NotGranted => "not granted".to_owned(),
        ActionError::Refused(r) => format!("{}: {}", r.errcode, r.message),
        ActionError::Failed(why) => why,
    }
}

/// Appends a call to the rules observer's `com.example.rules_log`.
fn log_call(call: Value) {
    let Some(observer) = &config().rules_observer else {
        return;
    };
    const KIND: &str = "com.example.rules_log";
    // A failed read must not reset the log: say why, and leave it as it is.
    let mut log = match actions::account_data(observer, None, KIND) {
        Ok(Some(log)) => log,
        Ok(None) => json!({ "calls": [] }),
        Err(err) => {
            log::error(format!(
                "rules log unreadable, {call} not logged: {}",
                describe(err)
            ));
            return;
        }
    };
    if let Some(calls) = log["calls"].as_array_mut() {
        calls.push(call);
    }
    record(observer, KIND, log);
}

struct TestHooks;

impl Plugin for TestHooks {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let parsed: Config = myelin_sdk::parse_config(config)?;
        let config = CONFIG.get_or_init(|| parsed);
        let mut callbacks = Vec::new();
        if !config.threepid_inviters_refused.is_empty() {
            callbacks.push(Callback::UserMaySendThreepidInvite);
        }
        Ok(callbacks)
    }
}

impl SpamChecker for TestHooks {
    fn user_may_send_threepid_invite(
        inviter: &str,
        _medium: &str,
        _address: &str,
        _room_id: &str,
    ) -> SpamVerdict {
        if config()
            .threepid_inviters_refused
            .iter()
            .any(|u| u == inviter)
        {
            return SpamVerdict::forbidden("no 3PID invites from you");
        }
        SpamVerdict::NotSpam
    }
}

impl AccountValidity for TestHooks {
    fn register() -> Vec<ValidityCallback> {
        vec![
            ValidityCallback::IsUserExpired,
            ValidityCallback::OnUserRegistration,
            ValidityCallback::OnUserLogin,
        ]
    }

    fn is_user_expired(user_id: &str) -> Option<bool> {
        let config = config();
        if config.trap_expiry {
            trap();
        }
        config
            .expired_users
            .iter()
            .any(|u| u == user_id)
            .then_some(true)
    }

    fn on_user_registration(user_id: &str) {
        record(
            user_id,
            "com.example.registered",
            json!({ "user_id": user_id }),
        );
    }

    fn on_user_login(
        user_id: &str,
        auth_provider_type: Option<&str>,
        auth_provider_id: Option<&str>,
    ) {
        record(
            user_id,
            "com.example.login",
            json!({ "type": auth_provider_type, "idp": auth_provider_id }),
        );
    }
}

impl AccountDataCallbacks for TestHooks {
    fn register() -> Vec<DataCallback> {
        vec![DataCallback::OnAccountDataUpdated]
    }

    fn on_account_data_updated(
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
        content: &str,
    ) {
        if !config().watched_types.iter().any(|t| t == data_type) {
            return;
        }
        let content: Value = myelin_sdk::serde_json::from_str(content).unwrap_or_default();
        record(
            user_id,
            &format!("com.example.seen.{data_type}"),
            json!({ "type": data_type, "room_id": room_id, "content": content }),
        );
    }
}

impl ThirdPartyRules for TestHooks {
    fn register() -> Vec<RulesCallback> {
        vec![
            RulesCallback::CheckCanDeactivateUser,
            RulesCallback::OnProfileUpdate,
            RulesCallback::OnUserDeactivationStatusChanged,
            RulesCallback::CheckCanShutdownRoom,
            RulesCallback::OnAddUserThirdPartyIdentifier,
            RulesCallback::OnRemoveUserThirdPartyIdentifier,
            RulesCallback::OnThreepidBind,
            RulesCallback::CheckThreepidCanBeInvited,
        ]
    }

    fn check_threepid_can_be_invited(_medium: &str, address: &str, _room_id: &str) -> bool {
        !config()
            .threepid_addresses_refused
            .iter()
            .any(|a| a == address)
    }

    fn check_can_deactivate_user(user_id: &str, by_admin: bool) -> bool {
        log_call(json!({
            "callback": "check_can_deactivate_user",
            "user_id": user_id,
            "by_admin": by_admin,
        }));
        !config().undeactivatable_users.iter().any(|u| u == user_id)
    }

    fn check_can_shutdown_room(user_id: Option<&str>, room_id: &str) -> bool {
        log_call(json!({
            "callback": "check_can_shutdown_room",
            "user_id": user_id,
            "room_id": room_id,
        }));
        !user_id.is_some_and(|u| config().shutdown_forbidden_for.iter().any(|f| f == u))
    }

    fn on_add_user_third_party_identifier(user_id: &str, medium: &str, address: &str) {
        log_call(json!({
            "callback": "on_add_user_third_party_identifier",
            "user_id": user_id,
            "medium": medium,
            "address": address,
        }));
    }

    fn on_remove_user_third_party_identifier(user_id: &str, medium: &str, address: &str) {
        log_call(json!({
            "callback": "on_remove_user_third_party_identifier",
            "user_id": user_id,
            "medium": medium,
            "address": address,
        }));
    }

    fn on_threepid_bind(user_id: &str, medium: &str, address: &str) {
        log_call(json!({
            "callback": "on_threepid_bind",
            "user_id": user_id,
            "medium": medium,
            "address": address,
        }));
    }

    fn on_profile_update(user_id: &str, profile: &UserProfile, by_admin: bool, deactivation: bool) {
        record(
            user_id,
            "com.example.profile",
            json!({
                "displayname": profile.display_name,
                "avatar_url": profile.avatar_url,
                "by_admin": by_admin,
                "deactivation": deactivation,
            }),
        );
    }

    fn on_user_deactivation_status_changed(user_id: &str, deactivated: bool, by_admin: bool) {
        log_call(json!({
            "callback": "on_user_deactivation_status_changed",
            "user_id": user_id,
            "deactivated": deactivated,
            "by_admin": by_admin,
        }));
        if let Some(observer) = &config().deactivation_observer {
            record(
                observer,
                "com.example.deactivated",
                json!({ "user_id": user_id, "deactivated": deactivated, "by_admin": by_admin }),
            );
        }
    }
}

impl PresenceRouter for TestHooks {
    fn register() -> bool {
        let config = config();
        !config.presence_watchers.is_empty() || !config.presence_follows.is_empty()
    }

    fn get_users_for_states(states: &[PresenceState]) -> Vec<(String, Vec<PresenceState>)> {
        let config = config();
        let mut routed: Vec<(String, Vec<PresenceState>)> = config
            .presence_watchers
            .iter()
            .map(|watcher| (watcher.clone(), states.to_vec()))
            .collect();
        for (follower, followed) in &config.presence_follows {
            let states: Vec<PresenceState> = states
                .iter()
                .filter(|s| followed.contains(&s.user_id))
                .cloned()
                .collect();
            if !states.is_empty() {
                routed.push((follower.clone(), states));
            }
        }
        routed
    }

    fn get_interested_users(user_id: &str) -> InterestedUsers {
        let config = config();
        if config.presence_watchers.iter().any(|w| w == user_id) {
            return InterestedUsers::All;
        }
        InterestedUsers::Users(
            config
                .presence_follows
                .get(user_id)
                .cloned()
                .unwrap_or_default(),
        )
    }
}

impl PasswordAuthProvider for TestHooks {
    fn register() -> AuthRegistration {
        let config = config();
        let mut callbacks = Vec::new();
        if !config.threepid_users.is_empty() {
            callbacks.push(AuthCallback::CheckThreepidAuth);
        }
        if config.registration_username_prefix.is_some() {
            callbacks.push(AuthCallback::GetUsernameForRegistration);
            callbacks.push(AuthCallback::GetDisplaynameForRegistration);
        }
        AuthRegistration {
            auth_checkers: Vec::new(),
            callbacks,
        }
    }

    fn check_threepid_auth(medium: &str, address: &str, password: &str) -> AuthResult {
        match config().threepid_users.get(address) {
            Some(user_id) if medium == "email" && password == "open-sesame" => {
                AuthResult::Authenticated(AuthenticatedUser {
                    user_id: user_id.clone(),
                    display_name: Some(format!("Known as {address}")),
                })
            }
            Some(_) => AuthResult::Denied,
            None => AuthResult::NotHandled,
        }
    }

    fn get_username_for_registration(_uia_results: &str, params: &str) -> Option<String> {
        let prefix = config().registration_username_prefix.as_ref()?;
        let params: Value = myelin_sdk::serde_json::from_str(params).ok()?;
        Some(format!("{prefix}{}", params["username"].as_str()?))
    }

    fn get_displayname_for_registration(_uia_results: &str, params: &str) -> Option<String> {
        let params: Value = myelin_sdk::serde_json::from_str(params).ok()?;
        Some(format!("Registered {}", params["username"].as_str()?))
    }
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    panic!("test-hooks: trap")
}

myelin_sdk::export_plugin!(
    TestHooks: SpamChecker,
    AccountValidity,
    PasswordAuthProvider,
    AccountDataCallbacks,
    ThirdPartyRules,
    PresenceRouter
);
