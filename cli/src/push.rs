//! `larder push`: a closure to a cache, asking once which paths it lacks, then the NARs,
//! several at once. Each NAR is serialised from the store's files (through zstd when the
//! cache stores zstd) into a temporary file; a large one goes through an upload session in
//! parts, each retried on its own after a dropped connection or a server restart, a small
//! one in one PUT as nix sends it. A path is completed (or its narinfo sent) only once every
//! path it references is, so the server can publish it at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use larder_api_types as api;
use larder_protocol::compression::Compression;
use larder_protocol::hash::{Sha256Hash, Sha256Hasher};
use larder_protocol::narinfo::NarInfo;
use larder_protocol::signing::{SecretKey, Signature};
use larder_protocol::store_path::StorePath;
use tokio::sync::watch;

use crate::client::{is_transient, Client};
use crate::progress::Progress;

/// How to push: the flags `push` and `watch-store` share.
#[derive(clap::Args)]
pub struct PushFlags {
    /// NARs uploaded at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Push paths signed by an upstream cache too.
    #[arg(long)]
    no_filter_upstream: bool,
    /// Key names of upstream caches whose paths are not pushed.
    #[arg(long = "upstream", default_value = "cache.nixos.org-1")]
    upstream_keys: Vec<String>,
    /// Sign each path with this secret key (`nix key generate-secret`), as a cache with
    /// client-held keys needs; else LARDER_SIGNING_KEY.
    #[arg(long, env = "LARDER_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
}

impl PushFlags {
    /// The options they stand for, the signing key read (`closure`: push closures).
    pub fn options(self, closure: bool) -> anyhow::Result<PushOptions> {
        let signing_key = match self.signing_key {
            Some(file) => {
                let text = std::fs::read_to_string(&file).with_context(|| format!("reading the signing key {}", file.display()))?;
                Some(SecretKey::parse(text.trim()).with_context(|| format!("{} is not a nix secret key", file.display()))?)
            }
            None => None,
        };
        let upstream_keys = if self.no_filter_upstream { Vec::new() } else { self.upstream_keys };
        Ok(PushOptions { closure, jobs: self.jobs, upstream_keys, signing_key })
    }
}

#[derive(Clone)]
pub struct PushOptions {
    pub closure: bool,
    pub jobs: usize,
    /// Key names whose signature marks a path as available upstream (not pushed).
    pub upstream_keys: Vec<String>,
    pub signing_key: Option<SecretKey>,
}

/// What `nix path-info --json` says of a path.
#[derive(Clone, Debug)]
struct PathInfo {
    path: StorePath,
    nar_hash: Sha256Hash,
    nar_size: u64,
    references: Vec<StorePath>,
    deriver: Option<StorePath>,
    signatures: Vec<Signature>,
    ca: Option<String>,
}

/// The store paths to push: the arguments, or one per line on stdin; `./result`
/// symlinks and paths inside a store path name the store path.
pub fn store_paths(args: Vec<String>) -> anyhow::Result<Vec<String>> {
    let given = if args.is_empty() {
        use std::io::BufRead;
        std::io::stdin()
            .lock()
            .lines()
            .map(|l| l.map(|l| l.trim().to_owned()))
            .filter(|l| !matches!(l, Ok(l) if l.is_empty()))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        args
    };
    if given.is_empty() {
        bail!("no paths to push: name store paths (or ./result), or pipe them in (nix-build | larder push CACHE)");
    }
    given.iter().map(|p| top_level_store_path(Path::new(p))).collect()
}

fn top_level_store_path(path: &Path) -> anyhow::Result<String> {
    let resolved = std::fs::canonicalize(path).with_context(|| format!("{} does not exist", path.display()))?;
    let mut parts = resolved.components();
    let (root, nix, store, name) = (parts.next(), parts.next(), parts.next(), parts.next());
    match (root, nix, store, name) {
        (Some(_), Some(n), Some(s), Some(name)) if n.as_os_str() == "nix" && s.as_os_str() == "store" => {
            Ok(format!("/nix/store/{}", name.as_os_str().to_string_lossy()))
        }
        _ => bail!("{} is not in /nix/store", path.display()),
    }
}

