//! Rooms through the client API, on both backends: creation and presets,
//! membership, sending, state, redaction, history and pagination, aliases,
//! the published room directory, profiles, the user directory, upgrades,
//! reports, and the errors a client gets for bad input.

use std::time::Duration;

use myelin_tests::{
    Backend, PASSWORD, SERVER_NAME, TestServer, User, assert_error, enc, ok, on_both_backends, txn,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends! {
    presets_set_join_rules_history_and_guest_access => presets_set_join_rules_history_and_guest_access,
    create_room_applies_name_topic_alias_initial_state_and_overrides => create_room_applies_name_topic_alias_initial_state_and_overrides,
    create_room_invites_and_marks_direct_chats => create_room_invites_and_marks_direct_chats,
    room_versions_decide_the_event_id_format => room_versions_decide_the_event_id_format,
    version_12_rooms_have_derived_ids_and_privileged_creators => version_12_rooms_have_derived_ids_and_privileged_creators,
    unsupported_room_versions_are_refused => unsupported_room_versions_are_refused,
    invite_join_leave_and_forget => invite_join_leave_and_forget,
    public_rooms_are_joined_by_id_or_alias => public_rooms_are_joined_by_id_or_alias,
    kick_ban_and_unban => kick_ban_and_unban,
    knocking_asks_to_join_a_knock_room => knocking_asks_to_join_a_knock_room,
    members_are_filtered_by_membership_and_point_in_time => members_are_filtered_by_membership_and_point_in_time,
    retried_sends_are_deduplicated_per_device => retried_sends_are_deduplicated_per_device,
    state_events_are_set_read_and_listed => state_events_are_set_read_and_listed,
    redaction_strips_content_and_needs_power => redaction_strips_content_and_needs_power,
    messages_page_both_ways_with_tokens_and_filters => messages_page_both_ways_with_tokens_and_filters,
    context_shows_the_events_around_an_event => context_shows_the_events_around_an_event,
    timestamp_to_event_finds_the_nearest_event => timestamp_to_event_finds_the_nearest_event,
    aliases_are_created_resolved_listed_and_deleted => aliases_are_created_resolved_listed_and_deleted,
    canonical_alias_must_name_an_alias_of_the_room => canonical_alias_must_name_an_alias_of_the_room,
    published_rooms_are_listed_searched_and_paged => published_rooms_are_listed_searched_and_paged,
    profiles_are_read_written_and_reach_room_membership => profiles_are_read_written_and_reach_room_membership,
    user_directory_finds_people_you_share_a_room_with => user_directory_finds_people_you_share_a_room_with,
    upgrading_replaces_the_room => upgrading_replaces_the_room,
    events_can_be_reported => events_can_be_reported,
    joined_history_hides_messages_from_before_joining => joined_history_hides_messages_from_before_joining,
    invited_history_starts_at_the_invite => invited_history_starts_at_the_invite,
    shared_history_shows_earlier_messages_until_you_leave => shared_history_shows_earlier_messages_until_you_leave,
    sending_needs_membership => sending_needs_membership,
    state_changes_need_enough_power => state_changes_need_enough_power,
    nobody_kicks_or_bans_someone_more_powerful => nobody_kicks_or_bans_someone_more_powerful,
    unknown_rooms_are_not_found_or_forbidden => unknown_rooms_are_not_found_or_forbidden,
    malformed_identifiers_are_invalid_params => malformed_identifiers_are_invalid_params,
    events_over_64_kib_are_too_large => events_over_64_kib_are_too_large,
    power_levels_must_be_integers_in_v10 => power_levels_must_be_integers_in_v10,
    acknowledged_messages_survive_sigkill => acknowledged_messages_survive_sigkill,
}

const C: &str = "/_matrix/client/v3";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Asserts a Matrix error that may, per the spec, be either "not found" or
/// "forbidden" (servers may hide whether a room exists).
#[track_caller]
fn assert_not_found_or_forbidden(response: &(StatusCode, Value)) {
    match response.0.as_u16() {
        404 => assert_eq!(response.1["errcode"], "M_NOT_FOUND", "{}", response.1),
        403 => assert_eq!(response.1["errcode"], "M_FORBIDDEN", "{}", response.1),
        other => panic!(
            "expected 404 M_NOT_FOUND or 403 M_FORBIDDEN, got {other}: {}",
            response.1
        ),
    }
}

async fn post(server: &TestServer, path: &str, user: &User, body: Value) -> (StatusCode, Value) {
    server.post(path, Some(&user.token), body).await
}

async fn get(server: &TestServer, path: &str, user: &User) -> (StatusCode, Value) {
    server.get(path, Some(&user.token)).await
}

fn room_path(room: &str, rest: &str) -> String {
    format!("{C}/rooms/{}/{rest}", enc(room))
}

async fn try_create_room(server: &TestServer, creator: &User, body: Value) -> (StatusCode, Value) {
    post(server, &format!("{C}/createRoom"), creator, body).await
}

async fn create_room(server: &TestServer, creator: &User, body: Value) -> String {
    let created = ok(try_create_room(server, creator, body).await);
    let room = created["room_id"].as_str().expect("room_id").to_owned();
    assert!(room.starts_with('!'), "{room}");
    room
}

async fn send(
    server: &TestServer,
    sender: &User,
    room: &str,
    event_type: &str,
    content: Value,
) -> (StatusCode, Value) {
    let path = room_path(room, &format!("send/{}/{}", enc(event_type), txn()));
    server.put(&path, sender, content).await
}

async fn send_text(server: &TestServer, sender: &User, room: &str, text: &str) -> String {
    let sent = ok(send(
        server,
        sender,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": text}),
    )
    .await);
    sent["event_id"].as_str().expect("event_id").to_owned()
}

fn state_path(room: &str, event_type: &str, state_key: &str) -> String {
    room_path(
        room,
        &format!("state/{}/{}", enc(event_type), enc(state_key)),
    )
}

async fn set_state(
    server: &TestServer,
    sender: &User,
    room: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .put(&state_path(room, event_type, state_key), sender, content)
        .await
}

async fn get_state(
    server: &TestServer,
    viewer: &User,
    room: &str,
    event_type: &str,
    state_key: &str,
) -> (StatusCode, Value) {
    get(server, &state_path(room, event_type, state_key), viewer).await
}

async fn state_content(
    server: &TestServer,
    viewer: &User,
    room: &str,
    event_type: &str,
    state_key: &str,
) -> Value {
    ok(get_state(server, viewer, room, event_type, state_key).await)
}

/// The content of `user_id`'s m.room.member event, as `viewer` sees it.
async fn membership(server: &TestServer, viewer: &User, room: &str, user_id: &str) -> Value {
    state_content(server, viewer, room, "m.room.member", user_id).await
}

async fn get_event(
    server: &TestServer,
    viewer: &User,
    room: &str,
    event_id: &str,
) -> (StatusCode, Value) {
    get(
        server,
        &room_path(room, &format!("event/{}", enc(event_id))),
        viewer,
    )
    .await
}

async fn try_join(server: &TestServer, user: &User, room: &str) -> (StatusCode, Value) {
    post(server, &room_path(room, "join"), user, json!({})).await
}

async fn join(server: &TestServer, user: &User, room: &str) {
    let joined = ok(try_join(server, user, room).await);
    assert_eq!(joined["room_id"], room, "{joined}");
}

async fn invite(server: &TestServer, inviter: &User, room: &str, invitee: &str) {
    ok(post(
        server,
        &room_path(room, "invite"),
        inviter,
        json!({"user_id": invitee}),
    )
    .await);
}

async fn leave(server: &TestServer, user: &User, room: &str) {
    ok(post(server, &room_path(room, "leave"), user, json!({})).await);
}

async fn set_displayname(server: &TestServer, user: &User, name: &str) {
    let path = format!("{C}/profile/{}/displayname", enc(&user.id));
    ok(server.put(&path, user, json!({"displayname": name})).await);
}

async fn joined_rooms(server: &TestServer, user: &User) -> Vec<String> {
    let body = ok(get(server, &format!("{C}/joined_rooms"), user).await);
    body["joined_rooms"]
        .as_array()
        .expect("joined_rooms")
        .iter()
        .map(|room| room.as_str().unwrap().to_owned())
        .collect()
}

/// `(user_id, membership)` pairs from GET /members with the given query, sorted.
async fn members(
    server: &TestServer,
    viewer: &User,
    room: &str,
    query: &str,
) -> Vec<(String, String)> {
    let sep = if query.is_empty() { "" } else { "?" };
    let body = ok(get(
        server,
        &room_path(room, &format!("members{sep}{query}")),
        viewer,
    )
    .await);
    let mut list: Vec<(String, String)> = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|event| {
            assert_eq!(event["type"], "m.room.member", "{event}");
            (
                event["state_key"].as_str().unwrap().to_owned(),
                event["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = expected
        .iter()
        .map(|(user, membership)| (user.to_string(), membership.to_string()))
        .collect();
    list.sort();
    list
}

/// The user ids in GET /joined_members, sorted.
async fn joined_member_ids(server: &TestServer, viewer: &User, room: &str) -> Vec<String> {
    let body = ok(get(server, &room_path(room, "joined_members"), viewer).await);
    let mut ids: Vec<String> = body["joined"]
        .as_object()
        .expect("joined")
        .keys()
        .cloned()
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    ids.sort();
    ids
}

async fn messages(
    server: &TestServer,
    viewer: &User,
    room: &str,
    query: &str,
) -> (StatusCode, Value) {
    get(
        server,
        &room_path(room, &format!("messages?{query}")),
        viewer,
    )
    .await
}

fn messages_only() -> Value {
    json!({"types": ["m.room.message"]})
}

/// Pages through /messages in `dir` until a response has no `end` token;
/// returns the events in the order served.
async fn page_all(
    server: &TestServer,
    viewer: &User,
    room: &str,
    dir: &str,
    limit: usize,
    filter: Option<&Value>,
    from: Option<&str>,
) -> Vec<Value> {
    let mut from = from.map(str::to_owned);
    let mut events = Vec::new();
    for _ in 0..200 {
        let mut query = format!("dir={dir}&limit={limit}");
        if let Some(filter) = filter {
            query += &format!("&filter={}", enc(&filter.to_string()));
        }
        if let Some(from) = &from {
            query += &format!("&from={}", enc(from));
        }
        let page = ok(messages(server, viewer, room, &query).await);
        assert!(page["start"].is_string(), "`start` is required: {page}");
        let chunk = page["chunk"].as_array().expect("chunk");
        assert!(chunk.len() <= limit, "limit {limit} exceeded: {page}");
        events.extend(chunk.iter().cloned());
        match page.get("end").and_then(Value::as_str) {
            None => return events,
            Some(end) => from = Some(end.to_owned()),
        }
    }
    panic!("pagination never ended: no page came back without an `end` token");
}

/// Every m.room.message `viewer` can see, oldest first.
async fn all_messages(server: &TestServer, viewer: &User, room: &str) -> Vec<Value> {
    page_all(server, viewer, room, "f", 20, Some(&messages_only()), None).await
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            event["content"]["body"]
                .as_str()
                .unwrap_or("<no body>")
                .to_owned()
        })
        .collect()
}

fn pick(sent: &[String], indexes: &[usize]) -> Vec<String> {
    indexes.iter().map(|&i| sent[i].clone()).collect()
}

fn find<'a>(events: &'a [Value], event_id: &str) -> &'a Value {
    events
        .iter()
        .find(|event| event["event_id"] == event_id)
        .unwrap_or_else(|| panic!("{event_id} is not among {events:?}"))
}

