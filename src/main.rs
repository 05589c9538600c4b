//! The `p11kms` binary: the library's command line (`p11kms::cli::run`) and the allocator.

#![forbid(unsafe_code)]

use std::process::ExitCode;

/// jemalloc is the process's allocator, for SoftHSM2 and OpenSSL too: the unprefixed symbols
/// replace glibc's `malloc`. SoftHSM2 allocates on every call, and with 64 sessions glibc's
/// `malloc` and `free` took almost a quarter of the gateway's CPU (README, Benchmarks). jemalloc's
/// thread caches and per-CPU arenas keep the per-thread memory small, unlike allocators with
/// per-thread pages. `MALLOC_CONF` tunes it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    p11kms::cli::run()
}
