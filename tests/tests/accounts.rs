//! Registration, login, devices and passwords through the client API.

use myelin_tests::{Backend, TestServer, assert_error, on_both_backends};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends! {
    registration_is_closed_by_default => registration_is_closed_by_default,
    open_registration_walks_the_dummy_auth_flow => open_registration_walks_the_dummy_auth_flow,
    invalid_usernames_are_refused => invalid_usernames_are_refused,
    guests_only_with_guest_access => guests_only_with_guest_access,
    devices_are_listed_renamed_and_deleted_with_reauth => devices_are_listed_renamed_and_deleted_with_reauth,
    password_change_logs_out_other_devices => password_change_logs_out_other_devices,
    logout_and_logout_all_revoke_tokens => logout_and_logout_all_revoke_tokens,
    synapse_bcrypt_hashes_log_in_and_are_rehashed => synapse_bcrypt_hashes_log_in_and_are_rehashed,
}

const OPEN: &str = "enable_registration: true\nenable_registration_without_verification: true\n";

fn password_auth(user: &str, password: &str, session: Option<&Value>) -> Value {
    let mut auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
    if let Some(session) = session {
        auth["session"] = session.clone();
    }
    auth
}

async fn registration_is_closed_by_default(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    let refused = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "eve", "password": "pw-pw-pw"}),
        )
        .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert_error(
        &server
            .get("/_matrix/client/v3/register/available?username=eve", None)
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Nothing was created: the admin API can still take the name.
    server.register_user("eve", "pw-pw-pw", false).await;
}

async fn open_registration_walks_the_dummy_auth_flow(backend: Backend) {
    let server = TestServer::start(backend, OPEN).await;
    let (status, available) = server
        .get("/_matrix/client/v3/register/available?username=bob", None)
        .await;
    assert_eq!(
        (status.as_u16(), available["available"].clone()),
        (200, json!(true))
    );

    let request = json!({"username": "bob", "password": "hunter2hunter2", "initial_device_display_name": "Bob's phone"});
    let (status, challenge) = server
        .post("/_matrix/client/v3/register", None, request.clone())
        .await;
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.dummy"]}]));
    let session = challenge["session"].clone();

    let mut finish = request.clone();
    finish["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (status, registered) = server
        .post("/_matrix/client/v3/register", None, finish.clone())
        .await;
    assert_eq!(status, 200, "{registered}");
    assert_eq!(registered["user_id"], "@bob:myelin.test");
    let token = registered["access_token"].as_str().unwrap();
    let (_, me) = server
        .get("/_matrix/client/v3/account/whoami", Some(token))
        .await;
    assert_eq!(me["user_id"], "@bob:myelin.test");
    assert_ne!(me["is_guest"], true);
    let (_, device) = server
        .get(
            &format!(
                "/_matrix/client/v3/devices/{}",
                me["device_id"].as_str().unwrap()
            ),
            Some(token),
        )
        .await;
    assert_eq!(device["display_name"], "Bob's phone");

    // The completed session cannot be replayed, and the name is now taken.
    assert_error(
        &server
            .post("/_matrix/client/v3/register", None, finish)
            .await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &server
            .get("/_matrix/client/v3/register/available?username=bob", None)
            .await,
        400,
        "M_USER_IN_USE",
    );

    // inhibit_login registers without a session.
    let quiet = json!({"username": "carol", "password": "hunter2hunter2", "inhibit_login": true, "auth": {"type": "m.login.dummy"}});
    let (status, body) = server
        .post("/_matrix/client/v3/register", None, quiet)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(server.login("carol", "hunter2hunter2").await.0, 200);
}

async fn invalid_usernames_are_refused(backend: Backend) {
    let server = TestServer::start(backend, OPEN).await;
    for name in [
        "Alice",
        "al ice",
        "alice!",
        "_bridge",
        "12345",
        &"a".repeat(250),
    ] {
        let refused = server
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": name, "password": "pw-pw-pw-pw"}),
            )
            .await;
        assert_error(&refused, 400, "M_INVALID_USERNAME");
        let refused = server
            .shared_secret_register(name, "pw", false, myelin_tests::SHARED_SECRET)
            .await;
        assert_error(&refused, 400, "M_INVALID_USERNAME");
    }
}

async fn guests_only_with_guest_access(backend: Backend) {
    let closed = TestServer::start(backend, "").await;
    let refused = closed
        .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await;
    assert_error(&refused, 403, "M_GUEST_ACCESS_FORBIDDEN");

    let open = TestServer::start(backend, "allow_guest_access: true\n").await;
    let (status, guest) = open
        .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await;
    assert_eq!(status, 200, "{guest}");
    let (_, me) = open
        .get(
            "/_matrix/client/v3/account/whoami",
            guest["access_token"].as_str(),
        )
        .await;
    assert_eq!(me["is_guest"], true);
    assert!(
        me["user_id"].as_str().unwrap()[1..]
            .split(':')
            .next()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_digit())
    );
}

