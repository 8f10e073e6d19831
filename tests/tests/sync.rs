//! `/sync` and the live streams through the client API, on both backends:
//! initial and incremental sync, long-polling, filters, typing, receipts,
//! read markers, account data, tags, presence, send-to-device, push rules,
//! notifications and unread counts (per thread too), knocked and left
//! rooms, and the errors bad input gets.

use std::time::{Duration, Instant};

use myelin_tests::{
    Backend, PASSWORD, TestServer, User, assert_error, enc, ok, on_both_backends, txn,
};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends! {
    sync_follows_invites_joins_messages_and_leaves => sync_follows_invites_joins_messages_and_leaves,
    a_long_poll_wakes_when_a_message_is_sent => a_long_poll_wakes_when_a_message_is_sent,
    bad_sync_input_gets_matrix_errors => bad_sync_input_gets_matrix_errors,
    filters_shape_the_timeline_and_state => filters_shape_the_timeline_and_state,
    typing_receipts_markers_and_unread_counts => typing_receipts_markers_and_unread_counts,
    account_data_tags_and_presence => account_data_tags_and_presence,
    to_device_messages_are_delivered_once => to_device_messages_are_delivered_once,
    push_rules_drive_notifications => push_rules_drive_notifications,
    knocks_show_until_answered => knocks_show_until_answered,
    include_leave_lists_left_rooms => include_leave_lists_left_rooms,
    thread_notifications_are_counted_per_thread => thread_notifications_are_counted_per_thread,
    syncs_and_pages_span_a_restart => syncs_and_pages_span_a_restart,
    a_forgotten_room_stays_hidden_until_a_new_membership => a_forgotten_room_stays_hidden_until_a_new_membership,
}

const C: &str = "/_matrix/client/v3";

async fn create_room(server: &TestServer, creator: &User, body: Value) -> String {
    let created = ok(server
        .post(&format!("{C}/createRoom"), Some(&creator.token), body)
        .await);
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

async fn send_text(server: &TestServer, sender: &User, room: &str, text: &str) -> String {
    let path = format!("{C}/rooms/{}/send/m.room.message/{}", enc(room), txn());
    let sent = ok(server
        .put(&path, sender, json!({"msgtype": "m.text", "body": text}))
        .await);
    sent["event_id"].as_str().unwrap().to_owned()
}

/// One `/sync`; `query` is appended as is (e.g. `since=...&timeout=0`).
async fn sync(server: &TestServer, user: &User, query: &str) -> Value {
    ok(server
        .get(&format!("{C}/sync?{query}"), Some(&user.token))
        .await)
}

async fn sync_since(server: &TestServer, user: &User, since: &str) -> Value {
    sync(server, user, &format!("since={}&timeout=0", enc(since))).await
}

fn next_batch(response: &Value) -> String {
    response["next_batch"].as_str().unwrap().to_owned()
}

/// The bodies of the `m.room.message` events of a room's timeline.
fn bodies(response: &Value, section: &str, room: &str) -> Vec<String> {
    response["rooms"][section][room]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Two users in a room they both joined; returns (alice, bob, room, bob's token).
async fn pair(server: &TestServer) -> (User, User, String) {
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        server,
        &alice,
        json!({"preset": "public_chat", "name": "Lobby"}),
    )
    .await;
    join(server, &bob, &room).await;
    (alice, bob, room)
}

async fn sync_follows_invites_joins_messages_and_leaves(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"invite": [bob.id], "name": "Plans"}),
    )
    .await;

    // An invite shows as stripped state, with the room's name.
    let first = sync(&server, &bob, "").await;
    let invite = &first["rooms"]["invite"][&room]["invite_state"]["events"];
    let invite = invite.as_array().expect("invite state");
    assert!(
        invite
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Plans")
    );
    assert!(
        invite
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.id.as_str())
    );
    assert!(first["rooms"]["join"].get(&room).is_none());
    // The initial sync carries the default push rules.
    assert!(
        first["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.push_rules" && e["content"]["global"]["override"].is_array())
    );

    join(&server, &bob, &room).await;
    let joined = sync_since(&server, &bob, &next_batch(&first)).await;
    let section = &joined["rooms"]["join"][&room];
    assert!(
        section["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.id.as_str())
    );
    assert_eq!(section["summary"]["m.joined_member_count"], 2);
    assert_eq!(section["summary"]["m.heroes"], json!([alice.id]));

    // Incremental: only what is new, with a prev_batch /messages accepts.
    send_text(&server, &alice, &room, "one").await;
    send_text(&server, &alice, &room, "two").await;
    let since = next_batch(&joined);
    let update = sync_since(&server, &bob, &since).await;
    assert_eq!(bodies(&update, "join", &room), ["one", "two"]);
    assert_ne!(update["rooms"]["join"][&room]["timeline"]["limited"], true);
    let prev = update["rooms"]["join"][&room]["timeline"]["prev_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let earlier = ok(server
        .get(
            &format!(
                "{C}/rooms/{}/messages?dir=b&limit=50&from={}",
                enc(&room),
                enc(&prev)
            ),
            Some(&bob.token),
        )
        .await);
    let earlier_types: Vec<&str> = earlier["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        earlier_types.contains(&"m.room.create"),
        "{earlier_types:?}"
    );
    assert!(
        !earlier["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "one")
    );
    // The sender's own sync carries its transaction ID.
    let path = format!("{C}/rooms/{}/send/m.room.message/my-txn", enc(&room));
    ok(server
        .put(&path, &bob, json!({"msgtype": "m.text", "body": "mine"}))
        .await);
    let own = sync_since(&server, &bob, &next_batch(&update)).await;
    let mine = own["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content"]["body"] == "mine")
        .cloned()
        .unwrap();
    assert_eq!(mine["unsigned"]["transaction_id"], "my-txn");

    // Nothing new: nothing but the token.
    let quiet = sync_since(&server, &bob, &next_batch(&own)).await;
    assert!(quiet["rooms"]["join"].get(&room).is_none(), "{quiet}");

    // A gap larger than the limit is limited, and state changed in the gap
    // is in `state`.
    let since = next_batch(&quiet);
    let topic_path = format!("{C}/rooms/{}/state/m.room.topic/", enc(&room));
    ok(server
        .put(&topic_path, &alice, json!({"topic": "changed in the gap"}))
        .await);
    for i in 0..12 {
        send_text(&server, &alice, &room, &format!("burst {i}")).await;
    }
    let gap = sync_since(&server, &bob, &since).await;
    let section = &gap["rooms"]["join"][&room];
    assert_eq!(section["timeline"]["limited"], true);
    assert_eq!(section["timeline"]["events"].as_array().unwrap().len(), 10);
    assert!(
        section["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "changed in the gap")
    );

    // Leaving moves the room to `leave`, ending with the leave event.
    let since = next_batch(&gap);
    ok(server
        .post(
            &format!("{C}/rooms/{}/leave", enc(&room)),
            Some(&bob.token),
            json!({}),
        )
        .await);
    let left = sync_since(&server, &bob, &since).await;
    let events = left["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["content"]["membership"], "leave");
    assert!(left["rooms"]["join"].get(&room).is_none());
}

async fn a_long_poll_wakes_when_a_message_is_sent(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let since = next_batch(&sync(&server, &bob, "").await);

    // Nothing arrives: the poll ends at its timeout with the same position.
    let started = Instant::now();
    let idle = sync(&server, &bob, &format!("since={}&timeout=300", enc(&since))).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(idle["rooms"]["join"].get(&room).is_none());

    let poll = long_poll(&server, &bob, &since);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at = Instant::now();
    send_text(&server, &alice, &room, "wake up").await;
    let (waited, body) = poll.await.unwrap();
    assert_eq!(bodies(&body, "join", &room), ["wake up"]);
    // Woken by the send, not by the 30 s timeout.
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    assert!(sent_at.elapsed() < Duration::from_secs(10));

    // A room joined since the last long-poll wakes the next one too (each
    // user's rooms to listen on are kept between long-polls).
    let second = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Annex"}),
    )
    .await;
    join(&server, &bob, &second).await;
    let since = next_batch(&sync_since(&server, &bob, &next_batch(&body)).await);
    let poll = long_poll(&server, &bob, &since);
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_text(&server, &alice, &second, "over here").await;
    let (waited, body) = poll.await.unwrap();
    assert_eq!(bodies(&body, "join", &second), ["over here"]);
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
}

/// A `/sync` long-poll of up to 30 s, started in the background; yields how
/// long it waited and its response.
fn long_poll(
    server: &TestServer,
    user: &User,
    since: &str,
) -> tokio::task::JoinHandle<(Duration, Value)> {
    let url = format!(
        "{}{C}/sync?since={}&timeout=30000",
        server.base_url,
        enc(since)
    );
    let token = user.token.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        (started.elapsed(), body)
    })
}

