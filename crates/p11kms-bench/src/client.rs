//! The load generator: closed-loop workers, each on its own keep-alive HTTP/1.1
//! connection, sending SigV4-signed KMS requests.
//!
//! Each worker signs its request with `aws-sigv4` once per run (and again after a minute)
//! and sends it repeatedly: on a 2-core machine the client's own CPU competes with the
//! server, and the server still verifies every signature in full.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::report::GatewayRow;
use super::{calls, proc, run_bounds, BenchArgs, BenchOp, Percentiles};

/// How long a signed request is reused before it is signed again (SigV4 allows 5 minutes
/// of clock skew).
pub(super) const RESIGN_AFTER: Duration = Duration::from_secs(60);

/// Where the gateway is and how to sign for it.
#[derive(Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    host: String,
    access_key_id: String,
    secret_access_key: String,
    region: String,
}

impl Endpoint {
    pub fn parse(url: &str, args: &BenchArgs) -> Result<Endpoint, String> {
        Endpoint::new(
            url,
            &args.access_key_id,
            &args.secret_access_key,
            &args.region,
        )
    }

    /// A gateway at `url` (`http://host:port`), signed for with this credential and region.
    pub fn new(
        url: &str,
        access_key_id: &str,
        secret_access_key: &str,
        region: &str,
    ) -> Result<Endpoint, String> {
        let host = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("only http:// endpoints are supported: {url}"))?
            .trim_end_matches('/')
            .to_string();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to nothing"))?;
        Ok(Endpoint {
            addr,
            host,
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            region: region.to_string(),
        })
    }

    /// The `host:port` requests are sent to.
    pub(super) fn host(&self) -> &str {
        &self.host
    }

    /// A KMS request for `operation`, signed now.
    pub(super) fn signed(
        &self,
        operation: &str,
        body: &Bytes,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/")
            .header("host", &self.host)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("TrentService.{operation}"))
            .body(body.clone())
            .map_err(|e| e.to_string())?;
        let identity = Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "p11kms-bench",
        )
        .into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kms")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let instructions = {
            let mut headers = Vec::new();
            for (name, value) in req.headers() {
                headers.push((
                    name.as_str(),
                    value.to_str().map_err(|e| format!("header {name}: {e}"))?,
                ));
            }
            let signable = SignableRequest::new(
                "POST",
                "/",
                headers.into_iter(),
                SignableBody::Bytes(req.body()),
            )
            .map_err(|e| e.to_string())?;
            sign(signable, &params)
                .map_err(|e| e.to_string())?
                .into_parts()
                .0
        };
        instructions.apply_to_request_http1x(&mut req);
        Ok(req.map(Full::new))
    }
}

/// One keep-alive connection (also the load client of the fault matrix, `tests/faults`).
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

