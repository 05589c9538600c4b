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

// === keys ===

async fn create_key(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    if ctx.journal().stable_keys() >= ctx.stable_keys {
        return churn(ctx, rng, false).await;
    }
    let description = format!("crash-{:08x}", rng.random::<u32>());
    match call(
        ctx,
        "CreateKey",
        ctx.kms.create_key().description(&description).send(),
    )
    .await
    {
        Answer::Ok(out) => {
            let Some(id) = out.key_metadata().map(|m| m.key_id().to_string()) else {
                ctx.error("CreateKey answered without KeyMetadata".into());
                return Flow::Continue;
            };
            ctx.journal()
                .keys
                .push(KeyEntry::new(id, Role::Stable, description));
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "CreateKey", "-", &code, &message),
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("CreateKey");
            Flow::Stop
        }
    }
}

/// CreateKey, then (with `extras`) an Encrypt under it, ScheduleKeyDeletion, and sometimes
/// CancelKeyDeletion followed by a second ScheduleKeyDeletion.
async fn churn(ctx: &Ctx, rng: &mut StdRng, extras: bool) -> Flow {
    let description = format!("churn-{:08x}", rng.random::<u32>());
    let id = match call(
        ctx,
        "CreateKey",
        ctx.kms.create_key().description(&description).send(),
    )
    .await
    {
        Answer::Ok(out) => match out.key_metadata().map(|m| m.key_id().to_string()) {
            Some(id) => id,
            None => {
                ctx.error("CreateKey answered without KeyMetadata".into());
                return Flow::Continue;
            }
        },
        Answer::Refused { code, message } => {
            return refused(ctx, "CreateKey", "-", &code, &message)
        }
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("CreateKey");
            return Flow::Stop;
        }
    };
    let index = {
        let mut journal = ctx.journal();
        let mut entry = KeyEntry::new(id.clone(), Role::Churn, description);
        entry.busy = true;
        journal.keys.push(entry);
        journal.keys.len() - 1
    };
    let flow = churn_steps(ctx, rng, index, &id, extras).await;
    ctx.journal().release_key(index);
    flow
}

async fn churn_steps(ctx: &Ctx, rng: &mut StdRng, index: usize, id: &str, extras: bool) -> Flow {
    if extras {
        if let Flow::Stop = encrypt_under(ctx, rng, index, id).await {
            return Flow::Stop;
        }
    }
    if let Flow::Stop = schedule_deletion(ctx, rng, index, id).await {
        return Flow::Stop;
    }
    if !extras || rng.random_bool(0.6) {
        return Flow::Continue;
    }
    match call(
        ctx,
        "CancelKeyDeletion",
        ctx.kms.cancel_key_deletion().key_id(id).send(),
    )
    .await
    {
        Answer::Ok(_) => {
            let mut journal = ctx.journal();
            journal.keys[index].state.set(State::Disabled);
            journal.keys[index].deletion_date = None;
        }
        Answer::Refused { code, message } => {
            // The waiting period may already be over: then the key is gone, as acknowledged.
            let mut journal = ctx.journal();
            let due = journal.keys[index]
                .deletion_date
                .is_some_and(|d| now_epoch() >= d - 0.5);
            if code == "NotFoundException" && due {
                journal.keys[index].deleted = true;
                return Flow::Continue;
            }
            drop(journal);
            return refused(ctx, "CancelKeyDeletion", id, &code, &message);
        }
        Answer::Lost(_) => {
            let mut journal = ctx.journal();
            journal.keys[index].state.doubt(State::Disabled);
            journal.left_in_doubt("CancelKeyDeletion");
            return Flow::Stop;
        }
    }
    schedule_deletion(ctx, rng, index, id).await
}

