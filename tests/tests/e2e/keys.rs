//! Signing key rotation with server-held keys, as the real nix sees it: clients trusting
//! the old key, the new one or both all substitute during the overlap; after the old key
//! is retired, only clients trusting the new one do.

use larder_api::domain::Permission;
use larder_tests::{on_both_backends, Nix, TestServer};
use reqwest::StatusCode;
use serde_json::Value;

on_both_backends!(rotation_keeps_every_client_working_until_retirement);

async fn rotation_keeps_every_client_working_until_retirement(server: &TestServer) {
    let old = server.create_cache("rotating", true).await;
    let (_, admin) = server.token("rotating", Permission::Admin).await;
    let (_, write) = server.token("rotating", Permission::Write).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("rotating"), &top], "").await.expect_success("push");
    nix.use_token(None);

    let keys_url = format!("{}/api/v1/caches/rotating/keys", server.base_url);
    let added = server.http.post(&keys_url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["name"], "rotating-2");
    let new_key = added["public_key"].as_str().unwrap().to_owned();

    // Existing paths are re-signed in the background: wait (bounded) for both signatures.
    let hash = &top["/nix/store/".len()..][..32];
    let narinfo_url = format!("{}/{hash}.narinfo", server.cache_url("rotating"));
    let mut sigs = 0;
    for _ in 0..100 {
        let text = server.http.get(&narinfo_url).send().await.unwrap().text().await.unwrap();
        sigs = text.lines().filter(|l| l.starts_with("Sig: ")).count();
        if sigs == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sigs, 2, "existing paths carry both signatures during the overlap");

    let pull = |trusted: String, store: &'static str| {
        let to = format!("local?root={}", nix.fresh_store(store).display());
        let config = format!("require-sigs = true\ntrusted-public-keys = {trusted}");
        let from = server.cache_url("rotating");
        let top = top.clone();
        let nix = &nix;
        async move { nix.run("nix", &["copy", "--from", &from, "--to", &to, &top], &config).await }
    };
    pull(old.public_key.clone(), "old").await.expect_success("client trusting only the old key, during the overlap");
    pull(new_key.clone(), "new").await.expect_success("client trusting only the new key, during the overlap");
    pull(format!("{} {new_key}", old.public_key), "both").await.expect_success("client trusting both keys");

    // The keys as the API lists them; the last active key cannot be retired.
    let retire = |name: &str| server.http.delete(format!("{keys_url}/{name}")).bearer_auth(&admin).send();
    assert_eq!(retire("rotating-1").await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(retire("rotating-2").await.unwrap().status(), StatusCode::CONFLICT, "the last active key stays");
    assert_eq!(retire("rotating-9").await.unwrap().status(), StatusCode::NOT_FOUND);
    let listed: Value = server.http.get(&keys_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["active"], false);
    assert_eq!(listed[1]["active"], true);
    let info: Value = server.http.get(format!("{}/api/v1/caches/rotating", server.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["public_keys"], serde_json::json!([new_key]));

    let text = server.http.get(&narinfo_url).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("Sig: rotating-1:") && text.contains("Sig: rotating-2:"), "{text}");
    assert!(!pull(old.public_key.clone(), "old-after").await.success, "the retired key still vouches for paths");
    pull(new_key.clone(), "new-after").await.expect_success("client trusting the new key after retirement");

    // A new push after the rotation is signed by the new key only.
    let other = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("rotating"), &other], "").await.expect_success("push after rotation");
    let other_hash = &other["/nix/store/".len()..][..32];
    let text = server.http.get(format!("{}/{other_hash}.narinfo", server.cache_url("rotating"))).send().await.unwrap().text().await.unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("Sig: ")).collect::<Vec<_>>().len(), 1, "{text}");
    assert!(text.contains("Sig: rotating-2:"));

    // Only an admin of the cache rotates.
    assert_eq!(server.http.post(&keys_url).bearer_auth(&write).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(server.http.post(&keys_url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
