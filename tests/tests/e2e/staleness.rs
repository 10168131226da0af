//! What a node remembers (tokens, caches, keys for `staleness_secs`; rendered narinfos for
//! longer, by generation): a change made through a node takes effect there at once, and on
//! every other node (same database) within the bound, never later.

use std::time::{Duration, Instant};

use larder_api::domain::Permission;
use larder_tests::{hash_part, on_both_backends, Api, Nix, Settings, TestServer};
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(changes_reach_every_node_within_the_bound with short_staleness);

const STALENESS: Duration = Duration::from_secs(2);

fn short_staleness(settings: &mut Settings) {
    settings.staleness_secs = STALENESS.as_secs();
}

/// Polls `check` until it holds; panics if it still does not `STALENESS` + 2 s after `since`.
async fn within_bound<F, Fut>(what: &str, since: Instant, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            eprintln!("{what}: after {:?}", since.elapsed());
            return;
        }
        assert!(since.elapsed() < STALENESS + Duration::from_secs(2), "{what}: not seen within {STALENESS:?} (+2 s of slack)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(http: &reqwest::Client, url: String, token: Option<&str>) -> StatusCode {
    let request = http.get(url);
    let request = match token {
        Some(token) => request.basic_auth("nix", Some(token)),
        None => request,
    };
    request.send().await.unwrap().status()
}

async fn changes_reach_every_node_within_the_bound(server: &TestServer) {
    let (node_b, handle) = server.second_node().await;
    let (a, b) = (server.base_url.clone(), node_b.clone());
    let http = &server.http;

    // A token used on both nodes (so both remember it), then revoked through node A.
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("shared", false).await;
    let (id, read) = alice.token(json!({"kind": "cache", "cache": "shared", "permission": "read"})).await;
    let info = |base: &str| format!("{base}/shared/nix-cache-info");
    assert_eq!(status(http, info(&a), Some(&read)).await, StatusCode::OK);
    assert_eq!(status(http, info(&b), Some(&read)).await, StatusCode::OK);
    assert_eq!(alice.delete(&format!("/tokens/{id}"), None).await.0, StatusCode::NO_CONTENT);
    let revoked = Instant::now();
    assert_eq!(status(http, info(&a), Some(&read)).await, StatusCode::UNAUTHORIZED, "on the node that revoked it: at once");
    within_bound("node B refuses the revoked token", revoked, || async {
        status(http, info(&b), Some(&read)).await == StatusCode::UNAUTHORIZED
    })
    .await;

    // A public cache read anonymously on both nodes, then made private through node A.
    alice.cache("opened", true).await;
    let opened = |base: &str| format!("{base}/opened/nix-cache-info");
    assert_eq!(status(http, opened(&a), None).await, StatusCode::OK);
    assert_eq!(status(http, opened(&b), None).await, StatusCode::OK);
    assert_eq!(alice.patch("/caches/opened", json!({"public": false})).await.0, StatusCode::OK);
    let closed = Instant::now();
    assert_eq!(status(http, opened(&a), None).await, StatusCode::UNAUTHORIZED, "on the node that changed it: at once");
    within_bound("node B hides the cache made private", closed, || async {
        status(http, opened(&b), None).await == StatusCode::UNAUTHORIZED
    })
    .await;

    // A path signed by the first key, served by both (pushed below); a second key added and
    // the first retired through node A: its signature leaves node A's narinfo at once,
    // node B's within the bound.
    let (_, write) = server.token("shared", Permission::Write).await;
    let (_, reader) = server.token("shared", Permission::Read).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let narinfo = |base: &str| format!("{base}/shared/{}.narinfo", hash_part(&top));
    // Asked for before it exists, node A remembers the miss; pushed through node B, the
    // path is served by B at once and by A within the bound.
    assert_eq!(status(http, narinfo(&a), Some(&reader)).await, StatusCode::NOT_FOUND);
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &format!("{b}/shared"), &top], "").await.expect_success("push through node B");
    let pushed = Instant::now();
    assert_eq!(status(http, narinfo(&b), Some(&reader)).await, StatusCode::OK, "on the node that published it: at once");
    within_bound("node A serves the path pushed through node B", pushed, || async {
        status(http, narinfo(&a), Some(&reader)).await == StatusCode::OK
    })
    .await;
    let signed_by_first = |base: String| {
        let (url, reader) = (narinfo(&base), reader.clone());
        async move {
            let text = http.get(url).basic_auth("nix", Some(reader)).send().await.unwrap().text().await.unwrap();
            text.contains("Sig: shared-1:")
        }
    };
    assert!(signed_by_first(a.clone()).await && signed_by_first(b.clone()).await);
    let (status_added, _) = alice.post("/caches/shared/keys", json!({})).await;
    assert_eq!(status_added, StatusCode::CREATED);
    assert_eq!(alice.delete("/caches/shared/keys/shared-1", None).await.0, StatusCode::NO_CONTENT);
    let retired = Instant::now();
    assert!(!signed_by_first(a.clone()).await, "on the node that retired the key: at once");
    within_bound("node B stops serving the retired key's signature", retired, || async { !signed_by_first(b.clone()).await }).await;

    // Both nodes keep the narinfo rendered with the new key (for minutes, not the bound);
    // the path deleted through node A: 404 there at once, on node B within the bound.
    for base in [&a, &b] {
        assert_eq!(status(http, narinfo(base), Some(&reader)).await, StatusCode::OK);
    }
    let (deleted_status, answer) = alice.delete(&format!("/caches/shared/paths/{}", hash_part(&top)), None).await;
    assert_eq!(deleted_status, StatusCode::OK, "{answer}");
    let path_deleted = Instant::now();
    assert_eq!(status(http, narinfo(&a), Some(&reader)).await, StatusCode::NOT_FOUND, "on the node that deleted it: at once");
    within_bound("node B stops serving the deleted path", path_deleted, || async {
        status(http, narinfo(&b), Some(&reader)).await == StatusCode::NOT_FOUND
    })
    .await;

    // A cache deleted through node A: gone there at once, on node B within the bound.
    let (_, other_read) = alice.token(json!({"kind": "cache", "cache": "shared", "permission": "read"})).await;
    assert_eq!(status(http, info(&b), Some(&other_read)).await, StatusCode::OK);
    assert_eq!(alice.delete("/caches/shared", Some(json!({"confirm": "shared"}))).await.0, StatusCode::NO_CONTENT);
    let deleted = Instant::now();
    assert_eq!(status(http, info(&a), Some(&other_read)).await, StatusCode::UNAUTHORIZED);
    within_bound("node B forgets the deleted cache", deleted, || async {
        status(http, info(&b), Some(&other_read)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    handle.stop(true).await;
}
