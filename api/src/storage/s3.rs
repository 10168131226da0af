//! S3 storage (AWS or any S3-compatible engine: Garage, MinIO, R2, …).
//!
//! Uploads keep at most one part (8 MiB) in memory: small objects go up in a single
//! PutObject on commit, larger ones as a multipart upload whose parts are sent as they
//! fill. S3 makes an object visible only when its PutObject or CompleteMultipartUpload
//! succeeds, which gives the commit semantics of [`Upload`].

use secrecy::{ExposeSecret, SecretString};
use std::io;

use anyhow::{bail, Context};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures_util::stream;

use super::{ByteRange, ByteStream, Object, PartUpload, Storage, StoredPart, Upload};

/// Size of each multipart part, and the threshold above which an upload goes multipart.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's limit on the number of parts of one multipart upload.
const MAX_PARTS: i32 = 10_000;

/// `Debug` shows no secret: the key is a [`SecretString`].
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// Custom endpoint URL for S3-compatible engines; `None` for AWS.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Static credentials, used when both are set; otherwise the default AWS provider chain
    /// (environment, profile, web identity, ECS, IMDS).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted engines need.
    pub path_style: bool,
    /// Answer NAR downloads with a redirect to a presigned URL of the object, so that the
    /// bytes flow from the bucket, not through the server (clients must reach the bucket).
    pub redirect_downloads: bool,
}

#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    redirect_downloads: bool,
}

/// How long a presigned download URL is valid: long enough to start a download after the
/// redirect (a started download runs to its end), short enough to be worth little if it leaks.
const PRESIGNED_DOWNLOAD_VALIDITY: std::time::Duration = std::time::Duration::from_secs(300);

impl S3Storage {
    pub async fn new(settings: S3Settings) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(settings.region.clone()));
        match (&settings.access_key_id, &settings.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id.clone(),
                    secret.expose_secret().to_owned(),
                    None,
                    None,
                    "larder-settings",
                ));
            }
            (None, None) => {}
            _ => bail!("S3 settings: set both access_key_id and secret_access_key, or neither"),
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let sdk_config = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(settings.path_style).build();
        Ok(Self { client: Client::from_conf(s3_config), bucket: settings.bucket, redirect_downloads: settings.redirect_downloads })
    }
}

/// Whether an SDK error is an HTTP 404 (HEAD responses carry no error code to inspect).
fn is_http_not_found<E>(err: &SdkError<E, HttpResponse>) -> bool {
    err.raw_response().is_some_and(|response| response.status().as_u16() == 404)
}

/// Total object size from a `Content-Range: bytes a-b/total` header.
fn total_from_content_range(value: &str) -> Option<u64> {
    let total = value.rsplit_once('/')?.1.trim();
    total.parse().ok()
}

/// Adapts the SDK's body into our stream type, chunk by chunk, without collecting it.
fn into_byte_stream(body: SdkByteStream) -> ByteStream {
    Box::pin(stream::unfold(body, |mut body| async move {
        match body.next().await {
            None => None,
            Some(Ok(bytes)) => Some((Ok(bytes), body)),
            Some(Err(e)) => Some((Err(io::Error::other(e)), body)),
        }
    }))
}

#[async_trait]
impl Storage for S3Storage {
    async fn download_url(&self, key: &str) -> anyhow::Result<Option<String>> {
        if !self.redirect_downloads {
            return Ok(None);
        }
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(PRESIGNED_DOWNLOAD_VALIDITY)?;
        let request =
            self.client.get_object().bucket(&self.bucket).key(key).presigned(config).await.with_context(|| format!("presigning {key}"))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn begin_upload(&self, key: &str) -> anyhow::Result<Box<dyn Upload>> {
        Ok(Box::new(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            buffer: BytesMut::new(),
            written: 0,
            multipart: None,
            finished: false,
            failed: false,
        }))
    }

    async fn begin_parts(&self, key: &str) -> anyhow::Result<String> {
        create_multipart_upload(&self.client, &self.bucket, key).await
    }

