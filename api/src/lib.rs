//! Larder's server: the Nix binary cache protocol over HTTP, backed by SQL metadata and
//! object storage. `routes → services → {db, storage, signing, auth} → {domain, protocol}`.

pub mod admin;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod routes;
pub mod services;
pub mod signing;
pub mod startup;
pub mod storage;
pub mod telemetry;
