//! Where a provider's key materials live: the one thing the two PKCS#11 providers differ in.
//!
//! Both run the same engine (sessions, pools, recovery, the primitives over object
//! handles); a [`Materials`] locator says how a material is made, forgotten and found as an
//! object handle. [`TokenMaterials`] keeps each material as token objects found by
//! `CKA_ID`; [`DomainWrapped`](super::domain::DomainWrapped) keeps it wrapped under a
//! domain key in the store and unwraps it into cached session objects.

use std::collections::HashSet;
use std::sync::Arc;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};

use super::domain::DomainCacheStats;
use super::provider::KeyMaterials;
use super::token::{is_logged_in, log_in};
use super::{
    find_object, outer_provider_error, Half, Hsm, HsmError, OnLostSession, OpError, PairKind,
    PairUse, ProviderError, Scope, Token, OBJECT_LABEL_PREFIX,
};
use crate::model::{KeyId, MaterialId};

/// What a KMS key's material is, for generating it.
#[derive(Debug, Clone, Copy)]
pub(super) enum MaterialSpec {
    Aes,
    Hmac(usize),
    Pair(PairKind, PairUse),
}

/// How an [`Hsm`] makes, forgets and finds its key materials. Sealed inside `hsm`: a
/// provider is one of two locators (`TokenMaterials` here, `DomainWrapped` in `domain.rs`),
/// never one a caller writes (hence the `private_bounds` allowance on the engine's handle
/// helpers in `mod.rs`).
pub(super) trait Materials: Send + Sync + Sized + 'static {
    /// Makes a new material (the key-material id is chosen by the core).
    fn create(
        hsm: &Hsm<Self>,
        key_id: &KeyId,
        material: &MaterialId,
        spec: MaterialSpec,
    ) -> Result<(), ProviderError>;
    /// Forgets a material; absent material is not an error.
    fn destroy(hsm: &Hsm<Self>, material: &MaterialId) -> Result<(), ProviderError>;
    /// The handle of a material's object in `token`, cached after the first look-up.
    fn object_handle(
        hsm: &Hsm<Self>,
        token: &Arc<Token>,
        material: &MaterialId,
        half: Half,
    ) -> Result<ObjectHandle, OpError>;
    /// Drops cached handles an operation found dead, before it looks them up again.
    fn forget_handles(hsm: &Hsm<Self>, token: &Arc<Token>, slots: &[(MaterialId, Half)]);
    /// Runs `run`, once more after the library is reinitialised if it met a domain key
    /// the token does not show.
    fn refinding<T>(hsm: &Hsm<Self>, run: impl FnMut() -> Result<T, OpError>)
        -> Result<T, OpError>;
    /// Readiness past the random byte: one known material (or domain key) still findable.
    fn check_known(hsm: &Hsm<Self>, token: &Arc<Token>) -> Result<(), ProviderError>;
    /// The unwrapped-material cache's counters, where there is one.
    fn cache_stats(hsm: &Hsm<Self>) -> Option<DomainCacheStats>;
}

// === impl KeyMaterials for Hsm ===

impl<M: Materials> KeyMaterials for Hsm<M> {
    /// Makes a new AES-256 key material (see [`Materials`] for where it is kept).
    fn create_material(&self, key_id: &KeyId, material: &MaterialId) -> Result<(), ProviderError> {
        M::create(self, key_id, material, MaterialSpec::Aes)
    }

    /// Makes a new key pair for `usage`.
    fn create_key_pair(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        kind: PairKind,
        usage: PairUse,
    ) -> Result<(), ProviderError> {
        self.capabilities.asymmetric.require_pair(kind)?;
        M::create(self, key_id, material, MaterialSpec::Pair(kind, usage))
    }

    /// Makes a new HMAC key of `len` bytes, that can only sign and verify.
    fn create_hmac_key(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        len: usize,
    ) -> Result<(), ProviderError> {
        M::create(self, key_id, material, MaterialSpec::Hmac(len))
    }

    /// Forgets a key material and its cached objects; absent material is not an error.
    fn destroy_material(&self, material: &MaterialId) -> Result<(), ProviderError> {
        if let Some(token) = self.current_token() {
            self.purge_context_keys(&token, material);
        }
        M::destroy(self, material)
    }

