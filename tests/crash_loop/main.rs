//! Crash loops (issue 13, item 5): the release gateway, on one data directory (embedded
//! SoftHSM2 token, SQLite file, audit trail), is killed with SIGKILL at a random moment while
//! a client drives one phase of work at it (key creation, key state, rotation with automatic
//! rotations running, deletion with the deletion job running, grants, aliases, cryptography,
//! or cryptography while the PKCS#11 library is recycled every few operations), and now and
//! then again during its start-up. After every restart:
//!
//! - every material row of the SQLite file has its token object and every p11kms token
//!   object has its row (read from outside the gateway: rusqlite and cryptoki);
//! - every acknowledged result is still there (keys with their state, description and
//!   rotation setting, on-demand rotations and rotation materials, grants, aliases), and a
//!   request that was in flight may have happened or not, but nothing else;
//! - every acknowledged ciphertext decrypts to its plaintext with its key material (sampled
//!   for older ones after each restart, all of them at the end);
//! - the audit chain verifies (`p11kms audit verify`).
//!
//! `crash_loop_ci` runs 10 kills in CI. `scripts/crash-loop.sh` runs the long one
//! (`crash_loop`, ignored by default) with `P11KMS_CRASH_KILLS` (default 100) and prints the
//! summary. Each iteration and the whole run are bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod check;
mod gateway;
mod inspect;
mod journal;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use check::Checked;
use gateway::Gateway;
use journal::Journal;
use workload::{Ctx, Phase};

/// The loops share this process's PKCS#11 library (the token check) and `SOFTHSM2_CONF`.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Settings {
    /// Kills under load (start-up kills come on top).
    kills: usize,
    seed: u64,
    /// The whole run must end within this.
    max_run: Duration,
    /// One iteration (load, kill, restart, checks) must end within this.
    max_iteration: Duration,
    /// The kill lands uniformly within this long after the load starts.
    kill_within: Duration,
    /// Chance that a restart is itself killed during start-up first.
    startup_kill_chance: f64,
    /// Workers on the phase's operations (one more always does cryptography).
    workers: usize,
    stable_keys: usize,
    /// Older ciphertexts decrypted after each restart (new ones always are; all at the end).
    cipher_sample: usize,
    cipher_limit: usize,
    /// Fail when an acknowledged request has no audit record after the restart.
    require_audit: bool,
    /// Keep the data directory even when the run passes.
    keep: bool,
}

