//! The wasmtime engine all plugins share: the component model (async calls
//! are always available in this wasmtime),
//! the pooling allocator with copy-on-write memory images, epoch-based
//! deadlines, and an on-disk cache of compiled components.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, component::Component,
};

/// The most instances of one plugin alive at once: calls beyond that many
/// in flight wait for an instance instead of failing.
pub const INSTANCES_PER_PLUGIN: usize = 32;

/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The shared engine and where compiled components are cached.
pub struct Runtime {
    pub engine: Engine,
    cache_dir: PathBuf,
}

impl Runtime {
    /// Creates the engine and starts the thread that advances its epoch.
    /// `max_memory_bytes` bounds every instance's linear memory (each
    /// plugin's own cap is enforced per store, below this).
    pub fn new(
        cache_dir: &Path,
        max_memory_bytes: usize,
        plugins: usize,
    ) -> anyhow::Result<Arc<Self>> {
        // Every slot reserves address space (not memory) up front: room for
        // each plugin's instances, which its semaphore never exceeds.
        let slots = (INSTANCES_PER_PLUGIN * plugins.max(1)) as u32;
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(slots)
            .total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memory_size(max_memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("cannot create the plugin cache {}", cache_dir.display()))?;
        Ok(Arc::new(Self {
            engine,
            cache_dir: cache_dir.to_owned(),
        }))
    }

    /// Compiles a component, or loads it from the cache, keyed by the
    /// bytes' hash and this engine's compatibility hash (wasmtime version
    /// and settings), so a stale entry is never used.
    pub fn compile(&self, bytes: &[u8]) -> anyhow::Result<Component> {
        let mut engine_hash = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let key = format!(
            "{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(bytes)),
            engine_hash.finish()
        );
        let path = self.cache_dir.join(key);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash, in a directory only
            // this server writes to; wasmtime re-checks the header.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "ignoring a bad cached plugin")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, component.serialize()?)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .with_context(|| format!("cannot write the plugin cache {}", path.display()))?;
        Ok(component)
    }
}
