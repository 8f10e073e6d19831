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
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
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

/// How long a started login may take at the identity provider.
const SESSION_LIFETIME: Duration = Duration::from_secs(10 * 60);
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
}

pub struct OidcProvider {
    pub config: OidcProviderConfig,
    pub id: String,
    pub mapper: MappingProvider,
    secret: Option<String>,
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
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(RedirectUrl::new(self.redirect_uri.clone()).map_err(url_error)?)
        .set_auth_type(match config.client_auth_method {
            ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuthMethod::ClientSecretPost | ClientAuthMethod::None => AuthType::RequestBody,
        });
        Ok(Discovered { client, pkce })
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
        let client = &discovered.client;
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| format!("no token endpoint: {e}"))?;
        if let Some(verifier) = &session.pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(verifier.clone()));
        }
        let token = exchange
            .request_async(http)
            .await
            .map_err(|e| format!("the token exchange failed: {}", error_chain(&e)))?;

        let id_claims = match token.id_token() {
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
        Ok(RemoteUser { claims })
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

fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A `loginToken` handed to the client: single use, short-lived.
struct LoginToken {
    user_id: String,
    expires: Instant,
}

/// The configured providers, the logins in progress and the hand-back
/// tokens.
pub struct Oidc {
    pub providers: Vec<OidcProvider>,
    pub http: IdpHttp,
    sessions: Mutex<HashMap<String, SsoSession>>,
    login_tokens: Mutex<HashMap<String, LoginToken>>,
}

impl Oidc {
    /// `public_baseurl` is where the provider sends the browser back.
    pub fn new(providers: &[OidcProviderConfig], public_baseurl: &str) -> anyhow::Result<Self> {
        let redirect_uri = format!(
            "{}/_synapse/client/oidc/callback",
            public_baseurl.trim_end_matches('/')
        );
        let providers = providers
            .iter()
            .map(|config| {
                Ok(OidcProvider {
                    id: config.id(),
                    mapper: MappingProvider::new(&config.user_mapping_provider.config)
                        .map_err(anyhow::Error::msg)?,
                    secret: config.secret()?,
                    redirect_uri: redirect_uri.clone(),
                    config: config.clone(),
                    discovered: tokio::sync::Mutex::new(None),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            providers,
            http: IdpHttp::new(),
            sessions: Mutex::new(HashMap::new()),
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

    /// A new `loginToken` for `user_id`.
    pub fn issue_login_token(&self, user_id: &str) -> String {
        let token = random_token(32);
        let mut tokens = self.login_tokens.lock();
        tokens.retain(|_, t| t.expires > Instant::now());
        tokens.insert(
            token.clone(),
            LoginToken {
                user_id: user_id.to_owned(),
                expires: Instant::now() + LOGIN_TOKEN_LIFETIME,
            },
        );
        token
    }

    /// The user a `loginToken` names; each token works once.
    pub fn redeem_login_token(&self, token: &str) -> Option<String> {
        let login = self.login_tokens.lock().remove(token)?;
        (login.expires > Instant::now()).then_some(login.user_id)
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
