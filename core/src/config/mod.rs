//! `homeserver.yaml`: Synapse's key names wherever the feature is the same.
//!
//! Several files may be given; they merge per top-level key and the later file
//! wins, as Synapse does. Unknown keys produce one warning naming them all;
//! invalid values refuse start-up with a message naming the key and the fix.

mod duration;
mod generate;
pub mod jwt;
pub mod oidc;
mod size;
pub mod templates;

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use self::duration::ConfigDuration;
pub use self::generate::sample_config;
pub use self::size::ConfigSize;

/// Where the defaults live when nothing else is configured.
pub const DEFAULT_DATA_DIRECTORY: &str = "./myelin-data";

/// The whole configuration, after merging and validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server_name: String,
    pub public_baseurl: Option<String>,
    /// Myelin's own key: the directory that holds the default database,
    /// signing key, media store and generated registration secret.
    pub data_directory: PathBuf,
    pub listeners: Vec<ListenerConfig>,
    pub database: Option<DatabaseConfig>,
    pub registration_shared_secret: Option<String>,
    pub registration_shared_secret_path: Option<PathBuf>,
    pub enable_registration: bool,
    pub enable_registration_without_verification: bool,
    pub allow_guest_access: bool,
    pub password_config: PasswordConfig,
    pub jwt_config: jwt::JwtConfig,
    /// OpenID Connect identity providers for single sign-on.
    pub oidc_providers: Vec<oidc::OidcProviderConfig>,
    /// The operator's own page templates.
    pub templates: templates::TemplatesConfig,
    pub refresh_token_lifetime: Option<ConfigDuration>,
    pub refreshable_access_token_lifetime: ConfigDuration,
    pub nonrefreshable_access_token_lifetime: Option<ConfigDuration>,
    pub session_lifetime: Option<ConfigDuration>,
    pub rc_login: LoginRateLimits,
    pub rc_registration: RateLimit,
    pub log_config: Option<PathBuf>,
    pub signing_key_path: Option<PathBuf>,
    pub media_store_path: Option<PathBuf>,
    pub max_upload_size: ConfigSize,
    /// Media uploaded while this is on is served only by the authenticated
    /// `/_matrix/client/v1/media/*` endpoints (Synapse's semantics).
    pub enable_authenticated_media: bool,
    pub max_pending_media_uploads: usize,
    /// How long a media ID from `/create` waits for its upload.
    pub unused_expiration_time: ConfigDuration,
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// Images with more pixels are not thumbnailed.
    pub max_image_pixels: ConfigSize,
    pub url_preview_enabled: bool,
    #[serde(deserialize_with = "ip_ranges_opt")]
    pub url_preview_ip_range_blacklist: Option<Vec<ipnet::IpNet>>,
    #[serde(deserialize_with = "ip_ranges")]
    pub url_preview_ip_range_whitelist: Vec<ipnet::IpNet>,
    pub max_spider_size: ConfigSize,
    /// The room version `createRoom` uses when the client names none.
    pub default_room_version: String,
    /// Plugins, in the order their callbacks are asked.
    pub modules: Vec<myelin_plugin_api::ModuleConfig>,
    /// Serve Prometheus metrics on listeners with the `metrics` resource.
    pub enable_metrics: bool,
    /// Private address ranges outbound requests (push gateways) may reach
    /// anyway; everything non-public is refused otherwise.
    pub ip_range_whitelist: Vec<ipnet::IpNet>,
    /// Identity servers (`host:port`) spoken to over plain HTTP rather
    /// than HTTPS: an operator's own on a private network, or a test's.
    pub identity_servers_over_http: Vec<String>,
    pub push: PushConfig,
    pub presence: PresenceConfig,
    /// Synapse's server notices: a system user that sends notices to users
    /// in a room of its own with each (plugins send them through the
    /// `actions` grant).
    pub server_notices: Option<ServerNoticesConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerNoticesConfig {
    pub system_mxid_localpart: String,
    pub system_mxid_display_name: Option<String>,
    pub system_mxid_avatar_url: Option<String>,
    #[serde(default = "default_server_notices_room_name")]
    pub room_name: String,
}

