//! Bad input on the Nix protocol, on both backend pairs: every rejection is a clear 4xx
//! with a short text body (nix prints bodies under 1 KiB to the user), and a rejected
//! request stores nothing: no `nars`, `cache_nars` or `paths` rows, no object, no
//! temporary file, no unfinished multipart upload.
//!
//! Real NARs come from the real nix (`nix-store --dump` of a freshly built path, or of a
//! plain file where only the size matters); narinfos are written by hand from them.

use std::time::Duration;

use bytes::Bytes;
use larder_api::domain::Permission;
use larder_tests::raw_http::{raw_exchange, RawResponse};
use larder_tests::{hash_part, nix32_sha256, on_both_backends, store_path_of, Nix, Settings, TestServer};
use reqwest::{Method, StatusCode};

on_both_backends!(
    nar_whose_bytes_do_not_match_its_url_is_rejected,
    narinfo_disagreeing_with_its_nar_is_rejected,
    narinfo_needs_its_nar_uploaded_to_the_same_cache,
    narinfo_with_a_missing_reference_is_rejected,
    truncated_and_empty_bodies_are_never_stored,
    malformed_narinfos_are_rejected,
    invalid_nars_are_rejected,
    cache_names_with_path_tricks_are_refused,
    unrouted_paths_get_a_text_404,
    unknown_and_private_caches_answer_alike,
    uploads_without_write_access_are_refused,
    repeated_uploads_are_idempotent,
    oversized_bodies_are_refused with small_limits,
);

/// Small enough that a real NAR of a few KiB and a padded narinfo exceed them.
const MAX_NAR_SIZE: u64 = 1024;
const MAX_SMALL_UPLOAD: u64 = 1024;

/// Body-size limits of the server of `oversized_bodies_are_refused`.
fn small_limits(settings: &mut Settings) {
    settings.max_nar_size = MAX_NAR_SIZE;
    settings.max_small_upload = MAX_SMALL_UPLOAD;
}

// ---------------------------------------------------------------------------------------
// What the server holds

/// Rows of the tables an upload writes, and every stored object (with temporary files and
/// unfinished multipart uploads).
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    caches: i64,
    nars: i64,
    cache_nars: i64,
    paths: i64,
    objects: Vec<String>,
}

async fn stored(server: &TestServer) -> Stored {
    let mut objects = server.stored_objects().await;
    objects.sort();
    Stored {
        caches: server.count_rows("caches").await,
        nars: server.count_rows("nars").await,
        cache_nars: server.count_rows("cache_nars").await,
        paths: server.count_rows("paths").await,
        objects,
    }
}

/// Asserts that nothing was stored since `before`. A rejected S3 multipart upload is
/// aborted in the background, so the state gets a moment (2 s) to settle; anything still
/// there after that is a failure.
#[track_caller]
fn assert_nothing_stored<'a>(server: &'a TestServer, before: &'a Stored, what: &'a str) -> impl std::future::Future<Output = ()> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let mut now = stored(server).await;
        for _ in 0..20 {
            if &now == before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = stored(server).await;
        }
        panic!("{what}: something was stored ({caller}, {:?})\nbefore: {before:#?}\nafter:  {now:#?}", server.backend);
    }
}

// ---------------------------------------------------------------------------------------
// Requests

#[derive(Clone, Copy, Debug)]
enum Auth<'a> {
    Anonymous,
    Bearer(&'a str),
    /// Basic with the token as the password, as nix sends a netrc entry; any login.
    Basic(&'a str),
}

async fn send(
    server: &TestServer,
    method: Method,
    cache: &str,
    file: &str,
    auth: Auth<'_>,
    body: Option<reqwest::Body>,
) -> reqwest::Response {
    let url = format!("{}/{file}", server.cache_url(cache));
    let mut request = server.http.request(method.clone(), &url);
    request = match auth {
        Auth::Anonymous => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::Basic(token) => request.basic_auth("any-login", Some(token)),
    };
    if let Some(body) = body {
        request = request.body(body);
    }
    request.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

async fn put(server: &TestServer, cache: &str, file: &str, auth: Auth<'_>, body: impl Into<Vec<u8>>) -> reqwest::Response {
    send(server, Method::PUT, cache, file, auth, Some(reqwest::Body::from(body.into()))).await
}

/// A PUT whose body is streamed in chunks, so it goes out chunked, with no Content-Length.
async fn put_chunked(server: &TestServer, cache: &str, file: &str, auth: Auth<'_>, body: &[u8]) -> reqwest::Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = body.chunks(256).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let stream = futures_util::stream::iter(chunks);
    send(server, Method::PUT, cache, file, auth, Some(reqwest::Body::wrap_stream(stream))).await
}

async fn get(server: &TestServer, cache: &str, file: &str, auth: Auth<'_>) -> reqwest::Response {
    send(server, Method::GET, cache, file, auth, None).await
}

async fn head(server: &TestServer, cache: &str, file: &str, auth: Auth<'_>) -> reqwest::Response {
    send(server, Method::HEAD, cache, file, auth, None).await
}

/// Asserts a success status; shows the body otherwise.
async fn expect_status(response: reqwest::Response, expected: StatusCode, what: &str) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, expected, "{what}: expected {expected}, got {status} with body {body:?}");
    body
}

