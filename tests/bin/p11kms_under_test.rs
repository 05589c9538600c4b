//! The gateway as the integration tests run it: the same entry point as the shipped `p11kms`
//! binary (`p11kms::cli::run`) and the same allocator. A binary of the test package, so that
//! cargo rebuilds it with the tests: they can never start a stale gateway.

#![forbid(unsafe_code)]

use std::process::ExitCode;

/// The shipped binary's allocator (src/main.rs says why), so the tests time the same process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    p11kms::cli::run()
}