fn default_server_notices_room_name() -> String {
    "Server Notices".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PushConfig {
    /// Whether notifications sent to push gateways carry the event's content.
    pub include_content: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            include_content: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PresenceConfig {
    pub enabled: bool,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            public_baseurl: None,
            data_directory: PathBuf::from(DEFAULT_DATA_DIRECTORY),
            listeners: vec![ListenerConfig::default()],
            database: None,
            registration_shared_secret: None,
            registration_shared_secret_path: None,
            enable_registration: false,
            enable_registration_without_verification: false,
            allow_guest_access: false,
            password_config: PasswordConfig::default(),
            jwt_config: jwt::JwtConfig::default(),
            oidc_providers: Vec::new(),
            templates: templates::TemplatesConfig::default(),
            refresh_token_lifetime: None,
            refreshable_access_token_lifetime: ConfigDuration(Duration::from_secs(5 * 60)),
            nonrefreshable_access_token_lifetime: None,
            session_lifetime: None,
            rc_login: LoginRateLimits::default(),
            rc_registration: RateLimit {
                per_second: 0.17,
                burst_count: 3.0,
            },
            log_config: None,
            signing_key_path: None,
            media_store_path: None,
            max_upload_size: ConfigSize(50 << 20),
            enable_authenticated_media: true,
            max_pending_media_uploads: 5,
            unused_expiration_time: ConfigDuration(Duration::from_secs(24 * 3600)),
            thumbnail_sizes: ThumbnailSize::synapse_defaults(),
            max_image_pixels: ConfigSize(32 << 20),
            url_preview_enabled: false,
            url_preview_ip_range_blacklist: None,
            url_preview_ip_range_whitelist: Vec::new(),
            max_spider_size: ConfigSize(10 << 20),
            default_room_version: "10".to_owned(),
            modules: Vec::new(),
            enable_metrics: false,
            ip_range_whitelist: Vec::new(),
            identity_servers_over_http: Vec::new(),
            push: PushConfig::default(),
            server_notices: None,
            presence: PresenceConfig::default(),
        }
    }
}

/// One entry of `thumbnail_sizes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

impl ThumbnailSize {
    fn synapse_defaults() -> Vec<Self> {
        use ThumbnailMethod::{Crop, Scale};
        [
            (32, 32, Crop),
            (96, 96, Crop),
            (320, 240, Scale),
            (640, 480, Scale),
            (800, 600, Scale),
        ]
        .into_iter()
        .map(|(width, height, method)| Self {
            width,
            height,
            method,
        })
        .collect()
    }
}

/// IP ranges as Synapse lists them: CIDR ranges or single addresses.
fn ip_ranges<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    entries
        .iter()
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("`{entry}` is not an IP address or range"))
                })
        })
        .collect()
}

