//! End-to-end: the real nix client against a real Larder server, on both backend pairs.
//! One test binary, so the suite links once.

mod access;
mod accounts;
mod bad_input;
mod cache_hosts;
mod cli;
mod cli_watch;
mod dashboard;
mod dashboard_http;
mod gc;
mod isolation;
mod keys;
mod openapi;
mod operator;
mod push_api;
mod realisations;
mod redirects;
mod security;
mod staleness;
mod substitution;
mod upload_sessions;
