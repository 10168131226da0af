//! `s3_redirect_downloads`: NAR downloads answered with a redirect to a presigned URL of
//! the object, which the real nix follows. The filesystem backend has no such URLs and
//! streams as always.

use larder_api::config::StorageSettings;
use larder_api::domain::Permission;
use larder_tests::{on_both_backends, Backend, Nix, TestServer};

on_both_backends!(nar_downloads_redirect_to_the_bucket_when_configured with redirect_downloads);

fn redirect_downloads(settings: &mut larder_tests::Settings) {
    if let StorageSettings::S3(s3) = &mut settings.storage {
        s3.redirect_downloads = true;
    }
}

async fn nar_downloads_redirect_to_the_bucket_when_configured(server: &TestServer) {
    let cache = server.create_cache("redirected", false).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let (_, write) = server.token(&cache.name, Permission::Write).await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &format!("{}?compression=zstd", server.cache_url(&cache.name)), &top], "")
        .await
        .expect_success("nix copy --to");
    let (_, read) = server.token(&cache.name, Permission::Read).await;

    let narinfo = server
        .http
        .get(format!("{}/{}.narinfo", server.cache_url(&cache.name), larder_tests::hash_part(&top)))
        .basic_auth("t", Some(&read))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let info = larder_protocol::narinfo::NarInfo::parse(&narinfo).unwrap();
    let nar_url = format!("{}/{}", server.cache_url(&cache.name), info.url);
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let anonymous = no_redirects.get(&nar_url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "no redirect without access");
    let answer = no_redirects.get(&nar_url).basic_auth("t", Some(&read)).send().await.unwrap();
    let expected = server.http.get(&nar_url).basic_auth("t", Some(&read)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(expected.len() as u64, info.file_size.unwrap(), "followed (or streamed), the NAR is whole");
    match server.backend {
        Backend::PostgresS3 => {
            assert_eq!(answer.status(), 307);
            assert_eq!(answer.headers()["cache-control"], "no-store");
            let location = answer.headers()["location"].to_str().unwrap().to_owned();
            let endpoint = std::env::var("TEST_S3_ENDPOINT").unwrap();
            assert!(location.starts_with(&endpoint) && location.contains("X-Amz-Signature="), "{location}");
            let direct = reqwest::get(&location).await.unwrap();
            assert_eq!(direct.status(), 200, "the presigned URL needs no credentials");
            assert_eq!(direct.bytes().await.unwrap(), expected);
            // A range is still served by Larder itself.
            let ranged = no_redirects.get(&nar_url).basic_auth("t", Some(&read)).header("Range", "bytes=0-9").send().await.unwrap();
            assert_eq!((ranged.status().as_u16(), ranged.bytes().await.unwrap().len()), (206, 10));
        }
        Backend::SqliteFs => assert_eq!(answer.status(), 200, "the filesystem backend streams"),
    }

    // The real nix follows the redirect, signatures required.
    nix.use_token(Some(&read));
    let (run, store) = nix.pull_verified(&server.cache_url(&cache.name), &top, &cache.public_key, "through-redirect").await;
    run.expect_success("nix copy --from through redirects");
    for path in nix.closure(&top).await {
        larder_tests::assert_same_tree(path.as_ref(), &store.join(path.trim_start_matches('/')));
    }
}
