//! Cryptographic operations: Encrypt, Decrypt, ReEncrypt, data keys and random bytes.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::api::*;
use crate::error::KmsError;
use crate::hsm::TAG_LEN;
use crate::model::{KeyId, KeyRecord, KeySpec, KeyUsage, MaterialId};

use super::access::{Access, Authorized};
use super::asymmetric::{oaep_algorithm, require_no_context, Encryption};
use super::ciphertext::{self, Envelope};
use super::provider_errors::on_client_ciphertext;
use super::{dry_run, reject_recipient, Caller, KmsService};

const SYMMETRIC_DEFAULT: EncryptionAlgorithm = EncryptionAlgorithm::SymmetricDefault;

/// What a source ciphertext is opened for.
#[derive(Debug, Clone, Copy)]
enum SourceUse {
    Decrypt,
    /// Re-encryption under the given destination key.
    ReEncryptTo(KeyId),
}

/// A symmetric ciphertext checked against its key: ready to open or re-wrap.
struct SourceCiphertext<'a> {
    key: Authorized<KeyRecord>,
    envelope: Envelope<'a>,
    context: BTreeMap<String, String>,
}

impl KmsService {
    pub fn encrypt(
        &self,
        caller: &Caller,
        req: EncryptCommand,
    ) -> Result<EncryptResponse, KmsError> {
        let plaintext = &req.plaintext;
        self.check_grant_tokens(&req.grant_tokens)?;
        let key = self.find(caller, &req.key_id)?;
        let context = context_of(&req.encryption_context);
        let access = Access::encryption("Encrypt", &key, &context, req.encryption_algorithm);
        let key = self.authorize(caller, key, &access)?;
        self.require_usable(&key)?;
        let encryption = self.require_encryption(&key, "Encrypt", req.encryption_algorithm)?;
        if let Encryption::Rsa { bits, hash } = encryption {
            // Plain OAEP of exactly the modulus length, as AWS; the public half encrypts in
            // the token, so a variant the token cannot decrypt is refused up front.
            self.check_rsa_plaintext(&key, bits, hash, plaintext.len())?;
            require_no_context(&req.encryption_context, "EncryptionContext")?;
            self.require_oaep(hash)?;
            dry_run(req.dry_run)?;
            let blob = self
                .hsm
                .rsa_encrypt(&key.current_material, hash, plaintext.expose())?;
            return Ok(EncryptResponse {
                ciphertext_blob: Some(Blob(blob)),
                key_id: Some(self.arn_of(&key)),
                encryption_algorithm: Some(oaep_algorithm(hash).as_str().into()),
            });
        }
        dry_run(req.dry_run)?;
        let blob = self.seal(caller, &key, &context, plaintext.expose())?;
        Ok(EncryptResponse {
            ciphertext_blob: Some(Blob(blob)),
            key_id: Some(self.arn_of(&key)),
            encryption_algorithm: Some(SYMMETRIC_DEFAULT.as_str().into()),
        })
    }

    pub fn decrypt(
        &self,
        caller: &Caller,
        req: DecryptCommand,
    ) -> Result<DecryptResponse, KmsError> {
        let blob = &req.ciphertext_blob;
        self.check_grant_tokens(&req.grant_tokens)?;
        reject_recipient(&req.recipient)?;
        let mut named = match &req.key_id {
            Some(name) => Some(self.find(caller, name)?),
            None => None,
        };
        if let Some(key) = named.take_if(|k| opens_bare_ciphertext(k, blob.as_bytes())) {
            let key = self.authorize(
                caller,
                key,
                &Access {
                    encryption_algorithm: req.encryption_algorithm.map(|a| a.as_str()),
                    ..Access::to("Decrypt")
                },
            )?;
            // An asymmetric ciphertext is bare OAEP: only the named key can open it.
            let hash =
                self.check_rsa_source(&key, blob.as_bytes(), req.encryption_algorithm, "Decrypt")?;
            require_no_context(&req.encryption_context, "EncryptionContext")?;
            let plaintext = self
                .hsm
                .rsa_decrypt(&key.current_material, hash, blob.as_bytes())
                .map_err(on_client_ciphertext)?;
            dry_run(req.dry_run)?;
            return Ok(DecryptResponse {
                key_id: Some(self.arn_of(&key)),
                plaintext: Some(SecretBlob::new(plaintext)),
                encryption_algorithm: Some(oaep_algorithm(hash).as_str().into()),
                ..Default::default()
            });
        }
        let source = self.check_source(
            caller,
            blob.as_bytes(),
            named,
            req.encryption_algorithm,
            &context_of(&req.encryption_context),
            SourceUse::Decrypt,
        )?;
        let plaintext = ciphertext::open(self.hsm(), &source.envelope, &source.context)?;
        dry_run(req.dry_run)?;
        Ok(DecryptResponse {
            key_id: Some(self.arn_of(&source.key)),
            plaintext: Some(SecretBlob::new(plaintext)),
            encryption_algorithm: Some(SYMMETRIC_DEFAULT.as_str().into()),
            key_material_id: Some(source.envelope.material.to_hex()),
            ..Default::default()
        })
    }

