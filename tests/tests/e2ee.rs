//! End-to-end encryption support through the client API, on both backends:
//! device keys, one-time and fallback keys, key queries and claims,
//! device-list changes in `/keys/changes` and `/sync`, cross-signing, and
//! server-side key backup, with the errors bad input gets. Keys are signed
//! here with real ed25519 keys, independently of the server's code.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ed25519_dalek::{Signer, SigningKey};
use myelin_tests::{Backend, PASSWORD, TestServer, User, assert_error, enc, ok, on_both_backends};
use serde_json::{Value, json};

on_both_backends! {
    device_and_one_time_keys_are_published_and_claimed => device_and_one_time_keys_are_published_and_claimed,
    device_list_changes_reach_room_mates => device_list_changes_reach_room_mates,
    cross_signing_keys_and_signatures => cross_signing_keys_and_signatures,
    room_keys_are_backed_up_by_the_spec_rules => room_keys_are_backed_up_by_the_spec_rules,
}

const C: &str = "/_matrix/client/v3";

fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

fn public(key: &SigningKey) -> String {
    STANDARD_NO_PAD.encode(key.verifying_key().as_bytes())
}

/// Signs `object` (without its `signatures` and `unsigned`) in canonical
/// JSON: keys sorted (serde_json's map is ordered), no whitespace.
fn sign(object: &mut Value, user: &str, key_name: &str, key: &SigningKey) {
    let mut signed = object.clone();
    let map = signed.as_object_mut().unwrap();
    map.remove("signatures");
    map.remove("unsigned");
    let signature = STANDARD_NO_PAD.encode(key.sign(signed.to_string().as_bytes()).to_bytes());
    if !object["signatures"].is_object() {
        object["signatures"] = json!({});
    }
    if !object["signatures"][user].is_object() {
        object["signatures"][user] = json!({});
    }
    object["signatures"][user][format!("ed25519:{key_name}")] = json!(signature);
}

/// A device: its access token and identity key.
struct Device {
    user: String,
    id: String,
    token: String,
    key: SigningKey,
}

impl Device {
    async fn login(server: &TestServer, localpart: &str, device_id: &str) -> Device {
        let login = ok(server
            .post(
                &format!("{C}/login"),
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
                       "password": PASSWORD, "device_id": device_id}),
            )
            .await);
        Device {
            user: login["user_id"].as_str().unwrap().to_owned(),
            id: device_id.to_owned(),
            token: login["access_token"].as_str().unwrap().to_owned(),
            key: new_key(),
        }
    }

    fn device_keys(&self) -> Value {
        let mut keys = json!({
            "user_id": self.user,
            "device_id": self.id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.id): STANDARD_NO_PAD.encode(rand::random::<[u8; 32]>()),
                format!("ed25519:{}", self.id): public(&self.key),
            },
        });
        sign(&mut keys, &self.user, &self.id, &self.key);
        keys
    }

    fn one_time_key(&self) -> Value {
        let mut key = json!({ "key": STANDARD_NO_PAD.encode(rand::random::<[u8; 32]>()) });
        sign(&mut key, &self.user, &self.id, &self.key);
        key
    }

    async fn upload(&self, server: &TestServer, body: Value) -> (reqwest::StatusCode, Value) {
        server
            .post(&format!("{C}/keys/upload"), Some(&self.token), body)
            .await
    }

    async fn sync(&self, server: &TestServer, since: Option<&str>) -> Value {
        let query = since.map_or(String::new(), |s| format!("&since={}", enc(s)));
        ok(server
            .get(&format!("{C}/sync?timeout=0{query}"), Some(&self.token))
            .await)
    }
}

