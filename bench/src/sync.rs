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

use super::{
    Args, ArgsRef, Report, call, enc, login, member_token, percentile, print_report, run_phase,
};

/// How the listeners of a wake phase are laid out.
#[derive(Clone, Copy)]
pub enum Wake {
    /// `sync-wake`: the listeners are devices of the bench user, all in one
    /// room, so every message wakes all of them.
    FanOut,
    /// `sync-wake-one`: each listener is its own user, alone with the
    /// sender in a room of its own, so each message wakes one of them while
    /// the others keep long-polling.
    One,
}

/// One long-polling client, set up and caught up.
struct Listener {
    token: String,
    filter: String,
    since: String,
}

/// The wake phases: `--listeners` clients long-poll `/sync` while a sender
/// posts one message at a time (round the rooms); each listener records how
/// long after the send started the message reached it.
pub async fn wake_phase(client: &reqwest::Client, args: &Args, wake: Wake) -> anyhow::Result<()> {
    let shared = ArgsRef::from(args);
    let sender = login(client, &shared).await?;
    let mut rooms = Vec::new();
    let mut listeners = Vec::new();
    match wake {
        Wake::FanOut => {
            let room = create_room(client, args, &sender, &[]).await?;
            let user_id = whoami(client, args, &sender).await?;
            for _ in 0..args.listeners {
                let token = login(client, &shared).await?;
                listeners.push(Listener::new(client, args, token, &user_id, &room).await?);
            }
            rooms.push(room);
        }
        Wake::One => {
            for n in 0..args.listeners {
                let listener = ArgsRef {
                    user: format!("{}-listener-{n}", args.user),
                    ..shared.clone()
                };
                let token = member_token(client, &listener, args.shared_secret.as_deref()).await?;
                let user_id = whoami(client, args, &token).await?;
                let room = create_room(client, args, &sender, &[&user_id]).await?;
                let join = format!("{}/_matrix/client/v3/rooms/{}/join", args.url, enc(&room));
                call(client, Method::POST, &join, &token, Some(&json!({}))).await?;
                listeners.push(Listener::new(client, args, token, &user_id, &room).await?);
                rooms.push(room);
            }
        }
    }
    let (phase, gap) = match wake {
        // Every listener must be back in its long-poll before the next.
        Wake::FanOut => ("sync-wake", Duration::from_millis(50)),
        Wake::One => ("sync-wake-one", Duration::from_millis(10)),
    };

    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for Listener {
        token,
        filter,
        mut since,
    } in listeners
    {
        let mut connection = LongPoll::connect(&args.url, &token).await?;
        let (sent_at, latencies) = (sent_at.clone(), latencies.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let path = format!(
                    "/_matrix/client/v3/sync?filter={filter}&timeout=5000&since={}",
                    enc(&since)
                );
                // A listener whose connection failed stops; its missed
                // messages count as errors, and the first failure is shown.
                let (body, arrived) = match connection.get(&path).await {
                    Ok(answer) => answer,
                    Err(err) => return Some(format!("GET {path}: {err:#}")),
                };
                let response = match serde_json::from_slice::<WakeResponse>(&body) {
                    Ok(response) => response,
                    Err(err) => return Some(format!("GET {path}: {err}")),
                };
                for body in response.timeline_bodies() {
                    if let Some(started) = sent_at.lock().unwrap().get(body) {
                        latencies.lock().unwrap().push(arrived - *started);
                    }
                }
                since = response.next_batch;
            }
            None
        });
    }
    // Let every listener settle into its long-poll before the first send.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent = 0usize;
    let mut send_latencies = Vec::new();
    let started = Instant::now();
    while Instant::now() + Duration::from_millis(200) < deadline {
        let body = format!("wake-{sent}");
        sent_at.lock().unwrap().insert(body.clone(), Instant::now());
        let url = format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/wake-{sent}",
            args.url,
            enc(&rooms[sent % rooms.len()])
        );
        let send_started = Instant::now();
        call(
            client,
            Method::PUT,
            &url,
            &sender,
            Some(&json!({"msgtype": "m.text", "body": body})),
        )
        .await?;
        send_latencies.push(send_started.elapsed());
        sent += 1;
        tokio::time::sleep(gap).await;
    }
    let elapsed = started.elapsed();
    let mut first_error = None;
    while let Some(ended) = tasks.join_next().await {
        if let Ok(Some(error)) = ended {
            first_error.get_or_insert(error);
        }
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    let expected = match wake {
        Wake::FanOut => sent * args.listeners,
        Wake::One => sent,
    };
    let report = Report {
        requests: latencies.len(),
        errors: expected.saturating_sub(latencies.len()),
        first_error,
        elapsed,
        latencies,
        unit: "wake",
        server_cpu: None,
        own_cpu: None,
        machine_cpu: None,
    };
    println!(
        "{phase}: {} listeners in {} rooms, {sent} messages; latency from the send's start to each woken listener's response",
        args.listeners,
        rooms.len()
    );
    print_report(phase, &report);
    send_latencies.sort();
    println!(
        "    send: p50 {}; wake spread: {}",
        millis(percentile(&send_latencies, 0.5)),
        [0, 10, 25, 50, 75, 90, 99, 100]
            .map(|p| format!(
                "p{p} {}",
                millis(percentile(&report.latencies, f64::from(p) / 100.0))
            ))
            .join(", ")
    );
    Ok(())
}

