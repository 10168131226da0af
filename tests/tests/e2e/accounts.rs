//! Accounts and the REST API: sign up, log in, own caches, mint and revoke tokens, and
//! substitute from a private cache with nothing but a read token in netrc.

use larder_tests::{assert_same_tree, on_both_backends, Api, Nix, TestServer, PASSPHRASE};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_backends!(
    sign_up_push_and_substitute_privately_through_the_api,
    accounts_cannot_see_or_touch_each_others_caches,
    bad_account_input_is_refused_with_stable_codes,
    password_change_logout_and_account_deletion,
    logins_are_rate_limited,
    revocation_reaches_every_node_at_once with nothing_remembered,
);

async fn sign_up_push_and_substitute_privately_through_the_api(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    let (status, cache) = alice.post("/caches", json!({"name": "alice-private", "public": false})).await;
    assert_eq!(status, StatusCode::CREATED, "{cache}");
    assert_eq!(cache["public"], false);
    let (_, info) = alice.get("/caches/alice-private").await;
    let public_key = info["public_keys"][0].as_str().unwrap().to_owned();
    assert_eq!(info["substituter"], format!("{}/alice-private", server.base_url));

    let (_, write) = alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": "write", "description": "CI"})).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("alice-private"), &top], "")
        .await
        .expect_success("push with an API-made write token");

    let (read_id, read) = alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": "read", "expires_in": 86400})).await;
    nix.use_token(Some(&read));
    let url = server.cache_url("alice-private");
    let (run, store) = nix.pull_verified(&url, &top, &public_key, "teammate").await;
    run.expect_success("substitute with only a read token in netrc");
    assert_same_tree(top.as_ref(), &store.join(top.trim_start_matches('/')));

    let (_, tokens) = alice.get("/tokens").await;
    let listed = tokens.as_array().unwrap().iter().find(|t| t["id"] == read_id.as_str()).expect("the read token is listed");
    assert_eq!(listed["cache"], "alice-private");
    assert!(listed.get("token").is_none(), "a listed token never shows its secret");

    let (status, _) = alice.delete(&format!("/tokens/{read_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (refused, _) = nix.pull_verified(&url, &top, &public_key, "after-revoke").await;
    assert!(!refused.success, "a revoked read token still substitutes");

    // A personal token acts on all of the account's caches.
    let (_, personal) = alice.token(json!({"kind": "personal", "permission": "read"})).await;
    nix.use_token(Some(&personal));
    nix.pull_verified(&url, &top, &public_key, "personal").await.0.expect_success("substitute with a personal read token");
}

async fn accounts_cannot_see_or_touch_each_others_caches(server: &TestServer) {
    let anonymous = Api::anonymous(server);
    let alice = anonymous.account("alice").await;
    let mallory = anonymous.account("mallory").await;
    alice.post("/caches", json!({"name": "alice-secret", "public": false})).await;
    alice.post("/caches", json!({"name": "alice-open", "public": true})).await;
    mallory.post("/caches", json!({"name": "mallory-own", "public": false})).await;

    let (_, mine) = mallory.get("/caches").await;
    let names: Vec<&str> = mine.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mallory-own"], "listing shows only one's own caches");

    // Alice's private cache and a cache that does not exist answer Mallory identically.
    for path in ["/caches/alice-secret", "/caches/no-such-cache"] {
        let (status, body) = mallory.get(path).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{path}");
    }
    let (hidden, unknown) = (mallory.get("/caches/alice-secret").await.1, mallory.get("/caches/no-such-cache").await.1);
    assert_eq!(hidden, unknown);
    // Reading a public cache is fine, changing it is not.
    assert_eq!(mallory.get("/caches/alice-open").await.0, StatusCode::OK);
    for cache in ["alice-open", "alice-secret"] {
        let (status, _) = mallory.call(reqwest::Method::PATCH, &format!("/caches/{cache}"), Some(json!({"public": true}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "PATCH {cache}");
        let (status, _) = mallory.delete(&format!("/caches/{cache}"), Some(json!({"confirm": cache}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "DELETE {cache}");
        let (status, _) = mallory.post("/tokens", json!({"kind": "cache", "cache": cache, "permission": "read"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "token for {cache}");
    }
    let (status, _) = mallory.post("/tokens", json!({"kind": "personal", "caches": ["alice-secret"], "permission": "read"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Mallory's own personal admin token opens nothing of Alice's on the binary cache.
    let (_, token) = mallory.token(json!({"kind": "personal", "permission": "admin"})).await;
    let response =
        server.http.get(format!("{}/nix-cache-info", server.cache_url("alice-secret"))).basic_auth("x", Some(&token)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response =
        server.http.get(format!("{}/nix-cache-info", server.cache_url("mallory-own"))).basic_auth("x", Some(&token)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Nor can Mallory revoke Alice's tokens.
    let (alice_token_id, _) = alice.token(json!({"kind": "cache", "cache": "alice-secret", "permission": "read"})).await;
    assert_eq!(mallory.delete(&format!("/tokens/{alice_token_id}"), None).await.0, StatusCode::NOT_FOUND);
    let (_, alice_tokens) = alice.get("/tokens").await;
    assert!(alice_tokens.as_array().unwrap().iter().any(|t| t["id"] == alice_token_id.as_str() && t["revoked_at"].is_null()));

    // A personal token limited to one cache reaches only that one.
    let (_, limited) = alice.token(json!({"kind": "personal", "caches": ["alice-open"], "permission": "write"})).await;
    let info = |cache: &str| server.http.get(format!("{}/nix-cache-info", server.cache_url(cache))).bearer_auth(&limited).send();
    assert_eq!(info("alice-open").await.unwrap().status(), StatusCode::OK);
    assert_eq!(info("alice-secret").await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

async fn bad_account_input_is_refused_with_stable_codes(server: &TestServer) {
    let anonymous = Api::anonymous(server);
    let alice = anonymous.account("alice").await;
    let accounts_before = server.count_rows("accounts").await;
    let cases = [
        (json!({"username": "alice", "email": "other@example.com", "password": "a fine long password"}), StatusCode::CONFLICT, "conflict"),
        (json!({"username": "bob", "email": "ALICE@example.com", "password": "a fine long password"}), StatusCode::CONFLICT, "conflict"),
        (json!({"username": "bob", "email": "bob@example.com", "password": "short"}), StatusCode::BAD_REQUEST, "bad_request"),
        (json!({"username": "bob", "email": "bob@example.com", "password": "x".repeat(300)}), StatusCode::BAD_REQUEST, "bad_request"),
        (
            json!({"username": "Bob!", "email": "bob@example.com", "password": "a fine long password"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (json!({"username": "bob", "email": "not-an-email", "password": "a fine long password"}), StatusCode::BAD_REQUEST, "bad_request"),
        (
            json!({"username": "b".repeat(100), "email": "bob@example.com", "password": "a fine long password"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (json!({"username": "bob", "email": "bob@example.com"}), StatusCode::BAD_REQUEST, "bad_request"),
        (
            json!({"username": "bob", "email": "bob@example.com", "password": "a fine long password", "admin": true}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, error) = anonymous.post("/accounts", body.clone()).await;
        assert_eq!((got, error["error"].as_str()), (status, Some(code)), "{body}: {error}");
    }
    for (body, content_type) in [("{not json", "application/json"), (r#"{"username":"bob"}"#, "text/plain")] {
        let (status, text) = anonymous.call_raw(reqwest::Method::POST, "/accounts", Some(body.as_bytes().to_vec()), content_type).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"], "bad_request", "{error}");
    }
    assert_eq!(server.count_rows("accounts").await, accounts_before, "nothing written");

    // Names that cannot exist (Postgres would refuse a NUL) answer like unknown users.
    let (status, _) = anonymous.post("/sessions", json!({"username": "a\u{0}b", "password": "whatever it is"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let tokens_before = server.count_rows("tokens").await;
    let (status, error) = alice.post("/tokens", json!({"kind": "personal", "permission": "read", "description": "bad\u{0}text"})).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    assert_eq!(server.count_rows("tokens").await, tokens_before);

    // Wrong password and unknown user answer alike.
    let (a, wrong) = anonymous.post("/sessions", json!({"username": "alice", "password": "not the passphrase"})).await;
    let (b, unknown) = anonymous.post("/sessions", json!({"username": "nobody", "password": "not the passphrase"})).await;
    assert_eq!((a, b), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(wrong, unknown);

    let caches_before = server.count_rows("caches").await;
    for (body, code) in [
        (json!({"name": "../etc", "public": true}), "bad_request"),
        (json!({"name": "api", "public": true}), "bad_request"),
        (json!({"name": "ok-name", "public": true, "priority": -1}), "bad_request"),
        (json!({"name": "ok-name", "public": true, "description": "x".repeat(600)}), "bad_request"),
        (json!({"name": "ok-name"}), "bad_request"),
    ] {
        let (_, error) = alice.post("/caches", body.clone()).await;
        assert_eq!(error["error"], code, "{body}");
    }
    assert_eq!(server.count_rows("caches").await, caches_before);
    alice.post("/caches", json!({"name": "taken", "public": true})).await;
    let bob = anonymous.account("bob").await;
    assert_eq!(bob.post("/caches", json!({"name": "taken", "public": true})).await.1["error"], "conflict");
    assert_eq!(anonymous.get("/caches").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.get("/no-such-route").await.1["error"], "not_found");
}

async fn password_change_logout_and_account_deletion(server: &TestServer) {
    let anonymous = Api::anonymous(server);
    let carol = anonymous.account("carol").await;
    carol.post("/caches", json!({"name": "carol-cache", "public": false})).await;
    let (_, cache_token) = carol.token(json!({"kind": "cache", "cache": "carol-cache", "permission": "read"})).await;

    let change = |current: &str, new: &str| {
        carol.call(reqwest::Method::PUT, "/account/password", Some(json!({"current_password": current, "new_password": new})))
    };
    assert_eq!(change("wrong one entirely", "a brand new passphrase").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(change(PASSPHRASE, "a brand new passphrase").await.0, StatusCode::NO_CONTENT);
    let login = |password: &str| anonymous.post("/sessions", json!({"username": "carol", "password": password}));
    assert_eq!(login(PASSPHRASE).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(login("a brand new passphrase").await.0, StatusCode::CREATED);

    // A cache token cannot manage the account.
    assert_eq!(anonymous.with(&cache_token).get("/account").await.0, StatusCode::FORBIDDEN);

    // A read-only personal token may not revoke tokens, nor "log out".
    let (_, read_personal) = carol.token(json!({"kind": "personal", "permission": "read"})).await;
    let reader = anonymous.with(&read_personal);
    let (cache_token_id, _) = carol.token(json!({"kind": "cache", "cache": "carol-cache", "permission": "write"})).await;
    assert_eq!(reader.delete(&format!("/tokens/{cache_token_id}"), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(reader.delete("/sessions/current", None).await.0, StatusCode::BAD_REQUEST);

    // Changing the password ends the other sessions.
    let (_, other) = login("a brand new passphrase").await;
    let other = anonymous.with(other["token"].as_str().unwrap());
    assert_eq!(other.get("/account").await.0, StatusCode::OK);
    assert_eq!(change("a brand new passphrase", "another new passphrase").await.0, StatusCode::NO_CONTENT);
    assert_eq!(other.get("/account").await.0, StatusCode::UNAUTHORIZED, "a session from before the change");
    assert_eq!(carol.get("/account").await.0, StatusCode::OK, "the session that changed it lives on");

    let (_, second) = login("another new passphrase").await;
    let second = anonymous.with(second["token"].as_str().unwrap());
    assert_eq!(second.delete("/sessions/current", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(second.get("/account").await.0, StatusCode::UNAUTHORIZED, "logged out");
    assert_eq!(carol.get("/account").await.1["username"], "carol", "the other session lives on");

    assert_eq!(carol.delete("/account", Some(json!({"confirm": "not-carol"}))).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(carol.delete("/account", Some(json!({"confirm": "carol"}))).await.0, StatusCode::NO_CONTENT);
    assert_eq!(server.count_rows("accounts").await, 0);
    assert_eq!(server.count_rows("caches").await, 0, "the account's caches went with it");
    assert_eq!(server.count_rows("tokens").await, 0, "and its tokens");
    let response =
        server.http.get(format!("{}/nix-cache-info", server.cache_url("carol-cache"))).bearer_auth(&cache_token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn logins_are_rate_limited(server: &TestServer) {
    let anonymous = Api::anonymous(server);
    anonymous.account("dave").await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(anonymous.post("/sessions", json!({"username": "dave", "password": "guess guess guess"})).await.0);
    }
    assert!(statuses[..9].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert_eq!(statuses[11], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // Even the right password waits now: guessing cannot continue at full speed.
    let (status, body) = anonymous.post("/sessions", json!({"username": "dave", "password": PASSPHRASE})).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_requests")));
    // ...from the guessing address only: dave, elsewhere, is not locked out by his attacker
    // (the per-account limit is looser and needs many addresses to trip).
    let elsewhere = Api::from_address(server, "127.0.0.2".parse().unwrap());
    let (status, body) = elsewhere.post("/sessions", json!({"username": "dave", "password": PASSPHRASE})).await;
    assert_eq!(status, StatusCode::CREATED, "the owner from another address: {body}");
    // Another account is not locked out by dave's attacker.
    anonymous.account("erin").await;
}

/// With `staleness_secs = 0` no node remembers a token: a revocation is seen everywhere at
/// once (the default bound is tested in `staleness.rs`).
fn nothing_remembered(settings: &mut larder_tests::Settings) {
    settings.staleness_secs = 0;
}

async fn revocation_reaches_every_node_at_once(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.post("/caches", json!({"name": "shared", "public": false})).await;
    let (id, token) = alice.token(json!({"kind": "cache", "cache": "shared", "permission": "read"})).await;
    let (node_b, handle) = server.second_node().await;
    let info = |base: String| server.http.get(format!("{base}/shared/nix-cache-info")).basic_auth("x", Some(&token)).send();
    assert_eq!(info(node_b.clone()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(alice.delete(&format!("/tokens/{id}"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(info(node_b.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED, "node B still honours a revoked token");
    assert_eq!(info(server.base_url.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    handle.stop(true).await;
}
