//! OpenID Connect single sign-on through the real binary against a real
//! provider: panva's `oidc-provider` (Node, installed by `scripts/test.sh`)
//! on loopback, with clients registered for Myelin (see `oidc_common`).

mod oidc_common;

use myelin_tests::{
    Backend, SERVER_NAME, ScratchDir, TestServer, assert_error, ok, on_both_backends, try_start,
};
use oidc_common::*;
use reqwest::{StatusCode, Url};
use serde_json::json;

on_both_backends! {
    sso_creates_the_user_and_maps_them_again => sso_creates_the_user_and_maps_them_again,
    the_username_picker_creates_the_chosen_user => the_username_picker_creates_the_chosen_user,
    backchannel_logout_ends_the_provider_sessions_devices => backchannel_logout_ends_the_provider_sessions_devices,
}

async fn sso_creates_the_user_and_maps_them_again(backend: Backend) {
    let (server, _idp) = start(backend).await;
    let flows = ok(server.get(&format!("{C}/login"), None).await);
    let flows = flows["flows"].as_array().unwrap();
    let sso = flows.iter().find(|f| f["type"] == "m.login.sso").unwrap();
    let idps = sso["identity_providers"].as_array().unwrap();
    assert_eq!(idps.len(), 1);
    assert_eq!(
        (&idps[0]["id"], &idps[0]["name"]),
        (&json!("oidc-test"), &json!("Test IdP"))
    );
    assert!(flows.iter().any(|f| f["type"] == "m.login.token"));

    let token = sso_login(&server, "alice").await;
    let login = ok(token_login(&server, &token).await);
    let alice = format!("@alice:{SERVER_NAME}");
    assert_eq!(login["user_id"], alice);
    let profile = ok(server.get(&format!("{C}/profile/{alice}"), None).await);
    assert_eq!(profile["displayname"], "Display alice");
    // The provider's `picture` became the avatar, in the media repository.
    let avatar = profile["avatar_url"].as_str().expect("an avatar");
    let media = avatar
        .strip_prefix(&format!("mxc://{SERVER_NAME}/"))
        .unwrap_or_else(|| panic!("{avatar}"));
    let access = login["access_token"].as_str().unwrap();
    let response = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{SERVER_NAME}/{media}",
            server.base_url
        ))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert!(response.bytes().await.unwrap().starts_with(b"\x89PNG"));
    // Single use.
    assert_error(&token_login(&server, &token).await, 403, "M_FORBIDDEN");
    assert_error(&token_login(&server, "made-up").await, 403, "M_FORBIDDEN");

    // The same subject maps to the same user.
    let again = ok(token_login(&server, &sso_login(&server, "alice").await).await);
    assert_eq!(again["user_id"], alice);
    assert_ne!(again["device_id"], login["device_id"]);

    // A taken localpart is not taken over: the mapping retries with a
    // number, and that user is found again next time.
    server.user("bob").await;
    let bob = ok(token_login(&server, &sso_login(&server, "bob").await).await);
    assert_eq!(bob["user_id"], format!("@bob1:{SERVER_NAME}"));
    let bob_again = ok(token_login(&server, &sso_login(&server, "bob").await).await);
    assert_eq!(bob_again["user_id"], bob["user_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_state_missing_cookie_and_replay_give_an_error_page() {
    let (server, _idp) = start(Backend::Sqlite).await;
    let mut browser = Browser::new();
    let callback = browser.run_to_callback(&server, "carol").await;

    // No cookie: another browser.
    let (status, _, page) = Browser::new().send(&callback, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("cookie"), "{page}");

    // A state that is not the session's.
    let mut forged = callback.clone();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" { "forged".into() } else { v };
            (k.into_owned(), v.into_owned())
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let (status, _, page) = browser.send(&forged, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("unknown, expired or already used"), "{page}");

    // The provider's error.
    let mut refused = callback.clone();
    refused
        .query_pairs_mut()
        .clear()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "the user said no");
    let (status, _, page) = browser.send(&refused, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("the user said no"), "{page}");

    // The real answer still works once; replayed, it does not.
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    ok(token_login(&server, &login_token(&page)).await);
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!page.contains("loginToken"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmet_attribute_requirements_are_refused_with_a_page() {
    let (server, _idp) = start(Backend::Sqlite).await;
    let mut browser = Browser::new();
    let callback = browser.run_to_callback(&server, "outsider").await;
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("not authorised"), "{page}");
    assert!(!page.contains("loginToken"), "{page}");
    assert_no_user(&server, "outsider").await;
}

async fn assert_no_user(server: &TestServer, localpart: &str) {
    let (status, _) = server
        .get(&format!("{C}/profile/@{localpart}:{SERVER_NAME}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "@{localpart} exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_with_the_wrong_audience_or_nonce_logs_nobody_in() {
    let (server, idp) = start(Backend::Sqlite).await;
    for (mode, login) in [("aud", "mallory"), ("nonce", "trudy")] {
        idp.misbehave(mode).await;
        let mut browser = Browser::new();
        let callback = browser.run_to_callback(&server, login).await;
        let (status, _, page) = browser.send(&callback, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{mode}: {page}");
        assert!(page.contains("could not be verified"), "{mode}: {page}");
        assert!(!page.contains("loginToken"), "{mode}: {page}");
        assert_no_user(&server, login).await;
    }
    // The same provider behaving again: the login works, so the refusals
    // above were the tokens'.
    idp.misbehave("off").await;
    ok(token_login(&server, &sso_login(&server, "mallory").await).await);
}

/// The picker's form as a page, the cookie's session in `browser`.
async fn picker_form(browser: &mut Browser, server: &TestServer, login: &str) -> (Url, String) {
    let callback = browser.run_to_callback(server, login).await;
    let (status, location, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::FOUND, "{page}");
    let form_url = location.unwrap();
    assert_eq!(
        form_url.path(),
        "/_synapse/client/pick_username/account_details"
    );
    assert!(browser.cookies.contains_key("username_mapping_session"));
    let (status, _, page) = browser.send(&form_url, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    (form_url, page)
}

async fn check(browser: &mut Browser, server: &TestServer, username: &str) -> (StatusCode, String) {
    let url = Url::parse(&format!(
        "{}/_synapse/client/pick_username/check?username={username}",
        server.base_url
    ))
    .unwrap();
    let (status, _, body) = browser.send(&url, None).await;
    (status, body)
}

async fn the_username_picker_creates_the_chosen_user(backend: Backend) {
    let (server, _idp) = start_with(
        backend,
        SECRET_CLIENT,
        r#"    user_mapping_provider:
      config:
        localpart_template: "{{ user.preferred_username }}"
        display_name_template: "{{ user.name }}"
        confirm_localpart: true
"#,
        "",
    )
    .await;
    server.user("taken").await;
    let mut browser = Browser::new();
    let (form_url, page) = picker_form(&mut browser, &server, "dave").await;
    // The suggestion, a labelled field, the provider's name.
    assert!(page.contains(r#"name="username" value="dave""#), "{page}");
    assert!(page.contains(r#"<label for="field-username">"#), "{page}");
    assert!(page.contains(r#"id="field-username""#), "{page}");
    assert!(page.contains("Test IdP"), "{page}");
    assert!(page.contains("Display dave"), "{page}");

    // Availability, for the picker's session only.
    assert_eq!(
        check(&mut browser, &server, "dave").await,
        (StatusCode::OK, r#"{"available":true}"#.to_owned())
    );
    assert_eq!(
        check(&mut browser, &server, "taken").await,
        (StatusCode::OK, r#"{"available":false}"#.to_owned())
    );
    let (status, body) = check(&mut browser, &server, "_bad").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("M_INVALID_USERNAME"), "{body}");
    let (status, _) = check(&mut Browser::new(), &server, "dave").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Without JavaScript: a taken or invalid name gets the form again,
    // saying why, and the session lives on.
    let (status, _, page) = browser
        .send(
            &form_url,
            Some("username=taken&use_display_name=true".into()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("taken"), "{page}");
    assert!(page.contains(r#"role="alert""#), "{page}");
    assert!(page.contains(r#"aria-invalid="true""#), "{page}");
    let (status, _, page) = browser
        .send(&form_url, Some("username=not+valid".into()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("can only contain"), "{page}");
    // Another browser (no cookie) gets nowhere.
    let (status, _, page) = Browser::new()
        .send(&form_url, Some("username=eve".into()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!page.contains("loginToken"), "{page}");

    let (status, _, page) = browser
        .send(
            &form_url,
            Some("username=Dave.Chosen&use_display_name=true".into()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}\n{}", server.logs());
    assert!(page.contains("a new account"), "{page}");
    let login = ok(token_login(&server, &login_token(&page)).await);
    let dave = format!("@dave.chosen:{SERVER_NAME}");
    assert_eq!(login["user_id"], dave);
    let profile = ok(server.get(&format!("{C}/profile/{dave}"), None).await);
    assert_eq!(profile["displayname"], "Display dave");
    assert_no_user(&server, "dave").await;
    assert_no_user(&server, "eve").await;

    // The session is used up.
    let (status, _, page) = browser
        .send(&form_url, Some("username=dave.again".into()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!page.contains("loginToken"), "{page}");
    assert_no_user(&server, "dave.again").await;

    // The next login finds the user without asking.
    let again = ok(token_login(&server, &sso_login(&server, "dave").await).await);
    assert_eq!(again["user_id"], dave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_localpart_template_the_user_picks_one() {
    let (server, _idp) = start_with(Backend::Sqlite, SECRET_CLIENT, "", "").await;
    let mut browser = Browser::new();
    let (form_url, page) = picker_form(&mut browser, &server, "frank").await;
    assert!(page.contains(r#"name="username" value="""#), "{page}");
    // Without `use_display_name` the provider's name is not taken.
    let (status, _, page) = browser
        .send(&form_url, Some("username=frankie".into()))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let login = ok(token_login(&server, &login_token(&page)).await);
    let frankie = format!("@frankie:{SERVER_NAME}");
    assert_eq!(login["user_id"], frankie);
    let profile = ok(server.get(&format!("{C}/profile/{frankie}"), None).await);
    assert_eq!(profile["displayname"], "frankie");
    assert!(profile.get("avatar_url").is_none(), "{profile}");
}

async fn whoami(server: &TestServer, token: &str) -> (StatusCode, serde_json::Value) {
    server
        .get(&format!("{C}/account/whoami"), Some(token))
        .await
}

const BACKCHANNEL: &str = r#"    backchannel_logout_enabled: true
"#;

async fn backchannel_logout_ends_the_provider_sessions_devices(backend: Backend) {
    let (server, idp) = start_with(
        backend,
        SECRET_CLIENT,
        &format!("{MAPPING}{BACKCHANNEL}"),
        "",
    )
    .await;
    // Two provider sessions of the same user, and a password login.
    let mut first = Browser::new();
    let ended = ok(token_login(&server, &sso_login_in(&mut first, &server, "gina").await).await);
    let kept = ok(token_login(&server, &sso_login(&server, "gina").await).await);
    let gina = ended["user_id"].as_str().unwrap().to_owned();
    let token = |login: &serde_json::Value| login["access_token"].as_str().unwrap().to_owned();
    ok(whoami(&server, &token(&ended)).await);

    // The user signs out at the provider, which tells Myelin.
    let end = Url::parse(&format!("{}/session/end", idp.issuer)).unwrap();
    let (status, _, page) = first.send(&end, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (action, fields) = parse_form(&page, "");
    let (status, _, page) = first
        .send(
            &end.join(&action).unwrap(),
            Some(format!("{fields}&logout=yes")),
        )
        .await;
    assert!(
        status.is_redirection() || status.is_success(),
        "{status} {page}"
    );

    assert_error(
        &whoami(&server, &token(&ended)).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    ok(whoami(&server, &token(&kept)).await);
    let devices = ok(server
        .get(&format!("{C}/devices"), Some(&token(&kept)))
        .await);
    let ids: Vec<_> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].clone())
        .collect();
    assert!(!ids.contains(&ended["device_id"]), "{devices}");
    assert!(ids.contains(&kept["device_id"]), "{devices}");
    assert_eq!(kept["user_id"], gina);
}

async fn post_logout_token(server: &TestServer, token: &str) -> (StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/_synapse/client/oidc/backchannel_logout",
            server.base_url
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={}", myelin_tests::enc(token)))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logout_tokens_are_refused_and_log_nobody_out() {
    let (server, idp) = start_with(
        Backend::Sqlite,
        SECRET_CLIENT,
        &format!("{MAPPING}{BACKCHANNEL}"),
        "",
    )
    .await;
    let login = ok(token_login(&server, &sso_login(&server, "hank").await).await);
    let access = login["access_token"].as_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = json!({
        "iss": idp.issuer, "aud": "myelin", "iat": now, "exp": now + 120,
        "jti": "j1", "sub": "hank",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        claims
    };
    let cases = [
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("someone-else")),
            false,
        ),
        ("nonce", with(&|c| c["nonce"] = json!("n")), false),
        ("no event", with(&|c| c["events"] = json!({})), false),
        (
            "no iat",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            false,
        ),
        ("expired", with(&|c| c["exp"] = json!(now - 3600)), false),
        (
            "no sid nor sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            false,
        ),
        (
            "unknown issuer",
            with(&|c| c["iss"] = json!("http://127.0.0.1:1")),
            false,
        ),
        ("foreign key", good.clone(), true),
    ];
    for (case, claims, foreign) in cases {
        let token = idp.logout_token(claims, foreign).await;
        let (status, body) = post_logout_token(&server, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
        assert_eq!(body["error"], "invalid_request", "{case}: {body}");
        ok(whoami(&server, access).await);
    }
    let (status, body) = post_logout_token(&server, "not a jwt").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A valid token for another subject or an unknown session ends nothing.
    for claims in [
        with(&|c| c["sub"] = json!("subject-somebody-else")),
        with(&|c| c["sid"] = json!("no-such-session")),
    ] {
        let (status, body) =
            post_logout_token(&server, &idp.logout_token(claims, false).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ok(whoami(&server, access).await);
    }
    // Only a `sub`: all of that user's devices from this provider.
    let token = idp.logout_token(good.clone(), false).await;
    let (status, body) = post_logout_token(&server, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = whoami(&server, access).await;
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{}", server.logs());
    assert_error(&answer, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_templates_replace_the_built_in_pages() {
    let dir = ScratchDir::new();
    std::fs::write(
        dir.0.join("sso_error.html"),
        "<!DOCTYPE html><title>Oops</title><p>CUSTOM ERROR {{ error }}: {{ error_description }}</p>",
    )
    .unwrap();
    let (server, _idp) = start_with(
        Backend::Sqlite,
        SECRET_CLIENT,
        MAPPING,
        &format!(
            "templates:\n  custom_template_directory: \"{}\"\n",
            dir.0.display()
        ),
    )
    .await;
    let mut browser = Browser::new();
    let callback = browser.run_to_callback(&server, "ivan").await;
    let (status, _, page) = Browser::new().send(&callback, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("CUSTOM ERROR invalid_request: Your browser did not send"),
        "{page}"
    );
    // The pages without a custom file are still the built-in ones.
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    ok(token_login(&server, &login_token(&page)).await);

    // A directory that is not there, or a template that does not parse,
    // stops the server with a message naming it.
    let provider = "oidc_providers:\n  - {idp_id: t, issuer: \"https://idp.example\", client_id: c, client_secret: s}\npublic_baseurl: \"https://m.example/\"\n";
    let (exited, stderr) = try_start(
        &format!(
            "server_name: m.example\n{provider}templates:\n  custom_template_directory: /nonexistent/templates\n"
        ),
        std::time::Duration::from_secs(10),
    );
    assert!(exited, "{stderr}");
    assert!(stderr.contains("custom_template_directory"), "{stderr}");
    std::fs::write(dir.0.join("sso_redirect_confirm.html"), "{% if %}").unwrap();
    let (exited, stderr) = try_start(
        &format!(
            "server_name: m.example\n{provider}templates:\n  custom_template_directory: \"{}\"\n",
            dir.0.display()
        ),
        std::time::Duration::from_secs(10),
    );
    assert!(exited, "{stderr}");
    assert!(stderr.contains("sso_redirect_confirm.html"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_client_authentication() {
    let (server, _idp) = start_with(
        Backend::Sqlite,
        "    client_id: myelin-jwt\n    client_auth_method: private_key_jwt\n    client_secret_jwt_key:\n      key: {key}\n      jwt_header: {alg: ES256, kid: client-key}\n",
        MAPPING,
        "",
    )
    .await;
    let login = ok(token_login(&server, &sso_login(&server, "judy").await).await);
    assert_eq!(login["user_id"], format!("@judy:{SERVER_NAME}"));

    // The wrong key: the provider refuses the client, nobody is logged in.
    let (server, _idp) = start_with(
        Backend::Sqlite,
        &format!(
            "    client_id: myelin-jwt\n    client_auth_method: private_key_jwt\n    client_secret_jwt_key:\n      key: {}\n      jwt_header: {{alg: ES256, kid: client-key}}\n",
            serde_json::to_string(OTHER_EC_KEY).unwrap()
        ),
        MAPPING,
        "",
    )
    .await;
    let mut browser = Browser::new();
    let callback = browser.run_to_callback(&server, "judy").await;
    let (status, _, page) = browser.send(&callback, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("token exchange failed"), "{page}");
    assert_no_user(&server, "judy").await;
}

/// A P-256 key the provider does not know.
const OTHER_EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglCf4QnD8qXMjFqHs
zbZG1Ixq6aeJKgyRo9UHZZ42YrChRANCAATCEsEmKft3nQ/qG3Ii+kRhUKERbksM
5l7gaLatG+eUY/7J0QhhChf3KMgxpFibzwRolYNZ/bAFBNZAEkHcxTtN
-----END PRIVATE KEY-----
";

#[test]
fn config_refusals_name_the_key() {
    let provider = |extra: &str| {
        format!(
            "server_name: m.example\npublic_baseurl: \"https://m.example/\"\noidc_providers:\n  - idp_id: t\n    issuer: \"https://idp.example\"\n    client_id: c\n{extra}"
        )
    };
    for (extra, key) in [
        (
            "    client_auth_method: private_key_jwt\n",
            "client_auth_method",
        ),
        (
            "    client_secret_jwt_key: {key: \"not a pem\", jwt_header: {alg: ES256}}\n",
            "client_secret_jwt_key",
        ),
        (
            "    client_secret_jwt_key: {key: \"x\"}\n",
            "client_secret_jwt_key",
        ),
    ] {
        let (exited, stderr) = try_start(&provider(extra), std::time::Duration::from_secs(10));
        assert!(exited, "{extra}: {stderr}");
        assert!(stderr.contains(key), "{extra}: {stderr}");
    }
}
