//! The seam between the KMS core and the HSM: the in-token primitives the core asks for.
//!
//! The core (`crate::kms`) owns every KMS decision and the ciphertext format; a provider
//! runs primitives on key material it holds (seal, open, rewrap, sign, verify, MAC,
//! generate, load) and answers in its own terms: a [`ProviderError`], and what it can do
//! as [`Capabilities`]. The core maps both to KMS semantics (parsec's `Provide` trait plays
//! the same part between its front end and its providers).
//!
//! There are two providers, one PKCS#11 engine ([`Hsm`]) over two material locators:
//! `Hsm<TokenMaterials>` holds each material as token objects, and `Hsm<DomainWrapped>`
//! holds it wrapped under a domain key in the store, unwrapped on use into cached session
//! objects (`hsm.key_storage = "domain"`). Start-up picks one; the core sees only
//! `dyn KeyProvider`.
//!
//! [`KeyProvider`] is split by concern into the traits it extends, each implemented once,
//! for both providers, next to the code it runs: [`KeyMaterials`] (`materials.rs`),
//! [`TokenAdoption`] (`adopt.rs`), [`SymmetricPrimitives`] (`symmetric.rs`),
//! [`CrossoverPrimitives`] (`crossover.rs`) and [`AsymmetricPrimitives`]
//! (`asymmetric.rs`). Code holding a concrete `Hsm` imports the trait whose method it calls.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use zeroize::Zeroizing;

use super::domain::{domain_key_template, find_domain_key, DomainCacheStats};
use super::{
    AdoptableKey, AsymmetricCapabilities, ContextKeyStats, DekLock, DekUnlock, Hsm, HsmError,
    LockedDek, MacHash, Materials, OaepHash, PairKind, PairUse, PoolStats, PrivateKeyParts,
    ProviderError, PublicKeyParts, Scope, SealedParts, SignMechanism, Unadoptable, IV_LEN,
};
use crate::model::{DomainKeyId, KeyId, MaterialId, TokenKeyRef};

/// What a provider can do, measured once at start-up. The core reads it to choose what to
/// write and to refuse early what the provider cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub asymmetric: AsymmetricCapabilities,
    /// The scheme new symmetric ciphertexts are written with (1, 2 or 3).
    pub ciphertext_scheme: u8,
    /// Which ciphertext schemes it can open, by scheme number.
    pub(super) readable_schemes: [bool; 4],
}

impl Capabilities {
    /// What every token can do before its probe: scheme 1 only, nothing asymmetric.
    pub(super) fn before_probe() -> Self {
        Capabilities {
            asymmetric: AsymmetricCapabilities::default(),
            ciphertext_scheme: 1,
            readable_schemes: [false, true, false, false],
        }
    }

    /// Whether ciphertexts of `scheme` can be opened.
    pub fn reads_scheme(&self, scheme: u8) -> bool {
        self.readable_schemes
            .get(usize::from(scheme))
            .copied()
            .unwrap_or(false)
    }
}

/// The provider's counters, for metrics: a snapshot, so that the telemetry side observes
/// through the interface and never names the concrete provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderStats {
    pub pool: Option<PoolStats>,
    pub reinitialisations: u64,
    /// Planned recycles of the library (see `HsmConfig::recycle_after_operations`).
    pub recycles: u64,
    pub operation_timeouts: u64,
    pub lost_sessions: u64,
    /// `None` outside domain mode.
    pub domain_cache: Option<DomainCacheStats>,
    pub context_keys: ContextKeyStats,
}

