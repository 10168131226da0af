//! A real Larder server per test, on port 0, on one of the two backend pairs.

use std::path::PathBuf;

use larder_api::config::{Settings, StorageSettings};
use larder_api::domain::{CacheName, Permission, TokenId};
use larder_api::services::Services;
use larder_api::startup::Application;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::backends::{files_below, TestBucket, TestDatabase};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded defaults: SQLite in the data directory, NARs in a local directory.
    SqliteFs,
    /// The scale-out pair: Postgres and S3 (Garage).
    PostgresS3,
}

pub struct TestServer {
    pub backend: Backend,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    services: Services,
    /// Behind a lock so that [`TestServer::serve_again`] can replace it.
    handle: std::sync::Mutex<actix_web::dev::ServerHandle>,
    database: Option<TestDatabase>,
    bucket: Option<TestBucket>,
    pub http: reqwest::Client,
}

/// A cache made for a test, with its public key.
pub struct TestCache {
    pub name: String,
    pub public_key: String,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server after `adjust` has had its say on the settings.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Self {
        larder_api::telemetry::init();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut settings = Settings::in_data_dir(dir.path().join("data"));
        settings.listen = "127.0.0.1:0".parse().unwrap();
        let (database, bucket) = match backend {
            Backend::SqliteFs => (None, None),
            Backend::PostgresS3 => {
                let database = TestDatabase::create().await;
                let bucket = TestBucket::create().await;
                settings.database_url = Some(database.url.clone());
                settings.storage = StorageSettings::S3(bucket.s3_settings());
                (Some(database), Some(bucket))
            }
        };
        adjust(&mut settings);
        let app = Application::build(settings.clone()).await.expect("server starts");
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let services = app.services().clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let handle = std::sync::Mutex::new(handle);
        Self { backend, base_url, dir, settings, services, handle, database, bucket, http: reqwest::Client::new() }
    }

    /// Another server node on the same database, storage and secrets (as behind a load
    /// balancer); returns its base URL and a handle to stop it.
    pub async fn second_node(&self) -> (String, actix_web::dev::ServerHandle) {
        let mut settings = self.settings.clone();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        let app = Application::build(settings).await.expect("second node starts");
        let url = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        (url, handle)
    }

    /// Stops serving at once, open connections dropped, as a server that goes down; its
    /// data stays, for [`TestServer::serve_again`]. [`TestServer::services`] closes with it:
    /// talk to the server over HTTP from then on.
    pub async fn stop_serving(&self) {
        let handle = self.handle.lock().expect("server handle").clone();
        handle.stop(false).await;
    }

    /// Serves again on the same port, from the same database, storage and secrets, as the
    /// same server after a restart.
    pub async fn serve_again(&self) {
        let mut settings = self.settings.clone();
        settings.listen = self.base_url.trim_start_matches("http://").parse().expect("base URL is an address");
        let app = Application::build(settings).await.expect("server starts again");
        *self.handle.lock().expect("server handle") = app.handle();
        tokio::spawn(app.run_until_stopped());
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn cache_url(&self, cache: &str) -> String {
        format!("{}/{cache}", self.base_url)
    }

    pub async fn create_cache(&self, name: &str, public: bool) -> TestCache {
        let name = CacheName::parse(name).expect("a valid cache name");
        let created = self.services.create_cache(&name, None, public, None, "").await.expect("create cache");
        TestCache { name: created.cache.name.as_str().to_owned(), public_key: created.public_key.to_nix_string() }
    }

    /// A token for `cache`; returns (id, secret).
    pub async fn token(&self, cache: &str, permission: Permission) -> (String, String) {
        let cache = CacheName::parse(cache).expect("a valid cache name");
        let created = self.services.create_token(&cache, permission, None, "test").await.expect("create token");
        (created.token.id.as_str().to_owned(), created.secret)
    }

    /// A token for `cache` that expires after `lifetime`; returns (id, secret).
    pub async fn expiring_token(&self, cache: &str, permission: Permission, lifetime: std::time::Duration) -> (String, String) {
        let cache = CacheName::parse(cache).expect("a valid cache name");
        let created = self.services.create_token(&cache, permission, Some(lifetime), "expiring").await.expect("create token");
        (created.token.id.as_str().to_owned(), created.secret)
    }

    /// Revokes a token by id, as the operator would.
    pub async fn revoke_token(&self, id: &str) {
        self.services.revoke_token(&TokenId::from_presented(id)).await.expect("revoke token");
    }

    /// A second connection to the server's database, to check what it holds.
    pub async fn db(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new().max_connections(1).connect(&self.settings.database_url()).await.expect("connect to the test database")
    }

    pub async fn count_rows(&self, table: &str) -> i64 {
        let pool = self.db().await;
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&pool).await.expect("count rows");
        pool.close().await;
        n
    }

