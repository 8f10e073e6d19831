//! The MAC of Synapse's shared-secret registration: hex HMAC-SHA1 keyed by
//! the secret over `nonce\0username\0password\0admin|notadmin[\0user_type]`.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The hex MAC a client must send to register `user`.
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(user.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = user_type {
        mac.update(b"\0");
        mac.update(user_type.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}
