//! Synapse's admin APIs for rooms and users (`DELETE
//! /_synapse/admin/v1/rooms/{roomId}`, its version 2 with `delete_status`,
//! `POST
//! /_synapse/admin/v1/deactivate/{userId}`, `GET|PUT
//! /_synapse/admin/v2/users/{userId}`) and the user's third-party
//! identifiers (`/account/3pid`), through the real binary, with
//! `tests/plugins/test-hooks` answering and observing the third-party rules
//! callbacks they call: it appends each call to an observer's account data.

use myelin_tests::{
    Backend, PASSWORD, SERVER_NAME, TestServer, User, assert_error, enc, ok, on_both_backends,
    plugin_wasm, txn,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const C: &str = "/_matrix/client/v3";
const ADMIN: &str = "/_synapse/admin";

fn mxid(localpart: &str) -> String {
    format!("@{localpart}:{SERVER_NAME}")
}

/// A server with test-hooks observed by `@observer`, and extra plugin
/// configuration.
async fn server_with(backend: Backend, mut config: Value) -> TestServer {
    config["rules_observer"] = mxid("observer").into();
    let modules = format!(
        "modules:\n  - module: \"{}\"\n    config: {config}\n    grants: {{actions: true}}\n    limits: {{timeout_ms: 2000}}\n",
        plugin_wasm("test-hooks").display()
    );
    TestServer::start(backend, &modules).await
}

async fn admin(server: &TestServer, localpart: &str) -> User {
    let (id, token) = server.register_user(localpart, PASSWORD, true).await;
    User { id, token }
}

/// The third-party rules calls the plugin saw, in order.
async fn calls(server: &TestServer, observer: &User) -> Vec<Value> {
    let (status, body) = server
        .get(
            &format!(
                "{C}/user/{}/account_data/com.example.rules_log",
                enc(&observer.id)
            ),
            Some(&observer.token),
        )
        .await;
    match status {
        StatusCode::OK => body["calls"].as_array().cloned().unwrap_or_default(),
        StatusCode::NOT_FOUND => Vec::new(),
        other => panic!("rules log: {other} {body}"),
    }
}

/// The calls of one callback, without their `callback` field.
async fn calls_of(server: &TestServer, observer: &User, callback: &str) -> Vec<Value> {
    calls(server, observer)
        .await
        .into_iter()
        .filter(|call| call["callback"] == callback)
        .map(|mut call| {
            call.as_object_mut().unwrap().remove("callback");
            call
        })
        .collect()
}

fn room_path(room: &str, rest: &str) -> String {
    format!("{C}/rooms/{}/{rest}", enc(room))
}

async fn create_room(server: &TestServer, creator: &User, body: Value) -> String {
    let created = ok(server
        .post(&format!("{C}/createRoom"), Some(&creator.token), body)
        .await);
    created["room_id"].as_str().unwrap().to_owned()
}

async fn try_join(server: &TestServer, user: &User, room: &str) -> (StatusCode, Value) {
    server
        .post(&room_path(room, "join"), Some(&user.token), json!({}))
        .await
}

async fn send_text(
    server: &TestServer,
    user: &User,
    room: &str,
    text: &str,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(room, &format!("send/m.room.message/{}", txn())),
            user,
            json!({ "msgtype": "m.text", "body": text }),
        )
        .await
}