async fn devices_are_listed_renamed_and_deleted_with_reauth(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server.register_user("dana", "correct horse", false).await;
    let (_, first) = server.login("dana", "correct horse").await;
    let (_, second) = server.login("dana", "correct horse").await;
    let token = first["access_token"].as_str().unwrap();
    let other_device = second["device_id"].as_str().unwrap();

    let (_, devices) = server.get("/_matrix/client/v3/devices", Some(token)).await;
    assert_eq!(
        devices["devices"].as_array().unwrap().len(),
        3,
        "admin-API login + two logins: {devices}"
    );

    let path = format!("/_matrix/client/v3/devices/{other_device}");
    let (status, _) = server
        .request(
            Method::PUT,
            &path,
            Some(token),
            Some(json!({"display_name": "Laptop"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        server.get(&path, Some(token)).await.1["display_name"],
        "Laptop"
    );
    assert_error(
        &server
            .get("/_matrix/client/v3/devices/NOPE", Some(token))
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Deleting needs the password: first a challenge, then a wrong password, then the right one.
    let (status, challenge) = server
        .request(Method::DELETE, &path, Some(token), Some(json!({})))
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    let session = challenge["session"].clone();
    let (status, wrong) = server
        .request(
            Method::DELETE,
            &path,
            Some(token),
            Some(json!({"auth": password_auth("dana", "nope", Some(&session))})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), wrong["errcode"].clone()),
        (401, json!("M_FORBIDDEN")),
        "{wrong}"
    );
    let (status, body) = server
        .request(
            Method::DELETE,
            &path,
            Some(token),
            Some(json!({"auth": password_auth("dana", "correct horse", Some(&session))})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &server
            .get(
                "/_matrix/client/v3/account/whoami",
                second["access_token"].as_str(),
            )
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    // delete_devices with auth in one go.
    let (_, third) = server.login("dana", "correct horse").await;
    let body = json!({"devices": [third["device_id"]], "auth": password_auth("dana", "correct horse", None)});
    let (status, _) = server
        .post("/_matrix/client/v3/delete_devices", Some(token), body)
        .await;
    assert_eq!(status, 200);
    assert_error(
        &server
            .get(
                "/_matrix/client/v3/account/whoami",
                third["access_token"].as_str(),
            )
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

async fn password_change_logs_out_other_devices(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server.register_user("erin", "old password", false).await;
    let (_, here) = server.login("erin", "old password").await;
    let (_, elsewhere) = server.login("erin", "old password").await;
    let token = here["access_token"].as_str().unwrap();

    let change = json!({"new_password": "new password", "auth": password_auth("erin", "old password", None)});
    let (status, body) = server
        .post("/_matrix/client/v3/account/password", Some(token), change)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(token))
            .await
            .0,
        200,
        "this device stays"
    );
    assert_error(
        &server
            .get(
                "/_matrix/client/v3/account/whoami",
                elsewhere["access_token"].as_str(),
            )
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.login("erin", "old password").await,
        403,
        "M_FORBIDDEN",
    );
    let (status, kept) = server.login("erin", "new password").await;
    assert_eq!(status, 200);

    let keep = json!({"new_password": "newer password", "logout_devices": false, "auth": password_auth("erin", "new password", None)});
    assert_eq!(
        server
            .post("/_matrix/client/v3/account/password", Some(token), keep)
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .get(
                "/_matrix/client/v3/account/whoami",
                kept["access_token"].as_str()
            )
            .await
            .0,
        200
    );
}

async fn logout_and_logout_all_revoke_tokens(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server.register_user("finn", "correct horse", false).await;
    let (_, a) = server.login("finn", "correct horse").await;
    let (_, b) = server.login("finn", "correct horse").await;
    let (_, c) = server.login("finn", "correct horse").await;
    let whoami = "/_matrix/client/v3/account/whoami";
    assert_eq!(
        server
            .post(
                "/_matrix/client/v3/logout",
                a["access_token"].as_str(),
                json!({})
            )
            .await
            .0,
        200
    );
    assert_error(
        &server.get(whoami, a["access_token"].as_str()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.get(whoami, b["access_token"].as_str()).await.0, 200);
    assert_eq!(
        server
            .post(
                "/_matrix/client/v3/logout/all",
                b["access_token"].as_str(),
                json!({})
            )
            .await
            .0,
        200
    );
    assert_error(
        &server.get(whoami, b["access_token"].as_str()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.get(whoami, c["access_token"].as_str()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

async fn synapse_bcrypt_hashes_log_in_and_are_rehashed(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server.register_user("gail", "placeholder", false).await;
    // Plant the hash a migrated Synapse database would hold.
    let bcrypt_hash = bcrypt::hash_with_result("synapse password", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoB);
    let url = server.database_url().await;
    gails_hash(backend, &url, Some(&bcrypt_hash)).await;

    assert_eq!(server.login("gail", "synapse password").await.0, 200);
    let hash = gails_hash(backend, &url, None).await;
    assert!(hash.starts_with("$argon2id$"), "rehashed: {hash}");
    assert_eq!(
        server.login("gail", "synapse password").await.0,
        200,
        "still the same password"
    );
}

/// Sets gail's stored hash (when `new` is given), then reads it back.
async fn gails_hash(backend: Backend, url: &str, new: Option<&str>) -> String {
    const UPDATE: &str = "UPDATE users SET password_hash = $1 WHERE user_id = '@gail:myelin.test'";
    const SELECT: &str = "SELECT password_hash FROM users WHERE user_id = '@gail:myelin.test'";
    macro_rules! on_pool {
        ($pool:expr) => {{
            let pool = $pool;
            if let Some(new) = new {
                sqlx::query(UPDATE).bind(new).execute(&pool).await.unwrap();
            }
            sqlx::query_scalar(SELECT).fetch_one(&pool).await.unwrap()
        }};
    }
    match backend {
        Backend::Sqlite => on_pool!(sqlx::SqlitePool::connect(url).await.unwrap()),
        Backend::Postgres => on_pool!(sqlx::PgPool::connect(url).await.unwrap()),
    }
}
