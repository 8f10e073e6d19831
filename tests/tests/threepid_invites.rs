//! Third-party invites (`POST /rooms/{id}/invite` with an identity server)
//! against a real identity server: Sydent, Matrix's reference one, from
//! PyPI (installed by `scripts/test.sh`; its Python is
//! `MYELIN_SYDENT_PYTHON`), with its invitation e-mails going to a real
//! SMTP server (aiosmtpd) that prints them. The spam checkers
//! (`user_may_send_3pid_invite`) and third-party rules
//! (`check_threepid_can_be_invited`) are asked before the identity server.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use myelin_tests::{
    Backend, SERVER_NAME, ScratchDir, TestServer, User, assert_error, enc, ok, on_both_backends,
    plugin_wasm,
};
use serde_json::{Value, json};

on_both_backends! {
    bound_addresses_are_invited_and_others_get_a_stored_invite => invites_through_sydent,
    plugins_are_asked_before_the_identity_server => plugins_refuse,
}

const C: &str = "/_matrix/client/v3";
/// Sydent's identity access token for the inviters, put in its database as
/// its `/account/register` would after checking an OpenID token.
const ID_TOKEN: &str = "sydent-test-token";

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sydent with an SMTP server beside it, in a scratch directory.
struct Sydent {
    _dir: ScratchDir,
    smtp_log: PathBuf,
    client_port: u16,
    internal_port: u16,
    db: PathBuf,
    _smtp: Running,
    _sydent: Running,
}

fn python() -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var_os("MYELIN_SYDENT_PYTHON")?);
    python.exists().then_some(python)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on port {port}");
}

fn run_sql(python: &Path, db: &Path, sql: &str) {
    let status = Command::new(python)
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(db)
        .arg(sql)
        .status()
        .unwrap();
    assert!(status.success(), "{sql}");
}

impl Sydent {
    async fn start(inviters: &[&str]) -> Option<Self> {
        let python = python()?;
        let dir = ScratchDir::new();
        let (client_port, internal_port, smtp_port) = (free_port(), free_port(), free_port());
        let smtp_log = dir.0.join("smtp.log");
        let smtp = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{smtp_port}"))
            .stdout(std::fs::File::create(&smtp_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let db = dir.0.join("sydent.db");
        // The PyPI package has no templates; an operator's own, as
        // Sydent's `email.invite_template` allows.
        let template = dir.0.join("invite.eml");
        std::fs::write(
            &template,
            "Date: %(date)s\nFrom: %(from)s\nTo: %(to)s\nMessage-ID: %(messageid)s\n\
             Subject: %(subject_header_value)s\nMIME-Version: 1.0\n\
             Content-Type: text/plain; charset=UTF-8\n\n\
             You are invited to %(room_id)s.\n",
        )
        .unwrap();
        let config = format!(
            "[general]\nserver.name = localhost\nlog.path =\npidfile.path = {pid}\nterms.path =\n\
             templates.path =\nbrand.default = matrix-org\n\n[db]\ndb.file = {db}\n\n\
             [http]\nclientapi.http.bind_address = 127.0.0.1\nclientapi.http.port = {client_port}\n\
             internalapi.http.bind_address = 127.0.0.1\ninternalapi.http.port = {internal_port}\n\
             replication.https.port = {replication}\nobey_x_forwarded_for = False\n\
             federation.verifycerts = False\nverify_response_template =\n\
             client_http_base = http://127.0.0.1:{client_port}\n\n\
             [email]\nemail.smtphost = 127.0.0.1\nemail.smtpport = {smtp_port}\n\
             email.from = Sydent <noreply@localhost>\nemail.tlsmode = 0\n\
             email.invite_template = {template}\n\n[sms]\n\n[crypto]\n",
            pid = dir.0.join("sydent.pid").display(),
            db = db.display(),
            replication = free_port(),
            template = template.display(),
        );
        let config_file = dir.0.join("sydent.conf");
        std::fs::write(&config_file, config).unwrap();
        let sydent = Command::new(&python)
            .args(["-m", "sydent.sydent", "--config-file"])
            .arg(&config_file)
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("sydent.log")).unwrap())
            .spawn()
            .unwrap();
        let sydent = Running(sydent);
        let smtp = Running(smtp);
        wait_for_port(client_port).await;
        wait_for_port(internal_port).await;
        wait_for_port(smtp_port).await;
        let mut sql = String::new();
        for (n, id) in inviters.iter().enumerate() {
            sql.push_str(&format!(
                "INSERT INTO accounts (user_id, created_ts) VALUES ('{id}', 0);\
                 INSERT INTO tokens (token, user_id) VALUES ('{ID_TOKEN}-{n}', '{id}');"
            ));
        }
        run_sql(&python, &db, &sql);
        Some(Self {
            _dir: dir,
            smtp_log,
            client_port,
            internal_port,
            db,
            _smtp: smtp,
            _sydent: sydent,
        })
    }

