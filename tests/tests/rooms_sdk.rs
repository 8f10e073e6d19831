//! A real client in a room: matrix-sdk creates a room, invites, joins, talks,
//! sets the topic, redacts, reads history backwards and leaves.
//!
//! There is no /sync yet, so every `Room` comes from the call that created or
//! joined it, and nothing here reads the SDK's sync-fed local room state;
//! where the server's view matters, the test asks the server over HTTP.

// With its encryption machine, matrix-sdk's futures nest deeper than the default limit.
#![recursion_limit = "256"]

use matrix_sdk::{
    Client, Room,
    room::MessagesOptions,
    ruma::{
        api::{
            client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
            error::ErrorKind,
        },
        events::{
            AnySyncMessageLikeEvent, AnySyncStateEvent, AnySyncTimelineEvent,
            room::message::{RoomMessageEventContent, SyncRoomMessageEvent},
        },
    },
};
use myelin_tests::{Backend, TestServer, on_both_backends};
use serde_json::Value;

on_both_backends! {
    sdk_users_talk_in_a_room => sdk_users_talk_in_a_room,
}

const PASSWORD: &str = "correct horse battery";

async fn logged_in(server: &TestServer, localpart: &str) -> Client {
    server.register_user(localpart, PASSWORD, false).await;
    let client = Client::builder()
        .homeserver_url(&server.base_url)
        .build()
        .await
        .expect("client builds");
    client
        .matrix_auth()
        .login_username(localpart, PASSWORD)
        .send()
        .await
        .expect("login");
    client
}

/// The whole timeline, read backwards through the SDK page by page until
/// the server sends no `end` token; returned oldest first.
async fn timeline(room: &Room) -> Vec<AnySyncTimelineEvent> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..50 {
        let page = room
            .messages(MessagesOptions::backward().from(from.as_deref()))
            .await
            .expect("messages");
        for event in &page.chunk {
            events.push(event.raw().deserialize().expect("a well-formed event"));
        }
        match page.end {
            Some(end) => from = Some(end),
            None => {
                events.reverse();
                return events;
            }
        }
    }
    panic!("pagination never ended");
}

async fn server_get(server: &TestServer, client: &Client, path: &str) -> Value {
    let token = client.access_token().expect("logged in");
    let (status, body) = server
        .get(&format!("/_matrix/client/v3{path}"), Some(&token))
        .await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn sdk_users_talk_in_a_room(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = logged_in(&server, "alice").await;
    let bob = logged_in(&server, "bob").await;
    let alice_id = alice.user_id().expect("alice").to_owned();
    let bob_id = bob.user_id().expect("bob").to_owned();

    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    request.name = Some("SDK corner".to_owned());
    let room = alice.create_room(request).await.expect("create room");
    let room_id = room.room_id().to_owned();
    assert!(room_id.as_str().ends_with(":myelin.test"), "{room_id}");

    // Invite-only: Bob cannot walk in before he is invited.
    let refused = bob
        .join_room_by_id(&room_id)
        .await
        .expect_err("joining needs an invite");
    assert!(
        matches!(refused.client_api_error_kind(), Some(ErrorKind::Forbidden)),
        "{refused:?}"
    );

    room.invite_user_by_id(&bob_id).await.expect("invite");
    let bobs_room = bob
        .join_room_by_id(&room_id)
        .await
        .expect("join after the invite");
    assert_eq!(bobs_room.room_id(), room_id);
    let joined = server_get(&server, &bob, "/joined_rooms").await;
    assert!(
        joined["joined_rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|id| id == room_id.as_str()),
        "{joined}"
    );

    let text = RoomMessageEventContent::text_plain;
    let hello = room
        .send(text("hello bob"))
        .await
        .expect("alice sends")
        .response
        .event_id;
    bobs_room.send(text("hi alice")).await.expect("bob sends");
    let oops = room
        .send(text("oops, wrong room"))
        .await
        .expect("alice sends")
        .response
        .event_id;
    room.set_room_topic("Trying out the SDK")
        .await
        .expect("topic");
    let redaction = room
        .redact(&oops, Some("wrong room"), None)
        .await
        .expect("redact")
        .event_id;
    room.send(text("bye")).await.expect("alice sends");

    // Bob reads it all back, in order, with the mistake redacted.
    let events = timeline(&bobs_room).await;
    let mut seen = Vec::new();
    for event in &events {
        match event {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                SyncRoomMessageEvent::Original(message),
            )) => {
                if message.content.body() == "hello bob" {
                    assert_eq!(message.event_id, hello);
                    assert_eq!(message.sender, alice_id);
                }
                seen.push(message.content.body().to_owned());
            }
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                SyncRoomMessageEvent::Redacted(message),
            )) => {
                assert_eq!(message.event_id, oops);
                seen.push("<redacted>".to_owned());
            }
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomRedaction(_)) => {
                assert_eq!(event.event_id(), redaction);
                seen.push("<redaction>".to_owned());
            }
            AnySyncTimelineEvent::State(AnySyncStateEvent::RoomTopic(topic)) => {
                let topic = topic.as_original().expect("an unredacted topic");
                seen.push(format!("topic: {}", topic.content.topic));
            }
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            "hello bob",
            "hi alice",
            "<redacted>",
            "topic: Trying out the SDK",
            "<redaction>",
            "bye",
        ]
    );
    let first = events.first().expect("a timeline");
    assert_eq!(first.event_type().to_string(), "m.room.create");

    // Bob leaves. The SDK treats a refused leave as done, so ask the server.
    bobs_room.leave().await.expect("leave");
    let joined = server_get(&server, &bob, "/joined_rooms").await;
    assert!(
        !joined["joined_rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|id| id == room_id.as_str()),
        "{joined}"
    );
    let members = server_get(&server, &alice, &format!("/rooms/{room_id}/joined_members")).await;
    assert!(
        members["joined"].get(alice_id.as_str()).is_some(),
        "{members}"
    );
    assert!(
        members["joined"].get(bob_id.as_str()).is_none(),
        "{members}"
    );
    let membership = server_get(
        &server,
        &alice,
        &format!("/rooms/{room_id}/state/m.room.member/{bob_id}"),
    )
    .await;
    assert_eq!(membership["membership"], "leave", "{membership}");
}
