//! The content repository through the real binary: uploads (plain and
//! asynchronous), downloads with their headers, thumbnails decoded and
//! measured, the limits (`max_upload_size`, pending IDs, expiry), the legacy
//! endpoints under `enable_authenticated_media`, the media spam check of a
//! real plugin, and URL previews of a page served by the test itself.

use std::{io::Cursor, path::Path, time::Duration};

use image::{DynamicImage, ImageFormat, RgbImage};
use myelin_tests::{Backend, SERVER_NAME, TestServer, assert_error, on_both_backends, plugin_wasm};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const PASSWORD: &str = "correct horse battery";

/// A raw HTTP answer: status, headers, body bytes.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    #[track_caller]
    fn assert_error(&self, status: u16, errcode: &str) {
        assert_error(&(self.status, self.json()), status, errcode);
    }
}

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    content: Option<(&str, Vec<u8>)>,
) -> Raw {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, bytes)) = content {
        request = request.header("content-type", content_type).body(bytes);
    }
    let response = request.send().await.expect("request");
    Raw {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

async fn upload(
    server: &TestServer,
    token: &str,
    content_type: &str,
    bytes: Vec<u8>,
    filename: Option<&str>,
) -> Raw {
    let query = filename
        .map(|f| format!("?filename={}", urlencode(f)))
        .unwrap_or_default();
    send(
        server,
        Method::POST,
        &format!("/_matrix/media/v3/upload{query}"),
        Some(token),
        Some((content_type, bytes)),
    )
    .await
}

/// Uploads and returns the media ID.
async fn upload_ok(server: &TestServer, token: &str, content_type: &str, bytes: Vec<u8>) -> String {
    let answer = upload(server, token, content_type, bytes, None).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    media_id(&answer.json()["content_uri"])
}

fn media_id(uri: &Value) -> String {
    let uri = uri.as_str().unwrap();
    let rest = uri
        .strip_prefix(&format!("mxc://{SERVER_NAME}/"))
        .unwrap_or_else(|| panic!("not a local mxc URI: {uri}"));
    rest.to_owned()
}

async fn download(server: &TestServer, token: Option<&str>, tail: &str) -> Raw {
    send(
        server,
        Method::GET,
        &format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{tail}"),
        token,
        None,
    )
    .await
}

async fn thumbnail(server: &TestServer, token: &str, id: &str, query: &str) -> Raw {
    send(
        server,
        Method::GET,
        &format!("/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{id}?{query}"),
        Some(token),
        None,
    )
    .await
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A `width` × `height` gradient, encoded as `format`.
fn picture(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

fn decoded_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).expect("a decodable thumbnail");
    (image.width(), image.height())
}

fn media_store(server: &TestServer) -> std::path::PathBuf {
    server.dir.0.join("data/media_store")
}

/// Regular files under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

on_both_backends! {
    png_round_trip_and_thumbnails => png_round_trip_and_thumbnails_scenario,
    asynchronous_upload => asynchronous_upload_scenario,
}

async fn png_round_trip_and_thumbnails_scenario(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;

    let png = picture(1000, 500, ImageFormat::Png);
    let answer = upload(
        &server,
        &alice,
        "image/png",
        png.clone(),
        Some("photo one.png"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let id = media_id(&answer.json()["content_uri"]);

    // Byte for byte, with its type and name, and the protective headers.
    let got = download(&server, Some(&alice), &id).await;
    assert_eq!(got.status, 200);
    assert!(got.body == png, "the download differs from the upload");
    assert_eq!(got.header("content-type"), "image/png");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"photo one.png\""
    );
    assert_eq!(got.header("content-length"), png.len().to_string());
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    assert_eq!(got.header("cross-origin-resource-policy"), "cross-origin");
    assert!(
        got.header("content-security-policy")
            .starts_with("sandbox;")
    );
    let renamed = download(&server, Some(&alice), &format!("{id}/other.png")).await;
    assert!(renamed.body == png);
    assert_eq!(
        renamed.header("content-disposition"),
        "inline; filename=other.png"
    );

    // Thumbnails: crops at their exact size, scales keeping the 2:1 aspect
    // ratio inside the box of the best pre-generated size.
    for (query, size) in [
        ("width=96&height=96&method=crop", (96, 96)),
        ("width=20&height=20&method=crop", (32, 32)),
        ("width=320&height=240&method=scale", (320, 160)),
        ("width=640&height=300&method=scale", (640, 320)),
        ("width=2000&height=2000", (800, 400)),
    ] {
        let thumb = thumbnail(&server, &alice, &id, query).await;
        assert_eq!(thumb.status, 200, "{query}: {}", thumb.json());
        assert_eq!(thumb.header("content-type"), "image/png", "{query}");
        assert_eq!(decoded_size(&thumb.body), size, "{query}");
    }
    // Generated once and stored: Synapse's five default sizes.
    assert_eq!(
        files_under(&media_store(&server).join("local_thumbnails")),
        5
    );

    // A JPEG gets JPEG thumbnails, never larger than the original.
    let jpeg = upload_ok(
        &server,
        &alice,
        "image/jpeg",
        picture(300, 200, ImageFormat::Jpeg),
    )
    .await;
    let thumb = thumbnail(&server, &alice, &jpeg, "width=800&height=600&method=scale").await;
    assert_eq!(thumb.status, 200, "{}", thumb.json());
    assert_eq!(thumb.header("content-type"), "image/jpeg");
    assert_eq!(decoded_size(&thumb.body), (300, 200));

    // Unknown media, remote media and the thumbnail of an unknown media.
    download(&server, Some(&alice), "nosuchmediaid0000000000000")
        .await
        .assert_error(404, "M_NOT_FOUND");
    download(&server, Some(&alice), "..%2F..%2Fetc")
        .await
        .assert_error(404, "M_NOT_FOUND");
    send(
        &server,
        Method::GET,
        &format!("/_matrix/client/v1/media/download/elsewhere.example/{id}"),
        Some(&alice),
        None,
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
    thumbnail(
        &server,
        &alice,
        "nosuchmediaid0000000000000",
        "width=32&height=32",
    )
    .await
    .assert_error(404, "M_NOT_FOUND");

    // The authenticated endpoints need a token.
    download(&server, None, &id)
        .await
        .assert_error(401, "M_MISSING_TOKEN");

    // Everything survives a restart (the metadata is in the database).
    let mut server = server;
    server.crash_and_restart().await;
    let got = download(&server, Some(&alice), &id).await;
    assert!(got.status == 200 && got.body == png);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_is_an_attachment_in_a_sandbox_and_has_no_thumbnail() {
    let server = TestServer::start(Backend::Sqlite, "").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let page = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let answer = upload(
        &server,
        &alice,
        "text/html",
        page.clone(),
        Some("évil page.html"),
    )
    .await;
    assert_eq!(answer.status, 200);
    let id = media_id(&answer.json()["content_uri"]);

    let got = download(&server, Some(&alice), &id).await;
    assert_eq!(got.status, 200);
    assert!(got.body == page);
    assert_eq!(got.header("content-type"), "text/html; charset=UTF-8");
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename*=utf-8''%C3%A9vil%20page.html"
    );
    assert_eq!(
        got.header("content-security-policy"),
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
    );
    assert_eq!(got.header("x-content-type-options"), "nosniff");

    // Plain text is safe to show; a type with parameters is judged by its
    // essence.
    let text = upload_ok(&server, &alice, "text/plain; charset=utf-8", b"hi".to_vec()).await;
    let got = download(&server, Some(&alice), &text).await;
    assert_eq!(got.header("content-disposition"), "inline");
    assert_eq!(got.header("content-type"), "text/plain; charset=utf-8");

    // No thumbnails for what is not an image: Synapse's 400.
    thumbnail(&server, &alice, &id, "width=32&height=32&method=crop")
        .await
        .assert_error(400, "M_UNKNOWN");
    // Nor for an "image" that does not decode.
    let broken = upload_ok(&server, &alice, "image/png", b"not a png at all".to_vec()).await;
    for _ in 0..2 {
        thumbnail(&server, &alice, &broken, "width=32&height=32")
            .await
            .assert_error(400, "M_UNKNOWN");
    }
}

/// Sends a chunked upload of `total` bytes by hand without ever ending it,
/// and returns the status line of the server's answer.
async fn unfinished_chunked_upload(server: &TestServer, token: &str, total: usize) -> String {
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 8192];
    let mut sent = 0;
    while sent < total {
        let piece = format!("{:x}\r\n", chunk.len());
        let written = async {
            stream.write_all(piece.as_bytes()).await?;
            stream.write_all(&chunk).await?;
            stream.write_all(b"\r\n").await
        };
        if written.await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    // The final zero-length chunk is never sent: the server must answer
    // without the rest of the body.
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers before the body ends")
        .unwrap();
    String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_max_upload_size_are_refused_and_leave_nothing() {
    let server = TestServer::start(Backend::Sqlite, "max_upload_size: 100K\n").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;

    let config = send(
        &server,
        Method::GET,
        "/_matrix/client/v1/media/config",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(config.json(), json!({ "m.upload.size": 102_400 }));

    // Refused on the declared length, before the body is read.
    upload(
        &server,
        &alice,
        "application/octet-stream",
        vec![0; 100 * 1024 + 1],
        None,
    )
    .await
    .assert_error(413, "M_TOO_LARGE");
    // Refused as soon as a body of unannounced length passes the limit.
    let status = unfinished_chunked_upload(&server, &alice, 200 * 1024).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    // Nothing kept, and the server goes on serving.
    let store = media_store(&server);
    assert_eq!(files_under(&store.join("tmp")), 0);
    assert_eq!(files_under(&store.join("local_content")), 0);
    let id = upload_ok(
        &server,
        &alice,
        "application/octet-stream",
        vec![7; 100 * 1024],
    )
    .await;
    assert_eq!(
        download(&server, Some(&alice), &id).await.body.len(),
        100 * 1024
    );
    assert_eq!(files_under(&store.join("local_content")), 1);
}

async fn asynchronous_upload_scenario(backend: Backend) {
    let server = TestServer::start(backend, "unused_expiration_time: 3s\n").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let (_, bob) = server.register_user("bob", PASSWORD, false).await;
    let create = || async {
        send(
            &server,
            Method::POST,
            "/_matrix/media/v1/create",
            Some(&alice),
            Some(("application/json", b"{}".to_vec())),
        )
        .await
    };
    let put = |token: &str, id: &str, bytes: &[u8]| {
        let (token, id, bytes) = (token.to_owned(), id.to_owned(), bytes.to_vec());
        let server = &server;
        async move {
            send(
                server,
                Method::PUT,
                &format!("/_matrix/media/v3/upload/{SERVER_NAME}/{id}?filename=later.txt"),
                Some(&token),
                Some(("text/plain", bytes)),
            )
            .await
        }
    };

    let created = create().await;
    assert_eq!(created.status, 200, "{}", created.json());
    let id = media_id(&created.json()["content_uri"]);
    assert!(created.json()["unused_expires_at"].as_u64().unwrap() > 0);

    // Not there yet: a short wait ends in 504, a longer one sees the upload.
    send(
        &server,
        Method::GET,
        &format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{id}?timeout_ms=100"),
        Some(&alice),
        None,
    )
    .await
    .assert_error(504, "M_NOT_YET_UPLOADED");
    let waiting = {
        let url = format!(
            "{}/_matrix/client/v1/media/download/{SERVER_NAME}/{id}?timeout_ms=2500",
            server.base_url
        );
        let alice = alice.clone();
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(alice)
                .send()
                .await
                .unwrap();
            (response.status(), response.bytes().await.unwrap().to_vec())
        })
    };

    put(&bob, &id, b"bob's")
        .await
        .assert_error(403, "M_FORBIDDEN");
    let done = put(&alice, &id, b"later content").await;
    assert_eq!(done.status, 200, "{}", done.json());
    assert_eq!(done.json(), json!({}));
    put(&alice, &id, b"again")
        .await
        .assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");
    let (status, body) = waiting.await.unwrap();
    assert_eq!(
        (status.as_u16(), body.as_slice()),
        (200, &b"later content"[..])
    );
    let got = download(&server, Some(&alice), &id).await;
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=later.txt"
    );
    put(&alice, "nosuchmediaid0000000000000", b"x")
        .await
        .assert_error(404, "M_NOT_FOUND");

    // At most five IDs wait per user.
    let mut pending = Vec::new();
    for _ in 0..5 {
        let created = create().await;
        assert_eq!(created.status, 200);
        pending.push(media_id(&created.json()["content_uri"]));
    }
    let refused = create().await;
    refused.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(refused.json()["retry_after_ms"].as_u64().unwrap() <= 3000);

    // Unused IDs expire, and make room again.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    put(&alice, &pending[0], b"too late")
        .await
        .assert_error(404, "M_NOT_FOUND");
    download(&server, Some(&alice), &pending[1])
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert_eq!(create().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_endpoints_follow_enable_authenticated_media() {
    let mut server =
        TestServer::start(Backend::Sqlite, "enable_authenticated_media: false\n").await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let legacy = |id: &str| format!("/_matrix/media/v3/download/{SERVER_NAME}/{id}");

    // Off: the legacy endpoints serve without a token.
    let before = upload_ok(&server, &alice, "text/plain", b"old".to_vec()).await;
    let got = send(&server, Method::GET, &legacy(&before), None, None).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_slice()),
        (200, &b"old"[..])
    );
    let got = send(
        &server,
        Method::GET,
        &format!("/_matrix/media/r0/download/{SERVER_NAME}/{before}/x.txt"),
        None,
        None,
    )
    .await;
    assert_eq!(got.header("content-disposition"), "inline; filename=x.txt");

    // On (Synapse's default): what is uploaded from now on is only served
    // by the authenticated endpoints; what was uploaded before stays
    // reachable on the legacy ones.
    server.write_file("extra.yaml", "enable_authenticated_media: true\n");
    server.crash_and_restart().await;
    let after = upload_ok(
        &server,
        &alice,
        "image/png",
        picture(64, 64, ImageFormat::Png),
    )
    .await;
    send(&server, Method::GET, &legacy(&after), None, None)
        .await
        .assert_error(404, "M_NOT_FOUND");
    send(
        &server,
        Method::GET,
        &format!("/_matrix/media/v3/thumbnail/{SERVER_NAME}/{after}?width=32&height=32"),
        None,
        None,
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
    assert_eq!(download(&server, Some(&alice), &after).await.status, 200);
    let got = send(&server, Method::GET, &legacy(&before), None, None).await;
    assert_eq!(got.status, 200);
    // The legacy config endpoint wants a token, as Synapse's does.
    send(&server, Method::GET, "/_matrix/media/v3/config", None, None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_spam_check_refuses_with_the_plugins_error() {
    let module = format!(
        "modules:\n  - module: \"{}\"\n    config: {}\n",
        plugin_wasm("test-spam").display(),
        json!({ "banned_words": ["viagra"], "errcode": "M_CUSTOM_SPAM" })
    );
    let server = TestServer::start(Backend::Sqlite, &module).await;
    let (_, alice) = server.register_user("alice", PASSWORD, false).await;
    let refused = upload(
        &server,
        &alice,
        "text/plain",
        b"cheap VIAGRA here".to_vec(),
        None,
    )
    .await;
    refused.assert_error(403, "M_CUSTOM_SPAM");
    assert!(refused.json()["error"].as_str().unwrap().contains("viagra"));
    let store = media_store(&server);
    assert_eq!(files_under(&store.join("local_content")), 0);
    assert_eq!(files_under(&store.join("tmp")), 0);
    upload_ok(&server, &alice, "text/plain", b"hello".to_vec()).await;
    assert_eq!(files_under(&store.join("local_content")), 1);
    assert!(server.logs().contains("banned word"), "{}", server.logs());
}

/// A one-connection-at-a-time HTTP server for the preview tests: an HTML
/// page whose `og:image` is a PNG on the same server.
async fn serve_page() -> (u16, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let png = picture(40, 20, ImageFormat::Png);
    let image = png.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let (content_type, body) = if request.starts_with(b"GET /image.png") {
                ("image/png", image.clone())
            } else {
                (
                    "text/html; charset=utf-8",
                    br#"<!doctype html><html><head><title>Fallback</title>
                    <meta property="og:title" content="A &quot;test&quot; page">
                    <meta name="description" content="Described here">
                    <meta property="og:image" content="/image.png">
                    </head><body>hi</body></html>"#
                        .to_vec(),
                )
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
        }
    });
    (port, png)
}

async fn preview_of(server: &TestServer, token: &str, host: &str, port: u16) -> Raw {
    let path = format!(
        "/_matrix/client/v1/media/preview_url?url={}",
        urlencode(&format!("http://{host}:{port}/page.html"))
    );
    send(server, Method::GET, &path, Some(token), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_previews_are_off_by_default_and_keep_to_the_ip_ranges() {
    let (port, png) = serve_page().await;

    let off = TestServer::start(Backend::Sqlite, "").await;
    let (_, alice) = off.register_user("alice", PASSWORD, false).await;
    preview_of(&off, &alice, "127.0.0.1", port)
        .await
        .assert_error(404, "M_UNRECOGNIZED");

    let blacklist =
        "url_preview_enabled: true\nurl_preview_ip_range_blacklist: ['127.0.0.0/8', '::1/128']\n";
    let blocked = TestServer::start(Backend::Sqlite, blacklist).await;
    let (_, alice) = blocked.register_user("alice", PASSWORD, false).await;
    // An address in the blacklist: 403 as an IP literal, 502 when a name
    // resolves only to such addresses (Synapse's answers).
    preview_of(&blocked, &alice, "127.0.0.1", port)
        .await
        .assert_error(403, "M_UNKNOWN");
    preview_of(&blocked, &alice, "localhost", port)
        .await
        .assert_error(502, "M_UNKNOWN");

    let allowed = TestServer::start(
        Backend::Sqlite,
        &format!("{blacklist}url_preview_ip_range_whitelist: ['127.0.0.1']\n"),
    )
    .await;
    let (_, alice) = allowed.register_user("alice", PASSWORD, false).await;
    let answer = preview_of(&allowed, &alice, "127.0.0.1", port).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let og = answer.json();
    assert_eq!(og["og:title"], "A \"test\" page");
    assert_eq!(og["og:description"], "Described here");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["matrix:image:size"], png.len());
    assert_eq!(
        (og["og:image:width"].clone(), og["og:image:height"].clone()),
        (json!(40), json!(20))
    );
    // The page's image was stored as local media.
    let image = media_id(&og["og:image"]);
    assert!(download(&allowed, Some(&alice), &image).await.body == png);
}
