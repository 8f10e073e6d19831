//! Write Myelin plugins in Rust.
//!
//! A Myelin plugin is a WebAssembly component (WASI 0.2) targeting the world
//! `plugin` of the WIT package `myelin:plugin@0.1.0` (`wit/plugin.wit` in the
//! Myelin repository). This crate wraps the bindings `wit-bindgen` generates
//! for that world in plain Rust traits:
//!
//! * [`Plugin`]: `init`, called once with the operator's configuration; it
//!   answers with the [`Callback`]s the plugin implements. The server only
//!   ever calls those.
//! * [`SpamChecker`]: one method per spam-checker callback, each with a
//!   default that lets the action through (`not-spam`, `allow` or `false`).
//!   Override the ones your plugin lists in `init`.
//! * [`PasswordAuthProvider`]: password auth provider callbacks (login
//!   types with their fields, `on_logged_out`, the registration callbacks).
//!   Optional: [`PasswordAuthProvider::register`] says which are implemented.
//! * [`ThirdPartyRules`], [`AccountValidity`], [`AccountDataCallbacks`],
//!   [`PresenceRouter`], [`SsoMappingProvider`]: the other hook families, each with a `register`
//!   naming what the plugin implements.
//! * [`export_plugin!`]: exports a type implementing these traits as the
//!   component's interfaces: `export_plugin!(MyPlugin)` for [`Plugin`] and
//!   [`SpamChecker`], `export_plugin!(MyPlugin: PasswordAuthProvider)` (or
//!   `: SpamChecker, PasswordAuthProvider`) to name the families it
//!   implements.
//!
//! The host's imports are wrapped too: [`log`] writes to the server's log;
//! [`kv`], [`http`], [`queries`] and [`actions`] work when the operator
//! granted them.
//!
//! # Example
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! myelin-sdk = { path = "../sdk" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use std::sync::OnceLock;
//!
//! use myelin_sdk::{Callback, Event, Plugin, SpamChecker, SpamVerdict, log};
//!
//! static BANNED: OnceLock<String> = OnceLock::new();
//!
//! struct NoWord;
//!
//! impl Plugin for NoWord {
//!     fn init(config: &str) -> Result<Vec<Callback>, String> {
//!         let config = myelin_sdk::parse_config::<myelin_sdk::serde_json::Value>(config)?;
//!         let word = config["word"].as_str().ok_or("`word` is required")?;
//!         BANNED.get_or_init(|| word.to_owned());
//!         Ok(vec![Callback::CheckEventForSpam])
//!     }
//! }
//!
//! impl SpamChecker for NoWord {
//!     fn check_event_for_spam(event: &Event) -> SpamVerdict {
//!         let Some(banned) = BANNED.get() else {
//!             return SpamVerdict::NotSpam;
//!         };
//!         match event.content_json()["body"].as_str() {
//!             Some(body) if body.contains(banned.as_str()) => {
//!                 log::info(format!("rejecting {} from {}", event.event_id, event.sender));
//!                 SpamVerdict::forbidden(format!("the word {banned:?} is not allowed"))
//!             }
//!             _ => SpamVerdict::NotSpam,
//!         }
//!     }
//! }
//!
//! myelin_sdk::export_plugin!(NoWord);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the
//! `.wasm` file in `target/wasm32-wasip2/release/` is the component.
//!
//! # State
//!
//! The callbacks are associated functions, as in the WIT world: a plugin
//! keeps what `init` parsed in a `static` (`OnceLock`, or a `thread_local!`
//! `RefCell` when it changes). Each plugin instance has its own memory, so
//! this state is per instance.
//!
//! # Native builds
//!
//! The crate also compiles for the host target, so a plugin's logic can be
//! unit-tested natively; there [`log`] writes to stderr instead of calling
//! the host.
//!
//! The dependency must be named `myelin_sdk` (the default for the package
//! `myelin-sdk`): the generated export code refers to it by that name.

use std::marker::PhantomData;

extern crate self as myelin_sdk;

/// The raw bindings `wit-bindgen` generates for the world `plugin`. Prefer
/// the re-exports and traits at the crate root.
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "myelin_sdk::bindings",
        runtime_path: "myelin_sdk::__private::wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::exports::myelin::plugin::account_data::DataCallback;
pub use bindings::exports::myelin::plugin::account_validity::ValidityCallback;
pub use bindings::exports::myelin::plugin::password_auth::{
    AuthCallback, AuthChecker, AuthRegistration, AuthResult, AuthenticatedUser,
};
pub use bindings::exports::myelin::plugin::presence_router::{InterestedUsers, PresenceState};
pub use bindings::exports::myelin::plugin::sso_mapping::UserAttributes;
pub use bindings::exports::myelin::plugin::third_party_rules::{EventDecision, RulesCallback};
pub use bindings::myelin::plugin::types::{
    ActionError, Callback, Event, HostError, HttpRequest, HttpResponse, LogLevel,
    RegistrationVerdict, Rejection, SpamVerdict, UserProfile,
};
pub use serde_json;

/// Loading: implemented by every plugin.
pub trait Plugin {
    /// Called once per plugin instance, before any other callback, with the
    /// operator's `config:` as JSON text (`{}` when there is none).
    ///
    /// Returns the callbacks this plugin implements (only those are ever
    /// called), or a message saying what is wrong with the configuration; the
    /// server then refuses to start and shows it.
    fn init(config: &str) -> Result<Vec<Callback>, String>;
}

/// Spam checks, with Synapse's semantics: the first plugin whose answer is
/// not `NotSpam` / `Allow` / `false` decides.
///
/// Every method has a default that lets the action through; override the
/// ones [`Plugin::init`] lists.
pub trait SpamChecker {
    /// An event a local client (or, with federation, a remote server) sends,
    /// before it is stored.
    fn check_event_for_spam(_event: &Event) -> SpamVerdict {
        SpamVerdict::NotSpam
    }

    /// A user joining a room; not asked for server admins, nor for the
    /// creator joining their new room.
    fn user_may_join_room(_user_id: &str, _room_id: &str, _is_invited: bool) -> SpamVerdict {
        SpamVerdict::NotSpam
    }

    /// A user inviting another user.
    fn user_may_invite(_inviter: &str, _invitee: &str, _room_id: &str) -> SpamVerdict {
        SpamVerdict::NotSpam
    }

    /// A user inviting a third-party identifier (`medium` is e.g. `email`).
    fn user_may_send_threepid_invite(
        _inviter: &str,
        _medium: &str,
        _address: &str,
        _room_id: &str,
    ) -> SpamVerdict {
        SpamVerdict::NotSpam
    }

    /// A user creating a room; `request` is the `createRoom` body as JSON.
    fn user_may_create_room(_user_id: &str, _request: &str) -> SpamVerdict {
        SpamVerdict::NotSpam
    }

    /// A user mapping an alias to a room.
    fn user_may_create_room_alias(_user_id: &str, _room_alias: &str) -> SpamVerdict {
        SpamVerdict::NotSpam
    }

    /// A user publishing a room in the public room directory.
    fn user_may_publish_room(_user_id: &str, _room_id: &str) -> SpamVerdict {
        SpamVerdict::NotSpam
    }

    /// Whether to leave a user out of user directory results (`true` hides).
    fn check_username_for_spam(_profile: &UserProfile) -> bool {
        false
    }

    /// A registration. `username` is `None` when the server picks one;
    /// `request_info` lists the (user agent, IP address) pairs seen.
    fn check_registration_for_spam(
        _email: Option<&str>,
        _username: Option<&str>,
        _request_info: &[(String, String)],
        _auth_provider_id: Option<&str>,
    ) -> RegistrationVerdict {
        RegistrationVerdict::Allow
    }

    /// An uploaded file: its first bytes (at most 1 MiB), its content type
    /// and total length.
    fn check_media_file_for_spam(
        _prefix: &[u8],
        _content_type: Option<&str>,
        _length: u64,
    ) -> SpamVerdict {
        SpamVerdict::NotSpam
    }

    /// Whether to silently drop an event a remote server sends (`true` drops
    /// it).
    fn should_drop_federated_event(_event: &Event) -> bool {
        false
    }
}

/// Password auth provider callbacks, with Synapse's semantics (see
/// `password-auth` in the WIT).
///
/// [`register`](Self::register) names the login types the plugin checks
/// (with the fields a login must carry) and the other callbacks it
/// implements; only those are called. Every method has a default.
pub trait PasswordAuthProvider {
    /// Called once after [`Plugin::init`]: the login types and callbacks
    /// this plugin implements.
    fn register() -> AuthRegistration {
        AuthRegistration {
            auth_checkers: Vec::new(),
            callbacks: Vec::new(),
        }
    }

    /// A login of a registered type. `user` is the user the client named,
    /// as sent (maybe a bare localpart); `fields` has each registered field
    /// with the client's value. Answer [`AuthResult::NotHandled`] to let the
    /// next plugin (then, for `m.login.password`, the local database) try.
    fn check_auth(_user: &str, _login_type: &str, _fields: &[(String, String)]) -> AuthResult {
        AuthResult::NotHandled
    }

    /// A password login naming a third-party identifier instead of a user.
    fn check_threepid_auth(_medium: &str, _address: &str, _password: &str) -> AuthResult {
        AuthResult::NotHandled
    }

    /// After a logout; the answer is not awaited by the client.
    fn on_logged_out(_user_id: &str, _device_id: Option<&str>, _access_token: &str) {}

    /// A localpart to force for a new user (`uia_results` and `params` are
    /// JSON objects); `None` leaves the choice to the next plugin or the
    /// client.
    fn get_username_for_registration(_uia_results: &str, _params: &str) -> Option<String> {
        None
    }

    /// A display name for a new user; `None` leaves it to the next plugin
    /// (or the localpart).
    fn get_displayname_for_registration(_uia_results: &str, _params: &str) -> Option<String> {
        None
    }

    /// Whether a third-party identifier may be bound to a local account.
    fn is_threepid_allowed(_medium: &str, _address: &str, _registration: bool) -> bool {
        true
    }
}

/// Third-party event rules, with Synapse's semantics (see
/// `third-party-rules` in the WIT). [`register`](Self::register) lists the
/// callbacks the plugin implements; only those are called. Every method has
/// a default.
pub trait ThirdPartyRules {
    /// Called once after [`Plugin::init`].
    fn register() -> Vec<RulesCallback> {
        Vec::new()
    }

    /// A new event, before it is signed and stored: allow it, deny it, or
    /// allow it with another content ([`EventDecision::replace_content`]).
    fn check_event_allowed(_event: &Event) -> EventDecision {
        EventDecision::Allow
    }

    /// A room creation (`request` is the `createRoom` body as JSON):
    /// `Ok(None)` leaves it, `Ok(Some(json))` replaces it, `Err` refuses.
    fn on_create_room(
        _requester: &str,
        _request: &str,
        _is_requester_admin: bool,
    ) -> Result<Option<String>, Rejection> {
        Ok(None)
    }

    fn check_threepid_can_be_invited(_medium: &str, _address: &str, _room_id: &str) -> bool {
        true
    }

    /// `new_visibility` is `public` or `private`.
    fn check_visibility_can_be_modified(_room_id: &str, _new_visibility: &str) -> bool {
        true
    }

    /// An event, after it is stored; runs in the background.
    fn on_new_event(_event: &Event) {}

    fn check_can_shutdown_room(_user_id: Option<&str>, _room_id: &str) -> bool {
        true
    }

    fn check_can_deactivate_user(_user_id: &str, _by_admin: bool) -> bool {
        true
    }

    fn on_profile_update(
        _user_id: &str,
        _profile: &UserProfile,
        _by_admin: bool,
        _deactivation: bool,
    ) {
    }

    fn on_user_deactivation_status_changed(_user_id: &str, _deactivated: bool, _by_admin: bool) {}

    fn on_threepid_bind(_user_id: &str, _medium: &str, _address: &str) {}

    fn on_add_user_third_party_identifier(_user_id: &str, _medium: &str, _address: &str) {}

    fn on_remove_user_third_party_identifier(_user_id: &str, _medium: &str, _address: &str) {}
}

/// Account validity callbacks (see `account-validity` in the WIT).
pub trait AccountValidity {
    /// Called once after [`Plugin::init`].
    fn register() -> Vec<ValidityCallback> {
        Vec::new()
    }

    /// `Some(true)` refuses the user's requests as expired; `None` leaves
    /// the answer to the next plugin.
    fn is_user_expired(_user_id: &str) -> Option<bool> {
        None
    }

    fn on_user_registration(_user_id: &str) {}

    fn on_user_login(
        _user_id: &str,
        _auth_provider_type: Option<&str>,
        _auth_provider_id: Option<&str>,
    ) {
    }
}

/// Account data callbacks (see `account-data` in the WIT).
pub trait AccountDataCallbacks {
    /// Called once after [`Plugin::init`].
    fn register() -> Vec<DataCallback> {
        Vec::new()
    }

    /// After a local user's account data changed (`room_id` is `None` for
    /// global data; `content` is JSON).
    fn on_account_data_updated(
        _user_id: &str,
        _room_id: Option<&str>,
        _data_type: &str,
        _content: &str,
    ) {
    }
}

/// A presence router (see `presence-router` in the WIT): both callbacks,
/// or none.
pub trait PresenceRouter {
    /// Whether this plugin routes presence.
    fn register() -> bool {
        false
    }

    /// Which local users should receive which of these updates, besides
    /// those who share a room with them.
    fn get_users_for_states(_states: &[PresenceState]) -> Vec<(String, Vec<PresenceState>)> {
        Vec::new()
    }

    /// Whose presence `user_id` receives besides their room-mates'.
    fn get_interested_users(_user_id: &str) -> InterestedUsers {
        InterestedUsers::Users(Vec::new())
    }
}

/// An SSO mapping provider (see `sso-mapping` in the WIT), named by an
/// OIDC provider's `user_mapping_provider.module`. `userinfo` is the
/// identity provider's claims and `token` its token response, both JSON.
pub trait SsoMappingProvider {
    /// Whether this plugin maps SSO users.
    fn register() -> bool {
        false
    }

    /// The user's stable ID at the identity provider.
    fn get_remote_user_id(_userinfo: &str) -> Result<String, String> {
        Err("this plugin does not map SSO users".to_owned())
    }

    /// A first-time user; called again with `failures` one higher while
    /// the localpart is taken. `Err` fails the login with the message.
    fn map_user_attributes(
        _userinfo: &str,
        _token: &str,
        _failures: u32,
    ) -> Result<UserAttributes, String> {
        Err("this plugin does not map SSO users".to_owned())
    }

    /// Extra fields (a JSON object) for the client's login response.
    fn get_extra_attributes(_userinfo: &str, _token: &str) -> String {
        "{}".to_owned()
    }
}

impl EventDecision {
    /// Allows `event` with `content` (a JSON object) instead of its own.
    pub fn replace_content(event: &Event, content: &serde_json::Value) -> Self {
        Self::Replace(Event {
            content: content.to_string(),
            ..event.clone()
        })
    }

    /// Refuses the event with `M_FORBIDDEN` and this message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Deny(Rejection::new("M_FORBIDDEN", message))
    }
}

