//! The `larder` CLI against a real server: `login` and `use`, then the real nix substitutes
//! from a private cache with nothing but what `use` wrote; and the thin API commands.

use std::path::{Path, PathBuf};

use larder_tests::{cli_binary, on_both_backends, Api, Nix, TestServer};
use serde_json::json;

on_both_backends!(
    use_makes_nix_substitute_from_a_private_cache_and_changes_nothing_the_second_time,
    cache_token_and_key_commands_call_the_api,
    errors_say_what_to_do,
    push_a_closure_then_substitute_it_and_push_again_for_nothing,
    a_client_held_cache_takes_pushes_signed_with_the_key,
    push_of_a_large_closure_then_substitute_all_of_it,
    use_warns_a_user_the_daemon_does_not_trust,
    a_push_carries_on_after_the_server_is_killed_and_restarted,
);

/// A machine of its own: HOME, XDG dirs and the nix configuration directory.
struct Machine {
    root: PathBuf,
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Machine {
    fn new(server: &TestServer, name: &str) -> Self {
        let root = server.dir.path().join(name);
        for dir in ["home/.config", "nix-conf", "cache"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        Self { root }
    }

    fn conf_dir(&self) -> PathBuf {
        self.root.join("nix-conf")
    }

    async fn larder(&self, args: &[&str], stdin: Option<&str>) -> Run {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(cli_binary())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.root.join("home"))
            .env("XDG_CONFIG_HOME", self.root.join("home/.config"))
            .env("NIX_CONF_DIR", self.conf_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run larder");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let output = child.wait_with_output().await.unwrap();
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `nix-store -r` into a fresh chroot store with only this machine's nix.conf (and
    /// signatures required): no substituter or key is passed on the command line.
    async fn substitute(&self, path: &str, store: &str) -> (bool, String, PathBuf) {
        let store_root = self.root.join("stores").join(store);
        let output = tokio::process::Command::new("nix-store")
            .args(["--store", &format!("local?root={}", store_root.display()), "-r", path])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.root.join("home"))
            .env("XDG_CACHE_HOME", self.root.join("cache").join(store))
            .env("NIX_CONF_DIR", self.conf_dir())
            .env("NIX_CONFIG", "require-sigs = true\nnarinfo-cache-negative-ttl = 0\n")
            .kill_on_drop(true)
            .output()
            .await
            .expect("run nix-store");
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned(), store_root)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The settings every nix of these tests needs, already in the machine's nix.conf (as an
/// existing configuration `use` must keep).
const BASE_CONF: &str = "# this machine's own settings\nexperimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nmax-jobs = 3\n";
const OTHER_NETRC: &str = "machine other.example login me password keep-me\n";

async fn use_makes_nix_substitute_from_a_private_cache_and_changes_nothing_the_second_time(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("alice-private", false).await;
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": "write"})).await;
    let (_, read_token) = alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": "read"})).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    nix.use_token(Some(&write));
    nix.run("nix", &["copy", "--to", &server.cache_url("alice-private"), &top], "").await.expect_success("nix copy --to larder");

    let laptop = Machine::new(server, "laptop");
    std::fs::write(laptop.conf_dir().join("nix.conf"), BASE_CONF).unwrap();
    std::fs::write(laptop.conf_dir().join("netrc"), OTHER_NETRC).unwrap();
    // Before `use`, nix has no way to the cache.
    let (ok, _, _) = laptop.substitute(&top, "before").await;
    assert!(!ok, "nothing to substitute from yet");

    let login = laptop.larder(&["login", "--server", &server.base_url], Some(&format!("{read_token}\n"))).await;
    assert!(login.success, "{}", login.stderr);
    let config = laptop.root.join("home/.config/larder/config.toml");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the config holds a token");
    assert!(read(&config).contains(&read_token));

    let used = laptop.larder(&["use", "alice-private"], None).await;
    assert!(used.success, "{}", used.stderr);
    let conf = read(&laptop.conf_dir().join("nix.conf"));
    let info = Api::anonymous(server).with(&read_token).get("/caches/alice-private").await.1;
    let key = info["public_keys"][0].as_str().unwrap();
    assert_eq!(
        conf,
        format!("{BASE_CONF}extra-substituters = {}/alice-private\nextra-trusted-public-keys = {key}\n", server.base_url),
        "added to what was there, nothing else touched"
    );
    let netrc = read(&laptop.conf_dir().join("netrc"));
    assert_eq!(netrc, format!("{OTHER_NETRC}machine 127.0.0.1 login larder password {read_token}\n"));
    let netrc_mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(laptop.conf_dir().join("netrc")).unwrap().permissions());
    assert_eq!(netrc_mode & 0o077, 0, "the netrc is private");

    // A second run changes no byte.
    let again = laptop.larder(&["use", "alice-private"], None).await;
    assert!(again.success && again.stdout.contains("already has"), "{}", again.stdout);
    assert_eq!(read(&laptop.conf_dir().join("nix.conf")), conf);
    assert_eq!(read(&laptop.conf_dir().join("netrc")), netrc);

    // The real nix substitutes the whole closure with only that, signatures required.
    let (ok, stderr, store) = laptop.substitute(&top, "after").await;
    assert!(ok, "nix-store -r with what `use` wrote failed:\n{stderr}");
    for path in nix.closure(&top).await {
        larder_tests::assert_same_tree(Path::new(&path), &store.join(path.trim_start_matches('/')));
    }

    // --nixos prints a module instead of writing.
    let module = laptop.larder(&["use", "alice-private", "--nixos"], None).await;
    assert!(module.success, "{}", module.stderr);
    assert!(module.stdout.contains(&format!("extra-substituters = [ \"{}/alice-private\" ];", server.base_url)), "{}", module.stdout);
    assert!(module.stdout.contains(key) && module.stdout.contains("netrc-file"), "{}", module.stdout);
    assert_eq!(read(&laptop.conf_dir().join("nix.conf")), conf, "--nixos writes nothing");
}

async fn cache_token_and_key_commands_call_the_api(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    let (_, personal) = alice.token(json!({"kind": "personal", "permission": "admin"})).await;
    let machine = Machine::new(server, "ci");
    let login = machine.larder(&["login", "--server", &server.base_url, "--token", &personal], None).await;
    assert!(login.success, "{}", login.stderr);

    let created = machine.larder(&["cache", "create", "team", "--public", "--priority", "30"], None).await;
    assert!(created.success, "{}", created.stderr);
    assert!(created.stdout.contains(&format!("substituter: {}/team", server.base_url)), "{}", created.stdout);
    let list = machine.larder(&["cache", "list"], None).await;
    assert!(list.stdout.contains("team\tpublic\tpriority 30"), "{}", list.stdout);

    let token = machine
        .larder(&["token", "create", "--cache", "team", "--permission", "write", "--expires", "30d", "--description", "CI"], None)
        .await;
    assert!(token.success, "{}", token.stderr);
    let secret = token.stdout.trim().to_owned();
    let (status, _) = Api::anonymous(server).with(&secret).get("/caches/team").await;
    assert_eq!(status, reqwest::StatusCode::OK, "the printed secret is a working token");
    let listed = machine.larder(&["token", "list"], None).await;
    let id =
        listed.stdout.lines().find(|l| l.contains("\tteam\tCI")).expect("the new token is listed").split('\t').next().unwrap().to_owned();
    let revoked = machine.larder(&["token", "revoke", &id], None).await;
    assert!(revoked.success, "{}", revoked.stderr);
    assert_eq!(Api::anonymous(server).with(&secret).get("/caches/team").await.0, reqwest::StatusCode::UNAUTHORIZED);

    let rotated = machine.larder(&["key", "rotate", "team"], None).await;
    assert!(rotated.success && rotated.stdout.contains("team-2:"), "{}{}", rotated.stdout, rotated.stderr);
    let retired = machine.larder(&["key", "retire", "team", "team-1"], None).await;
    assert!(retired.success, "{}", retired.stderr);
    let keys = machine.larder(&["key", "list", "team"], None).await;
    assert!(keys.stdout.contains("team-1\tretired") && keys.stdout.contains("team-2\tactive"), "{}", keys.stdout);

    let refused = machine.larder(&["cache", "delete", "team", "--confirm", "tea"], None).await;
    assert!(!refused.success);
    let deleted = machine.larder(&["cache", "delete", "team", "--confirm", "team"], None).await;
    assert!(deleted.success, "{}", deleted.stderr);
    assert!(machine.larder(&["cache", "list"], None).await.stdout.contains("No caches yet"));
}

async fn errors_say_what_to_do(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("alice-private", false).await;
    let (read_id, read_token) = alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": "read"})).await;
    let machine = Machine::new(server, "m");

    let no_server = machine.larder(&["cache", "list"], None).await;
    assert!(!no_server.success && no_server.stderr.contains("larder login --server"), "{}", no_server.stderr);

    let unreachable = machine.larder(&["--server", "http://127.0.0.1:9", "cache", "list"], None).await;
    assert!(!unreachable.success && unreachable.stderr.contains("cannot reach the server"), "{}", unreachable.stderr);

    // Without a token, a private cache answers like a missing one: the hint says both.
    let anonymous = machine.larder(&["--server", &server.base_url, "use", "alice-private"], None).await;
    assert!(!anonymous.success && anonymous.stderr.contains("larder login"), "{}", anonymous.stderr);

    let login = machine.larder(&["login", "--server", &server.base_url, "--token", &read_token], None).await;
    assert!(login.success, "a cache token can log in: {}", login.stderr);
    let missing = machine.larder(&["use", "no-such-cache"], None).await;
    assert!(!missing.success && missing.stderr.contains("Check the cache's name"), "{}", missing.stderr);
    let too_weak = machine.larder(&["key", "rotate", "alice-private"], None).await;
    assert!(!too_weak.success && too_weak.stderr.contains("more permission"), "{}", too_weak.stderr);

    alice.delete(&format!("/tokens/{read_id}"), None).await;
    let revoked = machine.larder(&["use", "alice-private"], None).await;
    assert!(!revoked.success && revoked.stderr.contains("expired or was revoked"), "{}", revoked.stderr);
    let refused_login = Machine::new(server, "m2").larder(&["login", "--server", &server.base_url, "--token", &read_token], None).await;
    assert!(!refused_login.success, "a revoked token is not saved");
}

async fn push_a_closure_then_substitute_it_and_push_again_for_nothing(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("alice-private", false).await;
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": "write"})).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let closure = nix.closure(&top).await;
    let ci = Machine::new(server, "ci");
    assert!(ci.larder(&["login", "--server", &server.base_url, "--token", &write], None).await.success);

    // Only the top path, from stdin, without its closure: refused, naming what is missing.
    let alone = ci.larder(&["push", "alice-private", "--no-closure"], Some(&format!("{top}\n"))).await;
    assert!(
        !alone.success && alone.stderr.contains(&format!("pushing {top}")) && alone.stderr.contains("references not in this cache"),
        "{}{}",
        alone.stdout,
        alone.stderr
    );

    let pushed = ci.larder(&["push", "alice-private", "--jobs", "3"], Some(&format!("{top}\n"))).await;
    assert!(pushed.success, "{}{}", pushed.stdout, pushed.stderr);
    assert!(pushed.stdout.contains(&format!("{} pushed", closure.len())), "{}", pushed.stdout);
    let again = ci.larder(&["push", "alice-private", &top], None).await;
    assert!(again.success && again.stdout.contains(&format!("0 pushed (0.0 MiB sent), {} already", closure.len())), "{}", again.stdout);

    // Every path substitutes with the cache's key required.
    let info = alice.get("/caches/alice-private").await.1;
    let key = info["public_keys"][0].as_str().unwrap().to_owned();
    let (_, read) = alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": "read"})).await;
    nix.use_token(Some(&read));
    let (run, store) = nix.pull_verified(&server.cache_url("alice-private"), &top, &key, "pushed").await;
    assert!(run.success, "{}", run.stderr);
    for path in closure {
        larder_tests::assert_same_tree(Path::new(&path), &store.join(path.trim_start_matches('/')));
    }
}

async fn a_client_held_cache_takes_pushes_signed_with_the_key(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("alice-signed", true).await;
    let key = larder_protocol::signing::SecretKey::generate("alice-laptop-1").unwrap();
    let public = key.public_key().to_nix_string();
    let (status, answer) = alice.put("/caches/alice-signed/signing-mode", json!({"mode": "client"})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert_eq!(alice.post("/caches/alice-signed/public-keys", json!({"public_key": public})).await.0, reqwest::StatusCode::CREATED);
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "alice-signed", "permission": "write"})).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let ci = Machine::new(server, "ci");
    assert!(ci.larder(&["login", "--server", &server.base_url, "--token", &write], None).await.success);

