//! The mixed workload: closed-loop workers, each on its own keep-alive connection (the
//! bench's client, `p11kms_bench::Connection`), cycling through data-plane and
//! control-plane operations. Every request is recorded with its outcome, and every write the
//! gateway acknowledged is kept for the final checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use p11kms_bench::{Connection, Endpoint, Reply};
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use serde_json::{json, Value};

/// A request with no answer after this long counts as stuck.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Encrypt,
    Decrypt,
    ReEncrypt,
    GenerateDataKey,
    Sign,
    DisableKey,
    EnableKey,
    CreateAlias,
    CreateKey,
}

impl Op {
    pub fn target(self) -> &'static str {
        match self {
            Op::Encrypt => "Encrypt",
            Op::Decrypt => "Decrypt",
            Op::ReEncrypt => "ReEncrypt",
            Op::GenerateDataKey => "GenerateDataKey",
            Op::Sign => "Sign",
            Op::DisableKey => "DisableKey",
            Op::EnableKey => "EnableKey",
            Op::CreateAlias => "CreateAlias",
            Op::CreateKey => "CreateKey",
        }
    }
}

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An error response with an AWS error code (`__type`).
    Aws {
        status: u16,
        code: String,
    },
    /// An error response without one.
    Untyped {
        status: u16,
        body: String,
    },
    /// No response: refused, reset or closed connection.
    NoResponse(String),
    /// No response within [`CLIENT_TIMEOUT`].
    Stuck,
    /// A 200 whose content is wrong (a plaintext that differs, a signature that does not
    /// verify).
    Wrong(String),
}

pub struct Record {
    pub op: Op,
    /// Since the load started.
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
}

/// A ciphertext with what it must decrypt to.
#[derive(Clone)]
pub struct Sealed {
    pub blob: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub context: Value,
    /// The key it must name when decrypted.
    pub key_id: String,
}

/// DisableKey/EnableKey on a worker's own key: the state of the last acknowledged write,
/// and the target of any write tried since that got no acknowledgement (it may or may not
/// have happened).
pub struct Toggle {
    pub key_id: String,
    pub enabled: bool,
    pub unacknowledged: Option<bool>,
}

pub struct AliasAttempt {
    pub name: String,
    pub target: String,
    pub acknowledged: bool,
}

/// Everything one worker did.
pub struct Ledger {
    pub records: Vec<Record>,
    pub ciphertexts: Vec<Sealed>,
    pub toggle: Toggle,
    pub aliases: Vec<AliasAttempt>,
    pub created_keys: Vec<String>,
}

pub struct Keys {
    pub main: String,
    pub destination: String,
    pub signing: String,
    pub signing_public: p256::ecdsa::VerifyingKey,
    /// One per worker, toggled by that worker only.
    pub toggles: Vec<String>,
}

/// The keys and ciphertexts made before the load starts.
pub struct Fixture {
    pub endpoint: Endpoint,
    pub keys: Keys,
    pub sealed: Vec<Sealed>,
}

pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

pub fn field_bytes(v: &Value, name: &str) -> Option<Vec<u8>> {
    B64.decode(v[name].as_str()?).ok()
}