/// A response: status, error type and body.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("bad JSON response: {e}"))
    }

    /// The AWS error code (`__type`), or empty when the body has none.
    pub fn error_type(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v["__type"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub(super) fn ok(self, what: &str) -> Result<Value, String> {
        if self.status != 200 {
            return Err(format!(
                "{what}: HTTP {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ));
        }
        self.json()
    }
}

impl Connection {
    pub async fn open(endpoint: &Endpoint) -> Result<Connection, String> {
        let stream = TcpStream::connect(endpoint.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", endpoint.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender })
    }

    pub(super) async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    /// Sends `operation` with a JSON body, signed now. `Err` means no response came
    /// (connection refused, reset or closed).
    pub async fn call(
        &mut self,
        endpoint: &Endpoint,
        operation: &str,
        body: &Value,
    ) -> Result<Reply, String> {
        let body = Bytes::from(body.to_string());
        self.send(endpoint.signed(operation, &body)?).await
    }
}

/// A prepared request of one (operation, payload size).
pub(super) struct Workload {
    pub(super) op: BenchOp,
    pub(super) size: usize,
    pub(super) body: Bytes,
}

/// Creates the keys, checks each operation once, then runs every (op, size, concurrency).
pub async fn run_matrix(
    endpoint: &Endpoint,
    server_pid: Option<u32>,
    args: &BenchArgs,
    phase: &str,
) -> Result<Vec<GatewayRow>, String> {
    let mut setup = Connection::open(endpoint).await?;
    let source_key = create_key(&mut setup, endpoint).await?;
    let destination_key = create_key(&mut setup, endpoint).await?;
    let mut rows = Vec::new();
    for &op in &args.ops {
        for size in op.payload_sizes(&args.sizes) {
            let workload = prepare(
                &mut setup,
                endpoint,
                op,
                size,
                &source_key,
                &destination_key,
            )
            .await?;
            for &concurrency in &args.concurrency {
                let row = run_one(endpoint, server_pid, args, &workload, concurrency).await?;
                if args.smoke && row.errors > 0 {
                    eprintln!(
                        "# {phase}: {} {} B c{}: {} errors, first: {}",
                        op.target(),
                        size,
                        concurrency,
                        row.errors,
                        row.first_error
                    );
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

pub(super) async fn create_key(
    conn: &mut Connection,
    endpoint: &Endpoint,
) -> Result<String, String> {
    let v = conn
        .call(
            endpoint,
            "CreateKey",
            &json!({"Description": "p11kms bench"}),
        )
        .await?
        .ok("CreateKey")?;
    v["KeyMetadata"]["KeyId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "CreateKey returned no KeyId".into())
}

fn b64(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    let text = v[field]
        .as_str()
        .ok_or_else(|| format!("response has no {field}"))?;
    B64.decode(text)
        .map_err(|e| format!("{field} is not base64: {e}"))
}

/// Builds the request body and checks the operation's result once, end to end.
pub(super) async fn prepare(
    conn: &mut Connection,
    endpoint: &Endpoint,
    op: BenchOp,
    size: usize,
    source_key: &str,
    destination_key: &str,
) -> Result<Workload, String> {
    let plaintext: Vec<u8> = (0..size).map(|i| (i * 7 + 1) as u8).collect();
    let context = json!({"purpose": "bench"});
    let other_context = json!({"purpose": "bench-re"});
    let encrypt_body = json!({
        "KeyId": source_key,
        "Plaintext": B64.encode(&plaintext),
        "EncryptionContext": context,
    });
    let decrypt = |blob: &[u8], ctx: &Value| json!({"CiphertextBlob": B64.encode(blob), "EncryptionContext": ctx});
    let what = op.target();
    // A context's first ciphertext is written with scheme 1 (README, "The symmetric
    // ciphertext"); a workload's contexts repeat, so the measured ones are warm.
    conn.call(endpoint, "Encrypt", &encrypt_body)
        .await?
        .ok("Encrypt")?;
    let body = match op {
        BenchOp::Encrypt => {
            let v = conn.call(endpoint, what, &encrypt_body).await?.ok(what)?;
            let blob = b64(&v, "CiphertextBlob")?;
            let back = conn
                .call(endpoint, "Decrypt", &decrypt(&blob, &context))
                .await?
                .ok("Decrypt")?;
            if b64(&back, "Plaintext")? != plaintext {
                return Err("Encrypt/Decrypt round trip mismatch".into());
            }
            encrypt_body
        }
        BenchOp::Decrypt => {
            let v = conn
                .call(endpoint, "Encrypt", &encrypt_body)
                .await?
                .ok("Encrypt")?;
            let blob = b64(&v, "CiphertextBlob")?;
            let wrong = conn
                .call(endpoint, what, &decrypt(&blob, &other_context))
                .await?;
            if wrong.status != 400 || wrong.error_type() != "InvalidCiphertextException" {
                return Err(format!(
                    "Decrypt with the wrong context gave HTTP {} {}",
                    wrong.status,
                    wrong.error_type()
                ));
            }
            let body = decrypt(&blob, &context);
            let back = conn.call(endpoint, what, &body).await?.ok(what)?;
            if b64(&back, "Plaintext")? != plaintext {
                return Err("Decrypt returned the wrong plaintext".into());
            }
            body
        }
        BenchOp::ReEncrypt => {
            let v = conn
                .call(endpoint, "Encrypt", &encrypt_body)
                .await?
                .ok("Encrypt")?;
            let blob = b64(&v, "CiphertextBlob")?;
            let body = json!({
                "CiphertextBlob": B64.encode(&blob),
                "SourceEncryptionContext": context,
                "DestinationKeyId": destination_key,
                "DestinationEncryptionContext": other_context,
            });
            let re = conn.call(endpoint, what, &body).await?.ok(what)?;
            let moved = b64(&re, "CiphertextBlob")?;
            let back = conn
                .call(endpoint, "Decrypt", &decrypt(&moved, &other_context))
                .await?
                .ok("Decrypt")?;
            if b64(&back, "Plaintext")? != plaintext
                || !back["KeyId"]
                    .as_str()
                    .is_some_and(|k| k.ends_with(destination_key))
            {
                return Err("ReEncrypt result does not decrypt under the destination".into());
            }
            body
        }
        BenchOp::GenerateDataKey | BenchOp::GenerateDataKeyWithoutPlaintext => {
            let body = json!({
                "KeyId": source_key,
                "NumberOfBytes": size,
                "EncryptionContext": context,
            });
            let v = conn.call(endpoint, what, &body).await?.ok(what)?;
            let blob = b64(&v, "CiphertextBlob")?;
            let back = conn
                .call(endpoint, "Decrypt", &decrypt(&blob, &context))
                .await?
                .ok("Decrypt")?;
            let data_key = b64(&back, "Plaintext")?;
            if data_key.len() != size {
                return Err(format!("{what}: data key of {} bytes", data_key.len()));
            }
            match op {
                BenchOp::GenerateDataKey if b64(&v, "Plaintext")? != data_key => {
                    return Err("GenerateDataKey plaintext differs from its ciphertext".into())
                }
                BenchOp::GenerateDataKeyWithoutPlaintext if v.get("Plaintext").is_some() => {
                    return Err("GenerateDataKeyWithoutPlaintext returned a plaintext".into())
                }
                _ => {}
            }
            body
        }
    };
    Ok(Workload {
        op,
        size,
        body: Bytes::from(body.to_string()),
    })
}

/// What one worker saw.
#[derive(Default)]
struct WorkerResult {
    samples: Vec<u64>,
    errors: u64,
    server_errors: u64,
    throttled: u64,
    first_error: Option<String>,
}

impl WorkerResult {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

async fn run_one(
    endpoint: &Endpoint,
    server_pid: Option<u32>,
    args: &BenchArgs,
    workload: &Workload,
    concurrency: usize,
) -> Result<GatewayRow, String> {
    let (duration, max) = run_bounds(args);
    let concurrency = concurrency.max(1);
    let issued = Arc::new(AtomicU64::new(0));
    let start: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    // Everyone connected and warmed up, then the clock starts, then everyone goes.
    let ready = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let go = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let operation = workload.op.target();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let endpoint = endpoint.clone();
        let body = workload.body.clone();
        let issued = issued.clone();
        let start = start.clone();
        let ready = ready.clone();
        let go = go.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = WorkerResult::default();
            // Connect and send one unmeasured request before the clock starts.
            let conn = match Connection::open(&endpoint).await {
                Ok(mut c) => match endpoint.signed(operation, &body) {
                    Ok(req) => c.send(req).await.map(|_| c),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            ready.wait().await;
            go.wait().await;
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    result.error(e);
                    return result;
                }
            };
            let Some(&started) = start.get() else {
                return result;
            };
            let deadline = started + duration;
            let mut signed_at = Instant::now();
            let mut request = endpoint.signed(operation, &body);
            while issued.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                if t.duration_since(signed_at) > RESIGN_AFTER {
                    signed_at = t;
                    request = endpoint.signed(operation, &body);
                }
                let req = match &request {
                    Ok(r) => r.clone(),
                    Err(e) => {
                        result.error(e.clone());
                        break;
                    }
                };
                match conn.send(req).await {
                    Ok(reply) if reply.status == 200 => {}
                    Ok(reply) => {
                        let kind = reply.error_type();
                        if reply.status >= 500 {
                            result.server_errors += 1;
                        }
                        if kind == "ThrottlingException" {
                            result.throttled += 1;
                        } else {
                            result.error(format!("HTTP {} {kind}", reply.status));
                        }
                    }
                    Err(e) => {
                        result.error(e);
                        // The connection is gone: open a new one and go on.
                        match Connection::open(&endpoint).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
                result.samples.push(t.elapsed().as_micros() as u64);
            }
            result
        }));
    }
    ready.wait().await;
    // Every worker's warm-up request is answered by now, so the difference counts only
    // the measured requests.
    let calls_before = calls::scrape(endpoint).await;
    let cpu_before = server_pid.and_then(proc::cpu_seconds);
    let started = Instant::now();
    let _ = start.set(started);
    go.wait().await;
    let mut total = WorkerResult::default();
    for task in tasks {
        let r = task.await.map_err(|e| format!("worker failed: {e}"))?;
        total.samples.extend(r.samples);
        total.errors += r.errors;
        total.server_errors += r.server_errors;
        total.throttled += r.throttled;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, server_pid.and_then(proc::cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let requests = total.samples.len() as u64;
    // Refused requests make no PKCS#11 call: per request served.
    let served = requests.saturating_sub(total.errors + total.throttled);
    let calls = match (calls_before, calls::scrape(endpoint).await) {
        (Some(before), Some(after)) => after.per_request(&before, served),
        _ => None,
    };
    Ok(GatewayRow {
        op: workload.op,
        size: workload.size,
        concurrency,
        requests,
        seconds,
        errors: total.errors,
        server_errors: total.server_errors,
        throttled: total.throttled,
        first_error: total.first_error.unwrap_or_default(),
        latency: Percentiles::of(total.samples),
        cpu_per_request_us: cpu
            .filter(|_| requests > 0)
            .map(|c| c * 1e6 / requests as f64),
        calls,
        load: proc::load_average(),
    })
}
