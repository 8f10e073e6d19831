//! Every stored event is a real PDU: read straight from the database, its
//! content hash and signature verify with ruma's functions against the
//! server's published key, and its event ID is the room version's format
//! (the reference hash from version 3 on). A signing bug cannot hide
//! behind the client API, which never shows hashes or signatures.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use myelin_tests::{Backend, SERVER_NAME, TestServer};
use ruma::{
    CanonicalJsonObject, RoomVersionId,
    serde::Base64,
    signatures::{Verified, reference_hash, verify_event},
};
use serde_json::json;
use sqlx::{Connection, Row, SqliteConnection};

/// The server's public key, derived from its key file in Synapse's format.
fn public_key(server: &TestServer) -> (String, Base64) {
    let path = server.dir.0.join(format!("data/{SERVER_NAME}.signing.key"));
    let text = std::fs::read_to_string(path).expect("signing key file");
    let mut parts = text.split_whitespace();
    let (algorithm, version, seed) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert_eq!(algorithm, "ed25519");
    let seed: [u8; 32] = STANDARD_NO_PAD.decode(seed).unwrap().try_into().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    (
        format!("ed25519:{version}"),
        Base64::new(key.to_bytes().to_vec()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_verify_with_ruma_in_every_room_version() {
    let server = TestServer::start(Backend::Sqlite, "").await;
    let (_, token) = server
        .register_user("signer", "correct horse battery", false)
        .await;

    let mut rooms = Vec::new();
    for version in [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
    ] {
        let (status, body) = server
            .post(
                "/_matrix/client/v3/createRoom",
                Some(&token),
                json!({ "room_version": version, "name": "signed" }),
            )
            .await;
        assert_eq!(status, 200, "{version}: {body}");
        let room_id = body["room_id"].as_str().unwrap().to_owned();
        let (status, _) = server
            .request(
                reqwest::Method::PUT,
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t{version}"),
                Some(&token),
                Some(json!({ "msgtype": "m.text", "body": "hello" })),
            )
            .await;
        assert_eq!(status, 200);
        rooms.push((room_id, version));
    }

    let (key_id, key) = public_key(&server);
    let keys = BTreeMap::from([(SERVER_NAME.to_owned(), BTreeMap::from([(key_id, key)]))]);
    let mut db = SqliteConnection::connect(&server.database_url().await)
        .await
        .unwrap();
    let mut checked = 0;
    for (room_id, version) in &rooms {
        let rules = RoomVersionId::try_from(*version).unwrap().rules().unwrap();
        let rows = sqlx::query("SELECT event_id, json FROM events WHERE room_id = $1")
            .bind(room_id)
            .fetch_all(&mut db)
            .await
            .unwrap();
        assert!(
            rows.len() >= 7,
            "version {version}: the initial events and the message"
        );
        for row in rows {
            let event_id: String = row.get("event_id");
            let pdu: CanonicalJsonObject =
                serde_json::from_str(row.get::<&str, _>("json")).unwrap();
            assert_eq!(
                verify_event(&keys, &pdu, &rules)
                    .unwrap_or_else(|e| panic!("v{version} {event_id}: {e}")),
                Verified::All,
                "v{version} {event_id}: content hash matches"
            );
            match *version {
                "1" | "2" => {
                    assert!(event_id.ends_with(&format!(":{SERVER_NAME}")), "{event_id}");
                    assert_eq!(pdu["event_id"].as_str(), Some(event_id.as_str()));
                }
                _ => {
                    assert_eq!(
                        event_id,
                        format!("${}", reference_hash(&pdu, &rules).unwrap())
                    );
                    let url_safe = !event_id.contains('+') && !event_id.contains('/');
                    assert!(
                        *version == "3" || url_safe,
                        "v{version}: {event_id} is URL-safe"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 84);

    // Tampering is noticed: the same check fails on an altered event.
    let row = sqlx::query("SELECT json FROM events WHERE type = 'm.room.message' LIMIT 1")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let mut pdu: CanonicalJsonObject = serde_json::from_str(row.get::<&str, _>("json")).unwrap();
    pdu.insert(
        "origin_server_ts".into(),
        ruma::CanonicalJsonValue::Integer(1u32.into()),
    );
    let rules = RoomVersionId::V10.rules().unwrap();
    assert!(verify_event(&keys, &pdu, &rules).is_err());
}
