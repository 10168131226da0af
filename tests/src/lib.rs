//! Shared harness for Larder's end-to-end tests: a real server per test on either backend
//! pair, the real nix client in isolation, and helpers to inspect what was stored.

pub mod backends;
pub mod nix;
pub mod server;

pub use nix::{assert_same_tree, Nix, NixRun};
pub use server::{run_on, Backend, TestCache, TestServer};

/// Hex-free nix32 sha256 of bytes, as NAR URLs and narinfos name them.
pub fn nix32_sha256(bytes: &[u8]) -> String {
    larder_protocol::hash::Sha256Hash::digest(bytes).to_nix32()
}
