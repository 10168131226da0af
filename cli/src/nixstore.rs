//! The local nix store, as `watch-store` needs it: the directory its files really are in
//! (a chroot store `local?root=/x` keeps /nix/store's files in /x/nix/store), and which
//! paths in it are valid. Both come from nix itself, so they follow NIX_REMOTE and nix.conf
//! as every other nix command does, and as `larder push`'s nix calls do.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context};
use larder_protocol::store_path::STORE_DIR;

/// The directory the files of nix's configured store are in.
pub async fn real_store_dir() -> anyhow::Result<PathBuf> {
    let output = tokio::process::Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "show-config", "--json"])
        .output()
        .await
        .context("running nix show-config (is nix installed?)")?;
    if !output.status.success() {
        bail!("nix show-config failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).context("reading nix show-config --json")?;
    let store = config["store"]["value"].as_str().context("nix show-config names no store")?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    real_dir_of(store, home)
}

/// Where the files of the store `uri` (nix's `store` setting) are on this machine.
fn real_dir_of(uri: &str, home: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let param = |name: &str| url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    if let Some(store) = param("store") {
        if store != STORE_DIR {
            bail!("nix's store {uri} keeps its paths in {store}, but binary caches (and Larder) serve {STORE_DIR}");
        }
    }
    let under_root = |root: &str| PathBuf::from(root).join(STORE_DIR.trim_start_matches('/'));
    match base {
        // The daemon's store is this machine's /nix/store.
        "daemon" => Ok(PathBuf::from(STORE_DIR)),
        _ if base.starts_with("unix://") => Ok(PathBuf::from(STORE_DIR)),
        "auto" | "local" => match (param("real"), param("root")) {
            (Some(real), _) => Ok(PathBuf::from(real)),
            (None, Some(root)) => Ok(under_root(&root)),
            // Without /nix, nix's `auto` falls back to a chroot store in the home directory.
            (None, None) if base == "auto" && !std::path::Path::new(STORE_DIR).exists() => {
                let fallback = home.map(|h| h.join(".local/share/nix/root/nix/store"));
                Ok(fallback.filter(|dir| dir.exists()).unwrap_or_else(|| PathBuf::from(STORE_DIR)))
            }
            (None, None) => Ok(PathBuf::from(STORE_DIR)),
        },
        // A path is a chroot store rooted there.
        _ if base.starts_with('/') => Ok(param("real").map(PathBuf::from).unwrap_or_else(|| under_root(base))),
        _ => bail!(
            "watch-store watches a store on this machine, but nix's store is {uri}: run it where the builds happen, \
             or point NIX_REMOTE (or `store` in nix.conf) at the local store"
        ),
    }
}

/// Those of `paths` that are not valid in the store (never were, not yet, or collected).
pub async fn invalid_of(paths: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let mut invalid = BTreeSet::new();
    for chunk in paths.chunks(1000) {
        let output = tokio::process::Command::new("nix-store")
            .args(["--check-validity", "--print-invalid"])
            .args(chunk)
            .output()
            .await
            .context("running nix-store --check-validity (is nix installed?)")?;
        if !output.status.success() {
            bail!("nix-store --check-validity failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        invalid.extend(String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned));
    }
    Ok(invalid)
}

/// The outputs of (valid) derivations.
pub async fn outputs_of(derivations: &[String]) -> anyhow::Result<Vec<String>> {
    let mut outputs = Vec::new();
    for chunk in derivations.chunks(1000) {
        let output = tokio::process::Command::new("nix-store")
            .args(["--query", "--outputs"])
            .args(chunk)
            .output()
            .await
            .context("running nix-store --query --outputs (is nix installed?)")?;
        if !output.status.success() {
            bail!("nix-store --query --outputs failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        outputs.extend(String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_directory_follows_the_store_url() {
        let dir = |uri: &str| real_dir_of(uri, None).map(|d| d.display().to_string()).map_err(|e| e.to_string());
        assert_eq!(dir("daemon").unwrap(), "/nix/store");
        assert_eq!(dir("unix:///nix/var/nix/daemon-socket/socket").unwrap(), "/nix/store");
        assert_eq!(dir("local").unwrap(), "/nix/store");
        assert_eq!(dir("local?root=/tmp/x/root").unwrap(), "/tmp/x/root/nix/store");
        assert_eq!(dir("local?root=%2Ftmp%2Fy").unwrap(), "/tmp/y/nix/store");
        assert_eq!(dir("/tmp/x/root").unwrap(), "/tmp/x/root/nix/store");
        assert_eq!(dir("local?real=/big/disk/store").unwrap(), "/big/disk/store");
        assert_eq!(dir("auto?root=/r").unwrap(), "/r/nix/store");
        assert!(dir("ssh://builder").unwrap_err().contains("on this machine"));
        assert!(dir("https://cache.nixos.org").unwrap_err().contains("on this machine"));
        assert!(dir("local?store=/gnu/store").unwrap_err().contains("serve /nix/store"));
    }
}
