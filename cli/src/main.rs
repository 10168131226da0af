//! `larder`: the command-line client of a Larder server.

mod client;
mod config;
mod nar_dump;
mod nixconf;
mod nixstore;
mod progress;
mod push;
mod queue;
mod watch;

use std::io::BufRead;
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use larder_api_types as api;

use client::Client;
use config::{Config, Resolved};

#[derive(Parser)]
#[command(name = "larder", version, about = "Use and manage Larder binary caches")]
struct Cli {
    /// The server, e.g. https://larder.example.com (else LARDER_SERVER, else `larder login`'s).
    #[arg(long, global = true)]
    server: Option<String>,
    /// The token to act with (else LARDER_TOKEN, else `larder login`'s).
    #[arg(long, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Remember the server and a token (read from stdin when --token is not given), in
    /// $XDG_CONFIG_HOME/larder/config.toml (mode 0600).
    Login,
    /// Make nix substitute from CACHE: adds it and its keys to the nix.conf nix reads, and
    /// for a private cache the token to its netrc. Running it again changes nothing.
    Use {
        cache: String,
        /// Print a NixOS module (nix.settings) instead of writing files.
        #[arg(long)]
        nixos: bool,
    },
    /// Push store paths (and, unless --no-closure, everything they reference) to CACHE;
    /// the paths are read from stdin when none are given (`nix-build | larder push CACHE`).
    Push {
        cache: String,
        paths: Vec<String>,
        #[arg(long)]
        no_closure: bool,
        #[command(flatten)]
        flags: push::PushFlags,
    },
    /// Caches of your account.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Tokens of your account.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Signing keys of a cache.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Push every new store path (with its closure) to CACHE as it appears, and what
    /// `post-build-hook` queued, until SIGINT or SIGTERM; retries while the server is away.
    WatchStore(watch::WatchStoreArgs),
    /// For nix.conf's `post-build-hook`, through a script (nix passes no arguments):
    /// `exec larder post-build-hook CACHE`. Queues $OUT_PATHS for `watch-store CACHE` and
    /// returns at once; never waits for the network.
    PostBuildHook(watch::PostBuildHookArgs),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Create a cache (private unless --public).
    Create {
        name: String,
        #[arg(long)]
        public: bool,
        #[arg(long)]
        priority: Option<i64>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Substituter URL, public keys, visibility and priority of a cache.
    Info {
        name: String,
    },
    List,
    /// Delete a cache with everything in it.
    Delete {
        name: String,
        /// The cache's name again, to confirm.
        #[arg(long)]
        confirm: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for one cache (--cache) or a personal one; prints its secret once.
    Create {
        #[arg(long)]
        cache: Option<String>,
        #[arg(long, value_parser = ["read", "write", "admin"], default_value = "read")]
        permission: String,
        /// e.g. 30d, 12h; never expires without it.
        #[arg(long)]
        expires: Option<humantime::Duration>,
        #[arg(long, default_value = "")]
        description: String,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    List {
        cache: String,
    },
    /// Add a server-held key that signs from now on.
    Rotate {
        cache: String,
    },
    /// Stop trusting a key (server-held: retire; client-held: remove).
    Retire {
        cache: String,
        key: String,
    },
    /// Register your public key (client-held caches), as `nix key convert-secret-to-public` prints it.
    Register {
        cache: String,
        public_key: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Login => log_in(cli.server, cli.token).await,
        Command::Use { cache, nixos } => use_cache(&connect(cli.server, cli.token)?, &cache, nixos).await,
        Command::Push { cache, paths, no_closure, flags } => {
            let options = flags.options(!no_closure)?;
            push::push(&connect(cli.server, cli.token)?, &cache, push::store_paths(paths)?, options).await
        }
        Command::Cache(command) => cache_command(&connect(cli.server, cli.token)?, command).await,
        Command::Token(command) => token_command(&connect(cli.server, cli.token)?, command).await,
        Command::Key(command) => key_command(&connect(cli.server, cli.token)?, command).await,
        Command::WatchStore(args) => watch::watch_store(connect(cli.server, cli.token)?, args).await,
        Command::PostBuildHook(args) => watch::post_build_hook(args),
    }
}

fn connect(server: Option<String>, token: Option<String>) -> anyhow::Result<Client> {
    let resolved = Resolved::new(server, token)?;
    Client::new(&resolved.server, resolved.token)
}

async fn log_in(server: Option<String>, token: Option<String>) -> anyhow::Result<()> {
    let saved = Config::load()?;
    let server = match server.or(saved.server) {
        Some(server) => config::normalized_server(&server)?,
        None => bail!("which server? pass --server URL (e.g. https://larder.example.com)"),
    };
    let token = match token {
        Some(token) => token,
        None => {
            eprintln!("Paste a token (from the dashboard's Tokens or Account page), then Enter:");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("reading the token from stdin")?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        bail!("no token given: pass --token or paste one on stdin");
    }
    let client = Client::new(&server, Some(token.clone()))?;
    client.check_reachable().await?;
    // A personal token or a session can read the account; a cache token is refused there
    // (403) but is still a valid token. A refused token (401) is not saved.
    if let Err(error) = client.get::<api::Account>("/account").await {
        if !error.to_string().contains("this token may not") {
            return Err(error);
        }
    }
    let path = Config { server: Some(server.clone()), token: Some(token) }.save()?;
    println!("Logged in to {server}; saved in {}", path.display());
    Ok(())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The current user and their groups, for the trusted-users check.
fn user_and_groups() -> (String, Vec<String>) {
    let user = std::env::var("USER").unwrap_or_default();
    let groups = std::process::Command::new("id")
        .arg("-Gn")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    (user, groups)
}

async fn use_cache(client: &Client, cache: &str, nixos: bool) -> anyhow::Result<()> {
    let info: api::CacheInfo = client.get(&format!("/caches/{cache}")).await?;
    let host = url::Url::parse(&info.substituter)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .with_context(|| format!("the server's substituter URL '{}' has no host", info.substituter))?;
    if nixos {
        print!("{}", nixos_module(&info, &host));
        return Ok(());
    }
    let root = is_root();
    let conf_path = nixconf::nix_conf_path(root)?;
    let before = std::fs::read_to_string(&conf_path).unwrap_or_default();
    let conf = nixconf::add_to_list_setting(&before, "extra-substituters", std::slice::from_ref(&info.substituter));
    let conf = nixconf::add_to_list_setting(&conf, "extra-trusted-public-keys", &info.public_keys);
    if nixconf::write_if_changed(&conf_path, &conf, false)? {
        println!("Added {} and its keys to {}", info.substituter, conf_path.display());
    } else {
        println!("{} already has {} and its keys", conf_path.display(), info.substituter);
    }
    if !info.public {
        let Some(token) = client.token() else {
            bail!("{cache} is private: nix needs a token to read it. Run `larder login` with a read token first.");
        };
        let system_conf = std::fs::read_to_string("/etc/nix/nix.conf").unwrap_or_default();
        let netrc_path = nixconf::netrc_path(&[&system_conf, &conf]);
        let daemon_netrc = nixconf::netrc_path(&[&system_conf]);
        if !root && std::env::var_os("NIX_CONF_DIR").is_none() && netrc_path != daemon_netrc {
            eprintln!(
                "warning: the nix daemon reads its netrc from {}, not {} (your nix.conf's netrc-file): it will be refused {cache} (401) \
                 unless that file has the line too. Run `sudo larder use {cache}`.",
                daemon_netrc.display(),
                netrc_path.display()
            );
        }
        let before = std::fs::read_to_string(&netrc_path).unwrap_or_default();
        let netrc = nixconf::set_netrc_entry(&before, &host, token);
        let written = nixconf::write_if_changed(&netrc_path, &netrc, true).map_err(|error| {
            if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied) {
                anyhow::anyhow!(
                    "cannot write {} ({error:#}): it is the netrc the nix daemon reads for {cache}'s token.\n\
                     Run `sudo larder use {cache}`, or add `machine {host} login larder password <a read token>` to it yourself.",
                    netrc_path.display()
                )
            } else {
                error
            }
        })?;
        if written {
            println!("Wrote the token for {host} to {}", netrc_path.display());
        } else {
            println!("{} already has the token for {host}", netrc_path.display());
        }
    }
    let user_level = !root && std::env::var_os("NIX_CONF_DIR").is_none();
    if user_level {
        let system_conf = std::fs::read_to_string("/etc/nix/nix.conf").unwrap_or_default();
        let (user, groups) = user_and_groups();
        if !nixconf::is_trusted_user(&system_conf, &user, &groups) {
            eprintln!(
                "warning: {user} is not a trusted user of the nix daemon, which ignores substituters from a user's nix.conf.\n\
                 Add `extra-trusted-users = {user}` to /etc/nix/nix.conf (then restart nix-daemon), or run `sudo larder use {cache}`, or on NixOS use `larder use {cache} --nixos`."
            );
        }
    }
    Ok(())
}

fn nixos_module(info: &api::CacheInfo, host: &str) -> String {
    let keys: Vec<String> = info.public_keys.iter().map(|k| format!("\"{k}\"")).collect();
    let netrc = if info.public {
        String::new()
    } else {
        format!(
            "    # A private cache: put `machine {host} login larder password <read token>` in this file\n    # (e.g. with agenix or sops-nix; keep it out of the Nix store).\n    netrc-file = \"/etc/nix/netrc\";\n"
        )
    };
    format!(
        "{{\n  nix.settings = {{\n    extra-substituters = [ \"{}\" ];\n    extra-trusted-public-keys = [ {} ];\n{netrc}  }};\n}}\n",
        info.substituter,
        keys.join(" ")
    )
}

async fn cache_command(client: &Client, command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Create { name, public, priority, description } => {
            let cache: api::Cache = client.post("/caches", &api::NewCache { name, public, priority, description }).await?;
            println!("Created {} ({})", cache.name, if cache.public { "public" } else { "private" });
            let info: api::CacheInfo = client.get(&format!("/caches/{}", cache.name)).await?;
            print_info(&info);
        }
        CacheCommand::Info { name } => print_info(&client.get(&format!("/caches/{name}")).await?),
        CacheCommand::List => {
            let caches: Vec<api::Cache> = client.get("/caches").await?;
            if caches.is_empty() {
                println!("No caches yet: `larder cache create NAME`");
            }
            for cache in caches {
                println!("{}\t{}\tpriority {}", cache.name, if cache.public { "public" } else { "private" }, cache.priority);
            }
        }
        CacheCommand::Delete { name, confirm } => {
            client.delete(&format!("/caches/{name}"), Some(&api::Confirm { confirm })).await?;
            println!("Deleted {name}");
        }
    }
    Ok(())
}

fn print_info(info: &api::CacheInfo) {
    println!("substituter: {}", info.substituter);
    for key in &info.public_keys {
        println!("public key:  {key}");
    }
    println!("visibility:  {}", if info.public { "public" } else { "private" });
    println!("priority:    {}", info.priority);
}

async fn token_command(client: &Client, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { cache, permission, expires, description } => {
            let permission = match permission.as_str() {
                "write" => api::Permission::Write,
                "admin" => api::Permission::Admin,
                _ => api::Permission::Read,
            };
            let kind = if cache.is_some() { api::TokenKind::Cache } else { api::TokenKind::Personal };
            let request =
                api::NewToken { kind, cache, caches: Vec::new(), permission, expires_in: expires.map(|d| d.as_secs()), description };
            let created: api::TokenCreated = client.post("/tokens", &request).await?;
            eprintln!("Token {} (shown once; Larder keeps only its id):", created.token.id);
            println!("{}", created.secret);
        }
        TokenCommand::List => {
            let tokens: Vec<api::Token> = client.get("/tokens").await?;
            for token in tokens.iter().filter(|t| t.revoked_at.is_none()) {
                let reach = token.cache.clone().unwrap_or_else(|| if token.limited { token.caches.join(",") } else { "all caches".into() });
                println!("{}\t{:?}\t{reach}\t{}", token.id, token.permission, token.description);
            }
        }
        TokenCommand::Revoke { id } => {
            client.delete(&format!("/tokens/{id}"), None::<&()>).await?;
            println!("Revoked {id}");
        }
    }
    Ok(())
}

async fn key_command(client: &Client, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::List { cache } => {
            let keys: Vec<api::Key> = client.get(&format!("/caches/{cache}/keys")).await?;
            for key in keys {
                println!("{}\t{}\t{}", key.name, if key.active { "active" } else { "retired" }, key.public_key);
            }
        }
        KeyCommand::Rotate { cache } => {
            let key: api::Key = client.post(&format!("/caches/{cache}/keys"), &serde_json::json!({})).await?;
            println!("New key {}: {}", key.name, key.public_key);
        }
        KeyCommand::Retire { cache, key } => {
            client.delete(&format!("/caches/{cache}/keys/{key}"), None::<&()>).await?;
            println!("Retired {key}");
        }
        KeyCommand::Register { cache, public_key } => {
            let key: api::Key = client.post(&format!("/caches/{cache}/public-keys"), &api::NewPublicKey { public_key }).await?;
            println!("Registered {}", key.name);
        }
    }
    Ok(())
}
