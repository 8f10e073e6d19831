//! The account validity, account data, presence router and account-level
//! third-party rules callbacks, through the real binary, answered by
//! `tests/plugins/test-hooks`. The plugin makes each notification visible
//! by writing account data through the `actions` grant, which these tests
//! read back as the user would.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use myelin_tests::{
    Backend, PASSWORD, SERVER_NAME, TestServer, User, assert_error, enc, ok, on_both_backends,
    plugin_wasm,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const C: &str = "/_matrix/client/v3";
const JWT_SECRET: &str = "a-shared-secret-for-hook-tests";

fn mxid(localpart: &str) -> String {
    format!("@{localpart}:{SERVER_NAME}")
}

/// `modules:` with test-hooks, granted `actions`, with a deadline the slow
/// test machine can meet (the plugin's actions write to the database).
fn hooks(config: Value, module_extra: &str) -> String {
    format!(
        "modules:\n  - module: \"{}\"\n    config: {config}\n    grants: {{actions: true}}\n    limits: {{timeout_ms: 2000}}\n{module_extra}",
        plugin_wasm("test-hooks").display()
    )
}

/// A user's global account data of `kind`, if set.
async fn account_data(server: &TestServer, user: &User, kind: &str) -> Option<Value> {
    let (status, body) = server
        .get(
            &format!("{C}/user/{}/account_data/{kind}", enc(&user.id)),
            Some(&user.token),
        )
        .await;
    match status {
        StatusCode::OK => Some(body),
        StatusCode::NOT_FOUND => None,
        other => panic!("account data {kind}: {other} {body}"),
    }
}

