//! Authentication: passwords, tokens, user-interactive auth, rate limits,
//! and the rules for what a user ID may look like.

pub mod jwt;
pub mod oidc;
pub mod password;
pub mod ratelimit;
pub mod shared_secret;
pub mod sso_mapping;
pub mod tokens;
pub mod uia;
pub mod username;
