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

/// Label values of `p11kms_connection_timeouts_total`.
pub const TIMEOUT_KINDS: [&str; 4] = ["tls_handshake", "header_read", "idle", "request"];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub pkcs11_calls: HistogramVec,
    pub pool_sessions: IntGaugeVec,
    pub pool_waiters: IntGauge,
    pub pool_sweeps: IntCounter,
    pub pool_transient_objects: IntGaugeVec,
    pub throttled: IntCounter,
    pub hsm_reinitialisations: IntCounter,
    pub hsm_recycles: IntCounter,
    pub pkcs11_buffers_too_small: IntCounter,
    pub hsm_object_scan_waits: IntCounterVec,
    pub hsm_operation_timeouts: IntCounter,
    pub hsm_lost_sessions: IntCounter,
    /// Domain-key mode's cache of unwrapped materials (zero in token mode).
    pub domain_cache: DomainCacheMetrics,
    pub context_keys: ContextKeyMetrics,
    pub keys: IntGaugeVec,
    pub audit_written: IntCounter,
    pub audit_write_failures: IntCounter,
    pub audit_dropped: IntCounter,
    pub audit_refused: IntCounter,
    pub audit_queue_depth: IntGauge,
    pub audit_queue_capacity: IntGauge,
    pub audit_healthy: IntGauge,
    pub store_pool_connections: IntGaugeVec,
    pub store_pool_waiters: IntGauge,
    pub store_pool_waits: IntCounter,
    pub store_pool_timeouts: IntCounter,
    pub job_rounds: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_accepted: IntCounter,
    pub connections_refused: IntCounterVec,
    pub connection_timeouts: IntCounterVec,
    pub connection_limits: IntGaugeVec,
    pub request_body_bytes: IntCounterVec,
}

