//! A JSON body extractor for endpoints ruma has no types for (Synapse's
//! admin API), with the same size limit and error codes as [`super::ruma`].

use axum::extract::{FromRequest, Request};
use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde::de::DeserializeOwned;

use super::{
    error::MatrixError,
    ruma::{MAX_JSON_BODY, read_body},
};

pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, MatrixError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts, body, MAX_JSON_BODY).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            MatrixError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::NotJson,
                "Content not JSON.",
            )
        })?;
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| MatrixError::bad_json(e.to_string()))
    }
}
