//! One loaded plugin: its pre-linked component, the callbacks it
//! registered, its limits, and a pool of warm instances.
//!
//! A call takes an instance from the pool (or instantiates one from the
//! `InstancePre`), sets the deadline, runs, and returns the instance to the
//! pool. An instance whose call failed in any way is dropped: a trap may
//! have left its memory in any state.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{
    Store, StoreLimits, StoreLimitsBuilder, Trap,
    component::{HasSelf, InstancePre, Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::{
    bindings::{
        self,
        exports::myelin::plugin::{
            account_data::{self, DataCallback},
            account_validity::{self, ValidityCallback},
            lifecycle, password_auth, presence_router, spam_checker, sso_mapping,
            third_party_rules::{self, RulesCallback},
        },
        myelin::plugin::types::{Callback, LogLevel},
    },
    config::{Limits, ModuleConfig, OnError},
    grants::{Granted, HostServices},
    http::HttpClient,
    password_auth::AuthRegistration,
    runtime::{EPOCH_TICK, INSTANCES_PER_PLUGIN, Runtime},
    stats::PluginStats,
};

/// Why a plugin call did not produce an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Trap,
    Timeout,
    OutOfMemory,
    /// The plugin answered, but not with something the host accepts (e.g.
    /// an error code that is not a Matrix error code).
    Malformed,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::OutOfMemory => "out-of-memory",
            Self::Malformed => "malformed-result",
        }
    }

    fn classify(err: &wasmtime::Error) -> Self {
        if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return Self::Timeout;
        }
        // StoreLimits (with `trap_on_grow_failure`) turns a memory growth
        // past the cap into this trap.
        if format!("{err:?}").contains("when growing memory") {
            return Self::OutOfMemory;
        }
        Self::Trap
    }
}

/// What a store holds for one instance: WASI with nothing granted, and the
/// plugin's memory cap.
pub struct InstanceState {
    pub(crate) plugin: Arc<str>,
    pub(crate) granted: Granted,
    /// The plugin's call deadline, bounding host work done for a call.
    pub(crate) deadline: std::time::Duration,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::myelin::plugin::types::Host for InstanceState {}

impl InstanceState {
    /// A log line from the plugin, tagged with its name.
    pub(crate) fn write_log(&self, level: LogLevel, message: &str) {
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(target: "myelin::plugin", plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "myelin::plugin", plugin, "{message}"),
            LogLevel::Info => tracing::info!(target: "myelin::plugin", plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "myelin::plugin", plugin, "{message}"),
            LogLevel::Error => tracing::error!(target: "myelin::plugin", plugin, "{message}"),
        }
    }
}

/// An instance ready for calls. Each hook interface is absent when the
/// component does not export it.
pub(crate) struct Warm {
    pub(crate) store: Store<InstanceState>,
    pub(crate) spam: Option<spam_checker::Guest>,
    pub(crate) auth: Option<password_auth::Guest>,
    pub(crate) rules: Option<third_party_rules::Guest>,
    pub(crate) validity: Option<account_validity::Guest>,
    pub(crate) account_data: Option<account_data::Guest>,
    pub(crate) presence: Option<presence_router::Guest>,
    pub(crate) sso_mapping: Option<sso_mapping::Guest>,
}

/// Where the contract's exports are in the component, looked up once. Only
/// `lifecycle` is required, so the world's all-or-nothing `PluginPre` does
/// not fit.
struct Exports {
    lifecycle: lifecycle::GuestIndices,
    spam: Option<spam_checker::GuestIndices>,
    auth: Option<password_auth::GuestIndices>,
    rules: Option<third_party_rules::GuestIndices>,
    validity: Option<account_validity::GuestIndices>,
    account_data: Option<account_data::GuestIndices>,
    presence: Option<presence_router::GuestIndices>,
    sso_mapping: Option<sso_mapping::GuestIndices>,
}

/// The version of the contract this host serves.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// Each export's `GuestIndices` if the component has the export.
macro_rules! optional_export {
    ($component:expr, $pre:expr, $module:ident, $interface:literal, $contract:expr) => {
        match $component.get_export_index(None, concat!("myelin:plugin/", $interface, "@0.1.0")) {
            Some(_) => Some($module::GuestIndices::new($pre).map_err($contract)?),
            None => None,
        }
    };
}