fn contains(list: &Value, item: &str) -> bool {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .any(|x| x == item)
}

// ---------------------------------------------------------------------------
// createRoom
// ---------------------------------------------------------------------------

async fn presets_set_join_rules_history_and_guest_access(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let join_rule = |room: String| {
        let (server, alice) = (&server, &alice);
        async move {
            state_content(server, alice, &room, "m.room.join_rules", "").await["join_rule"].clone()
        }
    };
    let history = |room: String| {
        let (server, alice) = (&server, &alice);
        async move {
            state_content(server, alice, &room, "m.room.history_visibility", "").await["history_visibility"].clone()
        }
    };

    let private = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    assert_eq!(join_rule(private.clone()).await, "invite");
    assert_eq!(history(private.clone()).await, "shared");
    assert_eq!(
        state_content(&server, &alice, &private, "m.room.guest_access", "").await["guest_access"],
        "can_join"
    );

    let public = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(join_rule(public.clone()).await, "public");
    assert_eq!(history(public.clone()).await, "shared");
    // Guests are forbidden: either said explicitly or left at the default.
    let guest = get_state(&server, &alice, &public, "m.room.guest_access", "").await;
    assert!(
        guest.0 == 404 || guest.1["guest_access"] == "forbidden",
        "{} {}",
        guest.0,
        guest.1
    );

    // trusted_private_chat: invitees get the creator's power.
    let trusted = create_room(
        &server,
        &alice,
        json!({"preset": "trusted_private_chat", "invite": [bob.id]}),
    )
    .await;
    assert_eq!(join_rule(trusted.clone()).await, "invite");
    assert_eq!(history(trusted.clone()).await, "shared");
    assert_eq!(
        state_content(&server, &alice, &trusted, "m.room.guest_access", "").await["guest_access"],
        "can_join"
    );
    let power = state_content(&server, &alice, &trusted, "m.room.power_levels", "").await;
    assert_eq!(power["users"][&alice.id], 100, "{power}");
    assert_eq!(power["users"][&bob.id], 100, "{power}");
    assert_eq!(
        membership(&server, &alice, &trusted, &bob.id).await["membership"],
        "invite"
    );

    // private_chat: invitees get no extra power.
    let plain = create_room(
        &server,
        &alice,
        json!({"preset": "private_chat", "invite": [bob.id]}),
    )
    .await;
    let power = state_content(&server, &alice, &plain, "m.room.power_levels", "").await;
    let bobs = power["users"]
        .get(&bob.id)
        .or(power.get("users_default"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    assert!(bobs < 100, "{power}");

    // Without a preset, the visibility picks one.
    let by_visibility = create_room(&server, &alice, json!({"visibility": "public"})).await;
    assert_eq!(join_rule(by_visibility).await, "public");
    let by_default = create_room(&server, &alice, json!({})).await;
    assert_eq!(join_rule(by_default).await, "invite");
}

async fn create_room_applies_name_topic_alias_initial_state_and_overrides(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "name": "The Lounge",
            "topic": "Chairs and tea",
            "room_alias_name": "lounge",
            "initial_state": [
                {"type": "m.room.topic", "state_key": "", "content": {"topic": "overridden by `topic`"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                {"type": "org.example.shelf", "state_key": "books", "content": {"count": 3}},
            ],
            "creation_content": {"m.federate": false, "creator": "@mallory:myelin.test"},
            "power_level_content_override": {
                "users_default": 10,
                "events_default": 20,
                "users": {alice.id.as_str(): 100},
            },
        }),
    )
    .await;

    let state = |event_type: &'static str, key: &'static str| {
        let (server, alice, room) = (&server, &alice, room.clone());
        async move { state_content(server, alice, &room, event_type, key).await }
    };
    assert_eq!(state("m.room.name", "").await["name"], "The Lounge");
    // `topic` overrides the topic in initial_state.
    assert_eq!(state("m.room.topic", "").await["topic"], "Chairs and tea");
    // initial_state overrides the preset.
    assert_eq!(
        state("m.room.history_visibility", "").await["history_visibility"],
        "joined"
    );
    assert_eq!(
        state("org.example.shelf", "books").await,
        json!({"count": 3})
    );

    let alias = format!("#lounge:{SERVER_NAME}");
    assert_eq!(state("m.room.canonical_alias", "").await["alias"], alias);
    let resolved = ok(get(
        &server,
        &format!("{C}/directory/room/{}", enc(&alias)),
        &alice,
    )
    .await);
    assert_eq!(resolved["room_id"], room);

    let create = state("m.room.create", "").await;
    assert_eq!(create["m.federate"], false, "{create}");
    assert_eq!(create["room_version"], "10", "{create}");
    assert_eq!(
        create["creator"], alice.id,
        "the server sets the creator: {create}"
    );

    let power = state("m.room.power_levels", "").await;
    assert_eq!(power["users_default"], 10, "{power}");
    assert_eq!(power["events_default"], 20, "{power}");
    assert_eq!(power["users"][&alice.id], 100, "{power}");
}

async fn create_room_invites_and_marks_direct_chats(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;

    let dm = create_room(
        &server,
        &alice,
        json!({"preset": "trusted_private_chat", "invite": [bob.id], "is_direct": true}),
    )
    .await;
    let invited = membership(&server, &alice, &dm, &bob.id).await;
    assert_eq!(invited["membership"], "invite", "{invited}");
    assert_eq!(invited["is_direct"], true, "{invited}");
    assert_eq!(
        members(&server, &alice, &dm, "").await,
        pairs(&[(&alice.id, "join"), (&bob.id, "invite")])
    );

    let group = create_room(
        &server,
        &alice,
        json!({"preset": "private_chat", "invite": [bob.id, carol.id]}),
    )
    .await;
    for invitee in [&bob, &carol] {
        let invited = membership(&server, &alice, &group, &invitee.id).await;
        assert_eq!(invited["membership"], "invite", "{invited}");
        assert_ne!(invited["is_direct"], true, "{invited}");
    }

    // The invite is real: Bob can accept it.
    join(&server, &bob, &dm).await;
    assert_eq!(
        membership(&server, &alice, &dm, &bob.id).await["membership"],
        "join"
    );
}

#[track_caller]
fn assert_event_id_format(version: &str, id: &str) {
    let rest = id
        .strip_prefix('$')
        .unwrap_or_else(|| panic!("room v{version}: {id} starts with $"));
    match version {
        "1" | "2" => {
            let (local, server) = rest
                .split_once(':')
                .unwrap_or_else(|| panic!("room v{version}: {id} is $opaque:server"));
            assert!(!local.is_empty(), "room v{version}: {id}");
            assert_eq!(server, SERVER_NAME, "room v{version}: {id}");
        }
        "3" => {
            assert_eq!(
                rest.len(),
                43,
                "room v3: 43 unpadded base64 characters: {id}"
            );
            assert!(
                rest.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'),
                "room v3: standard base64: {id}"
            );
        }
        _ => {
            assert_eq!(
                rest.len(),
                43,
                "room v{version}: 43 unpadded base64 characters: {id}"
            );
            assert!(
                rest.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "room v{version}: URL-safe base64: {id}"
            );
        }
    }
}

async fn room_versions_decide_the_event_id_format(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;

    let default = create_room(&server, &alice, json!({})).await;
    assert_eq!(
        state_content(&server, &alice, &default, "m.room.create", "").await["room_version"],
        "10"
    );

    for version in [None, Some("1"), Some("3"), Some("4"), Some("11")] {
        let body = match version {
            Some(version) => json!({"room_version": version}),
            None => json!({}),
        };
        let version = version.unwrap_or("10");
        let room = create_room(&server, &alice, body).await;
        let create = state_content(&server, &alice, &room, "m.room.create", "").await;
        assert_eq!(create["room_version"], version, "{create}");
        if version == "11" {
            assert!(
                create.get("creator").is_none(),
                "v11 has no creator: {create}"
            );
        } else {
            assert_eq!(create["creator"], alice.id, "{create}");
        }

        // Enough events that the base64 alphabets show: a 43-character id has
        // no `+`/`/` (or `-`/`_`) with probability (62/64)^43 ≈ 0.25.
        let mut event_ids = Vec::new();
        for i in 0..12 {
            event_ids.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
        }
        let state = ok(get(&server, &room_path(&room, "state"), &alice).await);
        event_ids.extend(ids(state.as_array().expect("state array")));
        for id in &event_ids {
            assert_event_id_format(version, id);
            // The id works in a path, `/` and `+` included.
            let event = ok(get_event(&server, &alice, &room, id).await);
            assert_eq!(event["event_id"], id.as_str());
            assert_eq!(event["room_id"], room);
        }
        match version {
            "3" => assert!(
                event_ids
                    .iter()
                    .any(|id| id.contains('+') || id.contains('/')),
                "room v3 uses standard base64: {event_ids:?}"
            ),
            "1" => {}
            _ => assert!(
                event_ids
                    .iter()
                    .any(|id| id.contains('-') || id.contains('_')),
                "room v{version} uses URL-safe base64: {event_ids:?}"
            ),
        }
    }
}

async fn unsupported_room_versions_are_refused(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    for version in ["99", "10.0", "org.example.custom"] {
        assert_error(
            &try_create_room(&server, &alice, json!({"room_version": version})).await,
            400,
            "M_UNSUPPORTED_ROOM_VERSION",
        );
    }
    assert!(
        joined_rooms(&server, &alice).await.is_empty(),
        "no room was left behind"
    );

    let room = create_room(&server, &alice, json!({})).await;
    assert_error(
        &post(
            &server,
            &room_path(&room, "upgrade"),
            &alice,
            json!({"new_version": "99"}),
        )
        .await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    assert!(
        get_state(&server, &alice, &room, "m.room.tombstone", "")
            .await
            .0
            == 404
    );
}

// ---------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------

async fn invite_join_leave_and_forget(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    set_displayname(&server, &bob, "Bob Builder").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "private_chat", "name": "Workshop"}),
    )
    .await;
    assert_eq!(joined_rooms(&server, &alice).await, [room.as_str()]);

    // Invite-only: no walking in.
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");

    invite(&server, &alice, &room, &bob.id).await;
    assert_eq!(
        membership(&server, &alice, &room, &bob.id).await["membership"],
        "invite"
    );
    assert!(!joined_rooms(&server, &bob).await.contains(&room));

    join(&server, &bob, &room).await;
    assert!(joined_rooms(&server, &bob).await.contains(&room));
    let joined = ok(get(&server, &room_path(&room, "joined_members"), &alice).await);
    assert_eq!(
        joined["joined"][&bob.id]["display_name"], "Bob Builder",
        "{joined}"
    );
    assert_eq!(
        joined_member_ids(&server, &alice, &room).await,
        sorted(&[&alice.id, &bob.id])
    );

    // Forgetting needs leaving first.
    let forget = post(&server, &room_path(&room, "forget"), &bob, json!({})).await;
    assert_eq!(forget.0, 400, "{}", forget.1);
    assert!(
        joined_rooms(&server, &bob).await.contains(&room),
        "still joined"
    );

    leave(&server, &bob, &room).await;
    assert!(!joined_rooms(&server, &bob).await.contains(&room));
    assert_eq!(
        membership(&server, &alice, &room, &bob.id).await["membership"],
        "leave"
    );
    assert_eq!(
        joined_member_ids(&server, &alice, &room).await,
        sorted(&[&alice.id])
    );
    assert_error(
        &send(
            &server,
            &bob,
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    assert_eq!(
        ok(post(&server, &room_path(&room, "forget"), &bob, json!({})).await),
        json!({})
    );
    // Alice, still joined, is unaffected.
    assert_eq!(joined_rooms(&server, &alice).await, [room.as_str()]);
}

async fn public_rooms_are_joined_by_id_or_alias(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "town"}),
    )
    .await;

    let by_alias = ok(post(
        &server,
        &format!("{C}/join/{}", enc(&format!("#town:{SERVER_NAME}"))),
        &bob,
        json!({}),
    )
    .await);
    assert_eq!(by_alias["room_id"], room);
    let by_id = ok(post(
        &server,
        &format!("{C}/join/{}", enc(&room)),
        &carol,
        json!({}),
    )
    .await);
    assert_eq!(by_id["room_id"], room);
    assert_eq!(
        members(&server, &alice, &room, "").await,
        pairs(&[(&alice.id, "join"), (&bob.id, "join"), (&carol.id, "join")])
    );
    assert!(joined_rooms(&server, &bob).await.contains(&room));

    assert_error(
        &post(
            &server,
            &format!("{C}/join/{}", enc(&format!("#nowhere:{SERVER_NAME}"))),
            &bob,
            json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

async fn kick_ban_and_unban(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;

    // Power 0 cannot kick.
    assert_error(
        &post(
            &server,
            &room_path(&room, "kick"),
            &carol,
            json!({"user_id": bob.id}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership(&server, &alice, &room, &bob.id).await["membership"],
        "join"
    );

    ok(post(
        &server,
        &room_path(&room, "kick"),
        &alice,
        json!({"user_id": bob.id, "reason": "too loud"}),
    )
    .await);
    let kicked = membership(&server, &alice, &room, &bob.id).await;
    assert_eq!(kicked["membership"], "leave", "{kicked}");
    assert_eq!(kicked["reason"], "too loud", "{kicked}");
    assert!(!joined_rooms(&server, &bob).await.contains(&room));

    // A kick is not a ban: Bob may come back to a public room.
    join(&server, &bob, &room).await;

    ok(post(
        &server,
        &room_path(&room, "ban"),
        &alice,
        json!({"user_id": bob.id, "reason": "spam"}),
    )
    .await);
    let banned = membership(&server, &alice, &room, &bob.id).await;
    assert_eq!(banned["membership"], "ban", "{banned}");
    assert_eq!(banned["reason"], "spam", "{banned}");
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_error(
        &post(
            &server,
            &format!("{C}/join/{}", enc(&room)),
            &bob,
            json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Power 0 cannot unban either.
    assert_error(
        &post(
            &server,
            &room_path(&room, "unban"),
            &carol,
            json!({"user_id": bob.id}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    ok(post(
        &server,
        &room_path(&room, "unban"),
        &alice,
        json!({"user_id": bob.id}),
    )
    .await);
    assert_eq!(
        membership(&server, &alice, &room, &bob.id).await["membership"],
        "leave"
    );
    join(&server, &bob, &room).await;
    assert_eq!(
        membership(&server, &alice, &room, &bob.id).await["membership"],
        "join"
    );
}

async fn knocking_asks_to_join_a_knock_room(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "room_version": "10",
            "room_alias_name": "door",
            "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
        }),
    )
    .await;
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.join_rules", "").await["join_rule"],
        "knock"
    );

    // Knocking is asking, not joining.
    assert_error(&try_join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    let knocked = ok(post(
        &server,
        &format!("{C}/knock/{}", enc(&format!("#door:{SERVER_NAME}"))),
        &bob,
        json!({"reason": "let me in"}),
    )
    .await);
    assert_eq!(knocked["room_id"], room);
    let knock = membership(&server, &alice, &room, &bob.id).await;
    assert_eq!(knock["membership"], "knock", "{knock}");
    assert_eq!(knock["reason"], "let me in", "{knock}");
    assert_eq!(
        members(&server, &alice, &room, "membership=knock").await,
        pairs(&[(&bob.id, "knock")])
    );
    assert!(!joined_rooms(&server, &bob).await.contains(&room));

    // Alice lets Bob in.
    invite(&server, &alice, &room, &bob.id).await;
    join(&server, &bob, &room).await;
    assert_eq!(
        membership(&server, &alice, &room, &bob.id).await["membership"],
        "join"
    );

    // Rooms that do not take knocks refuse them.
    let invite_only = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let public = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    for other in [&invite_only, &public] {
        assert_error(
            &post(
                &server,
                &format!("{C}/knock/{}", enc(other)),
                &carol,
                json!({}),
            )
            .await,
            403,
            "M_FORBIDDEN",
        );
    }
    assert_error(
        &post(
            &server,
            &format!("{C}/knock/{}", enc(&format!("#nowhere:{SERVER_NAME}"))),
            &carol,
            json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

async fn members_are_filtered_by_membership_and_point_in_time(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    let eve = server.user("eve").await;
    let frank = server.user("frank").await;
    set_displayname(&server, &alice, "Alice A").await;
    set_displayname(&server, &bob, "Bob B").await;

    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    // A token for "now": the start of a backwards page from the live end.
    // (/sync's prev_batch is the usual source; there is no /sync yet.)
    let now = ok(messages(&server, &alice, &room, "dir=b&limit=1").await);
    let at = now["start"].as_str().expect("start token").to_owned();

    invite(&server, &alice, &room, &carol.id).await;
    join(&server, &dave, &room).await;
    leave(&server, &dave, &room).await;
    join(&server, &eve, &room).await;
    ok(post(
        &server,
        &room_path(&room, "ban"),
        &alice,
        json!({"user_id": eve.id}),
    )
    .await);

    assert_eq!(
        members(&server, &alice, &room, "").await,
        pairs(&[
            (&alice.id, "join"),
            (&bob.id, "join"),
            (&carol.id, "invite"),
            (&dave.id, "leave"),
            (&eve.id, "ban"),
        ])
    );
    assert_eq!(
        members(&server, &alice, &room, "membership=join").await,
        pairs(&[(&alice.id, "join"), (&bob.id, "join")])
    );
    assert_eq!(
        members(&server, &alice, &room, "membership=invite").await,
        pairs(&[(&carol.id, "invite")])
    );
    assert_eq!(
        members(&server, &alice, &room, "membership=ban").await,
        pairs(&[(&eve.id, "ban")])
    );
    assert_eq!(
        members(&server, &alice, &room, "not_membership=leave").await,
        pairs(&[
            (&alice.id, "join"),
            (&bob.id, "join"),
            (&carol.id, "invite"),
            (&eve.id, "ban"),
        ])
    );
    // At the earlier point, only Alice and Bob had any membership.
    assert_eq!(
        members(&server, &alice, &room, &format!("at={}", enc(&at))).await,
        pairs(&[(&alice.id, "join"), (&bob.id, "join")])
    );

    let joined = ok(get(&server, &room_path(&room, "joined_members"), &bob).await);
    assert_eq!(
        joined_member_ids(&server, &bob, &room).await,
        sorted(&[&alice.id, &bob.id])
    );
    assert_eq!(
        joined["joined"][&alice.id]["display_name"], "Alice A",
        "{joined}"
    );
    assert_eq!(
        joined["joined"][&bob.id]["display_name"], "Bob B",
        "{joined}"
    );

    // Frank was never in the room.
    assert_error(
        &get(&server, &room_path(&room, "members"), &frank).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &get(&server, &room_path(&room, "joined_members"), &frank).await,
        403,
        "M_FORBIDDEN",
    );
}

// ---------------------------------------------------------------------------
// Sending and state
// ---------------------------------------------------------------------------

async fn retried_sends_are_deduplicated_per_device(backend: Backend) {
    let mut server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let (_, login) = server.login("alice", PASSWORD).await;
    let phone = User {
        id: alice.id.clone(),
        token: login["access_token"]
            .as_str()
            .expect("second device")
            .to_owned(),
    };
    let room = create_room(&server, &alice, json!({})).await;
    let path = room_path(&room, "send/m.room.message/retry-1");

    let first = ok(server
        .put(
            &path,
            &alice,
            json!({"msgtype": "m.text", "body": "only once"}),
        )
        .await);
    let again = ok(server
        .put(
            &path,
            &alice,
            json!({"msgtype": "m.text", "body": "only once"}),
        )
        .await);
    assert_eq!(
        first["event_id"], again["event_id"],
        "a retry is the same event"
    );

    let other_device = ok(server
        .put(
            &path,
            &phone,
            json!({"msgtype": "m.text", "body": "from the phone"}),
        )
        .await);
    assert_ne!(
        first["event_id"], other_device["event_id"],
        "another device's transaction"
    );

    let timeline = all_messages(&server, &alice, &room).await;
    assert_eq!(bodies(&timeline), ["only once", "from the phone"]);
    assert_eq!(
        ids(&timeline),
        [
            first["event_id"].as_str().unwrap(),
            other_device["event_id"].as_str().unwrap()
        ]
    );

    // After a restart the transaction is only in the database, which still
    // answers the retry, even once the sender has left the room.
    server.crash_and_restart().await;
    let retry = async || {
        ok(server
            .put(
                &path,
                &alice,
                json!({"msgtype": "m.text", "body": "only once"}),
            )
            .await)
    };
    assert_eq!(retry().await["event_id"], first["event_id"]);
    ok(post(&server, &room_path(&room, "leave"), &alice, json!({})).await);
    assert_eq!(retry().await["event_id"], first["event_id"]);
    assert_error(
        &server
            .put(
                &room_path(&room, "send/m.room.message/retry-2"),
                &alice,
                json!({"msgtype": "m.text", "body": "not a member"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        bodies(&all_messages(&server, &alice, &room).await),
        ["only once", "from the phone"]
    );

    // The same transaction id in another room is another request.
    let elsewhere = create_room(&server, &alice, json!({})).await;
    let there = ok(server
        .put(
            &room_path(&elsewhere, "send/m.room.message/retry-1"),
            &alice,
            json!({"msgtype": "m.text", "body": "elsewhere"}),
        )
        .await);
    assert_ne!(there["event_id"], first["event_id"]);
    assert_eq!(
        bodies(&all_messages(&server, &alice, &elsewhere).await),
        ["elsewhere"]
    );
}

async fn state_events_are_set_read_and_listed(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let frank = server.user("frank").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;

    // Empty state key, with the trailing slash...
    let first = ok(server
        .put(
            &room_path(&room, "state/m.room.topic/"),
            &alice,
            json!({"topic": "first"}),
        )
        .await);
    assert!(
        first["event_id"].as_str().unwrap().starts_with('$'),
        "{first}"
    );
    assert_eq!(
        ok(get(&server, &room_path(&room, "state/m.room.topic"), &alice).await),
        json!({"topic": "first"})
    );
    // ...and without it.
    ok(server
        .put(
            &room_path(&room, "state/m.room.topic"),
            &alice,
            json!({"topic": "second"}),
        )
        .await);
    assert_eq!(
        ok(get(&server, &room_path(&room, "state/m.room.topic/"), &alice).await),
        json!({"topic": "second"})
    );

    ok(set_state(
        &server,
        &alice,
        &room,
        "org.example.shelf",
        "books",
        json!({"count": 3}),
    )
    .await);
    assert_eq!(
        state_content(&server, &alice, &room, "org.example.shelf", "books").await,
        json!({"count": 3})
    );
    assert_error(
        &get_state(&server, &alice, &room, "org.example.shelf", "magazines").await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &get_state(&server, &alice, &room, "m.room.name", "").await,
        404,
        "M_NOT_FOUND",
    );

    let state = ok(get(&server, &room_path(&room, "state"), &alice).await);
    let state = state.as_array().expect("an array of events");
    let of_type = |event_type: &str| -> Vec<&Value> {
        state
            .iter()
            .filter(|event| event["type"] == event_type)
            .collect()
    };
    let create = of_type("m.room.create");
    assert_eq!(create.len(), 1, "{state:?}");
    assert_eq!(create[0]["sender"], alice.id);
    assert_eq!(create[0]["room_id"], room);
    assert_eq!(create[0]["state_key"], "");
    assert!(create[0]["event_id"].as_str().unwrap().starts_with('$'));
    assert!(create[0]["origin_server_ts"].is_u64());
    assert_eq!(of_type("m.room.power_levels").len(), 1);
    assert_eq!(
        of_type("m.room.join_rules")[0]["content"]["join_rule"],
        "public"
    );
    let member = of_type("m.room.member");
    assert_eq!(member.len(), 1);
    assert_eq!(member[0]["state_key"], alice.id);
    let topics = of_type("m.room.topic");
    assert_eq!(topics.len(), 1, "only the current topic: {topics:?}");
    assert_eq!(topics[0]["content"]["topic"], "second");
    let shelves = of_type("org.example.shelf");
    assert_eq!(shelves.len(), 1);
    assert_eq!(shelves[0]["state_key"], "books");

    // Members read state; strangers do not.
    join(&server, &bob, &room).await;
    assert_eq!(
        state_content(&server, &bob, &room, "m.room.topic", "").await["topic"],
        "second"
    );
    assert_error(
        &get(&server, &room_path(&room, "state"), &frank).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &get_state(&server, &frank, &room, "m.room.topic", "").await,
        403,
        "M_FORBIDDEN",
    );
}

async fn redaction_strips_content_and_needs_power(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;

    // Anyone may redact their own events.
    let oops = send_text(&server, &bob, &room, "oops").await;
    let redact_path = room_path(&room, &format!("redact/{}/{}", enc(&oops), "r1"));
    let redaction = ok(server
        .put(&redact_path, &bob, json!({"reason": "typo"}))
        .await)["event_id"]
        .as_str()
        .expect("redaction event_id")
        .to_owned();
    let retried = ok(server
        .put(&redact_path, &bob, json!({"reason": "typo"}))
        .await);
    assert_eq!(
        retried["event_id"], redaction,
        "the redaction's txn id is honoured"
    );

    let redacted = ok(get_event(&server, &alice, &room, &oops).await);
    assert_eq!(redacted["type"], "m.room.message");
    assert_eq!(redacted["sender"], bob.id);
    assert_eq!(redacted["content"], json!({}), "{redacted}");
    let because = &redacted["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction, "{redacted}");
    assert_eq!(because["type"], "m.room.redaction");
    assert_eq!(because["sender"], bob.id);
    assert_eq!(because["content"]["reason"], "typo");

    // /messages serves it redacted too, with the redaction after it.
    let timeline = page_all(&server, &alice, &room, "f", 50, None, None).await;
    let served = find(&timeline, &oops);
    assert_eq!(served["content"], json!({}), "{served}");
    assert_eq!(
        served["unsigned"]["redacted_because"]["event_id"],
        redaction
    );
    let order = ids(&timeline);
    let at = |id: &str| order.iter().position(|x| x == id).unwrap();
    assert!(at(&oops) < at(&redaction), "{order:?}");
    let redaction_event = find(&timeline, &redaction);
    assert!(
        redaction_event["redacts"] == oops.as_str()
            || redaction_event["content"]["redacts"] == oops.as_str(),
        "{redaction_event}"
    );

    // Without power, other people's events cannot be redacted.
    let keep = send_text(&server, &bob, &room, "keep").await;
    assert_error(
        &server
            .put(
                &room_path(&room, &format!("redact/{}/{}", enc(&keep), txn())),
                &carol,
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        ok(get_event(&server, &alice, &room, &keep).await)["content"]["body"],
        "keep"
    );

    // The creator (power 100) can.
    let by_alice = ok(server
        .put(
            &room_path(&room, &format!("redact/{}/{}", enc(&keep), txn())),
            &alice,
            json!({}),
        )
        .await);
    let kept = ok(get_event(&server, &bob, &room, &keep).await);
    assert_eq!(kept["content"], json!({}), "{kept}");
    assert_eq!(
        kept["unsigned"]["redacted_because"]["event_id"],
        by_alice["event_id"]
    );
    assert_eq!(kept["unsigned"]["redacted_because"]["sender"], alice.id);
}

// ---------------------------------------------------------------------------
// History: /messages, /context, /event, timestamp_to_event
// ---------------------------------------------------------------------------

async fn messages_page_both_ways_with_tokens_and_filters(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let frank = server.user("frank").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let mut sent = Vec::new();
    let mut topic = String::new();
    for i in 0..12 {
        sent.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
        if i == 5 {
            let set = ok(set_state(
                &server,
                &alice,
                &room,
                "m.room.topic",
                "",
                json!({"topic": "halfway"}),
            )
            .await);
            topic = set["event_id"].as_str().unwrap().to_owned();
        }
    }
    let texts: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();

    // Forwards from the beginning: the create event first, then everything in order.
    let forward = page_all(&server, &alice, &room, "f", 5, None, None).await;
    assert_eq!(forward[0]["type"], "m.room.create", "{:?}", forward[0]);
    let order = ids(&forward);
    let messages_in_order: Vec<String> = forward
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(messages_in_order, sent);
    let at = |id: &str| order.iter().position(|x| x == id).unwrap();
    assert!(
        at(&sent[5]) < at(&topic) && at(&topic) < at(&sent[6]),
        "{order:?}"
    );

    // Backwards from the end is the exact reverse.
    let mut backward = ids(&page_all(&server, &alice, &room, "b", 5, None, None).await);
    backward.reverse();
    assert_eq!(backward, order);

    // Filtered to messages, in both directions.
    let filter = messages_only();
    let filtered = page_all(&server, &alice, &room, "f", 4, Some(&filter), None).await;
    assert_eq!(bodies(&filtered), texts);
    let filtered = page_all(&server, &alice, &room, "b", 4, Some(&filter), None).await;
    let mut reversed = texts.clone();
    reversed.reverse();
    assert_eq!(bodies(&filtered), reversed);

    // The default limit is 10.
    let page = ok(messages(&server, &alice, &room, "dir=b").await);
    assert_eq!(page["chunk"].as_array().unwrap().len(), 10, "{page}");

    // Tokens resume exactly where the previous page stopped.
    let page = ok(messages(&server, &alice, &room, "dir=b&limit=3").await);
    assert_eq!(
        ids(page["chunk"].as_array().unwrap()),
        pick(&sent, &[11, 10, 9])
    );
    let end = page["end"].as_str().expect("more to come").to_owned();
    let next = ok(messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=3&from={}", enc(&end)),
    )
    .await);
    assert_eq!(
        ids(next["chunk"].as_array().unwrap()),
        pick(&sent, &[8, 7, 6])
    );
    // `to` stops at a token.
    let upto = ok(messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=50&to={}", enc(&end)),
    )
    .await);
    assert_eq!(
        ids(upto["chunk"].as_array().unwrap()),
        pick(&sent, &[11, 10, 9])
    );
    // A token from a backwards page also pages forwards.
    let after = page_all(&server, &alice, &room, "f", 50, None, Some(&end)).await;
    assert_eq!(ids(&after), pick(&sent, &[9, 10, 11]));

    assert_error(
        &messages(&server, &alice, &room, "dir=sideways").await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &messages(&server, &frank, &room, "dir=b").await,
        403,
        "M_FORBIDDEN",
    );
}

async fn context_shows_the_events_around_an_event(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }
    let context_path = |event_id: &str, query: &str| {
        room_path(&room, &format!("context/{}?{query}", enc(event_id)))
    };

    let context = ok(get(&server, &context_path(&sent[5], "limit=4"), &alice).await);
    assert_eq!(context["event"]["event_id"], sent[5]);
    assert_eq!(context["event"]["content"]["body"], "m5");
    let before = ids(context["events_before"].as_array().expect("events_before"));
    let after = ids(context["events_after"].as_array().expect("events_after"));
    assert!(!before.is_empty() && !after.is_empty(), "{context}");
    assert!(
        before.len() + after.len() <= 4,
        "the limit covers both sides: {context}"
    );
    let expected_before: Vec<String> = sent[..5].iter().rev().take(before.len()).cloned().collect();
    assert_eq!(before, expected_before, "just before, newest first");
    let expected_after: Vec<String> = sent[6..].iter().take(after.len()).cloned().collect();
    assert_eq!(after, expected_after, "just after, oldest first");
    let state = context["state"].as_array().expect("state");
    assert!(
        state.iter().any(|event| event["type"] == "m.room.create"),
        "{context}"
    );
    assert!(
        state
            .iter()
            .any(|event| event["type"] == "m.room.member" && event["state_key"] == alice.id),
        "{context}"
    );

    // The tokens continue where the context stops.
    let filter = messages_only();
    let start = context["start"].as_str().expect("start token");
    let earlier = page_all(&server, &alice, &room, "b", 10, Some(&filter), Some(start)).await;
    let expected: Vec<String> = sent[..5 - before.len()].iter().rev().cloned().collect();
    assert_eq!(ids(&earlier), expected);
    let end = context["end"].as_str().expect("end token");
    let later = page_all(&server, &alice, &room, "f", 10, Some(&filter), Some(end)).await;
    assert_eq!(ids(&later), sent[6 + after.len()..].to_vec());

    // limit=0: just the event.
    let alone = ok(get(&server, &context_path(&sent[5], "limit=0"), &alice).await);
    assert_eq!(alone["event"]["event_id"], sent[5]);
    for side in ["events_before", "events_after"] {
        assert!(
            alone[side].as_array().is_none_or(Vec::is_empty),
            "{side}: {alone}"
        );
    }

    let unknown = format!("$doesnotexist:{SERVER_NAME}");
    assert_error(
        &get(&server, &context_path(&unknown, "limit=4"), &alice).await,
        404,
        "M_NOT_FOUND",
    );
}

async fn timestamp_to_event_finds_the_nearest_event(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let frank = server.user("frank").await;
    let room = create_room(&server, &alice, json!({})).await;
    let ts_of = |event_id: String| {
        let (server, alice, room) = (&server, &alice, room.clone());
        async move {
            ok(get_event(server, alice, &room, &event_id).await)["origin_server_ts"]
                .as_u64()
                .expect("origin_server_ts")
        }
    };

    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = send_text(&server, &alice, &room, "first").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = send_text(&server, &alice, &room, "second").await;
    let (first_ts, second_ts) = (ts_of(first.clone()).await, ts_of(second.clone()).await);
    assert!(second_ts > first_ts + 1, "{first_ts} {second_ts}");

    let path = |ts: u64, dir: &str| {
        format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}",
            enc(&room)
        )
    };
    let found = ok(get(&server, &path(first_ts + 1, "f"), &alice).await);
    assert_eq!(found["event_id"], second, "{found}");
    assert_eq!(found["origin_server_ts"], second_ts);
    let found = ok(get(&server, &path(second_ts - 1, "b"), &alice).await);
    assert_eq!(found["event_id"], first, "{found}");
    assert_eq!(found["origin_server_ts"], first_ts);
    assert_eq!(
        ok(get(&server, &path(first_ts, "f"), &alice).await)["event_id"],
        first
    );
    assert_eq!(
        ok(get(&server, &path(second_ts, "b"), &alice).await)["event_id"],
        second
    );

    assert_error(
        &get(&server, &path(second_ts + 60_000, "f"), &alice).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &get(&server, &path(1, "b"), &alice).await,
        404,
        "M_NOT_FOUND",
    );
    // A stranger learns nothing about the room's events.
    assert_not_found_or_forbidden(&get(&server, &path(first_ts, "f"), &frank).await);
}

// ---------------------------------------------------------------------------
// Aliases and the room directory
// ---------------------------------------------------------------------------

async fn aliases_are_created_resolved_listed_and_deleted(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let alias = format!("#hall:{SERVER_NAME}");
    let path = format!("{C}/directory/room/{}", enc(&alias));

    assert_eq!(
        ok(server.put(&path, &alice, json!({"room_id": room})).await),
        json!({})
    );
    let resolved = ok(get(&server, &path, &bob).await);
    assert_eq!(resolved["room_id"], room);
    assert!(contains(&resolved["servers"], SERVER_NAME), "{resolved}");
    let listed = ok(get(&server, &room_path(&room, "aliases"), &alice).await);
    assert!(contains(&listed["aliases"], &alias), "{listed}");

    // Taken.
    assert_error(
        &server.put(&path, &alice, json!({"room_id": other})).await,
        409,
        "M_ROOM_IN_USE",
    );
    assert_eq!(
        ok(get(&server, &path, &alice).await)["room_id"],
        room,
        "unchanged"
    );
    assert_error(
        &try_create_room(&server, &alice, json!({"room_alias_name": "hall"})).await,
        400,
        "M_ROOM_IN_USE",
    );

    // A stranger cannot list a private room's aliases.
    assert_error(
        &get(&server, &room_path(&other, "aliases"), &bob).await,
        403,
        "M_FORBIDDEN",
    );

    // Deleted: gone from the directory and the room's list.
    assert_eq!(
        ok(server
            .request(Method::DELETE, &path, Some(&alice.token), None)
            .await),
        json!({})
    );
    assert_error(&get(&server, &path, &alice).await, 404, "M_NOT_FOUND");
    assert_error(
        &server
            .request(Method::DELETE, &path, Some(&alice.token), None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    let listed = ok(get(&server, &room_path(&room, "aliases"), &alice).await);
    assert!(!contains(&listed["aliases"], &alias), "{listed}");
    // ...and free again.
    ok(server.put(&path, &alice, json!({"room_id": other})).await);
    assert_eq!(ok(get(&server, &path, &alice).await)["room_id"], other);

    // Malformed aliases.
    for bad in ["hall", "#hall", "hall:myelin.test"] {
        let path = format!("{C}/directory/room/{}", enc(bad));
        assert_error(&get(&server, &path, &alice).await, 400, "M_INVALID_PARAM");
        assert_error(
            &server.put(&path, &alice, json!({"room_id": room})).await,
            400,
            "M_INVALID_PARAM",
        );
    }
}

async fn canonical_alias_must_name_an_alias_of_the_room(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_alias_name": "here"})).await;
    create_room(&server, &alice, json!({"room_alias_name": "there"})).await;
    let here = format!("#here:{SERVER_NAME}");
    let canonical = |content: Value| {
        let (server, alice, room) = (&server, &alice, room.clone());
        async move { set_state(server, alice, &room, "m.room.canonical_alias", "", content).await }
    };

    assert_error(
        &canonical(json!({"alias": format!("#nowhere:{SERVER_NAME}")})).await,
        400,
        "M_BAD_ALIAS",
    );
    assert_error(
        &canonical(json!({"alias": format!("#there:{SERVER_NAME}")})).await,
        400,
        "M_BAD_ALIAS",
    );
    assert_error(
        &canonical(json!({"alias": here, "alt_aliases": [format!("#nowhere:{SERVER_NAME}")]}))
            .await,
        400,
        "M_BAD_ALIAS",
    );
    assert_error(
        &canonical(json!({"alias": "not an alias"})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.canonical_alias", "").await["alias"],
        here,
        "the refused events changed nothing"
    );

    // An alias of the room itself is fine, as is one already in the event.
    ok(server
        .put(
            &format!(
                "{C}/directory/room/{}",
                enc(&format!("#also-here:{SERVER_NAME}"))
            ),
            &alice,
            json!({"room_id": room}),
        )
        .await);
    ok(
        canonical(json!({"alias": here, "alt_aliases": [format!("#also-here:{SERVER_NAME}")]}))
            .await,
    );
}

async fn published_rooms_are_listed_searched_and_paged(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let published = |name: &'static str, extra: Value| {
        let (server, alice) = (&server, &alice);
        async move {
            let mut body = json!({"visibility": "public", "preset": "public_chat", "name": name});
            for (key, value) in extra.as_object().unwrap() {
                body[key] = value.clone();
            }
            create_room(server, alice, body).await
        }
    };
    let alpha = published("Alpha lounge", json!({"topic": "first"})).await;
    let beta = published("Beta lounge", json!({})).await;
    let gamma = published("Gamma kitchen", json!({"room_alias_name": "gamma"})).await;
    let unlisted = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Unlisted lounge"}),
    )
    .await;
    create_room(
        &server,
        &alice,
        json!({"visibility": "private", "name": "Secret lounge"}),
    )
    .await;

    let room_ids = |body: &Value| -> Vec<String> {
        let mut ids: Vec<String> = body["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .map(|room| room["room_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };

    let listing = ok(get(&server, &format!("{C}/publicRooms"), &bob).await);
    assert_eq!(room_ids(&listing), sorted(&[&alpha, &beta, &gamma]));
    let entry = listing["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|room| room["room_id"] == gamma)
        .unwrap();
    assert_eq!(entry["name"], "Gamma kitchen", "{entry}");
    assert_eq!(
        entry["canonical_alias"],
        format!("#gamma:{SERVER_NAME}"),
        "{entry}"
    );
    assert_eq!(entry["num_joined_members"], 1, "{entry}");
    assert_eq!(entry["world_readable"], false, "{entry}");
    assert_eq!(entry["guest_can_join"], false, "{entry}");
    let alpha_entry = listing["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|room| room["room_id"] == alpha)
        .unwrap();
    assert_eq!(alpha_entry["topic"], "first", "{alpha_entry}");

    // Searching.
    let found = ok(post(
        &server,
        &format!("{C}/publicRooms"),
        &bob,
        json!({"filter": {"generic_search_term": "lounge"}}),
    )
    .await);
    assert_eq!(room_ids(&found), sorted(&[&alpha, &beta]));
    let found = ok(post(
        &server,
        &format!("{C}/publicRooms"),
        &bob,
        json!({"filter": {"generic_search_term": "kitchen"}}),
    )
    .await);
    assert_eq!(room_ids(&found), [gamma.as_str()]);

    // Paging, GET and POST.
    let first = ok(get(&server, &format!("{C}/publicRooms?limit=2"), &bob).await);
    assert_eq!(first["chunk"].as_array().unwrap().len(), 2, "{first}");
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();
    let second = ok(get(
        &server,
        &format!("{C}/publicRooms?limit=2&since={}", enc(&since)),
        &bob,
    )
    .await);
    assert_eq!(second["chunk"].as_array().unwrap().len(), 1, "{second}");
    if let Some(since) = second.get("next_batch").and_then(Value::as_str) {
        // A server may hand out one more token; the page behind it is empty and final.
        let third = ok(get(
            &server,
            &format!("{C}/publicRooms?limit=2&since={}", enc(since)),
            &bob,
        )
        .await);
        assert_eq!(third["chunk"], json!([]), "{third}");
        assert!(third.get("next_batch").is_none(), "no more pages: {third}");
    }
    let mut both = room_ids(&first);
    both.extend(room_ids(&second));
    both.sort();
    assert_eq!(both, sorted(&[&alpha, &beta, &gamma]));

    let first = ok(post(
        &server,
        &format!("{C}/publicRooms"),
        &bob,
        json!({"limit": 2}),
    )
    .await);
    assert_eq!(first["chunk"].as_array().unwrap().len(), 2, "{first}");
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();
    let second = ok(post(
        &server,
        &format!("{C}/publicRooms"),
        &bob,
        json!({"limit": 2, "since": since}),
    )
    .await);
    let mut both = room_ids(&first);
    both.extend(room_ids(&second));
    both.sort();
    assert_eq!(both, sorted(&[&alpha, &beta, &gamma]));

    // Visibility, read and changed.
    let visibility = |room: &str| format!("{C}/directory/list/room/{}", enc(room));
    assert_eq!(
        ok(get(&server, &visibility(&alpha), &bob).await),
        json!({"visibility": "public"})
    );
    assert_eq!(
        ok(get(&server, &visibility(&unlisted), &bob).await),
        json!({"visibility": "private"})
    );
    ok(server
        .put(
            &visibility(&alpha),
            &alice,
            json!({"visibility": "private"}),
        )
        .await);
    ok(server
        .put(
            &visibility(&unlisted),
            &alice,
            json!({"visibility": "public"}),
        )
        .await);
    assert_eq!(
        ok(get(&server, &visibility(&alpha), &bob).await),
        json!({"visibility": "private"})
    );
    let listing = ok(get(&server, &format!("{C}/publicRooms"), &bob).await);
    assert_eq!(room_ids(&listing), sorted(&[&beta, &gamma, &unlisted]));

    assert_error(
        &get(
            &server,
            &visibility(&format!("!nonexistent:{SERVER_NAME}")),
            &bob,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

// ---------------------------------------------------------------------------
// Profiles and the user directory
// ---------------------------------------------------------------------------

async fn profiles_are_read_written_and_reach_room_membership(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let profile = format!("{C}/profile/{}", enc(&alice.id));

    ok(server
        .put(
            &format!("{profile}/displayname"),
            &alice,
            json!({"displayname": "Alice Liddell"}),
        )
        .await);
    assert_eq!(
        ok(get(&server, &format!("{profile}/displayname"), &bob).await),
        json!({"displayname": "Alice Liddell"})
    );
    ok(server
        .put(
            &format!("{profile}/avatar_url"),
            &alice,
            json!({"avatar_url": "mxc://myelin.test/rabbit"}),
        )
        .await);
    assert_eq!(
        ok(get(&server, &format!("{profile}/avatar_url"), &bob).await),
        json!({"avatar_url": "mxc://myelin.test/rabbit"})
    );
    let whole = ok(get(&server, &profile, &bob).await);
    assert_eq!(whole["displayname"], "Alice Liddell", "{whole}");
    assert_eq!(whole["avatar_url"], "mxc://myelin.test/rabbit", "{whole}");

    // The room sees the new profile.
    let member = membership(&server, &bob, &room, &alice.id).await;
    assert_eq!(member["membership"], "join", "{member}");
    assert_eq!(member["displayname"], "Alice Liddell", "{member}");
    assert_eq!(member["avatar_url"], "mxc://myelin.test/rabbit", "{member}");
    let joined = ok(get(&server, &room_path(&room, "joined_members"), &bob).await);
    assert_eq!(
        joined["joined"][&alice.id]["display_name"], "Alice Liddell",
        "{joined}"
    );
    assert_eq!(
        joined["joined"][&alice.id]["avatar_url"], "mxc://myelin.test/rabbit",
        "{joined}"
    );

    // Only Alice changes Alice.
    assert_error(
        &server
            .put(
                &format!("{profile}/displayname"),
                &bob,
                json!({"displayname": "Hacked"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        ok(get(&server, &format!("{profile}/displayname"), &bob).await)["displayname"],
        "Alice Liddell"
    );

    let nobody = format!("{C}/profile/{}", enc(&format!("@nobody:{SERVER_NAME}")));
    assert_error(&get(&server, &nobody, &alice).await, 404, "M_NOT_FOUND");
    assert_error(
        &get(&server, &format!("{nobody}/displayname"), &alice).await,
        404,
        "M_NOT_FOUND",
    );
}

async fn search_users(server: &TestServer, searcher: &User, term: &str) -> Value {
    ok(post(
        server,
        &format!("{C}/user_directory/search"),
        searcher,
        json!({"search_term": term, "limit": 10}),
    )
    .await)
}

fn found_ids(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|user| user["user_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Searches until `user_id` turns up (the directory may be updated in the
/// background), for at most five seconds.
async fn search_until_found(
    server: &TestServer,
    searcher: &User,
    term: &str,
    user_id: &str,
) -> Value {
    for _ in 0..50 {
        let results = search_users(server, searcher, term).await;
        if found_ids(&results).iter().any(|id| id == user_id) {
            return results;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("searching {term:?} never found {user_id}");
}

async fn user_directory_finds_people_you_share_a_room_with(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    set_displayname(&server, &bob, "Bobby Tables").await;
    set_displayname(&server, &carol, "Carol Hidden").await;
    set_displayname(&server, &dave, "Dave Public").await;

    let room = create_room(
        &server,
        &alice,
        json!({"preset": "private_chat", "invite": [bob.id]}),
    )
    .await;
    join(&server, &bob, &room).await;
    create_room(&server, &dave, json!({"preset": "public_chat"})).await;

    let found = search_until_found(&server, &alice, "bob", &bob.id).await;
    assert_eq!(found["limited"], false, "{found}");
    let entry = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["user_id"] == bob.id)
        .unwrap();
    assert_eq!(entry["display_name"], "Bobby Tables", "{entry}");
    // By display name, case-insensitively.
    search_until_found(&server, &alice, "TABLES", &bob.id).await;
    // Someone in a public room is findable.
    search_until_found(&server, &alice, "dave", &dave.id).await;

    // Carol shares no room and is in no public room.
    for term in ["carol", "hidden"] {
        let results = search_users(&server, &alice, term).await;
        assert!(
            !found_ids(&results).contains(&carol.id),
            "{term}: {results}"
        );
    }
}

// ---------------------------------------------------------------------------
// Upgrades and reports
// ---------------------------------------------------------------------------

async fn upgrading_replaces_the_room(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let old = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "room_version": "10",
            "name": "Old hall",
            "topic": "Dusty",
            "room_alias_name": "hall",
            "invite": [bob.id],
        }),
    )
    .await;
    join(&server, &bob, &old).await;

    // Bob (power 0) may not.
    assert_error(
        &post(
            &server,
            &room_path(&old, "upgrade"),
            &bob,
            json!({"new_version": "11"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        get_state(&server, &alice, &old, "m.room.tombstone", "")
            .await
            .0,
        404
    );

    let upgraded = ok(post(
        &server,
        &room_path(&old, "upgrade"),
        &alice,
        json!({"new_version": "11"}),
    )
    .await);
    let new = upgraded["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned();
    assert!(new.starts_with('!') && new != old, "{upgraded}");

    let tombstone = state_content(&server, &alice, &old, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new, "{tombstone}");
    let create = state_content(&server, &alice, &new, "m.room.create", "").await;
    assert_eq!(create["room_version"], "11", "{create}");
    assert_eq!(create["predecessor"]["room_id"], old, "{create}");
    assert_eq!(
        state_content(&server, &alice, &new, "m.room.name", "").await["name"],
        "Old hall"
    );
    assert_eq!(
        state_content(&server, &alice, &new, "m.room.topic", "").await["topic"],
        "Dusty"
    );
    assert_eq!(
        state_content(&server, &alice, &new, "m.room.join_rules", "").await["join_rule"],
        "invite"
    );
    assert!(joined_rooms(&server, &alice).await.contains(&new));
    // Local aliases move to the new room.
    let resolved = ok(get(
        &server,
        &format!(
            "{C}/directory/room/{}",
            enc(&format!("#hall:{SERVER_NAME}"))
        ),
        &alice,
    )
    .await);
    assert_eq!(resolved["room_id"], new);
}

async fn events_can_be_reported(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let rude = send_text(&server, &bob, &room, "something rude").await;
    let report = |event_id: &str| room_path(&room, &format!("report/{}", enc(event_id)));

    assert_eq!(
        ok(post(
            &server,
            &report(&rude),
            &alice,
            json!({"reason": "rude", "score": -100})
        )
        .await),
        json!({})
    );
    assert_error(
        &post(
            &server,
            &report(&format!("$doesnotexist:{SERVER_NAME}")),
            &alice,
            json!({"reason": "rude"}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    // Reporters must be in the room.
    assert_error(
        &post(&server, &report(&rude), &carol, json!({"reason": "rude"})).await,
        404,
        "M_NOT_FOUND",
    );
}

// ---------------------------------------------------------------------------
// History visibility
// ---------------------------------------------------------------------------

async fn joined_history_hides_messages_from_before_joining(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}],
        }),
    )
    .await;
    let before = send_text(&server, &alice, &room, "before you came").await;
    join(&server, &bob, &room).await;
    let after = send_text(&server, &alice, &room, "after you came").await;

    assert_eq!(
        bodies(&all_messages(&server, &bob, &room).await),
        ["after you came"]
    );
    let backwards = page_all(&server, &bob, &room, "b", 5, Some(&messages_only()), None).await;
    assert_eq!(bodies(&backwards), ["after you came"]);
    assert_error(
        &get_event(&server, &bob, &room, &before).await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        ok(get_event(&server, &bob, &room, &after).await)["content"]["body"],
        "after you came"
    );
    // Alice was there for both.
    assert_eq!(
        bodies(&all_messages(&server, &alice, &room).await),
        ["before you came", "after you came"]
    );
}

async fn invited_history_starts_at_the_invite(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "invited"}}],
        }),
    )
    .await;
    let before = send_text(&server, &alice, &room, "before the invite").await;
    invite(&server, &alice, &room, &bob.id).await;
    send_text(&server, &alice, &room, "while invited").await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "after joining").await;

    assert_eq!(
        bodies(&all_messages(&server, &bob, &room).await),
        ["while invited", "after joining"]
    );
    assert_error(
        &get_event(&server, &bob, &room, &before).await,
        404,
        "M_NOT_FOUND",
    );
}

async fn shared_history_shows_earlier_messages_until_you_leave(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let before = send_text(&server, &alice, &room, "before you came").await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "after you came").await;

    assert_eq!(
        bodies(&all_messages(&server, &bob, &room).await),
        ["before you came", "after you came"]
    );
    assert_eq!(
        ok(get_event(&server, &bob, &room, &before).await)["content"]["body"],
        "before you came"
    );

    // After leaving, Bob keeps what he could see, and nothing newer.
    leave(&server, &bob, &room).await;
    let later = send_text(&server, &alice, &room, "after you left").await;
    assert_eq!(
        bodies(&all_messages(&server, &bob, &room).await),
        ["before you came", "after you came"]
    );
    assert_error(
        &get_event(&server, &bob, &room, &later).await,
        404,
        "M_NOT_FOUND",
    );
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

async fn sending_needs_membership(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let public = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let private = create_room(
        &server,
        &alice,
        json!({"preset": "private_chat", "invite": [bob.id]}),
    )
    .await;
    let text = json!({"msgtype": "m.text", "body": "let me talk"});

    for room in [&public, &private] {
        assert_error(
            &send(&server, &bob, room, "m.room.message", text.clone()).await,
            403,
            "M_FORBIDDEN",
        );
        assert_error(
            &set_state(&server, &bob, room, "org.example.note", "", json!({"a": 1})).await,
            403,
            "M_FORBIDDEN",
        );
        assert!(bodies(&all_messages(&server, &alice, room).await).is_empty());
    }
}

async fn state_changes_need_enough_power(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Alice's room"}),
    )
    .await;
    join(&server, &bob, &room).await;

    assert_error(
        &set_state(
            &server,
            &bob,
            &room,
            "m.room.name",
            "",
            json!({"name": "Bob's room"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.name", "").await["name"],
        "Alice's room"
    );

    let mut power = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    power["users"][&bob.id] = json!(100);
    assert_error(
        &set_state(&server, &bob, &room, "m.room.power_levels", "", power).await,
        403,
        "M_FORBIDDEN",
    );
    let power = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    assert!(power["users"].get(&bob.id).is_none(), "{power}");

    // Bob may still talk: the refusal was about power, not membership.
    send_text(&server, &bob, &room, "fine, I'll just talk").await;
}

async fn nobody_kicks_or_bans_someone_more_powerful(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "power_level_content_override": {"users": {alice.id.as_str(): 100, carol.id.as_str(): 50}},
        }),
    )
    .await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;

    // Carol (50) can ban and kick, but not Alice (100).
    for action in ["ban", "kick"] {
        assert_error(
            &post(
                &server,
                &room_path(&room, action),
                &carol,
                json!({"user_id": alice.id}),
            )
            .await,
            403,
            "M_FORBIDDEN",
        );
    }
    assert_eq!(
        membership(&server, &bob, &room, &alice.id).await["membership"],
        "join"
    );
    ok(post(
        &server,
        &room_path(&room, "ban"),
        &carol,
        json!({"user_id": bob.id}),
    )
    .await);
    assert_eq!(
        membership(&server, &alice, &room, &bob.id).await["membership"],
        "ban"
    );
}

async fn unknown_rooms_are_not_found_or_forbidden(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let nowhere = format!("!nonexistent:{SERVER_NAME}");

    assert_not_found_or_forbidden(
        &send(
            &server,
            &alice,
            &nowhere,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hello?"}),
        )
        .await,
    );
    assert_not_found_or_forbidden(&try_join(&server, &alice, &nowhere).await);
    assert_not_found_or_forbidden(
        &post(
            &server,
            &format!("{C}/join/{}", enc(&nowhere)),
            &alice,
            json!({}),
        )
        .await,
    );
    assert_not_found_or_forbidden(
        &post(
            &server,
            &room_path(&nowhere, "invite"),
            &alice,
            json!({"user_id": bob.id}),
        )
        .await,
    );
    assert_not_found_or_forbidden(
        &set_state(
            &server,
            &alice,
            &nowhere,
            "m.room.name",
            "",
            json!({"name": "x"}),
        )
        .await,
    );
    assert_not_found_or_forbidden(&get_state(&server, &alice, &nowhere, "m.room.name", "").await);
    assert_not_found_or_forbidden(&messages(&server, &alice, &nowhere, "dir=b").await);
    assert_not_found_or_forbidden(&get(&server, &room_path(&nowhere, "members"), &alice).await);
    assert!(joined_rooms(&server, &alice).await.is_empty());
}

async fn malformed_identifiers_are_invalid_params(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;

    for bad_room in ["notaroomid", "!nocolon"] {
        assert_error(
            &try_join(&server, &alice, bad_room).await,
            400,
            "M_INVALID_PARAM",
        );
        assert_error(
            &send(
                &server,
                &alice,
                bad_room,
                "m.room.message",
                json!({"msgtype": "m.text", "body": "x"}),
            )
            .await,
            400,
            "M_INVALID_PARAM",
        );
        assert_error(
            &messages(&server, &alice, bad_room, "dir=b").await,
            400,
            "M_INVALID_PARAM",
        );
    }
    // /join takes an id or an alias, and this is neither.
    assert_error(
        &post(&server, &format!("{C}/join/notaroomid"), &alice, json!({})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &get(&server, &format!("{C}/directory/room/notanalias"), &alice).await,
        400,
        "M_INVALID_PARAM",
    );
    for bad_user in ["bob", "@bob", "not a user"] {
        assert_error(
            &post(
                &server,
                &room_path(&room, "invite"),
                &alice,
                json!({"user_id": bad_user}),
            )
            .await,
            400,
            "M_INVALID_PARAM",
        );
    }
    let bad_invite = try_create_room(&server, &alice, json!({"invite": ["bob"]})).await;
    assert_eq!(bad_invite.0, 400, "{}", bad_invite.1);
    assert_eq!(
        members(&server, &alice, &room, "").await,
        pairs(&[(&alice.id, "join")])
    );
}

async fn events_over_64_kib_are_too_large(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let big = "x".repeat(70 * 1024);

    assert_error(
        &send(
            &server,
            &alice,
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": big}),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    assert_error(
        &set_state(
            &server,
            &alice,
            &room,
            "org.example.blob",
            "",
            json!({"blob": big}),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    assert_eq!(
        get_state(&server, &alice, &room, "org.example.blob", "")
            .await
            .0,
        404
    );

    // Just under the limit is fine.
    let fits = "y".repeat(60 * 1024);
    send_text(&server, &alice, &room, &fits).await;
    assert_eq!(bodies(&all_messages(&server, &alice, &room).await), [fits]);
}

async fn power_levels_must_be_integers_in_v10(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"room_version": "10"})).await;
    let power = state_content(&server, &alice, &room, "m.room.power_levels", "").await;

    let mut stringly = power.clone();
    stringly["users_default"] = json!("50");
    assert_error(
        &set_state(&server, &alice, &room, "m.room.power_levels", "", stringly).await,
        400,
        "M_BAD_JSON",
    );
    let mut stringly = power.clone();
    stringly["users"][&alice.id] = json!("100");
    assert_error(
        &set_state(&server, &alice, &room, "m.room.power_levels", "", stringly).await,
        400,
        "M_BAD_JSON",
    );
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.power_levels", "").await,
        power,
        "unchanged"
    );
}

// ---------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------

/// Everything an acknowledged send wrote is on disk: the event, its
/// transaction ID (a retry after the crash is not a second event) and whom it
/// notified (the unread count, read from the database after a restart).
async fn acknowledged_messages_survive_sigkill(backend: Backend) {
    let mut server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Durable", "preset": "public_chat"}),
    )
    .await;
    join(&server, &bob, &room).await;
    let mut sent = Vec::new();
    for i in 0..50 {
        sent.push(send_text(&server, &alice, &room, &format!("message {i}")).await);
    }
    let retried = room_path(&room, "send/m.room.message/the-retried-one");
    let before_crash = ok(server
        .put(
            &retried,
            &alice,
            json!({"msgtype": "m.text", "body": "once"}),
        )
        .await);
    sent.push(before_crash["event_id"].as_str().unwrap().to_owned());

    server.crash_and_restart().await;

    let after_crash = ok(server
        .put(
            &retried,
            &alice,
            json!({"msgtype": "m.text", "body": "once"}),
        )
        .await);
    assert_eq!(after_crash["event_id"], before_crash["event_id"]);
    let (_, synced) = get(&server, &format!("{C}/sync"), &bob).await;
    assert_eq!(
        synced["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 51,
        "{synced}"
    );

    let stored = all_messages(&server, &alice, &room).await;
    assert_eq!(
        ids(&stored),
        sent,
        "every acknowledged event, in send order"
    );
    assert_eq!(
        state_content(&server, &alice, &room, "m.room.name", "").await["name"],
        "Durable"
    );
    // The room carries on after the crash.
    let next = send_text(&server, &alice, &room, "after the crash").await;
    assert!(!sent.contains(&next));
    let stored = ids(&all_messages(&server, &alice, &room).await);
    assert_eq!(stored.len(), 52);
    assert_eq!(stored.last(), Some(&next));
}

/// Room version 12: the room ID is the create event's hash, creators
/// (the sender and `additional_creators`) outrank everyone and may not be
/// listed in the power levels.
async fn version_12_rooms_have_derived_ids_and_privileged_creators(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({"room_version": "12", "preset": "trusted_private_chat", "invite": [bob.id]}),
    )
    .await;
    let hash = room.strip_prefix('!').unwrap();
    assert_eq!(hash.len(), 43, "{room}");
    assert!(!room.contains(':'), "no server name: {room}");

    let create = state_content(&server, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["additional_creators"], json!([bob.id]), "{create}");
    let levels = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(
        levels["users"],
        json!({}),
        "creators are not listed: {levels}"
    );

    join(&server, &bob, &room).await;
    let message = send_text(&server, &bob, &room, "hello").await;
    // A creator may redact anyone's event and set any state.
    ok(server
        .put(
            &room_path(&room, &format!("redact/{}/r1", enc(&message))),
            &alice,
            json!({}),
        )
        .await);
    ok(set_state(
        &server,
        &bob,
        &room,
        "m.room.name",
        "",
        json!({"name": "ours"}),
    )
    .await);
    // Listing a creator in the power levels is refused.
    let mut with_creator = levels.clone();
    with_creator["users"] = json!({ alice.id.clone(): 100 });
    let refused = set_state(
        &server,
        &alice,
        &room,
        "m.room.power_levels",
        "",
        with_creator,
    )
    .await;
    assert_error(&refused, 403, "M_FORBIDDEN");

    // A malformed server-less room ID is still refused.
    assert_error(
        &try_join(&server, &bob, "!tooshort").await,
        400,
        "M_INVALID_PARAM",
    );
}
