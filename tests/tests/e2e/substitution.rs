//! Push a closure with stock `nix copy --to`, substitute it back into a fresh store with
//! signatures required, and compare contents.

use larder_api::domain::Permission;
use larder_tests::{assert_same_tree, hash_part, on_both_backends, store_path_of, trusting, Nix, TestServer};

on_both_backends!(
    push_zstd_and_substitute_with_nix_copy,
    push_xz_and_substitute_with_nix_store_realise,
    push_uncompressed_with_listing_and_read_it_back,
    pushing_again_is_idempotent,
    build_logs_round_trip,
    other_compressions_round_trip,
);

/// Pushes the closure of `top` with a write token; returns nothing, panics on failure.
async fn push(server: &TestServer, nix: &Nix, cache: &str, top: &str, params: &str) {
    let (_, token) = server.token(cache, Permission::Write).await;
    nix.use_token(Some(&token));
    let to = format!("{}?{params}", server.cache_url(cache));
    nix.run("nix", &["copy", "--to", &to, top], "").await.expect_success("nix copy --to");
    nix.use_token(None);
}

async fn push_zstd_and_substitute_with_nix_copy(server: &TestServer) {
    let cache = server.create_cache("team", true).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let closure = nix.closure(&top).await;
    assert!(closure.len() >= 5, "the test closure has {} paths", closure.len());
    push(server, &nix, &cache.name, &top, "compression=zstd").await;
    assert_eq!(server.count_rows("paths").await, closure.len() as i64);

    let (run, store) = nix.pull_verified(&server.cache_url(&cache.name), &top, &cache.public_key, "pulled").await;
    run.expect_success("nix copy --from (anonymous, public cache)");
    for path in &closure {
        assert_same_tree(path.as_ref(), &store.join(path.trim_start_matches('/')));
    }
}

async fn push_xz_and_substitute_with_nix_store_realise(server: &TestServer) {
    let cache = server.create_cache("xz-cache", true).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    push(server, &nix, &cache.name, &top, "compression=xz").await;

    let store = nix.fresh_store("realised");
    let config = format!("{}\nsubstituters = {}", trusting(&cache.public_key), server.cache_url(&cache.name));
    let store_arg = format!("local?root={}", store.display());
    nix.run("nix-store", &["--store", &store_arg, "-r", &top], &config).await.expect_success("nix-store -r");
    for path in nix.closure(&top).await {
        assert_same_tree(path.as_ref(), &store.join(path.trim_start_matches('/')));
    }
}

async fn push_uncompressed_with_listing_and_read_it_back(server: &TestServer) {
    let cache = server.create_cache("plain", true).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    push(server, &nix, &cache.name, &top, "compression=none&write-nar-listing=true").await;

    let hash = hash_part(&top);
    let narinfo = server.http.get(format!("{}/{hash}.narinfo", server.cache_url(&cache.name))).send().await.unwrap();
    assert_eq!(narinfo.status(), 200);
    assert_eq!(narinfo.headers()["content-type"], "text/x-nix-narinfo");
    let text = narinfo.text().await.unwrap();
    assert!(text.contains("Compression: none\n") && text.contains(&format!("StorePath: {top}\n")), "{text}");
    let info = larder_protocol::narinfo::NarInfo::parse(&text).expect("served narinfo parses");
    let key = larder_protocol::signing::PublicKey::parse(&cache.public_key).unwrap();
    let sig = info.sigs[0].clone();
    assert!(key.verify(info.fingerprint().as_bytes(), &sig), "served signature verifies");

    // The NAR as served is the NAR nix dumps, with its size, ranges and no Content-Encoding.
    let nar_url = format!("{}/{}", server.cache_url(&cache.name), info.url);
    let nar = server.http.get(&nar_url).send().await.unwrap();
    assert_eq!(nar.status(), 200);
    assert!(nar.headers().get("content-encoding").is_none());
    assert_eq!(nar.headers()["accept-ranges"], "bytes");
    assert!(nar.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    let expected = nix.dump(&top).await;
    assert_eq!(nar.bytes().await.unwrap().as_ref(), expected.as_slice());
    let head = server.http.head(&nar_url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], expected.len().to_string().as_str());
    let part = server.http.get(&nar_url).header("Range", "bytes=8-20").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 8-20/{}", expected.len()).as_str());
    assert_eq!(part.bytes().await.unwrap().as_ref(), &expected[8..=20]);
    let beyond = server.http.get(&nar_url).header("Range", format!("bytes={}-", expected.len() + 10)).send().await.unwrap();
    assert_eq!(beyond.status(), 416);

    // The listing is computed by the server from the NAR, and names the files nix built.
    let listing = server.http.get(format!("{}/{hash}.ls", server.cache_url(&cache.name))).send().await.unwrap();
    assert_eq!(listing.status(), 200);
    let listing: serde_json::Value = listing.json().await.unwrap();
    assert_eq!(listing["version"], 1);
    assert_eq!(listing["root"]["entries"]["bin"]["entries"]["run"]["executable"], true);
    assert_eq!(listing["root"]["entries"]["share"]["entries"]["link"]["target"], "../data");
}

async fn pushing_again_is_idempotent(server: &TestServer) {
    let cache = server.create_cache("again", false).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    push(server, &nix, &cache.name, &top, "compression=zstd").await;
    let (paths, nars, objects) = (server.count_rows("paths").await, server.count_rows("nars").await, server.stored_objects().await);
    // A fresh client cache makes nix ask again; everything is already there.
    push(server, &nix, &cache.name, &top, "compression=zstd").await;
    // Asking for another compression changes nothing either: the paths are there.
    push(server, &nix, &cache.name, &top, "compression=xz").await;
    assert_eq!(server.count_rows("paths").await, paths);
    assert_eq!(server.count_rows("nars").await, nars);
    assert_eq!(server.stored_objects().await, objects);
}

async fn build_logs_round_trip(server: &TestServer) {
    let cache = server.create_cache("logs", true).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    push(server, &nix, &cache.name, &top, "compression=zstd").await;
    let (_, token) = server.token(&cache.name, Permission::Write).await;
    nix.use_token(Some(&token));
    nix.run("nix", &["store", "copy-log", "--to", &server.cache_url(&cache.name), &top], "").await.expect_success("nix store copy-log");
    nix.use_token(None);
    let log = nix.run("nix", &["log", "--store", &server.cache_url(&cache.name), &top], "").await.expect_success("nix log");
    let top_path = store_path_of(&top);
    let name = top_path.name();
    assert!(log.stdout.contains(&format!("building {name}")), "the log of {top} is not what the build printed: {log:?}");
}

/// bzip2, brotli and gzip (which nix names plain `.nar`, told apart by its first bytes).
async fn other_compressions_round_trip(server: &TestServer) {
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    for compression in ["bzip2", "br", "gzip"] {
        let cache = server.create_cache(&format!("c-{compression}"), true).await;
        push(server, &nix, &cache.name, &top, &format!("compression={compression}")).await;
        let hash = hash_part(&top);
        let narinfo = server.http.get(format!("{}/{hash}.narinfo", server.cache_url(&cache.name))).send().await.unwrap();
        assert!(narinfo.text().await.unwrap().contains(&format!("Compression: {compression}\n")));
        let (run, store) = nix.pull_verified(&server.cache_url(&cache.name), &top, &cache.public_key, compression).await;
        run.expect_success(&format!("pull of a {compression} push"));
        assert_same_tree(top.as_ref(), &store.join(top.trim_start_matches('/')));
    }
}
