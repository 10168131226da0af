//! Upload sessions: one path's NAR in numbered parts (any order, re-sendable, survive a
//! dropped connection), completed into a published path under the rules of every push,
//! and what each kind of token gets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use larder_tests::{on_both_backends, Api, Nix, TestServer, TokenKinds};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

on_both_backends!(
    a_large_nar_arrives_in_parts_out_of_order_resent_and_cut_off,
    zstd_parts_are_kept_as_sent_or_stored_as_the_cache_says,
    completion_refuses_what_is_wrong_and_names_it,
    a_client_held_cache_takes_only_signed_sessions,
    upload_sessions_for_each_kind_of_token,
    abandoned_sessions_expire_and_leave_nothing with short_expiry,
);

const MIB: u64 = 1 << 20;

/// A store path holding one file of `size` random bytes, and its NAR dumped to a file.
struct Blob {
    store_path: String,
    nar: PathBuf,
    nar_hash: String,
    nar_size: u64,
}

async fn blob(nix: &Nix, dir: &Path, name: &str, size: u64) -> Blob {
    let file = dir.join(name);
    {
        use rand::RngCore;
        let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(&file).await.unwrap());
        let mut chunk = vec![0u8; MIB as usize];
        let mut left = size;
        while left > 0 {
            rand::thread_rng().fill_bytes(&mut chunk);
            let n = left.min(MIB) as usize;
            out.write_all(&chunk[..n]).await.unwrap();
            left -= n as u64;
        }
        out.shutdown().await.unwrap();
    }
    let added = nix.run("nix-store", &["--add", file.to_str().unwrap()], "").await.expect_success("nix-store --add");
    let store_path = added.stdout.trim().to_owned();
    let nar = dir.join(format!("{name}.nar"));
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("nix-store --dump '{store_path}' > '{}'", nar.display())])
        .status()
        .expect("nix-store --dump");
    assert!(status.success());
    let info = nix.run("nix", &["path-info", "--json", &store_path], "").await.expect_success("nix path-info");
    let info: Value = serde_json::from_str(&info.stdout).unwrap();
    let info = if info.is_array() { info[0].clone() } else { info[&store_path].clone() };
    Blob { store_path, nar, nar_hash: info["narHash"].as_str().unwrap().to_owned(), nar_size: info["narSize"].as_u64().unwrap() }
}

