//! The isolation matrix: every route of the binary cache and of the API, against a private
//! cache of one account, for every kind of caller. No response may let a caller read,
//! write, list or even detect what it has no right to.

use std::time::Duration;

use larder_api::auth::{Claims, TokenKeys};
use larder_api::domain::Permission;
use larder_api::domain::{AccountId, CacheLimit, CacheName, TokenScope};
use larder_tests::{hash_part, on_both_backends, Api, Nix, TestServer};
use reqwest::{Method, StatusCode};

on_both_backends!(every_route_for_every_caller);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Anonymous,
    OtherAccountsPersonal,
    OtherCachesToken,
    Read,
    Write,
    Admin,
    Revoked,
    Expired,
    Malformed,
    WrongSignature,
}

const CALLERS: [Caller; 10] = [
    Caller::Anonymous,
    Caller::OtherAccountsPersonal,
    Caller::OtherCachesToken,
    Caller::Read,
    Caller::Write,
    Caller::Admin,
    Caller::Revoked,
    Caller::Expired,
    Caller::Malformed,
    Caller::WrongSignature,
];

/// (method, path, body, what it needs, its status for a caller who may)
type Route = (Method, String, Option<Vec<u8>>, Needs, StatusCode);

/// What a route requires of a caller.
#[derive(Clone, Copy)]
enum Needs {
    /// A token that may read the cache: 401 otherwise.
    Read,
    /// A token that may write: 403 for a read token, 401 for the rest.
    Write,
    /// A token that may administer: 403 for read and write tokens, 401 for the rest.
    Admin,
    /// An account token (session or personal): cache tokens get 403, no token 401.
    Account,
    /// An account token that administers the target: cache tokens get 403, everyone
    /// else (the other account included) 401.
    AccountOnTarget,
    /// Open to all: the token does not matter.
    Open,
}

