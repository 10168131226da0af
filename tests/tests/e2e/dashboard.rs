//! The web dashboard in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser/*.mjs), with the real nix client pushing and substituting through what
//! the pages show. Each script prints one line per passed step; every dashboard page is
//! audited with axe-core (no serious or critical violation) and screenshotted at 1280 and
//! 375 px into target/browser-screenshots/<backend>/.
//!
//! Needs /usr/bin/chromium and tests/browser/node_modules: `bash scripts/provision.sh browser`
//! (scripts/test.sh runs it). The scripts run one at a time, each bounded by SCRIPT_LIMIT.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use larder_tests::{on_both_backends, Backend, Nix, TestServer};
use tokio::io::AsyncReadExt;

on_both_backends!(journey_through_the_dashboard_with_the_real_nix_client, the_dashboard_refuses_what_it_must,);

/// Longest one script may run, browser start to exit (the script stops itself 10 s before).
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

/// One browser at a time: the machine has two cores, and a script's time limit should not
/// count the time it waited for another's.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the repository").to_path_buf()
}

fn browser_dir() -> PathBuf {
    repo_root().join("tests/browser")
}

/// Fails, saying how to install it, when the browser or the npm packages are missing.
fn require_browser() {
    let missing: Vec<String> = [
        (PathBuf::from(CHROMIUM), "Debian's chromium"),
        (browser_dir().join("node_modules/playwright-core/package.json"), "playwright-core (npm ci in tests/browser)"),
        (browser_dir().join("node_modules/axe-core/axe.min.js"), "axe-core (npm ci in tests/browser)"),
    ]
    .into_iter()
    .filter(|(path, _)| !path.exists())
    .map(|(path, what)| format!("{} ({what})", path.display()))
    .collect();
    assert!(missing.is_empty(), "the browser tests need {}: run `bash scripts/provision.sh browser`", missing.join(", "));
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(node.as_ref().is_ok_and(|o| o.status.success()), "node is not runnable ({node:?}): run `bash scripts/provision.sh browser`");
}

fn backend_dir(backend: Backend) -> &'static str {
    match backend {
        Backend::SqliteFs => "sqlite_fs",
        Backend::PostgresS3 => "postgres_s3",
    }
}

/// Runs `node tests/browser/<script>` with `vars`; panics with everything it printed unless
/// it exits 0 within SCRIPT_LIMIT.
async fn run_script(script: &str, scratch: &Path, screenshots: &Path, vars: &[(&str, String)]) {
    require_browser();
    let _one_at_a_time = ONE_BROWSER.lock().await;
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).expect("browser HOME");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(browser_dir().join(script))
        .current_dir(browser_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .env("HOME", &home)
        .env("TMPDIR", scratch)
        .env("LANG", "C.UTF-8")
        .env("LARDER_SCREENSHOT_DIR", screenshots)
        .env("LARDER_BROWSER_TIMEOUT_SECS", (SCRIPT_LIMIT.as_secs() - 10).to_string())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let mut child = command.spawn().unwrap_or_else(|e| panic!("starting node {script}: {e} (run `bash scripts/provision.sh browser`)"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let err = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let status = match tokio::time::timeout(SCRIPT_LIMIT, child.wait()).await {
        Ok(status) => Some(status.expect("waiting for node")),
        Err(_) => {
            // SIGTERM lets playwright close Chromium; then no more waiting.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            None
        }
    };
    let (stdout, stderr) = (out.await.unwrap_or_default(), err.await.unwrap_or_default());
    let elapsed = started.elapsed().as_secs_f64();
    match status {
        // Shown by `cargo test -- --nocapture`: one line per passed step.
        Some(status) if status.success() => println!("node tests/browser/{script} passed ({elapsed:.1} s):\n{stdout}{stderr}"),
        Some(status) => panic!(
            "node tests/browser/{script} failed ({status}, {elapsed:.1} s); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            screenshots.display()
        ),
        None => panic!(
            "node tests/browser/{script} did not finish within {} s and was stopped\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            SCRIPT_LIMIT.as_secs()
        ),
    }
}

/// Builds a closure unique to this test and runs `script` against the server with it.
async fn run_against(server: &TestServer, script: &str) {
    let nix = Nix::new(server.dir.path());
    let top = nix.build_chain().await;
    let scratch = server.dir.path().join(format!("browser-{}", script.trim_end_matches(".mjs")));
    let nix_root = scratch.join("nix");
    std::fs::create_dir_all(&nix_root).expect("nix scratch directory");
    let screenshots = repo_root().join("target/browser-screenshots").join(backend_dir(server.backend));
    let vars = [("LARDER_URL", server.base_url.clone()), ("LARDER_STORE_PATH", top), ("LARDER_NIX_ROOT", nix_root.display().to_string())];
    run_script(script, &scratch, &screenshots, &vars).await;
}

/// Sign up, private cache, write token, `nix copy --to` with the netrc line as shown, usage
/// on the overview, read token, substitution with the nix.conf snippet as shown, revoke on
/// the confirmation page, the same substitution refused; every page audited.
async fn journey_through_the_dashboard_with_the_real_nix_client(server: &TestServer) {
    run_against(server, "journey.mjs").await;
}

/// Taken username, weak password, wrong password, forms without a valid CSRF token,
/// another account's cache (like a missing one), deleting a referenced path, and a
/// keyboard-only sign-up.
async fn the_dashboard_refuses_what_it_must(server: &TestServer) {
    run_against(server, "refusals.mjs").await;
}

/// The helpers themselves (tests/browser/selftest.mjs): under the dashboard's CSP, axe-core
/// runs, clean pages pass and pages with serious violations fail, screenshots at both widths.
#[tokio::test]
async fn browser_audit_works_under_the_dashboards_csp() {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let screenshots = repo_root().join("target/browser-screenshots/selftest");
    run_script("selftest.mjs", scratch.path(), &screenshots, &[]).await;
}