    fn id_server(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Binds an address to a Matrix user, as a validated binding would.
    async fn bind(&self, address: &str, user_id: &str) {
        let response = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/_matrix/identity/internal/bind",
                self.internal_port
            ))
            .json(&json!({"medium": "email", "address": address, "mxid": user_id}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
    }

    fn stored_invites(&self) -> String {
        let python = python().unwrap();
        let out = Command::new(python)
            .args([
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
                 print([r for r in c.execute('SELECT medium, address, room_id, sender FROM invite_tokens')])",
            ])
            .arg(&self.db)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Sydent is installed by `scripts/test.sh`, which makes these tests
/// mandatory there (`MYELIN_REQUIRE_SYDENT=1`); elsewhere they are skipped
/// without it.
fn skip() -> bool {
    if std::env::var_os("MYELIN_REQUIRE_SYDENT").is_some() {
        panic!("MYELIN_SYDENT_PYTHON does not name Sydent's Python");
    }
    eprintln!("skipped: no Sydent (set MYELIN_SYDENT_PYTHON)");
    true
}

fn user_id(localpart: &str) -> String {
    format!("@{localpart}:{SERVER_NAME}")
}

fn server_config(sydent_server: &str, plugin_config: Value) -> String {
    format!(
        "identity_servers_over_http: [\"{sydent_server}\"]\n\
         ip_range_whitelist: [\"127.0.0.0/8\"]\n\
         modules:\n  - module: \"{}\"\n    config: {plugin_config}\n    limits: {{timeout_ms: 3000}}\n",
        plugin_wasm("test-hooks").display()
    )
}

async fn create_room(server: &TestServer, creator: &User, body: Value) -> String {
    let created = ok(server
        .post(&format!("{C}/createRoom"), Some(&creator.token), body)
        .await);
    created["room_id"].as_str().unwrap().to_owned()
}

async fn invite_threepid(
    server: &TestServer,
    inviter: &User,
    token: &str,
    room: &str,
    id_server: &str,
    address: &str,
) -> (reqwest::StatusCode, Value) {
    server
        .post(
            &format!("{C}/rooms/{}/invite", enc(room)),
            Some(&inviter.token),
            json!({
                "id_server": id_server, "id_access_token": token,
                "medium": "email", "address": address,
            }),
        )
        .await
}

async fn invites_through_sydent(backend: Backend) {
    let Some(sydent) = Sydent::start(&[&user_id("alice")]).await else {
        if skip() {
            return;
        }
        unreachable!()
    };
    let server = TestServer::start(backend, &server_config(&sydent.id_server(), json!({}))).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    let room = create_room(&server, &alice, json!({"name": "Garden"})).await;
    let token = format!("{ID_TOKEN}-0");

    // Bound to bob: bob is invited, as by user ID.
    sydent.bind("bob@example.org", &bob.id).await;
    ok(invite_threepid(
        &server,
        &alice,
        &token,
        &room,
        &sydent.id_server(),
        "Bob@Example.org",
    )
    .await);
    let (_, member) = server
        .get(
            &format!(
                "{C}/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&bob.id)
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(member["membership"], "invite", "{member}");

    // Bound to nobody: Sydent keeps the invite and e-mails carol, and the
    // room gets an m.room.third_party_invite event with Sydent's key.
    ok(invite_threepid(
        &server,
        &alice,
        &token,
        &room,
        &sydent.id_server(),
        "carol@example.org",
    )
    .await);
    let stored = sydent.stored_invites();
    assert!(
        stored.contains("carol@example.org") && stored.contains(&room),
        "{stored}"
    );
    let state = ok(server
        .get(
            &format!("{C}/rooms/{}/state", enc(&room)),
            Some(&alice.token),
        )
        .await);
    let invite = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.third_party_invite")
        .unwrap_or_else(|| panic!("{state}"));
    assert_eq!(invite["sender"], alice.id.as_str());
    assert!(
        invite["content"]["public_key"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "{invite}"
    );
    assert!(
        invite["content"]["key_validity_url"]
            .as_str()
            .is_some_and(|u| u.contains("/_matrix/identity/")),
        "{invite}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mail = std::fs::read_to_string(&sydent.smtp_log).unwrap_or_default();
    assert!(
        mail.contains("carol@example.org"),
        "no e-mail for carol: {mail}"
    );

    // A wrong identity access token: the identity server refuses, and so
    // does the invite; nothing is stored.
    let refused = invite_threepid(
        &server,
        &alice,
        "wrong",
        &room,
        &sydent.id_server(),
        "dave@example.org",
    )
    .await;
    assert_eq!(refused.0.as_u16(), 502, "{refused:?}");
    assert!(!sydent.stored_invites().contains("dave@example.org"));

    // An identity server on a private address the operator did not allow.
    let private = invite_threepid(
        &server,
        &alice,
        &token,
        &room,
        "10.0.0.1:1",
        "erin@example.org",
    )
    .await;
    assert_eq!(private.0.as_u16(), 502, "{private:?}");
}

async fn plugins_refuse(backend: Backend) {
    let Some(sydent) = Sydent::start(&[&user_id("alice"), &user_id("mallory")]).await else {
        if skip() {
            return;
        }
        unreachable!()
    };
    let config = server_config(
        &sydent.id_server(),
        json!({
            "threepid_inviters_refused": [user_id("mallory")],
            "threepid_addresses_refused": ["blocked@example.org"],
        }),
    );
    let server = TestServer::start(backend, &config).await;
    let alice = server.user("alice").await;
    let mallory = server.user("mallory").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    ok(server
        .post(
            &format!("{C}/join/{}", enc(&room)),
            Some(&mallory.token),
            json!({}),
        )
        .await);

    // The spam checker refuses mallory's invites, with its message.
    let refused = invite_threepid(
        &server,
        &mallory,
        &format!("{ID_TOKEN}-1"),
        &room,
        &sydent.id_server(),
        "friend@example.org",
    )
    .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert_eq!(refused.1["error"], "no 3PID invites from you");
    // The rules refuse an address, whoever invites it.
    let refused = invite_threepid(
        &server,
        &alice,
        &format!("{ID_TOKEN}-0"),
        &room,
        &sydent.id_server(),
        "blocked@example.org",
    )
    .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    // Neither reached the identity server.
    let stored = sydent.stored_invites();
    assert!(
        !stored.contains("friend@") && !stored.contains("blocked@"),
        "{stored}"
    );
    // Others go through.
    ok(invite_threepid(
        &server,
        &alice,
        &format!("{ID_TOKEN}-0"),
        &room,
        &sydent.id_server(),
        "friend@example.org",
    )
    .await);
}
