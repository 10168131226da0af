//! `larder watch-store` and `larder post-build-hook` with the real nix building into the
//! machine's store and a real server: new paths reach the cache within seconds, a killed
//! watcher loses nothing, signals stop it with exit 0, the hook only queues (fast, and
//! with the server down), and a server restart is waited out.
//!
//! The builds go to the machine's /nix/store, as in the other tests: `larder push` dumps
//! NARs with `nix-store --dump`, which reads the host path and so cannot push from a chroot
//! store. Other tests' paths appear there too; a watcher pushes them to its own cache,
//! which changes nothing here. Every path of these tests carries a fresh tag.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use larder_api::domain::Permission;
use larder_tests::{cli_binary, hash_part, on_both_backends, TestServer};

on_both_backends!(
    new_paths_reach_the_cache_while_watching,
    a_killed_watcher_loses_nothing,
    signals_stop_the_watcher_cleanly_and_one_watcher_drains_a_queue,
    the_post_build_hook_only_queues_and_watch_store_pushes_what_it_queued,
    the_watcher_carries_on_through_a_server_restart,
);

/// How long anything asynchronous may take on a loaded 2-core test machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// Two derivations, the top one with two outputs (so OUT_PATHS has a space in it).
const BUILD_NIX: &str = r#"{ tag }:
let
  dep = derivation {
    name = "watch-dep-${tag}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" "echo ${tag} > $out" ];
  };
in derivation {
  name = "watch-top-${tag}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  outputs = [ "out" "doc" ];
  # Naming the dependency makes it a reference: pushing the top pushes it too.
  args = [ "-c" "mkdir -p $out $doc && echo ${dep} > $out/dep && echo ${tag} > $doc/readme" ];
}
"#;

/// A machine of its own (HOME, XDG dirs, nix configuration) that pushes to one cache.
struct Machine {
    root: PathBuf,
    server_url: String,
    cache: String,
    token: String,
}

/// What one build made.
struct Built {
    drv: String,
    /// Every output of both derivations.
    outputs: Vec<String>,
    /// The derivation of each output.
    derivers: Vec<String>,
}

impl Built {
    /// Whether the hook queued every output: as itself, or (nix 2.8.0 sets OUT_PATHS
    /// empty, NixOS/nix#6446) as the derivation that built it.
    fn all_queued_by_hook(&self, queued: &[String]) -> bool {
        self.outputs.iter().zip(&self.derivers).all(|(output, drv)| queued.contains(output) || queued.contains(drv))
    }
}

impl Machine {
    async fn new(server: &TestServer, name: &str) -> Self {
        let root = server.dir.path().join(name);
        for dir in ["home", "config", "state", "cache", "nix-conf"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let cache = format!("{name}-cache");
        server.create_cache(&cache, true).await;
        let (_, token) = server.token(&cache, Permission::Write).await;
        let machine = Self { root, server_url: server.base_url.clone(), cache, token };
        machine.write_nix_conf("");
        // The store directory exists before a watcher looks at it, even on a fresh machine.
        machine.add_file("first").await;
        machine
    }

    fn write_nix_conf(&self, extra: &str) {
        let conf = format!(
            "experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n\
             narinfo-cache-negative-ttl = 0\n{extra}\n"
        );
        std::fs::write(self.root.join("nix-conf/nix.conf"), conf).unwrap();
    }

    /// The queue `post-build-hook` and `watch-store` use by default.
    fn queue_dir(&self) -> PathBuf {
        self.root.join("state/larder/queue").join(&self.cache)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", self.root.join("home").display().to_string()),
            ("XDG_CONFIG_HOME", self.root.join("config").display().to_string()),
            ("XDG_STATE_HOME", self.root.join("state").display().to_string()),
            ("XDG_CACHE_HOME", self.root.join("cache").display().to_string()),
            ("NIX_CONF_DIR", self.root.join("nix-conf").display().to_string()),
            ("LARDER_TOKEN", self.token.clone()),
        ]
    }

