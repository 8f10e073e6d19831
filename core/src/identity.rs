//! The identity server client (spec: "Identity Service API"): looking up
//! whom a third-party identifier is bound to, and storing a third-party
//! invite for an identifier bound to nobody yet. Requests go to the server
//! the client names, with the client's identity access token; like every
//! outbound request they refuse private addresses unless the operator
//! allows them.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use myelin_plugin_api::http::OutboundClient;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an identity server could not answer.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid identity server name {0:?}")]
    InvalidServer(String),
    #[error("the identity server's address {0} is not public")]
    PrivateAddress(String),
    #[error("the identity server could not be reached: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("the identity server answered {0}")]
    Refused(u16),
}

/// What the identity server keeps for an invite (spec: `store-invite`).
#[derive(Debug, Deserialize)]
pub struct StoredInvite {
    pub token: String,
    pub public_keys: Vec<Value>,
    pub display_name: String,
}

#[derive(Clone)]
pub struct IdentityClient {
    client: OutboundClient,
    /// Identity servers spoken to over plain HTTP (`host:port`), for an
    /// operator's own one on a private network, or a test.
    http_servers: Arc<[String]>,
}

impl IdentityClient {
    pub fn new(allowed_private: Vec<ipnet::IpNet>, http_servers: Vec<String>) -> Self {
        Self {
            client: OutboundClient::new(allowed_private, REQUEST_TIMEOUT),
            http_servers: http_servers.into(),
        }
    }

    fn url(&self, id_server: &str, path: &str) -> Result<reqwest::Url, IdentityError> {
        let scheme = if self.http_servers.iter().any(|s| s == id_server) {
            "http"
        } else {
            "https"
        };
        let url = reqwest::Url::parse(&format!(
            "{scheme}://{id_server}/_matrix/identity/v2/{path}"
        ))
        .map_err(|_| IdentityError::InvalidServer(id_server.to_owned()))?;
        if url.path() != format!("/_matrix/identity/v2/{path}") {
            return Err(IdentityError::InvalidServer(id_server.to_owned()));
        }
        if !self.client.permits(&url) {
            return Err(IdentityError::PrivateAddress(id_server.to_owned()));
        }
        Ok(url)
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        token: &str,
    ) -> Result<Value, IdentityError> {
        let response = request.bearer_auth(token).send().await?;
        if !response.status().is_success() {
            return Err(IdentityError::Refused(response.status().as_u16()));
        }
        Ok(response.json().await?)
    }

    /// The Matrix user the identifier is bound to, if any, looked up with
    /// the server's hashing (spec: "Lookup").
    pub async fn lookup(
        &self,
        id_server: &str,
        token: &str,
        medium: &str,
        address: &str,
    ) -> Result<Option<String>, IdentityError> {
        let details = self
            .call(
                self.client
                    .client()
                    .get(self.url(id_server, "hash_details")?),
                token,
            )
            .await?;
        let pepper = details["lookup_pepper"].as_str().unwrap_or_default();
        let algorithms: Vec<&str> = details["algorithms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let (algorithm, lookup) = if algorithms.contains(&"sha256") {
            let digest = Sha256::digest(format!("{address} {medium} {pepper}"));
            (
                "sha256",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
            )
        } else if algorithms.contains(&"none") {
            ("none", format!("{address} {medium}"))
        } else {
            return Err(IdentityError::Refused(400));
        };
        let body = json!({"addresses": [lookup], "algorithm": algorithm, "pepper": pepper});
        let answer = self
            .call(
                self.client
                    .client()
                    .post(self.url(id_server, "lookup")?)
                    .json(&body),
                token,
            )
            .await?;
        Ok(answer["mappings"][&lookup].as_str().map(str::to_owned))
    }

    /// Asks the identity server to keep an invite for the identifier and
    /// tell its owner (spec: "Invitation Storage").
    pub async fn store_invite(
        &self,
        id_server: &str,
        token: &str,
        request: &Value,
    ) -> Result<StoredInvite, IdentityError> {
        let answer = self
            .call(
                self.client
                    .client()
                    .post(self.url(id_server, "store-invite")?)
                    .json(request),
                token,
            )
            .await?;
        serde_json::from_value(answer).map_err(|_| IdentityError::Refused(502))
    }
}