/// The value of a login field [`PasswordAuthProvider::check_auth`] got.
pub fn login_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

impl AuthChecker {
    /// A login type and the fields a login of it must carry.
    pub fn new(login_type: impl Into<String>, fields: &[&str]) -> Self {
        Self {
            login_type: login_type.into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

impl AuthResult {
    /// Authenticated as `user_id`, with no display name for a new user.
    pub fn user(user_id: impl Into<String>) -> Self {
        Self::Authenticated(AuthenticatedUser {
            user_id: user_id.into(),
            display_name: None,
        })
    }
}

/// Exports a type as this component's interfaces. Use it once, in a
/// `cdylib` crate, naming the hook families the type implements besides
/// [`Plugin`] (every type must implement that): [`SpamChecker`],
/// [`PasswordAuthProvider`], [`ThirdPartyRules`], [`AccountValidity`],
/// [`AccountDataCallbacks`], [`PresenceRouter`], [`SsoMappingProvider`].
///
/// ```ignore
/// myelin_sdk::export_plugin!(MyPlugin); // SpamChecker
/// myelin_sdk::export_plugin!(MyAuth: PasswordAuthProvider);
/// myelin_sdk::export_plugin!(Both: SpamChecker, ThirdPartyRules);
/// ```
///
/// The families not named answer with their defaults (and, since `init` /
/// `register` do not list them, are never called).
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        $crate::export_plugin!($ty: SpamChecker);
    };
    ($ty:ty: $($family:ident),+ $(,)?) => {
        const _: () = {
            type MyelinPluginExport = $crate::__private::Adapter<
                $ty,
                $crate::__pick!(SpamChecker, $ty; $($family),+),
                $crate::__pick!(PasswordAuthProvider, $ty; $($family),+),
                $crate::__pick!(ThirdPartyRules, $ty; $($family),+),
                $crate::__pick!(AccountValidity, $ty; $($family),+),
                $crate::__pick!(AccountDataCallbacks, $ty; $($family),+),
                $crate::__pick!(PresenceRouter, $ty; $($family),+),
                $crate::__pick!(SsoMappingProvider, $ty; $($family),+),
            >;
    $crate::bindings::export_world!(MyelinPluginExport with_types_in $crate::bindings);
        };
    };
}

/// `$ty` if the family is in the list, else the no-op implementation
/// ([`__private::Defaults`]). A name that is no family is a compile error.
#[doc(hidden)]
#[macro_export]
macro_rules! __pick {
    ($family:ident, $ty:ty;) => { $crate::__private::Defaults };
    (SpamChecker, $ty:ty; SpamChecker $(, $rest:ident)*) => { $ty };
    (PasswordAuthProvider, $ty:ty; PasswordAuthProvider $(, $rest:ident)*) => { $ty };
    (ThirdPartyRules, $ty:ty; ThirdPartyRules $(, $rest:ident)*) => { $ty };
    (AccountValidity, $ty:ty; AccountValidity $(, $rest:ident)*) => { $ty };
    (AccountDataCallbacks, $ty:ty; AccountDataCallbacks $(, $rest:ident)*) => { $ty };
    (PresenceRouter, $ty:ty; PresenceRouter $(, $rest:ident)*) => { $ty };
    (SsoMappingProvider, $ty:ty; SsoMappingProvider $(, $rest:ident)*) => { $ty };
    ($family:ident, $ty:ty; $other:ident $(, $rest:ident)*) => {
        $crate::__pick!($family, $ty; $($rest),*)
    };
}

/// Parses the JSON configuration [`Plugin::init`] receives into `T`, with an
/// error message suitable for `init`'s `Err`.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))
}

