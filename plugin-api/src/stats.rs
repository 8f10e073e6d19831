//! What each plugin did: calls per callback by outcome, latency histograms,
//! and the last failure, for `/metrics` and the admin listing.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write,
    time::Duration,
};

use parking_lot::Mutex;

use std::time::Instant;

use crate::{
    PluginSet,
    bindings::{
        exports::myelin::plugin::{
            account_data::DataCallback, account_validity::ValidityCallback,
            password_auth::AuthCallback, third_party_rules::RulesCallback,
        },
        myelin::plugin::types::Callback,
    },
    plugin::{Fault, Plugin},
    presence::PresenceCallback,
    sso_mapping::SsoMappingCallback,
};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
];

/// How one call ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// The plugin let the action through.
    Pass,
    /// The plugin refused (or hid, or shadow-banned).
    Refuse,
    Fault(Fault),
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Refuse => "reject",
            Self::Fault(fault) => fault.as_str(),
        }
    }
}

/// Counters of one callback of one plugin.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CallbackStats {
    pub outcomes: BTreeMap<&'static str, u64>,
    pub calls: u64,
    pub seconds_total: f64,
    #[serde(skip)]
    buckets: [u64; BUCKETS.len()],
}

/// A hook a plugin answers: a callback of one of the contract's families
/// (a password auth provider's credentials check has no callback name of its
/// own in the WIT, hence `CheckAuth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Spam(Callback),
    CheckAuth,
    Auth(AuthCallback),
    Rules(RulesCallback),
    Validity(ValidityCallback),
    AccountData(DataCallback),
    Presence(PresenceCallback),
    SsoMapping(SsoMappingCallback),
}

impl From<RulesCallback> for Hook {
    fn from(callback: RulesCallback) -> Self {
        Self::Rules(callback)
    }
}

impl From<ValidityCallback> for Hook {
    fn from(callback: ValidityCallback) -> Self {
        Self::Validity(callback)
    }
}

impl From<DataCallback> for Hook {
    fn from(callback: DataCallback) -> Self {
        Self::AccountData(callback)
    }
}

impl From<SsoMappingCallback> for Hook {
    fn from(callback: SsoMappingCallback) -> Self {
        Self::SsoMapping(callback)
    }
}

impl From<PresenceCallback> for Hook {
    fn from(callback: PresenceCallback) -> Self {
        Self::Presence(callback)
    }
}

/// Records a call's outcome (`pass` when the plugin let the action through)
/// and, for a fault, logs it and keeps it as the plugin's last error.
pub(crate) fn record<T>(
    plugin: &Plugin,
    hook: Hook,
    started: Instant,
    answer: &Result<T, Fault>,
    pass: bool,
) {
    let outcome = match answer {
        Ok(_) if pass => Outcome::Pass,
        Ok(_) => Outcome::Refuse,
        Err(fault) => Outcome::Fault(*fault),
    };
    plugin.stats.record(hook, outcome, started.elapsed());
    if let Err(fault) = answer {
        plugin
            .stats
            .record_error(format!("{}: {}", hook_name(hook), fault.as_str()));
        tracing::warn!(plugin = &*plugin.name, hook = hook_name(hook), fault = fault.as_str(), on_error = ?plugin.on_error, "plugin failed");
    }
}

impl From<Callback> for Hook {
    fn from(callback: Callback) -> Self {
        Self::Spam(callback)
    }
}

impl From<AuthCallback> for Hook {
    fn from(callback: AuthCallback) -> Self {
        Self::Auth(callback)
    }
}

/// The `snake_case` name Synapse uses for a hook.
pub fn hook_name(hook: Hook) -> String {
    match hook {
        Hook::Spam(callback) => callback_name(callback),
        Hook::CheckAuth => "check_auth".to_owned(),
        Hook::Auth(callback) => snake_case(&format!("{callback:?}")),
        // Synapse spells these out: `check_threepid_can_be_invited`.
        Hook::Rules(callback) => plain_snake_case(&format!("{callback:?}")),
        Hook::Validity(callback) => plain_snake_case(&format!("{callback:?}")),
        Hook::AccountData(callback) => plain_snake_case(&format!("{callback:?}")),
        Hook::Presence(callback) => plain_snake_case(&format!("{callback:?}")),
        Hook::SsoMapping(callback) => plain_snake_case(&format!("{callback:?}")),
    }
}

