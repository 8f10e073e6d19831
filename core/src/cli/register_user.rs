//! `myelin register-user`: what Synapse's `register_new_matrix_user` does,
//! through the shared-secret admin API over HTTP.

use std::{io::Write, path::PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::{auth::shared_secret::registration_mac, config::Config};

#[derive(Debug, Args)]
pub struct RegisterUserArgs {
    /// Local part of the new user's ID (prompted for if not given).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// The new user's password (prompted for twice if not given).
    #[arg(short = 'p', long = "password")]
    pub password: Option<String>,
    /// Make the new user a server admin.
    #[arg(short = 'a', long = "admin", conflicts_with = "no_admin")]
    pub admin: bool,
    /// Make the new user a regular user.
    #[arg(long = "no-admin")]
    pub no_admin: bool,
    /// User type: `bot` or `support`.
    #[arg(short = 't', long = "user-type")]
    pub user_type: Option<String>,
    /// Configuration file(s) to read the shared secret (or its path) and server URL from.
    #[arg(short = 'c', long = "config")]
    pub config: Vec<PathBuf>,
    /// The shared secret, instead of reading it from the configuration.
    #[arg(short = 'k', long = "shared-secret")]
    pub shared_secret: Option<String>,
    /// URL of the homeserver's client API (default: the configured listener).
    pub server_url: Option<String>,
}

pub async fn run(args: RegisterUserArgs) -> anyhow::Result<()> {
    let config = if args.config.is_empty() {
        Config::without_files()
    } else {
        Config::load(&args.config)?.config
    };
    let secret = match (&args.shared_secret, &config.registration_shared_secret) {
        (Some(secret), _) | (None, Some(secret)) => secret.clone(),
        (None, None) => match &config.registration_shared_secret_path {
            Some(path) => crate::server::read_secret_file(path)?,
            None => bail!(
                "no shared secret: pass -k SECRET, or -c a config with registration_shared_secret or registration_shared_secret_path"
            ),
        },
    };
    let server_url = args
        .server_url
        .clone()
        .unwrap_or_else(|| config.client_url());
    let user = match args.user {
        Some(user) => user,
        None => prompt("New user localpart: ")?,
    };
    let password = match args.password {
        Some(password) => password,
        None => {
            let first = rpassword::prompt_password("Password: ")?;
            anyhow::ensure!(!first.is_empty(), "Password cannot be blank.");
            let second = rpassword::prompt_password("Confirm password: ")?;
            anyhow::ensure!(first == second, "Passwords do not match");
            first
        }
    };
    let admin = if args.admin {
        true
    } else if args.no_admin {
        false
    } else {
        let answer = prompt("Make admin [no]: ")?;
        matches!(answer.to_lowercase().as_str(), "y" | "yes" | "true")
    };

    let user_id = register(
        &server_url,
        &secret,
        &user,
        &password,
        admin,
        args.user_type.as_deref(),
    )
    .await?;
    println!("Success! Registered {user_id}");
    Ok(())
}

fn prompt(question: &str) -> anyhow::Result<String> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

async fn register(
    server_url: &str,
    secret: &str,
    user: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> anyhow::Result<String> {
    let url = format!(
        "{}/_synapse/admin/v1/register",
        server_url.trim_end_matches('/')
    );
    let client = reqwest::Client::new();
    let nonce: Value = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?
        .json()
        .await?;
    let nonce = nonce["nonce"]
        .as_str()
        .context("the server sent no nonce")?;
    let mut body = json!({
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": admin,
        "mac": registration_mac(secret, nonce, user, password, admin, user_type),
    });
    if let Some(user_type) = user_type {
        body["user_type"] = json!(user_type);
    }
    let response = client.post(&url).json(&body).send().await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "the server refused: {} {} ({status})",
            answer["errcode"].as_str().unwrap_or("?"),
            answer["error"].as_str().unwrap_or("no message")
        );
    }
    Ok(answer["user_id"].as_str().unwrap_or(user).to_owned())
}
