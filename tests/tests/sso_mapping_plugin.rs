//! SSO mapping plugins through the real binary against the real OIDC
//! provider: the example `examples/sso-groups-mapping` (groups allow-list,
//! localparts from e-mail addresses) maps users, retries taken localparts
//! with the failure count, refuses outsiders with its message; a mapping
//! plugin that traps or loops fails the login with a page and the server
//! keeps serving.

mod oidc_common;

use myelin_tests::{
    Backend, SERVER_NAME, TestServer, ok, on_both_backends, plugin_wasm, try_start,
};
use oidc_common::*;
use reqwest::StatusCode;
use serde_json::json;

/// Myelin with the provider's users mapped by `plugin` (a package under
/// test), configured with `config`.
async fn start_mapped(
    backend: Backend,
    plugin: &str,
    config: serde_json::Value,
) -> (TestServer, Idp) {
    let wasm = plugin_wasm(plugin);
    let name = wasm.file_stem().unwrap().to_string_lossy().into_owned();
    start_with(
        backend,
        SECRET_CLIENT,
        &format!("    user_mapping_provider:\n      module: {name}\n"),
        &format!(
            "modules:\n  - module: \"{}\"\n    config: {config}\n    limits: {{timeout_ms: 1000}}\n",
            wasm.display()
        ),
    )
    .await
}

/// The callback's page for a login as `login` (status and HTML).
async fn callback_page(server: &TestServer, login: &str) -> (StatusCode, String) {
    let mut browser = Browser::new();
    let callback = browser.run_to_callback(server, login).await;
    let (status, _, page) = browser.send(&callback, None).await;
    (status, page)
}

async fn the_example_plugin_maps_users(backend: Backend) {
    let (server, _idp) = start_mapped(
        backend,
        "sso-groups-mapping",
        json!({ "allowed_groups": ["staff"] }),
    )
    .await;
    // `carol@example.org` in group `staff`: localpart from the e-mail.
    let carol = ok(token_login(&server, &sso_login(&server, "carol").await).await);
    assert_eq!(carol["user_id"], format!("@carol:{SERVER_NAME}"));
    // The plugin's extra attributes join the login response.
    assert_eq!(
        carol["org.example.groups"],
        json!(["staff", "users"]),
        "{carol}"
    );
    assert!(carol["access_token"].is_string(), "{carol}");
    let profile = ok(server
        .get(&format!("{C}/profile/@carol:{SERVER_NAME}"), None)
        .await);
    assert_eq!(profile["displayname"], "Display carol");
    // The same subject finds the same user again.
    let again = ok(token_login(&server, &sso_login(&server, "carol").await).await);
    assert_eq!(again["user_id"], carol["user_id"]);

    // A taken localpart: the plugin is asked again with `failures` = 1.
    server.user("dave").await;
    let dave = ok(token_login(&server, &sso_login(&server, "dave").await).await);
    assert_eq!(dave["user_id"], format!("@dave1:{SERVER_NAME}"));

    // Not in an allowed group: the plugin's message, and no user.
    let (status, page) = callback_page(&server, "outsider").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("not in a group allowed"), "{page}");
    assert!(!page.contains("loginToken"), "{page}");
    let (status, _) = server
        .get(&format!("{C}/profile/@outsider:{SERVER_NAME}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn a_failing_mapping_plugin_fails_only_the_login(backend: Backend) {
    for mode in ["trap", "loop"] {
        let (server, _idp) = start_mapped(backend, "test-faults", json!({ "mode": mode })).await;
        let (status, page) = callback_page(&server, "erin").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: {page}");
        assert!(page.contains("mapping provider failed"), "{mode}: {page}");
        assert!(!page.contains("loginToken"), "{mode}: {page}");
        // The log is written by the server's process: wait for the line.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !server.logs().contains("an SSO mapping plugin failed") {
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: {}",
                server.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // The server keeps serving.
        server.user("frank").await;
        ok(server.get(&format!("{C}/login"), None).await);
    }
}

on_both_backends! {
    example_plugin_maps_users => the_example_plugin_maps_users,
    failing_mapping_plugin => a_failing_mapping_plugin_fails_only_the_login,
}

#[test]
fn a_mapping_plugin_that_is_not_loaded_stops_the_start() {
    let config = "public_baseurl: \"http://127.0.0.1:1/\"\noidc_providers:\n  - idp_id: test\n    idp_name: Test\n    issuer: \"https://idp.example.org/\"\n    client_id: myelin\n    client_secret: s\n    user_mapping_provider:\n      module: no_such_plugin\n";
    let (exited, stderr) = try_start(config, std::time::Duration::from_secs(30));
    assert!(exited, "the server should refuse to start: {stderr}");
    assert!(
        stderr.contains("user_mapping_provider.module") && stderr.contains("no_such_plugin"),
        "{stderr}"
    );
}
