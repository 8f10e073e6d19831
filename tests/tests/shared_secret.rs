//! Shared-secret registration (Synapse's admin API), its explicit debug
//! logger, and the `register-user` command.

use std::process::Command;

use myelin_tests::{
    Backend, SHARED_SECRET, TestServer, assert_error, myelin_binary, on_both_backends,
    registration_mac,
};
use serde_json::json;

on_both_backends! {
    nonce_mac_and_username_rules => nonce_mac_and_username_rules,
    debug_logger_is_silent_unless_named => debug_logger_is_silent_unless_named,
    debug_logger_names_both_macs_when_enabled => debug_logger_names_both_macs_when_enabled,
    register_user_command_creates_an_admin => register_user_command_creates_an_admin,
}

const REGISTER: &str = "/_synapse/admin/v1/register";

async fn nonce_mac_and_username_rules(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (user_id, token) = server.register_user("root", "pw", true).await;
    assert_eq!(user_id, "@root:myelin.test");
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&token))
            .await
            .0,
        200
    );

    let nonce = server.nonce().await;
    let body = json!({"nonce": nonce, "username": "ivan", "password": "pw", "admin": false,
        "mac": registration_mac(SHARED_SECRET, &nonce, "ivan", "pw", false)});
    assert_eq!(server.post(REGISTER, None, body.clone()).await.0, 200);
    let reused = server.post(REGISTER, None, body).await;
    assert_error(&reused, 400, "M_UNKNOWN");
    assert_eq!(reused.1["error"], "unrecognised nonce");
    let made_up = json!({"nonce": "abc", "username": "x", "password": "pw", "mac": "00"});
    assert_eq!(
        server.post(REGISTER, None, made_up).await.1["error"],
        "unrecognised nonce"
    );

    let wrong = server
        .shared_secret_register("judy", "pw", false, "not the secret")
        .await;
    assert_error(&wrong, 403, "M_FORBIDDEN");
    assert_eq!(wrong.1["error"], "HMAC incorrect");
    // Admin flag is part of the MAC: flipping it after signing fails.
    let nonce = server.nonce().await;
    let flipped = json!({"nonce": nonce, "username": "judy", "password": "pw", "admin": true,
        "mac": registration_mac(SHARED_SECRET, &nonce, "judy", "pw", false)});
    assert_error(
        &server.post(REGISTER, None, flipped).await,
        403,
        "M_FORBIDDEN",
    );

    let taken = server
        .shared_secret_register("ivan", "pw", false, SHARED_SECRET)
        .await;
    assert_error(&taken, 400, "M_USER_IN_USE");

    // Without a secret the API is refused as Synapse refuses it.
    let no_secret = TestServer::start(backend, "registration_shared_secret: null\n").await;
    let refused = no_secret.get(REGISTER, None).await;
    assert_error(&refused, 400, "M_UNKNOWN");
    assert_eq!(
        refused.1["error"],
        "Shared secret registration is not enabled"
    );
}

/// Fails a registration with a wrong secret and returns the MAC the server expected.
async fn fail_with_wrong_secret(server: &TestServer) -> String {
    let nonce = server.nonce().await;
    let body = json!({"nonce": nonce, "username": "kim", "password": "sup3r-s3cret-pw", "admin": false,
        "mac": registration_mac("wrong secret", &nonce, "kim", "sup3r-s3cret-pw", false)});
    assert_error(&server.post(REGISTER, None, body).await, 403, "M_FORBIDDEN");
    registration_mac(SHARED_SECRET, &nonce, "kim", "sup3r-s3cret-pw", false)
}

async fn debug_logger_is_silent_unless_named(backend: Backend) {
    let dir = myelin_tests::ScratchDir::new();
    let log_config = dir.0.join("log.yaml");
    std::fs::write(&log_config, "version: 1\nroot:\n  level: DEBUG\n").unwrap();
    let server = TestServer::start(
        backend,
        &format!("log_config: \"{}\"\n", log_config.display()),
    )
    .await;
    let expected = fail_with_wrong_secret(&server).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = server.logs();
    assert!(logs.contains("DEBUG"), "root DEBUG is in force:\n{logs}");
    assert!(!logs.contains(&expected), "expected MAC leaked:\n{logs}");
    assert!(
        !logs.contains("sup3r-s3cret-pw"),
        "password leaked:\n{logs}"
    );
    assert!(!logs.contains(SHARED_SECRET));
    assert!(!logs.contains("registration_debug"));
}

async fn debug_logger_names_both_macs_when_enabled(backend: Backend) {
    let dir = myelin_tests::ScratchDir::new();
    let log_config = dir.0.join("log.yaml");
    std::fs::write(
        &log_config,
        "version: 1\nloggers:\n  myelin.admin.registration_debug:\n    level: DEBUG\nroot:\n  level: INFO\n",
    )
    .unwrap();
    let server = TestServer::start(
        backend,
        &format!("log_config: \"{}\"\n", log_config.display()),
    )
    .await;
    let expected = fail_with_wrong_secret(&server).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("HMAC incorrect"))
        .unwrap_or_else(|| panic!("no debug line:\n{logs}"));
    assert!(line.contains(&format!("expected_mac={expected}")), "{line}");
    assert!(line.contains("received_mac="), "{line}");
    assert!(line.contains("username=kim"), "{line}");
}

async fn register_user_command_creates_an_admin(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let mut command = Command::new(myelin_binary());
    command.arg("register-user");
    for file in &server.config_files {
        command.arg("-c").arg(file);
    }
    let output = command
        .args([
            "-u",
            "olga",
            "-p",
            "correct horse",
            "--admin",
            &server.base_url,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("@olga:myelin.test"));
    assert_eq!(server.login("olga", "correct horse").await.0, 200);

    // The server's error is printed and the exit code says it failed.
    let again = Command::new(myelin_binary())
        .args([
            "register-user",
            "-k",
            SHARED_SECRET,
            "-u",
            "olga",
            "-p",
            "x",
            "--no-admin",
            &server.base_url,
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("M_USER_IN_USE"));
}
