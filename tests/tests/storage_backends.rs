//! The storage trait against both real backends: a local directory and S3 (Garage, started
//! by `scripts/test.sh`). Every test runs once per backend (`fs::<test>` and `s3::<test>`).

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use larder_api::storage::{ByteRange, FsStorage, Object, S3Storage, Storage, StoredPart};
use larder_tests::backends::{files_below, TestBucket};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Backends

struct Backend {
    storage: Box<dyn Storage>,
    kind: Kind,
}

enum Kind {
    Fs(tempfile::TempDir),
    S3(TestBucket),
}

async fn fs_backend() -> Backend {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let storage = FsStorage::new(dir.path().join("store")).await.expect("creating FsStorage");
    Backend { storage: Box::new(storage), kind: Kind::Fs(dir) }
}

async fn s3_backend() -> Backend {
    let bucket = TestBucket::create().await;
    let storage = S3Storage::new(bucket.s3_settings()).await.expect("creating S3Storage");
    Backend { storage: Box::new(storage), kind: Kind::S3(bucket) }
}

impl Backend {
    fn is_fs(&self) -> bool {
        matches!(self.kind, Kind::Fs(_))
    }

    /// Everything the backend holds: object keys, plus temporary files (fs) or unfinished
    /// multipart uploads (S3), so tests can assert that nothing was left behind.
    async fn leftovers(&self) -> Vec<String> {
        match &self.kind {
            Kind::Fs(dir) => files_below(&dir.path().join("store")),
            Kind::S3(bucket) => bucket.contents().await,
        }
    }

    async fn cleanup(self) {
        if let Kind::S3(bucket) = &self.kind {
            bucket.remove().await;
        }
    }
}

/// Cleans the backend up whatever the test's outcome, then re-raises its panic, if any.
async fn finish(backend: Backend, outcome: std::thread::Result<()>) {
    backend.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Declares each test once per backend: `fs::<name>` and `s3::<name>`.
macro_rules! on_both_storage_backends {
    ($($name:ident),* $(,)?) => {
        mod fs {
            use futures_util::FutureExt;
            use std::panic::AssertUnwindSafe;
            $(
                #[tokio::test]
                async fn $name() {
                    let backend = super::fs_backend().await;
                    let outcome = AssertUnwindSafe(super::$name(&backend)).catch_unwind().await;
                    super::finish(backend, outcome).await;
                }
            )*
        }
        mod s3 {
            use futures_util::FutureExt;
            use std::panic::AssertUnwindSafe;
            $(
                #[tokio::test]
                async fn $name() {
                    let backend = super::s3_backend().await;
                    let outcome = AssertUnwindSafe(super::$name(&backend)).catch_unwind().await;
                    super::finish(backend, outcome).await;
                }
            )*
        }
    };
}

on_both_storage_backends!(
    upload_is_invisible_until_commit,
    abort_leaves_nothing,
    dropped_upload_leaves_nothing,
    multipart_upload_round_trips,
    range_reads,
    missing_objects,
    delete_is_idempotent,
    second_commit_replaces_object,
    small_and_empty_objects,
    health_check_passes,
    stale_uploads_are_removed,
    assemblies_join_parts_sent_in_any_order,
    aborted_assemblies_and_parts_leave_nothing,
);

// ---------------------------------------------------------------------------------------
// Helpers

/// Deterministic pseudo-random bytes (xorshift), so content mix-ups are caught.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn read_all(object: Object) -> Vec<u8> {
    let mut stream = object.stream;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("reading object stream"));
    }
    out
}

async fn get_all(backend: &Backend, key: &str) -> Option<Vec<u8>> {
    match backend.storage.get(key, None).await.expect("get") {
        Some(object) => {
            let total = object.total_size;
            let data = read_all(object).await;
            assert_eq!(total, data.len() as u64, "total_size of {key}");
            Some(data)
        }
        None => None,
    }
}

async fn upload_chunks(backend: &Backend, key: &str, chunks: &[&[u8]]) -> u64 {
    let mut upload = backend.storage.begin_upload(key).await.expect("begin_upload");
    for chunk in chunks {
        upload.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    upload.commit().await.expect("commit")
}

/// Compares without printing megabytes on failure.
fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "length of {what}");
    if let Some(at) = actual.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: content differs at byte {at}");
    }
}