/// Asserts a refusal: `expected` (a 4xx), with a short, non-empty plain-text body. Returns
/// the body.
async fn expect_refusal(response: reqwest::Response, expected: StatusCode, what: &str) -> String {
    assert!(expected.is_client_error(), "{what}: the test expects a 4xx, not {expected}");
    let status = response.status();
    let content_type = header(&response, "content-type");
    let www_authenticate = header(&response, "www-authenticate");
    let body = response.text().await.unwrap_or_else(|e| format!("<unreadable body: {e}>"));
    assert_eq!(status, expected, "{what}: expected {expected}, got {status} with body {body:?}");
    check_refusal_body(status.as_u16(), &content_type, &body).unwrap_or_else(|problem| panic!("{what}: {problem}"));
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            www_authenticate.to_ascii_lowercase().starts_with("basic"),
            "{what}: a 401 must carry WWW-Authenticate: Basic, got {www_authenticate:?}"
        );
    }
    body
}

/// What a refusal's body must be: non-empty plain text, shorter than 1 KiB.
fn check_refusal_body(status: u16, content_type: &str, body: &str) -> Result<(), String> {
    if body.trim().is_empty() {
        return Err(format!("the {status} response has an empty body (content-type {content_type:?})"));
    }
    if body.len() >= 1024 {
        return Err(format!("the {status} response body is {} bytes, too long for nix to print", body.len()));
    }
    if !content_type.starts_with("text/plain") {
        return Err(format!("the {status} response is {content_type:?}, not text/plain: {body:?}"));
    }
    Ok(())
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

// ---------------------------------------------------------------------------------------
// Raw HTTP, for what reqwest will not send: bodies shorter than their Content-Length, and
// paths that a URL parser would normalise (`/../`, `%2e%2e`).

/// A complete request on its own connection (`Connection: close`); only a PUT has a body.
async fn raw_request(server: &TestServer, method: &str, target: &str, token: Option<&str>, body: &[u8]) -> RawResponse {
    let body = if method == "PUT" { body } else { b"" };
    let head = request_head(server, method, target, token, (method == "PUT").then_some(body.len()));
    raw_exchange(server, &head, body, false)
        .await
        .unwrap_or_else(|| panic!("{method} {target}: the server closed the connection without answering"))
}

fn request_head(server: &TestServer, method: &str, target: &str, token: Option<&str>, content_length: Option<usize>) -> String {
    let host = server.base_url.trim_start_matches("http://");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(length) = content_length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("\r\n");
    head
}

// ---------------------------------------------------------------------------------------
// Paths, NARs and narinfos

/// A path built by the real nix, its NAR, and the names the cache knows it by.
struct RealPath {
    nix: Nix,
    /// `/nix/store/<hash>-<name>`
    store_path: String,
    nar: Vec<u8>,
}

impl RealPath {
    async fn build(server: &TestServer) -> Self {
        let nix = Nix::new(server.dir.path());
        let top = nix.build_chain().await;
        let nar = nix.dump(&top).await;
        Self { nix, store_path: top, nar }
    }

    fn hash_part(&self) -> String {
        hash_part(&self.store_path)
    }

    /// `<hash>-<name>`
    fn base_name(&self) -> String {
        store_path_of(&self.store_path).base_name()
    }

    /// The name after the hash.
    fn name(&self) -> String {
        store_path_of(&self.store_path).name().to_owned()
    }

    /// `<filehash>.nar`, the file under `nar/`.
    fn nar_file(&self) -> String {
        nar_file(&self.nar)
    }

    fn narinfo_file(&self) -> String {
        format!("{}.narinfo", self.hash_part())
    }

    /// A correct narinfo for this path, with `references` (space-separated base names).
    fn narinfo(&self, references: &str) -> String {
        narinfo_text(&self.store_path, &self.nar, references)
    }
}

fn nar_file(nar: &[u8]) -> String {
    format!("{}.nar", nix32_sha256(nar))
}

/// The narinfo nix would write for an uncompressed NAR (FileHash = NarHash, as for `none`).
fn narinfo_text(store_path: &str, nar: &[u8], references: &str) -> String {
    let hash = nix32_sha256(nar);
    let size = nar.len();
    format!(
        "StorePath: {store_path}\nURL: nar/{hash}.nar\nCompression: none\nFileHash: sha256:{hash}\nFileSize: {size}\n\
         NarHash: sha256:{hash}\nNarSize: {size}\nReferences: {references}\n"
    )
}

/// `text` with the line of `key` replaced by `replacement` (a whole line, without newline).
fn replace_line(text: &str, key: &str, replacement: &str) -> String {
    let prefix = format!("{key}: ");
    assert!(text.lines().any(|l| l.starts_with(&prefix)), "no {key} line in {text:?}");
    text.lines().map(|l| if l.starts_with(&prefix) { replacement } else { l }).map(|l| format!("{l}\n")).collect()
}

/// `text` without the line of `key`.
fn remove_line(text: &str, key: &str) -> String {
    let prefix = format!("{key}: ");
    assert!(text.lines().any(|l| l.starts_with(&prefix)), "no {key} line in {text:?}");
    text.lines().filter(|l| !l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect()
}

/// A made-up but well-formed store path hash (32 characters of the nix32 alphabet).
fn made_up_hash(seed: &str) -> String {
    nix32_sha256(seed.as_bytes())[..32].to_owned()
}

/// A NAR of a plain file of `size` bytes, serialised by the real nix (`nix-store --dump`).
async fn file_nar(server: &TestServer, name: &str, size: usize) -> Vec<u8> {
    let file = server.dir.path().join(name);
    let contents: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&file, contents).expect("write the file to dump");
    Nix::new(server.dir.path()).dump(file.to_str().expect("UTF-8 temporary path")).await
}

// ---------------------------------------------------------------------------------------
// 1. NAR bytes that do not hash to the file hash in their URL

async fn nar_whose_bytes_do_not_match_its_url_is_rejected(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    let path = RealPath::build(server).await;
    let before = stored(server).await;

    // A valid NAR under the URL of other bytes (the real NAR with one byte changed).
    let mut altered = path.nar.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    let wrong_file = nar_file(&altered);
    let response = put(server, &cache.name, &format!("nar/{wrong_file}"), Auth::Bearer(&token), path.nar.clone()).await;
    expect_refusal(response, StatusCode::BAD_REQUEST, "NAR PUT under another NAR's file hash (Bearer)").await;
    assert_nothing_stored(server, &before, "NAR PUT under another NAR's file hash").await;

    // Another real NAR (a dependency of the path) under this path's URL, with Basic auth
    // as nix sends it from a netrc entry.
    let closure = path.nix.closure(&path.store_path).await;
    let dependency = closure.iter().find(|p| **p != path.store_path).expect("the chain has dependencies");
    let other_nar = path.nix.dump(dependency).await;
    assert_ne!(other_nar, path.nar);
    let response = put(server, &cache.name, &format!("nar/{}", path.nar_file()), Auth::Basic(&token), other_nar).await;
    expect_refusal(response, StatusCode::BAD_REQUEST, "another NAR under this NAR's file hash (Basic)").await;
    assert_nothing_stored(server, &before, "another NAR under this NAR's file hash").await;

    for file in [&wrong_file, &path.nar_file()] {
        let response = head(server, &cache.name, &format!("nar/{file}"), Auth::Bearer(&token)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "HEAD nar/{file} (pusher) after the rejected PUTs");
    }

    // The same request with the right URL is accepted: the refusals were for the hash.
    let response = put(server, &cache.name, &format!("nar/{}", path.nar_file()), Auth::Basic(&token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "the real NAR under its own file hash (Basic)").await;
}

// ---------------------------------------------------------------------------------------
// 2. A narinfo that disagrees with the NAR it points at

async fn narinfo_disagreeing_with_its_nar_is_rejected(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    let path = RealPath::build(server).await;
    let response = put(server, &cache.name, &format!("nar/{}", path.nar_file()), Auth::Bearer(&token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "NAR PUT").await;
    let before = stored(server).await;
    assert_eq!(before.paths, 0);

    let good = path.narinfo("");
    let size = path.nar.len();
    let other_hash = nix32_sha256(b"not the NAR");
    let cases = [
        ("NarHash", replace_line(&good, "NarHash", &format!("NarHash: sha256:{other_hash}"))),
        ("NarSize", replace_line(&good, "NarSize", &format!("NarSize: {}", size + 1))),
        ("NarSize", replace_line(&good, "NarSize", &format!("NarSize: {}", size - 8))),
        ("FileHash", replace_line(&good, "FileHash", &format!("FileHash: sha256:{other_hash}"))),
        ("FileSize", replace_line(&good, "FileSize", &format!("FileSize: {}", size + 1))),
        // The bytes were uploaded plain; a narinfo saying xz would make nix fail to unpack.
        ("Compression", replace_line(&good, "Compression", "Compression: xz")),
    ];
    for (field, narinfo) in cases {
        let what = format!("narinfo with a wrong {field}");
        let response = put(server, &cache.name, &path.narinfo_file(), Auth::Bearer(&token), narinfo).await;
        let message = expect_refusal(response, StatusCode::BAD_REQUEST, &what).await;
        assert!(message.contains(field), "{what}: the message does not name {field}: {message:?}");
        assert_nothing_stored(server, &before, &what).await;
    }
    assert_eq!(server.count_rows("paths").await, 0);
    let response = get(server, &cache.name, &path.narinfo_file(), Auth::Anonymous).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET of the rejected narinfo");
    let response = get(server, &cache.name, &path.narinfo_file(), Auth::Bearer(&token)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET of the rejected narinfo (pusher)");

    // The correct narinfo commits.
    let response = put(server, &cache.name, &path.narinfo_file(), Auth::Bearer(&token), good).await;
    expect_status(response, StatusCode::OK, "the correct narinfo").await;
    let response = get(server, &cache.name, &path.narinfo_file(), Auth::Anonymous).await;
    expect_status(response, StatusCode::OK, "GET of the committed narinfo").await;
    assert_eq!(server.count_rows("paths").await, 1);
}

// ---------------------------------------------------------------------------------------
// 3. A narinfo may only point at a NAR uploaded to the same cache

async fn narinfo_needs_its_nar_uploaded_to_the_same_cache(server: &TestServer) {
    let alpha = server.create_cache("alpha", true).await;
    let beta = server.create_cache("beta", true).await;
    let (_, alpha_token) = server.token(&alpha.name, Permission::Write).await;
    let (_, beta_token) = server.token(&beta.name, Permission::Write).await;
    let path = RealPath::build(server).await;
    let nar_url = format!("nar/{}", path.nar_file());

    // Never uploaded anywhere.
    let before = stored(server).await;
    let response = put(server, &alpha.name, &path.narinfo_file(), Auth::Bearer(&alpha_token), path.narinfo("")).await;
    expect_refusal(response, StatusCode::BAD_REQUEST, "narinfo for a NAR never uploaded").await;
    assert_nothing_stored(server, &before, "narinfo for a NAR never uploaded").await;

    // Uploaded to alpha only: beta cannot claim it by naming its hash.
    let response = put(server, &alpha.name, &nar_url, Auth::Bearer(&alpha_token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "NAR PUT to alpha").await;
    let response = head(server, &alpha.name, &nar_url, Auth::Bearer(&alpha_token)).await;
    assert_eq!(response.status(), StatusCode::OK, "HEAD {nar_url} on alpha by alpha's pusher (its pending upload)");
    let response = head(server, &beta.name, &nar_url, Auth::Bearer(&beta_token)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "HEAD {nar_url} on beta by beta's pusher");
    let response = get(server, &beta.name, &nar_url, Auth::Anonymous).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {nar_url} on beta");
    let response = get(server, &alpha.name, &nar_url, Auth::Anonymous).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {nar_url} on alpha before any narinfo publishes it");

    let before = stored(server).await;
    let response = put(server, &beta.name, &path.narinfo_file(), Auth::Bearer(&beta_token), path.narinfo("")).await;
    expect_refusal(response, StatusCode::BAD_REQUEST, "narinfo on beta for a NAR uploaded to alpha only").await;
    assert_nothing_stored(server, &before, "narinfo on beta for a NAR uploaded to alpha only").await;
    let response = get(server, &beta.name, &path.narinfo_file(), Auth::Anonymous).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET of the narinfo on beta");
    let response = head(server, &beta.name, &nar_url, Auth::Bearer(&beta_token)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "HEAD {nar_url} on beta after the refused narinfo");

    // On alpha the same narinfo commits.
    let response = put(server, &alpha.name, &path.narinfo_file(), Auth::Bearer(&alpha_token), path.narinfo("")).await;
    expect_status(response, StatusCode::OK, "the narinfo on alpha").await;
    let response = get(server, &beta.name, &path.narinfo_file(), Auth::Anonymous).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET of the narinfo on beta once alpha has it");
}

// ---------------------------------------------------------------------------------------
// 4. References must already be in the cache

async fn narinfo_with_a_missing_reference_is_rejected(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    let path = RealPath::build(server).await;
    let response = put(server, &cache.name, &format!("nar/{}", path.nar_file()), Auth::Bearer(&token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "NAR PUT").await;
    let before = stored(server).await;

    let made_up = format!("{}-missing", made_up_hash("a reference nobody pushed"));
    // A real dependency, built but not pushed, is just as missing.
    let closure = path.nix.closure(&path.store_path).await;
    let dependency = closure.iter().find(|p| **p != path.store_path).expect("the chain has dependencies");
    let dependency = store_path_of(dependency).base_name();
    let dependency = dependency.as_str();
    // The self-reference is allowed and must not count as missing.
    let base_name = path.base_name();
    let mut references = [made_up.as_str(), dependency, base_name.as_str()];
    references.sort();
    let narinfo = path.narinfo(&references.join(" "));
    let response = put(server, &cache.name, &path.narinfo_file(), Auth::Bearer(&token), narinfo).await;
    let message = expect_refusal(response, StatusCode::BAD_REQUEST, "narinfo with missing references").await;
    assert!(message.contains(&made_up), "the message does not name the missing reference {made_up}: {message:?}");
    assert!(message.contains(dependency), "the message does not name the missing reference {dependency}: {message:?}");
    assert_nothing_stored(server, &before, "narinfo with missing references").await;
    let response = get(server, &cache.name, &path.narinfo_file(), Auth::Anonymous).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET of the refused narinfo");

    // With only the self-reference it commits.
    let response = put(server, &cache.name, &path.narinfo_file(), Auth::Bearer(&token), path.narinfo(&path.base_name())).await;
    expect_status(response, StatusCode::OK, "narinfo with only a self-reference").await;
}

// ---------------------------------------------------------------------------------------
// 5. Bodies shorter than their Content-Length (nix 2.8's broken retries, G5), empty bodies

async fn truncated_and_empty_bodies_are_never_stored(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    let path = RealPath::build(server).await;
    let nar_url = format!("nar/{}", path.nar_file());
    let target = format!("/{}/{nar_url}", cache.name);
    let before = stored(server).await;

    // Half the body, then none at all (what a 2.8 retry sends), each followed by EOF.
    for sent in [path.nar.len() / 2, 0] {
        let what = format!("NAR PUT with Content-Length {} and {sent} bytes", path.nar.len());
        let head_text = request_head(server, "PUT", &target, Some(&token), Some(path.nar.len()));
        let answer = raw_exchange(server, &head_text, &path.nar[..sent], true).await;
        if let Some(answer) = &answer {
            assert!((400..500).contains(&answer.status), "{what}: the server answered {} with body {:?}", answer.status, answer.body);
        }
        // The handler may still be finishing after the connection closed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_nothing_stored(server, &before, &what).await;
        let response = head(server, &cache.name, &nar_url, Auth::Bearer(&token)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{what}: HEAD {nar_url} by the pusher");
        let response = get(server, &cache.name, &nar_url, Auth::Anonymous).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{what}: GET {nar_url}");
    }

    // An empty body declared as such: under the NAR's URL, and under the hash of nothing.
    for file in [path.nar_file(), nar_file(b"")] {
        let what = format!("empty PUT of nar/{file}");
        let response = put(server, &cache.name, &format!("nar/{file}"), Auth::Bearer(&token), Vec::new()).await;
        expect_refusal(response, StatusCode::BAD_REQUEST, &what).await;
        assert_nothing_stored(server, &before, &what).await;
    }

    // The full body on the same kind of raw connection is accepted (the harness works).
    let head_text = request_head(server, "PUT", &target, Some(&token), Some(path.nar.len()));
    let answer = raw_exchange(server, &head_text, &path.nar, false).await.expect("an answer to the complete NAR PUT");
    assert_eq!(answer.status, 200, "complete NAR PUT over a raw connection: {answer:?}");

    // A complete, valid narinfo whose Content-Length promises more must not commit either.
    let before = stored(server).await;
    let narinfo = path.narinfo("");
    let narinfo_target = format!("/{}/{}", cache.name, path.narinfo_file());
    let what = "narinfo PUT with a complete narinfo but a larger Content-Length";
    let head_text = request_head(server, "PUT", &narinfo_target, Some(&token), Some(narinfo.len() + 64));
    let answer = raw_exchange(server, &head_text, narinfo.as_bytes(), true).await;
    if let Some(answer) = &answer {
        assert!((400..500).contains(&answer.status), "{what}: the server answered {} with body {:?}", answer.status, answer.body);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_nothing_stored(server, &before, what).await;
    let response = get(server, &cache.name, &path.narinfo_file(), Auth::Anonymous).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "{what}: GET of the narinfo");

    // An empty narinfo.
    let response = put(server, &cache.name, &path.narinfo_file(), Auth::Bearer(&token), Vec::new()).await;
    expect_refusal(response, StatusCode::BAD_REQUEST, "empty narinfo PUT").await;
    assert_nothing_stored(server, &before, "empty narinfo PUT").await;
}

// ---------------------------------------------------------------------------------------
// 6. Narinfos that nix would misread or call corrupt (§2.3)

async fn malformed_narinfos_are_rejected(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    let path = RealPath::build(server).await;
    let response = put(server, &cache.name, &format!("nar/{}", path.nar_file()), Auth::Bearer(&token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "NAR PUT").await;
    let before = stored(server).await;

    let good = path.narinfo("");
    let name = path.name();
    let e_hash = format!("e{}", &path.hash_part()[1..]);
    let other_hash = made_up_hash("some other path");
    let own = path.narinfo_file();
    let url_line = good.lines().find(|l| l.starts_with("URL: ")).expect("URL line").to_owned();
    let nar_hash_line = good.lines().find(|l| l.starts_with("NarHash: ")).expect("NarHash line").to_owned();
    // (what, uploaded as, text)
    let cases: Vec<(&str, String, String)> = vec![
        ("CRLF line endings", own.clone(), good.replace('\n', "\r\n")),
        ("no final newline", own.clone(), good.trim_end_matches('\n').to_owned()),
        ("no NarHash", own.clone(), remove_line(&good, "NarHash")),
        ("no URL", own.clone(), remove_line(&good, "URL")),
        ("no StorePath", own.clone(), remove_line(&good, "StorePath")),
        ("no NarSize", own.clone(), remove_line(&good, "NarSize")),
        ("NarSize: 0", own.clone(), replace_line(&good, "NarSize", "NarSize: 0")),
        ("StorePath outside the store", own.clone(), replace_line(&good, "StorePath", "StorePath: /tmp/x")),
        (
            "StorePath hash with an 'e'",
            format!("{e_hash}.narinfo"),
            replace_line(&good, "StorePath", &format!("StorePath: /nix/store/{e_hash}-{name}")),
        ),
        ("'URL:' without a space", own.clone(), replace_line(&good, "URL", &url_line.replacen("URL: ", "URL:", 1))),
        ("NarHash without its sha256: prefix", own.clone(), replace_line(&good, "NarHash", &nar_hash_line.replacen("sha256:", "", 1))),
        ("a blank line", own.clone(), good.replacen('\n', "\n\n", 1)),
        ("a duplicate NarSize", own.clone(), format!("{good}NarSize: {}\n", path.nar.len())),
        ("URL outside nar/", own.clone(), replace_line(&good, "URL", &url_line.replacen("URL: nar/", "URL: ../", 1))),
        ("empty", own.clone(), String::new()),
        ("uploaded under another hash than its StorePath", format!("{other_hash}.narinfo"), good.clone()),
    ];
    let mut problems = Vec::new();
    for (what, file, text) in &cases {
        let response = put(server, &cache.name, file, Auth::Bearer(&token), text.clone()).await;
        let status = response.status();
        let content_type = header(&response, "content-type");
        let body = response.text().await.unwrap_or_default();
        if status != StatusCode::BAD_REQUEST {
            problems.push(format!("{what}: expected 400, got {status} with body {body:?}"));
        } else if let Err(problem) = check_refusal_body(status.as_u16(), &content_type, &body) {
            problems.push(format!("{what}: {problem}"));
        }
        if stored(server).await != before {
            problems.push(format!("{what}: something was stored: {:#?}", stored(server).await));
        }
    }
    assert!(problems.is_empty(), "malformed narinfos ({:?}):\n{}", server.backend, problems.join("\n"));
    assert_nothing_stored(server, &before, "malformed narinfos").await;
    for file in [own.clone(), format!("{other_hash}.narinfo")] {
        let response = get(server, &cache.name, &file, Auth::Anonymous).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {file} after the malformed PUTs");
    }

    // The well-formed original commits.
    let response = put(server, &cache.name, &own, Auth::Bearer(&token), good).await;
    expect_status(response, StatusCode::OK, "the well-formed narinfo").await;
}

// ---------------------------------------------------------------------------------------
// 7. Bodies that hash right but are not a NAR

async fn invalid_nars_are_rejected(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    let path = RealPath::build(server).await;
    let before = stored(server).await;

    let not_a_nar: Vec<u8> = b"this is not a NAR, only some text with the right hash\n".repeat(40);
    let mut trailing_garbage = path.nar.clone();
    trailing_garbage.extend_from_slice(b"trailing garbage after the root node");
    let cut_short = path.nar[..path.nar.len() / 2].to_vec();
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("text that is not a NAR", nar_file(&not_a_nar), not_a_nar.clone()),
        ("a NAR with trailing garbage", nar_file(&trailing_garbage), trailing_garbage.clone()),
        ("the first half of a NAR", nar_file(&cut_short), cut_short.clone()),
        // Named as xz-compressed but plain: it does not decompress.
        ("a plain NAR named .nar.xz", format!("{}.xz", path.nar_file()), path.nar.clone()),
    ];
    for (what, file, body) in cases {
        let response = put(server, &cache.name, &format!("nar/{file}"), Auth::Bearer(&token), body).await;
        expect_refusal(response, StatusCode::BAD_REQUEST, what).await;
        assert_nothing_stored(server, &before, what).await;
        let response = head(server, &cache.name, &format!("nar/{file}"), Auth::Bearer(&token)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{what}: HEAD nar/{file} by the pusher");
    }

    let response = put(server, &cache.name, &format!("nar/{}", path.nar_file()), Auth::Bearer(&token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "the real NAR").await;
}

// ---------------------------------------------------------------------------------------
// 8. Bodies over the configured limits

async fn oversized_bodies_are_refused(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    let big = file_nar(server, "big", 4 * MAX_NAR_SIZE as usize).await;
    let small = file_nar(server, "small", 100).await;
    assert!(big.len() as u64 > MAX_NAR_SIZE && (small.len() as u64) < MAX_NAR_SIZE);
    let before = stored(server).await;

    let big_url = format!("nar/{}", nar_file(&big));
    let response = put(server, &cache.name, &big_url, Auth::Bearer(&token), big.clone()).await;
    expect_refusal(response, StatusCode::PAYLOAD_TOO_LARGE, "NAR over max_nar_size, with Content-Length").await;
    assert_nothing_stored(server, &before, "NAR over max_nar_size, with Content-Length").await;
    let response = put_chunked(server, &cache.name, &big_url, Auth::Bearer(&token), &big).await;
    expect_refusal(response, StatusCode::PAYLOAD_TOO_LARGE, "NAR over max_nar_size, chunked").await;
    assert_nothing_stored(server, &before, "NAR over max_nar_size, chunked").await;
    let response = head(server, &cache.name, &big_url, Auth::Bearer(&token)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "HEAD {big_url} by the pusher");

    // A narinfo padded (with a key nix ignores) past max_small_upload.
    let store_path = format!("/nix/store/{}-small", made_up_hash("small"));
    let narinfo = narinfo_text(&store_path, &small, "");
    let padded = format!("{narinfo}X-Padding: {}\n", "p".repeat(2 * MAX_SMALL_UPLOAD as usize));
    let narinfo_file = format!("{}.narinfo", hash_part(&store_path));
    let response = put(server, &cache.name, &narinfo_file, Auth::Bearer(&token), padded.clone()).await;
    expect_refusal(response, StatusCode::PAYLOAD_TOO_LARGE, "narinfo over max_small_upload, with Content-Length").await;
    let response = put_chunked(server, &cache.name, &narinfo_file, Auth::Bearer(&token), padded.as_bytes()).await;
    expect_refusal(response, StatusCode::PAYLOAD_TOO_LARGE, "narinfo over max_small_upload, chunked").await;
    assert_nothing_stored(server, &before, "narinfo over max_small_upload").await;

    // Under the limits, the same kind of uploads go through.
    let response = put(server, &cache.name, &format!("nar/{}", nar_file(&small)), Auth::Bearer(&token), small.clone()).await;
    expect_status(response, StatusCode::OK, "NAR under max_nar_size").await;
    let response = put(server, &cache.name, &narinfo_file, Auth::Bearer(&token), narinfo).await;
    expect_status(response, StatusCode::OK, "narinfo under max_small_upload").await;
}

// ---------------------------------------------------------------------------------------
// 9. Cache names that try to leave their place in the URL space

async fn cache_names_with_path_tricks_are_refused(server: &TestServer) {
    let demo = server.create_cache("demo", true).await;
    let (_, token) = server.token(&demo.name, Permission::Write).await;
    // The real cache answers, so a refusal below is about the name.
    let answer = raw_request(server, "GET", "/demo/nix-cache-info", None, b"").await;
    assert_eq!(answer.status, 200, "GET /demo/nix-cache-info: {answer:?}");
    let before = stored(server).await;

    let targets = [
        "/%2e%2e/nix-cache-info",
        "/%2E%2E/nix-cache-info",
        "/Demo/nix-cache-info",
        "/DEMO/x.narinfo",
        "/a.b/x.narinfo",
        "/api/nix-cache-info",
        "/nar/nix-cache-info",
        "/demo%2fx/nix-cache-info",
        "/%64emo%2f..%2f..%2fetc/nix-cache-info",
        "/%2e%2e/nar/0000000000000000000000000000000000000000000000000000.nar",
    ]
    .into_iter()
    .chain(UNROUTED);
    let body = b"StoreDir: /nix/store\n";
    let mut problems = Vec::new();
    for target in targets {
        for (method, token) in [("GET", None), ("GET", Some(token.as_str())), ("PUT", Some(token.as_str())), ("PUT", None)] {
            let what = format!("{method} {target} ({})", if token.is_some() { "demo's write token" } else { "no token" });
            let answer = raw_request(server, method, target, token, body).await;
            if answer.status != 401 && answer.status != 404 {
                problems.push(format!("{what}: expected 401 or 404, got {} with body {:?}", answer.status, answer.body));
            } else if answer.status == 401 {
                // The server's own refusal (unrouted paths: see the next test).
                if let Err(problem) = check_refusal_body(answer.status, answer.header("content-type"), &answer.body) {
                    problems.push(format!("{what}: {problem}"));
                }
            }
        }
    }
    assert_nothing_stored(server, &before, "requests with path tricks").await;
    assert!(problems.is_empty(), "path tricks ({:?}):\n{}", server.backend, problems.join("\n"));
}

/// Paths that match no route: `..` segments (not normalised), an encoded `/` that keeps a
/// cache name and a file in one segment, too many segments.
const UNROUTED: [&str; 4] = ["/../etc/passwd", "/../demo/nix-cache-info", "/demo%2Fnix-cache-info", "/demo/a/b/c"];

/// A 404 for a path that matches no route still tells the client why, in a short text
/// body, as every other refusal does.
async fn unrouted_paths_get_a_text_404(server: &TestServer) {
    server.create_cache("demo", true).await;
    let mut problems = Vec::new();
    for target in UNROUTED {
        for method in ["GET", "PUT"] {
            let answer = raw_request(server, method, target, None, b"StoreDir: /nix/store\n").await;
            if answer.status != 404 {
                problems.push(format!("{method} {target}: expected 404, got {} with body {:?}", answer.status, answer.body));
            } else if let Err(problem) = check_refusal_body(answer.status, answer.header("content-type"), &answer.body) {
                problems.push(format!("{method} {target}: {problem}"));
            }
        }
    }
    assert!(problems.is_empty(), "unrouted paths ({:?}):\n{}", server.backend, problems.join("\n"));
}

/// An unknown cache and a private one (holding a published path) answer an anonymous
/// reader, or one with another cache's token, identically: their names do not leak.
async fn unknown_and_private_caches_answer_alike(server: &TestServer) {
    let secret = server.create_cache("secret", false).await;
    let other = server.create_cache("other", true).await;
    let (_, write) = server.token(&secret.name, Permission::Write).await;
    let (_, read) = server.token(&secret.name, Permission::Read).await;
    let (_, other_read) = server.token(&other.name, Permission::Read).await;

    let nar = file_nar(server, "private-file", 300).await;
    let store_path = format!("/nix/store/{}-private-file", made_up_hash("private-file"));
    let nar_url = format!("nar/{}", nar_file(&nar));
    let narinfo_file = format!("{}.narinfo", hash_part(&store_path));
    let response = put(server, &secret.name, &nar_url, Auth::Bearer(&write), nar.clone()).await;
    expect_status(response, StatusCode::OK, "NAR PUT to the private cache").await;
    let response = put(server, &secret.name, &narinfo_file, Auth::Bearer(&write), narinfo_text(&store_path, &nar, "")).await;
    expect_status(response, StatusCode::OK, "narinfo PUT to the private cache").await;
    for file in ["nix-cache-info", narinfo_file.as_str(), nar_url.as_str()] {
        let response = get(server, &secret.name, file, Auth::Basic(&read)).await;
        expect_status(response, StatusCode::OK, &format!("GET {file} with the private cache's read token")).await;
    }

    for (who, auth) in [("anonymous", Auth::Anonymous), ("another cache's read token", Auth::Bearer(&other_read))] {
        for file in
            ["nix-cache-info", narinfo_file.as_str(), nar_url.as_str(), "nar/0000000000000000000000000000000000000000000000000000.nar"]
        {
            for method in [Method::GET, Method::HEAD] {
                let mut answers = Vec::new();
                for cache in ["nosuchcache", secret.name.as_str()] {
                    let response = send(server, method.clone(), cache, file, auth, None).await;
                    let status = response.status();
                    let www_authenticate = header(&response, "www-authenticate");
                    let content_type = header(&response, "content-type");
                    let body = response.text().await.unwrap_or_default();
                    answers.push((status, www_authenticate, content_type, body));
                }
                let what = format!("{method} <cache>/{file}, {who}");
                assert_eq!(answers[0], answers[1], "{what}: the unknown cache (left) and the private one (right) answer differently");
                let (status, _, content_type, body) = &answers[0];
                assert_eq!(*status, StatusCode::UNAUTHORIZED, "{what}: {body:?}");
                if method == Method::GET {
                    check_refusal_body(status.as_u16(), content_type, body).unwrap_or_else(|p| panic!("{what}: {p}"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 10. Uploads without write access

async fn uploads_without_write_access_are_refused(server: &TestServer) {
    let team = server.create_cache("team", false).await;
    let other = server.create_cache("other", false).await;
    let (_, read) = server.token(&team.name, Permission::Read).await;
    let (_, other_write) = server.token(&other.name, Permission::Write).await;
    let (revoked_id, revoked) = server.token(&team.name, Permission::Write).await;
    let (_, expiring) = server.expiring_token(&team.name, Permission::Write, Duration::from_secs(1)).await;
    let expiry_starts = tokio::time::Instant::now();
    let path = RealPath::build(server).await;
    let nar_url = format!("nar/{}", path.nar_file());

    // The token to be revoked works until then.
    let response = put(server, &team.name, "nix-cache-info", Auth::Bearer(&revoked), "StoreDir: /nix/store\n").await;
    expect_status(response, StatusCode::OK, "PUT nix-cache-info with a write token").await;
    server.revoke_token(&revoked_id).await;
    tokio::time::sleep_until(expiry_starts + Duration::from_secs(2)).await;

    let before = stored(server).await;
    let cases = [
        ("a read token (Bearer)", Auth::Bearer(&read), StatusCode::FORBIDDEN),
        ("a read token (Basic)", Auth::Basic(&read), StatusCode::FORBIDDEN),
        ("no token", Auth::Anonymous, StatusCode::UNAUTHORIZED),
        ("another cache's write token", Auth::Bearer(&other_write), StatusCode::UNAUTHORIZED),
        ("another cache's write token (Basic)", Auth::Basic(&other_write), StatusCode::UNAUTHORIZED),
        ("a revoked write token", Auth::Bearer(&revoked), StatusCode::UNAUTHORIZED),
        ("an expired write token", Auth::Bearer(&expiring), StatusCode::UNAUTHORIZED),
        ("a malformed token", Auth::Bearer("not-a-token"), StatusCode::UNAUTHORIZED),
    ];
    for (who, auth, expected) in cases {
        let what = format!("NAR PUT with {who}");
        let response = put(server, &team.name, &nar_url, auth, path.nar.clone()).await;
        expect_refusal(response, expected, &what).await;
        assert_nothing_stored(server, &before, &what).await;
        let what = format!("narinfo PUT with {who}");
        let response = put(server, &team.name, &path.narinfo_file(), auth, path.narinfo("")).await;
        expect_refusal(response, expected, &what).await;
        let what = format!("nix-cache-info PUT with {who}");
        let response = put(server, &team.name, "nix-cache-info", auth, "StoreDir: /nix/store\n").await;
        expect_refusal(response, expected, &what).await;
        assert_nothing_stored(server, &before, &what).await;
    }

    let (_, write) = server.token(&team.name, Permission::Write).await;
    let response = head(server, &team.name, &nar_url, Auth::Bearer(&write)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "HEAD {nar_url} by a pusher after the refused PUTs");
    let response = put(server, &team.name, &nar_url, Auth::Bearer(&write), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "NAR PUT with a write token").await;
}

// ---------------------------------------------------------------------------------------
// 11. The same uploads again (G7)

async fn repeated_uploads_are_idempotent(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    let path = RealPath::build(server).await;
    let nar_url = format!("nar/{}", path.nar_file());

    let response = put(server, &cache.name, &nar_url, Auth::Bearer(&token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "first NAR PUT").await;
    let response = put(server, &cache.name, &nar_url, Auth::Basic(&token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "second NAR PUT (Basic)").await;
    let after_nars = stored(server).await;

    let response = put(server, &cache.name, &path.narinfo_file(), Auth::Bearer(&token), path.narinfo("")).await;
    expect_status(response, StatusCode::OK, "first narinfo PUT").await;
    let first = get(server, &cache.name, &path.narinfo_file(), Auth::Anonymous).await;
    let first = expect_status(first, StatusCode::OK, "GET of the narinfo after the first PUT").await;
    let after_first = stored(server).await;
    let response = put(server, &cache.name, &path.narinfo_file(), Auth::Basic(&token), path.narinfo("")).await;
    expect_status(response, StatusCode::OK, "second narinfo PUT (Basic)").await;
    // And the NAR once more after it is published.
    let response = put(server, &cache.name, &nar_url, Auth::Bearer(&token), path.nar.clone()).await;
    expect_status(response, StatusCode::OK, "third NAR PUT, after the narinfo").await;

    let after_second = stored(server).await;
    assert_eq!((after_second.nars, after_second.cache_nars, after_second.paths), (1, 1, 1), "{after_second:#?}");
    assert_eq!(after_second.objects, after_nars.objects, "repeated uploads changed the stored objects");
    assert_eq!(after_second, after_first);
    let second = get(server, &cache.name, &path.narinfo_file(), Auth::Anonymous).await;
    let second = expect_status(second, StatusCode::OK, "GET of the narinfo after the second PUT").await;
    assert_eq!(first, second, "the narinfo changed when uploaded again");
    let response = get(server, &cache.name, &nar_url, Auth::Anonymous).await;
    let bytes = response.bytes().await.expect("NAR body");
    assert_eq!(bytes.as_ref(), path.nar.as_slice(), "the NAR served back");
}
