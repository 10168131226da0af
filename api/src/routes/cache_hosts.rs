//! Per-cache host names: with `base_domain = "cache.example.com"`, a request to
//! `myteam.cache.example.com/x.narinfo` is served as `/myteam/x.narinfo`. Other hosts
//! (the base domain itself, IP addresses) keep path-based URLs.

use actix_web::dev::ServiceRequest;
use actix_web::http::{header, Uri};

use crate::domain::CacheName;

/// The cache a Host header names under `base_domain`, if any.
pub fn cache_of_host(host: &str, base_domain: &str) -> Option<CacheName> {
    let host = host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let label = host.to_ascii_lowercase().strip_suffix(base_domain)?.strip_suffix('.')?.to_owned();
    CacheName::parse(&label).ok()
}

/// Rewrites the request path when its Host names a cache, before routing.
pub fn rewrite(req: &mut ServiceRequest, base_domain: &str) {
    let Some(host) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) else { return };
    let Some(cache) = cache_of_host(host, base_domain) else { return };
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("/{cache}{path_and_query}").parse::<Uri>() else { return };
    req.match_info_mut().get_mut().update(&uri);
    req.head_mut().uri = uri;
}

#[cfg(test)]
mod tests {
    use super::cache_of_host;

    #[test]
    fn finds_the_cache_label() {
        let base = "cache.example.com";
        assert_eq!(cache_of_host("myteam.cache.example.com", base).unwrap().as_str(), "myteam");
        assert_eq!(cache_of_host("MyTeam.cache.example.com:8443", base).unwrap().as_str(), "myteam");
        for other in [
            "cache.example.com",
            "a.b.cache.example.com",
            "evilcache.example.com",
            "api.cache.example.com",
            "127.0.0.1:80",
            "x.cache.example.com.evil",
        ] {
            assert!(cache_of_host(other, base).is_none(), "{other}");
        }
    }
}
