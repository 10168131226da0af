//! Settings: embedded defaults, then an optional TOML file, then `LARDER_*` environment
//! variables (the environment wins). Keys are flat so that a file key and its variable
//! read the same: `s3_bucket` in TOML is `LARDER_S3_BUCKET` in the environment. They are
//! read into [`RawSettings`] and then checked into [`Settings`], where what cannot be
//! combined cannot be represented (S3 without a bucket) and secrets never print.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::storage::S3Settings;

/// The server's settings, checked. `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Where the embedded defaults keep their state: SQLite, NARs, generated secrets.
    pub data_dir: PathBuf,
    /// The URL clients reach this server at, used in generated snippets and cache info.
    pub public_url: Option<String>,
    /// With it, `{cache}.{base_domain}` serves that cache's binary cache at its root, so a
    /// user keeps one netrc line per cache (the host tells them apart).
    pub base_domain: Option<String>,
    /// `sqlite://…` or `postgres://…`; default: `larder.db` in the data directory.
    pub database_url: Option<String>,
    pub storage: StorageSettings,
    /// 32 bytes, hex or base64, that encrypt signing keys at rest; generated into the data
    /// directory on first start when absent.
    pub master_key: Option<SecretString>,
    /// Secret for signing tokens (JWT HS256); generated into the data directory when absent.
    pub token_secret: Option<SecretString>,
    /// Largest NAR accepted on upload, in bytes, compressed as uploaded and decompressed.
    pub max_nar_size: u64,
    /// Largest narinfo or build log accepted on upload, in bytes.
    pub max_small_upload: u64,
    /// Largest `.ls` listing kept for a NAR, in bytes; a NAR with a larger one is still
    /// accepted, without a listing.
    pub max_listing_size: u64,
    /// Uploads (NARs, build logs) one token may have in flight at once; more get 429.
    pub max_uploads_per_token: u32,
    /// Largest part of an upload session, in bytes (`larder push` sends parts this long):
    /// keep it below the body limit of any proxy in front of the server.
    pub max_part_size: u64,
    /// Seconds a client may pause while sending a request body before the request is
    /// answered 408 and the connection closed.
    pub body_timeout_secs: u64,
    /// Slowest average body rate, in bytes per second, once `body_timeout_secs` have
    /// passed (0 for none): a trickling body is cut off like a stalled one.
    pub min_body_rate: u64,
    /// How long a change made on another node (a token revoked, a key retired, a cache's
    /// settings) may take to reach this one: what the read path remembers that long. A
    /// change made through this node takes effect here at once. 0 remembers nothing.
    pub staleness_secs: u64,
    /// Priority announced in nix-cache-info for caches that do not set their own.
    pub default_priority: i64,
    /// Seconds between scheduled garbage collections (0: only `larder-server gc`).
    pub gc_interval_secs: u64,
    /// Seconds after which an upload never published (an abandoned push) is reclaimed.
    pub pending_upload_expiry_secs: u64,
    /// Quota of new caches, in bytes (soft: least recently used paths are evicted).
    pub default_quota_bytes: Option<u64>,
    /// Seconds a deleted path's NAR is still sent (to clients that read its narinfo just
    /// before) before its bytes may be reclaimed.
    pub nar_release_grace_secs: u64,
    /// Threads serving requests (0: one per CPU core).
    pub workers: usize,
    /// Seconds an idle keep-alive connection stays open. Substituters reuse connections
    /// between the narinfo and the NAR phases, and a proxy in front may pool them.
    pub keep_alive_secs: u64,
}

/// Where NARs, listings and build logs are kept.
#[derive(Clone, Debug)]
pub enum StorageSettings {
    /// A local directory (the embedded default: `objects/` in the data directory).
    Fs { dir: PathBuf },
    /// An S3-compatible object store.
    S3(S3Settings),
}

