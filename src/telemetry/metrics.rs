//! Prometheus metrics, owned by the server and handed to whoever records into them
//! (no process-wide registry).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 50 µs (a SoftHSM2 call) to 10 s (a stuck network HSM).
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub pkcs11_calls: HistogramVec,
    pub pool_sessions: IntGaugeVec,
    pub pool_waiters: IntGauge,
    pub throttled: IntCounter,
    pub hsm_reinitialisations: IntCounter,
    pub hsm_recycles: IntCounter,
    pub hsm_operation_timeouts: IntCounter,
    pub hsm_lost_sessions: IntCounter,
    pub keys: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "p11kms_requests_total",
                "KMS requests by operation and outcome (OK or the AWS error name)",
            ),
            &["operation", "outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "p11kms_request_duration_seconds",
                "KMS request latency by operation",
            )
            .buckets(BUCKETS.to_vec()),
            &["operation"],
        )?;
        let pkcs11_calls = HistogramVec::new(
            HistogramOpts::new(
                "p11kms_pkcs11_call_duration_seconds",
                "PKCS#11 call latency by function and CKR outcome",
            )
            .buckets(BUCKETS.to_vec()),
            &["function", "outcome"],
        )?;
        let pool_sessions = IntGaugeVec::new(
            Opts::new(
                "p11kms_session_pool_sessions",
                "HSM session pool: size, in_use and idle sessions",
            ),
            &["state"],
        )?;
        let pool_waiters = IntGauge::new(
            "p11kms_session_pool_waiters",
            "Requests waiting for an HSM session",
        )?;
        let throttled = IntCounter::new(
            "p11kms_throttled_requests_total",
            "Requests answered ThrottlingException",
        )?;
        let hsm_reinitialisations = IntCounter::new(
            "p11kms_hsm_reinitialisations_total",
            "Times the PKCS#11 library was reinitialised after a token loss",
        )?;
        let hsm_recycles = IntCounter::new(
            "p11kms_hsm_recycles_total",
            "Planned reinitialisations of the PKCS#11 library (hsm.recycle_after_operations)",
        )?;
        let hsm_operation_timeouts = IntCounter::new(
            "p11kms_hsm_operation_timeouts_total",
            "HSM operations cut at hsm.operation_timeout_ms (answered DependencyTimeoutException)",
        )?;
        let hsm_lost_sessions = IntCounter::new(
            "p11kms_hsm_lost_sessions_total",
            "HSM sessions the token lost (session-scope failures), each replaced by a fresh one",
        )?;
        let keys = IntGaugeVec::new(
            Opts::new("p11kms_keys", "KMS keys by key state"),
            &["state"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(pkcs11_calls.clone()))?;
        registry.register(Box::new(pool_sessions.clone()))?;
        registry.register(Box::new(pool_waiters.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(hsm_reinitialisations.clone()))?;
        registry.register(Box::new(hsm_recycles.clone()))?;
        registry.register(Box::new(hsm_operation_timeouts.clone()))?;
        registry.register(Box::new(hsm_lost_sessions.clone()))?;
        registry.register(Box::new(keys.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            pkcs11_calls,
            pool_sessions,
            pool_waiters,
            throttled,
            hsm_reinitialisations,
            hsm_recycles,
            hsm_operation_timeouts,
            hsm_lost_sessions,
            keys,
        })
    }

    /// Records one PKCS#11 call.
    pub fn pkcs11_call(&self, function: &str, outcome: &str, seconds: f64) {
        self.pkcs11_calls
            .with_label_values(&[function, outcome])
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Copies pool occupancy, reinitialisations and key counts into their gauges.
pub fn refresh(metrics: &Metrics, service: &crate::kms::KmsService) {
    if let Some(stats) = service.hsm().pool_stats() {
        let in_use = stats.open.saturating_sub(stats.idle);
        metrics
            .pool_sessions
            .with_label_values(&["size"])
            .set(stats.size as i64);
        metrics
            .pool_sessions
            .with_label_values(&["in_use"])
            .set(in_use as i64);
        metrics
            .pool_sessions
            .with_label_values(&["idle"])
            .set(stats.idle as i64);
        metrics.pool_waiters.set(stats.waiters as i64);
    }
    let reinits = service.hsm().reinitialisations();
    let seen = metrics.hsm_reinitialisations.get();
    if reinits > seen {
        metrics.hsm_reinitialisations.inc_by(reinits - seen);
    }
    let recycles = service.hsm().recycles();
    let seen = metrics.hsm_recycles.get();
    if recycles > seen {
        metrics.hsm_recycles.inc_by(recycles - seen);
    }
    let timeouts = service.hsm().operation_timeouts();
    let seen = metrics.hsm_operation_timeouts.get();
    if timeouts > seen {
        metrics.hsm_operation_timeouts.inc_by(timeouts - seen);
    }
    let lost = service.hsm().lost_sessions();
    let seen = metrics.hsm_lost_sessions.get();
    if lost > seen {
        metrics.hsm_lost_sessions.inc_by(lost - seen);
    }
    if let Ok(counts) = service.store().count_keys_by_state() {
        for state in [
            "Enabled",
            "Disabled",
            "PendingDeletion",
            "PendingImport",
            "Creating",
            "Unavailable",
        ] {
            let n = counts
                .iter()
                .find(|(s, _)| s.as_str() == state)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            metrics.keys.with_label_values(&[state]).set(n as i64);
        }
    }
}
