//! The `myelin` binary.

use std::process::ExitCode;

use clap::Parser;
use myelin::{
    cli::{Cli, Command, GenerateConfigArgs, RunArgs, register_user},
    config::{Config, sample_config},
    logging, server,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = match cli.command {
        None => runtime.block_on(run(cli.run)),
        Some(Command::Run(args)) => runtime.block_on(run(args)),
        Some(Command::GenerateConfig(args)) => generate_config(args),
        Some(Command::RegisterUser(args)) => runtime.block_on(register_user::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("myelin: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (config, unknown_keys) = if args.config.is_empty() {
        (Config::without_files(), Vec::new())
    } else {
        let loaded = Config::load(&args.config)?;
        (loaded.config, loaded.unknown_keys)
    };
    let plan = logging::plan(
        config.log_config.as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    )?;
    logging::init(&plan)?;
    if !unknown_keys.is_empty() {
        tracing::warn!(keys = %unknown_keys.join(", "), "ignoring unknown configuration keys");
    }
    tracing::info!(server_name = %config.server_name, "starting Myelin {}", env!("CARGO_PKG_VERSION"));

    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "myelin".to_owned());
    let config_args: String = args
        .config
        .iter()
        .map(|c| format!("-c {} ", c.display()))
        .collect();
    let hint = format!("{exe} register-user {config_args}-u admin --admin");

    let state = server::prepare(config, args.config.clone()).await?;
    server::serve(state, &hint).await
}

fn generate_config(args: GenerateConfigArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.output.exists(),
        "{} already exists; remove it or pass --output",
        args.output.display()
    );
    std::fs::write(
        &args.output,
        sample_config(&args.server_name, &args.data_dir),
    )?;
    println!("Wrote {}", args.output.display());
    Ok(())
}