async fn nix(args: &[&str], paths: &[String]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(args[0])
        .args(&args[1..])
        .args(paths)
        .output()
        .await
        .with_context(|| format!("running {} (is nix installed?)", args[0]))?;
    if !output.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// `nix path-info --json`, in either of its shapes (a list before nix 2.19, an object
/// keyed by path after).
async fn path_infos(paths: &[String]) -> anyhow::Result<Vec<PathInfo>> {
    let json = nix(&["nix", "--extra-experimental-features", "nix-command", "path-info", "--json"], paths).await?;
    let value: serde_json::Value = serde_json::from_str(&json).context("reading nix path-info --json")?;
    let entries: Vec<(String, serde_json::Value)> = match value {
        serde_json::Value::Array(items) => items.into_iter().map(|i| (i["path"].as_str().unwrap_or_default().to_owned(), i)).collect(),
        serde_json::Value::Object(map) => map.into_iter().collect(),
        _ => bail!("nix path-info --json printed neither a list nor an object"),
    };
    entries
        .into_iter()
        .map(|(path, info)| {
            let text = |key: &str| info[key].as_str().map(str::to_owned);
            let store_paths = |key: &str| -> anyhow::Result<Vec<StorePath>> {
                info[key].as_array().map(Vec::as_slice).unwrap_or_default().iter().filter_map(|v| v.as_str()).map(parse_path).collect()
            };
            Ok(PathInfo {
                path: parse_path(&path)?,
                nar_hash: Sha256Hash::parse_typed(&text("narHash").context("path-info without narHash")?)?,
                nar_size: info["narSize"].as_u64().context("path-info without narSize")?,
                references: store_paths("references")?,
                deriver: text("deriver").map(|d| parse_path(&d)).transpose()?,
                signatures: signatures_of(&info),
                ca: text("ca"),
            })
        })
        .collect()
}

fn parse_path(path: &str) -> anyhow::Result<StorePath> {
    if path.contains('/') {
        Ok(StorePath::parse(path)?)
    } else {
        Ok(StorePath::from_base_name(path)?)
    }
}

fn signatures_of(info: &serde_json::Value) -> Vec<Signature> {
    info["signatures"].as_array().map(Vec::as_slice).unwrap_or_default().iter().filter_map(|s| Signature::parse(s.as_str()?).ok()).collect()
}

/// Splits off the paths an upstream cache has (signed by one of `upstream_keys`) that no
/// path to push refers to. Larder publishes a path only with every path it references, so
/// an upstream path that a pushed path needs is pushed too.
fn split_upstream(infos: Vec<PathInfo>, upstream_keys: &[String]) -> (Vec<PathInfo>, Vec<PathInfo>) {
    let is_upstream = |p: &PathInfo| p.signatures.iter().any(|s| upstream_keys.iter().any(|k| k == s.key_name()));
    let index: BTreeMap<String, usize> = infos.iter().enumerate().map(|(i, p)| (p.path.hash().as_str().to_owned(), i)).collect();
    let mut needed: Vec<bool> = infos.iter().map(|p| !is_upstream(p)).collect();
    let mut frontier: Vec<usize> = (0..infos.len()).filter(|&i| needed[i]).collect();
    while let Some(i) = frontier.pop() {
        for reference in &infos[i].references {
            if let Some(&j) = index.get(reference.hash().as_str()) {
                if !needed[j] {
                    needed[j] = true;
                    frontier.push(j);
                }
            }
        }
    }
    let (ours, upstream): (Vec<_>, Vec<_>) = infos.into_iter().zip(needed).partition(|(_, needed)| *needed);
    (upstream.into_iter().map(|(p, _)| p).collect(), ours.into_iter().map(|(p, _)| p).collect())
}

/// Paths in an order where every path comes after the paths it references.
fn references_first(infos: &[PathInfo]) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = infos.iter().enumerate().map(|(i, p)| (p.path.hash().as_str(), i)).collect();
    let mut order = Vec::with_capacity(infos.len());
    let mut done = vec![false; infos.len()];
    fn visit(i: usize, infos: &[PathInfo], index: &BTreeMap<&str, usize>, done: &mut [bool], order: &mut Vec<usize>) {
        if done[i] {
            return;
        }
        done[i] = true;
        for reference in &infos[i].references {
            if let Some(&j) = index.get(reference.hash().as_str()) {
                if j != i {
                    visit(j, infos, index, done, order);
                }
            }
        }
        order.push(i);
    }
    for i in 0..infos.len() {
        visit(i, infos, &index, &mut done, &mut order);
    }
    order
}

