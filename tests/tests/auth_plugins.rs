//! Password auth provider plugins through the real binary: the first-party
//! `rest-auth` against an HTTP credentials service this test runs, the
//! shared-secret login type, plugin login types in `GET /login` and in
//! user-interactive auth, `password_config`'s `localdb_enabled` and
//! `enabled`, a provider that hangs, and `on_logged_out`.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use myelin_tests::{
    Backend, PASSWORD, SERVER_NAME, TestServer, assert_error, on_both_backends, plugin_wasm,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha512;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SHARED: &str = "a shared secret for tests";

/// A credentials service speaking matrix-synapse-rest-password-provider's
/// protocol: `alice` / `wonderland` is accepted with a display name.
async fn credentials_service() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as `content-length` says.
                let body = loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            assert!(
                                head.starts_with(
                                    "POST /_matrix-internal/identity/v1/check_credentials "
                                ),
                                "{head}"
                            );
                            break body.to_owned();
                        }
                    }
                };
                let asked: Value = serde_json::from_str(&body).unwrap();
                let user = &asked["user"];
                let answer = if user["id"] == format!("@alice:{SERVER_NAME}")
                    && user["password"] == "wonderland"
                {
                    json!({"auth": {"success": true, "id": {"type": "localpart", "value": "alice"}, "profile": {"display_name": "Alice Liddell"}}})
                } else {
                    json!({"auth": {"success": false}})
                };
                let answer = answer.to_string();
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                            answer.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    port
}

/// `rest-auth` asking the service on `port` (maybe closed), plus `extra`
/// top-level configuration. Its deadline is above the HTTP timeout, as the
/// guide advises, so the call waits for the endpoint.
async fn rest_auth_server(backend: Backend, port: u16, extra: &str) -> TestServer {
    let config = json!({
        "server_name": SERVER_NAME,
        "endpoint": format!("http://127.0.0.1:{port}"),
        "shared_secret": SHARED,
    });
    TestServer::start(
        backend,
        &format!(
            "modules:\n  - module: \"{}\"\n    config: {config}\n    grants: {{http: {{allowed_hosts: [\"127.0.0.1\"], allow_private_addresses: true, timeout_ms: 2000}}}}\n    limits: {{timeout_ms: 2500}}\n{extra}",
            plugin_wasm("rest-auth").display()
        ),
    )
    .await
}

async fn login_types(server: &TestServer) -> Vec<String> {
    let (status, body) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, 200, "{body}");
    body["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["type"].as_str().unwrap().to_owned())
        .collect()
}

fn shared_secret_token(user_id: &str) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(SHARED.as_bytes()).unwrap();
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn login_with(
    server: &TestServer,
    login_type: &str,
    user: &str,
    field: (&str, &str),
) -> (StatusCode, Value) {
    let mut body = json!({"type": login_type, "identifier": {"type": "m.id.user", "user": user}});
    body[field.0] = json!(field.1);
    server.post("/_matrix/client/v3/login", None, body).await
}

async fn display_name(server: &TestServer, user_id: &str) -> Value {
    let (_, profile) = server
        .get(&format!("/_matrix/client/v3/profile/{user_id}"), None)
        .await;
    profile["displayname"].clone()
}

async fn rest_auth_logs_in_and_creates_users(backend: Backend) {
    let port = credentials_service().await;
    let server = rest_auth_server(backend, port, "").await;
    let types = login_types(&server).await;
    assert!(types.contains(&"m.login.password".to_owned()), "{types:?}");
    assert!(
        types.contains(&"com.devture.shared_secret_auth".to_owned()),
        "{types:?}"
    );

    // First login creates the user with the endpoint's display name.
    let (status, body) = server.login("alice", "wonderland").await;
    assert_eq!(status, 200, "{body}");
    let alice = format!("@alice:{SERVER_NAME}");
    assert_eq!(body["user_id"], alice);
    assert_eq!(display_name(&server, &alice).await, "Alice Liddell");
    // And the second finds them.
    let (status, body) = server.login("@alice:myelin.test", "wonderland").await;
    assert_eq!(status, 200, "{body}");

    assert_error(
        &server.login("alice", "looking-glass").await,
        403,
        "M_FORBIDDEN",
    );
    // A local user still logs in with their own password (the endpoint says
    // no, then the local database is asked, as in Synapse).
    server.user("carol").await;
    assert_eq!(server.login("carol", PASSWORD).await.0, 200);

    // The shared-secret login type creates its user too.
    let bob = format!("@bob:{SERVER_NAME}");
    let shared = "com.devture.shared_secret_auth";
    let (status, body) = login_with(
        &server,
        shared,
        "bob",
        ("token", &shared_secret_token(&bob)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], bob);
    assert_eq!(display_name(&server, &bob).await, "bob");
    let wrong = login_with(
        &server,
        shared,
        "bob",
        ("token", &shared_secret_token(&alice)),
    )
    .await;
    assert_error(&wrong, 403, "M_FORBIDDEN");
    let missing = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": shared, "user": "bob"}),
        )
        .await;
    assert_error(&missing, 400, "M_MISSING_PARAM");

    // The plugin's login type is a user-interactive auth stage.
    let token = body["access_token"].as_str().unwrap();
    let device = body["device_id"].as_str().unwrap();
    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/delete_devices",
            Some(token),
            json!({"devices": [device]}),
        )
        .await;
    assert_eq!(status, 401, "{challenge}");
    let flows: Vec<&str> = challenge["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["stages"][0].as_str().unwrap())
        .collect();
    assert!(flows.contains(&shared), "{challenge}");
    let session = challenge["session"].as_str().unwrap();
    let auth = |token: String| json!({"type": shared, "session": session, "identifier": {"type": "m.id.user", "user": "bob"}, "token": token});
    let (status, refused) = server
        .post(
            "/_matrix/client/v3/delete_devices",
            Some(token),
            json!({"devices": [device], "auth": auth(shared_secret_token(&alice))}),
        )
        .await;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["errcode"], "M_FORBIDDEN", "{refused}");
    let (status, done) = server
        .post(
            "/_matrix/client/v3/delete_devices",
            Some(token),
            json!({"devices": [device], "auth": auth(shared_secret_token(&bob))}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    // The device is gone with its token.
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(token))
            .await
            .0,
        401
    );
}

