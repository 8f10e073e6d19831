//! Refuses messages whose body contains the configured `word`.

use std::sync::OnceLock;

use myelin_sdk::{Callback, Event, Plugin, SpamChecker, SpamVerdict, log, serde_json::Value};

static WORD: OnceLock<String> = OnceLock::new();

struct MinimalSpam;

impl Plugin for MinimalSpam {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let config: Value = myelin_sdk::parse_config(config)?;
        let word = config["word"].as_str().ok_or("`word` is required")?;
        WORD.get_or_init(|| word.to_lowercase());
        Ok(vec![Callback::CheckEventForSpam])
    }
}

impl SpamChecker for MinimalSpam {
    fn check_event_for_spam(event: &Event) -> SpamVerdict {
        let word = WORD.get().map(String::as_str).unwrap_or_default();
        match event.content_json()["body"].as_str() {
            Some(body) if body.to_lowercase().contains(word) => {
                log::info(format!("refused {} from {}", event.event_id, event.sender));
                SpamVerdict::forbidden(format!("messages may not contain {word:?}"))
            }
            _ => SpamVerdict::NotSpam,
        }
    }
}

myelin_sdk::export_plugin!(MinimalSpam);
