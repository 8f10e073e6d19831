//! A plugin that misbehaves on demand, to test the host's limits.
//!
//! Configuration: `{"mode": "trap" | "loop" | "alloc" | "panic-init" | "ok"}`
//! (default `ok`).
//!
//! * `panic-init`: `init` panics (the instance traps).
//! * Otherwise `init` registers `check-event-for-spam`, which, by mode:
//!   `trap` executes `unreachable`; `loop` spins forever; `alloc` allocates
//!   1 MiB chunks (touching every byte) without bound; `ok` answers
//!   `not-spam`.
//! * With `"login_type": "com.example.login"` it also checks that login
//!   type (field `token`), misbehaving by mode as above; in mode `ok` the
//!   token `open-sesame` authenticates the full user ID named.
//! * With `"record_logouts": true` it registers `on_logged_out` and stores
//!   `logout:<user>:<device>` in its key-value store (grant `kv`).
//! * It is an SSO mapping provider too: the remote user ID is the `sub`
//!   claim, and mapping a new user misbehaves by mode (in mode `ok` the
//!   localpart is `preferred_username`).

use std::{cell::Cell, hint::black_box};

use myelin_sdk::{
    AuthCallback, AuthChecker, AuthRegistration, AuthResult, Callback, Event, PasswordAuthProvider,
    Plugin, SpamChecker, SpamVerdict, SsoMappingProvider, UserAttributes, kv, log, login_field,
    serde_json,
};
use serde::Deserialize;

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Trap,
    Loop,
    Alloc,
    PanicInit,
    #[default]
    Ok,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    mode: Mode,
    login_type: Option<String>,
    #[serde(default)]
    record_logouts: bool,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Ok) };
    static AUTH: std::cell::RefCell<(Option<String>, bool)> = const { std::cell::RefCell::new((None, false)) };
}

struct TestFaults;

impl Plugin for TestFaults {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let Config {
            mode,
            login_type,
            record_logouts,
        } = myelin_sdk::parse_config(config)?;
        if let Mode::PanicInit = mode {
            panic!("test-faults: panic-init");
        }
        MODE.with(|m| m.set(mode));
        AUTH.with(|a| *a.borrow_mut() = (login_type, record_logouts));
        Ok(vec![Callback::CheckEventForSpam])
    }
}

impl PasswordAuthProvider for TestFaults {
    fn register() -> AuthRegistration {
        let (login_type, record_logouts) = AUTH.with(|a| a.borrow().clone());
        AuthRegistration {
            auth_checkers: login_type
                .map(|t| AuthChecker::new(t, &["token"]))
                .into_iter()
                .collect(),
            callbacks: if record_logouts {
                vec![AuthCallback::OnLoggedOut]
            } else {
                Vec::new()
            },
        }
    }

    fn check_auth(user: &str, _login_type: &str, fields: &[(String, String)]) -> AuthResult {
        misbehave();
        match login_field(fields, "token") {
            Some("open-sesame") if user.starts_with('@') => AuthResult::user(user),
            _ => AuthResult::Denied,
        }
    }

    fn on_logged_out(user_id: &str, device_id: Option<&str>, _access_token: &str) {
        let key = format!("logout:{user_id}:{}", device_id.unwrap_or_default());
        match kv::set(&key, b"1") {
            Ok(()) => log::info(format!("recorded {key}")),
            Err(err) => log::error(format!("cannot record {key}: {err:?}")),
        }
    }
}

impl SpamChecker for TestFaults {
    fn check_event_for_spam(_event: &Event) -> SpamVerdict {
        misbehave();
        SpamVerdict::NotSpam
    }
}

impl SsoMappingProvider for TestFaults {
    fn register() -> bool {
        true
    }

    fn get_remote_user_id(userinfo: &str) -> Result<String, String> {
        let claims: serde_json::Value = myelin_sdk::parse_config(userinfo)?;
        claims["sub"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no sub".to_owned())
    }

    fn map_user_attributes(
        userinfo: &str,
        _token: &str,
        _failures: u32,
    ) -> Result<UserAttributes, String> {
        misbehave();
        let claims: serde_json::Value = myelin_sdk::parse_config(userinfo)?;
        Ok(UserAttributes {
            localpart: claims["preferred_username"].as_str().map(str::to_owned),
            display_name: None,
            emails: Vec::new(),
            picture: None,
            confirm_localpart: false,
        })
    }
}

/// Traps, loops or exhausts memory, by mode; returns in mode `ok`.
fn misbehave() {
    match MODE.with(Cell::get) {
        Mode::Trap => trap(),
        Mode::Loop => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        Mode::Alloc => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
                black_box(&hoard);
            }
        }
        Mode::PanicInit | Mode::Ok => {}
    }
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    panic!("test-faults: trap")
}

myelin_sdk::export_plugin!(TestFaults: SpamChecker, PasswordAuthProvider, SsoMappingProvider);
