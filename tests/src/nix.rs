//! The real nix client (Debian nix-bin 2.8), isolated per test: its own HOME, config dir,
//! netrc and a fresh client cache directory per call (nix caches narinfo answers on disk).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Nix {
    root: PathBuf,
    calls: AtomicUsize,
}

/// What one nix command printed and whether it succeeded.
#[derive(Debug)]
pub struct NixRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl NixRun {
    fn from(output: Output) -> Self {
        Self {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn expect_success(self, what: &str) -> Self {
        assert!(self.success, "{what} failed:\n{}", self.stderr);
        self
    }
}

const CHAIN_NIX: &str = r#"{ tag }:
let
  mk = name: deps: derivation {
    name = "${name}-${tag}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" ''
      echo building ${name}-${tag}
      mkdir -p $out/bin $out/share
      echo ${tag}-${name} > $out/data
      printf '%s\n' ${builtins.concatStringsSep " " (map toString deps)} > $out/deps
      printf '#!/bin/sh\necho ${name}\n' > $out/bin/run && chmod +x $out/bin/run
      ln -s ../data $out/share/link
      : > $out/share/empty
    '' ];
  };
  a = mk "a" [ ];
  b = mk "b" [ a ];
  c = mk "c" [ b a ];
  d = mk "d" [ c ];
in mk "e" [ d b ]
"#;

/// A synthetic closure: `count` paths, each referring to the one before it and to the one at
/// half its index; every `bigEvery`-th holds `bigBytes` of random bytes, the others
/// `smallBytes`, half random and half zeros (so part of it compresses).
const CLOSURE_NIX: &str = r#"{ tag, count, bigEvery, bigBytes, smallBytes }:
let
  paths = builtins.genList mk count;
  isBig = i: i - (i / bigEvery) * bigEvery == 0;
  mk = i: derivation {
    name = "p${toString i}-${tag}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    deps = if i == 0 then [ ] else [ (builtins.elemAt paths (i - 1)) (builtins.elemAt paths (i / 2)) ];
    size = if isBig i then bigBytes else smallBytes / 2;
    zeros = if isBig i then 0 else smallBytes / 2;
    args = [ "-c" ''
      mkdir $out
      head -c $size /dev/urandom > $out/random
      head -c $zeros /dev/zero > $out/zeros
      printf '%s\n' $deps > $out/deps
    '' ];
  };
in builtins.elemAt paths (count - 1)
"#;

impl Nix {
    pub fn new(root: &Path) -> Self {
        let root = root.join("nix-client");
        for dir in ["home", "conf", "cache"] {
            std::fs::create_dir_all(root.join(dir)).expect("nix client dirs");
        }
        std::fs::write(root.join("netrc"), "").expect("netrc");
        Self { root, calls: AtomicUsize::new(0) }
    }

    /// Makes nix send `token` as the netrc password for 127.0.0.1 (or nothing, for `None`).
    pub fn use_token(&self, token: Option<&str>) {
        match token {
            Some(token) => self.use_tokens(&[("127.0.0.1", token)]),
            None => self.use_tokens(&[]),
        }
    }

    /// One netrc line per (host, token).
    pub fn use_tokens(&self, hosts: &[(&str, &str)]) {
        let netrc: String = hosts.iter().map(|(host, token)| format!("machine {host} login larder password {token}\n")).collect();
        std::fs::write(self.root.join("netrc"), netrc).expect("write netrc");
    }

    /// Runs a nix command with the isolated environment; `extra_config` lines are appended
    /// to NIX_CONFIG (e.g. `trusted-public-keys = …`).
    pub async fn run(&self, program: &str, args: &[&str], extra_config: &str) -> NixRun {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let config = format!(
            "experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n\
             netrc-file = {}\nnarinfo-cache-negative-ttl = 0\nnarinfo-cache-positive-ttl = 0\n\
             connect-timeout = 10\n{extra_config}\n",
            self.root.join("netrc").display()
        );
        let output = tokio::process::Command::new(program)
            .args(args)
            .env("HOME", self.root.join("home"))
            .env("XDG_CACHE_HOME", self.root.join("cache").join(call.to_string()))
            .env("XDG_CONFIG_HOME", self.root.join("home/.config"))
            .env("NIX_CONF_DIR", self.root.join("conf"))
            .env("NIX_CONFIG", config)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {program}: {e} (is nix-bin installed? scripts/test.sh installs it)"));
        NixRun::from(output)
    }

