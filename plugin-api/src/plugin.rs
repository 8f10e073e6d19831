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
        exports::myelin::plugin::{lifecycle, password_auth, spam_checker},
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

/// An instance ready for calls.
pub(crate) struct Warm {
    pub(crate) store: Store<InstanceState>,
    pub(crate) spam: spam_checker::Guest,
    /// Absent when the component does not export `password-auth`.
    pub(crate) auth: Option<password_auth::Guest>,
}

/// Where the contract's exports are in the component, looked up once. The
/// `password-auth` interface is optional, so the world's all-or-nothing
/// `PluginPre` does not fit.
struct Exports {
    lifecycle: lifecycle::GuestIndices,
    spam: spam_checker::GuestIndices,
    auth: Option<password_auth::GuestIndices>,
}

/// The name under which a component exports the `password-auth` interface.
const PASSWORD_AUTH_EXPORT: &str = "myelin:plugin/password-auth@0.1.0";

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
        let contract =
            |e: wasmtime::Error| fail(format!("does not implement myelin:plugin@0.1.0: {e:#}"));
        let pre = linker.instantiate_pre(&component).map_err(contract)?;
        let exports = Exports {
            lifecycle: lifecycle::GuestIndices::new(&pre).map_err(contract)?,
            spam: spam_checker::GuestIndices::new(&pre).map_err(contract)?,
            auth: match component.get_export_index(None, PASSWORD_AUTH_EXPORT) {
                Some(_) => Some(password_auth::GuestIndices::new(&pre).map_err(contract)?),
                None => None,
            },
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
        let mut warm = warm;
        if let Some(auth) = &warm.auth {
            let registration = auth.call_register(&mut warm.store).await.map_err(|err| {
                tracing::warn!(plugin = &*plugin.name, error = %format!("{err:#}"), "plugin password-auth registration failed");
                fail(format!("its password-auth register failed ({})", Fault::classify(&err).as_str()))
            })?;
            plugin.auth = AuthRegistration::from_wit(registration).map_err(fail)?;
        }
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
        let spam = self.exports.spam.load(&mut store, &instance)?;
        let auth = match &self.exports.auth {
            Some(indices) => Some(indices.load(&mut store, &instance)?),
            None => None,
        };
        let registered = lifecycle.call_init(&mut store, &self.config_json).await?;
        Ok((Warm { store, spam, auth }, registered))
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

/// `spam_filter` from `path/to/spam_filter.wasm`.
fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
