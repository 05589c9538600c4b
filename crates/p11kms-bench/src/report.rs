//! The tables and the target summary.

use std::time::Duration;

use super::calls::CallCounts;
use super::raw::RawOp;
use super::{BenchOp, Percentiles};

/// Gateway throughput at c16 (32 B) must reach this share of the raw ceiling.
const TARGET_RATIO: f64 = 0.90;
/// The gateway may add at most this much CPU per request to the raw chain's.
const TARGET_CPU_OVERHEAD_US: f64 = 40.0;
const TARGET_RSS_MIB: f64 = 64.0;
const TARGET_STARTUP_MS: f64 = 300.0;
const TARGET_HIDING: f64 = 0.80;

/// One gateway run.
#[derive(Debug, Clone)]
pub struct GatewayRow {
    pub op: BenchOp,
    pub size: usize,
    pub concurrency: usize,
    pub requests: u64,
    pub seconds: f64,
    /// Failed requests other than throttling.
    pub errors: u64,
    pub server_errors: u64,
    pub throttled: u64,
    pub first_error: String,
    pub latency: Percentiles,
    pub cpu_per_request_us: Option<f64>,
    /// PKCS#11 operations per request, from the gateway's metrics.
    pub calls: Option<CallCounts>,
    pub load: String,
}

impl GatewayRow {
    /// Requests answered 200 per second. Refusals (throttling under the audit trail's or the
    /// session pool's back-pressure) come back fast, and counting them would inflate it.
    pub fn rate(&self) -> f64 {
        self.requests.saturating_sub(self.errors + self.throttled) as f64 / self.seconds.max(1e-9)
    }
}

/// One raw-ceiling run.
#[derive(Debug, Clone)]
pub struct RawRow {
    pub op: RawOp,
    pub size: usize,
    pub threads: usize,
    pub ops: u64,
    pub seconds: f64,
    pub errors: u64,
    pub latency: Percentiles,
    pub cpu_per_op_us: Option<f64>,
    pub load: String,
}

impl RawRow {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

/// The operations the throughput and CPU targets are set for (c16, 32 B).
const TARGET_OPS: [BenchOp; 3] = [BenchOp::ReEncrypt, BenchOp::Encrypt, BenchOp::Decrypt];

/// The gateway's c16, 32 B row for `op` and the raw row it is measured against.
fn target_pair<'a>(
    rows: &'a [GatewayRow],
    raw: &'a [RawRow],
    op: BenchOp,
) -> Option<(&'a GatewayRow, &'a RawRow)> {
    let row = rows
        .iter()
        .find(|r| r.op == op && r.size == 32 && r.concurrency == 16)?;
    Some((row, raw_for(raw, row)?))
}

fn raw_for<'a>(raw: &'a [RawRow], row: &GatewayRow) -> Option<&'a RawRow> {
    raw.iter()
        .find(|r| r.op == row.op.raw() && r.size == row.size && r.threads == row.concurrency)
}

pub fn print_raw(rows: &[RawRow]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("## raw ceiling (Hsm API in-process, no HTTP)");
    println!(
        "{:<12} {:>5} {:>4} {:>7} {:>8} {:>7} {:>7} {:>7} {:>8} {:>4}  load",
        "chain", "bytes", "thr", "ops", "ops/s", "p50ms", "p99ms", "maxms", "cpu/op", "err"
    );
    for r in rows {
        println!(
            "{:<12} {:>5} {:>4} {:>7} {:>8.0} {:>7} {:>7} {:>7} {:>8} {:>4}  {}",
            r.op.name(),
            r.size,
            r.threads,
            r.ops,
            r.rate(),
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.max),
            opt(r.cpu_per_op_us),
            r.errors,
            r.load
        );
    }
}

