//! Myelin: a Matrix homeserver whose extension system is sandboxed WebAssembly.
//!
//! The module tree follows the spec: `api` (client-server and admin APIs),
//! `auth`, `rooms` (events, state and their rules), `streams` (what
//! `/sync` follows), `push`, `media` (the content repository), `federation`,
//! `storage`, `config`; `server` wires them together.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod federation;
pub mod identity;
pub mod logging;
pub mod media;
pub mod push;
pub mod rooms;
pub mod server;
pub mod state;
pub mod storage;
pub mod streams;
