//! Content-addressed derivations (`ca-derivations`): `nix copy --to URL 'DRV^*'` pushes the
//! outputs' realisations (`realisations/<id>.doi`) after the paths, and a fresh store
//! substitutes the outputs through them, with Debian's nix 2.8 and trixie's nix 2.26 (in a
//! chroot). Each client has a store of its own (see `PrivateNix`).

use larder_api::domain::Permission;
use larder_protocol::realisation::Realisation;
use larder_protocol::signing::PublicKey;
use larder_tests::{hash_part, on_both_backends, Api, Nix, NixClient, PrivateNix, TestServer};
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    nix_2_26_pushes_realisations_and_substitutes_through_them,
    nix_2_8_pushes_realisations_that_nix_2_26_substitutes,
    client_held_caches_need_signed_realisations,
    realisation_uploads_are_checked,
    nix_2_26_store_info_and_absent_features,
    collection_withdraws_realisations_with_their_paths,
    key_rotation_re_signs_realisations,
    realisations_on_a_cache_host with cache_hosts_under_localhost,
);

/// Caches are also served as `{cache}.localhost` (curl resolves it to the loopback address).
fn cache_hosts_under_localhost(settings: &mut larder_tests::Settings) {
    settings.base_domain = Some("localhost".into());
}

/// Two content-addressed derivations, the second referring to the first at run time (so
/// that both outputs are in the pushed closure, and the second's realisation depends on
/// the first's).
const CA_NIX: &str = r#"{ tag }:
let
  ca = name: script: derivation {
    name = "${name}-${tag}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
    __contentAddressed = true;
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
  };
  dep = ca "cadep" "echo dep-${tag} > $out";
in ca "catop" "mkdir $out; echo ${dep} > $out/dep; cat ${dep} > $out/copy"
"#;

fn unique_tag() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A CA build of [`CA_NIX`] in a client's own store.
struct CaBuild {
    /// The expression's file, as the client sees it.
    file: String,
    tag: String,
    drv: String,
    out: String,
}

impl CaBuild {
    /// `-f FILE --argstr tag TAG`: how nix 2.8 names the outputs (it has no `DRV^*`).
    fn installable(&self) -> Vec<&str> {
        vec!["-f", &self.file, "--argstr", "tag", &self.tag]
    }
}

async fn build_ca(nix: &PrivateNix, tag: &str, extra_config: &str) -> CaBuild {
    let file = nix.write_file("ca.nix", CA_NIX);
    let drv = nix.run("nix-instantiate", &[&file, "--argstr", "tag", tag], extra_config).await.expect_success("nix-instantiate");
    let out =
        nix.run("nix-build", &[&file, "--argstr", "tag", tag, "--no-out-link"], extra_config).await.expect_success("nix-build of CA_NIX");
    CaBuild { file, tag: tag.to_owned(), drv: drv.stdout.trim().to_owned(), out: out.stdout.trim().to_owned() }
}

/// The client's own realisation of the build's output.
async fn local_realisation(nix: &PrivateNix, build: &CaBuild) -> Realisation {
    let mut args = vec!["realisation", "info", "--json"];
    args.extend(build.installable());
    let run = nix.run("nix", &args, "").await.expect_success("nix realisation info");
    let parsed: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(parsed.len(), 1, "one output: {}", run.stdout);
    let realisation = Realisation::parse(&parsed[0].to_string()).expect("nix's realisation parses");
    assert_eq!(realisation.dependencies.len(), 1, "catop's realisation depends on cadep's: {}", run.stdout);
    realisation
}

