//! The dashboard over plain HTTP: its security properties (headers, cookies, form tokens,
//! tenancy, escaping, what each kind of credential gets) and the rules it shares with the
//! API (referenced paths, paging). The journeys in a real browser are in `dashboard.rs`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use larder_tests::{on_both_backends, Api, Nix, Settings, TestServer, PASSPHRASE};
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    pages_carry_security_headers_and_strict_cookies,
    cookies_are_secure_behind_https with behind_https,
    a_form_without_its_token_changes_nothing,
    log_in_renews_the_session_and_log_out_ends_it,
    other_accounts_caches_answer_like_missing_ones,
    what_each_kind_of_credential_gets_on_the_dashboard,
    everything_shown_is_escaped,
    a_referenced_path_is_not_deleted_alone,
    paths_are_paged_and_searchable,
    log_ins_are_rate_limited,
    keys_rotate_retire_register_and_switch_mode,
    settings_are_saved_and_a_cache_is_deleted_by_its_name,
    account_password_personal_tokens_and_deletion,
    snippets_name_the_cache_host_under_a_base_domain with with_base_domain,
);

/// A browser without a browser: a cookie jar and no redirect following.
struct Browser<'a> {
    server: &'a TestServer,
    http: reqwest::Client,
    cookies: Mutex<BTreeMap<String, String>>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("")
    }

    /// The form token of the page's first form.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).unwrap_or_else(|| panic!("no form token on the page:\n{}", self.body)) + marker.len();
        self.body[start..start + 64].to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

impl<'a> Browser<'a> {
    fn new(server: &'a TestServer) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { server, http, cookies: Mutex::default() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    fn set_cookie(&self, name: &str, value: &str) {
        self.cookies.lock().unwrap().insert(name.to_owned(), value.to_owned());
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let response = request.header("cookie", self.cookie_header()).send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        let page = Page { status, headers, body };
        let mut jar = self.cookies.lock().unwrap();
        for set in page.set_cookies() {
            let (pair, attributes) = set.split_once(';').unwrap_or((&set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
        drop(jar);
        page
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.server.base_url))).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.server.base_url)).form(fields)).await
    }

    /// Posts a form shown on `page` with that page's form token.
    async fn submit(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(page).await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    async fn sign_up(server: &'a TestServer, username: &str) -> Self {
        let browser = Self::new(server);
        let email = format!("{username}@example.com");
        let page = browser.submit("/signup", "/signup", &[("username", username), ("email", &email), ("password", PASSPHRASE)]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert!(browser.cookie("larder_session").is_some());
        browser
    }

    async fn create_cache(&self, name: &str, visibility: &str) {
        let page = self
            .submit("/caches/new", "/caches/new", &[("name", name), ("visibility", visibility), ("signing", "server"), ("priority", "41")])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location(), format!("/caches/{name}?done=cache-created"));
    }

    /// Creates a cache token on the tokens page; returns its secret.
    async fn create_token(&self, cache: &str, permission: &str) -> String {
        let tokens = format!("/caches/{cache}/tokens");
        let page = self.submit(&tokens, &tokens, &[("permission", permission), ("description", "test"), ("expires", "30d")]).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        between(&page.body, "<code id=\"new-token-secret\" class=\"secret\" tabindex=\"0\">", "</code>").to_owned()
    }
}

fn between<'t>(text: &'t str, start: &str, end: &str) -> &'t str {
    let from = text.find(start).unwrap_or_else(|| panic!("{start} not in:\n{text}")) + start.len();
    let to = text[from..].find(end).unwrap() + from;
    &text[from..to]
}

fn behind_https(settings: &mut Settings) {
    settings.public_url = Some("https://larder.example.com".into());
}

async fn pages_carry_security_headers_and_strict_cookies(server: &TestServer) {
    let browser = Browser::new(server);
    let page = browser.get("/signup").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["cache-control"], "no-store");
    // No inline script or style anywhere (the CSP would block them anyway).
    assert!(!page.body.contains("<script>") && !page.body.contains("style="), "{}", page.body);
    let presession = page.set_cookies().into_iter().find(|c| c.starts_with("larder_presession=")).expect("a pre-session cookie");
    assert!(presession.contains("HttpOnly") && presession.contains("SameSite=Lax"), "{presession}");
    assert!(!presession.contains("Secure"), "plain http: {presession}");

    let page = browser.submit("/signup", "/signup", &[("username", "alice"), ("email", "a@example.com"), ("password", PASSPHRASE)]).await;
    let session = page.set_cookies().into_iter().find(|c| c.starts_with("larder_session=")).expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Path=/"), "{session}");

    // Assets are served from the binary, with their types.
    let css = browser.get("/static/larder.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert!(css.body.contains(":focus-visible"));
    assert_eq!(browser.get("/static/nope.js").await.status, StatusCode::NOT_FOUND);
}

