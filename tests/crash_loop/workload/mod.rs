//! The client load that runs until the gateway is killed: each worker picks operations from
//! its phase's mix, holds the key (or alias) it works on so that no two requests race on it,
//! and writes every acknowledged result to the journal. A request that gets no answer (the
//! gateway died under it) leaves its change in doubt, and the worker stops.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, GrantOperation, RotationType};
use aws_sdk_kms::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::journal::{material_of, AliasEntry, Cipher, Doubtful, Journal, KeyEntry, Role, State};

mod crypto_ops;
mod key_ops;
use crypto_ops::*;
pub use key_ops::*;

/// What the load of one iteration is about; the kill lands somewhere inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// CreateKey (stable keys up to the limit, then keys scheduled for deletion at once).
    Create,
    /// DisableKey, EnableKey, UpdateKeyDescription.
    State,
    /// RotateKeyOnDemand, EnableKeyRotation (a short period: automatic rotations run),
    /// DisableKeyRotation.
    Rotate,
    /// CreateKey, Encrypt, ScheduleKeyDeletion (the deletion job runs), CancelKeyDeletion.
    Delete,
    /// CreateGrant, RetireGrant, RevokeGrant.
    Grant,
    /// CreateAlias, UpdateAlias, DeleteAlias.
    Alias,
    /// Encrypt, GenerateDataKey, ReEncrypt, Decrypt.
    Crypto,
    /// Crypto load on a gateway that recycles its PKCS#11 library every few operations.
    Recycle,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Create,
        Phase::State,
        Phase::Rotate,
        Phase::Delete,
        Phase::Grant,
        Phase::Alias,
        Phase::Crypto,
        Phase::Recycle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::State => "key state",
            Phase::Rotate => "rotation",
            Phase::Delete => "deletion",
            Phase::Grant => "grants",
            Phase::Alias => "aliases",
            Phase::Crypto => "crypto",
            Phase::Recycle => "library recycle",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    CreateKey,
    Churn { extras: bool },
    StateChange,
    Rotation,
    GrantChange,
    AliasChange,
    Encrypt,
    GenerateDataKey,
    ReEncrypt,
    Decrypt,
}

fn pick(phase: Phase, rng: &mut StdRng) -> Op {
    let r: f64 = rng.random();
    match phase {
        Phase::Create => Op::CreateKey,
        Phase::State => Op::StateChange,
        Phase::Rotate => Op::Rotation,
        Phase::Delete => Op::Churn { extras: true },
        Phase::Grant => Op::GrantChange,
        Phase::Alias => Op::AliasChange,
        Phase::Crypto | Phase::Recycle => crypto_op(r),
    }
}

fn crypto_op(r: f64) -> Op {
    if r < 0.35 {
        Op::Encrypt
    } else if r < 0.6 {
        Op::GenerateDataKey
    } else if r < 0.8 {
        Op::ReEncrypt
    } else {
        Op::Decrypt
    }
}

/// What every worker shares.
pub struct Ctx {
    pub kms: Client,
    /// Journal acknowledgements (the load); the checks' own reads are not journaled.
    pub record: bool,
    pub journal: Arc<Mutex<Journal>>,
    pub stop: Arc<AtomicBool>,
    /// Requests sent and not yet answered, by operation.
    pub in_flight: Arc<Mutex<BTreeMap<&'static str, u32>>>,
    /// Answers that should not have been given (each one is a failure).
    pub errors: Arc<Mutex<Vec<String>>>,
    pub stable_keys: usize,
    pub alias_limit: usize,
    pub grants_per_key: usize,
}

impl Ctx {
    pub fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, message: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
    }
}

/// What came back for one request.
pub enum Answer<T> {
    Ok(T),
    /// The gateway answered with an error.
    Refused {
        code: String,
        message: String,
    },
    /// No answer: the connection died (the gateway was killed) or timed out.
    Lost(String),
}