async fn schedule_deletion(ctx: &Ctx, rng: &mut StdRng, index: usize, id: &str) -> Flow {
    let window = rng.random_range(7..=30);
    match call(
        ctx,
        "ScheduleKeyDeletion",
        ctx.kms
            .schedule_key_deletion()
            .key_id(id)
            .pending_window_in_days(window)
            .send(),
    )
    .await
    {
        Answer::Ok(out) => {
            let date = out.deletion_date().map(|d| d.as_secs_f64());
            let mut journal = ctx.journal();
            journal.keys[index].state.set(State::PendingDeletion);
            journal.keys[index].deletion_date = date;
            Flow::Continue
        }
        Answer::Refused { code, message } => {
            refused(ctx, "ScheduleKeyDeletion", id, &code, &message)
        }
        Answer::Lost(_) => {
            let mut journal = ctx.journal();
            journal.keys[index].state.doubt(State::PendingDeletion);
            journal.left_in_doubt("ScheduleKeyDeletion");
            Flow::Stop
        }
    }
}

async fn state_change(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let claimed = ctx.journal().claim_key(rng, |k| k.role == Role::Stable);
    let Some(index) = claimed else {
        return Flow::Idle;
    };
    let (id, state) = {
        let journal = ctx.journal();
        (
            journal.keys[index].id.clone(),
            journal.keys[index].state.value,
        )
    };
    let flow = match (state, rng.random::<f64>()) {
        (State::Disabled, r) if r < 0.7 => {
            let answer = call(ctx, "EnableKey", ctx.kms.enable_key().key_id(&id).send()).await;
            apply_state(ctx, index, &id, "EnableKey", answer, State::Enabled)
        }
        (State::Enabled, r) if r < 0.3 => {
            let answer = call(ctx, "DisableKey", ctx.kms.disable_key().key_id(&id).send()).await;
            apply_state(ctx, index, &id, "DisableKey", answer, State::Disabled)
        }
        _ => {
            let description = format!("described-{:08x}", rng.random::<u32>());
            let answer = call(
                ctx,
                "UpdateKeyDescription",
                ctx.kms
                    .update_key_description()
                    .key_id(&id)
                    .description(&description)
                    .send(),
            )
            .await;
            match answer {
                Answer::Ok(_) => {
                    ctx.journal().keys[index].description.set(description);
                    Flow::Continue
                }
                Answer::Refused { code, message } => {
                    refused(ctx, "UpdateKeyDescription", &id, &code, &message)
                }
                Answer::Lost(_) => {
                    let mut journal = ctx.journal();
                    journal.keys[index].description.doubt(description);
                    journal.left_in_doubt("UpdateKeyDescription");
                    Flow::Stop
                }
            }
        }
    };
    ctx.journal().release_key(index);
    flow
}

fn apply_state<T>(
    ctx: &Ctx,
    index: usize,
    id: &str,
    operation: &'static str,
    answer: Answer<T>,
    to: State,
) -> Flow {
    match answer {
        Answer::Ok(_) => {
            ctx.journal().keys[index].state.set(to);
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, operation, id, &code, &message),
        Answer::Lost(_) => {
            let mut journal = ctx.journal();
            journal.keys[index].state.doubt(to);
            journal.left_in_doubt(operation);
            Flow::Stop
        }
    }
}

