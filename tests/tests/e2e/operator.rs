//! The operator's side: the `larder-server` binary, its admin commands (run while the
//! server serves), configuration errors, health endpoints and shutdown.

use std::process::Stdio;
use std::time::Duration;

use larder_tests::{on_both_backends, server_binary, Api, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader};

on_both_backends!(admin_commands_act_on_the_running_server with nothing_remembered, readiness_follows_the_backends,);

/// The admin command is another process: what it changes reaches a running server within
/// `staleness_secs` (tested in `staleness.rs`); here, at once.
fn nothing_remembered(settings: &mut larder_tests::Settings) {
    settings.staleness_secs = 0;
}

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "larder-server failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn admin_commands_act_on_the_running_server(server: &TestServer) {
    let created = stdout(&server.larder_server(&["admin", "create-cache", "ops-made", "--private", "--priority", "30"]).await);
    let public_key = created.lines().find_map(|l| l.strip_prefix("public key: ")).expect("public key printed").to_owned();
    assert!(public_key.starts_with("ops-made-1:"), "{public_key}");

    let info_url = format!("{}/nix-cache-info", server.cache_url("ops-made"));
    assert_eq!(server.http.get(&info_url).send().await.unwrap().status(), 401, "private cache is hidden");

    let token_out =
        stdout(&server.larder_server(&["admin", "create-token", "--cache", "ops-made", "--perm", "read", "--expires", "30d"]).await);
    let id = token_out.lines().find_map(|l| l.strip_prefix("token id: ")).expect("id printed").to_owned();
    let token = token_out.lines().find_map(|l| l.strip_prefix("token: ")).expect("token printed").to_owned();
    let info = server.http.get(&info_url).basic_auth("anyone", Some(&token)).send().await.unwrap();
    assert_eq!(info.status(), 200);
    assert_eq!(info.text().await.unwrap(), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n");

    // The key printed by the CLI is the one the API announces.
    let (status, api) = Api::anonymous(server).with(&token).get("/caches/ops-made").await;
    assert_eq!(status, 200);
    assert_eq!(api["public_keys"], serde_json::json!([public_key]));
    assert_eq!(api["public"], false);

    let listed = stdout(&server.larder_server(&["admin", "list-caches"]).await);
    assert!(listed.contains("ops-made\tprivate\tpriority 30\t") && listed.contains(&public_key), "{listed}");

    stdout(&server.larder_server(&["admin", "revoke-token", &id]).await);
    let after = server.http.get(&info_url).basic_auth("anyone", Some(&token)).send().await.unwrap();
    assert_eq!(after.status(), 401, "revocation takes effect at once");

    let unknown = server.larder_server(&["admin", "revoke-token", "no-such-id"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no token with id"));
    let taken = server.larder_server(&["admin", "create-cache", "ops-made"]).await;
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already exists"));
    let bad = server.larder_server(&["admin", "create-cache", "../etc"]).await;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid cache name"));
}

async fn readiness_follows_the_backends(server: &TestServer) {
    let get = |path: &'static str| server.http.get(format!("{}{path}", server.base_url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    match server.bucket() {
        Some(bucket) => bucket.remove().await,
        None => {
            let objects = server.nar_dir();
            std::fs::remove_dir_all(&objects).unwrap();
            std::fs::write(&objects, b"not a directory").unwrap();
        }
    }
    assert_eq!(get("/readyz").await.unwrap().status(), 503, "storage gone: not ready");
    assert_eq!(get("/healthz").await.unwrap().status(), 200, "the process itself is still up");
}

/// Runs `larder-server` with `env` and nothing else; returns (success, stderr).
async fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = tokio::process::Command::new(server_binary()).args(args).env_clear().envs(env.iter().copied()).output().await.unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn bad_configuration_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("LARDER_STORAGE", "s3")], "s3_bucket"),
        (&[("LARDER_STORAGE", "floppy")], "storage"),
        (&[("LARDER_LISTEN", "not-an-address")], "listen"),
        (&[("LARDER_MAX_NAR_SIZE", "lots")], "max_nar_size"),
        (&[("LARDER_DATABASE_URL", "mysql://x")], "database_url"),
        (&[("LARDER_MASTER_KEY", "too-short")], "master_key"),
        (&[("LARDER_S3_BUKET", "typo")], "s3_buket"),
    ];
    for (env, key) in cases {
        let mut env = env.to_vec();
        env.push(("LARDER_DATA_DIR", data));
        let (ok, stderr) = run_with_env(&["migrate"], &env).await;
        assert!(!ok, "{env:?} was accepted");
        assert!(stderr.to_lowercase().contains(key), "the error for {env:?} does not name {key}: {stderr}");
    }
    let config = dir.path().join("larder.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nunknown_setting = 1\n").unwrap();
    let (ok, stderr) = run_with_env(&["--config", config.to_str().unwrap(), "migrate"], &[("LARDER_DATA_DIR", data)]).await;
    assert!(!ok && stderr.contains("unknown_setting"), "{stderr}");
    let (ok, stderr) = run_with_env(&["--config", "/nonexistent.toml", "migrate"], &[("LARDER_DATA_DIR", data)]).await;
    assert!(!ok && stderr.contains("/nonexistent.toml"), "{stderr}");
}

/// With no configuration but a data directory, the binary serves, then stops cleanly on
/// SIGTERM after finishing what it was doing.
#[tokio::test]
async fn serves_on_embedded_defaults_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(server_binary())
        .env_clear()
        .env("LARDER_LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(port) = line.split("port=").nth(1) {
                return port.split_whitespace().next().unwrap().parse::<u16>().unwrap();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server listens within 30 s");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await.unwrap();
    assert_eq!(health.status(), 200);
    for file in ["larder-data/larder.db", "larder-data/master.key", "larder-data/token-secret.key"] {
        assert!(dir.path().join(file).exists(), "{file} was not created in the default data dir");
    }
    let master_key = std::fs::metadata(dir.path().join("larder-data/master.key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&master_key.permissions()) & 0o077, 0, "master key readable by others");

    let pid = child.id().unwrap() as i32;
    assert_eq!(send_sigterm(pid), 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("stops within 30 s").unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

fn send_sigterm(pid: i32) -> i32 {
    std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().map(|s| if s.success() { 0 } else { 1 }).unwrap_or(1)
}

/// LARDER_CONFIG and LARDER_LOG_FORMAT belong to the CLI and the logs, not the settings.
#[tokio::test]
async fn config_file_from_the_environment_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    std::fs::write(&config, format!("data_dir = \"{}\"\ndefault_priority = 50\n", dir.path().join("data").display())).unwrap();
    let (ok, stderr) = run_with_env(&["migrate"], &[("LARDER_CONFIG", config.to_str().unwrap()), ("LARDER_LOG_FORMAT", "json")]).await;
    assert!(ok, "{stderr}");
    let first = stderr.lines().next().expect("a log line");
    let line: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {first}"));
    assert!(line["fields"]["message"].is_string(), "{line}");
    assert!(dir.path().join("data/larder.db").exists(), "the file's data_dir was not used");
}