pub fn print_gateway(rows: &[GatewayRow], raw: &[RawRow]) {
    println!();
    println!("## gateway (HTTP/1.1 keep-alive, SigV4; cpu = server CPU us per request)");
    println!(
        "{:<15} {:>5} {:>4} {:>6} {:>7} {:>6} {:>6} {:>6} {:>7} {:>4} {:>4} {:>5} {:>6} {:>7} {:>6} {:>5} {:>5}  load",
        "operation",
        "bytes",
        "conc",
        "reqs",
        "req/s",
        "p50ms",
        "p90ms",
        "p99ms",
        "maxms",
        "err",
        "5xx",
        "thrtl",
        "cpu",
        "raw/s",
        "rawcpu",
        "ratio",
        "calls"
    );
    for r in rows {
        let raw_row = raw_for(raw, r);
        println!(
            "{:<15} {:>5} {:>4} {:>6} {:>7.0} {:>6} {:>6} {:>6} {:>7} {:>4} {:>4} {:>5} {:>6} {:>7} {:>6} {:>5} {:>5}  {}",
            r.op.short(),
            r.size,
            r.concurrency,
            r.requests,
            r.rate(),
            ms(r.latency.p50),
            ms(r.latency.p90),
            ms(r.latency.p99),
            ms(r.latency.max),
            r.errors,
            r.server_errors,
            r.throttled,
            opt(r.cpu_per_request_us),
            raw_row.map(|x| format!("{:.0}", x.rate())).unwrap_or_else(|| "-".into()),
            opt(raw_row.and_then(|x| x.cpu_per_op_us)),
            raw_row
                .map(|x| format!("{:.2}", r.rate() / x.rate().max(1e-9)))
                .unwrap_or_else(|| "-".into()),
            r.calls
                .as_ref()
                .map(|c| format!("{:.1}", c.wire_calls()))
                .unwrap_or_else(|| "-".into()),
            r.load
        );
    }
    print_calls(rows);
    for r in rows.iter().filter(|r| r.errors > 0) {
        println!(
            "# errors in {} {} B c{}: first: {}",
            r.op.target(),
            r.size,
            r.concurrency,
            r.first_error
        );
    }
}