// ---------------------------------------------------------------------------------------
// Tests (each runs on both backends, see `on_both_storage_backends!`)

async fn upload_is_invisible_until_commit(b: &Backend) {
    let key = "nar/invisible.nar.zst";
    let data = pseudo_random(100_000, 1);
    let mut upload = b.storage.begin_upload(key).await.unwrap();
    upload.write(Bytes::copy_from_slice(&data[..50_000])).await.unwrap();
    upload.write(Bytes::copy_from_slice(&data[50_000..])).await.unwrap();

    assert!(b.storage.get(key, None).await.unwrap().is_none(), "visible before commit");
    assert_eq!(b.storage.size(key).await.unwrap(), None, "sized before commit");

    assert_eq!(upload.commit().await.unwrap(), data.len() as u64);
    assert_eq!(b.storage.size(key).await.unwrap(), Some(data.len() as u64));
    assert_same(&get_all(b, key).await.expect("visible after commit"), &data, key);
}

async fn abort_leaves_nothing(b: &Backend) {
    // Small (would have been a single PutObject on S3).
    let mut small = b.storage.begin_upload("nar/small.nar").await.unwrap();
    small.write(Bytes::from_static(b"partial")).await.unwrap();
    small.abort().await.unwrap();

    // Large enough that S3 has started a multipart upload and sent parts.
    let mut large = b.storage.begin_upload("nar/large.nar").await.unwrap();
    for i in 0..10 {
        large.write(Bytes::from(pseudo_random(MIB, i))).await.unwrap();
    }
    large.abort().await.unwrap();

    assert!(b.storage.get("nar/small.nar", None).await.unwrap().is_none());
    assert!(b.storage.get("nar/large.nar", None).await.unwrap().is_none());
    assert_eq!(b.leftovers().await, Vec::<String>::new(), "left behind by aborts");
}

async fn dropped_upload_leaves_nothing(b: &Backend) {
    let mut upload = b.storage.begin_upload("nar/dropped.nar").await.unwrap();
    for i in 0..10 {
        upload.write(Bytes::from(pseudo_random(MIB, i))).await.unwrap();
    }
    drop(upload);

    assert!(b.storage.get("nar/dropped.nar", None).await.unwrap().is_none());
    // The S3 abort runs in a spawned task: give it a moment.
    let mut left = b.leftovers().await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = b.leftovers().await;
    }
    assert_eq!(left, Vec::<String>::new(), "left behind by a dropped upload");
}

