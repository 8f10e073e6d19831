//! The server's ed25519 signing key, in Synapse's file format
//! (`ed25519 a_XXXX <unpadded base64 seed>`), so an operator can carry a
//! Synapse key over. Created at first start.

use std::{io::Write, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ed25519_dalek::SigningKey as Ed25519Key;
use rand::{Rng, distributions::Alphanumeric, rngs::OsRng};

pub struct SigningKey {
    /// e.g. `ed25519:a_AbCd`
    pub key_id: String,
    pub key: Ed25519Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key_id)
    }
}

impl SigningKey {
    /// Reads the key at `path`, or creates one there (mode 0600) if there is none.
    pub fn load_or_generate(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path)?;
            return Self::parse(&text).ok_or_else(|| {
                anyhow::anyhow!(
                    "signing_key_path: {} is not an ed25519 key in Synapse's format",
                    path.display()
                )
            });
        }
        let version: String = format!(
            "a_{}",
            rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(4)
                .map(char::from)
                .collect::<String>()
        );
        let key = Ed25519Key::generate(&mut OsRng);
        write_private_file(
            path,
            &format!(
                "ed25519 {version} {}\n",
                STANDARD_NO_PAD.encode(key.to_bytes())
            ),
        )?;
        tracing::info!(path = %path.display(), key_id = %format!("ed25519:{version}"), "generated a signing key");
        Ok(Self {
            key_id: format!("ed25519:{version}"),
            key,
        })
    }

    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|l| !l.trim().is_empty())?;
        let mut parts = line.split_whitespace();
        let (algorithm, version, seed) = (parts.next()?, parts.next()?, parts.next()?);
        if algorithm != "ed25519" {
            return None;
        }
        let seed = STANDARD_NO_PAD.decode(seed.trim_end_matches('=')).ok()?;
        let seed: [u8; 32] = seed.try_into().ok()?;
        Some(Self {
            key_id: format!("ed25519:{version}"),
            key: Ed25519Key::from_bytes(&seed),
        })
    }
}

/// Creates `path` readable by its owner only, with `contents`.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// Signs events and JSON with ruma's signing functions.
impl ruma::signatures::KeyPair for SigningKey {
    fn sign(&self, message: &[u8]) -> ruma::signatures::Signature {
        use ed25519_dalek::Signer;
        let key_id = ruma::OwnedSigningKeyId::try_from(self.key_id.as_str())
            .expect("key IDs are read as `ed25519:<version>`");
        ruma::signatures::Signature::new(key_id, self.key.sign(message).to_bytes().to_vec())
    }
}

impl SigningKey {
    /// The public half, unpadded base64, as published in key responses.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_synapse_key_file() {
        let key = SigningKey::parse("ed25519 a_AbCd nPAl6ZQSQ6dOjGnrsGxJYxk5JHRhDDUQBq0fTWIRFk8\n")
            .unwrap();
        assert_eq!(key.key_id, "ed25519:a_AbCd");
    }
}
