use crate::domain::Permission;

/// What a use-case can answer besides success. Routes render it for their surface: a short
/// text body on the Nix protocol, JSON `{error, message}` on the API.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No access. Also the answer for a cache that does not exist, so names don't leak.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated, but the token lacks the permission.
    #[error("this token may not {action} (it has {has} permission)")]
    Forbidden { action: &'static str, has: Permission },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// Try again after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: &'static str, retry_after: u32 },
    /// The client stopped sending its body (or sent it too slowly): the connection is closed.
    #[error("request body not received in time: the connection is closed")]
    RequestTimeout,
    #[error("body too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// A cache's hard quota would be exceeded.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    /// A stable machine-readable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Unauthorized(_) => "unauthorized",
            ServiceError::Forbidden { .. } => "forbidden",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::Conflict(_) => "conflict",
            ServiceError::PayloadTooLarge { .. } => "payload_too_large",
            ServiceError::InsufficientStorage(_) => "insufficient_storage",
            ServiceError::TooManyRequests { .. } => "too_many_requests",
            ServiceError::RequestTimeout => "request_timeout",
            ServiceError::Internal(_) => "internal",
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// The one message for "no such cache or no access to it".
pub const NO_ACCESS: &str = "cache not found or access denied: check the cache name and your token (netrc password)";