    pub fn re_encrypt(
        &self,
        caller: &Caller,
        req: ReEncryptCommand,
    ) -> Result<ReEncryptResponse, KmsError> {
        self.check_grant_tokens(&req.grant_tokens)?;
        let destination = self.find(caller, &req.destination_key_id)?;
        let destination_context = context_of(&req.destination_encryption_context);
        let access = Access::encryption(
            "ReEncryptTo",
            &destination,
            &destination_context,
            req.destination_encryption_algorithm,
        );
        let destination = self.authorize(caller, destination, &access)?;
        let (blob, source_key_id) = match &req.source {
            ReEncryptSource::Missing(member) => return Err((*member).into()),
            ReEncryptSource::Ciphertext {
                blob,
                source_key_id,
            } => (blob, source_key_id),
            ReEncryptSource::AuthorizationOnly { source_key_id } => {
                return self.re_encrypt_authorization_only(
                    caller,
                    source_key_id,
                    &destination,
                    &req,
                );
            }
        };
        let mut named = match source_key_id {
            Some(name) => Some(self.find(caller, name)?),
            None => None,
        };
        if let Some(key) = named.take_if(|k| opens_bare_ciphertext(k, blob.as_bytes())) {
            let access = Access {
                encryption_algorithm: req.source_encryption_algorithm.map(|a| a.as_str()),
                same_key: Some(key.key_id == destination.key_id),
                ..Access::to("ReEncryptFrom")
            };
            let key = self.authorize(caller, key, &access)?;
            return self.re_encrypt_from_rsa(&key, blob.as_bytes(), &destination, &req);
        }
        let source = self.check_source(
            caller,
            blob.as_bytes(),
            named,
            req.source_encryption_algorithm,
            &context_of(&req.source_encryption_context),
            SourceUse::ReEncryptTo(destination.key_id),
        )?;
        self.require_usable(&destination)?;
        let encryption = self.require_encryption(
            &destination,
            "ReEncrypt",
            req.destination_encryption_algorithm,
        )?;
        if let Encryption::Rsa { bits, hash } = encryption {
            // The plaintext's length is known from the payload without opening it.
            let length = source.envelope.payload.len().saturating_sub(TAG_LEN);
            self.check_rsa_plaintext(&destination, bits, hash, length)?;
            require_no_context(
                &req.destination_encryption_context,
                "DestinationEncryptionContext",
            )?;
            self.require_oaep(hash)?;
            if !self.hsm.capabilities().asymmetric.gcm_unwrap {
                return Err(self.in_token_gap(
                    "CKM_AES_GCM with C_UnwrapKey",
                    "a symmetric ciphertext under an RSA key",
                ));
            }
            // In the token: the payload opens into a secret (GCM unwrap), which the
            // destination's public half wraps (OAEP).
            let ciphertext = ciphertext::rewrap_to_rsa(
                self.hsm(),
                &source.envelope,
                &source.context,
                &destination.current_material,
                hash,
            )?;
            dry_run(req.dry_run)?;
            return Ok(ReEncryptResponse {
                ciphertext_blob: Some(Blob(ciphertext)),
                source_key_id: Some(self.arn_of(&source.key)),
                key_id: Some(self.arn_of(&destination)),
                source_encryption_algorithm: Some(SYMMETRIC_DEFAULT.as_str().into()),
                destination_encryption_algorithm: Some(oaep_algorithm(hash).as_str().into()),
                source_key_material_id: Some(source.envelope.material.to_hex()),
                destination_key_material_id: None,
            });
        }

        let destination_material = destination.current_material;
        caller.note_material(&destination_material);
        caller.note_context(&destination_context, true);
        let plan = ciphertext::Plan::new(
            self.hsm(),
            &destination.key_id,
            &destination_material,
            &destination_context,
        )?;
        let blob = ciphertext::rewrap(self.hsm(), &source.envelope, &source.context, &plan)?;
        dry_run(req.dry_run)?;
        Ok(ReEncryptResponse {
            ciphertext_blob: Some(Blob(blob)),
            source_key_id: Some(self.arn_of(&source.key)),
            key_id: Some(self.arn_of(&destination)),
            source_encryption_algorithm: Some(SYMMETRIC_DEFAULT.as_str().into()),
            destination_encryption_algorithm: Some(SYMMETRIC_DEFAULT.as_str().into()),
            source_key_material_id: Some(source.envelope.material.to_hex()),
            destination_key_material_id: Some(destination_material.to_hex()),
        })
    }