    /// Builds a chain of five paths with references (e → d → c → b → a, e → b), unique to
    /// this test, in the machine's /nix/store; returns the top path.
    pub async fn build_chain(&self) -> String {
        let file = self.root.join("chain.nix");
        std::fs::write(&file, CHAIN_NIX).expect("write chain.nix");
        let tag = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let args = [file.to_str().unwrap(), "--argstr", "tag", &tag, "--no-out-link"];
        let mut run = self.run("nix-build", &args, "").await;
        // Tests build in parallel into the machine's one store, whose SQLite database nix
        // 2.8 sometimes gives up waiting for: that is the test machine's, not Larder's.
        for _ in 0..3 {
            if run.success || !run.stderr.contains("is busy") {
                break;
            }
            run = self.run("nix-build", &args, "").await;
        }
        run.expect_success("nix-build of the test chain").stdout.trim().to_owned()
    }

    /// Builds [`CLOSURE_NIX`]'s closure, unique to this test; returns its top path, whose
    /// closure is all `count` paths.
    pub async fn build_closure(&self, count: u32, big_every: u32, big_bytes: u64, small_bytes: u64) -> String {
        let file = self.root.join("closure.nix");
        std::fs::write(&file, CLOSURE_NIX).expect("write closure.nix");
        let tag = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let numbers = [count.to_string(), big_every.to_string(), big_bytes.to_string(), small_bytes.to_string()];
        let args = [
            file.to_str().unwrap(),
            "--argstr",
            "tag",
            &tag,
            "--arg",
            "count",
            &numbers[0],
            "--arg",
            "bigEvery",
            &numbers[1],
            "--arg",
            "bigBytes",
            &numbers[2],
            "--arg",
            "smallBytes",
            &numbers[3],
            "--no-out-link",
            "--max-jobs",
            "4",
        ];
        let mut run = self.run("nix-build", &args, "").await;
        for _ in 0..3 {
            if run.success || !run.stderr.contains("is busy") {
                break;
            }
            run = self.run("nix-build", &args, "").await;
        }
        run.expect_success("nix-build of the synthetic closure").stdout.trim().to_owned()
    }

    /// The closure of a store path (itself included).
    pub async fn closure(&self, path: &str) -> Vec<String> {
        let run = self.run("nix-store", &["-qR", path], "").await.expect_success("nix-store -qR");
        run.stdout.lines().map(str::to_owned).collect()
    }

    /// The NAR serialisation of a local store path.
    pub async fn dump(&self, path: &str) -> Vec<u8> {
        let output = tokio::process::Command::new("nix-store").args(["--dump", path]).output().await.expect("nix-store --dump");
        assert!(output.status.success(), "nix-store --dump {path} failed");
        output.stdout
    }

    /// A fresh chroot store to substitute into.
    pub fn fresh_store(&self, name: &str) -> PathBuf {
        self.root.join("stores").join(name)
    }

    /// Substitutes `path` (and its closure) from the binary cache at `from_url` into the
    /// fresh chroot store `store_name` with `nix copy --from`, signatures required and only
    /// `trusted_keys` (space-separated) trusted. Returns the run, which may have failed,
    /// and the store's root (the copy of `path` is at `root.join(path.trim_start_matches('/'))`).
    pub async fn pull_verified(&self, from_url: &str, path: &str, trusted_keys: &str, store_name: &str) -> (NixRun, PathBuf) {
        let store = self.fresh_store(store_name);
        let to = format!("local?root={}", store.display());
        let run = self.run("nix", &["copy", "--from", from_url, "--to", &to, path], &trusting(trusted_keys)).await;
        (run, store)
    }
}

/// Extra nix configuration that requires signatures and trusts only `trusted_keys`
/// (space-separated public keys).
pub fn trusting(trusted_keys: &str) -> String {
    format!("require-sigs = true\ntrusted-public-keys = {trusted_keys}")
}

/// Asserts that a path substituted into `store_root` has exactly the original's contents.
#[track_caller]
pub fn assert_same_tree(original: &Path, copy: &Path) {
    let output = std::process::Command::new("diff").arg("-r").arg("--no-dereference").arg(original).arg(copy).output().expect("diff");
    assert!(
        output.status.success(),
        "{} differs from {}:\n{}",
        copy.display(),
        original.display(),
        String::from_utf8_lossy(&output.stdout)
    );
    let mode =
        |p: &Path| std::fs::symlink_metadata(p.join("bin/run")).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111);
    assert_eq!(mode(original).ok(), mode(copy).ok(), "executable bits differ");
}

/// Which nix client a [`PrivateNix`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NixClient {
    /// The machine's (Debian bookworm's nix-bin, 2.8).
    Machine,
    /// Debian trixie's nix-bin (2.26) in the chroot at `$TEST_TRIXIE_NIX_ROOT`, built once
    /// by scripts/provision.sh (`larder_provision_nix_trixie`).
    Trixie,
}

/// Where the trixie chroot is (scripts/test-services.sh exports it).
pub fn trixie_root() -> PathBuf {
    let root = std::env::var_os("TEST_TRIXIE_NIX_ROOT").map(PathBuf::from).unwrap_or_else(|| "/var/cache/larder/trixie-nix".into());
    assert!(
        root.join("usr/bin/nix").exists() && root.join(".larder-complete").exists(),
        "no trixie chroot with nix at {}: run `bash scripts/provision.sh nix_trixie` (or scripts/test.sh)",
        root.display()
    );
    root
}

