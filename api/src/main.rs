use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use larder_api::admin::{self, AdminCommand};
use larder_api::config::Settings;
use larder_api::startup::{build_services, Application};

/// Larder: a Nix binary cache server.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file; LARDER_* environment variables override it.
    #[arg(long, global = true, env = "LARDER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Run database migrations and exit.
    Migrate,
    /// Operator commands on caches and tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    larder_api::telemetry::init();
    let result = Settings::load(cli.config.as_deref()).and_then(|settings| {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(run(settings, cli.command.unwrap_or(Command::Serve)))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            // actix runs on the tokio runtime started in main.
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            build_services(&settings).await?.db().close().await;
            println!("database is up to date");
        }
        Command::Admin(command) => admin::run(&settings, command).await?,
    }
    Ok(())
}