/// The in-token primitives the KMS core uses. Every call blocks: run it on a blocking
/// thread, never on an async worker.
pub trait KeyProvider:
    KeyMaterials
    + TokenAdoption
    + SymmetricPrimitives
    + CrossoverPrimitives
    + AsymmetricPrimitives
    + Send
    + Sync
{
    fn capabilities(&self) -> &Capabilities;
    fn stats(&self) -> ProviderStats;
    /// A cheap round trip that proves the key material is reachable (readiness).
    fn check(&self) -> Result<(), ProviderError>;
    /// Releases the provider at exit; `false` when a request still held it.
    fn shutdown(&self) -> bool;
    /// Makes domain key `id`; `true` when the token trusts it.
    fn create_domain_key(&self, id: &DomainKeyId) -> Result<bool, ProviderError>;
}

/// Making and forgetting key material, wherever the provider keeps it.
pub trait KeyMaterials {
    fn create_material(&self, key_id: &KeyId, material: &MaterialId) -> Result<(), ProviderError>;
    fn create_hmac_key(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        len: usize,
    ) -> Result<(), ProviderError>;
    fn create_key_pair(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        kind: PairKind,
        usage: PairUse,
    ) -> Result<(), ProviderError>;
    /// Absent material is not an error.
    fn destroy_material(&self, material: &MaterialId) -> Result<(), ProviderError>;
    /// Every p11kms material in the token (start-up reconciliation).
    fn list_materials(&self) -> Result<Vec<MaterialId>, ProviderError>;
}

/// Token keys p11kms did not make, used as key materials.
pub trait TokenAdoption {
    /// The outer error is the provider's; the inner one says why the object is unsuitable.
    fn inspect_adoptable(
        &self,
        object: &TokenKeyRef,
    ) -> Result<Result<AdoptableKey, Unadoptable>, ProviderError>;
    fn register_adopted(&self, material: MaterialId, object: TokenKeyRef);
}

