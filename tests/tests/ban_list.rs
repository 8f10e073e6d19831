//! The first-party ban-list follower (`plugins/ban-list`) through the real
//! binary: a moderator publishes `m.policy.rule.*` bans in a policy room,
//! the plugin (loaded by a reload once that room exists) refuses the banned
//! users' messages, joins and invites with the rule's reason, leaves
//! everyone else alone, and lets a lifted rule go.

use std::time::Duration;

use myelin_tests::{
    Backend, SERVER_NAME, TestServer, User, assert_error, enc, ok, on_both_backends, plugin_wasm,
    try_start, txn,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends! {
    policy_room_bans_are_enforced_and_lifted => policy_room_bans_are_enforced_and_lifted,
}

const C: &str = "/_matrix/client/v3";

fn ban_list_module(config: Value, grants: &str) -> String {
    format!(
        "modules:\n  - module: \"{}\"\n    config: {config}\n{grants}    limits: {{timeout_ms: 2000}}\n",
        plugin_wasm("ban-list").display()
    )
}

async fn create_room(server: &TestServer, user: &User, body: Value) -> String {
    let created = ok(server
        .post(&format!("{C}/createRoom"), Some(&user.token), body)
        .await);
    created["room_id"].as_str().unwrap().to_owned()
}

async fn send(server: &TestServer, user: &User, room: &str, text: &str) -> (StatusCode, Value) {
    server
        .put(
            &format!("{C}/rooms/{}/send/m.room.message/{}", enc(room), txn()),
            user,
            json!({"msgtype": "m.text", "body": text}),
        )
        .await
}

async fn join(server: &TestServer, user: &User, room: &str) -> (StatusCode, Value) {
    server
        .post(
            &format!("{C}/join/{}", enc(room)),
            Some(&user.token),
            json!({}),
        )
        .await
}

async fn invite(server: &TestServer, by: &User, room: &str, whom: &str) -> (StatusCode, Value) {
    server
        .post(
            &format!("{C}/rooms/{}/invite", enc(room)),
            Some(&by.token),
            json!({"user_id": whom}),
        )
        .await
}

/// Sets a rule (`{}` unsets it) in the policy room.
async fn rule(
    server: &TestServer,
    moderator: &User,
    room: &str,
    kind: &str,
    key: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &format!("{C}/rooms/{}/state/m.policy.rule.{kind}/{key}", enc(room)),
            moderator,
            content,
        )
        .await
}

