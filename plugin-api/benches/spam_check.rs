//! The cost of a plugin call through the host, and of loading a plugin
//! whose compiled component is already in the on-disk cache.
//!
//! * `check_event_for_spam/test-faults`: one `PluginSet::check_event_for_spam`
//!   into a plugin that answers `not-spam` without looking (`test-faults`,
//!   mode `ok`), with a 1 KiB event: the host's own cost, marshalling
//!   included (target: p50 ≤ 5 µs).
//! * `check_event_for_spam/test-spam`: the same into `test-spam`, which
//!   parses the content and scans the whole body for a banned word that is
//!   not there.
//! * `load/plugin_set`: `PluginSet::load` of one plugin, cache warm: engine
//!   and pooling allocator, deserializing the component, linking,
//!   instantiating and `init` (target: ≤ 10 ms per plugin).
//! * `load/plugin`: `Plugin::load` on an existing `Runtime`: the part that
//!   each further plugin adds.
//!
//! Run with `cargo bench -p myelin-plugin-api --bench spam_check`. The test
//! plugins are built for `wasm32-wasip2` into `<target>/plugins`, as the
//! black-box tests do.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use myelin_plugin_api::{Event, HostServices, ModuleConfig, Plugin, PluginSet, Runtime, Verdict};
use serde_json::json;

/// Builds the test plugin `package` (a crate under `tests/plugins/`) and
/// returns its component: the same build as `myelin_tests::plugin_wasm`.
fn plugin_wasm(package: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = root
        .join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or("target".into()))
        .join("plugins");
    let output = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args(["build", "--release", "-p", package])
        .args(["--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(root)
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "building plugin {package} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

fn module(package: &str, config: serde_json::Value) -> ModuleConfig {
    ModuleConfig {
        module: plugin_wasm(package),
        config,
        grants: Default::default(),
        limits: Default::default(),
        on_error: Default::default(),
    }
}

/// A scratch plugin cache, removed when dropped.
struct CacheDir(PathBuf);

impl CacheDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "myelin-bench-plugin-cache-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn entries(&self) -> usize {
        std::fs::read_dir(&self.0).unwrap().count()
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A message event whose content is exactly 1 KiB:
/// `{"msgtype":"m.text","body":"..."}` with a body of plain words.
fn event() -> Event {
    const SIZE: usize = 1024;
    let words = "the quick brown fox jumps over the lazy dog and keeps running ";
    let body_len = SIZE - json!({ "msgtype": "m.text", "body": "" }).to_string().len();
    let body: String = words.chars().cycle().take(body_len).collect();
    let content = json!({ "msgtype": "m.text", "body": body }).to_string();
    assert_eq!(content.len(), SIZE);
    Event {
        event_id: "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg".into(),
        room_id: "!bench:myelin.test".into(),
        sender: "@alice:myelin.test".into(),
        event_type: "m.room.message".into(),
        state_key: None,
        origin_server_ts: 1_764_028_800_000,
        content,
        unsigned: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn check_event_for_spam(c: &mut Criterion) {
    let rt = runtime();
    let event = event();
    let mut group = c.benchmark_group("check_event_for_spam");
    for (package, config) in [
        ("test-faults", json!({ "mode": "ok" })),
        ("test-spam", json!({ "banned_words": ["viagra"] })),
    ] {
        let cache = CacheDir::new(package);
        let set = rt
            .block_on(PluginSet::load(
                &cache.0,
                &[module(package, config)],
                HostServices::default(),
            ))
            .expect("plugin loads");
        // Not spam: every call goes through the whole plugin and keeps the
        // warm instance.
        assert_eq!(
            rt.block_on(set.check_event_for_spam(&event)),
            Verdict::Allow
        );
        group.bench_function(package, |b| {
            b.to_async(&rt)
                .iter(|| set.check_event_for_spam(std::hint::black_box(&event)))
        });
    }
    group.finish();
}

/// Times `load` once per iteration; what it returns is dropped outside the
/// measurement (each engine reserves its pooling allocator's address space,
/// so they cannot pile up either).
async fn time_loads<T, F: Future<Output = T>>(iters: u64, mut load: impl FnMut() -> F) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        let loaded = load().await;
        total += started.elapsed();
        drop(loaded);
    }
    total
}

fn load(c: &mut Criterion) {
    let rt = runtime();
    let cache = CacheDir::new("load");
    let modules = [module("test-faults", json!({ "mode": "ok" }))];
    // The first load compiles the component into the cache.
    rt.block_on(PluginSet::load(&cache.0, &modules, HostServices::default()))
        .expect("plugin loads");
    assert_eq!(cache.entries(), 1, "one compiled component in the cache");

    let mut group = c.benchmark_group("load");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(10));
    let (cache_dir, modules) = (&cache.0, &modules);
    group.bench_function("plugin_set", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            time_loads(iters, || async {
                PluginSet::load(cache_dir, modules, HostServices::default())
                    .await
                    .expect("plugin loads")
            })
        })
    });
    let runtime = Runtime::new(cache_dir, modules[0].limits.memory_bytes(), 1).unwrap();
    group.bench_function("plugin", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            time_loads(iters, || async {
                Plugin::load(&runtime, &modules[0], &HostServices::default())
                    .await
                    .expect("plugin loads")
            })
        })
    });
    group.finish();
    assert_eq!(cache.entries(), 1, "every load used the cached component");
}

criterion_group!(benches, check_event_for_spam, load);
criterion_main!(benches);
