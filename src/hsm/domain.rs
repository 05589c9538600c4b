//! The domain-wrapped provider, `Hsm<DomainWrapped>` (`hsm.key_storage = "domain"`): key
//! material leaves the token only as `C_WrapKey` output under the domain key D, is kept in
//! the metadata store, and is unwrapped on demand into a sensitive, non-extractable session
//! object held in a bounded LRU cache. The token then holds D and nothing else of
//! p11kms's, whatever the number of keys.
//!
//! - Creation: the material is generated as a session object (sensitive, extractable only
//!   so that it can be wrapped, `CKA_WRAP_WITH_TRUSTED` when D is trusted), wrapped under the
//!   active D with AES key wrap with padding, and destroyed. The blob goes to the store.
//! - Use: a cache miss reads the blob, unwraps it under the D that wrapped it (blobs name
//!   their D, so reads work in the middle of a rotation) into a session object owned by the
//!   token's `copy_owner` session, and caches the handle. An eviction destroys the object.
//!   The cache belongs to one [`Token`] (one library initialisation): a recycle or a lost
//!   token drops it with the sessions that owned its objects.
//! - Rotation: [`Hsm::rewrap_material`] unwraps a blob under the old D into an extractable
//!   session object and wraps it under the new one; the store writes each blob
//!   conditionally. A D that another process put in the token while this library was
//!   initialised is looked for again after one library recycle, at most once per
//!   [`DOMAIN_KEY_REFIND_INTERVAL`] ([`Hsm::refinding_domain_keys`]).
//!
//! The cache relies on the module not handing out a destroyed object's handle to the next
//! object at once (SoftHSM2's handle counter only grows): a request that read a handle
//! just before its eviction then fails on a dead handle and retries, instead of using
//! another key.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::asymmetric::{pair_template, read_public};
use super::DomainModeError;
use super::{
    outer_provider_error, Half, Hsm, HsmError, MaterialSourceError, MaterialSpec, Materials,
    OnLostSession, OpError, PairKind, PairUse, ProviderError, PublicKeyParts, Scope, SessionObject,
    Token, TokenMaterials,
};
use crate::model::{DomainKeyId, KeyId, MaterialId, WrappedKind, WrappedMaterial};

/// The least time between two library reinitialisations to find a domain key the token
/// does not show (metric `p11kms_domain_key_refinds_total`). A key that is really absent
/// (a token not enrolled in a new domain key) costs one reinitialisation per interval,
/// and its requests fail in between.
pub const DOMAIN_KEY_REFIND_INTERVAL: Duration = Duration::from_secs(5);

/// `CKA_LABEL` of every domain key.
pub const DOMAIN_KEY_LABEL: &str = "p11kms-domain";
/// `CKM_AES_KEY_WRAP_PAD`, SoftHSM2's AES key wrap with padding (RFC 5649 for inputs that
/// are a multiple of 8 bytes, which every wrapped key here is, or pads harmlessly: see
/// [`WrappedKind::Hmac`] in the README).
pub const CKM_AES_KEY_WRAP_PAD: u64 = 0x210A;

