//! The symmetric ciphertext format (scheme 1, "envelope").
//!
//! ```text
//! offset  size  field
//!      0     1  format version (1)
//!      1     1  scheme id (1 = derive-KWP-GCM envelope)
//!      2    16  key id (UUID bytes)
//!     18    32  key-material id
//!     50    16  nonce (from the token's generator)
//!     66    40  data key, AES-KWP (RFC 5649)-wrapped under K_wrap
//!    106    12  GCM IV (from the token's generator)
//!    118   n+16 payload: AES-256-GCM ciphertext of the plaintext under the data key, tag appended
//! ```
//!
//! `K_wrap = AES-CBC-ENCRYPT-DATA(material, SHA-256(domain ‖ key id ‖ material id ‖
//! canonical context ‖ nonce ‖ SHA-256(IV ‖ payload)))`, derived in the token. Every byte of
//! the blob is therefore bound to the wrapped key: a wrong key, material or context, or any
//! changed byte of the nonce, IV or payload, gives a different `K_wrap`, and the in-token
//! KWP unwrap fails its integrity check. That is how ReEncrypt, which never decrypts the
//! payload, still rejects a tampered blob; Decrypt also checks the GCM tag.
//! The per-message nonce makes every Encrypt and every ReEncrypt output different even for
//! the same data key. The payload's AAD is a constant: ReEncrypt changes the header and the
//! wrapped key but must copy the payload unchanged.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::KmsError;
use crate::hsm::{Sealed, IV_LEN, NONCE_LEN, TAG_LEN, WRAPPED_DEK_LEN};
use crate::model::{KeyId, MaterialId};

pub const FORMAT_VERSION: u8 = 1;
pub const SCHEME_ENVELOPE: u8 = 1;
const KEY_ID_AT: usize = 2;
const MATERIAL_AT: usize = KEY_ID_AT + 16;
const NONCE_AT: usize = MATERIAL_AT + 32;
const WRAPPED_AT: usize = NONCE_AT + NONCE_LEN;
const IV_AT: usize = WRAPPED_AT + WRAPPED_DEK_LEN;
const PAYLOAD_AT: usize = IV_AT + IV_LEN;
/// Bytes a ciphertext adds to its plaintext.
pub const OVERHEAD: usize = PAYLOAD_AT + TAG_LEN;
/// The GCM AAD of every payload.
pub const PAYLOAD_AAD: &[u8] = b"p11kms/1/payload";
const DERIVATION_DOMAIN: &[u8] = b"p11kms/1/kwrap\0";

/// A parsed symmetric ciphertext, borrowing from the blob.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub key_id: KeyId,
    pub material: MaterialId,
    pub nonce: [u8; NONCE_LEN],
    pub wrapped_dek: &'a [u8],
    pub iv: [u8; IV_LEN],
    pub payload: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses a blob; anything malformed is `InvalidCiphertext`, with no reason given.
    pub fn parse(blob: &'a [u8]) -> Result<Self, KmsError> {
        if blob.len() < OVERHEAD + 1 || blob[0] != FORMAT_VERSION || blob[1] != SCHEME_ENVELOPE {
            return Err(KmsError::InvalidCiphertext);
        }
        let field = |from: usize, to: usize| &blob[from..to];
        let mut key_id = [0u8; 16];
        key_id.copy_from_slice(field(KEY_ID_AT, MATERIAL_AT));
        let mut material = [0u8; 32];
        material.copy_from_slice(field(MATERIAL_AT, NONCE_AT));
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(field(NONCE_AT, WRAPPED_AT));
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(field(IV_AT, PAYLOAD_AT));
        Ok(Envelope {
            key_id: KeyId::from_bytes(key_id),
            material: MaterialId(material),
            nonce,
            wrapped_dek: field(WRAPPED_AT, IV_AT),
            iv,
            payload: &blob[PAYLOAD_AT..],
        })
    }

    /// The key id a blob names, if it looks like one of ours (for `IncorrectKeyException`
    /// before any cryptography).
    pub fn peek_key_id(blob: &[u8]) -> Option<KeyId> {
        Envelope::parse(blob).ok().map(|e| e.key_id)
    }
}

/// Lays out a new ciphertext.
pub fn assemble(
    key_id: &KeyId,
    material: &MaterialId,
    nonce: &[u8; NONCE_LEN],
    wrapped_dek: &[u8],
    iv: &[u8; IV_LEN],
    payload: &[u8],
) -> Result<Vec<u8>, KmsError> {
    if wrapped_dek.len() != WRAPPED_DEK_LEN {
        return Err(KmsError::Internal(format!(
            "the token wrapped the data key into {} bytes, expected {WRAPPED_DEK_LEN}",
            wrapped_dek.len()
        )));
    }
    let mut out = Vec::with_capacity(PAYLOAD_AT + payload.len());
    out.push(FORMAT_VERSION);
    out.push(SCHEME_ENVELOPE);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&material.0);
    out.extend_from_slice(nonce);
    out.extend_from_slice(wrapped_dek);
    out.extend_from_slice(iv);
    out.extend_from_slice(payload);
    Ok(out)
}

pub fn assemble_sealed(
    key_id: &KeyId,
    material: &MaterialId,
    sealed: &Sealed,
) -> Result<Vec<u8>, KmsError> {
    assemble(
        key_id,
        material,
        &sealed.nonce,
        &sealed.wrapped_dek,
        &sealed.iv,
        &sealed.ciphertext,
    )
}

/// SHA-256 of IV ‖ payload: what binds the payload to the wrapped data key.
pub fn payload_digest(iv: &[u8; IV_LEN], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(iv);
    h.update(payload);
    h.finalize().into()
}

/// The derivation data for `K_wrap`: binds key, material, context, nonce and payload.
pub fn derivation(
    key_id: &KeyId,
    material: &MaterialId,
    context: &BTreeMap<String, String>,
    nonce: &[u8; NONCE_LEN],
    payload_digest: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DERIVATION_DOMAIN);
    h.update(key_id.as_bytes());
    h.update(material.0);
    h.update(canonical_context(context));
    h.update(nonce);
    h.update(payload_digest);
    h.finalize().into()
}

/// The canonical encryption context: pairs sorted by key bytes (a `BTreeMap` already is),
/// each length-prefixed so no two contexts encode alike.
pub fn canonical_context(context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(context.len() as u32).to_be_bytes());
    for (k, v) in context {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let key = KeyId::new_random();
        let material = MaterialId::new_random();
        let blob = assemble(&key, &material, &[1; 16], &[2; 40], &[3; 12], &[4; 20]).unwrap();
        assert_eq!(blob.len(), OVERHEAD + 4);
        let env = Envelope::parse(&blob).unwrap();
        assert_eq!(env.key_id, key);
        assert_eq!(env.material, material);
        assert_eq!(env.wrapped_dek, &[2; 40]);
        assert_eq!(env.payload, &[4; 20]);
    }

    #[test]
    fn short_or_foreign_blobs_are_invalid() {
        assert_eq!(
            Envelope::parse(&[1; 40]).unwrap_err(),
            KmsError::InvalidCiphertext
        );
        let mut blob = vec![9u8; 200];
        blob[1] = SCHEME_ENVELOPE;
        assert!(Envelope::parse(&blob).is_err());
    }

    #[test]
    fn context_encoding_is_unambiguous() {
        let a: BTreeMap<_, _> = [("ab".to_string(), "c".to_string())].into();
        let b: BTreeMap<_, _> = [("a".to_string(), "bc".to_string())].into();
        assert_ne!(canonical_context(&a), canonical_context(&b));
    }
}