impl Event {
    /// The content, parsed; `Value::Null` if it is not valid JSON (the
    /// server always sends valid JSON).
    pub fn content_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.content).unwrap_or_default()
    }

    /// The `unsigned` data, parsed, if present and valid JSON.
    pub fn unsigned_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.unsigned.as_deref()?).ok()
    }
}

impl Rejection {
    /// A rejection with a Matrix error code (e.g. `M_FORBIDDEN`) and a
    /// message shown to the user.
    pub fn new(errcode: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errcode: errcode.into(),
            message: message.into(),
        }
    }
}

impl SpamVerdict {
    /// Refuses the action with this Matrix error code and message.
    pub fn reject(errcode: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Reject(Rejection::new(errcode, message))
    }

    /// Refuses the action with `M_FORBIDDEN` and this message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::reject("M_FORBIDDEN", message)
    }

    /// Whether this verdict refuses the action.
    pub fn is_reject(&self) -> bool {
        matches!(self, Self::Reject(_))
    }
}

impl RegistrationVerdict {
    /// Refuses the registration with this Matrix error code and message.
    pub fn deny(errcode: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Deny(Rejection::new(errcode, message))
    }

    /// Refuses the registration with `M_FORBIDDEN` and this message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::deny("M_FORBIDDEN", message)
    }
}

