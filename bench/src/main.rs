//! `myelin-bench`: a load generator for any Matrix homeserver URL, so that
//! Myelin and Synapse are measured by the same tool in one run.
//!
//! Phases (each runs `--concurrency` workers for `--seconds` and reports
//! requests per second and latency percentiles):
//! - `login`: password logins.
//! - `whoami`: authenticated reads.
//! - `send`: one public room with `--members` members (the bench user and
//!   more users made with `--shared-secret`); each worker sends
//!   `m.room.message` events into it as a different member.
//! - `state-at`: one room with `--state-events` state changes over
//!   `--state-keys` keys; workers fetch the first 100 of them again, by
//!   `/context/{id}?limit=0` (the room state at that event) and then by
//!   `/event/{id}` (history visibility, looked up in the state at it).
//!
//! - `sync-wake`: `--listeners` devices long-poll `/sync` in one room while
//!   messages are sent one at a time; reports send-to-response latency.
//! - `initial-sync`: the user in `--rooms` rooms of `--room-events` messages;
//!   workers run initial syncs.
//! - `sync-idle`: incremental syncs (`timeout=0`) with nothing new.
//! - `media`: upload and download throughput of a `--media-mb` file, and
//!   thumbnail generation time for a `--image-size` JPEG.
//!
//! With `--server-pid`, each phase also reports the server's CPU time
//! (utime + stime from `/proc/PID/stat`) per request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::Parser;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha1::Sha1;

mod media;
mod sync;

#[derive(Debug, Parser)]
#[command(about = "Measure a Matrix homeserver over HTTP")]
struct Args {
    /// Base URL of the homeserver's client API.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// Localpart of the user to log in as.
    #[arg(long, default_value = "bench")]
    user: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Create the user (and the `send` phase's members) first through the
    /// shared-secret admin API.
    #[arg(long)]
    shared_secret: Option<String>,
    /// Phases to run, in order: login, whoami, send, state-at, sync-wake,
    /// sync-wake-one, initial-sync, sync-idle, media.
    #[arg(long, value_delimiter = ',', default_value = "login,whoami")]
    phases: Vec<String>,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The server's process id, to report its CPU time per request
    /// (read from /proc, so the server must run on this machine).
    #[arg(long)]
    server_pid: Option<u32>,
    /// `send`: users in the room, the bench user included; raised to
    /// `--concurrency` if lower, so that every worker is a different member.
    /// The others are `<user>-member-<n>` with the same password.
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// `state-at`: state events the setup sends into the room.
    #[arg(long, default_value_t = 10_000)]
    state_events: usize,
    /// `state-at`: distinct state keys they cycle through.
    #[arg(long, default_value_t = 1_000)]
    state_keys: usize,
    /// `sync-wake`, `sync-wake-one`: long-polling clients.
    #[arg(long, default_value_t = 100)]
    listeners: usize,
    /// `initial-sync`: rooms the user is in.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// `initial-sync`: messages per room.
    #[arg(long, default_value_t = 5)]
    room_events: usize,
    /// `media`: size of the uploaded and downloaded file, in MiB.
    #[arg(long, default_value_t = 10)]
    media_mb: usize,
    /// `media`: the photo thumbnailed, `WIDTHxHEIGHT`.
    #[arg(long, default_value = "4000x3000", value_parser = media::parse_size)]
    image_size: (u32, u32),
    /// `media`: photos uploaded to time their first thumbnail request.
    #[arg(long, default_value_t = 5)]
    thumbnail_images: usize,
}

/// `state-at`: how many of the first state events the workers look up.
const OLD_EVENTS: usize = 100;
/// `state-at`: state events in flight at once while filling the room.
const SETUP_CONCURRENCY: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(SETUP_CONCURRENCY))
        .build()?;
    if let Some(secret) = &args.shared_secret {
        register(&client, &ArgsRef::from(&args), secret).await?;
    }
    println!(
        "target: {}  concurrency: {}  seconds per phase: {}",
        args.url, args.concurrency, args.seconds
    );
    for phase in &args.phases {
        match phase.as_str() {
            "login" => {
                let report = run_phase(&args, "request", |client, args, _| async move {
                    login(&client, &args).await.map(drop)
                })
                .await?;
                print_report(phase, &report);
            }
            "whoami" => {
                let token = login(&client, &ArgsRef::from(&args)).await?;
                let url = format!("{}/_matrix/client/v3/account/whoami", args.url);
                let report = run_phase(&args, "request", move |client, _, _| {
                    let (url, token) = (url.clone(), token.clone());
                    async move {
                        let response = client.get(url).bearer_auth(token).send().await?;
                        anyhow::ensure!(
                            response.status().is_success(),
                            "whoami: {}",
                            response.status()
                        );
                        response.bytes().await?;
                        Ok(())
                    }
                })
                .await?;
                print_report(phase, &report);
            }
            "send" => send_phase(&client, &args).await?,
            "state-at" => state_at_phase(&client, &args).await?,
            "sync-wake" => sync::wake_phase(&client, &args, sync::Wake::FanOut).await?,
            "sync-wake-one" => sync::wake_phase(&client, &args, sync::Wake::One).await?,
            "initial-sync" => sync::initial_phase(&client, &args).await?,
            "sync-idle" => sync::idle_phase(&client, &args).await?,
            "media" => media::media_phase(&client, &args).await?,
            other => bail!(
                "unknown phase {other}: use login, whoami, send, state-at, sync-wake, sync-wake-one, initial-sync, sync-idle or media"
            ),
        }
    }
    Ok(())
}

