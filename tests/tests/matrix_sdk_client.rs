//! A real client: the `matrix-sdk` crate (Element's Rust core) drives the server.

// With its encryption machine, matrix-sdk's futures nest deeper than the default limit.
#![recursion_limit = "256"]

use matrix_sdk::{
    Client,
    ruma::api::client::{
        account::register::v3::Request as RegistrationRequest,
        uiaa::{AuthData, Dummy},
    },
};
use myelin_tests::{Backend, TestServer, on_both_backends};

on_both_backends! {
    sdk_logs_in_checks_whoami_and_logs_out => sdk_logs_in_checks_whoami_and_logs_out,
    sdk_registers_through_user_interactive_auth => sdk_registers_through_user_interactive_auth,
}

async fn client_for(server: &TestServer) -> Client {
    Client::builder()
        .homeserver_url(&server.base_url)
        .build()
        .await
        .expect("client builds")
}

async fn sdk_logs_in_checks_whoami_and_logs_out(backend: Backend) {
    let server = TestServer::start(backend, "").await;
    server
        .register_user("alice", "correct horse battery", false)
        .await;

    let client = client_for(&server).await;
    let login = client
        .matrix_auth()
        .login_username("alice", "correct horse battery")
        .initial_device_display_name("matrix-sdk test")
        .send()
        .await
        .expect("login");
    assert_eq!(login.user_id.as_str(), "@alice:myelin.test");

    let me = client.whoami().await.expect("whoami");
    assert_eq!(me.user_id, login.user_id);
    assert_eq!(me.device_id.as_ref(), Some(&login.device_id));

    let token = client.access_token().expect("token");
    client.logout().await.expect("logout");
    let (status, _) = server
        .get("/_matrix/client/v3/account/whoami", Some(&token))
        .await;
    assert_eq!(status, 401, "the SDK's token is revoked");

    let wrong = client_for(&server)
        .await
        .matrix_auth()
        .login_username("alice", "wrong")
        .send()
        .await;
    assert!(wrong.is_err());
}

async fn sdk_registers_through_user_interactive_auth(backend: Backend) {
    let server = TestServer::start(
        backend,
        "enable_registration: true\nenable_registration_without_verification: true\n",
    )
    .await;
    let client = client_for(&server).await;
    let mut request = RegistrationRequest::new();
    request.username = Some("bob".to_owned());
    request.password = Some("hunter2hunter2".to_owned());

    let challenge = client
        .matrix_auth()
        .register(request.clone())
        .await
        .expect_err("UIA challenge first");
    let info = challenge
        .as_uiaa_response()
        .expect("a UIA response")
        .clone();
    let mut dummy = Dummy::new();
    dummy.session = info.session.clone();
    request.auth = Some(AuthData::Dummy(dummy));
    let registered = client
        .matrix_auth()
        .register(request)
        .await
        .expect("registration");
    assert_eq!(registered.user_id.as_str(), "@bob:myelin.test");

    let me = client
        .whoami()
        .await
        .expect("the SDK is logged in after registering");
    assert_eq!(me.user_id.as_str(), "@bob:myelin.test");
}
