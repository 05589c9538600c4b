//! How a ciphertext's data key is locked and unlocked in the token, per scheme (the layouts
//! and the reasoning are in `crate::kms::ciphertext`):
//! - scheme 1: AES key wrap (RFC 5649) under `K_wrap`, derived from the material per
//!   message;
//! - scheme 2: AES key wrap under a cached context key, and an HMAC-SHA256 tag under the
//!   material's cached MAC key over the rest of the ciphertext;
//! - scheme 3: AES-GCM key wrap under a cached context key, with the rest of the ciphertext
//!   as AAD.
//!
//! Context keys come from [`super::context_keys`]; this module resolves them to handles
//! inside an operation and runs the wrap, unwrap, sign and verify calls.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroizing;

use super::context_keys::{CachedKey, ContextKeyName, ContextKeyStats};
use super::envelope::{derive_kek, unwrap_dek_as, DekUse};
use super::{
    bad_data, flatten_op_error, Hsm, HsmError, OnLostSession, OpError, SessionObject, TimedSession,
    Token, IV_LEN, TAG_LEN, WRAPPED_DEK_LEN,
};
use crate::model::MaterialId;

/// Length of a data key wrapped with AES-GCM: the 32-byte key and the 16-byte tag.
pub const GCM_WRAPPED_DEK_LEN: usize = 32 + TAG_LEN;
/// Length of scheme 2's HMAC-SHA256 tag.
pub const MAC_TAG_LEN: usize = 32;

/// Scheme 2's tag input from the wrapped data key and the payload.
pub type MacInput<'a> = &'a dyn Fn(&[u8], &[u8]) -> Vec<u8>;

/// Where a lock or unlock runs: the operation's token and session, and the material (with
/// its base key's handle) the ciphertext is under.
pub(super) struct Site<'a, 's> {
    pub(super) token: &'a Arc<Token>,
    pub(super) s: &'s TimedSession<'s>,
    pub(super) base: ObjectHandle,
    pub(super) material: &'a MaterialId,
}

/// How a new ciphertext's data key is to be locked. The closures receive the sealed
/// payload (GCM ciphertext and tag), which is known only inside the operation at Encrypt.
pub enum DekLock<'a> {
    /// Scheme 1: KWP under `K_wrap` = derive(material, `derivation(payload)`).
    Derived {
        derivation: &'a dyn Fn(&[u8]) -> [u8; 32],
    },
    /// Scheme 2: KWP under the context key, then an HMAC-SHA256 tag under the material's
    /// MAC key over `mac_input(wrapped, payload)`.
    KwpMac {
        context_key: ContextKeyName,
        mac_key: ContextKeyName,
        mac_input: MacInput<'a>,
    },
    /// Scheme 3: AES-GCM wrap under the context key with `iv` and AAD `aad(payload)`.
    Gcm {
        context_key: ContextKeyName,
        iv: [u8; IV_LEN],
        aad: &'a dyn Fn(&[u8]) -> Vec<u8>,
    },
}

/// How an existing ciphertext's data key is unlocked; each check of the scheme runs first.
pub enum DekUnlock<'a> {
    Derived {
        derivation: [u8; 32],
        wrapped: &'a [u8],
    },
    KwpMac {
        context_key: ContextKeyName,
        mac_key: ContextKeyName,
        mac_input: Vec<u8>,
        tag: &'a [u8],
        wrapped: &'a [u8],
    },
    Gcm {
        context_key: ContextKeyName,
        iv: [u8; IV_LEN],
        aad: Vec<u8>,
        wrapped: &'a [u8],
    },
}

/// A locked data key: its wrapped bytes, and scheme 2's tag.
pub struct LockedDek {
    pub wrapped: Vec<u8>,
    pub tag: Option<Vec<u8>>,
}

/// What a context key may do: wrap data keys, or MAC ciphertexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyRole {
    Wrap,
    Mac,
}

/// Whether a context key is cached on first use (a writer decided so, or a MAC key, of
/// which a material has one) or only on its second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Now,
    OnSecondUse,
}

