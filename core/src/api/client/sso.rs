//! Single sign-on through OpenID Connect, at Synapse's paths: the client
//! sends the browser to `/login/sso/redirect[/{idpId}]`, which sends it on
//! to the identity provider; the provider sends it back to
//! `/_synapse/client/oidc/callback`, which maps the provider's user to a
//! local one (a new user may first pick a username at
//! `/_synapse/client/pick_username/account_details`) and hands the client a
//! single-use `loginToken` for `m.login.token`
//! ([spec](https://spec.matrix.org/latest/client-server-api/#sso-client-login)).
//! The provider ends sessions at `/_synapse/client/oidc/backchannel_logout`.
//!
//! Pages are rendered from templates (built in, or the operator's from
//! `templates.custom_template_directory`), work without JavaScript, and
//! never log the user in on any failure.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, Request, State},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use minijinja::context;
use myelin_plugin_api::{Callback, MappingFailed};
use openidconnect::url::{Url, form_urlencoded};
use serde::Deserialize;
use serde_json::json;

use super::auth_providers;
use crate::{
    api::{error::MatrixError, plugins},
    auth::{
        oidc::{self, Mapper, Oidc, OidcProvider, ProviderSession, SsoLogin, UsernameSession},
        sso_mapping::MappedUser,
        username,
    },
    media::Upload,
    state::AppState,
    storage::{Profile, UserRecord},
};

pub const CALLBACK_PATH: &str = "/_synapse/client/oidc/callback";
pub const BACKCHANNEL_LOGOUT_PATH: &str = "/_synapse/client/oidc/backchannel_logout";
pub const ACCOUNT_DETAILS_PATH: &str = "/_synapse/client/pick_username/account_details";
pub const CHECK_USERNAME_PATH: &str = "/_synapse/client/pick_username/check";
pub const PICK_IDP_PATH: &str = "/_synapse/client/pick_idp";
/// Synapse's cookie names.
const SESSION_COOKIE: &str = "oidc_session";
const USERNAME_COOKIE: &str = "username_mapping_session";
/// Synapse's bound on the mapping provider's retries for a free localpart.
const MAP_USERNAME_RETRIES: u32 = 1000;
/// What `check_media_file_for_spam` sees of an avatar (as for uploads).
const SPAM_PREFIX: usize = 1024 * 1024;

/// The SSO routes outside `/_matrix`, at Synapse's paths.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(CALLBACK_PATH, get(callback))
        .route(BACKCHANNEL_LOGOUT_PATH, post(backchannel_logout))
        .route(
            ACCOUNT_DETAILS_PATH,
            get(account_details_form).post(account_details_submit),
        )
        .route(CHECK_USERNAME_PATH, get(check_username))
        .route(PICK_IDP_PATH, get(pick_idp))
}

fn page(oidc: &Oidc, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match oidc.pages.render(name, ctx) {
        Ok(html) => (status, no_store(), Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, template = name, "an SSO page failed to render");
            MatrixError::internal().into_response()
        }
    }
}

/// SSO pages carry one-time state: never cached.
fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

/// `sso_error.html`, with Synapse's variables (`error`,
/// `error_description`) next to the built-in page's.
fn error_page(
    oidc: &Oidc,
    status: StatusCode,
    title: &str,
    message: &str,
    detail: Option<&str>,
) -> Response {
    let error = match status {
        StatusCode::FORBIDDEN => "access_denied",
        StatusCode::BAD_GATEWAY => "temporarily_unavailable",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request",
    };
    let error_description = match detail {
        Some(detail) => format!("{message} ({detail})"),
        None => message.to_owned(),
    };
    page(
        oidc,
        status,
        "sso_error.html",
        context! { title, message, detail, error, error_description },
    )
}

#[derive(Deserialize)]
pub struct RedirectQuery {
    #[serde(rename = "redirectUrl")]
    redirect_url: Option<String>,
}

fn enabled(state: &AppState) -> Result<&Oidc, MatrixError> {
    state
        .oidc
        .as_ref()
        .ok_or_else(|| MatrixError::unrecognized(StatusCode::NOT_FOUND))
}

/// The client's `redirectUrl`: required, and an absolute URL (custom
/// schemes included, for mobile apps).
fn client_redirect(query: &RedirectQuery) -> Result<Url, MatrixError> {
    let url = query
        .redirect_url
        .as_deref()
        .ok_or_else(|| MatrixError::missing_param("Missing redirectUrl"))?;
    Url::parse(url).map_err(|_| MatrixError::invalid_param("redirectUrl is not a URL"))
}

