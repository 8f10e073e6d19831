//! Logging set-up: `log_config` in the shape of Synapse's log configuration,
//! mapped onto `tracing`, and `RUST_LOG` for development.
//!
//! One target is special: [`REGISTRATION_DEBUG_TARGET`] logs the secret
//! material of failed shared-secret registrations. It is enabled only when the
//! operator names it explicitly; it never inherits the root level.

use std::{collections::BTreeMap, fs::OpenOptions, path::Path, sync::Mutex};

use serde::Deserialize;
use tracing_subscriber::{EnvFilter, fmt};

/// Logs mac received, mac expected and the fields of a rejected shared-secret
/// registration. Off unless named in `loggers:` (or in `RUST_LOG`).
pub const REGISTRATION_DEBUG_TARGET: &str = "myelin::admin::registration_debug";

#[derive(Debug, Default, Deserialize)]
struct LogConfig {
    #[serde(default)]
    root: Option<LoggerConfig>,
    #[serde(default)]
    loggers: BTreeMap<String, LoggerConfig>,
    #[serde(default)]
    handlers: BTreeMap<String, HandlerConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct LoggerConfig {
    level: Option<String>,
    #[serde(default)]
    handlers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct HandlerConfig {
    filename: Option<String>,
}

/// Where log lines go and which of them are kept.
#[derive(Debug, PartialEq, Eq)]
pub struct LogPlan {
    pub directives: String,
    pub file: Option<String>,
}

/// Builds the plan from the log config file (if any) and `RUST_LOG` (if set).
pub fn plan(log_config: Option<&Path>, rust_log: Option<&str>) -> anyhow::Result<LogPlan> {
    let config: LogConfig = match log_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("log_config: cannot read {}: {e}", path.display()))?;
            serde_yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("log_config {}: {e}", path.display()))?
        }
        None => LogConfig::default(),
    };

    let mut directives = Vec::new();
    let root_level = config
        .root
        .as_ref()
        .and_then(|r| r.level.as_deref())
        .unwrap_or("INFO");
    directives.push(level_name(root_level)?.to_owned());
    let mut debug_target_named = false;
    for (name, logger) in &config.loggers {
        let target = name.replace('.', "::");
        debug_target_named |= target == REGISTRATION_DEBUG_TARGET;
        if let Some(level) = &logger.level {
            directives.push(format!("{target}={}", level_name(level)?));
        }
    }
    if let Some(rust_log) = rust_log.filter(|s| !s.trim().is_empty()) {
        debug_target_named |= rust_log.contains(REGISTRATION_DEBUG_TARGET);
        directives.push(rust_log.to_owned());
    }
    if !debug_target_named {
        directives.push(format!("{REGISTRATION_DEBUG_TARGET}=off"));
    }

    let file = config
        .root
        .iter()
        .flat_map(|r| r.handlers.iter())
        .filter_map(|h| config.handlers.get(h))
        .find_map(|h| h.filename.clone());
    Ok(LogPlan {
        directives: directives.join(","),
        file,
    })
}

/// Python's level names (and `TRACE`) as `tracing` levels.
fn level_name(level: &str) -> anyhow::Result<&'static str> {
    Ok(match level.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" | "WARNING" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        "OFF" | "NONE" => "off",
        other => anyhow::bail!(
            "log_config: unknown level `{other}`; write one of DEBUG, INFO, WARNING, ERROR"
        ),
    })
}

/// Installs the global subscriber.
pub fn init(plan: &LogPlan) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&plan.directives)
        .map_err(|e| anyhow::anyhow!("log levels `{}`: {e}", plan.directives))?;
    let builder = fmt().with_env_filter(filter).with_target(true);
    match &plan.file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("log file {path}: {e}"))?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_target_is_off_even_when_root_traces() {
        let dir = std::env::temp_dir().join(format!("myelin-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.yaml");
        std::fs::write(&path, "version: 1\nroot: {level: DEBUG}\n").unwrap();
        let got = plan(Some(&path), None).unwrap();
        assert!(
            got.directives
                .ends_with("myelin::admin::registration_debug=off")
        );

        std::fs::write(
            &path,
            "loggers:\n  myelin.admin.registration_debug: {level: DEBUG}\nroot: {level: INFO}\n",
        )
        .unwrap();
        let got = plan(Some(&path), None).unwrap();
        assert_eq!(
            got.directives,
            "info,myelin::admin::registration_debug=debug"
        );
    }

    #[test]
    fn rust_log_cannot_enable_the_debug_target_by_accident() {
        let got = plan(None, Some("trace")).unwrap();
        assert_eq!(
            got.directives,
            "info,trace,myelin::admin::registration_debug=off"
        );
    }
}
