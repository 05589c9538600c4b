//! The symmetric envelope's in-token steps (see `crate::kms::ciphertext` for the layout):
//! deriving `K_wrap` from a material, making and unwrapping data keys, and the start-up
//! trial of the whole construction on throwaway session keys.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroizing;

use super::timed::TimedSession;
use super::{HsmError, KeyWrap, Scope, SessionObject, IV_LEN, TAG_LEN, WRAPPED_DEK_LEN};

/// K_wrap = AES-CBC-ENCRYPT-DATA(material, IV 0, data): a wrap/unwrap-only session key.
pub(super) fn derive_kek(
    s: &TimedSession<'_>,
    base: ObjectHandle,
    data: &[u8; 32],
) -> Result<ObjectHandle, CkError> {
    let params = AesCbcDeriveParams::new([0u8; 16], data);
    s.derive_key(
        &Mechanism::AesCbcEncryptData(params),
        base,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ],
    )
}

/// A fresh AES-256 data key: sensitive, extractable only by wrapping, encrypt-only.
pub(super) fn generate_dek(s: &TimedSession<'_>) -> Result<ObjectHandle, CkError> {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(false),
        ],
    )
}

/// What an unwrapped data key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DekUse {
    /// Decrypt the payload (Decrypt).
    Decrypt,
    /// Be wrapped again and nothing else (ReEncrypt).
    Rewrap,
    /// Open the payload into a key object by GCM unwrap (ReEncrypt to an RSA key).
    OpenPayload,
}

/// Unwraps a data key with `mechanism` into a sensitive session object for `use_`.
pub(super) fn unwrap_dek_as(
    s: &TimedSession<'_>,
    mechanism: &Mechanism,
    kek: ObjectHandle,
    wrapped: &[u8],
    use_: DekUse,
) -> Result<ObjectHandle, CkError> {
    s.unwrap_key(
        mechanism,
        kek,
        wrapped,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(use_ == DekUse::Rewrap),
            Attribute::Encrypt(false),
            Attribute::Decrypt(use_ == DekUse::Decrypt),
            Attribute::Unwrap(use_ == DekUse::OpenPayload),
            Attribute::Wrap(false),
        ],
    )
}

/// [`unwrap_dek_as`] with the token's RFC 5649 key wrap (scheme 1).
pub(super) fn unwrap_dek(
    s: &TimedSession<'_>,
    key_wrap: KeyWrap,
    kek: ObjectHandle,
    wrapped: &[u8],
    for_rewrap: bool,
) -> Result<ObjectHandle, CkError> {
    let use_ = if for_rewrap {
        DekUse::Rewrap
    } else {
        DekUse::Decrypt
    };
    unwrap_dek_as(s, &key_wrap.mechanism(), kek, wrapped, use_)
}

/// A throwaway session key standing in for a material (derive-only).
pub(super) fn generate_trial_base(s: &TimedSession<'_>) -> Result<ObjectHandle, CkError> {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Derive(true),
        ],
    )
}

/// Seal, open and rewrap once with a throwaway session key standing in for a material.
pub(super) fn trial_run(s: &TimedSession<'_>, key_wrap: KeyWrap) -> Result<(), HsmError> {
    let base = SessionObject::new(s, generate_trial_base(s)?);
    let probe = b"p11kms start-up probe";
    let mut iv = [7u8; IV_LEN];
    let kek = SessionObject::new(s, derive_kek(s, base.handle, &[1u8; 32])?);
    let dek = SessionObject::new(s, generate_dek(s)?);
    // The sized calls the requests make, so the start-up proves them too.
    let ct = s.encrypt_sized(
        &Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into())?),
        dek.handle,
        probe,
        probe.len() + TAG_LEN,
    )?;
    let wrapped = s.wrap_key_sized(
        &key_wrap.mechanism(),
        kek.handle,
        dek.handle,
        WRAPPED_DEK_LEN,
    )?;
    if wrapped.len() != WRAPPED_DEK_LEN {
        return Err(HsmError::gateway(
            "C_WrapKey",
            "unexpected KWP output length",
            Scope::Token,
        ));
    }
    let moved = SessionObject::new(s, unwrap_dek(s, key_wrap, kek.handle, &wrapped, true)?);
    let kek2 = SessionObject::new(s, derive_kek(s, base.handle, &[2u8; 32])?);
    let rewrapped = s.wrap_key_sized(
        &key_wrap.mechanism(),
        kek2.handle,
        moved.handle,
        WRAPPED_DEK_LEN,
    )?;
    let opened = SessionObject::new(s, unwrap_dek(s, key_wrap, kek2.handle, &rewrapped, false)?);
    let mut iv = [7u8; IV_LEN];
    let pt = Zeroizing::new(s.decrypt_sized(
        &Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into())?),
        opened.handle,
        &ct,
        ct.len(),
    )?);
    if pt.as_slice() != probe {
        return Err(HsmError::gateway(
            "C_Decrypt",
            "trial round trip mismatch",
            Scope::Token,
        ));
    }
    // A wrong derivation must fail at the unwrap: that is what binds the context.
    let kek3 = SessionObject::new(s, derive_kek(s, base.handle, &[3u8; 32])?);
    if let Ok(h) = unwrap_dek(s, key_wrap, kek3.handle, &rewrapped, false) {
        let _ = s.destroy_object(h);
        return Err(HsmError::gateway(
            "C_UnwrapKey",
            "unwrap under a wrong key succeeded",
            Scope::Token,
        ));
    }
    Ok(())
}
