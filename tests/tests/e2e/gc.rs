//! Garbage collection with the real nix: retention by last use (with the server's clock
//! moved, not slept), quotas, pins, shared NARs, per-path deletes, cache destroy — and after
//! every collection the closure checker finds nothing broken and storage holds exactly
//! what the database names.

use std::time::Duration;

use larder_api::domain::Permission;
use larder_api::services::Collection;
use larder_tests::consistency::assert_consistent;
use larder_tests::{hash_part, on_both_backends, Api, Nix, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    retention_collects_unused_closures_and_their_objects,
    soft_quota_evicts_least_recently_used_paths,
    hard_quota_refuses_pushes_before_storing,
    a_shared_nar_survives_until_no_cache_holds_it,
    pins_keep_closures_and_moving_them_releases,
    deleting_a_path_respects_its_referrers_and_answers_404_at_once,
    destroying_a_cache_reclaims_what_only_it_held,
    usage_counts_paths_bytes_and_downloads,
    a_killed_collector_leaves_nothing_the_next_run_does_not_finish with no_scheduled_collection,
    pushes_and_collections_at_once_break_nothing,
    one_collector_at_a_time,
    the_server_collects_on_its_own with collect_every_second,
    every_kind_of_token_gets_what_it_may_on_the_gc_routes,
);

fn collect_every_second(settings: &mut larder_tests::Settings) {
    settings.gc_interval_secs = 1;
}

fn no_scheduled_collection(settings: &mut larder_tests::Settings) {
    settings.gc_interval_secs = 0;
}

const DAY: Duration = Duration::from_secs(86_400);

/// Pushes `top`'s closure with stock `nix copy` and a write token.
async fn push(server: &TestServer, nix: &Nix, cache: &str, top: &str) {
    let (_, token) = server.token(cache, Permission::Write).await;
    nix.use_token(Some(&token));
    let to = format!("{}?compression=zstd", server.cache_url(cache));
    nix.run("nix", &["copy", "--to", &to, top], "").await.expect_success("nix copy --to");
    nix.use_token(None);
}

/// One collection, once no other runs: the server's own background work (the reclaim after
/// a cache is destroyed, a soft-quota eviction) holds the one-collector lock for a moment.
async fn collect(server: &TestServer) -> Collection {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(collection) = server.services().collect_garbage(None, false).await.expect("collection runs") {
            return collection;
        }
        assert!(tokio::time::Instant::now() < deadline, "another collector held the lock for 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects, then lets the release grace period pass and collects again, so that what the
/// first run deleted is gone from storage too; checks the server after each run.
async fn collect_fully(server: &TestServer) -> Collection {
    let first = collect(server).await;
    assert_consistent(server).await;
    server.services().clock().advance(Duration::from_secs(3600));
    let mut second = collect(server).await;
    assert_consistent(server).await;
    second.caches = first.caches;
    second
}

fn admin<'a>(server: &'a TestServer, token: &str) -> Api<'a> {
    Api::anonymous(server).with(token)
}

async fn set_policy(server: &TestServer, cache: &str, policy: Value) -> String {
    let (_, token) = server.token(cache, Permission::Admin).await;
    let (status, body) = admin(server, &token).put(&format!("/caches/{cache}/gc"), policy.clone()).await;
    assert_eq!((status.as_u16(), &body), (200, &policy));
    token
}

async fn narinfo_status(server: &TestServer, cache: &str, path: &str) -> u16 {
    let (_, token) = server.token(cache, Permission::Read).await;
    let url = format!("{}/{}.narinfo", server.cache_url(cache), hash_part(path));
    server.http.get(url).basic_auth("t", Some(&token)).send().await.unwrap().status().as_u16()
}

async fn stored_nar_objects(server: &TestServer) -> usize {
    server.stored_objects().await.iter().filter(|k| k.starts_with("nar/")).count()
}

