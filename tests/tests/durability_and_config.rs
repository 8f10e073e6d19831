//! What an operator relies on: acknowledged writes survive SIGKILL, the
//! zero-config start works, and bad configuration is refused with a fix.

use std::process::Command;

use myelin_tests::{
    Backend, ScratchDir, TestServer, enc, myelin_binary, on_both_backends, try_start,
};
use serde_json::json;

on_both_backends! {
    users_survive_sigkill => users_survive_sigkill,
}

async fn users_survive_sigkill(backend: Backend) {
    let mut server = TestServer::start(backend, "").await;
    for i in 0..5 {
        server
            .register_user(&format!("user{i}"), "correct horse", false)
            .await;
    }
    let (_, login) = server.login("user0", "correct horse").await;
    server.crash_and_restart().await;
    for i in 0..5 {
        assert_eq!(
            server.login(&format!("user{i}"), "correct horse").await.0,
            200,
            "user{i} survived"
        );
    }
    let (status, _) = server
        .get(
            "/_matrix/client/v3/account/whoami",
            login["access_token"].as_str(),
        )
        .await;
    assert_eq!(status, 200, "tokens survive too");
}

/// SQLite's write-ahead log is copied into the database file while the
/// server runs (every half second, off the commits' path), so the log does
/// not grow without end and the database file holds the data.
#[tokio::test]
async fn sqlite_log_is_copied_into_the_database_while_serving() {
    let server = TestServer::start(Backend::Sqlite, "").await;
    let database = server.dir.0.join("data/homeserver.db");
    let alice = server.user("alice").await;
    // The start-up's writes (the schema, alice) are copied within a second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let before = std::fs::metadata(&database).unwrap().len();
    let (status, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({"name": "Checkpointed"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = enc(created["room_id"].as_str().unwrap());
    let text = "x".repeat(2000);
    for i in 0..100 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}");
        let (status, sent) = server
            .put(&path, &alice, json!({"msgtype": "m.text", "body": text}))
            .await;
        assert_eq!(status, 200, "{sent}");
    }
    // 100 messages of 2 kB: at least 200 kB more in the database file once
    // a checkpoint ran, while the server keeps running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let after = std::fs::metadata(&database).unwrap().len();
        if after >= before + 200_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {after} bytes (from {before}): the log was not checkpointed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn start_with(config: &str) -> (bool, String) {
    try_start(config, std::time::Duration::from_secs(2))
}

#[test]
fn invalid_values_refuse_start_naming_key_and_fix() {
    let cases = [
        (
            "listeners: [{port: 70000}]",
            "listeners[0].port",
            "between 1 and 65535",
        ),
        (
            "listeners: [{port: eighty}]",
            "listeners[0].port",
            "between 1 and 65535",
        ),
        (
            "enable_registration: maybe",
            "enable_registration",
            "`true` or `false`",
        ),
        ("database: {name: mysql}", "database.name", "sqlite3"),
        (
            "log_config: /nonexistent/log.yaml",
            "log_config",
            "user can read",
        ),
        ("server_name: 'not a name!'", "server_name", "example.org"),
        (
            "enable_registration: true",
            "enable_registration",
            "enable_registration_without_verification",
        ),
    ];
    for (config, key, fix) in cases {
        let config = if config.starts_with("listeners") {
            config.to_owned()
        } else {
            format!("{config}\nlisteners: [{{port: 0}}]\n")
        };
        let (exited, stderr) = start_with(&config);
        assert!(exited, "{config}: should refuse to start");
        assert!(
            stderr.contains(&format!("`{key}`")),
            "{config}: names the key: {stderr}"
        );
        assert!(stderr.contains(fix), "{config}: says the fix: {stderr}");
    }
}

#[test]
fn unknown_keys_are_warned_about_by_name() {
    let (exited, stderr) =
        start_with("listeners: [{port: 0}]\nreport_stats: true\nmacaroon_secret_key: x\n");
    assert!(!exited, "unknown keys do not stop the server: {stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("unknown configuration keys"))
        .expect(&stderr);
    assert!(
        warning.contains("report_stats") && warning.contains("macaroon_secret_key"),
        "{warning}"
    );
}

#[test]
fn generate_config_writes_a_commented_file_once() {
    let dir = ScratchDir::new();
    let output = Command::new(myelin_binary())
        .current_dir(&dir.0)
        .args([
            "generate-config",
            "--server-name",
            "example.org",
            "--data-dir",
            "data",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = std::fs::read_to_string(dir.0.join("homeserver.yaml")).unwrap();
    assert!(text.contains("server_name: \"example.org\""));
    // Refuses to overwrite.
    let again = Command::new(myelin_binary())
        .current_dir(&dir.0)
        .args(["generate-config", "--server-name", "example.org"])
        .output()
        .unwrap();
    assert!(!again.status.success());
}