/// Runs in a private mount namespace (`unshare --mount`): the bind mounts it makes exist
/// only for that one process tree and vanish with it, whatever way it ends, so nothing is
/// ever left mounted on the machine. Arguments: the client's root, the chroot ("" for
/// none), then the command.
const PRIVATE_STORE_SCRIPT: &str = r#"set -e
root=$1 jail=$2
shift 2
if [ -z "$jail" ]; then
    mount --bind "$root/nix" /nix
    exec "$@"
fi
for fs in proc dev sys; do mount --rbind "/$fs" "$jail/$fs"; done
mount --bind "$root/nix" "$jail/nix"
mount --bind "$root" "$jail/larder"
exec chroot "$jail" "$@"
"#;

/// A nix client with a store of its own (`/nix` of a private mount namespace is this
/// client's directory), its own HOME, config, netrc and a fresh client cache per call;
/// optionally the newer nix of the trixie chroot. Builds here touch no other test's store,
/// nor the machine's.
pub struct PrivateNix {
    /// On the machine.
    root: PathBuf,
    /// Where the command sees `root`: the same path, or `/larder` in the chroot.
    seen_as: PathBuf,
    chroot: Option<PathBuf>,
    calls: AtomicUsize,
}

impl PrivateNix {
    /// A client under `dir/<name>` (a directory of the test's own).
    pub fn new(dir: &Path, name: &str, client: NixClient) -> Self {
        let root = dir.join(name);
        for sub in ["home", "conf", "cache", "nix"] {
            std::fs::create_dir_all(root.join(sub)).expect("nix client dirs");
        }
        std::fs::write(root.join("netrc"), "").expect("netrc");
        let (chroot, seen_as) = match client {
            NixClient::Machine => (None, root.clone()),
            NixClient::Trixie => (Some(trixie_root()), PathBuf::from("/larder")),
        };
        Self { root, seen_as, chroot, calls: AtomicUsize::new(0) }
    }

    /// A file of this client's directory, as the machine sees it.
    pub fn host_path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The same file as nix sees it.
    pub fn nix_path(&self, relative: &str) -> String {
        self.seen_as.join(relative).display().to_string()
    }

    /// One netrc line per (host, token); none for an empty list.
    pub fn use_tokens(&self, hosts: &[(&str, &str)]) {
        let netrc: String = hosts.iter().map(|(host, token)| format!("machine {host} login larder password {token}\n")).collect();
        std::fs::write(self.root.join("netrc"), netrc).expect("write netrc");
    }

    pub fn use_token(&self, token: Option<&str>) {
        match token {
            Some(token) => self.use_tokens(&[("127.0.0.1", token)]),
            None => self.use_tokens(&[]),
        }
    }

    /// Runs a command of the client (`nix`, `nix-build`, …) with ca-derivations enabled;
    /// `extra_config` lines are appended to NIX_CONFIG.
    pub async fn run(&self, program: &str, args: &[&str], extra_config: &str) -> NixRun {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let config = format!(
            "experimental-features = nix-command ca-derivations\nsandbox = false\nbuild-users-group =\nsubstituters =\n\
             netrc-file = {}\nnarinfo-cache-negative-ttl = 0\nnarinfo-cache-positive-ttl = 0\n\
             connect-timeout = 10\n{extra_config}\n",
            self.nix_path("netrc")
        );
        let jail = self.chroot.as_ref().map_or(String::new(), |p| p.display().to_string());
        let output = tokio::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", PRIVATE_STORE_SCRIPT, "sh"])
            .arg(&self.root)
            .arg(&jail)
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.nix_path("home"))
            .env("XDG_CACHE_HOME", self.nix_path(&format!("cache/{call}")))
            .env("XDG_CONFIG_HOME", self.nix_path("home/.config"))
            .env("NIX_CONF_DIR", self.nix_path("conf"))
            .env("NIX_CONFIG", config)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {program} through unshare: {e}"));
        NixRun::from(output)
    }

    /// `nix --version`'s number, e.g. "2.26.3".
    pub async fn version(&self) -> String {
        let run = self.run("nix", &["--version"], "").await.expect_success("nix --version");
        run.stdout.split_whitespace().last().unwrap_or_default().to_owned()
    }

    /// Writes `text` to a file of the client's directory; returns its path as nix sees it.
    pub fn write_file(&self, relative: &str, text: &str) -> String {
        std::fs::write(self.root.join(relative), text).expect("write a file for nix");
        self.nix_path(relative)
    }

    /// The trixie chroot this client runs in, if any.
    pub fn chroot(&self) -> Option<&Path> {
        self.chroot.as_deref()
    }
}