/// The template of a domain key D: an AES-256 token object that is private (usable only
/// after login), sensitive, extractable only under a trusted wrapping key (so that it can
/// join other tokens of the domain, and nothing else), and can only wrap and unwrap.
/// `CKA_TRUSTED` is not in it: only some tokens let the user set it (see
/// `KeyProvider::create_domain_key`). Neither is `CKA_VALUE_LEN`, which SoftHSM2 refuses
/// in an unwrap template (the ceremony unwraps D with this template); generation adds it.
pub fn domain_key_template(id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(DOMAIN_KEY_LABEL.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// The domain key with `CKA_ID` = `id` in the session's token, if it is there.
pub fn find_domain_key(session: &Session, id: &[u8]) -> Result<Option<ObjectHandle>, CkError> {
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Label(DOMAIN_KEY_LABEL.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ])?;
    Ok(found.first().copied())
}

/// Where wrapped materials are kept: the metadata store, reached through the service
/// core (the HSM module knows no SQL).
pub trait WrappedMaterials: Send + Sync {
    /// The domain key that wraps new material now.
    fn active_domain_key(&self) -> Result<DomainKeyId, MaterialSourceError>;
    /// Stores a new blob; `false` if its domain key is no longer active (a rotation began).
    fn save(&self, wrapped: &WrappedMaterial) -> Result<bool, MaterialSourceError>;
    fn load(&self, material: &MaterialId) -> Result<Option<WrappedMaterial>, MaterialSourceError>;
    fn forget(&self, material: &MaterialId) -> Result<(), MaterialSourceError>;
}

/// Key materials wrapped under a domain key in the store (`hsm.key_storage = "domain"`),
/// unwrapped on use into cached session objects: the locator of the domain-wrapped
/// provider, `Hsm<DomainWrapped>`, made by [`Hsm::into_domain_wrapped`].
pub struct DomainWrapped {
    source: Arc<dyn WrappedMaterials>,
    capacity: usize,
    /// D is `CKA_TRUSTED`, so new materials can carry `CKA_WRAP_WITH_TRUSTED`.
    wrap_with_trusted: bool,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// When the library was last reinitialised to find a domain key.
    last_refind: Mutex<Option<Instant>>,
    refinds: AtomicU64,
}

/// The cache's counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Library reinitialisations to find a domain key (see [`DOMAIN_KEY_REFIND_INTERVAL`]).
    pub key_refinds: u64,
    /// Session objects the cache holds now (a key pair counts two).
    pub size: usize,
    pub capacity: usize,
}

/// The unwrapped materials of one token generation: an LRU of session objects, and the
/// handles of the domain keys found so far.
/// Generic over the handle type only so that the LRU can be unit-tested without a token.
pub(super) struct DomainCache<H = ObjectHandle> {
    entries: HashMap<(MaterialId, Half), (H, u64)>,
    order: BTreeMap<u64, (MaterialId, Half)>,
    tick: u64,
    domain_keys: HashMap<DomainKeyId, ObjectHandle>,
}

impl<H> Default for DomainCache<H> {
    fn default() -> Self {
        DomainCache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            domain_keys: HashMap::new(),
        }
    }
}