    /// ReEncrypt's authorization-only dry run (`IGNORE_CIPHERTEXT`): the source key named
    /// is authorized and checked like the destination; the ciphertext is not examined.
    fn re_encrypt_authorization_only(
        &self,
        caller: &Caller,
        source_key_id: &str,
        destination: &Authorized<KeyRecord>,
        req: &ReEncryptCommand,
    ) -> Result<ReEncryptResponse, KmsError> {
        let source = self.find(caller, source_key_id)?;
        let source_context = context_of(&req.source_encryption_context);
        let access = Access {
            same_key: Some(source.key_id == destination.key_id),
            ..Access::encryption(
                "ReEncryptFrom",
                &source,
                &source_context,
                req.source_encryption_algorithm,
            )
        };
        let source = self.authorize(caller, source, &access)?;
        self.require_usable(&source)?;
        self.require_encryption(&source, "ReEncrypt", req.source_encryption_algorithm)?;
        self.require_usable(destination)?;
        self.require_encryption(
            destination,
            "ReEncrypt",
            req.destination_encryption_algorithm,
        )?;
        Err(KmsError::DryRun)
    }

    pub fn generate_data_key(
        &self,
        caller: &Caller,
        req: GenerateDataKeyCommand,
    ) -> Result<GenerateDataKeyResponse, KmsError> {
        let context = context_of(&req.encryption_context);
        let key = self.resolve(
            caller,
            &req.key_id,
            &Access {
                context: Some(&context),
                encryption_algorithm: Some(SYMMETRIC_DEFAULT.as_str()),
                ..Access::to("GenerateDataKey")
            },
        )?;
        let length = data_key_length(req.number_of_bytes, req.key_spec)?;
        self.check_grant_tokens(&req.grant_tokens)?;
        reject_recipient(&req.recipient)?;
        self.require_usable(&key)?;
        self.require_symmetric_encryption(&key, "GenerateDataKey", None)?;
        dry_run(req.dry_run)?;
        let data_key = self.hsm.generate_random(length)?;
        let blob = self.seal(caller, &key, &context, &data_key)?;
        Ok(GenerateDataKeyResponse {
            ciphertext_blob: Some(Blob(blob)),
            plaintext: Some(SecretBlob::new(data_key)),
            key_id: Some(self.arn_of(&key)),
            key_material_id: Some(key.current_material.to_hex()),
            ..Default::default()
        })
    }

