//! The HTTP pusher against a push gateway the test runs: the notification's
//! content and counts, a retry after a failed attempt, and the refusal of
//! private addresses unless the operator allows them.

use std::time::Duration;

use myelin_tests::{Backend, TestServer, on_both_backends};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

on_both_backends! {
    notifications_reach_the_push_gateway => notifications_reach_the_push_gateway,
}

const C: &str = "/_matrix/client/v3";

/// A push gateway on loopback: answers 503 to the first request, 200 after,
/// and hands every request body to the test.
async fn gateway() -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_matrix/push/v1/notify",
        listener.local_addr().unwrap()
    );
    let (bodies, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut served = 0;
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break Some(request[end + 4..end + 4 + length].to_vec());
                    }
                }
            };
            let Some(body) = body else { continue };
            let _ = bodies.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            served += 1;
            let response = if served == 1 {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            } else {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"rejected\":[]}".to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (url, received)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Alice and Bob in a room named Lobby; Bob has an HTTP pusher at `url`.
/// Alice then sends "ping". Returns Bob's user ID.
async fn bob_gets_pinged(server: &TestServer, url: &str) -> String {
    let (_, alice) = server
        .register_user("alice", "correct horse battery", false)
        .await;
    let (bob_id, bob) = server
        .register_user("bob", "correct horse battery", false)
        .await;
    let (status, created) = server
        .post(
            &format!("{C}/createRoom"),
            Some(&alice),
            json!({"preset": "public_chat", "name": "Lobby"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .post(&format!("{C}/join/{}", enc(&room)), Some(&bob), json!({}))
        .await;
    assert_eq!(status, 200);
    let pusher = json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": "bobs-phone",
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": {"url": url, "custom": "kept"}
    });
    let (status, body) = server
        .post(&format!("{C}/pushers/set"), Some(&bob), pusher)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .request(
            Method::PUT,
            &format!("{C}/rooms/{}/send/m.room.message/t1", enc(&room)),
            Some(&alice),
            Some(json!({"msgtype": "m.text", "body": "ping"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    bob_id
}

async fn notifications_reach_the_push_gateway(backend: Backend) {
    let (url, mut received) = gateway().await;
    let server = TestServer::start(backend, "ip_range_whitelist: ['127.0.0.0/8']\n").await;
    bob_gets_pinged(&server, &url).await;

    let first = tokio::time::timeout(Duration::from_secs(20), received.recv())
        .await
        .expect("the gateway was called")
        .unwrap();
    // The first attempt got a 503; the pusher tries again.
    let retry = tokio::time::timeout(Duration::from_secs(20), received.recv())
        .await
        .expect("a retry")
        .unwrap();
    assert_eq!(first, retry);
    let notification = &retry["notification"];
    assert_eq!(notification["content"]["body"], "ping");
    assert_eq!(notification["sender"], "@alice:myelin.test");
    assert_eq!(notification["room_name"], "Lobby");
    assert_eq!(notification["counts"]["unread"], 1);
    let device = &notification["devices"][0];
    assert_eq!(device["pushkey"], "bobs-phone");
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["data"]["custom"], "kept");
    assert!(
        device["data"].get("url").is_none(),
        "the URL stays with the server"
    );
    assert_eq!(device["tweaks"]["sound"], "default");

    // Without the operator's allowance, a loopback gateway is never called.
    let (url, mut received) = gateway().await;
    let strict = TestServer::start(backend, "").await;
    bob_gets_pinged(&strict, &url).await;
    let nothing = tokio::time::timeout(Duration::from_secs(2), received.recv()).await;
    assert!(nothing.is_err(), "a private address was called");
    assert!(
        strict.logs().contains("private address"),
        "the refusal is logged"
    );
}