/// The PKCS#11 operations behind each (operation, payload), from its first row.
fn print_calls(rows: &[GatewayRow]) {
    let mut seen = Vec::new();
    for r in rows {
        let Some(calls) = &r.calls else {
            continue;
        };
        if seen.contains(&(r.op, r.size)) {
            continue;
        }
        seen.push((r.op, r.size));
        println!(
            "# PKCS#11 per request, {} {} B (c{}): {:.1} calls ({:.1} counted: {})",
            r.op.target(),
            r.size,
            r.concurrency,
            calls.wire_calls(),
            calls.counted(),
            calls.describe()
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// The targets, as ratios, for one gateway phase.
pub fn print_targets(
    phase: &str,
    rows: &[GatewayRow],
    raw: &[RawRow],
    peak_rss_kib: Option<u64>,
    startup: Duration,
) {
    println!();
    println!("## targets ({phase})");
    for op in TARGET_OPS {
        let Some((row, raw_row)) = target_pair(rows, raw, op) else {
            continue;
        };
        let ratio = row.rate() / raw_row.rate().max(1e-9);
        println!(
            "throughput c16 32 B {:<10} {:>6.0}/s vs raw {:>6.0}/s = {:.2} (target >= {TARGET_RATIO:.2}: {})",
            op.target(),
            row.rate(),
            raw_row.rate(),
            ratio,
            verdict(ratio >= TARGET_RATIO)
        );
        if let (Some(gw), Some(rc)) = (row.cpu_per_request_us, raw_row.cpu_per_op_us) {
            println!(
                "cpu/req    c16 32 B {:<10} {gw:>6.0} us vs raw {rc:>6.0} us: +{:.0} us (target <= +{TARGET_CPU_OVERHEAD_US:.0}: {})",
                op.target(),
                gw - rc,
                verdict(gw - rc <= TARGET_CPU_OVERHEAD_US)
            );
        }
    }
    let overload: Vec<&GatewayRow> = rows.iter().filter(|r| r.concurrency >= 256).collect();
    if !overload.is_empty() {
        let fives: u64 = overload.iter().map(|r| r.server_errors).sum();
        let throttled: u64 = overload.iter().map(|r| r.throttled).sum();
        let requests: u64 = overload.iter().map(|r| r.requests).sum();
        println!(
            "overload c256: {requests} requests, {fives} 5xx, {throttled} throttled (target: no 5xx: {})",
            verdict(fives == 0)
        );
    }
    if let Some(kib) = peak_rss_kib {
        let mib = kib as f64 / 1024.0;
        println!(
            "peak RSS: {mib:.1} MiB (target <= {TARGET_RSS_MIB:.0}: {})",
            verdict(mib <= TARGET_RSS_MIB)
        );
    }
    let startup_ms = startup.as_secs_f64() * 1000.0;
    println!(
        "startup to ready on an existing token: {startup_ms:.0} ms (target <= {TARGET_STARTUP_MS:.0}: {})",
        verdict(startup_ms <= TARGET_STARTUP_MS)
    );
}

/// Latency hiding: throughput under delay against the pool's theoretical rate and the
/// no-delay throughput, at concurrency 64 (or the highest concurrency below it).
pub fn print_latency_hiding(
    base: &[GatewayRow],
    delayed: &[GatewayRow],
    delayed_raw: &[RawRow],
    pool: usize,
    delay_us: u64,
) {
    println!();
    println!("## latency hiding ({delay_us} us per cryptographic call, pool {pool})");
    for d in delayed.iter().filter(|r| r.concurrency == 64) {
        let same = |r: &&GatewayRow| r.op == d.op && r.size == d.size;
        let base_c64 = base.iter().filter(same).find(|r| r.concurrency == 64);
        let base_c1 = base.iter().filter(same).find(|r| r.concurrency == 1);
        let delayed_c1 = delayed.iter().filter(same).find(|r| r.concurrency == 1);
        let (Some(base_c64), Some(base_c1), Some(delayed_c1)) = (base_c64, base_c1, delayed_c1)
        else {
            println!(
                "{} {} B: needs concurrency 1 and 64 in both phases",
                d.op.target(),
                d.size
            );
            continue;
        };
        // The request's HSM time: what the delay added to a lone request.
        let hsm_us = delayed_c1.latency.p50.saturating_sub(base_c1.latency.p50) as f64;
        let calls = hsm_us / delay_us.max(1) as f64;
        let theoretical = pool as f64 / (hsm_us.max(1.0) / 1e6);
        let bound = theoretical.min(base_c64.rate());
        let ratio = d.rate() / bound.max(1e-9);
        println!(
            "{:<10} {:>4} B: HSM time {:.1} ms/request (~{:.1} calls), pool rate {:.0}/s, no-delay c64 {:.0}/s, delayed c64 {:.0}/s = {:.2} of min (target >= {TARGET_HIDING:.2}: {})",
            d.op.target(),
            d.size,
            hsm_us / 1000.0,
            calls,
            theoretical,
            base_c64.rate(),
            d.rate(),
            ratio,
            verdict(ratio >= TARGET_HIDING)
        );
        if let Some(raw) = raw_for(delayed_raw, d) {
            println!(
                "{:<10} {:>4} B: raw ceiling under the same delay at c64 {:.0}/s: gateway/raw {:.2}, server CPU {} vs {} us",
                d.op.target(),
                d.size,
                raw.rate(),
                d.rate() / raw.rate().max(1e-9),
                opt(d.cpu_per_request_us),
                opt(raw.cpu_per_op_us)
            );
        }
    }
}

/// The targets over several rounds: each round's gateway figures against the raw figures
/// of the same round, then the median of those paired ratios and differences.
pub fn print_rounds(rounds: &[(Vec<RawRow>, Vec<GatewayRow>)]) {
    println!();
    println!(
        "## targets over {} rounds (median of per-round pairs)",
        rounds.len()
    );
    for op in TARGET_OPS {
        let mut ratios = Vec::new();
        let mut deltas = Vec::new();
        let mut gateway_cpu = Vec::new();
        let mut raw_cpu = Vec::new();
        let mut gateway_rate = Vec::new();
        let mut raw_rate = Vec::new();
        for (raw, gateway) in rounds {
            let Some((row, raw_row)) = target_pair(gateway, raw, op) else {
                continue;
            };
            ratios.push(row.rate() / raw_row.rate().max(1e-9));
            gateway_rate.push(row.rate());
            raw_rate.push(raw_row.rate());
            if let (Some(gw), Some(rc)) = (row.cpu_per_request_us, raw_row.cpu_per_op_us) {
                deltas.push(gw - rc);
                gateway_cpu.push(gw);
                raw_cpu.push(rc);
            }
        }
        let list = |v: &[f64], digits: usize| {
            v.iter()
                .map(|x| format!("{x:.digits$}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if let Some(ratio) = median(&ratios) {
            println!(
                "throughput c16 32 B {:<10} {:>6.0}/s vs raw {:>6.0}/s: ratio {ratio:.2} (rounds: {}) (target >= {TARGET_RATIO:.2}: {})",
                op.target(),
                median(&gateway_rate).unwrap_or_default(),
                median(&raw_rate).unwrap_or_default(),
                list(&ratios, 2),
                verdict(ratio >= TARGET_RATIO)
            );
        }
        if let Some(delta) = median(&deltas) {
            println!(
                "cpu/req    c16 32 B {:<10} {:>6.0} us vs raw {:>6.0} us: {delta:+.0} us (rounds: {}) (target <= +{TARGET_CPU_OVERHEAD_US:.0}: {})",
                op.target(),
                median(&gateway_cpu).unwrap_or_default(),
                median(&raw_cpu).unwrap_or_default(),
                list(&deltas, 0),
                verdict(delta <= TARGET_CPU_OVERHEAD_US)
            );
        }
    }
    print_round_rows(rounds);
}

/// Every gateway row over the rounds, beside the raw row of the same round: ranges
/// (min-max) of throughput, the paired ratio and CPU per request.
fn print_round_rows(rounds: &[(Vec<RawRow>, Vec<GatewayRow>)]) {
    let Some((_, first)) = rounds.first() else {
        return;
    };
    println!();
    println!(
        "## every row over {} rounds (min-max; ratio = gateway / raw of the same round, median)",
        rounds.len()
    );
    println!(
        "{:<15} {:>5} {:>4} {:>13} {:>13} {:>16} {:>9} {:>9} {:>11} {:>5} {:>6}",
        "operation",
        "bytes",
        "conc",
        "req/s",
        "raw/s",
        "ratio",
        "cpu",
        "rawcpu",
        "p50ms",
        "calls",
        "thrtl"
    );
    let range = |v: &[f64], digits: usize| match (
        v.iter().copied().reduce(f64::min),
        v.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) => format!("{lo:.digits$}-{hi:.digits$}"),
        _ => "-".into(),
    };
    for key in first {
        let mut rate = Vec::new();
        let mut raw_rate = Vec::new();
        let mut ratio = Vec::new();
        let mut cpu = Vec::new();
        let mut raw_cpu = Vec::new();
        let mut p50 = Vec::new();
        let mut calls = Vec::new();
        let mut throttled = 0;
        for (raw, gateway) in rounds {
            let Some(row) = gateway
                .iter()
                .find(|r| r.op == key.op && r.size == key.size && r.concurrency == key.concurrency)
            else {
                continue;
            };
            rate.push(row.rate());
            throttled += row.throttled;
            p50.push(row.latency.p50 as f64 / 1000.0);
            cpu.extend(row.cpu_per_request_us);
            calls.extend(row.calls.as_ref().map(CallCounts::wire_calls));
            if let Some(raw_row) = raw_for(raw, row) {
                raw_rate.push(raw_row.rate());
                ratio.push(row.rate() / raw_row.rate().max(1e-9));
                raw_cpu.extend(raw_row.cpu_per_op_us);
            }
        }
        println!(
            "{:<15} {:>5} {:>4} {:>13} {:>13} {:>16} {:>9} {:>9} {:>11} {:>5} {:>6}",
            key.op.short(),
            key.size,
            key.concurrency,
            range(&rate, 0),
            range(&raw_rate, 0),
            median(&ratio)
                .map(|m| format!("{} ({m:.2})", range(&ratio, 2)))
                .unwrap_or_else(|| "-".into()),
            range(&cpu, 0),
            range(&raw_cpu, 0),
            range(&p50, 2),
            median(&calls)
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "-".into()),
            throttled,
        );
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