fn ip_ranges_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<ipnet::IpNet>>, D::Error> {
    ip_ranges(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ListenerConfig {
    pub port: u16,
    pub bind_addresses: Vec<IpAddr>,
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    pub tls: bool,
    pub x_forwarded: bool,
    pub resources: Vec<ListenerResources>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            port: 8008,
            bind_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            kind: ListenerKind::Http,
            tls: false,
            x_forwarded: false,
            resources: vec![ListenerResources {
                names: vec![Resource::Client, Resource::Federation],
                compress: false,
            }],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    Http,
    Metrics,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListenerResources {
    pub names: Vec<Resource>,
    #[serde(default)]
    pub compress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Client,
    Federation,
    Keys,
    Media,
    Metrics,
    Health,
    Openid,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    pub name: String,
    #[serde(default)]
    pub args: DatabaseArgs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DatabaseArgs {
    /// SQLite: the database file. PostgreSQL: the database name.
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// PostgreSQL only: a full `postgres://` URL instead of the fields above.
    pub url: Option<String>,
    pub cp_min: Option<u32>,
    pub cp_max: Option<u32>,
}

/// The database the server will open, resolved from [`DatabaseConfig`].
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Sqlite(PathBuf),
    Postgres { url: String, max_connections: u32 },
}

impl fmt::Debug for DatabaseTarget {
    // The URL may hold a password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "SQLite at {}", path.display()),
            Self::Postgres { .. } => write!(f, "PostgreSQL"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PasswordConfig {
    pub enabled: PasswordEnabled,
    pub localdb_enabled: bool,
    pub pepper: String,
    pub policy: PasswordPolicy,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            enabled: PasswordEnabled::Bool(true),
            localdb_enabled: true,
            pepper: String::new(),
            policy: PasswordPolicy::default(),
        }
    }
}

/// `password_config.enabled`: `true`, `false` or `"only_for_reauth"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PasswordEnabled {
    Bool(bool),
    Mode(PasswordMode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordMode {
    OnlyForReauth,
}

impl PasswordConfig {
    /// Whether `m.login.password` is offered for login.
    pub fn login_enabled(&self) -> bool {
        self.enabled == PasswordEnabled::Bool(true)
    }

    /// Whether passwords may be used at all (login or re-authentication).
    pub fn reauth_enabled(&self) -> bool {
        self.enabled != PasswordEnabled::Bool(false)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PasswordPolicy {
    pub enabled: bool,
    pub minimum_length: usize,
    pub require_digit: bool,
    pub require_symbol: bool,
    pub require_lowercase: bool,
    pub require_uppercase: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst_count: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LoginRateLimits {
    pub address: RateLimit,
    pub account: RateLimit,
    pub failed_attempts: RateLimit,
}

impl Default for LoginRateLimits {
    fn default() -> Self {
        Self {
            address: RateLimit {
                per_second: 0.003,
                burst_count: 5.0,
            },
            account: RateLimit {
                per_second: 0.03,
                burst_count: 5.0,
            },
            failed_attempts: RateLimit {
                per_second: 0.17,
                burst_count: 3.0,
            },
        }
    }
}

/// A configuration that cannot be used, with the key at fault and the fix.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: `{key}`: {problem}. {fix}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    pub(crate) fn new(
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// The result of loading: the configuration and the keys nobody understood.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// The configuration used when no file is given: everything in
    /// `./myelin-data`, including a generated registration secret so that
    /// `myelin register-user` works at once.
    pub fn without_files() -> Self {
        let mut config = Self::default();
        config.registration_shared_secret_path =
            Some(config.data_directory.join("registration_shared_secret"));
        config
    }

    /// Reads and merges the given files (later wins per top-level key).
    pub fn load(files: &[PathBuf]) -> Result<Loaded, ConfigError> {
        let mut merged = serde_yaml::Mapping::new();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ConfigError::new(
                    "-c",
                    format!("cannot read {}: {e}", file.display()),
                    "Give the path of a readable YAML file, or run `myelin generate-config`.",
                )
            })?;
            let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
                ConfigError::new(
                    file.display().to_string(),
                    format!("not valid YAML: {e}"),
                    "Fix the YAML syntax at the position shown.",
                )
            })?;
            match value {
                serde_yaml::Value::Mapping(map) => merged.extend(map),
                serde_yaml::Value::Null => {}
                _ => {
                    return Err(ConfigError::new(
                        file.display().to_string(),
                        "the file is not a mapping of keys to values",
                        "Write `key: value` lines at the top level, e.g. `server_name: example.org`.",
                    ));
                }
            }
        }
        Self::from_mapping(merged)
    }

    fn from_mapping(map: serde_yaml::Mapping) -> Result<Loaded, ConfigError> {
        let mut unknown_keys = Vec::new();
        let value = serde_yaml::Value::Mapping(map);
        let mut note_unknown = |path: serde_ignored::Path<'_>| unknown_keys.push(path.to_string());
        let ignoring = serde_ignored::Deserializer::new(value, &mut note_unknown);
        let config: Config = serde_path_to_error::deserialize(ignoring).map_err(|e| {
            let key = e.path().to_string();
            let fix = fix_for(&key);
            ConfigError::new(key, e.into_inner().to_string(), fix)
        })?;
        config.validate()?;
        Ok(Loaded {
            config,
            unknown_keys,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.jwt_config.validate()?;
        oidc::validate(&self.oidc_providers)?;
        self.templates.validate()?;
        if !self.oidc_providers.is_empty() && self.public_baseurl.is_none() {
            return Err(ConfigError::new(
                "public_baseurl",
                "single sign-on (`oidc_providers`) needs the server's public URL",
                "Set `public_baseurl` to the URL browsers reach the server at, e.g. `public_baseurl: https://matrix.example.org/`; the provider sends users back to `<public_baseurl>/_synapse/client/oidc/callback`.",
            ));
        }
        if ruma::ServerName::parse(&self.server_name).is_err() {
            return Err(ConfigError::new(
                "server_name",
                format!("`{}` is not a valid server name", self.server_name),
                "Write a DNS name or IP address with an optional port, e.g. `server_name: example.org`.",
            ));
        }
        if crate::rooms::versions::supported(&self.default_room_version).is_none() {
            return Err(ConfigError::new(
                "default_room_version",
                format!(
                    "room version `{}` is not supported",
                    self.default_room_version
                ),
                format!(
                    "Write one of {}, e.g. `default_room_version: \"10\"`.",
                    crate::rooms::versions::SUPPORTED.join(", ")
                ),
            ));
        }
        if let Some(url) = &self.public_baseurl
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::new(
                "public_baseurl",
                format!("`{url}` is not an http(s) URL"),
                "Write the URL clients use, e.g. `public_baseurl: https://matrix.example.org/`.",
            ));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.tls {
                return Err(ConfigError::new(
                    format!("listeners[{i}].tls"),
                    "TLS termination is not built into Myelin",
                    "Set `tls: false` and put a reverse proxy (nginx, Caddy) in front for TLS.",
                ));
            }
        }
        self.database_target()?;
        if self.enable_registration && !self.enable_registration_without_verification {
            return Err(ConfigError::new(
                "enable_registration",
                "open registration needs a verification step, and Myelin offers none yet",
                "Also set `enable_registration_without_verification: true` if you really want anyone to register, or set `enable_registration: false`.",
            ));
        }
        for (key, limit) in [
            ("rc_login.address", self.rc_login.address),
            ("rc_login.account", self.rc_login.account),
            ("rc_login.failed_attempts", self.rc_login.failed_attempts),
            ("rc_registration", self.rc_registration),
        ] {
            if !(limit.per_second >= 0.0 && limit.burst_count >= 1.0) {
                return Err(ConfigError::new(
                    key,
                    "per_second must be zero or more and burst_count at least 1",
                    format!("Write e.g. `{key}: {{per_second: 0.17, burst_count: 3}}`."),
                ));
            }
        }
        if self.url_preview_enabled && self.url_preview_ip_range_blacklist.is_none() {
            return Err(ConfigError::new(
                "url_preview_ip_range_blacklist",
                "URL previews are enabled but no IP ranges are denied to the spider",
                "List the ranges it must not reach (at least your private networks), e.g. `url_preview_ip_range_blacklist: ['127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '::1/128', 'fc00::/7', 'fe80::/10']`; see docs/configuration.md.",
            ));
        }
        if let Some(size) = self
            .thumbnail_sizes
            .iter()
            .find(|s| s.width == 0 || s.height == 0)
        {
            return Err(ConfigError::new(
                "thumbnail_sizes",
                format!("{}x{} has a zero side", size.width, size.height),
                "Give every size a width and height of at least 1, e.g. `{width: 32, height: 32, method: crop}`.",
            ));
        }
        if let Some(path) = &self.log_config {
            readable_file("log_config", path)?;
        }
        if let Some(path) = &self.registration_shared_secret_path
            && path.exists()
        {
            readable_file("registration_shared_secret_path", path)?;
        }
        if let Some(path) = &self.signing_key_path
            && path.exists()
        {
            readable_file("signing_key_path", path)?;
        }
        Ok(())
    }

    /// The database to open: the configured one, or SQLite in the data directory.
    pub fn database_target(&self) -> Result<DatabaseTarget, ConfigError> {
        let Some(db) = &self.database else {
            return Ok(DatabaseTarget::Sqlite(
                self.data_directory.join("homeserver.db"),
            ));
        };
        match db.name.as_str() {
            "sqlite3" => {
                let file = db.args.database.clone().ok_or_else(|| {
                    ConfigError::new(
                        "database.args.database",
                        "SQLite needs a database file",
                        "Write e.g. `args: {database: /var/lib/myelin/homeserver.db}`.",
                    )
                })?;
                Ok(DatabaseTarget::Sqlite(PathBuf::from(file)))
            }
            "psycopg2" | "postgres" | "postgresql" => {
                let max_connections = db.args.cp_max.unwrap_or(10).max(1);
                if let Some(url) = &db.args.url {
                    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                        return Err(ConfigError::new(
                            "database.args.url",
                            "not a PostgreSQL URL",
                            "Write e.g. `url: postgres://myelin:secret@localhost/myelin`.",
                        ));
                    }
                    return Ok(DatabaseTarget::Postgres {
                        url: url.clone(),
                        max_connections,
                    });
                }
                let args = &db.args;
                let mut url = String::from("postgres://");
                if let Some(user) = &args.user {
                    url.push_str(&percent_encode(user));
                    if let Some(password) = &args.password {
                        url.push(':');
                        url.push_str(&percent_encode(password));
                    }
                    url.push('@');
                }
                let host = args.host.as_deref().unwrap_or("localhost");
                if host.starts_with('/') {
                    // A Unix socket directory goes in the query, not the authority.
                    url.push_str("localhost");
                } else {
                    url.push_str(host);
                }
                if let Some(port) = args.port {
                    url.push_str(&format!(":{port}"));
                }
                url.push('/');
                url.push_str(&percent_encode(
                    args.database.as_deref().unwrap_or("myelin"),
                ));
                if host.starts_with('/') {
                    url.push_str(&format!("?host={}", percent_encode(host)));
                }
                Ok(DatabaseTarget::Postgres {
                    url,
                    max_connections,
                })
            }
            other => Err(ConfigError::new(
                "database.name",
                format!("unknown database `{other}`"),
                "Write `name: sqlite3` (embedded, the default) or `name: psycopg2` (PostgreSQL).",
            )),
        }
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_path.clone().unwrap_or_else(|| {
            self.data_directory
                .join(format!("{}.signing.key", self.server_name))
        })
    }

    pub fn media_store_path(&self) -> PathBuf {
        self.media_store_path
            .clone()
            .unwrap_or_else(|| self.data_directory.join("media_store"))
    }

    /// The address of the first client listener, for tools that talk to it.
    pub fn client_url(&self) -> String {
        let listener = self
            .listeners
            .iter()
            .find(|l| l.kind == ListenerKind::Http && l.serves(Resource::Client))
            .unwrap_or(&self.listeners[0]);
        let host = match listener.bind_addresses.first() {
            None => "127.0.0.1".to_owned(),
            Some(ip) if ip.is_unspecified() => {
                if ip.is_ipv4() {
                    "127.0.0.1".to_owned()
                } else {
                    "[::1]".to_owned()
                }
            }
            Some(IpAddr::V6(ip)) => format!("[{ip}]"),
            Some(ip) => ip.to_string(),
        };
        format!("http://{host}:{}", listener.port)
    }
}