/// Writing to the server's log; each line is tagged with the plugin's name.
///
/// Outside WebAssembly (native unit tests) lines go to stderr.
pub mod log {
    use super::LogLevel;

    /// Writes `message` at `level`.
    pub fn log(level: LogLevel, message: impl AsRef<str>) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::myelin::plugin::host::log(level, message.as_ref());
        #[cfg(not(target_arch = "wasm32"))]
        {
            let level = match level {
                LogLevel::Trace => "TRACE",
                LogLevel::Debug => "DEBUG",
                LogLevel::Info => "INFO",
                LogLevel::Warn => "WARN",
                LogLevel::Error => "ERROR",
            };
            eprintln!("{level} {}", message.as_ref());
        }
    }

    /// Writes `message` at level `trace`.
    pub fn trace(message: impl AsRef<str>) {
        log(LogLevel::Trace, message)
    }

    /// Writes `message` at level `debug`.
    pub fn debug(message: impl AsRef<str>) {
        log(LogLevel::Debug, message)
    }

    /// Writes `message` at level `info`.
    pub fn info(message: impl AsRef<str>) {
        log(LogLevel::Info, message)
    }

    /// Writes `message` at level `warn`.
    pub fn warn(message: impl AsRef<str>) {
        log(LogLevel::Warn, message)
    }

    /// Writes `message` at level `error`.
    pub fn error(message: impl AsRef<str>) {
        log(LogLevel::Error, message)
    }
}

