//! The `myelin` command line: `run`, `generate-config`, `register-user`.

pub mod register_user;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "myelin",
    version,
    about = "A Matrix homeserver with sandboxed WebAssembly plugins"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the homeserver (the default).
    Run(RunArgs),
    /// Write a commented homeserver.yaml.
    GenerateConfig(GenerateConfigArgs),
    /// Create a user through the shared-secret admin API, like Synapse's register_new_matrix_user.
    RegisterUser(register_user::RegisterUserArgs),
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Configuration file; give several to merge them (later files win per top-level key).
    #[arg(short = 'c', long = "config-path")]
    pub config: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateConfigArgs {
    /// The server name: the domain in your users' IDs.
    #[arg(long)]
    pub server_name: String,
    /// Where the database, keys and media will live.
    #[arg(long, default_value = crate::config::DEFAULT_DATA_DIRECTORY)]
    pub data_dir: PathBuf,
    /// Where to write the configuration.
    #[arg(short = 'o', long, default_value = "homeserver.yaml")]
    pub output: PathBuf,
}