fn print_report(label: &str, report: &Report) {
    println!("{label:>8}: {report}");
}

/// `send`: `--concurrency` members send messages into one room.
async fn send_phase(client: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let members = args.members.max(args.concurrency);
    let shared = ArgsRef::from(args);
    let owner = login(client, &shared).await?;
    let created = call(
        client,
        Method::POST,
        &format!("{}/_matrix/client/v3/createRoom", args.url),
        &owner,
        Some(&json!({"preset": "public_chat", "name": "myelin-bench send"})),
    )
    .await?;
    let room = created["room_id"]
        .as_str()
        .with_context(|| format!("createRoom: no room_id in {created}"))?
        .to_owned();
    let mut tokens = vec![owner];
    for n in 1..members {
        let member = ArgsRef {
            user: format!("{}-member-{n}", args.user),
            ..shared.clone()
        };
        let token = member_token(client, &member, args.shared_secret.as_deref()).await?;
        let join = format!("{}/_matrix/client/v3/rooms/{}/join", args.url, enc(&room));
        call(client, Method::POST, &join, &token, Some(&json!({}))).await?;
        tokens.push(token);
    }
    println!("    send: room {room} with {members} members");

    // Transaction ids are unique per run and per request.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let next = Arc::new(AtomicUsize::new(0));
    let base = format!(
        "{}/_matrix/client/v3/rooms/{}/send/m.room.message",
        args.url,
        enc(&room)
    );
    let report = run_phase(args, "event", move |client, _, worker| {
        let token = tokens[worker % tokens.len()].clone();
        let n = next.fetch_add(1, Ordering::Relaxed);
        let url = format!("{base}/bench-{run}-{n}");
        async move {
            let body = json!({"msgtype": "m.text", "body": format!("bench message {n}")});
            let sent = call(&client, Method::PUT, &url, &token, Some(&body)).await?;
            anyhow::ensure!(
                sent["event_id"].is_string(),
                "PUT {url}: no event_id in {sent}"
            );
            Ok(())
        }
    })
    .await?;
    print_report("send", &report);
    Ok(())
}

