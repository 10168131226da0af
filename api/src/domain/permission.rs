use std::fmt;
use std::str::FromStr;

/// What a token may do on a cache. Ordered: each permission includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }

    /// Whether a holder of `self` may do what needs `required`.
    pub fn allows(self, required: Permission) -> bool {
        self >= required
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            "admin" => Ok(Permission::Admin),
            other => Err(format!("unknown permission '{other}': expected read, write or admin")),
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Permission::*;

    #[test]
    fn higher_permissions_include_lower_ones() {
        assert!(Admin.allows(Write) && Admin.allows(Read) && Write.allows(Read));
        assert!(!Read.allows(Write) && !Write.allows(Admin));
    }

    #[test]
    fn parses_round_trip() {
        for p in [Read, Write, Admin] {
            assert_eq!(p.as_str().parse::<super::Permission>().unwrap(), p);
        }
        assert!("owner".parse::<super::Permission>().is_err());
    }
}
