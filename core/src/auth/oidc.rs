//! OpenID Connect single sign-on: the glue around the `openidconnect`
//! crate. Each configured provider is discovered lazily (a provider that is
//! down at start does not stop the server), builds authorization URLs with
//! state, nonce and PKCE, exchanges the code and verifies the ID token
//! (signature against the JWKS, issuer, audience, expiry, nonce).
//!
//! The flow's sessions and the `m.login.token` hand-back tokens live in
//! memory: they last minutes, and a restart only asks the user to start the
//! login again.

use std::{
    collections::HashMap,
    future::Future,
    path::Path,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use openidconnect::{
    AccessToken, AdditionalProviderMetadata, AuthType, AuthUrl, AuthorizationCode, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IssuerUrl, JsonWebKeySet, JsonWebKeySetUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, ResponseTypes, Scope,
    TokenResponse, TokenUrl, UserInfoUrl,
    core::{
        CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
        CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
        CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
        CoreSubjectIdentifierType,
    },
};
use parking_lot::Mutex;
use rand::{Rng, distributions::Alphanumeric};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::sso_mapping::MappingProvider;
use crate::config::oidc::{ClientAuthMethod, OidcProviderConfig, PkceMethod};

pub use self::pages::Pages;

/// How long a started login may take at the identity provider.
const SESSION_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long the username picker waits (Synapse's 15 minutes).
pub const USERNAME_SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The lifetime of a signed-JWT client secret (Synapse: an hour) and of an
/// RFC 7523 client assertion.
const CLIENT_SECRET_JWT_LIFETIME: u64 = 60 * 60;
const CLIENT_ASSERTION_LIFETIME: u64 = 5 * 60;
/// Back-channel logout's event type.
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Synapse's `login_via_existing_session.token_timeout` default.
const LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 60);
/// Outbound requests to the identity provider.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);

/// The part of the discovery document the crate's core types leave out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PkceSupport {
    code_challenge_methods_supported: Option<Vec<String>>,
}
impl AdditionalProviderMetadata for PkceSupport {}

type Metadata = ProviderMetadata<
    PkceSupport,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What discovery (or the explicit endpoints) gave.
struct Discovered {
    client: Client,
    pkce: bool,
    /// Fetched again for each back-channel logout token, so that a key the
    /// provider rotated in is found.
    jwks_uri: String,
}

/// The HTTP client `openidconnect` calls through. The issuer is the
/// operator's choice, so private addresses are allowed (unlike push
/// gateways); redirects are not followed, as OAuth asks.
#[derive(Clone)]
pub struct IdpHttp(reqwest::Client);

impl IdpHttp {
    fn new() -> Self {
        Self(
            reqwest::Client::builder()
                .timeout(IDP_TIMEOUT)
                .connect_timeout(IDP_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client with these options builds"),
        )
    }
}

impl IdpHttp {
    /// The client itself, for the provider's other URLs (users' pictures).
    pub fn client(&self) -> &reqwest::Client {
        &self.0
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for IdpHttp {
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, reqwest::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.0.execute(request.try_into()?).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut out = http::Response::new(response.bytes().await?.to_vec());
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }
}

/// A login in progress: what the callback needs to finish it.
pub struct SsoSession {
    pub idp_id: String,
    pub state: String,
    nonce: String,
    pkce_verifier: Option<String>,
    pub client_redirect_url: String,
    started: Instant,
}

/// What a finished flow at the identity provider tells about the user.
pub struct RemoteUser {
    /// The claims the templates see (ID token or userinfo, as Synapse).
    pub claims: Map<String, Value>,
    /// The claims as JSON text, for mapping plugins (serialized once per
    /// login, however often a plugin is asked).
    pub userinfo: String,
    /// The token response as JSON text, for mapping plugins
    /// (`access_token`, `token_type`, `id_token`), as Synapse hands modules
    /// the token.
    pub token: String,
    /// The ID token's `sid`: the provider's session, which back-channel
    /// logout names.
    pub session_id: Option<String>,
}

/// `client_secret_jwt_key`, ready to sign.
struct JwtSigner {
    header: jsonwebtoken::Header,
    key: jsonwebtoken::EncodingKey,
    payload: Map<String, Value>,
}

/// What a back-channel logout token asks to end.
#[derive(Debug)]
pub struct LogoutRequest {
    pub sid: Option<String>,
    pub sub: Option<String>,
}

/// Who maps a provider's users: the built-in templates, or a plugin (by
/// name) implementing `sso-mapping`.
pub enum Mapper {
    Templates(Box<MappingProvider>),
    Plugin(String),
}

pub struct OidcProvider {
    pub config: OidcProviderConfig,
    pub id: String,
    pub mapper: Mapper,
    secret: Option<String>,
    jwt_signer: Option<JwtSigner>,
    redirect_uri: String,
    discovered: tokio::sync::Mutex<Option<Arc<Discovered>>>,
}

impl OidcProvider {
    /// Discovery (or the explicit endpoints), done once and kept; a failure
    /// is retried by the next login.
    async fn discovered(&self, http: &IdpHttp) -> Result<Arc<Discovered>, String> {
        let mut cached = self.discovered.lock().await;
        if let Some(discovered) = &*cached {
            return Ok(discovered.clone());
        }
        let discovered = Arc::new(self.discover(http).await?);
        *cached = Some(discovered.clone());
        Ok(discovered)
    }