/// Randomness and the symmetric ciphertext primitives.
pub trait SymmetricPrimitives {
    fn generate_random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, ProviderError>;
    /// Fills `out` from a reservoir of the provider's randomness.
    fn draw_random(&self, out: &mut [u8]) -> Result<(), ProviderError>;
    /// The salt that locks a new ciphertext of `writer` under a cached context key, or
    /// `None` for the per-message scheme.
    fn writer_salt(
        &self,
        writer: &[u8; 32],
        material: &MaterialId,
    ) -> Result<Option<[u8; 16]>, ProviderError>;
    fn seal(
        &self,
        material: &MaterialId,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
        lock: &DekLock<'_>,
    ) -> Result<(Vec<u8>, LockedDek), ProviderError>;
    fn open_sealed(
        &self,
        material: &MaterialId,
        unlock: &DekUnlock<'_>,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        payload: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError>;
    fn rewrap(
        &self,
        source: &MaterialId,
        unlock: &DekUnlock<'_>,
        destination: &MaterialId,
        lock: &DekLock<'_>,
        payload: &[u8],
    ) -> Result<LockedDek, ProviderError>;
}

/// Moving a plaintext between a symmetric ciphertext and an RSA one inside the token.
pub trait CrossoverPrimitives {
    fn sealed_to_rsa(
        &self,
        source: &SealedParts<'_>,
        destination: &MaterialId,
        hash: OaepHash,
    ) -> Result<Vec<u8>, ProviderError>;
    #[allow(clippy::too_many_arguments)]
    fn rsa_to_sealed(
        &self,
        source: &MaterialId,
        hash: OaepHash,
        ciphertext: &[u8],
        destination: &MaterialId,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        lock: &DekLock<'_>,
    ) -> Result<(Vec<u8>, LockedDek), ProviderError>;
}

/// Asymmetric keys and MACs.
pub trait AsymmetricPrimitives {
    fn public_key(&self, material: &MaterialId) -> Result<PublicKeyParts, ProviderError>;
    fn rsa_encrypt(
        &self,
        material: &MaterialId,
        hash: OaepHash,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ProviderError>;
    fn rsa_decrypt(
        &self,
        material: &MaterialId,
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError>;
    /// `None` when the plaintext is longer than `limit`.
    fn rsa_rewrap(
        &self,
        source: &MaterialId,
        source_hash: OaepHash,
        ciphertext: &[u8],
        destination: &MaterialId,
        destination_hash: OaepHash,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, ProviderError>;
    fn sign_digest(
        &self,
        material: &MaterialId,
        mechanism: SignMechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, ProviderError>;
    fn verify_digest(
        &self,
        material: &MaterialId,
        mechanism: SignMechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool, ProviderError>;
    fn hmac(
        &self,
        material: &MaterialId,
        hash: MacHash,
        message: &[u8],
    ) -> Result<Vec<u8>, ProviderError>;
    fn hmac_verify(
        &self,
        material: &MaterialId,
        hash: MacHash,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, ProviderError>;
    /// A key pair whose private half leaves the provider (GenerateDataKeyPair).
    fn generate_exportable_pair(
        &self,
        kind: PairKind,
    ) -> Result<(PublicKeyParts, PrivateKeyParts), ProviderError>;
}

// === impl KeyProvider for Hsm ===

impl<M: Materials> KeyProvider for Hsm<M> {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn stats(&self) -> ProviderStats {
        ProviderStats {
            pool: self.pool_stats(),
            reinitialisations: self.reinitialisations(),
            recycles: self.recycles(),
            operation_timeouts: self.operation_timeouts(),
            lost_sessions: self.lost_sessions(),
            domain_cache: M::cache_stats(self),
            context_keys: self.context_key_stats(),
        }
    }

    /// A random byte, and one known key object (or domain key) still findable: SoftHSM2
    /// answers C_GenerateRandom even after its token directory vanished.
    fn check(&self) -> Result<(), ProviderError> {
        let token = self.token()?;
        let mut byte = [0u8; 1];
        self.on_token_with(&token, |s| {
            s.generate_random_slice(&mut byte).map_err(HsmError::from)
        })?;
        M::check_known(self, &token)
    }

    /// Closes the idle sessions (logging them out) and finalises the library, at exit after
    /// requests drained. Returns `false` when a request still held the token: its sessions
    /// then close with the process. The token is not reopened afterwards.
    fn shutdown(&self) -> bool {
        self.closed.store(true, Ordering::SeqCst);
        let current = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let retired = self
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut clean = true;
        for token in [current, retired].into_iter().flatten() {
            match Arc::try_unwrap(token) {
                Ok(token) => token.finalize(),
                Err(in_use) => {
                    in_use.pool.close_idle();
                    in_use.key_pairs.close_idle();
                    clean = false;
                }
            }
        }
        clean
    }

    /// Generates a domain key with `CKA_ID` = `id` in the token. It is made `CKA_TRUSTED`
    /// where the logged-in user may set that (Kryoptic); where only the SO may (SoftHSM2),
    /// it is made without, because a trusted secret key there must be a public object,
    /// usable by anyone without a PIN. Returns whether the key is trusted.
    fn create_domain_key(&self, id: &DomainKeyId) -> Result<bool, ProviderError> {
        let _serial = self.token_writes.lock().unwrap_or_else(|p| p.into_inner());
        let made = self.with_session(|_, s| {
            if find_domain_key(s.raw(), &id.0)?.is_some() {
                return Err(HsmError::gateway(
                    "C_FindObjects",
                    "a domain key with this id is already in the token",
                    Scope::Data,
                ));
            }
            let mut untrusted = domain_key_template(&id.0);
            untrusted.push(Attribute::ValueLen(32.into()));
            let mut trusted = untrusted.clone();
            trusted.push(Attribute::Trusted(true));
            match s.generate_key(&Mechanism::AesKeyGen, &trusted) {
                Ok(_) => return Ok(true),
                Err(e) => {
                    tracing::info!(error = %HsmError::from(e), "the token does not let the user make a trusted key; the domain key is not trusted");
                }
            }
            s.generate_key(&Mechanism::AesKeyGen, &untrusted)?;
            Ok(false)
        })?;
        made.map_err(ProviderError::from)
    }
}
