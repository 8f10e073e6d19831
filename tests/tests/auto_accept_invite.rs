//! The first-party `auto-accept-invite` plugin (a port of Synapse's
//! `synapse-auto-accept-invite`), built from source and loaded by the real
//! binary: invited users are joined for them, direct chats are recorded in
//! their `m.direct` account data, and the options narrow what is accepted.

use std::time::{Duration, Instant};

use myelin_tests::{Backend, TestServer, User, enc, ok, on_both_backends, plugin_wasm};
use serde_json::{Value, json};

async fn server(backend: Backend, config: Value) -> TestServer {
    TestServer::start(
        backend,
        &format!(
            "modules:\n  - module: \"{}\"\n    config: {config}\n    grants: {{actions: true}}\n    limits: {{timeout_ms: 3000}}\n",
            plugin_wasm("auto-accept-invite").display()
        ),
    )
    .await
}

/// `user`'s membership in `room`, from the room's state as `viewer` sees it.
async fn membership(server: &TestServer, viewer: &User, room: &str, user: &User) -> String {
    let (status, member) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(room),
                enc(&user.id)
            ),
            Some(&viewer.token),
        )
        .await;
    if status != 200 {
        return "none".to_owned();
    }
    member["membership"].as_str().unwrap_or("none").to_owned()
}

/// Waits (a bounded time) for `user` to reach `wanted` in `room`.
async fn wait_for_membership(
    server: &TestServer,
    viewer: &User,
    room: &str,
    user: &User,
    wanted: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = membership(server, viewer, room, user).await;
        if now == wanted || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn invite(server: &TestServer, inviter: &User, invitee: &User, is_direct: bool) -> String {
    let created = ok(server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&inviter.token),
            json!({ "preset": "private_chat", "invite": [invitee.id], "is_direct": is_direct }),
        )
        .await);
    created["room_id"].as_str().unwrap().to_owned()
}

async fn invites_are_accepted_and_direct_chats_recorded(backend: Backend) {
    let server = server(backend, json!({})).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    let group = invite(&server, &alice, &bob, false).await;
    assert_eq!(
        wait_for_membership(&server, &alice, &group, &bob, "join").await,
        "join"
    );

    let direct = invite(&server, &alice, &bob, true).await;
    assert_eq!(
        wait_for_membership(&server, &alice, &direct, &bob, "join").await,
        "join"
    );
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/m.direct",
        enc(&bob.id)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let m_direct = loop {
        let (status, body) = server.get(&path, Some(&bob.token)).await;
        if status == 200 || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(m_direct, json!({ alice.id.as_str(): [direct] }));

    // Bob can talk in the room he was joined to.
    ok(server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/1",
                enc(&direct)
            ),
            &bob,
            json!({ "msgtype": "m.text", "body": "hi" }),
        )
        .await);
}

async fn only_direct_messages_when_configured(backend: Backend) {
    let server = server(
        backend,
        json!({ "accept_invites_only_for_direct_messages": true, "accept_invites_only_from_local_users": true }),
    )
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    // A direct chat from a local user is accepted...
    let direct = invite(&server, &alice, &bob, true).await;
    assert_eq!(
        wait_for_membership(&server, &alice, &direct, &bob, "join").await,
        "join"
    );
    // ...a group invite is left for Bob to answer. It was sent before the
    // second direct chat, so once that one is accepted the plugin is done
    // with the first.
    let group = invite(&server, &alice, &bob, false).await;
    let second = invite(&server, &alice, &bob, true).await;
    assert_eq!(
        wait_for_membership(&server, &alice, &second, &bob, "join").await,
        "join"
    );
    assert_eq!(membership(&server, &alice, &group, &bob).await, "invite");
}

on_both_backends! {
    accepted => invites_are_accepted_and_direct_chats_recorded,
    only_direct => only_direct_messages_when_configured,
}