impl Listener {
    /// Uploads the listener's filter (clients sync with a filter ID, as
    /// Element and matrix-sdk do) and runs its initial sync.
    async fn new(
        client: &reqwest::Client,
        args: &Args,
        token: String,
        user_id: &str,
        room: &str,
    ) -> anyhow::Result<Self> {
        let filter = call(
            client,
            Method::POST,
            &format!("{}/_matrix/client/v3/user/{}/filter", args.url, enc(user_id)),
            &token,
            Some(&json!({"room": {"rooms": [room], "timeline": {"limit": 1}}, "presence": {"not_types": ["*"]}})),
        )
        .await?["filter_id"]
            .as_str()
            .context("no filter_id")?
            .to_owned();
        let filter = enc(&filter);
        let url = format!("{}/_matrix/client/v3/sync?filter={filter}", args.url);
        let since = initial_since(client, &url, &token).await?;
        Ok(Self {
            token,
            filter,
            since,
        })
    }
}

/// The `next_batch` of an initial sync at `url`.
async fn initial_since(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<String> {
    call(client, Method::GET, url, token, None).await?["next_batch"]
        .as_str()
        .map(str::to_owned)
        .context("no next_batch")
}

async fn whoami(client: &reqwest::Client, args: &Args, token: &str) -> anyhow::Result<String> {
    let url = format!("{}/_matrix/client/v3/account/whoami", args.url);
    call(client, Method::GET, &url, token, None).await?["user_id"]
        .as_str()
        .map(str::to_owned)
        .context("no user_id")
}

/// A private room of the sender's, with `invite` invited.
async fn create_room(
    client: &reqwest::Client,
    args: &Args,
    token: &str,
    invite: &[&str],
) -> anyhow::Result<String> {
    let url = format!("{}/_matrix/client/v3/createRoom", args.url);
    let body =
        json!({"preset": "private_chat", "name": "myelin-bench sync-wake", "invite": invite});
    call(client, Method::POST, &url, token, Some(&body)).await?["room_id"]
        .as_str()
        .map(str::to_owned)
        .context("no room_id")
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// One listener's own HTTP/1.1 connection. The listeners share the machine
/// with the server, so each does as little as a client can: no pool, no
/// URL parsing, the token's header built once. The arrival time is taken
/// when the body is read, before it is parsed.
struct LongPoll {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    authority: String,
    authorization: String,
}

impl LongPoll {
    async fn connect(url: &str, token: &str) -> anyhow::Result<Self> {
        let authority = url
            .strip_prefix("http://")
            .context("sync-wake listeners speak plain HTTP: give an http:// --url")?
            .trim_end_matches('/')
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            authority,
            authorization: format!("Bearer {token}"),
        })
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<(bytes::Bytes, Instant)> {
        use http_body_util::BodyExt;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .body(http_body_util::Empty::new())?;
        // The previous response's body is read, but the connection may not
        // have taken note yet.
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.status());
        let body = response.into_body().collect().await?.to_bytes();
        Ok((body, Instant::now()))
    }
}

/// The parts of a sync response the listeners read.
#[derive(serde::Deserialize)]
struct WakeResponse {
    next_batch: String,
    #[serde(default)]
    rooms: WakeRooms,
}

#[derive(serde::Deserialize, Default)]
struct WakeRooms {
    #[serde(default)]
    join: HashMap<String, WakeRoom>,
}

/// A joined room's entry may carry only receipts, typing or counts.
#[derive(serde::Deserialize)]
struct WakeRoom {
    #[serde(default)]
    timeline: WakeTimeline,
}

#[derive(serde::Deserialize, Default)]
struct WakeTimeline {
    #[serde(default)]
    events: Vec<WakeEvent>,
}

#[derive(serde::Deserialize)]
struct WakeEvent {
    content: Value,
}

impl WakeResponse {
    fn timeline_bodies(&self) -> impl Iterator<Item = &str> {
        self.rooms
            .join
            .values()
            .flat_map(|room| &room.timeline.events)
            .filter_map(|event| event.content["body"].as_str())
    }
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
    let since = initial_since(
        client,
        &format!("{}/_matrix/client/v3/sync", args.url),
        &token,
    )
    .await?;
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