/// A resolved context key: a cached handle, or a transient object destroyed with the guard.
struct ContextKey<'s> {
    handle: ObjectHandle,
    _transient: Option<SessionObject<'s>>,
}

impl<M> Hsm<M> {
    pub fn context_key_stats(&self) -> ContextKeyStats {
        let size = self
            .current_token()
            .map_or(0, |t| t.context_keys().keys.len());
        self.context_counters
            .stats(size, self.config.context_key_cache)
    }

    /// Resolves a context key inside an operation on `s`: the cached handle, or a key
    /// derived into the cache (owned by `copy_owner`), or a transient one in `s`.
    fn context_key<'s>(
        &self,
        at: &Site<'_, 's>,
        name: &ContextKeyName,
        role: KeyRole,
        admit: Admit,
    ) -> Result<ContextKey<'s>, OpError> {
        let Site {
            token,
            s,
            base,
            material,
        } = *at;
        let counters = &self.context_counters;
        if self.config.context_key_cache > 0 {
            let admitted = {
                let mut cache = token.context_keys();
                if let Some(cached) = cache.keys.get(name) {
                    counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(ContextKey {
                        handle: cached.handle,
                        _transient: None,
                    });
                }
                admit == Admit::Now || cache.seen_before(name)
            };
            if admitted {
                // A step of the request's operation, on another session: past the request's
                // deadline it is not started (its own deadline would refuse the call only by
                // discarding the session that owns every cached key).
                if s.expired() {
                    return Err(OpError::from(CkError::Pkcs11(
                        cryptoki::error::RvError::FunctionCanceled,
                        cryptoki::context::Function::DeriveKey,
                    )));
                }
                let made = self.on_pool(token, &token.copy_owner, OnLostSession::Retry, |owner| {
                    derive_context_key(owner, base, name, role).map_err(OpError::from)
                });
                let handle = flatten_op_error(made)?;
                counters.admissions.fetch_add(1, Ordering::Relaxed);
                let (kept, discard) = {
                    let mut cache = token.context_keys();
                    match cache.keys.get(name) {
                        // Another request cached it meanwhile: use that, drop ours.
                        Some(theirs) => (theirs.handle, vec![handle]),
                        None => {
                            let evicted = cache.keys.insert(
                                *name,
                                CachedKey {
                                    handle,
                                    material: *material,
                                },
                            );
                            counters
                                .evictions
                                .fetch_add(evicted.len() as u64, Ordering::Relaxed);
                            (handle, evicted.into_iter().map(|(_, k)| k.handle).collect())
                        }
                    }
                };
                self.destroy_context_keys(token, &discard);
                return Ok(ContextKey {
                    handle: kept,
                    _transient: None,
                });
            }
        }
        counters.misses.fetch_add(1, Ordering::Relaxed);
        let handle = derive_context_key(s, base, name, role)?;
        Ok(ContextKey {
            handle,
            _transient: Some(SessionObject::transient(s, handle)),
        })
    }

    /// Destroys cached context keys (on their owner session).
    pub(super) fn destroy_context_keys(&self, token: &Arc<Token>, handles: &[ObjectHandle]) {
        self.destroy_owned_objects(token, handles, "cached context keys");
    }

    /// Forgets the context keys of a material (its key is being deleted).
    pub(super) fn purge_context_keys(&self, token: &Arc<Token>, material: &MaterialId) {
        let doomed = token.context_keys().purge_material(material);
        self.destroy_context_keys(token, &doomed);
    }

    /// Locks `dek` for a new ciphertext of `material` (whose base key is `base`).
    pub(super) fn lock_dek(
        &self,
        at: &Site<'_, '_>,
        lock: &DekLock<'_>,
        dek: ObjectHandle,
        payload: &[u8],
    ) -> Result<LockedDek, OpError> {
        let (s, base) = (at.s, at.base);
        match lock {
            DekLock::Derived { derivation } => {
                let kek = SessionObject::transient(s, derive_kek(s, base, &derivation(payload))?);
                let wrapped =
                    s.wrap_key_sized(&self.key_wrap.mechanism(), kek.handle, dek, WRAPPED_DEK_LEN)?;
                Ok(LockedDek { wrapped, tag: None })
            }
            DekLock::KwpMac {
                context_key,
                mac_key,
                mac_input,
            } => {
                let kek = self.context_key(at, context_key, KeyRole::Wrap, Admit::Now)?;
                let mac = self.context_key(at, mac_key, KeyRole::Mac, Admit::Now)?;
                let wrapped =
                    s.wrap_key_sized(&self.key_wrap.mechanism(), kek.handle, dek, WRAPPED_DEK_LEN)?;
                let tag = s.sign_sized(
                    &Mechanism::Sha256Hmac,
                    mac.handle,
                    &mac_input(&wrapped, payload),
                    MAC_TAG_LEN,
                )?;
                Ok(LockedDek {
                    wrapped,
                    tag: Some(tag),
                })
            }
            DekLock::Gcm {
                context_key,
                iv,
                aad,
            } => {
                let kek = self.context_key(at, context_key, KeyRole::Wrap, Admit::Now)?;
                let aad = aad(payload);
                let mut iv = *iv;
                let gcm = GcmParams::new(&mut iv, &aad, 128.into())?;
                let wrapped = s.wrap_key_sized(
                    &Mechanism::AesGcm(gcm),
                    kek.handle,
                    dek,
                    GCM_WRAPPED_DEK_LEN,
                )?;
                Ok(LockedDek { wrapped, tag: None })
            }
        }
    }

    /// Checks and unlocks an existing ciphertext's data key into a session object for `use_`.
    /// Anything that does not authenticate is `OpError::BadData`.
    pub(super) fn unlock_dek<'s>(
        &self,
        at: &Site<'_, 's>,
        unlock: &DekUnlock<'_>,
        use_: DekUse,
    ) -> Result<SessionObject<'s>, OpError> {
        let (s, base) = (at.s, at.base);
        let key_wrap = self.key_wrap.mechanism();
        let handle = match unlock {
            DekUnlock::Derived {
                derivation,
                wrapped,
            } => {
                let kek = SessionObject::transient(s, derive_kek(s, base, derivation)?);
                unwrap_dek_as(s, &key_wrap, kek.handle, wrapped, use_)
                    .map_err(|e| bad_data(s, e))?
            }
            DekUnlock::KwpMac {
                context_key,
                mac_key,
                mac_input,
                tag,
                wrapped,
            } => {
                let mac = self.context_key(at, mac_key, KeyRole::Mac, Admit::Now)?;
                s.verify(&Mechanism::Sha256Hmac, mac.handle, mac_input, tag)
                    .map_err(|e| bad_data(s, e))?;
                let kek = self.context_key(at, context_key, KeyRole::Wrap, Admit::OnSecondUse)?;
                unwrap_dek_as(s, &key_wrap, kek.handle, wrapped, use_)
                    .map_err(|e| bad_data(s, e))?
            }
            DekUnlock::Gcm {
                context_key,
                iv,
                aad,
                wrapped,
            } => {
                let kek = self.context_key(at, context_key, KeyRole::Wrap, Admit::OnSecondUse)?;
                let mut iv = *iv;
                let gcm = GcmParams::new(&mut iv, aad, 128.into())?;
                unwrap_dek_as(s, &Mechanism::AesGcm(gcm), kek.handle, wrapped, use_)
                    .map_err(|e| bad_data(s, e))?
            }
        };
        Ok(SessionObject::transient(s, handle))
    }
}