/// Loads an optional export into a new instance.
macro_rules! load_export {
    ($indices:expr, $store:expr, $instance:expr) => {
        match &$indices {
            Some(indices) => Some(indices.load(&mut *$store, $instance)?),
            None => None,
        }
    };
}

/// An instance checked out for one call, holding one of the plugin's slots.
pub(crate) struct Lease {
    pub(crate) warm: Warm,
    _slot: OwnedSemaphorePermit,
}

/// Why a plugin could not be loaded; the server refuses to start with it.
#[derive(Debug, thiserror::Error)]
#[error("plugin {path}: {problem}")]
pub struct LoadError {
    pub path: PathBuf,
    pub problem: String,
}

pub struct Plugin {
    pub name: Arc<str>,
    pub path: PathBuf,
    pub limits: Limits,
    pub on_error: OnError,
    pub callbacks: HashSet<Callback>,
    /// What the plugin registered through `password-auth` (empty without it).
    pub auth: AuthRegistration,
    /// What it registered through the other optional hook interfaces.
    pub registered: Registered,
    pub grants: crate::config::Grants,
    pub stats: PluginStats,
    /// The operator's `config:`, handed to every new instance's `init`.
    config_json: String,
    granted: Granted,
    runtime: Arc<Runtime>,
    pre: InstancePre<InstanceState>,
    exports: Exports,
    pool: Mutex<Vec<Warm>>,
    /// Bounds the instances alive at once (see `INSTANCES_PER_PLUGIN`).
    slots: Arc<Semaphore>,
}

