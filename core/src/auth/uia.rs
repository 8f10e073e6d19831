//! User-interactive authentication sessions: which stages a client has
//! completed, for which operation. Stage checks themselves live with the
//! handlers (`api::client::uia`), which know how to verify each stage.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use rand::{Rng, distributions::Alphanumeric};

/// A session not finished in this long is forgotten.
const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, UiaSession>>,
}

#[derive(Debug, Clone)]
pub struct UiaSession {
    /// The operation the session was started for, e.g. `POST /delete_devices`.
    pub operation: String,
    pub completed: Vec<String>,
    created: Instant,
}

/// A client named a session the server does not know, or one of another operation.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionMismatch {
    Unknown,
    OtherOperation,
}

impl UiaSessions {
    /// Starts a session for `operation` and returns its ID.
    pub fn start(&self, operation: &str) -> String {
        let id: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
        sessions.insert(
            id.clone(),
            UiaSession {
                operation: operation.to_owned(),
                completed: Vec::new(),
                created: Instant::now(),
            },
        );
        id
    }

    /// The session's state, if it exists and belongs to `operation`.
    pub fn get(&self, id: &str, operation: &str) -> Result<UiaSession, SessionMismatch> {
        let sessions = self.sessions.lock();
        let session = sessions
            .get(id)
            .filter(|s| s.created.elapsed() < SESSION_LIFETIME)
            .ok_or(SessionMismatch::Unknown)?;
        if session.operation != operation {
            return Err(SessionMismatch::OtherOperation);
        }
        Ok(session.clone())
    }

    /// Records a completed stage and returns all stages completed so far.
    pub fn complete(&self, id: &str, stage: &str) -> Vec<String> {
        let mut sessions = self.sessions.lock();
        match sessions.get_mut(id) {
            Some(session) => {
                if !session.completed.iter().any(|s| s == stage) {
                    session.completed.push(stage.to_owned());
                }
                session.completed.clone()
            }
            None => Vec::new(),
        }
    }

    /// Ends a session whose flow is complete, so it cannot be replayed.
    pub fn finish(&self, id: &str) {
        self.sessions.lock().remove(id);
    }
}
