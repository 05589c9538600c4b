//! p11kms: an AWS KMS-compatible key service whose keys live in a PKCS#11 HSM.
//!
//! Layout, by concern:
//! - [`wire`]: the HTTP edge (AWS JSON 1.1), the one place errors become responses;
//! - [`api`]: request and response shapes of the KMS API, with the model's validation;
//! - [`kms`]: the service core, KMS semantics on typed requests, no HTTP;
//! - [`hsm`]: the only module that calls PKCS#11;
//! - [`store`]: the only module with SQL;
//! - [`auth`]: SigV4 verification against the credential table;
//! - [`config`], [`server`]: configuration and start-up;
//! - [`tls`]: rustls, the PEM files, client certificates (mTLS) and the HTTPS accept loop;
//! - [`cli`]: the command line (`cli::run`, which `main.rs` calls) and its command groups;
//! - `fuzzing` (tests and the `fuzzing` feature only): the fuzz targets that `fuzz/` runs.
//!
//! The benchmark (`p11kms-bench`) is a crate of its own on top of this library
//! (`crates/p11kms-bench`), so the gateway's binary links neither it nor its HTTP client.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod file_error;
/// Fuzz targets (tests and the `fuzzing` feature only; see `fuzz/`).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod hsm;
pub mod kms;
pub mod listener;
pub mod model;
pub mod policy;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod wire;
