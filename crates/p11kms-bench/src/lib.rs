//! `p11kms-bench`: a closed-loop load generator, the raw ceiling of the same construction,
//! and the table that compares them. A crate of its own on top of the `p11kms` library, so
//! that the gateway's binary links neither this code nor its HTTP client.
//!
//! One run:
//! 1. prepares a fresh data directory with an initialised embedded token, SoftHSM2 or
//!    Kryoptic (`--token`), so the gateway always starts on an *existing* token and its
//!    start-up time is comparable;
//! 2. measures the raw ceiling in this process: the ciphertext construction through the
//!    library's [`Hsm`](p11kms::hsm::Hsm) API, with the same thread counts and the same
//!    pool size, no HTTP, and this process's CPU time per operation;
//! 3. starts the gateway (`p11kms serve`; the `p11kms` binary next to this one, or
//!    `--gateway-bin`) on that data directory, or targets `--endpoint`, and drives it with keep-alive HTTP/1.1 connections and
//!    SigV4-signed requests, reading the server's CPU time from `/proc/<pid>/stat`;
//! 4. prints one row per (operation, payload, concurrency) and a summary of the targets.
//!
//! With `--delay-us`, the module is expected to be the network-HSM emulator
//! (`tools/pkcs11-delay`); the matrix then runs twice, without and with the delay, and the
//! summary shows how much of the session pool's theoretical rate the gateway reaches.
//!
//! Measurements are never asserted: `--smoke` only checks correctness and zero errors.
#![forbid(unsafe_code)]

mod calls;
mod client;
mod proc;
mod raw;
mod report;
mod soak;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p11kms::hsm::{
    find_kryoptic_module, find_softhsm_module, EmbeddedToken, EmbeddedTokenKind, KRYOPTIC_LIBRARY,
};

pub use client::{Connection, Endpoint, Reply};
pub use report::{GatewayRow, RawRow};

/// The operations the harness drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum BenchOp {
    Encrypt,
    Decrypt,
    ReEncrypt,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
}

impl BenchOp {
    pub const ALL: [BenchOp; 5] = [
        BenchOp::Encrypt,
        BenchOp::Decrypt,
        BenchOp::ReEncrypt,
        BenchOp::GenerateDataKey,
        BenchOp::GenerateDataKeyWithoutPlaintext,
    ];

    pub fn target(self) -> &'static str {
        match self {
            BenchOp::Encrypt => "Encrypt",
            BenchOp::Decrypt => "Decrypt",
            BenchOp::ReEncrypt => "ReEncrypt",
            BenchOp::GenerateDataKey => "GenerateDataKey",
            BenchOp::GenerateDataKeyWithoutPlaintext => "GenerateDataKeyWithoutPlaintext",
        }
    }

    /// Short name for the table.
    pub fn short(self) -> &'static str {
        match self {
            BenchOp::Encrypt => "Encrypt",
            BenchOp::Decrypt => "Decrypt",
            BenchOp::ReEncrypt => "ReEncrypt",
            BenchOp::GenerateDataKey => "GenDataKey",
            BenchOp::GenerateDataKeyWithoutPlaintext => "GenDataKeyNoPt",
        }
    }

    /// Data keys are at most 1024 bytes: the payload dimension does not apply, 32 B is used.
    pub fn payload_sizes(self, sizes: &[usize]) -> Vec<usize> {
        match self {
            BenchOp::GenerateDataKey | BenchOp::GenerateDataKeyWithoutPlaintext => vec![32],
            _ => sizes.to_vec(),
        }
    }

    /// The raw chain that stands for this operation.
    pub fn raw(self) -> raw::RawOp {
        match self {
            BenchOp::Encrypt => raw::RawOp::Seal,
            BenchOp::Decrypt => raw::RawOp::Open,
            BenchOp::ReEncrypt => raw::RawOp::Rewrap,
            BenchOp::GenerateDataKey | BenchOp::GenerateDataKeyWithoutPlaintext => {
                raw::RawOp::RandomSeal
            }
        }
    }
}

