//! The HTTP edge: AWS JSON 1.1 over axum.
//!
//! One handler serves `POST /`. It caps the body before anything else, verifies SigV4,
//! picks the operation from `X-Amz-Target`, decodes and validates the JSON, and runs the
//! service call on a core thread (the core calls PKCS#11, which blocks; see [`workers`]).
//! Errors from every step meet in [`rescue`], the one place that turns a [`KmsError`] into
//! a response and decides what is logged.

pub mod body;
mod dispatch;
mod workers;

pub use body::{PendingWipes, WipeCounters};
/// Decoding and validation of a request body, exactly as the handler does it (the fuzz
/// target of every operation's request goes through here).
pub use dispatch::prepare;
pub use workers::{CoreWorkers, Lanes, Scheduling, ThreadStartError};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

use crate::api::Operation;
use crate::auth::SigV4Verifier;
use crate::error::KmsError;
use crate::kms::{Caller, KmsService, RequestFacts};
use crate::telemetry::audit::AuditSlot;
use crate::telemetry::audit::{rfc3339_now, OnFailure};
use crate::telemetry::{AuditLog, AuditRecord, Metrics};

/// The largest request body accepted; checked before the signature. The biggest legitimate
/// KMS request (a 32 KiB key policy, or a 6 KiB ciphertext in base64 with a large context)
/// is well below this.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
const JSON_1_1: &str = "application/x-amz-json-1.1";

/// When a request must be answered by (`limits.request_timeout_ms`), set by the listener as a
/// request extension. Without one (a router driven directly) a request has no deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDeadline(pub tokio::time::Instant);

/// Runs `work` until `deadline`; `None` when the deadline came first.
async fn until<T>(
    deadline: Option<tokio::time::Instant>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
        None => Some(work.await),
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<KmsService>,
    pub verifier: Arc<SigV4Verifier>,
    pub metrics: Arc<Metrics>,
    pub audit: Option<Arc<AuditLog>>,
    /// The threads that run the service core: one per HSM session, and a key-generation lane.
    pub lanes: Arc<Lanes>,
    /// Whether clients reach this listener over TLS (`aws:SecureTransport`).
    pub secure_transport: bool,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", post(handle_kms))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn handle_kms(State(state): State<AppState>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let source_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    let operation = Operation::from_target(&target);
    let operation_name = operation.map(|o| o.name()).unwrap_or("Unknown");
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        operation = operation_name,
        principal_arn = tracing::field::Empty,
        key_arn = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let mut outcome = process(&state, request, operation).await;
        let mut outcome_name = match &outcome.result {
            Ok(_) => "OK",
            Err(error) => error.wire().code,
        };
        let span = tracing::Span::current();
        if let Some(arn) = &outcome.principal_arn {
            span.record("principal_arn", arn.as_str());
        }
        if let Some(arn) = outcome.facts.key_arns.first() {
            span.record("key_arn", arn.as_str());
        }
        // The record says what the gateway did; with `audit.on_failure = "refuse"` the answer
        // waits until it is on disk, and is withheld if it cannot be written.
        let mut withheld = None;
        if let (Some(audit), Some(slot)) = (&state.audit, outcome.audit_slot.take()) {
            let record = AuditRecord {
                time: rfc3339_now(),
                request_id: request_id.clone(),
                principal_arn: outcome.principal_arn.clone(),
                source_ip,
                operation: operation_name.to_string(),
                key_arns: outcome.facts.key_arns,
                key_material_ids: outcome.facts.key_material_ids,
                encryption_context: outcome.facts.encryption_context,
                destination_encryption_context: outcome.facts.destination_encryption_context,
                grant_ids: outcome.facts.grant_ids,
                outcome: outcome_name.to_string(),
                records_dropped: None,
            };
            if let Err(refusal) = audit.commit(slot, record).await {
                outcome_name = refusal.wire().code;
                withheld = Some(refusal);
            }
        }
        let response = match (withheld, outcome.result) {
            (Some(refusal), _) => rescue(&refusal, &request_id),
            (None, Ok(body)) => success(body, &request_id),
            (None, Err(e)) => rescue(&e, &request_id),
        };
        let elapsed = started.elapsed();
        state
            .metrics
            .requests
            .with_label_values(&[operation_name, outcome_name])
            .inc();
        state
            .metrics
            .request_duration
            .with_label_values(&[operation_name])
            .observe(elapsed.as_secs_f64());
        if outcome_name == "ThrottlingException" {
            state.metrics.throttled.inc();
        }
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = elapsed.as_micros() as u64,
            "request done"
        );
        response
    }
    .instrument(span)
    .await
}

/// A request's result with what the audit trail and metrics need.
struct Outcome {
    result: Result<Vec<u8>, KmsError>,
    principal_arn: Option<String>,
    facts: RequestFacts,
    /// The request's place in the audit queue; `None` when it was refused one (or the audit
    /// trail is off), and then it has no record.
    audit_slot: Option<AuditSlot>,
}