    let unsigned = ci.larder(&["push", "alice-signed", &top], None).await;
    assert!(!unsigned.success && unsigned.stderr.contains("signature"), "{}{}", unsigned.stdout, unsigned.stderr);
    let key_file = ci.root.join("key.sec");
    std::fs::write(&key_file, key.to_nix_string()).unwrap();
    let signed = ci.larder(&["push", "alice-signed", &top, "--signing-key", key_file.to_str().unwrap()], None).await;
    assert!(signed.success, "{}{}", signed.stdout, signed.stderr);
    let (run, _) = nix.pull_verified(&server.cache_url("alice-signed"), &top, &public, "signed").await;
    assert!(run.success, "{}", run.stderr);
}

/// The paths of `closure` the cache lacks, asked with `token`.
async fn missing(server: &TestServer, cache: &str, token: &str, closure: &[String]) -> Vec<String> {
    let (status, answer) =
        Api::anonymous(server).with(token).post(&format!("/caches/{cache}/missing-paths"), json!({"store_paths": closure})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    answer["missing"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
}

/// Substitutes `top` and its closure with the cache's key required; checks every path.
async fn substitutes_all(server: &TestServer, alice: &Api<'_>, nix: &Nix, cache: &str, top: &str, closure: &[String], store: &str) {
    let info = alice.get(&format!("/caches/{cache}")).await.1;
    let key = info["public_keys"][0].as_str().unwrap().to_owned();
    let (_, read) = alice.token(json!({"kind": "cache", "cache": cache, "permission": "read"})).await;
    nix.use_token(Some(&read));
    let (run, root) = nix.pull_verified(&server.cache_url(cache), top, &key, store).await;
    assert!(run.success, "{}", run.stderr);
    for path in closure {
        larder_tests::assert_same_tree(Path::new(path), &root.join(path.trim_start_matches('/')));
    }
}

async fn push_of_a_large_closure_then_substitute_all_of_it(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("big-closure", false).await;
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "big-closure", "permission": "write"})).await;
    let nix = Nix::new(server.dir.path());
    // 200 paths: 20 of 21 MiB random, 180 of 512 KiB half random — over 500 MiB of NARs.
    let top = nix.build_closure(200, 10, 21 << 20, 512 << 10).await;
    let closure = nix.closure(&top).await;
    assert_eq!(closure.len(), 200);
    let ci = Machine::new(server, "ci");
    assert!(ci.larder(&["login", "--server", &server.base_url, "--token", &write], None).await.success);
    let pushed = ci.larder(&["push", "big-closure", &top], None).await;
    assert!(pushed.success, "{}{}", pushed.stdout, pushed.stderr);
    assert!(pushed.stdout.contains("200 pushed"), "{}", pushed.stdout);
    let (_, usage) = alice.get("/caches/big-closure/usage").await;
    assert_eq!(usage["paths"], 200, "{usage}");
    let sizes = nix.run("nix", &["path-info", "--json", "--recursive", &top], "").await.expect_success("nix path-info");
    let sizes: serde_json::Value = serde_json::from_str(&sizes.stdout).unwrap();
    let entries: Vec<serde_json::Value> = match sizes {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(map) => map.into_values().collect(),
        _ => panic!("path-info printed {sizes}"),
    };
    let nar_bytes: u64 = entries.iter().map(|e| e["narSize"].as_u64().unwrap()).sum();
    assert!(nar_bytes > 500 << 20, "{nar_bytes} bytes of NARs");
    // Stored zstd-compressed: the random halves do not shrink, the zeros do.
    assert!(usage["stored_bytes"].as_u64().unwrap() > 420 << 20, "{usage}");
    let again = ci.larder(&["push", "big-closure", &top], None).await;
    assert!(again.success && again.stdout.contains("0 pushed (0.0 MiB sent), 200 already"), "{}{}", again.stdout, again.stderr);
    substitutes_all(server, &alice, &nix, "big-closure", &top, &closure, "big").await;
    larder_tests::consistency::assert_consistent(server).await;
    let _ = nix.run("nix-store", &["--delete", &top], "").await;
}

