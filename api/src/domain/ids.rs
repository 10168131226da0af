//! Database identities, typed so that a cache id is never passed where an account id is
//! meant. Only `db/` makes them from (and turns them into) raw values.

use std::fmt;

macro_rules! integer_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) i64);

        impl $name {
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

integer_id!(
    /// A cache's id; never reused, so tokens name caches by it (names may be).
    CacheId
);
integer_id!(AccountId);
integer_id!(NarId);
integer_id!(PathId);
integer_id!(RealisationId);

/// A token's id: the `jti` of its JWT, a random UUID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub(crate) String);

impl TokenId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// A token id as presented (in a URL or a JWT): it names a token only if one has it.
    pub fn from_presented(id: &str) -> Self {
        Self(id.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