    async fn begin_part(&self, key: &str, assembly: &str, number: u32) -> anyhow::Result<Box<dyn PartUpload>> {
        if number == 0 || number > MAX_PARTS as u32 {
            bail!("S3 part number {number} of {key} outside 1..={MAX_PARTS}");
        }
        // Spooled to a local file first: UploadPart needs the length up front and a body it
        // can re-send on retry, and a part cut short must never reach the bucket.
        let spool = tempfile::NamedTempFile::new().context("creating a spool file for an S3 part")?.into_temp_path();
        let file = tokio::fs::File::create(&spool).await.context("opening the spool file of an S3 part")?;
        Ok(Box::new(S3PartUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: assembly.to_owned(),
            number: number as i32,
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            spool,
            failed: false,
        }))
    }

    async fn complete_parts(&self, key: &str, assembly: &str, parts: &[StoredPart]) -> anyhow::Result<()> {
        let parts = parts.iter().map(|part| CompletedPart::builder().part_number(part.number as i32).e_tag(&part.tag).build()).collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(assembly)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .with_context(|| format!("S3 CompleteMultipartUpload of {key}"))?;
        Ok(())
    }

    async fn abort_parts(&self, key: &str, assembly: &str) -> anyhow::Result<()> {
        match self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(assembly).send().await {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("NoSuchUpload") || is_http_not_found(&err) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("S3 AbortMultipartUpload of {key}")),
        }
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> anyhow::Result<Option<Object>> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(range) = range {
            if range.start > range.end {
                bail!("invalid range {}-{} for object {key}", range.start, range.end);
            }
            request = request.range(format!("bytes={}-{}", range.start, range.end));
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(err) => {
                let missing_key = err.as_service_error().is_some_and(|e| e.is_no_such_key())
                    || (is_http_not_found(&err) && err.code() != Some("NoSuchBucket"));
                if missing_key {
                    return Ok(None);
                }
                return Err(err).with_context(|| format!("S3 GetObject of {key}"));
            }
        };
        let total_size = match (range, output.content_range()) {
            (Some(_), Some(content_range)) => total_from_content_range(content_range)
                .with_context(|| format!("S3 GetObject of {key}: unparseable Content-Range {content_range:?}"))?,
            (Some(_), None) => {
                bail!("S3 GetObject of {key}: ranged response without Content-Range")
            }
            (None, _) => output
                .content_length()
                .and_then(|len| u64::try_from(len).ok())
                .with_context(|| format!("S3 GetObject of {key}: no Content-Length"))?,
        };
        Ok(Some(Object { stream: into_byte_stream(output.body), total_size }))
    }

    async fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => {
                let len = output
                    .content_length()
                    .and_then(|len| u64::try_from(len).ok())
                    .with_context(|| format!("S3 HeadObject of {key}: no Content-Length"))?;
                Ok(Some(len))
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) || is_http_not_found(&err) => Ok(None),
            Err(err) => Err(err).with_context(|| format!("S3 HeadObject of {key}")),
        }
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(()),
            // S3 answers 204 for missing keys; some engines answer 404 NoSuchKey.
            Err(err) if err.code() == Some("NoSuchKey") => Ok(()),
            Err(err) => Err(err).with_context(|| format!("S3 DeleteObject of {key}")),
        }
    }

    async fn health_check(&self) -> anyhow::Result<()> {
        self.client.head_bucket().bucket(&self.bucket).send().await.with_context(|| format!("S3 HeadBucket of bucket {}", self.bucket))?;
        Ok(())
    }

    /// Aborts multipart uploads begun more than `older_than` ago (S3 tells when an upload
    /// began, not when its last part came, so callers pass a generous age); an upload
    /// session's assembly is one of them, so the older of the two ages applies to all.
    async fn remove_stale_uploads(
        &self,
        older_than: std::time::Duration,
        assemblies_older_than: std::time::Duration,
    ) -> anyhow::Result<usize> {
        let cutoff = std::time::SystemTime::now() - older_than.max(assemblies_older_than);
        let mut removed = 0;
        let (mut key_marker, mut upload_id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .with_context(|| format!("S3 ListMultipartUploads of bucket {}", self.bucket))?;
            for upload in page.uploads() {
                let (Some(key), Some(upload_id), Some(initiated)) = (upload.key(), upload.upload_id(), upload.initiated()) else {
                    continue;
                };
                if std::time::SystemTime::try_from(*initiated).is_ok_and(|t| t < cutoff) {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .send()
                        .await
                        .with_context(|| format!("S3 AbortMultipartUpload of {key}"))?;
                    removed += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(removed);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Ok(removed);
            }
        }
    }
}

