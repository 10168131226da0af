//! A JSON client for `/api/v1`, acting anonymously or with one token. Every error answer
//! is checked to have the API's `{error, message}` shape (except through
//! [`Api::call_raw`], which sends and returns bytes as they are).

use std::net::IpAddr;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::TestServer;

/// The password of every account the tests sign up.
pub const PASSPHRASE: &str = "correct horse battery staple";

#[derive(Clone)]
pub struct Api<'a> {
    server: &'a TestServer,
    http: reqwest::Client,
    token: Option<String>,
}

impl<'a> Api<'a> {
    pub fn anonymous(server: &'a TestServer) -> Self {
        Self { server, http: server.http.clone(), token: None }
    }

    /// Anonymous, from another client address of the loopback range (e.g. 127.0.0.2).
    pub fn from_address(server: &'a TestServer, address: IpAddr) -> Self {
        let http = reqwest::Client::builder().local_address(address).build().expect("HTTP client");
        Self { server, http, token: None }
    }

    /// The same client acting with `token`.
    pub fn with(&self, token: &str) -> Api<'a> {
        Api { server: self.server, http: self.http.clone(), token: Some(token.to_owned()) }
    }

    pub fn token_secret(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request with an optional JSON body; returns the status and the answer parsed as
    /// JSON (`Null` for an empty body). An error answer must have the `{error, message}` shape.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, text) = self.call_text(method, path, body).await;
        if text.is_empty() {
            return (status, Value::Null);
        }
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    /// As [`Api::call`], but returns the answer's text as the server sent it (for checks on
    /// the exact bytes). An error answer must still have the `{error, message}` shape.
    pub async fn call_text(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let body = body.map(|body| serde_json::to_vec(&body).expect("serialise the JSON body"));
        let (status, text) = self.call_raw(method, path, body, "application/json").await;
        if !status.is_success() {
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(value["error"].is_string() && value["message"].is_string(), "{path}: error without code and message: {text}");
        }
        (status, text)
    }

    /// A request with `body` sent as it is, under `content_type` (sent with a body only);
    /// returns the status and the answer's text, with no check on either: for bodies that
    /// are not JSON, or are not labelled as such, and for answers checked by the caller.
    pub async fn call_raw(&self, method: Method, path: &str, body: Option<Vec<u8>>, content_type: &str) -> (StatusCode, String) {
        let mut request = self.http.request(method, format!("{}/api/v1{path}", self.server.base_url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.expect("API request");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, body).await
    }

    /// Signs up and logs in; returns a client acting with the session token.
    pub async fn account(&self, username: &str) -> Api<'a> {
        let (status, body) =
            self.post("/accounts", json!({"username": username, "email": format!("{username}@example.com"), "password": PASSPHRASE})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(body.get("password_hash").is_none());
        self.log_in(username).await
    }

    /// Logs in with [`PASSPHRASE`]; returns a client acting with the session token.
    pub async fn log_in(&self, username: &str) -> Api<'a> {
        let (status, body) = self.post("/sessions", json!({"username": username, "password": PASSPHRASE})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.with(body["token"].as_str().unwrap())
    }

    /// Creates a token (`POST /tokens`, which must succeed); returns (id, secret).
    pub async fn token(&self, body: Value) -> (String, String) {
        let (status, created) = self.post("/tokens", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (created["id"].as_str().unwrap().to_owned(), created["token"].as_str().unwrap().to_owned())
    }

    /// Creates a cache (`POST /caches`, which must succeed).
    pub async fn cache(&self, name: &str, public: bool) {
        let (status, body) = self.post("/caches", json!({"name": name, "public": public})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

/// One token of every kind a route must be tried with, around alice's private cache
/// `alice-private`. Alice also owns the public `alice-public`; bob, another tenant, owns
/// `bob-cache`.
pub struct TokenKinds {
    /// Bob's admin token on his own cache.
    pub bobs: String,
    pub read: String,
    pub write: String,
    pub admin: String,
    /// An admin token of `alice-private`, revoked.
    pub revoked: String,
    /// A token of `alice-private`, expired by the time this returns.
    pub expired: String,
    /// Alice's personal admin token limited to `alice-public`.
    pub limited_elsewhere: String,
    /// Alice's unlimited personal write token.
    pub personal: String,
}

impl TokenKinds {
    /// Signs up alice and bob with their caches and makes the tokens; `expired` is a cache
    /// token with `expired_permission` (waits 2.1 s for it to expire).
    pub async fn around_alice_private(server: &TestServer, expired_permission: &str) -> Self {
        let alice = Api::anonymous(server).account("alice").await;
        alice.cache("alice-private", false).await;
        alice.cache("alice-public", true).await;
        let bob = Api::anonymous(server).account("bob").await;
        bob.cache("bob-cache", false).await;
        let (_, bobs) = bob.token(json!({"kind": "cache", "cache": "bob-cache", "permission": "admin"})).await;
        let token = |permission: &str| json!({"kind": "cache", "cache": "alice-private", "permission": permission});
        let (_, read) = alice.token(token("read")).await;
        let (_, write) = alice.token(token("write")).await;
        let (_, admin) = alice.token(token("admin")).await;
        let (revoked_id, revoked) = alice.token(token("admin")).await;
        let (status, answer) = alice.delete(&format!("/tokens/{revoked_id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
        let (_, expired) =
            alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": expired_permission, "expires_in": 1})).await;
        let (_, limited_elsewhere) = alice.token(json!({"kind": "personal", "caches": ["alice-public"], "permission": "admin"})).await;
        let (_, personal) = alice.token(json!({"kind": "personal", "permission": "write"})).await;
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        Self { bobs, read, write, admin, revoked, expired, limited_elsewhere, personal }
    }
}
