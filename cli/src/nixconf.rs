//! Adding a cache to the nix.conf and the netrc nix reads, without disturbing anything else
//! in them: other settings, other caches, other machines' credentials. Running it again
//! changes nothing.

use std::path::{Path, PathBuf};

/// Adds `values` to the list setting `key` (e.g. `extra-substituters`): to its first
/// assignment if there is one, else as a new line at the end. Returns the text unchanged
/// when every value is already there.
pub fn add_to_list_setting(conf: &str, key: &str, values: &[String]) -> String {
    let lines: Vec<&str> = conf.lines().collect();
    let existing = lines.iter().position(|line| setting_value(line, key).is_some());
    match existing {
        Some(index) => {
            let current: Vec<&str> = setting_value(lines[index], key).unwrap_or("").split_whitespace().collect();
            let missing: Vec<&str> = values.iter().map(String::as_str).filter(|v| !current.contains(v)).collect();
            if missing.is_empty() {
                return conf.to_owned();
            }
            let mut all = current;
            all.extend(missing);
            let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            out[index] = format!("{key} = {}", all.join(" "));
            join_lines(&out, conf.ends_with('\n') || conf.is_empty())
        }
        None => {
            let mut out = conf.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("{key} = {}\n", values.join(" ")));
            out
        }
    }
}

/// The value of `key = value` on this line, if the line sets `key`.
pub fn setting_value<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let line = line.split('#').next().unwrap_or("");
    let (name, value) = line.split_once('=')?;
    (name.trim() == key).then(|| value.trim())
}

/// The last value `key` is given in a nix.conf text.
pub fn last_setting<'c>(conf: &'c str, key: &str) -> Option<&'c str> {
    conf.lines().rev().find_map(|line| setting_value(line, key))
}

fn join_lines(lines: &[String], trailing_newline: bool) -> String {
    let mut out = lines.join("\n");
    if trailing_newline {
        out.push('\n');
    }
    out
}

/// Sets the netrc credentials for `host`: replaces a one-line entry for that host, or
/// appends one. Entries for other hosts (and anything it does not understand) stay as
/// they are. nix (curl) matches netrc entries by host name only, so one host holds one
/// token.
pub fn set_netrc_entry(netrc: &str, host: &str, password: &str) -> String {
    let wanted = format!("machine {host} login larder password {password}");
    let mut lines: Vec<String> = netrc.lines().map(str::to_owned).collect();
    let same_host = |line: &str| {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        tokens.first() == Some(&"machine") && tokens.get(1) == Some(&host) && tokens.contains(&"password")
    };
    match lines.iter().position(|line| same_host(line)) {
        Some(index) if lines[index].trim() == wanted => netrc.to_owned(),
        Some(index) => {
            lines[index] = wanted;
            join_lines(&lines, true)
        }
        None => {
            let mut out = netrc.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&wanted);
            out.push('\n');
            out
        }
    }
}

/// Where the nix.conf nix reads lives: `$NIX_CONF_DIR/nix.conf` when `NIX_CONF_DIR` is
/// set or for root (the daemon's, `/etc/nix` by default), else the user's
/// `$XDG_CONFIG_HOME/nix/nix.conf`.
pub fn nix_conf_path(is_root: bool) -> anyhow::Result<PathBuf> {
    if let Some(dir) = nix_conf_dir_from_env() {
        return Ok(dir.join("nix.conf"));
    }
    if is_root {
        return Ok(PathBuf::from("/etc/nix/nix.conf"));
    }
    Ok(crate::config::config_home()?.join("nix").join("nix.conf"))
}

fn nix_conf_dir_from_env() -> Option<PathBuf> {
    std::env::var_os("NIX_CONF_DIR").filter(|d| !d.is_empty()).map(PathBuf::from)
}

/// The netrc nix reads: the `netrc-file` a nix.conf names, else `$NIX_CONF_DIR/netrc`
/// (`/etc/nix/netrc` by default).
pub fn netrc_path(conf_texts: &[&str]) -> PathBuf {
    if let Some(file) = conf_texts.iter().rev().find_map(|text| last_setting(text, "netrc-file")) {
        return PathBuf::from(file);
    }
    nix_conf_dir_from_env().unwrap_or_else(|| PathBuf::from("/etc/nix")).join("netrc")
}