async fn cookies_are_secure_behind_https(server: &TestServer) {
    let browser = Browser::new(server);
    let page = browser.get("/login").await;
    let presession = page.set_cookies().into_iter().find(|c| c.starts_with("larder_presession=")).unwrap();
    assert!(presession.contains("Secure"), "{presession}");
    let email = "b@example.com";
    let page = browser.submit("/signup", "/signup", &[("username", "bob"), ("email", email), ("password", PASSPHRASE)]).await;
    let session = page.set_cookies().into_iter().find(|c| c.starts_with("larder_session=")).unwrap();
    assert!(session.contains("Secure") && session.contains("HttpOnly"), "{session}");
}

async fn a_form_without_its_token_changes_nothing(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    let fields = [("name", "sneaky"), ("visibility", "public"), ("signing", "server")];
    let zeros = "0".repeat(64);
    for csrf in [None, Some(""), Some(zeros.as_str())] {
        let mut all = fields.to_vec();
        if let Some(csrf) = &csrf {
            all.push(("csrf", csrf));
        }
        let page = alice.post("/caches/new", &all).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{csrf:?}");
        assert!(page.body.contains("Form expired"), "{}", page.body);
    }
    // Another visitor's token does not pass either (tokens are bound to the session).
    let bob = Browser::sign_up(server, "bob").await;
    let bobs = bob.get("/caches/new").await.csrf();
    let page = alice.post("/caches/new", &[("csrf", &bobs), ("name", "sneaky"), ("visibility", "public")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let api = Api::anonymous(server).log_in("alice").await;
    let (_, caches) = api.get("/caches").await;
    assert_eq!(caches, json!([]), "no cache was created");

    // Deleting the account without the token: the account stays.
    let page = alice.post("/account/delete", &[("confirm", "alice")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(alice.get("/account").await.status, StatusCode::OK);

    // Log-in and sign-up forms carry one too (login CSRF): a post from elsewhere fails.
    let stranger = Browser::new(server);
    let page = stranger.post("/login", &[("username", "alice"), ("password", PASSPHRASE)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(stranger.cookie("larder_session").is_none());
}

async fn log_in_renews_the_session_and_log_out_ends_it(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    let first = alice.cookie("larder_session").unwrap();
    let page = alice.submit("/login", "/login", &[("username", "alice"), ("password", PASSPHRASE)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let second = alice.cookie("larder_session").unwrap();
    assert_ne!(first, second, "a log-in issues a new session id");
    // The session it replaced is ended.
    let old = Browser::new(server);
    old.set_cookie("larder_session", &first);
    let page = old.get("/caches").await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/login"));

    let page = alice.submit("/caches", "/logout", &[]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/"));
    assert!(alice.cookie("larder_session").is_none());
    let reused = Browser::new(server);
    reused.set_cookie("larder_session", &second);
    let page = reused.get("/account").await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/login"), "a logged-out session is dead");

    // Wrong password: the form again, with its message, and no session.
    let page = alice.submit("/login", "/login", &[("username", "alice"), ("password", "not the password")]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Wrong username or password."), "{}", page.body);
    assert!(page.body.contains("value=\"alice\""), "the username is kept");
    assert!(alice.cookie("larder_session").is_none());
}

async fn other_accounts_caches_answer_like_missing_ones(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    let bob = Browser::sign_up(server, "bob").await;
    bob.create_cache("bob-private", "private").await;
    bob.create_cache("bob-public", "public").await;
    for page in ["", "/paths", "/tokens", "/keys", "/settings", "/paths/0c6kzph7l0dcbfmjap64f0czdafn3b7x"] {
        let missing = alice.get(&format!("/caches/no-such-cache{page}")).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        for cache in ["bob-private", "bob-public"] {
            let other = alice.get(&format!("/caches/{cache}{page}")).await;
            assert_eq!(other.status, missing.status, "{cache}{page}");
            assert_eq!(other.body, missing.body.replace("no-such-cache", cache), "{cache}{page}");
        }
    }
    // Nor can alice act on them: nothing changes.
    let page = alice.submit("/caches", "/caches/bob-public/delete", &[("confirm", "bob-public")]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = alice.submit("/caches", "/caches/bob-public/settings", &[("visibility", "private"), ("priority", "1")]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = alice.submit("/caches", "/caches/bob-private/tokens", &[("permission", "admin"), ("expires", "never")]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let list = bob.get("/caches").await.body;
    assert!(list.contains(">bob-public<") && list.contains(">bob-private<"));
    assert!(bob
        .get("/caches/bob-public/settings")
        .await
        .body
        .contains("id=\"visibility-public\" name=\"visibility\" value=\"public\" checked"));
    assert!(!alice.get("/caches").await.body.contains("bob-"), "alice's list shows only hers");
}

async fn what_each_kind_of_credential_gets_on_the_dashboard(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    alice.create_cache("alice-cache", "private").await;
    let api = Api::anonymous(server).log_in("alice").await;
    let session = api.token_secret().unwrap().to_owned();
    let mut credentials = vec![("API session", session.clone())];
    for permission in ["read", "write", "admin"] {
        let (_, secret) = api.token(json!({"kind": "cache", "cache": "alice-cache", "permission": permission})).await;
        credentials.push((permission, secret));
    }
    let (_, personal) = api.token(json!({"kind": "personal", "permission": "admin"})).await;
    credentials.push(("personal admin", personal.clone()));
    let (limited_id, limited) = api.token(json!({"kind": "personal", "caches": ["alice-cache"], "permission": "admin"})).await;
    credentials.push(("limited personal", limited));
    let (revoked_id, revoked) = api.token(json!({"kind": "cache", "cache": "alice-cache", "permission": "admin"})).await;
    api.delete(&format!("/tokens/{revoked_id}"), None).await;
    credentials.push(("revoked", revoked));
    let _ = limited_id;

    let anonymous = Browser::new(server);
    for path in ["/caches", "/caches/alice-cache", "/caches/alice-cache/tokens", "/account"] {
        let page = anonymous.get(path).await;
        assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/login"), "anonymous {path}");
        for (kind, secret) in &credentials {
            // As a Bearer header: the dashboard is for browsers and ignores it.
            let request = anonymous.http.get(format!("{}{path}", server.base_url)).header(AUTHORIZATION, format!("Bearer {secret}"));
            let page = anonymous.send(request).await;
            assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/login"), "{kind} as Bearer on {path}");
            // In the session cookie: only a login session opens a page (an API session is one).
            let visitor = Browser::new(server);
            visitor.set_cookie("larder_session", secret);
            let page = visitor.get(path).await;
            if *kind == "API session" {
                assert_eq!(page.status, StatusCode::OK, "{path}");
            } else {
                assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/login"), "{kind} as cookie on {path}");
            }
        }
    }
    // A session that stopped working is removed from the browser.
    let visitor = Browser::new(server);
    visitor.set_cookie("larder_session", &credentials.last().unwrap().1);
    let page = visitor.get("/caches").await;
    assert!(page.set_cookies().iter().any(|c| c.starts_with("larder_session=;") && c.contains("Max-Age=0")), "{:?}", page.set_cookies());
}

async fn everything_shown_is_escaped(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    alice.create_cache("alice-cache", "public").await;
    let evil = "<script>alert('x')</script>\"><img src=x>";
    let page = alice
        .submit(
            "/caches/alice-cache/settings",
            "/caches/alice-cache/settings",
            &[("visibility", "public"), ("priority", "40"), ("description", evil)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = alice
        .submit(
            "/caches/alice-cache/tokens",
            "/caches/alice-cache/tokens",
            &[("permission", "read"), ("description", evil), ("expires", "never")],
        )
        .await;
    for shown in [alice.get("/caches/alice-cache").await.body, page.body, alice.get("/caches/alice-cache/settings").await.body] {
        assert!(!shown.contains("<script>alert") && !shown.contains("<img src=x>"), "{shown}");
        assert!(shown.contains("&#60;script&#62;alert"), "{shown}");
    }
    // Search text comes back escaped too.
    let page = alice.get("/caches/alice-cache/paths?q=%3Cb%3Ebold").await;
    assert!(page.body.contains("&#60;b&#62;bold") && !page.body.contains("<b>bold"), "{}", page.body);
}

async fn a_referenced_path_is_not_deleted_alone(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    alice.create_cache("alice-cache", "private").await;
    let write = alice.create_token("alice-cache", "write").await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("alice-cache"), &top], "").await.expect_success("nix copy --to larder");
    let closure = nix.closure(&top).await;
    let overview = alice.get("/caches/alice-cache").await.body;
    assert_eq!(between(&overview, "<dd id=\"usage-paths\">", "</dd>"), closure.len().to_string());

    let hash_of = |path: &str| path.trim_start_matches("/nix/store/")[..32].to_owned();
    // The chain's bottom path `a` is referenced by b and c.
    let bottom = closure.iter().find(|p| p.contains("-a-t")).cloned().expect("the chain's path a");
    let path_page = format!("/caches/alice-cache/paths/{}", hash_of(&bottom));
    let page = alice.submit(&path_page, &format!("{path_page}/delete"), &[]).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(page.body.contains("class=\"form-error\" role=\"alert\"") && page.body.contains("is referenced by"), "{}", page.body);
    assert_eq!(alice.get(&path_page).await.status, StatusCode::OK, "still there");

    // The top path, which nothing refers to, goes.
    let top_page = format!("/caches/alice-cache/paths/{}", hash_of(&top));
    let shown = alice.get(&top_page).await.body;
    assert!(shown.contains("NAR hash") && shown.contains(&top) && shown.contains("alice-cache-1:"), "{shown}");
    let page = alice.submit(&top_page, &format!("{top_page}/delete"), &[]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/caches/alice-cache/paths?done=path-deleted"));
    assert_eq!(alice.get(&top_page).await.status, StatusCode::NOT_FOUND);
    let narinfo =
        server.http.get(format!("{}/alice-cache/{}.narinfo", server.base_url, hash_of(&top))).bearer_auth(&write).send().await.unwrap();
    assert_eq!(narinfo.status(), StatusCode::NOT_FOUND);
}

async fn paths_are_paged_and_searchable(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    alice.create_cache("alice-cache", "private").await;
    let empty = alice.get("/caches/alice-cache/paths").await.body;
    assert!(empty.contains("class=\"empty\"") && empty.contains("nix copy --to"), "{empty}");
    larder_tests::generate::generate_paths(server, "alice-cache", "paging", 120, 0).await;
    let rows = |body: &str| body.matches("<tr><td><a href=\"/caches/alice-cache/paths/").count();
    let first = alice.get("/caches/alice-cache/paths").await.body;
    assert_eq!(rows(&first), 50);
    assert!(first.contains("rel=\"next\"") && !first.contains("rel=\"prev\""));
    let last = alice.get("/caches/alice-cache/paths?page=3").await.body;
    assert_eq!(rows(&last), 20);
    assert!(!last.contains("rel=\"next\"") && last.contains("rel=\"prev\""));
    // By name: the generated names are numbered; by hash: the part of the URL.
    let found = alice.get("/caches/alice-cache/paths?q=").await.body;
    let some_hash = between(&found, "<tr><td><a href=\"/caches/alice-cache/paths/", "\"").to_owned();
    let by_hash = alice.get(&format!("/caches/alice-cache/paths?q={}", &some_hash[..12].to_uppercase())).await.body;
    assert_eq!(rows(&by_hash), 1, "{by_hash}");
    let none = alice.get("/caches/alice-cache/paths?q=%25").await.body;
    assert_eq!(rows(&none), 0, "a % matches itself, not everything");
    assert!(none.contains("No path matches"));
}

async fn log_ins_are_rate_limited(server: &TestServer) {
    let _alice = Browser::sign_up(server, "alice").await;
    let visitor = Browser::new(server);
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let page = visitor.submit("/login", "/login", &[("username", "alice"), ("password", "wrong password!")]).await;
        statuses.push(page.status);
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(page.body.contains("Too many attempts"), "{}", page.body);
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    assert!(statuses[..statuses.len() - 1].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
}

fn with_base_domain(settings: &mut Settings) {
    settings.base_domain = Some("larder.test".into());
}

/// The `code.public-key` values a page shows.
fn public_keys(body: &str) -> Vec<String> {
    body.split("<code class=\"public-key\">").skip(1).map(|rest| rest[..rest.find("</code>").unwrap()].to_owned()).collect()
}

async fn keys_rotate_retire_register_and_switch_mode(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    alice.create_cache("alice-cache", "public").await;
    let keys = "/caches/alice-cache/keys";
    let first = public_keys(&alice.get(keys).await.body);
    assert_eq!(first.len(), 1);
    assert!(!alice.get(keys).await.body.contains(">Retire<"), "the only active key cannot be retired");

    let page = alice.submit(keys, &format!("{keys}/rotate"), &[]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/caches/alice-cache/keys?done=key-rotated"));
    let both = public_keys(&alice.get("/caches/alice-cache").await.body);
    assert_eq!(both.len(), 2, "both keys are trusted during the overlap");
    let conf = between(&alice.get("/caches/alice-cache").await.body, "<pre id=\"snippet-nix-conf\" tabindex=\"0\">", "</pre>").to_owned();
    assert!(conf.contains(&both[0]) && conf.contains(&both[1]), "{conf}");
    let page = alice.submit(keys, &format!("{keys}/alice-cache-1/retire"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let active = public_keys(&alice.get("/caches/alice-cache").await.body);
    assert_eq!(active.len(), 1);
    assert!(active[0].starts_with("alice-cache-2:"), "{active:?}");

    // Client-held: Larder's keys go, the owner's are registered (and a bad one is refused).
    let page = alice.submit(keys, &format!("{keys}/mode"), &[("mode", "client")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let shown = alice.get(keys).await.body;
    assert!(shown.contains("client-held keys") && shown.contains("Register key"), "{shown}");
    assert!(public_keys(&shown).is_empty(), "no server key is listed for a client-held cache: {shown}");
    let page = alice.submit(keys, &format!("{keys}/register"), &[("public_key", "not-a-key")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"public_key-error\"") && page.body.contains("value=\"not-a-key\""), "{}", page.body);
    let mine = larder_protocol::signing::SecretKey::generate("alice-laptop-1").unwrap().public_key().to_nix_string();
    let page = alice.submit(keys, &format!("{keys}/register"), &[("public_key", &mine)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(public_keys(&alice.get("/caches/alice-cache").await.body), vec![mine.clone()]);
    // The last active key stays (a cache without one could not be trusted); with a second,
    // the first can go.
    assert!(!alice.get(keys).await.body.contains(">Remove<"));
    let refused = alice.submit(keys, &format!("{keys}/alice-laptop-1/retire"), &[]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("last active key"), "{}", refused.body);
    let second = larder_protocol::signing::SecretKey::generate("alice-laptop-2").unwrap().public_key().to_nix_string();
    let page = alice.submit(keys, &format!("{keys}/register"), &[("public_key", &second)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(alice.get(keys).await.body.contains(">Remove<"));
    let page = alice.submit(keys, &format!("{keys}/alice-laptop-1/retire"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(public_keys(&alice.get("/caches/alice-cache").await.body), vec![second]);

    // Back to server-held: a new key of Larder's signs.
    let page = alice.submit(keys, &format!("{keys}/mode"), &[("mode", "server")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let active = public_keys(&alice.get("/caches/alice-cache").await.body);
    assert_eq!(active.len(), 1);
    assert!(active[0].starts_with("alice-cache-3:"), "{active:?}");
}

async fn settings_are_saved_and_a_cache_is_deleted_by_its_name(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    alice.create_cache("alice-cache", "private").await;
    let settings = "/caches/alice-cache/settings";
    let page = alice.submit(settings, settings, &[("visibility", "public"), ("priority", "lots"), ("description", "x")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"priority-error\""), "{}", page.body);
    let api = Api::anonymous(server).log_in("alice").await;
    assert_eq!(api.get("/caches/alice-cache").await.1["public"], false, "nothing saved");
    let page = alice.submit(settings, settings, &[("visibility", "public"), ("priority", "30"), ("description", "team builds")]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/caches/alice-cache/settings?done=settings-saved"));
    let (_, info) = api.get("/caches/alice-cache").await;
    assert_eq!((info["public"].clone(), info["priority"].clone(), info["compression"].clone()), (json!(true), json!(30), json!("zstd")));
    let saved = alice.get("/caches/alice-cache/settings?done=settings-saved").await.body;
    assert!(saved.contains("Settings saved."));
    assert!(saved.contains(r#"id="compression-zstd" name="compression" value="zstd" checked"#), "{saved}");
    let fields = [("visibility", "public"), ("priority", "30"), ("description", "team builds"), ("compression", "none")];
    let page = alice.submit(settings, settings, &fields).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(api.get("/caches/alice-cache").await.1["compression"], "none", "stored uncompressed from now on");
    assert!(alice.get(settings).await.body.contains(r#"value="none" checked"#));

    let page = alice.submit(settings, "/caches/alice-cache/delete", &[("confirm", "alice-cach")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"confirm-error\""), "{}", page.body);
    assert_eq!(alice.get("/caches/alice-cache").await.status, StatusCode::OK, "still there");
    let page = alice.submit(settings, "/caches/alice-cache/delete", &[("confirm", "alice-cache")]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/caches?done=cache-deleted"));
    assert_eq!(alice.get("/caches/alice-cache").await.status, StatusCode::NOT_FOUND);
    assert!(alice.get("/caches").await.body.contains("No caches yet"));
}

async fn account_password_personal_tokens_and_deletion(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    let new_password = "a much longer passphrase";
    let page = alice.submit("/account", "/account/password", &[("current_password", "wrong"), ("new_password", new_password)]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"current_password-error\""), "{}", page.body);
    let page = alice.submit("/account", "/account/password", &[("current_password", PASSPHRASE), ("new_password", "aaaaaaaaaaaa")]).await;
    assert!(page.body.contains("id=\"new_password-error\""), "a weak new password is refused: {}", page.body);
    let page = alice.submit("/account", "/account/password", &[("current_password", PASSPHRASE), ("new_password", new_password)]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/account?done=password-changed"));
    let other = Browser::new(server);
    let page = other.submit("/login", "/login", &[("username", "alice"), ("password", new_password)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "the new password works");

    // A personal token, shown once, works on the API until revoked.
    let page =
        alice.submit("/account", "/account/tokens", &[("permission", "admin"), ("description", "laptop cli"), ("expires", "90d")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let secret = between(&page.body, "<code id=\"new-token-secret\" class=\"secret\" tabindex=\"0\">", "</code>").to_owned();
    let reloaded = alice.get("/account").await.body;
    assert!(!reloaded.contains(&secret) && reloaded.contains("laptop cli"), "the secret is shown once only");
    let token = Api::anonymous(server).with(&secret);
    assert_eq!(token.get("/account").await.0, StatusCode::OK);
    let id = between(&reloaded, "<tr data-token-id=\"", "\"").to_owned();
    let revoke = format!("/account/tokens/{id}/revoke");
    assert!(alice.get(&revoke).await.body.contains("Revoke token"));
    let page = alice.submit(&revoke, &revoke, &[]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/account?done=token-revoked"));
    assert_eq!(token.get("/account").await.0, StatusCode::UNAUTHORIZED);

    // Deleting the account takes the typed username.
    let page = alice.submit("/account", "/account/delete", &[("confirm", "bob")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(alice.get("/account").await.status, StatusCode::OK);
    let page = alice.submit("/account", "/account/delete", &[("confirm", "alice")]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/"));
    let page = other.submit("/login", "/login", &[("username", "alice"), ("password", new_password)]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "the account is gone");
}

async fn snippets_name_the_cache_host_under_a_base_domain(server: &TestServer) {
    let alice = Browser::sign_up(server, "alice").await;
    alice.create_cache("alice-cache", "private").await;
    let port = server.base_url.rsplit(':').next().unwrap();
    let body = alice.get("/caches/alice-cache").await.body;
    let substituter = format!("http://alice-cache.larder.test:{port}");
    assert_eq!(between(&body, "<code id=\"substituter\">", "</code>"), substituter);
    assert!(between(&body, "<pre id=\"snippet-nix-conf\" tabindex=\"0\">", "</pre>")
        .starts_with(&format!("extra-substituters = {substituter}\n")));
    assert_eq!(
        between(&body, "<pre id=\"snippet-netrc\" tabindex=\"0\">", "</pre>"),
        "machine alice-cache.larder.test login larder password YOUR_TOKEN\n"
    );
    // The CLI logs in to the server itself (its API), not to the cache host.
    assert_eq!(
        between(&body, "<pre id=\"snippet-larder-push\" tabindex=\"0\">", "</pre>"),
        format!("larder login --server {}\nlarder push alice-cache ./result\n", server.base_url)
    );
    // And that host serves the cache (as the binary cache protocol, with a read token).
    let read = alice.create_token("alice-cache", "read").await;
    let info = server
        .http
        .get(format!("{}/nix-cache-info", server.base_url))
        .header("host", format!("alice-cache.larder.test:{port}"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    assert!(info.text().await.unwrap().contains("StoreDir: /nix/store"));
}
