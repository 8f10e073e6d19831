//! Third-party event rules and plugin actions through the real binary, with
//! `tests/plugins/test-rules` built from source: events refused or rewritten
//! before they are stored, room creation refused or rewritten, the room
//! directory guarded, `on_new_event` acting for users through the same
//! checks as their own requests, and `on_new_event` faults that never reach
//! the sender.

use std::time::{Duration, Instant};

use myelin_tests::{
    Backend, SERVER_NAME, TestServer, User, assert_error, enc, ok, on_both_backends, plugin_wasm,
    txn,
};
use reqwest::Method;
use serde_json::{Value, json};

/// The rules plugin, with or without the `actions` grant.
async fn server(backend: Backend, actions: bool) -> TestServer {
    server_with(backend, actions, "").await
}

async fn server_with(backend: Backend, actions: bool, extra: &str) -> TestServer {
    let grants = if actions {
        "    grants: {actions: true}\n"
    } else {
        ""
    };
    TestServer::start(
        backend,
        &format!(
            "modules:\n  - module: \"{}\"\n{grants}    limits: {{timeout_ms: 3000}}\n{extra}",
            plugin_wasm("test-rules").display()
        ),
    )
    .await
}

async fn send(
    server: &TestServer,
    user: &User,
    room: &str,
    body: &str,
) -> (reqwest::StatusCode, Value) {
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(room),
                txn()
            ),
            user,
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await
}

/// The room's message bodies, oldest first.
async fn bodies(server: &TestServer, user: &User, room: &str) -> Vec<String> {
    let page = ok(server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
                enc(room)
            ),
            Some(&user.token),
        )
        .await);
    let mut bodies: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    bodies.reverse();
    bodies
}

/// Waits (a bounded time) until the room's bodies contain `wanted`.
async fn wait_for_body(server: &TestServer, user: &User, room: &str, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bodies = bodies(server, user, room).await;
        if bodies.iter().any(|b| b == wanted) || Instant::now() > deadline {
            return bodies;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_room(server: &TestServer, user: &User, body: Value) -> String {
    let created = ok(server
        .post("/_matrix/client/v3/createRoom", Some(&user.token), body)
        .await);
    created["room_id"].as_str().unwrap().to_owned()
}

async fn events_are_checked_and_rewritten_before_they_are_stored(backend: Backend) {
    let server = server(backend, false).await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;

    assert_error(
        &send(&server, &alice, &room, "deny me").await,
        403,
        "M_RULES_DENIED",
    );
    // The replacement is signed and stored in place of the original.
    let rewritten = ok(send(&server, &alice, &room, "[shout] quiet please").await);
    let event_id = rewritten["event_id"].as_str().unwrap();
    let event = ok(server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&room),
                enc(event_id)
            ),
            Some(&alice.token),
        )
        .await);
    assert_eq!(event["content"]["body"], "QUIET PLEASE", "{event}");
    assert_eq!(event["content"]["msgtype"], "m.text", "{event}");
    // A replacement that changes the event's type is a plugin fault: with
    // the default `on_error: deny` the event is refused.
    assert_error(
        &send(&server, &alice, &room, "change type").await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(bodies(&server, &alice, &room).await, ["QUIET PLEASE"]);
    assert!(
        server.logs().contains("fault=\"malformed-result\""),
        "{}",
        server.logs()
    );

    // on_create_room: refused by name, otherwise rewritten (a topic added).
    let refused = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "name": "forbidden" }),
        )
        .await;
    assert_error(&refused, 403, "M_RULES_NO_ROOM");
    let named = create_room(&server, &alice, json!({ "name": "fine" })).await;
    let topic = ok(server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                enc(&named)
            ),
            Some(&alice.token),
        )
        .await);
    assert_eq!(topic["topic"], "set by rules", "{topic}");

    // check_visibility_can_be_modified guards the room directory.
    let published = server
        .put(
            &format!("/_matrix/client/v3/directory/list/room/{}", enc(&named)),
            &alice,
            json!({ "visibility": "public" }),
        )
        .await;
    assert_error(&published, 403, "M_FORBIDDEN");
}

async fn on_new_event_acts_through_the_users_own_checks(backend: Backend) {
    let server = server(backend, true).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({})).await;

    // The plugin answers as Alice, after her event is stored.
    ok(send(&server, &alice, &room, "echo").await);
    let seen = wait_for_body(&server, &alice, &room, "echo: echo").await;
    assert_eq!(seen, ["echo", "echo: echo"]);

    // Joining Bob to Alice's invite-only room is refused with the error
    // Bob's own request would get; with an invite it works.
    let private = room_with_name(&server, &alice, "private").await;
    ok(send(
        &server,
        &alice,
        &room,
        &format!("join for {} {private}", bob.id),
    )
    .await);
    let seen = wait_for_body(&server, &alice, &room, "join result: M_FORBIDDEN").await;
    assert!(
        seen.contains(&"join result: M_FORBIDDEN".to_owned()),
        "{seen:?}"
    );
    let own = server
        .request(
            Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&private)),
            Some(&bob.token),
            Some(json!({})),
        )
        .await;
    assert_error(&own, 403, "M_FORBIDDEN");
    ok(server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&private)),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await);
    ok(send(
        &server,
        &alice,
        &room,
        &format!("join for {} {private}", bob.id),
    )
    .await);
    let seen = wait_for_body(&server, &alice, &room, "join result: ok").await;
    assert!(seen.contains(&"join result: ok".to_owned()), "{seen:?}");
    let members = ok(server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&private)),
            Some(&bob.token),
        )
        .await);
    assert!(members["joined"].get(&bob.id).is_some(), "{members}");

    // A user of another server cannot be acted for.
    let remote = format!("@carol:elsewhere.{SERVER_NAME}");
    ok(send(
        &server,
        &alice,
        &room,
        &format!("join for {remote} {private}"),
    )
    .await);
    let seen = wait_for_body(&server, &alice, &room, "join result: M_INVALID_PARAM").await;
    assert!(
        seen.contains(&"join result: M_INVALID_PARAM".to_owned()),
        "{seen:?}"
    );
}