async fn process(state: &AppState, request: Request, operation: Option<Operation>) -> Outcome {
    let mut outcome = Outcome {
        result: Ok(Vec::new()),
        principal_arn: None,
        facts: RequestFacts::default(),
        audit_slot: None,
    };
    let deadline = request
        .extensions()
        .get::<RequestDeadline>()
        .map(|RequestDeadline(at)| *at);
    let wipes = request
        .extensions()
        .get::<PendingWipes>()
        .cloned()
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let read = body::read_body(body, declared, MAX_BODY_BYTES, &wipes);
    let body = until(deadline, read).await;
    // Every request takes its record's place in the audit queue before anything else
    // happens, and once its body is in: a slow upload holds no place.
    if let Some(audit) = &state.audit {
        match audit.admit() {
            Ok(slot) => outcome.audit_slot = Some(slot),
            Err(refusal) => {
                outcome.result = Err(refusal);
                return outcome;
            }
        }
    }
    let body = match body {
        Some(Ok(body)) => body,
        Some(Err(body::BodyError::TooLarge)) => {
            outcome.result = Err(KmsError::RequestTooLarge);
            return outcome;
        }
        Some(Err(body::BodyError::Broken)) => {
            outcome.result = Err(KmsError::Serialization(
                "The request body could not be read.".into(),
            ));
            return outcome;
        }
        None => {
            state.metrics.connection_timeout("request");
            outcome.result = Err(KmsError::RequestTimeout);
            return outcome;
        }
    };
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let principal = match state.verifier.verify(&parts, &body, SystemTime::now()) {
        Ok(p) => p,
        Err(e) => {
            outcome.result = Err(e);
            return outcome;
        }
    };
    outcome.principal_arn = Some(principal.arn.clone());
    let Some(operation) = operation else {
        outcome.result = Err(KmsError::UnknownOperation);
        return outcome;
    };
    let call = match dispatch::prepare(operation, &body) {
        Ok(call) => call,
        Err(e) => {
            outcome.result = Err(e);
            return outcome;
        }
    };
    // The body's plaintexts now live in the decoded request's zeroizing buffers.
    drop(body);
    let service = state.service.clone();
    let secure_transport = state.secure_transport;
    let span = tracing::Span::current();
    let run = state.lanes.for_operation(operation).run(move || {
        span.in_scope(|| {
            let caller = Caller::new(principal).with_transport(source_ip, Some(secure_transport));
            let result = call(&service, &caller);
            (result, caller.facts())
        })
    });
    // A request that has not started on a core thread by the deadline never runs; one
    // that has runs to its end there, but its answer is no longer waited for.
    match until(deadline, run).await {
        Some(Ok((result, facts))) => {
            outcome.result = result.and_then(|encode| encode());
            outcome.facts = facts;
        }
        Some(Err(e)) => outcome.result = Err(e),
        None => {
            state.metrics.connection_timeout("request");
            outcome.result = Err(KmsError::DeadlineExceeded);
        }
    }
    outcome
}

fn success(body: Vec<u8>, request_id: &str) -> Response {
    // It may carry plaintexts or data keys: wiped once written.
    let mut response = (StatusCode::OK, body::wiped_after_writing(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(JSON_1_1));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    response
}

/// The one place an error becomes a response: AWS exception name, status and message.
/// Server faults are logged with their detail (PKCS#11 function and CKR code); client
/// mistakes only at debug level. Messages never contain secrets: `KmsError` holds none.
pub fn rescue(error: &KmsError, request_id: &str) -> Response {
    let wire = error.wire();
    if let KmsError::AuditUnavailable(refusal) = error {
        // The audit writer logs the failure itself, once; not once per refused request.
        tracing::debug!(code = wire.code, reason = %refusal, "request refused: audit trail");
    } else if error.is_server_fault() {
        tracing::error!(error = %error, code = wire.code, "request failed");
    } else {
        tracing::debug!(code = wire.code, "request refused");
    }
    let mut body = serde_json::Map::new();
    body.insert("__type".into(), wire.code.into());
    if let Some(message) = &wire.message {
        body.insert("message".into(), message.clone().into());
    }
    let status = StatusCode::from_u16(wire.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, serde_json::Value::Object(body).to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(JSON_1_1));
    headers.insert("x-amzn-errortype", HeaderValue::from_static(wire.code));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    if matches!(error, KmsError::RequestTimeout) {
        // The rest of the body is still on its way: the connection cannot be reused.
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when an HSM session answers, the store answers, and (with `refuse`) audit records are
/// being written.
async fn readyz(State(state): State<AppState>) -> Response {
    // With `refuse`, a failing audit trail refuses every KMS request: not ready. (With `log`
    // requests are served, so the gateway stays ready; `p11kms_audit_healthy` shows it.)
    if let Some(audit) = &state.audit {
        if audit.on_failure() == OnFailure::Refuse {
            if let Some(reason) = audit.failure() {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: the audit trail cannot be written: {reason}\n"),
                )
                    .into_response();
            }
        }
    }
    let service = state.service.clone();
    let check = tokio::task::spawn_blocking(move || {
        service.hsm().check()?;
        service.store().ping().map_err(KmsError::from)
    })
    .await;
    match check {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", e.wire().code),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
    }
}

/// Prometheus text exposition; gauges that mirror other state are refreshed per scrape.
async fn metrics(State(state): State<AppState>) -> Response {
    let service = state.service.clone();
    let metrics = state.metrics.clone();
    if let Some(audit) = &state.audit {
        audit.refresh_metrics();
    }
    let text = tokio::task::spawn_blocking(move || {
        crate::telemetry::metrics::refresh(&metrics, &service);
        metrics.render()
    })
    .await
    .unwrap_or_default();
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn not_found() -> Response {
    let mut response = rescue(
        &KmsError::UnknownOperation,
        &uuid::Uuid::new_v4().to_string(),
    );
    *response.status_mut() = StatusCode::NOT_FOUND;
    let _ = Body::empty();
    response
}
