//! What the same spam checker costs in Rust, Python and JavaScript, measured
//! the way `plugin-api/benches/spam_check.rs` measures Rust plugins.
//!
//! Plugins: `test-faults` (mode `ok`, answers without reading the event: the
//! host's own cost), `test-spam` (Rust), `examples/python-spam`
//! (componentize-py) and `examples/js-spam` (componentize-js), the last three
//! configured with one banned word, which they look for in the lower-cased
//! body of the event's parsed content.
//!
//! * `check_event_for_spam/<plugin>`: one `PluginSet::check_event_for_spam`
//!   with a 1 KiB `m.room.message` into a warm pooled instance (not spam, so
//!   the whole body is scanned and the instance kept).
//! * `instantiate/<plugin>`: a new instance from the pre-linked component on
//!   the host's engine (pooling allocator, copy-on-write memory images), as
//!   the host makes one when its pool is empty: `InstancePre::instantiate_async`.
//! * `instantiate_init/<plugin>`: the same plus `lifecycle.init` with the
//!   configuration, which the host runs on every new instance.
//! * `load/<plugin>`: `Plugin::load` on an existing engine, compiled
//!   component cached: read and hash the file, deserialize, link,
//!   instantiate, `init`.
//!
//! Before criterion runs, it prints each plugin's size, compile time and
//! linear memory: at instantiation, after `init`, and after 1,000 calls
//! (every memory's size, summed, as the store's limiter sees it grow).
//!
//! Run with `cargo bench -p myelin-bench-plugin-languages`; it needs the
//! tools `scripts/test.sh` installs (componentize-py 0.25.1 and
//! componentize-js 0.23.0; see `tests/tests/languages/mod.rs`).

#[path = "../../../tests/tests/languages/mod.rs"]
mod languages;