/// A context key: AES-256 for wrapping (KWP or GCM), or a 32-byte generic secret for
/// HMAC-SHA256; sensitive, non-extractable, and able to do only its role.
fn derive_context_key(
    s: &TimedSession<'_>,
    base: ObjectHandle,
    name: &ContextKeyName,
    role: KeyRole,
) -> Result<ObjectHandle, CkError> {
    if role == KeyRole::Wrap {
        return derive_kek(s, base, name);
    }
    let params = AesCbcDeriveParams::new([0u8; 16], name);
    s.derive_key(
        &Mechanism::AesCbcEncryptData(params),
        base,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ],
    )
}

/// Runs a throwaway round of scheme 2 or 3 on `base`: lock, unlock for rewrap, lock again,
/// unlock for decryption; and a changed tag or AAD must fail.
pub(super) fn trial_context_scheme(
    s: &TimedSession<'_>,
    base: ObjectHandle,
    dek: ObjectHandle,
    key_wrap: &Mechanism,
    gcm: bool,
) -> Result<(), HsmError> {
    let name = [9u8; 32];
    let kek = SessionObject::new(s, derive_context_key(s, base, &name, KeyRole::Wrap)?);
    let wrong = |what: &str| HsmError::gateway("trial", what, super::Scope::Token);
    if gcm {
        let mut iv = [5u8; IV_LEN];
        let aad = b"header";
        let wrapped = s.wrap_key_sized(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into())?),
            kek.handle,
            dek,
            GCM_WRAPPED_DEK_LEN,
        )?;
        if wrapped.len() != GCM_WRAPPED_DEK_LEN {
            return Err(wrong("unexpected GCM wrap length"));
        }
        let mut iv2 = [5u8; IV_LEN];
        let moved = unwrap_dek_as(
            s,
            &Mechanism::AesGcm(GcmParams::new(&mut iv2, aad, 128.into())?),
            kek.handle,
            &wrapped,
            DekUse::Rewrap,
        )?;
        let _moved = SessionObject::new(s, moved);
        let mut iv3 = [5u8; IV_LEN];
        if let Ok(h) = unwrap_dek_as(
            s,
            &Mechanism::AesGcm(GcmParams::new(&mut iv3, b"HEADER", 128.into())?),
            kek.handle,
            &wrapped,
            DekUse::Decrypt,
        ) {
            let _ = s.destroy_object(h);
            return Err(wrong("a GCM unwrap with another AAD succeeded"));
        }
    } else {
        let mac = SessionObject::new(s, derive_context_key(s, base, &name, KeyRole::Mac)?);
        let wrapped = s.wrap_key_sized(key_wrap, kek.handle, dek, WRAPPED_DEK_LEN)?;
        let tag = s.sign_sized(&Mechanism::Sha256Hmac, mac.handle, &wrapped, MAC_TAG_LEN)?;
        s.verify(&Mechanism::Sha256Hmac, mac.handle, &wrapped, &tag)?;
        let mut bad = Zeroizing::new(tag.clone());
        bad[0] ^= 1;
        if s.verify(&Mechanism::Sha256Hmac, mac.handle, &wrapped, &bad)
            .is_ok()
        {
            return Err(wrong("a changed HMAC tag verified"));
        }
    }
    Ok(())
}