    /// Runs a program with this machine's environment; returns (success, stdout, stderr).
    async fn run(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let output = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(self.env())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// A nix command, retried while the machine's shared store database is busy (tests
    /// build in parallel; that is nix 2.8's limit, not Larder's).
    async fn nix(&self, program: &str, args: &[&str]) -> String {
        for _ in 0..4 {
            let (ok, stdout, stderr) = self.run(Path::new(program), args, &[]).await;
            if ok {
                return stdout;
            }
            if !stderr.contains("is busy") {
                panic!("{program} {args:?} failed:\n{stderr}");
            }
        }
        panic!("{program} {args:?}: the store stayed busy");
    }

    /// Builds the two derivations of [`BUILD_NIX`] with a fresh tag.
    async fn build(&self) -> Built {
        let file = self.root.join("build.nix");
        std::fs::write(&file, BUILD_NIX).unwrap();
        let tag = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let drv = self.nix("nix-instantiate", &[file.to_str().unwrap(), "--argstr", "tag", &tag]).await.trim().to_owned();
        let top: Vec<String> = self.nix("nix-store", &["-r", &drv]).await.lines().map(str::to_owned).collect();
        assert_eq!(top.len(), 2, "two outputs: {top:?}");
        let mut outputs = top.clone();
        let mut query = vec!["-qR"];
        query.extend(top.iter().map(String::as_str));
        for path in self.nix("nix-store", &query).await.lines() {
            if !outputs.iter().any(|o| o == path) {
                outputs.push(path.to_owned());
            }
        }
        assert_eq!(outputs.len(), 3, "the top's outputs and the dependency: {outputs:?}");
        let mut derivers = Vec::new();
        for output in &outputs {
            derivers.push(self.nix("nix-store", &["--query", "--deriver", output]).await.trim().to_owned());
        }
        Built { drv, outputs, derivers }
    }

    /// `nix-store --add` of a fresh file: a new valid path without a build.
    async fn add_file(&self, name: &str) -> String {
        let file = self.root.join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, uuid::Uuid::new_v4().to_string()).unwrap();
        self.nix("nix-store", &["--add", file.to_str().unwrap()]).await.trim().to_owned()
    }

    fn watch(&self, extra_args: &[&str]) -> Watcher {
        self.watch_at(&self.server_url, extra_args)
    }

    /// Starts `larder watch-store` against `server_url`; its output goes to a log file.
    fn watch_at(&self, server_url: &str, extra_args: &[&str]) -> Watcher {
        let log = self.root.join(format!("watch-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(cli_binary())
            .args(["--server", server_url, "watch-store", &self.cache])
            .args(extra_args)
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start larder watch-store");
        Watcher { child, log }
    }

    /// Every path in the queue.
    fn queued(&self) -> Vec<String> {
        let Ok(listing) = std::fs::read_dir(self.queue_dir()) else { return Vec::new() };
        let mut paths = Vec::new();
        for item in listing.flatten() {
            if item.file_name().to_string_lossy().ends_with(".paths") {
                let text = std::fs::read_to_string(item.path()).unwrap_or_default();
                paths.extend(text.lines().map(str::to_owned));
            }
        }
        paths
    }
}

/// A running `larder watch-store`, killed (by PID) when dropped.
struct Watcher {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Watcher {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Returns once it watches (its signal handlers are in place by then).
    async fn ready(&mut self) {
        let log = self.log.clone();
        let child = &mut self.child;
        let started = eventually(|| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("watch-store exited with {status}:\n{log}");
            }
            async move { log.contains("watching ") }
        })
        .await;
        assert!(started, "watch-store did not start watching:\n{}", self.log());
    }

    /// Waits until any of `texts` has been logged `times` more times (together) from now on.
    async fn wait_for_log(&self, texts: &[&str], times: usize) {
        let from = self.log().len();
        let log = self.log.clone();
        let logged = eventually(|| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let count = log.get(from..).map_or(0, |new| texts.iter().map(|text| new.matches(text).count()).sum());
            async move { count >= times }
        })
        .await;
        assert!(logged, "gave up waiting for {times} × {texts:?} in the log:\n{}", self.log());
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill").args(["-s", name, &pid]).status().expect("run kill");
        assert!(status.success(), "kill -s {name} {pid}");
    }

    async fn kill_hard(&mut self) {
        self.child.kill().await.expect("SIGKILL the watcher");
    }

