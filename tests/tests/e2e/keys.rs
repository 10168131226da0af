//! Signing keys as the real nix sees them: rotation of server-held keys (clients trusting
//! the old key, the new one or both all substitute during the overlap; after retirement
//! only new-key clients do), client-held keys made by `nix key generate-secret`, and
//! switching between the two.

use larder_api::domain::Permission;
use larder_tests::{hash_part, on_both_backends, Api, Nix, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;

on_both_backends!(
    rotation_keeps_every_client_working_until_retirement,
    client_held_keys_sign_every_push,
    switching_modes_is_explicit,
    no_secret_is_stored_in_clear,
);

async fn rotation_keeps_every_client_working_until_retirement(server: &TestServer) {
    let old = server.create_cache("rotating", true).await;
    let (_, admin) = server.token("rotating", Permission::Admin).await;
    let (_, write) = server.token("rotating", Permission::Write).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("rotating"), &top], "").await.expect_success("push");
    nix.use_token(None);

    let anonymous = Api::anonymous(server);
    let admin_api = anonymous.with(&admin);
    let keys = "/caches/rotating/keys";
    let (status, added) = admin_api.call(Method::POST, keys, None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(added["name"], "rotating-2");
    let new_key = added["public_key"].as_str().unwrap().to_owned();

    // Existing paths are re-signed in the background: wait (bounded) for both signatures.
    let hash = hash_part(&top);
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

    let url = server.cache_url("rotating");
    nix.pull_verified(&url, &top, &old.public_key, "old").await.0.expect_success("client trusting only the old key, during the overlap");
    nix.pull_verified(&url, &top, &new_key, "new").await.0.expect_success("client trusting only the new key, during the overlap");
    let both = format!("{} {new_key}", old.public_key);
    nix.pull_verified(&url, &top, &both, "both").await.0.expect_success("client trusting both keys");

    // The keys as the API lists them; the last active key cannot be retired.
    let retire = |name: &str| {
        let (admin_api, path) = (&admin_api, format!("{keys}/{name}"));
        async move { admin_api.delete(&path, None).await.0 }
    };
    assert_eq!(retire("rotating-1").await, StatusCode::NO_CONTENT);
    assert_eq!(retire("rotating-2").await, StatusCode::CONFLICT, "the last active key stays");
    assert_eq!(retire("rotating-9").await, StatusCode::NOT_FOUND);
    let (_, listed) = anonymous.get(keys).await;
    assert_eq!(listed[0]["active"], false);
    assert_eq!(listed[1]["active"], true);
    let (_, info) = anonymous.get("/caches/rotating").await;
    assert_eq!(info["public_keys"], serde_json::json!([new_key]));

    let text = server.http.get(&narinfo_url).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("Sig: rotating-1:") && text.contains("Sig: rotating-2:"), "{text}");
    assert!(!nix.pull_verified(&url, &top, &old.public_key, "old-after").await.0.success, "the retired key still vouches for paths");
    nix.pull_verified(&url, &top, &new_key, "new-after").await.0.expect_success("client trusting the new key after retirement");

    // A new push after the rotation is signed by the new key only.
    let other = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("rotating"), &other], "").await.expect_success("push after rotation");
    let other_hash = hash_part(&other);
    let text =
        server.http.get(format!("{}/{other_hash}.narinfo", server.cache_url("rotating"))).send().await.unwrap().text().await.unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("Sig: ")).collect::<Vec<_>>().len(), 1, "{text}");
    assert!(text.contains("Sig: rotating-2:"));

    // Only an admin of the cache rotates.
    assert_eq!(anonymous.with(&write).call(Method::POST, keys, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(anonymous.call(Method::POST, keys, None).await.0, StatusCode::UNAUTHORIZED);
}

/// A key pair made by the real `nix key generate-secret`: (secret file, public key).
async fn nix_key(nix: &Nix, dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let secret = nix.run("nix", &["key", "generate-secret", "--key-name", name], "").await.expect_success("nix key generate-secret");
    let file = dir.join(format!("{name}.secret"));
    std::fs::write(&file, secret.stdout.trim()).unwrap();
    let public = tokio::process::Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "key", "convert-secret-to-public"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .await
        .unwrap();
    assert!(public.status.success());
    (file, String::from_utf8(public.stdout).unwrap().trim().to_owned())
}

async fn client_held_keys_sign_every_push(server: &TestServer) {
    server.create_cache("own-keys", true).await;
    let (_, admin) = server.token("own-keys", Permission::Admin).await;
    let (_, write) = server.token("own-keys", Permission::Write).await;
    let admin_api = Api::anonymous(server).with(&admin);
    let (status, _) = admin_api.put("/caches/own-keys/signing-mode", serde_json::json!({"mode": "client"})).await;
    assert_eq!(status, StatusCode::OK);

    let nix = Nix::new(server.dir.path());
    let (secret, public) = nix_key(&nix, server.dir.path(), "own-keys-ci-1").await;
    let (stranger_secret, _) = nix_key(&nix, server.dir.path(), "stranger-1").await;
    let (status, _) = admin_api.post("/caches/own-keys/public-keys", serde_json::json!({"public_key": public})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = admin_api.post("/caches/own-keys/public-keys", serde_json::json!({"public_key": "nonsense"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(admin_api.call(Method::POST, "/caches/own-keys/keys", None).await.0, StatusCode::CONFLICT, "no server keys here");

    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    let url = server.cache_url("own-keys");
    for (what, to) in [("unsigned", url.clone()), ("signed by another key", format!("{url}?secret-key={}", stranger_secret.display()))] {
        let refused = nix.run("nix", &["copy", "--to", &to, &top], "").await;
        assert!(!refused.success, "a push {what} was accepted");
        assert!(refused.stderr.contains("no valid signature") && refused.stderr.contains("own-keys-ci-1"), "{what}: {}", refused.stderr);
        assert_eq!(server.count_rows("paths").await, 0, "{what}: nothing published");
    }
    nix.run("nix", &["copy", "--to", &format!("{url}?secret-key={}", secret.display()), &top], "").await.expect_success("signed push");

    // Served: exactly the client's signature, the one nix made (ed25519 is deterministic).
    let hash = hash_part(&top);
    let text = server.http.get(format!("{url}/{hash}.narinfo")).send().await.unwrap().text().await.unwrap();
    let info = larder_protocol::narinfo::NarInfo::parse(&text).unwrap();
    let ours = larder_protocol::signing::SecretKey::parse(&std::fs::read_to_string(&secret).unwrap()).unwrap();
    assert_eq!(info.sigs, vec![ours.sign(info.fingerprint().as_bytes())]);
    nix.pull_verified(&url, &top, &public, "client-held").await.0.expect_success("substitute with the client's public key");
}

async fn switching_modes_is_explicit(server: &TestServer) {
    let cache = server.create_cache("switching", true).await;
    let (_, admin) = server.token("switching", Permission::Admin).await;
    let (_, write) = server.token("switching", Permission::Write).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("switching"), &top], "").await.expect_success("push");
    let paths = server.count_rows("paths").await;
    let anonymous = Api::anonymous(server);
    let admin_api = anonymous.with(&admin);
    let set = |body: Value| admin_api.put("/caches/switching/signing-mode", body);

    // Server → client with paths: refused unless they are dropped.
    let (status, _) = set(serde_json::json!({"mode": "client"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(server.count_rows("paths").await, paths, "nothing changed");
    assert_eq!(set(serde_json::json!({"mode": "client", "drop_paths": true})).await.0, StatusCode::OK);
    assert_eq!(server.count_rows("paths").await, 0);
    let hash = hash_part(&top);
    let narinfo = format!("{}/{hash}.narinfo", server.cache_url("switching"));
    assert_eq!(server.http.get(&narinfo).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Client → server: a fresh server key; pushes are signed by the server again.
    let (secret, public) = nix_key(&nix, server.dir.path(), "switching-own-1").await;
    admin_api.post("/caches/switching/public-keys", serde_json::json!({"public_key": public})).await;
    nix.run("nix", &["copy", "--to", &format!("{}?secret-key={}", server.cache_url("switching"), secret.display()), &top], "")
        .await
        .expect_success("signed push in client mode");
    assert_eq!(set(serde_json::json!({"mode": "server"})).await.0, StatusCode::OK);
    let (_, info) = anonymous.get("/caches/switching").await;
    let server_key = info["public_keys"][0].as_str().unwrap().to_owned();
    assert_eq!(info["public_keys"].as_array().unwrap().len(), 1);
    assert!(server_key.starts_with("switching-2:") && server_key != cache.public_key, "{server_key}");
    let mut text = String::new();
    for _ in 0..100 {
        text = server.http.get(&narinfo).send().await.unwrap().text().await.unwrap();
        if text.contains("Sig: switching-2:") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(text.contains("Sig: switching-2:") && !text.contains("Sig: switching-own-1:"), "{text}");
    nix.pull_verified(&server.cache_url("switching"), &top, &server_key, "back-to-server")
        .await
        .0
        .expect_success("substitute after switching back to server-held keys");
}

/// Reads the whole database (the SQLite files, or a pg_dump) and every file of the data
/// directory, and finds no signing secret and no token in any clear form.
async fn no_secret_is_stored_in_clear(server: &TestServer) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    server.create_cache("secrets", false).await;
    let (_, admin) = server.token("secrets", Permission::Admin).await;
    let (_, read) = server.token("secrets", Permission::Read).await;
    let imported = larder_protocol::signing::SecretKey::generate("secrets-imported-1").unwrap();
    let (status, text) = Api::anonymous(server)
        .with(&admin)
        .call_text(Method::POST, "/caches/secrets/secret-key", Some(serde_json::json!({"secret_key": imported.to_nix_string()})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!text.contains(&imported.to_nix_string()[19..]), "the API echoes no secret");

    // Open the sealed keys the way the server does, to know what must not appear.
    let master = larder_api::config::load_or_create_secret(None, &server.data_dir().join("master.key"), "master key").unwrap();
    let master = larder_api::signing::MasterKey::new(master);
    let pool = server.db().await;
    let rows: Vec<(String, Option<Vec<u8>>, Option<String>)> =
        sqlx::query_as("SELECT key_name, encrypted_secret, master_key_id FROM signing_keys").fetch_all(&pool).await.unwrap();
    pool.close().await;
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, sealed, master_id) in rows {
        let key = master.open(&name, &sealed.expect("server-held"), master_id.as_deref()).unwrap();
        let pair = key.to_keypair_bytes();
        needles.push((format!("{name}: secret key (nix form)"), key.to_nix_string().into_bytes()));
        needles.push((format!("{name}: base64 of the key pair"), b64.encode(pair).into_bytes()));
        needles.push((format!("{name}: seed bytes"), pair[..32].to_vec()));
        needles.push((format!("{name}: seed hex"), hex_lower(&pair[..32]).into_bytes()));
        needles.push((format!("{name}: seed base64"), b64.encode(&pair[..32]).trim_end_matches('=').as_bytes().to_vec()));
    }
    assert_eq!(needles.len(), 10, "two keys: generated and imported");
    for token in [&admin, &read] {
        needles.push(("a token".into(), token.as_bytes().to_vec()));
        needles.push(("a token's signature".into(), token.rsplit('.').next().unwrap().as_bytes().to_vec()));
    }

    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    for file in larder_tests::backends::files_below(&server.data_dir()) {
        haystacks.push((file.clone(), std::fs::read(server.data_dir().join(&file)).unwrap()));
    }
    if server.settings.database_url().starts_with("postgres") {
        let dump = std::process::Command::new("pg_dump").arg("--data-only").arg(server.settings.database_url()).output().unwrap();
        assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
        assert!(String::from_utf8_lossy(&dump.stdout).contains("secrets-imported-1"), "the dump holds the data");
        haystacks.push(("pg_dump".into(), dump.stdout));
    } else {
        assert!(haystacks.iter().any(|(name, _)| name == "larder.db"), "the SQLite file is read");
    }
    for (name, bytes) in &haystacks {
        for (what, needle) in &needles {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_slice()), "{what} found in clear in {name}");
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
