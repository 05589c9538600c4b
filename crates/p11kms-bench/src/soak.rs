//! `p11kms-bench --soak-seconds N`: a long mixed workload against one gateway, sampled every
//! `--sample-seconds`.
//!
//! `--soak-concurrency` − 1 closed-loop workers cycle through the cryptographic operations of
//! `--ops` and `--sizes` (the same prepared, checked requests as the benchmark), and one more
//! worker churns keys, aliases and grants (CreateKey, CreateAlias, CreateGrant, RetireGrant,
//! DeleteAlias, ScheduleKeyDeletion), so the store and the token see writes too. Each sample
//! records the gateway's RSS, open file descriptors, threads and CPU, and the interval's
//! throughput, latency percentiles and errors. One row is printed per sample as it is taken;
//! at the end, the verdict compares the last third of the samples with the first third after
//! the warm-up samples.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{json, Value};

use super::client::{self, Connection, Endpoint, Reply, Workload, RESIGN_AFTER};
use super::{proc, BenchArgs, Percentiles};

/// Flat means: the median RSS of the last third at most this much above the first third's.
const RSS_GROWTH_LIMIT: f64 = 0.10;
/// ... the most open descriptors of the last third at most this many above the first's
/// (connections come and go with the churn worker and the metrics of the kernel).
const FD_SLACK: usize = 4;
/// ... the median p99 of the last third at most this factor of the first third's (a shared
/// machine's latency is noisy).
const P99_GROWTH_LIMIT: f64 = 1.5;
/// ... and the error rate of the last third at most this much above the first third's.
const ERROR_RATE_SLACK: f64 = 0.001;
/// The churn worker rests this long between cycles (about 6 requests a cycle).
const CHURN_PAUSE: Duration = Duration::from_millis(250);
/// How long the workers get to stop after the run.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the workers saw since the last sample.
#[derive(Default)]
struct Interval {
    latencies_us: Vec<u64>,
    errors: u64,
    server_errors: u64,
    throttled: u64,
    first_error: Option<String>,
}

impl Interval {
    fn record(&mut self, took: Duration, outcome: Result<&Reply, &str>) {
        self.latencies_us.push(took.as_micros() as u64);
        let error = match outcome {
            Ok(reply) if reply.status == 200 => return,
            Ok(reply) => {
                if reply.status >= 500 {
                    self.server_errors += 1;
                }
                let kind = reply.error_type();
                if kind == "ThrottlingException" {
                    self.throttled += 1;
                    return;
                }
                format!("HTTP {} {kind}", reply.status)
            }
            Err(e) => e.to_string(),
        };
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }
}

type Shared = Arc<Mutex<Interval>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Interval> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// One sample: the gateway process and the interval's requests.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the load started, at the end of the interval.
    pub at_s: f64,
    pub requests: u64,
    pub rate: f64,
    pub latency: Percentiles,
    pub errors: u64,
    pub server_errors: u64,
    pub throttled: u64,
    pub first_error: Option<String>,
    pub rss_kib: Option<u64>,
    pub fds: Option<usize>,
    pub threads: Option<u64>,
    pub cpu_percent: Option<f64>,
}

impl Sample {
    fn error_rate(&self) -> f64 {
        self.errors as f64 / self.requests.max(1) as f64
    }
}

