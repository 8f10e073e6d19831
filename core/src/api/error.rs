//! The client API's one error type: rendered as Matrix error JSON
//! (`errcode`, `error`, HTTP status), or as a user-interactive auth challenge.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponse,
    client::uiaa::{UiaaInfo, UiaaResponse},
    error::{
        Error as RumaError, ErrorBody, ErrorKind, LimitExceededErrorData, RetryAfter,
        StandardErrorBody, UnknownTokenErrorData,
    },
};
use std::time::Duration;

#[derive(Debug)]
pub enum MatrixError {
    Standard {
        status: StatusCode,
        kind: ErrorKind,
        message: String,
    },
    /// 401 with the flows, completed stages and session of a UIA exchange.
    Uiaa(Box<UiaaInfo>),
}

pub type ApiResult<T> = Result<T, MatrixError>;

impl MatrixError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Standard {
            status,
            kind,
            message: message.into(),
        }
    }

    /// The human-readable part, as the `error` field carries it.
    pub fn message(&self) -> &str {
        match self {
            Self::Standard { message, .. } => message,
            Self::Uiaa(_) => "User-interactive authentication required",
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
    }

    pub fn unknown(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, ErrorKind::Unknown, message)
    }

    pub fn unrecognized(status: StatusCode) -> Self {
        Self::new(status, ErrorKind::Unrecognized, "Unrecognized request")
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            "Request body too large",
        )
    }

    pub fn unknown_token(soft_logout: bool) -> Self {
        let mut data = UnknownTokenErrorData::new();
        data.soft_logout = soft_logout;
        let message = if soft_logout {
            "Access token has expired"
        } else {
            "Unknown access token"
        };
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(data),
            message,
        )
    }

    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(data),
            "Too Many Requests",
        )
    }

    pub fn internal() -> Self {
        Self::unknown(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }
}

/// Storage failures are logged with the request's span and answered without detail.
impl From<sqlx::Error> for MatrixError {
    fn from(err: sqlx::Error) -> Self {
        tracing::error!(error = %err, "database error");
        Self::internal()
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let rendered = match self {
            Self::Standard {
                status,
                kind,
                message,
            } => RumaError::new(
                status,
                ErrorBody::Standard(StandardErrorBody::new(kind, message)),
            )
            .try_into_http_response::<Vec<u8>>(),
            Self::Uiaa(info) => {
                UiaaResponse::AuthResponse(*info).try_into_http_response::<Vec<u8>>()
            }
        };
        match rendered {
            Ok(response) => response.map(axum::body::Body::from),
            Err(err) => {
                tracing::error!(error = %err, "could not render an error response");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}
