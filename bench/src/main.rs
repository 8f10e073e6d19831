//! `myelin-bench`: a load generator for any Matrix homeserver URL, so that
//! Myelin and Synapse are measured by the same tool in one run.
//!
//! Phases: `login` (password logins) and `whoami` (authenticated reads).
//! Each phase runs `--concurrency` workers for `--seconds` and reports
//! requests per second and latency percentiles.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

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
    /// Create the user first through the shared-secret admin API.
    #[arg(long)]
    shared_secret: Option<String>,
    /// Phases to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "login,whoami")]
    phases: Vec<String>,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    if let Some(secret) = &args.shared_secret {
        register(&client, &args, secret).await?;
    }
    println!(
        "target: {}  concurrency: {}  seconds per phase: {}",
        args.url, args.concurrency, args.seconds
    );
    for phase in &args.phases {
        let report = match phase.as_str() {
            "login" => {
                run_phase(&args, |client, args| async move {
                    login(&client, &args).await.map(drop)
                })
                .await?
            }
            "whoami" => {
                let token = login(&client, &ArgsRef::from(&args)).await?;
                let url = format!("{}/_matrix/client/v3/account/whoami", args.url);
                run_phase(&args, move |client, _| {
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
                .await?
            }
            other => bail!("unknown phase {other}: use login or whoami"),
        };
        println!("{phase:>8}: {report}");
    }
    Ok(())
}

struct Report {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 * p) as usize)
                .min(self.latencies.len().saturating_sub(1));
            self.latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        write!(
            f,
            "{:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} requests, {} errors)",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            self.requests,
            self.errors
        )
    }
}

async fn run_phase<F, Fut>(args: &Args, request: F) -> anyhow::Result<Report>
where
    F: Fn(reqwest::Client, ArgsRef) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, request, shared) = (client.clone(), request.clone(), ArgsRef::from(args));
        workers.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let sent = Instant::now();
                match request(client.clone(), shared.clone()).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut report = Report {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    while let Some(result) = workers.join_next().await {
        let (latencies, errors) = result?;
        report.requests += latencies.len();
        report.errors += errors;
        report.latencies.extend(latencies);
    }
    report.elapsed = started.elapsed();
    report.latencies.sort();
    Ok(report)
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

/// Creates the bench user with Synapse's shared-secret registration (ignores "in use").
async fn register(client: &reqwest::Client, args: &Args, secret: &str) -> anyhow::Result<()> {
    let url = format!("{}/_synapse/admin/v1/register", args.url);
    let nonce: Value = client.get(&url).send().await?.json().await?;
    let nonce = nonce["nonce"].as_str().context("no nonce")?;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())?;
    mac.update(format!("{nonce}\0{}\0{}\0notadmin", args.user, args.password).as_bytes());
    let body = json!({"nonce": nonce, "username": args.user, "password": args.password, "admin": false,
        "mac": hex::encode(mac.finalize().into_bytes())});
    let response: Value = client.post(&url).json(&body).send().await?.json().await?;
    if response.get("user_id").is_none() && response["errcode"] != "M_USER_IN_USE" {
        bail!("registration failed: {response}");
    }
    Ok(())
}
