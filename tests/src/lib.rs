//! The harness for black-box tests: it starts the real `myelin` binary on
//! an ephemeral port, on SQLite or PostgreSQL, and talks HTTP to it.
//!
//! PostgreSQL tests need `MYELIN_TEST_POSTGRES_URL` (an admin connection URL;
//! `scripts/test.sh` starts a cluster and sets it). Each server gets a fresh
//! database.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha1::Sha1;
use sqlx::Connection;

pub const SERVER_NAME: &str = "myelin.test";
pub const SHARED_SECRET: &str = "test-shared-secret";

/// Runs a scenario once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident => $scenario:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario($crate::Backend::Postgres).await
            }
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The `myelin` binary built next to the test executable.
pub fn myelin_binary() -> PathBuf {
    if let Ok(path) = std::env::var("MYELIN_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("myelin");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p myelin` first",
        bin.display()
    );
    bin
}

/// Builds the test plugin `package` (a crate under `tests/plugins/`) for
/// `wasm32-wasip2`, once per test process, and returns its component.
pub fn plugin_wasm(package: &str) -> PathBuf {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // A target directory of its own: the `cargo test` that runs us may still
    // hold the lock on the main one.
    let target = root
        .join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or("target".into()))
        .join("plugins");
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(package) {
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
        built.insert(package.to_owned());
    }
    wasm
}

