//! Bad input gets the spec's error, on both backends.

use myelin_tests::{Backend, TestServer, assert_error, on_both_backends};
use reqwest::Method;
use serde_json::json;

on_both_backends! {
    malformed_and_misshapen_bodies => malformed_and_misshapen_bodies,
    oversized_bodies_are_refused => oversized_bodies_are_refused,
    unknown_paths_and_methods => unknown_paths_and_methods,
    tokens_missing_unknown_or_expired => tokens_missing_unknown_or_expired,
    wrong_password_does_not_reveal_whether_the_user_exists => wrong_password_does_not_reveal_whether_the_user_exists,
    too_many_logins_are_limited => too_many_logins_are_limited,
}

async fn malformed_and_misshapen_bodies(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let not_json = server
        .post_raw("/_matrix/client/v3/login", "{\"type\": ")
        .await;
    assert_error(&not_json, 400, "M_NOT_JSON");

    let wrong_shape = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice"}),
        )
        .await;
    assert_error(&wrong_shape, 400, "M_BAD_JSON");
    assert!(
        wrong_shape.1["error"]
            .as_str()
            .unwrap()
            .contains("password"),
        "names the field: {}",
        wrong_shape.1
    );

    let wrong_type = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "a", "password": 5}),
        )
        .await;
    assert_error(&wrong_type, 400, "M_BAD_JSON");

    let admin_not_json = server.post_raw("/_synapse/admin/v1/register", "nope").await;
    assert_error(&admin_not_json, 400, "M_NOT_JSON");
}

async fn oversized_bodies_are_refused(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let addr = server.base_url.trim_start_matches("http://").to_owned();

    // A declared length over the limit is refused before any of the body is sent.
    let head = "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n";
    let answer = raw_exchange(&addr, head, Vec::new()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");

    // A chunked body with no declared length is cut off once it passes the limit.
    let head = "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut chunks = Vec::new();
    for _ in 0..40 {
        chunks.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunks.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunks.extend_from_slice(b"\r\n");
    }
    let answer = raw_exchange(&addr, head, chunks).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");

    // And the server is still fine afterwards.
    let (status, _) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
}

/// Writes a request head and then body bytes (ignoring a server that stops
/// reading early) while reading the response.
async fn raw_exchange(addr: &str, head: &str, body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let sender = tokio::spawn(async move {
        for chunk in body.chunks(16 * 1024) {
            if writer.write_all(chunk).await.is_err() {
                break;
            }
        }
        writer
    });
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read(&mut response),
    )
    .await
    .expect("the server answers without waiting for the whole body")
    .unwrap();
    drop(sender);
    String::from_utf8_lossy(&response[..n]).into_owned()
}

async fn unknown_paths_and_methods(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    assert_error(
        &server
            .get("/_matrix/client/v3/no/such/endpoint", None)
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server
            .request(Method::DELETE, "/_matrix/client/v3/login", None, None)
            .await,
        405,
        "M_UNRECOGNIZED",
    );

    // CORS pre-flight is answered on any client path.
    let response = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            format!("{}/_matrix/client/v3/login", server.base_url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        response.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
}

async fn tokens_missing_unknown_or_expired(backend: Backend) {
    let server = TestServer::start(backend, "refreshable_access_token_lifetime: 1000\n").await;
    let whoami = "/_matrix/client/v3/account/whoami";
    assert_error(&server.get(whoami, None).await, 401, "M_MISSING_TOKEN");
    let unknown = server.get(whoami, Some("mya_not_a_real_token")).await;
    assert_error(&unknown, 401, "M_UNKNOWN_TOKEN");
    assert_ne!(
        unknown.1["soft_logout"], true,
        "an unknown token is not a soft logout"
    );

    server.register_user("alice", "correct horse", false).await;
    let (status, login) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice", "password": "correct horse", "refresh_token": true}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap();
    let refresh_token = login["refresh_token"].as_str().unwrap();
    assert!(login["expires_in_ms"].as_u64().unwrap() <= 1000);
    assert_eq!(server.get(whoami, Some(token)).await.0, 200);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let expired = server.get(whoami, Some(token)).await;
    assert_error(&expired, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(
        expired.1["soft_logout"], true,
        "an expired token is a soft logout"
    );

    let (status, refreshed) = server
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({"refresh_token": refresh_token}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let new_token = refreshed["access_token"].as_str().unwrap();
    let (status, me) = server.get(whoami, Some(new_token)).await;
    assert_eq!(
        (status.as_u16(), me["device_id"].clone()),
        (200, login["device_id"].clone()),
        "same device"
    );

    // A refresh token is good for one use.
    let reused = server
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({"refresh_token": refresh_token}),
        )
        .await;
    assert_error(&reused, 401, "M_UNKNOWN_TOKEN");
}

async fn wrong_password_does_not_reveal_whether_the_user_exists(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server.register_user("alice", "correct horse", false).await;
    let wrong_password = server.login("alice", "battery staple").await;
    let no_such_user = server.login("mallory", "battery staple").await;
    assert_error(&wrong_password, 403, "M_FORBIDDEN");
    assert_eq!(wrong_password, no_such_user, "identical answers");

    // Deactivated accounts are told so only after the right password.
    let (_, login) = server.login("alice", "correct horse").await;
    let token = login["access_token"].as_str().unwrap();
    let deactivate = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse"}});
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(token),
            deactivate,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &server
            .get("/_matrix/client/v3/account/whoami", Some(token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.login("alice", "correct horse").await,
        403,
        "M_USER_DEACTIVATED",
    );
    assert_error(&server.login("alice", "wrong").await, 403, "M_FORBIDDEN");
}

async fn too_many_logins_are_limited(backend: Backend) {
    let server = TestServer::start(
        backend,
        "rc_login:\n  address: {per_second: 0.1, burst_count: 3}\n",
    )
    .await;
    server.register_user("alice", "correct horse", false).await;
    for _ in 0..3 {
        assert_eq!(server.login("alice", "correct horse").await.0, 200);
    }
    let limited = server.login("alice", "correct horse").await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    let retry = limited.1["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!(retry > 0 && retry <= 10_000, "{retry}");
}

on_both_backends! {
    well_known_only_with_public_baseurl => well_known_only_with_public_baseurl,
}

async fn well_known_only_with_public_baseurl(backend: Backend) {
    let plain = TestServer::start(backend, "").await;
    assert_error(
        &plain.get("/.well-known/matrix/client", None).await,
        404,
        "M_NOT_FOUND",
    );

    let server = TestServer::start(backend, "public_baseurl: https://matrix.myelin.test/\n").await;
    let (status, body) = server.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["m.homeserver"]["base_url"],
        "https://matrix.myelin.test/"
    );
    server.register_user("alice", "correct horse", false).await;
    let (_, login) = server.login("alice", "correct horse").await;
    assert_eq!(
        login["well_known"]["m.homeserver"]["base_url"],
        "https://matrix.myelin.test/"
    );

    let (_, flows) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(flows["flows"], json!([{"type": "m.login.password"}]));
    let (_, caps) = server
        .get(
            "/_matrix/client/v3/capabilities",
            Some(login["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "10");
    // ruma omits `m.change_password` when it is enabled, the spec's default.
    assert_ne!(caps["capabilities"]["m.change_password"]["enabled"], false);
}
