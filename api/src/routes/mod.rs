//! HTTP only. The one route table of the server is `configure`.

mod api_v1;
mod binary_cache;
mod body;
mod errors;
mod health;

use actix_web::{web, HttpResponse};

/// Every route the server answers, in one place.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use binary_cache as bc;
    cfg.route("/", web::get().to(health::landing))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/api/v1/caches/{cache}", web::get().to(api_v1::cache_info))
        .service(
            web::resource("/{cache}/nix-cache-info")
                .route(web::get().to(bc::get_cache_info))
                .route(web::head().to(bc::get_cache_info))
                .route(web::put().to(bc::put_cache_info)),
        )
        .service(
            web::resource("/{cache}/nar/{file}")
                .route(web::get().to(bc::get_nar))
                .route(web::head().to(bc::get_nar))
                .route(web::put().to(bc::put_nar)),
        )
        .service(
            web::resource("/{cache}/log/{drv}")
                .route(web::get().to(bc::get_log))
                .route(web::head().to(bc::get_log))
                .route(web::put().to(bc::put_log)),
        )
        .service(
            web::resource("/{cache}/{file}")
                .route(web::get().to(bc::get_file))
                .route(web::head().to(bc::get_file))
                .route(web::put().to(bc::put_file)),
        )
        .default_service(web::to(|| async { not_found() }));
}

/// A short text 404, like every other refusal (nix prints short bodies to the user).
fn not_found() -> HttpResponse {
    HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("not found\n")
}