/// Waits (up to 20 s) for the user's account data `kind` to satisfy `done`.
async fn eventually(
    server: &TestServer,
    user: &User,
    kind: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = account_data(server, user, kind).await;
        if let Some(value) = &found
            && done(value)
        {
            return value.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{kind} of {} never became as expected (last: {found:?}):\n{}",
            user.id,
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token_of(login: &Value) -> String {
    login["access_token"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------
// Account validity
// ---------------------------------------------------------------------------

async fn expired_accounts_are_locked_out_but_can_log_out(backend: Backend) {
    let server = TestServer::start(
        backend,
        &hooks(json!({ "expired_users": [mxid("eve")] }), ""),
    )
    .await;
    let alice = server.user("alice").await;
    let eve = server.user("eve").await;

    for path in ["/sync?timeout=0", "/account/whoami", "/joined_rooms"] {
        assert_error(
            &server.get(&format!("{C}{path}"), Some(&eve.token)).await,
            403,
            "ORG_MATRIX_EXPIRED_ACCOUNT",
        );
    }
    let refused = server
        .post(&format!("{C}/createRoom"), Some(&eve.token), json!({}))
        .await;
    assert_error(&refused, 403, "ORG_MATRIX_EXPIRED_ACCOUNT");
    // Other users are not affected.
    ok(server
        .get(&format!("{C}/sync?timeout=0"), Some(&alice.token))
        .await);

    // Logging in needs no access token, but the new one is refused too:
    // expiry does not invalidate tokens, it refuses requests.
    let second = token_of(&ok(server.login("eve", PASSWORD).await));
    assert_error(
        &server
            .get(&format!("{C}/account/whoami"), Some(&second))
            .await,
        403,
        "ORG_MATRIX_EXPIRED_ACCOUNT",
    );

    // Logout works for an expired account, and really ends the session.
    ok(server
        .post(&format!("{C}/logout"), Some(&eve.token), json!({}))
        .await);
    assert_error(
        &server
            .get(&format!("{C}/account/whoami"), Some(&eve.token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    ok(server
        .post(&format!("{C}/logout/all"), Some(&second), json!({}))
        .await);
    assert_error(
        &server
            .get(&format!("{C}/account/whoami"), Some(&second))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

fn jwt(localpart: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": localpart, "exp": 4_000_000_000u64 }),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The password auth provider callbacks without a login type of their own:
/// a login naming an e-mail address, and the registration-name callbacks.
async fn threepid_logins_and_registration_names(backend: Backend) {
    let carol = mxid("carol");
    let config = json!({
        "threepid_users": { "carol@example.org": carol },
        "registration_username_prefix": "p-",
    });
    let extra = "enable_registration: true\nenable_registration_without_verification: true\n";
    let server = TestServer::start(backend, &hooks(config, extra)).await;

    let threepid_login = |password: &'static str| {
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "Carol@Example.org" },
            "password": password,
        })
    };
    // The address is lower-cased before the plugin sees it; the user it
    // names is created on this first login, with the plugin's display name.
    let login = ok(server
        .post(&format!("{C}/login"), None, threepid_login("open-sesame"))
        .await);
    assert_eq!(login["user_id"], carol);
    let profile = ok(server
        .get(&format!("{C}/profile/{}", enc(&carol)), None)
        .await);
    assert_eq!(profile["displayname"], "Known as carol@example.org");
    let refused = server
        .post(&format!("{C}/login"), None, threepid_login("wrong"))
        .await;
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert_eq!(refused.1["errcode"], "M_FORBIDDEN");
    // An address no plugin knows: refused too (no local 3PIDs).
    let unknown = server
        .post(
            &format!("{C}/login"),
            None,
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "nobody@example.org" },
                "password": "open-sesame",
            }),
        )
        .await;
    assert_eq!(unknown.0, 403, "{}", unknown.1);

    // The plugin forces the localpart and the display name of a new user.
    let registered = ok(server
        .post(
            &format!("{C}/register"),
            None,
            json!({"username": "dan", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
        )
        .await);
    assert_eq!(registered["user_id"], mxid("p-dan"));
    let profile = ok(server
        .get(&format!("{C}/profile/{}", enc(&mxid("p-dan"))), None)
        .await);
    assert_eq!(profile["displayname"], "Registered dan");
}

async fn registrations_and_logins_are_reported(backend: Backend) {
    let extra = format!(
        "enable_registration: true\nenable_registration_without_verification: true\njwt_config:\n  enabled: true\n  secret: \"{JWT_SECRET}\"\n  algorithm: HS256\n"
    );
    let server = TestServer::start(backend, &hooks(json!({}), &extra)).await;

    // The shared-secret admin API. The callback is awaited before the
    // registration answers, as in Synapse: no waiting needed.
    let alice = server.user("alice").await;
    assert_eq!(
        account_data(&server, &alice, "com.example.registered").await,
        Some(json!({ "user_id": alice.id }))
    );
    assert_eq!(
        account_data(&server, &alice, "com.example.login").await,
        None,
        "registering is not logging in"
    );

    // POST /register.
    let registered = ok(server
        .post(
            &format!("{C}/register"),
            None,
            json!({"username": "bob", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
        )
        .await);
    let bob = User {
        id: registered["user_id"].as_str().unwrap().to_owned(),
        token: token_of(&registered),
    };
    assert_eq!(
        account_data(&server, &bob, "com.example.registered").await,
        Some(json!({ "user_id": mxid("bob") }))
    );

    // A password login.
    let login = ok(server.login("alice", PASSWORD).await);
    let alice_again = User {
        id: alice.id.clone(),
        token: token_of(&login),
    };
    assert_eq!(
        account_data(&server, &alice_again, "com.example.login").await,
        Some(json!({ "type": "m.login.password", "idp": null }))
    );

    // A JWT login that creates its user: registered, then logged in.
    let login = ok(server
        .post(
            &format!("{C}/login"),
            None,
            json!({"type": "org.matrix.login.jwt", "token": jwt("carol")}),
        )
        .await);
    let carol = User {
        id: login["user_id"].as_str().unwrap().to_owned(),
        token: token_of(&login),
    };
    assert_eq!(
        account_data(&server, &carol, "com.example.registered").await,
        Some(json!({ "user_id": mxid("carol") }))
    );
    assert_eq!(
        account_data(&server, &carol, "com.example.login").await,
        Some(json!({ "type": "org.matrix.login.jwt", "idp": null }))
    );

    // A failed login reports nothing.
    let wrong = server.login("bob", "not the password").await;
    assert_error(&wrong, 403, "M_FORBIDDEN");
    assert_eq!(account_data(&server, &bob, "com.example.login").await, None);
}

// ---------------------------------------------------------------------------
// Account data
// ---------------------------------------------------------------------------

async fn account_data_updates_are_reported(backend: Backend) {
    let watched = json!({ "watched_types": ["com.example.watched", "m.tag", "m.fully_read"] });
    let server = TestServer::start(backend, &hooks(watched, "")).await;
    let alice = server.user("alice").await;

    // Global account data.
    ok(server
        .put(
            &format!(
                "{C}/user/{}/account_data/com.example.watched",
                enc(&alice.id)
            ),
            &alice,
            json!({ "n": 1 }),
        )
        .await);
    let seen = eventually(
        &server,
        &alice,
        "com.example.seen.com.example.watched",
        |_| true,
    )
    .await;
    assert_eq!(
        seen,
        json!({ "type": "com.example.watched", "room_id": null, "content": { "n": 1 } })
    );

    // Per-room account data.
    let room = ok(server
        .post(&format!("{C}/createRoom"), Some(&alice.token), json!({}))
        .await)["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(server
        .put(
            &format!(
                "{C}/user/{}/rooms/{}/account_data/com.example.watched",
                enc(&alice.id),
                enc(&room)
            ),
            &alice,
            json!({ "n": 2 }),
        )
        .await);
    let seen = eventually(
        &server,
        &alice,
        "com.example.seen.com.example.watched",
        |v| v["content"]["n"] == 2,
    )
    .await;
    assert_eq!(
        seen,
        json!({ "type": "com.example.watched", "room_id": room, "content": { "n": 2 } })
    );

    // Tags are not reported (Synapse processes them separately); the read
    // marker, which is per-room account data, is.
    ok(server
        .put(
            &format!(
                "{C}/user/{}/rooms/{}/tags/u.work",
                enc(&alice.id),
                enc(&room)
            ),
            &alice,
            json!({ "order": 0.5 }),
        )
        .await);
    let sent = ok(server
        .put(
            &format!("{C}/rooms/{}/send/m.room.message/t1", enc(&room)),
            &alice,
            json!({ "msgtype": "m.text", "body": "hello" }),
        )
        .await);
    let event_id = sent["event_id"].as_str().unwrap();
    ok(server
        .post(
            &format!("{C}/rooms/{}/read_markers", enc(&room)),
            Some(&alice.token),
            json!({ "m.fully_read": event_id }),
        )
        .await);
    let seen = eventually(&server, &alice, "com.example.seen.m.fully_read", |_| true).await;
    assert_eq!(seen["room_id"], room.as_str());
    assert_eq!(seen["content"]["event_id"], event_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        account_data(&server, &alice, "com.example.seen.m.tag").await,
        None
    );
}

// ---------------------------------------------------------------------------
// Third-party rules: profiles and deactivation
// ---------------------------------------------------------------------------

async fn deactivate(server: &TestServer, user: &User, localpart: &str) -> (StatusCode, Value) {
    server
        .post(
            &format!("{C}/account/deactivate"),
            Some(&user.token),
            json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": PASSWORD}}),
        )
        .await
}

async fn profile_changes_are_reported(backend: Backend) {
    let server = TestServer::start(backend, &hooks(json!({}), "")).await;
    let alice = server.user("alice").await;
    ok(server
        .put(
            &format!("{C}/profile/{}/displayname", enc(&alice.id)),
            &alice,
            json!({ "displayname": "Alice Liddell" }),
        )
        .await);
    // Awaited before the answer, as in Synapse.
    assert_eq!(
        account_data(&server, &alice, "com.example.profile").await,
        Some(json!({
            "displayname": "Alice Liddell",
            "avatar_url": null,
            "by_admin": false,
            "deactivation": false,
        }))
    );
    ok(server
        .put(
            &format!("{C}/profile/{}/avatar_url", enc(&alice.id)),
            &alice,
            json!({ "avatar_url": "mxc://myelin.test/abc" }),
        )
        .await);
    let profile = account_data(&server, &alice, "com.example.profile")
        .await
        .unwrap();
    assert_eq!(profile["displayname"], "Alice Liddell");
    assert_eq!(profile["avatar_url"], "mxc://myelin.test/abc");

    // Synapse's `by_admin`: a server admin changing even their own profile.
    let (id, token) = server.register_user("root", PASSWORD, true).await;
    let root = User { id, token };
    ok(server
        .put(
            &format!("{C}/profile/{}/displayname", enc(&root.id)),
            &root,
            json!({ "displayname": "Root" }),
        )
        .await);
    let profile = account_data(&server, &root, "com.example.profile")
        .await
        .unwrap();
    assert_eq!(profile["displayname"], "Root");
    assert_eq!(profile["by_admin"], true);
}

async fn plugins_decide_deactivation(backend: Backend) {
    let config = json!({
        "undeactivatable_users": [mxid("bob")],
        "deactivation_observer": mxid("observer"),
    });
    let server = TestServer::start(backend, &hooks(config, "")).await;
    let observer = server.user("observer").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;

    // Refused: 403, and the account goes on working.
    assert_error(&deactivate(&server, &bob, "bob").await, 403, "M_FORBIDDEN");
    ok(server
        .get(&format!("{C}/account/whoami"), Some(&bob.token))
        .await);
    ok(server.login("bob", PASSWORD).await);
    assert_eq!(
        account_data(&server, &observer, "com.example.deactivated").await,
        None
    );

    // Allowed: deactivated, and plugins are told.
    ok(deactivate(&server, &carol, "carol").await);
    assert_error(
        &server.login("carol", PASSWORD).await,
        403,
        "M_USER_DEACTIVATED",
    );
    assert_eq!(
        account_data(&server, &observer, "com.example.deactivated").await,
        Some(json!({ "user_id": carol.id, "deactivated": true, "by_admin": false }))
    );
}

// ---------------------------------------------------------------------------
// Presence router
// ---------------------------------------------------------------------------

async fn sync(server: &TestServer, user: &User, query: &str) -> Value {
    ok(server
        .get(&format!("{C}/sync?{query}"), Some(&user.token))
        .await)
}

/// The presence events of `user_id` in a sync response.
fn presence_of(response: &Value, user_id: &str) -> Vec<Value> {
    response["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["sender"] == user_id)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

async fn presence_is_routed_beyond_room_mates(backend: Backend) {
    let config = json!({
        "presence_watchers": [mxid("watcher")],
        "presence_follows": { mxid("follower"): [mxid("alice")] },
    });
    let server = TestServer::start(backend, &hooks(config, "")).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let watcher = server.user("watcher").await;
    let follower = server.user("follower").await;
    let stranger = server.user("stranger").await;
    let room = ok(server
        .post(
            &format!("{C}/createRoom"),
            Some(&alice.token),
            json!({ "preset": "public_chat" }),
        )
        .await)["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(server
        .post(
            &format!("{C}/join/{}", enc(&room)),
            Some(&bob.token),
            json!({}),
        )
        .await);

    // Syncs that leave their own presence alone.
    let quiet = "set_presence=offline&timeout=0";
    let mut since = Vec::new();
    for user in [&bob, &watcher, &follower, &stranger] {
        let initial = sync(&server, user, quiet).await;
        since.push(initial["next_batch"].as_str().unwrap().to_owned());
    }

    // The follower waits; alice's presence change wakes them, although
    // they share no room with her (`get_users_for_states`).
    let presence = format!("{C}/presence/{}/status", enc(&alice.id));
    let waiting = format!(
        "set_presence=offline&timeout=20000&since={}",
        enc(&since[2])
    );
    let started = Instant::now();
    let (woken, ()) = tokio::join!(sync(&server, &follower, &waiting), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ok(server
            .put(
                &presence,
                &alice,
                json!({ "presence": "unavailable", "status_msg": "routed" }),
            )
            .await);
    });
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the follower's sync was not woken: {woken}"
    );
    let routed = presence_of(&woken, &alice.id);
    assert_eq!(routed.len(), 1, "{woken}");
    assert_eq!(routed[0]["content"]["presence"], "unavailable");
    assert_eq!(routed[0]["content"]["status_msg"], "routed");

    // The watcher gets everyone's (`all`), the room-mate gets it as ever,
    // and a stranger does not.
    let query = |since: &str| format!("{quiet}&since={}", enc(since));
    let watched = sync(&server, &watcher, &query(&since[1])).await;
    assert_eq!(presence_of(&watched, &alice.id).len(), 1, "{watched}");
    let mate = sync(&server, &bob, &query(&since[0])).await;
    assert_eq!(presence_of(&mate, &alice.id).len(), 1, "{mate}");
    let strange = sync(&server, &stranger, &query(&since[3])).await;
    assert!(presence_of(&strange, &alice.id).is_empty(), "{strange}");

    // Initial syncs too.
    let initial = sync(&server, &follower, quiet).await;
    assert_eq!(presence_of(&initial, &alice.id).len(), 1, "{initial}");
    let initial = sync(&server, &stranger, quiet).await;
    assert!(presence_of(&initial, &alice.id).is_empty(), "{initial}");
}

on_both_backends! {
    expired_accounts => expired_accounts_are_locked_out_but_can_log_out,
    registrations_and_logins => registrations_and_logins_are_reported,
    account_data_updates => account_data_updates_are_reported,
    profile_changes => profile_changes_are_reported,
    deactivation => plugins_decide_deactivation,
    presence_routing => presence_is_routed_beyond_room_mates,
    threepid_and_registration_names => threepid_logins_and_registration_names,
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/// A plugin trapping in `is_user_expired`: with `on_error: deny` every
/// authenticated request is refused (logout still works); with `allow` the
/// plugin is skipped. Either way the fault is logged and the server serves.
async fn trapping_expiry_check(on_error: &str) -> (TestServer, User) {
    let server = TestServer::start(
        Backend::Sqlite,
        &hooks(
            json!({ "trap_expiry": true }),
            &format!("    on_error: {on_error}\n"),
        ),
    )
    .await;
    let alice = server.user("alice").await;
    (server, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_expiry_check_with_on_error_deny_refuses_requests() {
    let (server, alice) = trapping_expiry_check("deny").await;
    for _ in 0..2 {
        let refused = server
            .get(&format!("{C}/sync?timeout=0"), Some(&alice.token))
            .await;
        // The generic "a server plugin failed", not "expired".
        assert_eq!(refused.0, 403, "{}", refused.1);
        assert_eq!(refused.1["errcode"], "M_FORBIDDEN", "{}", refused.1);
    }
    ok(server
        .request(
            Method::POST,
            &format!("{C}/logout"),
            Some(&alice.token),
            Some(json!({})),
        )
        .await);
    let logs = server.logs();
    assert!(logs.contains("fault=\"trap\""), "{logs}");
    // Requests without a token are still served.
    ok(server.get(&format!("{C}/login"), None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_expiry_check_with_on_error_allow_lets_requests_through() {
    let (server, alice) = trapping_expiry_check("allow").await;
    for _ in 0..2 {
        ok(server
            .get(&format!("{C}/sync?timeout=0"), Some(&alice.token))
            .await);
    }
    ok(server
        .get(&format!("{C}/account/whoami"), Some(&alice.token))
        .await);
    let logs = server.logs();
    assert!(logs.contains("fault=\"trap\""), "{logs}");
}