async fn rotation(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let claimed = ctx.journal().claim_key(rng, |k| {
        k.role == Role::Stable && k.state.value == State::Enabled
    });
    let Some(index) = claimed else {
        return Flow::Idle;
    };
    let (id, on_demand_left) = {
        let journal = ctx.journal();
        let key = &journal.keys[index];
        // AWS allows 10 on-demand rotations per key; the gateway refuses the 11th.
        let used = key.on_demand + key.on_demand_in_doubt;
        (key.id.clone(), used < ON_DEMAND_ROTATION_LIMIT)
    };
    let r: f64 = rng.random();
    let flow = if r < 0.5 && on_demand_left {
        match call(
            ctx,
            "RotateKeyOnDemand",
            ctx.kms.rotate_key_on_demand().key_id(&id).send(),
        )
        .await
        {
            Answer::Ok(_) => {
                ctx.journal().keys[index].on_demand += 1;
                learn_rotations(ctx, index, &id).await
            }
            Answer::Refused { code, message } => {
                refused(ctx, "RotateKeyOnDemand", &id, &code, &message)
            }
            Answer::Lost(_) => {
                let mut journal = ctx.journal();
                journal.keys[index].on_demand_in_doubt += 1;
                journal.left_in_doubt("RotateKeyOnDemand");
                Flow::Stop
            }
        }
    } else {
        let enable = r < 0.8;
        let answer = if enable {
            let days = rng.random_range(90..=180);
            call(
                ctx,
                "EnableKeyRotation",
                ctx.kms
                    .enable_key_rotation()
                    .key_id(&id)
                    .rotation_period_in_days(days)
                    .send(),
            )
            .await
            .map_unit()
        } else {
            call(
                ctx,
                "DisableKeyRotation",
                ctx.kms.disable_key_rotation().key_id(&id).send(),
            )
            .await
            .map_unit()
        };
        let operation = if enable {
            "EnableKeyRotation"
        } else {
            "DisableKeyRotation"
        };
        match answer {
            Answer::Ok(()) => {
                ctx.journal().keys[index].rotation_enabled.set(enable);
                Flow::Continue
            }
            Answer::Refused { code, message } => refused(ctx, operation, &id, &code, &message),
            Answer::Lost(_) => {
                let mut journal = ctx.journal();
                journal.keys[index].rotation_enabled.doubt(enable);
                journal.left_in_doubt(operation);
                Flow::Stop
            }
        }
    };
    ctx.journal().release_key(index);
    flow
}

impl<T> Answer<T> {
    fn map_unit(self) -> Answer<()> {
        match self {
            Answer::Ok(_) => Answer::Ok(()),
            Answer::Refused { code, message } => Answer::Refused { code, message },
            Answer::Lost(e) => Answer::Lost(e),
        }
    }
}

/// The key's rotations as listed now: (on-demand count, every rotation material id).
pub async fn list_rotations(
    ctx: &Ctx,
    id: &str,
) -> Answer<(u32, std::collections::BTreeSet<String>)> {
    let mut on_demand = 0;
    let mut materials = std::collections::BTreeSet::new();
    let mut marker: Option<String> = None;
    for _ in 0..1000 {
        let answer = call(
            ctx,
            "ListKeyRotations",
            ctx.kms
                .list_key_rotations()
                .key_id(id)
                .limit(1000)
                .set_marker(marker.clone())
                .send(),
        )
        .await;
        let out = match answer {
            Answer::Ok(out) => out,
            Answer::Refused { code, message } => return Answer::Refused { code, message },
            Answer::Lost(e) => return Answer::Lost(e),
        };
        for rotation in out.rotations() {
            if rotation.rotation_type() == Some(&RotationType::OnDemand) {
                on_demand += 1;
            }
            if let Some(m) = rotation.key_material_id() {
                materials.insert(m.to_string());
            }
        }
        match out.next_marker() {
            Some(m) if out.truncated() => marker = Some(m.to_string()),
            _ => return Answer::Ok((on_demand, materials)),
        }
    }
    Answer::Refused {
        code: "harness".into(),
        message: "ListKeyRotations did not end".into(),
    }
}

/// After an acknowledged rotation: remember the key's rotation materials.
async fn learn_rotations(ctx: &Ctx, index: usize, id: &str) -> Flow {
    match list_rotations(ctx, id).await {
        Answer::Ok((_, materials)) => {
            ctx.journal().keys[index].materials.extend(materials);
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "ListKeyRotations", id, &code, &message),
        Answer::Lost(_) => Flow::Stop,
    }
}

// === grants ===

const GRANTEE: &str = "arn:aws:iam::111122223333:role/crash-grantee";
const RETIREE: &str = "arn:aws:iam::111122223333:role/crash-retiree";

