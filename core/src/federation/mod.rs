//! Server-to-server concerns. For now: the server's signing key.

pub mod signing_key;
