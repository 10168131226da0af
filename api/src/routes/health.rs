use actix_web::{web, HttpResponse};

use crate::services::Services;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// The database and the storage both answer.
pub async fn readyz(services: web::Data<Services>) -> HttpResponse {
    match services.ready().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(error) => {
            tracing::warn!(error = ?error, "not ready");
            HttpResponse::ServiceUnavailable().content_type("text/plain").body("not ready: database or storage unreachable\n")
        }
    }
}