/// Sends one request, counting it in flight, and journals its acknowledgement.
pub async fn call<T, E>(
    ctx: &Ctx,
    operation: &'static str,
    request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Answer<T>
where
    T: RequestId,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    *ctx.in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(operation)
        .or_default() += 1;
    let result = request.await;
    if let Some(n) = ctx
        .in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(operation)
    {
        *n = n.saturating_sub(1);
    }
    match result {
        Ok(out) => {
            if ctx.record {
                ctx.journal().acknowledge(operation, out.request_id());
            }
            Answer::Ok(out)
        }
        Err(SdkError::ServiceError(e)) => {
            let err = e.err();
            Answer::Refused {
                code: err.code().unwrap_or("<none>").to_string(),
                message: err.message().unwrap_or("").to_string(),
            }
        }
        Err(e) => Answer::Lost(format!("{}", DisplayErrorContext(&e))),
    }
}

/// Whether the worker goes on.
enum Flow {
    Continue,
    /// Nothing to do right now (every candidate is held by another worker).
    Idle,
    /// The gateway is gone.
    Stop,
}

/// Runs operations of `phase` until the gateway dies or `stop` is set.
pub async fn worker(ctx: Arc<Ctx>, phase: Phase, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !ctx.stop.load(Ordering::Relaxed) {
        let flow = match pick(phase, &mut rng) {
            Op::CreateKey => create_key(&ctx, &mut rng).await,
            Op::Churn { extras } => churn(&ctx, &mut rng, extras).await,
            Op::StateChange => state_change(&ctx, &mut rng).await,
            Op::Rotation => rotation(&ctx, &mut rng).await,
            Op::GrantChange => grant_change(&ctx, &mut rng).await,
            Op::AliasChange => alias_change(&ctx, &mut rng).await,
            Op::Encrypt => encrypt(&ctx, &mut rng).await,
            Op::GenerateDataKey => generate_data_key(&ctx, &mut rng).await,
            Op::ReEncrypt => re_encrypt(&ctx, &mut rng).await,
            Op::Decrypt => decrypt(&ctx, &mut rng).await,
        };
        match flow {
            Flow::Continue => {}
            Flow::Idle => tokio::time::sleep(Duration::from_millis(2)).await,
            Flow::Stop => break,
        }
    }
}

/// A background worker that keeps ciphertexts coming in every phase.
pub async fn crypto_worker(ctx: Arc<Ctx>, seed: u64) {
    worker(ctx, Phase::Crypto, seed).await
}

fn random_context(rng: &mut StdRng) -> HashMap<String, String> {
    (0..rng.random_range(0..3usize))
        .map(|i| (format!("k{i}"), format!("v{:x}", rng.random::<u32>())))
        .collect()
}

fn random_plaintext(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(1..=256usize);
    (0..len).map(|_| rng.random()).collect()
}

fn context_opt(ctx: &HashMap<String, String>) -> Option<HashMap<String, String>> {
    (!ctx.is_empty()).then(|| ctx.clone())
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The error an unexpected refusal is reported as.
/// On-demand rotations the gateway allows per key, as AWS does.
const ON_DEMAND_ROTATION_LIMIT: u32 = 10;

fn refused(ctx: &Ctx, operation: &str, key: &str, code: &str, message: &str) -> Flow {
    ctx.error(format!("{operation} on {key} refused: {code}: {message}"));
    Flow::Continue
}

/// Before the first kill: `keys` stable keys with a ciphertext each.
pub async fn setup(ctx: &Arc<Ctx>, keys: usize) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..keys {
        if let Flow::Stop = create_key(ctx, &mut rng).await {
            return Err("the gateway stopped answering during setup".into());
        }
    }
    for _ in 0..keys {
        if let Flow::Stop = encrypt(ctx, &mut rng).await {
            return Err("the gateway stopped answering during setup".into());
        }
    }
    let errors = std::mem::take(&mut *ctx.errors.lock().unwrap_or_else(|p| p.into_inner()));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}
