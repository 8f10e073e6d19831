//! The host side of Myelin plugins: WebAssembly components that implement
//! the `myelin:plugin@0.1.0` contract in `wit/plugin.wit`, run under
//! wasmtime with no ambient authority, a memory cap and a deadline per call.
//!
//! This crate knows nothing of HTTP routes or SQL: the server calls
//! [`PluginSet`]'s hook methods at its call sites and gets typed answers.

/// One call of an export of one plugin: a warm instance from the pool, the
/// call under the plugin's deadline, the instance back to the pool (or
/// dropped after a failure). `$export` names the optional export on
/// [`plugin::Warm`]; plugins are only asked for what they registered, which
/// needs the export, so a missing one is a host bug reported as a fault.
macro_rules! ask {
    ($plugin:expr, $export:ident, $method:ident($($arg:expr),*)) => {{
        let plugin: &$crate::plugin::Plugin = $plugin;
        match plugin.checkout().await {
            Ok(mut lease) => {
                let warm = &mut lease.warm;
                let result = match &warm.$export {
                    Some(guest) => guest.$method(&mut warm.store, $($arg),*).await,
                    None => Err(wasmtime::Error::msg(concat!("no ", stringify!($export), " export"))),
                };
                plugin.checkin(lease, result)
            }
            Err(fault) => Err(fault),
        }
    }};
}

/// Tells each of `$plugins` of a notification callback (whose answer is
/// nothing): failures are only logged and counted.
macro_rules! tell_each {
    ($plugins:expr, $export:ident, $callback:expr, $method:ident($($arg:expr),*)) => {{
        let callback = $callback;
        for plugin in $plugins {
            let started = std::time::Instant::now();
            let answer = ask!(plugin, $export, $method($($arg),*));
            $crate::stats::record(plugin, callback.into(), started, &answer, true);
        }
    }};
}

pub mod account;
mod bindings;
pub mod config;
pub mod grants;
pub mod http;
pub mod password_auth;
pub mod plugin;
pub mod presence;
pub mod rules;
pub mod runtime;
pub mod spam;
pub mod sso_mapping;
pub mod stats;

use std::{path::Path, sync::Arc};

pub use self::{
    account::{DataCallback, ValidityCallback},
    bindings::{
        exports::myelin::plugin::password_auth::AuthCallback,
        myelin::plugin::types::{Callback, Event, LogLevel, UserProfile},
    },
    config::{Grants, Limits, ModuleConfig, OnError},
    grants::{ActionBackend, ActionRefused, BoxFuture, HostServices, KvBackend, QueryBackend},
    password_auth::{AuthOutcome, AuthRegistration, PluginFailed},
    plugin::{CONTRACT_VERSION, Fault, LoadError, Plugin},
    presence::{Interested, PresenceCallback, PresenceState},
    rules::{EventAllowed, EventDecision, RulesCallback},
    runtime::Runtime,
    spam::{Registration, Verdict},
    sso_mapping::{MappingFailed, SsoMappingCallback, UserAttributes},
    stats::{CallbackStats, Hook, callback_name, hook_name},
};

/// The plugins the operator listed under `modules:`, in order.
#[derive(Default)]
pub struct PluginSet {
    plugins: Vec<Plugin>,
}

impl PluginSet {
    /// Loads every plugin, in order; the first failure stops the load.
    pub async fn load(
        cache_dir: &Path,
        modules: &[ModuleConfig],
        services: HostServices,
    ) -> Result<Self, LoadError> {
        if modules.is_empty() {
            return Ok(Self::default());
        }
        let largest = modules
            .iter()
            .map(|m| m.limits.memory_bytes())
            .max()
            .unwrap_or_default();
        let runtime = Runtime::new(cache_dir, largest, modules.len()).map_err(|e| LoadError {
            path: cache_dir.to_owned(),
            problem: format!("{e:#}"),
        })?;
        let mut plugins = Vec::with_capacity(modules.len());
        for module in modules {
            let plugin = Plugin::load(&runtime, module, &services).await?;
            tracing::info!(plugin = &*plugin.name, callbacks = ?plugin.callbacks, auth = ?plugin.auth, "plugin loaded");
            plugins.push(plugin);
        }
        let set = Self { plugins };
        set.check_auth_checkers()?;
        Ok(set)
    }

    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// Whether any plugin registered `callback` (lets call sites skip work).
    pub fn wants(&self, callback: Callback) -> bool {
        self.plugins.iter().any(|p| p.implements(callback))
    }
}

/// The server's current plugin set, swapped atomically on reload: a call
/// takes the set as it is when it starts and finishes on it.
pub struct Plugins {
    current: parking_lot::RwLock<Arc<PluginSet>>,
}

impl Plugins {
    pub fn new(set: PluginSet) -> Self {
        Self {
            current: parking_lot::RwLock::new(Arc::new(set)),
        }
    }

    pub fn current(&self) -> Arc<PluginSet> {
        self.current.read().clone()
    }

    /// Replaces the set; calls in flight keep the old one until they end.
    pub fn replace(&self, set: PluginSet) {
        *self.current.write() = Arc::new(set);
    }
}
