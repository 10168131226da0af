//! `larder watch-store` and `larder post-build-hook`: pushing what the machine builds,
//! without the builds waiting for the network.
//!
//! The hook only appends its build's outputs to the cache's local queue (see queue.rs) and
//! returns: nix runs it synchronously, so anything slower, or anything that fails when the
//! server is down, would hold up or stop builds. `watch-store` is the one drainer: it pushes
//! what the queue holds at start and whatever arrives in it, and it watches the store
//! directory itself (nix removes `<path>.lock` once it has registered `<path>` as valid), so
//! paths from builds, `nix-store --add` and substitution are pushed with no hook at all.
//! What it sees appear goes to the queue first, so killing it loses nothing either.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use larder_protocol::store_path::StorePath;
use notify::Watcher;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::queue::{queue_dir, Entry, Queue};
use crate::{nixstore, push};

/// After the first new path, how long to wait for the rest (a build's other outputs, the
/// next derivation of the same build) before pushing them together.
const BATCH_WINDOW: Duration = Duration::from_secs(1);
/// A batch is pushed at once when it has this many paths.
const MAX_BATCH: usize = 500;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How often the queue is read even when no file event said it changed.
const RESCAN: Duration = Duration::from_secs(30);
/// `--once` gives up (and says so, exiting 1) after this many failed attempts.
const ONCE_ATTEMPTS: u32 = 4;

#[derive(clap::Args)]
pub struct WatchStoreArgs {
    /// The cache to push to.
    cache: String,
    /// The queue `post-build-hook` fills (else LARDER_QUEUE_DIR, else
    /// $XDG_STATE_HOME/larder/queue/CACHE).
    #[arg(long, env = "LARDER_QUEUE_DIR")]
    queue_dir: Option<PathBuf>,
    /// Push what the queue holds, then exit, without watching the store.
    #[arg(long)]
    once: bool,
    /// How to push, as for `larder push` (always with closures).
    #[command(flatten)]
    push: push::PushFlags,
}

#[derive(clap::Args)]
pub struct PostBuildHookArgs {
    /// The cache `watch-store` will push the outputs to.
    cache: String,
    /// Where to queue (else LARDER_QUEUE_DIR, else $XDG_STATE_HOME/larder/queue/CACHE); the
    /// same directory `watch-store` drains.
    #[arg(long, env = "LARDER_QUEUE_DIR")]
    queue_dir: Option<PathBuf>,
}