/// The settings as the file and the environment spell them: flat, unchecked.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    listen: SocketAddr,
    data_dir: PathBuf,
    public_url: Option<String>,
    base_domain: Option<String>,
    database_url: Option<String>,
    storage: StorageKind,
    s3_endpoint: Option<String>,
    s3_bucket: Option<String>,
    s3_region: Option<String>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_path_style: bool,
    s3_redirect_downloads: bool,
    master_key: Option<String>,
    token_secret: Option<String>,
    max_nar_size: u64,
    max_small_upload: u64,
    max_listing_size: u64,
    max_uploads_per_token: u32,
    max_part_size: u64,
    body_timeout_secs: u64,
    min_body_rate: u64,
    staleness_secs: u64,
    default_priority: i64,
    gc_interval_secs: u64,
    pending_upload_expiry_secs: u64,
    default_quota_bytes: Option<u64>,
    nar_release_grace_secs: u64,
    workers: usize,
    keep_alive_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StorageKind {
    Fs,
    S3,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("./larder-data"),
            public_url: None,
            base_domain: None,
            database_url: None,
            storage: StorageKind::Fs,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_path_style: false,
            s3_redirect_downloads: false,
            master_key: None,
            token_secret: None,
            max_nar_size: 64 << 30,
            max_small_upload: 64 << 20,
            max_listing_size: larder_protocol::nar::DEFAULT_MAX_LISTING_SIZE as u64,
            max_uploads_per_token: 32,
            max_part_size: 64 << 20,
            body_timeout_secs: 30,
            min_body_rate: 1024,
            staleness_secs: 5,
            default_priority: 41,
            gc_interval_secs: 3600,
            pending_upload_expiry_secs: 24 * 3600,
            default_quota_bytes: None,
            nar_release_grace_secs: 600,
            workers: 0,
            keep_alive_secs: 75,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        RawSettings::default().try_into().expect("the defaults are valid")
    }
}

impl TryFrom<RawSettings> for Settings {
    type Error = anyhow::Error;

    fn try_from(raw: RawSettings) -> anyhow::Result<Self> {
        let storage = match raw.storage {
            StorageKind::Fs => StorageSettings::Fs { dir: raw.data_dir.join("objects") },
            StorageKind::S3 => {
                let bucket = raw.s3_bucket.filter(|b| !b.is_empty());
                let Some(bucket) = bucket else {
                    bail!("invalid configuration: storage = \"s3\" needs s3_bucket (LARDER_S3_BUCKET)");
                };
                StorageSettings::S3(S3Settings {
                    endpoint: raw.s3_endpoint,
                    bucket,
                    region: raw.s3_region.unwrap_or_else(|| "us-east-1".to_owned()),
                    access_key_id: raw.s3_access_key_id,
                    secret_access_key: raw.s3_secret_access_key.map(SecretString::from),
                    path_style: raw.s3_path_style,
                    redirect_downloads: raw.s3_redirect_downloads,
                })
            }
        };
        if let Some(url) = &raw.database_url {
            if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
                bail!("invalid configuration: database_url (LARDER_DATABASE_URL) must start with sqlite: or postgres:");
            }
        }
        if let Some(url) = &raw.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("invalid configuration: public_url (LARDER_PUBLIC_URL) must start with http:// or https://");
            }
        }
        if let Some(domain) = &raw.base_domain {
            let valid = !domain.is_empty()
                && domain.split('.').all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if !valid {
                bail!("invalid configuration: base_domain (LARDER_BASE_DOMAIN) must be a host name such as cache.example.com");
            }
        }
        if raw.max_nar_size == 0 || raw.max_small_upload == 0 {
            bail!("invalid configuration: max_nar_size and max_small_upload must be positive");
        }
        if raw.max_part_size < crate::services::MIN_PART_SIZE {
            bail!("invalid configuration: max_part_size must be at least {} bytes (S3's smallest part)", crate::services::MIN_PART_SIZE);
        }
        if raw.max_uploads_per_token == 0 || raw.body_timeout_secs == 0 {
            bail!("invalid configuration: max_uploads_per_token and body_timeout_secs must be positive");
        }
        if raw.default_quota_bytes == Some(0) || raw.pending_upload_expiry_secs == 0 {
            bail!("invalid configuration: default_quota_bytes and pending_upload_expiry_secs must be positive");
        }
        if usize::try_from(raw.max_listing_size).is_err() {
            bail!("invalid configuration: max_listing_size is too large for this machine");
        }
        Ok(Settings {
            listen: raw.listen,
            data_dir: raw.data_dir,
            public_url: raw.public_url,
            base_domain: raw.base_domain,
            database_url: raw.database_url,
            storage,
            master_key: raw.master_key.map(SecretString::from),
            token_secret: raw.token_secret.map(SecretString::from),
            max_nar_size: raw.max_nar_size,
            max_small_upload: raw.max_small_upload,
            max_listing_size: raw.max_listing_size,
            max_uploads_per_token: raw.max_uploads_per_token,
            max_part_size: raw.max_part_size,
            body_timeout_secs: raw.body_timeout_secs,
            min_body_rate: raw.min_body_rate,
            staleness_secs: raw.staleness_secs,
            default_priority: raw.default_priority,
            gc_interval_secs: raw.gc_interval_secs,
            pending_upload_expiry_secs: raw.pending_upload_expiry_secs,
            default_quota_bytes: raw.default_quota_bytes,
            nar_release_grace_secs: raw.nar_release_grace_secs,
            workers: raw.workers,
            keep_alive_secs: raw.keep_alive_secs,
        })
    }
}