/// Command-line options of `p11kms-bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Target a running gateway instead of starting one (no raw ceiling then).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// With --endpoint: the gateway's pid, for its CPU time and peak RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The gateway binary the bench starts (default: `p11kms` next to this executable).
    #[arg(long, env = "P11KMS_BIN")]
    pub gateway_bin: Option<PathBuf>,
    #[arg(long, default_value = p11kms::config::DEV_ACCESS_KEY_ID)]
    pub access_key_id: String,
    #[arg(long, default_value = p11kms::config::DEV_SECRET_ACCESS_KEY)]
    pub secret_access_key: String,
    #[arg(long, default_value = p11kms::config::DEFAULT_REGION)]
    pub region: String,
    /// Operations to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = BenchOp::ALL.to_vec())]
    pub ops: Vec<BenchOp>,
    /// Plaintext sizes in bytes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![32usize, 4096])]
    pub sizes: Vec<usize>,
    /// Concurrency levels: connections for the gateway, threads for the raw ceiling.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 4, 16, 64, 256])]
    pub concurrency: Vec<usize>,
    /// Upper bound on each run's measured time.
    #[arg(long, default_value_t = 2000)]
    pub duration_ms: u64,
    /// Upper bound on each run's requests.
    #[arg(long, default_value_t = 20_000)]
    pub max_requests: u64,
    /// Session pool of the gateway and of the raw ceiling (P11KMS_SESSION_POOL_SIZE); 1 is
    /// the embedded SoftHSM2's default.
    #[arg(long, default_value_t = 1)]
    pub pool_size: usize,
    /// P11KMS_SESSION_WAIT_MS for the gateway.
    #[arg(long)]
    pub session_wait_ms: Option<u64>,
    /// The embedded token the data directory gets, the gateway serves from and the raw
    /// ceiling runs on: softhsm2 or kryoptic. Both sides use the mechanisms the gateway's
    /// start-up probe picks on that token.
    #[arg(
        long,
        env = "P11KMS_EMBEDDED_TOKEN",
        default_value = "softhsm2",
        value_parser = EmbeddedTokenKind::parse
    )]
    pub token: EmbeddedTokenKind,
    /// PKCS#11 module for the gateway and the raw ceiling, in front of the embedded token
    /// (e.g. the network-HSM emulator built by tools/pkcs11-delay/build.sh; with
    /// --token kryoptic it forwards to Kryoptic unless P11DELAY_MODULE says otherwise).
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// Microseconds the emulator adds to each cryptographic call (sets P11DELAY_US); the
    /// gateway's matrix then runs without and with the delay, and the raw ceiling with it.
    /// Needs --module pointing at the emulator.
    #[arg(long, default_value_t = 0)]
    pub delay_us: u64,
    /// Extra environment for the gateway, `NAME=VALUE` (repeatable), e.g. `P11KMS_AUDIT=0`.
    #[arg(long = "gateway-env", value_name = "NAME=VALUE")]
    pub gateway_env: Vec<String>,
    /// Skip the raw ceiling.
    #[arg(long)]
    pub no_raw: bool,
    /// Run raw ceiling and gateway this many times, alternating operation by operation, and
    /// summarise the targets as medians of the rounds' paired figures: on a shared machine
    /// the host's speed drifts between runs, and pairing each gateway run with the raw run
    /// just before it cancels most of that drift. Not with --delay-us.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// State directory to use (default: a fresh one under the temp directory, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the data directory and the gateway's log.
    #[arg(long)]
    pub keep_data: bool,
    /// CI smoke run: small bounds, correctness checks, fails on any error; no timing checks.
    #[arg(long)]
    pub smoke: bool,
    /// Soak instead of the matrix: a mixed workload (every --ops operation at every --sizes,
    /// plus key, alias and grant churn) for this many seconds, sampled every
    /// --sample-seconds, ending with a verdict on whether RSS, open descriptors, p99 latency
    /// and the error rate stayed flat. No raw ceiling.
    #[arg(long, value_name = "SECONDS")]
    pub soak_seconds: Option<u64>,
    /// Soak: seconds between two samples.
    #[arg(long, default_value_t = 30)]
    pub sample_seconds: u64,
    /// Soak: samples left out of the verdict at the start (caches and pools filling).
    #[arg(long, default_value_t = 2)]
    pub warmup_samples: usize,
    /// Soak: connections (one of them churns keys, aliases and grants).
    #[arg(long, default_value_t = 8)]
    pub soak_concurrency: usize,
}

impl BenchArgs {
    /// `--smoke` bounds: every operation, both payloads, two concurrencies, a few seconds.
    fn apply_smoke(&mut self) {
        if self.smoke {
            self.concurrency = vec![1, 4];
            self.duration_ms = self.duration_ms.min(200);
            self.max_requests = self.max_requests.min(60);
        }
    }
}

