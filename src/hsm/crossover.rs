//! ReEncrypt between a symmetric key and an RSA key, inside the token.
//!
//! Both directions move the plaintext as a sensitive session secret that can only be
//! wrapped again, so neither the message nor a data key reaches host memory:
//! - symmetric → RSA: unlock the data key (as its scheme says), GCM-*unwrap* the payload into
//!   a secret, OAEP-wrap the secret under the destination's public half;
//! - RSA → symmetric: OAEP-unwrap the ciphertext into a secret, GCM-*wrap* it under a fresh
//!   data key (the payload of a new symmetric ciphertext), lock the data key.
//!
//! They need `CKM_AES_GCM` with `C_UnwrapKey` / `C_WrapKey`, which the start-up probe
//! measures (`AsymmetricCapabilities::gcm_unwrap` / `gcm_wrap`); SoftHSM 2.6.1 has neither.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};

use super::asymmetric::unwrap_secret;
use super::provider::CrossoverPrimitives;
use super::{
    bad_data, DekLock, DekUnlock, DekUse, Half, Hsm, LockedDek, Materials, OaepHash, OpError,
    ProviderError, SessionObject, Site, TimedSession, IV_LEN, RSA_OUTPUT_BOUND, TAG_LEN,
};
use crate::model::MaterialId;

/// The symmetric ciphertext's parts ReEncrypt reads: how to unlock its data key, and its
/// payload.
pub struct SealedParts<'a> {
    pub material: &'a MaterialId,
    pub unlock: &'a DekUnlock<'a>,
    pub iv: &'a [u8; IV_LEN],
    pub aad: &'a [u8],
    pub payload: &'a [u8],
}

impl<M: Materials> CrossoverPrimitives for Hsm<M> {
    /// Symmetric → RSA: the payload's plaintext, OAEP-encrypted under `destination`'s public
    /// half with `hash`, without leaving the token. A payload or data key that does not
    /// open is `ProviderError::RejectedData`.
    fn sealed_to_rsa(
        &self,
        source: &SealedParts<'_>,
        destination: &MaterialId,
        hash: OaepHash,
    ) -> Result<Vec<u8>, ProviderError> {
        self.with_objects_on(
            [(source.material, Half::Secret), (destination, Half::Public)],
            |token, s, [base, public]| {
                let at = Site {
                    token,
                    s,
                    base,
                    material: source.material,
                };
                let dek = self.unlock_dek(&at, source.unlock, DekUse::OpenPayload)?;
                let mut iv = *source.iv;
                let gcm = GcmParams::new(&mut iv, source.aad, 128.into())?;
                let secret = SessionObject::new(
                    s,
                    unwrap_secret(s, &Mechanism::AesGcm(gcm), dek.handle, source.payload)
                        .map_err(|e| bad_data(s, e))?,
                );
                Ok(s.wrap_key_sized(&hash.mechanism(), public, secret.handle, RSA_OUTPUT_BOUND)?)
            },
        )
        .map_err(OpError::into_provider)
    }

    /// RSA → symmetric: the plaintext of an OAEP ciphertext under `source`'s private half,
    /// sealed under `destination` as `SymmetricPrimitives::seal` seals (payload IV `iv`,
    /// data key locked as `lock` says), without leaving the token. A ciphertext that does not decode is
    /// `ProviderError::RejectedData`.
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
    ) -> Result<(Vec<u8>, LockedDek), ProviderError> {
        self.with_objects_on(
            [(source, Half::Private), (destination, Half::Secret)],
            |token, s, [private, base]| {
                let secret = SessionObject::new(
                    s,
                    unwrap_secret(s, &hash.mechanism(), private, ciphertext)
                        .map_err(|e| bad_data(s, e))?,
                );
                let dek = SessionObject::transient(s, generate_wrapping_dek(s)?);
                let mut iv_param = *iv;
                let gcm = GcmParams::new(&mut iv_param, aad, 128.into())?;
                // The secret is the OAEP plaintext, shorter than its ciphertext.
                let payload = s.wrap_key_sized(
                    &Mechanism::AesGcm(gcm),
                    dek.handle,
                    secret.handle,
                    ciphertext.len() + TAG_LEN,
                )?;
                let at = Site {
                    token,
                    s,
                    base,
                    material: destination,
                };
                let locked = self.lock_dek(&at, lock, dek.handle, &payload)?;
                Ok((payload, locked))
            },
        )
        .map_err(OpError::into_provider)
    }
}

/// A fresh AES-256 data key that seals a secret by GCM wrap: sensitive, extractable only by
/// wrapping (it is KWP-wrapped into the ciphertext), wrap-only.
fn generate_wrapping_dek(s: &TimedSession<'_>) -> Result<ObjectHandle, CkError> {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(true),
        ],
    )
}