/// Label values of `p11kms_connections_refused_total` and `p11kms_connection_limit`.
pub const LIMIT_PROCESS: &str = "process";
pub const LIMIT_PER_ADDRESS: &str = "per_address";

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
        let pool_sweeps = IntCounter::new(
            "p11kms_session_pool_sweeps_total",
            "Pooled sessions closed to destroy the transient objects left to them",
        )?;
        let pool_transient_objects = IntGaugeVec::new(
            Opts::new(
                "p11kms_session_pool_transient_objects",
                "Transient objects idle sessions hold until their sweep (left), and the most \
                 one session holds (per_session_limit, hsm.transient_objects_per_session)",
            ),
            &["state"],
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
        let pkcs11_buffers_too_small = IntCounter::new(
            "p11kms_pkcs11_buffer_too_small_total",
            "Single-call PKCS#11 outputs whose buffer the token found too small (each took a length query and a second call)",
        )?;
        let hsm_object_scan_waits = IntCounterVec::new(
            Opts::new(
                "p11kms_hsm_object_scan_waits_total",
                "Token searches and token-object creations that waited for each other (SoftHSM2 before 2.7 only: its searches race creations)",
            ),
            &["side"],
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
        let audit_written = IntCounter::new(
            "p11kms_audit_records_written_total",
            "Audit records written and synced to the trail",
        )?;
        let audit_write_failures = IntCounter::new(
            "p11kms_audit_write_failures_total",
            "Failed attempts to write a batch of audit records (each is retried until it succeeds)",
        )?;
        let audit_dropped = IntCounter::new(
            "p11kms_audit_records_dropped_total",
            "Audit records dropped because the queue was full (audit.on_failure = log)",
        )?;
        let audit_refused = IntCounter::new(
            "p11kms_audit_refused_requests_total",
            "Requests refused or withheld because their audit record could not be written (audit.on_failure = refuse)",
        )?;
        let audit_queue_depth = IntGauge::new(
            "p11kms_audit_queue_depth",
            "Audit records queued for the writer, and places held by requests running",
        )?;
        let audit_queue_capacity = IntGauge::new(
            "p11kms_audit_queue_capacity",
            "Capacity of the audit queue (audit.queue_capacity)",
        )?;
        let audit_healthy = IntGauge::new(
            "p11kms_audit_healthy",
            "1 while audit records are being written, 0 while writes fail (or the audit trail is off)",
        )?;
        let store_pool_connections = IntGaugeVec::new(
            Opts::new(
                "p11kms_store_pool_connections",
                "Metadata store connection pool (PostgreSQL): max, open and in_use connections",
            ),
            &["state"],
        )?;
        let store_pool_waiters = IntGauge::new(
            "p11kms_store_pool_waiters",
            "Calls waiting for a metadata store connection",
        )?;
        let store_pool_waits = IntCounter::new(
            "p11kms_store_pool_waits_total",
            "Store connection checkouts that found every connection in use and waited",
        )?;
        let store_pool_timeouts = IntCounter::new(
            "p11kms_store_pool_timeouts_total",
            "Store connection checkouts that gave up (checkout or connect timeout)",
        )?;
        registry.register(Box::new(store_pool_connections.clone()))?;
        registry.register(Box::new(store_pool_waiters.clone()))?;
        registry.register(Box::new(store_pool_waits.clone()))?;
        registry.register(Box::new(store_pool_timeouts.clone()))?;
        let job_rounds = IntCounterVec::new(
            Opts::new(
                "p11kms_job_rounds_total",
                "Rounds of the periodic jobs by job and outcome: ran (this replica held the \
                 job's lease), skipped (another replica holds it), failed (store unavailable)",
            ),
            &["job", "outcome"],
        )?;
        registry.register(Box::new(job_rounds.clone()))?;
        let connections_open = IntGauge::new(
            "p11kms_connections_open",
            "Client connections open now (TCP accepted and admitted, TLS or not)",
        )?;
        let connections_accepted = IntCounter::new(
            "p11kms_connections_accepted_total",
            "Client connections admitted",
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "p11kms_connections_refused_total",
                "Connections closed at accept because a limit was reached (process, per_address)",
            ),
            &["limit"],
        )?;
        let connection_timeouts = IntCounterVec::new(
            Opts::new(
                "p11kms_connection_timeouts_total",
                "Timeouts by kind: tls_handshake, header_read, idle (connection closed), request \
                 (answered RequestTimeoutException or DependencyTimeoutException, or closed)",
            ),
            &["kind"],
        )?;
        let connection_limits = IntGaugeVec::new(
            Opts::new(
                "p11kms_connection_limit",
                "The configured connection limits (process, per_address; 0: none)",
            ),
            &["limit"],
        )?;
        let request_body_bytes = IntCounterVec::new(
            Opts::new(
                "p11kms_request_body_bytes_total",
                "Request body bytes by whether the connection buffer they arrived in was wiped \
                 (wiped=\"yes\") or released unwiped (wiped=\"no\")",
            ),
            &["wiped"],
        )?;
        registry.register(Box::new(request_body_bytes.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_accepted.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(connection_timeouts.clone()))?;
        registry.register(Box::new(connection_limits.clone()))?;
        // Every label value exists from the start, so a dashboard sees zeros, not gaps.
        for limit in [LIMIT_PROCESS, LIMIT_PER_ADDRESS] {
            connections_refused.with_label_values(&[limit]);
        }
        for kind in TIMEOUT_KINDS {
            connection_timeouts.with_label_values(&[kind]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(pkcs11_calls.clone()))?;
        registry.register(Box::new(pool_sessions.clone()))?;
        registry.register(Box::new(pool_waiters.clone()))?;
        registry.register(Box::new(pool_sweeps.clone()))?;
        registry.register(Box::new(pool_transient_objects.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(hsm_reinitialisations.clone()))?;
        registry.register(Box::new(hsm_recycles.clone()))?;
        registry.register(Box::new(pkcs11_buffers_too_small.clone()))?;
        registry.register(Box::new(hsm_object_scan_waits.clone()))?;
        registry.register(Box::new(hsm_operation_timeouts.clone()))?;
        registry.register(Box::new(hsm_lost_sessions.clone()))?;
        registry.register(Box::new(keys.clone()))?;
        registry.register(Box::new(audit_written.clone()))?;
        registry.register(Box::new(audit_write_failures.clone()))?;
        registry.register(Box::new(audit_dropped.clone()))?;
        registry.register(Box::new(audit_refused.clone()))?;
        registry.register(Box::new(audit_queue_depth.clone()))?;
        registry.register(Box::new(audit_queue_capacity.clone()))?;
        registry.register(Box::new(audit_healthy.clone()))?;
        let domain_cache = DomainCacheMetrics::new(&registry)?;
        let context_keys = ContextKeyMetrics::new(&registry)?;
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            pkcs11_calls,
            pool_sessions,
            pool_waiters,
            pool_sweeps,
            pool_transient_objects,
            throttled,
            hsm_reinitialisations,
            hsm_recycles,
            pkcs11_buffers_too_small,
            hsm_object_scan_waits,
            hsm_operation_timeouts,
            hsm_lost_sessions,
            domain_cache,
            context_keys,
            keys,
            audit_written,
            audit_write_failures,
            audit_dropped,
            audit_refused,
            audit_queue_depth,
            audit_queue_capacity,
            audit_healthy,
            store_pool_connections,
            store_pool_waiters,
            store_pool_waits,
            store_pool_timeouts,
            job_rounds,
            connections_open,
            connections_accepted,
            connections_refused,
            connection_timeouts,
            connection_limits,
            request_body_bytes,
        })
    }

    /// The counters a connection's `PendingWipes` reports to.
    pub fn wipe_counters(&self) -> crate::wire::WipeCounters {
        crate::wire::WipeCounters {
            wiped: self.request_body_bytes.with_label_values(&["yes"]),
            unwiped: self.request_body_bytes.with_label_values(&["no"]),
        }
    }

    /// Counts one timeout of `kind` (one of [`TIMEOUT_KINDS`]).
    pub fn connection_timeout(&self, kind: &str) {
        self.connection_timeouts.with_label_values(&[kind]).inc();
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

/// Domain-key mode's cache of unwrapped key materials (session objects).
pub struct DomainCacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub evictions: IntCounter,
    pub key_refinds: IntCounter,
    pub objects: IntGauge,
    pub capacity: IntGauge,
}

impl DomainCacheMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = DomainCacheMetrics {
            hits: IntCounter::new(
                "p11kms_domain_cache_hits_total",
                "Uses of a key material found unwrapped in the domain cache",
            )?,
            misses: IntCounter::new(
                "p11kms_domain_cache_misses_total",
                "Uses of a key material that had to be unwrapped from its stored blob",
            )?,
            evictions: IntCounter::new(
                "p11kms_domain_cache_evictions_total",
                "Unwrapped key materials destroyed to keep the cache within its capacity",
            )?,
            key_refinds: IntCounter::new(
                "p11kms_domain_key_refinds_total",
                "Library reinitialisations to find a domain key another process put in the \
                 token (at most one per 5 s)",
            )?,
            objects: IntGauge::new(
                "p11kms_domain_cache_objects",
                "Unwrapped key-material session objects the domain cache holds now",
            )?,
            capacity: IntGauge::new(
                "p11kms_domain_cache_capacity",
                "Most session objects the domain cache holds (hsm.domain_cache_capacity)",
            )?,
        };
        registry.register(Box::new(metrics.hits.clone()))?;
        registry.register(Box::new(metrics.misses.clone()))?;
        registry.register(Box::new(metrics.evictions.clone()))?;
        registry.register(Box::new(metrics.key_refinds.clone()))?;
        registry.register(Box::new(metrics.objects.clone()))?;
        registry.register(Box::new(metrics.capacity.clone()))?;
        Ok(metrics)
    }

    fn refresh(&self, stats: &crate::hsm::domain::DomainCacheStats) {
        for (counter, value) in [
            (&self.hits, stats.hits),
            (&self.misses, stats.misses),
            (&self.evictions, stats.evictions),
            (&self.key_refinds, stats.key_refinds),
        ] {
            catch_up(counter, value);
        }
        self.objects.set(stats.size as i64);
        self.capacity.set(stats.capacity as i64);
    }
}

