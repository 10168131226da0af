//! `larder-server admin …`: operator commands that work on the same data directory and
//! database as the server, also while it runs.

use std::time::Duration;

use clap::Subcommand;

use crate::config::Settings;
use crate::domain::{CacheName, Permission, TokenId};
use crate::startup::build_services;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a cache with a server-held signing key; prints its public key.
    CreateCache {
        name: String,
        /// Readable only with a token (default: anyone may read).
        #[arg(long)]
        private: bool,
        /// nix-cache-info Priority (lower is tried first; cache.nixos.org is 40).
        #[arg(long)]
        priority: Option<i64>,
    },
    /// Create a token for one cache; prints its id and the token (shown only this once).
    CreateToken {
        #[arg(long)]
        cache: String,
        #[arg(long, value_parser = parse_permission)]
        perm: Permission,
        /// Lifetime such as 30d, 12h or "1month"; default: no expiry.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Revoke a token by id; takes effect on the next request.
    RevokeToken { id: String },
    /// List caches with their visibility, priority and public keys.
    ListCaches,
}

fn parse_permission(s: &str) -> Result<Permission, String> {
    s.parse()
}

pub async fn run(settings: &Settings, command: AdminCommand) -> anyhow::Result<()> {
    let services = build_services(settings).await?;
    match command {
        AdminCommand::CreateCache { name, private, priority } => {
            let name = CacheName::parse(&name).map_err(anyhow::Error::msg)?;
            let created = services.create_cache(&name, None, !private, priority, "").await?;
            println!("created cache {} ({})", created.cache.name, if private { "private" } else { "public" });
            println!("public key: {}", created.public_key.to_nix_string());
        }
        AdminCommand::CreateToken { cache, perm, expires, description } => {
            let cache = CacheName::parse(&cache).map_err(anyhow::Error::msg)?;
            let created = services.create_token(&cache, perm, expires, &description).await?;
            println!("token id: {}", created.token.id);
            println!("token: {}", created.secret);
        }
        AdminCommand::RevokeToken { id } => {
            services.revoke_token(&TokenId::from_presented(&id)).await?;
            println!("revoked token {id}");
        }
        AdminCommand::ListCaches => {
            for cache in services.all_caches().await? {
                let keys: Vec<String> = services.trusted_public_keys(&cache).await?.iter().map(|k| k.to_nix_string()).collect();
                let visibility = if cache.public { "public" } else { "private" };
                println!("{}\t{visibility}\tpriority {}\t{}", cache.name, cache.priority, keys.join(" "));
            }
        }
    }
    services.close().await;
    Ok(())
}

/// `larder-server gc`: one collection, reported per cache.
pub async fn collect_garbage(settings: &Settings, cache: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    let services = build_services(settings).await?;
    let cache = cache.map(CacheName::parse).transpose().map_err(anyhow::Error::msg)?;
    let outcome = services.collect_garbage(cache.as_ref(), dry_run).await;
    services.close().await;
    let Some(collection) = outcome? else {
        anyhow::bail!("another collection is running (on this server or another node): try again later");
    };
    let verb = if dry_run { "would remove" } else { "removed" };
    for (name, collected) in &collection.caches {
        println!("{name}: {verb} {} paths, {} bytes", collected.path_count, collected.bytes_freed);
        if dry_run {
            for path in &collected.paths {
                let reason = match path.reason {
                    crate::services::CollectReason::Retention => "retention",
                    crate::services::CollectReason::Quota => "quota",
                };
                println!("  {}\t{} bytes\tlast used {}\t{reason}", path.store_path, path.file_size, path.last_used_at);
            }
        }
    }
    if !dry_run {
        println!(
            "reclaimed {} NARs; deleted {} objects from storage ({} failed, retried later)",
            collection.nars_reclaimed, collection.objects_deleted, collection.objects_failed
        );
    }
    Ok(())
}
