//! The dashboard's views. The dashboard arrives with its own issue; until then this crate
//! only carries the landing page text shared by the server.

/// Plain-text landing page served at `/`, pointing operators at the README.
pub const LANDING_TEXT: &str = "Larder: a Nix binary cache.\nSubstitute from /{cache}; see the README for set-up.\n";