async fn room_with_name(server: &TestServer, user: &User, name: &str) -> String {
    create_room(
        server,
        user,
        json!({ "name": name, "preset": "private_chat" }),
    )
    .await
}

async fn actions_are_refused_without_the_grant(backend: Backend) {
    let server = server(backend, false).await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let private = room_with_name(&server, &alice, "private").await;
    ok(send(
        &server,
        &alice,
        &room,
        &format!("join for {} {private}", alice.id),
    )
    .await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.logs().contains("join result: not-granted") {
        assert!(Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Sending the report in the room is an action too: refused as well.
    assert_eq!(
        bodies(&server, &alice, &room).await,
        [format!("join for {} {private}", alice.id)]
    );
}

async fn on_new_event_faults_never_reach_the_sender(backend: Backend) {
    let server = server(backend, false).await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    for body in ["trap after", "loop after"] {
        // The plugin's deadline is 3 s: a sender who waited for it would
        // notice. The event is stored whatever the plugin does afterwards.
        let started = Instant::now();
        ok(send(&server, &alice, &room, body).await);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the sender waited for on_new_event ({:?})",
            started.elapsed()
        );
    }
    ok(send(&server, &alice, &room, "after the faults").await);
    assert_eq!(
        bodies(&server, &alice, &room).await,
        ["trap after", "loop after", "after the faults"]
    );
    // Both faults are counted.
    let (_, admin) = server
        .register_user("root", myelin_tests::PASSWORD, true)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listing = ok(server.get("/_myelin/admin/v1/plugins", Some(&admin)).await);
        let outcomes = &listing["plugins"][0]["counters"]["on_new_event"]["outcomes"];
        if outcomes["trap"] == 1 && outcomes["timeout"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "faults not counted: {listing}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The notices user's invite in the user's sync, once it arrives.
async fn notices_invite(server: &TestServer, user: &User) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sync = ok(server
            .get("/_matrix/client/v3/sync", Some(&user.token))
            .await);
        if let Some(invites) = sync["rooms"]["invite"].as_object()
            && let Some((room, _)) = invites.iter().next()
        {
            return room.clone();
        }
        assert!(Instant::now() < deadline, "no invite: {sync}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn plugins_send_server_notices(backend: Backend) {
    let server = server_with(
        backend,
        true,
        "server_notices:\n  system_mxid_localpart: notices\n  system_mxid_display_name: Notices\n",
    )
    .await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    ok(send(&server, &alice, &room, "notice me").await);
    let notices = notices_invite(&server, &alice).await;
    ok(server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&notices)),
            Some(&alice.token),
            json!({}),
        )
        .await);
    let name = ok(server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                enc(&notices)
            ),
            Some(&alice.token),
        )
        .await);
    assert_eq!(name["name"], "Server Notices");
    let tags = ok(server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/tags",
                enc(&alice.id),
                enc(&notices)
            ),
            Some(&alice.token),
        )
        .await);
    assert!(tags["tags"].get("m.server_notice").is_some(), "{tags}");
    // The second notice goes to the same room; Alice cannot post there.
    ok(send(&server, &alice, &room, "notice me").await);
    let seen = wait_for_sender_bodies(&server, &alice, &notices, 2).await;
    assert_eq!(seen, ["you asked", "you asked"]);
    assert_error(
        &send(&server, &alice, &notices, "can I?").await,
        403,
        "M_FORBIDDEN",
    );

    // Without `server_notices` configured the action is refused.
    let plain = server_with(backend, true, "").await;
    let bob = plain.user("bob").await;
    let room = create_room(&plain, &bob, json!({})).await;
    ok(send(&plain, &bob, &room, "notice me").await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !plain.logs().contains("notice result: M_FORBIDDEN") {
        assert!(Instant::now() < deadline, "{}", plain.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the room holds `count` message bodies, and returns them.
async fn wait_for_sender_bodies(
    server: &TestServer,
    user: &User,
    room: &str,
    count: usize,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = bodies(server, user, room).await;
        if seen.len() >= count || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both_backends! {
    server_notices => plugins_send_server_notices,
    events_checked => events_are_checked_and_rewritten_before_they_are_stored,
    actions_through_user_checks => on_new_event_acts_through_the_users_own_checks,
    actions_need_the_grant => actions_are_refused_without_the_grant,
    on_new_event_faults => on_new_event_faults_never_reach_the_sender,
}
