//! Plugins through the real binary: spam-checker callbacks answered by real
//! components built from source in this test run (`tests/plugins/`), and
//! faulty plugins that trap, loop, allocate without bound or refuse their
//! configuration — the server keeps serving and the failure policy decides.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use myelin_tests::{Backend, SERVER_NAME, TestServer, assert_error, plugin_wasm, try_start};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn module(package: &str, config: Value, extra: &str) -> String {
    format!(
        "  - module: \"{}\"\n    config: {config}\n{extra}",
        plugin_wasm(package).display()
    )
}

async fn server_with(modules: &[String], extra: &str) -> TestServer {
    server_on(Backend::Sqlite, modules, extra).await
}

async fn server_on(backend: Backend, modules: &[String], extra: &str) -> TestServer {
    TestServer::start(backend, &format!("modules:\n{}{extra}", modules.concat())).await
}

async fn create_room(server: &TestServer, token: &str, body: Value) -> (u16, Value) {
    let (status, body) = server
        .post("/_matrix/client/v3/createRoom", Some(token), body)
        .await;
    (status.as_u16(), body)
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

async fn bodies(server: &TestServer, token: &str, room: &str) -> Vec<String> {
    let (_, page) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            Some(token),
        )
        .await;
    let mut bodies: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    bodies.reverse();
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_checks_refuse_with_the_plugins_error_and_store_nothing() {
    let spam = module(
        "test-spam",
        json!({ "banned_words": ["viagra"], "errcode": "M_CUSTOM_SPAM", "deny_room_creators": [format!("@mallory:{SERVER_NAME}")], "deny_invites_from": [], "deny_joins_to": [] }),
        "",
    );
    let server = server_with(&[spam], "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, mallory) = server.register_user("mallory", PASSWORD, false).await;

    let (status, room) = create_room(&server, &alice, json!({})).await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().unwrap();
    let ok = send(&server, &alice, room, "1", "hello").await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    let refused = send(&server, &alice, room, "2", "cheap VIAGRA here").await;
    assert_error(&refused, 403, "M_CUSTOM_SPAM");
    assert!(
        refused.1["error"].as_str().unwrap().contains("viagra"),
        "{}",
        refused.1
    );
    // Nothing of the refused event was stored, and the room goes on.
    assert_eq!(bodies(&server, &alice, room).await, ["hello"]);
    let after = send(&server, &alice, room, "3", "still here").await;
    assert_eq!(after.0, 200);
    assert_eq!(bodies(&server, &alice, room).await, ["hello", "still here"]);

    // user_may_create_room.
    let (status, body) = create_room(&server, &mallory, json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    // The plugin logged through the host, tagged with its name.
    assert!(server.logs().contains("test_spam"), "{}", server.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_asked_in_order_and_the_first_refusal_wins() {
    let first = module(
        "test-spam",
        json!({ "banned_words": ["alpha"], "errcode": "M_FIRST" }),
        "",
    );
    let second = module(
        "test-spam",
        json!({ "banned_words": ["alpha", "beta"], "errcode": "M_SECOND" }),
        "",
    );
    let server = server_with(&[first, second], "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, room) = create_room(&server, &alice, json!({})).await;
    let room = room["room_id"].as_str().unwrap();
    assert_error(
        &send(&server, &alice, room, "1", "alpha").await,
        403,
        "M_FIRST",
    );
    assert_error(
        &send(&server, &alice, room, "2", "beta").await,
        403,
        "M_SECOND",
    );
    assert_eq!(send(&server, &alice, room, "3", "gamma").await.0, 200);
}

async fn fault_scenario(mode: &str, on_error: &str) -> (TestServer, String, String) {
    let faulty = module(
        "test-faults",
        json!({ "mode": mode }),
        &format!("    on_error: {on_error}\n    limits: {{memory_mib: 16, timeout_ms: 50}}\n"),
    );
    let server = server_with(&[faulty], "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, room) = create_room(&server, &alice, json!({})).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    (server, alice, room)
}

/// Whatever the fault, with `on_error: deny` the event is refused and not
/// stored, the fault is logged, and the server goes on serving.
async fn faulty_plugin_is_contained(mode: &str, logged: &str) {
    let (server, alice, room) = fault_scenario(mode, "deny").await;
    for attempt in 0..3 {
        let refused = send(&server, &alice, &room, &format!("t{attempt}"), "hello").await;
        assert_error(&refused, 403, "M_FORBIDDEN");
    }
    assert!(bodies(&server, &alice, &room).await.is_empty());
    let (status, _) = server
        .get("/_matrix/client/v3/account/whoami", Some(&alice))
        .await;
    assert_eq!(status, 200);
    let logs = server.logs();
    assert!(logs.contains(logged), "no {logged:?} in:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_is_contained() {
    faulty_plugin_is_contained("trap", "fault=\"trap\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_times_out() {
    faulty_plugin_is_contained("loop", "fault=\"timeout\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_exhausting_its_memory_is_contained() {
    faulty_plugin_is_contained("alloc", "fault=\"out-of-memory\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_allow_lets_the_action_through() {
    let (server, alice, room) = fault_scenario("trap", "allow").await;
    let sent = send(&server, &alice, &room, "1", "hello").await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    assert_eq!(bodies(&server, &alice, &room).await, ["hello"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_checks_deny_and_shadow_ban() {
    let spam = module("test-spam", json!({}), "");
    let server = server_with(
        &[spam],
        "enable_registration: true\nenable_registration_without_verification: true\n",
    )
    .await;
    let register = async |username: &str| {
        let first = server
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({ "username": username, "password": PASSWORD }),
            )
            .await;
        let session = first.1["session"].as_str().unwrap_or_default().to_owned();
        server
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({ "username": username, "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }),
            )
            .await
    };
    assert_error(&register("badguy").await, 403, "M_FORBIDDEN");
    let (status, good) = register("goodguy").await;
    assert_eq!(status, 200, "{good}");
    let (status, shadow) = register("shadowy").await;
    assert_eq!(status, 200, "{shadow}");

    // The shadow-banned user hears success, but nobody sees the message.
    let good_token = good["access_token"].as_str().unwrap();
    let shadow_token = shadow["access_token"].as_str().unwrap();
    let (_, room) = create_room(&server, good_token, json!({ "preset": "public_chat" })).await;
    let room = room["room_id"].as_str().unwrap();
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(shadow_token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let sent = send(&server, shadow_token, room, "1", "buy now").await;
    assert_eq!(sent.0, 200);
    assert!(sent.1["event_id"].as_str().unwrap().starts_with('$'));
    assert!(bodies(&server, good_token, room).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_directory_hides_users_a_plugin_calls_spammy() {
    let spam = module("test-spam", json!({}), "");
    let server = server_with(&[spam], "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, spammer) = server.register_user("spammer1", PASSWORD, false).await;
    let (_, friend) = server.register_user("spamfriend", PASSWORD, false).await;
    let (_, room) = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let room = room["room_id"].as_str().unwrap();
    for token in [&spammer, &friend] {
        let (status, _) = server
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(token),
                json!({}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (_, found) = server
        .post(
            "/_matrix/client/v3/user_directory/search",
            Some(&alice),
            json!({ "search_term": "spam" }),
        )
        .await;
    let ids: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [format!("@spamfriend:{SERVER_NAME}")], "{found}");
}

fn refused_start(modules: &str) -> String {
    let (exited, stderr) = try_start(&format!("modules:\n{modules}"), Duration::from_secs(30));
    assert!(exited, "the server should refuse to start: {stderr}");
    stderr
}

#[test]
fn bad_plugins_refuse_start_naming_the_file_and_the_problem() {
    let spam = plugin_wasm("test-spam");
    let stderr = refused_start(&format!(
        "  - module: \"{}\"\n    config: {{reject_config: true}}\n",
        spam.display()
    ));
    assert!(
        stderr.contains("test_spam.wasm") && stderr.contains("reject_config is set"),
        "{stderr}"
    );

    let stderr = refused_start(&format!(
        "  - module: \"{}\"\n    config: {{mode: panic-init}}\n",
        plugin_wasm("test-faults").display()
    ));
    assert!(
        stderr.contains("test_faults.wasm") && stderr.contains("init failed"),
        "{stderr}"
    );

    let dir = myelin_tests::ScratchDir::new();
    let missing = dir.0.join("missing.wasm");
    let stderr = refused_start(&format!("  - module: \"{}\"\n", missing.display()));
    assert!(
        stderr.contains("missing.wasm") && stderr.contains("cannot read"),
        "{stderr}"
    );

    let corrupt = dir.0.join("corrupt.wasm");
    let mut bytes = std::fs::read(&spam).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, bytes).unwrap();
    let stderr = refused_start(&format!("  - module: \"{}\"\n", corrupt.display()));
    assert!(
        stderr.contains("corrupt.wasm") && stderr.contains("not a valid component"),
        "{stderr}"
    );

    // A core module (the empty one) is not a component.
    let core = dir.0.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let stderr = refused_start(&format!("  - module: \"{}\"\n", core.display()));
    assert!(
        stderr.contains("core.wasm") && stderr.contains("not a component"),
        "{stderr}"
    );

    // A component built against a contract version this server does not
    // serve: the message names both versions.
    let stderr = refused_start(&format!(
        "  - module: \"{}\"\n",
        plugin_wasm("test-future-contract").display()
    ));
    assert!(
        stderr.contains("test_future_contract.wasm")
            && stderr.contains("built against myelin:plugin@0.2.0")
            && stderr.contains("serves myelin:plugin@0.1.0"),
        "{stderr}"
    );
}

/// The guide's minimal plugin (`examples/minimal-spam`) works as the guide says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_minimal_plugin_works() {
    let example = module("minimal-spam", json!({ "word": "Durian" }), "");
    let server = server_with(&[example], "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, room) = create_room(&server, &alice, json!({})).await;
    let room = room["room_id"].as_str().unwrap();
    assert_eq!(
        send(&server, &alice, room, "1", "I like mangoes").await.0,
        200
    );
    let refused = send(&server, &alice, room, "2", "and durian").await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert_eq!(bodies(&server, &alice, room).await, ["I like mangoes"]);
}

/// The `kv` grant: a plugin keeps state in the homeserver's database (it
/// survives a crash), within its quota; without the grant, its calls get an
/// error value and the plugin decides what to do with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_grant_keeps_state_within_a_quota_and_is_refused_without_it() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        kv_grant_scenario(backend).await;
    }
}

async fn kv_grant_scenario(backend: Backend) {
    let granted = module(
        "test-grants",
        json!({ "limit": 2 }),
        // A generous deadline: kv writes wait for fsync, which on a loaded
        // machine may take longer than the default 100 ms.
        "    grants: {kv: {quota_kib: 64}}\n    limits: {timeout_ms: 5000}\n",
    );
    let mut server = server_on(backend, &[granted], "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, room) = create_room(&server, &alice, json!({})).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    assert_eq!(send(&server, &alice, &room, "1", "one").await.0, 200);
    assert_eq!(send(&server, &alice, &room, "2", "two").await.0, 200);
    assert_error(
        &send(&server, &alice, &room, "3", "three").await,
        403,
        "M_TOO_MANY_MESSAGES",
    );
    // The count is in the database, not in the instance: a crash keeps it.
    server.crash_and_restart().await;
    let (_, alice) = server.login("alice", PASSWORD).await;
    let alice = alice["access_token"].as_str().unwrap();
    assert_error(
        &send(&server, alice, &room, "4", "four").await,
        403,
        "M_TOO_MANY_MESSAGES",
    );

    let ungranted = module("test-grants", json!({ "limit": 2 }), "");
    let server = server_with(&[ungranted], "").await;
    let (_, bob) = server.register_user("bob", PASSWORD, false).await;
    let (_, room) = create_room(&server, &bob, json!({})).await;
    let room = room["room_id"].as_str().unwrap();
    assert_error(
        &send(&server, &bob, room, "1", "hi").await,
        403,
        "M_KV_NOT_GRANTED",
    );

    let tiny = module(
        "test-grants",
        json!({ "limit": 2 }),
        "    grants: {kv: {quota_kib: 0}}\n    limits: {timeout_ms: 5000}\n",
    );
    let server = server_on(backend, &[tiny], "").await;
    let (_, carol) = server.register_user("carol", PASSWORD, false).await;
    let (_, room) = create_room(&server, &carol, json!({})).await;
    let room = room["room_id"].as_str().unwrap();
    assert_error(
        &send(&server, &carol, room, "1", "hi").await,
        403,
        "M_KV_QUOTA",
    );
}

/// A plugin answering with something the host does not accept (here an
/// error code that is not a Matrix error code) counts as a failure: the
/// policy decides, and the fault is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_resolves_by_the_policy() {
    let malformed = module(
        "test-spam",
        json!({ "banned_words": ["x"], "errcode": "not a code" }),
        "",
    );
    let server = server_with(&[malformed], "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, room) = create_room(&server, &alice, json!({})).await;
    let room = room["room_id"].as_str().unwrap();
    let refused = send(&server, &alice, room, "1", "x marks the spot").await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert!(
        refused.1["error"]
            .as_str()
            .unwrap()
            .contains("plugin failed"),
        "{}",
        refused.1
    );
    assert!(
        server.logs().contains("fault=\"malformed-result\""),
        "{}",
        server.logs()
    );
    assert_eq!(send(&server, &alice, room, "2", "fine").await.0, 200);
}

/// Operators see each plugin's calls, outcomes and last failure in the
/// admin listing (server admins only) and in Prometheus metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_faults_show_in_the_admin_listing_and_metrics() {
    let spam = module("test-spam", json!({ "banned_words": ["spam"] }), "");
    let faulty = module(
        "test-faults",
        json!({ "mode": "trap" }),
        "    on_error: allow\n",
    );
    let listeners = "enable_metrics: true\nlisteners:\n  - port: 0\n    bind_addresses: [\"127.0.0.1\"]\n    type: http\n    resources: [{names: [client, metrics]}]\n";
    let server = server_with(&[spam, faulty], listeners).await;
    let (_, admin) = server.register_user("root", PASSWORD, true).await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, room) = create_room(&server, &alice, json!({})).await;
    let room = room["room_id"].as_str().unwrap();
    // Passes the spam filter, then the faulty plugin traps and `allow` lets it through.
    assert_eq!(send(&server, &alice, room, "1", "hello").await.0, 200);
    // Refused by the first plugin: the second is not asked.
    assert_error(
        &send(&server, &alice, room, "2", "spam").await,
        403,
        "M_FORBIDDEN",
    );

    let path = "/_myelin/admin/v1/plugins";
    assert_error(&server.get(path, None).await, 401, "M_MISSING_TOKEN");
    assert_error(&server.get(path, Some(&alice)).await, 403, "M_FORBIDDEN");
    let (status, listing) = server.get(path, Some(&admin)).await;
    assert_eq!(status, 200, "{listing}");
    let plugins = listing["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 2, "{listing}");
    let spam = &plugins[0];
    assert_eq!(spam["name"], "test_spam");
    assert!(
        spam["callbacks"]
            .as_array()
            .unwrap()
            .contains(&json!("check_event_for_spam")),
        "{spam}"
    );
    let counters = &spam["counters"]["check_event_for_spam"];
    assert_eq!(counters["calls"], 2, "{spam}");
    assert_eq!(counters["outcomes"]["pass"], 1, "{spam}");
    assert_eq!(counters["outcomes"]["reject"], 1, "{spam}");
    let faulty = &plugins[1];
    assert_eq!(faulty["on_error"], "allow");
    assert_eq!(
        faulty["counters"]["check_event_for_spam"]["outcomes"]["trap"], 1,
        "{faulty}"
    );
    assert!(
        faulty["last_error"].as_str().unwrap().contains("trap"),
        "{faulty}"
    );

    let metrics = reqwest::get(format!("{}/_synapse/metrics", server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "myelin_plugin_calls_total{plugin=\"test_spam\",callback=\"check_event_for_spam\",outcome=\"reject\"} 1",
        "myelin_plugin_calls_total{plugin=\"test_faults\",callback=\"check_event_for_spam\",outcome=\"trap\"} 1",
        "myelin_plugin_call_seconds_count{plugin=\"test_spam\",callback=\"check_event_for_spam\"} 2",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
}

/// `modules:` is re-read by the admin endpoint and by SIGHUP; the new set
/// takes over at once, and a set that fails to load is refused while the
/// running one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_reload_without_restart_and_bad_sets_are_refused() {
    let modules = |config: Value| format!("modules:\n{}", module("test-spam", config, ""));
    let server = TestServer::start(
        Backend::Sqlite,
        &modules(json!({ "banned_words": ["alpha"] })),
    )
    .await;
    let extra = server.config_files[1].clone();
    let (_, admin) = server.register_user("root", PASSWORD, true).await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, room) = create_room(&server, &alice, json!({})).await;
    let room = room["room_id"].as_str().unwrap();
    assert_error(
        &send(&server, &alice, room, "1", "alpha").await,
        403,
        "M_FORBIDDEN",
    );

    let reload = "/_myelin/admin/v1/plugins/reload";
    assert_error(
        &server.post(reload, Some(&alice), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    std::fs::write(&extra, modules(json!({ "banned_words": ["beta"] }))).unwrap();
    let (status, body) = server.post(reload, Some(&admin), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugins"], json!(["test_spam"]));
    assert_eq!(send(&server, &alice, room, "2", "alpha").await.0, 200);
    assert_error(
        &send(&server, &alice, room, "3", "beta").await,
        403,
        "M_FORBIDDEN",
    );

    // A set that fails to load is refused; the running one stays.
    std::fs::write(&extra, modules(json!({ "reject_config": true }))).unwrap();
    let refused = server.post(reload, Some(&admin), json!({})).await;
    assert_eq!(refused.0, 400, "{}", refused.1);
    assert!(
        refused.1["error"]
            .as_str()
            .unwrap()
            .contains("reject_config is set"),
        "{}",
        refused.1
    );
    assert_error(
        &send(&server, &alice, room, "4", "beta").await,
        403,
        "M_FORBIDDEN",
    );

    // SIGHUP does the same.
    std::fs::write(&extra, modules(json!({ "banned_words": ["gamma"] }))).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut swapped = false;
    for attempt in 0..100 {
        if send(&server, &alice, room, &format!("g{attempt}"), "gamma")
            .await
            .0
            == 403
        {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        swapped,
        "SIGHUP did not load the new set:\n{}",
        server.logs()
    );
    assert_eq!(send(&server, &alice, room, "5", "beta").await.0, 200);
}

/// A one-route HTTP server on loopback that answers `deny` and counts the
/// requests that reach it.
async fn remote_that_denies() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndeny",
                    )
                    .await;
            });
        }
    });
    (port, hits)
}

/// The `http` grant reaches only the listed hosts, and never a private
/// address unless the operator allows it — even through an allowed name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_grant_reaches_only_allowed_public_hosts() {
    let (port, hits) = remote_that_denies().await;
    let attempt = async |grants: &str, host: &str| {
        let plugin = module(
            "test-grants",
            json!({ "ask_url": format!("http://{host}:{port}/ask") }),
            &format!("    grants: {grants}\n"),
        );
        let server = server_with(&[plugin], "").await;
        let (_, alice) = server.register_user("alice", PASSWORD, false).await;
        let (status, body) = create_room(&server, &alice, json!({})).await;
        (status, body, server.logs())
    };

    // Allowed host, private addresses explicitly allowed: the request goes out.
    let (status, body, _) = attempt(
        "{http: {allowed_hosts: [\"127.0.0.1\"], allow_private_addresses: true}}",
        "127.0.0.1",
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_DENIED_BY_REMOTE")),
        "{body}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // No grant: an error value, and nothing is sent.
    let (status, body, _) = attempt("{}", "127.0.0.1").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_HTTP_NOT_GRANTED")),
        "{body}"
    );
    // A host that is not listed: the same.
    let (_, body, _) = attempt(
        "{http: {allowed_hosts: [\"matrix.example.org\"]}}",
        "127.0.0.1",
    )
    .await;
    assert_eq!(body["errcode"], "M_HTTP_NOT_GRANTED", "{body}");
    // A listed IP literal in private space, private addresses not allowed.
    let (_, body, _) = attempt("{http: {allowed_hosts: [\"127.0.0.1\"]}}", "127.0.0.1").await;
    assert_eq!(body["errcode"], "M_HTTP_FAILED", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{body}"
    );
    // A listed name that resolves to a private address is refused after
    // resolution, before connecting.
    let (_, body, logs) = attempt("{http: {allowed_hosts: [\"localhost\"]}}", "localhost").await;
    assert_eq!(body["errcode"], "M_HTTP_FAILED", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no public address"),
        "{body}"
    );
    assert!(logs.contains("plugin HTTP request refused"), "{logs}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no refused request reached the server"
    );
}

/// The `queries` grant answers who is an admin, a user's profile, a room's
/// state and membership; without it the plugin gets `not-granted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queries_grant_reads_server_data_and_is_refused_without_it() {
    let scenario = async |grants: &str| {
        let plugin = module("test-grants", json!({}), &format!("    grants: {grants}\n"));
        let server = server_with(&[plugin], "").await;
        let (_, root) = server.register_user("root", PASSWORD, true).await;
        let (_, alice) = server.register_user("alice", PASSWORD, false).await;
        server.register_user("bob", PASSWORD, false).await;
        let (status, _) = server
            .request(
                Method::PUT,
                &format!("/_matrix/client/v3/profile/@bob:{SERVER_NAME}/displayname"),
                Some(&alice),
                Some(json!({ "displayname": "Bobby" })),
            )
            .await;
        assert_eq!(status, 403, "only Bob changes Bob's name");
        let (_, room) = create_room(
            &server,
            &alice,
            json!({ "name": "Garden", "preset": "public_chat" }),
        )
        .await;
        let room = room["room_id"].as_str().unwrap().to_owned();
        let (_, _) = server
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(&root),
                json!({}),
            )
            .await;
        let invite = async |token: &str, who: &str| {
            server
                .post(
                    &format!("/_matrix/client/v3/rooms/{room}/invite"),
                    Some(token),
                    json!({ "user_id": format!("@{who}:{SERVER_NAME}") }),
                )
                .await
        };
        let by_alice = invite(&alice, "bob").await;
        let by_root = invite(&root, "bob").await;
        (by_alice, by_root)
    };

    let (by_alice, by_root) = scenario("{queries: true}").await;
    assert_error(&by_alice, 403, "M_NOT_ADMIN");
    let message = by_alice.1["error"].as_str().unwrap();
    assert!(
        message.contains("bob") && message.contains("Garden") && message.contains("joined: true"),
        "{message}"
    );
    assert_eq!(by_root.0, 200, "{}", by_root.1);

    let (by_alice, _) = scenario("{}").await;
    assert_error(&by_alice, 403, "M_QUERIES_NOT_GRANTED");
}

/// Many calls at once into one plugin all get an answer (instances are
/// pooled per plugin; beyond its 32, a call waits for one to free up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_all_get_an_answer() {
    let spam = module(
        "test-spam",
        json!({ "deny_room_creators": ["@nobody:example.org"] }),
        "",
    );
    let server = server_with(&[spam], "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let http = reqwest::Client::new();
    let mut creations = tokio::task::JoinSet::new();
    for i in 0..48 {
        let request = http
            .post(format!("{}/_matrix/client/v3/createRoom", server.base_url))
            .bearer_auth(&alice)
            .json(&json!({ "name": format!("room {i}") }));
        creations.spawn(async move { request.send().await.unwrap().status() });
    }
    while let Some(status) = creations.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

/// The first-party spam filter (`plugins/spam-filter`) does what its
/// configuration says: words and patterns in messages and room names,
/// blocked users and servers, invite rate limits, username rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spam_filter_plugin_enforces_its_rules() {
    let filter = module(
        "spam-filter",
        json!({
            "banned_words": ["Viagra"],
            "banned_patterns": ["bit\\.ly/\\w+"],
            "blocked_users": ["@spam*:myelin.test"],
            "invites_per_hour": 2,
            "username_patterns": ["^admin"],
        }),
        // A generous deadline: kv writes wait for fsync, which on a loaded
        // machine may take longer than the default 100 ms.
        "    grants: {kv: {quota_kib: 64}}\n    limits: {timeout_ms: 5000}\n",
    );
    let server = server_with(
        &[filter],
        "enable_registration: true\nenable_registration_without_verification: true\n",
    )
    .await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, spammer) = server.register_user("spammer", PASSWORD, false).await;
    for friend in ["bob", "carol", "dave"] {
        server.register_user(friend, PASSWORD, false).await;
    }
    let (_, room) = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let room = room["room_id"].as_str().unwrap();

    assert_eq!(
        send(&server, &alice, room, "1", "good morning").await.0,
        200
    );
    let refused = send(&server, &alice, room, "2", "cheap viagra").await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert!(
        refused.1["error"].as_str().unwrap().contains("banned word"),
        "{}",
        refused.1
    );
    assert_error(
        &send(&server, &alice, room, "3", "see bit.ly/abc").await,
        403,
        "M_FORBIDDEN",
    );
    let (status, body) = server
        .request(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&alice),
            Some(json!({ "name": "VIAGRA deals" })),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(bodies(&server, &alice, room).await, ["good morning"]);

    // Blocked users can neither create rooms nor join them.
    assert_eq!(create_room(&server, &spammer, json!({})).await.0, 403);
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&spammer),
            json!({}),
        )
        .await;
    assert_eq!(status, 403);

    // Two invites an hour.
    let invite = async |who: &str| {
        server
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/invite"),
                Some(&alice),
                json!({ "user_id": format!("@{who}:{SERVER_NAME}") }),
            )
            .await
    };
    assert_eq!(invite("bob").await.0, 200);
    assert_eq!(invite("carol").await.0, 200);
    let third = invite("dave").await;
    assert_error(&third, 403, "M_FORBIDDEN");
    assert!(
        third.1["error"]
            .as_str()
            .unwrap()
            .contains("invites this hour"),
        "{}",
        third.1
    );

    // Usernames matching a pattern may not register.
    let first = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "administrator", "password": PASSWORD }),
        )
        .await;
    let session = first.1["session"].as_str().unwrap_or_default().to_owned();
    let refused = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "administrator", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert!(server.logs().contains("refused"), "refusals are logged");
}

/// The spam filter's `report`: each refusal is reported as an `m.notice`
/// in the configured room, sent by the configured user through the
/// `actions` grant and naming who, where and why. The reports (which
/// quote the banned words) are not refused themselves, refusals in the
/// report room are only logged (the check holds that room's lock), and the
/// grant is required.
async fn the_spam_filter_reports_refusals_to_a_room(backend: Backend) {
    let server = TestServer::start(backend, "modules: []\n").await;
    let extra = server.config_files[1].clone();
    let (_, admin) = server.register_user("root", PASSWORD, true).await;
    let (_, moderator) = server.register_user("moderator", PASSWORD, false).await;
    let (bot_id, bot) = server.register_user("filter-bot", PASSWORD, false).await;
    let (alice_id, alice) = server.register_user("alice", PASSWORD, false).await;
    let (spammer_id, spammer) = server.register_user("spammer", PASSWORD, false).await;

    let (_, created) = create_room(
        &server,
        &moderator,
        json!({ "name": "moderation", "invite": [bot_id] }),
    )
    .await;
    let moderation = created["room_id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{moderation}"),
            Some(&bot),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, created) = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let town = created["room_id"].as_str().unwrap().to_owned();

    let filter = |grants: &str| {
        format!(
            "modules:\n{}",
            module(
                "spam-filter",
                json!({
                    "banned_words": ["viagra"],
                    "blocked_users": ["@spam*:myelin.test"],
                    "report": { "room_id": moderation, "sender": bot_id },
                }),
                &format!("{grants}    limits: {{timeout_ms: 5000}}\n"),
            )
        )
    };
    std::fs::write(&extra, filter("    grants: {actions: true}\n")).unwrap();
    let (status, body) = server
        .post("/_myelin/admin/v1/plugins/reload", Some(&admin), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let notices = async || -> Vec<(String, String)> {
        let (status, page) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{moderation}/messages?dir=f&limit=100"),
                Some(&moderator),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["content"]["msgtype"] == "m.notice")
            .map(|e| {
                (
                    e["sender"].as_str().unwrap().to_owned(),
                    e["content"]["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    // A refused message is reported: the sender, the room and the reason.
    let refused = send(&server, &alice, &town, "r1", "cheap viagra").await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    let reports = notices().await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (sender, report) = &reports[0];
    assert_eq!(sender, &bot_id);
    for part in [alice_id.as_str(), town.as_str(), "banned word \"viagra\""] {
        assert!(report.contains(part), "{part:?} not in {report:?}");
    }

    // So is a blocked user's room creation.
    assert_eq!(create_room(&server, &spammer, json!({})).await.0, 403);
    let reports = notices().await;
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(
        reports[1].1.contains(&spammer_id) && reports[1].1.contains("room creation"),
        "{reports:?}"
    );

    // A refusal in the report room itself is refused with the filter's own
    // reason (no deadlock on the room's lock) and only logged.
    let started = std::time::Instant::now();
    let refused = send(&server, &moderator, &moderation, "r2", "viagra again").await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert!(
        refused.1["error"].as_str().unwrap().contains("banned word"),
        "{}",
        refused.1
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(notices().await.len(), 2);
    // Allowed messages are not reported.
    assert_eq!(send(&server, &alice, &town, "r3", "hello").await.0, 200);
    assert_eq!(notices().await.len(), 2);

    // Without the `actions` grant, `report` is refused at start.
    let (exited, stderr) = try_start(
        &format!("server_name: \"{SERVER_NAME}\"\n{}", filter("")),
        Duration::from_secs(30),
    );
    assert!(exited, "started without the actions grant:\n{stderr}");
    assert!(stderr.contains("`actions` grant"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spam_filter_reports_refusals_to_a_room_on_sqlite() {
    the_spam_filter_reports_refusals_to_a_room(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spam_filter_reports_refusals_to_a_room_on_postgres() {
    the_spam_filter_reports_refusals_to_a_room(Backend::Postgres).await
}