async fn grant_change(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let claimed = ctx.journal().claim_key(rng, |k| {
        k.role == Role::Stable && k.state.value == State::Enabled
    });
    let Some(index) = claimed else {
        return Flow::Idle;
    };
    let (id, live) = {
        let journal = ctx.journal();
        (
            journal.keys[index].id.clone(),
            journal.keys[index].live_grants(),
        )
    };
    let flow = if live.is_empty() || (live.len() < ctx.grants_per_key && rng.random_bool(0.6)) {
        match call(
            ctx,
            "CreateGrant",
            ctx.kms
                .create_grant()
                .key_id(&id)
                .grantee_principal(GRANTEE)
                .retiring_principal(RETIREE)
                .operations(GrantOperation::Encrypt)
                .operations(GrantOperation::Decrypt)
                .send(),
        )
        .await
        {
            Answer::Ok(out) => match out.grant_id() {
                Some(grant) => {
                    ctx.journal().keys[index]
                        .grants
                        .insert(grant.to_string(), Doubtful::new(true));
                    Flow::Continue
                }
                None => {
                    ctx.error(format!("CreateGrant on {id} answered without GrantId"));
                    Flow::Continue
                }
            },
            Answer::Refused { code, message } => refused(ctx, "CreateGrant", &id, &code, &message),
            Answer::Lost(_) => {
                // The grant id was never seen: an extra grant after the restart is fine.
                ctx.journal().left_in_doubt("CreateGrant");
                Flow::Stop
            }
        }
    } else {
        let grant = live[rng.random_range(0..live.len())].clone();
        let retire = rng.random_bool(0.5);
        let (operation, answer) = if retire {
            (
                "RetireGrant",
                call(
                    ctx,
                    "RetireGrant",
                    ctx.kms.retire_grant().key_id(&id).grant_id(&grant).send(),
                )
                .await
                .map_unit(),
            )
        } else {
            (
                "RevokeGrant",
                call(
                    ctx,
                    "RevokeGrant",
                    ctx.kms.revoke_grant().key_id(&id).grant_id(&grant).send(),
                )
                .await
                .map_unit(),
            )
        };
        match answer {
            Answer::Ok(()) => {
                if let Some(g) = ctx.journal().keys[index].grants.get_mut(&grant) {
                    g.set(false);
                }
                Flow::Continue
            }
            Answer::Refused { code, message } => refused(ctx, operation, &id, &code, &message),
            Answer::Lost(_) => {
                let mut journal = ctx.journal();
                if let Some(g) = journal.keys[index].grants.get_mut(&grant) {
                    g.doubt(false);
                }
                journal.left_in_doubt(operation);
                Flow::Stop
            }
        }
    };
    ctx.journal().release_key(index);
    flow
}

// === aliases ===

async fn alias_change(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let create = {
        let journal = ctx.journal();
        journal.live_aliases() < ctx.alias_limit && rng.random_bool(0.5)
    };
    if create {
        let (name, target) = {
            let mut journal = ctx.journal();
            let Some(target) = journal.random_stable_key(rng) else {
                return Flow::Idle;
            };
            journal.alias_seq += 1;
            let name = format!("alias/crash-{}-{}", journal.alias_seq, rng.random::<u16>());
            journal.aliases.insert(
                name.clone(),
                AliasEntry {
                    target: Doubtful::new(None),
                    busy: true,
                },
            );
            (name, target)
        };
        let answer = call(
            ctx,
            "CreateAlias",
            ctx.kms
                .create_alias()
                .alias_name(&name)
                .target_key_id(&target)
                .send(),
        )
        .await;
        return finish_alias(ctx, &name, "CreateAlias", answer.map_unit(), Some(target));
    }
    let claimed = {
        let mut journal = ctx.journal();
        journal.claim_alias(rng).map(|name| {
            let current = journal.aliases[&name].target.value.clone();
            let other = journal.random_stable_key(rng);
            (name, current, other)
        })
    };
    let Some((name, current, other)) = claimed else {
        return Flow::Idle;
    };
    match other {
        Some(target) if rng.random_bool(0.6) && Some(&target) != current.as_ref() => {
            let answer = call(
                ctx,
                "UpdateAlias",
                ctx.kms
                    .update_alias()
                    .alias_name(&name)
                    .target_key_id(&target)
                    .send(),
            )
            .await;
            finish_alias(ctx, &name, "UpdateAlias", answer.map_unit(), Some(target))
        }
        _ => {
            let answer = call(
                ctx,
                "DeleteAlias",
                ctx.kms.delete_alias().alias_name(&name).send(),
            )
            .await;
            finish_alias(ctx, &name, "DeleteAlias", answer.map_unit(), None)
        }
    }
}