/// Runs the soak and prints its table and verdict. Returns whether every measure stayed flat.
pub async fn run(
    endpoint: &Endpoint,
    server_pid: Option<u32>,
    args: &BenchArgs,
) -> Result<bool, String> {
    let duration = Duration::from_secs(args.soak_seconds.unwrap_or(3600).max(1));
    let every = Duration::from_secs(args.sample_seconds.max(1));
    let crypto_workers = args.soak_concurrency.max(2) - 1;

    let mut setup = Connection::open(endpoint).await?;
    let source = client::create_key(&mut setup, endpoint).await?;
    let destination = client::create_key(&mut setup, endpoint).await?;
    let mut workloads = Vec::new();
    for &op in &args.ops {
        for size in op.payload_sizes(&args.sizes) {
            workloads.push(
                client::prepare(&mut setup, endpoint, op, size, &source, &destination).await?,
            );
        }
    }
    if workloads.is_empty() {
        return Err("--ops names no operation".into());
    }
    let workloads = Arc::new(workloads);
    let names: Vec<String> = workloads
        .iter()
        .map(|w| format!("{} {} B", w.op.short(), w.size))
        .collect();
    println!(
        "# soak: {} s, a sample every {} s ({} warm-up), {} connections: {crypto_workers} cycling through {} and 1 churning keys, aliases and grants",
        duration.as_secs(),
        every.as_secs(),
        args.warmup_samples,
        crypto_workers + 1,
        names.join(", ")
    );

    let shared: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..crypto_workers {
        tasks.push(tokio::spawn(crypto_worker(
            endpoint.clone(),
            workloads.clone(),
            worker,
            shared.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(churn_worker(
        endpoint.clone(),
        shared.clone(),
        stop.clone(),
    )));

    print_header();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut cpu_before = server_pid.and_then(proc::cpu_seconds);
    let mut last = started;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    while started.elapsed() < duration {
        ticker.tick().await;
        let interval = std::mem::take(&mut *lock(&shared));
        let now = Instant::now();
        let seconds = now.duration_since(last).as_secs_f64();
        last = now;
        let cpu_now = server_pid.and_then(proc::cpu_seconds);
        let cpu_percent = match (cpu_before, cpu_now) {
            (Some(a), Some(b)) => Some((b - a) * 100.0 / seconds.max(1e-9)),
            _ => None,
        };
        cpu_before = cpu_now;
        let requests = interval.latencies_us.len() as u64;
        let sample = Sample {
            at_s: now.duration_since(started).as_secs_f64(),
            requests,
            rate: requests as f64 / seconds.max(1e-9),
            latency: Percentiles::of(interval.latencies_us),
            errors: interval.errors,
            server_errors: interval.server_errors,
            throttled: interval.throttled,
            first_error: interval.first_error,
            rss_kib: server_pid.and_then(proc::rss_kib),
            fds: server_pid.and_then(proc::open_fds),
            threads: server_pid.and_then(proc::threads),
            cpu_percent,
        };
        print_row(&sample);
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(STOP_GRACE, task).await;
    }

    println!();
    print_header();
    for sample in &samples {
        print_row(sample);
    }
    let verdict = verdict(&samples, args.warmup_samples);
    for line in &verdict.lines {
        println!("# {line}");
    }
    Ok(verdict.flat)
}

async fn crypto_worker(
    endpoint: Endpoint,
    workloads: Arc<Vec<Workload>>,
    offset: usize,
    shared: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut conn: Option<Connection> = None;
    // Each workload's request, signed once and again after RESIGN_AFTER.
    let mut signed: Vec<Option<(Instant, http::Request<Full<Bytes>>)>> =
        (0..workloads.len()).map(|_| None).collect();
    let mut next = offset;
    while !stop.load(Ordering::Relaxed) {
        let index = next % workloads.len();
        next += 1;
        let workload = &workloads[index];
        let fresh = signed[index]
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < RESIGN_AFTER);
        if !fresh {
            match endpoint.signed(workload.op.target(), &workload.body) {
                Ok(req) => signed[index] = Some((Instant::now(), req)),
                Err(e) => {
                    lock(&shared).record(Duration::ZERO, Err(&e));
                    return;
                }
            }
        }
        let Some((_, request)) = &signed[index] else {
            return;
        };
        let request = request.clone();
        send(&endpoint, &mut conn, request, &shared).await;
    }
}

/// Sends one request on the worker's connection (opened again after a failure) and records
/// it; the reply, when there was one.
async fn send(
    endpoint: &Endpoint,
    conn: &mut Option<Connection>,
    request: http::Request<Full<Bytes>>,
    shared: &Shared,
) -> Option<Reply> {
    let started = Instant::now();
    let connection = match conn {
        Some(c) => c,
        None => match Connection::open(endpoint).await {
            Ok(c) => conn.insert(c),
            Err(e) => {
                lock(shared).record(started.elapsed(), Err(&e));
                // Do not spin on a gateway that refuses connections.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return None;
            }
        },
    };
    match connection.send(request).await {
        Ok(reply) => {
            lock(shared).record(started.elapsed(), Ok(&reply));
            Some(reply)
        }
        Err(e) => {
            lock(shared).record(started.elapsed(), Err(&e));
            *conn = None;
            None
        }
    }
}

/// One request of the churn cycle: the answer's JSON when it succeeded.
async fn churn_step(
    endpoint: &Endpoint,
    conn: &mut Option<Connection>,
    shared: &Shared,
    operation: &str,
    body: Value,
) -> Option<Value> {
    let body = Bytes::from(body.to_string());
    let request = match endpoint.signed(operation, &body) {
        Ok(r) => r,
        Err(e) => {
            lock(shared).record(Duration::ZERO, Err(&e));
            return None;
        }
    };
    let reply = send(endpoint, conn, request, shared).await?;
    reply.ok(operation).ok()
}

/// Creates a key, an alias and a grant, retires the grant, deletes the alias and schedules the
/// key's deletion; again and again. With a short test "day" (P11KMS_DAY_SECONDS) the deletion
/// job removes the keys, and the store and token stay the same size.
async fn churn_worker(endpoint: Endpoint, shared: Shared, stop: Arc<AtomicBool>) {
    let mut conn: Option<Connection> = None;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut cycle = 0u64;
    while !stop.load(Ordering::Relaxed) {
        cycle += 1;
        churn_cycle(
            &endpoint,
            &mut conn,
            &shared,
            &format!("alias/soak-{}-{cycle}", &run[..8]),
        )
        .await;
        tokio::time::sleep(CHURN_PAUSE).await;
    }
}

async fn churn_cycle(
    endpoint: &Endpoint,
    conn: &mut Option<Connection>,
    shared: &Shared,
    alias: &str,
) {
    let Some(created) = churn_step(
        endpoint,
        conn,
        shared,
        "CreateKey",
        json!({"Description": "p11kms soak churn"}),
    )
    .await
    else {
        return;
    };
    let Some(key) = created["KeyMetadata"]["KeyId"].as_str().map(str::to_owned) else {
        return;
    };
    churn_step(
        endpoint,
        conn,
        shared,
        "CreateAlias",
        json!({"AliasName": alias, "TargetKeyId": key}),
    )
    .await;
    let grant = churn_step(
        endpoint,
        conn,
        shared,
        "CreateGrant",
        json!({
            "KeyId": key,
            "GranteePrincipal": "arn:aws:iam::111122223333:role/p11kms-soak",
            "Operations": ["Encrypt", "Decrypt"],
        }),
    )
    .await;
    if let Some(id) = grant.as_ref().and_then(|g| g["GrantId"].as_str()) {
        churn_step(
            endpoint,
            conn,
            shared,
            "RetireGrant",
            json!({"KeyId": key, "GrantId": id}),
        )
        .await;
    }
    churn_step(
        endpoint,
        conn,
        shared,
        "DeleteAlias",
        json!({"AliasName": alias}),
    )
    .await;
    churn_step(
        endpoint,
        conn,
        shared,
        "ScheduleKeyDeletion",
        json!({"KeyId": key, "PendingWindowInDays": 7}),
    )
    .await;
}

fn print_header() {
    println!(
        "| {:>7} | {:>8} | {:>7} | {:>7} | {:>7} | {:>6} | {:>8} | {:>4} | {:>9} | {:>8} | {:>4} | {:>7} | {:>5} |",
        "t (s)", "requests", "req/s", "p50 ms", "p99 ms", "errors", "err rate", "5xx", "throttled", "RSS MiB", "fds", "threads", "CPU %"
    );
}

fn print_row(s: &Sample) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "| {:>7.0} | {:>8} | {:>7.0} | {:>7.2} | {:>7.2} | {:>6} | {:>8.5} | {:>4} | {:>9} | {:>8} | {:>4} | {:>7} | {:>5} |",
        s.at_s,
        s.requests,
        s.rate,
        s.latency.p50 as f64 / 1000.0,
        s.latency.p99 as f64 / 1000.0,
        s.errors,
        s.error_rate(),
        s.server_errors,
        s.throttled,
        opt(s.rss_kib.map(|k| format!("{:.1}", k as f64 / 1024.0))),
        opt(s.fds.map(|n| n.to_string())),
        opt(s.threads.map(|n| n.to_string())),
        opt(s.cpu_percent.map(|c| format!("{c:.0}"))),
    );
    if let Some(e) = &s.first_error {
        println!("#   first error of the interval: {e}");
    }
}