    pub fn generate_data_key_without_plaintext(
        &self,
        caller: &Caller,
        req: GenerateDataKeyWithoutPlaintextCommand,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse, KmsError> {
        let context = context_of(&req.encryption_context);
        let key = self.resolve(
            caller,
            &req.key_id,
            &Access {
                context: Some(&context),
                encryption_algorithm: Some(SYMMETRIC_DEFAULT.as_str()),
                ..Access::to("GenerateDataKeyWithoutPlaintext")
            },
        )?;
        let length = data_key_length(req.number_of_bytes, req.key_spec)?;
        self.check_grant_tokens(&req.grant_tokens)?;
        self.require_usable(&key)?;
        self.require_symmetric_encryption(&key, "GenerateDataKeyWithoutPlaintext", None)?;
        dry_run(req.dry_run)?;
        // The data key exists in host memory only between the token's generator and the
        // token's encryption, in a buffer wiped on drop; it is never returned or logged.
        let data_key: Zeroizing<Vec<u8>> = self.hsm.generate_random(length)?;
        let blob = self.seal(caller, &key, &context, &data_key)?;
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: Some(Blob(blob)),
            key_id: Some(self.arn_of(&key)),
            key_material_id: Some(key.current_material.to_hex()),
        })
    }

    pub fn generate_random(
        &self,
        caller: &Caller,
        req: GenerateRandomCommand,
    ) -> Result<GenerateRandomResponse, KmsError> {
        let n = req.number_of_bytes;
        if req.custom_key_store_id.is_some() {
            return Err(KmsError::UnsupportedOperation(
                "Custom key stores are not supported by this gateway.".into(),
            ));
        }
        reject_recipient(&req.recipient)?;
        self.authorize_account(caller, &Access::to("GenerateRandom"), &[])?;
        let bytes = self.hsm.generate_random(n as usize)?;
        Ok(GenerateRandomResponse {
            plaintext: Some(SecretBlob::new(bytes)),
            ..Default::default()
        })
    }

    /// Encrypts under the key's current material.
    pub(super) fn seal(
        &self,
        caller: &Caller,
        key: &Authorized<KeyRecord>,
        context: &BTreeMap<String, String>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let material = key.current_material;
        caller.note_material(&material);
        caller.note_context(context, false);
        ciphertext::seal(self.hsm(), &key.key_id, &material, context, plaintext)
    }

    /// Parses a symmetric ciphertext and checks it against the key the request names (if
    /// any), the key's state and usage, and the material it names.
    fn check_source<'a>(
        &self,
        caller: &Caller,
        blob: &'a [u8],
        named: Option<KeyRecord>,
        algorithm: Option<EncryptionAlgorithm>,
        context: &BTreeMap<String, String>,
        source_use: SourceUse,
    ) -> Result<SourceCiphertext<'a>, KmsError> {
        let (operation, action, destination) = match source_use {
            SourceUse::Decrypt => ("Decrypt", "Decrypt", None),
            SourceUse::ReEncryptTo(key_id) => ("ReEncrypt", "ReEncryptFrom", Some(key_id)),
        };
        if let Some(key) = &named {
            if key.key_spec == KeySpec::SymmetricDefault
                && algorithm.is_some_and(|a| a != SYMMETRIC_DEFAULT)
            {
                self.require_symmetric_encryption(key, operation, algorithm)?;
            }
        }
        let envelope = Envelope::parse(blob)?;
        let key = match named {
            Some(key) if key.key_id != envelope.key_id => return Err(KmsError::IncorrectKey),
            Some(key) => key,
            None => self
                .store
                .get_key(&envelope.key_id)?
                .ok_or(KmsError::InvalidCiphertext)?,
        };
        // A key of another account is usable here only if its policy lets the caller in.
        let access = Access {
            same_key: destination.map(|d| d == key.key_id),
            ..Access::encryption(action, &key, context, algorithm)
        };
        let key = self.authorize(caller, key, &access)?;
        self.require_usable(&key)?;
        self.require_symmetric_encryption(&key, operation, algorithm)?;
        if !self.material_belongs(&key, &envelope.material)? {
            return Err(KmsError::InvalidCiphertext);
        }
        caller.note_key(self.arn_of(&key));
        caller.note_material(&envelope.material);
        caller.note_context(context, false);
        Ok(SourceCiphertext {
            key,
            envelope,
            context: context.clone(),
        })
    }

    fn material_belongs(&self, key: &KeyRecord, material: &MaterialId) -> Result<bool, KmsError> {
        if key.current_material == *material {
            return Ok(true);
        }
        Ok(self.store.get_material(&key.key_id, material)?.is_some())
    }
}

/// Whether the key a Decrypt/ReEncrypt names takes the asymmetric path (bare OAEP). A key
/// that cannot decrypt at all (HMAC, signing) named against one of our symmetric ciphertexts,
/// which names its own key, takes the symmetric path instead: there AWS answers
/// IncorrectKeyException (recorded: test_error_messaging_for_invalid_keys /
/// decrypt-invalid-key-id, test_re_encrypt_incorrect_source_key / incorrect-source-key).
fn opens_bare_ciphertext(key: &KeyRecord, blob: &[u8]) -> bool {
    if key.key_spec == KeySpec::SymmetricDefault {
        return false;
    }
    key.key_usage == KeyUsage::EncryptDecrypt
        || Envelope::peek_key_id(blob).is_none_or(|named| named == key.key_id)
}

pub(super) fn context_of(context: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    context.clone().unwrap_or_default()
}

/// Exactly one of NumberOfBytes and KeySpec.
fn data_key_length(
    number_of_bytes: Option<i64>,
    key_spec: Option<DataKeySpec>,
) -> Result<usize, KmsError> {
    match (number_of_bytes, key_spec) {
        (Some(n), None) => Ok(n as usize),
        (None, Some(DataKeySpec::Aes256)) => Ok(32),
        (None, Some(DataKeySpec::Aes128)) => Ok(16),
        (Some(_), Some(_)) => Err(KmsError::Validation(
            "Please specify either number of bytes or key spec, but not both.".into(),
        )),
        (None, None) => Err(KmsError::Validation(
            "Please specify either number of bytes or key spec.".into(),
        )),
    }
}
