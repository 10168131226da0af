//! Shared harness for Larder's end-to-end tests: a real server per test on either backend
//! pair, the real nix client in isolation, and helpers to inspect what was stored.

pub mod api;
pub mod backends;
pub mod consistency;
pub mod generate;
pub mod nix;
pub mod raw_http;
pub mod server;

pub use api::{Api, TokenKinds, PASSPHRASE};
pub use larder_api::config::Settings;
pub use nix::{assert_same_tree, trusting, Nix, NixClient, NixRun, PrivateNix};
pub use server::{run_on, Backend, TestCache, TestServer};

/// The 32-character hash part of an absolute store path (`/nix/store/<hash>-<name>`), which
/// names its `.narinfo` and `.ls`. Panics if `store_path` is not a valid store path.
#[track_caller]
pub fn hash_part(store_path: &str) -> String {
    store_path_of(store_path).hash_part().to_owned()
}

/// An absolute store path, parsed (panics if it is not one).
#[track_caller]
pub fn store_path_of(store_path: &str) -> larder_protocol::store_path::StorePath {
    larder_protocol::store_path::StorePath::parse(store_path).unwrap_or_else(|e| panic!("{store_path:?} is no store path: {e}"))
}

/// Hex-free nix32 sha256 of bytes, as NAR URLs and narinfos name them.
pub fn nix32_sha256(bytes: &[u8]) -> String {
    larder_protocol::hash::Sha256Hash::digest(bytes).to_nix32()
}

/// The `larder-server` binary of this build (scripts/test.sh builds it before the tests).
pub fn server_binary() -> std::path::PathBuf {
    built_binary("larder-server", "larder-api")
}

/// The `larder` CLI binary of this build (scripts/test.sh builds it before the tests).
pub fn cli_binary() -> std::path::PathBuf {
    built_binary("larder", "larder-cli")
}

fn built_binary(name: &str, package: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let binary = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run the tests through `bash scripts/test.sh`, or `cargo build -p {package}` first",
        binary.display()
    );
    binary
}
