//! The presence router hook family, with Synapse's semantics: the answers
//! of every routing plugin are combined; a failure routes nothing extra.

use std::{collections::HashMap, time::Instant};

pub use crate::bindings::exports::myelin::plugin::presence_router::{
    InterestedUsers, PresenceState,
};
use crate::{PluginSet, plugin::Plugin, stats::record};

/// The presence router's callbacks (the WIT has no enum for them: a plugin
/// implements both or neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceCallback {
    GetUsersForStates,
    GetInterestedUsers,
}

/// Whose presence a user receives besides their room-mates'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interested {
    All,
    Users(Vec<String>),
}

impl PluginSet {
    pub fn routes_presence(&self) -> bool {
        self.plugins.iter().any(|p| p.registered.presence_router)
    }

    fn routers(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins.iter().filter(|p| p.registered.presence_router)
    }

    /// Which users should receive which of `states`, per the routers.
    pub async fn get_users_for_states(
        &self,
        states: &[PresenceState],
    ) -> HashMap<String, Vec<PresenceState>> {
        let callback = PresenceCallback::GetUsersForStates;
        let mut routed: HashMap<String, Vec<PresenceState>> = HashMap::new();
        for plugin in self.routers() {
            let started = Instant::now();
            let answer = ask!(plugin, presence, call_get_users_for_states(states));
            record(plugin, callback.into(), started, &answer, true);
            for (user, states) in answer.unwrap_or_default() {
                routed.entry(user).or_default().extend(states);
            }
        }
        routed
    }

    /// Whose presence `user_id` receives besides their room-mates'; `None`
    /// when no plugin routes presence.
    pub async fn get_interested_users(&self, user_id: &str) -> Option<Interested> {
        let callback = PresenceCallback::GetInterestedUsers;
        let mut combined: Option<Interested> = None;
        for plugin in self.routers() {
            let started = Instant::now();
            let answer = ask!(plugin, presence, call_get_interested_users(user_id));
            record(plugin, callback.into(), started, &answer, true);
            combined = match (combined, answer) {
                (_, Ok(InterestedUsers::All)) => return Some(Interested::All),
                (Some(Interested::Users(mut users)), Ok(InterestedUsers::Users(more))) => {
                    users.extend(more);
                    Some(Interested::Users(users))
                }
                (_, Ok(InterestedUsers::Users(users))) => Some(Interested::Users(users)),
                (combined, Err(_)) => combined.or(Some(Interested::Users(Vec::new()))),
            };
        }
        combined
    }
}
