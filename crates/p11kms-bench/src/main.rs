//! The `p11kms-bench` binary: the command line of the benchmark and the soak (see the
//! crate's documentation and README, "Benchmarks").

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use p11kms_bench::BenchArgs;

#[derive(Parser)]
#[command(
    name = "p11kms-bench",
    version,
    about = "Benchmark the p11kms gateway against the raw HSM ceiling, or soak it"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

/// The gateway's allocator (see its `main.rs`): the raw ceiling runs the token library in
/// this process, and must pay what the gateway pays for its allocations.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Cli::parse().args;
    let soak = args.soak_seconds.is_some();
    match p11kms_bench::run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) if soak => {
            eprintln!("p11kms bench: the soak did not stay flat (or gave no verdict)");
            ExitCode::FAILURE
        }
        Ok(false) => {
            eprintln!("p11kms bench: some requests failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("p11kms bench: {e}");
            ExitCode::FAILURE
        }
    }
}