/// Starts the binary on `config` (plus a scratch data directory) and waits
/// up to `patience` for it to exit: `(exited, stderr)`. A valid
/// configuration keeps serving and is killed after the wait.
pub fn try_start(config: &str, patience: Duration) -> (bool, String) {
    let dir = ScratchDir::new();
    let path = dir.0.join("homeserver.yaml");
    std::fs::write(
        &path,
        format!("data_directory: \"{}/data\"\n{config}", dir.0.display()),
    )
    .unwrap();
    let mut child = Command::new(myelin_binary())
        .arg("-c")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < patience && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited = child.try_wait().unwrap().is_some();
    if !exited {
        child.kill().unwrap();
    }
    let output = child.wait_with_output().unwrap();
    (exited, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A unique scratch directory, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> Self {
        let name = format!("myelin-test-{}", rand::thread_rng().gen_range(0..u64::MAX));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running (or stopped) `myelin` process with its data and logs.
pub struct TestServer {
    pub dir: ScratchDir,
    pub backend: Backend,
    pub config_files: Vec<PathBuf>,
    pub base_url: String,
    child: Option<Child>,
    logs: Arc<Mutex<String>>,
    http: reqwest::Client,
}

/// The configuration every test server starts from; `extra` YAML is merged over it.
fn base_config(dir: &Path, database: &str) -> String {
    format!(
        r#"server_name: "{SERVER_NAME}"
data_directory: "{data}"
listeners:
  - port: 0
    bind_addresses: ["127.0.0.1"]
    type: http
    resources: [{{names: [client]}}]
registration_shared_secret: "{SHARED_SECRET}"
{database}
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_registration: {{per_second: 1000, burst_count: 1000}}
"#,
        data = dir.join("data").display(),
    )
}

async fn fresh_postgres_database() -> String {
    let admin_url = std::env::var("MYELIN_TEST_POSTGRES_URL").expect(
        "MYELIN_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL",
    );
    let name = format!("myelin_test_{}", rand::thread_rng().gen_range(0..u64::MAX));
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(&*format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
    format!("{base}/{name}")
}

impl TestServer {
    /// Starts a server with the base configuration plus `extra` YAML.
    pub async fn start(backend: Backend, extra: &str) -> Self {
        let dir = ScratchDir::new();
        let database = match backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => {
                format!(
                    "database: {{name: psycopg2, args: {{url: \"{}\"}}}}",
                    fresh_postgres_database().await
                )
            }
        };
        let base = dir.0.join("homeserver.yaml");
        std::fs::write(&base, base_config(&dir.0, &database)).unwrap();
        let mut config_files = vec![base];
        if !extra.trim().is_empty() {
            let path = dir.0.join("extra.yaml");
            std::fs::write(&path, extra).unwrap();
            config_files.push(path);
        }
        let mut server = Self {
            dir,
            backend,
            config_files,
            base_url: String::new(),
            child: None,
            logs: Arc::default(),
            http: reqwest::Client::new(),
        };
        server.launch().await;
        server
    }

    /// Writes a file into the server's scratch directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Runs the binary with this server's config files; waits until it listens.
    pub async fn launch(&mut self) {
        let mut command = Command::new(myelin_binary());
        for file in &self.config_files {
            command.arg("-c").arg(file);
        }
        let mut child = command
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start myelin");
        let logs = self.logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = logs.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(url) = rx.try_recv() {
                self.base_url = url;
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "myelin exited with {status} before listening:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "myelin did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.child = Some(child);
    }

    /// The server process's ID (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// SIGKILL: no shutdown path runs, exactly like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Kills the server with SIGKILL and starts it again on the same data.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends a request; `token` as a bearer token; returns status and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// Sends raw bytes as a POST body.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers through the shared-secret admin API; returns (user_id, access_token).
    pub async fn register_user(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> (String, String) {
        let (status, body) = self
            .shared_secret_register(localpart, password, admin, SHARED_SECRET)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["user_id"].as_str().unwrap().to_owned(),
            body["access_token"].as_str().unwrap().to_owned(),
        )
    }

    /// One shared-secret registration attempt with a fresh nonce and the given secret.
    pub async fn shared_secret_register(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
        secret: &str,
    ) -> (StatusCode, Value) {
        let nonce = self.nonce().await;
        let mac = registration_mac(secret, &nonce, localpart, password, admin);
        self.post(
            "/_synapse/admin/v1/register",
            None,
            json!({"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac}),
        )
        .await
    }

    pub async fn nonce(&self) -> String {
        let (status, body) = self.get("/_synapse/admin/v1/register", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["nonce"].as_str().unwrap().to_owned()
    }

    /// Logs in with a password; returns the whole response.
    pub async fn login(&self, user: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
        )
        .await
    }

    /// Opens this server's database directly (to plant data a migration would bring).
    pub async fn database_url(&self) -> String {
        match self.backend {
            Backend::Sqlite => format!(
                "sqlite://{}",
                self.dir.0.join("data/homeserver.db").display()
            ),
            Backend::Postgres => {
                let text = std::fs::read_to_string(&self.config_files[0]).unwrap();
                let start = text.find("postgres://").unwrap();
                text[start..].split('"').next().unwrap().to_owned()
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Synapse's shared-secret MAC, computed independently of the server's code.
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    let admin = if admin { "admin" } else { "notadmin" };
    mac.update(format!("{nonce}\0{user}\0{password}\0{admin}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Asserts a Matrix error: status and errcode.
#[track_caller]
pub fn assert_error(response: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_eq!(response.0.as_u16(), status, "{}", response.1);
    assert_eq!(response.1["errcode"], errcode, "{}", response.1);
}

// ---------------------------------------------------------------------------
// Helpers the scenarios share
// ---------------------------------------------------------------------------

/// The password `TestServer::user` registers with.
pub const PASSWORD: &str = "correct horse battery";

/// A registered user and one of their access tokens.
pub struct User {
    pub id: String,
    pub token: String,
}

impl TestServer {
    /// Registers `localpart` with `PASSWORD` (not an admin).
    pub async fn user(&self, localpart: &str) -> User {
        let (id, token) = self.register_user(localpart, PASSWORD, false).await;
        User { id, token }
    }

    /// A PUT with the user's token.
    pub async fn put(&self, path: &str, user: &User, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, Some(&user.token), Some(body))
            .await
    }
}

/// Percent-encodes one path segment or query value (room ids, aliases,
/// event ids with `/` or `+`, tokens, JSON filters).
pub fn enc(s: &str) -> String {
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

/// Asserts a 200 and returns the body.
#[track_caller]
pub fn ok(response: (StatusCode, Value)) -> Value {
    assert_eq!(response.0, 200, "{}", response.1);
    response.1
}

/// A transaction ID not used before in this test process.
pub fn txn() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "txn-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
