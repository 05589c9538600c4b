//! Telemetry: Prometheus metrics and the hash-chained audit trail.
//!
//! Neither carries key material, plaintext, or secrets: metrics are labelled only by
//! operation, outcome (an AWS error name), PKCS#11 function and CKR code; audit records
//! carry identifiers, the encryption context (as CloudTrail does) and outcomes.

pub mod audit;
pub mod metrics;

pub use audit::{AuditLog, AuditRecord};
pub use metrics::Metrics;