/// Queues nix's `$OUT_PATHS`; touches neither nix nor the network, so it is quick and works
/// offline. It fails (and nix stops further builds) only when the queue cannot be written.
pub fn post_build_hook(args: PostBuildHookArgs) -> anyhow::Result<()> {
    let (out_paths, drv_path) = (std::env::var("OUT_PATHS").ok(), std::env::var("DRV_PATH").ok());
    if out_paths.is_none() && drv_path.is_none() {
        bail!(
            "OUT_PATHS is not set: this command is meant to be nix's post-build-hook, which sets it (see `larder post-build-hook --help`)"
        );
    }
    let mut paths = out_paths
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| StorePath::parse(p).map(|p| p.to_absolute()).with_context(|| format!("OUT_PATHS names '{p}', which is not a store path")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if paths.is_empty() {
        // Nix 2.8.0 sets OUT_PATHS empty (NixOS/nix#6446). The derivation stands for its
        // outputs: the drainer pushes those, without the hook waiting for nix to name them.
        match drv_path.filter(|d| d.ends_with(".drv")).map(|d| StorePath::parse(&d).map(|p| p.to_absolute())) {
            Some(Ok(drv)) => paths.push(drv),
            Some(Err(error)) => return Err(error).context("DRV_PATH is not a store path"),
            None => return Ok(()),
        }
    }
    let queue = Queue::open(queue_dir(&args.cache, args.queue_dir)?)?;
    queue.append(&paths)?;
    eprintln!("larder: queued {} for {} in {}", paths.join(" "), args.cache, queue.dir().display());
    Ok(())
}

pub async fn watch_store(client: Client, args: WatchStoreArgs) -> anyhow::Result<()> {
    let options = args.push.options(true)?;
    // Registered first: from here on SIGINT/SIGTERM stop the watcher cleanly.
    let terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let queue = Queue::open(queue_dir(&args.cache, args.queue_dir)?)?;
    let _lock = queue.lock_for_draining()?;
    check_cache(&client, &args.cache).await?;

    let (sender, events) = mpsc::unbounded_channel();
    let _watcher = if args.once {
        None
    } else {
        let store_dir = nixstore::real_store_dir().await?;
        let watcher = watch_files(&store_dir, queue.dir(), sender)?;
        eprintln!("watching {} for new paths to push to {}; queue in {}", store_dir.display(), args.cache, queue.dir().display());
        Some(watcher)
    };
    let mut watch = Watch { cache: args.cache, client, options, queue, events, terminate, interrupt, queued: 0 };
    watch.run(args.once).await
}

/// A wrong cache name or token is said at once; an unreachable server is waited for.
async fn check_cache(client: &Client, cache: &str) -> anyhow::Result<()> {
    match client.get::<larder_api_types::CacheInfo>(&format!("/caches/{cache}")).await {
        Ok(_) => Ok(()),
        // Unreachable, restarting or overloaded: worth waiting for.
        Err(error) if crate::client::is_transient(&error) => {
            eprintln!("warning: {error:#}\nwatching anyway: new paths are queued and pushed once the server answers");
            Ok(())
        }
        Err(error) => Err(error.context(format!("checking the cache {cache} before watching"))),
    }
}

/// What the file watcher reports.
enum Seen {
    /// A store path nix has just registered (its lock file is gone).
    NewPath(String),
    /// A file appeared in the queue (a hook call).
    QueueChanged,
    Trouble(String),
}

fn watch_files(store_dir: &Path, queue_dir: &Path, sender: mpsc::UnboundedSender<Seen>) -> anyhow::Result<notify::RecommendedWatcher> {
    let (store, queue) = (store_dir.to_owned(), queue_dir.to_owned());
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let seen = match result {
            Ok(event) => classify(&event, &store, &queue),
            Err(error) => vec![Seen::Trouble(error.to_string())],
        };
        for seen in seen {
            let _ = sender.send(seen);
        }
    })
    .context("starting to watch files (inotify): if too many are in use, raise the sysctl fs.inotify.max_user_instances")?;
    // Not recursive: only the store directory's own entries, never the paths' contents.
    watcher.watch(store_dir, notify::RecursiveMode::NonRecursive).with_context(|| {
        format!(
            "watching {} for new store paths (is this the store nix uses? NIX_REMOTE and nix.conf's `store` say which)",
            store_dir.display()
        )
    })?;
    watcher.watch(queue_dir, notify::RecursiveMode::NonRecursive).with_context(|| format!("watching the queue {}", queue_dir.display()))?;
    Ok(watcher)
}

fn classify(event: &notify::Event, store: &Path, queue: &Path) -> Vec<Seen> {
    use notify::EventKind;
    let mut seen = Vec::new();
    if event.need_rescan() {
        seen.push(Seen::Trouble("the kernel dropped file events: paths that appeared meanwhile may need `larder push`".into()));
    }
    for path in &event.paths {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.parent() == Some(store) && matches!(event.kind, EventKind::Remove(_)) {
            if let Some(store_path) = registered_path(name) {
                seen.push(Seen::NewPath(store_path));
            }
        } else if path.parent() == Some(queue)
            && name.ends_with(".paths")
            && !name.starts_with('.')
            && !matches!(event.kind, EventKind::Access(_) | EventKind::Remove(_))
        {
            seen.push(Seen::QueueChanged);
        }
    }
    seen
}

/// The store path a removed `<hash>-<name>.lock` file was locking. Derivations (`.drv`)
/// are skipped: they are build recipes, and an output's narinfo names its deriver anyway.
fn registered_path(lock_file: &str) -> Option<String> {
    let base = lock_file.strip_suffix(".lock")?;
    if base.ends_with(".drv") {
        return None;
    }
    StorePath::from_base_name(base).ok().map(|p| p.to_absolute())
}

