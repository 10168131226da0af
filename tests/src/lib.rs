//! Shared harness for Larder's end-to-end tests: real servers, real nix, real backends.