impl ListenerConfig {
    pub fn serves(&self, resource: Resource) -> bool {
        self.resources.iter().any(|r| r.names.contains(&resource))
    }
}

fn readable_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::new(
            key,
            format!("{} is not a regular file", path.display()),
            "Point it at a file, not a directory.",
        )),
        Err(e) => Err(ConfigError::new(
            key,
            format!("cannot read {}: {e}", path.display()),
            "Give a path the server's user can read, or remove the key.",
        )),
    }
}

/// What to write instead, for the keys operators most often get wrong.
fn fix_for(key: &str) -> String {
    let normalised: String = {
        // `listeners[0].port` → `listeners.port`
        let mut out = String::new();
        let mut in_index = false;
        for c in key.chars() {
            match c {
                '[' => in_index = true,
                ']' => in_index = false,
                _ if !in_index => out.push(c),
                _ => {}
            }
        }
        out
    };
    let hints: BTreeMap<&str, &str> = BTreeMap::from([
        (
            "server_name",
            "Write a DNS name, e.g. `server_name: example.org`.",
        ),
        (
            "listeners.port",
            "Write a TCP port number between 1 and 65535, e.g. `port: 8008`.",
        ),
        (
            "listeners.bind_addresses",
            "Write a list of IP addresses, e.g. `bind_addresses: ['127.0.0.1']`.",
        ),
        ("listeners.type", "Write `type: http` (or `metrics`)."),
        (
            "listeners.resources.names",
            "Write a list from client, federation, keys, media, metrics, health, openid.",
        ),
        ("enable_registration", "Write `true` or `false`."),
        (
            "enable_registration_without_verification",
            "Write `true` or `false`.",
        ),
        ("allow_guest_access", "Write `true` or `false`."),
        (
            "database",
            "Write `database: {name: sqlite3, args: {database: homeserver.db}}`.",
        ),
        (
            "database.args.port",
            "Write a TCP port number, e.g. `port: 5432`.",
        ),
        (
            "password_config.enabled",
            "Write `true`, `false` or `only_for_reauth`.",
        ),
        (
            "password_config.policy.minimum_length",
            "Write a whole number, e.g. `minimum_length: 12`.",
        ),
        (
            "refresh_token_lifetime",
            "Write a duration such as `24h`, `30m` or a number of milliseconds.",
        ),
        (
            "refreshable_access_token_lifetime",
            "Write a duration such as `5m` or a number of milliseconds.",
        ),
        (
            "session_lifetime",
            "Write a duration such as `90d` or a number of milliseconds.",
        ),
        (
            "max_upload_size",
            "Write a size such as `50M`, `512K` or a number of bytes.",
        ),
        (
            "max_spider_size",
            "Write a size such as `10M`, `512K` or a number of bytes.",
        ),
        (
            "unused_expiration_time",
            "Write a duration such as `24h` or a number of milliseconds.",
        ),
        ("thumbnail_sizes.method", "Write `crop` or `scale`."),
    ]);
    if let Some(hint) = hints.get(normalised.as_str()) {
        return (*hint).to_owned();
    }
    let top = normalised.split('.').next().unwrap_or_default();
    format!("See `{top}` in docs/configuration.md for the expected form.")
}