/// `state-at`: fills a room with state changes, then looks up the state at
/// its oldest ones.
async fn state_at_phase(client: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.state_keys > 0 && args.state_events >= OLD_EVENTS,
        "state-at needs --state-keys > 0 and --state-events >= {OLD_EVENTS}"
    );
    let token = login(client, &ArgsRef::from(args)).await?;
    let created = call(
        client,
        Method::POST,
        &format!("{}/_matrix/client/v3/createRoom", args.url),
        &token,
        Some(&json!({"preset": "private_chat", "name": "myelin-bench state-at"})),
    )
    .await?;
    let room = created["room_id"]
        .as_str()
        .with_context(|| format!("createRoom: no room_id in {created}"))?
        .to_owned();
    let rooms = format!("{}/_matrix/client/v3/rooms/{}", args.url, enc(&room));

    // Event i sets key i % state_keys, so every key changes
    // state_events / state_keys times.
    let put_state = |i: usize| {
        let (client, token) = (client.clone(), token.clone());
        let url = format!("{rooms}/state/m.bench.state/k{:04}", i % args.state_keys);
        async move {
            let body = json!({"change": i});
            let sent = call(&client, Method::PUT, &url, &token, Some(&body)).await?;
            sent["event_id"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("PUT {url}: no event_id in {sent}"))
        }
    };
    let started = Instant::now();
    let progress = |done: usize| {
        if done.is_multiple_of(1_000) || done == args.state_events {
            println!(
                "state-at: setup {done}/{} state events ({:.1} s)",
                args.state_events,
                started.elapsed().as_secs_f64()
            );
        }
    };
    // The old events one at a time, so that they are the room's first.
    let mut old = Vec::with_capacity(OLD_EVENTS);
    for i in 0..OLD_EVENTS {
        old.push(put_state(i).await?);
        progress(i + 1);
    }
    let mut in_flight = tokio::task::JoinSet::new();
    let mut done = OLD_EVENTS;
    for i in OLD_EVENTS..args.state_events {
        if in_flight.len() == SETUP_CONCURRENCY {
            let _event_id = in_flight.join_next().await.context("no task")???;
            done += 1;
            progress(done);
        }
        in_flight.spawn(put_state(i));
    }
    while let Some(result) = in_flight.join_next().await {
        let _event_id = result??;
        done += 1;
        progress(done);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "state-at: room {room}: {} state events over {} keys in {elapsed:.1} s ({:.0}/s, {SETUP_CONCURRENCY} in flight)",
        args.state_events,
        args.state_keys,
        args.state_events as f64 / elapsed
    );

    // What one look-up returns, as a check that it is the state at the event.
    let context = |id: &str| format!("{rooms}/context/{}?limit=0", enc(id));
    let first = call(client, Method::GET, &context(&old[0]), &token, None).await?;
    let last = call(
        client,
        Method::GET,
        &context(&old[OLD_EVENTS - 1]),
        &token,
        None,
    )
    .await?;
    let size = |v: &Value| v["state"].as_array().map_or(0, Vec::len);
    println!(
        "state-at: /context?limit=0 returns {} state events at the first old event, {} at the {OLD_EVENTS}th",
        size(&first),
        size(&last)
    );

    let old = Arc::new(old);
    for (label, prefix, suffix) in [
        ("/context?limit=0", format!("{rooms}/context/"), "?limit=0"),
        ("/event", format!("{rooms}/event/"), ""),
    ] {
        let (old, token, next) = (old.clone(), token.clone(), Arc::new(AtomicUsize::new(0)));
        let report = run_phase(args, "request", move |client, _, _| {
            let id = &old[next.fetch_add(1, Ordering::Relaxed) % old.len()];
            let url = format!("{prefix}{}{suffix}", enc(id));
            let token = token.clone();
            async move {
                call(&client, Method::GET, &url, &token, None).await?;
                Ok(())
            }
        })
        .await?;
        print_report(&format!("state-at {label}"), &report);
    }
    Ok(())
}

struct Report {
    requests: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// What one request is, in the CPU line: "request" or "event".
    unit: &'static str,
    /// Seconds of CPU time over the phase: the server's (if known) and ours.
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
    /// Seconds of CPU time the whole machine spent over the phase, to show
    /// whether other processes competed for the cores.
    machine_cpu: Option<f64>,
}

/// The `p` quantile (0 to 1) of sorted latencies; zero when there are none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or_default()
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |p: f64| percentile(&self.latencies, p).as_secs_f64() * 1e3;
        write!(
            f,
            "{:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} requests, {} errors)",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            self.requests,
            self.errors
        )?;
        if let Some(cpu) = self.server_cpu {
            let core = |s: f64| 100.0 * s / self.elapsed.as_secs_f64();
            write!(
                f,
                "\n          server CPU per {}: {:.3} ms  ({cpu:.2} s, {:.0}% of a core; load generator {:.0}%",
                self.unit,
                cpu * 1e3 / self.requests.max(1) as f64,
                core(cpu),
                core(self.own_cpu.unwrap_or(0.0))
            )?;
            if let Some(machine) = self.machine_cpu {
                let others = machine - cpu - self.own_cpu.unwrap_or(0.0);
                write!(f, "; other processes {:.0}%)", core(others.max(0.0)))?;
            } else {
                write!(f, ")")?;
            }
        }
        if let Some(error) = &self.first_error {
            write!(f, "\n          first error: {error}")?;
        }
        Ok(())
    }
}