/// Support for [`export_plugin!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::bindings::exports::myelin::plugin::{
        account_data, account_validity, lifecycle, password_auth, presence_router, spam_checker,
        sso_mapping, third_party_rules,
    };

    pub use wit_bindgen;

    /// Implements the generated `Guest` traits by delegating: `lifecycle`
    /// to `T`, and each hook interface to its parameter (`T`, or
    /// [`Defaults`] for a family the plugin does not implement): `S`
    /// spam-checker, `A` password-auth, `R` third-party-rules, `V` account
    /// validity, `D` account data, `P` presence router, `M` SSO mapping.
    #[allow(clippy::type_complexity)] // a marker, never built: one parameter per family
    pub struct Adapter<T, S, A, R, V, D, P, M>(PhantomData<(T, S, A, R, V, D, P, M)>);

    /// The default answers of every family.
    pub struct Defaults;

    impl SpamChecker for Defaults {}

    impl PasswordAuthProvider for Defaults {}

    impl ThirdPartyRules for Defaults {}

    impl AccountValidity for Defaults {}

    impl AccountDataCallbacks for Defaults {}

    impl PresenceRouter for Defaults {}

    impl SsoMappingProvider for Defaults {}

    impl<T, S, A, R, V, D, P, M: SsoMappingProvider> sso_mapping::Guest
        for Adapter<T, S, A, R, V, D, P, M>
    {
        fn register() -> bool {
            M::register()
        }

        fn get_remote_user_id(userinfo: String) -> Result<String, String> {
            M::get_remote_user_id(&userinfo)
        }

        fn map_user_attributes(
            userinfo: String,
            token: String,
            failures: u32,
        ) -> Result<UserAttributes, String> {
            M::map_user_attributes(&userinfo, &token, failures)
        }

        fn get_extra_attributes(userinfo: String, token: String) -> String {
            M::get_extra_attributes(&userinfo, &token)
        }
    }

    impl<T: Plugin, S, A, R, V, D, P, M> lifecycle::Guest for Adapter<T, S, A, R, V, D, P, M> {
        fn init(config: String) -> Result<Vec<Callback>, String> {
            T::init(&config)
        }
    }

    impl<T, S, A, R: ThirdPartyRules, V, D, P, M> third_party_rules::Guest
        for Adapter<T, S, A, R, V, D, P, M>
    {
        fn register() -> Vec<RulesCallback> {
            R::register()
        }

        fn check_event_allowed(event: Event) -> EventDecision {
            R::check_event_allowed(&event)
        }

        fn on_create_room(
            requester: String,
            request: String,
            is_requester_admin: bool,
        ) -> Result<Option<String>, Rejection> {
            R::on_create_room(&requester, &request, is_requester_admin)
        }

        fn check_threepid_can_be_invited(medium: String, address: String, room_id: String) -> bool {
            R::check_threepid_can_be_invited(&medium, &address, &room_id)
        }

        fn check_visibility_can_be_modified(room_id: String, new_visibility: String) -> bool {
            R::check_visibility_can_be_modified(&room_id, &new_visibility)
        }

        fn on_new_event(event: Event) {
            R::on_new_event(&event)
        }

        fn check_can_shutdown_room(user_id: Option<String>, room_id: String) -> bool {
            R::check_can_shutdown_room(user_id.as_deref(), &room_id)
        }

        fn check_can_deactivate_user(user_id: String, by_admin: bool) -> bool {
            R::check_can_deactivate_user(&user_id, by_admin)
        }

        fn on_profile_update(
            user_id: String,
            profile: UserProfile,
            by_admin: bool,
            deactivation: bool,
        ) {
            R::on_profile_update(&user_id, &profile, by_admin, deactivation)
        }

        fn on_user_deactivation_status_changed(user_id: String, deactivated: bool, by_admin: bool) {
            R::on_user_deactivation_status_changed(&user_id, deactivated, by_admin)
        }

        fn on_threepid_bind(user_id: String, medium: String, address: String) {
            R::on_threepid_bind(&user_id, &medium, &address)
        }

        fn on_add_user_third_party_identifier(user_id: String, medium: String, address: String) {
            R::on_add_user_third_party_identifier(&user_id, &medium, &address)
        }

        fn on_remove_user_third_party_identifier(user_id: String, medium: String, address: String) {
            R::on_remove_user_third_party_identifier(&user_id, &medium, &address)
        }
    }

    impl<T, S, A, R, V: AccountValidity, D, P, M> account_validity::Guest
        for Adapter<T, S, A, R, V, D, P, M>
    {
        fn register() -> Vec<ValidityCallback> {
            V::register()
        }

        fn is_user_expired(user_id: String) -> Option<bool> {
            V::is_user_expired(&user_id)
        }

        fn on_user_registration(user_id: String) {
            V::on_user_registration(&user_id)
        }

        fn on_user_login(
            user_id: String,
            auth_provider_type: Option<String>,
            auth_provider_id: Option<String>,
        ) {
            V::on_user_login(
                &user_id,
                auth_provider_type.as_deref(),
                auth_provider_id.as_deref(),
            )
        }
    }

    impl<T, S, A, R, V, D: AccountDataCallbacks, P, M> account_data::Guest
        for Adapter<T, S, A, R, V, D, P, M>
    {
        fn register() -> Vec<DataCallback> {
            D::register()
        }

        fn on_account_data_updated(
            user_id: String,
            room_id: Option<String>,
            account_data_type: String,
            content: String,
        ) {
            D::on_account_data_updated(&user_id, room_id.as_deref(), &account_data_type, &content)
        }
    }

    impl<T, S, A, R, V, D, P: PresenceRouter, M> presence_router::Guest
        for Adapter<T, S, A, R, V, D, P, M>
    {
        fn register() -> bool {
            P::register()
        }

        fn get_users_for_states(states: Vec<PresenceState>) -> Vec<(String, Vec<PresenceState>)> {
            P::get_users_for_states(&states)
        }

        fn get_interested_users(user_id: String) -> InterestedUsers {
            P::get_interested_users(&user_id)
        }
    }

    impl<T, S, A: PasswordAuthProvider, R, V, D, P, M> password_auth::Guest
        for Adapter<T, S, A, R, V, D, P, M>
    {
        fn register() -> AuthRegistration {
            A::register()
        }

        fn check_auth(
            user: String,
            login_type: String,
            fields: Vec<(String, String)>,
        ) -> AuthResult {
            A::check_auth(&user, &login_type, &fields)
        }

        fn check_threepid_auth(medium: String, address: String, password: String) -> AuthResult {
            A::check_threepid_auth(&medium, &address, &password)
        }

        fn on_logged_out(user_id: String, device_id: Option<String>, access_token: String) {
            A::on_logged_out(&user_id, device_id.as_deref(), &access_token)
        }

        fn get_username_for_registration(uia_results: String, params: String) -> Option<String> {
            A::get_username_for_registration(&uia_results, &params)
        }

        fn get_displayname_for_registration(uia_results: String, params: String) -> Option<String> {
            A::get_displayname_for_registration(&uia_results, &params)
        }

        fn is_threepid_allowed(medium: String, address: String, registration: bool) -> bool {
            A::is_threepid_allowed(&medium, &address, registration)
        }
    }

    impl<T, S: SpamChecker, A, R, V, D, P, M> spam_checker::Guest for Adapter<T, S, A, R, V, D, P, M> {
        fn check_event_for_spam(event: Event) -> SpamVerdict {
            S::check_event_for_spam(&event)
        }

        fn user_may_join_room(user_id: String, room_id: String, is_invited: bool) -> SpamVerdict {
            S::user_may_join_room(&user_id, &room_id, is_invited)
        }

        fn user_may_invite(inviter: String, invitee: String, room_id: String) -> SpamVerdict {
            S::user_may_invite(&inviter, &invitee, &room_id)
        }

        fn user_may_send_threepid_invite(
            inviter: String,
            medium: String,
            address: String,
            room_id: String,
        ) -> SpamVerdict {
            S::user_may_send_threepid_invite(&inviter, &medium, &address, &room_id)
        }

        fn user_may_create_room(user_id: String, request: String) -> SpamVerdict {
            S::user_may_create_room(&user_id, &request)
        }

        fn user_may_create_room_alias(user_id: String, room_alias: String) -> SpamVerdict {
            S::user_may_create_room_alias(&user_id, &room_alias)
        }

        fn user_may_publish_room(user_id: String, room_id: String) -> SpamVerdict {
            S::user_may_publish_room(&user_id, &room_id)
        }

        fn check_username_for_spam(profile: UserProfile) -> bool {
            S::check_username_for_spam(&profile)
        }

        fn check_registration_for_spam(
            email: Option<String>,
            username: Option<String>,
            request_info: Vec<(String, String)>,
            auth_provider_id: Option<String>,
        ) -> RegistrationVerdict {
            S::check_registration_for_spam(
                email.as_deref(),
                username.as_deref(),
                &request_info,
                auth_provider_id.as_deref(),
            )
        }

        fn check_media_file_for_spam(
            prefix: Vec<u8>,
            content_type: Option<String>,
            length: u64,
        ) -> SpamVerdict {
            S::check_media_file_for_spam(&prefix, content_type.as_deref(), length)
        }

        fn should_drop_federated_event(event: Event) -> bool {
            S::should_drop_federated_event(&event)
        }
    }
}

