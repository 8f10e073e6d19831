//! Single sign-on through OpenID Connect, at Synapse's paths: the client
//! sends the browser to `/login/sso/redirect[/{idpId}]`, which sends it on
//! to the identity provider; the provider sends it back to
//! `/_synapse/client/oidc/callback`, which maps the provider's user to a
//! local one and hands the client a single-use `loginToken` for
//! `m.login.token` ([spec](https://spec.matrix.org/latest/client-server-api/#sso-client-login)).
//!
//! Pages are rendered from templates compiled into the binary, work
//! without JavaScript, and never log the user in on any failure.

use std::sync::LazyLock;

use axum::{
    extract::{Path, Query, Request, State},
    response::{Html, IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use minijinja::{Environment, context};
use openidconnect::url::Url;
use serde::Deserialize;

use super::auth_providers;
use crate::{
    api::error::MatrixError,
    auth::{
        oidc::{self, Oidc, OidcProvider},
        username,
    },
    state::AppState,
    storage::UserRecord,
};

pub const CALLBACK_PATH: &str = "/_synapse/client/oidc/callback";
/// Synapse's cookie name.
const SESSION_COOKIE: &str = "oidc_session";
/// Synapse's bound on the mapping provider's retries for a free localpart.
const MAP_USERNAME_RETRIES: u32 = 1000;

static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        (
            "sso_error.html",
            include_str!("../../../templates/sso/sso_error.html"),
        ),
        (
            "sso_redirect_confirm.html",
            include_str!("../../../templates/sso/sso_redirect_confirm.html"),
        ),
        (
            "sso_login_idp_picker.html",
            include_str!("../../../templates/sso/sso_login_idp_picker.html"),
        ),
    ] {
        env.add_template(name, source)
            .expect("the embedded templates parse");
    }
    env
});

fn page(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match PAGES.get_template(name).and_then(|t| t.render(ctx)) {
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

fn error_page(status: StatusCode, title: &str, message: &str, detail: Option<&str>) -> Response {
    page(
        status,
        "sso_error.html",
        context! { title, message, detail },
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
                let mut url = Url::parse("http://x/").expect("a valid URL");
                url.query_pairs_mut()
                    .append_pair("redirectUrl", redirect_url.as_str());
                context! {
                    name => p.config.display_name(),
                    url => format!("/_matrix/client/v3/login/sso/redirect/{}?{}", p.id, url.query().unwrap_or_default()),
                }
            })
            .collect();
        Ok::<_, MatrixError>(page(
            StatusCode::OK,
            "sso_login_idp_picker.html",
            context! { server_name => state.server_name.as_str(), providers },
        ))
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
                StatusCode::BAD_GATEWAY,
                "Sign-in is unavailable",
                &format!("{} could not be reached.", provider.config.display_name()),
                None,
            );
        }
    };
    let key = oidc.keep_session(session);
    // The provider sends the browser back with a top-level GET: `Lax`
    // suffices over http; over https `None` also covers `form_post`.
    let https = state
        .config
        .public_baseurl
        .as_deref()
        .is_some_and(|base| base.starts_with("https://"));
    let attributes = if https {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    };
    let cookie = format!(
        "{SESSION_COOKIE}={key}; Path=/_synapse/client/oidc; Max-Age=600; HttpOnly; {attributes}"
    );
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    match (
        HeaderValue::try_from(auth_url),
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

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.to_owned())
        })
}

