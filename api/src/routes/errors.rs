//! How a `ServiceError` looks on each surface.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::services::ServiceError;

fn status(error: &ServiceError) -> StatusCode {
    match error {
        ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        ServiceError::Forbidden { .. } => StatusCode::FORBIDDEN,
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ServiceError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        ServiceError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message a client may see: internal details stay in the log.
fn public_message(error: &ServiceError) -> String {
    match error {
        ServiceError::Internal(cause) => {
            tracing::error!(error = ?cause, "request failed");
            "internal server error".to_owned()
        }
        other => other.to_string(),
    }
}

fn builder(error: &ServiceError) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::build(status(error));
    match error {
        ServiceError::Unauthorized(_) => {
            response.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="larder""#));
        }
        ServiceError::TooManyRequests { retry_after, .. } => {
            response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        // The rest of a stalled body is not worth waiting for: drop the connection.
        ServiceError::RequestTimeout => {
            response.force_close();
        }
        _ => {}
    }
    response
}

/// On the Nix protocol: a short text body, which nix prints to the user.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct NixError(#[from] pub ServiceError);

impl ResponseError for NixError {
    fn status_code(&self) -> StatusCode {
        status(&self.0)
    }

    fn error_response(&self) -> HttpResponse {
        builder(&self.0).content_type("text/plain; charset=utf-8").body(public_message(&self.0) + "\n")
    }
}

/// On the REST API: `{"error": code, "message": text}`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub ServiceError);

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status(&self.0)
    }

    fn error_response(&self) -> HttpResponse {
        builder(&self.0).json(serde_json::json!({ "error": self.0.code(), "message": public_message(&self.0) }))
    }
}
