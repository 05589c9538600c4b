//! The HSM: the only module that calls PKCS#11 (through `cryptoki`).
//!
//! [`Hsm`] owns the loaded module, a pool of logged-in sessions, cached object handles and
//! the recovery logic. Its operations are blocking: callers run them on blocking threads,
//! never on async workers. It is one engine for two key providers (`provider.rs`): key
//! materials as token objects (`Hsm<TokenMaterials>`, `materials.rs`) or wrapped under a
//! domain key in the store (`Hsm<DomainWrapped>`, `domain.rs`).
//!
//! Key material objects are AES-256 token keys that can only derive (`CKA_DERIVE`); they are
//! sensitive and non-extractable, and their `CKA_ID` is the key-material id. Everything else
//! is a sensitive session object: data keys and per-message wrapping keys are destroyed
//! before the call returns, or left to their session, which the pool closes once it holds
//! `transient_objects_per_session` of them (`pool.rs`); cached context keys
//! (`context_keys.rs`) live in a bounded cache.
//! See `crate::kms::ciphertext` for the construction.

mod adopt;
mod asymmetric;
pub mod ceremony;
mod context_keys;
mod copies;
mod crossover;
pub mod doctor;
pub mod domain;
mod embedded;
mod envelope;
mod error;
mod locks;
mod materials;
mod pool;
mod probe;
mod provider;
mod provision;
mod setup_error;
mod symmetric;
mod timed;
mod token;

pub use adopt::{AdoptableKey, Unadoptable};
pub use asymmetric::{
    AsymmetricCapabilities, Curve, EcPrivateParts, MacHash, OaepHash, PairKind, PairUse,
    PrivateKeyParts, PublicKeyParts, RsaPrivateParts, SigHash, SignMechanism,
};
pub use context_keys::{ContextKeyStats, RESERVOIR_BYTES, WRITES_PER_SALT};
pub use crossover::SealedParts;
pub use domain::DomainWrapped;
pub use embedded::{
    find_kryoptic_module, EmbeddedKryoptic, EmbeddedToken, EmbeddedTokenKind, UnknownEmbeddedToken,
    KRYOPTIC_LIBRARY,
};
pub use error::{HsmError, MaterialSourceError, ProviderError, Scope};
use locks::Site;
pub use locks::{DekLock, DekUnlock, LockedDek, MacInput, GCM_WRAPPED_DEK_LEN, MAC_TAG_LEN};
pub use materials::TokenMaterials;
use materials::{MaterialSpec, Materials};
pub use pool::PoolStats;
pub use probe::{probe_mechanisms, KeyWrap, MechanismReport};
pub use provider::{
    AsymmetricPrimitives, Capabilities, CrossoverPrimitives, KeyMaterials, KeyProvider,
    ProviderStats, SymmetricPrimitives, TokenAdoption,
};
pub use provision::{find_softhsm_module, EmbeddedSoftHsm};
pub use setup_error::{DomainModeError, OpenError, ProvisionError};
pub use timed::{CallObserver, ObjectScanLock, ObjectScanWaits, TimedSession};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::error::Error as CkError;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use secrecy::SecretString;

use crate::model::{MaterialId, TokenKeyRef};
use envelope::{derive_kek, generate_dek, trial_run, unwrap_dek, DekUse};
use pool::{AcquireError, SessionPool};
use token::Token;
pub(crate) use token::{find_token, initialise};

