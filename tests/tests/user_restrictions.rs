//! The example `examples/user-restrictions` (a port of Synapse's
//! `synapse-user-restrictions`), built from source and loaded by the real
//! binary: regex rules on the user ID, first decisive rule wins, allow or
//! deny `invite` (asked of the inviter) and `create_room`; `default_deny`
//! when no rule decides; server admins never asked, as in Synapse; a
//! configuration that does not parse stops the server with the plugin's
//! message.

use std::time::Duration;

use myelin_tests::{
    Backend, PASSWORD, SERVER_NAME, TestServer, User, assert_error, enc, ok, on_both_backends,
    plugin_wasm, try_start,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends! {
    deny_rules_refuse_and_others_pass => deny_rules_refuse_and_others_pass,
    default_deny_applies_when_no_rule_decides => default_deny_applies_when_no_rule_decides,
}

const C: &str = "/_matrix/client/v3";

fn module(config: Value) -> String {
    format!(
        "modules:\n  - module: \"{}\"\n    config: {config}\n    limits: {{timeout_ms: 2000}}\n",
        plugin_wasm("user-restrictions").display()
    )
}

async fn create_room(server: &TestServer, user: &User, body: Value) -> (StatusCode, Value) {
    server
        .post(&format!("{C}/createRoom"), Some(&user.token), body)
        .await
}

/// A public room (anyone joined may invite) made by `user`.
async fn public_room(server: &TestServer, user: &User) -> String {
    let created = ok(create_room(server, user, json!({"preset": "public_chat"})).await);
    created["room_id"].as_str().unwrap().to_owned()
}

async fn join(server: &TestServer, user: &User, room: &str) {
    ok(server
        .post(
            &format!("{C}/join/{}", enc(room)),
            Some(&user.token),
            json!({}),
        )
        .await);
}

async fn invite(server: &TestServer, by: &User, room: &str, whom: &User) -> (StatusCode, Value) {
    server
        .post(
            &format!("{C}/rooms/{}/invite", enc(room)),
            Some(&by.token),
            json!({"user_id": whom.id}),
        )
        .await
}

#[track_caller]
fn assert_refused(response: &(StatusCode, Value), mentions: &str) {
    assert_error(response, 403, "M_FORBIDDEN");
    let message = response.1["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "{mentions:?} not in {message:?}"
    );
}

async fn deny_rules_refuse_and_others_pass(backend: Backend) {
    let server = TestServer::start(
        backend,
        &module(json!({
            "rules": [
                // Earlier rules win: this one lets the VIP through
                // before the next one could deny them.
                {"match": "@restricted-vip:myelin\\.test", "allow": ["invite", "create_room"]},
                {"match": "@restricted.*:myelin\\.test", "deny": ["invite", "create_room"]},
                {"match": "@noinvite.*", "deny": ["invite"]},
                // Must match the whole user ID: this matches nobody.
                {"match": "alice", "deny": ["invite", "create_room"]},
            ]
        })),
    )
    .await;
    let alice = server.user("alice").await;
    let restricted = server.user("restricted-mallory").await;
    let vip = server.user("restricted-vip").await;
    let noinvite = server.user("noinvite-nick").await;
    let (id, token) = server
        .register_user("restricted-root", PASSWORD, true)
        .await;
    let admin = User { id, token };
    let bob = server.user("bob").await;

    // Matched by a deny rule: no rooms, no invites...
    assert_refused(
        &create_room(&server, &restricted, json!({})).await,
        "not permitted to create rooms",
    );
    // ...unless a server admin, whom the spam checkers are never asked
    // about (as in Synapse).
    let admin_room = public_room(&server, &admin).await;
    ok(invite(&server, &admin, &admin_room, &bob).await);
    // Invited by someone allowed, a restricted user is still invited: the
    // inviter is the one asked.
    let room = public_room(&server, &alice).await;
    ok(invite(&server, &alice, &room, &restricted).await);
    join(&server, &restricted, &room).await;
    assert_refused(
        &invite(&server, &restricted, &room, &bob).await,
        "not permitted to invite",
    );

    // A rule that denies only invites leaves room creation alone, and
    // `createRoom`'s own invites are invites.
    let own = public_room(&server, &noinvite).await;
    assert_refused(
        &invite(&server, &noinvite, &own, &bob).await,
        "not permitted to invite",
    );
    assert_refused(
        &create_room(&server, &noinvite, json!({"invite": [bob.id]})).await,
        "not permitted to invite",
    );

    // Matched earlier by an allow rule, or by no rule: allowed.
    let vip_room = public_room(&server, &vip).await;
    ok(invite(&server, &vip, &vip_room, &bob).await);
    ok(invite(&server, &alice, &room, &bob).await);
    ok(create_room(&server, &alice, json!({"invite": [restricted.id]})).await);
}

async fn default_deny_applies_when_no_rule_decides(backend: Backend) {
    // The README's example.
    let server = TestServer::start(
        backend,
        &module(
            json!({
                "rules": [
                    {"match": format!("@admin.*:{}", SERVER_NAME.replace('.', "\\.")), "allow": ["invite", "create_room"]},
                    {"match": "@assistant.*:myelin\\.test", "allow": ["invite"]},
                ],
                "default_deny": ["invite", "create_room"],
            }),
        ),
    )
    .await;
    let alice = server.user("adminalice").await;
    let bob = server.user("assistantbob").await;
    let joe = server.user("plainoldjoe").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    let (id, token) = server.register_user("root", PASSWORD, true).await;
    let root = User { id, token };

    let room = public_room(&server, &alice).await;
    ok(invite(&server, &alice, &room, &carol).await);

    // The assistant may invite, but not create rooms.
    join(&server, &bob, &room).await;
    ok(invite(&server, &bob, &room, &joe).await);
    assert_refused(
        &create_room(&server, &bob, json!({})).await,
        "not permitted to create rooms",
    );

    // Anyone else may do neither...
    join(&server, &joe, &room).await;
    assert_refused(
        &invite(&server, &joe, &room, &dave).await,
        "not permitted to invite",
    );
    assert_refused(
        &create_room(&server, &joe, json!({})).await,
        "not permitted to create rooms",
    );

    // ...except a server admin.
    let admin_room = public_room(&server, &root).await;
    ok(invite(&server, &root, &admin_room, &joe).await);
}

/// A configuration that does not parse is refused by the plugin's `init`,
/// and the server does not start; the message names the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_stops_the_server() {
    let base = format!("server_name: \"{SERVER_NAME}\"\n");
    let refused = |config: Value| {
        let (exited, stderr) = try_start(
            &format!("{base}{}", module(config)),
            Duration::from_secs(30),
        );
        assert!(exited, "started anyway:\n{stderr}");
        stderr
    };

    let stderr = refused(json!({"rules": [{"match": "@bad(:myelin\\.test", "deny": ["invite"]}]}));
    assert!(
        stderr.contains("rules[0].match") && stderr.contains("is not a valid regular expression"),
        "{stderr}"
    );

    let stderr = refused(json!({"rules": [{"match": ".*", "deny": ["kick"]}]}));
    assert!(
        stderr.contains("rules[0].deny") && stderr.contains("\"kick\" is not a permission"),
        "{stderr}"
    );

    let stderr = refused(json!({"rules": [], "default_deny": ["create_rooms"]}));
    assert!(
        stderr.contains("default_deny") && stderr.contains("\"create_rooms\""),
        "{stderr}"
    );

    let stderr = refused(json!({"default_deny": ["invite"]}));
    assert!(stderr.contains("rules"), "{stderr}");
}
