//! Plugins written in Python and JavaScript, through the real binary: the
//! spam checkers of `examples/python-spam` (componentize-py) and
//! `examples/js-spam` (componentize-js), built from source in this test run
//! against the same WIT as Rust plugins and loaded through `modules:`, and
//! the fault plugins `tests/plugins/py-faults` and `tests/plugins/js-faults`
//! running out of memory — contained like any other plugin's fault.
//!
//! The tools come from `scripts/test.sh` (see `languages/mod.rs`). Without
//! them every test here is skipped with a message, or fails when
//! `MYELIN_REQUIRE_LANGUAGES=1` (as `scripts/test.sh` sets).
//!
//! Compiling an 18 MB Python component takes a debug build of the server
//! over a minute, more than a test server is given to start; so the compiled
//! components live in one cache shared by every server here
//! (`<target>/plugins/languages/compiled`, keyed like the server's own
//! cache by the component's hash and wasmtime's), filled once by a warm-up
//! run of the binary. Each test server's `<data_directory>/plugin-cache` is a
//! link to it.

mod languages;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use languages::{Language, build, plugins_target};
use myelin_tests::{
    Backend, PASSWORD, SERVER_NAME, ScratchDir, TestServer, assert_error, myelin_binary,
};
use reqwest::Method;
use serde_json::{Value, json};

/// The built plugin, or `None` (the test is skipped) when the language's
/// tool is missing and `MYELIN_REQUIRE_LANGUAGES` is not `1`.
fn plugin(language: Language, dir: &str, file_stem: &str) -> Option<PathBuf> {
    match build(language, dir, file_stem) {
        Ok(wasm) => {
            warm(&wasm);
            Some(wasm)
        }
        Err(missing) if std::env::var("MYELIN_REQUIRE_LANGUAGES").as_deref() == Ok("1") => {
            panic!("MYELIN_REQUIRE_LANGUAGES=1 but {missing}")
        }
        Err(missing) => {
            eprintln!("skipped: {missing}");
            None
        }
    }
}

