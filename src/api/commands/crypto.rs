//! Encrypt, Decrypt, ReEncrypt, data keys, data key pairs, GenerateRandom and GetPublicKey.

use super::{
    command, enum_list, maybe_one_of, optional_enum, present, required, required_name, DataKeySpec,
    DryRunModifier, EncryptionAlgorithm, FromBody, MissingMember, WireName,
};
use crate::api::blob::{Blob, SecretBlob};
use crate::api::decode;
use crate::api::enums::DATA_KEY_PAIR_SPEC_VALUES;
use crate::api::shapes::*;
use crate::error::KmsError;
use crate::model::KeySpec;

command! {
    /// Encrypt.
    EncryptCommand from EncryptRequest {
        key_id: String = present("keyId"),
        plaintext: SecretBlob = present("plaintext"),
        encryption_context: Option<EncryptionContext>,
        grant_tokens: Option<Vec<String>>,
        encryption_algorithm: Option<EncryptionAlgorithm> = maybe_one_of("encryptionAlgorithm"),
        dry_run: Option<bool>,
    }
}

command! {
    /// Decrypt. The model leaves `CiphertextBlob` optional (Recipient dry runs); this
    /// gateway requires it, and says so before anything else.
    DecryptCommand from DecryptRequest {
        ciphertext_blob: Blob = present("ciphertextBlob"),
        encryption_context: Option<EncryptionContext>,
        grant_tokens: Option<Vec<String>>,
        key_id: Option<String>,
        encryption_algorithm: Option<EncryptionAlgorithm> = maybe_one_of("encryptionAlgorithm"),
        recipient: Option<RecipientInfo>,
        dry_run: Option<bool>,
        dry_run_modifiers: Option<Vec<DryRunModifier>> =
            |v| enum_list(v, "dryRunModifiers"),
    }
}

/// What a ReEncrypt re-encrypts.
#[derive(Debug)]
pub enum ReEncryptSource {
    /// A DryRun with `IGNORE_CIPHERTEXT`: only the named source key is authorized and
    /// checked; the ciphertext, if any, is not examined.
    AuthorizationOnly { source_key_id: String },
    /// A ciphertext, and the source key the request names, if any.
    Ciphertext {
        blob: Blob,
        source_key_id: Option<String>,
    },
    /// The member this path needs is absent (`sourceKeyId` for the authorization-only dry
    /// run, `ciphertextBlob` otherwise); AWS reports it once the destination is authorized.
    Missing(MissingMember),
}

/// ReEncrypt.
#[derive(Debug)]
pub struct ReEncryptCommand {
    pub source: ReEncryptSource,
    pub source_encryption_context: Option<EncryptionContext>,
    pub destination_key_id: String,
    pub destination_encryption_context: Option<EncryptionContext>,
    pub source_encryption_algorithm: Option<EncryptionAlgorithm>,
    pub destination_encryption_algorithm: Option<EncryptionAlgorithm>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

impl FromBody for ReEncryptCommand {
    fn from_body(body: &[u8]) -> Result<Self, KmsError> {
        let r: ReEncryptRequest = decode(body)?;
        let destination_key_id = required(r.destination_key_id, "destinationKeyId")?;
        let source_encryption_algorithm =
            optional_enum(r.source_encryption_algorithm, "sourceEncryptionAlgorithm")?;
        let destination_encryption_algorithm = optional_enum(
            r.destination_encryption_algorithm,
            "destinationEncryptionAlgorithm",
        )?;
        let modifiers: Vec<DryRunModifier> =
            enum_list(r.dry_run_modifiers, "dryRunModifiers")?.unwrap_or_default();
        let authorization_only =
            r.dry_run == Some(true) && modifiers.contains(&DryRunModifier::IgnoreCiphertext);
        let source = match (authorization_only, r.source_key_id, r.ciphertext_blob) {
            (true, Some(source_key_id), _) => ReEncryptSource::AuthorizationOnly { source_key_id },
            (true, None, _) => ReEncryptSource::Missing(MissingMember("sourceKeyId")),
            (false, source_key_id, Some(blob)) => ReEncryptSource::Ciphertext {
                blob,
                source_key_id,
            },
            (false, _, None) => ReEncryptSource::Missing(MissingMember("ciphertextBlob")),
        };
        Ok(ReEncryptCommand {
            source,
            source_encryption_context: r.source_encryption_context,
            destination_key_id,
            destination_encryption_context: r.destination_encryption_context,
            source_encryption_algorithm,
            destination_encryption_algorithm,
            grant_tokens: r.grant_tokens,
            dry_run: r.dry_run,
        })
    }
}

command! {
    /// GenerateDataKey. Exactly one of `NumberOfBytes` and `KeySpec` is a rule the core
    /// checks once the key is found, as AWS does.
    GenerateDataKeyCommand from GenerateDataKeyRequest {
        key_id: String = present("keyId"),
        encryption_context: Option<EncryptionContext>,
        number_of_bytes: Option<i64>,
        key_spec: Option<DataKeySpec> = maybe_one_of("keySpec"),
        grant_tokens: Option<Vec<String>>,
        recipient: Option<RecipientInfo>,
        dry_run: Option<bool>,
    }
}

command! {
    /// GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyWithoutPlaintextCommand from GenerateDataKeyWithoutPlaintextRequest {
        key_id: String = present("keyId"),
        encryption_context: Option<EncryptionContext>,
        key_spec: Option<DataKeySpec> = maybe_one_of("keySpec"),
        number_of_bytes: Option<i64>,
        grant_tokens: Option<Vec<String>>,
        dry_run: Option<bool>,
    }
}

/// `KeyPairSpec`: a spec this gateway makes pairs of (an RSA or ECC `KeySpec`) or not.
fn key_pair_spec(value: Option<String>) -> Result<WireName<KeySpec>, KmsError> {
    required_name(
        value,
        "keyPairSpec",
        DATA_KEY_PAIR_SPEC_VALUES,
        KeySpec::parse,
    )
}

command! {
    /// GenerateDataKeyPair.
    GenerateDataKeyPairCommand from GenerateDataKeyPairRequest {
        encryption_context: Option<EncryptionContext>,
        key_id: String = present("keyId"),
        key_pair_spec: WireName<KeySpec> = key_pair_spec,
        grant_tokens: Option<Vec<String>>,
        recipient: Option<RecipientInfo>,
        dry_run: Option<bool>,
    }
}

command! {
    /// GenerateDataKeyPairWithoutPlaintext.
    GenerateDataKeyPairWithoutPlaintextCommand from GenerateDataKeyPairWithoutPlaintextRequest {
        encryption_context: Option<EncryptionContext>,
        key_id: String = present("keyId"),
        key_pair_spec: WireName<KeySpec> = key_pair_spec,
        grant_tokens: Option<Vec<String>>,
        dry_run: Option<bool>,
    }
}

/// GenerateRandom's `NumberOfBytes`: optional in the model, required here with AWS's own
/// message.
fn number_of_bytes(value: Option<i64>) -> Result<i64, KmsError> {
    value.ok_or_else(|| KmsError::Validation("NumberOfBytes is required.".into()))
}

command! {
    /// GenerateRandom.
    GenerateRandomCommand from GenerateRandomRequest {
        number_of_bytes: i64 = number_of_bytes,
        custom_key_store_id: Option<String>,
        recipient: Option<RecipientInfo>,
    }
}

command! {
    /// GetPublicKey.
    GetPublicKeyCommand from GetPublicKeyRequest {
        key_id: String = present("keyId"),
        grant_tokens: Option<Vec<String>>,
    }
}