impl<H: Copy + PartialEq> DomainCache<H> {
    fn get(&mut self, slot: &(MaterialId, Half)) -> Option<H> {
        self.tick += 1;
        let tick = self.tick;
        let (handle, used) = self.entries.get_mut(slot)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, *slot);
        Some(*handle)
    }

    /// Caches `handle` unless another request cached the slot first. Returns the handle
    /// to use and the objects to destroy (evicted ones, or `handle` if it lost the race).
    fn insert(&mut self, slot: (MaterialId, Half), handle: H, capacity: usize) -> (H, Vec<H>) {
        if let Some(existing) = self.get(&slot) {
            return (existing, vec![handle]);
        }
        let mut evicted = Vec::new();
        while self.entries.len() >= capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                evicted.push(old);
            }
        }
        self.tick += 1;
        self.entries.insert(slot, (handle, self.tick));
        self.order.insert(self.tick, slot);
        (handle, evicted)
    }

    fn remove(&mut self, slot: &(MaterialId, Half)) -> Option<H> {
        let (handle, used) = self.entries.remove(slot)?;
        self.order.remove(&used);
        Some(handle)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Hsm<TokenMaterials> {
    /// This engine as the domain-wrapped provider, its materials kept in `source`: checks
    /// that the token can wrap with `CKM_AES_KEY_WRAP_PAD` and holds the store's active
    /// domain key, and whether that key is trusted. Fails with a message naming what is
    /// missing.
    pub fn into_domain_wrapped(
        self,
        source: Arc<dyn WrappedMaterials>,
        capacity: usize,
    ) -> Result<Hsm<DomainWrapped>, DomainModeError> {
        let token = self.current_token().ok_or(DomainModeError::TokenGone)?;
        let kwp = token
            .pkcs11
            .get_mechanism_info(token.slot, MechanismType::AES_KEY_WRAP_PAD)
            .map(|info| info.wrap() && info.unwrap())
            .unwrap_or(false);
        if !kwp {
            return Err(DomainModeError::NoKeyWrapPad);
        }
        let active = source
            .active_domain_key()
            .map_err(DomainModeError::ActiveKeyUnread)?;
        let trusted = self
            .with_session(|_, s| {
                let Some(handle) = find_domain_key(s.raw(), &active.0)? else {
                    return Ok(None);
                };
                let attrs = s.get_attributes(handle, &[AttributeType::Trusted])?;
                Ok(Some(attrs.contains(&Attribute::Trusted(true))))
            })
            .map_err(DomainModeError::LookupNotRun)?
            .map_err(DomainModeError::LookupFailed)?
            .ok_or(DomainModeError::KeyNotInToken(active))?;
        tracing::info!(domain_key = %active, trusted, capacity, "domain-key mode");
        Ok(self.with_materials(DomainWrapped {
            source,
            capacity,
            wrap_with_trusted: trusted,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            last_refind: Mutex::new(None),
            refinds: AtomicU64::new(0),
        }))
    }
}

impl Materials for DomainWrapped {
    fn create(
        hsm: &Hsm<Self>,
        key_id: &KeyId,
        material: &MaterialId,
        spec: MaterialSpec,
    ) -> Result<(), ProviderError> {
        hsm.create_wrapped(key_id, material, spec)
    }

    fn destroy(hsm: &Hsm<Self>, material: &MaterialId) -> Result<(), ProviderError> {
        hsm.destroy_wrapped(material)
    }

    fn object_handle(
        hsm: &Hsm<Self>,
        token: &Arc<Token>,
        material: &MaterialId,
        half: Half,
    ) -> Result<ObjectHandle, OpError> {
        hsm.domain_handle(token, material, half)
    }

    fn forget_handles(hsm: &Hsm<Self>, token: &Arc<Token>, slots: &[(MaterialId, Half)]) {
        hsm.forget_domain_handles(token, slots)
    }

    fn refinding<T>(
        hsm: &Hsm<Self>,
        run: impl FnMut() -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        hsm.refinding_domain_keys(run)
    }

    fn check_known(hsm: &Hsm<Self>, token: &Arc<Token>) -> Result<(), ProviderError> {
        hsm.check_domain_key(token)
    }

    fn cache_stats(hsm: &Hsm<Self>) -> Option<DomainCacheStats> {
        let mode = &hsm.materials;
        let size = hsm.current_token().map_or(0, |t| t.domain_cache().len());
        Some(DomainCacheStats {
            hits: mode.hits.load(Ordering::Relaxed),
            misses: mode.misses.load(Ordering::Relaxed),
            evictions: mode.evictions.load(Ordering::Relaxed),
            key_refinds: mode.refinds.load(Ordering::Relaxed),
            size,
            capacity: mode.capacity,
        })
    }
}

impl<M> Hsm<M> {
    /// The token's identity as `C_GetTokenInfo` gives it (for the membership record).
    pub fn token_identity(
        &self,
    ) -> Result<super::ceremony::TokenIdentity, super::ceremony::CeremonyError> {
        let token = self.token()?;
        super::ceremony::identity(&token.pkcs11, token.slot)
    }

    /// Whether the token holds the domain key `id`.
    pub fn has_domain_key(&self, id: &DomainKeyId) -> Result<bool, ProviderError> {
        let found = self.with_session(|_, s| Ok(find_domain_key(s.raw(), &id.0)?))?;
        Ok(found.map_err(ProviderError::from)?.is_some())
    }

    /// Destroys session objects of the `copy_owner` session; ones already gone are fine.
    pub(super) fn destroy_owned_objects(
        &self,
        token: &Arc<Token>,
        handles: &[ObjectHandle],
        what: &str,
    ) {
        if handles.is_empty() {
            return;
        }
        let destroyed = self.on_pool(token, &token.copy_owner, OnLostSession::Retry, |s| {
            for &handle in handles {
                match s.destroy_object(handle) {
                    Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {}
                    Err(e) => return Err(OpError::from(e)),
                }
            }
            Ok(())
        });
        if let Err(e) = outer_provider_error(destroyed).and_then(|r| r.map_err(ProviderError::from))
        {
            tracing::warn!(error = %e, "could not destroy {what}");
        }
    }
}

impl Hsm<DomainWrapped> {
    // === creating material ===

    /// Generates a material as session objects, wraps it under the active domain key and
    /// stores the blob (again under the new key if a rotation began meanwhile).
    fn create_wrapped(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        spec: MaterialSpec,
    ) -> Result<(), ProviderError> {
        let mode = &self.materials;
        for _ in 0..3 {
            // Read each time: a rotation activated by another process takes effect on the
            // next key made here.
            let active = mode.source.active_domain_key()?;
            let wrapped = self
                .refinding_domain_keys(|| self.generate_wrapped(key_id, material, spec, &active))
                .map_err(OpError::into_provider)?;
            if mode.source.save(&wrapped)? {
                return Ok(());
            }
            tracing::info!(%material, "the domain key changed while a key was made; wrapping again");
        }
        Err(ProviderError::Internal(
            "the domain key changed three times while a key was made".into(),
        ))
    }

    fn generate_wrapped(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        spec: MaterialSpec,
        domain_key: &DomainKeyId,
    ) -> Result<WrappedMaterial, OpError> {
        let token = self.token().map_err(OpError::Provider)?;
        let d = self.domain_key_handle(&token, domain_key)?;
        let wwt = self.materials.wrap_with_trusted;
        let kwp = Mechanism::AesKeyWrapPad;
        let (kind, blob, public) = match spec {
            MaterialSpec::Aes | MaterialSpec::Hmac(_) => {
                let (kind, mechanism, len, key_type) = match spec {
                    MaterialSpec::Hmac(len) => (
                        WrappedKind::Hmac,
                        Mechanism::GenericSecretKeyGen,
                        len,
                        KeyType::GENERIC_SECRET,
                    ),
                    _ => (
                        WrappedKind::AesDerive,
                        Mechanism::AesKeyGen,
                        32,
                        KeyType::AES,
                    ),
                };
                let mut template = vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(key_type),
                    Attribute::ValueLen((len as u64).into()),
                ];
                template.extend(usage_attributes(kind));
                template.extend(wrappable(wwt));
                let blob = self.on_token(&token, |s| {
                    let key = SessionObject::new(s, s.generate_key(&mechanism, &template)?);
                    Ok(s.wrap_key(&kwp, d, key.handle)?)
                });
                (kind, blob?, Vec::new())
            }
            MaterialSpec::Pair(pair, usage) => {
                let kind = match (pair, usage) {
                    (PairKind::Rsa { .. }, PairUse::EncryptDecrypt) => WrappedKind::RsaDecrypt,
                    (PairKind::Rsa { .. }, PairUse::SignVerify) => WrappedKind::RsaSign,
                    (PairKind::Ec(_), _) => WrappedKind::EcSign,
                };
                let mut public = vec![
                    Attribute::Token(false),
                    Attribute::Private(false),
                    Attribute::Derive(false),
                ];
                let mechanism = pair_template(pair, &mut public);
                let mut private = usage_attributes(kind);
                private.extend(wrappable(wwt));
                // Key-pair generation can take seconds: its own session, as in token mode.
                // Only session objects are made, so a lost session can simply run again.
                let made = self.with_key_pair_session(OnLostSession::Retry, |s| {
                    let (pub_handle, priv_handle) =
                        s.generate_key_pair(&mechanism, &public, &private)?;
                    let pub_object = SessionObject::new(s, pub_handle);
                    let priv_object = SessionObject::new(s, priv_handle);
                    let blob = s.wrap_key(&kwp, d, priv_object.handle)?;
                    Ok((blob, encode_public(&read_public(s, pub_object.handle)?)))
                });
                let made = made.map_err(OpError::Provider)?.map_err(OpError::Hsm)?;
                (kind, made.0, made.1)
            }
        };
        Ok(WrappedMaterial {
            material_id: *material,
            key_id: *key_id,
            kind,
            domain_key_id: *domain_key,
            mechanism: CKM_AES_KEY_WRAP_PAD,
            blob,
            public,
        })
    }

    // === using material ===

    /// The session object of a material's half: from the cache, or unwrapped (the public
    /// half created from its stored attributes) and cached.
    fn domain_handle(
        &self,
        token: &Arc<Token>,
        material: &MaterialId,
        half: Half,
    ) -> Result<ObjectHandle, OpError> {
        let mode = &self.materials;
        let slot = (*material, half);
        if let Some(handle) = token.domain_cache().get(&slot) {
            mode.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(handle);
        }
        mode.misses.fetch_add(1, Ordering::Relaxed);
        let wrapped = mode
            .source
            .load(material)
            .map_err(|e| OpError::Provider(e.into()))?;
        let wrapped = wrapped.ok_or_else(|| {
            OpError::Provider(ProviderError::token_unavailable(
                "C_UnwrapKey",
                &format!("no wrapped material {material} in the store"),
            ))
        })?;
        let template = match half {
            Half::Public => public_template(&wrapped).map_err(OpError::Provider)?,
            Half::Secret | Half::Private => {
                let mut template = usage_attributes(wrapped.kind);
                template.push(Attribute::Extractable(false));
                template
            }
        };
        let d = match half {
            Half::Public => None,
            _ => Some(self.domain_key_handle(token, &wrapped.domain_key_id)?),
        };
        let kwp = Mechanism::AesKeyWrapPad;
        // Owned by the session that owns the session copies: no request's failure closes it.
        let made = self.on_pool(
            token,
            &token.copy_owner,
            OnLostSession::Retry,
            |s| match d {
                Some(d) => s
                    .unwrap_key(&kwp, d, &wrapped.blob, &template)
                    .map_err(OpError::from),
                None => s.create_object(&template).map_err(OpError::from),
            },
        );
        let handle = outer_provider_error(made)
            .map_err(OpError::Provider)?
            .map_err(OpError::Hsm)?;
        let (kept, discard) = token.domain_cache().insert(slot, handle, mode.capacity);
        if kept == handle {
            // Otherwise `discard` is only our own object: another request cached it first.
            mode.evictions
                .fetch_add(discard.len() as u64, Ordering::Relaxed);
        }
        self.destroy_domain_objects(token, &discard);
        Ok(kept)
    }

    /// Drops cached handles that turned out dead (their session closed) and destroys the
    /// objects if they are still alive.
    fn forget_domain_handles(&self, token: &Arc<Token>, slots: &[(MaterialId, Half)]) {
        let handles: Vec<ObjectHandle> = {
            let mut cache = token.domain_cache();
            slots.iter().filter_map(|slot| cache.remove(slot)).collect()
        };
        self.destroy_domain_objects(token, &handles);
    }

    fn destroy_domain_objects(&self, token: &Arc<Token>, handles: &[ObjectHandle]) {
        self.destroy_owned_objects(token, handles, "unwrapped key objects");
    }

    /// Forgets a material in domain mode: its cached objects and its blob.
    fn destroy_wrapped(&self, material: &MaterialId) -> Result<(), ProviderError> {
        if let Some(token) = self.current_token() {
            let slots = [Half::Secret, Half::Private, Half::Public].map(|h| (*material, h));
            self.forget_domain_handles(&token, &slots);
        }
        Ok(self.materials.source.forget(material)?)
    }

    /// Readiness in domain mode: a domain key this token generation has used is still
    /// findable (SoftHSM2 answers `C_GenerateRandom` even after its token directory
    /// vanished, and no material is a token object to look for). A token that lost it is
    /// recovered.
    fn check_domain_key(&self, token: &Arc<Token>) -> Result<(), ProviderError> {
        let known = token.domain_cache().domain_keys.keys().next().copied();
        let Some(id) = known else {
            return Ok(());
        };
        if self
            .on_token_with(token, |s| Ok(find_domain_key(s.raw(), &id.0)?))?
            .is_some()
        {
            return Ok(());
        }
        let failure = HsmError::gateway(
            "C_FindObjects",
            &format!("domain key {id} not found"),
            Scope::Token,
        );
        self.recover(token, &failure);
        Err(ProviderError::token_unavailable(
            &failure.function,
            &failure.rv,
        ))
    }

    /// The handle of domain key `id` in `token`, found once per token generation;
    /// [`OpError::MissingDomainKey`] if the token does not show it.
    fn domain_key_handle(
        &self,
        token: &Arc<Token>,
        id: &DomainKeyId,
    ) -> Result<ObjectHandle, OpError> {
        if let Some(handle) = token.domain_cache().domain_keys.get(id) {
            return Ok(*handle);
        }
        let found = self.on_token_with(token, |s| Ok(find_domain_key(s.raw(), &id.0)?))?;
        let handle = found.ok_or(OpError::MissingDomainKey(*id))?;
        token.domain_cache().domain_keys.insert(*id, handle);
        Ok(handle)
    }

    /// Runs `run`; if it met a domain key the token does not show, reinitialises the
    /// library once and runs it again. SoftHSM2 does not reliably show an initialised
    /// library the token objects another process made (design §3): a domain key made by
    /// `p11kms domain rotate --prepare` or brought in by `join` while this gateway runs.
    /// `run` must take the token itself (not hold one across the call): the recycle waits
    /// for every holder. Rate-limited to one reinitialisation per
    /// [`DOMAIN_KEY_REFIND_INTERVAL`]; requests that failed before a reinitialisation
    /// another request ran are retried without one.
    fn refinding_domain_keys<T>(
        &self,
        mut run: impl FnMut() -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let started = Instant::now();
        match run() {
            Err(OpError::MissingDomainKey(id)) if self.refind_domain_keys(&id, started) => run(),
            other => other,
        }
    }

    /// Whether the library was reinitialised after `started` (by this call or another).
    fn refind_domain_keys(&self, id: &DomainKeyId, started: Instant) -> bool {
        let mode = &self.materials;
        let mut last = mode.last_refind.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = *last {
            if at >= started {
                return true;
            }
            if at.elapsed() < DOMAIN_KEY_REFIND_INTERVAL {
                tracing::warn!(domain_key = %id, "domain key still not in the token");
                return false;
            }
        }
        tracing::warn!(domain_key = %id, "domain key not in the token; reinitialising the PKCS#11 library to see the token's objects again");
        self.recycle();
        mode.refinds.fetch_add(1, Ordering::Relaxed);
        *last = Some(Instant::now());
        true
    }

    // === rotation ===

    /// A blob of `wrapped`'s material wrapped under domain key `to` instead: unwrapped
    /// under its own domain key into a sensitive session object that can only be wrapped
    /// again, wrapped, destroyed. The material never reaches host memory.
    pub fn rewrap_material(
        &self,
        wrapped: &WrappedMaterial,
        to: &DomainKeyId,
    ) -> Result<Vec<u8>, ProviderError> {
        let mode = &self.materials;
        let token = self.token()?;
        let from = self
            .domain_key_handle(&token, &wrapped.domain_key_id)
            .map_err(OpError::into_provider)?;
        let to = self
            .domain_key_handle(&token, to)
            .map_err(OpError::into_provider)?;
        let mut template = usage_attributes(wrapped.kind);
        template.extend(wrappable(mode.wrap_with_trusted));
        let kwp = Mechanism::AesKeyWrapPad;
        self.on_token(&token, |s| {
            let key = SessionObject::new(s, s.unwrap_key(&kwp, from, &wrapped.blob, &template)?);
            Ok(s.wrap_key(&kwp, to, key.handle)?)
        })
        .map_err(OpError::into_provider)
    }
}