/// Runs the benchmark and prints its table. Returns whether the run was clean (no errors).
pub fn run(mut args: BenchArgs) -> Result<bool, String> {
    args.apply_smoke();
    if args.delay_us > 0 && args.module.is_none() {
        return Err("--delay-us needs --module pointing at the network-HSM emulator".into());
    }
    println!("# p11kms bench  (load at start: {})", proc::load_average());
    if args.soak_seconds.is_some() {
        return run_soak(&args);
    }
    if let Some(endpoint) = &args.endpoint {
        let endpoint = Endpoint::parse(endpoint, &args)?;
        let runtime = runtime()?;
        let rows = runtime.block_on(client::run_matrix(
            &endpoint,
            args.server_pid,
            &args,
            "gateway",
        ))?;
        report::print_gateway(&rows, &[]);
        return Ok(rows.iter().all(|r| r.errors == 0));
    }

    let temp = args.data_dir.is_none();
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("p11kms-bench-{}", uuid::Uuid::new_v4())),
    };
    let result = run_local(&args, &data_dir);
    if temp && !args.keep_data {
        let _ = std::fs::remove_dir_all(&data_dir);
    } else {
        println!("# data directory kept: {}", data_dir.display());
    }
    result
}

/// `--soak-seconds`: against `--endpoint`, or a gateway started on a fresh data directory.
fn run_soak(args: &BenchArgs) -> Result<bool, String> {
    let runtime = runtime()?;
    if let Some(endpoint) = &args.endpoint {
        let endpoint = Endpoint::parse(endpoint, args)?;
        return runtime.block_on(soak::run(&endpoint, args.server_pid, args));
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("p11kms-soak-{}", uuid::Uuid::new_v4())),
    };
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let result = (|| {
        let gateway = proc::Gateway::start(args, &data_dir, 0)?;
        println!(
            "# gateway pid {} ready in {:.0} ms (pool {})",
            gateway.pid(),
            gateway.startup.as_secs_f64() * 1000.0,
            args.pool_size
        );
        let endpoint = Endpoint::parse(&gateway.url, args)?;
        let flat = runtime.block_on(soak::run(&endpoint, Some(gateway.pid()), args));
        if let Some(kib) = gateway.peak_rss_kib() {
            println!("# gateway peak RSS (VmHWM) {:.1} MiB", kib as f64 / 1024.0);
        }
        if let Some(status) = gateway.stop() {
            println!("# gateway exit: {status}");
        }
        flat
    })();
    if args.data_dir.is_none() && !args.keep_data {
        let _ = std::fs::remove_dir_all(&data_dir);
    } else {
        println!("# data directory kept: {}", data_dir.display());
    }
    result
}

/// The library of the embedded token `kind`: SoftHSM2's, or Kryoptic's
/// (`P11KMS_KRYOPTIC_MODULE`, else where the gateway looks for it).
pub fn token_library(kind: EmbeddedTokenKind) -> Result<PathBuf, String> {
    match kind {
        EmbeddedTokenKind::SoftHsm2 => {
            find_softhsm_module().ok_or_else(|| "SoftHSM2 is not installed".into())
        }
        EmbeddedTokenKind::Kryoptic => std::env::var_os("P11KMS_KRYOPTIC_MODULE")
            .map(PathBuf::from)
            .or_else(find_kryoptic_module)
            .ok_or_else(|| {
                format!(
                    "the Kryoptic library ({KRYOPTIC_LIBRARY}) was not found next to p11kms or in \
                     target/release: build it with `cargo build --release --manifest-path \
                     tokens/kryoptic/Cargo.toml --target-dir target`, or set P11KMS_KRYOPTIC_MODULE"
                )
            }),
    }
}

fn run_local(args: &BenchArgs, data_dir: &Path) -> Result<bool, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let library = token_library(args.token)?;
    if args.module.is_some()
        && args.token == EmbeddedTokenKind::Kryoptic
        && std::env::var_os("P11DELAY_MODULE").is_none()
    {
        // The emulator forwards to SoftHSM2 unless told otherwise; this process and the
        // gateway it starts both read this before loading it. Other shims ignore it.
        std::env::set_var("P11DELAY_MODULE", &library);
    }
    // The token is created once, up front, with the token's own library: every gateway start
    // below is then a start on an existing token. `prepare` also points this process at the
    // token's configuration (SOFTHSM2_CONF or KRYOPTIC_CONF) for the raw ceiling.
    let embedded = EmbeddedToken::prepare(args.token, data_dir).map_err(|e| e.to_string())?;
    embedded
        .ensure_token(&library, p11kms::config::DEFAULT_TOKEN_LABEL)
        .map_err(|e| e.to_string())?;
    println!(
        "# token: {} ({}){}",
        args.token.name(),
        library.display(),
        args.module
            .as_ref()
            .map(|m| format!(", module in front: {}", m.display()))
            .unwrap_or_default()
    );

    let rounds = if args.delay_us > 0 {
        1
    } else {
        args.rounds.max(1)
    };
    let mut clean = true;
    let mut history = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            println!("\n# round {round} of {rounds}");
        }
        // Over several rounds each operation's raw run is followed at once by its gateway
        // run, so the pair is seconds apart, not the length of the whole matrix.
        let parts: Vec<BenchArgs> = if rounds > 1 {
            args.ops
                .iter()
                .map(|op| BenchArgs {
                    ops: vec![*op],
                    ..args.clone()
                })
                .collect()
        } else {
            vec![args.clone()]
        };
        let mut raw_rows = Vec::new();
        let mut gateway_rows = Vec::new();
        for part in &parts {
            let (raw, gateway, part_clean) = run_round(part, data_dir, &library, &embedded)?;
            clean &= part_clean;
            raw_rows.extend(raw);
            gateway_rows.extend(gateway);
        }
        history.push((raw_rows, gateway_rows));
    }
    if rounds > 1 {
        report::print_rounds(&history);
    }
    println!("# load at end: {}", proc::load_average());
    Ok(clean)
}

