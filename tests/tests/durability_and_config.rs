//! What an operator relies on: acknowledged writes survive SIGKILL, the
//! zero-config start works, and bad configuration is refused with a fix.

use std::process::Command;

use myelin_tests::{Backend, ScratchDir, TestServer, myelin_binary, on_both_backends, try_start};

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
