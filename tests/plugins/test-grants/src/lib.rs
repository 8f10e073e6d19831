//! Counts each sender's messages in the plugin's key-value store and
//! refuses them past `limit` (config `{"limit": N}`). A refused host call
//! becomes the refusal's error code, so tests can see which one it was:
//! `M_KV_NOT_GRANTED`, `M_KV_QUOTA` or `M_KV_FAILED`.

use std::sync::atomic::{AtomicU32, Ordering};

use myelin_sdk::{Callback, Event, HostError, Plugin, SpamChecker, SpamVerdict, kv};
use serde::Deserialize;

static LIMIT: AtomicU32 = AtomicU32::new(u32::MAX);

#[derive(Deserialize)]
struct Config {
    limit: u32,
}

struct TestGrants;

impl Plugin for TestGrants {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let Config { limit } = myelin_sdk::parse_config(config)?;
        LIMIT.store(limit, Ordering::Relaxed);
        Ok(vec![Callback::CheckEventForSpam])
    }
}

fn refusal(err: HostError) -> SpamVerdict {
    match err {
        HostError::NotGranted => SpamVerdict::reject("M_KV_NOT_GRANTED", "the kv grant is missing"),
        HostError::QuotaExceeded => SpamVerdict::reject("M_KV_QUOTA", "the kv quota is used up"),
        HostError::Failed(why) => SpamVerdict::reject("M_KV_FAILED", why),
    }
}

fn count(event: &Event) -> Result<SpamVerdict, HostError> {
    let key = format!("count/{}", event.sender);
    let sent = match kv::get(&key)? {
        Some(bytes) => String::from_utf8_lossy(&bytes).parse::<u32>().unwrap_or(0),
        None => 0,
    };
    if sent >= LIMIT.load(Ordering::Relaxed) {
        return Ok(SpamVerdict::reject(
            "M_TOO_MANY_MESSAGES",
            format!("{} has sent {sent} messages", event.sender),
        ));
    }
    kv::set(&key, (sent + 1).to_string().as_bytes())?;
    Ok(SpamVerdict::NotSpam)
}

impl SpamChecker for TestGrants {
    fn check_event_for_spam(event: &Event) -> SpamVerdict {
        count(event).unwrap_or_else(refusal)
    }
}

myelin_sdk::export_plugin!(TestGrants);
