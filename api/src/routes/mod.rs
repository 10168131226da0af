//! HTTP only. The one route table of the server is `configure`.

mod api_v1;
mod binary_cache;
mod body;
pub mod cache_hosts;
mod dashboard;
mod errors;
mod extract;
mod health;

use actix_web::{web, HttpResponse};

pub use body::BodyTimeouts;
pub use dashboard::{CookiePolicy, DashboardSettings};

/// Declares the /api/v1 routes once, for both the router and `API_V1_ROUTES` (which the
/// tests hold against openapi.yaml).
macro_rules! api_v1_routes {
    ($($method:ident $path:literal => $handler:ident),* $(,)?) => {
        /// Every /api/v1 route as (method, path), in the router's order.
        pub const API_V1_ROUTES: &[(&str, &str)] = &[$((stringify!($method), concat!("/api/v1", $path))),*];

        fn api_v1_scope() -> actix_web::Scope {
            web::scope("/api/v1")
                .app_data(api_v1::json_config())
                $(.route($path, web::$method().to(api_v1::$handler)))*
                .default_service(web::to(api_v1::unknown_route))
        }
    };
}

api_v1_routes! {
    post "/accounts" => sign_up,
    get "/account" => get_account,
    delete "/account" => delete_account,
    put "/account/password" => change_password,
    post "/sessions" => log_in,
    delete "/sessions/current" => log_out,
    get "/caches" => list_caches,
    post "/caches" => create_cache,
    get "/caches/{cache}" => cache_info,
    patch "/caches/{cache}" => update_cache,
    delete "/caches/{cache}" => delete_cache,
    get "/caches/{cache}/keys" => list_keys,
    post "/caches/{cache}/keys" => add_key,
    delete "/caches/{cache}/keys/{key}" => retire_key,
    post "/caches/{cache}/public-keys" => register_public_key,
    post "/caches/{cache}/secret-key" => import_secret_key,
    put "/caches/{cache}/signing-mode" => set_signing_mode,
    get "/caches/{cache}/gc" => get_gc_policy,
    put "/caches/{cache}/gc" => set_gc_policy,
    get "/caches/{cache}/gc/preview" => preview_gc,
    get "/caches/{cache}/pins" => list_pins,
    post "/caches/{cache}/pins" => create_pin,
    delete "/caches/{cache}/pins/{name}" => delete_pin,
    delete "/caches/{cache}/paths/{hash}" => delete_path,
    get "/caches/{cache}/usage" => cache_usage,
    post "/caches/{cache}/missing-paths" => missing_paths,
    post "/caches/{cache}/uploads" => open_upload,
    get "/caches/{cache}/uploads/{id}" => get_upload,
    delete "/caches/{cache}/uploads/{id}" => abort_upload,
    put "/caches/{cache}/uploads/{id}/parts/{number}" => put_upload_part,
    post "/caches/{cache}/uploads/{id}/complete" => complete_upload,
    get "/account/usage" => account_usage,
    get "/tokens" => list_tokens,
    post "/tokens" => create_token,
    delete "/tokens/{id}" => revoke_token,
}

/// Every route the server answers, in one place.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use binary_cache as bc;
    // The dashboard first: its paths (/caches/…, /account) are reserved cache names, so
    // no binary cache path can mean one of them.
    cfg.configure(dashboard::configure)
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(api_v1_scope())
        .service(
            web::resource("/{cache}/nix-cache-info")
                .route(web::get().to(bc::get_cache_info))
                .route(web::head().to(bc::get_cache_info))
                .route(web::put().to(bc::put_cache_info)),
        )
        .service(
            web::resource("/{cache}/{hash}.narinfo")
                .route(web::get().to(bc::get_narinfo))
                .route(web::head().to(bc::get_narinfo))
                .route(web::put().to(bc::put_narinfo)),
        )
        .service(
            web::resource("/{cache}/{hash}.ls")
                .route(web::get().to(bc::get_listing))
                .route(web::head().to(bc::get_listing))
                .route(web::put().to(bc::put_listing)),
        )
        .service(
            web::resource("/{cache}/nar/{file}")
                .route(web::get().to(bc::get_nar))
                .route(web::head().to(bc::get_nar))
                .route(web::put().to(bc::put_nar)),
        )
        .service(
            web::resource("/{cache}/realisations/{id}.doi")
                .route(web::get().to(bc::get_realisation))
                .route(web::head().to(bc::get_realisation))
                .route(web::put().to(bc::put_realisation)),
        )
        .service(
            web::resource("/{cache}/log/{drv}")
                .route(web::get().to(bc::get_log))
                .route(web::head().to(bc::get_log))
                .route(web::put().to(bc::put_log)),
        )
        .default_service(web::to(|| async { not_found() }));
}

/// A short text 404, like every other refusal (nix prints short bodies to the user).
fn not_found() -> HttpResponse {
    HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("not found\n")
}