/// Reads one counter of the context-key cache's figures.
type StatRead = fn(&crate::hsm::ContextKeyStats) -> u64;

/// The context-key cache of ciphertext schemes 2 and 3, and the reservoir of token
/// randomness new ciphertexts draw nonces and IVs from.
pub struct ContextKeyMetrics {
    counters: Vec<(IntCounter, StatRead)>,
    pub keys: IntGauge,
    pub capacity: IntGauge,
    pub scheme: IntGauge,
}

impl ContextKeyMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let specs: [(&str, &str, StatRead); 6] = [
            (
                "p11kms_context_key_cache_hits_total",
                "Uses of a (material, context) key found in the cache",
                |s| s.hits,
            ),
            (
                "p11kms_context_key_cache_misses_total",
                "Uses of a context key that derived a transient one (a context seen once)",
                |s| s.misses,
            ),
            (
                "p11kms_context_key_cache_admissions_total",
                "Context keys derived into the cache (second use of a context, or a MAC key)",
                |s| s.admissions,
            ),
            (
                "p11kms_context_key_cache_evictions_total",
                "Cached context keys destroyed to keep the cache within its capacity",
                |s| s.evictions,
            ),
            (
                "p11kms_ciphertext_cold_writes_total",
                "Ciphertexts written with the per-message scheme 1 because their context was cold",
                |s| s.cold_writes,
            ),
            (
                "p11kms_random_reservoir_refills_total",
                "C_GenerateRandom calls that refilled the reservoir of nonces and IVs",
                |s| s.reservoir_refills,
            ),
        ];
        let mut counters = Vec::new();
        for (name, help, read) in specs {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            counters.push((counter, read));
        }
        let metrics = ContextKeyMetrics {
            counters,
            keys: IntGauge::new(
                "p11kms_context_key_cache_keys",
                "Context keys the cache holds now (session objects)",
            )?,
            capacity: IntGauge::new(
                "p11kms_context_key_cache_capacity",
                "Most context keys the cache holds (hsm.context_key_cache; 0: no cache)",
            )?,
            scheme: IntGauge::new(
                "p11kms_ciphertext_scheme",
                "The scheme new symmetric ciphertexts of warm contexts are written with",
            )?,
        };
        registry.register(Box::new(metrics.keys.clone()))?;
        registry.register(Box::new(metrics.capacity.clone()))?;
        registry.register(Box::new(metrics.scheme.clone()))?;
        Ok(metrics)
    }

    fn refresh(&self, stats: &crate::hsm::ContextKeyStats, scheme: u8) {
        for (counter, read) in &self.counters {
            let value = read(stats);
            catch_up(counter, value);
        }
        self.keys.set(stats.size as i64);
        self.capacity.set(stats.capacity as i64);
        self.scheme.set(i64::from(scheme));
    }
}