fn new_upload(blob: &Blob, extra: Value) -> Value {
    let mut body = json!({
        "store_path": blob.store_path,
        "nar_hash": blob.nar_hash,
        "nar_size": blob.nar_size,
        "references": [],
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

async fn read_range(file: &Path, offset: u64, length: u64) -> Vec<u8> {
    let mut reader = tokio::fs::File::open(file).await.unwrap();
    reader.seek(std::io::SeekFrom::Start(offset)).await.unwrap();
    let mut bytes = vec![0; length as usize];
    reader.read_exact(&mut bytes).await.unwrap();
    bytes
}

async fn open(api: &Api<'_>, cache: &str, body: Value) -> (StatusCode, Value) {
    api.post(&format!("/caches/{cache}/uploads"), body).await
}

async fn put_part(api: &Api<'_>, cache: &str, id: &str, number: u32, bytes: Vec<u8>) -> (StatusCode, Value) {
    let path = format!("/caches/{cache}/uploads/{id}/parts/{number}");
    let (status, text) = api.call_raw(Method::PUT, &path, Some(bytes), "application/octet-stream").await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn complete(api: &Api<'_>, cache: &str, id: &str) -> (StatusCode, Value) {
    api.post(&format!("/caches/{cache}/uploads/{id}/complete"), json!({})).await
}

/// Sends the whole of `data` (a file) in parts of `part_size`, in order.
async fn send_all(api: &Api<'_>, cache: &str, id: &str, data: &Path, part_size: u64) {
    let size = std::fs::metadata(data).unwrap().len();
    for number in 1..=size.div_ceil(part_size) {
        let offset = (number - 1) * part_size;
        let bytes = read_range(data, offset, part_size.min(size - offset)).await;
        let (status, answer) = put_part(api, cache, id, number as u32, bytes).await;
        assert_eq!(status, StatusCode::OK, "part {number}: {answer}");
    }
}

/// Starts a part of `length` bytes on a raw connection, sends only `sent` of them and hangs up.
async fn cut_off_part(server: &TestServer, token: &str, cache: &str, id: &str, number: u32, length: u64, bytes: &[u8]) {
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PUT /api/v1/caches/{cache}/uploads/{id}/parts/{number} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
    drop(stream);
}

async fn session(api: &Api<'_>, cache: &str, id: &str) -> Value {
    let (status, answer) = api.get(&format!("/caches/{cache}/uploads/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

fn part_numbers(session: &Value) -> Vec<u64> {
    session["parts"].as_array().unwrap().iter().map(|p| p["number"].as_u64().unwrap()).collect()
}

async fn narinfo(server: &TestServer, cache: &str, store_path: &str, token: &str) -> String {
    let hash = larder_tests::hash_part(store_path);
    let response = server.http.get(format!("{}/{hash}.narinfo", server.cache_url(cache))).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

fn field<'t>(narinfo: &'t str, name: &str) -> &'t str {
    narinfo.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_else(|| panic!("no {name} in {narinfo}"))
}

/// The substituted copy must be what was pushed, with the cache's signature required.
async fn substitutes(server: &TestServer, nix: &Nix, cache: &str, public_key: &str, store_path: &str, store: &str) {
    let (run, root) = nix.pull_verified(&server.cache_url(cache), store_path, public_key, store).await;
    let run = run.expect_success("nix copy --from the cache");
    drop(run);
    larder_tests::assert_same_tree(Path::new(store_path), &root.join(store_path.trim_start_matches('/')));
}

async fn public_key(api: &Api<'_>, cache: &str) -> String {
    let (_, info) = api.get(&format!("/caches/{cache}")).await;
    info["public_keys"][0].as_str().unwrap().to_owned()
}

async fn a_large_nar_arrives_in_parts_out_of_order_resent_and_cut_off(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("big", false).await;
    let (write_id, write) = alice.token(json!({"kind": "cache", "cache": "big", "permission": "write"})).await;
    let pusher = Api::anonymous(server).with(&write);
    let nix = Nix::new(server.dir.path());
    nix.use_token(Some(&write));
    let work = server.dir.path().join("blobs");
    std::fs::create_dir_all(&work).unwrap();
    let big = blob(&nix, &work, "big", 300 * MIB + 12_345).await;
    let part_size = 16 * MIB;
    let parts = big.nar_size.div_ceil(part_size);
    assert!(parts >= 19, "{parts} parts");

    let (status, opened) = open(&pusher, "big", new_upload(&big, json!({"part_size": part_size}))).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    assert_eq!((opened["status"].as_str(), opened["part_size"].as_u64()), (Some("open"), Some(part_size)), "{opened}");
    let id = opened["id"].as_str().unwrap().to_owned();
    let part = |number: u64| {
        let offset = (number - 1) * part_size;
        read_range(&big.nar, offset, part_size.min(big.nar_size - offset))
    };

    // The last part first, then the odd ones, then the even ones; part 3 twice.
    let mut order: Vec<u64> = vec![parts];
    order.extend((1..parts).filter(|n| n % 2 == 1));
    order.push(3);
    order.extend((1..parts).filter(|n| n % 2 == 0));
    for number in order {
        if number == 4 {
            // A connection dropped half-way through part 4 leaves no part 4.
            let bytes = part(4).await;
            cut_off_part(server, &write, "big", &id, 4, part_size, &bytes[..(part_size / 2) as usize]).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while server.services().uploads_in_flight(&larder_api::domain::TokenId::from_presented(&write_id)) > 0 {
                assert!(tokio::time::Instant::now() < deadline, "the cut-off part is still in flight");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(!part_numbers(&session(&pusher, "big", &id).await).contains(&4), "a cut-off part is not held");
            let (status, answer) = complete(&pusher, "big", &id).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
            assert!(answer["message"].as_str().unwrap().contains("parts missing"), "{answer}");
        }
        let (status, answer) = put_part(&pusher, "big", &id, number as u32, part(number).await).await;
        assert_eq!(status, StatusCode::OK, "part {number}: {answer}");
        assert_eq!(answer["number"].as_u64(), Some(number), "{answer}");
    }
    let held = session(&pusher, "big", &id).await;
    assert_eq!(part_numbers(&held), (1..=parts).collect::<Vec<_>>());
    let total: u64 = held["parts"].as_array().unwrap().iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert_eq!(total, big.nar_size);

    let (status, completed) = complete(&pusher, "big", &id).await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    assert_eq!(completed["nar_size"].as_u64(), Some(big.nar_size));
    let (status, _) = pusher.get(&format!("/caches/big/uploads/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a completed session is gone");
    let text = narinfo(server, "big", &big.store_path, &write).await;
    assert_eq!(field(&text, "Compression"), "zstd", "stored in the cache's compression: {text}");
    assert_eq!(field(&text, "NarSize"), big.nar_size.to_string());

    // Announced again: present, nothing to send.
    let (status, again) = open(&pusher, "big", new_upload(&big, json!({}))).await;
    assert_eq!((status, again["status"].as_str()), (StatusCode::OK, Some("present")), "{again}");

    let key = public_key(&alice, "big").await;
    substitutes(server, &nix, "big", &key, &big.store_path, "big-copy").await;
    larder_tests::consistency::assert_consistent(server).await;
    let _ = nix.run("nix-store", &["--delete", &big.store_path], "").await;
}

/// Compresses a file with zstd into another.
async fn zstd_file(from: &Path, to: &Path) {
    let reader = tokio::io::BufReader::new(tokio::fs::File::open(from).await.unwrap());
    let mut encoder = async_compression::tokio::bufread::ZstdEncoder::new(reader);
    let mut out = tokio::fs::File::create(to).await.unwrap();
    tokio::io::copy(&mut encoder, &mut out).await.unwrap();
    out.shutdown().await.unwrap();
}

async fn zstd_parts_are_kept_as_sent_or_stored_as_the_cache_says(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("packed", false).await;
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "packed", "permission": "write"})).await;
    let pusher = Api::anonymous(server).with(&write);
    let nix = Nix::new(server.dir.path());
    nix.use_token(Some(&write));
    let work = server.dir.path().join("blobs");
    std::fs::create_dir_all(&work).unwrap();
    let key = public_key(&alice, "packed").await;

    // zstd on the wire into a zstd cache: stored as sent (the parts cut the stream anywhere).
    let first = blob(&nix, &work, "first", 12 * MIB).await;
    let packed = work.join("first.nar.zst");
    zstd_file(&first.nar, &packed).await;
    let sent_size = std::fs::metadata(&packed).unwrap().len();
    let (status, opened) = open(&pusher, "packed", new_upload(&first, json!({"wire_compression": "zstd", "part_size": 5 * MIB}))).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let id = opened["id"].as_str().unwrap();
    send_all(&pusher, "packed", id, &packed, 5 * MIB).await;
    let (status, completed) = complete(&pusher, "packed", id).await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    assert_eq!(completed["file_size"].as_u64(), Some(sent_size), "kept as sent: {completed}");
    let text = narinfo(server, "packed", &first.store_path, &write).await;
    assert_eq!(field(&text, "Compression"), "zstd");
    substitutes(server, &nix, "packed", &key, &first.store_path, "first").await;

    // The cache set to store NARs uncompressed: the same wire, stored plain.
    let (status, changed) = alice.call(Method::PATCH, "/caches/packed", Some(json!({"compression": "none"}))).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let (_, info) = alice.get("/caches/packed").await;
    assert_eq!(info["compression"], "none", "{info}");
    let second = blob(&nix, &work, "second", 6 * MIB).await;
    let packed = work.join("second.nar.zst");
    zstd_file(&second.nar, &packed).await;
    let (status, opened) = open(&pusher, "packed", new_upload(&second, json!({"wire_compression": "zstd"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let id = opened["id"].as_str().unwrap();
    send_all(&pusher, "packed", id, &packed, opened["part_size"].as_u64().unwrap()).await;
    let (status, completed) = complete(&pusher, "packed", id).await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    assert_eq!(completed["file_size"].as_u64(), Some(second.nar_size), "{completed}");
    let text = narinfo(server, "packed", &second.store_path, &write).await;
    assert_eq!(field(&text, "Compression"), "none", "{text}");
    substitutes(server, &nix, "packed", &key, &second.store_path, "second").await;
    larder_tests::consistency::assert_consistent(server).await;
    let (status, _) = alice.call(Method::PATCH, "/caches/packed", Some(json!({"compression": "xz"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only none and zstd");
}

async fn completion_refuses_what_is_wrong_and_names_it(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("strict", false).await;
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "strict", "permission": "write"})).await;
    let pusher = Api::anonymous(server).with(&write);
    let nix = Nix::new(server.dir.path());
    let work = server.dir.path().join("blobs");
    std::fs::create_dir_all(&work).unwrap();
    let one = blob(&nix, &work, "one", 11 * MIB).await;

    // Bad announcements.
    let bad_opens = [
        (json!({"nar_hash": "sha256:nope"}), "nar_hash"),
        (json!({"nar_size": 0}), "nar_size"),
        (json!({"store_path": "/tmp/x"}), "not a store path"),
        (json!({"references": ["nope"]}), "not a store path"),
        (json!({"part_size": 1024}), "part_size"),
        (json!({"part_size": 1u64 << 40}), "part_size"),
        (json!({"signatures": ["no-colon"]}), "signature"),
        (json!({"surprise": true}), "unknown field"),
    ];
    for (extra, said) in bad_opens {
        let (status, answer) = open(&pusher, "strict", new_upload(&one, extra.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(said), "{extra}: {answer}");
    }
    let (status, answer) = pusher.call_raw(Method::POST, "/caches/strict/uploads", Some(b"{".to_vec()), "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    let (status, opened) = open(&pusher, "strict", new_upload(&one, json!({"part_size": 5 * MIB}))).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let id = opened["id"].as_str().unwrap().to_owned();
    // Announced again before completing: the same session, with its parts.
    let (status, reopened) = open(&pusher, "strict", new_upload(&one, json!({"part_size": 5 * MIB}))).await;
    assert_eq!((status, reopened["id"].as_str()), (StatusCode::CREATED, Some(id.as_str())), "{reopened}");

    // Bad parts.
    for number in ["0", "10001", "x"] {
        let path = format!("/caches/strict/uploads/{id}/parts/{number}");
        let (status, answer) = pusher.call_raw(Method::PUT, &path, Some(vec![1; 10]), "application/octet-stream").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "part {number}: {answer}");
    }
    let (status, answer) = put_part(&pusher, "strict", &id, 1, vec![0; (5 * MIB + 1) as usize]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, answer) = put_part(&pusher, "strict", &id, 1, Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = put_part(&pusher, "strict", "0123456789abcdef0123456789abcdef", 1, vec![1; 10]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    // Missing and short parts are named; the session stays open.
    let (status, answer) = complete(&pusher, "strict", &id).await;
    assert!(status == StatusCode::BAD_REQUEST && answer["message"].as_str().unwrap().contains("no part"), "{answer}");
    let (_, answer) = put_part(&pusher, "strict", &id, 3, read_range(&one.nar, 10 * MIB, one.nar_size - 10 * MIB).await).await;
    assert_eq!(answer["number"], 3, "{answer}");
    let (status, answer) = complete(&pusher, "strict", &id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("parts missing from") && answer["message"].as_str().unwrap().contains("1, 2"),
        "{answer}"
    );
    put_part(&pusher, "strict", &id, 1, read_range(&one.nar, 0, 5 * MIB).await).await;
    put_part(&pusher, "strict", &id, 2, read_range(&one.nar, 5 * MIB, 4 * MIB).await).await;
    let (status, answer) = complete(&pusher, "strict", &id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("part 2 of"), "{answer}");
    // Part 2 sent again, right: it completes.
    put_part(&pusher, "strict", &id, 2, read_range(&one.nar, 5 * MIB, 5 * MIB).await).await;
    let (status, answer) = complete(&pusher, "strict", &id).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // A NAR that is not what was announced ends the session and stores nothing.
    let two = blob(&nix, &work, "two", 1000).await;
    let lie = new_upload(&two, json!({"nar_hash": one.nar_hash}));
    let (_, opened) = open(&pusher, "strict", lie).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    send_all(&pusher, "strict", &id, &two.nar, 5 * MIB).await;
    let (status, answer) = complete(&pusher, "strict", &id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("nothing stored"), "{answer}");
    let (status, _) = pusher.get(&format!("/caches/strict/uploads/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Bytes that are not a NAR at all: the same.
    let (_, opened) = open(&pusher, "strict", new_upload(&two, json!({}))).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    put_part(&pusher, "strict", &id, 1, b"not a nar".to_vec()).await;
    let (status, answer) = complete(&pusher, "strict", &id).await;
    assert!(status == StatusCode::BAD_REQUEST && answer["message"].as_str().unwrap().contains("not a valid NAR"), "{answer}");

    // References must be published first; the session waits for them.
    let nix_chain = nix.build_chain().await;
    let closure = nix.closure(&nix_chain).await;
    let infos = nix.run("nix", &["path-info", "--json", &nix_chain], "").await.expect_success("path-info");
    let infos: Value = serde_json::from_str(&infos.stdout).unwrap();
    let info = if infos.is_array() { infos[0].clone() } else { infos[&nix_chain].clone() };
    let top_nar = work.join("top.nar");
    std::fs::write(&top_nar, nix.dump(&nix_chain).await).unwrap();
    let announce = json!({
        "store_path": nix_chain, "nar_hash": info["narHash"], "nar_size": info["narSize"], "references": info["references"],
    });
    let (_, opened) = open(&pusher, "strict", announce).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    send_all(&pusher, "strict", &id, &top_nar, 5 * MIB).await;
    let (status, answer) = complete(&pusher, "strict", &id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("references not in this cache"), "{answer}");
    nix.use_token(Some(&write));
    for path in closure.iter().filter(|p| **p != nix_chain) {
        nix.run("nix", &["copy", "--to", &server.cache_url("strict"), path], "").await.expect_success("nix copy");
    }
    let (status, answer) = complete(&pusher, "strict", &id).await;
    assert_eq!(status, StatusCode::OK, "once the references are in: {answer}");
    larder_tests::consistency::assert_consistent(server).await;

    // Aborting ends a session.
    let three = blob(&nix, &work, "three", 2000).await;
    let (_, opened) = open(&pusher, "strict", new_upload(&three, json!({}))).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    put_part(&pusher, "strict", &id, 1, std::fs::read(&three.nar).unwrap()).await;
    let (status, _) = pusher.delete(&format!("/caches/strict/uploads/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = complete(&pusher, "strict", &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn a_client_held_cache_takes_only_signed_sessions(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("own-keys", false).await;
    let nix = Nix::new(server.dir.path());
    let key_file = server.dir.path().join("secret.key");
    let generated = nix.run("nix", &["key", "generate-secret", "--key-name", "alice-own-1"], "").await.expect_success("generate key");
    std::fs::write(&key_file, generated.stdout.trim()).unwrap();
    let public = nix.run("sh", &["-c", &format!("nix key convert-secret-to-public < {}", key_file.display())], "").await;
    let public = public.expect_success("public key").stdout.trim().to_owned();
    let (status, answer) = alice.call(Method::PUT, "/caches/own-keys/signing-mode", Some(json!({"mode": "client"}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = alice.post("/caches/own-keys/public-keys", json!({"public_key": public})).await;
    assert!(status.is_success(), "{answer}");
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "own-keys", "permission": "write"})).await;
    let pusher = Api::anonymous(server).with(&write);
    let work = server.dir.path().join("blobs");
    std::fs::create_dir_all(&work).unwrap();
    let blob = blob(&nix, &work, "signed", 3000).await;

    let (status, answer) = open(&pusher, "own-keys", new_upload(&blob, json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unsigned: {answer}");
    assert!(answer["message"].as_str().unwrap().contains("no valid signature"), "{answer}");

    nix.run("nix", &["store", "sign", "--key-file", key_file.to_str().unwrap(), &blob.store_path], "").await.expect_success("sign");
    let infos = nix.run("nix", &["path-info", "--json", "--sigs", &blob.store_path], "").await.expect_success("path-info");
    let infos: Value = serde_json::from_str(&infos.stdout).unwrap();
    let info = if infos.is_array() { infos[0].clone() } else { infos[&blob.store_path].clone() };
    let signatures = info["signatures"].clone();
    assert!(signatures.as_array().is_some_and(|s| !s.is_empty()), "{info}");
    let (status, opened) = open(&pusher, "own-keys", new_upload(&blob, json!({"signatures": signatures}))).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let id = opened["id"].as_str().unwrap();
    send_all(&pusher, "own-keys", id, &blob.nar, 5 * MIB).await;
    let (status, answer) = complete(&pusher, "own-keys", id).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let text = narinfo(server, "own-keys", &blob.store_path, &write).await;
    assert!(field(&text, "Sig").starts_with("alice-own-1:"), "{text}");
    nix.use_token(Some(&write));
    substitutes(server, &nix, "own-keys", &public, &blob.store_path, "signed").await;
}

async fn upload_sessions_for_each_kind_of_token(server: &TestServer) {
    let TokenKinds { bobs, read, write, admin, revoked, expired, limited_elsewhere, personal, .. } =
        TokenKinds::around_alice_private(server, "write").await;
    let nix = Nix::new(server.dir.path());
    let work = server.dir.path().join("blobs");
    std::fs::create_dir_all(&work).unwrap();
    let blob = blob(&nix, &work, "tokens", 1000).await;
    let announce = new_upload(&blob, json!({}));
    let (_, opened) = open(&Api::anonymous(server).with(&write), "alice-private", announce.clone()).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    let anonymous = Api::anonymous(server);
    let cases: Vec<(&str, Api<'_>, StatusCode)> = vec![
        ("anonymous", Api::anonymous(server), StatusCode::UNAUTHORIZED),
        ("another tenant's", anonymous.with(&bobs), StatusCode::UNAUTHORIZED),
        ("read", anonymous.with(&read), StatusCode::FORBIDDEN),
        ("revoked", anonymous.with(&revoked), StatusCode::UNAUTHORIZED),
        ("expired", anonymous.with(&expired), StatusCode::UNAUTHORIZED),
        ("personal, limited to another cache", anonymous.with(&limited_elsewhere), StatusCode::UNAUTHORIZED),
    ];
    for (kind, api, expected) in cases {
        let (status, answer) = open(&api, "alice-private", announce.clone()).await;
        assert_eq!(status, expected, "{kind} opening: {answer}");
        let (status, answer) = put_part(&api, "alice-private", &id, 1, b"x".to_vec()).await;
        assert_eq!(status, expected, "{kind} sending a part: {answer}");
        let (status, answer) = api.get(&format!("/caches/alice-private/uploads/{id}")).await;
        assert_eq!(status, expected, "{kind} reading the session: {answer}");
        let (status, answer) = complete(&api, "alice-private", &id).await;
        assert_eq!(status, expected, "{kind} completing: {answer}");
        let (status, answer) = api.delete(&format!("/caches/alice-private/uploads/{id}"), None).await;
        assert_eq!(status, expected, "{kind} aborting: {answer}");
    }
    // Another tenant's session id on one's own cache is no session.
    let (status, answer) = anonymous.with(&bobs).get(&format!("/caches/bob-cache/uploads/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    // Write, admin and an unlimited personal token of the owner may push.
    for (kind, token) in [("write", &write), ("admin", &admin), ("personal", &personal)] {
        let api = anonymous.with(token);
        let (status, answer) = open(&api, "alice-private", announce.clone()).await;
        assert_eq!((status, answer["id"].as_str()), (StatusCode::CREATED, Some(id.as_str())), "{kind}: {answer}");
        assert_eq!(session(&api, "alice-private", &id).await["id"], id.as_str(), "{kind}");
    }
    let pusher = anonymous.with(&admin);
    send_all(&pusher, "alice-private", &id, &blob.nar, 5 * MIB).await;
    let (status, answer) = complete(&pusher, "alice-private", &id).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

fn short_expiry(settings: &mut larder_tests::Settings) {
    settings.pending_upload_expiry_secs = 60;
}

async fn abandoned_sessions_expire_and_leave_nothing(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("left", false).await;
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "left", "permission": "write"})).await;
    let pusher = Api::anonymous(server).with(&write);
    let nix = Nix::new(server.dir.path());
    let work = server.dir.path().join("blobs");
    std::fs::create_dir_all(&work).unwrap();
    let blob = blob(&nix, &work, "left", 7 * MIB).await;
    let before = server.stored_objects().await;
    let (_, opened) = open(&pusher, "left", new_upload(&blob, json!({"part_size": 5 * MIB}))).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    put_part(&pusher, "left", &id, 1, read_range(&blob.nar, 0, 5 * MIB).await).await;
    assert_ne!(server.stored_objects().await, before, "the part is held somewhere");
    // What an open session holds is queued for deletion until it completes: on S3 an
    // unfinished multipart upload, which is also what a server killed while opening an
    // upload leaves behind.
    larder_tests::consistency::assert_consistent(server).await;
    assert!(opened["expires_at"].as_i64().unwrap() > 0);

    server.services().clock().advance(Duration::from_secs(120));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let collection = loop {
        if let Some(collection) = server.services().collect_garbage(None, false).await.expect("collection runs") {
            break collection;
        }
        assert!(tokio::time::Instant::now() < deadline, "another collector held the lock for 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(collection.upload_sessions_expired, 1);
    let (status, _) = pusher.get(&format!("/caches/left/uploads/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(server.stored_objects().await, before, "nothing of the session is left");
    assert_eq!(server.count_rows("upload_parts").await, 0);
    larder_tests::consistency::assert_consistent(server).await;
}