    /// Material ids of every p11kms key object in the token, secret keys and both halves of
    /// key pairs alike (for start-up reconciliation); each id once.
    fn list_materials(&self) -> Result<Vec<MaterialId>, ProviderError> {
        self.with_session(|_, s| {
            let handles = s.find_objects(&[Attribute::Token(true)])?;
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for handle in handles {
                let attrs = s.get_attributes(handle, &[AttributeType::Label, AttributeType::Id])?;
                let mut label_ok = false;
                let mut id = None;
                for attr in attrs {
                    match attr {
                        Attribute::Label(l) => {
                            label_ok = l.starts_with(OBJECT_LABEL_PREFIX.as_bytes())
                        }
                        Attribute::Id(bytes) => id = <[u8; 32]>::try_from(bytes.as_slice()).ok(),
                        _ => {}
                    }
                }
                if let (true, Some(id)) = (label_ok, id) {
                    if seen.insert(id) {
                        out.push(MaterialId(id));
                    }
                }
            }
            Ok(out)
        })?
        .map_err(ProviderError::from)
    }
}

/// Key materials as token objects: sensitive, non-extractable, `CKA_ID` = the material id
/// (or, for an adopted key, the object its reference names).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenMaterials;

impl Materials for TokenMaterials {
    fn create(
        hsm: &Hsm<Self>,
        key_id: &KeyId,
        material: &MaterialId,
        spec: MaterialSpec,
    ) -> Result<(), ProviderError> {
        match spec {
            MaterialSpec::Aes => hsm.create_token_aes(key_id, material),
            MaterialSpec::Hmac(len) => hsm.create_token_hmac(key_id, material, len),
            MaterialSpec::Pair(kind, usage) => hsm.create_token_pair(key_id, material, kind, usage),
        }
    }

    fn destroy(hsm: &Hsm<Self>, material: &MaterialId) -> Result<(), ProviderError> {
        hsm.destroy_token_objects(material)
    }

    fn object_handle(
        hsm: &Hsm<Self>,
        token: &Arc<Token>,
        material: &MaterialId,
        half: Half,
    ) -> Result<ObjectHandle, OpError> {
        hsm.token_object_handle(token, material, half)
            .map_err(OpError::Provider)
    }

    fn forget_handles(_: &Hsm<Self>, _: &Arc<Token>, _: &[(MaterialId, Half)]) {
        // A stale token-object handle is replaced when it is looked up again.
    }

    fn refinding<T>(
        _: &Hsm<Self>,
        mut run: impl FnMut() -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        run()
    }

    fn check_known(hsm: &Hsm<Self>, token: &Arc<Token>) -> Result<(), ProviderError> {
        hsm.check_known_material(token)
    }

    fn cache_stats(_: &Hsm<Self>) -> Option<DomainCacheStats> {
        None
    }
}

// === key material in the token ===

impl Hsm<TokenMaterials> {
    /// One known key object still findable (readiness; see `KeyProvider::check`).
    fn check_known_material(&self, token: &Arc<Token>) -> Result<(), ProviderError> {
        let known = token.materials_read().keys().next().copied();
        if let Some((material, half)) = known {
            let adopted = self.adopted_read().get(&material).cloned();
            if self
                .on_token_with(token, |s| find_object(s, &material, half, adopted.as_ref()))?
                .is_empty()
            {
                return Err(self.missing_material(token, &material));
            }
        }
        Ok(())
    }

    /// Generates a new key material in the token: AES-256, derive-only, sensitive,
    /// non-extractable, `CKA_ID` = the material id.
    fn create_token_aes(&self, key_id: &KeyId, material: &MaterialId) -> Result<(), ProviderError> {
        let label = format!("{OBJECT_LABEL_PREFIX}{key_id}");
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Derive(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Id(material.0.to_vec()),
            Attribute::Label(label.into_bytes()),
        ];
        self.create_token_secret(material, &Mechanism::AesKeyGen, &template)
    }