    /// Waits for it to exit; panics with its log if it does not within [`PATIENCE`].
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.expect("wait for watch-store"),
            Err(_) => panic!("watch-store did not exit:\n{}", self.log()),
        }
    }

    async fn stop_cleanly(&mut self) {
        self.signal("TERM");
        let status = self.exit_status().await;
        assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop:\n{}", self.log());
        assert!(self.log().contains("stopped by SIGTERM"), "{}", self.log());
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Polls `condition` until it holds (true) or [`PATIENCE`] runs out (false).
async fn eventually<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

async fn in_cache(server: &TestServer, cache: &str, path: &str) -> bool {
    let url = format!("{}/{}.narinfo", server.cache_url(cache), hash_part(path));
    matches!(server.http.get(&url).send().await, Ok(response) if response.status() == 200)
}

/// The `paths` the cache does not serve (yet).
async fn missing_from_cache(server: &TestServer, machine: &Machine, paths: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for path in paths {
        if !in_cache(server, &machine.cache, path).await {
            missing.push(path.clone());
        }
    }
    missing
}

/// Waits until every path is in the cache; panics naming the missing ones and the log.
async fn wait_in_cache(server: &TestServer, machine: &Machine, paths: &[String], watcher: Option<&Watcher>) {
    let arrived = eventually(|| async move { missing_from_cache(server, machine, paths).await.is_empty() }).await;
    if !arrived {
        panic!(
            "not in {} after {PATIENCE:?}: {:?}\nwatcher log:\n{}",
            machine.cache,
            missing_from_cache(server, machine, paths).await,
            watcher.map(Watcher::log).unwrap_or_default()
        );
    }
}

/// Waits until none of `paths` is queued any more (other tests' paths may be: the store is
/// shared).
async fn wait_unqueued(machine: &Machine, paths: &[String], watcher: &Watcher) {
    let unqueued = eventually(|| {
        let queued = machine.queued();
        async move { !paths.iter().any(|p| queued.contains(p)) }
    })
    .await;
    assert!(unqueued, "the queue still holds some of {paths:?}: {:?}\n{}", machine.queued(), watcher.log());
}

async fn wait_queued(machine: &Machine, paths: &[String], watcher: &Watcher) {
    let queued_all = eventually(|| {
        let queued = machine.queued();
        async move { paths.iter().all(|p| queued.contains(p)) }
    })
    .await;
    assert!(queued_all, "not all of {paths:?} queued: {:?}\n{}", machine.queued(), watcher.log());
}

/// An address where nothing listens: a server that is down.
fn unreachable_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

async fn new_paths_reach_the_cache_while_watching(server: &TestServer) {
    let machine = Machine::new(server, "laptop").await;
    let mut watcher = machine.watch(&[]);
    watcher.ready().await;

    let built = machine.build().await;
    let added = machine.add_file("added").await;
    let mut expected = built.outputs.clone();
    expected.push(added);
    wait_in_cache(server, &machine, &expected, Some(&watcher)).await;
    assert!(!in_cache(server, &machine.cache, &built.drv).await, "derivations are not pushed");
    // Pushed paths leave the queue.
    wait_unqueued(&machine, &expected, &watcher).await;

    // And again, while it keeps watching.
    let more = machine.build().await;
    wait_in_cache(server, &machine, &more.outputs, Some(&watcher)).await;
    watcher.stop_cleanly().await;
    assert!(!watcher.log().contains(&machine.token), "the token is never logged");
}

async fn a_killed_watcher_loses_nothing(server: &TestServer) {
    let machine = Machine::new(server, "ci").await;

    // Killed while the paths wait for a server that is down: they are queued on disk.
    let mut offline = machine.watch_at(&unreachable_server(), &[]);
    offline.ready().await;
    let first = machine.build().await;
    wait_queued(&machine, &first.outputs, &offline).await;
    // The second failure after that is of a batch read after the paths were queued.
    offline.wait_for_log(&["retrying in"], 2).await;
    offline.kill_hard().await;
    let queued = machine.queued();
    assert!(first.outputs.iter().all(|p| queued.contains(p)), "SIGKILL keeps the queue: {:?} in {queued:?}", first.outputs);

    // Killed right after it took note of a build: while it pushes, or just after.
    let mut busy = machine.watch(&[]);
    busy.ready().await;
    let second = machine.build().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let queued = machine.queued();
        let mut noted = true;
        for path in &second.outputs {
            noted &= queued.contains(path) || in_cache(server, &machine.cache, path).await;
        }
        if noted {
            break;
        }
        assert!(Instant::now() < deadline, "the watcher never took note of {:?}\n{}", second.outputs, busy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    busy.kill_hard().await;

    // The next watcher pushes all of it.
    let mut next = machine.watch(&[]);
    next.ready().await;
    let everything: Vec<String> = first.outputs.iter().chain(&second.outputs).cloned().collect();
    wait_in_cache(server, &machine, &everything, Some(&next)).await;
    wait_unqueued(&machine, &everything, &next).await;
    next.stop_cleanly().await;
}

async fn signals_stop_the_watcher_cleanly_and_one_watcher_drains_a_queue(server: &TestServer) {
    let machine = Machine::new(server, "desk").await;

    // SIGTERM while retrying against a server that is down: exit 0, the path stays queued.
    let mut retrying = machine.watch_at(&unreachable_server(), &[]);
    retrying.ready().await;
    let added = machine.add_file("retry").await;
    wait_queued(&machine, std::slice::from_ref(&added), &retrying).await;
    retrying.wait_for_log(&["retrying in"], 1).await;
    retrying.stop_cleanly().await;
    assert!(retrying.log().contains("cannot reach the server"), "{}", retrying.log());
    assert!(machine.queued().contains(&added), "still queued: {:?}", machine.queued());

    // SIGINT (Ctrl-C) while idle, after pushing what was queued.
    let mut idle = machine.watch(&[]);
    idle.ready().await;
    wait_in_cache(server, &machine, std::slice::from_ref(&added), Some(&idle)).await;
    wait_unqueued(&machine, std::slice::from_ref(&added), &idle).await;

    // A second watcher of the same queue is refused while the first runs.
    let mut second = machine.watch(&[]);
    let status = second.exit_status().await;
    assert_eq!(status.code(), Some(1), "{}", second.log());
    assert!(second.log().contains("already drains"), "{}", second.log());

    idle.signal("INT");
    let status = idle.exit_status().await;
    assert_eq!(status.code(), Some(0), "SIGINT is a clean stop:\n{}", idle.log());
    assert!(idle.log().contains("stopped by SIGINT"), "{}", idle.log());
}

async fn the_post_build_hook_only_queues_and_watch_store_pushes_what_it_queued(server: &TestServer) {
    let machine = Machine::new(server, "builder").await;
    // nix runs the hook without arguments: a script names the cache, as users write it.
    // It also records how long the hook took.
    let hook = machine.root.join("post-build-hook.sh");
    let times = machine.root.join("hook-times");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nstart=$(date +%s%N)\n{} post-build-hook {}\nstatus=$?\necho $(( $(date +%s%N) - start )) >> {}\nexit $status\n",
            cli_binary().display(),
            machine.cache,
            times.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    machine.write_nix_conf(&format!("post-build-hook = {}", hook.display()));

    let up = machine.build().await;
    let queued = machine.queued();
    assert!(up.all_queued_by_hook(&queued), "the hook queued every output: {queued:?}");
    for path in &up.outputs {
        assert!(!in_cache(server, &machine.cache, path).await, "the hook itself pushes nothing");
    }

    // With the server down, the build still succeeds and its outputs are queued.
    server.stop_serving().await;
    let down = machine.build().await;
    let queued = machine.queued();
    assert!(down.all_queued_by_hook(&queued), "queued with the server down: {queued:?}");
    let durations: Vec<u64> = std::fs::read_to_string(&times).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(durations.len(), 4, "one hook call per derivation built: {durations:?}");
    for nanos in durations {
        assert!(nanos < 2_000_000_000, "the hook took {} ms, builds wait for it", nanos / 1_000_000);
    }
    server.serve_again().await;

    // `watch-store --once` pushes what the hook queued, then exits.
    let mut once = machine.watch(&["--once"]);
    let status = once.exit_status().await;
    assert_eq!(status.code(), Some(0), "{}", once.log());
    let both: Vec<String> = up.outputs.iter().chain(&down.outputs).cloned().collect();
    wait_in_cache(server, &machine, &both, Some(&once)).await;
    assert!(machine.queued().is_empty(), "pushed entries leave the queue: {:?}", machine.queued());

    // A watcher started after a hook call pushes what it queued.
    let later = machine.build().await;
    let mut watcher = machine.watch(&[]);
    watcher.ready().await;
    wait_in_cache(server, &machine, &later.outputs, Some(&watcher)).await;
    wait_unqueued(&machine, &later.outputs, &watcher).await;
    watcher.stop_cleanly().await;

    // Run by hand, it says what it is for.
    let (ok, _, stderr) = machine.run(&cli_binary(), &["post-build-hook", &machine.cache], &[]).await;
    assert!(!ok && stderr.contains("OUT_PATHS is not set"), "{stderr}");
}

async fn the_watcher_carries_on_through_a_server_restart(server: &TestServer) {
    let machine = Machine::new(server, "station").await;
    let mut watcher = machine.watch(&[]);
    watcher.ready().await;
    let before = machine.build().await;
    wait_in_cache(server, &machine, &before.outputs, Some(&watcher)).await;

    server.stop_serving().await;
    let during = machine.build().await;
    wait_queued(&machine, &during.outputs, &watcher).await;
    // One failed request is enough to show it. Either the watcher retries its batch, or,
    // when the server went down under a push in flight (of other tests' paths: the store is
    // shared), that push retries its own request first, for up to two minutes.
    watcher.wait_for_log(&["retrying in", "trying again in"], 1).await;
    server.serve_again().await;
    wait_in_cache(server, &machine, &during.outputs, Some(&watcher)).await;

    let after = machine.build().await;
    wait_in_cache(server, &machine, &after.outputs, Some(&watcher)).await;
    wait_unqueued(&machine, &after.outputs, &watcher).await;
    watcher.stop_cleanly().await;
}
