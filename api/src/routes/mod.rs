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
        .service(
            web::scope("/api/v1")
                .app_data(api_v1::json_config())
                .route("/accounts", web::post().to(api_v1::sign_up))
                .route("/account", web::get().to(api_v1::get_account))
                .route("/account", web::delete().to(api_v1::delete_account))
                .route("/account/password", web::put().to(api_v1::change_password))
                .route("/sessions", web::post().to(api_v1::log_in))
                .route("/sessions/current", web::delete().to(api_v1::log_out))
                .route("/caches", web::get().to(api_v1::list_caches))
                .route("/caches", web::post().to(api_v1::create_cache))
                .route("/caches/{cache}", web::get().to(api_v1::cache_info))
                .route("/caches/{cache}", web::patch().to(api_v1::update_cache))
                .route("/caches/{cache}", web::delete().to(api_v1::delete_cache))
                .route("/tokens", web::get().to(api_v1::list_tokens))
                .route("/tokens", web::post().to(api_v1::create_token))
                .route("/tokens/{id}", web::delete().to(api_v1::revoke_token))
                .default_service(web::to(api_v1::unknown_route)),
        )
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