pub async fn push(client: &Client, cache: &str, paths: Vec<String>, options: PushOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let info: api::CacheInfo = client.get(&format!("/caches/{cache}")).await?;
    let paths = if options.closure {
        nix(&["nix-store", "-qR"], &paths).await?.lines().map(str::to_owned).collect::<BTreeSet<_>>().into_iter().collect()
    } else {
        paths
    };
    let infos = path_infos(&paths).await?;
    let (upstream, ours) = split_upstream(infos, &options.upstream_keys);
    let missing = missing_of(client, cache, ours).await?;
    let already = paths.len() - upstream.len() - missing.len();
    let progress = Progress::new(missing.len() as u64);

    // Each path: its NAR dumped, compressed and sent in parts, `jobs` at a time (in an
    // order where references come first), then completed once the paths it references
    // are, since the server publishes a path only with all of them.
    let order = references_first(&missing);
    let missing: Vec<Arc<PathInfo>> = missing.into_iter().map(Arc::new).collect();
    let mut published: HashMap<String, watch::Receiver<Option<bool>>> = HashMap::new();
    let mut senders = Vec::with_capacity(missing.len());
    for path in &missing {
        let (sender, receiver) = watch::channel(None);
        published.insert(path.path.hash().as_str().to_owned(), receiver);
        senders.push(Some(sender));
    }
    let pusher = Arc::new(Pusher {
        client: client.clone(),
        cache: cache.to_owned(),
        wire: info.compression,
        substituter: info.substituter.clone(),
        store_dir: crate::nixstore::real_store_dir().await?,
        signing_key: options.signing_key,
        permits: tokio::sync::Semaphore::new(options.jobs.max(1)),
        progress,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in order {
        let path = Arc::clone(&missing[i]);
        let done = senders[i].take().expect("each path is pushed once");
        let references: Vec<watch::Receiver<Option<bool>>> =
            path.references.iter().filter(|r| *r != &path.path).filter_map(|r| published.get(r.hash().as_str()).cloned()).collect();
        let pusher = Arc::clone(&pusher);
        tasks.spawn(async move {
            let result = pusher.push_one(&path, references).await;
            done.send_replace(Some(result.is_ok()));
            result.with_context(|| format!("pushing {}", path.path.to_absolute()))
        });
    }
    let (mut pushed, mut bytes, mut failures) = (0usize, 0u64, Vec::new());
    while let Some(result) = tasks.join_next().await {
        match result? {
            Ok(sent) => {
                pushed += 1;
                bytes += sent;
            }
            Err(error) => failures.push(error),
        }
    }
    pusher.progress.finish();
    println!(
        "{pushed} pushed ({:.1} MiB sent), {already} already in {cache}, {} on an upstream cache; {:.1} s",
        bytes as f64 / (1024.0 * 1024.0),
        upstream.len(),
        started.elapsed().as_secs_f64()
    );
    match failures.len() {
        0 => Ok(()),
        n => {
            // The first cause in full; the ones that only waited on it are noise.
            let first = failures.into_iter().min_by_key(|e| format!("{e:#}").contains("was not pushed")).expect("n > 0");
            Err(first.context(format!("{n} path(s) not pushed")))
        }
    }
}

/// What every path's push shares.
struct Pusher {
    client: Client,
    cache: String,
    wire: api::NarEncoding,
    /// The cache's binary-cache URL, for small NARs (see [`SMALL_NAR`]).
    substituter: String,
    /// Where the store's files are (a chroot store's are not in /nix/store).
    store_dir: PathBuf,
    signing_key: Option<SecretKey>,
    /// Paths whose NARs are being prepared or sent at once (`--jobs`).
    permits: tokio::sync::Semaphore,
    progress: Progress,
}

/// NARs up to this size (uncompressed) go over the binary cache protocol, larger ones
/// through upload sessions (parts, resumable).
const SMALL_NAR: u64 = 4 << 20;

/// What a path's narinfo says before its NAR is stored: no URL, file hash or signature.
fn unsigned_narinfo(path: &PathInfo) -> NarInfo {
    NarInfo {
        store_path: path.path.clone(),
        url: String::new(),
        compression: Compression::None,
        file_hash: None,
        file_size: None,
        nar_hash: path.nar_hash,
        nar_size: path.nar_size,
        references: path.references.clone(),
        deriver: path.deriver.clone(),
        system: None,
        sigs: Vec::new(),
        ca: path.ca.clone(),
    }
}

/// Waits until every reference pushed alongside is published.
async fn wait_for(references: Vec<watch::Receiver<Option<bool>>>, name: &str) -> anyhow::Result<()> {
    for mut reference in references {
        let ok = *reference.wait_for(Option::is_some).await.map_err(|_| anyhow::anyhow!("a reference's push ended early"))?;
        if ok != Some(true) {
            bail!("{name} was not pushed: a path it references could not be pushed");
        }
    }
    Ok(())
}

/// How long an operation is tried again after transient failures (the server restarting,
/// a dropped connection) before the push gives up on it.
const RETRY_FOR: Duration = Duration::from_secs(120);

impl Pusher {
    /// Sends one path's NAR and publishes it; returns the bytes sent.
    async fn push_one(&self, path: &PathInfo, references: Vec<watch::Receiver<Option<bool>>>) -> anyhow::Result<u64> {
        if path.nar_size <= SMALL_NAR {
            return self.push_small(path, references).await;
        }
        let permit = self.permits.acquire().await?;
        let name = path.path.to_absolute();
        let request = self.new_upload(path);
        let uploads = format!("/caches/{}/uploads", self.cache);
        let open =
            retrying(&format!("opening the upload of {name}"), || self.client.post_long::<api::UploadAnswer>(&uploads, &request)).await?;
        let session = match open {
            api::UploadAnswer::Present { .. } => {
                self.progress.path_done(&name);
                return Ok(0);
            }
            api::UploadAnswer::Open(session) => session,
        };
        let sent = self.send_parts(path, &session).await?;
        drop(permit);
        wait_for(references, &name).await?;
        let complete = format!("/caches/{}/uploads/{}/complete", self.cache, session.id);
        let completed =
            retrying(&format!("completing the upload of {name}"), || self.client.post_long::<api::CompletedUpload>(&complete, &())).await;
        if let Err(error) = completed {
            // A completion whose answer was lost (the server went away just after publishing)
            // ended the session, so its retry finds none: the path is in the cache then.
            let present = matches!(self.client.post_long(&uploads, &request).await, Ok(api::UploadAnswer::Present { .. }));
            if !present {
                return Err(error);
            }
        }
        self.progress.path_done(&name);
        Ok(sent)
    }

    /// A small NAR over the binary cache protocol, as nix pushes: one PUT of the NAR, then
    /// the narinfo once the references are in. Half the requests and none of a session's
    /// bookkeeping, where resuming parts buys nothing.
    async fn push_small(&self, path: &PathInfo, references: Vec<watch::Receiver<Option<bool>>>) -> anyhow::Result<u64> {
        let permit = self.permits.acquire().await?;
        let name = path.path.to_absolute();
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("nar");
        let (file_hash, file_size) = dump_nar(self.store_dir.join(path.path.base_name()), file.clone(), self.wire).await?;
        let compression = match self.wire {
            api::NarEncoding::Zstd => Compression::Zstd,
            api::NarEncoding::None => Compression::None,
        };
        let nar_url = larder_protocol::compression::nar_url(&file_hash, compression);
        let put = format!("{}/{nar_url}", self.substituter);
        retrying(&format!("sending the NAR of {name}"), || self.client.put_file(&put, "application/x-nix-nar", &file, file_size)).await?;
        self.progress.sent(file_size);
        drop(dir);
        drop(permit);
        wait_for(references, &name).await?;
        let narinfo = NarInfo {
            url: nar_url,
            compression,
            file_hash: Some(file_hash),
            file_size: Some(file_size),
            sigs: self.signatures(path),
            ..unsigned_narinfo(path)
        };
        let text = narinfo.render();
        let put = format!("{}/{}.narinfo", self.substituter, path.path.hash());
        retrying(&format!("publishing {name}"), || self.client.put_text(&put, "text/x-nix-narinfo", text.clone())).await?;
        self.progress.path_done(&name);
        Ok(file_size)
    }

    /// The path's own signatures, and this push's when it signs.
    fn signatures(&self, path: &PathInfo) -> Vec<Signature> {
        let mut signatures = path.signatures.clone();
        if let Some(key) = &self.signing_key {
            let mut narinfo = unsigned_narinfo(path);
            narinfo.sign(key);
            signatures.extend(narinfo.sigs);
        }
        signatures
    }

    fn new_upload(&self, path: &PathInfo) -> api::NewUpload {
        let signatures = self.signatures(path);
        api::NewUpload {
            store_path: path.path.to_absolute(),
            nar_hash: path.nar_hash.to_typed_nix32(),
            nar_size: path.nar_size,
            references: path.references.iter().map(StorePath::to_absolute).collect(),
            deriver: path.deriver.as_ref().map(StorePath::to_absolute),
            ca: path.ca.clone(),
            signatures: signatures.iter().map(Signature::to_nix_string).collect(),
            wire_compression: Some(self.wire),
            part_size: None,
        }
    }

    /// Dumps the NAR (compressed as the cache stores it) into a temporary file and sends
    /// the parts the session lacks; returns the bytes sent.
    async fn send_parts(&self, path: &PathInfo, session: &api::UploadSession) -> anyhow::Result<u64> {
        let name = path.path.to_absolute();
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("nar");
        let (_, size) = dump_nar(self.store_dir.join(path.path.base_name()), file.clone(), self.wire).await?;
        let part_size = session.part_size.max(1);
        let mut sent = 0;
        for number in 1..=size.div_ceil(part_size) {
            let offset = (number - 1) * part_size;
            let length = part_size.min(size - offset);
            let number = u32::try_from(number).context("NAR too large for its part size")?;
            if session.parts.iter().any(|p| p.number == number && p.size == length) {
                continue; // held already: a session picked up again
            }
            let url = format!("/caches/{}/uploads/{}/parts/{number}", self.cache, session.id);
            retrying(&format!("sending part {number} of {name}"), || self.client.put_part(&url, &file, offset, length)).await?;
            sent += length;
            self.progress.sent(length);
        }
        Ok(sent)
    }
}

/// Runs `operation` until it succeeds, fails for good, or has failed transiently for
/// [`RETRY_FOR`], waiting longer after each failure (up to 10 s).
async fn retrying<T, F, Fut>(what: &str, mut operation: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    let mut wait = Duration::from_millis(250);
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(&error) && started.elapsed() < RETRY_FOR => {
                eprintln!("{what}: {error:#}; trying again in {:.1} s", wait.as_secs_f64());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(error) => return Err(error.context(what.to_owned())),
        }
    }
}

/// The paths the cache lacks: one question per 10,000 paths.
async fn missing_of(client: &Client, cache: &str, paths: Vec<PathInfo>) -> anyhow::Result<Vec<PathInfo>> {
    let mut missing = BTreeSet::new();
    let url = format!("/caches/{cache}/missing-paths");
    for chunk in paths.chunks(10_000) {
        let query = api::MissingPathsQuery { store_paths: chunk.iter().map(|p| p.path.to_absolute()).collect() };
        let answer: api::MissingPaths = retrying("asking which paths the cache lacks", || client.post(&url, &query)).await?;
        missing.extend(answer.missing);
    }
    Ok(paths.into_iter().filter(|p| missing.contains(&p.path.to_absolute())).collect())
}

/// The NAR of the store path whose files are at `real` into `into`, zstd-compressed or
/// not as `wire` says; returns the file's hash and size. On a blocking thread, since it is
/// file IO and compression.
async fn dump_nar(real: PathBuf, into: PathBuf, wire: api::NarEncoding) -> anyhow::Result<(Sha256Hash, u64)> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<(Sha256Hash, u64)> {
        let file = std::io::BufWriter::with_capacity(1024 * 1024, std::fs::File::create(&into)?);
        let mut file = HashingWriter { inner: file, hasher: Sha256Hasher::new(), written: 0 };
        let failed = || format!("reading {} to push it", real.display());
        match wire {
            api::NarEncoding::Zstd => {
                // Level 0 is zstd's default (3), which nix uses too.
                let mut encoder = zstd::stream::write::Encoder::new(&mut file, 0)?;
                crate::nar_dump::dump(&real, &mut encoder).with_context(failed)?;
                encoder.finish()?;
            }
            api::NarEncoding::None => crate::nar_dump::dump(&real, &mut file).with_context(failed)?,
        }
        file.inner.flush()?;
        Ok((file.hasher.finish(), file.written))
    })
    .await?
}

