//! Adopting a key that is already in the token (the custody case).
//!
//! An adopted key becomes a KMS key's material without being copied: the symmetric scheme
//! only ever *derives* from its material (`CKM_AES_CBC_ENCRYPT_DATA`, see
//! `crate::kms::ciphertext`), so any AES token key that allows `CKA_DERIVE` can serve, and
//! the gateway never reads, wraps, modifies or destroys it. What adoption checks, in order:
//! exactly one secret-key token object matches the reference; it is an AES key; it has
//! `CKA_DERIVE` true; and a trial derivation from it succeeds (an HSM may still restrict
//! the key with `CKA_ALLOWED_MECHANISMS` or a policy).

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

use super::provider::TokenAdoption;
use super::{derive_kek, Hsm, HsmError, ProviderError, SessionObject};
use crate::model::{MaterialId, TokenKeyRef};

/// Why a token object cannot be adopted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unadoptable {
    #[error("no secret-key token object with {0}")]
    NotFound(TokenKeyRef),
    #[error("{count} secret-key token objects have {object}; name the key by a unique CKA_ID")]
    Ambiguous { object: TokenKeyRef, count: usize },
    #[error(
        "the object with {object} is not an AES key ({key_type}); the symmetric scheme derives \
         from an AES key"
    )]
    NotAes {
        object: TokenKeyRef,
        key_type: String,
    },
    #[error(
        "the AES key with {0} has CKA_DERIVE false. p11kms never uses a key material directly: \
         every Encrypt, Decrypt and ReEncrypt derives a per-message wrapping key from it with \
         CKM_AES_CBC_ENCRYPT_DATA, which PKCS#11 allows only on keys with CKA_DERIVE true. Set \
         CKA_DERIVE on the object with the HSM's own tools if your key policy permits it \
         (p11kms does not modify adopted keys), or adopt another key"
    )]
    NoDerive(TokenKeyRef),
    #[error(
        "the AES key with {object} refused a trial CKM_AES_CBC_ENCRYPT_DATA derivation \
         ({error}); check its CKA_ALLOWED_MECHANISMS or the HSM's policy"
    )]
    TrialRefused {
        object: TokenKeyRef,
        error: HsmError,
    },
    #[error(
        "the AES key with {0} has neither CKA_ID nor CKA_LABEL, so it cannot be found again \
         after a restart"
    )]
    Unnamed(TokenKeyRef),
}

/// A token key that passed the adoption checks.
#[derive(Debug, Clone)]
pub struct AdoptableKey {
    /// Its `CKA_ID` (may be empty).
    pub cka_id: Vec<u8>,
    pub label: String,
    /// `CKA_VALUE_LEN` in bytes, when the token tells.
    pub value_len: Option<u64>,
    /// Concerns an operator should hear about, e.g. an extractable key.
    pub warnings: Vec<String>,
}

impl AdoptableKey {
    /// How the gateway will find this object from now on: by `CKA_ID` when it has one,
    /// otherwise by its label.
    pub fn reference(&self) -> TokenKeyRef {
        if self.cka_id.is_empty() {
            TokenKeyRef::Label(self.label.clone())
        } else {
            TokenKeyRef::Id(self.cka_id.clone())
        }
    }
}

impl<M> TokenAdoption for Hsm<M> {
    /// Looks up a token key for adoption and checks that the symmetric scheme can use it.
    /// The outer error is an HSM failure; the inner one says why this object is unsuitable.
    fn inspect_adoptable(
        &self,
        object: &TokenKeyRef,
    ) -> Result<Result<AdoptableKey, Unadoptable>, ProviderError> {
        self.with_session(|_, s| {
            let handles = s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
                match object {
                    TokenKeyRef::Id(id) => Attribute::Id(id.clone()),
                    TokenKeyRef::Label(label) => Attribute::Label(label.clone().into_bytes()),
                },
            ])?;
            let handle = match handles.as_slice() {
                [one] => *one,
                [] => return Ok(Err(Unadoptable::NotFound(object.clone()))),
                many => {
                    return Ok(Err(Unadoptable::Ambiguous {
                        object: object.clone(),
                        count: many.len(),
                    }))
                }
            };
            let attributes = s.get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::Derive,
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::ValueLen,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                ],
            )?;
            let mut key = AdoptableKey {
                cka_id: Vec::new(),
                label: String::new(),
                value_len: None,
                warnings: Vec::new(),
            };
            let (mut key_type, mut derive, mut sensitive, mut extractable) =
                (None, false, false, false);
            for attribute in attributes {
                match attribute {
                    Attribute::KeyType(t) => key_type = Some(t),
                    Attribute::Derive(d) => derive = d,
                    Attribute::Id(id) => key.cka_id = id,
                    Attribute::Label(l) => key.label = String::from_utf8_lossy(&l).into_owned(),
                    Attribute::ValueLen(len) => key.value_len = Some(u64::from(len)),
                    Attribute::Sensitive(v) => sensitive = v,
                    Attribute::Extractable(v) => extractable = v,
                    _ => {}
                }
            }
            if key_type != Some(KeyType::AES) {
                return Ok(Err(Unadoptable::NotAes {
                    object: object.clone(),
                    key_type: key_type.map_or("unknown key type".to_string(), |t| t.to_string()),
                }));
            }
            if !derive {
                return Ok(Err(Unadoptable::NoDerive(object.clone())));
            }
            // A trial derivation: the token may still refuse (allowed mechanisms, policy).
            if let Err(e) = derive_kek(s, handle, &[0u8; 32]).map(|h| SessionObject::new(s, h)) {
                return Ok(Err(Unadoptable::TrialRefused {
                    object: object.clone(),
                    error: HsmError::from(e),
                }));
            }
            if !sensitive {
                key.warnings.push("CKA_SENSITIVE is false".into());
            }
            if extractable {
                key.warnings
                    .push("CKA_EXTRACTABLE is true: the material can leave the token".into());
            }
            if key.value_len.is_some_and(|len| len < 32) {
                key.warnings
                    .push("shorter than AES-256: the derived keys are only as strong".into());
            }
            if key.cka_id.is_empty() && key.label.is_empty() {
                return Ok(Err(Unadoptable::Unnamed(object.clone())));
            }
            Ok(Ok(key))
        })?
        .map_err(ProviderError::from)
    }

    /// Makes `material` stand for an adopted token object (at start-up, for every adoption
    /// the store records, and when a seed file adopts a key).
    fn register_adopted(&self, material: MaterialId, object: TokenKeyRef) {
        if let Some(token) = self.current_token() {
            token
                .materials_mut()
                .retain(|(cached, _), _| *cached != material);
        }
        self.adopted_mut().insert(material, object);
    }
}

impl<M> Hsm<M> {
    pub(super) fn adopted_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<MaterialId, TokenKeyRef>> {
        self.adopted.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn adopted_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<MaterialId, TokenKeyRef>> {
        self.adopted.write().unwrap_or_else(|p| p.into_inner())
    }
}
