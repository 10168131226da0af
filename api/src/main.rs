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
    /// With `serve`: once listening, write the bound port to this file (for scripts that
    /// start the server on port 0).
    #[arg(long, global = true, env = "LARDER_PORT_FILE")]
    port_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Run database migrations and exit.
    Migrate,
    /// Run one garbage collection (as the server does every gc_interval_secs) and exit.
    Gc {
        /// Only list what would be removed, and the bytes it would free.
        #[arg(long)]
        dry_run: bool,
        /// Only this cache (reclaiming unheld NARs still covers every cache).
        #[arg(long)]
        cache: Option<String>,
    },
    /// Operator commands on caches and tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    larder_api::telemetry::init();
    let result = Settings::load(cli.config.as_deref()).and_then(|settings| {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(run(settings, cli.command.unwrap_or(Command::Serve), cli.port_file))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, command: Command, port_file: Option<PathBuf>) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            // actix runs on the tokio runtime started in main.
            let app = Application::build(settings).await?;
            if let Some(path) = port_file {
                write_port_file(&path, app.port())?;
            }
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            build_services(&settings).await?.close().await;
            println!("database is up to date");
        }
        Command::Gc { dry_run, cache } => admin::collect_garbage(&settings, cache.as_deref(), dry_run).await?,
        Command::Admin(command) => admin::run(&settings, command).await?,
    }
    Ok(())
}

/// Writes the port whole or not at all (a reader polling the file never sees half of it).
fn write_port_file(path: &std::path::Path, port: u16) -> anyhow::Result<()> {
    use anyhow::Context;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, format!("{port}\n")).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}