/// The query string `redirectUrl=…`.
fn redirect_query(redirect_url: &Url) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("redirectUrl", redirect_url.as_str())
        .finish()
}

/// `GET /_matrix/client/v3/login/sso/redirect`: with one provider, its
/// login; with several, a page to choose one.
pub async fn redirect(
    State(state): State<AppState>,
    Query(query): Query<RedirectQuery>,
) -> Response {
    let result = async {
        let oidc = enabled(&state)?;
        let redirect_url = client_redirect(&query)?;
        if let [provider] = oidc.providers.as_slice() {
            return Ok(start(&state, oidc, provider, &redirect_url).await);
        }
        let providers: Vec<_> = oidc
            .providers
            .iter()
            .map(|p| {
                context! {
                    idp_id => &p.id,
                    idp_name => p.config.display_name(),
                    idp_icon => &p.config.idp_icon,
                    idp_brand => &p.config.idp_brand,
                    name => p.config.display_name(),
                    url => format!(
                        "/_matrix/client/v3/login/sso/redirect/{}?{}",
                        p.id,
                        redirect_query(&redirect_url)
                    ),
                }
            })
            .collect();
        Ok::<_, MatrixError>(page(
            oidc,
            StatusCode::OK,
            "sso_login_idp_picker.html",
            context! {
                server_name => state.server_name.as_str(),
                redirect_url => redirect_url.as_str(),
                providers,
            },
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
pub struct PickIdpQuery {
    #[serde(rename = "redirectUrl")]
    redirect_url: Option<String>,
    idp: Option<String>,
}

/// `GET /_synapse/client/pick_idp?redirectUrl=…&idp=…`: where Synapse's
/// provider picker form submits to (operators' custom pickers use it).
pub async fn pick_idp(
    State(state): State<AppState>,
    Query(query): Query<PickIdpQuery>,
) -> Response {
    let result = async {
        let oidc = enabled(&state)?;
        let redirect_url = client_redirect(&RedirectQuery {
            redirect_url: query.redirect_url,
        })?;
        let idp = query
            .idp
            .ok_or_else(|| MatrixError::missing_param("Missing idp"))?;
        let provider = oidc
            .provider(&idp)
            .ok_or_else(|| MatrixError::not_found("Unknown identity provider ID"))?;
        Ok::<_, MatrixError>(start(&state, oidc, provider, &redirect_url).await)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /_matrix/client/v3/login/sso/redirect/{idpId}`
pub async fn redirect_to_idp(
    State(state): State<AppState>,
    Path(idp_id): Path<String>,
    Query(query): Query<RedirectQuery>,
) -> Response {
    let result = async {
        let oidc = enabled(&state)?;
        let redirect_url = client_redirect(&query)?;
        let provider = oidc
            .provider(&idp_id)
            .ok_or_else(|| MatrixError::not_found("Unknown identity provider ID"))?;
        Ok::<_, MatrixError>(start(&state, oidc, provider, &redirect_url).await)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A cookie's attributes: `SameSite=None; Secure` over https (which also
/// covers the provider's `form_post`), `Lax` over http, where the browser
/// comes back with a top-level GET.
fn cookie_attributes(state: &AppState) -> &'static str {
    let https = state
        .config
        .public_baseurl
        .as_deref()
        .is_some_and(|base| base.starts_with("https://"));
    if https {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    }
}

/// A redirect (302) setting `cookie`.
fn redirect_with_cookie(location: &str, cookie: String) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    match (
        HeaderValue::try_from(location),
        HeaderValue::try_from(cookie),
    ) {
        (Ok(location), Ok(cookie)) => {
            headers.insert(header::LOCATION, location);
            headers.insert(header::SET_COOKIE, cookie);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        _ => MatrixError::internal().into_response(),
    }
}

/// Starts a login at `provider`: the session is kept here, its key goes in
/// a cookie scoped to the callback, and the browser goes to the provider.
async fn start(
    state: &AppState,
    oidc: &Oidc,
    provider: &OidcProvider,
    redirect_url: &Url,
) -> Response {
    let (auth_url, session) = match provider.start(&oidc.http, redirect_url.as_str()).await {
        Ok(started) => started,
        Err(reason) => {
            tracing::warn!(idp = %provider.id, %reason, "could not start an SSO login");
            return error_page(
                oidc,
                StatusCode::BAD_GATEWAY,
                "Sign-in is unavailable",
                &format!("{} could not be reached.", provider.config.display_name()),
                None,
            );
        }
    };
    let key = oidc.keep_session(session);
    let cookie = format!(
        "{SESSION_COOKIE}={key}; Path=/_synapse/client/oidc; Max-Age=600; HttpOnly; {}",
        cookie_attributes(state)
    );
    redirect_with_cookie(&auth_url, cookie)
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == wanted).then(|| value.to_owned())
        })
}

/// The user agent and IP of a request, for the registration spam checks.
fn request_info(parts: &Parts) -> (Option<String>, String) {
    (
        parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        crate::api::ruma::client_ip(parts)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    )
}

/// `GET /_synapse/client/oidc/callback`: where the provider sends the
/// browser back.
pub async fn callback(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let Some(oidc) = state.oidc.as_ref() else {
        return MatrixError::unrecognized(StatusCode::NOT_FOUND).into_response();
    };
    let failed = |message: &str, detail: Option<&str>| {
        error_page(
            oidc,
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            message,
            detail,
        )
    };
    let Ok(Query(query)) = Query::<CallbackQuery>::try_from_uri(&parts.uri) else {
        return failed("The request was malformed.", None);
    };
    if let Some(error) = &query.error {
        tracing::info!(%error, description = ?query.error_description, "the identity provider refused an SSO login");
        let detail = match &query.error_description {
            Some(description) => format!("{error}: {description}"),
            None => error.clone(),
        };
        return failed("The identity provider did not sign you in.", Some(&detail));
    }
    let Some(state_param) = &query.state else {
        return failed("The identity provider's answer has no state.", None);
    };
    let Some(key) = cookie(&parts.headers, SESSION_COOKIE) else {
        return failed(
            "Your browser did not send the sign-in session cookie. Allow cookies for this server and try again.",
            None,
        );
    };
    let Some(session) = oidc.take_session(&key, state_param) else {
        return failed(
            "This sign-in session is unknown, expired or already used.",
            None,
        );
    };
    let Some(provider) = oidc.provider(&session.idp_id) else {
        return failed("The identity provider is no longer configured.", None);
    };
    let Some(code) = &query.code else {
        return failed("The identity provider's answer has no code.", None);
    };
    let remote = match provider.finish(&oidc.http, &session, code).await {
        Ok(remote) => remote,
        Err(reason) => {
            tracing::warn!(idp = %provider.id, %reason, "an SSO login failed");
            return failed(
                &format!(
                    "Your sign-in at {} could not be verified.",
                    provider.config.display_name()
                ),
                Some(&reason),
            );
        }
    };
    let provider_session = remote.session_id.clone().map(|session_id| ProviderSession {
        idp_id: provider.id.clone(),
        session_id,
    });
    let mapped = local_user(
        &state,
        oidc,
        provider,
        &remote,
        &session.client_redirect_url,
        request_info(&parts),
    )
    .await;
    let (user, new_user) = match mapped {
        Ok(Mapped::User { user, new }) => (user, new),
        Ok(Mapped::PickUsername(pending)) => {
            let key = oidc.keep_username_session(*pending);
            let cookie = format!(
                "{USERNAME_COOKIE}={key}; Path=/_synapse/client/pick_username; Max-Age={}; HttpOnly; {}",
                oidc::USERNAME_SESSION_LIFETIME.as_secs(),
                cookie_attributes(&state)
            );
            return redirect_with_cookie(ACCOUNT_DETAILS_PATH, cookie);
        }
        Err(response) => return response,
    };
    if user.deactivated {
        return page(
            oidc,
            StatusCode::FORBIDDEN,
            "sso_account_deactivated.html",
            context! {},
        );
    }
    let extra_attributes = match &provider.mapper {
        Mapper::Plugin(plugin) => {
            state
                .plugins
                .current()
                .sso_extra_attributes(plugin, &remote.userinfo, &remote.token)
                .await
        }
        Mapper::Templates(_) => Default::default(),
    };
    let sso = SsoLogin {
        idp_id: provider.id.clone(),
        provider_session,
        extra_attributes,
    };
    confirm(
        &state,
        oidc,
        &user.user_id,
        new_user,
        &session.client_redirect_url,
        sso,
    )
    .await
}

/// Where mapping the provider's user led.
enum Mapped {
    User {
        user: UserRecord,
        new: bool,
    },
    /// A new user picks (or confirms) their username first.
    PickUsername(Box<UsernameSession>),
}

/// The local user for the provider's user: the one their external ID maps
/// to, else (Synapse's order) an existing user the templates name when
/// `allow_existing_users`, else a new one — created at once, or after the
/// username picker when the mapping gives no localpart or
/// `confirm_localpart` is set; a taken localpart is retried with a number
/// appended.
async fn local_user(
    state: &AppState,
    oidc: &Oidc,
    provider: &OidcProvider,
    remote: &oidc::RemoteUser,
    client_redirect_url: &str,
    request_info: (Option<String>, String),
) -> Result<Mapped, Response> {
    let claims = &remote.claims;
    let internal = |e: &dyn std::fmt::Display| internal_error(oidc, e);
    let refused = |message: &str, detail: Option<&str>| {
        error_page(
            oidc,
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            message,
            detail,
        )
    };
    if !oidc::meets_requirements(&provider.config, claims) {
        tracing::info!(idp = %provider.id, "an SSO login did not meet attribute_requirements");
        return Err(refused(
            "You are not authorised to sign in to this server with this account.",
            None,
        ));
    }
    let subject = remote_user_id(state, provider, remote)
        .await
        .map_err(|reason| {
            refused(
                "The identity provider did not say who you are.",
                Some(&reason),
            )
        })?;
    let known = state
        .storage
        .user_by_external_id(&provider.id, &subject)
        .await
        .map_err(|e| internal(&e))?;
    if let Some(user_id) = known {
        let user = state
            .storage
            .user(&user_id)
            .await
            .map_err(|e| internal(&e))?
            .ok_or_else(|| internal(&"an external ID names a missing user"))?;
        return Ok(Mapped::User { user, new: false });
    }
    for failures in 0..MAP_USERNAME_RETRIES {
        let mapped = map_user_attributes(state, provider, remote, failures)
            .await
            .map_err(|reason| {
                refused("Your account could not be mapped to a user.", Some(&reason))
            })?;
        let user_id = match &mapped.localpart {
            Some(localpart) => {
                username::check_localpart(localpart, state.server_name.as_str(), false).map_err(
                    |e| {
                        refused(
                            "Your account maps to a user ID that is not allowed.",
                            Some(e.0),
                        )
                    },
                )?;
                Some(format!("@{localpart}:{}", state.server_name))
            }
            None => None,
        };
        if let Some(user_id) = &user_id
            && let Some(existing) = state
                .storage
                .user(user_id)
                .await
                .map_err(|e| internal(&e))?
        {
            if provider.config.allow_existing_users {
                record(state, oidc, provider, &subject, &existing.user_id).await?;
                return Ok(Mapped::User {
                    user: existing,
                    new: false,
                });
            }
            continue;
        }
        if !provider.config.enable_registration {
            return Err(refused(
                "New accounts cannot be created through this identity provider.",
                None,
            ));
        }
        let confirm = mapped.confirm_localpart;
        let Some(localpart) = mapped.localpart.clone().filter(|_| !confirm) else {
            return Ok(Mapped::PickUsername(Box::new(UsernameSession::new(
                provider.id.clone(),
                subject,
                mapped.display_name,
                mapped.email.into_iter().collect(),
                mapped.picture,
                mapped.localpart,
                client_redirect_url.to_owned(),
                remote.session_id.clone(),
            ))));
        };
        let user = register(
            state,
            oidc,
            provider,
            &subject,
            &localpart,
            mapped.display_name,
            mapped.picture.as_deref(),
            request_info,
        )
        .await
        .map_err(|reason| refused("Registration was refused.", Some(&reason)))?;
        return Ok(Mapped::User { user, new: true });
    }
    Err(refused(
        "No free user ID could be found for your account.",
        None,
    ))
}

/// The user's stable ID at the provider, from the provider's mapper.
async fn remote_user_id(
    state: &AppState,
    provider: &OidcProvider,
    remote: &oidc::RemoteUser,
) -> Result<String, String> {
    match &provider.mapper {
        Mapper::Templates(templates) => templates.remote_user_id(&remote.claims),
        Mapper::Plugin(plugin) => state
            .plugins
            .current()
            .sso_remote_user_id(plugin, &remote.userinfo)
            .await
            .map_err(mapping_failure),
    }
}

/// A first-time user's attributes, from the provider's mapper; `failures`
/// counts the localparts found taken so far.
async fn map_user_attributes(
    state: &AppState,
    provider: &OidcProvider,
    remote: &oidc::RemoteUser,
    failures: u32,
) -> Result<MappedUser, String> {
    match &provider.mapper {
        Mapper::Templates(templates) => templates.map_user_attributes(&remote.claims, failures),
        Mapper::Plugin(plugin) => {
            let attributes = state
                .plugins
                .current()
                .sso_map_user_attributes(plugin, &remote.userinfo, &remote.token, failures)
                .await
                .map_err(mapping_failure)?;
            Ok(MappedUser {
                localpart: attributes.localpart.filter(|l| !l.is_empty()),
                confirm_localpart: attributes.confirm_localpart,
                display_name: attributes.display_name.filter(|n| !n.is_empty()),
                email: attributes.emails.into_iter().next(),
                picture: attributes.picture.filter(|p| !p.is_empty()),
            })
        }
    }
}

/// What the user is told when a mapping plugin refused or failed.
fn mapping_failure(failure: MappingFailed) -> String {
    match failure {
        MappingFailed::Refused(message) => message,
        MappingFailed::Failed(reason) => {
            tracing::warn!(%reason, "an SSO mapping plugin failed");
            "the server's mapping provider failed; try again later or contact the server's administrator".to_owned()
        }
    }
}

fn internal_error(oidc: &Oidc, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "SSO login failed on the server");
    error_page(
        oidc,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Sign-in failed",
        "Something went wrong on the server.",
        None,
    )
}

/// Creates the user (through the registration spam checks), records their
/// external ID and sets their avatar from the provider's picture. `Err` is
/// why registration was refused.
#[allow(clippy::too_many_arguments)]
async fn register(
    state: &AppState,
    oidc: &Oidc,
    provider: &OidcProvider,
    subject: &str,
    localpart: &str,
    display_name: Option<String>,
    picture: Option<&str>,
    request_info: (Option<String>, String),
) -> Result<UserRecord, String> {
    let user = auth_providers::register_on_first_login(
        state,
        localpart,
        display_name,
        request_info,
        Some(&provider.id),
    )
    .await
    .map_err(|e| match e {
        MatrixError::Standard { message, .. } => message,
        MatrixError::Uiaa(_) => String::new(),
    })?;
    if let Err(e) = state
        .storage
        .record_external_id(&provider.id, subject, &user.user_id)
        .await
    {
        tracing::error!(error = %e, "could not record an SSO external ID");
        return Err("Something went wrong on the server.".to_owned());
    }
    if let Some(picture) = picture {
        set_avatar(state, oidc, &user.user_id, picture).await;
    }
    Ok(user)
}

async fn record(
    state: &AppState,
    oidc: &Oidc,
    provider: &OidcProvider,
    subject: &str,
    user_id: &str,
) -> Result<(), Response> {
    state
        .storage
        .record_external_id(&provider.id, subject, user_id)
        .await
        .map_err(|e| internal_error(oidc, &e))
}

/// Downloads the provider's picture of a new user into the media
/// repository and makes it their avatar, as Synapse does. A picture that
/// cannot be had (not an image, too large, unreachable, refused by a spam
/// checker) is only logged: the login goes on without it.
async fn set_avatar(state: &AppState, oidc: &Oidc, user_id: &str, picture: &str) {
    let result = async {
        let url = Url::parse(picture).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("not an http(s) URL".to_owned());
        }
        let response = oidc
            .http
            .client()
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("the download failed: {e}"))?;
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !content_type.starts_with("image/") {
            return Err(format!("not an image but `{content_type}`"));
        }
        let body = futures_util::stream::unfold(response, |mut response| async move {
            match response.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), response)),
                Ok(None) => None,
                Err(e) => Some((Err(e), response)),
            }
        });
        let received = state
            .media
            .files
            .receive(body, state.config.max_upload_size.0, SPAM_PREFIX)
            .await
            .map_err(|e| format!("the download failed: {e:?}"))?;
        let checks = state.plugins.current();
        if checks.wants(Callback::CheckMediaFileForSpam) {
            let verdict = checks
                .check_media_file_for_spam(&received.prefix, Some(&content_type), received.size)
                .await;
            plugins::check(verdict).map_err(|_| "a spam checker refused it".to_owned())?;
        }
        let upload = Upload {
            content_type,
            upload_name: None,
        };
        let media_id = state
            .media
            .store(&state.storage, &state.config, user_id, upload, received)
            .await
            .map_err(|e| format!("storing it failed: {e:?}"))?;
        let mut profile = state
            .storage
            .profile(user_id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_else(Profile::default);
        profile.avatar_url = Some(format!("mxc://{}/{media_id}", state.server_name));
        state
            .storage
            .set_profile(user_id, &profile)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if let Err(reason) = result {
        tracing::warn!(%user_id, %picture, %reason, "could not set the avatar from the SSO picture");
    }
}

/// The username picker's session, from its cookie.
fn username_session(oidc: &Oidc, headers: &HeaderMap) -> Option<(String, UsernameSession)> {
    let key = cookie(headers, USERNAME_COOKIE)?;
    let session = oidc.username_session(&key)?;
    Some((key, session))
}

fn picker_expired(oidc: &Oidc) -> Response {
    error_page(
        oidc,
        StatusCode::BAD_REQUEST,
        "Sign-in failed",
        "This sign-in session is unknown or expired. Return to your Matrix client and sign in again.",
        None,
    )
}

/// `sso_auth_account_details.html` with Synapse's variables, and the
/// previous attempt's username and error for a form sent back.
fn account_details_page(
    state: &AppState,
    oidc: &Oidc,
    session: &UsernameSession,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    let provider = oidc.provider(&session.idp_id);
    let idp = context! {
        idp_id => &session.idp_id,
        idp_name => provider.map(|p| p.config.display_name()),
        idp_icon => provider.and_then(|p| p.config.idp_icon.as_deref()),
        idp_brand => provider.and_then(|p| p.config.idp_brand.as_deref()),
    };
    let user_attributes = context! {
        display_name => &session.display_name,
        emails => &session.emails,
        avatar_url => &session.picture,
        localpart => session.localpart.as_deref().unwrap_or_default(),
    };
    page(
        oidc,
        status,
        "sso_auth_account_details.html",
        context! {
            server_name => state.server_name.as_str(),
            idp,
            user_attributes,
            username,
            error,
        },
    )
}

/// `GET /_synapse/client/pick_username/account_details`: the form.
pub async fn account_details_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return MatrixError::unrecognized(StatusCode::NOT_FOUND).into_response();
    };
    let Some((_, session)) = username_session(oidc, &headers) else {
        return picker_expired(oidc);
    };
    let suggested = session.localpart.clone().unwrap_or_default();
    account_details_page(&state, oidc, &session, StatusCode::OK, &suggested, None)
}

/// Why `localpart` cannot be registered, if it cannot.
async fn username_problem(state: &AppState, localpart: &str) -> Result<Option<String>, String> {
    if let Err(e) = username::check_localpart(localpart, state.server_name.as_str(), false) {
        return Ok(Some(e.0.to_owned()));
    }
    let user_id = format!("@{localpart}:{}", state.server_name);
    match state.storage.user(&user_id).await {
        Ok(Some(_)) => Ok(Some(
            "This username is taken. Choose another one.".to_owned(),
        )),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// `POST /_synapse/client/pick_username/account_details`: `username`,
/// and `use_display_name` / `use_avatar` when the user keeps those. A
/// refused username gets the form again, saying why; an accepted one
/// creates the user and goes on to the confirmation page.
pub async fn account_details_submit(
    State(state): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return MatrixError::unrecognized(StatusCode::NOT_FOUND).into_response();
    };
    let Some(key) = cookie(&parts.headers, USERNAME_COOKIE) else {
        return picker_expired(oidc);
    };
    let mut username = String::new();
    let (mut use_display_name, mut use_avatar) = (false, false);
    for (name, value) in form_urlencoded::parse(&body) {
        match &*name {
            "username" => username = value.trim().to_lowercase(),
            "use_display_name" => use_display_name = value == "true" || value == "on",
            "use_avatar" => use_avatar = value == "true" || value == "on",
            _ => {}
        }
    }
    // Out of the store while this runs: a second submission finds nothing.
    let Some(session) = oidc.take_username_session(&key) else {
        return picker_expired(oidc);
    };
    let Some(provider) = oidc.provider(&session.idp_id) else {
        return picker_expired(oidc);
    };
    match username_problem(&state, &username).await {
        Ok(None) => {}
        Ok(Some(problem)) => {
            let response = account_details_page(
                &state,
                oidc,
                &session,
                StatusCode::BAD_REQUEST,
                &username,
                Some(&problem),
            );
            oidc.put_back_username_session(&key, session);
            return response;
        }
        Err(e) => {
            oidc.put_back_username_session(&key, session);
            return internal_error(oidc, &e);
        }
    }
    // Another tab may have finished this user's registration meanwhile.
    match state
        .storage
        .user_by_external_id(&provider.id, &session.remote_user_id)
        .await
    {
        Ok(None) => {}
        Ok(Some(_)) => return picker_expired(oidc),
        Err(e) => return internal_error(oidc, &e),
    }
    let display_name = session.display_name.clone().filter(|_| use_display_name);
    let picture = session.picture.as_deref().filter(|_| use_avatar);
    let user = match register(
        &state,
        oidc,
        provider,
        &session.remote_user_id,
        &username,
        display_name,
        picture,
        request_info(&parts),
    )
    .await
    {
        Ok(user) => user,
        Err(reason) => {
            return error_page(
                oidc,
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "Registration was refused.",
                Some(&reason),
            );
        }
    };
    let provider_session = session
        .provider_session_id
        .clone()
        .map(|session_id| ProviderSession {
            idp_id: provider.id.clone(),
            session_id,
        });
    // The provider's claims are not kept through the picker, so a mapping
    // plugin's extra attributes are not asked for here.
    let sso = SsoLogin {
        idp_id: provider.id.clone(),
        provider_session,
        extra_attributes: Default::default(),
    };
    confirm(
        &state,
        oidc,
        &user.user_id,
        true,
        &session.client_redirect_url,
        sso,
    )
    .await
}

#[derive(Deserialize)]
pub struct CheckQuery {
    username: Option<String>,
}

/// `GET /_synapse/client/pick_username/check?username=…`: whether the
/// username is free, for pages that check as the user types. Needs the
/// picker's session, so that it cannot be used to list accounts.
pub async fn check_username(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CheckQuery>,
) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return MatrixError::unrecognized(StatusCode::NOT_FOUND).into_response();
    };
    if username_session(oidc, &headers).is_none() {
        return MatrixError::unknown(StatusCode::BAD_REQUEST, "Unknown session").into_response();
    }
    let Some(username) = query.username else {
        return MatrixError::missing_param("Missing username").into_response();
    };
    let username = username.trim().to_lowercase();
    if let Err(e) = username::check_localpart(&username, state.server_name.as_str(), false) {
        return MatrixError::new(
            StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::InvalidUsername,
            e.0,
        )
        .into_response();
    }
    match state
        .storage
        .user(&format!("@{username}:{}", state.server_name))
        .await
    {
        Ok(existing) => {
            (no_store(), Json(json!({"available": existing.is_none()}))).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "checking a username failed");
            MatrixError::internal().into_response()
        }
    }
}

/// Synapse's confirmation page: the browser goes back to the client only
/// when the user follows the link, so a login started by someone else is
/// not completed silently.
async fn confirm(
    state: &AppState,
    oidc: &Oidc,
    user_id: &str,
    new_user: bool,
    redirect_url: &str,
    sso: SsoLogin,
) -> Response {
    let Ok(mut url) = Url::parse(redirect_url) else {
        return MatrixError::internal().into_response();
    };
    let mut display_url = url.clone();
    display_url.set_query(None);
    display_url.set_fragment(None);
    url.query_pairs_mut()
        .append_pair("loginToken", &oidc.issue_login_token(user_id, sso));
    let profile = state
        .storage
        .profile(user_id)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    page(
        oidc,
        StatusCode::OK,
        "sso_redirect_confirm.html",
        context! {
            server_name => state.server_name.as_str(),
            user_id,
            new_user,
            user_profile => context! {
                display_name => profile.displayname,
                avatar_url => profile.avatar_url,
            },
            redirect_host => url.host_str().unwrap_or(url.scheme()),
            redirect_url => url.as_str(),
            display_url => display_url.as_str(),
        },
    )
}

/// An answer to the provider's back-channel request: 200 when done, 400
/// with an OAuth-style JSON error otherwise (Back-Channel Logout 1.0, 2.8).
fn logout_answer(status: StatusCode, error: Option<&str>) -> Response {
    let body = match error {
        Some(description) => json!({"error": "invalid_request", "error_description": description}),
        None => json!({}),
    };
    (status, no_store(), Json(body)).into_response()
}

/// `POST /_synapse/client/oidc/backchannel_logout`: the provider says a
/// session of it ended (`logout_token`, a form field). The devices that
/// logged in through that session (`sid`), or all the user's devices from
/// that provider (only `sub`), are logged out; with a `sub`, only the user
/// that subject maps to (unless `backchannel_logout_ignore_sub`).
pub async fn backchannel_logout(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return MatrixError::unrecognized(StatusCode::NOT_FOUND).into_response();
    };
    let Some(token) = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned())
    else {
        return logout_answer(StatusCode::BAD_REQUEST, Some("Missing logout_token"));
    };
    // The issuer says which provider it is; the signature is checked next.
    let issuer = unverified_issuer(&token);
    let Some(provider) = oidc.providers.iter().find(|p| {
        p.config.backchannel_logout_enabled
            && issuer.as_deref().is_some_and(|iss| {
                iss.trim_end_matches('/') == p.config.issuer.trim_end_matches('/')
            })
    }) else {
        return logout_answer(
            StatusCode::BAD_REQUEST,
            Some("No provider with back-channel logout enabled issued this token"),
        );
    };
    let request = match provider.verify_logout_token(&oidc.http, &token).await {
        Ok(request) => request,
        Err(reason) => {
            tracing::info!(idp = %provider.id, %reason, "refused a back-channel logout token");
            return logout_answer(StatusCode::BAD_REQUEST, Some(&reason));
        }
    };
    let expected_user = match (&request.sub, provider.config.backchannel_logout_ignore_sub) {
        (Some(sub), false) => match state.storage.user_by_external_id(&provider.id, sub).await {
            Ok(Some(user_id)) => Some(user_id),
            // Nobody here is that subject: nothing to end.
            Ok(None) => return logout_answer(StatusCode::OK, None),
            Err(e) => {
                tracing::error!(error = %e, "back-channel logout failed");
                return logout_answer(StatusCode::INTERNAL_SERVER_ERROR, Some("Server error"));
            }
        },
        _ => None,
    };
    if request.sid.is_none() && expected_user.is_none() {
        // Only a `sub`, and it is not to be trusted: no session to name.
        return logout_answer(
            StatusCode::BAD_REQUEST,
            Some("The logout token has no sid, and its sub is ignored"),
        );
    }
    oidc.forget_login_tokens(
        &provider.id,
        request.sid.as_deref(),
        expected_user.as_deref(),
    );
    match log_out_provider_devices(
        &state,
        &provider.id,
        request.sid.as_deref(),
        expected_user.as_deref(),
    )
    .await
    {
        Ok(count) => {
            tracing::info!(idp = %provider.id, sid = ?request.sid, devices = count, "back-channel logout");
            logout_answer(StatusCode::OK, None)
        }
        Err(e) => {
            tracing::error!(error = ?e, "back-channel logout failed");
            logout_answer(StatusCode::INTERNAL_SERVER_ERROR, Some("Server error"))
        }
    }
}

/// Logs out the devices that logged in through the provider (in session
/// `sid`, of `user_id`, when given): their tokens, keys and pushers go, the
/// users' device lists change and password-provider plugins hear of it.
async fn log_out_provider_devices(
    state: &AppState,
    idp_id: &str,
    sid: Option<&str>,
    user_id: Option<&str>,
) -> crate::api::error::ApiResult<usize> {
    let devices = state
        .storage
        .devices_by_auth_provider_session(idp_id, sid, user_id)
        .await?;
    let mut by_user: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (user, device) in devices {
        by_user.entry(user).or_default().push(device);
    }
    let mut count = 0;
    for (user_id, device_ids) in by_user {
        state.storage.delete_devices(&user_id, &device_ids).await?;
        for device_id in &device_ids {
            state.tokens.forget_device(&user_id, device_id);
        }
        super::devices::announce_device_change(state, &user_id).await?;
        let ended: Vec<(String, &str)> = device_ids.iter().map(|d| (d.clone(), "")).collect();
        super::session::tell_logged_out(state, &user_id, &ended);
        count += device_ids.len();
    }
    Ok(count)
}

/// The `iss` claim of a JWT, unverified: only to choose the provider
/// whose keys then check it.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}
