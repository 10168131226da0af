//! What an account is made of, validated once at the edge.

use std::fmt;

/// A username: 2 to 39 characters a-z, 0-9 and '-', not starting or ending with '-'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(name: &str) -> Result<Self, String> {
        let bytes = name.as_bytes();
        let ok = (2..=39).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err("username must be 2 to 39 characters a-z, 0-9 and '-', not starting or ending with '-'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, checked for shape only (the mailbox is not verified), kept lowercase
/// so that uniqueness ignores case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(email: &str) -> Result<Self, String> {
        let email = email.trim().to_ascii_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            });
        if valid {
            Ok(Self(email))
        } else {
            Err("email must look like name@example.com (at most 254 characters)".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: long enough to resist guessing, short enough to hash cheaply.
pub struct NewPassword(String);

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 256;

impl NewPassword {
    pub fn parse(password: &str, username: &str) -> Result<Self, String> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(format!("password must be at most {MAX_PASSWORD_BYTES} bytes"));
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(format!("password must be at least {MIN_PASSWORD_CHARS} characters"));
        }
        let mut chars = password.chars();
        let first = chars.next();
        if chars.all(|c| Some(c) == first) || password.to_lowercase().contains(&username.to_lowercase()) {
            return Err("password is too easy to guess: no repeated single character, no username".into());
        }
        Ok(Self(password.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["al", "alice", "a-1", &"a".repeat(39)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "-al", "al-", "Alice", "al ice", "al_ice", &"a".repeat(40), ""] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(Email::parse(" Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        for bad in
            ["alice", "@example.com", "alice@", "alice@example", "a b@example.com", "a@b@c.com", &format!("{}@x.com", "a".repeat(65))]
        {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(NewPassword::parse("correct horse battery", "alice").is_ok());
        assert!(NewPassword::parse("short", "alice").is_err());
        assert!(NewPassword::parse("aaaaaaaaaaaaaa", "alice").is_err());
        assert!(NewPassword::parse("my-alice-password", "alice").is_err());
        assert!(NewPassword::parse(&"x1".repeat(200), "alice").is_err());
        assert_eq!(format!("{:?}", NewPassword::parse("correct horse battery", "al").unwrap()), "NewPassword(***)");
    }
}