async fn retention_collects_unused_closures_and_their_objects(server: &TestServer) {
    let cache = server.create_cache("retained", false).await;
    let nix = Nix::new(server.dir.path());
    let (old, recent) = (nix.build_chain().await, nix.build_chain().await);
    push(server, &nix, &cache.name, &old).await;
    push(server, &nix, &cache.name, &recent).await;
    let objects_before = stored_nar_objects(server).await;
    assert_eq!(objects_before, 10, "two closures of five paths");

    // Ten days on, only `recent`'s top is asked for: that keeps its whole closure.
    server.services().clock().advance(10 * DAY);
    assert_eq!(narinfo_status(server, &cache.name, &recent).await, 200);
    let token = set_policy(server, &cache.name, json!({"keep_days": 7, "quota_bytes": null, "quota_mode": "evict"})).await;

    let (status, preview) = admin(server, &token).get(&format!("/caches/{}/gc/preview", cache.name)).await;
    assert_eq!(status, 200, "{preview}");
    let mut previewed: Vec<String> =
        preview["paths"].as_array().unwrap().iter().map(|p| p["store_path"].as_str().unwrap().to_owned()).collect();
    previewed.sort();
    let mut expected = nix.closure(&old).await;
    expected.sort();
    assert_eq!(previewed, expected, "the preview lists exactly the unused closure");
    assert!(preview["paths"].as_array().unwrap().iter().all(|p| p["reason"] == "retention"));
    assert_eq!(preview["path_count"], 5);
    assert!(preview["bytes_freed"].as_u64().unwrap() > 0);
    assert_eq!(server.count_rows("paths").await, 10, "a preview changes nothing");

    let collection = collect_fully(server).await;
    let (_, collected) = collection.caches.iter().find(|(name, _)| name.as_str() == cache.name).unwrap();
    assert_eq!(collected.path_count, 5);
    for path in nix.closure(&old).await {
        assert_eq!(narinfo_status(server, &cache.name, &path).await, 404, "{path} was collected");
    }
    for path in nix.closure(&recent).await {
        assert_eq!(narinfo_status(server, &cache.name, &path).await, 200, "{path} was kept");
    }
    assert_eq!(stored_nar_objects(server).await, 5, "the collected NARs are gone from storage");
    assert_eq!(server.count_rows("nars").await, 5);
    assert_eq!(server.count_rows("storage_deletes").await, 0, "nothing left queued");

    // What is left still substitutes, signatures required.
    let (_, read) = server.token(&cache.name, Permission::Read).await;
    nix.use_token(Some(&read));
    let (run, _) = nix.pull_verified(&server.cache_url(&cache.name), &recent, &cache.public_key, "after-gc").await;
    run.expect_success("substituting the kept closure");
}