impl Settings {
    /// Loads defaults ← file (if given) ← `LARDER_*` environment, then checks that the
    /// combination makes sense. Errors name the offending key.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(RawSettings::default()));
        if let Some(file) = file {
            if !file.exists() {
                bail!("configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        let raw: RawSettings = figment
            .merge(Env::prefixed("LARDER_").filter(|key| is_setting_variable(key.as_str())))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        raw.try_into()
    }

    /// The defaults, with everything kept under `data_dir`.
    pub fn in_data_dir(data_dir: PathBuf) -> Self {
        RawSettings { data_dir, ..RawSettings::default() }.try_into().expect("the defaults are valid")
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("larder.db").display()),
        }
    }

    /// The settings as `LARDER_*` variables, secrets included: what a `larder-server`
    /// process needs to serve the same data (tests, scripts).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![("LARDER_DATA_DIR", self.data_dir.display().to_string()), ("LARDER_DATABASE_URL", self.database_url())];
        if let StorageSettings::S3(s3) = &self.storage {
            vars.extend([
                ("LARDER_STORAGE", "s3".to_owned()),
                ("LARDER_S3_ENDPOINT", s3.endpoint.clone().unwrap_or_default()),
                ("LARDER_S3_BUCKET", s3.bucket.clone()),
                ("LARDER_S3_REGION", s3.region.clone()),
                ("LARDER_S3_ACCESS_KEY_ID", s3.access_key_id.clone().unwrap_or_default()),
                ("LARDER_S3_SECRET_ACCESS_KEY", s3.secret_access_key.as_ref().map(|s| s.expose_secret().to_owned()).unwrap_or_default()),
                ("LARDER_S3_PATH_STYLE", s3.path_style.to_string()),
                ("LARDER_S3_REDIRECT_DOWNLOADS", s3.redirect_downloads.to_string()),
            ]);
        }
        for (name, secret) in [("LARDER_MASTER_KEY", &self.master_key), ("LARDER_TOKEN_SECRET", &self.token_secret)] {
            if let Some(secret) = secret {
                vars.push((name, secret.expose_secret().to_owned()));
            }
        }
        vars
    }
}

/// `LARDER_*` variables that are not settings: read by the CLI (`LARDER_CONFIG`,
/// `LARDER_PORT_FILE`) and the log set-up (`LARDER_LOG_FORMAT`). Any other is a setting,
/// so a misspelt one is reported rather than ignored.
fn is_setting_variable(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !(key == "config" || key == "port_file" || key == "log_format")
}

/// Reads a 32-byte secret from config, or from `file` in the data directory, creating the
/// file with fresh random bytes on first start. Kept owner-readable only.
pub fn load_or_create_secret(configured: Option<&SecretString>, file: &Path, key: &str) -> anyhow::Result<[u8; 32]> {
    if let Some(text) = configured {
        return decode_secret(text.expose_secret()).with_context(|| format!("invalid configuration: {key}"));
    }
    if file.exists() {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return decode_secret(text.trim()).with_context(|| format!("{} is corrupt", file.display()));
    }
    let secret: [u8; 32] = rand::random();
    write_private_file(file, hex::encode(secret).as_bytes())?;
    tracing::info!(path = %file.display(), "generated a new {key}");
    Ok(secret)
}

fn decode_secret(text: &str) -> anyhow::Result<[u8; 32]> {
    use base64::Engine;
    let bytes = if text.len() == 64 {
        hex::decode(text).context("expected 64 hex characters")?
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).context("expected 64 hex characters or base64 of 32 bytes")?
    };
    bytes.try_into().map_err(|_| anyhow::anyhow!("expected exactly 32 bytes"))
}

fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_without_a_bucket_cannot_be_built() {
        let raw = RawSettings { storage: StorageKind::S3, ..RawSettings::default() };
        assert!(Settings::try_from(raw).unwrap_err().to_string().contains("needs s3_bucket"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let raw = RawSettings {
            storage: StorageKind::S3,
            s3_bucket: Some("b".into()),
            s3_secret_access_key: Some("s3-very-secret".into()),
            master_key: Some("master-very-secret".into()),
            token_secret: Some("token-very-secret".into()),
            ..RawSettings::default()
        };
        let printed = format!("{:?}", Settings::try_from(raw).unwrap());
        assert!(!printed.contains("very-secret"), "{printed}");
    }
}