/// Hashes and counts what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, references: &[&str]) -> PathInfo {
        let path = |n: &str| StorePath::from_base_name(&format!("{}-{n}", n.repeat(32).chars().take(32).collect::<String>())).unwrap();
        PathInfo {
            path: path(name),
            nar_hash: Sha256Hash::digest(name.as_bytes()),
            nar_size: 1,
            references: references.iter().map(|r| path(r)).collect(),
            deriver: None,
            signatures: Vec::new(),
            ca: None,
        }
    }

    #[test]
    fn upstream_paths_a_pushed_path_needs_are_pushed() {
        let key = SecretKey::generate("upstream-1").unwrap();
        let signed = |mut p: PathInfo| {
            p.signatures.push(key.sign(b"x"));
            p
        };
        // c (ours) → b (upstream) → a (upstream); d (upstream) is needed by nothing.
        let infos = vec![info("c", &["b"]), signed(info("b", &["a"])), signed(info("a", &[])), signed(info("d", &[]))];
        let (skipped, pushed) = split_upstream(infos, &["upstream-1".to_owned()]);
        let names = |v: &[PathInfo]| v.iter().map(|p| p.path.base_name()[33..].to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&skipped), ["d"]);
        assert_eq!(names(&pushed), ["c", "b", "a"]);
    }

    #[test]
    fn references_come_first() {
        // c → b → a, c → a, and b refers to itself.
        let infos = vec![info("c", &["b", "a"]), info("b", &["a", "b"]), info("a", &[])];
        let order: Vec<String> = references_first(&infos).into_iter().map(|i| infos[i].path.base_name()).collect();
        let position = |n: &str| order.iter().position(|b| b.ends_with(&format!("-{n}"))).unwrap();
        assert!(position("a") < position("b") && position("b") < position("c"), "{order:?}");
        assert_eq!(order.len(), 3);
    }
}
