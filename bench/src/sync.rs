//! The `/sync` phases: wake latency of long-polling clients, initial sync
//! of a user in many rooms, and incremental sync with nothing new.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Args, ArgsRef, Report, call, enc, login, print_report, run_phase};

/// `sync-wake`: `--listeners` clients (each a device of the bench user)
/// long-poll `/sync` in one room while a sender posts one message at a
/// time; each listener records how long after the send started the message
/// reached it.
pub async fn wake_phase(client: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let shared = ArgsRef::from(args);
    let sender = login(client, &shared).await?;
    let room = call(
        client,
        Method::POST,
        &format!("{}/_matrix/client/v3/createRoom", args.url),
        &sender,
        Some(&json!({"preset": "private_chat", "name": "myelin-bench sync-wake"})),
    )
    .await?["room_id"]
        .as_str()
        .context("no room_id")?
        .to_owned();
    let filter = enc(&json!({"room": {"rooms": [room], "timeline": {"limit": 1}}, "presence": {"not_types": ["*"]}}).to_string());
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut listeners = tokio::task::JoinSet::new();
    for _ in 0..args.listeners {
        let token = login(client, &shared).await?;
        let first = call(
            client,
            Method::GET,
            &format!("{}/_matrix/client/v3/sync?filter={filter}", args.url),
            &token,
            None,
        )
        .await?;
        let mut since = first["next_batch"]
            .as_str()
            .context("no next_batch")?
            .to_owned();
        let (client, url, filter) = (client.clone(), args.url.clone(), filter.clone());
        let (sent_at, latencies) = (sent_at.clone(), latencies.clone());
        listeners.spawn(async move {
            while Instant::now() < deadline {
                let url = format!(
                    "{url}/_matrix/client/v3/sync?filter={filter}&timeout=5000&since={}",
                    enc(&since)
                );
                let Ok(response) = call(&client, Method::GET, &url, &token, None).await else {
                    continue;
                };
                let arrived = Instant::now();
                for event in timeline_bodies(&response) {
                    if let Some(started) = sent_at.lock().unwrap().get(&event) {
                        latencies.lock().unwrap().push(arrived - *started);
                    }
                }
                since = response["next_batch"].as_str().unwrap_or(&since).to_owned();
            }
        });
    }
    // Let every listener settle into its long-poll before the first send.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent = 0usize;
    let started = Instant::now();
    while Instant::now() + Duration::from_millis(200) < deadline {
        let body = format!("wake-{sent}");
        sent_at.lock().unwrap().insert(body.clone(), Instant::now());
        let url = format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/wake-{sent}",
            args.url,
            enc(&room)
        );
        call(
            client,
            Method::PUT,
            &url,
            &sender,
            Some(&json!({"msgtype": "m.text", "body": body})),
        )
        .await?;
        sent += 1;
        // One message in flight at a time, spaced so every listener is
        // back in its long-poll before the next.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    while listeners.join_next().await.is_some() {}
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    let expected = sent * args.listeners;
    let report = Report {
        requests: latencies.len(),
        errors: expected.saturating_sub(latencies.len()),
        first_error: None,
        elapsed,
        latencies,
        unit: "wake",
        server_cpu: None,
        own_cpu: None,
        machine_cpu: None,
    };
    println!(
        "sync-wake: {} listeners, {sent} messages; latency from the send's start to each listener's response",
        args.listeners
    );
    print_report("sync-wake", &report);
    Ok(())
}

fn timeline_bodies(response: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rooms) = response["rooms"]["join"].as_object() {
        for room in rooms.values() {
            for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                if let Some(body) = event["content"]["body"].as_str() {
                    out.push(body.to_owned());
                }
            }
        }
    }
    out
}

/// `initial-sync`: the bench user in `--rooms` rooms of `--room-events`
/// messages each; workers run initial syncs (no `since`).
pub async fn initial_phase(client: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let token = login(client, &ArgsRef::from(args)).await?;
    for r in 0..args.rooms {
        let room = call(
            client,
            Method::POST,
            &format!("{}/_matrix/client/v3/createRoom", args.url),
            &token,
            Some(&json!({"preset": "private_chat", "name": format!("myelin-bench room {r}")})),
        )
        .await?["room_id"]
            .as_str()
            .context("no room_id")?
            .to_owned();
        for e in 0..args.room_events {
            let url = format!(
                "{}/_matrix/client/v3/rooms/{}/send/m.room.message/setup-{r}-{e}",
                args.url,
                enc(&room)
            );
            call(
                client,
                Method::PUT,
                &url,
                &token,
                Some(&json!({"msgtype": "m.text", "body": format!("message {e}")})),
            )
            .await?;
        }
    }
    let url = format!("{}/_matrix/client/v3/sync", args.url);
    let report = run_phase(args, "request", move |client, _, _| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let response = call(&client, Method::GET, &url, &token, None).await?;
            anyhow::ensure!(response["rooms"]["join"].is_object(), "no rooms");
            Ok(())
        }
    })
    .await?;
    println!(
        "initial-sync: {} rooms of {} messages",
        args.rooms, args.room_events
    );
    print_report("initial-sync", &report);
    Ok(())
}

/// `sync-idle`: incremental syncs with `timeout=0` when nothing is new.
pub async fn idle_phase(client: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let token = login(client, &ArgsRef::from(args)).await?;
    let first = call(
        client,
        Method::GET,
        &format!("{}/_matrix/client/v3/sync", args.url),
        &token,
        None,
    )
    .await?;
    let since = first["next_batch"]
        .as_str()
        .context("no next_batch")?
        .to_owned();
    let url = format!(
        "{}/_matrix/client/v3/sync?timeout=0&since={}",
        args.url,
        enc(&since)
    );
    let report = run_phase(args, "request", move |client, _, _| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            call(&client, Method::GET, &url, &token, None).await?;
            Ok(())
        }
    })
    .await?;
    print_report("sync-idle", &report);
    Ok(())
}