impl Token {
    pub(super) fn domain_cache(&self) -> std::sync::MutexGuard<'_, DomainCache> {
        self.domain.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sensitive session-object attributes with exactly the usage a material needs.
fn usage_attributes(kind: WrappedKind) -> Vec<Attribute> {
    let (class, key_type) = match kind {
        WrappedKind::AesDerive => (ObjectClass::SECRET_KEY, KeyType::AES),
        WrappedKind::Hmac => (ObjectClass::SECRET_KEY, KeyType::GENERIC_SECRET),
        WrappedKind::RsaDecrypt | WrappedKind::RsaSign => (ObjectClass::PRIVATE_KEY, KeyType::RSA),
        WrappedKind::EcSign => (ObjectClass::PRIVATE_KEY, KeyType::EC),
    };
    let derive = kind == WrappedKind::AesDerive;
    let sign = matches!(
        kind,
        WrappedKind::Hmac | WrappedKind::RsaSign | WrappedKind::EcSign
    );
    let decrypt = kind == WrappedKind::RsaDecrypt;
    let mut attrs = vec![
        Attribute::Class(class),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Derive(derive),
        Attribute::Sign(sign),
        Attribute::Decrypt(decrypt),
        Attribute::Unwrap(decrypt),
    ];
    if class == ObjectClass::SECRET_KEY {
        attrs.extend([
            Attribute::Verify(kind == WrappedKind::Hmac),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
        ]);
    }
    attrs
}

/// Attributes of a material that must leave the token once, wrapped under D.
fn wrappable(wrap_with_trusted: bool) -> Vec<Attribute> {
    let mut attrs = vec![Attribute::Extractable(true)];
    if wrap_with_trusted {
        attrs.push(Attribute::WrapWithTrusted(true));
    }
    attrs
}

/// The session public key of a pair, from its stored attributes.
fn public_template(wrapped: &WrappedMaterial) -> Result<Vec<Attribute>, ProviderError> {
    let parts = decode_public(&wrapped.public).ok_or_else(|| {
        ProviderError::MaterialSource(MaterialSourceError::Failed(format!(
            "the public half of material {} is unreadable",
            wrapped.material_id
        )))
    })?;
    let encrypt = wrapped.kind == WrappedKind::RsaDecrypt;
    let mut template = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Encrypt(encrypt),
        Attribute::Wrap(encrypt),
        Attribute::Verify(!encrypt),
        Attribute::Derive(false),
    ];
    match parts {
        PublicKeyParts::Rsa { modulus, exponent } => template.extend([
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(modulus),
            Attribute::PublicExponent(exponent),
        ]),
        PublicKeyParts::Ec { params, point } => template.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(params),
            Attribute::EcPoint(point),
        ]),
    }
    Ok(template)
}