async fn bad_sync_input_gets_matrix_errors(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let get = |query: String| {
        let server = &server;
        let token = bob.token.clone();
        async move { server.get(&format!("{C}/sync?{query}"), Some(&token)).await }
    };
    assert_error(&get("since=garbage".into()).await, 400, "M_INVALID_PARAM");
    assert_error(
        &get(format!("since={}", enc("s1_2_3"))).await,
        400,
        "M_INVALID_PARAM",
    );
    // A token from the future is foreign to this server.
    assert_error(
        &get(format!("since={}", enc("s99999_0_0_0_0_0_0"))).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&get("filter=12345".into()).await, 404, "M_NOT_FOUND");
    assert_error(&get("filter=not-a-filter".into()).await, 404, "M_NOT_FOUND");
    assert_error(
        &get(format!("filter={}", enc(r#"{"room": 5}"#))).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(&get("timeout=-5".into()).await, 400, "M_INVALID_PARAM");
    // An absurd timeout is clamped, and a send still wakes it.
    let since = next_batch(&sync(&server, &bob, "").await);
    let poll = {
        let url = format!(
            "{}{C}/sync?since={}&timeout=999999999999",
            server.base_url,
            enc(&since)
        );
        let token = bob.token.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_text(&server, &alice, &room, "hi").await;
    assert_eq!(poll.await.unwrap(), 200);
    // Another user's filters are not yours to read or write.
    let (status, _) = server
        .post(
            &format!("{C}/user/{}/filter", enc(&alice.id)),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 403);
}

async fn filters_shape_the_timeline_and_state(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let carol = server.user("carol").await;
    join(&server, &carol, &room).await;
    for i in 0..5 {
        send_text(&server, &alice, &room, &format!("alice {i}")).await;
    }
    send_text(&server, &carol, &room, "carol speaks").await;

    let filter = json!({
        "room": {
            "timeline": {"limit": 2, "types": ["m.room.message"]},
            "state": {"lazy_load_members": true}
        },
        "event_fields": ["type", "content.body", "sender"]
    });
    // Asked for before it exists: not found, and not remembered as missing.
    assert_error(
        &server
            .get(
                &format!("{C}/user/{}/filter/0", enc(&bob.id)),
                Some(&bob.token),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    let created = ok(server
        .post(
            &format!("{C}/user/{}/filter", enc(&bob.id)),
            Some(&bob.token),
            filter.clone(),
        )
        .await);
    let id = created["filter_id"].as_str().unwrap().to_owned();
    assert_eq!(id, "0", "a user's first filter");
    let stored = ok(server
        .get(
            &format!("{C}/user/{}/filter/{id}", enc(&bob.id)),
            Some(&bob.token),
        )
        .await);
    assert_eq!(stored["room"]["timeline"]["limit"], 2);
    assert_error(
        &server
            .get(
                &format!("{C}/user/{}/filter/{id}", enc(&bob.id)),
                Some(&alice.token),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );

    let response = sync(&server, &bob, &format!("filter={id}")).await;
    let section = &response["rooms"]["join"][&room];
    let timeline = section["timeline"]["events"].as_array().unwrap();
    assert_eq!(timeline.len(), 2, "{section}");
    assert_eq!(section["timeline"]["limited"], true);
    assert_eq!(timeline[1]["content"]["body"], "carol speaks");
    // event_fields: nothing else survives.
    assert!(timeline[1].get("event_id").is_none(), "{}", timeline[1]);
    assert!(timeline[1]["content"].get("msgtype").is_none());
    // Lazy loading: members of the timeline's senders (and the syncing
    // user), not everyone.
    let members: Vec<&str> = section["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["sender"].as_str().unwrap())
        .collect();
    assert!(
        members.contains(&alice.id.as_str()) && members.contains(&carol.id.as_str()),
        "{members:?}"
    );
    assert_eq!(members.len(), 3, "{members:?}");
    // Filters are per user: Bob's, now cached, is not Alice's.
    assert_error(
        &server
            .get(&format!("{C}/sync?filter={id}"), Some(&alice.token))
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Inline filters: senders and not_senders.
    let inline =
        json!({"room": {"timeline": {"not_senders": [alice.id], "types": ["m.room.message"]}}});
    let response = sync(
        &server,
        &bob,
        &format!("filter={}", enc(&inline.to_string())),
    )
    .await;
    assert_eq!(bodies(&response, "join", &room), ["carol speaks"]);
    // Room filters drop rooms.
    let inline = json!({"room": {"not_rooms": [room]}});
    let response = sync(
        &server,
        &bob,
        &format!("filter={}", enc(&inline.to_string())),
    )
    .await;
    assert!(response["rooms"]["join"].get(&room).is_none());
}

async fn typing_receipts_markers_and_unread_counts(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let since = next_batch(&sync(&server, &bob, "").await);

    // Typing shows, and stops.
    let typing = format!("{C}/rooms/{}/typing/{}", enc(&room), enc(&alice.id));
    ok(server
        .put(&typing, &alice, json!({"typing": true, "timeout": 30000}))
        .await);
    let update = sync_since(&server, &bob, &since).await;
    let ephemeral = &update["rooms"]["join"][&room]["ephemeral"]["events"];
    assert_eq!(ephemeral[0]["type"], "m.typing");
    assert_eq!(ephemeral[0]["content"]["user_ids"], json!([alice.id]));
    ok(server.put(&typing, &alice, json!({"typing": false})).await);
    let stopped = sync_since(&server, &bob, &next_batch(&update)).await;
    assert_eq!(
        stopped["rooms"]["join"][&room]["ephemeral"]["events"][0]["content"]["user_ids"],
        json!([])
    );
    // Typing for someone else is forbidden.
    assert_error(
        &server
            .put(&typing, &bob, json!({"typing": true, "timeout": 1000}))
            .await,
        403,
        "M_FORBIDDEN",
    );

    // Unread counts: two messages notify bob, a mention highlights.
    let since = next_batch(&stopped);
    send_text(&server, &alice, &room, "first").await;
    let path = format!("{C}/rooms/{}/send/m.room.message/{}", enc(&room), txn());
    let mention =
        json!({"msgtype": "m.text", "body": "hey bob, look", "m.mentions": {"user_ids": [bob.id]}});
    let second = ok(server.put(&path, &alice, mention).await)["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let update = sync_since(&server, &bob, &since).await;
    let counts = &update["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(counts["notification_count"], 2, "{update}");
    assert_eq!(counts["highlight_count"], 1, "{update}");

    // Bob's receipt: alice sees it, bob's counts drop to zero.
    let since_alice = next_batch(&sync(&server, &alice, "").await);
    let receipt = format!("{C}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&second));
    ok(server.post(&receipt, Some(&bob.token), json!({})).await);
    let seen = sync_since(&server, &alice, &since_alice).await;
    let receipts = &seen["rooms"]["join"][&room]["ephemeral"]["events"];
    let receipt_event = receipts
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap();
    assert!(receipt_event["content"][&second]["m.read"][&bob.id]["ts"].is_number());
    let cleared = sync_since(&server, &bob, &next_batch(&update)).await;
    assert_eq!(
        cleared["rooms"]["join"][&room]["unread_notifications"]["notification_count"],
        0
    );

    // A private receipt is for its owner only.
    let third = send_text(&server, &alice, &room, "third").await;
    let since_alice = next_batch(&seen);
    let private = format!(
        "{C}/rooms/{}/receipt/m.read.private/{}",
        enc(&room),
        enc(&third)
    );
    ok(server.post(&private, Some(&bob.token), json!({})).await);
    let alice_view = sync_since(&server, &alice, &since_alice).await;
    assert!(
        !alice_view.to_string().contains("m.read.private"),
        "{alice_view}"
    );

    // Read markers set m.fully_read, in room account data.
    let markers = format!("{C}/rooms/{}/read_markers", enc(&room));
    ok(server
        .post(
            &markers,
            Some(&bob.token),
            json!({"m.fully_read": third, "m.read": third}),
        )
        .await);
    let marked = sync_since(&server, &bob, &next_batch(&cleared)).await;
    let data = &marked["rooms"]["join"][&room]["account_data"]["events"];
    assert!(
        data.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == third.as_str())
    );

    // Receipts in a room you are not in are refused.
    let outsider = server.user("outsider").await;
    assert_error(
        &server
            .post(&receipt, Some(&outsider.token), json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
}

async fn account_data_tags_and_presence(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let since = next_batch(&sync(&server, &bob, "").await);

    let data_path = format!(
        "{C}/user/{}/account_data/org.example.settings",
        enc(&bob.id)
    );
    ok(server.put(&data_path, &bob, json!({"theme": "dark"})).await);
    assert_eq!(
        ok(server.get(&data_path, Some(&bob.token)).await),
        json!({"theme": "dark"})
    );
    assert_error(
        &server.put(&data_path, &alice, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.put(&data_path, &bob, json!([1])).await,
        400,
        "M_BAD_JSON",
    );
    let missing = format!("{C}/user/{}/account_data/org.example.none", enc(&bob.id));
    assert_error(
        &server.get(&missing, Some(&bob.token)).await,
        404,
        "M_NOT_FOUND",
    );
    let rules = format!("{C}/user/{}/account_data/m.push_rules", enc(&bob.id));
    assert_error(
        &server.put(&rules, &bob, json!({})).await,
        400,
        "M_BAD_JSON",
    );

    let tag = format!(
        "{C}/user/{}/rooms/{}/tags/m.favourite",
        enc(&bob.id),
        enc(&room)
    );
    ok(server.put(&tag, &bob, json!({"order": 0.5})).await);
    let tags = ok(server
        .get(
            &format!("{C}/user/{}/rooms/{}/tags", enc(&bob.id), enc(&room)),
            Some(&bob.token),
        )
        .await);
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);

    let update = sync_since(&server, &bob, &since).await;
    assert!(
        update["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.settings" && e["content"]["theme"] == "dark")
    );
    let room_data = &update["rooms"]["join"][&room]["account_data"]["events"];
    assert!(
        room_data
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["m.favourite"]["order"] == 0.5)
    );
    ok(server
        .request(Method::DELETE, &tag, Some(&bob.token), None)
        .await);
    let tags = ok(server
        .get(
            &format!("{C}/user/{}/rooms/{}/tags", enc(&bob.id), enc(&room)),
            Some(&bob.token),
        )
        .await);
    assert_eq!(tags["tags"], json!({}));

    // Presence: set, read back, and seen by someone sharing a room.
    let since = next_batch(&update);
    let presence = format!("{C}/presence/{}/status", enc(&alice.id));
    ok(server
        .put(
            &presence,
            &alice,
            json!({"presence": "unavailable", "status_msg": "lunch"}),
        )
        .await);
    let read = ok(server.get(&presence, Some(&bob.token)).await);
    assert_eq!(read["presence"], "unavailable");
    assert_eq!(read["status_msg"], "lunch");
    assert_error(
        &server
            .put(&presence, &bob, json!({"presence": "online"}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    let stranger = server.user("stranger").await;
    assert_error(
        &server.get(&presence, Some(&stranger.token)).await,
        403,
        "M_FORBIDDEN",
    );
    let update = sync(
        &server,
        &bob,
        &format!("since={}&timeout=0&set_presence=offline", enc(&since)),
    )
    .await;
    let event = update["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sender"] == alice.id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{update}"));
    assert_eq!(event["content"]["presence"], "unavailable");
    assert_eq!(event["content"]["status_msg"], "lunch");
}

async fn to_device_messages_are_delivered_once(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, _room) = pair(&server).await;
    let (_, second_login) = server.login("bob", PASSWORD).await;
    let bob_phone = User {
        id: bob.id.clone(),
        token: second_login["access_token"].as_str().unwrap().to_owned(),
    };
    let phone_id = second_login["device_id"].as_str().unwrap().to_owned();
    let since = next_batch(&sync(&server, &bob_phone, "").await);

    let path = |txn: &str| format!("{C}/sendToDevice/org.example.ping/{txn}");
    let body = json!({"messages": {bob.id.clone(): {phone_id.clone(): {"n": 1}}}});
    ok(server.put(&path("t1"), &alice, body.clone()).await);
    // The same transaction again is not delivered twice.
    ok(server.put(&path("t1"), &alice, body).await);
    let first = sync_since(&server, &bob_phone, &since).await;
    let events = first["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{first}");
    assert_eq!(events[0]["sender"], alice.id.as_str());
    assert_eq!(events[0]["content"]["n"], 1);
    // Acknowledged by moving past it: gone.
    let again = sync_since(&server, &bob_phone, &next_batch(&first)).await;
    assert!(
        again["to_device"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{again}"
    );

    // `*` reaches every device of the user.
    let laptop_since = next_batch(&sync(&server, &bob, "").await);
    let all = json!({"messages": {bob.id.clone(): {"*": {"n": 2}}}});
    ok(server.put(&path("t2"), &alice, all).await);
    let laptop = sync_since(&server, &bob, &laptop_since).await;
    assert_eq!(
        laptop["to_device"]["events"][0]["content"]["n"], 2,
        "{laptop}"
    );

    // Over the size limit: 413, nothing queued.
    let huge = json!({"messages": {bob.id.clone(): {phone_id: {"blob": "x".repeat(70_000)}}}});
    assert_error(
        &server.put(&path("t3"), &alice, huge).await,
        413,
        "M_TOO_LARGE",
    );
}

async fn push_rules_drive_notifications(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;

    let all = ok(server
        .get(&format!("{C}/pushrules/"), Some(&bob.token))
        .await);
    assert!(
        all["global"]["underride"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.message")
    );

    // A keyword rule that highlights.
    let rule = format!("{C}/pushrules/global/content/deploy");
    ok(server
        .put(
            &rule,
            &bob,
            json!({"pattern": "deploy", "actions": ["notify", {"set_tweak": "highlight"}]}),
        )
        .await);
    let got = ok(server.get(&rule, Some(&bob.token)).await);
    assert_eq!(got["pattern"], "deploy");
    send_text(&server, &alice, &room, "time to deploy").await;
    send_text(&server, &alice, &room, "unrelated").await;
    let highlights = ok(server
        .get(
            &format!("{C}/notifications?only=highlight"),
            Some(&bob.token),
        )
        .await);
    let list = highlights["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{highlights}");
    assert_eq!(list[0]["event"]["content"]["body"], "time to deploy");
    assert_eq!(list[0]["read"], false);
    let everything = ok(server
        .get(&format!("{C}/notifications"), Some(&bob.token))
        .await);
    assert_eq!(everything["notifications"].as_array().unwrap().len(), 2);

    // Disabled: no longer applies; enabled state reads back.
    ok(server
        .put(&format!("{rule}/enabled"), &bob, json!({"enabled": false}))
        .await);
    assert_eq!(
        ok(server
            .get(&format!("{rule}/enabled"), Some(&bob.token))
            .await)["enabled"],
        false
    );
    send_text(&server, &alice, &room, "deploy again").await;
    let highlights = ok(server
        .get(
            &format!("{C}/notifications?only=highlight"),
            Some(&bob.token),
        )
        .await);
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    // Muting messages with the default rules' actions (a two-member room
    // matches the one-to-one rule first).
    for rule_id in [".m.rule.room_one_to_one", ".m.rule.message"] {
        let path = format!("{C}/pushrules/global/underride/{rule_id}/actions");
        ok(server.put(&path, &bob, json!({"actions": []})).await);
    }
    let before = ok(server
        .get(&format!("{C}/notifications"), Some(&bob.token))
        .await)["notifications"]
        .as_array()
        .unwrap()
        .len();
    send_text(&server, &alice, &room, "quiet").await;
    let after = ok(server
        .get(&format!("{C}/notifications"), Some(&bob.token))
        .await)["notifications"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);

    ok(server
        .request(Method::DELETE, &rule, Some(&bob.token), None)
        .await);
    assert_error(
        &server.get(&rule, Some(&bob.token)).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .request(Method::DELETE, &rule, Some(&bob.token), None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Rule changes reach the client as m.push_rules account data.
    let initial = sync(&server, &bob, "").await;
    let rules = initial["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .unwrap()
        .clone();
    let message_rule = rules["content"]["global"]["underride"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_id"] == ".m.rule.message")
        .unwrap()
        .clone();
    assert_eq!(message_rule["actions"], json!([]));

    // Pushers: a non-HTTP(S) URL is refused.
    let pusher = |url: &str| {
        json!({
            "kind": "http", "app_id": "org.example.app", "pushkey": "key-1",
            "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
            "data": {"url": url}
        })
    };
    assert_error(
        &server
            .post(
                &format!("{C}/pushers/set"),
                Some(&bob.token),
                pusher("ftp://gateway.example/_matrix/push/v1/notify"),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    ok(server
        .post(
            &format!("{C}/pushers/set"),
            Some(&bob.token),
            pusher("https://gateway.example/_matrix/push/v1/notify"),
        )
        .await);
    let pushers = ok(server.get(&format!("{C}/pushers"), Some(&bob.token)).await);
    assert_eq!(pushers["pushers"][0]["pushkey"], "key-1");
    assert_eq!(
        pushers["pushers"][0]["data"]["url"],
        "https://gateway.example/_matrix/push/v1/notify"
    );
}

/// `/sync` with an inline filter, optionally incremental.
async fn sync_filtered(
    server: &TestServer,
    user: &User,
    filter: &Value,
    since: Option<&str>,
) -> Value {
    let mut query = format!("filter={}", enc(&filter.to_string()));
    if let Some(since) = since {
        query.push_str(&format!("&since={}&timeout=0", enc(since)));
    }
    sync(server, user, &query).await
}

/// Whether a room is listed in a section of a sync response.
fn listed(response: &Value, section: &str, room: &str) -> bool {
    response["rooms"][section].get(room).is_some()
}

/// The sections of a sync response that list a room.
fn sections_of(response: &Value, room: &str) -> Vec<&'static str> {
    ["join", "invite", "knock", "leave"]
        .into_iter()
        .filter(|section| listed(response, section, room))
        .collect()
}

async fn post_membership(server: &TestServer, user: &User, path: &str, body: Value) {
    ok(server
        .post(&format!("{C}/{path}"), Some(&user.token), body)
        .await);
}

async fn knocks_show_until_answered(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    // Knocking needs room version 7 or later; the oldest and the newest.
    for version in ["7", "12"] {
        let room = create_room(
            &server,
            &alice,
            json!({
                "room_version": version,
                "name": "Door",
                "initial_state": [{
                    "type": "m.room.join_rules", "state_key": "",
                    "content": {"join_rule": "knock"}
                }]
            }),
        )
        .await;
        let knocked = format!("knock/{}", enc(&room));
        let since = next_batch(&sync(&server, &bob, "").await);
        post_membership(&server, &bob, &knocked, json!({"reason": "let me in"})).await;

        // Incremental and initial: under `knock`, with stripped state that
        // holds the knock itself, the name and the join rules.
        let update = sync_since(&server, &bob, &since).await;
        let initial = sync(&server, &bob, "").await;
        for response in [&update, &initial] {
            assert_eq!(
                sections_of(response, &room),
                ["knock"],
                "{version}: {response}"
            );
            let state = response["rooms"]["knock"][&room]["knock_state"]["events"]
                .as_array()
                .unwrap_or_else(|| panic!("{response}"));
            let find = |kind: &str, key: &str| {
                state
                    .iter()
                    .find(|e| e["type"] == kind && e["state_key"] == key)
                    .unwrap_or_else(|| panic!("{kind} in {response}"))
            };
            let own = find("m.room.member", &bob.id);
            assert_eq!(own["content"]["membership"], "knock");
            assert_eq!(own["content"]["reason"], "let me in");
            assert_eq!(own["sender"], bob.id.as_str());
            assert_eq!(find("m.room.name", "")["content"]["name"], "Door");
            assert_eq!(
                find("m.room.join_rules", "")["content"]["join_rule"],
                "knock"
            );
            assert_eq!(find("m.room.create", "")["sender"], alice.id.as_str());
            // Stripped state is just that: no event IDs, no timestamps.
            assert!(
                state.iter().all(|e| e.get("event_id").is_none()),
                "{response}"
            );
        }
        // Nothing new since: not listed again.
        let quiet = sync_since(&server, &bob, &next_batch(&update)).await;
        assert!(sections_of(&quiet, &room).is_empty(), "{quiet}");
        // The room sees the knock.
        let alice_view = sync(&server, &alice, "").await;
        assert!(
            alice_view["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["state_key"] == bob.id.as_str() && e["content"]["membership"] == "knock"),
            "{alice_view}"
        );

        // Accepted: an invite, no longer a knock; then joined.
        let since = next_batch(&update);
        let invite = format!("rooms/{}/invite", enc(&room));
        post_membership(&server, &alice, &invite, json!({"user_id": bob.id})).await;
        let invited = sync_since(&server, &bob, &since).await;
        assert_eq!(sections_of(&invited, &room), ["invite"], "{invited}");
        assert_eq!(
            sections_of(&sync(&server, &bob, "").await, &room),
            ["invite"]
        );
        join(&server, &bob, &room).await;
        let joined = sync_since(&server, &bob, &next_batch(&invited)).await;
        assert_eq!(sections_of(&joined, &room), ["join"], "{joined}");
        assert_eq!(sections_of(&sync(&server, &bob, "").await, &room), ["join"]);
        let leave = format!("rooms/{}/leave", enc(&room));
        post_membership(&server, &bob, &leave, json!({})).await;

        // Rejected (kicked): gone from `knock`, in `leave` on the next
        // incremental sync, ending with the rejection; absent from an
        // initial sync.
        let since = next_batch(&sync(&server, &carol, "").await);
        post_membership(&server, &carol, &knocked, json!({})).await;
        let knocking = sync_since(&server, &carol, &since).await;
        assert_eq!(sections_of(&knocking, &room), ["knock"], "{knocking}");
        let kick = format!("rooms/{}/kick", enc(&room));
        post_membership(
            &server,
            &alice,
            &kick,
            json!({"user_id": carol.id, "reason": "no"}),
        )
        .await;
        let rejected = sync_since(&server, &carol, &next_batch(&knocking)).await;
        assert_eq!(sections_of(&rejected, &room), ["leave"], "{rejected}");
        let last = rejected["rooms"]["leave"][&room]["timeline"]["events"]
            .as_array()
            .and_then(|events| events.last().cloned())
            .unwrap_or_else(|| panic!("{rejected}"));
        assert_eq!(last["type"], "m.room.member", "{rejected}");
        assert_eq!(last["state_key"], carol.id.as_str());
        assert_eq!(last["content"]["membership"], "leave");
        assert_eq!(last["sender"], alice.id.as_str());
        assert!(sections_of(&sync(&server, &carol, "").await, &room).is_empty());
        // Knocked and rejected within one sync's range: only `leave`.
        post_membership(&server, &carol, &knocked, json!({})).await;
        post_membership(&server, &alice, &kick, json!({"user_id": carol.id})).await;
        let both = sync_since(&server, &carol, &next_batch(&rejected)).await;
        assert_eq!(sections_of(&both, &room), ["leave"], "{both}");

        // Retracted (the knocker leaves): likewise.
        let since = next_batch(&sync(&server, &dave, "").await);
        post_membership(&server, &dave, &knocked, json!({})).await;
        let knocking = sync_since(&server, &dave, &since).await;
        assert_eq!(sections_of(&knocking, &room), ["knock"], "{knocking}");
        post_membership(&server, &dave, &leave, json!({})).await;
        let retracted = sync_since(&server, &dave, &next_batch(&knocking)).await;
        assert_eq!(sections_of(&retracted, &room), ["leave"], "{retracted}");
        let last = retracted["rooms"]["leave"][&room]["timeline"]["events"]
            .as_array()
            .and_then(|events| events.last().cloned())
            .unwrap_or_else(|| panic!("{retracted}"));
        assert_eq!(last["content"]["membership"], "leave");
        assert!(sections_of(&sync(&server, &dave, "").await, &room).is_empty());
    }
}

async fn include_leave_lists_left_rooms(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let carol = server.user("carol").await;
    join(&server, &carol, &room).await;
    let include_leave = json!({"room": {"include_leave": true}});
    send_text(&server, &alice, &room, "before").await;
    let since = next_batch(&sync(&server, &bob, "").await);
    send_text(&server, &alice, &room, "just before").await;
    let leave = format!("{C}/rooms/{}/leave", enc(&room));
    ok(server.post(&leave, Some(&bob.token), json!({})).await);
    send_text(&server, &alice, &room, "after").await;
    let ban = format!("{C}/rooms/{}/ban", enc(&room));
    ok(server
        .post(&ban, Some(&alice.token), json!({"user_id": carol.id}))
        .await);
    send_text(&server, &alice, &room, "after the ban").await;

    // Without include_leave an initial sync leaves the room out.
    for user in [&bob, &carol] {
        let initial = sync(&server, user, "").await;
        assert!(sections_of(&initial, &room).is_empty(), "{initial}");
        let explicit = sync_filtered(
            &server,
            user,
            &json!({"room": {"include_leave": false}}),
            None,
        )
        .await;
        assert!(sections_of(&explicit, &room).is_empty(), "{explicit}");
    }

    // With it: under `leave`, the timeline up to the leave, nothing after,
    // and the room's state.
    let initial = sync_filtered(&server, &bob, &include_leave, None).await;
    assert_eq!(sections_of(&initial, &room), ["leave"], "{initial}");
    let section = &initial["rooms"]["leave"][&room];
    assert_eq!(bodies(&initial, "leave", &room), ["before", "just before"]);
    let last = section["timeline"]["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["state_key"], bob.id.as_str());
    assert_eq!(last["content"]["membership"], "leave");
    // Between them, `state` and the timeline hold the room's state.
    let everything: Vec<&Value> = section["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(section["timeline"]["events"].as_array().unwrap())
        .collect();
    for kind in ["m.room.create", "m.room.name", "m.room.power_levels"] {
        assert!(
            everything.iter().any(|e| e["type"] == kind),
            "{kind}: {section}"
        );
    }
    // A short timeline: the state before it is in `state`.
    let short = json!({"room": {"include_leave": true, "timeline": {"limit": 3}}});
    let response = sync_filtered(&server, &bob, &short, None).await;
    let section = &response["rooms"]["leave"][&room];
    assert_eq!(section["timeline"]["limited"], true, "{section}");
    assert_eq!(bodies(&response, "leave", &room), ["before", "just before"]);
    let state = section["state"]["events"].as_array().unwrap();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Lobby"),
        "{section}"
    );
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.id.as_str()
            && e["content"]["membership"] == "join"),
        "{section}"
    );
    // A ban is a way of leaving too.
    let banned = sync_filtered(&server, &carol, &include_leave, None).await;
    assert_eq!(sections_of(&banned, &room), ["leave"], "{banned}");
    assert_eq!(
        bodies(&banned, "leave", &room),
        ["before", "just before", "after"]
    );
    let last = banned["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["content"]["membership"], "ban");
    // A filter stored on the server works the same.
    let created = ok(server
        .post(
            &format!("{C}/user/{}/filter", enc(&bob.id)),
            Some(&bob.token),
            include_leave.clone(),
        )
        .await);
    let id = created["filter_id"].as_str().unwrap();
    let stored = sync(&server, &bob, &format!("filter={id}")).await;
    assert_eq!(sections_of(&stored, &room), ["leave"], "{stored}");

    // Incremental: a leave since `since` shows with or without the flag,
    // with only what happened in between.
    for response in [
        sync_since(&server, &bob, &since).await,
        sync_filtered(&server, &bob, &include_leave, Some(&since)).await,
    ] {
        assert_eq!(sections_of(&response, &room), ["leave"], "{response}");
        assert_eq!(bodies(&response, "leave", &room), ["just before"]);
        let events = response["rooms"]["leave"][&room]["timeline"]["events"]
            .as_array()
            .unwrap();
        assert_eq!(events.last().unwrap()["content"]["membership"], "leave");
    }
    // A leave before `since` is not repeated, even with the flag.
    let later = next_batch(&initial);
    send_text(&server, &alice, &room, "much later").await;
    for response in [
        sync_since(&server, &bob, &later).await,
        sync_filtered(&server, &bob, &include_leave, Some(&later)).await,
    ] {
        assert!(sections_of(&response, &room).is_empty(), "{response}");
    }
    // Joining again: back under `join` only.
    join(&server, &bob, &room).await;
    let rejoined = sync_filtered(&server, &bob, &include_leave, None).await;
    assert_eq!(sections_of(&rejoined, &room), ["join"], "{rejoined}");
}

async fn thread_notifications_are_counted_per_thread(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let per_thread = json!({"room": {"timeline": {"unread_thread_notifications": true}}});
    let send = |content: Value| {
        let server = &server;
        let alice = &alice;
        let room = &room;
        async move {
            let path = format!("{C}/rooms/{}/send/m.room.message/{}", enc(room), txn());
            ok(server.put(&path, alice, content).await)["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let in_thread = |root: &str, body: &str, mention: Option<&str>| {
        let mut content = json!({
            "msgtype": "m.text", "body": body,
            "m.relates_to": {
                "rel_type": "m.thread", "event_id": root,
                "is_falling_back": true, "m.in_reply_to": {"event_id": root}
            }
        });
        if let Some(user) = mention {
            content["m.mentions"] = json!({"user_ids": [user]});
        }
        content
    };
    let root = send(json!({"msgtype": "m.text", "body": "root"})).await;
    let other_root = send(json!({"msgtype": "m.text", "body": "other root"})).await;
    send(in_thread(&root, "reply one", None)).await;
    let reply_two = send(in_thread(&root, "reply two, bob", Some(&bob.id))).await;
    send(in_thread(&other_root, "elsewhere", None)).await;
    let main_two = send(json!({"msgtype": "m.text", "body": "main again"})).await;

    let count = |response: &Value, path: &[&str], key: &str| -> u64 {
        let mut value = &response["rooms"]["join"][&room];
        for part in path {
            value = &value[part];
        }
        value[key].as_u64().unwrap_or(0)
    };
    let room_counts = |response: &Value| {
        (
            count(response, &["unread_notifications"], "notification_count"),
            count(response, &["unread_notifications"], "highlight_count"),
        )
    };
    let thread_counts = |response: &Value, thread: &str| {
        (
            count(
                response,
                &["unread_thread_notifications", thread],
                "notification_count",
            ),
            count(
                response,
                &["unread_thread_notifications", thread],
                "highlight_count",
            ),
        )
    };

    // Without the flag: everything counts for the room, nothing per thread.
    let plain = sync(&server, &bob, "").await;
    assert_eq!(room_counts(&plain), (6, 1), "{plain}");
    assert!(
        plain["rooms"]["join"][&room]
            .get("unread_thread_notifications")
            .is_none_or(|t| t.as_object().is_some_and(|t| t.is_empty())),
        "{plain}"
    );
    // With it: the room's counts are the main timeline's (roots belong to
    // it), each thread apart.
    let threaded = sync_filtered(&server, &bob, &per_thread, None).await;
    assert_eq!(room_counts(&threaded), (3, 0), "{threaded}");
    assert_eq!(thread_counts(&threaded, &root), (2, 1), "{threaded}");
    assert_eq!(thread_counts(&threaded, &other_root), (1, 0), "{threaded}");
    assert_eq!(
        threaded["rooms"]["join"][&room]["unread_thread_notifications"]
            .as_object()
            .unwrap()
            .len(),
        2,
        "{threaded}"
    );

    // A receipt in one thread clears that thread only.
    let receipt = |event: &str| format!("{C}/rooms/{}/receipt/m.read/{}", enc(&room), enc(event));
    let since = next_batch(&threaded);
    ok(server
        .post(
            &receipt(&reply_two),
            Some(&bob.token),
            json!({"thread_id": root}),
        )
        .await);
    let update = sync_filtered(&server, &bob, &per_thread, Some(&since)).await;
    assert_eq!(room_counts(&update), (3, 0), "{update}");
    assert_eq!(thread_counts(&update, &root), (0, 0), "{update}");
    assert_eq!(thread_counts(&update, &other_root), (1, 0), "{update}");
    // The receipt carries its thread to the room.
    let alice_view = sync(&server, &alice, "").await;
    let receipts = alice_view["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .cloned()
        .unwrap_or_else(|| panic!("{alice_view}"));
    assert_eq!(
        receipts["content"][&reply_two]["m.read"][&bob.id]["thread_id"],
        root.as_str(),
        "{receipts}"
    );
    // Without the flag the room's count drops by that thread.
    assert_eq!(room_counts(&sync(&server, &bob, "").await), (4, 0));

    // A receipt for the main timeline clears it, not the threads.
    let since = next_batch(&update);
    ok(server
        .post(
            &receipt(&main_two),
            Some(&bob.token),
            json!({"thread_id": "main"}),
        )
        .await);
    let update = sync_filtered(&server, &bob, &per_thread, Some(&since)).await;
    assert_eq!(room_counts(&update), (0, 0), "{update}");
    assert_eq!(thread_counts(&update, &other_root), (1, 0), "{update}");
    assert_eq!(room_counts(&sync(&server, &bob, "").await), (1, 0));

    // New activity in a read thread counts again, in that thread.
    let since = next_batch(&update);
    let reply_three = send(in_thread(&root, "reply three", None)).await;
    let update = sync_filtered(&server, &bob, &per_thread, Some(&since)).await;
    assert_eq!(room_counts(&update), (0, 0), "{update}");
    assert_eq!(thread_counts(&update, &root), (1, 0), "{update}");
    assert_eq!(thread_counts(&update, &other_root), (1, 0), "{update}");

    // An unthreaded receipt clears everything up to it.
    let since = next_batch(&update);
    ok(server
        .post(&receipt(&reply_three), Some(&bob.token), json!({}))
        .await);
    let update = sync_filtered(&server, &bob, &per_thread, Some(&since)).await;
    assert_eq!(room_counts(&update), (0, 0), "{update}");
    assert_eq!(thread_counts(&update, &root), (0, 0), "{update}");
    assert_eq!(thread_counts(&update, &other_root), (0, 0), "{update}");
    assert_eq!(room_counts(&sync(&server, &bob, "").await), (0, 0));

    // An event related to a threaded one otherwise than by `m.thread` (here
    // `m.reference`) is in that thread; one related to a thread root is in
    // the main timeline (spec: "Threaded read receipts").
    let since = next_batch(&update);
    send(json!({
        "msgtype": "m.text", "body": "about reply three",
        "m.relates_to": {"rel_type": "m.reference", "event_id": reply_three}
    }))
    .await;
    send(json!({
        "msgtype": "m.text", "body": "about the root",
        "m.relates_to": {"rel_type": "m.reference", "event_id": root}
    }))
    .await;
    let update = sync_filtered(&server, &bob, &per_thread, Some(&since)).await;
    assert_eq!(thread_counts(&update, &root), (1, 0), "{update}");
    assert_eq!(room_counts(&update), (1, 0), "{update}");
}

/// The server answers recent syncs and pages from memory, which a restart
/// empties: tokens from before it still get every event since, in order,
/// with a redaction applied on both sides of the restart, and pages reach
/// back across it.
async fn syncs_and_pages_span_a_restart(backend: Backend) {
    let mut server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let before = next_batch(&sync(&server, &bob, "").await);
    send_text(&server, &alice, &room, "before the restart").await;
    let doomed = send_text(&server, &alice, &room, "doomed").await;
    server.crash_and_restart().await;

    send_text(&server, &alice, &room, "after the restart").await;
    let redact = format!("{C}/rooms/{}/redact/{}/{}", enc(&room), enc(&doomed), txn());
    ok(server.put(&redact, &alice, json!({})).await);
    let update = sync_since(&server, &bob, &before).await;
    assert_eq!(
        bodies(&update, "join", &room),
        ["before the restart", "", "after the restart"],
        "{update}"
    );
    assert_ne!(update["rooms"]["join"][&room]["timeline"]["limited"], true);

    // After the restart everything is recent: one new event, no more.
    send_text(&server, &alice, &room, "latest").await;
    let latest = sync_since(&server, &bob, &next_batch(&update)).await;
    assert_eq!(bodies(&latest, "join", &room), ["latest"], "{latest}");

    // Newest first, across the restart, the redacted event without content.
    let path = format!("{C}/rooms/{}/messages?dir=b&limit=5", enc(&room));
    let page = ok(server.get(&path, Some(&bob.token)).await);
    let chunk = page["chunk"].as_array().unwrap();
    let listed: Vec<(&str, &str)> = chunk
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["content"]["body"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("m.room.message", "latest"),
            ("m.room.redaction", ""),
            ("m.room.message", "after the restart"),
            ("m.room.message", ""),
            ("m.room.message", "before the restart"),
        ],
        "{page}"
    );
    assert_eq!(chunk[3]["event_id"], doomed.as_str());
    assert_eq!(chunk[3]["content"], json!({}));
}

/// Forgetting a left room hides it from `include_leave` syncs, yet the
/// room-mates it was the last shared room with still show as `left`; a new
/// membership (an invite) brings the room back.
async fn a_forgotten_room_stays_hidden_until_a_new_membership(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let (alice, bob, room) = pair(&server).await;
    let include_leave = json!({"room": {"include_leave": true}});
    let since = next_batch(&sync(&server, &bob, "").await);

    let path = |action: &str| format!("{C}/rooms/{}/{action}", enc(&room));
    ok(server
        .post(&path("leave"), Some(&bob.token), json!({}))
        .await);
    ok(server
        .post(&path("forget"), Some(&bob.token), json!({}))
        .await);
    let update = sync_since(&server, &bob, &since).await;
    assert_eq!(
        update["device_lists"]["left"],
        json!([alice.id]),
        "bob shares no room with alice any more: {update}"
    );
    let initial = sync_filtered(&server, &bob, &include_leave, None).await;
    assert!(sections_of(&initial, &room).is_empty(), "{initial}");

    let before_invite = next_batch(&initial);
    ok(server
        .post(
            &path("invite"),
            Some(&alice.token),
            json!({"user_id": bob.id}),
        )
        .await);
    let invited = sync_since(&server, &bob, &before_invite).await;
    assert_eq!(sections_of(&invited, &room), ["invite"], "{invited}");
    join(&server, &bob, &room).await;
    let rejoined = sync_filtered(&server, &bob, &include_leave, None).await;
    assert_eq!(sections_of(&rejoined, &room), ["join"], "{rejoined}");
}