/// How waiting for something ended.
enum Ended<T> {
    Finished(T),
    /// The queue has news (see [`Wake`]).
    Woken,
    Signal(&'static str),
}

/// When [`Watch::until`] returns early.
#[derive(Clone, Copy, PartialEq)]
enum Wake {
    Never,
    /// Anything new in the queue.
    OnNews,
    /// A full batch queued.
    OnFullBatch,
}

struct Watch {
    cache: String,
    client: Client,
    /// How every attempt pushes.
    options: push::PushOptions,
    queue: Queue,
    events: mpsc::UnboundedReceiver<Seen>,
    terminate: Signal,
    interrupt: Signal,
    /// Paths queued since the counter was last reset.
    queued: usize,
}

impl Watch {
    async fn run(&mut self, once: bool) -> anyhow::Result<()> {
        loop {
            let entries = self.queue.entries()?;
            if entries.is_empty() {
                if once {
                    eprintln!("nothing (more) queued for {}", self.cache);
                    return Ok(());
                }
                self.queued = 0;
                if let Ended::Signal(name) = self.until(tokio::time::sleep(RESCAN), Wake::OnNews).await? {
                    return self.stopped(name);
                }
                if let Ended::Signal(name) = self.until(tokio::time::sleep(BATCH_WINDOW), Wake::OnFullBatch).await? {
                    return self.stopped(name);
                }
                continue;
            }
            let batch = take_batch(entries);
            self.queued = 0;
            if let Some(name) = self.push_batch(&batch, once).await? {
                return self.stopped(name);
            }
        }
    }