impl Settings {
    fn defaults(kills: usize) -> Settings {
        Settings {
            kills,
            seed: env_u64("P11KMS_CRASH_SEED").unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            }),
            max_run: Duration::from_secs(120),
            max_iteration: Duration::from_secs(60),
            kill_within: Duration::from_millis(1200),
            startup_kill_chance: 0.15,
            workers: 4,
            stable_keys: 20,
            cipher_sample: 200,
            cipher_limit: 3000,
            require_audit: std::env::var("P11KMS_CRASH_REQUIRE_AUDIT").is_ok_and(|v| v == "1"),
            keep: std::env::var("P11KMS_CRASH_KEEP").is_ok_and(|v| v == "1"),
        }
    }

    /// The long run: every bound from the environment.
    fn from_env() -> Settings {
        let kills = env_u64("P11KMS_CRASH_KILLS").unwrap_or(100) as usize;
        let mut s = Settings::defaults(kills);
        s.max_run = Duration::from_secs(env_u64("P11KMS_CRASH_MAX_SECONDS").unwrap_or(3600));
        if let Some(ms) = env_u64("P11KMS_CRASH_KILL_WITHIN_MS") {
            s.kill_within = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = env_u64("P11KMS_CRASH_WORKERS") {
            s.workers = n.max(1) as usize;
        }
        s
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// CI: ten kills, every phase at least once; about half a minute.
#[test]
fn crash_loop_ci() {
    run(Settings::defaults(10));
}

/// The long run (`scripts/crash-loop.sh`, `P11KMS_CRASH_KILLS`, default 100).
#[test]
#[ignore = "long; run by scripts/crash-loop.sh"]
fn crash_loop() {
    run(Settings::from_env());
}

/// The gateway's settings: short "days" so that deletion windows (7-30 days) and rotation
/// periods (90-180 days) pass within seconds, jobs every 100 ms, two sessions, a small audit
/// file (rotations of the trail), and in the recycle phase a library recycle every 10
/// operations. Debug lines of the jobs and the recycle tell where a kill landed.
fn gateway_env(phase: Phase) -> Vec<(String, String)> {
    let recycle_after = if phase == Phase::Recycle {
        "10"
    } else {
        "5000"
    };
    let mut env = [
        (
            "P11KMS_LOG",
            "info,p11kms::hsm=debug,p11kms::kms::jobs=debug",
        ),
        ("P11KMS_LOG_FORMAT", "json"),
        ("P11KMS_DAY_SECONDS", "0.05"),
        ("P11KMS_JOB_INTERVAL_MS", "100"),
        ("P11KMS_SESSION_POOL_SIZE", "2"),
        ("P11KMS_AUDIT_MAX_BYTES", "1048576"),
        ("P11KMS_HSM_RECYCLE_AFTER", recycle_after),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect::<Vec<_>>();
    // A record survives a kill only if its answer waited for its sync: demanding one for
    // every acknowledged request is demanding `audit.wait_for_sync`.
    if std::env::var("P11KMS_CRASH_REQUIRE_AUDIT").is_ok_and(|v| v == "1") {
        env.push(("P11KMS_AUDIT_WAIT_FOR_SYNC".into(), "1".into()));
    }
    env
}

fn client(endpoint: &str) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "crash-loop"))
        .behavior_version(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

#[derive(Debug, Default)]
struct Summary {
    kills_by_phase: BTreeMap<&'static str, u32>,
    startup_kills: u32,
    /// Kills that found the gateway already dead (must be 0).
    dead_before_kill: u32,
    /// Kills with at least one request of the operation in flight.
    in_flight_at_kill: BTreeMap<&'static str, u32>,
    nothing_in_flight: u32,
    inside_recycle: u32,
    inside_rotation: u32,
    inside_deletion: u32,
    checked: Checked,
    acknowledged_ids: u64,
    unaudited: u64,
    restart_ms: Vec<u64>,
    iteration_ms: Vec<u64>,
    audit: String,
    torn_tails: usize,
    store: (u64, u64),
    acknowledged: BTreeMap<&'static str, u64>,
    in_doubt: BTreeMap<&'static str, u64>,
    token_files_repaired: u32,
    unfinished_objects_removed: u64,
    graceful_stops: u32,
    unreadable_object_files: Option<usize>,
}

fn run(settings: Settings) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let root = tempfile::Builder::new()
        .prefix("p11kms-crash-")
        .tempdir()
        .expect("temporary directory");
    let data = root.path().join("data");
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&data).expect("data directory");
    std::fs::create_dir_all(&logs).expect("log directory");
    println!(
        "crash loop: {} kills, seed {}, directory {}",
        settings.kills,
        settings.seed,
        root.path().display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut summary = Summary::default();
    let outcome = iterate(&settings, &runtime, &data, &logs, started, &mut summary);
    print_summary(&settings, &summary, started.elapsed(), &outcome);
    match outcome {
        Ok(()) => {
            if settings.keep {
                let kept = root.keep();
                println!("kept: {}", kept.display());
            }
        }
        Err(failures) => {
            let kept = root.keep();
            panic!(
                "crash loop failed ({} failures; data and logs kept in {}):\n{}",
                failures.len(),
                kept.display(),
                failures.join("\n")
            );
        }
    }
}

/// Phases in shuffled rounds of all eight, so that every phase comes up once per eight kills.
fn schedule(kills: usize, rng: &mut StdRng) -> Vec<Phase> {
    let mut out = Vec::with_capacity(kills);
    while out.len() < kills {
        let mut round = Phase::ALL.to_vec();
        round.shuffle(rng);
        out.extend(round);
    }
    out.truncate(kills);
    out
}

fn iterate(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    data: &Path,
    logs: &Path,
    started: Instant,
    summary: &mut Summary,
) -> Result<(), Vec<String>> {
    let fail = |m: String| vec![m];
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let phases = schedule(settings.kills, &mut rng);
    let module = p11kms::hsm::find_softhsm_module().ok_or_else(|| fail("no SoftHSM2".into()))?;
    let journal = Arc::new(Mutex::new(Journal::default()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut audit_from: Option<PathBuf> = None;

    let log_of = |n: usize| logs.join(format!("gateway-{n:04}.log"));
    let mut starts = 0usize;
    let mut gateway = Gateway::start(
        data,
        &log_of(starts),
        &gateway_env(phases[0]),
        READY_TIMEOUT,
    )
    .map_err(fail)?;
    // The token exists now: the checker's PKCS#11 library reads the same configuration.
    std::env::set_var("SOFTHSM2_CONF", data.join("softhsm2.conf"));
    let pin = std::fs::read_to_string(data.join("user.pin"))
        .map_err(|e| fail(format!("user.pin: {e}")))?
        .trim()
        .to_string();
    let make_ctx = |endpoint: &str, record: bool| {
        Arc::new(Ctx {
            record,
            kms: client(endpoint),
            journal: journal.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new(Mutex::new(BTreeMap::new())),
            errors: errors.clone(),
            stable_keys: settings.stable_keys,
            alias_limit: 12,
            grants_per_key: 6,
        })
    };
    {
        let ctx = make_ctx(&gateway.endpoint, true);
        runtime
            .block_on(workload::setup(&ctx, settings.stable_keys / 2))
            .map_err(fail)?;
    }

    for (i, &phase) in phases.iter().enumerate() {
        let iteration = Instant::now();
        if started.elapsed() > settings.max_run {
            return Err(fail(format!(
                "the run exceeded its bound of {:?} after {i} kills",
                settings.max_run
            )));
        }
        // Load, then the kill.
        let ctx = make_ctx(&gateway.endpoint, true);
        let kill_after = Duration::from_micros(
            rng.random_range(0..settings.kill_within.as_micros().max(1) as u64),
        );
        let seed = rng.random();
        let (in_flight, was_running) = runtime.block_on(load(
            &ctx,
            phase,
            settings.workers,
            kill_after,
            &mut gateway,
            seed,
        ));
        *summary.kills_by_phase.entry(phase.name()).or_default() += 1;
        let mut early = Vec::new();
        if !was_running {
            summary.dead_before_kill += 1;
            early.push(format!("the gateway had exited before kill {}", i + 1));
        }
        if in_flight.is_empty() {
            summary.nothing_in_flight += 1;
        }
        for op in in_flight.keys() {
            *summary.in_flight_at_kill.entry(op).or_default() += 1;
        }
        let log = std::fs::read_to_string(log_of(starts)).unwrap_or_default();
        let inside = check::inside_work(&log);
        summary.inside_recycle += u32::from(inside.recycle);
        summary.inside_rotation += u32::from(inside.rotations > 0);
        summary.inside_deletion += u32::from(inside.deletions > 0);

        // Restart, sometimes after a kill during start-up.
        let next = phases.get(i + 1).copied().unwrap_or(Phase::Crypto);
        // A gateway recycling its library every 10 operations would make the checks slow
        // (every recycle reopens the token): the checks run on an ordinary one, which then
        // stops with SIGTERM and makes way for the recycling one.
        let check_phase = if next == Phase::Recycle {
            Phase::Crypto
        } else {
            next
        };
        if rng.random_bool(settings.startup_kill_chance) {
            starts += 1;
            let after = Duration::from_millis(rng.random_range(5..150));
            Gateway::start_and_kill(data, &log_of(starts), &gateway_env(check_phase), after)
                .map_err(fail)?;
            count_repairs(&log_of(starts), summary);
            summary.startup_kills += 1;
        }
        starts += 1;
        gateway = Gateway::start(
            data,
            &log_of(starts),
            &gateway_env(check_phase),
            READY_TIMEOUT,
        )
        .map_err(|e| fail(format!("restart after kill {}: {e}", i + 1)))?;
        summary.restart_ms.push(gateway.startup.as_millis() as u64);
        // The fix for a token file torn inside SoftHSM2's login (the gateway's warning).
        count_repairs(&log_of(starts), summary);
        // Old logs go; the last few stay for a failure's post-mortem.
        for old in starts.saturating_sub(6)..starts.saturating_sub(3) {
            let _ = std::fs::remove_file(log_of(old));
        }

        // The checks.
        let ctx = make_ctx(&gateway.endpoint, false);
        let mut failures: Vec<String> =
            std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
        failures.extend(early);
        let checked = verify(
            &ctx,
            runtime,
            data,
            &module,
            &pin,
            &mut rng,
            Some(settings.cipher_sample),
            &mut audit_from,
            settings,
            summary,
            &mut failures,
        );
        summary.checked.add(&checked);
        journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .trim_ciphers(settings.cipher_limit);
        if check_phase != next && failures.is_empty() {
            match gateway.terminate(Duration::from_secs(30)) {
                Ok(()) => summary.graceful_stops += 1,
                Err(e) => failures.push(format!("SIGTERM after kill {}: {e}", i + 1)),
            }
            starts += 1;
            gateway = Gateway::start(data, &log_of(starts), &gateway_env(next), READY_TIMEOUT)
                .map_err(|e| fail(format!("start after SIGTERM: {e}")))?;
        }
        let took = iteration.elapsed();
        summary.iteration_ms.push(took.as_millis() as u64);
        if took > settings.max_iteration {
            failures.push(format!(
                "iteration {} took {took:?} (bound {:?})",
                i + 1,
                settings.max_iteration
            ));
        }
        {
            let journal = journal.lock().unwrap_or_else(|p| p.into_inner());
            summary.acknowledged = journal.acknowledged.clone();
            summary.in_doubt = journal.in_doubt.clone();
        }
        if !failures.is_empty() {
            failures.insert(
                0,
                format!(
                    "after kill {} ({}, {:?} into the load, in flight {in_flight:?}, inside {inside:?}):",
                    i + 1,
                    phase.name(),
                    kill_after
                ),
            );
            return Err(failures);
        }
        if (i + 1) % 10 == 0 {
            println!(
                "  {} kills, {:.0} s, {} ciphertexts in the journal",
                i + 1,
                started.elapsed().as_secs_f64(),
                journal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .ciphers
                    .len()
            );
        }
    }

    // The end: every disabled stable key enabled again, every ciphertext decrypted, the
    // whole audit chain verified.
    let ctx = make_ctx(&gateway.endpoint, false);
    let mut failures = Vec::new();
    runtime.block_on(check::enable_all(&ctx, &mut failures));
    audit_from = None;
    let checked = verify(
        &ctx,
        runtime,
        data,
        &module,
        &pin,
        &mut rng,
        None,
        &mut audit_from,
        settings,
        summary,
        &mut failures,
    );
    summary.checked.add(&checked);
    summary.store = inspect::store_counts(&data.join("p11kms.sqlite")).unwrap_or_default();
    failures.extend(std::mem::take(
        &mut *errors.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    // The last gateway stops by SIGTERM (and must, cleanly); then, with nothing writing, the
    // token's object files are compared with the objects SoftHSM2 loads. A file it does not
    // load is one a kill tore while SoftHSM2 wrote a new object (the start-up removes the
    // empty ones; a partly written one stays). No row names it: every row's object was
    // matched above.
    match gateway.terminate(Duration::from_secs(30)) {
        Ok(()) => summary.graceful_stops += 1,
        Err(e) => failures.push(format!("final SIGTERM: {e}")),
    }
    match inspect::token_object_count(&module, &pin) {
        Ok(objects) => {
            let files = inspect::token_object_files(data);
            summary.unreadable_object_files = Some(files.saturating_sub(objects));
        }
        Err(e) => failures.push(format!("cannot count the token objects: {e}")),
    }
    {
        let journal = journal.lock().unwrap_or_else(|p| p.into_inner());
        summary.acknowledged = journal.acknowledged.clone();
        summary.in_doubt = journal.in_doubt.clone();
    }
    if failures.is_empty() {
        Ok(())
    } else {
        failures.insert(0, "final check:".into());
        Err(failures)
    }
}

/// What a start repaired in the token directory (the gateway's warnings).
fn count_repairs(log: &Path, summary: &mut Summary) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    summary.token_files_repaired +=
        text.matches("the token file was torn by a crash").count() as u32;
    summary.unfinished_objects_removed += text
        .lines()
        .filter(|l| l.contains("removed empty token object files"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["removed"].as_u64())
        .sum::<u64>();
}

/// Runs the phase's workers and the crypto worker, kills the gateway `kill_after` into it,
/// and waits for the workers. Returns what was in flight at the kill, and whether the
/// gateway was still running then.
async fn load(
    ctx: &Arc<Ctx>,
    phase: Phase,
    workers: usize,
    kill_after: Duration,
    gateway: &mut Gateway,
    seed: u64,
) -> (BTreeMap<&'static str, u32>, bool) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(workload::worker(
            ctx.clone(),
            phase,
            seed.wrapping_add(w as u64),
        )));
    }
    tasks.push(tokio::spawn(workload::crypto_worker(
        ctx.clone(),
        seed.wrapping_add(1000),
    )));
    tokio::time::sleep(kill_after).await;
    let in_flight: BTreeMap<&'static str, u32> = ctx
        .in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (*k, *n))
        .collect();
    let was_running = gateway.kill();
    ctx.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        // Requests to a dead gateway fail at once; the SDK's timeouts bound the rest.
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    (in_flight, was_running)
}

