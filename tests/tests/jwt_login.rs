//! `org.matrix.login.jwt` (Synapse's JWT login) through the real binary:
//! tokens are made here with `jsonwebtoken`, HMAC and ECDSA, and the
//! server's checks of signature, expiry, not-before, issuer, audience and
//! subject are each shown refusing a bad token with 403 `M_FORBIDDEN`.

use std::{
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use myelin_tests::{
    Backend, ScratchDir, TestServer, assert_error, ok, on_both_backends, try_start,
};
use serde_json::{Value, json};

on_both_backends! {
    a_valid_token_logs_in_and_creates_the_user => a_valid_token_logs_in_and_creates_the_user,
}

const SECRET: &str = "a-shared-secret-for-tests";
const C: &str = "/_matrix/client/v3";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn jwt_login(server: &TestServer, token: &str) -> (reqwest::StatusCode, Value) {
    server
        .post(
            &format!("{C}/login"),
            None,
            json!({"type": "org.matrix.login.jwt", "token": token}),
        )
        .await
}

async fn a_valid_token_logs_in_and_creates_the_user(backend: Backend) {
    let server = TestServer::start(
        backend,
        &format!(
            "jwt_config:\n  enabled: true\n  secret: \"{SECRET}\"\n  algorithm: HS256\n  display_name_claim: name\n  issuer: https://issuer.test\n  audiences: [myelin]\n"
        ),
    )
    .await;
    let flows = ok(server.get(&format!("{C}/login"), None).await);
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "org.matrix.login.jwt"),
        "{flows}"
    );

    let claims = |extra: Value| {
        let mut claims = json!({"sub": "jwtuser", "name": "JWT User", "iss": "https://issuer.test",
                                "aud": "myelin", "exp": now() + 300});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };

    // First login creates the user, with the token's display name.
    let login = ok(jwt_login(&server, &hs256(claims(json!({})), SECRET)).await);
    assert_eq!(login["user_id"], "@jwtuser:myelin.test");
    let token = login["access_token"].as_str().unwrap();
    let whoami = ok(server
        .get(&format!("{C}/account/whoami"), Some(token))
        .await);
    assert_eq!(whoami["user_id"], "@jwtuser:myelin.test");
    let profile = ok(server
        .get(&format!("{C}/profile/@jwtuser:myelin.test"), None)
        .await);
    assert_eq!(profile["displayname"], "JWT User");
    // Logging in again is the same user.
    let again = ok(jwt_login(&server, &hs256(claims(json!({"name": "Other"})), SECRET)).await);
    assert_eq!(again["user_id"], "@jwtuser:myelin.test");

    // Every bad token is 403 M_FORBIDDEN.
    for bad in [
        hs256(claims(json!({})), "the-wrong-secret"),
        hs256(claims(json!({"exp": now() - 600})), SECRET),
        hs256(claims(json!({"nbf": now() + 600})), SECRET),
        hs256(claims(json!({"iss": "https://elsewhere.test"})), SECRET),
        hs256(claims(json!({"iss": null})), SECRET),
        hs256(claims(json!({"aud": "someone-else"})), SECRET),
        hs256(claims(json!({"aud": null})), SECRET),
        hs256(claims(json!({"sub": null})), SECRET),
        "not.a.jwt".to_owned(),
    ] {
        let refused = jwt_login(&server, &bad).await;
        assert_error(&refused, 403, "M_FORBIDDEN");
        // The reason is given, as Synapse gives it.
        let message = refused.1["error"].as_str().unwrap();
        assert!(message.starts_with("JWT validation failed: "), "{message}");
    }
    let missing = server
        .post(
            &format!("{C}/login"),
            None,
            json!({"type": "org.matrix.login.jwt"}),
        )
        .await;
    assert_error(&missing, 403, "M_FORBIDDEN");
    // A subject that cannot be a localpart does not become a user.
    let invalid = jwt_login(&server, &hs256(claims(json!({"sub": "Not Valid"})), SECRET)).await;
    assert_error(&invalid, 400, "M_INVALID_USERNAME");
}

/// With an issuer's ECDSA key pair (made by `openssl`): the server verifies
/// with the public key only. A token with `aud` is refused when no
/// audiences are configured (Synapse's rule).
#[tokio::test]
async fn an_issuer_public_key_verifies_tokens() {
    let keys = ScratchDir::new();
    let private = keys.0.join("private.pem");
    let public = keys.0.join("public.pem");
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .status()
            .expect("openssl runs");
        assert!(status.success());
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let public_pem = std::fs::read_to_string(&public).unwrap();
    let indented: String = public_pem.lines().map(|l| format!("    {l}\n")).collect();
    let server = TestServer::start(
        Backend::Sqlite,
        &format!("jwt_config:\n  enabled: true\n  algorithm: ES256\n  secret: |\n{indented}"),
    )
    .await;
    let key = EncodingKey::from_ec_pem(&std::fs::read(&private).unwrap()).unwrap();
    let es256 = |claims: Value| encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();

    let login = ok(jwt_login(&server, &es256(json!({"sub": "ecuser"}))).await);
    assert_eq!(login["user_id"], "@ecuser:myelin.test");
    assert_error(
        &jwt_login(&server, &es256(json!({"sub": "ecuser", "aud": "anyone"}))).await,
        403,
        "M_FORBIDDEN",
    );
    // An HMAC token "signed" with the public key is not accepted.
    assert_error(
        &jwt_login(&server, &hs256(json!({"sub": "ecuser"}), &public_pem)).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn jwt_login_is_off_unless_configured() {
    let server = TestServer::start(Backend::Sqlite, "").await;
    let flows = ok(server.get(&format!("{C}/login"), None).await);
    assert!(
        !flows.to_string().contains("org.matrix.login.jwt"),
        "{flows}"
    );
    let refused = jwt_login(&server, &hs256(json!({"sub": "someone"}), SECRET)).await;
    assert_error(&refused, 400, "M_UNKNOWN");
}

#[test]
fn an_enabled_jwt_config_needs_a_usable_key() {
    for config in [
        "jwt_config: {enabled: true, algorithm: HS256}",
        "jwt_config: {enabled: true, secret: x}",
        "jwt_config: {enabled: true, secret: x, algorithm: XX999}",
        "jwt_config: {enabled: true, secret: not-a-pem, algorithm: RS256}",
    ] {
        let (exited, stderr) = try_start(config, Duration::from_secs(10));
        assert!(exited, "started with {config}");
        assert!(stderr.contains("jwt_config"), "{config}: {stderr}");
    }
}
