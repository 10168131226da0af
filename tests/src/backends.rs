//! The real backends a test runs against, each private to the test and removed after it:
//! a Postgres database and an S3 bucket (the servers are started by `scripts/test.sh`).

use std::path::Path;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use sqlx::{Connection, Executor};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the Postgres and S3 tests need real servers. Run the tests through \
             `bash scripts/test.sh` (it starts them and sets the TEST_* variables)"
        )
    })
}

/// Connection settings of the test S3 server.
#[derive(Clone, Debug)]
pub struct S3Env {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Env {
    pub fn from_env() -> Self {
        Self {
            endpoint: required_env("TEST_S3_ENDPOINT"),
            region: required_env("TEST_S3_REGION"),
            access_key_id: required_env("TEST_S3_ACCESS_KEY_ID"),
            secret_access_key: required_env("TEST_S3_SECRET_ACCESS_KEY"),
        }
    }
}

/// How [`TestBucket::contents`] names an unfinished multipart upload, before its key.
pub const MULTIPART_UPLOAD_OF: &str = "multipart upload of ";

/// A bucket of the test's own, created through the S3 API.
pub struct TestBucket {
    pub env: S3Env,
    pub client: aws_sdk_s3::Client,
    pub name: String,
}

impl TestBucket {
    pub async fn create() -> Self {
        let env = S3Env::from_env();
        let name = format!("larder-test-{}", uuid::Uuid::new_v4().simple());
        let sdk_config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(env.region.clone()))
            .endpoint_url(&env.endpoint)
            .credentials_provider(Credentials::new(&env.access_key_id, &env.secret_access_key, None, None, "larder-tests"))
            .load()
            .await;
        let client = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(true).build());
        client
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {name} at {}: {}", env.endpoint, aws_sdk_s3::error::DisplayErrorContext(&e)));
        Self { env, client, name }
    }

    /// The server's settings for this bucket (path-style, static credentials).
    pub fn s3_settings(&self) -> larder_api::storage::S3Settings {
        larder_api::storage::S3Settings {
            endpoint: Some(self.env.endpoint.clone()),
            bucket: self.name.clone(),
            region: self.env.region.clone(),
            access_key_id: Some(self.env.access_key_id.clone()),
            secret_access_key: Some(self.env.secret_access_key.clone().into()),
            path_style: true,
            redirect_downloads: false,
        }
    }

    /// Every object key in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.name).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.expect("ListObjectsV2");
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        keys
    }

    /// Object keys, then unfinished multipart uploads as [`MULTIPART_UPLOAD_OF`] and the
    /// key: everything the bucket holds.
    pub async fn contents(&self) -> Vec<String> {
        let mut found = self.keys().await;
        found.extend(self.pending_multipart_uploads().await.into_iter().map(|key| format!("{MULTIPART_UPLOAD_OF}{key}")));
        found
    }

    /// Unfinished multipart uploads, by key.
    async fn pending_multipart_uploads(&self) -> Vec<String> {
        let uploads = self.client.list_multipart_uploads().bucket(&self.name).send().await.expect("ListMultipartUploads");
        uploads.uploads().iter().map(|u| u.key().unwrap_or("?").to_owned()).collect()
    }

    /// Aborts uploads, deletes objects, then the bucket (if a test has not already).
    pub async fn remove(&self) {
        if self.client.head_bucket().bucket(&self.name).send().await.is_err() {
            return;
        }
        let uploads = self.client.list_multipart_uploads().bucket(&self.name).send().await;
        for upload in uploads.iter().flat_map(|u| u.uploads()) {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.name)
                .key(upload.key().unwrap_or_default())
                .upload_id(upload.upload_id().unwrap_or_default())
                .send()
                .await;
        }
        for key in self.keys().await {
            let _ = self.client.delete_object().bucket(&self.name).key(key).send().await;
        }
        if let Err(e) = self.client.delete_bucket().bucket(&self.name).send().await {
            eprintln!("warning: deleting bucket {}: {}", self.name, aws_sdk_s3::error::DisplayErrorContext(&e));
        }
    }
}

/// A Postgres database of the test's own.
pub struct TestDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin_url = required_env("TEST_PG_URL");
        let name = format!("larder_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&format!("{admin_url}/postgres")).await.expect("connecting to the test Postgres");
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("CREATE DATABASE");
        let url = format!("{admin_url}/{name}");
        Self { admin_url, name, url }
    }

    pub async fn remove(&self) {
        let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", self.admin_url)).await.expect("connecting to the test Postgres");
        if let Err(e) = conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str()).await {
            eprintln!("warning: dropping database {}: {e}", self.name);
        }
    }
}

/// Every file below `dir`, as paths relative to it.
pub fn files_below(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), &format!("{name}/"), found);
            } else {
                found.push(name);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, "", &mut found);
    found.sort();
    found
}