    async fn discover(&self, http: &IdpHttp) -> Result<Discovered, String> {
        let config = &self.config;
        let url_error = |e: openidconnect::url::ParseError| format!("a bad URL: {e}");
        let issuer = IssuerUrl::new(config.issuer.clone()).map_err(url_error)?;
        let mut metadata = if config.discover {
            Metadata::discover_async(issuer, http).await.map_err(|e| {
                format!("discovery at {} failed: {}", config.issuer, error_chain(&e))
            })?
        } else {
            let jwks_uri = config
                .jwks_uri
                .clone()
                .unwrap_or_else(|| format!("{}/jwks", config.issuer.trim_end_matches('/')));
            let authorization_endpoint = config.authorization_endpoint.clone().unwrap_or_default();
            let mut metadata = Metadata::new(
                issuer,
                AuthUrl::new(authorization_endpoint).map_err(url_error)?,
                JsonWebKeySetUrl::new(jwks_uri).map_err(url_error)?,
                vec![ResponseTypes::new(vec![CoreResponseType::Code])],
                vec![CoreSubjectIdentifierType::Public],
                asymmetric_algorithms(),
                PkceSupport::default(),
            );
            if config.jwks_uri.is_some() {
                let jwks = JsonWebKeySet::fetch_async(metadata.jwks_uri(), http)
                    .await
                    .map_err(|e| format!("fetching the JWKS failed: {}", error_chain(&e)))?;
                metadata = metadata.set_jwks(jwks);
            }
            metadata
        };
        if let Some(token) = &config.token_endpoint {
            metadata =
                metadata.set_token_endpoint(Some(TokenUrl::new(token.clone()).map_err(url_error)?));
        }
        if let Some(userinfo) = &config.userinfo_endpoint {
            metadata = metadata.set_userinfo_endpoint(Some(
                UserInfoUrl::new(userinfo.clone()).map_err(url_error)?,
            ));
        }
        let pkce = match config.pkce_method {
            PkceMethod::Always => true,
            PkceMethod::Never => false,
            PkceMethod::Auto => metadata
                .additional_metadata()
                .code_challenge_methods_supported
                .as_ref()
                .is_some_and(|methods| methods.iter().any(|m| m == "S256")),
        };
        let jwks_uri = metadata.jwks_uri().url().to_string();
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(RedirectUrl::new(self.redirect_uri.clone()).map_err(url_error)?)
        .set_auth_type(match config.client_auth_method {
            ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuthMethod::ClientSecretPost
            | ClientAuthMethod::None
            | ClientAuthMethod::PrivateKeyJwt => AuthType::RequestBody,
        });
        Ok(Discovered {
            client,
            pkce,
            jwks_uri,
        })
    }