impl Plugin {
    /// Reads, compiles (or loads from cache), links and initializes a plugin.
    pub async fn load(
        runtime: &Arc<Runtime>,
        config: &ModuleConfig,
        services: &HostServices,
    ) -> Result<Self, LoadError> {
        let path = config.module.clone();
        let fail = |problem: String| LoadError {
            path: path.clone(),
            problem,
        };
        let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        if !bytes.starts_with(b"\0asm") {
            return Err(fail("not a WebAssembly file".into()));
        }
        if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(fail(
                "a core WebAssembly module, not a component: build it for wasm32-wasip2".into(),
            ));
        }
        let component = runtime
            .compile(&bytes)
            .map_err(|e| fail(format!("not a valid component: {e:#}")))?;
        let mut linker = Linker::<InstanceState>::new(&runtime.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| fail(e.to_string()))?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| fail(e.to_string()))?;
        check_contract_versions(&component, &runtime.engine).map_err(fail)?;
        let contract = |e: wasmtime::Error| {
            fail(format!(
                "does not implement myelin:plugin@{CONTRACT_VERSION}: {e:#}"
            ))
        };
        let pre = linker.instantiate_pre(&component).map_err(contract)?;
        let exports = Exports {
            lifecycle: lifecycle::GuestIndices::new(&pre).map_err(contract)?,
            spam: optional_export!(component, &pre, spam_checker, "spam-checker", contract),
            auth: optional_export!(component, &pre, password_auth, "password-auth", contract),
            rules: optional_export!(
                component,
                &pre,
                third_party_rules,
                "third-party-rules",
                contract
            ),
            validity: optional_export!(
                component,
                &pre,
                account_validity,
                "account-validity",
                contract
            ),
            account_data: optional_export!(component, &pre, account_data, "account-data", contract),
            presence: optional_export!(
                component,
                &pre,
                presence_router,
                "presence-router",
                contract
            ),
            sso_mapping: optional_export!(component, &pre, sso_mapping, "sso-mapping", contract),
        };

        let name: Arc<str> = plugin_name(&path).into();
        let config_json = serde_json::to_string(&match &config.config {
            serde_json::Value::Null => serde_json::json!({}),
            other => other.clone(),
        })
        .expect("JSON values serialize");
        let mut plugin = Self {
            config_json,
            grants: config.grants.clone(),
            stats: PluginStats::default(),
            granted: Granted {
                grants: config.grants.clone(),
                services: services.clone(),
                http: match &config.grants.http {
                    Some(grant) => Some(Arc::new(
                        HttpClient::new(grant).map_err(|e| fail(format!("http grant: {e}")))?,
                    )),
                    None => None,
                },
            },
            name,
            path: path.clone(),
            limits: config.limits,
            on_error: config.on_error,
            callbacks: HashSet::new(),
            auth: AuthRegistration::default(),
            registered: Registered::default(),
            runtime: runtime.clone(),
            pre,
            exports,
            pool: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(INSTANCES_PER_PLUGIN)),
        };
        let init_failed = |fault: Fault| fail(format!("its init failed ({})", fault.as_str()));
        let (warm, registered) = plugin.instantiate().await.map_err(|err| {
            tracing::warn!(plugin = &*plugin.name, error = %format!("{err:#}"), "plugin init failed");
            init_failed(Fault::classify(&err))
        })?;
        let registered = registered
            .map_err(|message| fail(format!("it refused its configuration: {message}")))?;
        plugin.callbacks = registered.into_iter().collect();
        if !plugin.callbacks.is_empty() && warm.spam.is_none() {
            return Err(fail(
                "its init lists spam-checker callbacks, but it does not export spam-checker".into(),
            ));
        }
        let mut warm = warm;
        let name = plugin.name.clone();
        let register_failed = |interface: &str, err: wasmtime::Error| {
            tracing::warn!(plugin = &*name, interface, error = %format!("{err:#}"), "plugin registration failed");
            fail(format!(
                "its {interface} register failed ({})",
                Fault::classify(&err).as_str()
            ))
        };
        if let Some(auth) = &warm.auth {
            let registration = auth
                .call_register(&mut warm.store)
                .await
                .map_err(|e| register_failed("password-auth", e))?;
            plugin.auth = AuthRegistration::from_wit(registration).map_err(fail)?;
        }
        // Each optional interface's `register`: a list of callbacks, or
        // (presence router, SSO mapping) whether the plugin serves it.
        macro_rules! register {
            ($export:ident, $interface:literal) => {
                match &warm.$export {
                    Some(guest) => Some(
                        guest
                            .call_register(&mut warm.store)
                            .await
                            .map_err(|e| register_failed($interface, e))?,
                    ),
                    None => None,
                }
            };
        }
        let registered = &mut plugin.registered;
        if let Some(callbacks) = register!(rules, "third-party-rules") {
            registered.rules = callbacks.into_iter().collect();
        }
        if let Some(callbacks) = register!(validity, "account-validity") {
            registered.validity = callbacks.into_iter().collect();
        }
        if let Some(callbacks) = register!(account_data, "account-data") {
            registered.account_data = callbacks.into_iter().collect();
        }
        registered.presence_router = register!(presence, "presence-router").unwrap_or(false);
        registered.sso_mapping = register!(sso_mapping, "sso-mapping").unwrap_or(false);
        plugin.pool.lock().push(warm);
        Ok(plugin)
    }

    /// A new instance, initialized with the operator's configuration. Each
    /// instance has its own memory, so each gets `init` before its first
    /// call; the answer is the callbacks it registered.
    async fn instantiate(&self) -> wasmtime::Result<(Warm, Result<Vec<Callback>, String>)> {
        let state = InstanceState {
            plugin: self.name.clone(),
            granted: self.granted.clone(),
            deadline: self.limits.timeout(),
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes())
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        // Instantiation and init run guest code too, under the same deadline.
        store.set_epoch_deadline(self.deadline_ticks());
        let instance = self.pre.instantiate_async(&mut store).await?;
        let lifecycle = self.exports.lifecycle.load(&mut store, &instance)?;
        let exports = &self.exports;
        let warm = Warm {
            spam: load_export!(exports.spam, &mut store, &instance),
            auth: load_export!(exports.auth, &mut store, &instance),
            rules: load_export!(exports.rules, &mut store, &instance),
            validity: load_export!(exports.validity, &mut store, &instance),
            account_data: load_export!(exports.account_data, &mut store, &instance),
            presence: load_export!(exports.presence, &mut store, &instance),
            sso_mapping: load_export!(exports.sso_mapping, &mut store, &instance),
            store,
        };
        let mut warm = warm;
        let registered = lifecycle
            .call_init(&mut warm.store, &self.config_json)
            .await?;
        Ok((warm, registered))
    }

    async fn instance(&self) -> wasmtime::Result<Warm> {
        if let Some(warm) = self.pool.lock().pop() {
            return Ok(warm);
        }
        let (warm, registered) = self.instantiate().await?;
        // An instance that answers init differently from the first one is
        // not one the host can rely on.
        match registered {
            Ok(callbacks) if callbacks.iter().all(|c| self.callbacks.contains(c)) => Ok(warm),
            _ => Err(wasmtime::Error::msg(
                "a new instance answered init differently",
            )),
        }
    }

    /// A warm instance with the plugin's deadline set, for one call; waits
    /// while all of the plugin's instances are busy.
    pub(crate) async fn checkout(&self) -> Result<Lease, Fault> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut warm = self.instance().await.map_err(|err| {
            tracing::warn!(plugin = &*self.name, error = %format!("{err:#}"), "plugin instantiation failed");
            Fault::classify(&err)
        })?;
        warm.store.set_epoch_deadline(self.deadline_ticks());
        Ok(Lease { warm, _slot: slot })
    }

    /// Returns the instance to the pool after a successful call; after a
    /// failed one the instance is dropped and the fault reported.
    pub(crate) fn checkin<T>(&self, lease: Lease, result: wasmtime::Result<T>) -> Result<T, Fault> {
        match result {
            Ok(value) => {
                self.pool.lock().push(lease.warm);
                Ok(value)
            }
            Err(err) => {
                let fault = Fault::classify(&err);
                tracing::warn!(
                    plugin = &*self.name,
                    fault = fault.as_str(),
                    error = %format!("{err:#}"),
                    "plugin call failed; the instance is discarded"
                );
                Err(fault)
            }
        }
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.timeout().as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
    }

    pub fn implements(&self, callback: Callback) -> bool {
        self.callbacks.contains(&callback)
    }
}

