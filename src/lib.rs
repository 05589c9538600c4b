//! p11kms: an AWS KMS-compatible key service whose keys live in a PKCS#11 HSM.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod error;
pub mod hsm;
pub mod model;
pub mod store;