async fn soft_quota_evicts_least_recently_used_paths(server: &TestServer) {
    let cache = server.create_cache("soft", true).await;
    let nix = Nix::new(server.dir.path());
    let (first, second) = (nix.build_chain().await, nix.build_chain().await);
    push(server, &nix, &cache.name, &first).await;
    let (_, token) = server.token(&cache.name, Permission::Read).await;
    let (_, usage) = admin(server, &token).get("/caches/soft/usage").await;
    let one_closure = usage["stored_bytes"].as_u64().unwrap();
    let quota = one_closure + one_closure / 2;
    set_policy(server, &cache.name, json!({"keep_days": null, "quota_bytes": quota, "quota_mode": "evict"})).await;

    server.services().clock().advance(DAY);
    push(server, &nix, &cache.name, &second).await;
    // The push itself starts the eviction, in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, usage) = admin(server, &token).get("/caches/soft/usage").await;
        if usage["stored_bytes"].as_u64().unwrap() <= quota {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still over quota: {usage}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_consistent(server).await;
    assert_eq!(narinfo_status(server, &cache.name, &first).await, 404, "the least recently used top went first");
    for path in nix.closure(&second).await {
        assert_eq!(narinfo_status(server, &cache.name, &path).await, 200, "{path} was pushed last: kept");
    }
    // Every remaining path substitutes with its whole closure.
    let db = server.db().await;
    let remaining: Vec<(String,)> = sqlx::query_as("SELECT store_path FROM paths").fetch_all(&db).await.unwrap();
    db.close().await;
    let store = nix.fresh_store("remaining");
    let (from, to) = (server.cache_url(&cache.name), format!("local?root={}", store.display()));
    let mut args = vec!["copy", "--from", &from, "--to", &to];
    args.extend(remaining.iter().map(|(p,)| p.as_str()));
    nix.run("nix", &args, &larder_tests::trusting(&cache.public_key)).await.expect_success("substituting every remaining path");
}

async fn hard_quota_refuses_pushes_before_storing(server: &TestServer) {
    let cache = server.create_cache("hard", true).await;
    let nix = Nix::new(server.dir.path());
    let (first, second) = (nix.build_chain().await, nix.build_chain().await);
    push(server, &nix, &cache.name, &first).await;
    let (_, token) = server.token(&cache.name, Permission::Read).await;
    let (_, usage) = admin(server, &token).get("/caches/hard/usage").await;
    let full = usage["stored_bytes"].as_u64().unwrap();
    set_policy(server, &cache.name, json!({"keep_days": null, "quota_bytes": full, "quota_mode": "refuse"})).await;
    let objects = server.stored_objects().await;
    let nars = server.count_rows("nars").await;

    let (_, write) = server.token(&cache.name, Permission::Write).await;
    nix.use_token(Some(&write));
    let run = nix.run("nix", &["copy", "--to", &server.cache_url(&cache.name), &second], "").await;
    assert!(!run.success, "a push over a hard quota fails");
    assert!(run.stderr.contains("507") || run.stderr.contains("quota"), "{}", run.stderr);
    // The message, as a client sees it, before any byte is taken.
    let body = vec![0u8; 1000];
    let url = format!("{}/nar/{}.nar", server.cache_url(&cache.name), larder_tests::nix32_sha256(&body));
    let response = server.http.put(url).basic_auth("t", Some(&write)).body(body).send().await.unwrap();
    assert_eq!(response.status(), 507);
    let message = response.text().await.unwrap();
    assert!(message.contains("over its quota") && message.contains(&full.to_string()), "{message}");
    assert_eq!(server.stored_objects().await, objects, "nothing was stored");
    assert_eq!(server.count_rows("nars").await, nars);
    assert_eq!(narinfo_status(server, &cache.name, &second).await, 404);
    assert_consistent(server).await;
}

async fn a_shared_nar_survives_until_no_cache_holds_it(server: &TestServer) {
    let (one, two) = (server.create_cache("one", true).await, server.create_cache("two", true).await);
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    push(server, &nix, &one.name, &top).await;
    push(server, &nix, &two.name, &top).await;
    assert_eq!(stored_nar_objects(server).await, 5, "the same bytes are stored once");

    set_policy(server, &one.name, json!({"keep_days": 0, "quota_bytes": null, "quota_mode": "evict"})).await;
    server.services().clock().advance(DAY);
    collect_fully(server).await;
    assert_eq!(narinfo_status(server, &one.name, &top).await, 404);
    assert_eq!(narinfo_status(server, &two.name, &top).await, 200);
    assert_eq!(stored_nar_objects(server).await, 5, "'two' still holds them");
    let (run, _) = nix.pull_verified(&server.cache_url(&two.name), &top, &two.public_key, "from-two").await;
    run.expect_success("substituting from the cache that still holds the NARs");

    set_policy(server, &two.name, json!({"keep_days": 0, "quota_bytes": null, "quota_mode": "evict"})).await;
    server.services().clock().advance(DAY);
    collect_fully(server).await;
    assert_eq!(stored_nar_objects(server).await, 0, "gone once no cache holds them");
    assert_eq!(server.count_rows("nars").await, 0);
    assert_eq!(server.count_rows("cache_nars").await, 0);
}

async fn pins_keep_closures_and_moving_them_releases(server: &TestServer) {
    let cache = server.create_cache("pinned", true).await;
    let nix = Nix::new(server.dir.path());
    let (first, second) = (nix.build_chain().await, nix.build_chain().await);
    push(server, &nix, &cache.name, &first).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let (status, pin) = admin(server, &write).post("/caches/pinned/pins", json!({"name": "release", "store_path": first})).await;
    assert_eq!(status, 201, "{pin}");
    assert_eq!(pin["store_path"], first.as_str());
    let (status, _) = admin(server, &write).post("/caches/pinned/pins", json!({"name": "bad name!", "store_path": first})).await;
    assert_eq!(status, 400);
    let (status, _) = admin(server, &write).post("/caches/pinned/pins", json!({"name": "x", "store_path": second})).await;
    assert_eq!(status, 404, "a path the cache lacks cannot be pinned");
    let (_, read) = server.token(&cache.name, Permission::Read).await;
    let (status, _) = admin(server, &read).post("/caches/pinned/pins", json!({"name": "x", "store_path": first})).await;
    assert_eq!(status, 403, "pinning needs write");

    set_policy(server, &cache.name, json!({"keep_days": 0, "quota_bytes": null, "quota_mode": "evict"})).await;
    server.services().clock().advance(30 * DAY);
    collect_fully(server).await;
    for path in nix.closure(&first).await {
        assert_eq!(narinfo_status(server, &cache.name, &path).await, 200, "{path} is in the pinned closure");
    }

    // Moving the pin releases the old closure.
    push(server, &nix, &cache.name, &second).await;
    let (status, pin) = admin(server, &write).post("/caches/pinned/pins", json!({"name": "release", "store_path": second})).await;
    assert_eq!((status.as_u16(), pin["earlier"].as_array().unwrap().len()), (201, 0), "{pin}");
    server.services().clock().advance(DAY);
    collect_fully(server).await;
    for path in nix.closure(&first).await {
        assert_eq!(narinfo_status(server, &cache.name, &path).await, 404, "{path} was released");
    }
    for path in nix.closure(&second).await {
        assert_eq!(narinfo_status(server, &cache.name, &path).await, 200, "{path} is pinned now");
    }
    // keep_revisions: the name's earlier path stays pinned.
    let third = nix.build_chain().await;
    push(server, &nix, &cache.name, &third).await;
    for path in [&second, &third] {
        let (status, pin) =
            admin(server, &write).post("/caches/pinned/pins", json!({"name": "history", "store_path": path, "keep_revisions": 2})).await;
        assert_eq!(status, 201, "{pin}");
    }
    let (status, pins) = Api::anonymous(server).get("/caches/pinned/pins").await;
    assert_eq!(status, 200);
    let history = pins.as_array().unwrap().iter().find(|p| p["name"] == "history").expect("listed").clone();
    assert_eq!(
        (history["store_path"].as_str(), history["earlier"][0]["store_path"].as_str()),
        (Some(third.as_str()), Some(second.as_str()))
    );
    assert_eq!(admin(server, &write).delete("/caches/pinned/pins/release", None).await.0, 204);
    server.services().clock().advance(DAY);
    collect_fully(server).await;
    for path in [&second, &third] {
        assert_eq!(narinfo_status(server, &cache.name, path).await, 200, "{path} is kept by the pin's revisions");
    }
    let (status, _) = admin(server, &write).delete("/caches/pinned/pins/history", None).await;
    assert_eq!(status, 204);
    let (status, _) = admin(server, &write).delete("/caches/pinned/pins/history", None).await;
    assert_eq!(status, 404);
    server.services().clock().advance(DAY);
    collect_fully(server).await;
    assert_eq!(server.count_rows("paths").await, 0, "unpinned, nothing is kept");
}

async fn deleting_a_path_respects_its_referrers_and_answers_404_at_once(server: &TestServer) {
    let cache = server.create_cache("deleting", true).await;
    let other = server.create_cache("elsewhere", true).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    push(server, &nix, &cache.name, &top).await;
    // e → d → c → b → a, e → b: find them by name.
    let closure = nix.closure(&top).await;
    let named = |letter: &str| closure.iter().find(|p| p.split_once('-').unwrap().1.starts_with(&format!("{letter}-"))).unwrap().clone();
    let (b, c, d, e) = (named("b"), named("c"), named("d"), named("e"));
    let url = |path: &str| format!("/caches/deleting/paths/{}", hash_part(path));

    // Who may delete: admin of this cache only.
    let (_, admin_token) = server.token(&cache.name, Permission::Admin).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let (_, read) = server.token(&cache.name, Permission::Read).await;
    let (_, foreign) = server.token(&other.name, Permission::Admin).await;
    assert_eq!(Api::anonymous(server).delete(&url(&e), None).await.0, 401);
    assert_eq!(admin(server, &read).delete(&url(&e), None).await.0, 403);
    assert_eq!(admin(server, &write).delete(&url(&e), None).await.0, 403);
    assert_eq!(admin(server, &foreign).delete(&url(&e), None).await.0, 401, "another cache's token: as if it did not exist");
    let (revoked_id, revoked) = server.token(&cache.name, Permission::Admin).await;
    server.revoke_token(&revoked_id).await;
    assert_eq!(admin(server, &revoked).delete(&url(&e), None).await.0, 401);
    assert_eq!(server.count_rows("paths").await, 5, "nothing deleted so far");

    let admin_api = admin(server, &admin_token);
    let (status, refused) = admin_api.delete(&url(&b), None).await;
    assert_eq!(status, 409, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains(&c) && message.contains(&e), "names its referrers: {message}");
    assert_eq!(admin_api.delete("/caches/deleting/paths/not-a-hash", None).await.0, 404);
    let missing = "/caches/deleting/paths/00000000000000000000000000000000";
    assert_eq!(admin_api.delete(missing, None).await.0, 404);

    // Asked for first, so that this node remembers the narinfo: deleting forgets it.
    assert_eq!(narinfo_status(server, &cache.name, &e).await, 200);
    let (status, deleted) = admin_api.delete(&url(&e), None).await;
    assert_eq!((status.as_u16(), &deleted["deleted"]), (200, &json!([e])));
    assert_eq!(narinfo_status(server, &cache.name, &e).await, 404, "404 at once on the node that deleted it");

    let (status, deleted) = admin_api.call(Method::DELETE, &url(&c), Some(json!({"with_referrers": true}))).await;
    assert_eq!(status, 200, "{deleted}");
    let mut gone: Vec<String> = deleted["deleted"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    gone.sort();
    let mut expected = vec![c.clone(), d.clone()];
    expected.sort();
    assert_eq!(gone, expected, "c with its referrer d");
    let (status, _) = admin_api.call(Method::DELETE, &url(&b), Some(json!({"with_referrers": "yes"}))).await;
    assert_eq!(status, 400, "a malformed body is refused");

    // A pinned path is not deleted, directly or as a referrer.
    let (status, _) = admin(server, &write).post("/caches/deleting/pins", json!({"name": "keep", "store_path": b})).await;
    assert_eq!(status, 201);
    let (status, refused) = admin_api.delete(&url(&b), None).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("pinned"));
    assert_eq!(server.count_rows("paths").await, 2, "a and b remain");
    collect_fully(server).await;
}

async fn destroying_a_cache_reclaims_what_only_it_held(server: &TestServer) {
    let (doomed, kept) = (server.create_cache("doomed", true).await, server.create_cache("kept", true).await);
    let nix = Nix::new(server.dir.path());
    let (shared, own) = (nix.build_chain().await, nix.build_chain().await);
    push(server, &nix, &doomed.name, &shared).await;
    push(server, &nix, &kept.name, &shared).await;
    push(server, &nix, &doomed.name, &own).await;
    assert_eq!(stored_nar_objects(server).await, 10);

    let (_, token) = server.token(&doomed.name, Permission::Admin).await;
    let (status, _) = admin(server, &token).delete("/caches/doomed", Some(json!({"confirm": "doomed"}))).await;
    assert_eq!(status, 204);
    // Reclaimed in the background right after; a collection finishes whatever is left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stored_nar_objects(server).await != 5 {
        assert!(tokio::time::Instant::now() < deadline, "the destroyed cache's own NARs are still stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    collect(server).await;
    assert_eq!(stored_nar_objects(server).await, 5, "what 'kept' shares stays");
    let walked = assert_consistent(server).await;
    assert_eq!(walked.paths, 5);
    let (run, _) = nix.pull_verified(&server.cache_url(&kept.name), &shared, &kept.public_key, "kept").await;
    run.expect_success("the other cache still substitutes");
}

async fn usage_counts_paths_bytes_and_downloads(server: &TestServer) {
    let cache = server.create_cache("counted", false).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    push(server, &nix, &cache.name, &top).await;
    let (_, token) = server.token(&cache.name, Permission::Read).await;
    assert_eq!(Api::anonymous(server).get("/caches/counted/usage").await.0, 401, "a private cache's usage needs a token");
    nix.use_token(Some(&token));
    let (run, _) = nix.pull_verified(&server.cache_url(&cache.name), &top, &cache.public_key, "counted").await;
    run.expect_success("substituting");
    let (status, usage) = admin(server, &token).get("/caches/counted/usage").await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["paths"], 5);
    let db = server.db().await;
    let (stored,): (i64,) = sqlx::query_as("SELECT CAST(SUM(file_size) AS BIGINT) FROM nars").fetch_one(&db).await.unwrap();
    db.close().await;
    assert_eq!(usage["stored_bytes"], stored, "each NAR once");
    assert_eq!(usage["served_bytes_24h"], stored, "nix downloaded each NAR once");
    assert_eq!(usage["served_bytes_30d"], stored);
    assert!(usage["last_push_at"].as_i64().is_some() && usage["last_use_at"].as_i64() >= usage["last_push_at"].as_i64());

    // An account's usage covers its own caches only.
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("alices", true).await;
    let (status, mine) = alice.get("/account/usage").await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(
        mine["caches"],
        json!([{"cache": "alices", "paths": 0, "stored_bytes": 0, "served_bytes_24h": 0, "served_bytes_30d": 0, "last_push_at": null, "last_use_at": null}])
    );
    assert_eq!(mine["total"]["paths"], 0);
    assert_eq!(admin(server, &token).get("/account/usage").await.0, 403, "a cache token has no account");
}

/// Polls `count` (a SQL count) every millisecond while `child` runs; kills the child with
/// SIGKILL as soon as `caught(count)`; returns the count it was killed at, or `None` if the
/// child finished first.
async fn kill_when(server: &TestServer, child: &mut tokio::process::Child, sql: &str, mut caught: impl FnMut(i64) -> bool) -> Option<i64> {
    let db = server.db().await;
    let killed = loop {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&db).await.unwrap();
        if caught(n) {
            child.start_kill().expect("SIGKILL the collector");
            child.wait().await.unwrap();
            break Some(n);
        }
        if child.try_wait().unwrap().is_some() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    db.close().await;
    killed
}

async fn a_killed_collector_leaves_nothing_the_next_run_does_not_finish(server: &TestServer) {
    const PATHS: usize = 1500;
    let cache = server.create_cache("crashing", true).await;
    let long_ago = larder_api::services::Clock::default().now() - 30 * 86_400;
    larder_tests::generate::generate_paths(server, &cache.name, "crash", PATHS, long_ago).await;
    assert_consistent(server).await;
    set_policy(server, &cache.name, json!({"keep_days": 1, "quota_bytes": null, "quota_mode": "evict"})).await;
    // The operator's dry run lists them and changes nothing.
    let dry = server.larder_server(&["gc", "--dry-run", "--cache", &cache.name]).await;
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(dry.contains(&format!("crashing: would remove {PATHS} paths")) && dry.contains("generated-1499\t"), "{dry}");
    assert_eq!(server.count_rows("paths").await, PATHS as i64);
    // With a grace period, a run deletes paths and keeps their NARs; without, the next run
    // lets every released NAR go at once, so that its storage deletes take a while.
    let gc_with_grace = |server: &TestServer, grace: &str| {
        let mut command = server.larder_server_command(&["gc"]);
        command.env("LARDER_NAR_RELEASE_GRACE_SECS", grace).env("LARDER_STALENESS_SECS", "0").stdout(std::process::Stdio::null());
        command.spawn().expect("start larder-server gc")
    };
    let gc = |server: &TestServer| gc_with_grace(server, "0");

    // Killed while deleting paths (batch by batch: some gone, some not).
    let mut child = gc_with_grace(server, "600");
    let at = kill_when(server, &mut child, "SELECT COUNT(*) FROM paths", |n| n < PATHS as i64).await;
    let at = at.expect("the collector was killed before it finished");
    assert!(at > 0, "killed mid-run, {at} paths left");
    assert_consistent(server).await;

    // The next run finishes the paths; one a second later lets their NARs go and starts
    // deleting objects, and is killed while it does.
    let finished = gc_with_grace(server, "600").wait_with_output().await.unwrap();
    assert!(finished.status.success());
    assert_eq!(server.count_rows("paths").await, 0);
    assert_eq!(server.count_rows("nars").await, PATHS as i64, "NARs are kept through the grace period");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut child = gc(server);
    // Killed once the NARs' objects are queued: the run is then deleting them.
    let at = kill_when(server, &mut child, "SELECT COUNT(*) FROM storage_deletes", |n| n > 0).await;
    assert!(at.is_some(), "the collector was killed before it had deleted every object");
    assert_consistent(server).await;

    let finished = gc(server).wait_with_output().await.unwrap();
    assert!(finished.status.success());
    assert_consistent(server).await;
    assert_eq!(server.count_rows("nars").await, 0);
    assert_eq!(server.count_rows("storage_deletes").await, 0);
    assert_eq!(stored_nar_objects(server).await, 0, "every object deleted in the end");
}

async fn pushes_and_collections_at_once_break_nothing(server: &TestServer) {
    let cache = server.create_cache("busy", true).await;
    set_policy(server, &cache.name, json!({"keep_days": 0, "quota_bytes": null, "quota_mode": "evict"})).await;
    let nix = Nix::new(server.dir.path());
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    nix.use_token(Some(&token));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let pushes = async {
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let top = nix.build_chain().await;
            let run = nix.run("nix", &["copy", "--to", &server.cache_url(&cache.name), &top], "").await;
            outcomes.push(run.success);
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        outcomes
    };
    let collections = async {
        let mut runs = 0;
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            collect(server).await;
            runs += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        runs
    };
    let (outcomes, runs) = tokio::join!(pushes, collections);
    assert!(runs > 10, "{runs} collections ran during the pushes");
    // Pushes may fail (a reference collected under them is refused); nothing may break.
    eprintln!("pushes succeeded: {outcomes:?} against {runs} collections");
    assert_consistent(server).await;
    server.services().clock().advance(Duration::from_secs(3600));
    collect(server).await;
    assert_consistent(server).await;
}

/// The advisory lock's key, as the server takes it (`db/gc.rs`).
const COLLECTOR_LOCK_KEY: i64 = 0x6c61_7264_6572_6763;

async fn one_collector_at_a_time(server: &TestServer) {
    // Held the way another node (Postgres) or another process (SQLite) holds it.
    let mut held_pg = None;
    let mut held_file = None;
    match server.backend {
        larder_tests::Backend::PostgresS3 => {
            use sqlx::Connection;
            let url = server.settings.database_url();
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("SELECT pg_advisory_lock($1)").bind(COLLECTOR_LOCK_KEY).execute(&mut conn).await.unwrap();
            held_pg = Some(conn);
        }
        larder_tests::Backend::SqliteFs => {
            let file =
                std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(server.data_dir().join("gc.lock")).unwrap();
            file.lock().unwrap();
            held_file = Some(file);
        }
    }
    let refused = server.larder_server(&["gc"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another collection is running"), "{refused:?}");
    assert!(server.services().collect_garbage(None, false).await.unwrap().is_none(), "the server's own collector waits its turn too");

    drop(held_file);
    if let Some(conn) = held_pg {
        use sqlx::Connection;
        conn.close().await.unwrap();
    }
    let ran = server.larder_server(&["gc"]).await;
    assert!(ran.status.success(), "{ran:?}");
    assert!(server.services().collect_garbage(None, false).await.unwrap().is_some());
}

async fn the_server_collects_on_its_own(server: &TestServer) {
    let cache = server.create_cache("scheduled", true).await;
    let long_ago = larder_api::services::Clock::default().now() - 30 * 86_400;
    larder_tests::generate::generate_paths(server, &cache.name, "scheduled", 20, long_ago).await;
    set_policy(server, &cache.name, json!({"keep_days": 7, "quota_bytes": null, "quota_mode": "evict"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while server.count_rows("paths").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "no scheduled collection within 15 s of a 1 s interval");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_consistent(server).await;
}

async fn every_kind_of_token_gets_what_it_may_on_the_gc_routes(server: &TestServer) {
    let cache = server.create_cache("guarded", false).await;
    let other = server.create_cache("unrelated", false).await;
    let token = |permission| async move { server.token("guarded", permission).await.1 };
    let (read, write, admin_token) = (token(Permission::Read).await, token(Permission::Write).await, token(Permission::Admin).await);
    let foreign = server.token(&other.name, Permission::Admin).await.1;
    let (revoked_id, revoked) = server.token(&cache.name, Permission::Admin).await;
    server.revoke_token(&revoked_id).await;
    let expired = server.expiring_token(&cache.name, Permission::Admin, Duration::from_secs(1)).await.1;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let policy = json!({"keep_days": 30, "quota_bytes": null, "quota_mode": "evict"});
    let pin = json!({"name": "p", "store_path": "00bgd045z0d4icpbc2yyz4gx48ak44la-x"});
    let no_path = "/caches/guarded/paths/00bgd045z0d4icpbc2yyz4gx48ak44la";
    // (method, path, body, [anonymous, foreign, revoked, expired, read, write, admin])
    let table: Vec<(Method, &str, Option<Value>, [u16; 7])> = vec![
        (Method::GET, "/caches/guarded/gc", None, [401, 401, 401, 401, 200, 200, 200]),
        (Method::PUT, "/caches/guarded/gc", Some(policy), [401, 401, 401, 401, 403, 403, 200]),
        (Method::GET, "/caches/guarded/gc/preview", None, [401, 401, 401, 401, 403, 403, 200]),
        (Method::GET, "/caches/guarded/pins", None, [401, 401, 401, 401, 200, 200, 200]),
        (Method::POST, "/caches/guarded/pins", Some(pin), [401, 401, 401, 401, 403, 404, 404]),
        (Method::DELETE, "/caches/guarded/pins/p", None, [401, 401, 401, 401, 403, 404, 404]),
        (Method::DELETE, no_path, None, [401, 401, 401, 401, 403, 403, 404]),
        (Method::GET, "/caches/guarded/usage", None, [401, 401, 401, 401, 200, 200, 200]),
        (Method::GET, "/account/usage", None, [401, 403, 401, 401, 403, 403, 403]),
    ];
    let callers = [None, Some(&foreign), Some(&revoked), Some(&expired), Some(&read), Some(&write), Some(&admin_token)];
    let names = ["anonymous", "another cache's admin", "revoked", "expired", "read", "write", "admin"];
    for (method, path, body, expected) in &table {
        for ((caller, name), want) in callers.iter().zip(names).zip(expected) {
            let api = match caller {
                Some(token) => admin(server, token),
                None => Api::anonymous(server),
            };
            let (status, answer) = api.call(method.clone(), path, body.clone()).await;
            assert_eq!(status.as_u16(), *want, "{method} {path} as {name}: {answer}");
            if *want >= 400 {
                assert!(answer["error"].is_string() && answer["message"].is_string(), "{method} {path} as {name}: {answer}");
            }
        }
    }
}