/// One round: the raw ceiling, then the gateway (or the emulator's two phases). Returns the
/// raw rows, the gateway rows of the last phase, and whether every request succeeded.
fn run_round(
    args: &BenchArgs,
    data_dir: &Path,
    library: &Path,
    embedded: &EmbeddedToken,
) -> Result<(Vec<RawRow>, Vec<GatewayRow>, bool), String> {
    let raw_rows = if args.no_raw {
        Vec::new()
    } else {
        let module = args.module.clone().unwrap_or_else(|| library.to_path_buf());
        if args.delay_us > 0 {
            // With the emulator the raw ceiling runs delayed, to set beside the delayed
            // gateway. The emulator reads its delay when it is loaded, and this is its first
            // load in this process (the token was made with the token's own library).
            std::env::set_var("P11DELAY_US", args.delay_us.to_string());
        }
        raw::run_matrix(
            args,
            &module,
            embedded.user_pin().map_err(|e| e.to_string())?,
        )?
    };
    report::print_raw(&raw_rows);

    let runtime = runtime()?;
    let mut clean = true;
    let mut phases = Vec::new();
    if args.delay_us > 0 {
        phases.push(("no delay", 0));
        phases.push(("delayed", args.delay_us));
    } else {
        phases.push(("gateway", 0));
    }
    let mut all_rows: BTreeMap<&str, Vec<GatewayRow>> = BTreeMap::new();
    for (phase, delay) in phases {
        let gateway = proc::Gateway::start(args, data_dir, delay)?;
        println!(
            "# {phase}: gateway pid {} ready in {:.0} ms (existing token, pool {}{})",
            gateway.pid(),
            gateway.startup.as_secs_f64() * 1000.0,
            args.pool_size,
            if delay > 0 {
                format!(", {delay} us per cryptographic call")
            } else {
                String::new()
            }
        );
        let endpoint = Endpoint::parse(&gateway.url, args)?;
        let rows = runtime.block_on(client::run_matrix(
            &endpoint,
            Some(gateway.pid()),
            args,
            phase,
        ));
        let hwm = gateway.peak_rss_kib();
        let startup = gateway.startup;
        let status = gateway.stop();
        let rows = rows?;
        clean &= rows.iter().all(|r| r.errors == 0);
        // The raw ceiling ran with the delay of the last phase (see above).
        let raw_for_phase: &[RawRow] = if delay == args.delay_us {
            &raw_rows
        } else {
            &[]
        };
        report::print_gateway(&rows, raw_for_phase);
        if let Some(kib) = hwm {
            println!(
                "# {phase}: gateway peak RSS (VmHWM) {:.1} MiB",
                kib as f64 / 1024.0
            );
        }
        if let Some(status) = status {
            println!("# {phase}: gateway exit: {status}");
        }
        report::print_targets(phase, &rows, raw_for_phase, hwm, startup);
        all_rows.insert(phase, rows);
    }
    if args.delay_us > 0 {
        if let (Some(base), Some(delayed)) = (all_rows.get("no delay"), all_rows.get("delayed")) {
            report::print_latency_hiding(base, delayed, &raw_rows, args.pool_size, args.delay_us);
        }
    }
    let last = all_rows.into_values().next_back().unwrap_or_default();
    Ok((raw_rows, last, clean))
}

/// The load generator's runtime: one thread. A closed loop spends a few tens of µs of CPU
/// per request, so one thread drives thousands of requests a second, and every thread more
/// would compete with the gateway for the same cores and blur what is measured.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// Bounds shared by the gateway and raw runs.
fn run_bounds(args: &BenchArgs) -> (Duration, u64) {
    (
        Duration::from_millis(args.duration_ms.max(1)),
        args.max_requests.max(1),
    )
}
