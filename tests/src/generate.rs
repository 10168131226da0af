//! Caches filled directly (rows written in SQL, objects put into storage), for tests and
//! benchmarks that need more paths than nix builds quickly.

use larder_protocol::hash::Sha256Hash;
use larder_protocol::nix32;

use crate::TestServer;

/// The hash part of generated path `i`.
fn hash_part(seed: &str, i: usize) -> String {
    let digest = Sha256Hash::digest(format!("{seed}-{i}").as_bytes());
    nix32::encode(&digest.0[..20])
}

/// Adds `count` published paths to `cache`, each referring to the one before (a chain),
/// last used at `last_used_at`, each with a small NAR object of its own in storage.
pub async fn generate_paths(server: &TestServer, cache: &str, seed: &str, count: usize, last_used_at: i64) {
    let db = server.db().await;
    let (cache_id,): (i64,) = sqlx::query_as("SELECT id FROM caches WHERE name = $1").bind(cache).fetch_one(&db).await.expect("cache id");
    let mut tx = db.begin().await.expect("begin");
    let mut previous: Option<String> = None;
    for i in 0..count {
        let bytes = format!("generated NAR {seed} {i}").into_bytes();
        let file_hash = Sha256Hash::digest(&bytes).to_nix32();
        let key = format!("nar/{file_hash}.nar");
        server.services().storage().put_bytes(&key, bytes.clone().into()).await.expect("put object");
        let (nar_id,): (i64,) = sqlx::query_as(
            "INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, storage_key, listing_key, created_at) \
             VALUES ($1, $2, 'none', $1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&file_hash)
        .bind(bytes.len() as i64)
        .bind(&key)
        .bind(format!("ls/{file_hash}.ls"))
        .bind(last_used_at)
        .fetch_one(&mut *tx)
        .await
        .expect("insert nar");
        sqlx::query("INSERT INTO cache_nars (cache_id, nar_id, uploaded_at) VALUES ($1, $2, $3)")
            .bind(cache_id)
            .bind(nar_id)
            .bind(last_used_at)
            .execute(&mut *tx)
            .await
            .expect("insert cache_nars");
        let hash = hash_part(seed, i);
        let base_name = format!("{hash}-generated-{i}");
        let (path_id,): (i64,) = sqlx::query_as(
            "INSERT INTO paths (cache_id, hash_part, store_path, nar_id, refs, sigs, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, '', $6, $6) RETURNING id",
        )
        .bind(cache_id)
        .bind(&hash)
        .bind(format!("/nix/store/{base_name}"))
        .bind(nar_id)
        .bind(previous.clone().unwrap_or_default())
        .bind(last_used_at)
        .fetch_one(&mut *tx)
        .await
        .expect("insert path");
        if let Some(previous) = &previous {
            sqlx::query("INSERT INTO path_refs (path_id, cache_id, ref_hash) VALUES ($1, $2, $3)")
                .bind(path_id)
                .bind(cache_id)
                .bind(&previous[..32])
                .execute(&mut *tx)
                .await
                .expect("insert path_refs");
        }
        previous = Some(base_name);
    }
    tx.commit().await.expect("commit");
    db.close().await;
}
