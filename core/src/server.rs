//! Start-up: prepare the data directory, keys and secrets, open the
//! database, and serve every configured listener until a signal arrives.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use axum::{Extension, serve::ListenerExt};
use myelin_plugin_api::{HostServices, PluginSet, Plugins};
use ruma::OwnedServerName;
use tokio::net::TcpListener;

use crate::{
    api::{self, plugin_actions::PluginActions, ruma::TrustForwardedFor},
    auth::{jwt::JwtLogin, password::PasswordHasher, tokens::TokenCache, uia::UiaSessions},
    config::{Config, ListenerKind, Resource},
    federation::signing_key::{SigningKey, write_private_file},
    media::Media,
    push::{PushRules, gateway::PushGateway},
    rooms::Rooms,
    state::{AppState, RateLimiters, RegistrationSecret, Services},
    storage::Storage,
    streams::{Live, Stream, notifier::WakeKey},
};

/// Builds the server's state from a validated configuration, read from
/// `config_files` (none for the zero-configuration start).
pub async fn prepare(config: Config, config_files: Vec<PathBuf>) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_directory).with_context(|| {
        format!(
            "data_directory: cannot create {}",
            config.data_directory.display()
        )
    })?;
    let media = Media::open(&config).with_context(|| {
        format!(
            "media_store_path: cannot prepare {}",
            config.media_store_path().display()
        )
    })?;
    let signing_key = Arc::new(SigningKey::load_or_generate(&config.signing_key_path())?);
    let registration_secret = load_registration_secret(&config)?;
    let target = config.database_target()?;
    let storage = Storage::open(&target)
        .await
        .with_context(|| format!("database: cannot open {target:?}"))?;
    tracing::info!(database = ?target, "database ready");

    let server_name = OwnedServerName::try_from(config.server_name.as_str())?;
    let live = Arc::new(Live::new(storage.stream_positions().await?));
    let push_rules = Arc::new(PushRules::new(storage.clone()));
    let gateway = PushGateway::spawn(
        storage.clone(),
        config.ip_range_whitelist.clone(),
        config.push.include_content,
    );
    spawn_typing_expiry(live.clone());
    let actions = Arc::new(PluginActions::default());
    let services = HostServices {
        kv: Some(Arc::new(storage.clone())),
        queries: Some(Arc::new(storage.clone())),
        actions: Some(actions.clone()),
    };
    let plugins = PluginSet::load(&plugin_cache(&config), &config.modules, services.clone())
        .await
        .map_err(|err| anyhow::anyhow!("modules: {err}"))?;
    check_mapping_plugins(&config, &plugins)?;
    let plugins = Arc::new(Plugins::new(plugins));
    let rooms = Rooms::new(
        storage.clone(),
        signing_key.clone(),
        server_name.clone(),
        live.clone(),
        push_rules.clone(),
        gateway,
        plugins.clone(),
    )
    .await?;
    let state = AppState(Arc::new(Services {
        server_name,
        storage,
        tokens: TokenCache::default(),
        passwords: PasswordHasher::new(config.password_config.pepper.clone()),
        uia: UiaSessions::default(),
        rate_limits: RateLimiters::from_config(&config),
        registration_secret,
        registration_nonces: Default::default(),
        signing_key,
        rooms,
        plugins,
        config_files,
        plugin_services: services,
        live,
        push_rules,
        sync_caches: Default::default(),
        room_deletions: Default::default(),
        jwt: config
            .jwt_config
            .enabled
            .then(|| JwtLogin::from_config(&config.jwt_config))
            .transpose()
            .map_err(|problem| anyhow::anyhow!("jwt_config: {problem}"))?,
        oidc: match &config.public_baseurl {
            Some(base) if !config.oidc_providers.is_empty() => Some(
                crate::auth::oidc::Oidc::new(
                    &config.oidc_providers,
                    base,
                    config.templates.custom_template_directory.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("oidc_providers: {e}"))?,
            ),
            _ => None,
        },
        media,
        identity: crate::identity::IdentityClient::new(
            config.ip_range_whitelist.clone(),
            config.identity_servers_over_http.clone(),
        ),
        config,
    }));
    actions.attach(&state);
    Ok(state)
}

/// Ends typing notices whose timeout passed, waking the rooms' followers.
fn spawn_typing_expiry(live: Arc<Live>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            let changed = live.typing.expire(|| live.positions.bump(Stream::Typing));
            if !changed.is_empty() {
                let keys: Vec<WakeKey> = changed.into_iter().map(WakeKey::Room).collect();
                live.notifier.wake(&keys);
            }
        }
    });
}