const PUBLIC_RSA: u8 = 1;
const PUBLIC_EC: u8 = 2;

/// A public key's token attributes as bytes: a tag, then two length-prefixed fields
/// (modulus and exponent, or EC params and point).
pub fn encode_public(parts: &PublicKeyParts) -> Vec<u8> {
    let (tag, a, b) = match parts {
        PublicKeyParts::Rsa { modulus, exponent } => (PUBLIC_RSA, modulus, exponent),
        PublicKeyParts::Ec { params, point } => (PUBLIC_EC, params, point),
    };
    let mut out = Vec::with_capacity(9 + a.len() + b.len());
    out.push(tag);
    for field in [a, b] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

pub fn decode_public(bytes: &[u8]) -> Option<PublicKeyParts> {
    let (&tag, mut rest) = bytes.split_first()?;
    let mut fields = Vec::with_capacity(2);
    for _ in 0..2 {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        fields.push(rest.get(4..4 + len)?.to_vec());
        rest = &rest[4 + len..];
    }
    if !rest.is_empty() {
        return None;
    }
    let b = fields.pop()?;
    let a = fields.pop()?;
    match tag {
        PUBLIC_RSA => Some(PublicKeyParts::Rsa {
            modulus: a,
            exponent: b,
        }),
        PUBLIC_EC => Some(PublicKeyParts::Ec {
            params: a,
            point: b,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(n: u8) -> (MaterialId, Half) {
        (MaterialId([n; 32]), Half::Secret)
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used() {
        let mut cache = DomainCache::<u64>::default();
        let h = |n: u64| n;
        assert!(cache.insert(slot(1), h(1), 2).1.is_empty());
        assert!(cache.insert(slot(2), h(2), 2).1.is_empty());
        assert_eq!(cache.get(&slot(1)), Some(h(1)));
        let (kept, evicted) = cache.insert(slot(3), h(3), 2);
        assert_eq!(kept, h(3));
        assert_eq!(evicted, vec![h(2)]);
        assert_eq!(cache.get(&slot(2)), None);
        assert_eq!(cache.len(), 2);
        // A second unwrap of a cached slot loses the race: its object is discarded.
        let (kept, discard) = cache.insert(slot(1), h(9), 2);
        assert_eq!((kept, discard), (h(1), vec![h(9)]));
    }

    #[test]
    fn public_halves_round_trip() {
        let parts = PublicKeyParts::Ec {
            params: vec![6, 8, 1, 2],
            point: vec![4; 65],
        };
        let decoded = decode_public(&encode_public(&parts));
        assert!(
            matches!(decoded, Some(PublicKeyParts::Ec { params, point }) if params == vec![6, 8, 1, 2] && point == vec![4; 65])
        );
        assert!(decode_public(&[1, 0, 0, 0, 9]).is_none());
        assert!(decode_public(&[]).is_none());
    }
}