fn finish_alias(
    ctx: &Ctx,
    name: &str,
    operation: &'static str,
    answer: Answer<()>,
    to: Option<String>,
) -> Flow {
    let flow = {
        let mut journal = ctx.journal();
        match answer {
            Answer::Ok(()) => {
                if let Some(a) = journal.aliases.get_mut(name) {
                    a.target.set(to);
                }
                Flow::Continue
            }
            Answer::Refused { code, message } => {
                drop(journal);
                refused(ctx, operation, name, &code, &message)
            }
            Answer::Lost(_) => {
                if let Some(a) = journal.aliases.get_mut(name) {
                    a.target.doubt(to);
                }
                journal.left_in_doubt(operation);
                Flow::Stop
            }
        }
    };
    ctx.journal().release_alias(name);
    flow
}

// === cryptography ===

fn claim_usable(ctx: &Ctx, rng: &mut StdRng) -> Option<(usize, String)> {
    let mut journal = ctx.journal();
    let index = journal.claim_key(rng, |k| {
        k.role == Role::Stable && k.state.value == State::Enabled
    })?;
    Some((index, journal.keys[index].id.clone()))
}

async fn encrypt(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let Some((index, id)) = claim_usable(ctx, rng) else {
        return Flow::Idle;
    };
    let flow = encrypt_under(ctx, rng, index, &id).await;
    ctx.journal().release_key(index);
    flow
}

/// Encrypt under a key the caller holds; journals the ciphertext.
async fn encrypt_under(ctx: &Ctx, rng: &mut StdRng, _index: usize, id: &str) -> Flow {
    let plaintext = random_plaintext(rng);
    let context = random_context(rng);
    let answer = call(
        ctx,
        "Encrypt",
        ctx.kms
            .encrypt()
            .key_id(id)
            .plaintext(Blob::new(plaintext.clone()))
            .set_encryption_context(context_opt(&context))
            .send(),
    )
    .await;
    match answer {
        Answer::Ok(out) => {
            let blob = out
                .ciphertext_blob()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            journal_cipher(ctx, id, blob, context, plaintext, None);
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "Encrypt", id, &code, &message),
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("Encrypt");
            Flow::Stop
        }
    }
}

fn journal_cipher(
    ctx: &Ctx,
    key: &str,
    blob: Vec<u8>,
    context: HashMap<String, String>,
    plaintext: Vec<u8>,
    answered_material: Option<&str>,
) {
    let Some(material) = material_of(&blob) else {
        ctx.error(format!(
            "a ciphertext under {key} is too short for its header"
        ));
        return;
    };
    if let Some(answered) = answered_material {
        if answered != material {
            ctx.error(format!(
                "KeyMaterialId {answered} in the answer, {material} in the ciphertext"
            ));
        }
    }
    ctx.journal().ciphers.push(Cipher {
        key: key.to_string(),
        material,
        context,
        plaintext,
        blob,
        checked: false,
    });
}