    /// The provider's authorization URL for a new login, and its session.
    pub async fn start(
        &self,
        http: &IdpHttp,
        client_redirect_url: &str,
    ) -> Result<(String, SsoSession), String> {
        let discovered = self.discovered(http).await?;
        let mut request = discovered.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let mut pkce_verifier = None;
        if discovered.pkce {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            request = request.set_pkce_challenge(challenge);
            pkce_verifier = Some(verifier.secret().clone());
        }
        let (url, state, nonce) = request.url();
        Ok((
            url.to_string(),
            SsoSession {
                idp_id: self.id.clone(),
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier,
                client_redirect_url: client_redirect_url.to_owned(),
                started: Instant::now(),
            },
        ))
    }

    /// Exchanges the code, verifies the ID token and (when the provider's
    /// profile comes from there) fetches userinfo. `Err` says what failed,
    /// for the log and the error page.
    pub async fn finish(
        &self,
        http: &IdpHttp,
        session: &SsoSession,
        code: &str,
    ) -> Result<RemoteUser, String> {
        let discovered = self.discovered(http).await?;
        // A signed-JWT client secret is made for each request (it expires).
        let with_jwt_secret;
        let client = match (&self.jwt_signer, self.config.client_auth_method) {
            (
                Some(signer),
                ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost,
            ) => {
                with_jwt_secret = discovered
                    .client
                    .clone()
                    .set_client_secret(ClientSecret::new(self.client_secret_jwt(signer)?));
                &with_jwt_secret
            }
            _ => &discovered.client,
        };
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| format!("no token endpoint: {e}"))?;
        if let Some(verifier) = &session.pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(verifier.clone()));
        }
        if let (Some(signer), ClientAuthMethod::PrivateKeyJwt) =
            (&self.jwt_signer, self.config.client_auth_method)
        {
            let audience = client
                .token_uri()
                .map(|url| url.as_str().to_owned())
                .unwrap_or_default();
            exchange = exchange
                .add_extra_param(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                )
                .add_extra_param(
                    "client_assertion",
                    self.client_assertion(signer, &audience)?,
                );
        }
        let token = exchange
            .request_async(http)
            .await
            .map_err(|e| format!("the token exchange failed: {}", error_chain(&e)))?;

        let id_claims: Option<Map<String, Value>> = match token.id_token() {
            Some(id_token) => {
                id_token
                    .claims(
                        &client.id_token_verifier(),
                        &Nonce::new(session.nonce.clone()),
                    )
                    .map_err(|e| format!("the ID token is not valid: {e}"))?;
                Some(jwt_payload(&id_token.to_string())?)
            }
            None if !self.config.uses_userinfo() => {
                return Err("the provider sent no ID token".to_owned());
            }
            None => None,
        };
        let session_id = id_claims
            .as_ref()
            .and_then(|c| c.get("sid"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let claims = if self.config.uses_userinfo() {
            let userinfo = self.userinfo(http, client, token.access_token()).await?;
            let id_subject = id_claims.as_ref().and_then(|c| c.get("sub"));
            if id_subject.is_some() && id_subject != userinfo.get("sub") {
                return Err("the userinfo subject is not the ID token's".to_owned());
            }
            userinfo
        } else {
            id_claims.unwrap_or_default()
        };
        let token = serde_json::json!({
            "access_token": token.access_token().secret(),
            "token_type": "Bearer",
            "id_token": token.id_token().map(|t| t.to_string()),
        })
        .to_string();
        let userinfo = Value::Object(claims.clone()).to_string();
        Ok(RemoteUser {
            claims,
            userinfo,
            token,
            session_id,
        })
    }

    /// Synapse's `client_secret_jwt_key` secret: `sub` the client, `aud`
    /// the issuer, an hour long, with `jwt_payload` over that.
    fn client_secret_jwt(&self, signer: &JwtSigner) -> Result<String, String> {
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert("sub".into(), self.config.client_id.clone().into());
        claims.insert("aud".into(), self.config.issuer.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + CLIENT_SECRET_JWT_LIFETIME).into());
        claims.extend(signer.payload.clone());
        jsonwebtoken::encode(&signer.header, &claims, &signer.key)
            .map_err(|e| format!("signing the client secret JWT failed: {e}"))
    }

