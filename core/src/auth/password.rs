//! Password hashing: argon2id for new hashes; bcrypt (Synapse's format) is
//! still verified so that users can move over, and is rehashed on login.

use argon2::{
    Argon2,
    password_hash::{
        PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString, rand_core::OsRng,
    },
};

use tokio::sync::Semaphore;

use crate::config::PasswordPolicy;

/// Hashes and verifies off the async threads, a bounded number at a time:
/// each argon2 run takes ~19 MiB and a core for tens of milliseconds, so a
/// login flood must queue rather than multiply memory and threads.
pub struct PasswordHasher {
    pepper: String,
    permits: Semaphore,
}

impl PasswordHasher {
    pub fn new(pepper: String) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            pepper,
            permits: Semaphore::new(cores),
        }
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce(&str) -> T + Send + 'static) -> T {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let pepper = self.pepper.clone();
        tokio::task::spawn_blocking(move || work(&pepper))
            .await
            .expect("password hashing does not panic")
    }

    pub async fn hash(&self, password: &str) -> String {
        let password = password.to_owned();
        self.run(move |pepper| hash(&password, pepper)).await
    }

    /// Verifies against `stored`; with no stored hash, takes as long and says no.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> Verified {
        let password = password.to_owned();
        self.run(move |pepper| match stored {
            Some(stored) => verify(&password, pepper, &stored),
            None => {
                verify_against_nothing(&password);
                Verified::No
            }
        })
        .await
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but stored in an older format: store the new hash.
    YesRehash(String),
}

/// Hashes with argon2id and a fresh salt. `pepper` is appended as Synapse does.
fn hash(password: &str, pepper: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let peppered = format!("{password}{pepper}");
    Argon2::default()
        .hash_password(peppered.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// Checks `password` against `stored` (argon2 PHC string or bcrypt `$2b$…`).
fn verify(password: &str, pepper: &str, stored: &str) -> Verified {
    let peppered = format!("{password}{pepper}");
    if stored.starts_with("$2") {
        return match bcrypt::verify(peppered.as_bytes(), stored) {
            Ok(true) => Verified::YesRehash(hash(password, pepper)),
            _ => Verified::No,
        };
    }
    match PasswordHash::new(stored) {
        Ok(parsed)
            if Argon2::default()
                .verify_password(peppered.as_bytes(), &parsed)
                .is_ok() =>
        {
            Verified::Yes
        }
        _ => Verified::No,
    }
}

/// Burns the time a real verification takes, so that a login for an unknown
/// user is not told apart from a wrong password by its timing.
fn verify_against_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("not a password", ""));
    let _ = verify(password, "", dummy);
}

/// Checks a new password against `password_config.policy`; the error says why.
pub fn check_policy(password: &str, policy: &PasswordPolicy) -> Result<(), &'static str> {
    if !policy.enabled {
        return Ok(());
    }
    if password.chars().count() < policy.minimum_length {
        return Err("The password is too short");
    }
    if policy.require_digit && !password.chars().any(|c| c.is_ascii_digit()) {
        return Err("The password must include at least one digit");
    }
    if policy.require_symbol && !password.chars().any(|c| !c.is_alphanumeric()) {
        return Err("The password must include at least one symbol");
    }
    if policy.require_lowercase && !password.chars().any(char::is_lowercase) {
        return Err("The password must include at least one lowercase letter");
    }
    if policy.require_uppercase && !password.chars().any(char::is_uppercase) {
        return Err("The password must include at least one uppercase letter");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let stored = hash("correct horse", "");
        assert!(stored.starts_with("$argon2id$"));
        assert_eq!(verify("correct horse", "", &stored), Verified::Yes);
        assert_eq!(verify("wrong", "", &stored), Verified::No);
    }

    #[test]
    fn synapse_bcrypt_hash_verifies_and_asks_for_rehash() {
        let stored = bcrypt::hash_with_result("hunter2", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        assert!(stored.starts_with("$2b$"));
        assert!(
            matches!(verify("hunter2", "", &stored), Verified::YesRehash(h) if h.starts_with("$argon2id$"))
        );
        assert_eq!(verify("hunter3", "", &stored), Verified::No);
    }
}