/// Starts a multipart upload of `key`; returns its id.
async fn create_multipart_upload(client: &Client, bucket: &str, key: &str) -> anyhow::Result<String> {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("S3 CreateMultipartUpload of {key}"))?;
    Ok(created.upload_id().with_context(|| format!("S3 CreateMultipartUpload of {key}: no upload id"))?.to_owned())
}

/// An open multipart upload: its id and the parts sent so far.
struct Multipart {
    upload_id: String,
    parts: Vec<CompletedPart>,
}

struct S3Upload {
    client: Client,
    bucket: String,
    key: String,
    /// Bytes not yet sent: less than one part between calls.
    buffer: BytesMut,
    written: u64,
    multipart: Option<Multipart>,
    /// Committed or aborted (or the abort was handed off): nothing for `Drop` to do.
    finished: bool,
    /// A write failed: a part may be missing, so the upload must not be committed.
    failed: bool,
}

impl S3Upload {
    /// Sends `part` as the next part, starting the multipart upload if needed.
    async fn send_part(&mut self, part: Bytes) -> anyhow::Result<()> {
        let key = &self.key;
        if self.multipart.is_none() {
            let upload_id = create_multipart_upload(&self.client, &self.bucket, key).await?;
            self.multipart = Some(Multipart { upload_id, parts: Vec::new() });
        }
        let multipart = self.multipart.as_mut().expect("multipart upload just started");
        let part_number = multipart.parts.len() as i32 + 1;
        if part_number > MAX_PARTS {
            bail!("S3 upload of {key}: object too large (more than {MAX_PARTS} parts of {PART_SIZE} bytes)");
        }
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&multipart.upload_id)
            .part_number(part_number)
            .body(SdkByteStream::from(part))
            .send()
            .await
            .with_context(|| format!("S3 UploadPart {part_number} of {key}"))?;
        // Only the ETag: the SDK already sends a per-part checksum that the server checks on
        // UploadPart, and echoing part checksums in CompleteMultipartUpload is rejected by
        // engines (Garage) when the upload was not created with a checksum algorithm.
        multipart.parts.push(CompletedPart::builder().part_number(part_number).set_e_tag(uploaded.e_tag().map(str::to_owned)).build());
        Ok(())
    }

    /// Appends `chunk`, sending every part that fills up. The buffer never grows past one part.
    async fn buffer_and_send(&mut self, mut chunk: Bytes) -> anyhow::Result<()> {
        self.written += chunk.len() as u64;
        while !chunk.is_empty() {
            if self.buffer.is_empty() && chunk.len() >= PART_SIZE {
                // A whole part straight from the caller's buffer, without copying.
                let part = chunk.split_to(PART_SIZE);
                self.send_part(part).await?;
                continue;
            }
            let take = (PART_SIZE - self.buffer.len()).min(chunk.len());
            let needed = self.buffer.len() + take;
            if needed > self.buffer.capacity() {
                // Small objects get small buffers; past 1 MiB go straight to a whole part, so
                // capacity doubling never overshoots PART_SIZE.
                let capacity = if needed > 1024 * 1024 { PART_SIZE } else { needed.next_power_of_two() };
                let mut grown = BytesMut::with_capacity(capacity);
                grown.extend_from_slice(&self.buffer);
                self.buffer = grown;
            }
            self.buffer.extend_from_slice(&chunk.split_to(take));
            if self.buffer.len() == PART_SIZE {
                let part = self.buffer.split().freeze();
                self.send_part(part).await?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> anyhow::Result<u64> {
        let key = self.key.clone();
        if self.multipart.is_none() {
            let body = self.buffer.split().freeze();
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(SdkByteStream::from(body))
                .send()
                .await
                .with_context(|| format!("S3 PutObject of {key}"))?;
            self.finished = true;
            return Ok(self.written);
        }
        if !self.buffer.is_empty() {
            let last = self.buffer.split().freeze();
            self.send_part(last).await?;
        }
        let multipart = self.multipart.as_mut().expect("multipart upload in progress");
        let parts = std::mem::take(&mut multipart.parts);
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(&multipart.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .with_context(|| format!("S3 CompleteMultipartUpload of {key}"))?;
        self.finished = true;
        Ok(self.written)
    }

    async fn abort_multipart(&mut self) -> anyhow::Result<()> {
        self.finished = true;
        self.buffer = BytesMut::new();
        if let Some(multipart) = self.multipart.take() {
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&multipart.upload_id)
                .send()
                .await
                .with_context(|| format!("S3 AbortMultipartUpload of {}", self.key))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        if self.finished {
            bail!("S3 upload of {}: already finished", self.key);
        }
        if self.failed {
            bail!("S3 upload of {}: an earlier write failed", self.key);
        }
        let result = self.buffer_and_send(chunk).await;
        // A failed part leaves a hole: the upload can only be aborted now.
        self.failed = result.is_err();
        result
    }

    async fn commit(mut self: Box<Self>) -> anyhow::Result<u64> {
        if self.finished {
            bail!("S3 upload of {}: already finished", self.key);
        }
        if self.failed {
            let _ = self.abort_multipart().await;
            bail!("S3 upload of {}: not committed, an earlier write failed", self.key);
        }
        match self.finish().await {
            Ok(written) => Ok(written),
            Err(err) => {
                // Don't leave a dangling multipart upload (storage is billed until aborted).
                let _ = self.abort_multipart().await;
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> anyhow::Result<()> {
        self.abort_multipart().await
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(multipart) = self.multipart.take() else {
            return; // nothing was sent to S3
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let bucket = std::mem::take(&mut self.bucket);
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            let result = client.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&multipart.upload_id).send().await;
            if let Err(err) = result {
                tracing::warn!(
                    key,
                    error = %aws_sdk_s3::error::DisplayErrorContext(&err),
                    "failed to abort dropped S3 multipart upload"
                );
            }
        });
    }
}

/// One part of an assembly, spooled to a local file until it is complete.
struct S3PartUpload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    number: i32,
    file: tokio::io::BufWriter<tokio::fs::File>,
    /// Removed when dropped, whatever happened.
    spool: tempfile::TempPath,
    failed: bool,
}

#[async_trait]
impl PartUpload for S3PartUpload {
    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        if self.failed {
            bail!("S3 part {} of {}: an earlier write failed", self.number, self.key);
        }
        let result = self.file.write_all(&chunk).await;
        self.failed = result.is_err();
        result.with_context(|| format!("spooling S3 part {} of {}", self.number, self.key))
    }

    async fn commit(mut self: Box<Self>) -> anyhow::Result<String> {
        use tokio::io::AsyncWriteExt;
        if self.failed {
            bail!("S3 part {} of {}: not sent, an earlier write failed", self.number, self.key);
        }
        self.file.flush().await.with_context(|| format!("spooling S3 part {} of {}", self.number, self.key))?;
        let body =
            SdkByteStream::from_path(&self.spool).await.with_context(|| format!("reading spooled part {} of {}", self.number, self.key))?;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(self.number)
            .body(body)
            .customize()
            // A body read from a file would otherwise go as aws-chunked with a trailing
            // checksum, whose signature S3-compatible engines (Garage) refuse.
            .config_override(aws_sdk_s3::config::Builder::new().request_checksum_calculation(RequestChecksumCalculation::WhenRequired))
            .send()
            .await
            .with_context(|| format!("S3 UploadPart {} of {}", self.number, self.key))?;
        uploaded.e_tag().map(str::to_owned).with_context(|| format!("S3 UploadPart {} of {}: no ETag", self.number, self.key))
    }

    async fn abort(self: Box<Self>) -> anyhow::Result<()> {
        // Nothing reached the bucket; dropping removes the spool file.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret() {
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:3900".into()),
            bucket: "b".into(),
            region: "garage".into(),
            access_key_id: Some("GKid".into()),
            secret_access_key: Some("very-secret".into()),
            path_style: true,
            redirect_downloads: false,
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("GKid"));
    }

    #[test]
    fn parses_content_range_total() {
        assert_eq!(total_from_content_range("bytes 0-0/1234"), Some(1234));
        assert_eq!(total_from_content_range("bytes 5-9/*"), None);
    }
}