/// The compiled-component cache every server here shares.
fn compiled_cache() -> PathBuf {
    let dir = plugins_target().join("languages/compiled");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scratch directory with `data/plugin-cache` linked to the shared cache.
fn data_dir() -> ScratchDir {
    let dir = ScratchDir::new();
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    std::os::unix::fs::symlink(compiled_cache(), dir.0.join("data/plugin-cache")).unwrap();
    dir
}

/// Makes sure the shared cache holds `wasm` compiled by this binary: runs
/// the binary with the plugin once (per test process) and waits until it
/// listens or exits — the component is compiled and cached before anything
/// else happens to the plugin, so even a refusal leaves it cached.
fn warm(wasm: &Path) {
    static WARMED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut warmed = WARMED.lock().unwrap_or_else(|e| e.into_inner());
    if warmed.contains(wasm) {
        return;
    }
    // One warm-up at a time across test processes too: two servers
    // compiling the same component would write the same cache entry.
    let lock = std::fs::File::create(compiled_cache().join(".warm-up.lock")).unwrap();
    lock.lock().unwrap();
    let dir = data_dir();
    let config = dir.0.join("homeserver.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: \"{SERVER_NAME}\"\ndata_directory: \"{}/data\"\n\
             listeners: [{{port: 0, bind_addresses: [\"127.0.0.1\"], type: http, resources: [{{names: [client]}}]}}]\n\
             modules:\n  - module: \"{}\"\n    config: {{allocate_on: warm-up}}\n    limits: {{timeout_ms: 10000}}\n",
            dir.0.display(),
            wasm.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(myelin_binary())
        .arg("-c")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start myelin");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    while rx.try_recv().is_err() && child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "compiling {} took over 20 minutes",
            wasm.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(lock);
    warmed.insert(wasm.to_owned());
}

/// A test server (SQLite) whose data directory shares the compiled cache.
struct Served {
    server: TestServer,
    _data: ScratchDir,
}

/// One `modules:` entry; `extra` is more YAML for the entry (4 spaces in).
fn module(wasm: &Path, config: Value, extra: &str) -> String {
    format!(
        "  - module: \"{}\"\n    config: {config}\n{extra}",
        wasm.display()
    )
}

async fn serve(modules: &[String]) -> Served {
    let data = data_dir();
    let server = TestServer::start(
        Backend::Sqlite,
        &format!(
            "data_directory: \"{}/data\"\nmodules:\n{}",
            data.0.display(),
            modules.concat()
        ),
    )
    .await;
    Served {
        server,
        _data: data,
    }
}

async fn create_room(server: &TestServer, token: &str) -> String {
    let (status, body) = server
        .post("/_matrix/client/v3/createRoom", Some(token), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

async fn send(
    server: &TestServer,
    token: &str,
    room: &str,
    txn: &str,
    text: &str,
) -> (reqwest::StatusCode, Value) {
    server
        .request(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            Some(json!({ "msgtype": "m.text", "body": text })),
        )
        .await
}

async fn invite(
    server: &TestServer,
    token: &str,
    room: &str,
    user: &str,
) -> (reqwest::StatusCode, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(token),
            json!({ "user_id": user }),
        )
        .await
}

/// The message bodies of a room, oldest first, as `token`'s user sees them.
async fn bodies(server: &TestServer, token: &str, room: &str) -> Vec<String> {
    let (status, page) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let mut bodies: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    bodies.reverse();
    bodies
}

/// The example spam checker of `dir`: banned words refuse a message with the
/// plugin's own error, clean messages are delivered, a blocked invitee
/// cannot be invited, and the plugin logs through the host.
async fn spam_checker_refuses_and_lets_through(language: Language, dir: &str, file_stem: &str) {
    let Some(wasm) = plugin(language, dir, file_stem) else {
        return;
    };
    let Served { server, _data } = serve(&[module(
        &wasm,
        json!({
            "banned_words": ["viagra", "Free Crypto"],
            "blocked_invitees": [format!("@mallory*:{SERVER_NAME}")],
        }),
        "    limits: {timeout_ms: 2000}\n",
    )])
    .await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (bob_id, bob) = server.register_user("bob", PASSWORD, false).await;
    let (mallory_id, _) = server.register_user("mallory2", PASSWORD, false).await;
    let room = create_room(&server, &alice).await;

    let clean = send(&server, &alice, &room, "1", "hello from alice").await;
    assert_eq!(clean.0, 200, "{}", clean.1);
    let refused = send(&server, &alice, &room, "2", "get free crypto now").await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert!(
        refused.1["error"]
            .as_str()
            .unwrap()
            .contains("may not contain 'free crypto'")
            || refused.1["error"]
                .as_str()
                .unwrap()
                .contains("may not contain \"free crypto\""),
        "{}",
        refused.1
    );

    // Invites: a blocked invitee is refused with the plugin's message, anyone
    // else is invited and, once joined, sees the clean message only.
    let blocked = invite(&server, &alice, &room, &mallory_id).await;
    assert_error(&blocked, 403, "M_FORBIDDEN");
    assert_eq!(
        blocked.1["error"],
        format!("{mallory_id} may not be invited"),
        "{}",
        blocked.1
    );
    let invited = invite(&server, &alice, &room, &bob_id).await;
    assert_eq!(invited.0, 200, "{}", invited.1);
    let (status, joined) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{joined}");
    let after = send(&server, &alice, &room, "3", "welcome, bob").await;
    assert_eq!(after.0, 200, "{}", after.1);
    assert_eq!(
        bodies(&server, &bob, &room).await,
        ["hello from alice", "welcome, bob"]
    );

    // The plugin's own log lines, tagged with its name.
    let logs = server.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(file_stem) && l.contains("refused $")),
        "no log line from {file_stem}:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_spam_checker_refuses_and_lets_through() {
    spam_checker_refuses_and_lets_through(Language::Python, "examples/python-spam", "python_spam")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_spam_checker_refuses_and_lets_through() {
    spam_checker_refuses_and_lets_through(Language::JavaScript, "examples/js-spam", "js_spam")
        .await;
}

/// `init` answering `err` (Python raises `Err`, JavaScript throws): the
/// server refuses to start and shows the plugin's own message.
async fn a_bad_configuration_is_refused(language: Language, dir: &str, file_stem: &str) {
    let Some(wasm) = plugin(language, dir, file_stem) else {
        return;
    };
    let data = data_dir();
    let config = data.0.join("homeserver.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: \"{SERVER_NAME}\"\ndata_directory: \"{}/data\"\nmodules:\n{}",
            data.0.display(),
            module(&wasm, json!({ "banned_words": "viagra" }), "")
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(myelin_binary())
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("it refused its configuration: `banned_words` must be a list of strings"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_bad_configuration_is_refused() {
    a_bad_configuration_is_refused(Language::Python, "examples/python-spam", "python_spam").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_bad_configuration_is_refused() {
    a_bad_configuration_is_refused(Language::JavaScript, "examples/js-spam", "js_spam").await;
}

/// The memory cap each fault plugin runs under: above what the language's
/// runtime needs to start (see docs/performance.md), far below what the
/// plugin's allocation loop asks for.
const MEMORY_MIB: u32 = 48;

/// A plugin that allocates without bound when a message says "hog": the
/// call fails as `out-of-memory`, `on_error` decides the message, the
/// server keeps serving, and the next call (on a fresh instance) works.
async fn memory_cap_contains(language: Language, dir: &str, file_stem: &str, on_error: &str) {
    let Some(wasm) = plugin(language, dir, file_stem) else {
        return;
    };
    let Served { server, _data } = serve(&[module(
        &wasm,
        json!({ "allocate_on": "hog" }),
        &format!(
            "    on_error: {on_error}\n    limits: {{memory_mib: {MEMORY_MIB}, timeout_ms: 5000}}\n"
        ),
    )])
    .await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let room = create_room(&server, &alice).await;

    let started = Instant::now();
    let hog = send(&server, &alice, &room, "1", "hog").await;
    match on_error {
        "deny" => {
            assert_error(&hog, 403, "M_FORBIDDEN");
            assert!(
                hog.1["error"].as_str().unwrap().contains("plugin failed"),
                "{}",
                hog.1
            );
        }
        _ => assert_eq!(hog.0, 200, "{}", hog.1),
    }
    let logs = server.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(file_stem) && l.contains("fault=\"out-of-memory\"")),
        "no out-of-memory fault logged:\n{logs}"
    );
    eprintln!(
        "{}: the allocating call ended in {:?}",
        language.name(),
        started.elapsed()
    );

    // The server goes on, and so does the plugin, on a new instance.
    let (status, _) = server
        .get("/_matrix/client/v3/account/whoami", Some(&alice))
        .await;
    assert_eq!(status, 200);
    for attempt in 0..2 {
        let next = send(&server, &alice, &room, &format!("n{attempt}"), "hello").await;
        assert_eq!(next.0, 200, "{}", next.1);
    }
    let expected: &[&str] = match on_error {
        "deny" => &["hello", "hello"],
        _ => &["hog", "hello", "hello"],
    };
    assert_eq!(bodies(&server, &alice, &room).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_out_of_memory_denies() {
    memory_cap_contains(
        Language::Python,
        "tests/plugins/py-faults",
        "py_faults",
        "deny",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_out_of_memory_allows() {
    memory_cap_contains(
        Language::Python,
        "tests/plugins/py-faults",
        "py_faults",
        "allow",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_plugin_out_of_memory_denies() {
    memory_cap_contains(
        Language::JavaScript,
        "tests/plugins/js-faults",
        "js_faults",
        "deny",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_plugin_out_of_memory_allows() {
    memory_cap_contains(
        Language::JavaScript,
        "tests/plugins/js-faults",
        "js_faults",
        "allow",
    )
    .await;
}
