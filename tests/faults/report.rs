//! What the clients saw in each phase of the matrix, and the table of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::load::{Outcome, Record};

/// One window of the run: a fault from `fault_start` to `fault_end` (equal for the
/// baseline), then its recovery, up to the next fault's start (`window_end`). A request
/// belongs to the window it ended in: one in flight when a fault starts meets that fault.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub window_start: Duration,
    pub fault_start: Duration,
    pub fault_end: Duration,
    pub window_end: Duration,
    /// `p11kms_hsm_reinitialisations_total` over the phase.
    pub reinitialisations: f64,
}

/// Errors a client may get while the HSM is faulty: AWS's own answers for a dependency
/// that is unavailable, slow or failing. Anything else (an InvalidCiphertextException for
/// a good ciphertext, a NotFoundException for a key that exists) is a wrong answer.
pub fn acceptable(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Ok => true,
        Outcome::Aws { status, code } => matches!(
            (*status, code.as_str()),
            (400, "ThrottlingException")
                | (500, "KeyUnavailableException")
                | (500, "DependencyTimeoutException")
                | (500, "KMSInternalException")
        ),
        _ => false,
    }
}

fn label(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok => "OK".into(),
        Outcome::Aws { status, code } => format!("{code}/{status}"),
        Outcome::Untyped { status, .. } => format!("untyped/{status}"),
        Outcome::NoResponse(_) => "no response".into(),
        Outcome::Stuck => "stuck".into(),
        Outcome::Wrong(_) => "wrong content".into(),
    }
}

#[derive(Debug, Default)]
pub struct PhaseStats {
    pub requests: u64,
    pub ok: u64,
    pub during_fault: u64,
    pub errors: BTreeMap<String, u64>,
    pub server_errors: u64,
    /// Outcomes that are not [`acceptable`], with the first few described.
    pub violations: u64,
    pub examples: Vec<String>,
    /// From the fault's end to the first success of a request started after it.
    pub first_ok: Option<Duration>,
    /// From the fault's end to the end of the last failure of a request started after it:
    /// every request started after that succeeded. Zero when none failed.
    pub all_ok_after: Option<Duration>,
    /// Of the requests that started in the recovery window, the share that succeeded.
    pub ok_share_after: f64,
    /// The longest a request of the window took.
    pub max_latency: Duration,
}

pub fn analyse(phase: &Phase, records: &[&Record]) -> PhaseStats {
    let mut stats = PhaseStats::default();
    let mut after = 0u64;
    let mut after_ok = 0u64;
    let mut last_failure: Option<Duration> = None;
    for r in records
        .iter()
        .filter(|r| r.end >= phase.window_start && r.end < phase.window_end)
    {
        stats.max_latency = stats.max_latency.max(r.end - r.start);
        stats.requests += 1;
        if r.start < phase.fault_end && r.end > phase.fault_start {
            stats.during_fault += 1;
        }
        let ok = r.outcome == Outcome::Ok;
        if ok {
            stats.ok += 1;
        } else {
            *stats.errors.entry(label(&r.outcome)).or_default() += 1;
        }
        if let Outcome::Aws { status, .. } | Outcome::Untyped { status, .. } = &r.outcome {
            if *status >= 500 {
                stats.server_errors += 1;
            }
        }
        if !acceptable(&r.outcome) {
            stats.violations += 1;
            if stats.examples.len() < 5 {
                stats.examples.push(format!(
                    "{} at {:.3}s: {:?}",
                    r.op.target(),
                    r.start.as_secs_f64(),
                    r.outcome
                ));
            }
        }
        if r.start >= phase.fault_end {
            after += 1;
            let since_end = r.end.saturating_sub(phase.fault_end);
            if ok {
                after_ok += 1;
                stats.first_ok = Some(stats.first_ok.map_or(since_end, |f| f.min(since_end)));
            } else {
                last_failure = Some(last_failure.map_or(since_end, |l| l.max(since_end)));
            }
        }
    }
    stats.all_ok_after = if after_ok == 0 {
        None
    } else {
        Some(last_failure.unwrap_or(Duration::ZERO))
    };
    stats.ok_share_after = if after == 0 {
        0.0
    } else {
        after_ok as f64 / after as f64
    };
    stats
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// A Markdown table, one row per phase.
pub fn table(rows: &[(Phase, PhaseStats)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| phase | requests (during the fault) | OK | errors by type | 5xx | not acceptable | max latency | HSM reinits | first OK after end | all OK after end |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for (phase, s) in rows {
        let errors = if s.errors.is_empty() {
            "—".to_string()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} | {} | {} | {} | {:.2} s | {} | {} | {} |",
            phase.name,
            s.requests,
            s.during_fault,
            s.ok,
            errors,
            s.server_errors,
            s.violations,
            s.max_latency.as_secs_f64(),
            phase.reinitialisations,
            seconds(s.first_ok),
            seconds(s.all_ok_after),
        );
    }
    out
}