    /// Generates a secret-key token object for `material` (serialised: SoftHSM fails
    /// concurrent token-object creation) and caches its handle.
    pub(super) fn create_token_secret(
        &self,
        material: &MaterialId,
        mechanism: &Mechanism,
        template: &[Attribute],
    ) -> Result<(), ProviderError> {
        let _serial = self.token_writes.lock().unwrap_or_else(|p| p.into_inner());
        let token = self.token()?;
        // Not simply run again on a lost session: the key may have been made before the
        // answer was lost, and a second object with the same CKA_ID would be another key.
        // Look for it first, and make it only if it is not there.
        let mut attempts = token.pool.size() + 1;
        let handle = loop {
            let made = self.on_pool(&token, &token.pool, OnLostSession::Fail, |s| {
                s.generate_key(mechanism, template)
                    .map_err(|e| OpError::Hsm(e.into()))
            });
            match outer_provider_error(made)? {
                Ok(handle) => break handle,
                Err(e) if e.scope == Scope::Session && !e.is_deadline() && attempts > 1 => {
                    attempts -= 1;
                    let found = self
                        .on_token_with(&token, |s| find_object(s, material, Half::Secret, None))?;
                    if let Some(&handle) = found.first() {
                        tracing::info!(%material, "a key made before its session was lost is there");
                        break handle;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.cache_secret(&token, material, handle);
        Ok(())
    }

    /// Destroys a key material's token object; absent objects are not an error. An adopted
    /// object is only forgotten: it belongs to whoever put it in the token.
    fn destroy_token_objects(&self, material: &MaterialId) -> Result<(), ProviderError> {
        if let Some(token) = self.current_token() {
            self.destroy_session_copy(&token, material)?;
        }
        if let Some(object) = self.adopted_mut().remove(material) {
            if let Some(token) = self.current_token() {
                token
                    .materials_mut()
                    .retain(|(cached, _), _| cached != material);
            }
            tracing::info!(%material, %object, "forgot an adopted key object; it stays in the token");
            return Ok(());
        }
        let _serial = self.token_writes.lock().unwrap_or_else(|p| p.into_inner());
        self.with_session(|token, s| {
            token
                .materials_mut()
                .retain(|(cached, _), _| cached != material);
            // Every object with the material's id: a secret key, or both halves of a pair.
            for handle in
                s.find_objects(&[Attribute::Token(true), Attribute::Id(material.0.to_vec())])?
            {
                s.destroy_object(handle)?;
            }
            Ok(())
        })?
        .map_err(ProviderError::from)
    }

    /// The cached handle of a material object, found by `CKA_ID` and class on first use.
    fn token_object_handle(
        &self,
        token: &Arc<Token>,
        material: &MaterialId,
        half: Half,
    ) -> Result<ObjectHandle, ProviderError> {
        if let Some(handle) = token.materials_read().get(&(*material, half)) {
            return Ok(*handle);
        }
        let adopted = self.adopted_read().get(material).cloned();
        let found = self.on_token_with(token, |s| {
            let found = find_object(s, material, half, adopted.as_ref())?;
            if !found.is_empty() {
                return Ok(found);
            }
            // A session that is not logged in sees no private object: the token dropped
            // the login (an HSM fail-over, a session timeout). Log in again (for every
            // session of the application) and look again; look again also when another
            // request logged in meanwhile.
            if !is_logged_in(s.raw())? {
                tracing::warn!("the HSM dropped the login; logging in again");
                log_in(s.raw(), &self.config.user_pin)?;
            }
            find_object(s, material, half, adopted.as_ref())
        })?;
        match found.first() {
            Some(&handle) => match half {
                Half::Secret => Ok(self.cache_secret(token, material, handle)),
                Half::Private | Half::Public => {
                    token.materials_mut().insert((*material, half), handle);
                    Ok(handle)
                }
            },
            None => Err(self.missing_material(token, material)),
        }
    }

    /// A material the store knows is not in the token. If the token shows no key objects
    /// at all, the token itself is lost (SoftHSM2 keeps a token broken after its directory
    /// vanished until the library is reinitialised), so recover it; otherwise only this key
    /// is unavailable.
    fn missing_material(&self, token: &Arc<Token>, material: &MaterialId) -> ProviderError {
        // Any token object counts: a token may hold only key pairs or HMAC keys. A session
        // that is not logged in sees only public objects (an HSM that dropped its login):
        // that is the token's failure, not the key's.
        let any = self.on_token_with(token, |s| {
            if !is_logged_in(s.raw())? {
                return Err(HsmError::gateway(
                    "C_GetSessionInfo",
                    "the session is not logged in",
                    Scope::Token,
                ));
            }
            Ok(s.find_objects(&[Attribute::Token(true)])?)
        });
        let failure = HsmError::gateway(
            "C_FindObjects",
            &format!("key material {material} not found"),
            Scope::Token,
        );
        match any {
            Ok(objects) if !objects.is_empty() => {
                tracing::error!(%material, "key material is missing from the token");
            }
            _ => self.recover(token, &failure),
        }
        ProviderError::token_unavailable(&failure.function, &failure.rv)
    }
}
