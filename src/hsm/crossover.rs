//! ReEncrypt between a symmetric key and an RSA key, inside the token.
//!
//! Both directions move the plaintext as a sensitive session secret that can only be
//! wrapped again, so neither the message nor a data key reaches host memory:
//! - symmetric → RSA: unwrap the data key (KWP), GCM-*unwrap* the payload into a secret,
//!   OAEP-wrap the secret under the destination's public half;
//! - RSA → symmetric: OAEP-unwrap the ciphertext into a secret, GCM-*wrap* it under a fresh
//!   data key (the payload of a new symmetric ciphertext), KWP-wrap the data key.
//!
//! They need `CKM_AES_GCM` with `C_UnwrapKey` / `C_WrapKey`, which the start-up probe
//! measures (`AsymmetricCapabilities::gcm_unwrap` / `gcm_wrap`); SoftHSM 2.6.1 has neither.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};

use super::asymmetric::unwrap_secret;
use super::{
    bad_data, derive_kek, draw_nonce_and_iv, wrap_dek, Half, Hsm, KeyWrap, OaepHash, OpError,
    SealDerivation, Sealed, SessionObject, TimedSession, IV_LEN, RSA_OUTPUT_BOUND, TAG_LEN,
};
use crate::error::KmsError;
use crate::model::MaterialId;

/// The symmetric ciphertext's parts ReEncrypt reads: where its data key is, and its payload.
pub struct SealedParts<'a> {
    pub material: &'a MaterialId,
    pub derivation: &'a [u8; 32],
    pub wrapped_dek: &'a [u8],
    pub iv: &'a [u8; IV_LEN],
    pub aad: &'a [u8],
    pub payload: &'a [u8],
}

impl Hsm {
    /// Symmetric → RSA: the payload's plaintext, OAEP-encrypted under `destination`'s public
    /// half with `hash`, without leaving the token. A payload or data key that does not
    /// open is `InvalidCiphertext`.
    pub fn sealed_to_rsa(
        &self,
        source: &SealedParts<'_>,
        destination: &MaterialId,
        hash: OaepHash,
    ) -> Result<Vec<u8>, KmsError> {
        self.with_objects(
            [(source.material, Half::Secret), (destination, Half::Public)],
            |s, [base, public]| {
                let kek = SessionObject::new(s, derive_kek(s, base, source.derivation)?);
                let dek = SessionObject::new(
                    s,
                    unwrap_payload_key(s, self.key_wrap, kek.handle, source.wrapped_dek)
                        .map_err(|e| bad_data(s, e))?,
                );
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
        .map_err(OpError::into_kms)
    }

    /// RSA → symmetric: the plaintext of an OAEP ciphertext under `source`'s private half,
    /// sealed under `destination` as [`Hsm::seal`] seals, without leaving the token. A
    /// ciphertext that does not decode is `InvalidCiphertext`.
    pub fn rsa_to_sealed(
        &self,
        source: &MaterialId,
        hash: OaepHash,
        ciphertext: &[u8],
        destination: &MaterialId,
        derivation: &SealDerivation<'_>,
        aad: &[u8],
    ) -> Result<Sealed, KmsError> {
        self.with_objects(
            [(source, Half::Private), (destination, Half::Secret)],
            |s, [private, base]| {
                let secret = SessionObject::new(
                    s,
                    unwrap_secret(s, &hash.mechanism(), private, ciphertext)
                        .map_err(|e| bad_data(s, e))?,
                );
                let (nonce, iv) = draw_nonce_and_iv(s)?;
                let dek = SessionObject::new(s, generate_wrapping_dek(s)?);
                let mut iv_param = iv;
                let gcm = GcmParams::new(&mut iv_param, aad, 128.into())?;
                // The secret is the OAEP plaintext, shorter than its ciphertext.
                let payload = s.wrap_key_sized(
                    &Mechanism::AesGcm(gcm),
                    dek.handle,
                    secret.handle,
                    ciphertext.len() + TAG_LEN,
                )?;
                let wrapped_dek = wrap_dek(
                    s,
                    self.key_wrap,
                    base,
                    &derivation(&nonce, &iv, &payload),
                    dek.handle,
                )?;
                Ok(Sealed {
                    nonce,
                    wrapped_dek,
                    iv,
                    ciphertext: payload,
                })
            },
        )
        .map_err(OpError::into_kms)
    }
}

/// A ciphertext's data key, unwrapped to open its payload into a key object (GCM unwrap):
/// it can unwrap and nothing else.
fn unwrap_payload_key(
    s: &TimedSession<'_>,
    key_wrap: KeyWrap,
    kek: ObjectHandle,
    wrapped: &[u8],
) -> Result<ObjectHandle, CkError> {
    s.unwrap_key(
        &key_wrap.mechanism(),
        kek,
        wrapped,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(true),
            Attribute::Wrap(false),
        ],
    )
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
