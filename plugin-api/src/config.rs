//! The `modules:` section of `homeserver.yaml`, in Synapse's shape plus
//! Myelin's `limits:` and `on_error:`.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// One entry of `modules:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Path to the plugin's `.wasm` component.
    pub module: PathBuf,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub on_error: OnError,
}

/// Hard limits per plugin.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap per instance, in MiB.
    pub memory_mib: u64,
    /// Wall-clock deadline per call, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            timeout_ms: 100,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What a failed call (trap, timeout, memory cap, malformed answer) means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse the action: the safe default for spam checks.
    #[default]
    Deny,
    /// Let the action through as if the plugin had not been asked.
    Allow,
}

/// What the operator grants a plugin beyond logging. Nothing by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// A key-value store in the homeserver's database.
    pub kv: Option<KvGrant>,
    /// Outbound HTTP to listed hosts.
    pub http: Option<HttpGrant>,
    /// Read-only queries: profiles, rooms' current state, membership, admins.
    #[serde(default)]
    pub queries: bool,
    /// Actions on behalf of local users: membership changes, events,
    /// account data, server notices.
    #[serde(default)]
    pub actions: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Host names (or IP addresses) the plugin may send requests to.
    pub allowed_hosts: Vec<String>,
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    /// The largest response body read, in KiB.
    #[serde(default = "default_http_max_response_kib")]
    pub max_response_kib: u64,
    /// Allow hosts that resolve to loopback, private or link-local
    /// addresses (off: a plugin cannot reach the server's own network).
    #[serde(default)]
    pub allow_private_addresses: bool,
}

fn default_http_timeout_ms() -> u64 {
    5_000
}

fn default_http_max_response_kib() -> u64 {
    1024
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvGrant {
    /// The most the plugin may store, keys and values together, in KiB.
    #[serde(default = "default_kv_quota_kib")]
    pub quota_kib: u64,
}

fn default_kv_quota_kib() -> u64 {
    1024
}
