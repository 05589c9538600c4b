//! Sign, Verify, GenerateMac and VerifyMac.

use super::{optional_enum, required, required_enum, FromBody};
use crate::api::blob::{Blob, SecretBlob};
use crate::api::decode;
use crate::api::shapes::{GenerateMacRequest, SignRequest, VerifyMacRequest, VerifyRequest};
use crate::error::KmsError;
use crate::model::wire_enum;

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

fn message_type(value: Option<String>) -> Result<MessageType, KmsError> {
    Ok(optional_enum(value, "messageType")?.unwrap_or(MessageType::Raw))
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
            signing_algorithm: required_enum(signing_algorithm, "signingAlgorithm")?,
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
            mac_algorithm: required_enum(mac_algorithm, "macAlgorithm")?,
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