/// GETs `realisations/<id>.doi`; (status, content type, body).
async fn get_realisation(server: &TestServer, cache: &str, id: &str, token: Option<&str>) -> (StatusCode, String, String) {
    let mut request = server.http.get(format!("{}/realisations/{id}.doi", server.cache_url(cache)));
    if let Some(token) = token {
        request = request.basic_auth("larder", Some(token));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

async fn put_realisation(server: &TestServer, cache: &str, id: &str, token: Option<&str>, body: String) -> (StatusCode, String) {
    let mut request =
        server.http.put(format!("{}/realisations/{id}.doi", server.cache_url(cache))).header("content-type", "application/json").body(body);
    if let Some(token) = token {
        request = request.basic_auth("larder", Some(token));
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Checks that the cache serves `local` (same id, output path and dependencies), signed by
/// exactly the keys `signers`.
async fn assert_served(server: &TestServer, cache: &str, token: Option<&str>, local: &Realisation, signers: &[&str]) {
    let (status, content_type, body) = get_realisation(server, cache, &local.id.to_string(), token).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/json"), "{body}");
    let served = Realisation::parse(&body).unwrap_or_else(|e| panic!("served realisation: {e}: {body}"));
    assert_eq!((&served.id, &served.out_path, &served.dependencies), (&local.id, &local.out_path, &local.dependencies));
    assert_eq!(served.signatures.len(), signers.len(), "{body}");
    for signer in signers {
        let key = PublicKey::parse(signer).unwrap();
        assert_eq!(served.signatures_verified_by(&[key]).len(), 1, "not signed by {signer}: {body}");
    }
    // The realisations it depends on were pushed before it.
    for (dep_id, dep_path) in &local.dependencies {
        let (status, _, body) = get_realisation(server, cache, &dep_id.to_string(), token).await;
        assert_eq!(status, StatusCode::OK, "dependency {dep_id}: {body}");
        assert_eq!(&Realisation::parse(&body).unwrap().out_path, dep_path);
    }
}

/// A fresh trixie store substitutes the build's output through the cache, building
/// nothing (`max-jobs = 0` forbids it), with the given trusted key.
async fn substitute_with_nix_2_26(server: &TestServer, name: &str, url: &str, token: Option<&str>, trusted_key: &str, tag: &str) -> String {
    let fresh = PrivateNix::new(server.dir.path(), name, NixClient::Trixie);
    // The netrc line names the URL's host (a cache host, or 127.0.0.1).
    let host = url.split("://").nth(1).and_then(|rest| rest.split([':', '/']).next()).expect("a URL with a host");
    fresh.use_tokens(&token.map(|t| vec![(host, t)]).unwrap_or_default());
    let file = fresh.write_file("ca.nix", CA_NIX);
    let config = format!("substituters = {url}\ntrusted-public-keys = {trusted_key}\nrequire-sigs = true\nmax-jobs = 0");
    let run = fresh.run("nix-build", &[&file, "--argstr", "tag", tag, "--no-out-link"], &config).await;
    assert!(run.success, "nix 2.26 could not substitute the CA output (max-jobs = 0):\n{}", run.stderr);
    assert!(!run.stderr.contains("building '"), "something was built:\n{}", run.stderr);
    let out = run.stdout.trim().to_owned();
    let copy = fresh.host_path(&format!("nix/store/{}", out.trim_start_matches("/nix/store/")));
    let content = std::fs::read_to_string(copy.join("copy")).expect("the substituted output's file");
    assert_eq!(content, format!("dep-{tag}\n"));
    out
}

async fn nix_2_26_pushes_realisations_and_substitutes_through_them(server: &TestServer) {
    let cache = server.create_cache("ca-private", false).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let (_, read) = server.token(&cache.name, Permission::Read).await;
    let url = server.cache_url(&cache.name);

    let builder = PrivateNix::new(server.dir.path(), "builder", NixClient::Trixie);
    assert!(builder.version().await.starts_with("2.26."), "the trixie chroot holds nix 2.26");
    let tag = unique_tag();
    let build = build_ca(&builder, &tag, "").await;
    builder.use_token(Some(&write));
    let outputs = format!("{}^*", build.drv);
    // The derivation too, which `nix copy --from URL 'DRV^*'` reads from the cache.
    builder.run("nix", &["copy", "--to", &url, &build.drv, &outputs], "").await.expect_success("nix 2.26 copy --to URL DRV DRV^*");
    assert_eq!(server.count_rows("realisations").await, 2, "catop's and cadep's realisations");

    let top = local_realisation(&builder, &build).await;
    assert_eq!(top.out_path.to_absolute(), build.out);
    assert_served(server, &cache.name, Some(&read), &top, &[&cache.public_key]).await;
    // A private cache's realisations are not anyone's.
    let (status, _, _) = get_realisation(server, &cache.name, &top.id.to_string(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let out = substitute_with_nix_2_26(server, "fresh", &url, Some(&read), &cache.public_key, &tag).await;
    assert_eq!(out, build.out, "the realisation led to the same output path");
    assert_signatures_checked_by_nix_copy(server, &url, &read, &cache.public_key, &tag).await;
}

/// `nix copy --from URL 'DRV^*'` with nix 2.26 into a fresh store, trusting only `trusted`.
async fn copy_outputs_from(server: &TestServer, name: &str, url: &str, read: &str, trusted: &str, tag: &str) -> larder_tests::NixRun {
    let nix = PrivateNix::new(server.dir.path(), name, NixClient::Trixie);
    nix.use_token(Some(read));
    let file = nix.write_file("ca.nix", CA_NIX);
    let drv = nix.run("nix-instantiate", &[&file, "--argstr", "tag", tag], "").await.expect_success("nix-instantiate");
    let outputs = format!("{}^*", drv.stdout.trim());
    nix.run("nix", &["copy", "--from", url, &outputs], &larder_tests::trusting(trusted)).await
}

/// `nix copy --from URL 'DRV^*'` (2.26) registers the realisations only if they carry a
/// signature by a trusted key (`require-sigs`): `key` is, a stranger's is not.
async fn assert_signatures_checked_by_nix_copy(server: &TestServer, url: &str, read: &str, key: &str, tag: &str) {
    let stranger = larder_protocol::signing::SecretKey::generate("stranger-1").unwrap().public_key().to_nix_string();
    for (name, trusted, accepted) in [("copy-trusted", key, true), ("copy-stranger", stranger.as_str(), false)] {
        let mut run = copy_outputs_from(server, name, url, read, trusted, tag).await;
        // nix 2.26 sometimes aborts instead of reporting the refusal: its realisation
        // callback is completed twice when the code it calls throws (callback.hh, "Assertion
        // `!prev' failed"). That is nix's race, not an answer of ours: ask once more.
        if !accepted && run.stderr.contains("Assertion `!prev' failed") {
            run = copy_outputs_from(server, &format!("{name}-again"), url, read, trusted, tag).await;
        }
        assert_eq!(run.success, accepted, "nix copy --from trusting {trusted}:\n{}", run.stderr);
        if !accepted {
            assert!(run.stderr.contains("lacks a signature by a trusted key"), "{}", run.stderr);
        }
    }
}

async fn nix_2_8_pushes_realisations_that_nix_2_26_substitutes(server: &TestServer) {
    let cache = server.create_cache("ca-public", true).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let url = server.cache_url(&cache.name);

    let builder = PrivateNix::new(server.dir.path(), "builder-2-8", NixClient::Machine);
    assert!(builder.version().await.starts_with("2.8."), "the machine's nix is 2.8");
    let tag = unique_tag();
    let build = build_ca(&builder, &tag, "").await;
    builder.use_token(Some(&write));
    let mut args = vec!["copy", "--to", url.as_str()];
    args.extend(build.installable());
    builder.run("nix", &args, "").await.expect_success("nix 2.8 copy --to URL -f ca.nix");
    assert_eq!(server.count_rows("realisations").await, 2, "catop's and cadep's realisations");
    let top = local_realisation(&builder, &build).await;
    assert_served(server, &cache.name, None, &top, &[&cache.public_key]).await;

    let out = substitute_with_nix_2_26(server, "fresh-2-26", &url, None, &cache.public_key, &tag).await;
    assert_eq!(out, build.out, "nix 2.26 found what nix 2.8 pushed");
}

/// A key pair made by the client's `nix key generate-secret`: (secret file as nix sees
/// it, public key).
async fn nix_key(nix: &PrivateNix, name: &str) -> (String, String) {
    let secret = nix.run("nix", &["key", "generate-secret", "--key-name", name], "").await.expect_success("nix key generate-secret");
    let file = nix.write_file(&format!("{name}.secret"), secret.stdout.trim());
    let public = nix
        .run("sh", &["-c", &format!("nix key convert-secret-to-public < {file}")], "")
        .await
        .expect_success("nix key convert-secret-to-public");
    (file, public.stdout.trim().to_owned())
}

async fn client_held_caches_need_signed_realisations(server: &TestServer) {
    let cache = server.create_cache("ca-own-keys", true).await;
    let (_, admin) = server.token(&cache.name, Permission::Admin).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let admin_api = Api::anonymous(server).with(&admin);
    let (status, _) = admin_api.put("/caches/ca-own-keys/signing-mode", json!({"mode": "client"})).await;
    assert_eq!(status, StatusCode::OK);
    let url = server.cache_url(&cache.name);

    let builder = PrivateNix::new(server.dir.path(), "builder", NixClient::Trixie);
    let (secret, public) = nix_key(&builder, "ca-own-keys-ci-1").await;
    let (status, _) = admin_api.post("/caches/ca-own-keys/public-keys", json!({"public_key": public})).await;
    assert_eq!(status, StatusCode::CREATED);
    builder.use_token(Some(&write));

    // Built without a key: `?secret-key=` signs the paths as they are pushed (accepted),
    // but nix pushes the realisations as they are, unsigned: refused.
    let unsigned = build_ca(&builder, &unique_tag(), "").await;
    let signing_url = format!("{url}?secret-key={secret}");
    let refused = builder.run("nix", &["copy", "--to", &signing_url, &format!("{}^*", unsigned.drv)], "").await;
    assert!(!refused.success, "an unsigned realisation was accepted");
    assert!(
        refused.stderr.contains("carries no valid signature") && refused.stderr.contains("ca-own-keys-ci-1"),
        "the refusal names the missing signature and the cache's key:\n{}",
        refused.stderr
    );
    assert!(server.count_rows("paths").await >= 2, "the signed paths were published");
    assert_eq!(server.count_rows("realisations").await, 0, "no unsigned realisation is stored");

    // Built with the key: nix signs the realisations too, and only those signatures are kept.
    let tag = unique_tag();
    let signed = build_ca(&builder, &tag, &format!("secret-key-files = {secret}")).await;
    builder.run("nix", &["copy", "--to", &url, &format!("{}^*", signed.drv)], "").await.expect_success("push of signed realisations");
    let top = local_realisation(&builder, &signed).await;
    assert_eq!(top.signatures.len(), 1, "nix signed its realisation");
    assert_served(server, &cache.name, None, &top, &[&public]).await;
    let out = substitute_with_nix_2_26(server, "fresh", &url, None, &public, &tag).await;
    assert_eq!(out, signed.out);
}

/// A realisation of a made-up derivation output, for `out_path` (a base name).
fn realisation_json(id: &str, out_path: &str) -> String {
    json!({"dependentRealisations": {}, "id": id, "outPath": out_path, "signatures": []}).to_string()
}

fn made_up_id(seed: &str) -> String {
    format!("sha256:{}!out", larder_protocol::hash::Sha256Hash::digest(seed.as_bytes()).to_hex())
}

async fn realisation_uploads_are_checked(server: &TestServer) {
    let cache = server.create_cache("ca-raw", true).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let (_, read) = server.token(&cache.name, Permission::Read).await;
    let (_, admin) = server.token(&cache.name, Permission::Admin).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let closure = nix.closure(&top).await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url(&cache.name), &top], "").await.expect_success("push the chain");
    let base = |path: &str| path.trim_start_matches("/nix/store/").to_owned();
    let other = closure.iter().find(|p| **p != top).expect("the chain has more than one path").clone();

    let id = made_up_id(&top);
    let good = realisation_json(&id, &base(&top));
    let bad_request = |text: &str| (StatusCode::BAD_REQUEST, text.to_owned());

    // Only writers.
    assert_eq!(put_realisation(server, &cache.name, &id, None, good.clone()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(put_realisation(server, &cache.name, &id, Some(&read), good.clone()).await.0, StatusCode::FORBIDDEN);
    // What the body says must be what the URL says, and well-formed.
    let elsewhere = made_up_id("elsewhere");
    let (status, text) = put_realisation(server, &cache.name, &elsewhere, Some(&write), good.clone()).await;
    assert_eq!((status, text.contains(&format!("was uploaded as {elsewhere}.doi"))), (StatusCode::BAD_REQUEST, true), "{text}");
    let (status, text) = put_realisation(server, &cache.name, &id, Some(&write), "{\"id\": ".into()).await;
    assert_eq!((status, text.starts_with("malformed realisation: not JSON")), (StatusCode::BAD_REQUEST, true), "{text}");
    let (status, text) = put_realisation(server, &cache.name, &id, Some(&write), json!({"id": id}).to_string()).await;
    assert_eq!((status, text), bad_request("malformed realisation: missing field outPath\n"));
    let (status, text) = put_realisation(server, &cache.name, "not-an-id", Some(&write), good.clone()).await;
    assert_eq!((status, text.starts_with("cannot upload 'not-an-id.doi'")), (StatusCode::BAD_REQUEST, true), "{text}");
    let huge = realisation_json(&id, &"a".repeat(2 << 20));
    assert_eq!(put_realisation(server, &cache.name, &id, Some(&write), huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // The output path must be one this cache publishes.
    let absent = "00000000000000000000000000000000-not-pushed";
    let (status, text) = put_realisation(server, &cache.name, &id, Some(&write), realisation_json(&id, absent)).await;
    assert_eq!(
        (status, text),
        bad_request(&format!("output path /nix/store/{absent} of realisation {id} is not in this cache: push the path first\n"))
    );
    assert_eq!(server.count_rows("realisations").await, 0, "nothing stored by a refused upload");

    // Accepted, signed by the server, served to anyone (a public cache), idempotent.
    assert_eq!(put_realisation(server, &cache.name, &id, Some(&write), good.clone()).await, (StatusCode::OK, String::new()));
    assert_eq!(put_realisation(server, &cache.name, &id, Some(&write), good.clone()).await.0, StatusCode::OK);
    let local = Realisation::parse(&good).unwrap();
    assert_served(server, &cache.name, None, &local, &[&cache.public_key]).await;
    let head = server.http.head(format!("{}/realisations/{id}.doi", server.cache_url(&cache.name))).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    // Never moved to another path.
    let (status, text) = put_realisation(server, &cache.name, &id, Some(&write), realisation_json(&id, &base(&other))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains(&format!("already realised as {top}")), "{text}");
    assert_served(server, &cache.name, None, &local, &[&cache.public_key]).await;

    // Absent ones: a plain 404.
    for absent in [made_up_id("absent"), "garbage".to_owned()] {
        let (status, _, text) = get_realisation(server, &cache.name, &absent, None).await;
        assert_eq!((status, text.as_str()), (StatusCode::NOT_FOUND, "not found\n"), "{absent}");
    }

    // Deleting the output path withdraws its realisation.
    let admin_api = Api::anonymous(server).with(&admin);
    let (status, answer) = admin_api.delete(&format!("/caches/{}/paths/{}", cache.name, hash_part(&top)), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(get_realisation(server, &cache.name, &id, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.count_rows("realisations").await, 0);

    // And deleting the cache, the realisations of all its paths.
    let id = made_up_id(&other);
    assert_eq!(put_realisation(server, &cache.name, &id, Some(&write), realisation_json(&id, &base(&other))).await.0, StatusCode::OK);
    assert_eq!(server.count_rows("realisations").await, 1);
    let (status, answer) = admin_api.delete(&format!("/caches/{}", cache.name), Some(json!({"confirm": cache.name}))).await;
    assert!(status.is_success(), "{status} {answer}");
    assert_eq!(server.count_rows("realisations").await, 0);
}

async fn nix_2_26_store_info_and_absent_features(server: &TestServer) {
    let cache = server.create_cache("ca-info", false).await;
    let (_, read) = server.token(&cache.name, Permission::Read).await;
    let url = server.cache_url(&cache.name);
    let nix = PrivateNix::new(server.dir.path(), "client", NixClient::Trixie);

    // `nix store info` (2.26's `nix store ping`) reads nix-cache-info only.
    nix.use_token(Some(&read));
    let info = nix.run("nix", &["store", "info", "--store", &url], "").await.expect_success("nix store info");
    assert!(info.stdout.contains(&url) || info.stderr.contains(&url), "{info:?}");
    nix.use_token(None);
    let refused = nix.run("nix", &["store", "info", "--store", &url], "").await;
    assert!(!refused.success, "a private cache opened without a token");
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);

    // What Larder does not keep answers a plain 404, as nix expects of an absent file.
    for missing in ["debuginfo/0123456789abcdef0123456789abcdef01234567", "log/5q9linl7iixd6k42a383c55higbjy94p-x.drv", "nope"] {
        let response = server.http.get(format!("{url}/{missing}")).basic_auth("x", Some(&read)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(response.text().await.unwrap(), "not found\n", "{missing}");
    }
    // The bind mounts of every run above lived in their own mount namespace only.
    let root = nix.chroot().expect("a chroot client").display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&root), "something stayed mounted under {root}:\n{mounts}");
}

async fn collection_withdraws_realisations_with_their_paths(server: &TestServer) {
    let cache = server.create_cache("ca-gc", true).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let (_, admin) = server.token(&cache.name, Permission::Admin).await;
    let builder = PrivateNix::new(server.dir.path(), "builder", NixClient::Trixie);
    let build = build_ca(&builder, &unique_tag(), "").await;
    builder.use_token(Some(&write));
    let url = server.cache_url(&cache.name);
    builder.run("nix", &["copy", "--to", &url, &format!("{}^*", build.drv)], "").await.expect_success("push");
    let top = local_realisation(&builder, &build).await;
    assert_served(server, &cache.name, None, &top, &[&cache.public_key]).await;

    // Nothing is kept: the next collection deletes every path, and their realisations go too.
    let policy = json!({"keep_days": 0, "quota_bytes": null, "quota_mode": "evict"});
    let (status, body) = Api::anonymous(server).with(&admin).put(&format!("/caches/{}/gc", cache.name), policy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.services().clock().advance(std::time::Duration::from_secs(86_400));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.services().collect_garbage(None, false).await.expect("collection runs").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "another collector held the lock for 20 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(server.count_rows("paths").await, 0, "the collection deleted the paths");
    assert_eq!(server.count_rows("realisations").await, 0, "and their realisations");
    let (status, _, text) = get_realisation(server, &cache.name, &top.id.to_string(), None).await;
    assert_eq!((status, text.as_str()), (StatusCode::NOT_FOUND, "not found\n"));
}

async fn key_rotation_re_signs_realisations(server: &TestServer) {
    let cache = server.create_cache("ca-rotating", true).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let (_, admin) = server.token(&cache.name, Permission::Admin).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url(&cache.name), &top], "").await.expect_success("push the chain");
    let id = made_up_id(&top);
    let body = realisation_json(&id, top.trim_start_matches("/nix/store/"));
    assert_eq!(put_realisation(server, &cache.name, &id, Some(&write), body.clone()).await.0, StatusCode::OK);
    let local = Realisation::parse(&body).unwrap();

    // A new key signs existing realisations in the background, as it does paths.
    let admin_api = Api::anonymous(server).with(&admin);
    let (status, added) = admin_api.call(reqwest::Method::POST, &format!("/caches/{}/keys", cache.name), None).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let new_key = added["public_key"].as_str().unwrap().to_owned();
    let mut signatures = 0;
    for _ in 0..100 {
        let (_, _, text) = get_realisation(server, &cache.name, &id, None).await;
        signatures = Realisation::parse(&text).unwrap().signatures.len();
        if signatures == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(signatures, 2, "both keys sign during the overlap");
    assert_served(server, &cache.name, None, &local, &[&cache.public_key, &new_key]).await;

    // Retiring the old key withdraws its signature.
    let old_name = cache.public_key.split(':').next().unwrap();
    let (status, answer) = admin_api.delete(&format!("/caches/{}/keys/{old_name}", cache.name), None).await;
    assert!(status.is_success(), "{status} {answer}");
    assert_served(server, &cache.name, None, &local, &[&new_key]).await;
}

/// The per-cache host names serve realisations like every other protocol route (one route
/// table; the host only rewrites the path).
async fn realisations_on_a_cache_host(server: &TestServer) {
    let cache = server.create_cache("ca-host", false).await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    let (_, read) = server.token(&cache.name, Permission::Read).await;
    let port = server.base_url.rsplit(':').next().unwrap();
    let host = format!("{}.localhost", cache.name);
    let url = format!("http://{host}:{port}");

    let builder = PrivateNix::new(server.dir.path(), "builder", NixClient::Trixie);
    let tag = unique_tag();
    let build = build_ca(&builder, &tag, "").await;
    builder.use_tokens(&[(&host, &write)]);
    builder.run("nix", &["copy", "--to", &url, &format!("{}^*", build.drv)], "").await.expect_success("push to a cache host");
    assert_eq!(server.count_rows("realisations").await, 2);
    let out = substitute_with_nix_2_26(server, "fresh", &url, Some(&read), &cache.public_key, &tag).await;
    assert_eq!(out, build.out);
}
