//! The binary cache's URL layout and media types, as the nix client uses them: what a
//! server routes and answers with, and nothing about how it does so.

pub use crate::compression::{nar_url, parse_nar_file_name};
use crate::store_path::StorePathHash;
use crate::Error;

/// `nix-cache-info`.
pub const CACHE_INFO_MIME: &str = "text/x-nix-cache-info";
/// `<hash>.narinfo`.
pub const NARINFO_MIME: &str = "text/x-nix-narinfo";
/// `nar/<file hash>.nar[.<ext>]`, whatever its compression (nix never sees a
/// Content-Encoding: the compression is part of the file).
pub const NAR_MIME: &str = "application/x-nix-nar";
/// `<hash>.ls`.
pub const LISTING_MIME: &str = "application/json";
/// `realisations/<id>.doi`.
pub const REALISATION_MIME: &str = "application/json";
/// `log/<drv>`.
pub const BUILD_LOG_MIME: &str = "text/plain; charset=utf-8";

/// The store path hash that names `<hash>.narinfo` or `<hash>.ls` (the part of the file
/// name before its extension). Refused before any lookup when it is not 32 nix32 chars.
pub fn parse_hash_part(hash: &str) -> Result<StorePathHash, Error> {
    StorePathHash::parse(hash)
}
