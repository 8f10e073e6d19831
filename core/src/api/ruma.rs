//! The extractor that turns an HTTP request into a ruma request type:
//! the body is read with a size limit, the access token is checked as the
//! endpoint's metadata asks, and every failure is a Matrix error.

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ruma::api::{
    IncomingRequest, OutgoingResponse,
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
        NoAuthentication,
    },
    error::{DeserializationError, FromHttpRequestError},
};

use super::error::MatrixError;
use crate::{
    auth::tokens::{AuthLookupError, Session, TokenRejected},
    state::AppState,
};

/// The largest JSON body the client API reads.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Whether an endpoint needs an access token, from ruma's metadata.
pub trait TokenRequirement {
    const REQUIRED: bool;
    const ACCEPTED: bool;
}

macro_rules! token_requirement {
    ($($scheme:ty => ($required:expr, $accepted:expr)),* $(,)?) => {
        $(impl TokenRequirement for $scheme {
            const REQUIRED: bool = $required;
            const ACCEPTED: bool = $accepted;
        })*
    };
}

token_requirement! {
    AccessToken => (true, true),
    AccessTokenOptional => (false, true),
    // No application services yet: their tokens are checked like a user's.
    AppserviceToken => (true, true),
    AppserviceTokenOptional => (false, true),
    NoAuthentication => (false, false),
    NoAccessToken => (false, false),
}

/// A parsed, authenticated client request.
pub struct Ruma<T> {
    pub body: T,
    /// Present when the endpoint takes an access token and one was given.
    pub session: Option<Session>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// The body as sent, for plugins that see requests as JSON.
    pub raw_body: Bytes,
}

impl<T> Ruma<T> {
    /// The session of an endpoint whose metadata requires a token.
    pub fn session(&self) -> &Session {
        self.session
            .as_ref()
            .expect("the extractor authenticates endpoints that require a token")
    }
}

/// Whether the listener trusts `X-Forwarded-For` (set per listener).
#[derive(Clone, Copy)]
pub struct TrustForwardedFor(pub bool);

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest,
    T::Authentication: TokenRequirement,
{
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, MatrixError> {
        let (mut parts, body) = req.into_parts();
        let path_args: Vec<String> =
            match RawPathParams::from_request_parts(&mut parts, state).await {
                Ok(params) => params.iter().map(|(_, value)| value.to_owned()).collect(),
                Err(_) => {
                    return Err(MatrixError::invalid_param(
                        "Invalid path parameter encoding",
                    ));
                }
            };
        let client_ip = client_ip(&parts);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|ua| ua.to_str().ok())
            .map(str::to_owned);

        let session = if <T::Authentication as TokenRequirement>::ACCEPTED {
            match access_token(&parts) {
                Some(token) if super::plugin_hooks::allowed_when_expired(parts.uri.path()) => {
                    Some(authenticate_token(state, token).await?)
                }
                Some(token) => Some(authenticate(state, token).await?),
                None if <T::Authentication as TokenRequirement>::REQUIRED => {
                    return Err(missing_token());
                }
                None => None,
            }
        } else {
            None
        };

        let raw_body = read_body(&parts, body, MAX_JSON_BODY).await?;
        let request = http::Request::from_parts(parts, raw_body.clone());
        let body = T::try_from_http_request(request.clone(), &path_args).map_err(|err| {
            match malformed_user_id(request.body()) {
                Some(problem) => MatrixError::invalid_param(problem),
                None => request_error(err),
            }
        })?;
        Ok(Self {
            body,
            session,
            client_ip,
            user_agent,
            raw_body,
        })
    }
}

/// Reads a body, refusing early on a declared length over `limit` and
/// stopping as soon as a streamed body passes it.
pub async fn read_body(
    parts: &http::request::Parts,
    body: Body,
    limit: usize,
) -> Result<Bytes, MatrixError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(MatrixError::too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(MatrixError::too_large())
        }
        Err(err) => Err(MatrixError::unknown(
            StatusCode::BAD_REQUEST,
            format!("Could not read body: {err}"),
        )),
    }
}

pub fn missing_token() -> MatrixError {
    MatrixError::new(
        StatusCode::UNAUTHORIZED,
        ruma::api::error::ErrorKind::MissingToken,
        "Missing access token",
    )
}

/// The session of an access token, or the Matrix error for a bad one (or
/// for an account a plugin says has expired: `is_user_expired`).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Session, MatrixError> {
    let session = authenticate_token(state, token).await?;
    super::plugin_hooks::refuse_expired(state, &session).await?;
    Ok(session)
}

/// The session of an access token, whether or not the account expired
/// (logout works for expired accounts).
pub async fn authenticate_token(state: &AppState, token: &str) -> Result<Session, MatrixError> {
    state
        .tokens
        .authenticate(&state.storage, token)
        .await
        .map_err(|err| match err {
            AuthLookupError::Rejected(TokenRejected::Expired) => MatrixError::unknown_token(true),
            AuthLookupError::Rejected(TokenRejected::Unknown) => MatrixError::unknown_token(false),
            AuthLookupError::Storage(e) => e.into(),
        })
}

/// The access token of a request: the `Authorization` header, or the
/// deprecated `access_token` query parameter.
pub fn access_token(parts: &http::request::Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
    }
    parts
        .uri
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
}

pub(crate) fn client_ip(parts: &http::request::Parts) -> Option<IpAddr> {
    let trust = parts
        .extensions
        .get::<TrustForwardedFor>()
        .is_some_and(|t| t.0);
    if trust
        && let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// A body whose `user_id` is not a user ID is an invalid parameter, not
/// malformed JSON — whatever shape ruma's parser reports it in (an untagged
/// enum hides the field's own error).
fn malformed_user_id(body: &Bytes) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let user_id = value.get("user_id")?.as_str()?;
    let err = ruma::UserId::parse(user_id).err()?;
    Some(format!("Invalid user_id `{user_id}`: {err}"))
}

/// Maps ruma's parse failures onto the spec's error codes.
fn request_error(err: FromHttpRequestError) -> MatrixError {
    match err {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            if e.is_syntax() || e.is_eof() {
                MatrixError::new(
                    StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::NotJson,
                    "Content not JSON.",
                )
            } else {
                MatrixError::bad_json(e.to_string())
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Utf8(_)) => MatrixError::new(
            StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::NotJson,
            "Content not UTF-8.",
        ),
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            MatrixError::invalid_param(e.to_string())
        }
        FromHttpRequestError::Deserialization(e) => MatrixError::invalid_param(e.to_string()),
        FromHttpRequestError::MethodMismatch { .. } => {
            MatrixError::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        }
        other => MatrixError::bad_json(other.to_string()),
    }
}

/// A ruma response type rendered as HTTP.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(Body::from),
            Err(err) => {
                tracing::error!(error = %err, "could not render a response");
                MatrixError::internal().into_response()
            }
        }
    }
}