/// Label prefix of every token object p11kms creates; reconciliation only touches these.
pub const OBJECT_LABEL_PREFIX: &str = "p11kms:";
/// Context keys cached per library initialisation unless configured otherwise.
pub const DEFAULT_CONTEXT_KEY_CACHE: usize = 1024;
/// Transient objects a pooled session holds before it is closed, unless configured otherwise.
pub const DEFAULT_TRANSIENT_OBJECTS_PER_SESSION: u32 = 32;
/// Length of a KWP-wrapped 32-byte data key (RFC 5649: 32 rounded to 8, plus 8).
pub const WRAPPED_DEK_LEN: usize = 40;
pub const NONCE_LEN: usize = 16;
pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Room for any RSA output (ciphertext or signature) of the key sizes KMS offers (4096-bit
/// modulus), and for any ECDSA or HMAC output. A larger adopted key costs a length query.
pub(crate) const RSA_OUTPUT_BOUND: usize = 512;

/// How to reach the token.
#[derive(Clone)]
pub struct HsmConfig {
    pub module: PathBuf,
    pub token_label: String,
    pub user_pin: SecretString,
    pub pool_size: usize,
    pub session_wait: Duration,
    /// An operation makes no further PKCS#11 call once it has run this long, and answers
    /// `DependencyTimeoutException` (a call that hangs cannot be interrupted: the bound is
    /// this plus one call). Key-pair generation, which can take seconds, has no limit.
    pub operation_timeout: Option<Duration>,
    /// Reinitialise the library after this many operations (0: never). SoftHSM2 frees the
    /// session objects every operation creates (derived and data keys) only at
    /// `C_Finalize`, even after `C_DestroyObject`, so a long-running gateway on it grows
    /// by about 0.75 KB per ReEncrypt unless the library is recycled now and then.
    pub recycle_after_operations: u64,
    /// Run operations on session copies of the materials' secret keys instead of the token
    /// objects. SoftHSM2 re-reads a token object's file (open, lock, read, close) every
    /// time an operation uses it, which was a third of a ReEncrypt's cost there; a session
    /// copy lives in memory. The copies are as sensitive and non-extractable as their
    /// originals, die with the library, and are destroyed with their material. A module
    /// that refuses `C_CopyObject` gets its token objects used directly.
    pub session_key_copies: bool,
    /// Context keys cached per library initialisation (0: no cache, and every ciphertext
    /// is written with the per-message scheme 1).
    pub context_key_cache: usize,
    /// Transient session objects (a request's data keys and per-message wrapping keys) a
    /// pooled session holds before it is closed, which destroys them all in one call
    /// instead of a `C_DestroyObject` each (see `pool.rs`). 0: destroy each at once.
    pub transient_objects_per_session: u32,
    /// The ciphertext scheme new ciphertexts are written with: `None` picks the best the
    /// token's probe allows (3 with GCM key wrap, else 2 with HMAC, else 1); a number pins
    /// it, e.g. for a cluster whose tokens differ. Every scheme is read whatever this says.
    pub ciphertext_scheme: Option<u8>,
}

/// The gateway's handle on the HSM: the PKCS#11 engine (module, session pools, recovery,
/// the primitives over object handles), and where its key materials live (`M`): token
/// objects ([`TokenMaterials`], the default) or blobs wrapped under a domain key in the
/// store ([`DomainWrapped`]). Each is a [`KeyProvider`]; start-up picks one.
pub struct Hsm<M = TokenMaterials> {
    config: HsmConfig,
    current: RwLock<Option<Arc<Token>>>,
    /// A token that failed; finalised once no request holds it any more.
    retired: Mutex<Option<Arc<Token>>>,
    last_attempt: Mutex<Option<Instant>>,
    reinitialisations: AtomicU64,
    /// Receives every PKCS#11 call's function, outcome and latency (metrics).
    observer: Option<Arc<dyn CallObserver>>,
    /// Serialises token-object creation and deletion (SoftHSM fails them under concurrency).
    token_writes: Mutex<()>,
    /// The RFC 5649 key wrap the token offers (probed at start-up).
    key_wrap: KeyWrap,
    /// Adopted materials: token objects p11kms did not create, found by their own `CKA_ID`
    /// or label instead of `CKA_ID` = material id, and never destroyed.
    adopted: RwLock<HashMap<MaterialId, TokenKeyRef>>,
    /// Set by `shutdown`: the token is not reopened any more.
    closed: std::sync::atomic::AtomicBool,
    /// What the token can do, measured at start-up (see [`Capabilities`]).
    capabilities: Capabilities,
    /// Operations since the library was (re)initialised, for the planned recycle.
    operations: AtomicU64,
    /// Set while one thread recycles the library; others wait on `recycled`.
    recycling: Mutex<bool>,
    recycled: std::sync::Condvar,
    recycles: AtomicU64,
    /// Operations cut at `operation_timeout`.
    timeouts: AtomicU64,
    /// Sessions the token lost (session-scope failures), each replaced by a fresh one.
    lost_sessions: AtomicU64,
    /// Where the key materials live, and how an operation finds their objects.
    materials: M,
    reservoir: context_keys::SharedReservoir,
    context_counters: context_keys::ContextKeyCounters,
}

/// Which object of a key material a handle names: the AES or HMAC secret key, or one half
/// of a key pair. All of them share the material's `CKA_ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Half {
    Secret,
    Private,
    Public,
}