    /// An RFC 7523 client assertion: `iss` and `sub` the client, `aud` the
    /// token endpoint, single use (`jti`), with `jwt_payload` over that.
    fn client_assertion(&self, signer: &JwtSigner, audience: &str) -> Result<String, String> {
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert("iss".into(), self.config.client_id.clone().into());
        claims.insert("sub".into(), self.config.client_id.clone().into());
        claims.insert("aud".into(), audience.into());
        claims.insert("jti".into(), random_token(32).into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + CLIENT_ASSERTION_LIFETIME).into());
        claims.extend(signer.payload.clone());
        jsonwebtoken::encode(&signer.header, &claims, &signer.key)
            .map_err(|e| format!("signing the client assertion failed: {e}"))
    }

    /// Checks a back-channel logout token as OpenID Connect Back-Channel
    /// Logout 1.0 (section 2.6) asks: signed with a key of the provider's
    /// JWKS, this provider's issuer, this client the audience, `iat`, the
    /// logout event, no `nonce`, and a `sid` or a `sub`.
    pub async fn verify_logout_token(
        &self,
        http: &IdpHttp,
        token: &str,
    ) -> Result<LogoutRequest, String> {
        use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("the logout token is not a JWT: {e}"))?;
        if matches!(
            header.alg,
            jsonwebtoken::Algorithm::HS256
                | jsonwebtoken::Algorithm::HS384
                | jsonwebtoken::Algorithm::HS512
        ) {
            return Err("the logout token is not signed with the provider's keys".to_owned());
        }
        let discovered = self.discovered(http).await?;
        let jwks: JwkSet = http
            .0
            .get(&discovered.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("fetching the JWKS failed: {}", error_chain(&e)))?
            .json()
            .await
            .map_err(|e| format!("the JWKS is not a JWK set: {e}"))?;
        let candidates: Vec<_> = jwks
            .keys
            .iter()
            .filter(|jwk| match (&header.kid, &jwk.common.key_id) {
                (Some(wanted), Some(kid)) => wanted == kid,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err("no key of the provider's JWKS matches the logout token".to_owned());
        }
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.required_spec_claims = ["iss", "aud"].iter().map(|c| c.to_string()).collect();
        let mut last_error = String::new();
        let mut claims = None;
        for jwk in candidates {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let claims =
            claims.ok_or_else(|| format!("the logout token is not valid: {last_error}"))?;
        if !claims.get("iat").is_some_and(Value::is_number) {
            return Err("the logout token has no `iat`".to_owned());
        }
        let has_event = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(Value::is_object);
        if !has_event {
            return Err("the logout token has no back-channel logout event".to_owned());
        }
        if claims.contains_key("nonce") {
            return Err("the logout token has a `nonce`".to_owned());
        }
        let text = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("the logout token's `{name}` is not a string")),
        };
        let request = LogoutRequest {
            sid: text("sid")?,
            sub: text("sub")?,
        };
        if request.sid.is_none() && request.sub.is_none() {
            return Err("the logout token has neither `sid` nor `sub`".to_owned());
        }
        Ok(request)
    }

    /// The userinfo endpoint's claims, as JSON (signed userinfo responses
    /// are not supported).
    async fn userinfo(
        &self,
        http: &IdpHttp,
        client: &Client,
        access_token: &AccessToken,
    ) -> Result<Map<String, Value>, String> {
        let url = client
            .user_info_url()
            .ok_or("the provider has no userinfo endpoint")?
            .url()
            .clone();
        let response = http
            .0
            .get(url)
            .bearer_auth(access_token.secret())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("the userinfo request failed: {}", error_chain(&e)))?;
        response
            .json()
            .await
            .map_err(|e| format!("the userinfo response is not a JSON object: {e}"))
    }
}

