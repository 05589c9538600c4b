//! The HTTP edge: AWS JSON 1.1 over axum.
//!
//! One handler serves `POST /`. It caps the body before anything else, verifies SigV4,
//! picks the operation from `X-Amz-Target`, and hands the raw body to the service core on a
//! blocking thread (the core calls PKCS#11, which blocks). Errors from every step meet in
//! [`rescue`], the one place that turns a [`KmsError`] into a response and decides what is
//! logged.

mod dispatch;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

use crate::api::Operation;
use crate::auth::SigV4Verifier;
use crate::error::KmsError;
use crate::kms::{Caller, KmsService};

/// The largest request body accepted; checked before the signature. The biggest legitimate
/// KMS request (a 32 KiB key policy, or a 6 KiB ciphertext in base64 with a large context)
/// is well below this.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
const JSON_1_1: &str = "application/x-amz-json-1.1";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<KmsService>,
    pub verifier: Arc<SigV4Verifier>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", post(handle_kms))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
    let operation_name = target
        .strip_prefix("TrentService.")
        .unwrap_or("unknown")
        .to_string();
    let span =
        tracing::info_span!("request", request_id = %request_id, operation = %operation_name);
    async move {
        let started = Instant::now();
        let result = process(&state, request, &target).await;
        let response = match result {
            Ok(body) => success(body, &request_id),
            Err(error) => rescue(&error, &request_id),
        };
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "request done"
        );
        response
    }
    .instrument(span)
    .await
}

async fn process(state: &AppState, request: Request, target: &str) -> Result<Vec<u8>, KmsError> {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| KmsError::RequestTooLarge)?;
    let principal = state.verifier.verify(&parts, &body, SystemTime::now())?;
    let operation = Operation::from_target(target).ok_or(KmsError::UnknownOperation)?;
    let caller = Caller { principal };
    let service = state.service.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| dispatch::dispatch(&service, &caller, operation, &body))
    })
    .await
    .map_err(|_| KmsError::Internal("the request's worker thread panicked".into()))?
}

fn success(body: Vec<u8>, request_id: &str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
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
    if error.is_server_fault() {
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
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when an HSM session answers and the store answers.
async fn readyz(State(state): State<AppState>) -> Response {
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

async fn not_found() -> Response {
    let mut response = rescue(
        &KmsError::UnknownOperation,
        &uuid::Uuid::new_v4().to_string(),
    );
    *response.status_mut() = StatusCode::NOT_FOUND;
    let _ = Body::empty();
    response
}