/// The plugin's key-value store, kept in the homeserver's database. Only
/// with the operator's `kv` grant; otherwise every call answers
/// [`HostError::NotGranted`]. Outside WebAssembly (native unit tests) the
/// store is never granted.
pub mod kv {
    use super::HostError;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::myelin::plugin::host;

    /// The value stored under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::kv_get(key);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = key;
            Err(HostError::NotGranted)
        }
    }

    /// Stores `value` under `key`; [`HostError::QuotaExceeded`] when the
    /// plugin's quota would be passed.
    pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::kv_set(key, value);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (key, value);
            Err(HostError::NotGranted)
        }
    }

    /// Removes `key`.
    pub fn delete(key: &str) -> Result<(), HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::kv_delete(key);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = key;
            Err(HostError::NotGranted)
        }
    }

    /// The keys starting with `prefix`, in order.
    pub fn list(prefix: &str) -> Result<Vec<String>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::kv_list(prefix);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = prefix;
            Err(HostError::NotGranted)
        }
    }
}

/// Outbound HTTP, only to the hosts the operator listed in the plugin's
/// `http` grant; otherwise [`HostError::NotGranted`]. Outside WebAssembly it
/// is never granted.
pub mod http {
    use super::{HostError, HttpRequest, HttpResponse};

    /// Sends `request` and reads the whole response (within the grant's cap).
    pub fn fetch(request: &HttpRequest) -> Result<HttpResponse, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::myelin::plugin::host::http_fetch(request);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err(HostError::NotGranted)
        }
    }

    /// A `GET` of `url` with no headers.
    pub fn get(url: &str) -> Result<HttpResponse, HostError> {
        fetch(&HttpRequest {
            method: "GET".to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
        })
    }
}