/// Whether the soak stayed flat, and why, in printable lines.
#[derive(Debug)]
pub struct Verdict {
    pub flat: bool,
    pub lines: Vec<String>,
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// Compares the last third of the samples after `warmup` with the first third.
pub fn verdict(samples: &[Sample], warmup: usize) -> Verdict {
    let judged = samples.get(warmup..).unwrap_or_default();
    if judged.len() < 3 {
        return Verdict {
            flat: false,
            lines: vec![format!(
                "no verdict: {} samples after the {warmup} warm-up samples, at least 3 needed",
                judged.len()
            )],
        };
    }
    let third = (judged.len() / 3).max(1);
    let first = &judged[..third];
    let last = &judged[judged.len() - third..];
    let mut lines = vec![format!(
        "verdict over samples {}..{} (first third {} samples, last third {})",
        warmup + 1,
        samples.len(),
        first.len(),
        last.len()
    )];
    let mut flat = true;

    let rss = |part: &[Sample]| {
        median(
            part.iter()
                .filter_map(|s| s.rss_kib)
                .map(|k| k as f64)
                .collect(),
        )
    };
    if judged.iter().all(|s| s.rss_kib.is_some()) {
        let (a, b) = (rss(first), rss(last));
        let growth = (b - a) / a.max(1.0);
        let per_hour = slope(
            &judged
                .iter()
                .filter_map(|s| Some((s.at_s / 3600.0, s.rss_kib? as f64 / 1024.0)))
                .collect::<Vec<_>>(),
        );
        let ok = growth <= RSS_GROWTH_LIMIT;
        flat &= ok;
        lines.push(format!(
            "RSS: {:.1} -> {:.1} MiB ({:+.1} %, limit +{:.0} %), slope {per_hour:+.1} MiB/h: {}",
            a / 1024.0,
            b / 1024.0,
            growth * 100.0,
            RSS_GROWTH_LIMIT * 100.0,
            if ok { "flat" } else { "GROWING" }
        ));
    } else {
        lines.push("RSS: not measured (no gateway pid)".into());
    }
    if judged.iter().all(|s| s.fds.is_some()) {
        let most = |part: &[Sample]| part.iter().filter_map(|s| s.fds).max().unwrap_or(0);
        let (a, b) = (most(first), most(last));
        let ok = b <= a + FD_SLACK;
        flat &= ok;
        lines.push(format!(
            "open descriptors: at most {a} -> {b} (slack {FD_SLACK}): {}",
            if ok { "flat" } else { "GROWING" }
        ));
    } else {
        lines.push("open descriptors: not measured (no gateway pid)".into());
    }
    let p99 = |part: &[Sample]| median(part.iter().map(|s| s.latency.p99 as f64).collect());
    let (a, b) = (p99(first), p99(last));
    let ok = b <= a * P99_GROWTH_LIMIT;
    flat &= ok;
    lines.push(format!(
        "p99 latency: {:.2} -> {:.2} ms (limit x{P99_GROWTH_LIMIT}): {}",
        a / 1000.0,
        b / 1000.0,
        if ok { "flat" } else { "GROWING" }
    ));
    let rate = |part: &[Sample]| {
        let errors: u64 = part.iter().map(|s| s.errors).sum();
        let requests: u64 = part.iter().map(|s| s.requests).sum();
        errors as f64 / requests.max(1) as f64
    };
    let (a, b) = (rate(first), rate(last));
    let ok = b <= a + ERROR_RATE_SLACK;
    flat &= ok;
    let errors: u64 = judged.iter().map(|s| s.errors).sum();
    let server_errors: u64 = judged.iter().map(|s| s.server_errors).sum();
    let throttled: u64 = judged.iter().map(|s| s.throttled).sum();
    let requests: u64 = judged.iter().map(|s| s.requests).sum();
    lines.push(format!(
        "error rate: {a:.5} -> {b:.5}: {}; after the warm-up {errors} errors ({server_errors} 5xx) and {throttled} throttled in {requests} requests",
        if ok { "flat" } else { "RISING" }
    ));
    lines.push(format!(
        "verdict: {}",
        if flat { "FLAT" } else { "NOT FLAT" }
    ));
    Verdict { flat, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(rss: &[u64], fds: &[usize], p99: &[u64], errors: &[u64]) -> Vec<Sample> {
        (0..rss.len())
            .map(|i| Sample {
                at_s: 30.0 * (i + 1) as f64,
                requests: 1000,
                rate: 33.0,
                latency: Percentiles {
                    p99: p99[i],
                    ..Percentiles::default()
                },
                errors: errors[i],
                rss_kib: Some(rss[i]),
                fds: Some(fds[i]),
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn a_steady_run_is_flat_and_the_warm_up_does_not_count() {
        // The first sample (warm-up) is far off; the rest wobble.
        let s = series(
            &[20_000, 40_000, 41_000, 40_500, 40_800, 41_200, 40_900],
            &[30, 18, 18, 19, 18, 18, 19],
            &[9000, 2000, 2100, 1900, 2200, 2000, 2050],
            &[5, 0, 0, 0, 0, 0, 0],
        );
        let v = verdict(&s, 1);
        assert!(v.flat, "{:?}", v.lines);
    }

    #[test]
    fn growth_of_memory_descriptors_latency_or_errors_is_not_flat() {
        let base = (
            vec![40_000, 40_000, 40_000, 40_000, 40_000, 40_000],
            vec![18, 18, 18, 18, 18, 18],
            vec![2000, 2000, 2000, 2000, 2000, 2000],
            vec![0, 0, 0, 0, 0, 0],
        );
        assert!(verdict(&series(&base.0, &base.1, &base.2, &base.3), 0).flat);
        let leak = [40_000, 42_000, 44_000, 46_000, 48_000, 50_000];
        assert!(!verdict(&series(&leak, &base.1, &base.2, &base.3), 0).flat);
        let fds = [18, 18, 30, 40, 50, 60];
        assert!(!verdict(&series(&base.0, &fds, &base.2, &base.3), 0).flat);
        let slow = [2000, 2000, 2500, 3000, 3500, 4000];
        assert!(!verdict(&series(&base.0, &base.1, &slow, &base.3), 0).flat);
        let failing = [0, 0, 0, 0, 10, 20];
        assert!(!verdict(&series(&base.0, &base.1, &base.2, &failing), 0).flat);
    }

    #[test]
    fn too_few_samples_give_no_verdict() {
        let s = series(&[1, 1, 1], &[1, 1, 1], &[1, 1, 1], &[0, 0, 0]);
        let v = verdict(&s, 1);
        assert!(!v.flat);
        assert!(v.lines[0].starts_with("no verdict"), "{:?}", v.lines);
    }
}