async fn run_phase<F, Fut>(args: &Args, unit: &'static str, request: F) -> anyhow::Result<Report>
where
    F: Fn(reqwest::Client, ArgsRef, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let cpu_before = (
        args.server_pid.map(cpu_seconds).transpose()?,
        own_cpu(),
        machine_cpu(),
    );
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let (client, request, shared) = (client.clone(), request.clone(), ArgsRef::from(args));
        workers.spawn(async move {
            let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0usize, None);
            while Instant::now() < deadline {
                let sent = Instant::now();
                match request(client.clone(), shared.clone(), worker).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut report = Report {
        requests: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        unit,
        server_cpu: None,
        own_cpu: None,
        machine_cpu: None,
    };
    while let Some(result) = workers.join_next().await {
        let (latencies, errors, first_error) = result?;
        report.requests += latencies.len();
        report.errors += errors;
        report.latencies.extend(latencies);
        if report.first_error.is_none() {
            report.first_error = first_error;
        }
    }
    report.elapsed = started.elapsed();
    if let (Some(before), Some(pid)) = (cpu_before.0, args.server_pid) {
        report.server_cpu = Some(cpu_seconds(pid)? - before);
    }
    report.machine_cpu = machine_cpu()
        .zip(cpu_before.2)
        .map(|(after, before)| after - before);
    report.own_cpu = own_cpu()
        .zip(cpu_before.1)
        .map(|(after, before)| after - before);
    report.latencies.sort();
    Ok(report)
}

/// User + system CPU seconds of a process, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields 14 and 15 (utime, stime), counted after the parenthesised name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        let field = fields.get(i).with_context(|| format!("short {path}"))?;
        Ok(field.parse()?)
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second())
}

fn own_cpu() -> Option<f64> {
    cpu_seconds(std::process::id()).ok()
}

/// CPU seconds all cores spent busy since boot (`/proc/stat`: every state
/// but idle and iowait).
fn machine_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest is within user).
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy as f64 / clock_ticks_per_second())
}

/// `getconf CLK_TCK`; 100 (Linux's value nearly everywhere) if that fails.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Percent-encodes a path segment (room and event ids hold `!`, `$`, `:`, `/`, `+`).
fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a request with an access token and returns the JSON body; a status
/// other than 2xx is an error that names the request and the response.
async fn call(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let mut request = client.request(method.clone(), url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("{method} {url}"))?;
    if !status.is_success() {
        let sent = body.map(|b| format!(" {b}")).unwrap_or_default();
        bail!("{method} {url}{sent} -> {status} {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{method} {url}: not JSON: {text}"))
}

/// The parts of the arguments a worker needs, cheap to clone.
#[derive(Clone)]
struct ArgsRef {
    url: String,
    user: String,
    password: String,
}

impl From<&Args> for ArgsRef {
    fn from(args: &Args) -> Self {
        Self {
            url: args.url.clone(),
            user: args.user.clone(),
            password: args.password.clone(),
        }
    }
}

async fn login(client: &reqwest::Client, args: &ArgsRef) -> anyhow::Result<String> {
    let response: Value = client
        .post(format!("{}/_matrix/client/v3/login", args.url))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": args.user}, "password": args.password}))
        .send()
        .await?
        .json()
        .await?;
    response["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("login failed: {response}"))
}

/// A token of `args.user`: registered first when a shared secret is given
/// (logged in if it already exists), else logged in.
async fn member_token(
    client: &reqwest::Client,
    args: &ArgsRef,
    shared_secret: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(secret) = shared_secret
        && let Some(token) = register(client, args, secret).await?
    {
        return Ok(token);
    }
    login(client, args).await
}

/// Creates `args.user` with Synapse's shared-secret registration and returns
/// its access token; `None` if the user already exists.
async fn register(
    client: &reqwest::Client,
    args: &ArgsRef,
    secret: &str,
) -> anyhow::Result<Option<String>> {
    let url = format!("{}/_synapse/admin/v1/register", args.url);
    let nonce: Value = client.get(&url).send().await?.json().await?;
    let nonce = nonce["nonce"].as_str().context("no nonce")?;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())?;
    mac.update(format!("{nonce}\0{}\0{}\0notadmin", args.user, args.password).as_bytes());
    let body = json!({"nonce": nonce, "username": args.user, "password": args.password, "admin": false,
        "mac": hex::encode(mac.finalize().into_bytes())});
    let response: Value = client.post(&url).json(&body).send().await?.json().await?;
    if response.get("user_id").is_none() {
        if response["errcode"] == "M_USER_IN_USE" {
            return Ok(None);
        }
        bail!("registration failed: {response}");
    }
    Ok(response["access_token"].as_str().map(str::to_owned))
}
