//! The tests that drive p11kms gateways (and PostgreSQL) as separate processes, over the wire,
//! compiled as one test binary: 24 binaries each compiled and linked `common` and the SDK
//! again, which was most of the test build's time. Each module is what was one binary.
//!
//! Tests that load a PKCS#11 library into the test process itself (SoftHSM2 reads
//! `SOFTHSM2_CONF` once per process), and the latency-bound fault, limit and crash-loop tests,
//! stay binaries of their own. `scripts/cargo-test-lanes.py` still runs each module here in a
//! process of its own, as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../cluster_script/mod.rs"]
mod cluster_script;
#[path = "../common/mod.rs"]
mod common;
#[path = "../pg_server/mod.rs"]
mod pg_server;

mod aliases;
mod asymmetric;
mod audit_full_disk;
mod authz;
mod cluster;
mod cluster_backup;
mod crypto;
mod deploy;
mod domain;
mod domain_ceremony_embedded;
mod domain_rotation;
mod keys;
mod lost_updates;
mod module_graph;
mod old_blobs;
mod operations;
mod postgres_gateway;
mod reencrypt;
mod rotation;
mod schemes;
mod server;
mod store_suite;
mod tags;
mod tls;
mod wire;