/// What a crash leaves (an upload neither committed, aborted nor dropped) goes only when it
/// is older than asked.
async fn stale_uploads_are_removed(b: &Backend) {
    let mut upload = b.storage.begin_upload("nar/crashed.nar").await.unwrap();
    // Past one S3 part, so that a multipart upload exists.
    for i in 0..10 {
        upload.write(Bytes::from(pseudo_random(MIB, i))).await.unwrap();
    }
    std::mem::forget(upload);
    let left = b.leftovers().await;
    assert_eq!(left.len(), 1, "{left:?}");

    assert_eq!(b.storage.remove_stale_uploads(Duration::from_secs(3600), Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(b.leftovers().await, left, "a recent upload was removed");
    // S3 dates uploads to the second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.storage.remove_stale_uploads(Duration::ZERO, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(b.leftovers().await, Vec::<String>::new());
}

async fn multipart_upload_round_trips(b: &Backend) {
    // 20 MiB in 1 MiB chunks: several 8 MiB parts plus a short last part on S3.
    let key = "nar/big.nar.zst";
    let data = pseudo_random(20 * MIB, 42);
    let mut upload = b.storage.begin_upload(key).await.unwrap();
    for chunk in data.chunks(MIB) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert!(b.storage.size(key).await.unwrap().is_none(), "visible before commit");
    assert_eq!(upload.commit().await.unwrap(), data.len() as u64);
    assert_eq!(b.storage.size(key).await.unwrap(), Some(data.len() as u64));
    assert_same(&get_all(b, key).await.unwrap(), &data, key);

    // Odd write sizes: one write larger than a part, tiny writes, exactly a part.
    let key = "nar/odd.nar";
    let data = pseudo_random(17 * MIB + 3 * MIB + 8 * MIB + 5, 7);
    let (a, rest) = data.split_at(17 * MIB);
    let (c, rest) = rest.split_at(3 * MIB);
    let (d, e) = rest.split_at(8 * MIB);
    assert_eq!(upload_chunks(b, key, &[a, &c[..1], &c[1..], d, e]).await, data.len() as u64);
    assert_same(&get_all(b, key).await.unwrap(), &data, key);
    assert_eq!(b.leftovers().await.len(), 2, "only the two objects remain");
}

async fn range_reads(b: &Backend) {
    for (key, len) in [("nar/ranged-small.nar", 1000usize), ("nar/ranged-big.nar", 9 * MIB + 17)] {
        let data = pseudo_random(len, len as u64);
        upload_chunks(b, key, &[&data]).await;
        let last = len as u64 - 1;
        let mid = len as u64 / 2;
        for (start, end) in [(0, 0), (mid - 10, mid + 10), (last, last), (0, last), (1, last)] {
            let object = b.storage.get(key, Some(ByteRange { start, end })).await.unwrap().unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(object.total_size, len as u64, "total_size for range {start}-{end}");
            let got = read_all(object).await;
            assert_same(&got, &data[start as usize..=end as usize], &format!("{key} bytes {start}-{end}"));
        }
    }
}

async fn missing_objects(b: &Backend) {
    assert_eq!(b.storage.size("nar/missing.nar").await.unwrap(), None);
    assert!(b.storage.get("nar/missing.nar", None).await.unwrap().is_none());
    let range = ByteRange { start: 0, end: 10 };
    assert!(b.storage.get("nar/missing.nar", Some(range)).await.unwrap().is_none());
    assert!(b.storage.get("log/3/missing.drv", None).await.unwrap().is_none());
}

async fn delete_is_idempotent(b: &Backend) {
    let key = "ls/abc.ls";
    b.storage.put_bytes(key, Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(b.storage.size(key).await.unwrap(), Some(2));
    b.storage.delete(key).await.unwrap();
    assert!(b.storage.get(key, None).await.unwrap().is_none());
    b.storage.delete(key).await.unwrap();
    b.storage.delete("nar/never-existed.nar").await.unwrap();
    assert_eq!(b.storage.size(key).await.unwrap(), None);
}

async fn second_commit_replaces_object(b: &Backend) {
    let key = "nar/replaced.nar";
    let first = pseudo_random(10_000, 1);
    let second = pseudo_random(9 * MIB, 2); // multipart on S3
    upload_chunks(b, key, &[&first]).await;

    let mut replacement = b.storage.begin_upload(key).await.unwrap();
    for chunk in second.chunks(MIB) {
        replacement.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // Until the second commit, readers still see the first object, whole.
    assert_same(&get_all(b, key).await.unwrap(), &first, "object before replacement");
    replacement.commit().await.unwrap();
    assert_same(&get_all(b, key).await.unwrap(), &second, "object after replacement");
    assert_eq!(b.storage.size(key).await.unwrap(), Some(second.len() as u64));

    // And back to a small one (single PutObject on S3).
    upload_chunks(b, key, &[b"third"]).await;
    assert_eq!(get_all(b, key).await.unwrap(), b"third");
    assert_eq!(b.leftovers().await, vec![key.to_owned()]);
}

async fn small_and_empty_objects(b: &Backend) {
    b.storage.put_bytes("log/3/xyz.drv", Bytes::from_static(b"build log")).await.unwrap();
    assert_eq!(get_all(b, "log/3/xyz.drv").await.unwrap(), b"build log");

    assert_eq!(upload_chunks(b, "nar/empty.nar", &[]).await, 0);
    assert_eq!(b.storage.size("nar/empty.nar").await.unwrap(), Some(0));
    assert_eq!(get_all(b, "nar/empty.nar").await.unwrap(), b"");
}

async fn health_check_passes(b: &Backend) {
    b.storage.health_check().await.unwrap();
    if b.is_fs() {
        assert_eq!(b.leftovers().await, Vec::<String>::new(), "probe file left behind");
    }
}

// ---------------------------------------------------------------------------------------
// Filesystem only

#[tokio::test]
async fn fs_rejects_escaping_keys() {
    let backend = fs_backend().await;
    let outcome = AssertUnwindSafe(rejects_escaping_keys(&backend)).catch_unwind().await;
    finish(backend, outcome).await;
}

async fn rejects_escaping_keys(b: &Backend) {
    for key in ["../x", "nar/../../x", "/etc/passwd", "nar//x", "nar\\x", "", ".tmp/x"] {
        assert!(b.storage.begin_upload(key).await.is_err(), "begin_upload {key:?}");
        assert!(b.storage.get(key, None).await.is_err(), "get {key:?}");
        assert!(b.storage.size(key).await.is_err(), "size {key:?}");
        assert!(b.storage.delete(key).await.is_err(), "delete {key:?}");
    }
    assert_eq!(b.leftovers().await, Vec::<String>::new());
}

/// Sends `data` as part `number` of an assembly; returns it as stored.
async fn send_part(b: &Backend, key: &str, assembly: &str, number: u32, data: &[u8]) -> StoredPart {
    let mut part = b.storage.begin_part(key, assembly, number).await.unwrap();
    for chunk in data.chunks(MIB) {
        part.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    StoredPart { number, tag: part.commit().await.unwrap() }
}

async fn assemblies_join_parts_sent_in_any_order(b: &Backend) {
    let key = "nar/assembled.nar";
    let data = pseudo_random(12 * MIB + 17, 3);
    let pieces: Vec<&[u8]> = data.chunks(5 * MIB).collect();
    let assembly = b.storage.begin_parts(key).await.unwrap();
    // 3, then a wrong 1, then 2, then 1 again (the re-sent part replaces the first copy).
    let third = send_part(b, key, &assembly, 3, pieces[2]).await;
    send_part(b, key, &assembly, 1, &pseudo_random(5 * MIB, 99)).await;
    let second = send_part(b, key, &assembly, 2, pieces[1]).await;
    // A part cut short (aborted) leaves the copy before it.
    let mut cut = b.storage.begin_part(key, &assembly, 2).await.unwrap();
    cut.write(Bytes::from_static(b"half")).await.unwrap();
    cut.abort().await.unwrap();
    let first = send_part(b, key, &assembly, 1, pieces[0]).await;
    assert!(b.storage.size(key).await.unwrap().is_none(), "visible before completion");
    b.storage.complete_parts(key, &assembly, &[first, second, third]).await.unwrap();
    assert_same(&get_all(b, key).await.unwrap(), &data, key);
    assert_eq!(b.leftovers().await, vec![key.to_owned()], "only the object remains");

    // One part alone is the whole object.
    let key = "nar/one-part.nar";
    let data = pseudo_random(MIB + 1, 4);
    let assembly = b.storage.begin_parts(key).await.unwrap();
    let only = send_part(b, key, &assembly, 1, &data).await;
    b.storage.complete_parts(key, &assembly, &[only]).await.unwrap();
    assert_same(&get_all(b, key).await.unwrap(), &data, key);
    assert_eq!(b.leftovers().await.len(), 2);
}

async fn aborted_assemblies_and_parts_leave_nothing(b: &Backend) {
    let key = "nar/abandoned.nar";
    let assembly = b.storage.begin_parts(key).await.unwrap();
    send_part(b, key, &assembly, 1, &pseudo_random(5 * MIB, 5)).await;
    send_part(b, key, &assembly, 2, b"tail").await;
    // A dropped part upload leaves nothing of itself.
    let mut dropped = b.storage.begin_part(key, &assembly, 3).await.unwrap();
    dropped.write(Bytes::from_static(b"dropped")).await.unwrap();
    drop(dropped);
    assert!(!b.leftovers().await.is_empty() || b.is_fs(), "S3 holds the multipart upload");
    b.storage.abort_parts(key, &assembly).await.unwrap();
    b.storage.abort_parts(key, &assembly).await.unwrap();
    assert_eq!(b.leftovers().await, Vec::<String>::new(), "abort leaves nothing");
    assert!(b.storage.size(key).await.unwrap().is_none());

    // An assembly nobody completes or aborts is swept once older than its age.
    let assembly = b.storage.begin_parts(key).await.unwrap();
    send_part(b, key, &assembly, 1, b"forgotten").await;
    assert_eq!(b.storage.remove_stale_uploads(Duration::ZERO, Duration::from_secs(3600)).await.unwrap(), 0, "young assemblies stay");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.storage.remove_stale_uploads(Duration::ZERO, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(b.leftovers().await, Vec::<String>::new());
}