impl Half {
    fn class(self) -> ObjectClass {
        match self {
            Half::Secret => ObjectClass::SECRET_KEY,
            Half::Private => ObjectClass::PRIVATE_KEY,
            Half::Public => ObjectClass::PUBLIC_KEY,
        }
    }
}

impl Hsm<TokenMaterials> {
    /// Loads the module, finds the token, logs in and checks the mechanisms the ciphertext
    /// scheme needs. Fails with a message naming whatever is missing.
    pub fn open(
        config: HsmConfig,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Result<Hsm, OpenError> {
        let token = Token::open(&config).map_err(OpenError::Token)?;
        let mut hsm = Hsm {
            config,
            current: RwLock::new(Some(Arc::new(token))),
            retired: Mutex::new(None),
            last_attempt: Mutex::new(None),
            reinitialisations: AtomicU64::new(0),
            observer,
            token_writes: Mutex::new(()),
            key_wrap: KeyWrap::Pad,
            adopted: RwLock::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            capabilities: Capabilities::before_probe(),
            operations: AtomicU64::new(0),
            recycling: Mutex::new(false),
            recycled: std::sync::Condvar::new(),
            recycles: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            lost_sessions: AtomicU64::new(0),
            materials: TokenMaterials,
            reservoir: Default::default(),
            context_counters: Default::default(),
        };
        let report = match hsm.current_token() {
            Some(token) => probe_mechanisms(&token.pkcs11, token.slot),
            None => return Err(OpenError::TokenGone),
        };
        let key_wrap = match (report.missing_for_symmetric(), report.key_wrap) {
            (None, Some(key_wrap)) => key_wrap,
            (missing, _) => return Err(OpenError::MissingMechanisms(missing.unwrap_or_default())),
        };
        hsm.key_wrap = key_wrap;
        // A trial of the whole construction on a throwaway session key proves the parameters
        // (IV handling, tag length, derivation data) work, not just that mechanisms exist.
        hsm.with_session(|_, s| trial_run(s, key_wrap))
            .map_err(OpenError::TrialNotRun)?
            .map_err(OpenError::TrialFailed)?;
        hsm.capabilities.asymmetric = hsm.probe_asymmetric();
        hsm.capabilities.readable_schemes = hsm.probe_context_schemes();
        hsm.capabilities.ciphertext_scheme = hsm.choose_writer_scheme()?;
        let finds_wait_for_creations = hsm
            .current_token()
            .is_some_and(|t| t.object_scans.is_some());
        tracing::info!(
            capabilities = ?hsm.capabilities.asymmetric,
            key_wrap = key_wrap.name(),
            ciphertext_scheme = hsm.capabilities.ciphertext_scheme,
            context_key_cache = hsm.config.context_key_cache,
            finds_wait_for_creations,
            "capabilities of the token"
        );
        Ok(hsm)
    }
}

impl<M> Hsm<M> {
    /// The same engine with its materials kept by `materials` instead.
    fn with_materials<N>(self, materials: N) -> Hsm<N> {
        Hsm {
            config: self.config,
            current: self.current,
            retired: self.retired,
            last_attempt: self.last_attempt,
            reinitialisations: self.reinitialisations,
            observer: self.observer,
            token_writes: self.token_writes,
            key_wrap: self.key_wrap,
            adopted: self.adopted,
            closed: self.closed,
            capabilities: self.capabilities,
            operations: self.operations,
            recycling: self.recycling,
            recycled: self.recycled,
            recycles: self.recycles,
            timeouts: self.timeouts,
            lost_sessions: self.lost_sessions,
            materials,
            reservoir: self.reservoir,
            context_counters: self.context_counters,
        }
    }

    /// The scheme new symmetric ciphertexts are written with (1, 2 or 3).
    pub fn ciphertext_scheme(&self) -> u8 {
        self.capabilities.ciphertext_scheme
    }

    /// Whether this token can open ciphertexts of `scheme`.
    pub fn reads_scheme(&self, scheme: u8) -> bool {
        self.capabilities.reads_scheme(scheme)
    }

