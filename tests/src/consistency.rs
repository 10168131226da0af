//! The closure checker: walks every cache of a server and asserts that what it serves is
//! whole (every narinfo's references have narinfos, every NAR URL answers with its bytes)
//! and that storage holds exactly the objects the database names.

use std::collections::BTreeSet;

use larder_api::domain::Permission;
use larder_protocol::narinfo::NarInfo;

use crate::TestServer;

/// What the checker found, for tests that look further.
pub struct Walked {
    /// Published paths, over all caches.
    pub paths: usize,
}

/// Panics with what is broken, if anything: a served narinfo without its NAR or a
/// reference, a NAR of the wrong size, an object no row names (orphan) or a row whose
/// object is gone. Objects still queued for deletion count as neither, and so do
/// unfinished S3 multipart uploads of a queued key. The walk's own
/// downloads are not left counted as uses (they would keep every path alive).
pub async fn assert_consistent(server: &TestServer) -> Walked {
    let db = server.db().await;
    server.services().flush_path_uses().await;
    let last_uses: Vec<(i64, i64)> = sqlx::query_as("SELECT id, last_used_at FROM paths").fetch_all(&db).await.expect("read uses");
    let served: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT cache_id, hour, bytes FROM served_bytes").fetch_all(&db).await.expect("read served");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT c.name, p.hash_part FROM paths p JOIN caches c ON c.id = p.cache_id ORDER BY c.name, p.hash_part")
            .fetch_all(&db)
            .await
            .expect("read paths");
    let mut tokens = std::collections::HashMap::new();
    let mut broken = Vec::new();
    for (cache, hash) in &rows {
        if !tokens.contains_key(cache) {
            tokens.insert(cache.clone(), server.token(cache, Permission::Read).await.1);
        }
        let token = &tokens[cache];
        let get = |url: String| server.http.get(url).basic_auth("checker", Some(token)).send();
        let base = server.cache_url(cache);
        let response = get(format!("{base}/{hash}.narinfo")).await.expect("GET narinfo");
        if response.status() != 200 {
            broken.push(format!("{cache}: {hash}.narinfo answers {}", response.status()));
            continue;
        }
        let info = NarInfo::parse(&response.text().await.unwrap()).expect("a served narinfo parses");
        for reference in info.references.iter().filter(|r| r.hash() != info.store_path.hash()) {
            let status = get(format!("{base}/{}.narinfo", reference.hash_part())).await.expect("GET reference").status();
            if status != 200 {
                broken.push(format!("{cache}: {} refers to {reference}, whose narinfo answers {status}", info.store_path));
            }
        }
        let nar = get(format!("{base}/{}", info.url)).await.expect("GET NAR");
        let status = nar.status();
        let size = nar.bytes().await.map(|b| b.len() as u64).unwrap_or(0);
        if status != 200 || Some(size) != info.file_size {
            broken.push(format!("{cache}: {} answers {status} with {size} bytes, FileSize {:?}", info.url, info.file_size));
        }
    }
    let named: Vec<(String, String)> = sqlx::query_as("SELECT storage_key, listing_key FROM nars").fetch_all(&db).await.expect("read nars");
    let queued: Vec<(String,)> = sqlx::query_as("SELECT storage_key FROM storage_deletes").fetch_all(&db).await.expect("read queue");
    let logs: Vec<(String,)> = sqlx::query_as("SELECT storage_key FROM build_logs").fetch_all(&db).await.expect("read logs");
    server.services().flush_path_uses().await;
    for (id, used) in last_uses {
        sqlx::query("UPDATE paths SET last_used_at = $2 WHERE id = $1").bind(id).bind(used).execute(&db).await.expect("restore use");
    }
    sqlx::query("DELETE FROM served_bytes").execute(&db).await.expect("restore served bytes");
    for (cache, hour, bytes) in served {
        sqlx::query("INSERT INTO served_bytes (cache_id, hour, bytes) VALUES ($1, $2, $3)")
            .bind(cache)
            .bind(hour)
            .bind(bytes)
            .execute(&db)
            .await
            .expect("restore served bytes");
    }
    db.close().await;
    let stored: BTreeSet<String> = server.stored_objects().await.into_iter().filter(|k| !k.starts_with(".tmp/")).collect();
    let queued: BTreeSet<String> = queued.into_iter().map(|(k,)| k).collect();
    for (nar, _) in &named {
        if !stored.contains(nar) {
            broken.push(format!("the NAR object {nar} is gone but its row is not"));
        }
    }
    let mut known: BTreeSet<String> = named.into_iter().flat_map(|(nar, listing)| [nar, listing]).collect();
    known.extend(logs.into_iter().map(|(k,)| k));
    for object in stored.difference(&known) {
        // An unfinished multipart upload under a queued key is what a server killed while
        // opening an upload leaves (the key is queued before the upload begins); the
        // collector's stale-upload sweep aborts it, as the temporary-file sweep does on fs.
        let key = object.strip_prefix(crate::backends::MULTIPART_UPLOAD_OF).unwrap_or(object);
        if !queued.contains(key) {
            broken.push(format!("orphan object {object}: no row names it and it is not queued for deletion"));
        }
    }
    assert!(broken.is_empty(), "the server is inconsistent:\n{}", broken.join("\n"));
    Walked { paths: rows.len() }
}
