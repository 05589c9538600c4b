//! The seam between the KMS core and the HSM: the in-token primitives the core asks for.
//!
//! The core (`crate::kms`) owns every KMS decision and the ciphertext format; a provider
//! runs primitives on key material it holds (seal, open, rewrap, sign, verify, MAC,
//! generate, load) and answers in its own terms: a [`ProviderError`], and what it can do
//! as [`Capabilities`]. The core maps both to KMS semantics (parsec's `Provide` trait plays
//! the same part between its front end and its providers). [`Hsm`] is the PKCS#11
//! provider, holding materials as token objects or, in domain mode, wrapped in the store.

use zeroize::Zeroizing;

use super::domain::DomainCacheStats;
use super::{
    AdoptableKey, AsymmetricCapabilities, ContextKeyStats, DekLock, DekUnlock, Hsm, LockedDek,
    MacHash, Materials, OaepHash, PairKind, PairUse, PoolStats, PrivateKeyParts, ProviderError,
    PublicKeyParts, SealedParts, SignMechanism, Unadoptable, IV_LEN,
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
pub trait KeyProvider: Send + Sync {
    fn capabilities(&self) -> &Capabilities;
    fn stats(&self) -> ProviderStats;
    /// A cheap round trip that proves the key material is reachable (readiness).
    fn check(&self) -> Result<(), ProviderError>;
    /// Releases the provider at exit; `false` when a request still held it.
    fn shutdown(&self) -> bool;

    // --- key material ---------------------------------------------------------------------
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
    /// Every material the provider holds that p11kms made (start-up reconciliation).
    fn list_materials(&self) -> Result<Vec<MaterialId>, ProviderError>;
    /// The outer error is the provider's; the inner one says why the object is unsuitable.
    fn inspect_adoptable(
        &self,
        object: &TokenKeyRef,
    ) -> Result<Result<AdoptableKey, Unadoptable>, ProviderError>;
    fn register_adopted(&self, material: MaterialId, object: TokenKeyRef);
    /// Makes domain key `id`; `true` when the token trusts it.
    fn create_domain_key(&self, id: &DomainKeyId) -> Result<bool, ProviderError>;

    // --- randomness -------------------------------------------------------------------------
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

    // --- the symmetric ciphertext primitives ---------------------------------------------
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

    // --- asymmetric keys and MACs ---------------------------------------------------------
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
//
// Each primitive is the inherent method of the same name (kept inherent so that start-up
// code, benches and tests holding the concrete `Hsm` need no trait import).

impl<M: Materials> KeyProvider for Hsm<M> {
    fn capabilities(&self) -> &Capabilities {
        Hsm::<M>::capabilities(self)
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

    fn check(&self) -> Result<(), ProviderError> {
        Hsm::<M>::check(self)
    }

    fn shutdown(&self) -> bool {
        Hsm::<M>::shutdown(self)
    }

    fn create_material(&self, key_id: &KeyId, material: &MaterialId) -> Result<(), ProviderError> {
        Hsm::<M>::create_material(self, key_id, material)
    }

    fn create_hmac_key(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        len: usize,
    ) -> Result<(), ProviderError> {
        Hsm::<M>::create_hmac_key(self, key_id, material, len)
    }

    fn create_key_pair(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        kind: PairKind,
        usage: PairUse,
    ) -> Result<(), ProviderError> {
        Hsm::<M>::create_key_pair(self, key_id, material, kind, usage)
    }

    fn destroy_material(&self, material: &MaterialId) -> Result<(), ProviderError> {
        Hsm::<M>::destroy_material(self, material)
    }

    fn list_materials(&self) -> Result<Vec<MaterialId>, ProviderError> {
        Hsm::<M>::list_materials(self)
    }

    fn inspect_adoptable(
        &self,
        object: &TokenKeyRef,
    ) -> Result<Result<AdoptableKey, Unadoptable>, ProviderError> {
        Hsm::<M>::inspect_adoptable(self, object)
    }

    fn register_adopted(&self, material: MaterialId, object: TokenKeyRef) {
        Hsm::<M>::register_adopted(self, material, object)
    }

    fn create_domain_key(&self, id: &DomainKeyId) -> Result<bool, ProviderError> {
        Hsm::<M>::create_domain_key(self, id)
    }

    fn generate_random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        Hsm::<M>::generate_random(self, len)
    }

    fn draw_random(&self, out: &mut [u8]) -> Result<(), ProviderError> {
        Hsm::<M>::draw_random(self, out)
    }

    fn writer_salt(
        &self,
        writer: &[u8; 32],
        material: &MaterialId,
    ) -> Result<Option<[u8; 16]>, ProviderError> {
        Hsm::<M>::writer_salt(self, writer, material)
    }

    fn seal(
        &self,
        material: &MaterialId,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
        lock: &DekLock<'_>,
    ) -> Result<(Vec<u8>, LockedDek), ProviderError> {
        Hsm::<M>::seal(self, material, iv, aad, plaintext, lock)
    }

    fn open_sealed(
        &self,
        material: &MaterialId,
        unlock: &DekUnlock<'_>,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        payload: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        Hsm::<M>::open_sealed(self, material, unlock, iv, aad, payload)
    }

    fn rewrap(
        &self,
        source: &MaterialId,
        unlock: &DekUnlock<'_>,
        destination: &MaterialId,
        lock: &DekLock<'_>,
        payload: &[u8],
    ) -> Result<LockedDek, ProviderError> {
        Hsm::<M>::rewrap(self, source, unlock, destination, lock, payload)
    }

    fn sealed_to_rsa(
        &self,
        source: &SealedParts<'_>,
        destination: &MaterialId,
        hash: OaepHash,
    ) -> Result<Vec<u8>, ProviderError> {
        Hsm::<M>::sealed_to_rsa(self, source, destination, hash)
    }

    fn rsa_to_sealed(
        &self,
        source: &MaterialId,
        hash: OaepHash,
        ciphertext: &[u8],
        destination: &MaterialId,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        lock: &DekLock<'_>,
    ) -> Result<(Vec<u8>, LockedDek), ProviderError> {
        Hsm::<M>::rsa_to_sealed(self, source, hash, ciphertext, destination, iv, aad, lock)
    }

    fn public_key(&self, material: &MaterialId) -> Result<PublicKeyParts, ProviderError> {
        Hsm::<M>::public_key(self, material)
    }

    fn rsa_encrypt(
        &self,
        material: &MaterialId,
        hash: OaepHash,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ProviderError> {
        Hsm::<M>::rsa_encrypt(self, material, hash, plaintext)
    }

    fn rsa_decrypt(
        &self,
        material: &MaterialId,
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        Hsm::<M>::rsa_decrypt(self, material, hash, ciphertext)
    }

    fn rsa_rewrap(
        &self,
        source: &MaterialId,
        source_hash: OaepHash,
        ciphertext: &[u8],
        destination: &MaterialId,
        destination_hash: OaepHash,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, ProviderError> {
        Hsm::<M>::rsa_rewrap(
            self,
            source,
            source_hash,
            ciphertext,
            destination,
            destination_hash,
            limit,
        )
    }

    fn sign_digest(
        &self,
        material: &MaterialId,
        mechanism: SignMechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, ProviderError> {
        Hsm::<M>::sign_digest(self, material, mechanism, data)
    }

    fn verify_digest(
        &self,
        material: &MaterialId,
        mechanism: SignMechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool, ProviderError> {
        Hsm::<M>::verify_digest(self, material, mechanism, data, signature)
    }

    fn hmac(
        &self,
        material: &MaterialId,
        hash: MacHash,
        message: &[u8],
    ) -> Result<Vec<u8>, ProviderError> {
        Hsm::<M>::hmac(self, material, hash, message)
    }

    fn hmac_verify(
        &self,
        material: &MaterialId,
        hash: MacHash,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, ProviderError> {
        Hsm::<M>::hmac_verify(self, material, hash, message, mac)
    }

    fn generate_exportable_pair(
        &self,
        kind: PairKind,
    ) -> Result<(PublicKeyParts, PrivateKeyParts), ProviderError> {
        Hsm::<M>::generate_exportable_pair(self, kind)
    }
}