/// Calls the gateway and insists on a 200 (for set-up and checks, not for the load).
pub async fn call_ok(conn: &mut Connection, endpoint: &Endpoint, op: &str, body: Value) -> Value {
    let reply = conn
        .call(endpoint, op, &body)
        .await
        .unwrap_or_else(|e| panic!("{op}: no response: {e}"));
    if reply.status != 200 {
        panic!(
            "{op}: HTTP {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    reply.json().unwrap_or_else(|e| panic!("{op}: {e}"))
}

pub async fn create_key(conn: &mut Connection, endpoint: &Endpoint, body: Value) -> String {
    let v = call_ok(conn, endpoint, "CreateKey", body).await;
    v["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("CreateKey returns a KeyId")
        .to_string()
}

/// Public key of an ECC_NIST_P256 key.
pub async fn verifying_key(
    conn: &mut Connection,
    endpoint: &Endpoint,
    key_id: &str,
) -> p256::ecdsa::VerifyingKey {
    let v = call_ok(conn, endpoint, "GetPublicKey", json!({ "KeyId": key_id })).await;
    let der = field_bytes(&v, "PublicKey").expect("PublicKey");
    p256::ecdsa::VerifyingKey::from_public_key_der(&der).expect("P-256 SubjectPublicKeyInfo")
}

pub fn verify_signature(key: &p256::ecdsa::VerifyingKey, message: &[u8], der: &[u8]) -> bool {
    match p256::ecdsa::Signature::from_der(der) {
        Ok(signature) => key.verify(message, &signature).is_ok(),
        Err(_) => false,
    }
}

pub async fn setup(endpoint: Endpoint, workers: usize) -> Fixture {
    let mut conn = Connection::open(&endpoint).await.expect("connect");
    let main = create_key(
        &mut conn,
        &endpoint,
        json!({"Description": "fault matrix: main"}),
    )
    .await;
    let destination = create_key(
        &mut conn,
        &endpoint,
        json!({"Description": "fault matrix: ReEncrypt destination"}),
    )
    .await;
    let signing = create_key(
        &mut conn,
        &endpoint,
        json!({"Description": "fault matrix: Sign", "KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
    )
    .await;
    let signing_public = verifying_key(&mut conn, &endpoint, &signing).await;
    let mut toggles = Vec::with_capacity(workers);
    for w in 0..workers {
        toggles.push(
            create_key(
                &mut conn,
                &endpoint,
                json!({ "Description": format!("fault matrix: toggled by worker {w}") }),
            )
            .await,
        );
    }
    let mut sealed = Vec::new();
    for i in 0..64 {
        let plaintext = format!("fault matrix fixture {i}").into_bytes();
        let context = json!({ "fixture": i.to_string() });
        let v = call_ok(
            &mut conn,
            &endpoint,
            "Encrypt",
            json!({"KeyId": main, "Plaintext": b64(&plaintext), "EncryptionContext": context}),
        )
        .await;
        sealed.push(Sealed {
            blob: field_bytes(&v, "CiphertextBlob").expect("CiphertextBlob"),
            plaintext,
            context,
            key_id: main.clone(),
        });
    }
    Fixture {
        endpoint,
        keys: Keys {
            main,
            destination,
            signing,
            signing_public,
            toggles,
        },
        sealed,
    }
}

/// What a worker does at step `n`: mostly cryptography, some control-plane writes.
fn schedule(worker: usize, n: u64) -> Op {
    const CYCLE: [Op; 16] = [
        Op::Encrypt,
        Op::Decrypt,
        Op::GenerateDataKey,
        Op::ReEncrypt,
        Op::Encrypt,
        Op::Decrypt,
        Op::Sign,
        Op::DisableKey, // a toggle: DisableKey or EnableKey, whichever changes the state
        Op::Encrypt,
        Op::Decrypt,
        Op::GenerateDataKey,
        Op::ReEncrypt,
        Op::Encrypt,
        Op::Decrypt,
        Op::CreateAlias,
        Op::DisableKey,
    ];
    // Worker 0 creates a key now and then (the key-generation lane, a token object).
    if worker == 0 && n % 64 == 63 {
        return Op::CreateKey;
    }
    CYCLE[((n + worker as u64) % CYCLE.len() as u64) as usize]
}

/// The running load.
pub struct Load {
    pub started: Instant,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Ledger>>,
}

impl Load {
    pub fn start(fixture: Arc<Fixture>, concurrency: usize) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..concurrency)
            .map(|w| {
                let fixture = fixture.clone();
                let stop = stop.clone();
                tokio::spawn(async move { worker(w, &fixture, started, &stop).await })
            })
            .collect();
        Load {
            started,
            stop,
            workers,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub async fn stop(self) -> Vec<Ledger> {
        self.stop.store(true, Ordering::SeqCst);
        let mut ledgers = Vec::new();
        for w in self.workers {
            ledgers.push(w.await.expect("a load worker panicked"));
        }
        ledgers
    }
}

/// Sends one request; a lost connection is reopened on the next call.
async fn send(
    conn: &mut Option<Connection>,
    endpoint: &Endpoint,
    op: &str,
    body: &Value,
) -> Result<Reply, Outcome> {
    if conn.is_none() {
        *conn = Some(
            Connection::open(endpoint)
                .await
                .map_err(Outcome::NoResponse)?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err(Outcome::NoResponse("no connection".into()));
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, c.call(endpoint, op, body)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => {
            *conn = None;
            Err(Outcome::NoResponse(e))
        }
        Err(_) => {
            *conn = None;
            Err(Outcome::Stuck)
        }
    }
}

/// The outcome of an error response.
pub fn error_outcome(reply: &Reply) -> Outcome {
    let code = reply.error_type();
    if code.is_empty() {
        Outcome::Untyped {
            status: reply.status,
            body: String::from_utf8_lossy(&reply.body)
                .chars()
                .take(200)
                .collect(),
        }
    } else {
        Outcome::Aws {
            status: reply.status,
            code,
        }
    }
}

async fn worker(index: usize, fixture: &Fixture, started: Instant, stop: &AtomicBool) -> Ledger {
    let endpoint = &fixture.endpoint;
    let keys = &fixture.keys;
    let mut ledger = Ledger {
        records: Vec::new(),
        ciphertexts: Vec::new(),
        toggle: Toggle {
            key_id: keys.toggles[index].clone(),
            enabled: true,
            unacknowledged: None,
        },
        aliases: Vec::new(),
        created_keys: Vec::new(),
    };
    let mut conn = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut op = schedule(index, n);
        let fixed = &fixture.sealed[(index + n as usize) % fixture.sealed.len()];
        let plaintext = format!("fault matrix worker {index} request {n}").into_bytes();
        let context = json!({ "worker": index.to_string(), "n": n.to_string() });
        let message = format!("signed by worker {index} at {n}").into_bytes();
        let toggle_to = ledger
            .toggle
            .unacknowledged
            .unwrap_or(!ledger.toggle.enabled);
        if op == Op::DisableKey && toggle_to {
            op = Op::EnableKey;
        }
        let alias = format!("alias/fm-{index}-{n}");
        let body = match op {
            Op::Encrypt => json!({
                "KeyId": keys.main, "Plaintext": b64(&plaintext), "EncryptionContext": context,
            }),
            Op::Decrypt => json!({
                "CiphertextBlob": b64(&fixed.blob), "EncryptionContext": fixed.context,
            }),
            Op::ReEncrypt => json!({
                "CiphertextBlob": b64(&fixed.blob),
                "SourceEncryptionContext": fixed.context,
                "DestinationKeyId": keys.destination,
                "DestinationEncryptionContext": context,
            }),
            Op::GenerateDataKey => json!({
                "KeyId": keys.main, "NumberOfBytes": 32, "EncryptionContext": context,
            }),
            Op::Sign => json!({
                "KeyId": keys.signing, "Message": b64(&message), "MessageType": "RAW",
                "SigningAlgorithm": "ECDSA_SHA_256",
            }),
            Op::DisableKey | Op::EnableKey => json!({ "KeyId": ledger.toggle.key_id }),
            Op::CreateAlias => json!({ "AliasName": alias, "TargetKeyId": ledger.toggle.key_id }),
            Op::CreateKey => json!({ "Description": "fault matrix: created under load" }),
        };
        let start = started.elapsed();
        let sent = send(&mut conn, endpoint, op.target(), &body).await;
        let end = started.elapsed();
        let outcome = match sent {
            Err(outcome) => outcome,
            Ok(reply) if reply.status != 200 => error_outcome(&reply),
            Ok(reply) => match reply.json() {
                Err(e) => Outcome::Wrong(e),
                Ok(v) => {
                    let key_is =
                        |suffix: &str| v["KeyId"].as_str().is_some_and(|k| k.ends_with(suffix));
                    match op {
                        Op::Encrypt => match field_bytes(&v, "CiphertextBlob") {
                            Some(blob) => {
                                ledger.ciphertexts.push(Sealed {
                                    blob,
                                    plaintext: plaintext.clone(),
                                    context: context.clone(),
                                    key_id: keys.main.clone(),
                                });
                                Outcome::Ok
                            }
                            None => Outcome::Wrong("Encrypt: no CiphertextBlob".into()),
                        },
                        Op::Decrypt => {
                            if field_bytes(&v, "Plaintext").as_deref() == Some(&fixed.plaintext[..])
                                && key_is(&fixed.key_id)
                            {
                                Outcome::Ok
                            } else {
                                Outcome::Wrong("Decrypt: wrong plaintext or KeyId".into())
                            }
                        }
                        Op::ReEncrypt => match field_bytes(&v, "CiphertextBlob") {
                            Some(blob) if key_is(&keys.destination) => {
                                ledger.ciphertexts.push(Sealed {
                                    blob,
                                    plaintext: fixed.plaintext.clone(),
                                    context: context.clone(),
                                    key_id: keys.destination.clone(),
                                });
                                Outcome::Ok
                            }
                            _ => {
                                Outcome::Wrong("ReEncrypt: no CiphertextBlob or wrong KeyId".into())
                            }
                        },
                        Op::GenerateDataKey => {
                            match (
                                field_bytes(&v, "CiphertextBlob"),
                                field_bytes(&v, "Plaintext"),
                            ) {
                                (Some(blob), Some(data_key)) if data_key.len() == 32 => {
                                    ledger.ciphertexts.push(Sealed {
                                        blob,
                                        plaintext: data_key,
                                        context: context.clone(),
                                        key_id: keys.main.clone(),
                                    });
                                    Outcome::Ok
                                }
                                _ => Outcome::Wrong("GenerateDataKey: missing fields".into()),
                            }
                        }
                        Op::Sign => match field_bytes(&v, "Signature") {
                            Some(sig) if verify_signature(&keys.signing_public, &message, &sig) => {
                                Outcome::Ok
                            }
                            _ => Outcome::Wrong("Sign: the signature does not verify".into()),
                        },
                        Op::DisableKey | Op::EnableKey => {
                            ledger.toggle.enabled = op == Op::EnableKey;
                            ledger.toggle.unacknowledged = None;
                            Outcome::Ok
                        }
                        Op::CreateAlias => Outcome::Ok,
                        Op::CreateKey => match v["KeyMetadata"]["KeyId"].as_str() {
                            Some(id) => {
                                ledger.created_keys.push(id.to_string());
                                Outcome::Ok
                            }
                            None => Outcome::Wrong("CreateKey: no KeyId".into()),
                        },
                    }
                }
            },
        };
        let acknowledged = outcome == Outcome::Ok;
        match op {
            Op::DisableKey | Op::EnableKey if !acknowledged => {
                ledger.toggle.unacknowledged = Some(op == Op::EnableKey);
            }
            Op::CreateAlias => ledger.aliases.push(AliasAttempt {
                name: alias,
                target: ledger.toggle.key_id.clone(),
                acknowledged,
            }),
            _ => {}
        }
        ledger.records.push(Record {
            op,
            start,
            end,
            outcome,
        });
    }
    ledger
}
