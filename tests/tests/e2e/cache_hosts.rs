//! Per-cache host names (`{cache}.{base_domain}`), as Cachix serves them: one netrc line
//! per private cache. curl resolves `*.localhost` to the loopback address by itself, so
//! nix reaches `{cache}.localhost` with no DNS set-up.

use larder_api::domain::Permission;
use larder_tests::{assert_same_tree, Backend, Nix, TestServer};

async fn each_private_cache_on_its_own_host(backend: Backend) {
    use futures_util::FutureExt;
    let server = TestServer::start_with(backend, |s| s.base_domain = Some("localhost".into())).await;
    let outcome = std::panic::AssertUnwindSafe(check(&server)).catch_unwind().await;
    server.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn check(server: &TestServer) {
    let port = server.base_url.rsplit(':').next().unwrap();
    let host_url = |cache: &str| format!("http://{cache}.localhost:{port}");
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let mut reads = Vec::new();
    for name in ["first-team", "second-team"] {
        let cache = server.create_cache(name, false).await;
        let (_, write) = server.token(name, Permission::Write).await;
        nix.use_tokens(&[(&format!("{name}.localhost"), &write)]);
        nix.run("nix", &["copy", "--to", &host_url(name), &top], "").await.expect_success("push to a cache host");
        let (read_id, read) = server.token(name, Permission::Read).await;
        reads.push((format!("{name}.localhost"), read, cache.public_key, read_id));
    }
    // One netrc with a line per cache host; each token opens only its own cache.
    let lines: Vec<(&str, &str)> = reads.iter().map(|(host, token, _, _)| (host.as_str(), token.as_str())).collect();
    nix.use_tokens(&lines);
    for (host, _, key, _) in &reads {
        let store = nix.fresh_store(host);
        let to = format!("local?root={}", store.display());
        let config = format!("require-sigs = true\ntrusted-public-keys = {key}");
        nix.run("nix", &["copy", "--from", &format!("http://{host}:{port}"), "--to", &to, &top], &config)
            .await
            .expect_success("substitute from a cache host with its netrc line");
        assert_same_tree(top.as_ref(), &store.join(top.trim_start_matches('/')));
    }
    // The first cache's token, sent to the second cache's host, opens nothing.
    let info = server
        .http
        .get(format!("{}/nix-cache-info", server.base_url))
        .header("Host", format!("second-team.localhost:{port}"))
        .basic_auth("x", Some(&reads[0].1))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 401);
    // Revoking a token closes its cache host to it, at once.
    server.revoke_token(&reads[0].3).await;
    let (host, _, key, _) = &reads[0];
    let to = format!("local?root={}", nix.fresh_store("after-revoke").display());
    let config = format!("require-sigs = true\ntrusted-public-keys = {key}");
    let refused = nix.run("nix", &["copy", "--from", &format!("http://{host}:{port}"), "--to", &to, &top], &config).await;
    assert!(!refused.success, "a revoked token still reads through its cache host");
    let (_, second_token, _, _) = &reads[1];
    // Path-based URLs keep working beside the host names.
    let path_based = server.http.get(format!("{}/first-team/nix-cache-info", server.base_url)).bearer_auth(second_token).send().await.unwrap();
    assert_eq!(path_based.status(), 401, "the second cache's token does not open the first cache");
    let path_based = server.http.get(format!("{}/second-team/nix-cache-info", server.base_url)).bearer_auth(second_token).send().await.unwrap();
    assert_eq!(path_based.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fs_each_private_cache_on_its_own_host() {
    each_private_cache_on_its_own_host(Backend::SqliteFs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_s3_each_private_cache_on_its_own_host() {
    each_private_cache_on_its_own_host(Backend::PostgresS3).await;
}