/// Every check after a restart. `sample`: older ciphertexts to decrypt (`None`: all).
#[allow(clippy::too_many_arguments)]
fn verify(
    ctx: &Arc<Ctx>,
    runtime: &tokio::runtime::Runtime,
    data: &Path,
    module: &Path,
    pin: &str,
    rng: &mut StdRng,
    sample: Option<usize>,
    audit_from: &mut Option<PathBuf>,
    settings: &Settings,
    summary: &mut Summary,
    failures: &mut Vec<String>,
) -> Checked {
    let mut checked = Checked::default();
    match check::store_matches_token(&data.join("p11kms.sqlite"), module, pin, failures) {
        Ok(n) => checked.materials = n,
        Err(e) => failures.push(format!("cannot compare the store and the token: {e}")),
    }
    let acknowledged_ids = std::mem::take(
        &mut ctx
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acknowledged_ids,
    );
    let metadata = runtime.block_on(check::metadata(ctx, failures));
    checked.add(&metadata);
    checked.ciphertexts = runtime.block_on(check::ciphertexts(ctx, rng, sample, failures));

    // The audit chain, from the last rotated file already verified (so that the link into
    // the newer files is checked too) to the current file. The gateway keeps writing, and
    // may rotate the file between the listing and the reading: then the listing is redone.
    let mut verified = None;
    for _ in 0..5 {
        let files = match inspect::audit_files(data) {
            Ok(f) => f,
            Err(e) => {
                failures.push(e);
                return checked;
            }
        };
        let from = audit_from
            .as_ref()
            .and_then(|p| files.iter().position(|f| f == p))
            .unwrap_or(0);
        let span = files[from..].to_vec();
        let result = inspect::audit_verify(&gateway::binary(), &span)
            .and_then(|line| inspect::audited_request_ids(&span).map(|ids| (line, ids)));
        if inspect::audit_files(data).ok().as_ref() == Some(&files) {
            verified = Some((files, result));
            break;
        }
    }
    let Some((files, result)) = verified else {
        failures.push("the audit files kept changing while they were verified".into());
        return checked;
    };
    match result {
        Ok((line, audited)) => {
            summary.audit = line;
            let missing = check::unaudited(&acknowledged_ids, &audited);
            summary.acknowledged_ids += acknowledged_ids.len() as u64;
            summary.unaudited += missing;
            if settings.require_audit && missing > 0 {
                failures.push(format!(
                    "{missing} acknowledged requests have no audit record"
                ));
            }
        }
        Err(e) => failures.push(e),
    }
    *audit_from = files
        .iter()
        .rfind(|f| f.file_name().is_some_and(|n| n != "audit.log"))
        .cloned();
    summary.torn_tails = inspect::torn_tails(data);
    checked
}

