//! Who may read and write, as the real nix client experiences it.

use larder_api::domain::Permission;
use larder_tests::{assert_same_tree, on_both_backends, Nix, TestServer};

on_both_backends!(
    private_cache_reads_need_a_read_token,
    read_token_cannot_push,
    revoked_token_is_refused,
    wrong_trusted_key_refuses_substitution,
    unknown_and_private_caches_look_alike_to_nix,
);

/// A private cache holding a freshly built chain; returns (nix, top path, public key).
async fn private_cache_with_chain(server: &TestServer, name: &str) -> (Nix, String, String) {
    let cache = server.create_cache(name, false).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let (_, write) = server.token(name, Permission::Write).await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &format!("{}?compression=zstd", server.cache_url(name)), &top], "")
        .await
        .expect_success("push to the private cache");
    nix.use_token(None);
    (nix, top, cache.public_key)
}

async fn private_cache_reads_need_a_read_token(server: &TestServer) {
    let (nix, top, key) = private_cache_with_chain(server, "secret").await;

    let url = server.cache_url("secret");
    nix.use_token(None);
    let (anonymous, store) = nix.pull_verified(&url, &top, &key, "anonymous").await;
    assert!(!anonymous.success, "an anonymous client got a private path");
    assert!(!store.join(top.trim_start_matches('/')).exists());

    let (_, read) = server.token("secret", Permission::Read).await;
    nix.use_token(Some(&read));
    let (run, store) = nix.pull_verified(&url, &top, &key, "with-token").await;
    run.expect_success("pull with a read token in netrc");
    assert_same_tree(top.as_ref(), &store.join(top.trim_start_matches('/')));

    // A token of another cache opens nothing here.
    server.create_cache("other", false).await;
    let (_, other) = server.token("other", Permission::Admin).await;
    nix.use_token(Some(&other));
    assert!(!nix.pull_verified(&url, &top, &key, "other-token").await.0.success);
}

async fn read_token_cannot_push(server: &TestServer) {
    server.create_cache("read-only", true).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let (_, read) = server.token("read-only", Permission::Read).await;
    nix.use_token(Some(&read));
    let push = nix.run("nix", &["copy", "--to", &server.cache_url("read-only"), &top], "").await;
    assert!(!push.success, "a read token pushed");
    assert!(push.stderr.contains("403"), "expected a 403 in: {}", push.stderr);
    assert!(push.stderr.contains("may not write"), "expected the refusal's reason in: {}", push.stderr);
    assert_eq!(server.count_rows("paths").await, 0);
    assert_eq!(server.count_rows("nars").await, 0);

    nix.use_token(None);
    let anonymous = nix.run("nix", &["copy", "--to", &server.cache_url("read-only"), &top], "").await;
    assert!(!anonymous.success, "an anonymous client pushed");
    assert_eq!(server.count_rows("paths").await, 0);
}

async fn revoked_token_is_refused(server: &TestServer) {
    let (nix, top, key) = private_cache_with_chain(server, "revoke").await;
    let (id, read) = server.token("revoke", Permission::Read).await;
    let url = server.cache_url("revoke");
    nix.use_token(Some(&read));
    nix.pull_verified(&url, &top, &key, "before").await.0.expect_success("pull before revocation");
    server.revoke_token(&id).await;
    assert!(!nix.pull_verified(&url, &top, &key, "after").await.0.success, "a revoked token still reads");

    let (write_id, write) = server.token("revoke", Permission::Write).await;
    server.revoke_token(&write_id).await;
    nix.use_token(Some(&write));
    let other = nix.build_chain().await;
    assert!(!nix.run("nix", &["copy", "--to", &server.cache_url("revoke"), &other], "").await.success, "a revoked token pushed");
}

async fn wrong_trusted_key_refuses_substitution(server: &TestServer) {
    let cache = server.create_cache("signed", true).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let (_, write) = server.token("signed", Permission::Write).await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("signed"), &top], "").await.expect_success("push");
    nix.use_token(None);

    // Same key name, another key: nix must refuse the paths as unsigned.
    let impostor = larder_protocol::signing::SecretKey::generate("signed-1").unwrap().public_key().to_nix_string();
    assert_ne!(impostor, cache.public_key);
    let url = server.cache_url("signed");
    let (refused, _) = nix.pull_verified(&url, &top, &impostor, "impostor").await;
    assert!(!refused.success, "nix accepted paths under the wrong key");
    assert!(refused.stderr.contains("lacks a valid signature"), "{}", refused.stderr);
    nix.pull_verified(&url, &top, &cache.public_key, "right-key").await.0.expect_success("pull with the cache's key");
}

async fn unknown_and_private_caches_look_alike_to_nix(server: &TestServer) {
    server.create_cache("hidden", false).await;
    let http = &server.http;
    for cache in ["hidden", "nowhere"] {
        let response = http.get(format!("{}/nix-cache-info", server.cache_url(cache))).send().await.unwrap();
        assert_eq!(response.status(), 401, "{cache}");
        assert_eq!(response.headers()["www-authenticate"], r#"Basic realm="larder""#);
    }
    let hidden = http.get(format!("{}/nix-cache-info", server.cache_url("hidden"))).send().await.unwrap().text().await.unwrap();
    let nowhere = http.get(format!("{}/nix-cache-info", server.cache_url("nowhere"))).send().await.unwrap().text().await.unwrap();
    assert_eq!(hidden, nowhere);
}