/// The callbacks a plugin registered through the optional hook interfaces
/// besides `password-auth`.
#[derive(Debug, Clone, Default)]
pub struct Registered {
    pub rules: HashSet<RulesCallback>,
    pub validity: HashSet<ValidityCallback>,
    pub account_data: HashSet<DataCallback>,
    pub presence_router: bool,
    pub sso_mapping: bool,
}

/// Refuses a component built against a contract version this host does not
/// serve: every `myelin:plugin` interface it imports or exports must be
/// semver-compatible with, and not newer than, [`CONTRACT_VERSION`].
fn check_contract_versions(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> Result<(), String> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    for name in names {
        let Some(interface) = name.strip_prefix("myelin:plugin/") else {
            continue;
        };
        let version = interface.split_once('@').map(|(_, v)| v).unwrap_or("");
        if !serves(version) {
            return Err(format!(
                "it was built against myelin:plugin@{version} (its {name}), but this server serves \
                 myelin:plugin@{CONTRACT_VERSION} and the compatible earlier 0.1 versions; \
                 rebuild it against this server's wit/ or upgrade the server"
            ));
        }
    }
    Ok(())
}

/// Whether a plugin built against contract `version` can run here: the same
/// 0.x minor (for 0.x versions the minor is the breaking component), and a
/// patch no newer than ours.
fn serves(version: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
        let parsed = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(parsed)
    };
    match (parse(version), parse(CONTRACT_VERSION)) {
        (Some((0, minor, patch)), Some((0, our_minor, our_patch))) => {
            minor == our_minor && patch <= our_patch
        }
        _ => false,
    }
}

/// `spam_filter` from `path/to/spam_filter.wasm`.
fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions_served() {
        assert!(serves("0.1.0"));
        assert!(!serves("0.1.1"), "a newer patch may import what we lack");
        assert!(!serves("0.2.0"));
        assert!(!serves("1.0.0"));
        assert!(!serves(""));
        assert!(!serves("0.1"));
    }
}