impl Needs {
    fn expected(self, caller: Caller, ok: StatusCode) -> StatusCode {
        use Caller::*;
        match (self, caller) {
            (Needs::Open, _) => ok,
            (Needs::AccountOnTarget, Read | Write | Admin | OtherCachesToken) => StatusCode::FORBIDDEN,
            (Needs::AccountOnTarget, _) => StatusCode::UNAUTHORIZED,
            (Needs::Account, Read | Write | Admin | OtherCachesToken) => StatusCode::FORBIDDEN,
            (Needs::Account, OtherAccountsPersonal) => ok,
            (Needs::Account, _) => StatusCode::UNAUTHORIZED,
            (_, Read) if !matches!(self, Needs::Read) => StatusCode::FORBIDDEN,
            (Needs::Admin, Write) => StatusCode::FORBIDDEN,
            (_, Read | Write | Admin) => ok,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

async fn every_route_for_every_caller(server: &TestServer) {
    // The target: a private cache of an account, holding a pushed chain.
    let alice = server.services().sign_up("alice", "alice@example.com", "correct horse battery").await.unwrap();
    let name = |n: &str| CacheName::parse(n).unwrap();
    let _ = server.services().create_cache(&name("target"), Some(alice.id), false, None, "").await.unwrap();
    let mallory_id = server.services().sign_up("mallory", "mallory@example.com", "correct horse battery").await.unwrap().id;
    server.services().create_cache(&name("mallory-cache"), Some(mallory_id), false, None, "").await.unwrap();

    let (_, write) = server.token("target", Permission::Write).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &format!("{}?compression=none", server.cache_url("target")), &top], "").await.expect_success("push");
    let hash = hash_part(&top);
    let narinfo = server.http.get(format!("{}/{hash}.narinfo", server.cache_url("target"))).bearer_auth(&write).send().await.unwrap();
    let narinfo_text = narinfo.text().await.unwrap();
    let nar_url = narinfo_text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_owned();
    let nar = nix.dump(&top).await;

    let tokens = callers(server, mallory_id).await;
    let (read_id, _) = server.token("target", Permission::Read).await;
    let log = "0123456789abcdfghijklmnpqrsvwxyz-x.drv";

    let bc = |path: &str| format!("/target/{path}");
    let routes: Vec<Route> = vec![
        (Method::GET, bc("nix-cache-info"), None, Needs::Read, StatusCode::OK),
        (Method::HEAD, bc("nix-cache-info"), None, Needs::Read, StatusCode::OK),
        (Method::GET, bc(&format!("{hash}.narinfo")), None, Needs::Read, StatusCode::OK),
        (Method::HEAD, bc(&format!("{hash}.narinfo")), None, Needs::Read, StatusCode::OK),
        (Method::GET, bc("0123456789abcdfghijklmnpqrsvwxyz.narinfo"), None, Needs::Read, StatusCode::NOT_FOUND),
        (Method::GET, bc(&nar_url), None, Needs::Read, StatusCode::OK),
        (Method::HEAD, bc(&nar_url), None, Needs::Read, StatusCode::OK),
        (Method::GET, bc(&format!("{hash}.ls")), None, Needs::Read, StatusCode::OK),
        (Method::GET, bc(&format!("log/{log}")), None, Needs::Read, StatusCode::NOT_FOUND),
        (Method::PUT, bc("nix-cache-info"), Some(b"StoreDir: /nix/store\n".to_vec()), Needs::Write, StatusCode::OK),
        (Method::PUT, bc(&nar_url), Some(nar.clone()), Needs::Write, StatusCode::OK),
        (Method::PUT, bc(&format!("{hash}.narinfo")), Some(narinfo_text.clone().into_bytes()), Needs::Write, StatusCode::OK),
        (Method::PUT, bc(&format!("{hash}.ls")), Some(b"{}".to_vec()), Needs::Write, StatusCode::OK),
        (Method::PUT, bc(&format!("log/{log}")), Some(b"a log".to_vec()), Needs::Write, StatusCode::OK),
        (Method::GET, "/api/v1/caches/target".into(), None, Needs::Read, StatusCode::OK),
        (Method::PATCH, "/api/v1/caches/target".into(), Some(br#"{"priority": 42}"#.to_vec()), Needs::Admin, StatusCode::OK),
        (Method::DELETE, "/api/v1/caches/target".into(), Some(br#"{"confirm": "not-it"}"#.to_vec()), Needs::Admin, StatusCode::BAD_REQUEST),
        (Method::GET, "/api/v1/caches/target/keys".into(), None, Needs::Read, StatusCode::OK),
        (Method::POST, "/api/v1/caches/target/keys".into(), None, Needs::Admin, StatusCode::CREATED),
        (Method::DELETE, "/api/v1/caches/target/keys/target-9".into(), None, Needs::Admin, StatusCode::NOT_FOUND),
        (
            Method::POST,
            "/api/v1/caches/target/public-keys".into(),
            Some(br#"{"public_key":"x-1:iOhYVo9K9bOKL5FU79DypZN103FPj9iXGFcVUVX2tIQ="}"#.to_vec()),
            Needs::Admin,
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/api/v1/caches/target/secret-key".into(),
            Some(br#"{"secret_key":"not a key"}"#.to_vec()),
            Needs::Admin,
            StatusCode::BAD_REQUEST,
        ),
        (Method::PUT, "/api/v1/caches/target/signing-mode".into(), Some(br#"{"mode":"server"}"#.to_vec()), Needs::Admin, StatusCode::OK),
        (Method::GET, "/api/v1/caches".into(), None, Needs::Account, StatusCode::OK),
        (Method::GET, "/api/v1/tokens".into(), None, Needs::Account, StatusCode::OK),
        (Method::GET, "/api/v1/account".into(), None, Needs::Account, StatusCode::OK),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(br#"{"kind":"cache","cache":"target","permission":"read"}"#.to_vec()),
            Needs::AccountOnTarget,
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(br#"{"kind":"personal","caches":["target"],"permission":"read"}"#.to_vec()),
            Needs::AccountOnTarget,
            StatusCode::CREATED,
        ),
        // Mallory's own account: her answers, never alice's things.
        (Method::DELETE, format!("/api/v1/tokens/{read_id}"), None, Needs::Account, StatusCode::NOT_FOUND),
        (
            Method::POST,
            "/api/v1/caches".into(),
            Some(br#"{"name":"mallory-new","public":false}"#.to_vec()),
            Needs::Account,
            StatusCode::CREATED,
        ),
        (
            Method::PUT,
            "/api/v1/account/password".into(),
            Some(br#"{"current_password":"not it at all","new_password":"a new long passphrase"}"#.to_vec()),
            Needs::Account,
            StatusCode::BAD_REQUEST,
        ),
        (Method::DELETE, "/api/v1/account".into(), Some(br#"{"confirm":"alice"}"#.to_vec()), Needs::Account, StatusCode::BAD_REQUEST),
        (Method::DELETE, "/api/v1/sessions/current".into(), None, Needs::Account, StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/api/v1/sessions".into(),
            Some(br#"{"username":"alice","password":"not the password"}"#.to_vec()),
            Needs::Open,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/api/v1/accounts".into(),
            Some(br#"{"username":"alice","email":"x@example.com","password":"correct horse battery"}"#.to_vec()),
            Needs::Open,
            StatusCode::CONFLICT,
        ),
    ];

    for (method, path, body, needs, ok) in &routes {
        for caller in CALLERS {
            let token = tokens.iter().find(|(c, _)| *c == caller).and_then(|(_, t)| t.clone());
            let (status, text) = send(server, method.clone(), path, body.clone(), token.as_deref()).await;
            let expected = needs.expected(caller, *ok);
            assert_eq!(status, expected, "{method} {path} as {caller:?}: {text}");
            if status == StatusCode::UNAUTHORIZED && method != Method::HEAD {
                assert!(!text.contains("target") && !text.contains(&hash), "{method} {path} as {caller:?} leaks: {text}");
                // Without a token of its own, a hidden cache answers exactly as a missing one.
                let missing = path.replace("/target/", "/missing/").replace("/caches/target", "/caches/missing");
                if missing != *path {
                    let (other_status, other_text) = send(server, method.clone(), &missing, body.clone(), token.as_deref()).await;
                    assert_eq!((other_status, &other_text), (status, &text), "{method} {path} vs {missing} as {caller:?}");
                }
            }
        }
    }

    // Account routes answer only with the caller's own things.
    let mallory_personal = tokens.iter().find(|(c, _)| *c == Caller::OtherAccountsPersonal).and_then(|(_, t)| t.clone()).unwrap();
    for path in ["/api/v1/caches", "/api/v1/tokens", "/api/v1/account"] {
        let (_, text) = send(server, Method::GET, path, None, Some(&mallory_personal)).await;
        assert!(!text.contains("target") && !text.contains("alice") && !text.contains(&read_id), "{path} leaks to mallory: {text}");
    }
    let (status, _) = send(server, Method::DELETE, &format!("/api/v1/tokens/{read_id}"), None, Some(&mallory_personal)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "mallory revoking alice's token");
    let (status, _) =
        send(server, Method::GET, "/target/nix-cache-info", None, Some(&server_token(server, "target", Permission::Read).await)).await;
    assert_eq!(status, StatusCode::OK, "alice's tokens still work after all that");
}

async fn server_token(server: &TestServer, cache: &str, permission: Permission) -> String {
    server.token(cache, permission).await.1
}

/// A token for each kind of caller (None for anonymous).
async fn callers(server: &TestServer, mallory_id: AccountId) -> Vec<(Caller, Option<String>)> {
    let services = server.services();
    let personal = services
        .issue_token(TokenScope::Personal { account: mallory_id, caches: CacheLimit::All }, Permission::Admin, None, "mallory")
        .await
        .unwrap()
        .secret;
    let (revoked_id, revoked) = server.token("target", Permission::Admin).await;
    server.revoke_token(&revoked_id).await;
    let (_, expired) = server.expiring_token("target", Permission::Admin, Duration::from_secs(1)).await;
    let (admin_id, admin) = server.token("target", Permission::Admin).await;
    let target_id = services.all_caches().await.unwrap().into_iter().find(|c| c.name.as_str() == "target").unwrap().id.get();
    // Valid claims for a real token id, signed with another secret.
    let forged = TokenKeys::new(&[7; 32])
        .issue(&Claims { jti: admin_id, cache: Some(target_id), account: None, perm: "admin".into(), iat: 0, exp: None })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    vec![
        (Caller::Anonymous, None),
        (Caller::OtherAccountsPersonal, Some(personal)),
        (Caller::OtherCachesToken, Some(server.token("mallory-cache", Permission::Admin).await.1)),
        (Caller::Read, Some(server.token("target", Permission::Read).await.1)),
        (Caller::Write, Some(server.token("target", Permission::Write).await.1)),
        (Caller::Admin, Some(admin)),
        (Caller::Revoked, Some(revoked)),
        (Caller::Expired, Some(expired)),
        (Caller::Malformed, Some("not-a-token".into())),
        (Caller::WrongSignature, Some(forged)),
    ]
}

/// Sends a request: through [`Api`] (Bearer, a JSON body sent as it is) for `/api/v1/…`,
/// as nix would (Basic, any login) on the binary cache.
async fn send(server: &TestServer, method: Method, path: &str, body: Option<Vec<u8>>, token: Option<&str>) -> (StatusCode, String) {
    if let Some(api_path) = path.strip_prefix("/api/v1").filter(|rest| rest.starts_with('/')) {
        let api = Api::anonymous(server);
        let api = match token {
            Some(token) => api.with(token),
            None => api,
        };
        return api.call_raw(method, api_path, body, "application/json").await;
    }
    let mut request = server.http.request(method, format!("{}{path}", server.base_url));
    if let Some(token) = token {
        request = request.basic_auth("nix", Some(token));
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}
