//! Attacks by an ordinary account holder, each reproduced as it was found and answered as
//! it must be: limited tokens that tried to act beyond their caches, a narinfo with tens of
//! thousands of references, listing and decompression bombs, and bodies that stall or
//! trickle. Server-side figures (latencies, memory) are printed for the record.

use std::time::{Duration, Instant, SystemTime};

use larder_protocol::hash::Sha256Hash;
use larder_protocol::nar::writer::{write_string, Node};
use larder_protocol::nix32;
use larder_tests::raw_http::slow_exchange;
use larder_tests::{hash_part, nix32_sha256, on_both_backends, store_path_of, Api, Settings, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

on_both_backends!(
    limited_tokens_stay_within_their_caches,
    a_limited_token_whose_caches_are_gone_acts_on_nothing,
    huge_reference_lists_are_refused_without_stalling_the_server,
    a_listing_bomb_keeps_memory_bounded,
    a_decompression_bomb_stops_at_max_nar_size with small_max_nar_size,
    stalled_and_trickling_bodies_are_cut_off with short_body_timeouts,
    one_token_cannot_hold_every_upload with short_body_timeouts,
    leftovers_of_interrupted_uploads_are_removed_at_start,
);

fn small_max_nar_size(settings: &mut Settings) {
    settings.max_nar_size = 1_000_000;
}

/// Short enough to wait for in a test, long enough for a loaded machine to send a request.
const BODY_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_UPLOADS_PER_TOKEN: u32 = 4;

fn short_body_timeouts(settings: &mut Settings) {
    settings.body_timeout_secs = BODY_TIMEOUT.as_secs();
    settings.min_body_rate = 1024;
    settings.max_uploads_per_token = MAX_UPLOADS_PER_TOKEN;
}

// ---------------------------------------------------------------------------------------
// Limited tokens

/// Names of the caches in a `GET /caches` answer.
fn names(caches: &Value) -> Vec<&str> {
    caches.as_array().expect("a list").iter().map(|c| c["name"].as_str().unwrap()).collect()
}

/// Ids in a `GET /tokens` answer.
fn ids(tokens: &Value) -> Vec<&str> {
    tokens.as_array().expect("a list").iter().map(|t| t["id"].as_str().unwrap()).collect()
}

async fn limited_tokens_stay_within_their_caches(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("mine", false).await;
    alice.cache("other", false).await;
    let (mine_read_id, _) = alice.token(json!({"kind": "cache", "cache": "mine", "permission": "read"})).await;
    let (other_read_id, other_read) = alice.token(json!({"kind": "cache", "cache": "other", "permission": "read"})).await;
    let (unlimited_id, _) = alice.token(json!({"kind": "personal", "permission": "read"})).await;
    let (limited_id, limited) = alice.token(json!({"kind": "personal", "caches": ["mine"], "permission": "admin"})).await;
    let limited = alice.with(&limited);

    // Every /api/v1 route, with a personal admin token limited to `mine`: on `other` it
    // answers as for a cache that does not exist; account-wide actions are refused.
    let routes: Vec<(Method, String, Option<Value>, StatusCode)> = vec![
        (Method::GET, "/account".into(), None, StatusCode::OK),
        (Method::DELETE, "/account".into(), Some(json!({"confirm": "alice"})), StatusCode::FORBIDDEN),
        (
            Method::PUT,
            "/account/password".into(),
            Some(json!({"current_password": larder_tests::PASSPHRASE, "new_password": "a stolen new passphrase"})),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/accounts".into(),
            Some(json!({"username": "zed", "email": "zed@example.com", "password": "correct horse battery"})),
            StatusCode::CREATED,
        ),
        (Method::POST, "/sessions".into(), Some(json!({"username": "alice", "password": "not the passphrase"})), StatusCode::UNAUTHORIZED),
        (Method::DELETE, "/sessions/current".into(), None, StatusCode::BAD_REQUEST),
        (Method::GET, "/caches".into(), None, StatusCode::OK),
        (Method::POST, "/caches".into(), Some(json!({"name": "sneaky", "public": true})), StatusCode::FORBIDDEN),
        (Method::GET, "/caches/other".into(), None, StatusCode::UNAUTHORIZED),
        (Method::PATCH, "/caches/other".into(), Some(json!({"public": true})), StatusCode::UNAUTHORIZED),
        (Method::DELETE, "/caches/other".into(), Some(json!({"confirm": "other"})), StatusCode::UNAUTHORIZED),
        (Method::GET, "/caches/other/keys".into(), None, StatusCode::UNAUTHORIZED),
        (Method::POST, "/caches/other/keys".into(), None, StatusCode::UNAUTHORIZED),
        (Method::DELETE, "/caches/other/keys/other-1".into(), None, StatusCode::UNAUTHORIZED),
        (
            Method::POST,
            "/caches/other/public-keys".into(),
            Some(json!({"public_key": "x-1:iOhYVo9K9bOKL5FU79DypZN103FPj9iXGFcVUVX2tIQ="})),
            StatusCode::UNAUTHORIZED,
        ),
        (Method::POST, "/caches/other/secret-key".into(), Some(json!({"secret_key": "not a key"})), StatusCode::UNAUTHORIZED),
        (Method::PUT, "/caches/other/signing-mode".into(), Some(json!({"mode": "client", "drop_paths": true})), StatusCode::UNAUTHORIZED),
        (Method::GET, "/caches/other/gc".into(), None, StatusCode::UNAUTHORIZED),
        (
            Method::PUT,
            "/caches/other/gc".into(),
            Some(json!({"keep_days": 0, "quota_bytes": null, "quota_mode": "evict"})),
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/caches/other/gc/preview".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/caches/other/pins".into(), None, StatusCode::UNAUTHORIZED),
        (
            Method::POST,
            "/caches/other/pins".into(),
            Some(json!({"name": "p", "store_path": "00bgd045z0d4icpbc2yyz4gx48ak44la-x"})),
            StatusCode::UNAUTHORIZED,
        ),
        (Method::DELETE, "/caches/other/pins/p".into(), None, StatusCode::UNAUTHORIZED),
        (Method::DELETE, "/caches/other/paths/00bgd045z0d4icpbc2yyz4gx48ak44la".into(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/caches/other/usage".into(), None, StatusCode::UNAUTHORIZED),
        (Method::POST, "/caches/other/missing-paths".into(), Some(json!({"store_paths": []})), StatusCode::UNAUTHORIZED),
        (
            Method::POST,
            "/caches/other/uploads".into(),
            Some(json!({"store_path": "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-x", "nar_hash": "sha256:x", "nar_size": 1})),
            StatusCode::UNAUTHORIZED,
        ),
        (Method::PUT, "/caches/other/uploads/0123456789abcdef0123456789abcdef/parts/1".into(), Some(json!("x")), StatusCode::UNAUTHORIZED),
        (Method::GET, "/caches/other/uploads/0123456789abcdef0123456789abcdef".into(), None, StatusCode::UNAUTHORIZED),
        (Method::DELETE, "/caches/other/uploads/0123456789abcdef0123456789abcdef".into(), None, StatusCode::UNAUTHORIZED),
        (Method::POST, "/caches/other/uploads/0123456789abcdef0123456789abcdef/complete".into(), None, StatusCode::UNAUTHORIZED),
        // Its account's usage, of its caches only (checked below).
        (Method::GET, "/account/usage".into(), None, StatusCode::OK),
        (Method::GET, "/tokens".into(), None, StatusCode::OK),
        (Method::POST, "/tokens".into(), Some(json!({"kind": "personal", "permission": "admin"})), StatusCode::FORBIDDEN),
        (
            Method::POST,
            "/tokens".into(),
            Some(json!({"kind": "personal", "caches": ["other"], "permission": "read"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/tokens".into(),
            Some(json!({"kind": "personal", "caches": ["mine", "other"], "permission": "read"})),
            StatusCode::UNAUTHORIZED,
        ),
        (Method::POST, "/tokens".into(), Some(json!({"kind": "cache", "cache": "other", "permission": "read"})), StatusCode::UNAUTHORIZED),
        (Method::DELETE, format!("/tokens/{other_read_id}"), None, StatusCode::NOT_FOUND),
        (Method::DELETE, format!("/tokens/{unlimited_id}"), None, StatusCode::NOT_FOUND),
        // Within its cache it is an admin token like any other.
        (Method::GET, "/caches/mine".into(), None, StatusCode::OK),
        (Method::PATCH, "/caches/mine".into(), Some(json!({"priority": 30})), StatusCode::OK),
        (Method::GET, "/caches/mine/keys".into(), None, StatusCode::OK),
        (Method::POST, "/caches/mine/missing-paths".into(), Some(json!({"store_paths": []})), StatusCode::OK),
        // On its own cache an upload session is found or not (404), never refused.
        (Method::GET, "/caches/mine/uploads/0123456789abcdef0123456789abcdef".into(), None, StatusCode::NOT_FOUND),
        (Method::POST, "/caches/mine/keys".into(), None, StatusCode::CREATED),
        (Method::POST, "/tokens".into(), Some(json!({"kind": "cache", "cache": "mine", "permission": "write"})), StatusCode::CREATED),
        (Method::POST, "/tokens".into(), Some(json!({"kind": "personal", "caches": ["mine"], "permission": "admin"})), StatusCode::CREATED),
    ];
    let documented: std::collections::BTreeSet<(String, String)> =
        larder_api::routes::API_V1_ROUTES.iter().map(|(m, p)| (m.to_ascii_uppercase(), p.to_string())).collect();
    let mut covered = std::collections::BTreeSet::new();
    for (method, path, body, expected) in &routes {
        let (status, answer) = limited.call(method.clone(), path, body.clone()).await;
        assert_eq!(status, *expected, "{method} {path} with a token limited to `mine`: {answer}");
        let route = documented.iter().find(|(m, p)| m == method.as_str() && route_matches(p, &format!("/api/v1{path}")));
        covered.insert(route.unwrap_or_else(|| panic!("{method} {path} is no route")).clone());
    }
    assert_eq!(covered, documented, "every /api/v1 route is tried with a limited token");

    // What it sees is within its cache.
    let (_, caches) = limited.get("/caches").await;
    assert_eq!(names(&caches), ["mine"]);
    let (_, usage) = limited.get("/account/usage").await;
    let usage_of: Vec<&str> = usage["caches"].as_array().unwrap().iter().map(|c| c["cache"].as_str().unwrap()).collect();
    assert_eq!(usage_of, ["mine"]);
    let (_, tokens) = limited.get("/tokens").await;
    let seen = ids(&tokens);
    assert!(seen.contains(&mine_read_id.as_str()) && seen.contains(&limited_id.as_str()), "{tokens}");
    assert!(!seen.contains(&other_read_id.as_str()) && !seen.contains(&unlimited_id.as_str()), "{tokens}");
    let created_limited = tokens.as_array().unwrap().iter().filter(|t| t["kind"] == "personal").collect::<Vec<_>>();
    assert!(created_limited.iter().all(|t| t["limited"] == true && t["caches"] == json!(["mine"])), "{tokens}");

    // Nothing outside it changed: the account, `other`, its keys and its token.
    let (status, account) = alice.get("/account").await;
    assert_eq!((status, account["username"].as_str()), (StatusCode::OK, Some("alice")));
    assert_eq!(
        Api::anonymous(server).post("/sessions", json!({"username": "alice", "password": larder_tests::PASSPHRASE})).await.0,
        StatusCode::CREATED
    );
    let (_, other) = alice.get("/caches/other").await;
    assert_eq!((other["public"].as_bool(), other["public_keys"].as_array().map(Vec::len)), (Some(false), Some(1)), "{other}");
    let (_, all) = alice.get("/caches").await;
    assert_eq!(names(&all), ["mine", "other"]);
    let info =
        server.http.get(format!("{}/nix-cache-info", server.cache_url("other"))).basic_auth("x", Some(&other_read)).send().await.unwrap();
    assert_eq!(info.status(), StatusCode::OK, "other's read token was not revoked");
    let info = server
        .http
        .get(format!("{}/nix-cache-info", server.cache_url("other")))
        .basic_auth("x", limited.token_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::UNAUTHORIZED, "nor does the limited token read `other` on the binary cache");

    // A token that expires creates only tokens that expire no later; a session is the
    // account holder and is not bounded so.
    let (_, expiring) = alice.token(json!({"kind": "personal", "caches": ["mine"], "permission": "admin", "expires_in": 3600})).await;
    let expiring = alice.with(&expiring);
    for expires_in in [None, Some(7200)] {
        let mut body = json!({"kind": "cache", "cache": "mine", "permission": "read"});
        if let Some(secs) = expires_in {
            body["expires_in"] = json!(secs);
        }
        let (status, answer) = expiring.post("/tokens", body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "expires_in {expires_in:?}: {answer}");
    }
    let (status, answer) =
        expiring.post("/tokens", json!({"kind": "cache", "cache": "mine", "permission": "read", "expires_in": 60})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(alice.post("/tokens", json!({"kind": "cache", "cache": "mine", "permission": "read"})).await.0, StatusCode::CREATED);

    // Tokens need admin permission to make tokens, limited or not.
    let (_, writer) = alice.token(json!({"kind": "personal", "caches": ["mine"], "permission": "write"})).await;
    let (status, _) = alice.with(&writer).post("/tokens", json!({"kind": "cache", "cache": "mine", "permission": "read"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// True if `path` fits the route `pattern` (`{name}` matches one segment).
fn route_matches(pattern: &str, path: &str) -> bool {
    let (pattern, path): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    pattern.len() == path.len() && pattern.iter().zip(&path).all(|(p, s)| p.starts_with('{') || p == s)
}

async fn a_limited_token_whose_caches_are_gone_acts_on_nothing(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("first", false).await;
    alice.cache("second", false).await;
    let (_, reader) = alice.token(json!({"kind": "personal", "caches": ["first"], "permission": "read"})).await;
    let (_, admin) = alice.token(json!({"kind": "personal", "caches": ["first"], "permission": "admin"})).await;
    let read = |cache: &'static str, token: String| {
        server.http.get(format!("{}/nix-cache-info", server.cache_url(cache))).basic_auth("x", Some(token)).send()
    };
    assert_eq!(read("first", reader.clone()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(read("second", reader.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    assert_eq!(alice.delete("/caches/first", Some(json!({"confirm": "first"}))).await.0, StatusCode::NO_CONTENT);

    assert_eq!(read("second", reader.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED, "deleting `first` widened the token");
    let admin = alice.with(&admin);
    assert_eq!(admin.get("/caches/second").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(names(&admin.get("/caches").await.1), Vec::<&str>::new());
    assert_eq!(admin.patch("/caches/second", json!({"public": true})).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(admin.post("/tokens", json!({"kind": "personal", "permission": "admin"})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(admin.post("/tokens", json!({"kind": "cache", "cache": "second", "permission": "read"})).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(ids(&admin.get("/tokens").await.1), Vec::<&str>::new());
    // The owner sees both tokens for what they are: limited, to nothing left.
    let (_, tokens) = alice.get("/tokens").await;
    let personal: Vec<&Value> = tokens.as_array().unwrap().iter().filter(|t| t["kind"] == "personal").collect();
    assert_eq!(personal.len(), 2, "{tokens}");
    assert!(personal.iter().all(|t| t["limited"] == true && t["caches"] == json!([])), "{tokens}");
    let (_, second) = alice.get("/caches/second").await;
    assert_eq!(second["public"], false);
}

// ---------------------------------------------------------------------------------------
// Narinfos, NARs and their listings

/// A made-up store path: `/nix/store/<hash of seed>-<name>`.
fn store_path(seed: &str, name: &str) -> String {
    let digest = Sha256Hash::digest(seed.as_bytes());
    format!("/nix/store/{}-{name}", nix32::encode(&digest.0[..20]))
}

/// A narinfo for an uncompressed NAR, with the given references (base names).
fn narinfo(store_path: &str, nar: &[u8], references: &[String]) -> String {
    let hash = nix32_sha256(nar);
    format!(
        "StorePath: {store_path}\nURL: nar/{hash}.nar\nCompression: none\nFileHash: sha256:{hash}\nFileSize: {len}\n\
         NarHash: sha256:{hash}\nNarSize: {len}\nReferences: {}\n",
        references.join(" "),
        len = nar.len()
    )
}

async fn put(server: &TestServer, cache: &str, file: &str, token: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
    let response =
        server.http.put(format!("{}/{file}", server.cache_url(cache))).basic_auth("nix", Some(token)).body(body).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Probes /healthz every 20 ms until `stop`; returns the slowest answer.
async fn slowest_health_probe(server: &TestServer, stop: tokio::sync::watch::Receiver<bool>) -> Duration {
    let mut slowest = Duration::ZERO;
    while !*stop.borrow() {
        let started = Instant::now();
        let status = server.http.get(format!("{}/healthz", server.base_url)).send().await.unwrap().status();
        assert_eq!(status, StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

/// While `work` runs, the server must keep answering /healthz within this.
const HEALTH_BOUND: Duration = Duration::from_secs(1);

/// Runs `work` while probing /healthz; returns its output and the slowest probe.
async fn probing<T>(server: &TestServer, work: impl std::future::Future<Output = T>) -> (T, Duration) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let probe = slowest_health_probe(server, stopped);
    let work = async {
        let output = work.await;
        stop.send(true).unwrap();
        output
    };
    tokio::join!(work, probe)
}

async fn huge_reference_lists_are_refused_without_stalling_the_server(server: &TestServer) {
    server.create_cache("refs", false).await;
    let (_, write) = server.token("refs", larder_api::domain::Permission::Write).await;
    let nar = Node::file(b"a path with many references").to_nar();
    let (status, body) = put(server, "refs", &format!("nar/{}.nar", nix32_sha256(&nar)), &write, nar.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = store_path("refs", "many-refs");
    let references =
        |n: usize| -> Vec<String> { (0..n).map(|i| store_path_of(&store_path(&format!("missing-{i}"), "dep")).base_name()).collect() };

    // The most references a narinfo may have, none of them in the cache: refused at once,
    // naming a few, twice in parallel, while the server keeps answering.
    let text = narinfo(&path, &nar, &references(larder_protocol::narinfo::MAX_REFERENCES));
    let file = format!("{}.narinfo", hash_part(&path));
    let started = Instant::now();
    let ((first, second), slowest) = probing(server, async {
        tokio::join!(put(server, "refs", &file, &write, text.clone()), put(server, "refs", &file, &write, text.clone()))
    })
    .await;
    let took = started.elapsed();
    for (status, body) in [first, second] {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.starts_with("references not in this cache (push them first): "), "{body}");
        assert!(body.trim_end().ends_with(" and 9995 more"), "{body}");
        assert!(body.len() < 1024, "nix prints the whole body: {} bytes", body.len());
    }
    assert!(slowest < HEALTH_BOUND, "/healthz took {slowest:?} during the requests");
    eprintln!("two narinfos with 10,000 missing references each: refused in {took:?}; slowest /healthz meanwhile {slowest:?}");

    // Fifty thousand references (3 MiB) are refused before anything is parsed.
    let started = Instant::now();
    let (status, body) = put(server, "refs", &file, &write, narinfo(&path, &nar, &references(50_000))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    eprintln!("a narinfo with 50,000 references: {status} in {:?}", started.elapsed());
    // 10,001 references fit in the size limit but not the reference limit.
    let (status, body) = put(server, "refs", &file, &write, narinfo(&path, &nar, &references(10_001))).await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "malformed narinfo: more than 10000 references\n"));
    assert_eq!(server.count_rows("paths").await, 0);
}

/// A directory of `entries` empty files whose 255-byte names are control bytes: each
/// escapes to 1.5 KiB of listing from about 440 bytes of NAR, and compresses to nearly
/// nothing.
fn listing_bomb(entries: u32) -> Vec<u8> {
    let name = |i: u32| {
        let mut name = vec![0x01u8; 251];
        // Four base-31 digits over 0x01..=0x1f, most significant first: sorted, distinct.
        name.extend((0..4).rev().map(|d| 1 + ((i / 31u32.pow(d)) % 31) as u8));
        name
    };
    Node::directory((0..entries).map(|i| (name(i), Node::file(b"")))).to_nar()
}

async fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = async_compression::tokio::write::ZstdEncoder::new(Vec::new());
    encoder.write_all(bytes).await.unwrap();
    encoder.shutdown().await.unwrap();
    encoder.into_inner()
}

/// A `larder-server serve` process on the test server's data, to measure its memory.
struct ServerProcess {
    child: tokio::process::Child,
    base_url: String,
}

impl ServerProcess {
    async fn start(server: &TestServer) -> Self {
        let port_file = server.dir.path().join("port");
        let child = tokio::process::Command::new(larder_tests::server_binary())
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(server.env_vars())
            .env("LARDER_LISTEN", "127.0.0.1:0")
            .env("LARDER_PORT_FILE", &port_file)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("start larder-server");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "larder-server did not write its port file");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self { child, base_url: format!("http://127.0.0.1:{port}") }
    }

    /// (current RSS, peak RSS) in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn a_listing_bomb_keeps_memory_bounded(server: &TestServer) {
    server.create_cache("bombs", false).await;
    let (_, write) = server.token("bombs", larder_api::domain::Permission::Write).await;
    let nar = listing_bomb(200_000);
    let compressed = zstd(&nar).await;
    let process = ServerProcess::start(server).await;
    let (before, _) = process.memory_kib();

    let file = format!("nar/{}.nar.zst", nix32_sha256(&compressed));
    let url = format!("{}/bombs/{file}", process.base_url);
    let response = server.http.put(&url).basic_auth("nix", Some(&write)).body(compressed.clone()).send().await.unwrap();
    let status = response.status();
    assert_eq!(status, StatusCode::OK, "{}", response.text().await.unwrap());
    let (after, peak) = process.memory_kib();
    process.stop().await;
    eprintln!(
        "listing bomb: {} KiB zstd of a {} MiB NAR (a ~{} MiB listing): server RSS {before} KiB before, {after} KiB after, peak {peak} KiB",
        compressed.len() / 1024,
        nar.len() >> 20,
        (200_000 * 1590) >> 20
    );
    assert!(peak - before < 64 * 1024, "the server grew by {} KiB on a listing bomb", peak - before);
    assert!(server.stored_objects().await.iter().all(|key| !key.starts_with("ls/")), "a listing was stored");

    // The NAR itself is fine: its path can be published, and has no listing.
    let path = store_path("bomb", "many-files");
    let hash = nix32_sha256(&compressed);
    let summary = Sha256Hash::digest(&nar).to_nix32();
    let text = format!(
        "StorePath: {path}\nURL: {file}\nCompression: zstd\nFileHash: sha256:{hash}\nFileSize: {}\nNarHash: sha256:{summary}\nNarSize: {}\nReferences: \n",
        compressed.len(),
        nar.len()
    );
    let (status, body) = put(server, "bombs", &format!("{}.narinfo", hash_part(&path)), &write, text).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listing = server
        .http
        .get(format!("{}/{}.ls", server.cache_url("bombs"), hash_part(&path)))
        .basic_auth("x", Some(&write))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::NOT_FOUND);
}

/// zstd of a NAR holding one file of 8 GiB of zeros: about 270 KB.
async fn decompression_bomb() -> &'static [u8] {
    static BOMB: tokio::sync::OnceCell<Vec<u8>> = tokio::sync::OnceCell::const_new();
    BOMB.get_or_init(|| async {
        const SIZE: u64 = 8 << 30;
        let mut encoder = async_compression::tokio::write::ZstdEncoder::with_quality(Vec::new(), async_compression::Level::Fastest);
        let mut head = Vec::new();
        for s in [&b"nix-archive-1"[..], b"(", b"type", b"regular", b"contents"] {
            write_string(&mut head, s);
        }
        head.extend_from_slice(&SIZE.to_le_bytes());
        encoder.write_all(&head).await.unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(SIZE >> 20) {
            encoder.write_all(&zeros).await.unwrap();
        }
        let mut tail = Vec::new();
        write_string(&mut tail, b")");
        encoder.write_all(&tail).await.unwrap();
        encoder.shutdown().await.unwrap();
        encoder.into_inner()
    })
    .await
}

async fn a_decompression_bomb_stops_at_max_nar_size(server: &TestServer) {
    server.create_cache("bombs", false).await;
    let (_, write) = server.token("bombs", larder_api::domain::Permission::Write).await;
    let bomb = decompression_bomb().await;
    assert!(bomb.len() < 1_000_000, "the bomb itself is within max_nar_size: {} bytes", bomb.len());
    let before = server.stored_objects().await;
    let started = Instant::now();
    let ((status, body), slowest) =
        probing(server, put(server, "bombs", &format!("nar/{}.nar.zst", nix32_sha256(bomb)), &write, bomb.to_vec())).await;
    eprintln!(
        "decompression bomb ({} KB zstd, 8 GiB NAR): {status} after {:?}; slowest /healthz meanwhile {slowest:?}",
        bomb.len() / 1000,
        started.elapsed()
    );
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body, "body too large: the limit is 1000000 bytes\n");
    assert!(slowest < HEALTH_BOUND, "/healthz took {slowest:?}");
    assert_eq!((server.count_rows("nars").await, server.count_rows("cache_nars").await), (0, 0));
    for _ in 0..20 {
        if server.stored_objects().await == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bomb left objects behind: {:?}", server.stored_objects().await);
}

// ---------------------------------------------------------------------------------------
// Slow bodies

fn head(server: &TestServer, method: &str, target: &str, token: Option<&str>, content_type: &str, length: usize) -> String {
    let host = server.base_url.trim_start_matches("http://");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n")
}

async fn stalled_and_trickling_bodies_are_cut_off(server: &TestServer) {
    server.create_cache("slow", false).await;
    let (_, write) = server.token("slow", larder_api::domain::Permission::Write).await;
    let nar = Node::file(&vec![7u8; 50_000]).to_nar();
    let nar_target = format!("/slow/nar/{}.nar", nix32_sha256(&nar));
    let sign_up = br#"{"username":"slowpoke","email":"slow@example.com","password":"correct horse battery staple"}"#.to_vec();
    let nar_head = head(server, "PUT", &nar_target, Some(&write), "application/x-nix-nar", nar.len());
    let sign_up_head = head(server, "POST", "/api/v1/accounts", None, "application/json", sign_up.len());
    let give_up = BODY_TIMEOUT * 4;
    let trickle = Some(Duration::from_millis(200));

    // Eight of each at once: NAR uploads stalled and trickling (one token each, so the
    // per-token cap is not what stops them), and unauthenticated sign-ups trickling.
    let mut tokens = Vec::new();
    for _ in 0..16 {
        tokens.push(server.token("slow", larder_api::domain::Permission::Write).await.1);
    }
    let exchanges = (0..24).map(|i| {
        let (nar_head, sign_up_head, tokens, write) = (&nar_head, &sign_up_head, &tokens, &write);
        let (nar, sign_up) = (&nar, &sign_up);
        async move {
            match i % 3 {
                0 => slow_exchange(server, &nar_head.replace(write.as_str(), &tokens[i / 3]), nar, 100, None, give_up).await,
                1 => slow_exchange(server, &nar_head.replace(write.as_str(), &tokens[8 + i / 3]), nar, 100, trickle, give_up).await,
                _ => slow_exchange(server, sign_up_head, sign_up, 10, trickle, give_up).await,
            }
        }
    });
    let (outcomes, slowest) = probing(server, futures_util::future::join_all(exchanges)).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        let response = outcome.response.as_ref().unwrap_or_else(|| panic!("exchange {i}: no answer within {give_up:?}: {outcome:?}"));
        assert_eq!(response.status, 408, "exchange {i}: {response:?}");
        assert!(outcome.closed, "exchange {i}: the connection stayed open");
        assert!(outcome.elapsed >= BODY_TIMEOUT && outcome.elapsed < BODY_TIMEOUT * 3, "exchange {i} took {:?}", outcome.elapsed);
        if i % 3 == 2 {
            assert_eq!(serde_json::from_str::<Value>(&response.body).unwrap()["error"], "request_timeout");
        }
    }
    let longest = outcomes.iter().map(|o| o.elapsed).max().unwrap();
    eprintln!("24 stalled or trickling bodies: all 408 and closed within {longest:?}; slowest /healthz meanwhile {slowest:?}");
    assert!(slowest < HEALTH_BOUND, "/healthz took {slowest:?}");

    // Nothing of them remains: no account, no NAR, no temporary file or multipart upload.
    assert_eq!(
        Api::anonymous(server).post("/sessions", json!({"username": "slowpoke", "password": "correct horse battery staple"})).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.count_rows("nars").await, 0);
    let mut left = server.stored_objects().await;
    for _ in 0..20 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = server.stored_objects().await;
    }
    assert_eq!(left, Vec::<String>::new(), "slow uploads left something behind");

    // A body sent at a normal pace is not affected.
    let (status, body) = put(server, "slow", &nar_target[6..], &write, nar.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn one_token_cannot_hold_every_upload(server: &TestServer) {
    server.create_cache("slots", false).await;
    let (write_id, write) = server.token("slots", larder_api::domain::Permission::Write).await;
    let nar = Node::file(b"held").to_nar();
    let target = format!("/slots/nar/{}.nar", nix32_sha256(&nar));
    let nar_head = head(server, "PUT", &target, Some(&write), "application/x-nix-nar", nar.len());
    let give_up = BODY_TIMEOUT * 4;

    // MAX_UPLOADS_PER_TOKEN stalled uploads hold every slot of the token...
    let held: Vec<_> = (0..MAX_UPLOADS_PER_TOKEN)
        .map(|_| tokio::spawn(stalled(server.base_url.clone(), nar_head.clone(), nar.clone(), give_up)))
        .collect();
    // (Once each is authenticated: on a loaded machine that may take a moment.)
    let token_id = larder_api::domain::TokenId::from_presented(&write_id);
    let deadline = Instant::now() + BODY_TIMEOUT;
    while server.services().uploads_in_flight(&token_id) < MAX_UPLOADS_PER_TOKEN {
        assert!(Instant::now() < deadline, "the stalled uploads did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...so one more is refused at once, with a hint to retry; another token is not.
    let refused = server.http.put(format!("{}{target}", server.base_url)).bearer_auth(&write).body(nar.clone()).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (_, other) = server.token("slots", larder_api::domain::Permission::Write).await;
    let (status, body) = put(server, "slots", &target[7..], &other, nar.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Once the stalled ones are cut off, the slots are free again.
    for handle in held {
        assert_eq!(handle.await.unwrap(), Some(408));
    }
    let (status, body) = put(server, "slots", &target[7..], &write, nar.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A stalled upload on its own connection, for `tokio::spawn`: its answer's status.
async fn stalled(base_url: String, head: String, body: Vec<u8>, give_up: Duration) -> Option<u16> {
    let address = base_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(give_up, tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut received)).await;
    larder_tests::raw_http::parse_raw_response(&received).map(|r| r.status)
}

// ---------------------------------------------------------------------------------------
// Leftovers of crashes

async fn leftovers_of_interrupted_uploads_are_removed_at_start(server: &TestServer) {
    if server.bucket().is_some() {
        // S3 dates an unfinished upload by its start only, so the server keeps them a day;
        // the storage test `stale_uploads_are_removed` covers that backend directly.
        return;
    }
    let tmp = server.nar_dir().join(".tmp");
    let stale = tmp.join("crashed.part");
    let fresh = tmp.join("in-flight.part");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    std::fs::write(&fresh, vec![0u8; 4096]).unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(an_hour_ago).unwrap();

    let (_, node) = server.second_node().await;
    node.stop(true).await;
    assert!(!stale.exists(), "a temporary file untouched for an hour survived a start");
    assert!(fresh.exists(), "a temporary file that may belong to a live upload was removed");
}
