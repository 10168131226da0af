//! Where the CLI finds its server and token: flags, then the environment (`LARDER_SERVER`,
//! `LARDER_TOKEN`), then the file `larder login` writes.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// `$XDG_CONFIG_HOME/larder/config.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub server: Option<String>,
    pub token: Option<String>,
}

/// `$XDG_CONFIG_HOME`, else `$HOME/.config`.
pub fn config_home() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config"))
}

pub fn config_path() -> anyhow::Result<PathBuf> {
    Ok(config_home()?.join("larder").join("config.toml"))
}

impl Config {
    pub fn load() -> anyhow::Result<Self> {
        let path = config_path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file readable by its owner only: it holds a token.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = config_path()?;
        let dir = path.parent().expect("the config file is in a directory");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let text = toml::to_string(self)?;
        let temporary = dir.join(".config.toml.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("writing {}", temporary.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// The server and token to use, once flags, environment and file have had their say.
pub struct Resolved {
    pub server: String,
    pub token: Option<String>,
}

impl Resolved {
    pub fn new(server_flag: Option<String>, token_flag: Option<String>) -> anyhow::Result<Self> {
        let file = Config::load()?;
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let Some(server) = server_flag.or_else(|| from_env("LARDER_SERVER")).or(file.server) else {
            bail!("no server: pass --server URL, set LARDER_SERVER, or run `larder login --server URL`");
        };
        let token = token_flag.or_else(|| from_env("LARDER_TOKEN")).or(file.token);
        Ok(Self { server: normalized_server(&server)?, token })
    }
}

/// `https://host/` → `https://host`; anything that is not an http(s) URL is refused.
pub fn normalized_server(server: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(server.trim()).with_context(|| format!("'{server}' is not a URL (e.g. https://larder.example.com)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("'{server}' is not an http(s) URL (e.g. https://larder.example.com)");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_http_urls_without_a_trailing_slash() {
        assert_eq!(normalized_server("https://larder.example.com/").unwrap(), "https://larder.example.com");
        assert_eq!(normalized_server("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert!(normalized_server("larder.example.com").is_err());
        assert!(normalized_server("ftp://larder.example.com").is_err());
    }
}