async fn device_and_one_time_keys_are_published_and_claimed(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server.user("alice").await;
    let bob = server.user("bob").await;
    let alice = Device::login(&server, "alice", "ALICEPHONE").await;

    // Identity keys must be the token's user and device, signed by the device.
    let mut wrong_user = alice.device_keys();
    wrong_user["user_id"] = json!(bob.id);
    sign(&mut wrong_user, &alice.user, &alice.id, &alice.key);
    assert_error(
        &alice
            .upload(&server, json!({"device_keys": wrong_user}))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    let mut wrong_device = alice.device_keys();
    wrong_device["device_id"] = json!("OTHERDEVICE");
    sign(&mut wrong_device, &alice.user, &alice.id, &alice.key);
    assert_error(
        &alice
            .upload(&server, json!({"device_keys": wrong_device}))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    let mut forged = alice.device_keys();
    sign(&mut forged, &alice.user, &alice.id, &new_key());
    assert_error(
        &alice.upload(&server, json!({"device_keys": forged})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice
            .upload(&server, json!({"device_keys": "not an object"}))
            .await,
        400,
        "M_BAD_JSON",
    );

    let device_keys = alice.device_keys();
    let otks = json!({
        "signed_curve25519:AAAAAQ": alice.one_time_key(),
        "signed_curve25519:AAAAAg": alice.one_time_key(),
    });
    let fallback = json!({ "signed_curve25519:AAAAAw": alice.one_time_key() });
    let uploaded = ok(alice
        .upload(
            &server,
            json!({"device_keys": device_keys, "one_time_keys": otks, "fallback_keys": fallback}),
        )
        .await);
    assert_eq!(uploaded["one_time_key_counts"]["signed_curve25519"], 2);

    // The same key again is fine; the same ID with other content is refused.
    let again = ok(alice.upload(&server, json!({"one_time_keys": {"signed_curve25519:AAAAAQ": otks["signed_curve25519:AAAAAQ"]}})).await);
    assert_eq!(again["one_time_key_counts"]["signed_curve25519"], 2);
    assert_error(
        &alice
            .upload(
                &server,
                json!({"one_time_keys": {"signed_curve25519:AAAAAQ": alice.one_time_key()}}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // Sync reports the counts and the unused fallback key.
    let sync = alice.sync(&server, None).await;
    assert_eq!(
        sync["device_one_time_keys_count"]["signed_curve25519"], 2,
        "{sync}"
    );
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Bob sees the keys exactly as signed, with the device's name.
    let query = ok(server
        .post(
            &format!("{C}/keys/query"),
            Some(&bob.token),
            json!({"device_keys": {alice.user.clone(): []}}),
        )
        .await);
    let served = &query["device_keys"][&alice.user]["ALICEPHONE"];
    let mut signed_part = served.clone();
    signed_part.as_object_mut().unwrap().remove("unsigned");
    assert_eq!(signed_part, device_keys);
    assert!(
        served["unsigned"]
            .as_object()
            .unwrap()
            .contains_key("device_display_name")
    );
    // Asking for an unknown device gives nothing for it, not an error.
    let none = ok(server
        .post(
            &format!("{C}/keys/query"),
            Some(&bob.token),
            json!({"device_keys": {alice.user.clone(): ["NOSUCH"]}}),
        )
        .await);
    assert_eq!(none["device_keys"][&alice.user], json!({}));

    // Claims take one-time keys, then the fallback key (again and again).
    let claim = json!({"one_time_keys": {alice.user.clone(): {"ALICEPHONE": "signed_curve25519"}}});
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let response = ok(server
            .post(&format!("{C}/keys/claim"), Some(&bob.token), claim.clone())
            .await);
        let keys = response["one_time_keys"][&alice.user]["ALICEPHONE"]
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(keys.len(), 1, "{response}");
        claimed.push(keys.into_iter().next().unwrap());
    }
    assert_eq!(claimed[0].1, otks[&claimed[0].0]);
    assert_eq!(claimed[1].1, otks[&claimed[1].0]);
    assert_ne!(claimed[0].0, claimed[1].0);
    assert_eq!(claimed[2].0, "signed_curve25519:AAAAAw");
    assert_eq!(claimed[3].0, "signed_curve25519:AAAAAw");
    let sync = alice.sync(&server, None).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));

    // A claim for an unknown device or user is an empty result.
    let unknown = ok(server
        .post(
            &format!("{C}/keys/claim"),
            Some(&bob.token),
            json!({"one_time_keys": {alice.user.clone(): {"NOSUCH": "signed_curve25519"}, "@nobody:myelin.test": {"X": "signed_curve25519"}}}),
        )
        .await);
    assert_eq!(unknown["one_time_keys"], json!({}));

    // Logging in again as the same device revokes its old token but keeps
    // its keys: the client keeps its cryptographic identity.
    let again = Device::login(&server, "alice", "ALICEPHONE").await;
    assert_error(
        &server
            .get(&format!("{C}/account/whoami"), Some(&alice.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let kept = ok(server
        .post(
            &format!("{C}/keys/query"),
            Some(&bob.token),
            json!({"device_keys": {alice.user.clone(): []}}),
        )
        .await);
    assert!(
        kept["device_keys"][&alice.user]["ALICEPHONE"].is_object(),
        "{kept}"
    );
    let alice = again;

    // Deleting the device deletes its keys.
    let delete = server
        .post(
            &format!("{C}/delete_devices"),
            Some(&alice.token),
            json!({"devices": ["ALICEPHONE"], "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}}),
        )
        .await;
    assert_eq!(delete.0, 200, "{}", delete.1);
    let gone = ok(server
        .post(
            &format!("{C}/keys/query"),
            Some(&bob.token),
            json!({"device_keys": {alice.user.clone(): []}}),
        )
        .await);
    assert_eq!(gone["device_keys"][&alice.user], json!({}));
}

async fn device_list_changes_reach_room_mates(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice_user = server.user("alice").await;
    server.user("bob").await;
    let carol = server.user("carol").await;
    let bob = Device::login(&server, "bob", "BOBLAPTOP").await;
    let room = ok(server
        .post(
            &format!("{C}/createRoom"),
            Some(&alice_user.token),
            json!({"preset": "public_chat"}),
        )
        .await)["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = bob.sync(&server, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob joins: Alice is new to him, so her devices are "changed".
    ok(server
        .post(
            &format!("{C}/join/{}", enc(&room)),
            Some(&bob.token),
            json!({}),
        )
        .await);
    let sync = bob.sync(&server, Some(&since)).await;
    assert_eq!(
        sync["device_lists"]["changed"],
        json!([alice_user.id]),
        "{sync}"
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // Alice adds a device and uploads its keys: Bob hears of it, Carol
    // (sharing no room) does not.
    let carol_since = ok(server
        .get(&format!("{C}/sync?timeout=0"), Some(&carol.token))
        .await)["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = Device::login(&server, "alice", "ALICENEW").await;
    ok(alice
        .upload(&server, json!({"device_keys": alice.device_keys()}))
        .await);
    let sync = bob.sync(&server, Some(&since)).await;
    assert_eq!(
        sync["device_lists"]["changed"],
        json!([alice.user]),
        "{sync}"
    );
    let changes = ok(server
        .get(
            &format!(
                "{C}/keys/changes?from={}&to={}",
                enc(&since),
                enc(sync["next_batch"].as_str().unwrap())
            ),
            Some(&bob.token),
        )
        .await);
    assert_eq!(changes["changed"], json!([alice.user]));
    let carol_sync = ok(server
        .get(
            &format!("{C}/sync?timeout=0&since={}", enc(&carol_since)),
            Some(&carol.token),
        )
        .await);
    assert!(
        carol_sync["device_lists"]["changed"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{carol_sync}"
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // A long-polling sync is woken by the change.
    let waiting = {
        let url = format!(
            "{}{C}/sync?timeout=20000&since={}",
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
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut renamed = alice.device_keys();
    renamed["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    sign(&mut renamed, &alice.user, &alice.id, &alice.key);
    ok(alice.upload(&server, json!({"device_keys": renamed})).await);
    let woken = waiting.await.unwrap();
    assert_eq!(
        woken["device_lists"]["changed"],
        json!([alice.user]),
        "{woken}"
    );

    // Alice leaves: she shares no room with Bob any more.
    let since = woken["next_batch"].as_str().unwrap().to_owned();
    ok(server
        .post(
            &format!("{C}/rooms/{}/leave", enc(&room)),
            Some(&alice.token),
            json!({}),
        )
        .await);
    let sync = bob.sync(&server, Some(&since)).await;
    assert_eq!(sync["device_lists"]["left"], json!([alice.user]), "{sync}");
    let changes = ok(server
        .get(
            &format!(
                "{C}/keys/changes?from={}&to={}",
                enc(&since),
                enc(sync["next_batch"].as_str().unwrap())
            ),
            Some(&bob.token),
        )
        .await);
    assert_eq!(changes["left"], json!([alice.user]));

    assert_error(
        &server
            .get(
                &format!("{C}/keys/changes?from=garbage&to=s1"),
                Some(&bob.token),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

/// A cross-signing key for `user`, signed by `signer` if given.
fn cross_signing_key(
    user: &str,
    usage: &str,
    key: &SigningKey,
    signer: Option<&SigningKey>,
) -> Value {
    let mut value = json!({
        "user_id": user,
        "usage": [usage],
        "keys": { format!("ed25519:{}", public(key)): public(key) },
    });
    if let Some(master) = signer {
        sign(&mut value, user, &public(master), master);
    }
    value
}

async fn cross_signing_keys_and_signatures(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server.user("alice").await;
    server.user("bob").await;
    let alice = Device::login(&server, "alice", "ALICEPHONE").await;
    let bob = Device::login(&server, "bob", "BOBPHONE").await;
    let alice_keys = alice.device_keys();
    ok(alice
        .upload(&server, json!({"device_keys": alice_keys}))
        .await);
    let upload = |device: &Device, body: Value| {
        let server = &server;
        let token = device.token.clone();
        async move {
            server
                .post(
                    &format!("{C}/keys/device_signing/upload"),
                    Some(&token),
                    body,
                )
                .await
        }
    };

    let (master, self_signing, user_signing) = (new_key(), new_key(), new_key());
    // Subkeys must be signed by the master key.
    assert_error(
        &upload(&alice, json!({
            "master_key": cross_signing_key(&alice.user, "master", &master, None),
            "self_signing_key": cross_signing_key(&alice.user, "self_signing", &self_signing, None),
        })).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &upload(
            &alice,
            json!({"master_key": cross_signing_key(&bob.user, "master", &master, None)}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // The first upload needs no user-interactive auth.
    let keys = json!({
        "master_key": cross_signing_key(&alice.user, "master", &master, None),
        "self_signing_key": cross_signing_key(&alice.user, "self_signing", &self_signing, Some(&master)),
        "user_signing_key": cross_signing_key(&alice.user, "user_signing", &user_signing, Some(&master)),
    });
    ok(upload(&alice, keys.clone()).await);
    // Nor does uploading the same keys again; replacing them does.
    ok(upload(&alice, keys.clone()).await);
    let replace = json!({"master_key": cross_signing_key(&alice.user, "master", &new_key(), None)});
    let challenge = upload(&alice, replace).await;
    assert_eq!(challenge.0, 401, "{}", challenge.1);
    assert!(
        challenge.1["flows"]
            .to_string()
            .contains("m.login.password")
    );

    // Alice signs her device with her self-signing key; Bob sees it.
    let mut signed_device = alice_keys.clone();
    sign(
        &mut signed_device,
        &alice.user,
        &public(&self_signing),
        &self_signing,
    );
    let signed = ok(server
        .post(
            &format!("{C}/keys/signatures/upload"),
            Some(&alice.token),
            json!({alice.user.clone(): {"ALICEPHONE": signed_device}}),
        )
        .await);
    assert_eq!(signed["failures"], Value::Null, "{signed}");
    // A signature by the wrong key is reported, not stored.
    let mut forged = alice_keys.clone();
    sign(&mut forged, &alice.user, &public(&self_signing), &new_key());
    let refused = ok(server
        .post(
            &format!("{C}/keys/signatures/upload"),
            Some(&alice.token),
            json!({alice.user.clone(): {"ALICEPHONE": forged}}),
        )
        .await);
    assert_eq!(
        refused["failures"][&alice.user]["ALICEPHONE"]["errcode"], "M_INVALID_SIGNATURE",
        "{refused}"
    );

    let query = ok(server
        .post(
            &format!("{C}/keys/query"),
            Some(&bob.token),
            json!({"device_keys": {alice.user.clone(): []}}),
        )
        .await);
    let signatures = &query["device_keys"][&alice.user]["ALICEPHONE"]["signatures"][&alice.user];
    assert_eq!(
        signatures[format!("ed25519:{}", public(&self_signing))],
        signed_device["signatures"][&alice.user][format!("ed25519:{}", public(&self_signing))]
    );
    assert_eq!(
        query["master_keys"][&alice.user]["keys"],
        keys["master_key"]["keys"]
    );
    assert_eq!(
        query["self_signing_keys"][&alice.user],
        keys["self_signing_key"]
    );
    // The user-signing key is for its owner's eyes only.
    assert_eq!(query["user_signing_keys"].get(&alice.user), None, "{query}");
    let own = ok(server
        .post(
            &format!("{C}/keys/query"),
            Some(&alice.token),
            json!({"device_keys": {alice.user.clone(): []}}),
        )
        .await);
    assert_eq!(
        own["user_signing_keys"][&alice.user],
        keys["user_signing_key"]
    );
}

async fn room_keys_are_backed_up_by_the_spec_rules(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice: User = server.user("alice").await;
    let versions = format!("{C}/room_keys/version");
    assert_error(
        &server.get(&versions, Some(&alice.token)).await,
        404,
        "M_NOT_FOUND",
    );
    let algorithm = json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abcdefg", "signatures": {}}});
    let version = ok(server
        .post(&versions, Some(&alice.token), algorithm.clone())
        .await)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let current = ok(server.get(&versions, Some(&alice.token)).await);
    assert_eq!(current["version"], version);
    assert_eq!(current["auth_data"], algorithm["auth_data"]);
    assert_eq!(current["count"], 0);
    assert_error(
        &server
            .post(&versions, Some(&alice.token), json!({"auth_data": {}}))
            .await,
        400,
        "M_MISSING_PARAM",
    );

    let session = |index: u64, forwarded: u64, verified: bool, tag: &str| {
        json!({"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
               "session_data": {"ephemeral": "ZXBo", "ciphertext": tag, "mac": "bWFj"}})
    };
    let room = "!room:myelin.test";
    let key_path = |v: &str| format!("{C}/room_keys/keys/{}/sess1?version={v}", enc(room));
    let put = ok(server
        .put(&key_path(&version), &alice, session(5, 1, false, "frst"))
        .await);
    assert_eq!(put["count"], 1);
    let etag = put["etag"].clone();
    // A worse copy (higher index) is ignored and the etag stays.
    let worse = ok(server
        .put(&key_path(&version), &alice, session(9, 0, false, "wrse"))
        .await);
    assert_eq!(worse["etag"], etag);
    // A verified copy beats an unverified one; then a lower index wins.
    ok(server
        .put(&key_path(&version), &alice, session(7, 0, true, "vrfd"))
        .await);
    ok(server
        .put(&key_path(&version), &alice, session(3, 0, false, "unvf"))
        .await);
    let stored = ok(server.get(&key_path(&version), Some(&alice.token)).await);
    assert_eq!(stored["session_data"]["ciphertext"], "vrfd");
    ok(server
        .put(&key_path(&version), &alice, session(2, 0, true, "best"))
        .await);
    let all = ok(server
        .get(
            &format!("{C}/room_keys/keys?version={version}"),
            Some(&alice.token),
        )
        .await);
    assert_eq!(
        all["rooms"][room]["sessions"]["sess1"]["session_data"]["ciphertext"],
        "best"
    );
    assert_ne!(
        ok(server.get(&versions, Some(&alice.token)).await)["etag"],
        etag
    );

    // Uploads go to the current version only.
    let newer = ok(server
        .post(&versions, Some(&alice.token), algorithm.clone())
        .await)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = server
        .put(&key_path(&version), &alice, session(1, 0, true, "late"))
        .await;
    assert_error(&wrong, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(wrong.1["current_version"], newer);
    // The old version's keys are still readable.
    assert_eq!(
        ok(server.get(&key_path(&version), Some(&alice.token)).await)["session_data"]["ciphertext"],
        "best"
    );
    assert_error(
        &server.get(&key_path(&newer), Some(&alice.token)).await,
        404,
        "M_NOT_FOUND",
    );

    // auth_data may change, the algorithm may not.
    let version_path = format!("{versions}/{newer}");
    let mut updated = algorithm.clone();
    updated["auth_data"]["public_key"] = json!("hijklmn");
    ok(server.put(&version_path, &alice, updated).await);
    assert_eq!(
        ok(server.get(&version_path, Some(&alice.token)).await)["auth_data"]["public_key"],
        "hijklmn"
    );
    let mut other = algorithm.clone();
    other["algorithm"] = json!("m.other");
    assert_error(
        &server.put(&version_path, &alice, other).await,
        400,
        "M_INVALID_PARAM",
    );

    // Deleting keys, then versions.
    let deleted = ok(server
        .request(
            reqwest::Method::DELETE,
            &format!("{C}/room_keys/keys?version={version}"),
            Some(&alice.token),
            None,
        )
        .await);
    assert_eq!(deleted["count"], 0);
    ok(server
        .request(
            reqwest::Method::DELETE,
            &version_path,
            Some(&alice.token),
            None,
        )
        .await);
    assert_error(
        &server.get(&version_path, Some(&alice.token)).await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        ok(server.get(&versions, Some(&alice.token)).await)["version"],
        version
    );
    assert_error(
        &server
            .get(&format!("{versions}/nonsense"), Some(&alice.token))
            .await,
        404,
        "M_NOT_FOUND",
    );
}