    /// Every stored object (and temporary file, or unfinished multipart upload: see
    /// [`TestBucket::contents`]).
    pub async fn stored_objects(&self) -> Vec<String> {
        match &self.bucket {
            Some(bucket) => bucket.contents().await,
            None => files_below(&self.nar_dir()),
        }
    }

    /// The environment that points a `larder-server` process at this server's data.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        self.settings.to_env()
    }

    /// Where this server keeps NARs on the filesystem backend.
    pub fn nar_dir(&self) -> PathBuf {
        match &self.settings.storage {
            StorageSettings::Fs { dir } => dir.clone(),
            StorageSettings::S3(_) => self.settings.data_dir.join("objects"),
        }
    }

    /// Runs `larder-server <args>` against this server's data (as an operator would).
    pub async fn larder_server(&self, args: &[&str]) -> std::process::Output {
        self.larder_server_command(args).output().await.expect("run larder-server")
    }

    /// `larder-server <args>` against this server's data, to start as the test likes.
    pub fn larder_server_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(crate::server_binary());
        command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(self.env_vars()).kill_on_drop(true);
        command
    }

    /// S3 bucket of this server, if it uses S3.
    pub fn bucket(&self) -> Option<&TestBucket> {
        self.bucket.as_ref()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.settings.data_dir.clone()
    }

    /// Stops the server and removes its database and bucket.
    pub async fn stop(self) {
        let handle = self.handle.lock().expect("server handle").clone();
        handle.stop(true).await;
        self.services.close().await;
        if let Some(bucket) = &self.bucket {
            bucket.remove().await;
        }
        if let Some(database) = &self.database {
            database.remove().await;
        }
    }
}

/// Declares each test once per backend pair, `sqlite_fs::<name>` and `postgres_s3::<name>`.
/// The test is an `async fn(&TestServer)`; `name with adjust` first lets
/// `fn adjust(&mut Settings)` change the server's settings. The server, its database and its
/// bucket are removed whatever the outcome, then a failure is re-raised.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident $(with $adjust:ident)?),* $(,)?) => {
        mod sqlite_fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let adjust: fn(&mut $crate::Settings) = |_| {};
                    $(let adjust: fn(&mut $crate::Settings) = super::$adjust;)?
                    $crate::run_on($crate::Backend::SqliteFs, adjust, |server| Box::pin(super::$name(server))).await;
                }
            )*
        }
        mod postgres_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let adjust: fn(&mut $crate::Settings) = |_| {};
                    $(let adjust: fn(&mut $crate::Settings) = super::$adjust;)?
                    $crate::run_on($crate::Backend::PostgresS3, adjust, |server| Box::pin(super::$name(server))).await;
                }
            )*
        }
    };
}

/// Runs one test body against a fresh server (its settings changed by `adjust`), cleaning
/// up even when it panics.
pub async fn run_on<F>(backend: Backend, adjust: fn(&mut Settings), test: F)
where
    F: for<'a> FnOnce(&'a TestServer) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>,
{
    use futures_util::FutureExt;
    let server = TestServer::start_with(backend, adjust).await;
    let outcome = std::panic::AssertUnwindSafe(test(&server)).catch_unwind().await;
    server.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