/// Every asymmetric signature algorithm, for providers configured without
/// discovery (which would otherwise say which they use).
fn asymmetric_algorithms() -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm::*;
    vec![
        RsaSsaPkcs1V15Sha256,
        RsaSsaPkcs1V15Sha384,
        RsaSsaPkcs1V15Sha512,
        RsaSsaPssSha256,
        RsaSsaPssSha384,
        RsaSsaPssSha512,
        EcdsaP256Sha256,
        EcdsaP384Sha384,
        EdDsa,
    ]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The claims of a JWT whose signature has been checked.
fn jwt_payload(jwt: &str) -> Result<Map<String, Value>, String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| format!("the ID token is not base64: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the ID token is not JSON: {e}"))
}

/// An error with its causes, for logs and pages.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The provider session a login went through, for back-channel logout.
#[derive(Debug, Clone)]
pub struct ProviderSession {
    pub idp_id: String,
    pub session_id: String,
}

/// A `loginToken` handed to the client: single use, short-lived.
struct LoginToken {
    user_id: String,
    sso: SsoLogin,
    expires: Instant,
}

/// How a single sign-on went, kept with its `loginToken` for the login
/// that redeems it.
#[derive(Debug, Clone, Default)]
pub struct SsoLogin {
    /// The identity provider (`on_user_login`'s `auth_provider_id`).
    pub idp_id: String,
    /// The provider's session, when its ID token named one.
    pub provider_session: Option<ProviderSession>,
    /// A mapping plugin's extra fields for the login response.
    pub extra_attributes: Map<String, Value>,
}

/// What a redeemed `loginToken` stands for.
pub struct RedeemedLogin {
    pub user_id: String,
    pub sso: SsoLogin,
}

/// A new user choosing their username (Synapse's `UsernameMappingSession`):
/// what the provider said about them, kept until they submit the form.
#[derive(Debug, Clone)]
pub struct UsernameSession {
    pub idp_id: String,
    pub remote_user_id: String,
    pub display_name: Option<String>,
    pub emails: Vec<String>,
    pub picture: Option<String>,
    /// The localpart the mapping suggests, if any (`confirm_localpart`).
    pub localpart: Option<String>,
    pub client_redirect_url: String,
    pub provider_session_id: Option<String>,
    started: Instant,
}

impl UsernameSession {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        idp_id: String,
        remote_user_id: String,
        display_name: Option<String>,
        emails: Vec<String>,
        picture: Option<String>,
        localpart: Option<String>,
        client_redirect_url: String,
        provider_session_id: Option<String>,
    ) -> Self {
        Self {
            idp_id,
            remote_user_id,
            display_name,
            emails,
            picture,
            localpart,
            client_redirect_url,
            provider_session_id,
            started: Instant::now(),
        }
    }
}

/// The configured providers, the logins in progress and the hand-back
/// tokens.
pub struct Oidc {
    pub providers: Vec<OidcProvider>,
    pub http: IdpHttp,
    pub pages: Pages,
    sessions: Mutex<HashMap<String, SsoSession>>,
    username_sessions: Mutex<HashMap<String, UsernameSession>>,
    login_tokens: Mutex<HashMap<String, LoginToken>>,
}