/// `GET /_synapse/client/oidc/callback`: where the provider sends the
/// browser back.
pub async fn callback(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let Some(oidc) = state.oidc.as_ref() else {
        return MatrixError::unrecognized(StatusCode::NOT_FOUND).into_response();
    };
    let Ok(Query(query)) = Query::<CallbackQuery>::try_from_uri(&parts.uri) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The request was malformed.",
            None,
        );
    };
    let failed = |message: &str, detail: Option<&str>| {
        error_page(StatusCode::BAD_REQUEST, "Sign-in failed", message, detail)
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
    let Some(key) = session_cookie(&parts.headers) else {
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
    let request_info = (
        parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        crate::api::ruma::client_ip(&parts)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    );
    let user = match local_user(&state, provider, &remote.claims, request_info).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    if user.deactivated {
        return error_page(
            StatusCode::FORBIDDEN,
            "Account deactivated",
            "This account has been deactivated.",
            None,
        );
    }
    confirm(&state, oidc, &user.user_id, &session.client_redirect_url).await
}

/// The local user for the provider's user: the one their external ID maps
/// to, else (Synapse's order) an existing user the templates name when
/// `allow_existing_users`, else a new one; a taken localpart is retried
/// with a number appended.
async fn local_user(
    state: &AppState,
    provider: &OidcProvider,
    claims: &serde_json::Map<String, serde_json::Value>,
    request_info: (Option<String>, String),
) -> Result<UserRecord, Response> {
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "SSO login failed on the server");
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "Something went wrong on the server.",
            None,
        )
    };
    let refused = |message: &str, detail: Option<&str>| {
        error_page(StatusCode::FORBIDDEN, "Sign-in refused", message, detail)
    };
    if !oidc::meets_requirements(&provider.config, claims) {
        tracing::info!(idp = %provider.id, "an SSO login did not meet attribute_requirements");
        return Err(refused(
            "You are not authorised to sign in to this server with this account.",
            None,
        ));
    }
    let subject = provider.mapper.remote_user_id(claims).map_err(|reason| {
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
        return state
            .storage
            .user(&user_id)
            .await
            .map_err(|e| internal(&e))?
            .ok_or_else(|| internal(&"an external ID names a missing user"));
    }
    for failures in 0..MAP_USERNAME_RETRIES {
        let mapped = provider
            .mapper
            .map_user_attributes(claims, failures)
            .map_err(|reason| {
                refused("Your account could not be mapped to a user.", Some(&reason))
            })?;
        username::check_localpart(&mapped.localpart, state.server_name.as_str(), false).map_err(
            |e| {
                refused(
                    "Your account maps to a user ID that is not allowed.",
                    Some(e.0),
                )
            },
        )?;
        let user_id = format!("@{}:{}", mapped.localpart, state.server_name);
        if let Some(existing) = state
            .storage
            .user(&user_id)
            .await
            .map_err(|e| internal(&e))?
        {
            if provider.config.allow_existing_users {
                record(state, provider, &subject, &existing.user_id).await?;
                return Ok(existing);
            }
            continue;
        }
        if !provider.config.enable_registration {
            return Err(refused(
                "New accounts cannot be created through this identity provider.",
                None,
            ));
        }
        let user = auth_providers::register_on_first_login(
            state,
            &mapped.localpart,
            mapped.display_name,
            request_info,
            Some(&provider.id),
        )
        .await
        .map_err(|e| {
            let reason = match e {
                MatrixError::Standard { message, .. } => message,
                MatrixError::Uiaa(_) => String::new(),
            };
            refused("Registration was refused.", Some(&reason))
        })?;
        record(state, provider, &subject, &user.user_id).await?;
        return Ok(user);
    }
    Err(refused(
        "No free user ID could be found for your account.",
        None,
    ))
}

async fn record(
    state: &AppState,
    provider: &OidcProvider,
    subject: &str,
    user_id: &str,
) -> Result<(), Response> {
    state
        .storage
        .record_external_id(&provider.id, subject, user_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not record an SSO external ID");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "Something went wrong on the server.",
                None,
            )
        })
}

/// Synapse's confirmation page: the browser goes back to the client only
/// when the user follows the link, so a login started by someone else is
/// not completed silently.
async fn confirm(state: &AppState, oidc: &Oidc, user_id: &str, redirect_url: &str) -> Response {
    let Ok(mut url) = Url::parse(redirect_url) else {
        return MatrixError::internal().into_response();
    };
    url.query_pairs_mut()
        .append_pair("loginToken", &oidc.issue_login_token(user_id));
    let display_name = state
        .storage
        .profile(user_id)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.displayname)
        .unwrap_or_else(|| user_id.to_owned());
    page(
        StatusCode::OK,
        "sso_redirect_confirm.html",
        context! {
            server_name => state.server_name.as_str(),
            user_id,
            display_name,
            redirect_host => url.host_str().unwrap_or(url.scheme()),
            redirect_url => url.as_str(),
        },
    )
}
