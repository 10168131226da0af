//! `larder push`: a closure to a cache, asking once which paths it lacks, then the NARs
//! in parallel over the binary cache protocol. Each NAR streams from `nix-store --dump` through zstd into a temporary file
//! (its hash names it in the URL), then up; a path's narinfo is sent only once every path
//! it references is in the cache, so the server can publish it at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use async_compression::tokio::write::ZstdEncoder;
use larder_protocol::compression::Compression;
use larder_protocol::hash::{Sha256Hash, Sha256Hasher};
use larder_protocol::narinfo::NarInfo;
use larder_protocol::signing::{SecretKey, Signature};
use larder_protocol::store_path::StorePath;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Client;

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

/// A NAR uploaded, waiting for its narinfo.
struct Uploaded {
    file_hash: Sha256Hash,
    file_size: u64,
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
    let info: larder_api_types::CacheInfo = client.get(&format!("/caches/{cache}")).await?;
    let paths = if options.closure {
        nix(&["nix-store", "-qR"], &paths).await?.lines().map(str::to_owned).collect::<BTreeSet<_>>().into_iter().collect()
    } else {
        paths
    };
    let infos = path_infos(&paths).await?;
    let (upstream, ours) = split_upstream(infos, &options.upstream_keys);
    let jobs = options.jobs.max(1);
    let missing = missing_of(client, cache, ours).await?;
    let already = paths.len() - upstream.len() - missing.len();

    // The NARs, `jobs` at a time.
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut uploads = tokio::task::JoinSet::new();
    for (i, path) in missing.iter().enumerate() {
        let (client, semaphore, substituter, path) = (client.clone(), semaphore.clone(), info.substituter.clone(), path.path.to_absolute());
        uploads.spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            upload_nar(&client, &substituter, &path).await.map(|uploaded| (i, uploaded))
        });
    }
    let mut uploaded: BTreeMap<usize, Uploaded> = BTreeMap::new();
    while let Some(result) = uploads.join_next().await {
        let (i, nar) = result??;
        uploaded.insert(i, nar);
    }

    // The narinfos, references first.
    let mut bytes = 0;
    for i in references_first(&missing) {
        let path = &missing[i];
        let nar = &uploaded[&i];
        bytes += nar.file_size;
        let mut narinfo = NarInfo {
            store_path: path.path.clone(),
            url: larder_protocol::compression::nar_url(&nar.file_hash, Compression::Zstd),
            compression: Compression::Zstd,
            file_hash: Some(nar.file_hash),
            file_size: Some(nar.file_size),
            nar_hash: path.nar_hash,
            nar_size: path.nar_size,
            references: path.references.clone(),
            deriver: path.deriver.clone(),
            system: None,
            sigs: path.signatures.clone(),
            ca: path.ca.clone(),
        };
        if let Some(key) = &options.signing_key {
            narinfo.sign(key);
        }
        client
            .put_text(&format!("{}/{}.narinfo", info.substituter, path.path.hash()), "text/x-nix-narinfo", narinfo.render())
            .await
            .with_context(|| format!("publishing {}", path.path.to_absolute()))?;
        println!("pushed {}", path.path.to_absolute());
    }
    println!(
        "{} pushed ({:.1} MiB), {already} already in {cache}, {} on an upstream cache; {:.1} s",
        missing.len(),
        bytes as f64 / (1024.0 * 1024.0),
        upstream.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The paths the cache lacks: one question per 10,000 paths.
async fn missing_of(client: &Client, cache: &str, paths: Vec<PathInfo>) -> anyhow::Result<Vec<PathInfo>> {
    let mut missing = BTreeSet::new();
    for chunk in paths.chunks(10_000) {
        let query = larder_api_types::MissingPathsQuery { store_paths: chunk.iter().map(|p| p.path.to_absolute()).collect() };
        let answer: larder_api_types::MissingPaths = client.post(&format!("/caches/{cache}/missing-paths"), &query).await?;
        missing.extend(answer.missing);
    }
    Ok(paths.into_iter().filter(|p| missing.contains(&p.path.to_absolute())).collect())
}

/// Dumps, compresses and uploads one NAR; a temporary file holds the compressed NAR
/// (its hash is the URL), never memory.
async fn upload_nar(client: &Client, substituter: &str, path: &str) -> anyhow::Result<Uploaded> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("nar.zst");
    compress_nar(path, &file).await?;
    let (file_hash, file_size) = hash_file(&file).await?;
    let url = format!("{substituter}/{}", larder_protocol::compression::nar_url(&file_hash, Compression::Zstd));
    client.put_file(&url, "application/x-nix-nar", &file, file_size).await.with_context(|| format!("uploading the NAR of {path}"))?;
    Ok(Uploaded { file_hash, file_size })
}

async fn compress_nar(path: &str, into: &PathBuf) -> anyhow::Result<()> {
    let mut dump = tokio::process::Command::new("nix-store")
        .args(["--dump", path])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running nix-store --dump")?;
    let mut stdout = dump.stdout.take().expect("piped");
    // Buffered: each write to a tokio File is a hop to a blocking thread.
    let file = tokio::io::BufWriter::with_capacity(1024 * 1024, tokio::fs::File::create(into).await?);
    let mut encoder = ZstdEncoder::new(file);
    tokio::io::copy(&mut stdout, &mut encoder).await?;
    encoder.shutdown().await?;
    let output = dump.wait_with_output().await?;
    if !output.status.success() {
        bail!("nix-store --dump {path} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

async fn hash_file(file: &Path) -> anyhow::Result<(Sha256Hash, u64)> {
    let mut reader = tokio::fs::File::open(file).await?;
    let mut hasher = Sha256Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hasher.finish(), size))
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