impl<M> Hsm<M> {
    /// Which ciphertext schemes this token can run, each proved by a trial on throwaway
    /// session keys: 1 always (start-up already proved it), 2 when a derived generic secret
    /// can HMAC-SHA256, 3 when AES-GCM can wrap and unwrap with AAD.
    pub(super) fn probe_context_schemes(&self) -> [bool; 4] {
        let key_wrap = self.key_wrap.mechanism();
        let trial = |gcm: bool| {
            let ran = self.with_session(|_, s| {
                let base = SessionObject::new(s, super::envelope::generate_trial_base(s)?);
                let dek = SessionObject::new(s, super::envelope::generate_dek(s)?);
                trial_context_scheme(s, base.handle, dek.handle, &key_wrap, gcm)
            });
            match ran {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::info!(scheme = if gcm { 3 } else { 2 }, error = %e, "ciphertext scheme unavailable on this token");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ciphertext scheme probe failed");
                    false
                }
            }
        };
        [false, true, trial(false), trial(true)]
    }

    /// The scheme to write: the configured one (which must run here), else the best.
    pub(super) fn choose_writer_scheme(&self) -> Result<u8, super::OpenError> {
        match self.config.ciphertext_scheme {
            Some(scheme) if self.reads_scheme(scheme) => Ok(scheme),
            Some(scheme) => Err(super::OpenError::SchemeUnavailable {
                configured: scheme,
                runs: (1..=3u8)
                    .filter(|s| self.reads_scheme(*s))
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            None => Ok((1..=3u8).rev().find(|s| self.reads_scheme(*s)).unwrap_or(1)),
        }
    }
}