#[derive(Default)]
pub struct PluginStats {
    callbacks: Mutex<HashMap<Hook, CallbackStats>>,
    last_error: Mutex<Option<String>>,
}

/// The `snake_case` name Synapse uses for a callback.
pub fn callback_name(callback: Callback) -> String {
    snake_case(&format!("{callback:?}"))
}

/// `check_3pid_auth` from `CheckThreepidAuth`.
fn snake_case(debug: &str) -> String {
    plain_snake_case(debug).replace("threepid", "3pid")
}

/// `on_new_event` from `OnNewEvent` (or `RulesCallback::OnNewEvent`).
fn plain_snake_case(debug: &str) -> String {
    debug
        .rsplit("::")
        .next()
        .unwrap_or(debug)
        .chars()
        .fold(String::new(), |mut name, c| {
            if c.is_ascii_uppercase() && !name.is_empty() {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
            name
        })
}

impl PluginStats {
    pub fn record(&self, hook: impl Into<Hook>, outcome: Outcome, elapsed: Duration) {
        let mut callbacks = self.callbacks.lock();
        let stats = callbacks.entry(hook.into()).or_default();
        *stats.outcomes.entry(outcome.label()).or_default() += 1;
        stats.calls += 1;
        let seconds = elapsed.as_secs_f64();
        stats.seconds_total += seconds;
        for (bucket, bound) in stats.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    pub fn record_error(&self, error: String) {
        *self.last_error.lock() = Some(error);
    }

    /// Counters by callback name, in name order.
    pub fn callbacks(&self) -> BTreeMap<String, CallbackStats> {
        self.callbacks
            .lock()
            .iter()
            .map(|(hook, stats)| (hook_name(*hook), stats.clone()))
            .collect()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl PluginSet {
    /// The plugins' metrics in Prometheus' text format.
    pub fn render_metrics(&self, out: &mut String) {
        out.push_str("# HELP myelin_plugin_calls_total Plugin callback calls, by outcome.\n");
        out.push_str("# TYPE myelin_plugin_calls_total counter\n");
        for plugin in self.plugins() {
            let name = escape(&plugin.name);
            for (callback, stats) in plugin.stats.callbacks() {
                for (outcome, count) in &stats.outcomes {
                    let _ = writeln!(
                        out,
                        "myelin_plugin_calls_total{{plugin=\"{name}\",callback=\"{callback}\",outcome=\"{outcome}\"}} {count}"
                    );
                }
            }
        }
        out.push_str("# HELP myelin_plugin_call_seconds Time spent in plugin callbacks.\n");
        out.push_str("# TYPE myelin_plugin_call_seconds histogram\n");
        for plugin in self.plugins() {
            let name = escape(&plugin.name);
            for (callback, stats) in plugin.stats.callbacks() {
                let labels = format!("plugin=\"{name}\",callback=\"{callback}\"");
                for (count, bound) in stats.buckets.iter().zip(BUCKETS) {
                    let _ = writeln!(
                        out,
                        "myelin_plugin_call_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "myelin_plugin_call_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    stats.calls
                );
                let _ = writeln!(
                    out,
                    "myelin_plugin_call_seconds_sum{{{labels}}} {}",
                    stats.seconds_total
                );
                let _ = writeln!(
                    out,
                    "myelin_plugin_call_seconds_count{{{labels}}} {}",
                    stats.calls
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_named_as_in_synapse() {
        assert_eq!(
            callback_name(Callback::CheckEventForSpam),
            "check_event_for_spam"
        );
        assert_eq!(
            callback_name(Callback::UserMaySendThreepidInvite),
            "user_may_send_3pid_invite"
        );
    }
}