/// A `larder-server serve` process on this test server's data (a second node), on `port`
/// (0: any); returns it and the port it listens on.
async fn serve_process(server: &TestServer, port: u16) -> (tokio::process::Child, u16) {
    let port_file = server.dir.path().join(format!("port-{}", uuid::Uuid::new_v4().simple()));
    let mut command = server.larder_server_command(&["serve"]);
    command.env("LARDER_LISTEN", format!("127.0.0.1:{port}")).env("LARDER_PORT_FILE", &port_file).env("LARDER_GC_INTERVAL_SECS", "0");
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = command.spawn().expect("start larder-server serve");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            if let Ok(port) = text.trim().parse() {
                return (child, port);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "larder-server serve did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn a_push_carries_on_after_the_server_is_killed_and_restarted(server: &TestServer) {
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("kill-me", false).await;
    let (_, write) = alice.token(json!({"kind": "cache", "cache": "kill-me", "permission": "write"})).await;
    let nix = Nix::new(server.dir.path());
    let top = nix.build_closure(40, 4, 12 << 20, 256 << 10).await;
    let closure = nix.closure(&top).await;
    let (mut node, port) = serve_process(server, 0).await;
    let node_url = format!("http://127.0.0.1:{port}");
    let ci = Machine::new(server, "ci");
    assert!(ci.larder(&["login", "--server", &node_url, "--token", &write], None).await.success);
    let push = {
        let ci_root = ci.root.clone();
        let top = top.clone();
        tokio::spawn(async move { Machine { root: ci_root }.larder(&["push", "kill-me", "--jobs", "2", &top], None).await })
    };

    // Killed once some paths are in and others are not, and started again on its port.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = missing(server, "kill-me", &write, &closure).await.len();
        assert!(left > 0, "the push ended before the server could be killed: make the closure larger");
        if left < closure.len() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing was pushed in 120 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    node.start_kill().unwrap();
    node.wait().await.unwrap();
    let left_at_kill = missing(server, "kill-me", &write, &closure).await.len();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (mut restarted, same_port) = serve_process(server, port).await;
    assert_eq!(same_port, port);

    let pushed = push.await.unwrap();
    restarted.start_kill().unwrap();
    restarted.wait().await.unwrap();
    assert!(pushed.success, "{}{}", pushed.stdout, pushed.stderr);
    assert!(pushed.stderr.contains("trying again"), "the push saw the server go: {}", pushed.stderr);
    assert!(left_at_kill > 0, "killed before the end");
    assert!(missing(server, "kill-me", &write, &closure).await.is_empty());
    substitutes_all(server, &alice, &nix, "kill-me", &top, &closure, "after-kill").await;
    larder_tests::consistency::assert_consistent(server).await;
}

/// `larder <args>` as user `nobody` (uid 65534), with `home` as its HOME.
async fn larder_as_nobody(home: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(cli_binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("USER", "nobody")
        .output()
        .await
        .expect("run larder as nobody")
}

async fn use_warns_a_user_the_daemon_does_not_trust(server: &TestServer) {
    use std::os::unix::fs::PermissionsExt;
    let alice = Api::anonymous(server).account("alice").await;
    alice.cache("alice-public", true).await;
    // A home of its own for user `nobody` (the test runs as root, whom nix always trusts).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config")).unwrap();
    for path in [home.clone(), home.join(".config")] {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    }
    let output = larder_as_nobody(&home, &["--server", &server.base_url, "use", "alice-public"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("warning: nobody is not a trusted user of the nix daemon"), "{stderr}");
    assert!(stderr.contains("extra-trusted-users = nobody"), "it says what to do: {stderr}");
    let written = read(&home.join(".config/nix/nix.conf"));
    assert!(written.contains(&format!("extra-substituters = {}", server.cache_url("alice-public"))), "{written}");

    // A private cache's token goes to the netrc the daemon reads, which `nobody` may not write.
    alice.cache("alice-private", false).await;
    let (_, read) = alice.token(json!({"kind": "cache", "cache": "alice-private", "permission": "read"})).await;
    let output = larder_as_nobody(&home, &["--server", &server.base_url, "--token", &read, "use", "alice-private"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("it is the netrc the nix daemon reads") && stderr.contains("sudo larder use alice-private"), "{stderr}");
    assert!(!stderr.contains(&read), "the token is not printed: {stderr}");

    // Root, writing the daemon's own configuration, is trusted: no warning.
    let root = Machine::new(server, "root");
    let run = root.larder(&["--server", &server.base_url, "use", "alice-public"], None).await;
    assert!(run.success && !run.stderr.contains("trusted user"), "{}", run.stderr);
}
