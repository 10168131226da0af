//! Wiring: settings → database, storage, secrets → services → HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpServer};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::auth::TokenKeys;
use crate::config::{load_or_create_secret, Settings, StorageSettings};
use crate::domain::GcPolicy;
use crate::services::{GcSettings, Limits, Services};
use crate::signing::MasterKey;
use crate::storage::{FsStorage, S3Storage, Storage};

/// The base URL clients use: configured, or else taken from the request.
#[derive(Clone)]
pub struct PublicUrl(Option<String>);

impl PublicUrl {
    pub fn base(&self, req: &HttpRequest) -> String {
        match &self.0 {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let info = req.connection_info();
                format!("{}://{}", info.scheme(), info.host())
            }
        }
    }
}

/// Connects everything a server or an admin command needs, failing early (at boot, not on
/// the first request) when the database, the storage or a secret is unusable.
pub async fn build_services(settings: &Settings) -> anyhow::Result<Services> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| format!("creating the data directory {}", settings.data_dir.display()))?;
    let storage: Arc<dyn Storage> = match &settings.storage {
        StorageSettings::S3(s3) => Arc::new(S3Storage::new(s3.clone()).await?),
        StorageSettings::Fs { dir } => Arc::new(FsStorage::new(dir.clone()).await?),
    };
    let master_key =
        load_or_create_secret(settings.master_key.as_ref(), &settings.data_dir.join("master.key"), "master_key (LARDER_MASTER_KEY)")?;
    let token_secret = load_or_create_secret(
        settings.token_secret.as_ref(),
        &settings.data_dir.join("token-secret.key"),
        "token_secret (LARDER_TOKEN_SECRET)",
    )?;
    crate::auth::password::warm_up();
    let limits = Limits {
        max_nar_size: settings.max_nar_size,
        max_small_upload: settings.max_small_upload,
        max_listing_size: usize::try_from(settings.max_listing_size).unwrap_or(usize::MAX),
        max_uploads_per_token: settings.max_uploads_per_token,
        max_part_size: settings.max_part_size,
        staleness: Duration::from_secs(settings.staleness_secs),
        default_priority: settings.default_priority,
    };
    let gc = GcSettings {
        interval: Duration::from_secs(settings.gc_interval_secs),
        pending_upload_expiry: Duration::from_secs(settings.pending_upload_expiry_secs),
        release_grace: Duration::from_secs(settings.nar_release_grace_secs),
        default_policy: GcPolicy { quota_bytes: settings.default_quota_bytes, ..GcPolicy::default() },
        lock_file: settings.data_dir.join("gc.lock"),
    };
    Services::connect(&settings.database_url(), storage, MasterKey::new(master_key), TokenKeys::new(&token_secret), limits, gc).await
}

pub struct Application {
    port: u16,
    server: Server,
    services: Services,
}

impl Application {
    /// Binds the listener (port 0 picks a free one; `port()` tells which) and builds the server.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let services = build_services(&settings).await?;
        services.start_background_tasks();
        storage_ready(&services).await?;
        remove_stale_uploads(&services, &settings).await;
        let listener = bind_listener(settings.listen).with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let public_url = PublicUrl(settings.public_url.clone());
        let dashboard = web::Data::new(crate::routes::DashboardSettings {
            cookies: crate::routes::CookiePolicy { secure: settings.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) },
            base_domain: settings.base_domain.clone(),
        });
        let data = web::Data::new(services.clone());
        let base_domain = settings.base_domain.clone().map(|d| d.to_ascii_lowercase());
        let body_timeouts =
            crate::routes::BodyTimeouts { stall: Duration::from_secs(settings.body_timeout_secs), min_rate: settings.min_body_rate };
        let server = HttpServer::new(move || {
            let base_domain = base_domain.clone();
            App::new()
                .wrap_fn(move |mut req, service| {
                    if let Some(domain) = &base_domain {
                        crate::routes::cache_hosts::rewrite(&mut req, domain);
                    }
                    // Every body, authenticated or not, is read against the deadlines.
                    let payload = req.take_payload();
                    req.set_payload(body_timeouts.apply(payload));
                    service.call(req)
                })
                .wrap(TracingLogger::default())
                .app_data(data.clone())
                .app_data(web::Data::new(public_url.clone()))
                .app_data(dashboard.clone())
                .configure(crate::routes::configure)
        })
        // A streamed response goes out as a head write and then body writes: with Nagle on,
        // a small body waits for the client's delayed ACK of the head (~40 ms per response
        // on a keep-alive connection). Send each write at once instead.
        .on_connect(|connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
            }
        })
        .keep_alive(Duration::from_secs(settings.keep_alive_secs))
        .listen(listener)?
        .shutdown_timeout(30);
        let server = if settings.workers > 0 { server.workers(settings.workers) } else { server };
        let server = server.run();
        tracing::info!(address = %settings.listen.ip(), port, "listening");
        Ok(Self { port, server, services })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests, embedding).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Serves until SIGINT/SIGTERM, then finishes in-flight requests (graceful shutdown).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.services.close().await;
        result
    }
}

/// Connections waiting to be accepted: room for a burst of substituters connecting at once
/// (each nix opens up to `http-connections`, 25 by default).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the listening socket with [`LISTEN_BACKLOG`] (`TcpListener::bind` picks its own).
fn bind_listener(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    Ok(socket.into())
}

/// What uploads cut short by a crash left behind. An upload still running on another node
/// touches its temporary file at least every few `body_timeout_secs` (slower bodies are
/// cut off), so anything untouched for far longer belongs to no live upload. S3 tells
/// only when an upload began, hence a day there.
async fn remove_stale_uploads(services: &Services, settings: &Settings) {
    let older_than = match settings.storage {
        StorageSettings::Fs { .. } => Duration::from_secs((4 * settings.body_timeout_secs).max(15 * 60)),
        StorageSettings::S3(_) => Duration::from_secs((4 * settings.body_timeout_secs).max(24 * 3600)),
    };
    // Upload sessions' parts wait for their pusher until the session expires.
    let sessions = Duration::from_secs(settings.pending_upload_expiry_secs);
    match services.storage().remove_stale_uploads(older_than, sessions).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed what interrupted uploads left behind"),
        Err(error) => tracing::warn!(error = ?error, "could not remove what interrupted uploads left behind"),
    }
}

async fn storage_ready(services: &Services) -> anyhow::Result<()> {
    services.storage().health_check().await.context("storage is not reachable")
}