fn percentile(values: &[u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

fn print_summary(
    settings: &Settings,
    summary: &Summary,
    took: Duration,
    outcome: &Result<(), Vec<String>>,
) {
    let kills: u32 = summary.kills_by_phase.values().sum();
    let journal_line = |map: &BTreeMap<&'static str, u32>| {
        map.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("\n=== crash loop summary (seed {}) ===", settings.seed);
    println!(
        "iterations: {kills} kills under load + {} during start-up (+ {} stops by SIGTERM), in {:.1} s",
        summary.startup_kills,
        summary.graceful_stops,
        took.as_secs_f64()
    );
    println!("kills by phase: {}", journal_line(&summary.kills_by_phase));
    println!(
        "kills with requests in flight, by operation: {}; with none in flight: {}",
        journal_line(&summary.in_flight_at_kill),
        summary.nothing_in_flight
    );
    println!(
        "kills inside: a library recycle {}, an automatic rotation {}, a scheduled deletion {}",
        summary.inside_recycle, summary.inside_rotation, summary.inside_deletion
    );
    let ops = |map: &BTreeMap<&'static str, u64>| {
        let total: u64 = map.values().sum();
        let list = map
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{total} ({list})")
    };
    println!("acknowledged requests: {}", ops(&summary.acknowledged));
    println!(
        "left in doubt by a kill (either outcome accepted): {}",
        ops(&summary.in_doubt)
    );
    println!(
        "checked after restarts: {} keys, {} rotation materials, {} grants, {} aliases, {} ciphertexts decrypted, {} material rows matched with token objects; {} keys deleted by the job after their window",
        summary.checked.keys,
        summary.checked.rotation_materials,
        summary.checked.grants,
        summary.checked.aliases,
        summary.checked.ciphertexts,
        summary.checked.materials,
        summary.checked.deleted_keys
    );
    println!(
        "audit: {}; acknowledged requests without an audit record after the kill: {} of {}; torn tails set aside: {}",
        summary.audit, summary.unaudited, summary.acknowledged_ids, summary.torn_tails
    );
    println!(
        "restart to ready: p50 {} ms, max {} ms; iteration: p50 {} ms, max {} ms; store at the end: {} keys, {} materials",
        percentile(&summary.restart_ms, 0.5),
        percentile(&summary.restart_ms, 1.0),
        percentile(&summary.iteration_ms, 0.5),
        percentile(&summary.iteration_ms, 1.0),
        summary.store.0,
        summary.store.1
    );
    println!(
        "token files torn by a kill and repaired at the next start: {}",
        summary.token_files_repaired
    );
    println!(
        "empty token object files (a kill inside an object's creation) removed at the next start: {}",
        summary.unfinished_objects_removed
    );
    if let Some(n) = summary.unreadable_object_files {
        println!(
            "token object files SoftHSM2 does not load at the end (partly written by a kill; no row names them): {n}"
        );
    }
    if summary.dead_before_kill > 0 {
        println!(
            "gateway already dead at the kill: {}",
            summary.dead_before_kill
        );
    }
    match outcome {
        Ok(()) => println!("failures: 0"),
        Err(f) => println!("failures: {}", f.len().saturating_sub(1)),
    }
}
