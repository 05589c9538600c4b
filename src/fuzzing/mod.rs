//! Fuzz targets: one function per input surface that a client or an operator controls.
//!
//! Each function takes arbitrary bytes, drives the real parser or verifier, and panics when an
//! invariant breaks (a panic is what a fuzzer reports as a crash). The AFL++ harnesses in
//! `fuzz/` call these functions unchanged, and [`replay`]'s unit tests feed them every file of
//! the committed corpora (`fuzz/corpus/<target>/`) and every crash ever found
//! (`fuzz/regressions/<target>/`), so `cargo test` is the fuzz smoke of CI.
//!
//! Compiled only for tests and with the `fuzzing` feature; the panics are the point here,
//! which is why this module, unlike the service code, asserts. An `expect` here is such an
//! assert, each allowed where it stands.

mod api;
mod ciphertext;
mod policy;
mod seed;
mod sigv4;

pub use api::api_request;
pub use ciphertext::ciphertext;
pub use policy::policy;
pub use seed::seed;
pub use sigv4::sigv4;

/// A fuzz target: bytes in, a panic on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by the name its corpus directory and AFL binary carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("ciphertext", ciphertext),
    ("api_request", api_request),
    ("sigv4", sigv4),
    ("policy", policy),
    ("seed", seed),
];

/// Whether `needle` occurs in `haystack` (byte-wise; an empty needle never counts).
fn contains(haystack: &str, needle: &str) -> bool {
    !needle.is_empty() && haystack.contains(needle)
}

#[cfg(test)]
mod replay;
