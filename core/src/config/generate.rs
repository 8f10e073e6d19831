//! `myelin generate-config`: a commented `homeserver.yaml` to start from.

use std::path::Path;

/// A complete, commented configuration for `server_name` keeping its files in `data_dir`.
pub fn sample_config(server_name: &str, data_dir: &Path) -> String {
    let data = data_dir.display();
    format!(
        r#"# Myelin homeserver configuration. Key names follow Synapse's where the
# feature is the same; docs/configuration.md describes every key.

# The domain in your users' IDs (@alice:{server_name}). Cannot change later.
server_name: "{server_name}"

# Where clients reach this server, if it differs from https://server_name/.
# Enables /.well-known/matrix/client.
#public_baseurl: "https://matrix.{server_name}/"

# Default home of the database, signing key, media and generated secrets.
data_directory: "{data}"

listeners:
  - port: 8008
    bind_addresses: ["127.0.0.1"]
    type: http
    x_forwarded: true
    resources:
      - names: [client, federation]

# Embedded SQLite (default). For PostgreSQL:
#   database:
#     name: psycopg2
#     args: {{user: myelin, password: secret, database: myelin, host: localhost, port: 5432}}
database:
  name: sqlite3
  args:
    database: "{data}/homeserver.db"

signing_key_path: "{data}/{server_name}.signing.key"
media_store_path: "{data}/media_store"
# The largest upload (also raise your reverse proxy's limit).
max_upload_size: 50M
# URL previews make the server fetch any URL a user names: off by default.
# To enable them, list the ranges it must never reach (docs/configuration.md):
#url_preview_enabled: true
#url_preview_ip_range_blacklist: ['127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16', '::1/128', 'fe80::/10', 'fc00::/7']

# Shared secret for the admin registration API and `myelin register-user`.
# The file is created with a random secret if it does not exist.
registration_shared_secret_path: "{data}/registration_shared_secret"

# Open registration is off by default. To let anyone register without
# e-mail or captcha checks, set both of these to true.
enable_registration: false
#enable_registration_without_verification: true
allow_guest_access: false

password_config:
  enabled: true
  localdb_enabled: true
  policy:
    enabled: false
    minimum_length: 12

# Access tokens issued to clients that ask for a refresh token expire after:
refreshable_access_token_lifetime: 5m
#refresh_token_lifetime: 24h
#session_lifetime: 90d

rc_login:
  address: {{per_second: 0.003, burst_count: 5}}
  account: {{per_second: 0.03, burst_count: 5}}
  failed_attempts: {{per_second: 0.17, burst_count: 3}}
rc_registration: {{per_second: 0.17, burst_count: 3}}

# Logging levels per target, in the shape of Synapse's log config:
#log_config: "{data}/log.yaml"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_loads_without_unknown_keys() {
        let text = sample_config("example.org", Path::new("/tmp/x"));
        let serde_yaml::Value::Mapping(map) = serde_yaml::from_str(&text).unwrap() else {
            panic!()
        };
        let loaded = super::super::Config::from_mapping(map).unwrap();
        assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
        assert_eq!(loaded.config.server_name, "example.org");
    }
}