/// Percent-encodes a URL component (userinfo, path segment, query value).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Loaded, ConfigError> {
        let serde_yaml::Value::Mapping(map) = serde_yaml::from_str(yaml).unwrap() else {
            panic!("not a mapping")
        };
        Config::from_mapping(map)
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let loaded =
            parse("server_name: a.org\nreport_stats: true\npassword_config: {pepperr: x}\n")
                .unwrap();
        assert_eq!(
            loaded.unknown_keys,
            vec!["report_stats", "password_config.pepperr"]
        );
    }

    #[test]
    fn port_out_of_range_names_the_key_and_the_fix() {
        let err = parse("listeners: [{port: 70000}]").unwrap_err();
        assert_eq!(err.key, "listeners[0].port");
        assert!(err.fix.contains("between 1 and 65535"), "{err}");
    }

    #[test]
    fn unknown_database_is_refused() {
        let err = parse("database: {name: mysql}").unwrap_err();
        assert_eq!(err.key, "database.name");
        assert!(err.fix.contains("sqlite3"));
    }

    #[test]
    fn url_previews_need_a_blacklist() {
        let err = parse("url_preview_enabled: true").unwrap_err();
        assert_eq!(err.key, "url_preview_ip_range_blacklist");
        let loaded = parse(
            "url_preview_enabled: true\nurl_preview_ip_range_blacklist: ['10.0.0.0/8']\nurl_preview_ip_range_whitelist: ['10.1.2.3']\nmax_upload_size: 5M",
        )
        .unwrap();
        assert_eq!(
            loaded.config.url_preview_ip_range_whitelist,
            vec!["10.1.2.3/32".parse::<ipnet::IpNet>().unwrap()]
        );
        assert_eq!(loaded.config.max_upload_size, ConfigSize(5 << 20));
    }

    #[test]
    fn postgres_fields_become_a_url() {
        let loaded = parse(
            "database: {name: psycopg2, args: {user: me, password: 'p@ss', database: db, host: h, port: 5433}}",
        )
        .unwrap();
        assert_eq!(
            loaded.config.database_target().unwrap(),
            DatabaseTarget::Postgres {
                url: "postgres://me:p%40ss@h:5433/db".into(),
                max_connections: 10
            }
        );
    }
}
