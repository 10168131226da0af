use std::fmt;

/// A cache name: a DNS label (`[a-z0-9][a-z0-9-]{1,61}[a-z0-9]`), so it is safe in a URL
/// path, as a host name and as a storage key segment. Some names are reserved because
/// they would collide with routes or well-known host names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheName(String);

const RESERVED: &[&str] = &[
    "api",
    "static",
    "assets",
    "login",
    "logout",
    "signup",
    "register",
    "www",
    "admin",
    "dashboard",
    "healthz",
    "readyz",
    "metrics",
    "nar",
    "log",
    "docs",
    "help",
    "settings",
    "account",
    "accounts",
    "caches",
    "tokens",
    "mail",
    "status",
];

impl CacheName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let bytes = name.as_bytes();
        let valid_len = (3..=63).contains(&bytes.len());
        let valid_chars = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        let valid_ends = bytes.first().is_some_and(|b| *b != b'-') && bytes.last().is_some_and(|b| *b != b'-');
        if !(valid_len && valid_chars && valid_ends) {
            return Err(format!(
                "invalid cache name '{}': use 3 to 63 characters a-z, 0-9 and '-', not starting or ending with '-'",
                name.escape_debug()
            ));
        }
        if RESERVED.contains(&name) {
            return Err(format!("the cache name '{name}' is reserved"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CacheName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::CacheName;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["abc", "my-cache", "a1b", "0-9", &"a".repeat(63)] {
            assert_eq!(CacheName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_path_tricks_and_bad_labels() {
        for bad in ["", "ab", "-ab", "ab-", "AbC", "a.b", "../etc", "a/b", "a%2fb", "ca che", "api", "static", &"a".repeat(64), "caché"] {
            assert!(CacheName::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