fn ban(entity: &str, reason: &str) -> Value {
    json!({"entity": entity, "recommendation": "m.ban", "reason": reason})
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

async fn policy_room_bans_are_enforced_and_lifted(backend: Backend) {
    // No plugin yet: the policy room must exist before it is configured.
    let mut server = TestServer::start(backend, "modules: []\n").await;
    let extra = server.config_files[1].clone();
    let (_, admin) = server.register_user("root", "root password", true).await;
    let moderator = server.user("moderator").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let spammer = server.user("spammer").await;
    let bot = server.user("bot-7").await;
    let watched = server.user("watched").await;

    let policy = create_room(&server, &moderator, json!({"name": "ban list"})).await;
    ok(rule(
        &server,
        &moderator,
        &policy,
        "user",
        "spammer",
        ban(&format!("@spammer:{SERVER_NAME}"), "spamming links"),
    )
    .await);
    ok(rule(
        &server,
        &moderator,
        &policy,
        "user",
        "bots",
        ban(&format!("@bot-?:{SERVER_NAME}"), "bot network"),
    )
    .await);
    // Only `m.ban` is enforced.
    ok(rule(
        &server,
        &moderator,
        &policy,
        "user",
        "watched",
        json!({"entity": format!("@watched:{SERVER_NAME}"), "recommendation": "org.example.watch", "reason": "keep an eye"}),
    )
    .await);

    let town = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    for user in [&spammer, &watched] {
        ok(join(&server, user, &town).await);
    }

    // Load the plugin, following the policy room.
    std::fs::write(
        &extra,
        ban_list_module(
            json!({"policy_rooms": [policy], "refresh_seconds": 0}),
            "    grants: {queries: true}\n",
        ),
    )
    .unwrap();
    let reloaded = ok(server
        .post("/_myelin/admin/v1/plugins/reload", Some(&admin), json!({}))
        .await);
    assert_eq!(reloaded["plugins"], json!(["ban_list"]));

    // A banned user's message is refused with the rule's reason.
    let refused = send(&server, &spammer, &town, "buy now").await;
    assert_refused(&refused, "spamming links");
    assert_refused(&refused, &policy);
    // A user matched by a glob may not join.
    assert_refused(&join(&server, &bot, &town).await, "bot network");
    // Nobody may invite them, and they may invite nobody.
    assert_refused(
        &invite(&server, &alice, &other, &bot.id).await,
        "bot network",
    );
    assert_refused(
        &invite(&server, &spammer, &town, &bob.id).await,
        "spamming links",
    );
    // Everybody else is unaffected, including a rule that is not a ban.
    ok(join(&server, &bob, &town).await);
    ok(send(&server, &bob, &town, "hello").await);
    ok(send(&server, &alice, &town, "welcome").await);
    ok(send(&server, &watched, &town, "still here").await);
    ok(invite(&server, &alice, &other, &bob.id).await);

    // A server rule bans every user of the server, the moderator included,
    // but a ban can always be lifted: state in the policy room is let through.
    ok(rule(
        &server,
        &moderator,
        &policy,
        "server",
        "home",
        ban("myelin.tes?", "whole server"),
    )
    .await);
    assert_refused(&send(&server, &alice, &town, "hi").await, "whole server");
    assert_refused(
        &send(&server, &moderator, &policy, "hi").await,
        "whole server",
    );
    assert_refused(&join(&server, &bob, &other).await, "whole server");
    ok(rule(&server, &moderator, &policy, "server", "home", json!({})).await);
    ok(send(&server, &alice, &town, "hi again").await);

    // A room rule: nobody may join the room or be invited to it.
    ok(rule(
        &server,
        &moderator,
        &policy,
        "room",
        "other",
        ban(&other, "illegal content"),
    )
    .await);
    assert_refused(&join(&server, &bob, &other).await, "illegal content");
    assert_refused(
        &invite(&server, &alice, &other, &watched.id).await,
        "illegal content",
    );
    ok(rule(&server, &moderator, &policy, "room", "other", json!({})).await);
    ok(join(&server, &bob, &other).await);

    // A lifted rule (content `{}`) no longer applies.
    ok(rule(&server, &moderator, &policy, "user", "spammer", json!({})).await);
    ok(send(&server, &spammer, &town, "sorry").await);
    assert_refused(&join(&server, &bot, &town).await, "bot network");

    // Refusals are logged by the plugin, with the reason.
    let logs = server.logs();
    assert!(
        logs.contains("ban_list") && logs.contains("refused the join of @bot-7"),
        "{logs}"
    );

    // The rules are read from the database on a restart too.
    ok(rule(
        &server,
        &moderator,
        &policy,
        "user",
        "spammer",
        ban(&format!("@spammer:{SERVER_NAME}"), "again"),
    )
    .await);
    server.crash_and_restart().await;
    assert_refused(&send(&server, &spammer, &town, "back").await, "again");
}

/// Without the `queries` grant the plugin cannot read the policy rooms: it
/// refuses its configuration, naming the grant, and the server does not
/// start; the same for a policy room given by alias.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_grant_or_a_room_alias_is_refused_at_start() {
    let room = format!("!policy:{SERVER_NAME}");
    let base = format!("server_name: \"{SERVER_NAME}\"\n");
    let (exited, stderr) = try_start(
        &format!(
            "{base}{}",
            ban_list_module(json!({ "policy_rooms": [room] }), "")
        ),
        Duration::from_secs(30),
    );
    assert!(exited, "started without the queries grant");
    assert!(stderr.contains("`queries` grant"), "{stderr}");

    let (exited, stderr) = try_start(
        &format!(
            "{base}{}",
            ban_list_module(
                json!({ "policy_rooms": [format!("#bans:{SERVER_NAME}")] }),
                "    grants: {queries: true}\n"
            )
        ),
        Duration::from_secs(30),
    );
    assert!(exited, "started with an alias");
    assert!(stderr.contains("is not a room ID"), "{stderr}");

    // A room this server does not know yet is accepted, with a warning.
    let (exited, stderr) = try_start(
        &format!(
            "{base}listeners: [{{port: 0, bind_addresses: [\"127.0.0.1\"], type: http, resources: [{{names: [client]}}]}}]\n{}",
            ban_list_module(
                json!({ "policy_rooms": [room] }),
                "    grants: {queries: true}\n"
            )
        ),
        Duration::from_secs(20),
    );
    assert!(!exited, "refused an unknown policy room:\n{stderr}");
    assert!(stderr.contains("is not known to this server"), "{stderr}");
}
