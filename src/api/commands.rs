//! Typed commands: what decoding makes of a validated request for the operations whose core
//! takes one. Required members are not `Option` and algorithm members are enums, so the core
//! neither checks for an absent member nor parses a name again ("parse, don't validate").
//!
//! Done for the signing and MAC operations (Sign, Verify, GenerateMac, VerifyMac); the other
//! operations' cores still take their `XxxRequest`.

use super::blob::{Blob, SecretBlob};
use super::decode;
use super::shapes::{GenerateMacRequest, SignRequest, VerifyMacRequest, VerifyRequest};
use super::validate::{enum_set, null_member};
use crate::error::KmsError;
use crate::model::wire_enum;

/// A request body as the service core takes it: a validated request, or a command made of one.
pub trait FromBody: Sized {
    fn from_body(body: &[u8]) -> Result<Self, KmsError>;
}

wire_enum! {
    /// `SigningAlgorithmSpec`.
    SigningAlgorithm {
        RsassaPssSha256 = "RSASSA_PSS_SHA_256",
        RsassaPssSha384 = "RSASSA_PSS_SHA_384",
        RsassaPssSha512 = "RSASSA_PSS_SHA_512",
        RsassaPkcs1V15Sha256 = "RSASSA_PKCS1_V1_5_SHA_256",
        RsassaPkcs1V15Sha384 = "RSASSA_PKCS1_V1_5_SHA_384",
        RsassaPkcs1V15Sha512 = "RSASSA_PKCS1_V1_5_SHA_512",
        EcdsaSha256 = "ECDSA_SHA_256",
        EcdsaSha384 = "ECDSA_SHA_384",
        EcdsaSha512 = "ECDSA_SHA_512",
        Sm2Dsa = "SM2DSA",
        MlDsaShake256 = "ML_DSA_SHAKE_256",
        Ed25519Sha512 = "ED25519_SHA_512",
        Ed25519PhSha512 = "ED25519_PH_SHA_512",
    }
}

wire_enum! {
    /// `MacAlgorithmSpec`.
    MacAlgorithm {
        HmacSha224 = "HMAC_SHA_224",
        HmacSha256 = "HMAC_SHA_256",
        HmacSha384 = "HMAC_SHA_384",
        HmacSha512 = "HMAC_SHA_512",
    }
}

wire_enum! {
    /// `MessageType` of Sign and Verify.
    MessageType {
        Raw = "RAW",
        Digest = "DIGEST",
        ExternalMu = "EXTERNAL_MU",
    }
}

/// A required member: validation has refused a request without it, so this only keeps the
/// same answer should a command ever be made of an unvalidated request.
fn required<T>(value: Option<T>, path: &str) -> Result<T, KmsError> {
    value.ok_or_else(|| null_member(path))
}

/// A required enum member, with validation's message for a name outside the set.
fn required_enum<E>(
    value: Option<String>,
    path: &str,
    parse: fn(&str) -> Option<E>,
    names: &[&str],
) -> Result<E, KmsError> {
    let name = required(value, path)?;
    parse(&name).ok_or_else(|| KmsError::constraint(&name, path, &enum_set(names)))
}

fn message_type(value: Option<String>) -> Result<MessageType, KmsError> {
    match value {
        None => Ok(MessageType::Raw),
        Some(name) => MessageType::parse(&name).ok_or_else(|| {
            KmsError::constraint(&name, "messageType", &enum_set(MessageType::NAMES))
        }),
    }
}

/// What Sign and Verify share: the key, the message and how to sign it.
#[derive(Debug)]
pub struct Signing {
    pub key_id: String,
    pub message: SecretBlob,
    pub message_type: MessageType,
    pub signing_algorithm: SigningAlgorithm,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

impl Signing {
    fn of(
        key_id: Option<String>,
        message: Option<SecretBlob>,
        message_type: Option<String>,
        signing_algorithm: Option<String>,
        grant_tokens: Option<Vec<String>>,
        dry_run: Option<bool>,
    ) -> Result<Self, KmsError> {
        Ok(Signing {
            key_id: required(key_id, "keyId")?,
            message: required(message, "message")?,
            message_type: self::message_type(message_type)?,
            signing_algorithm: required_enum(
                signing_algorithm,
                "signingAlgorithm",
                SigningAlgorithm::parse,
                SigningAlgorithm::NAMES,
            )?,
            grant_tokens,
            dry_run,
        })
    }
}

/// Sign.
pub type SignCommand = Signing;

impl FromBody for Signing {
    fn from_body(body: &[u8]) -> Result<Self, KmsError> {
        let r: SignRequest = decode(body)?;
        Signing::of(
            r.key_id,
            r.message,
            r.message_type,
            r.signing_algorithm,
            r.grant_tokens,
            r.dry_run,
        )
    }
}

/// Verify: a signing request and the signature to check.
#[derive(Debug)]
pub struct VerifyCommand {
    pub signing: Signing,
    pub signature: Blob,
}

impl FromBody for VerifyCommand {
    fn from_body(body: &[u8]) -> Result<Self, KmsError> {
        let r: VerifyRequest = decode(body)?;
        Ok(VerifyCommand {
            signature: required(r.signature, "signature")?,
            signing: Signing::of(
                r.key_id,
                r.message,
                r.message_type,
                r.signing_algorithm,
                r.grant_tokens,
                r.dry_run,
            )?,
        })
    }
}

/// What GenerateMac and VerifyMac share: the key, the message and the algorithm.
#[derive(Debug)]
pub struct Mac {
    pub key_id: String,
    pub message: SecretBlob,
    pub mac_algorithm: MacAlgorithm,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

impl Mac {
    fn of(
        key_id: Option<String>,
        message: Option<SecretBlob>,
        mac_algorithm: Option<String>,
        grant_tokens: Option<Vec<String>>,
        dry_run: Option<bool>,
    ) -> Result<Self, KmsError> {
        Ok(Mac {
            message: required(message, "message")?,
            key_id: required(key_id, "keyId")?,
            mac_algorithm: required_enum(
                mac_algorithm,
                "macAlgorithm",
                MacAlgorithm::parse,
                MacAlgorithm::NAMES,
            )?,
            grant_tokens,
            dry_run,
        })
    }
}

/// GenerateMac.
pub type GenerateMacCommand = Mac;

impl FromBody for Mac {
    fn from_body(body: &[u8]) -> Result<Self, KmsError> {
        let r: GenerateMacRequest = decode(body)?;
        Mac::of(
            r.key_id,
            r.message,
            r.mac_algorithm,
            r.grant_tokens,
            r.dry_run,
        )
    }
}

/// VerifyMac: a MAC request and the MAC to check.
#[derive(Debug)]
pub struct VerifyMacCommand {
    pub mac: Mac,
    pub tag: Blob,
}

impl FromBody for VerifyMacCommand {
    fn from_body(body: &[u8]) -> Result<Self, KmsError> {
        let r: VerifyMacRequest = decode(body)?;
        Ok(VerifyMacCommand {
            tag: required(r.mac, "mac")?,
            mac: Mac::of(
                r.key_id,
                r.message,
                r.mac_algorithm,
                r.grant_tokens,
                r.dry_run,
            )?,
        })
    }
}