/// True if `user` (in `groups`) is among the daemon's `trusted-users` in `system_conf`
/// (nix's default is root only).
pub fn is_trusted_user(system_conf: &str, user: &str, groups: &[String]) -> bool {
    let trusted = last_setting(system_conf, "trusted-users").unwrap_or("root");
    let extra = last_setting(system_conf, "extra-trusted-users").unwrap_or("");
    trusted
        .split_whitespace()
        .chain(extra.split_whitespace())
        .any(|entry| entry == "*" || entry == user || entry.strip_prefix('@').is_some_and(|group| groups.iter().any(|g| g == group)))
}

/// Writes `text` to `path` unless it already holds exactly that; true if it wrote.
/// `private` files (netrc: it holds tokens) are made readable by their owner only.
pub fn write_if_changed(path: &Path, text: &str, private: bool) -> anyhow::Result<bool> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    let dir = path.parent().context("a file path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("a file path has a name")?.to_string_lossy();
    let temporary = dir.join(format!(".{name}.larder-tmp"));
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("cannot write {} (run as root, or set NIX_CONF_DIR)", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_new_setting_is_appended_and_nothing_else_changes() {
        let conf = "sandbox = true\n# a comment\n";
        let out = add_to_list_setting(conf, "extra-substituters", &v(&["https://l/c"]));
        assert_eq!(out, "sandbox = true\n# a comment\nextra-substituters = https://l/c\n");
        assert_eq!(add_to_list_setting("", "k", &v(&["a"])), "k = a\n");
        assert_eq!(add_to_list_setting("x = 1", "k", &v(&["a"])), "x = 1\nk = a\n");
    }

    #[test]
    fn values_join_an_existing_setting_once() {
        let conf = "extra-substituters = https://other/c\nmax-jobs = 4\n";
        let once = add_to_list_setting(conf, "extra-substituters", &v(&["https://l/c"]));
        assert_eq!(once, "extra-substituters = https://other/c https://l/c\nmax-jobs = 4\n");
        assert_eq!(add_to_list_setting(&once, "extra-substituters", &v(&["https://l/c"])), once, "idempotent");
    }

    #[test]
    fn settings_are_read_like_nix_reads_them() {
        assert_eq!(setting_value("  netrc-file = /a/netrc # mine", "netrc-file"), Some("/a/netrc"));
        assert_eq!(setting_value("# netrc-file = /a", "netrc-file"), None);
        assert_eq!(setting_value("netrc-files = /a", "netrc-file"), None);
        assert_eq!(last_setting("netrc-file = /a\nnetrc-file = /b\n", "netrc-file"), Some("/b"));
        assert_eq!(netrc_path(&["", "netrc-file = /x/netrc\n"]), PathBuf::from("/x/netrc"));
    }

    #[test]
    fn netrc_entries_of_other_hosts_stay() {
        let netrc = "machine other.example login me password secret\n";
        let once = set_netrc_entry(netrc, "l.example", "t1");
        assert_eq!(once, "machine other.example login me password secret\nmachine l.example login larder password t1\n");
        assert_eq!(set_netrc_entry(&once, "l.example", "t1"), once, "idempotent");
        let replaced = set_netrc_entry(&once, "l.example", "t2");
        assert_eq!(replaced, "machine other.example login me password secret\nmachine l.example login larder password t2\n");
    }

    #[test]
    fn trusted_users_follow_nix_rules() {
        let groups = v(&["wheel"]);
        assert!(!is_trusted_user("", "alice", &groups), "root only by default");
        assert!(is_trusted_user("", "root", &[]));
        assert!(is_trusted_user("trusted-users = root @wheel\n", "alice", &groups));
        assert!(is_trusted_user("trusted-users = root\nextra-trusted-users = alice\n", "alice", &[]));
        assert!(!is_trusted_user("trusted-users = root bob\n", "alice", &groups));
    }
}
