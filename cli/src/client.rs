//! The REST API (`/api/v1`, see openapi.yaml), with the refusals users hit turned into
//! what to do about them.

use anyhow::{anyhow, bail, Context};
use larder_api_types as api;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failure worth trying again: the server was unreachable, restarting, overloaded, or the
/// connection dropped. Carried inside the `anyhow::Error` (see [`is_transient`]).
#[derive(Debug)]
pub struct Transient(pub anyhow::Error);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Transient {}

pub fn is_transient(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Transient>().is_some()
}

/// Statuses that say "not now" rather than "no".
fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// How long one part or one completion may take at most (a 64 MiB part on a slow link, the
/// server verifying a multi-GiB NAR).
const LONG_REQUEST: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("larder/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self { http, server: server.to_owned(), token })
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> anyhow::Result<T> {
        let url = format!("{}/api/v1{path}", self.server);
        let mut request = self.authorized(self.http.request(method, &url));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(&url, request).await
    }

    /// Sends an API request and reads its JSON answer; unreachable servers, dropped
    /// connections and 5xx/408/429 answers are [`Transient`].
    async fn answer<T: DeserializeOwned>(&self, url: &str, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let response = request.send().await.map_err(|error| Transient(unreachable_server(&self.server, &error)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| Transient(anyhow!("reading the answer from {url}: {e}")))?;
        if status.is_success() {
            let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(body).with_context(|| format!("{url} answered something that is not Larder's JSON"));
        }
        let error: Option<api::ErrorBody> = serde_json::from_slice(&bytes).ok();
        let refused = refusal(status, error, self.token.is_some());
        Err(if is_transient_status(status) { Transient(refused).into() } else { refused })
    }

    /// `POST` taking as long as the server needs (completing an upload).
    pub async fn post_long<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        let url = format!("{}/api/v1{path}", self.server);
        self.answer(&url, self.authorized(self.http.post(&url)).timeout(LONG_REQUEST).json(body)).await
    }

    /// `PUT`s `length` bytes of `file` from `offset` as an upload part, streamed from disk.
    pub async fn put_part(&self, path: &str, file: &std::path::Path, offset: u64, length: u64) -> anyhow::Result<api::UploadedPart> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let url = format!("{}/api/v1{path}", self.server);
        let mut reader = tokio::fs::File::open(file).await?;
        reader.seek(std::io::SeekFrom::Start(offset)).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(reader.take(length), 256 * 1024));
        let request = self
            .authorized(self.http.put(&url))
            .timeout(LONG_REQUEST)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(body);
        self.answer(&url, request).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str, body: Option<&impl Serialize>) -> anyhow::Result<()> {
        self.call::<serde_json::Value>(Method::DELETE, path, body).await.map(|_| ())
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// PUTs a small body to a binary-cache URL.
    pub async fn put_text(&self, url: &str, content_type: &str, body: String) -> anyhow::Result<()> {
        let request = self.authorized(self.http.put(url)).header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        self.send_put(request).await
    }

    /// PUTs a file to a binary-cache URL, streamed from disk.
    pub async fn put_file(&self, url: &str, content_type: &str, file: &std::path::Path, size: u64) -> anyhow::Result<()> {
        let reader = tokio::fs::File::open(file).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024));
        let request = self
            .authorized(self.http.put(url))
            .timeout(LONG_REQUEST)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        self.send_put(request).await
    }

    /// Sends a binary-cache PUT; failures worth retrying are [`Transient`].
    async fn send_put(&self, request: reqwest::RequestBuilder) -> anyhow::Result<()> {
        let response = request.send().await.map_err(|error| Transient(unreachable_server(&self.server, &error)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let refused = protocol_refusal(status, text.trim(), self.token.is_some());
        Err(if is_transient_status(status) { Transient(refused).into() } else { refused })
    }

    /// Whether the server answers at all (`/healthz`).
    pub async fn check_reachable(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.server);
        let response = self.http.get(&url).send().await.map_err(|error| unreachable_server(&self.server, &error))?;
        if !response.status().is_success() {
            bail!("{url} answered {}: is {} a Larder server?", response.status(), self.server);
        }
        Ok(())
    }
}

fn unreachable_server(server: &str, error: &reqwest::Error) -> anyhow::Error {
    anyhow!("cannot reach the server at {server} ({error}): check the URL (--server, LARDER_SERVER or `larder login`) and your network")
}

/// A refusal on the binary cache protocol (short text bodies), in words that say what to do.
fn protocol_refusal(status: StatusCode, body: &str, had_token: bool) -> anyhow::Error {
    let said = if body.is_empty() { String::new() } else { format!(": {body}") };
    match status {
        StatusCode::UNAUTHORIZED if !had_token => anyhow!("the cache needs a token ({status}){said}\nRun `larder login` with a write token."),
        StatusCode::UNAUTHORIZED => anyhow!(
            "the token was refused ({status}){said}\nIt may have expired or been revoked, or be for another cache: create a new one and `larder login` again."
        ),
        StatusCode::FORBIDDEN => anyhow!("the token may not push ({status}){said}\nUse a token with write permission."),
        _ => anyhow!("the server refused ({status}){said}"),
    }
}

/// A refusal in words that say what to do.
fn refusal(status: StatusCode, error: Option<api::ErrorBody>, had_token: bool) -> anyhow::Error {
    let message = error.as_ref().map_or_else(|| status.to_string(), |e| e.message.clone());
    match (status, error.as_ref().map(|e| e.error.as_str())) {
        (StatusCode::UNAUTHORIZED, _) if !had_token => {
            anyhow!("{message}\nLog in first: `larder login --server URL` (it reads the token from stdin), or set LARDER_TOKEN.")
        }
        (StatusCode::UNAUTHORIZED, Some("unauthorized")) if message.contains("token refused") => {
            anyhow!("{message}\nThe token has expired or was revoked: create a new one (dashboard or `larder token create`) and run `larder login` again.")
        }
        (StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND, _) if message.contains("cache not found") => {
            anyhow!("{message}\nCheck the cache's name (`larder cache list`), and that your token is for it.")
        }
        (StatusCode::FORBIDDEN, _) => anyhow!("{message}\nUse a token with more permission (write to push, admin to manage the cache)."),
        _ => anyhow!("{message} ({status})"),
    }
}