use std::{
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use languages::{Language, plugins_target, root};
use myelin_plugin_api::{Event, HostServices, ModuleConfig, Plugin, PluginSet, Runtime, Verdict};
use serde_json::{Value, json};
use wasmtime::{
    ResourceLimiter, Store,
    component::{Component, InstancePre, Linker, ResourceTable, Val, types::ComponentItem},
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Subject {
    name: &'static str,
    wasm: PathBuf,
    config: Value,
}

/// Builds a Rust test plugin as `myelin_tests::plugin_wasm` does.
fn rust_plugin(package: &str) -> PathBuf {
    let target = plugins_target();
    let output = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args(["build", "--release", "-p", package])
        .args(["--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(root())
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

fn subjects() -> Vec<Subject> {
    let spam = json!({ "banned_words": ["viagra"] });
    let built = |language, dir, stem| {
        languages::build(language, dir, stem).unwrap_or_else(|missing| panic!("{missing}"))
    };
    vec![
        Subject {
            name: "rust-trivial",
            wasm: rust_plugin("test-faults"),
            config: json!({ "mode": "ok" }),
        },
        Subject {
            name: "rust",
            wasm: rust_plugin("test-spam"),
            config: spam.clone(),
        },
        Subject {
            name: "python",
            wasm: built(Language::Python, "examples/python-spam", "python_spam"),
            config: spam.clone(),
        },
        Subject {
            name: "javascript",
            wasm: built(Language::JavaScript, "examples/js-spam", "js_spam"),
            config: spam,
        },
    ]
}

fn module(subject: &Subject) -> ModuleConfig {
    serde_json::from_value(json!({
        "module": subject.wasm,
        "config": subject.config,
        "limits": { "timeout_ms": 10_000 },
    }))
    .expect("a module entry")
}

/// A scratch plugin cache, removed when dropped.
struct CacheDir(PathBuf);

impl CacheDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "myelin-bench-languages-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The 1 KiB message event of `spam_check.rs`.
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

/// The same event as a component value, for calls made without the host.
fn event_val(event: &Event) -> Val {
    Val::Record(vec![
        ("event-id".into(), Val::String(event.event_id.clone())),
        ("room-id".into(), Val::String(event.room_id.clone())),
        ("sender".into(), Val::String(event.sender.clone())),
        ("event-type".into(), Val::String(event.event_type.clone())),
        ("state-key".into(), Val::Option(None)),
        ("origin-server-ts".into(), Val::U64(event.origin_server_ts)),
        ("content".into(), Val::String(event.content.clone())),
        ("unsigned".into(), Val::Option(None)),
    ])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A store's state: WASI with nothing granted, as the host's, and the sum
/// of its linear memories' sizes.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    memory_bytes: usize,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.memory_bytes += desired - current;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// A component linked on the host's engine with WASI and a `log` that
/// drops its lines; the contract's other imports trap (these plugins do not
/// call them).
struct Bare {
    runtime: Arc<Runtime>,
    pre: InstancePre<State>,
    config: String,
}

impl Bare {
    fn new(runtime: &Arc<Runtime>, component: &Component, config: &Value) -> Self {
        let mut linker = Linker::<State>::new(&runtime.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        // `log` (test-spam logs in `init`) goes nowhere; the rest of the
        // host interface, as the component imports it, traps.
        const HOST: &str = "myelin:plugin/host@0.1.0";
        let ty = component.component_type();
        let names: Vec<String> = match ty.get_import(&runtime.engine, HOST).map(|e| e.ty) {
            Some(ComponentItem::ComponentInstance(host)) => host
                .exports(&runtime.engine)
                .map(|(name, _)| name.to_owned())
                .collect(),
            _ => Vec::new(),
        };
        let mut host = linker.instance(HOST).unwrap();
        for name in names {
            if name == "log" {
                host.func_new(&name, |_, _, _, _| Ok(())).unwrap();
            } else {
                host.func_new(&name, |_, _, _, _| {
                    Err(wasmtime::Error::msg("not provided in this bench"))
                })
                .unwrap();
            }
        }
        Self {
            runtime: runtime.clone(),
            pre: linker.instantiate_pre(component).unwrap(),
            config: config.to_string(),
        }
    }

    async fn instantiate(&self) -> (Store<State>, wasmtime::component::Instance) {
        let mut store = Store::new(
            &self.runtime.engine,
            State {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
                memory_bytes: 0,
            },
        );
        store.limiter(|state| state);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self.pre.instantiate_async(&mut store).await.unwrap();
        (store, instance)
    }

    async fn call(
        store: &mut Store<State>,
        instance: &wasmtime::component::Instance,
        interface: &str,
        function: &str,
        params: &[Val],
    ) -> Val {
        let interface = instance
            .get_export_index(&mut *store, None, interface)
            .unwrap_or_else(|| panic!("no export {interface}"));
        let index = instance
            .get_export_index(&mut *store, Some(&interface), function)
            .unwrap();
        let func = instance.get_func(&mut *store, index).unwrap();
        let mut results = [Val::Bool(false)];
        func.call_async(&mut *store, params, &mut results)
            .await
            .unwrap();
        results[0].clone()
    }

    async fn init(&self, store: &mut Store<State>, instance: &wasmtime::component::Instance) {
        let answer = Self::call(
            store,
            instance,
            "myelin:plugin/lifecycle@0.1.0",
            "init",
            &[Val::String(self.config.clone())],
        )
        .await;
        assert!(
            matches!(answer, Val::Result(Ok(_))),
            "init refused: {answer:?}"
        );
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Prints size, compile time and linear memory per plugin.
fn memory(subjects: &[Subject]) {
    let rt = runtime();
    let cache = CacheDir::new("memory");
    let runtime = Runtime::new(&cache.0, 1 << 30, 1).unwrap();
    let event = event_val(&event());
    for subject in subjects {
        let bytes = std::fs::read(&subject.wasm).unwrap();
        let started = Instant::now();
        let component = runtime.compile(&bytes).unwrap();
        let compile = started.elapsed();
        let bare = Bare::new(&runtime, &component, &subject.config);
        rt.block_on(async {
            let (mut store, instance) = bare.instantiate().await;
            let at_instantiation = store.data().memory_bytes;
            bare.init(&mut store, &instance).await;
            let after_init = store.data().memory_bytes;
            for _ in 0..1000 {
                let verdict = Bare::call(
                    &mut store,
                    &instance,
                    "myelin:plugin/spam-checker@0.1.0",
                    "check-event-for-spam",
                    std::slice::from_ref(&event),
                )
                .await;
                assert!(
                    matches!(&verdict, Val::Variant(case, None) if case == "not-spam"),
                    "{verdict:?}"
                );
            }
            println!(
                "memory/{}: component {}, compiled in {compile:.2?}; linear memory at \
                 instantiation {}, after init {}, after 1000 calls {}",
                subject.name,
                mib(bytes.len()),
                mib(at_instantiation),
                mib(after_init),
                mib(store.data().memory_bytes),
            );
        });
    }
}

fn check_event_for_spam(c: &mut Criterion, subjects: &[Subject]) {
    let rt = runtime();
    let event = event();
    let mut group = c.benchmark_group("check_event_for_spam");
    for subject in subjects {
        let cache = CacheDir::new(subject.name);
        let set = rt
            .block_on(PluginSet::load(
                &cache.0,
                &[module(subject)],
                HostServices::default(),
            ))
            .expect("plugin loads");
        assert_eq!(
            rt.block_on(set.check_event_for_spam(&event)),
            Verdict::Allow
        );
        group.bench_function(subject.name, |b| {
            b.to_async(&rt)
                .iter(|| set.check_event_for_spam(std::hint::black_box(&event)))
        });
    }
    group.finish();
}

/// Times `make` once per iteration; what it returns is dropped outside the
/// measurement.
async fn timed<T, F: Future<Output = T>>(iters: u64, mut make: impl FnMut() -> F) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        let made = make().await;
        total += started.elapsed();
        drop(made);
    }
    total
}

fn instantiate(c: &mut Criterion, subjects: &[Subject]) {
    let rt = runtime();
    let cache = CacheDir::new("instantiate");
    let runtime = Runtime::new(&cache.0, 64 << 20, subjects.len()).unwrap();
    let mut group = c.benchmark_group("instantiate");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    let bare: Vec<Bare> = subjects
        .iter()
        .map(|s| {
            let component = runtime.compile(&std::fs::read(&s.wasm).unwrap()).unwrap();
            Bare::new(&runtime, &component, &s.config)
        })
        .collect();
    for (subject, bare) in subjects.iter().zip(&bare) {
        group.bench_function(subject.name, |b| {
            b.to_async(&rt)
                .iter_custom(|iters| timed(iters, || bare.instantiate()))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("instantiate_init");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    for (subject, bare) in subjects.iter().zip(&bare) {
        group.bench_function(subject.name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                timed(iters, || async {
                    let (mut store, instance) = bare.instantiate().await;
                    bare.init(&mut store, &instance).await;
                    store
                })
            })
        });
    }
    group.finish();
}

fn load(c: &mut Criterion, subjects: &[Subject]) {
    let rt = runtime();
    let cache = CacheDir::new("load");
    let runtime = Runtime::new(&cache.0, 64 << 20, 1).unwrap();
    let mut group = c.benchmark_group("load");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for subject in subjects {
        let module = module(subject);
        // The first load compiles the component into the cache.
        rt.block_on(Plugin::load(&runtime, &module, &HostServices::default()))
            .expect("plugin loads");
        group.bench_function(subject.name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                timed(iters, || async {
                    Plugin::load(&runtime, &module, &HostServices::default())
                        .await
                        .expect("plugin loads")
                })
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let subjects = subjects();
    memory(&subjects);
    check_event_for_spam(c, &subjects);
    instantiate(c, &subjects);
    load(c, &subjects);
}

criterion_group!(all, benches);
criterion_main!(all);
