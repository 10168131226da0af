//! Per-cache host names (`{cache}.{base_domain}`), as Cachix serves them: one netrc line
//! per private cache. curl resolves `*.localhost` to the loopback address by itself, so
//! nix reaches `{cache}.localhost` with no DNS set-up.

use larder_api::domain::Permission;
use larder_tests::{assert_same_tree, on_both_backends, Nix, Settings, TestServer};

on_both_backends!(each_private_cache_on_its_own_host with cache_hosts_under_localhost);

/// Caches are also served as `{cache}.localhost`.
fn cache_hosts_under_localhost(settings: &mut Settings) {
    settings.base_domain = Some("localhost".into());
}

async fn each_private_cache_on_its_own_host(server: &TestServer) {
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
        let (run, store) = nix.pull_verified(&format!("http://{host}:{port}"), &top, key, host).await;
        run.expect_success("substitute from a cache host with its netrc line");
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
    let (refused, _) = nix.pull_verified(&format!("http://{host}:{port}"), &top, key, "after-revoke").await;
    assert!(!refused.success, "a revoked token still reads through its cache host");
    let (_, second_token, _, _) = &reads[1];
    // Path-based URLs keep working beside the host names.
    let path_based =
        server.http.get(format!("{}/first-team/nix-cache-info", server.base_url)).bearer_auth(second_token).send().await.unwrap();
    assert_eq!(path_based.status(), 401, "the second cache's token does not open the first cache");
    let path_based =
        server.http.get(format!("{}/second-team/nix-cache-info", server.base_url)).bearer_auth(second_token).send().await.unwrap();
    assert_eq!(path_based.status(), 200);
}
