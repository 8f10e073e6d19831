//! End-to-end encryption with a real client: matrix-sdk (Element's Rust
//! core, with its Olm/Megolm machine) encrypts as Alice; Bob decrypts on two
//! devices, the second of which can only have got the room key by
//! send-to-device through this server.

// With its encryption machine, matrix-sdk's futures nest deeper than the default limit.
#![recursion_limit = "256"]

use std::time::Duration;

use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoomRequest,
        events::{
            AnyInitialStateEvent, EmptyStateKey, InitialStateEvent,
            room::{
                encryption::RoomEncryptionEventContent,
                message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
            },
        },
        serde::Raw,
    },
};
use myelin_tests::{Backend, PASSWORD, TestServer, enc, ok, on_both_backends};
use tokio::sync::mpsc;

on_both_backends! {
    an_encrypted_message_decrypts_on_every_device => an_encrypted_message_decrypts_on_every_device,
}

async fn client(server: &TestServer, localpart: &str, device: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(&server.base_url)
        .build()
        .await
        .expect("client builds");
    client
        .matrix_auth()
        .login_username(localpart, PASSWORD)
        .device_id(device)
        .send()
        .await
        .expect("login");
    // The first sync uploads the device's identity and one-time keys.
    client
        .sync_once(SyncSettings::default())
        .await
        .expect("first sync");
    client
}

/// Runs a sync loop and forwards the body of every decrypted text message.
fn receive_messages(client: &Client) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    client.add_event_handler(move |event: OriginalSyncRoomMessageEvent, _: Room| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event.content.body().to_owned());
        }
    });
    let client = client.clone();
    tokio::spawn(async move {
        client
            .sync(SyncSettings::default().timeout(Duration::from_secs(5)))
            .await
    });
    rx
}

async fn next_message(messages: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(30), messages.recv())
        .await
        .expect("the message was decrypted in time")
        .expect("the sync loop runs")
}

async fn an_encrypted_message_decrypts_on_every_device(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server.register_user("alice", PASSWORD, false).await;
    server.register_user("bob", PASSWORD, false).await;
    let alice = client(&server, "alice", "ALICEDEVICE").await;
    let bob = client(&server, "bob", "BOBPHONE").await;
    let bob_laptop = client(&server, "bob", "BOBLAPTOP").await;

    let mut request = CreateRoomRequest::new();
    request.invite = vec![bob.user_id().unwrap().to_owned()];
    let encryption: Raw<AnyInitialStateEvent> = Raw::new(&InitialStateEvent::new(
        EmptyStateKey,
        RoomEncryptionEventContent::with_recommended_defaults(),
    ))
    .unwrap()
    .cast_unchecked();
    request.initial_state = vec![encryption];
    let room = alice.create_room(request).await.expect("room created");

    bob.sync_once(SyncSettings::default()).await.expect("sync");
    bob.join_room_by_id(room.room_id()).await.expect("join");
    let mut on_phone = receive_messages(&bob);
    let mut on_laptop = receive_messages(&bob_laptop);

    // Alice learns Bob joined; sending then queries his devices, claims a
    // one-time key for each and sends them the room key by to-device.
    alice
        .sync_once(SyncSettings::default())
        .await
        .expect("sync");
    let room = alice.get_room(room.room_id()).expect("alice's room");
    assert!(room.latest_encryption_state().await.unwrap().is_encrypted());
    let sent = room
        .send(RoomMessageEventContent::text_plain("only for bob's eyes"))
        .await
        .expect("send");

    assert_eq!(next_message(&mut on_phone).await, "only for bob's eyes");
    assert_eq!(next_message(&mut on_laptop).await, "only for bob's eyes");

    // What the server stored is ciphertext.
    let token = bob.access_token().unwrap();
    let stored = ok(server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(room.room_id().as_str()),
                enc(sent.response.event_id.as_str())
            ),
            Some(&token),
        )
        .await);
    assert_eq!(stored["type"], "m.room.encrypted", "{stored}");
    assert!(!stored.to_string().contains("only for bob's eyes"));
}
