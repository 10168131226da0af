//! The push API: one question for which paths a cache lacks, and what each kind of token
//! gets from it.

use larder_tests::{on_both_backends, Api, Nix, TestServer, TokenKinds};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_backends!(missing_paths_are_asked_once_for_many, missing_paths_for_each_kind_of_token,);

async fn missing_paths_are_asked_once_for_many(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("alice-cache", false).await;
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "alice-cache", "permission": "write"})).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    let closure = nix.closure(&top).await;
    // Push all but the top path (its closure without it).
    let below: Vec<String> = closure.iter().filter(|p| **p != top).cloned().collect();
    for path in &below {
        nix.run("nix", &["copy", "--to", &server.cache_url("alice-cache"), path], "").await.expect_success("nix copy");
    }
    let never = "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-never-pushed".to_owned();
    let mut asked = vec![never.clone(), top.clone()];
    asked.extend(below.iter().cloned());
    let (status, answer) = alice.post("/caches/alice-cache/missing-paths", json!({"store_paths": asked})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"missing": [never, top]}), "in the order asked");

    // 10,000 at once is fine (one request, over 64 KiB of JSON); more is refused.
    let many: Vec<String> = (0..10_000).map(|i| format!("/nix/store/{:0>32}-p{i}", i % 10).replace('0', "a")).collect();
    let (status, answer) = alice.post("/caches/alice-cache/missing-paths", json!({"store_paths": many})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["missing"].as_array().unwrap().len(), 10_000);
    let mut too_many = many.clone();
    too_many.push(many[0].clone());
    let (status, answer) = alice.post("/caches/alice-cache/missing-paths", json!({"store_paths": too_many})).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("the most is 10000"), "{answer}");

    for bad in [json!({"store_paths": ["not-a-path"]}), json!({"store_paths": "x"}), json!({"paths": []})] {
        let (status, answer) = alice.post("/caches/alice-cache/missing-paths", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
}

async fn missing_paths_for_each_kind_of_token(server: &TestServer) {
    let TokenKinds { bobs, read, write, admin, revoked, expired, limited_elsewhere, .. } =
        TokenKinds::around_alice_private(server, "read").await;
    let ask = json!({"store_paths": ["/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-x"]});
    let anonymous = Api::anonymous(server);
    let cases: Vec<(&str, Api<'_>, &str, StatusCode)> = vec![
        ("anonymous", Api::anonymous(server), "alice-private", StatusCode::UNAUTHORIZED),
        ("anonymous on a public cache", Api::anonymous(server), "alice-public", StatusCode::OK),
        ("another tenant's", anonymous.with(&bobs), "alice-private", StatusCode::UNAUTHORIZED),
        ("read", anonymous.with(&read), "alice-private", StatusCode::OK),
        ("write", anonymous.with(&write), "alice-private", StatusCode::OK),
        ("admin", anonymous.with(&admin), "alice-private", StatusCode::OK),
        ("revoked", anonymous.with(&revoked), "alice-private", StatusCode::UNAUTHORIZED),
        ("expired", anonymous.with(&expired), "alice-private", StatusCode::UNAUTHORIZED),
        ("personal, limited to another cache", anonymous.with(&limited_elsewhere), "alice-private", StatusCode::UNAUTHORIZED),
    ];
    for (kind, api, cache, expected) in cases {
        let (status, answer): (StatusCode, Value) = api.post(&format!("/caches/{cache}/missing-paths"), ask.clone()).await;
        assert_eq!(status, expected, "{kind}: {answer}");
        if expected == StatusCode::OK {
            assert_eq!(answer["missing"], ask["store_paths"], "{kind}");
        }
    }
}