/// Raises a counter that mirrors a running total kept elsewhere to that total.
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Copies pool occupancy, reinitialisations and key counts into their gauges.
pub fn refresh(metrics: &Metrics, service: &crate::kms::KmsService) {
    let provider = service.hsm().stats();
    if let Some(stats) = provider.pool {
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
        catch_up(&metrics.pool_sweeps, stats.sweeps);
        for (state, n) in [
            ("left", stats.left_objects),
            ("per_session_limit", u64::from(stats.sweep_after)),
        ] {
            metrics
                .pool_transient_objects
                .with_label_values(&[state])
                .set(n as i64);
        }
    }
    catch_up(&metrics.hsm_reinitialisations, provider.reinitialisations);
    catch_up(&metrics.hsm_recycles, provider.recycles);
    let waits = crate::hsm::ObjectScanLock::waits();
    for (side, total) in [("search", waits.searches), ("creation", waits.creations)] {
        let counter = metrics.hsm_object_scan_waits.with_label_values(&[side]);
        catch_up(&counter, total);
    }
    let too_small = pkcs11_direct::buffers_too_small();
    catch_up(&metrics.pkcs11_buffers_too_small, too_small);
    if let Some(pool) = service.store().pool_stats() {
        for (state, n) in [
            ("max", pool.max_size),
            ("open", pool.open),
            ("in_use", pool.in_use),
        ] {
            metrics
                .store_pool_connections
                .with_label_values(&[state])
                .set(n as i64);
        }
        metrics.store_pool_waiters.set(pool.waiting as i64);
        catch_up(&metrics.store_pool_waits, pool.waits);
        catch_up(&metrics.store_pool_timeouts, pool.timeouts);
    }
    catch_up(&metrics.hsm_operation_timeouts, provider.operation_timeouts);
    catch_up(&metrics.hsm_lost_sessions, provider.lost_sessions);
    if let Some(stats) = provider.domain_cache {
        metrics.domain_cache.refresh(&stats);
    }
    metrics.context_keys.refresh(
        &provider.context_keys,
        service.hsm().capabilities().ciphertext_scheme,
    );
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

/// Every PKCS#11 call the HSM layer makes is observed through its own small trait, so the
/// `hsm` module needs nothing from `telemetry`.
impl crate::hsm::CallObserver for Metrics {
    fn observe(&self, function: &'static str, outcome: &str, seconds: f64) {
        self.pkcs11_call(function, outcome, seconds);
    }
}