/// Read-only questions to the server, with the operator's `queries` grant;
/// otherwise [`HostError::NotGranted`]. Outside WebAssembly never granted.
pub mod queries {
    use super::{Event, HostError, UserProfile};

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::myelin::plugin::host;

    /// A local user's profile; `None` for an unknown user.
    pub fn profile(user_id: &str) -> Result<Option<UserProfile>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::get_profile(user_id);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = user_id;
            Err(HostError::NotGranted)
        }
    }

    /// A room's current state event of that type and key.
    pub fn room_state(
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Event>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::get_room_state(room_id, event_type, state_key);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (room_id, event_type, state_key);
            Err(HostError::NotGranted)
        }
    }

    /// A room's current state events of one type, whatever their state key.
    pub fn room_state_events(room_id: &str, event_type: &str) -> Result<Vec<Event>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::get_room_state_events(room_id, event_type);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (room_id, event_type);
            Err(HostError::NotGranted)
        }
    }

    /// Whether the user is joined to the room.
    pub fn is_user_in_room(user_id: &str, room_id: &str) -> Result<bool, HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::is_user_in_room(user_id, room_id);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (user_id, room_id);
            Err(HostError::NotGranted)
        }
    }

    /// Whether the user is a server admin.
    pub fn is_server_admin(user_id: &str) -> Result<bool, HostError> {
        #[cfg(target_arch = "wasm32")]
        return host::is_server_admin(user_id);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = user_id;
            Err(HostError::NotGranted)
        }
    }
}