async fn joined_rooms(server: &TestServer, user: &User) -> Vec<String> {
    let body = ok(server
        .get(&format!("{C}/joined_rooms"), Some(&user.token))
        .await);
    body["joined_rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

async fn delete_room(
    server: &TestServer,
    user: &User,
    room: &str,
    body: Value,
) -> (StatusCode, Value) {
    delete_room_with(server, "v1", user, room, body).await
}

/// The Delete Room API of `version` (`v1` answers when done, `v2` at once).
async fn delete_room_with(
    server: &TestServer,
    version: &str,
    user: &User,
    room: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .request(
            Method::DELETE,
            &format!("{ADMIN}/{version}/rooms/{}", enc(room)),
            Some(&user.token),
            Some(body),
        )
        .await
}

async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    user: &User,
    body: &'static str,
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn alias_room(server: &TestServer, alias: &str) -> (StatusCode, Value) {
    server
        .get(&format!("{C}/directory/room/{}", enc(alias)), None)
        .await
}

async fn public_room_ids(server: &TestServer, user: &User) -> Vec<String> {
    let body = ok(server
        .get(&format!("{C}/publicRooms"), Some(&user.token))
        .await);
    body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A public room made by alice with an alias, bob joined and carol invited.
async fn populated_room(server: &TestServer, alice: &User, bob: &User, carol: &User) -> String {
    let room = create_room(
        server,
        alice,
        json!({ "preset": "public_chat", "visibility": "public", "room_alias_name": "doomed" }),
    )
    .await;
    ok(try_join(server, bob, &room).await);
    ok(server
        .post(
            &room_path(&room, "invite"),
            Some(&alice.token),
            json!({ "user_id": carol.id }),
        )
        .await);
    ok(send_text(server, bob, &room, "before").await);
    room
}

// ---------------------------------------------------------------------------
// Delete Room API
// ---------------------------------------------------------------------------

async fn deleting_a_room_removes_its_users_aliases_and_events(backend: Backend) {
    let server = server_with(backend, json!({})).await;
    let observer = server.user("observer").await;
    let root = admin(&server, "root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = populated_room(&server, &alice, &bob, &carol).await;
    let alias = format!("#doomed:{SERVER_NAME}");
    assert!(public_room_ids(&server, &bob).await.contains(&room));

    // Only server admins; bodies are checked as Synapse checks them.
    assert_error(
        &delete_room(&server, &alice, &room, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    let path = format!("{ADMIN}/v1/rooms/{}", enc(&room));
    assert_error(
        &raw(&server, Method::DELETE, &path, &root, "{not json").await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &raw(&server, Method::DELETE, &path, &root, "").await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &raw(&server, Method::DELETE, &path, &root, "[]").await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &delete_room(&server, &root, &room, json!({ "block": "yes" })).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &delete_room(&server, &root, "not-a-room", json!({})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert!(
        calls_of(&server, &observer, "check_can_shutdown_room")
            .await
            .is_empty()
    );
    ok(send_text(&server, &bob, &room, "still here").await);

    let deleted = ok(delete_room(&server, &root, &room, json!({ "block": true })).await);
    let mut kicked: Vec<String> = deleted["kicked_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    kicked.sort();
    assert_eq!(
        kicked,
        vec![alice.id.clone(), bob.id.clone(), carol.id.clone()]
    );
    assert_eq!(deleted["failed_to_kick_users"], json!([]));
    assert_eq!(deleted["local_aliases"], json!([]));
    assert_eq!(deleted["new_room_id"], Value::Null);
    assert_eq!(
        calls_of(&server, &observer, "check_can_shutdown_room").await,
        vec![json!({ "user_id": root.id, "room_id": room })]
    );

    // The members are out and cannot speak; the alias and the directory
    // entry are gone; the room is blocked.
    for user in [&alice, &bob] {
        assert!(!joined_rooms(&server, user).await.contains(&room));
        let refused = send_text(&server, user, &room, "after").await;
        assert!(
            refused.0 == StatusCode::FORBIDDEN || refused.0 == StatusCode::NOT_FOUND,
            "{refused:?}"
        );
    }
    assert_error(&alias_room(&server, &alias).await, 404, "M_NOT_FOUND");
    assert!(!public_room_ids(&server, &bob).await.contains(&room));
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    // Purged: its history is gone, and deleting it again finds nothing,
    // unless only blocking is asked for.
    let history = server
        .get(
            &room_path(&room, "messages?dir=b&limit=10"),
            Some(&bob.token),
        )
        .await;
    assert!(history.0.is_client_error(), "{history:?}");
    assert_error(
        &delete_room(&server, &root, &room, json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    let again = ok(delete_room(&server, &root, &room, json!({ "block": true })).await);
    assert_eq!(again["kicked_users"], json!([]));
    // The room's alias may be taken again.
    let fresh = create_room(&server, &alice, json!({ "room_alias_name": "doomed" })).await;
    assert_eq!(ok(alias_room(&server, &alias).await)["room_id"], fresh);
    // The users' syncs go on working.
    for user in [&alice, &bob, &carol] {
        ok(server
            .get(&format!("{C}/sync?timeout=0"), Some(&user.token))
            .await);
    }
}

async fn a_shut_down_room_can_move_its_users_to_a_new_room(backend: Backend) {
    let server = server_with(backend, json!({})).await;
    let root = admin(&server, "root").await;
    let moderator = server.user("moderator").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = populated_room(&server, &alice, &bob, &carol).await;
    let alias = format!("#doomed:{SERVER_NAME}");

    let deleted = ok(delete_room(
        &server,
        &root,
        &room,
        json!({
            "new_room_user_id": moderator.id,
            "room_name": "Closed",
            "message": "This room was closed.",
            "purge": false,
        }),
    )
    .await);
    let new_room = deleted["new_room_id"].as_str().unwrap().to_owned();
    assert_ne!(new_room, room);
    assert_eq!(deleted["local_aliases"], json!([alias]));
    assert_eq!(deleted["kicked_users"].as_array().unwrap().len(), 3);

    // The alias points at the new room; the users are there and not in the
    // old one, where they can no longer send.
    assert_eq!(ok(alias_room(&server, &alias).await)["room_id"], new_room);
    for user in [&alice, &bob, &carol] {
        let rooms = joined_rooms(&server, user).await;
        assert!(rooms.contains(&new_room), "{} {rooms:?}", user.id);
        assert!(!rooms.contains(&room), "{} {rooms:?}", user.id);
    }
    assert_error(
        &send_text(&server, &bob, &room, "after").await,
        403,
        "M_FORBIDDEN",
    );
    // Not blocked: the old room may be joined again (purge was false).
    ok(try_join(&server, &bob, &room).await);

    // In the new room: its name, the moderator's message, and the moved
    // users may not speak (power level -10).
    let name = ok(server
        .get(
            &room_path(&new_room, "state/m.room.name/"),
            Some(&bob.token),
        )
        .await);
    assert_eq!(name["name"], "Closed");
    let history = ok(server
        .get(
            &room_path(&new_room, "messages?dir=b&limit=50"),
            Some(&bob.token),
        )
        .await);
    let notice = history["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.message")
        .cloned()
        .expect("the shutdown message");
    assert_eq!(notice["sender"], moderator.id);
    assert_eq!(notice["content"]["body"], "This room was closed.");
    assert_error(
        &send_text(&server, &bob, &new_room, "hello?").await,
        403,
        "M_FORBIDDEN",
    );

    // A new-room user of another server is refused.
    let other = create_room(&server, &alice, json!({})).await;
    let refused = delete_room(
        &server,
        &root,
        &other,
        json!({ "new_room_user_id": "@someone:elsewhere.example" }),
    )
    .await;
    assert_eq!(refused.0, 400, "{}", refused.1);
}

async fn a_plugin_can_refuse_a_shutdown(backend: Backend) {
    let server = server_with(backend, json!({ "shutdown_forbidden_for": [mxid("root")] })).await;
    let observer = server.user("observer").await;
    let root = admin(&server, "root").await;
    let other_admin = admin(&server, "other").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = populated_room(&server, &alice, &bob, &carol).await;

    assert_error(
        &delete_room(&server, &root, &room, json!({ "block": true })).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        calls_of(&server, &observer, "check_can_shutdown_room").await,
        vec![json!({ "user_id": root.id, "room_id": room })]
    );
    // Nothing changed: not blocked, members still in, alias still there.
    assert!(joined_rooms(&server, &bob).await.contains(&room));
    ok(send_text(&server, &bob, &room, "still here").await);
    ok(alias_room(&server, &format!("#doomed:{SERVER_NAME}")).await);
    ok(try_join(&server, &carol, &room).await);

    // Another admin is allowed.
    let deleted = ok(delete_room(&server, &other_admin, &room, json!({})).await);
    assert_eq!(deleted["kicked_users"].as_array().unwrap().len(), 3);
    assert!(!joined_rooms(&server, &bob).await.contains(&room));
}

/// Version 2 of the Delete Room API: answered at once with a `delete_id`,
/// the deletion runs in the background, and its status is read by that ID
/// or by room. What can be refused at once is: a plugin's refusal, an
/// unknown room, a malformed one.
async fn a_room_is_deleted_in_the_background(backend: Backend) {
    let server = server_with(backend, json!({ "shutdown_forbidden_for": [mxid("root")] })).await;
    let root = admin(&server, "root").await;
    let other_admin = admin(&server, "other").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = populated_room(&server, &alice, &bob, &carol).await;
    let start = async |by: &User, room: &str, body: Value| {
        delete_room_with(&server, "v2", by, room, body).await
    };
    let by_id = format!("{ADMIN}/v2/rooms/delete_status/");
    let finished = async |by: &User, delete_id: &str| {
        for _ in 0..200 {
            let status = ok(server
                .get(&format!("{by_id}{delete_id}"), Some(&by.token))
                .await);
            if status["status"] == "complete" || status["status"] == "failed" {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("deletion {delete_id} did not finish");
    };

    // Refused by the plugin before any task starts: nothing changed.
    assert_error(&start(&root, &room, json!({})).await, 403, "M_FORBIDDEN");
    assert!(joined_rooms(&server, &bob).await.contains(&room));

    // Another admin deletes it.
    let started = ok(start(&other_admin, &room, json!({ "block": true })).await);
    let delete_id = started["delete_id"].as_str().unwrap().to_owned();
    let status = finished(&other_admin, &delete_id).await;
    assert_eq!(status["status"], "complete", "{status}");
    assert!(status.get("error").is_none(), "{status}");
    let mut kicked: Vec<&str> = status["shutdown_room"]["kicked_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    kicked.sort();
    assert_eq!(kicked, [&alice.id, &bob.id, &carol.id]);
    assert_eq!(status["shutdown_room"]["new_room_id"], Value::Null);
    assert!(!joined_rooms(&server, &bob).await.contains(&room));
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");

    // By room: the task, under its ID.
    let by_room = ok(server
        .get(
            &format!("{ADMIN}/v2/rooms/{}/delete_status", enc(&room)),
            Some(&root.token),
        )
        .await);
    let results = by_room["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{by_room}");
    assert_eq!(results[0]["delete_id"], delete_id.as_str());
    assert_eq!(results[0]["status"], "complete");
    assert_eq!(results[0]["shutdown_room"], status["shutdown_room"]);

    // Bad input.
    assert_error(
        &server
            .get(&format!("{by_id}no-such-deletion"), Some(&root.token))
            .await,
        404,
        "M_NOT_FOUND",
    );
    let untouched = create_room(&server, &alice, json!({})).await;
    assert_error(
        &server
            .get(
                &format!("{ADMIN}/v2/rooms/{}/delete_status", enc(&untouched)),
                Some(&root.token),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &start(&root, "not-a-room", json!({})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &start(
            &root,
            &format!("!unknown:{SERVER_NAME}"),
            json!({ "block": true }),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &start(
            &root,
            &untouched,
            json!({ "new_room_user_id": "@x:elsewhere" }),
        )
        .await,
        400,
        "M_UNKNOWN",
    );
    assert_error(
        &start(&alice, &untouched, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .get(&format!("{by_id}{}", "anything"), Some(&alice.token))
            .await,
        403,
        "M_FORBIDDEN",
    );
    // The room survives the refused requests.
    ok(send_text(&server, &alice, &untouched, "still here").await);
}

// ---------------------------------------------------------------------------
// Deactivate Account API
// ---------------------------------------------------------------------------

async fn deactivate(
    server: &TestServer,
    by: &User,
    user_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .post(
            &format!("{ADMIN}/v1/deactivate/{}", enc(user_id)),
            Some(&by.token),
            body,
        )
        .await
}

async fn put_user(
    server: &TestServer,
    by: &User,
    user_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .put(&format!("{ADMIN}/v2/users/{}", enc(user_id)), by, body)
        .await
}

async fn get_user(server: &TestServer, by: &User, user_id: &str) -> (StatusCode, Value) {
    server
        .get(
            &format!("{ADMIN}/v2/users/{}", enc(user_id)),
            Some(&by.token),
        )
        .await
}

async fn admins_deactivate_accounts_with_the_plugins_consent(backend: Backend) {
    let server = server_with(backend, json!({ "undeactivatable_users": [mxid("bob")] })).await;
    let observer = server.user("observer").await;
    let root = admin(&server, "root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;

    // Who may ask, about whom, with what.
    assert_error(
        &deactivate(&server, &alice, &carol.id, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &deactivate(&server, &root, &mxid("nobody"), json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    let remote = deactivate(&server, &root, "@carol:elsewhere.example", json!({})).await;
    assert_eq!(remote.0, 400, "{}", remote.1);
    assert_error(
        &deactivate(&server, &root, &carol.id, json!({ "erase": "yes" })).await,
        400,
        "M_BAD_JSON",
    );
    let path = format!("{ADMIN}/v1/deactivate/{}", enc(&carol.id));
    assert_error(
        &raw(&server, Method::POST, &path, &root, "{nope").await,
        400,
        "M_NOT_JSON",
    );
    assert!(calls(&server, &observer).await.is_empty());

    // Refused by the plugin: 403, and bob goes on.
    assert_error(
        &deactivate(&server, &root, &bob.id, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    ok(server
        .get(&format!("{C}/account/whoami"), Some(&bob.token))
        .await);
    assert_eq!(
        calls(&server, &observer).await,
        vec![
            json!({ "callback": "check_can_deactivate_user", "user_id": bob.id, "by_admin": true })
        ]
    );

    // Allowed: carol, with an identifier, a room and `erase`.
    ok(put_user(
        &server,
        &root,
        &carol.id,
        json!({ "threepids": [{ "medium": "email", "address": "carol@example.org" }] }),
    )
    .await);
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    ok(try_join(&server, &carol, &room).await);
    let before = calls(&server, &observer).await.len();
    let answer = ok(deactivate(&server, &root, &carol.id, json!({ "erase": true })).await);
    assert_eq!(answer["id_server_unbind_result"], "no-support");
    let after: Vec<Value> = calls(&server, &observer).await[before..].to_vec();
    assert_eq!(
        after,
        vec![
            json!({ "callback": "check_can_deactivate_user", "user_id": carol.id, "by_admin": true }),
            json!({ "callback": "on_remove_user_third_party_identifier", "user_id": carol.id, "medium": "email", "address": "carol@example.org" }),
            json!({ "callback": "on_user_deactivation_status_changed", "user_id": carol.id, "deactivated": true, "by_admin": true }),
        ]
    );
    assert_error(
        &server
            .get(&format!("{C}/account/whoami"), Some(&carol.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.login("carol", PASSWORD).await,
        403,
        "M_USER_DEACTIVATED",
    );
    let shown = ok(get_user(&server, &root, &carol.id).await);
    assert_eq!(shown["deactivated"], true);
    assert_eq!(shown["threepids"], json!([]));
    assert_eq!(shown["displayname"], Value::Null);
    // Carol left the room.
    let members = ok(server
        .get(&room_path(&room, "joined_members"), Some(&alice.token))
        .await);
    assert!(members["joined"].get(&carol.id).is_none(), "{members}");

    // An empty body is `{}`.
    let response = raw(
        &server,
        Method::POST,
        &format!("{ADMIN}/v1/deactivate/{}", enc(&dave.id)),
        &root,
        "",
    )
    .await;
    assert_eq!(response.0, 200, "{}", response.1);
    assert_error(
        &server.login("dave", PASSWORD).await,
        403,
        "M_USER_DEACTIVATED",
    );
}

// ---------------------------------------------------------------------------
// Users and their third-party identifiers
// ---------------------------------------------------------------------------

async fn login_email(server: &TestServer, address: &str, password: &str) -> (StatusCode, Value) {
    server
        .post(
            &format!("{C}/login"),
            None,
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": address },
                "password": password,
            }),
        )
        .await
}

async fn threepids_are_set_by_admins_and_removed_by_users(backend: Backend) {
    let server = server_with(backend, json!({})).await;
    let observer = server.user("observer").await;
    let root = admin(&server, "root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    // Malformed requests change nothing.
    for (body, errcode) in [
        (json!({ "threepids": "x" }), "M_BAD_JSON"),
        (
            json!({ "threepids": [{ "medium": "email" }] }),
            "M_MISSING_PARAM",
        ),
        (
            json!({ "threepids": [{ "medium": "pigeon", "address": "coo" }] }),
            "M_INVALID_PARAM",
        ),
        (
            json!({ "threepids": [{ "medium": "email", "address": "no-at-sign" }] }),
            "M_INVALID_PARAM",
        ),
        (json!({ "admin": "yes" }), "M_BAD_JSON"),
        (json!({ "deactivated": 1 }), "M_BAD_JSON"),
    ] {
        assert_error(
            &put_user(&server, &root, &alice.id, body).await,
            400,
            errcode,
        );
    }
    let path = format!("{ADMIN}/v2/users/{}", enc(&alice.id));
    assert_error(
        &raw(&server, Method::PUT, &path, &root, "{").await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &put_user(&server, &alice, &alice.id, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert!(calls(&server, &observer).await.is_empty());

    // Added (e-mail addresses lower-cased), each reported.
    let shown = ok(put_user(
        &server,
        &root,
        &alice.id,
        json!({ "threepids": [
            { "medium": "email", "address": "Alice@Example.ORG" },
            { "medium": "msisdn", "address": "447700900000" },
        ] }),
    )
    .await);
    let listed: Vec<(Value, Value)> = shown["threepids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["medium"].clone(), t["address"].clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (json!("email"), json!("alice@example.org")),
            (json!("msisdn"), json!("447700900000")),
        ]
    );
    let added = calls_of(&server, &observer, "on_add_user_third_party_identifier").await;
    assert_eq!(
        added,
        vec![
            json!({ "user_id": alice.id, "medium": "email", "address": "alice@example.org" }),
            json!({ "user_id": alice.id, "medium": "msisdn", "address": "447700900000" }),
        ]
    );
    // The deprecated callback too, as Synapse does.
    assert_eq!(
        calls_of(&server, &observer, "on_threepid_bind").await,
        added
    );

    // The user sees them.
    let own = ok(server
        .get(&format!("{C}/account/3pid"), Some(&alice.token))
        .await);
    let own = own["threepids"].as_array().unwrap().clone();
    assert_eq!(own.len(), 2, "{own:?}");
    assert_eq!(own[0]["medium"], "email");
    assert_eq!(own[0]["address"], "alice@example.org");
    assert!(own[0]["added_at"].as_u64().unwrap() > 0);
    assert!(own[0]["validated_at"].as_u64().unwrap() > 0);
    let none = ok(server
        .get(&format!("{C}/account/3pid"), Some(&bob.token))
        .await);
    assert_eq!(none["threepids"], json!([]));

    // Replaced: what is gone is removed, what is new is added, what stays
    // is not touched.
    let before = calls(&server, &observer).await.len();
    ok(put_user(
        &server,
        &root,
        &alice.id,
        json!({ "threepids": [
            { "medium": "email", "address": "alice@example.org" },
            { "medium": "email", "address": "second@example.org" },
        ] }),
    )
    .await);
    let after: Vec<Value> = calls(&server, &observer).await[before..].to_vec();
    assert_eq!(
        after,
        vec![
            json!({ "callback": "on_remove_user_third_party_identifier", "user_id": alice.id, "medium": "msisdn", "address": "447700900000" }),
            json!({ "callback": "on_add_user_third_party_identifier", "user_id": alice.id, "medium": "email", "address": "second@example.org" }),
            json!({ "callback": "on_threepid_bind", "user_id": alice.id, "medium": "email", "address": "second@example.org" }),
        ]
    );
    // Another user's identifier is refused.
    assert_error(
        &put_user(
            &server,
            &root,
            &bob.id,
            json!({ "threepids": [{ "medium": "email", "address": "ALICE@example.org" }] }),
        )
        .await,
        409,
        "M_THREEPID_IN_USE",
    );

    // Login by e-mail address, with the account's password.
    let logged_in = ok(login_email(&server, "Second@Example.org", PASSWORD).await);
    assert_eq!(logged_in["user_id"], alice.id);
    assert_error(
        &login_email(&server, "second@example.org", "wrong").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &login_email(&server, "unknown@example.org", PASSWORD).await,
        403,
        "M_FORBIDDEN",
    );

    // The user removes one (any case); removing one they do not have
    // changes nothing and tells no plugin.
    let before = calls(&server, &observer).await.len();
    let removed = ok(server
        .post(
            &format!("{C}/account/3pid/delete"),
            Some(&alice.token),
            json!({ "medium": "email", "address": "ALICE@example.org" }),
        )
        .await);
    assert_eq!(removed["id_server_unbind_result"], "no-support");
    ok(server
        .post(
            &format!("{C}/account/3pid/delete"),
            Some(&alice.token),
            json!({ "medium": "email", "address": "never@example.org" }),
        )
        .await);
    let after: Vec<Value> = calls(&server, &observer).await[before..].to_vec();
    assert_eq!(
        after,
        vec![
            json!({ "callback": "on_remove_user_third_party_identifier", "user_id": alice.id, "medium": "email", "address": "alice@example.org" })
        ]
    );
    let own = ok(server
        .get(&format!("{C}/account/3pid"), Some(&alice.token))
        .await);
    let addresses: Vec<&Value> = own["threepids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["address"])
        .collect();
    assert_eq!(addresses, vec!["second@example.org"]);
    assert_error(
        &server
            .post(
                &format!("{C}/account/3pid/delete"),
                Some(&alice.token),
                json!({ "medium": "email" }),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    // Now bob may have the freed address.
    ok(put_user(
        &server,
        &root,
        &bob.id,
        json!({ "threepids": [{ "medium": "email", "address": "alice@example.org" }] }),
    )
    .await);
}

async fn admins_create_modify_and_reactivate_users(backend: Backend) {
    let server = server_with(backend, json!({})).await;
    let observer = server.user("observer").await;
    let root = admin(&server, "root").await;
    let alice = server.user("alice").await;

    assert_error(
        &get_user(&server, &root, &mxid("nobody")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &get_user(&server, &alice, &alice.id).await,
        403,
        "M_FORBIDDEN",
    );
    let shown = ok(get_user(&server, &root, &alice.id).await);
    assert_eq!(shown["name"], alice.id);
    assert_eq!(shown["displayname"], "alice");
    assert_eq!(shown["admin"], false);
    assert_eq!(shown["deactivated"], false);
    assert_eq!(shown["is_guest"], false);
    assert_eq!(shown["shadow_banned"], false);
    assert_eq!(shown["threepids"], json!([]));
    assert!(
        shown["creation_ts"].as_i64().unwrap() > 1_600_000_000,
        "{shown}"
    );

    // Created: 201, with an identifier, and the new user can log in.
    let newbie = mxid("newbie");
    let created = put_user(
        &server,
        &root,
        &newbie,
        json!({
            "password": "a new password",
            "threepids": [{ "medium": "email", "address": "New@Example.org" }],
            "admin": false,
        }),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    assert_eq!(created.1["name"], newbie);
    assert_eq!(created.1["displayname"], "newbie");
    assert_eq!(created.1["threepids"][0]["address"], "new@example.org");
    assert_eq!(
        calls_of(&server, &observer, "on_add_user_third_party_identifier").await,
        vec![json!({ "user_id": newbie, "medium": "email", "address": "new@example.org" })]
    );
    ok(server.login("newbie", "a new password").await);

    // Modified: 200.
    let modified = ok(put_user(
        &server,
        &root,
        &alice.id,
        json!({ "displayname": "Alice Liddell", "admin": true }),
    )
    .await);
    assert_eq!(modified["displayname"], "Alice Liddell");
    assert_eq!(modified["admin"], true);
    let profile = ok(server
        .get(&format!("{C}/profile/{}", enc(&alice.id)), None)
        .await);
    assert_eq!(profile["displayname"], "Alice Liddell");
    assert_error(
        &put_user(&server, &root, &root.id, json!({ "admin": false })).await,
        400,
        "M_UNKNOWN",
    );

    // Deactivated through PUT: the same path as the deactivation API.
    let before = calls(&server, &observer).await.len();
    let shown = ok(put_user(&server, &root, &alice.id, json!({ "deactivated": true })).await);
    assert_eq!(shown["deactivated"], true);
    let after: Vec<Value> = calls(&server, &observer).await[before..].to_vec();
    assert_eq!(
        after,
        vec![
            json!({ "callback": "check_can_deactivate_user", "user_id": alice.id, "by_admin": true }),
            json!({ "callback": "on_user_deactivation_status_changed", "user_id": alice.id, "deactivated": true, "by_admin": true }),
        ]
    );
    assert_error(
        &server.login("alice", PASSWORD).await,
        403,
        "M_USER_DEACTIVATED",
    );

    // Reactivated: a password is needed.
    let refused = put_user(&server, &root, &alice.id, json!({ "deactivated": false })).await;
    assert_eq!(refused.0, 400, "{}", refused.1);
    let before = calls(&server, &observer).await.len();
    let shown = ok(put_user(
        &server,
        &root,
        &alice.id,
        json!({ "deactivated": false, "password": "back again" }),
    )
    .await);
    assert_eq!(shown["deactivated"], false);
    let after: Vec<Value> = calls(&server, &observer).await[before..].to_vec();
    assert_eq!(
        after,
        vec![
            json!({ "callback": "on_user_deactivation_status_changed", "user_id": alice.id, "deactivated": false, "by_admin": true })
        ]
    );
    ok(server.login("alice", "back again").await);
    assert_error(&server.login("alice", PASSWORD).await, 403, "M_FORBIDDEN");
}

on_both_backends! {
    delete_room_api => deleting_a_room_removes_its_users_aliases_and_events,
    delete_room_to_new_room => a_shut_down_room_can_move_its_users_to_a_new_room,
    plugin_refuses_shutdown => a_plugin_can_refuse_a_shutdown,
    delete_room_v2 => a_room_is_deleted_in_the_background,
    deactivate_api => admins_deactivate_accounts_with_the_plugins_consent,
    threepids => threepids_are_set_by_admins_and_removed_by_users,
    users_api => admins_create_modify_and_reactivate_users,
}