    /// Pushes until the server accepts the batch (then removes it from the queue) or a
    /// signal comes (the batch stays queued); returns the signal's name.
    async fn push_batch(&mut self, batch: &[Entry], once: bool) -> anyhow::Result<Option<&'static str>> {
        let mut paths: Vec<String> = batch.iter().flat_map(|e| e.paths.iter().cloned()).collect();
        paths.sort();
        paths.dedup();
        let mut delay = FIRST_RETRY;
        for attempt in 1.. {
            let attempt_future = push_valid(self.client.clone(), self.cache.clone(), paths.clone(), self.options.clone());
            let error = match self.until(attempt_future, Wake::Never).await? {
                Ended::Finished(Ok(())) => {
                    self.queue.remove(batch)?;
                    return Ok(None);
                }
                Ended::Finished(Err(error)) => error,
                Ended::Signal(name) => {
                    eprintln!("{name}: abandoning the push of {} path(s) in flight; they stay queued", paths.len());
                    return Ok(Some(name));
                }
                Ended::Woken => unreachable!("Wake::Never"),
            };
            if once && attempt >= ONCE_ATTEMPTS {
                return Err(error.context(format!(
                    "pushing {} queued path(s) to {} failed {attempt} times; they stay queued in {}",
                    paths.len(),
                    self.cache,
                    self.queue.dir().display()
                )));
            }
            eprintln!(
                "pushing {} path(s) to {} failed: {error:#}\nretrying in {} s; the paths stay queued",
                paths.len(),
                self.cache,
                delay.as_secs()
            );
            if let Ended::Signal(name) = self.until(tokio::time::sleep(delay), Wake::Never).await? {
                return Ok(Some(name));
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
        unreachable!("the attempts never run out")
    }

    /// Waits for `future` while queueing every new path the watcher reports (so a crash
    /// loses none of them), until a signal, or news in the queue if `wake` says so.
    async fn until<T>(&mut self, future: impl Future<Output = T>, wake: Wake) -> anyhow::Result<Ended<T>> {
        tokio::pin!(future);
        loop {
            tokio::select! {
                biased;
                _ = self.terminate.recv() => return Ok(Ended::Signal("SIGTERM")),
                _ = self.interrupt.recv() => return Ok(Ended::Signal("SIGINT")),
                value = &mut future => return Ok(Ended::Finished(value)),
                Some(seen) = self.events.recv() => {
                    let news = self.take(seen)?;
                    if (wake == Wake::OnNews && news) || (wake == Wake::OnFullBatch && self.queued >= MAX_BATCH) {
                        return Ok(Ended::Woken);
                    }
                }
            }
        }
    }

    /// Queues the new paths among `first` and whatever else the watcher has reported;
    /// true if the queue has news.
    fn take(&mut self, first: Seen) -> anyhow::Result<bool> {
        let mut new_paths = Vec::new();
        let mut news = false;
        let mut seen = Some(first);
        while let Some(event) = seen.take().or_else(|| self.events.try_recv().ok()) {
            match event {
                Seen::NewPath(path) => new_paths.push(path),
                Seen::QueueChanged => news = true,
                Seen::Trouble(message) => eprintln!("warning: watching files: {message}"),
            }
        }
        new_paths.sort();
        new_paths.dedup();
        if !new_paths.is_empty() {
            self.queue.append(&new_paths)?;
            self.queued += new_paths.len();
            news = true;
        }
        Ok(news)
    }

    fn stopped(&self, signal: &str) -> anyhow::Result<()> {
        let left: usize = self.queue.entries().map(|e| e.iter().map(|e| e.paths.len()).sum()).unwrap_or(0);
        eprintln!("stopped by {signal}; {left} path(s) queued in {} for the next run", self.queue.dir().display());
        Ok(())
    }
}

/// The oldest entries, up to [`MAX_BATCH`] paths (at least one entry).
fn take_batch(entries: Vec<Entry>) -> Vec<Entry> {
    let mut count = 0;
    let mut batch = Vec::new();
    for entry in entries {
        if !batch.is_empty() && count + entry.paths.len() > MAX_BATCH {
            break;
        }
        count += entry.paths.len();
        batch.push(entry);
    }
    batch
}

/// Pushes those of `paths` still valid in the store (a path collected since it was queued
/// cannot be pushed, and must not hold up the rest); a queued derivation stands for its
/// outputs (see [`post_build_hook`]).
async fn push_valid(client: Client, cache: String, paths: Vec<String>, options: push::PushOptions) -> anyhow::Result<()> {
    let mut valid = valid_of(paths).await?;
    let derivations: Vec<String> = valid.iter().filter(|p| p.ends_with(".drv")).cloned().collect();
    if !derivations.is_empty() {
        valid.retain(|p| !p.ends_with(".drv"));
        valid.extend(valid_of(nixstore::outputs_of(&derivations).await?).await?);
        valid.sort();
        valid.dedup();
    }
    if valid.is_empty() {
        return Ok(());
    }
    push::push(&client, &cache, valid, options).await
}

async fn valid_of(paths: Vec<String>) -> anyhow::Result<Vec<String>> {
    let invalid = nixstore::invalid_of(&paths).await?;
    for path in &invalid {
        eprintln!("warning: {path} is not valid in the store (any more): not pushed");
    }
    Ok(paths.into_iter().filter(|p| !invalid.contains(p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_removed_locks_of_store_paths_are_new_paths() {
        assert_eq!(
            registered_path("7dnbw9k7m0vprqdi1snsnjjqbqcyzwzf-hello-2.12.lock").as_deref(),
            Some("/nix/store/7dnbw9k7m0vprqdi1snsnjjqbqcyzwzf-hello-2.12")
        );
        assert_eq!(registered_path("7dnbw9k7m0vprqdi1snsnjjqbqcyzwzf-hello-2.12.drv.lock"), None);
        assert_eq!(registered_path("7dnbw9k7m0vprqdi1snsnjjqbqcyzwzf-hello-2.12"), None);
        assert_eq!(registered_path("gc.lock"), None);
        assert_eq!(registered_path(".links.lock"), None);
    }

    #[test]
    fn events_are_read_by_directory_and_kind() {
        use notify::event::{CreateKind, RemoveKind};
        use notify::{Event, EventKind};
        let (store, queue) = (Path::new("/r/nix/store"), Path::new("/q"));
        let lock = store.join("7dnbw9k7m0vprqdi1snsnjjqbqcyzwzf-x.lock");
        let removed = Event::new(EventKind::Remove(RemoveKind::File)).add_path(lock.clone());
        assert!(
            matches!(classify(&removed, store, queue).as_slice(), [Seen::NewPath(p)] if p == "/nix/store/7dnbw9k7m0vprqdi1snsnjjqbqcyzwzf-x")
        );
        let created = Event::new(EventKind::Create(CreateKind::File)).add_path(lock);
        assert!(classify(&created, store, queue).is_empty(), "a lock being taken is no news");
        let queued = Event::new(EventKind::Create(CreateKind::File)).add_path(queue.join("1-2-3.paths"));
        assert!(matches!(classify(&queued, store, queue).as_slice(), [Seen::QueueChanged]));
        let temporary = Event::new(EventKind::Create(CreateKind::File)).add_path(queue.join(".1-2-3.paths.tmp"));
        assert!(classify(&temporary, store, queue).is_empty());
    }

    #[test]
    fn batches_stop_at_the_size_limit_but_take_at_least_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().to_owned()).unwrap();
        let path = |i: usize| format!("/nix/store/{}-p{i}", "7dnbw9k7m0vprqdi1snsnjjqbqcyzwzf");
        queue.append(&(0..MAX_BATCH + 1).map(path).collect::<Vec<_>>()).unwrap();
        queue.append(&[path(1)]).unwrap();
        assert_eq!(take_batch(queue.entries().unwrap()).len(), 1, "an oversized entry alone");
        queue.remove(&queue.entries().unwrap()[..1]).unwrap();
        queue.append(&[path(2)]).unwrap();
        assert_eq!(take_batch(queue.entries().unwrap()).len(), 2);
    }
}