/// The inline secret, or the one in `registration_shared_secret_path`
/// (created with a fresh random secret when the file does not exist).
fn load_registration_secret(config: &Config) -> anyhow::Result<Option<RegistrationSecret>> {
    if let Some(secret) = &config.registration_shared_secret {
        return Ok(Some(RegistrationSecret(secret.clone())));
    }
    let Some(path) = &config.registration_shared_secret_path else {
        return Ok(None);
    };
    if !path.exists() {
        let secret = crate::auth::tokens::new_access_token().split_off(4);
        write_private_file(path, &secret).with_context(|| {
            format!(
                "registration_shared_secret_path: cannot create {}",
                path.display()
            )
        })?;
        tracing::info!(path = %path.display(), "created a new registration shared secret");
        return Ok(Some(RegistrationSecret(secret)));
    }
    read_secret_file(path).map(|s| Some(RegistrationSecret(s)))
}

/// Reads a secret file, ignoring surrounding whitespace.
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let secret = std::fs::read_to_string(path)
        .with_context(|| {
            format!(
                "registration_shared_secret_path: cannot read {}",
                path.display()
            )
        })?
        .trim()
        .to_owned();
    anyhow::ensure!(
        !secret.is_empty(),
        "registration_shared_secret_path: {} is empty",
        path.display()
    );
    Ok(secret)
}

fn plugin_cache(config: &Config) -> PathBuf {
    config.data_directory.join("plugin-cache")
}

/// Re-reads `modules:` from the configuration files and swaps in the new
/// plugin set; on any failure the running set stays. Returns the plugins'
/// names.
pub async fn reload_plugins(state: &AppState) -> anyhow::Result<Vec<String>> {
    let modules = if state.config_files.is_empty() {
        Vec::new()
    } else {
        Config::load(&state.config_files)?.config.modules
    };
    let set = PluginSet::load(
        &plugin_cache(&state.config),
        &modules,
        state.plugin_services.clone(),
    )
    .await
    .map_err(|err| anyhow::anyhow!("modules: {err}"))?;
    let names = set.plugins().iter().map(|p| p.name.to_string()).collect();
    state.plugins.replace(set);
    tracing::info!(plugins = ?names, "plugins reloaded");
    Ok(names)
}

/// Every SSO mapping plugin an OIDC provider names must be loaded and
/// implement `sso-mapping`.
fn check_mapping_plugins(config: &Config, plugins: &PluginSet) -> anyhow::Result<()> {
    for (i, provider) in config.oidc_providers.iter().enumerate() {
        if let Some(name) = provider.user_mapping_provider.plugin()
            && plugins.sso_mapper(name).is_none()
        {
            anyhow::bail!(
                "oidc_providers[{i}].user_mapping_provider.module: no plugin named {name} that \
                 implements sso-mapping is listed under modules: (a plugin is named after its \
                 .wasm file, e.g. {name}.wasm)"
            );
        }
    }
    Ok(())
}

/// SIGHUP reloads the plugins, as it makes Synapse reload its config.
async fn reload_on_sighup(state: AppState) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangups.recv().await.is_some() {
        if let Err(err) = reload_plugins(&state).await {
            tracing::error!(error = %format!("{err:#}"), "plugin reload refused; the running plugins stay");
        }
    }
}

/// Binds every listener, announces them, and serves until SIGINT or SIGTERM.
pub async fn serve(state: AppState, register_hint: &str) -> anyhow::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    tokio::spawn(reload_on_sighup(state.clone()));
    for listener in &state.config.listeners {
        let resources: Vec<_> = match listener.kind {
            ListenerKind::Metrics => vec![Resource::Metrics],
            ListenerKind::Http => listener
                .resources
                .iter()
                .flat_map(|r| r.names.iter().copied())
                .collect(),
        };
        if resources == [Resource::Metrics] && !state.config.enable_metrics {
            tracing::warn!(
                port = listener.port,
                "a metrics listener is configured but enable_metrics is not true; skipping it"
            );
            continue;
        }
        let router = api::router(state.clone(), &resources)
            .layer(Extension(TrustForwardedFor(listener.x_forwarded)));
        for ip in &listener.bind_addresses {
            let socket = TcpListener::bind(SocketAddr::new(*ip, listener.port))
                .await
                .with_context(|| format!("listeners: cannot bind {ip}:{}", listener.port))?;
            let local = socket.local_addr()?;
            println!("Myelin is listening on http://{local} ({resources:?})");
            let service = router
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>();
            // No Nagle: a streamed response (a media file) goes out as its
            // header and body writes, and waiting for the client's delayed
            // ACK between them cost 40 ms per small file.
            let socket = socket.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            servers.spawn(async move {
                axum::serve(socket, service)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            });
        }
    }
    println!("Create the first admin user with:\n  {register_hint}");
    while let Some(result) = servers.join_next().await {
        result??;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