    /// The RFC 5649 key wrap the start-up probe picked.
    pub fn key_wrap(&self) -> KeyWrap {
        self.key_wrap
    }

    /// How many session copies of key materials the current token holds
    /// (`HsmConfig::session_key_copies`).
    pub fn session_key_copies(&self) -> usize {
        self.current_token().map_or(0, |t| {
            t.copies.lock().unwrap_or_else(|p| p.into_inner()).len()
        })
    }

    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.current_token().map(|t| t.pool.stats())
    }

    pub fn reinitialisations(&self) -> u64 {
        self.reinitialisations.load(Ordering::Relaxed)
    }

    /// How many planned recycles of the library have run (see `recycle_after_operations`).
    pub fn recycles(&self) -> u64 {
        self.recycles.load(Ordering::Relaxed)
    }

    /// How many operations were cut at `operation_timeout`.
    pub fn operation_timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// How many sessions the token lost (each replaced by a fresh one).
    pub fn lost_sessions(&self) -> u64 {
        self.lost_sessions.load(Ordering::Relaxed)
    }
}

#[allow(private_bounds)] // `Materials` is sealed inside `hsm` (see `materials.rs`)
impl<M: Materials> Hsm<M> {
    /// Runs `op` with a session and the handle of a material's object, retrying once if
    /// the cached handle turned out stale.
    fn with_object<T>(
        &self,
        material: &MaterialId,
        half: Half,
        op: impl Fn(&TimedSession<'_>, ObjectHandle) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        self.with_objects([(material, half)], |s, [handle]| op(s, handle))
    }

    /// Runs `op` with a session and the handles of several material objects, once more
    /// with handles looked up again if a cached one turned out stale (a session copy that
    /// died with its session, an object the token forgot).
    fn with_objects<T, const N: usize>(
        &self,
        objects: [(&MaterialId, Half); N],
        op: impl Fn(&TimedSession<'_>, [ObjectHandle; N]) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        self.with_objects_on(objects, |_, s, handles| op(s, handles))
    }

    /// [`Hsm::with_objects`], handing `op` the token too (for its context-key cache).
    fn with_objects_on<T, const N: usize>(
        &self,
        objects: [(&MaterialId, Half); N],
        op: impl Fn(&Arc<Token>, &TimedSession<'_>, [ObjectHandle; N]) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        // The token is taken inside, so that a library recycle to find a new domain key
        // (which waits for every holder of the token) can run between the two attempts.
        M::refinding(self, || {
            let token = self.token().map_err(OpError::Provider)?;
            let handles = |token: &Arc<Token>| -> Result<[ObjectHandle; N], OpError> {
                let found = objects
                    .iter()
                    .map(|(material, half)| M::object_handle(self, token, material, *half))
                    .collect::<Result<Vec<_>, _>>()?;
                <[ObjectHandle; N]>::try_from(found).map_err(|_| {
                    OpError::Provider(ProviderError::Internal("object handle count".into()))
                })
            };
            let first = handles(&token)?;
            match self.on_token(&token, |s| op(&token, s, first)) {
                Err(OpError::Hsm(e)) | Err(OpError::BadData(e)) if e.scope == Scope::Object => {
                    let slots = objects.map(|(material, half)| (*material, half));
                    M::forget_handles(self, &token, &slots);
                    let again = handles(&token)?;
                    self.on_token(&token, |s| op(&token, s, again))
                }
                other => other,
            }
        })
    }
}

// === sessions ===

impl<M> Hsm<M> {
    /// Runs `op` with a pooled session of the current token. A session wait that runs out
    /// is the outer `ProviderError::Busy`, never a PKCS#11 failure.
    fn with_session<T>(
        &self,
        mut op: impl FnMut(&Token, &TimedSession<'_>) -> Result<T, HsmError>,
    ) -> Result<Result<T, HsmError>, ProviderError> {
        let token = self.token()?;
        let result = self.on_token(&token, |s| op(&token, s).map_err(OpError::Hsm));
        outer_provider_error(result)
    }

    /// Runs `op`, a key-pair generation, on the token's key-pair session; like
    /// [`Hsm::with_session`] otherwise.
    fn with_key_pair_session<T>(
        &self,
        lost: OnLostSession,
        mut op: impl FnMut(&TimedSession<'_>) -> Result<T, HsmError>,
    ) -> Result<Result<T, HsmError>, ProviderError> {
        let token = self.token()?;
        let result = self.on_pool(&token, &token.key_pairs, lost, |s| {
            op(s).map_err(OpError::Hsm)
        });
        outer_provider_error(result)
    }

    fn on_token<T>(
        &self,
        token: &Arc<Token>,
        op: impl FnMut(&TimedSession<'_>) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        self.on_pool(token, &token.pool, OnLostSession::Retry, op)
    }

    /// Runs `op` with a session of `pool`. A session the token lost (a session-scope
    /// failure) is closed, and with [`OnLostSession::Retry`] the operation runs again on
    /// another: when an HSM fails over, every session of the pool is lost at once, so a
    /// request may meet each of them before it gets a fresh one (logged in by the pool).
    /// A token-scope failure retires the token (see [`Hsm::recover`]).
    fn on_pool<T>(
        &self,
        token: &Arc<Token>,
        pool: &SessionPool,
        lost: OnLostSession,
        mut op: impl FnMut(&TimedSession<'_>) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let attempts = match lost {
            OnLostSession::Retry => pool.size() + 1,
            OnLostSession::Fail => 1,
        };
        let mut attempt = 0;
        // The clock starts now: opening a replacement session counts, and so do retries.
        let deadline = pool.operation_timeout().map(|t| Instant::now() + t);
        loop {
            attempt += 1;
            let session = match pool.acquire(Instant::now() + self.config.session_wait) {
                Ok(s) => s,
                Err(AcquireError::Timeout) => return Err(OpError::Provider(ProviderError::Busy)),
                Err(AcquireError::Open(e)) => {
                    self.recover(token, &e);
                    return Err(OpError::Hsm(e));
                }
            };
            self.operations.fetch_add(1, Ordering::Relaxed);
            let result = op(
                &TimedSession::new(&session.session, self.observer.as_deref())
                    .with_deadline(deadline)
                    .with_direct(token.direct.as_ref())
                    .with_object_scans(token.object_scans.as_ref())
                    .with_sweep(pool.sweeping().then_some(&session.left)),
            );
            match &result {
                Err(OpError::Hsm(e)) | Err(OpError::BadData(e)) if e.scope != Scope::Data => {
                    tracing::warn!(function = %e.function, rv = %e.rv, scope = ?e.scope, attempt, "PKCS#11 call failed");
                    match e.scope {
                        Scope::Session | Scope::Token => pool.discard(session),
                        _ => pool.release(session),
                    }
                    if e.is_deadline() {
                        self.timeouts.fetch_add(1, Ordering::Relaxed);
                    } else if e.scope == Scope::Session {
                        self.lost_sessions.fetch_add(1, Ordering::Relaxed);
                        if attempt < attempts {
                            continue;
                        }
                    }
                    self.recover(token, e);
                }
                _ => pool.release(session),
            }
            return result;
        }
    }

    fn on_token_with<T>(
        &self,
        token: &Arc<Token>,
        mut op: impl FnMut(&TimedSession<'_>) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        flatten_op_error(self.on_token(token, |s| op(s).map_err(OpError::Hsm)))
    }
}

/// Splits an operation's outcome: the gateway's own refusals (a session wait that ran out)
/// outside, the token's answer inside.
fn outer_provider_error<T>(
    result: Result<T, OpError>,
) -> Result<Result<T, HsmError>, ProviderError> {
    match result {
        Err(OpError::Provider(e)) => Err(e),
        Err(OpError::MissingDomainKey(id)) => Err(ProviderError::MissingDomainKey(id)),
        other => Ok(flatten_op_error(other)),
    }
}

/// An operation's outcome as an [`HsmError`], for callers that map it themselves.
fn flatten_op_error<T>(result: Result<T, OpError>) -> Result<T, HsmError> {
    match result {
        Ok(v) => Ok(v),
        Err(OpError::Hsm(e)) | Err(OpError::BadData(e)) => Err(e),
        Err(OpError::Provider(ProviderError::Busy)) => Err(HsmError::gateway(
            "pool",
            "session wait timed out",
            Scope::Data,
        )),
        Err(OpError::Provider(_)) => Err(HsmError::gateway("pool", "unavailable", Scope::Token)),
        Err(OpError::MissingDomainKey(id)) => Err(HsmError::gateway(
            "C_FindObjects",
            &format!("domain key {id} is not in the token"),
            Scope::Data,
        )),
    }
}

/// What to do with an operation whose session the token lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnLostSession {
    /// Run it again on another session: it made nothing that outlives its session.
    Retry,
    /// Fail it: it creates token objects, and may have made one before the answer was lost.
    Fail,
}

/// An error inside an HSM operation: a PKCS#11 failure, one on client data, or a refusal of
/// the gateway's own.
enum OpError {
    Hsm(HsmError),
    /// The module rejected client-supplied data (wrong context, tampered blob).
    BadData(HsmError),
    /// A refusal of the gateway's own (no session free, no token).
    Provider(ProviderError),
    /// A blob names a domain key this token generation cannot find (see
    /// [`Hsm::refinding_domain_keys`]).
    MissingDomainKey(crate::model::DomainKeyId),
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        OpError::Hsm(e.into())
    }
}

impl From<HsmError> for OpError {
    fn from(e: HsmError) -> Self {
        OpError::Hsm(e)
    }
}

impl OpError {
    fn into_provider(self) -> ProviderError {
        match self {
            OpError::Hsm(e) => ProviderError::Pkcs11(e),
            OpError::BadData(e) => ProviderError::RejectedData(e),
            OpError::Provider(e) => e,
            OpError::MissingDomainKey(id) => ProviderError::MissingDomainKey(id),
        }
    }
}

/// A failure of an operation on client-supplied data (`OpError::BadData`).
///
/// Some tokens answer data that does not authenticate with `CKR_DEVICE_ERROR` (Kryoptic, for
/// an RFC 5649 integrity failure: OpenSSL's unwrap fails and the token reports that). A
/// device error after which the token still answers on the same session is the data's
/// failure; one after which it does not is the token's, as everywhere else.
fn bad_data(s: &TimedSession<'_>, e: CkError) -> OpError {
    let mut error = HsmError::from(e);
    if error.code == Some(cryptoki::error::RvError::DeviceError)
        && !s.expired()
        && s.generate_random_slice(&mut [0u8; 1]).is_ok()
    {
        error.scope = Scope::Data;
    }
    OpError::BadData(error)
}

/// A session object destroyed when it goes out of scope, on every path.
struct SessionObject<'s> {
    session: &'s TimedSession<'s>,
    handle: ObjectHandle,
    /// May be left to the session's sweep (see `pool.rs`) instead of destroyed now.
    transient: bool,
}

impl<'s> SessionObject<'s> {
    fn new(session: &'s TimedSession<'s>, handle: ObjectHandle) -> Self {
        SessionObject {
            session,
            handle,
            transient: false,
        }
    }

    /// A sensitive data key or wrapping key of one request, which its session may keep
    /// until the pool sweeps it: nothing can read it, and only this request knows its handle.
    fn transient(session: &'s TimedSession<'s>, handle: ObjectHandle) -> Self {
        SessionObject {
            session,
            handle,
            transient: true,
        }
    }
}

impl Drop for SessionObject<'_> {
    fn drop(&mut self) {
        // Past the deadline the session is closed, and its objects with it.
        if self.session.expired() {
            return;
        }
        if self.transient && self.session.leave_to_sweep() {
            return;
        }
        if let Err(e) = self.session.destroy_object(self.handle) {
            tracing::warn!(error = %HsmError::from(e), "could not destroy a session object");
        }
    }
}

/// The token object of a material: `CKA_ID` = material id and the half's class, or for an
/// adopted material the object its reference names.
fn find_object(
    s: &TimedSession<'_>,
    material: &MaterialId,
    half: Half,
    adopted: Option<&TokenKeyRef>,
) -> Result<Vec<ObjectHandle>, HsmError> {
    Ok(s.find_objects(&[
        Attribute::Class(half.class()),
        Attribute::Token(true),
        match adopted {
            None => Attribute::Id(material.0.to_vec()),
            Some(TokenKeyRef::Id(id)) => Attribute::Id(id.clone()),
            Some(TokenKeyRef::Label(label)) => Attribute::Label(label.clone().into_bytes()),
        },
    ])?)
}
