//! A real client's sync loop: matrix-sdk (Element's Rust core) syncs as Bob
//! and sees Alice's message, typing notice and read receipt arrive.

// With its encryption machine, matrix-sdk's futures nest deeper than the default limit.
#![recursion_limit = "256"]

use std::time::Duration;

use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    ruma::{
        OwnedUserId,
        api::client::{
            receipt::create_receipt::v3::ReceiptType,
            room::create_room::v3::Request as CreateRoomRequest,
        },
        events::{
            receipt::{ReceiptThread, SyncReceiptEvent},
            room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
            typing::SyncTypingEvent,
        },
    },
};
use myelin_tests::{Backend, TestServer, on_both_backends};
use tokio::sync::mpsc;

on_both_backends! {
    an_sdk_sync_loop_sees_messages_typing_and_receipts => an_sdk_sync_loop_sees_messages_typing_and_receipts,
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

enum Seen {
    Message(String),
    Typing(Vec<OwnedUserId>),
    Receipt(String),
}

async fn expect<T>(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    mut pick: impl FnMut(Seen) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(found) = pick(seen.recv().await.expect("the sync loop runs")) {
                return found;
            }
        }
    })
    .await
    .expect("the event arrived through sync")
}

async fn an_sdk_sync_loop_sees_messages_typing_and_receipts(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = logged_in(&server, "alice").await;
    let bob = logged_in(&server, "bob").await;
    let bob_id = bob.user_id().unwrap().to_owned();

    let mut request = CreateRoomRequest::new();
    request.invite = vec![bob_id.clone()];
    let room = alice.create_room(request).await.expect("room created");

    // Bob learns of the invite through sync and joins.
    bob.sync_once(SyncSettings::default())
        .await
        .expect("first sync");
    let invited = bob.get_room(room.room_id()).expect("the invite arrived");
    assert_eq!(invited.state(), matrix_sdk::RoomState::Invited);
    let joined = bob.join_room_by_id(room.room_id()).await.expect("join");
    assert_eq!(joined.room_id(), room.room_id());

    let (tx, mut seen) = mpsc::unbounded_channel();
    let on_message = tx.clone();
    bob.add_event_handler(move |event: OriginalSyncRoomMessageEvent, _: Room| {
        let tx = on_message.clone();
        async move {
            let _ = tx.send(Seen::Message(event.content.body().to_owned()));
        }
    });
    let on_typing = tx.clone();
    bob.add_event_handler(move |event: SyncTypingEvent| {
        let tx = on_typing.clone();
        async move {
            let _ = tx.send(Seen::Typing(event.content.user_ids));
        }
    });
    bob.add_event_handler(move |event: SyncReceiptEvent| {
        let tx = tx.clone();
        async move {
            for (event_id, receipts) in event.content.0 {
                if receipts.contains_key(&matrix_sdk::ruma::events::receipt::ReceiptType::Read) {
                    let _ = tx.send(Seen::Receipt(event_id.to_string()));
                }
            }
        }
    });
    let syncing = {
        let bob = bob.clone();
        tokio::spawn(async move {
            bob.sync(SyncSettings::default().timeout(Duration::from_secs(30)))
                .await
        })
    };

    let sent = room
        .send(RoomMessageEventContent::text_plain("hello from alice"))
        .await
        .expect("send");
    let body = expect(&mut seen, |s| match s {
        Seen::Message(body) => Some(body),
        _ => None,
    })
    .await;
    assert_eq!(body, "hello from alice");

    room.typing_notice(true).await.expect("typing");
    let typing = expect(&mut seen, |s| match s {
        Seen::Typing(users) if !users.is_empty() => Some(users),
        _ => None,
    })
    .await;
    assert_eq!(typing, [alice.user_id().unwrap().to_owned()]);

    room.send_single_receipt(
        ReceiptType::Read,
        ReceiptThread::Unthreaded,
        sent.response.event_id.clone(),
    )
    .await
    .expect("receipt");
    let receipt = expect(&mut seen, |s| match s {
        Seen::Receipt(event_id) => Some(event_id),
        _ => None,
    })
    .await;
    assert_eq!(receipt, sent.response.event_id.to_string());
    syncing.abort();
}