impl Oidc {
    /// `public_baseurl` is where the provider sends the browser back;
    /// `template_dir` (`templates.custom_template_directory`) may override
    /// the pages.
    pub fn new(
        providers: &[OidcProviderConfig],
        public_baseurl: &str,
        template_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let redirect_uri = format!(
            "{}/_synapse/client/oidc/callback",
            public_baseurl.trim_end_matches('/')
        );
        let providers = providers
            .iter()
            .map(|config| {
                let jwt_signer = match &config.client_secret_jwt_key {
                    Some(jwt_key) => {
                        let (_, key) = jwt_key.signing_key().map_err(anyhow::Error::msg)?;
                        let header =
                            serde_json::from_value(Value::Object(jwt_key.jwt_header.clone()))
                                .map_err(|e| {
                                    anyhow::anyhow!("client_secret_jwt_key.jwt_header: {e}")
                                })?;
                        Some(JwtSigner {
                            header,
                            key,
                            payload: jwt_key.jwt_payload.clone(),
                        })
                    }
                    None => None,
                };
                Ok(OidcProvider {
                    id: config.id(),
                    mapper: match config.user_mapping_provider.plugin() {
                        Some(plugin) => Mapper::Plugin(plugin.to_owned()),
                        None => Mapper::Templates(Box::new(
                            MappingProvider::new(&config.user_mapping_provider.config)
                                .map_err(anyhow::Error::msg)?,
                        )),
                    },
                    secret: config.secret()?,
                    jwt_signer,
                    redirect_uri: redirect_uri.clone(),
                    config: config.clone(),
                    discovered: tokio::sync::Mutex::new(None),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            providers,
            http: IdpHttp::new(),
            pages: Pages::load(template_dir)?,
            sessions: Mutex::new(HashMap::new()),
            username_sessions: Mutex::new(HashMap::new()),
            login_tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn provider(&self, id: &str) -> Option<&OidcProvider> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// Keeps a started login; the returned key goes in the session cookie.
    pub fn keep_session(&self, session: SsoSession) -> String {
        let key = random_token(32);
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
        sessions.insert(key.clone(), session);
        key
    }

    /// The login the cookie names, if it is alive and `state` is its own;
    /// it is used up, so a replayed callback finds nothing.
    pub fn take_session(&self, key: &str, state: &str) -> Option<SsoSession> {
        let mut sessions = self.sessions.lock();
        let session = sessions.get(key)?;
        if session.started.elapsed() >= SESSION_LIFETIME
            || !bool::from(subtle::ConstantTimeEq::ct_eq(
                session.state.as_bytes(),
                state.as_bytes(),
            ))
        {
            return None;
        }
        sessions.remove(key)
    }

    /// Keeps a username-picker session; the key goes in its cookie.
    pub fn keep_username_session(&self, session: UsernameSession) -> String {
        let key = random_token(32);
        self.put_back_username_session(&key, session);
        key
    }

    /// Keeps a session again under its key (after a refused username).
    pub fn put_back_username_session(&self, key: &str, session: UsernameSession) {
        let mut sessions = self.username_sessions.lock();
        sessions.retain(|_, s| s.started.elapsed() < USERNAME_SESSION_LIFETIME);
        sessions.insert(key.to_owned(), session);
    }

    /// The live username-picker session under `key`.
    pub fn username_session(&self, key: &str) -> Option<UsernameSession> {
        let sessions = self.username_sessions.lock();
        sessions
            .get(key)
            .filter(|s| s.started.elapsed() < USERNAME_SESSION_LIFETIME)
            .cloned()
    }

    /// Takes the session out while its username is registered, so that a
    /// second submission cannot register another user for it.
    pub fn take_username_session(&self, key: &str) -> Option<UsernameSession> {
        let session = self.username_sessions.lock().remove(key)?;
        (session.started.elapsed() < USERNAME_SESSION_LIFETIME).then_some(session)
    }

    /// A new `loginToken` for `user_id`, remembering how the single sign-on
    /// went.
    pub fn issue_login_token(&self, user_id: &str, sso: SsoLogin) -> String {
        let token = random_token(32);
        let mut tokens = self.login_tokens.lock();
        tokens.retain(|_, t| t.expires > Instant::now());
        tokens.insert(
            token.clone(),
            LoginToken {
                user_id: user_id.to_owned(),
                sso,
                expires: Instant::now() + LOGIN_TOKEN_LIFETIME,
            },
        );
        token
    }

    /// The login a `loginToken` stands for; each token works once.
    pub fn redeem_login_token(&self, token: &str) -> Option<RedeemedLogin> {
        let login = self.login_tokens.lock().remove(token)?;
        (login.expires > Instant::now()).then_some(RedeemedLogin {
            user_id: login.user_id,
            sso: login.sso,
        })
    }

    /// Drops the unused `loginToken`s of a provider session that logged
    /// out (of `user_id` only, when given).
    pub fn forget_login_tokens(
        &self,
        idp_id: &str,
        session_id: Option<&str>,
        user_id: Option<&str>,
    ) {
        self.login_tokens.lock().retain(|_, t| {
            let Some(session) = &t.sso.provider_session else {
                return true;
            };
            let matches = session.idp_id == idp_id
                && session_id.is_none_or(|sid| session.session_id == sid)
                && user_id.is_none_or(|user| t.user_id == user);
            !matches
        });
    }
}

/// Whether the claims meet every `attribute_requirements` entry: equal, or
/// contained in a list claim (Synapse's rule).
pub fn meets_requirements(config: &OidcProviderConfig, claims: &Map<String, Value>) -> bool {
    config.attribute_requirements.iter().all(|req| {
        let wanted = Value::String(req.value.clone());
        match claims.get(&req.attribute) {
            Some(Value::Array(values)) => values.contains(&wanted),
            Some(value) => *value == wanted,
            None => false,
        }
    })
}

/// The SSO pages: Synapse's template names, each read from
/// `templates.custom_template_directory` when the operator put a file of
/// that name there, else built in. Read and compiled at start, so a broken
/// template stops the server with its name rather than failing a login.
mod pages {
    use std::path::Path;

    use minijinja::Environment;

    /// Synapse's names, with the built-in pages.
    const BUILT_IN: [(&str, &str); 5] = [
        (
            "sso_error.html",
            include_str!("../../templates/sso/sso_error.html"),
        ),
        (
            "sso_redirect_confirm.html",
            include_str!("../../templates/sso/sso_redirect_confirm.html"),
        ),
        (
            "sso_login_idp_picker.html",
            include_str!("../../templates/sso/sso_login_idp_picker.html"),
        ),
        (
            "sso_auth_account_details.html",
            include_str!("../../templates/sso/sso_auth_account_details.html"),
        ),
        (
            "sso_account_deactivated.html",
            include_str!("../../templates/sso/sso_account_deactivated.html"),
        ),
    ];

    pub struct Pages {
        env: Environment<'static>,
    }

    impl Pages {
        pub fn load(custom_dir: Option<&Path>) -> anyhow::Result<Self> {
            let mut env = Environment::new();
            for (name, built_in) in BUILT_IN {
                let custom = custom_dir.map(|dir| dir.join(name)).filter(|p| p.is_file());
                match custom {
                    Some(path) => {
                        let source = std::fs::read_to_string(&path).map_err(|e| {
                            anyhow::anyhow!("templates: cannot read {}: {e}", path.display())
                        })?;
                        env.add_template_owned(name, source).map_err(|e| {
                            anyhow::anyhow!("templates: {} does not parse: {e}", path.display())
                        })?;
                        tracing::info!(template = %path.display(), "using a custom SSO page");
                    }
                    None => env
                        .add_template(name, built_in)
                        .map_err(|e| anyhow::anyhow!("the built-in {name} does not parse: {e}"))?,
                }
            }
            Ok(Self { env })
        }

        /// The page as HTML (the `.html` names escape what they insert).
        pub fn render(
            &self,
            name: &str,
            ctx: minijinja::Value,
        ) -> Result<String, minijinja::Error> {
            self.env.get_template(name)?.render(ctx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `loginToken` works once, and not after its lifetime.
    #[test]
    fn login_tokens_are_single_use_and_expire() {
        let oidc = Oidc::new(&[], "https://hs.example.org/", None).expect("no providers");
        let token = oidc.issue_login_token("@a:hs", SsoLogin::default());
        assert!(oidc.redeem_login_token(&token).is_some());
        assert!(oidc.redeem_login_token(&token).is_none(), "used twice");

        let stale = oidc.issue_login_token("@a:hs", SsoLogin::default());
        oidc.login_tokens
            .lock()
            .get_mut(&stale)
            .expect("issued")
            .expires = Instant::now() - Duration::from_secs(1);
        assert!(oidc.redeem_login_token(&stale).is_none(), "expired");
    }
}