/// Acting on behalf of local users, with the operator's `actions` grant;
/// otherwise [`ActionError::NotGranted`]. Every action passes the same
/// checks as the user's own request (event auth, power levels, spam
/// checks); a refusal carries the error the user would get. Outside
/// WebAssembly never granted.
pub mod actions {
    use super::ActionError;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::myelin::plugin::host;

    #[cfg(not(target_arch = "wasm32"))]
    fn not_granted<T>() -> Result<T, ActionError> {
        Err(ActionError::NotGranted)
    }

    /// Changes `target`'s membership of a room (`invite`, `join`, `leave`,
    /// `ban`), sent by `sender`; `content` is extra JSON for the member
    /// event. Returns the event's ID.
    pub fn update_room_membership(
        sender: &str,
        target: &str,
        room_id: &str,
        membership: &str,
        content: Option<&serde_json::Value>,
    ) -> Result<String, ActionError> {
        let content = content.map(|c| c.to_string());
        #[cfg(target_arch = "wasm32")]
        return host::update_room_membership(
            sender,
            target,
            room_id,
            membership,
            content.as_deref(),
        );
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (sender, target, room_id, membership, content);
            not_granted()
        }
    }

    /// Sends an event (a state event with `state_key`) as a local user.
    pub fn send_event(
        sender: &str,
        room_id: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: &serde_json::Value,
    ) -> Result<String, ActionError> {
        #[cfg(target_arch = "wasm32")]
        return host::send_event(sender, room_id, event_type, state_key, &content.to_string());
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (sender, room_id, event_type, state_key, content);
            not_granted()
        }
    }

    /// A local user's account data (global when `room_id` is `None`).
    pub fn account_data(
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
    ) -> Result<Option<serde_json::Value>, ActionError> {
        #[cfg(target_arch = "wasm32")]
        return host::get_account_data(user_id, room_id, data_type)
            .map(|json| json.and_then(|j| serde_json::from_str(&j).ok()));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (user_id, room_id, data_type);
            not_granted()
        }
    }

    /// Sets a local user's account data.
    pub fn set_account_data(
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
        content: &serde_json::Value,
    ) -> Result<(), ActionError> {
        #[cfg(target_arch = "wasm32")]
        return host::set_account_data(user_id, room_id, data_type, &content.to_string());
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (user_id, room_id, data_type, content);
            not_granted()
        }
    }

    /// Sends a server notice (an `m.room.message` content) to a local user.
    pub fn send_server_notice(
        user_id: &str,
        content: &serde_json::Value,
    ) -> Result<String, ActionError> {
        #[cfg(target_arch = "wasm32")]
        return host::send_server_notice(user_id, &content.to_string());
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (user_id, content);
            not_granted()
        }
    }
}