async fn generate_data_key(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let Some((index, id)) = claim_usable(ctx, rng) else {
        return Flow::Idle;
    };
    let context = random_context(rng);
    let answer = call(
        ctx,
        "GenerateDataKey",
        ctx.kms
            .generate_data_key()
            .key_id(&id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context_opt(&context))
            .send(),
    )
    .await;
    let flow = match answer {
        Answer::Ok(out) => {
            let blob = out
                .ciphertext_blob()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            let plaintext = out
                .plaintext()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            journal_cipher(ctx, &id, blob, context, plaintext, out.key_material_id());
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "GenerateDataKey", &id, &code, &message),
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("GenerateDataKey");
            Flow::Stop
        }
    };
    ctx.journal().release_key(index);
    flow
}

/// Claims the key of a random journaled ciphertext under a usable stable key.
fn claim_cipher(ctx: &Ctx, rng: &mut StdRng) -> Option<(usize, Cipher)> {
    let mut journal = ctx.journal();
    let usable: Vec<usize> = journal
        .ciphers
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            journal.keys.iter().any(|k| {
                k.id == c.key
                    && k.role == Role::Stable
                    && !k.busy
                    && !k.deleted
                    && k.state.value == State::Enabled
            })
        })
        .map(|(i, _)| i)
        .collect();
    if usable.is_empty() {
        return None;
    }
    let cipher = journal.ciphers[usable[rng.random_range(0..usable.len())]].clone();
    let index = journal.key_index(&cipher.key)?;
    journal.keys[index].busy = true;
    Some((index, cipher))
}

async fn re_encrypt(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let Some((source, cipher)) = claim_cipher(ctx, rng) else {
        return Flow::Idle;
    };
    let Some((destination, destination_id)) = claim_usable(ctx, rng) else {
        ctx.journal().release_key(source);
        return Flow::Idle;
    };
    let context = random_context(rng);
    let answer = call(
        ctx,
        "ReEncrypt",
        ctx.kms
            .re_encrypt()
            .ciphertext_blob(Blob::new(cipher.blob.clone()))
            .set_source_encryption_context(context_opt(&cipher.context))
            .destination_key_id(&destination_id)
            .set_destination_encryption_context(context_opt(&context))
            .send(),
    )
    .await;
    let flow = match answer {
        Answer::Ok(out) => {
            let blob = out
                .ciphertext_blob()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            journal_cipher(
                ctx,
                &destination_id,
                blob,
                context,
                cipher.plaintext.clone(),
                out.destination_key_material_id(),
            );
            Flow::Continue
        }
        Answer::Refused { code, message } => {
            refused(ctx, "ReEncrypt", &cipher.key, &code, &message)
        }
        Answer::Lost(_) => {
            ctx.journal().left_in_doubt("ReEncrypt");
            Flow::Stop
        }
    };
    let mut journal = ctx.journal();
    journal.release_key(source);
    journal.release_key(destination);
    flow
}

async fn decrypt(ctx: &Ctx, rng: &mut StdRng) -> Flow {
    let Some((index, cipher)) = claim_cipher(ctx, rng) else {
        return Flow::Idle;
    };
    let answer = call(
        ctx,
        "Decrypt",
        ctx.kms
            .decrypt()
            .ciphertext_blob(Blob::new(cipher.blob.clone()))
            .set_encryption_context(context_opt(&cipher.context))
            .send(),
    )
    .await;
    let flow = match answer {
        Answer::Ok(out) => {
            if out.plaintext().map(|p| p.as_ref()) != Some(cipher.plaintext.as_slice()) {
                ctx.error(format!(
                    "Decrypt under {} returned another plaintext",
                    cipher.key
                ));
            }
            Flow::Continue
        }
        Answer::Refused { code, message } => refused(ctx, "Decrypt", &cipher.key, &code, &message),
        Answer::Lost(_) => Flow::Stop,
    };
    ctx.journal().release_key(index);
    flow
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
