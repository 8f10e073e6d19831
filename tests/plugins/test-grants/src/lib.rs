//! Exercises the grants. Config: `{"limit": N, "ask_url": "http://..."}`.
//!
//! * `kv`: counts each sender's messages and refuses them past `limit`.
//! * `http`: before a room is created, asks `ask_url`; a body of `deny`
//!   refuses the room (`M_DENIED_BY_REMOTE`).
//! * `queries`: only server admins may invite, and anyone else is told, by
//!   name, who they may not invite where (`M_NOT_ADMIN`).
//!
//! A refused host call becomes the refusal's error code, so tests can see
//! which one it was: `M_KV_NOT_GRANTED`, `M_KV_QUOTA`, `M_KV_FAILED`,
//! `M_HTTP_NOT_GRANTED`, `M_HTTP_FAILED` (with the host's reason),
//! `M_QUERIES_NOT_GRANTED`.

use std::sync::{
    OnceLock,
    atomic::{AtomicU32, Ordering},
};

use myelin_sdk::{Callback, Event, HostError, Plugin, SpamChecker, SpamVerdict, http, kv, queries};
use serde::Deserialize;

static LIMIT: AtomicU32 = AtomicU32::new(u32::MAX);
static ASK_URL: OnceLock<String> = OnceLock::new();

#[derive(Deserialize)]
struct Config {
    #[serde(default = "no_limit")]
    limit: u32,
    ask_url: Option<String>,
}

fn no_limit() -> u32 {
    u32::MAX
}

struct TestGrants;

impl Plugin for TestGrants {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let Config { limit, ask_url } = myelin_sdk::parse_config(config)?;
        LIMIT.store(limit, Ordering::Relaxed);
        if let Some(url) = ask_url {
            ASK_URL.get_or_init(|| url);
        }
        Ok(vec![
            Callback::CheckEventForSpam,
            Callback::UserMayCreateRoom,
            Callback::UserMayInvite,
        ])
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

fn only_admins_invite(
    inviter: &str,
    invitee: &str,
    room_id: &str,
) -> Result<SpamVerdict, HostError> {
    if queries::is_server_admin(inviter)? {
        return Ok(SpamVerdict::NotSpam);
    }
    let name = queries::profile(invitee)?
        .and_then(|p| p.display_name)
        .unwrap_or_else(|| invitee.to_owned());
    let room = queries::room_state(room_id, "m.room.name", "")?
        .and_then(|e| e.content_json()["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| room_id.to_owned());
    let joined = queries::is_user_in_room(inviter, room_id)?;
    Ok(SpamVerdict::reject(
        "M_NOT_ADMIN",
        format!("only admins invite: not {name} to {room} (you are joined: {joined})"),
    ))
}

impl SpamChecker for TestGrants {
    fn user_may_invite(inviter: &str, invitee: &str, room_id: &str) -> SpamVerdict {
        only_admins_invite(inviter, invitee, room_id).unwrap_or_else(|err| match err {
            HostError::NotGranted => {
                SpamVerdict::reject("M_QUERIES_NOT_GRANTED", "the queries grant is missing")
            }
            other => refusal(other),
        })
    }

    fn check_event_for_spam(event: &Event) -> SpamVerdict {
        count(event).unwrap_or_else(refusal)
    }

    fn user_may_create_room(_user_id: &str, _request: &str) -> SpamVerdict {
        let Some(url) = ASK_URL.get() else {
            return SpamVerdict::NotSpam;
        };
        match http::get(url) {
            Ok(response) if response.body == b"deny" => {
                SpamVerdict::reject("M_DENIED_BY_REMOTE", "the remote said no")
            }
            Ok(_) => SpamVerdict::NotSpam,
            Err(HostError::NotGranted) => {
                SpamVerdict::reject("M_HTTP_NOT_GRANTED", "the http grant does not cover this")
            }
            Err(HostError::Failed(why)) => SpamVerdict::reject("M_HTTP_FAILED", why),
            Err(HostError::QuotaExceeded) => SpamVerdict::reject("M_HTTP_FAILED", "quota"),
        }
    }
}

myelin_sdk::export_plugin!(TestGrants);