async fn localdb_disabled_leaves_passwords_to_the_plugin(backend: Backend) {
    let port = credentials_service().await;
    let server =
        rest_auth_server(backend, port, "password_config: {localdb_enabled: false}\n").await;
    server.user("carol").await;
    assert_error(&server.login("carol", PASSWORD).await, 403, "M_FORBIDDEN");
    assert_eq!(server.login("alice", "wonderland").await.0, 200);
    assert!(
        login_types(&server)
            .await
            .contains(&"m.login.password".to_owned())
    );
}

on_both_backends! {
    rest_auth => rest_auth_logs_in_and_creates_users,
    localdb_disabled => localdb_disabled_leaves_passwords_to_the_plugin,
}

/// The credentials service is down: the login fails cleanly and the server
/// goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_fails_the_login_cleanly() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = rest_auth_server(Backend::Sqlite, closed, "").await;
    assert_error(
        &server.login("alice", "wonderland").await,
        403,
        "M_FORBIDDEN",
    );
    assert!(
        server.logs().contains("the endpoint could not be asked"),
        "{}",
        server.logs()
    );
    server.user("carol").await;
    assert_eq!(server.login("carol", PASSWORD).await.0, 200);
}

/// `password_config.enabled: false` takes `m.login.password` away, even
/// from plugins; their own login types stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_password_login_is_not_offered() {
    let port = credentials_service().await;
    let server =
        rest_auth_server(Backend::Sqlite, port, "password_config: {enabled: false}\n").await;
    let types = login_types(&server).await;
    assert!(!types.contains(&"m.login.password".to_owned()), "{types:?}");
    assert!(
        types.contains(&"com.devture.shared_secret_auth".to_owned()),
        "{types:?}"
    );
    let refused = server.login("alice", "wonderland").await;
    assert_eq!(refused.0, 400, "{}", refused.1);
}

fn faults_module(config: Value, extra: &str) -> String {
    format!(
        "  - module: \"{}\"\n    config: {config}\n{extra}",
        plugin_wasm("test-faults").display()
    )
}

/// A provider that hangs fails its login after its deadline; a login at the
/// same time goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_provider_fails_after_its_deadline_while_others_log_in() {
    let hung = faults_module(
        json!({"mode": "loop", "login_type": "com.example.login"}),
        "    limits: {timeout_ms: 100}\n",
    );
    let server = TestServer::start(Backend::Sqlite, &format!("modules:\n{hung}")).await;
    server.user("carol").await;
    assert!(
        login_types(&server)
            .await
            .contains(&"com.example.login".to_owned())
    );
    let started = Instant::now();
    let (stuck, fine) = tokio::join!(
        login_with(
            &server,
            "com.example.login",
            "@carol:myelin.test",
            ("token", "open-sesame")
        ),
        server.login("carol", PASSWORD),
    );
    assert_error(&stuck, 403, "M_FORBIDDEN");
    assert_eq!(fine.0, 200, "{}", fine.1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(server.logs().contains("timeout"), "{}", server.logs());
    // The server goes on, and so does the plugin's next call.
    assert_eq!(server.login("carol", PASSWORD).await.0, 200);
}

/// A plugin login type that works, and `on_logged_out` after a logout.
async fn plugin_login_and_logout_callback(backend: Backend) {
    let plugin = faults_module(
        json!({"login_type": "com.example.login", "record_logouts": true}),
        // kv writes wait for fsync, which on a loaded machine may take
        // longer than the default 100 ms deadline.
        "    grants: {kv: {quota_kib: 16}}\n    limits: {timeout_ms: 5000}\n",
    );
    let server = TestServer::start(backend, &format!("modules:\n{plugin}")).await;
    let dave = format!("@dave:{SERVER_NAME}");
    let (status, body) = login_with(
        &server,
        "com.example.login",
        &dave,
        ("token", "open-sesame"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let wrong = login_with(&server, "com.example.login", &dave, ("token", "nope")).await;
    assert_error(&wrong, 403, "M_FORBIDDEN");

    let token = body["access_token"].as_str().unwrap();
    let device = body["device_id"].as_str().unwrap();
    let (status, _) = server
        .request(
            Method::POST,
            "/_matrix/client/v3/logout",
            Some(token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let expected = format!("recorded logout:{dave}:{device}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logs().contains(&expected) {
        assert!(Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_backends! {
    logout_callback => plugin_login_and_logout_callback,
}
