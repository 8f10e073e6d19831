//! Access and refresh tokens: generation, hashing, and the authenticated
//! session cache that keeps token checks off the database on the hot path.

use std::collections::HashMap;

use parking_lot::RwLock;
use rand::{Rng, distributions::Alphanumeric};
use ruma::{OwnedDeviceId, OwnedUserId};
use sha2::{Digest, Sha256};

use crate::storage::{Storage, now_ms};

/// Who a request is from, once its access token checks out.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_guest: bool,
    /// Set by a registration spam check: the user's events are answered
    /// but never stored or delivered.
    pub shadow_banned: bool,
    pub expires_ts: Option<i64>,
    /// The token's hash, so that handlers can revoke exactly this token.
    pub token_hash: String,
}

/// Why a token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenRejected {
    Unknown,
    /// Known but past its lifetime: the client should refresh (soft logout).
    Expired,
}

fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn new_access_token() -> String {
    format!("mya_{}", random_string(40))
}

pub fn new_refresh_token() -> String {
    format!("myr_{}", random_string(40))
}

/// A device ID for a login that did not ask for one: ten upper-case letters, as Synapse.
pub fn new_device_id() -> String {
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| char::from(rng.gen_range(b'A'..=b'Z')))
        .collect()
}

/// Tokens are random and long, so one round of SHA-256 is a sufficient hash.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Maps token hashes to sessions. Entries are dropped whenever the devices
/// or users they belong to lose their tokens.
#[derive(Default)]
pub struct TokenCache {
    sessions: RwLock<HashMap<String, Session>>,
}

impl TokenCache {
    /// Resolves an access token to its session, from the cache or the database.
    pub async fn authenticate(
        &self,
        storage: &Storage,
        token: &str,
    ) -> Result<Session, AuthLookupError> {
        let token_hash = hash_token(token);
        let cached = self.sessions.read().get(&token_hash).cloned();
        let session = match cached {
            Some(session) => session,
            None => {
                let record = storage
                    .access_token(&token_hash)
                    .await?
                    .ok_or(TokenRejected::Unknown)?;
                let session = Session {
                    user_id: OwnedUserId::try_from(record.user_id)
                        .map_err(|_| TokenRejected::Unknown)?,
                    device_id: record.device_id.into(),
                    is_guest: record.is_guest,
                    shadow_banned: record.shadow_banned,
                    expires_ts: record.expires_ts,
                    token_hash: token_hash.clone(),
                };
                self.sessions.write().insert(token_hash, session.clone());
                session
            }
        };
        if session.expires_ts.is_some_and(|ts| ts <= now_ms()) {
            return Err(TokenRejected::Expired.into());
        }
        Ok(session)
    }

    /// Forgets every cached token of one device.
    pub fn forget_device(&self, user_id: &str, device_id: &str) {
        self.sessions
            .write()
            .retain(|_, s| !(s.user_id.as_str() == user_id && s.device_id.as_str() == device_id));
    }

    /// Forgets every cached token of a user, optionally sparing one device.
    pub fn forget_user(&self, user_id: &str, except_device: Option<&str>) {
        self.sessions.write().retain(|_, s| {
            s.user_id.as_str() != user_id || Some(s.device_id.as_str()) == except_device
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthLookupError {
    #[error("token rejected: {0:?}")]
    Rejected(#[from] TokenRejected),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

impl std::fmt::Display for TokenRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for TokenRejected {}
