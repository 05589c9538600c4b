//! Asymmetric and HMAC keys: key specs and their algorithms, GetPublicKey, RSA-OAEP
//! encryption, Sign/Verify, GenerateMac/VerifyMac and data key pairs.
//!
//! Every private-key and HMAC operation runs in the token. Digests for signatures are taken
//! here (the token signs the digest); ECDSA signatures are DER on the wire and raw r‖s in
//! the token. Where the token lacks a mechanism (SoftHSM 2.6.1 has no OAEP with SHA-256),
//! the answer names it: nothing falls back to host-memory cryptography on private material.

use crate::api::*;
use crate::error::KmsError;
use crate::hsm::{Curve, MacHash, OaepHash, PairKind, PairUse, SignMechanism};
use crate::model::{KeyId, KeyRecord, KeySpec, KeyUsage, MaterialId};

use super::access::{Access, Authorized};
use super::ciphertext;
use super::crypto::context_of;
use super::keyformat::{self, SigHash};
use super::provider_errors::on_client_ciphertext;
use super::{dry_run, reject_recipient, Caller, KmsService};

const RSA_SIGNING_ALGORITHMS: &[SigningAlgorithm] = &[
    SigningAlgorithm::RsassaPkcs1V15Sha256,
    SigningAlgorithm::RsassaPkcs1V15Sha384,
    SigningAlgorithm::RsassaPkcs1V15Sha512,
    SigningAlgorithm::RsassaPssSha256,
    SigningAlgorithm::RsassaPssSha384,
    SigningAlgorithm::RsassaPssSha512,
];

/// What a key spec is, in the terms the HSM layer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Symmetric,
    Rsa { bits: u32 },
    Ecc(Curve),
    Hmac(MacHash),
}

impl KeyKind {
    /// The kind of a key spec (or of a `KeyPairSpec` of the same name).
    pub fn of(spec: KeySpec) -> KeyKind {
        match spec {
            KeySpec::SymmetricDefault => KeyKind::Symmetric,
            KeySpec::Rsa2048 => KeyKind::Rsa { bits: 2048 },
            KeySpec::Rsa3072 => KeyKind::Rsa { bits: 3072 },
            KeySpec::Rsa4096 => KeyKind::Rsa { bits: 4096 },
            KeySpec::EccNistP256 => KeyKind::Ecc(Curve::P256),
            KeySpec::EccNistP384 => KeyKind::Ecc(Curve::P384),
            KeySpec::EccNistP521 => KeyKind::Ecc(Curve::P521),
            KeySpec::EccSecgP256k1 => KeyKind::Ecc(Curve::Secp256k1),
            KeySpec::Hmac224 => KeyKind::Hmac(MacHash::Sha224),
            KeySpec::Hmac256 => KeyKind::Hmac(MacHash::Sha256),
            KeySpec::Hmac384 => KeyKind::Hmac(MacHash::Sha384),
            KeySpec::Hmac512 => KeyKind::Hmac(MacHash::Sha512),
        }
    }

    /// The key usages AWS allows for the spec (KEY_AGREEMENT is not offered here).
    pub fn allows_usage(self, usage: KeyUsage) -> bool {
        use KeyUsage::*;
        match self {
            KeyKind::Symmetric => usage == EncryptDecrypt,
            KeyKind::Rsa { .. } => usage == EncryptDecrypt || usage == SignVerify,
            KeyKind::Ecc(_) => usage == SignVerify,
            KeyKind::Hmac(_) => usage == GenerateVerifyMac,
        }
    }

    fn pair(self) -> Option<PairKind> {
        match self {
            KeyKind::Rsa { bits } => Some(PairKind::Rsa { bits }),
            KeyKind::Ecc(curve) => Some(PairKind::Ec(curve)),
            KeyKind::Symmetric | KeyKind::Hmac(_) => None,
        }
    }
}

/// The kind of a stored key.
pub fn kind_of(key: &KeyRecord) -> KeyKind {
    KeyKind::of(key.key_spec)
}

/// `EncryptionAlgorithms` of a key, as DescribeKey and GetPublicKey show them.
pub fn encryption_algorithms(key: &KeyRecord) -> Option<Vec<String>> {
    if key.key_usage != KeyUsage::EncryptDecrypt {
        return None;
    }
    let algorithms: &[EncryptionAlgorithm] = match kind_of(key) {
        KeyKind::Symmetric => &[EncryptionAlgorithm::SymmetricDefault],
        KeyKind::Rsa { .. } => &[
            EncryptionAlgorithm::RsaesOaepSha1,
            EncryptionAlgorithm::RsaesOaepSha256,
        ],
        _ => return None,
    };
    Some(algorithms.iter().map(|a| a.as_str().into()).collect())
}

/// `SigningAlgorithms` of a key.
pub fn signing_algorithms(key: &KeyRecord) -> Option<Vec<String>> {
    if key.key_usage != KeyUsage::SignVerify {
        return None;
    }
    let algorithms: Vec<SigningAlgorithm> = match kind_of(key) {
        KeyKind::Rsa { .. } => RSA_SIGNING_ALGORITHMS.to_vec(),
        KeyKind::Ecc(curve) => vec![ecdsa_algorithm(curve)],
        _ => return None,
    };
    Some(algorithms.iter().map(|a| a.as_str().into()).collect())
}

/// `MacAlgorithms` of a key.
pub fn mac_algorithms(key: &KeyRecord) -> Option<Vec<String>> {
    match kind_of(key) {
        KeyKind::Hmac(hash) => Some(vec![mac_algorithm(hash).as_str().into()]),
        _ => None,
    }
}

/// The one ECDSA algorithm AWS offers per curve.
fn ecdsa_algorithm(curve: Curve) -> SigningAlgorithm {
    match curve {
        Curve::P256 | Curve::Secp256k1 => SigningAlgorithm::EcdsaSha256,
        Curve::P384 => SigningAlgorithm::EcdsaSha384,
        Curve::P521 => SigningAlgorithm::EcdsaSha512,
    }
}

fn mac_algorithm(hash: MacHash) -> MacAlgorithm {
    match hash {
        MacHash::Sha224 => MacAlgorithm::HmacSha224,
        MacHash::Sha256 => MacAlgorithm::HmacSha256,
        MacHash::Sha384 => MacAlgorithm::HmacSha384,
        MacHash::Sha512 => MacAlgorithm::HmacSha512,
    }
}

pub fn oaep_algorithm(hash: OaepHash) -> EncryptionAlgorithm {
    match hash {
        OaepHash::Sha1 => EncryptionAlgorithm::RsaesOaepSha1,
        OaepHash::Sha256 => EncryptionAlgorithm::RsaesOaepSha256,
    }
}

/// A signing algorithm's private-key mechanism and hash; `None` for one this gateway lacks.
fn signing_mechanism(algorithm: SigningAlgorithm) -> Option<(SignMechanism, SigHash)> {
    use SignMechanism::*;
    use SigningAlgorithm::*;
    Some(match algorithm {
        RsassaPssSha256 => (RsaPss, SigHash::Sha256),
        RsassaPssSha384 => (RsaPss, SigHash::Sha384),
        RsassaPssSha512 => (RsaPss, SigHash::Sha512),
        RsassaPkcs1V15Sha256 => (RsaPkcs1, SigHash::Sha256),
        RsassaPkcs1V15Sha384 => (RsaPkcs1, SigHash::Sha384),
        RsassaPkcs1V15Sha512 => (RsaPkcs1, SigHash::Sha512),
        EcdsaSha256 => (Ecdsa, SigHash::Sha256),
        EcdsaSha384 => (Ecdsa, SigHash::Sha384),
        EcdsaSha512 => (Ecdsa, SigHash::Sha512),
        Sm2Dsa | MlDsaShake256 | Ed25519Sha512 | Ed25519PhSha512 => return None,
    })
}

/// Asymmetric algorithms take no encryption context (AWS: "You cannot specify an encryption
/// context in a cryptographic operation with an asymmetric KMS key"): refuse one rather than
/// ignore it, so nobody believes it is bound to the ciphertext. AWS's exact answer is not on
/// record.
pub fn require_no_context(
    context: &Option<std::collections::BTreeMap<String, String>>,
    field: &str,
) -> Result<(), KmsError> {
    match context {
        Some(pairs) if !pairs.is_empty() => Err(KmsError::Validation(format!(
            "{field} is not supported with asymmetric KMS keys."
        ))),
        _ => Ok(()),
    }
}

/// How an encryption key encrypts, once key and algorithm are checked against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    Symmetric,
    Rsa { bits: u32, hash: OaepHash },
}

/// The longest plaintext RSAES-OAEP takes: k - 2·hLen - 2 (RFC 8017 §7.1.1).
pub fn rsa_max_plaintext(bits: u32, hash: OaepHash) -> usize {
    let h_len = match hash {
        OaepHash::Sha1 => 20,
        OaepHash::Sha256 => 32,
    };
    (bits as usize / 8).saturating_sub(2 * h_len + 2)
}

impl KmsService {
    /// The key must be an encryption key and `algorithm` (default SYMMETRIC_DEFAULT) one of
    /// its algorithms; AWS's InvalidKeyUsageException messages otherwise.
    pub(super) fn require_encryption(
        &self,
        key: &KeyRecord,
        operation: &str,
        algorithm: Option<EncryptionAlgorithm>,
    ) -> Result<Encryption, KmsError> {
        self.require_usage(key, KeyUsage::EncryptDecrypt, operation)?;
        let algorithm = algorithm.unwrap_or(EncryptionAlgorithm::SymmetricDefault);
        let incompatible = || {
            KmsError::InvalidKeyUsage(format!(
                "Algorithm {algorithm} is incompatible with key spec {}.",
                key.key_spec
            ))
        };
        match (kind_of(key), algorithm) {
            (KeyKind::Symmetric, EncryptionAlgorithm::SymmetricDefault) => {
                Ok(Encryption::Symmetric)
            }
            (KeyKind::Rsa { bits }, EncryptionAlgorithm::RsaesOaepSha1) => Ok(Encryption::Rsa {
                bits,
                hash: OaepHash::Sha1,
            }),
            (KeyKind::Rsa { bits }, EncryptionAlgorithm::RsaesOaepSha256) => Ok(Encryption::Rsa {
                bits,
                hash: OaepHash::Sha256,
            }),
            _ => Err(incompatible()),
        }
    }

    /// `<arn> key usage is <usage> which is not valid for <operation>.`
    pub(super) fn require_usage(
        &self,
        key: &KeyRecord,
        usage: KeyUsage,
        operation: &str,
    ) -> Result<(), KmsError> {
        if key.key_usage == usage {
            return Ok(());
        }
        Err(KmsError::InvalidKeyUsage(format!(
            "{} key usage is {} which is not valid for {operation}.",
            self.arn_of(key),
            key.key_usage
        )))
    }

    /// The token must do OAEP with `hash` (measured at start-up).
    pub(super) fn require_oaep(&self, hash: OaepHash) -> Result<(), KmsError> {
        if self.hsm.capabilities().asymmetric.oaep(hash) {
            return Ok(());
        }
        Err(KmsError::MechanismUnsupported(format!(
            "{}, which {} needs",
            hash.describe(),
            oaep_algorithm(hash)
        )))
    }

    /// AWS's ValidationException for a plaintext too long for the key and algorithm.
    pub(super) fn check_rsa_plaintext(
        &self,
        key: &KeyRecord,
        bits: u32,
        hash: OaepHash,
        len: usize,
    ) -> Result<(), KmsError> {
        let max = rsa_max_plaintext(bits, hash);
        if len > max {
            return Err(self.rsa_too_large(key, hash, max));
        }
        Ok(())
    }

    /// Checks an RSA ciphertext against the key that must decrypt it: state, usage,
    /// algorithm, length and the token's OAEP support.
    pub(super) fn check_rsa_source(
        &self,
        key: &Authorized<KeyRecord>,
        ciphertext: &[u8],
        algorithm: Option<EncryptionAlgorithm>,
        operation: &str,
    ) -> Result<OaepHash, KmsError> {
        self.require_usable(key)?;
        let Encryption::Rsa { bits, hash } = self.require_encryption(key, operation, algorithm)?
        else {
            return Err(KmsError::Internal(
                "an RSA key encrypts symmetrically".into(),
            ));
        };
        if ciphertext.len() != bits as usize / 8 {
            return Err(KmsError::InvalidCiphertext);
        }
        self.require_oaep(hash)?;
        Ok(hash)
    }

    /// The error for a ReEncrypt direction that cannot run inside this token: it names the
    /// mechanism the token lacks.
    pub(super) fn in_token_gap(&self, mechanism: &str, what: &str) -> KmsError {
        KmsError::MechanismUnsupported(format!(
            "{mechanism}, which re-encrypting {what} inside the HSM needs"
        ))
    }

    /// ReEncrypt of an RSA ciphertext (the caller named its key), in the token: OAEP unwrap
    /// into a sensitive session secret, then OAEP wrap under an RSA destination, or GCM wrap
    /// into a new symmetric ciphertext (`CrossoverPrimitives::rsa_to_sealed`).
    pub(super) fn re_encrypt_from_rsa(
        &self,
        source: &Authorized<KeyRecord>,
        blob: &[u8],
        destination: &Authorized<KeyRecord>,
        req: &ReEncryptCommand,
    ) -> Result<ReEncryptResponse, KmsError> {
        let source_hash =
            self.check_rsa_source(source, blob, req.source_encryption_algorithm, "ReEncrypt")?;
        require_no_context(&req.source_encryption_context, "SourceEncryptionContext")?;
        self.require_usable(destination)?;
        let encryption = self.require_encryption(
            destination,
            "ReEncrypt",
            req.destination_encryption_algorithm,
        )?;
        let Encryption::Rsa { bits, hash } = encryption else {
            return self.re_encrypt_rsa_to_symmetric(source, source_hash, blob, destination, req);
        };
        require_no_context(
            &req.destination_encryption_context,
            "DestinationEncryptionContext",
        )?;
        self.require_oaep(hash)?;
        let limit = rsa_max_plaintext(bits, hash);
        let Some(ciphertext) = self
            .hsm
            .rsa_rewrap(
                &source.current_material,
                source_hash,
                blob,
                &destination.current_material,
                hash,
                limit,
            )
            .map_err(on_client_ciphertext)?
        else {
            return Err(self.rsa_too_large(destination, hash, limit));
        };
        dry_run(req.dry_run)?;
        Ok(ReEncryptResponse {
            ciphertext_blob: Some(Blob(ciphertext)),
            source_key_id: Some(self.arn_of(source)),
            key_id: Some(self.arn_of(destination)),
            source_encryption_algorithm: Some(oaep_algorithm(source_hash).as_str().into()),
            destination_encryption_algorithm: Some(oaep_algorithm(hash).as_str().into()),
            source_key_material_id: None,
            destination_key_material_id: None,
        })
    }

    /// RSA → symmetric: the symmetric payload is GCM under a data key, so moving the secret
    /// into it in the token takes GCM as a wrapping mechanism.
    fn re_encrypt_rsa_to_symmetric(
        &self,
        source: &Authorized<KeyRecord>,
        source_hash: OaepHash,
        blob: &[u8],
        destination: &Authorized<KeyRecord>,
        req: &ReEncryptCommand,
    ) -> Result<ReEncryptResponse, KmsError> {
        if !self.hsm.capabilities().asymmetric.gcm_wrap {
            return Err(self.in_token_gap(
                "CKM_AES_GCM with C_WrapKey",
                "an RSA ciphertext under a symmetric key",
            ));
        }
        let context = context_of(&req.destination_encryption_context);
        let material = destination.current_material;
        let plan = ciphertext::Plan::new(self.hsm(), &destination.key_id, &material, &context)?;
        let ciphertext = ciphertext::seal_from_rsa(
            self.hsm(),
            &source.current_material,
            source_hash,
            blob,
            &plan,
        )?;
        dry_run(req.dry_run)?;
        Ok(ReEncryptResponse {
            ciphertext_blob: Some(Blob(ciphertext)),
            source_key_id: Some(self.arn_of(source)),
            key_id: Some(self.arn_of(destination)),
            source_encryption_algorithm: Some(oaep_algorithm(source_hash).as_str().into()),
            destination_encryption_algorithm: Some(
                EncryptionAlgorithm::SymmetricDefault.as_str().into(),
            ),
            source_key_material_id: None,
            destination_key_material_id: Some(material.to_hex()),
        })
    }

    fn rsa_too_large(&self, key: &KeyRecord, hash: OaepHash, max: usize) -> KmsError {
        KmsError::Validation(format!(
            "Algorithm {} and key spec {} cannot encrypt data larger than {max} bytes.",
            oaep_algorithm(hash),
            key.key_spec
        ))
    }

    /// Generates the HSM objects of a new key's material.
    pub(super) fn create_key_material(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        kind: KeyKind,
        usage: KeyUsage,
    ) -> Result<(), KmsError> {
        let made = match kind {
            KeyKind::Symmetric => self.hsm.create_material(key_id, material),
            KeyKind::Hmac(hash) => self
                .hsm
                .create_hmac_key(key_id, material, hmac_key_len(hash)),
            KeyKind::Rsa { .. } | KeyKind::Ecc(_) => {
                let pair = kind
                    .pair()
                    .ok_or_else(|| KmsError::Internal("not a key pair".into()))?;
                let usage = if usage == KeyUsage::EncryptDecrypt {
                    PairUse::EncryptDecrypt
                } else {
                    PairUse::SignVerify
                };
                self.hsm.create_key_pair(key_id, material, pair, usage)
            }
        };
        Ok(made?)
    }

    // === GetPublicKey ===

    pub fn get_public_key(
        &self,
        caller: &Caller,
        req: GetPublicKeyCommand,
    ) -> Result<GetPublicKeyResponse, KmsError> {
        let key = self.resolve(caller, &req.key_id, &Access::to("GetPublicKey"))?;
        self.check_grant_tokens(&req.grant_tokens)?;
        self.require_usable(&key)?;
        if kind_of(&key).pair().is_none() {
            // AWS's exact text here is not on record; this names the reason.
            return Err(KmsError::UnsupportedOperation(format!(
                "{} has key spec {}, which has no public key.",
                self.arn_of(&key),
                key.key_spec
            )));
        }
        let public = self.hsm.public_key(&key.current_material)?;
        Ok(GetPublicKeyResponse {
            key_id: Some(self.arn_of(&key)),
            public_key: Some(Blob(keyformat::spki(&public)?)),
            customer_master_key_spec: Some(key.key_spec.as_str().into()),
            key_spec: Some(key.key_spec.as_str().into()),
            key_usage: Some(key.key_usage.as_str().into()),
            encryption_algorithms: encryption_algorithms(&key),
            signing_algorithms: signing_algorithms(&key),
            key_agreement_algorithms: None,
        })
    }

    // === Sign and Verify ===

    /// Checks a signing request and returns what the token must sign or verify.
    fn prepare_signature(
        &self,
        key: &Authorized<KeyRecord>,
        operation: &str,
        algorithm: SigningAlgorithm,
        message_type: MessageType,
        message: &[u8],
    ) -> Result<(SignMechanism, Vec<u8>, Option<Curve>), KmsError> {
        self.require_usable(key)?;
        self.require_usage(key, KeyUsage::SignVerify, operation)?;
        let incompatible = || {
            KmsError::InvalidKeyUsage(format!(
                "Algorithm {algorithm} is incompatible with key spec {}.",
                key.key_spec
            ))
        };
        let (mechanism, hash) = signing_mechanism(algorithm).ok_or_else(incompatible)?;
        let curve = match (kind_of(key), mechanism) {
            (KeyKind::Rsa { .. }, SignMechanism::RsaPss | SignMechanism::RsaPkcs1) => None,
            (KeyKind::Ecc(curve), SignMechanism::Ecdsa) if ecdsa_algorithm(curve) == algorithm => {
                Some(curve)
            }
            _ => return Err(incompatible()),
        };
        let digest = match message_type {
            MessageType::Raw => hash.digest(message),
            MessageType::Digest if message.len() == hash.digest_len() => message.to_vec(),
            MessageType::Digest => {
                return Err(KmsError::Validation(format!(
                    "Digest is invalid length for algorithm {algorithm}."
                )))
            }
            other @ MessageType::ExternalMu => {
                return Err(KmsError::InvalidKeyUsage(format!(
                    "MessageType {other} is incompatible with key spec {}.",
                    key.key_spec
                )))
            }
        };
        let data = match mechanism {
            SignMechanism::RsaPkcs1 => hash.digest_info(&digest),
            SignMechanism::RsaPss | SignMechanism::Ecdsa => digest,
        };
        Ok((mechanism, data, curve))
    }

    pub fn sign(&self, caller: &Caller, req: SignCommand) -> Result<SignResponse, KmsError> {
        let algorithm = req.signing_algorithm;
        let key = self.resolve(
            caller,
            &req.key_id,
            &Access {
                signing_algorithm: Some(algorithm.as_str()),
                ..Access::to("Sign")
            },
        )?;
        self.check_grant_tokens(&req.grant_tokens)?;
        let (mechanism, data, curve) = self.prepare_signature(
            &key,
            "Sign",
            algorithm,
            req.message_type,
            req.message.expose(),
        )?;
        dry_run(req.dry_run)?;
        let raw = self
            .hsm
            .sign_digest(&key.current_material, mechanism, &data)?;
        let signature = match curve {
            Some(_) => keyformat::ecdsa_to_der(&raw)?,
            None => raw,
        };
        Ok(SignResponse {
            key_id: Some(self.arn_of(&key)),
            signature: Some(Blob(signature)),
            signing_algorithm: Some(algorithm.as_str().into()),
        })
    }

    pub fn verify(
        &self,
        caller: &Caller,
        command: VerifyCommand,
    ) -> Result<VerifyResponse, KmsError> {
        let VerifyCommand {
            signing: req,
            signature,
        } = command;
        let algorithm = req.signing_algorithm;
        let key = self.resolve(
            caller,
            &req.key_id,
            &Access {
                signing_algorithm: Some(algorithm.as_str()),
                ..Access::to("Verify")
            },
        )?;
        self.check_grant_tokens(&req.grant_tokens)?;
        let (mechanism, data, curve) = self.prepare_signature(
            &key,
            "Verify",
            algorithm,
            req.message_type,
            req.message.expose(),
        )?;
        dry_run(req.dry_run)?;
        let raw = match curve {
            Some(curve) => keyformat::ecdsa_from_der(signature.as_bytes(), curve)
                .ok_or(KmsError::KmsInvalidSignature)?,
            None => signature.as_bytes().to_vec(),
        };
        if !self
            .hsm
            .verify_digest(&key.current_material, mechanism, &data, &raw)?
        {
            return Err(KmsError::KmsInvalidSignature);
        }
        Ok(VerifyResponse {
            key_id: Some(self.arn_of(&key)),
            signature_valid: Some(true),
            signing_algorithm: Some(algorithm.as_str().into()),
        })
    }

    // === MACs ===

    fn prepare_mac(
        &self,
        key: &Authorized<KeyRecord>,
        operation: &str,
        algorithm: MacAlgorithm,
    ) -> Result<MacHash, KmsError> {
        self.require_usable(key)?;
        self.require_usage(key, KeyUsage::GenerateVerifyMac, operation)?;
        match kind_of(key) {
            KeyKind::Hmac(hash) if mac_algorithm(hash) == algorithm => Ok(hash),
            _ => Err(KmsError::InvalidKeyUsage(format!(
                "Algorithm {algorithm} is incompatible with key spec {}.",
                key.key_spec
            ))),
        }
    }

    pub fn generate_mac(
        &self,
        caller: &Caller,
        req: GenerateMacCommand,
    ) -> Result<GenerateMacResponse, KmsError> {
        let algorithm = req.mac_algorithm;
        let key = self.resolve(
            caller,
            &req.key_id,
            &Access {
                mac_algorithm: Some(algorithm.as_str()),
                ..Access::to("GenerateMac")
            },
        )?;
        let message = &req.message;
        self.check_grant_tokens(&req.grant_tokens)?;
        let hash = self.prepare_mac(&key, "GenerateMac", algorithm)?;
        dry_run(req.dry_run)?;
        let mac = self
            .hsm
            .hmac(&key.current_material, hash, message.expose())?;
        Ok(GenerateMacResponse {
            mac: Some(Blob(mac)),
            mac_algorithm: Some(algorithm.as_str().into()),
            key_id: Some(self.arn_of(&key)),
        })
    }

    pub fn verify_mac(
        &self,
        caller: &Caller,
        command: VerifyMacCommand,
    ) -> Result<VerifyMacResponse, KmsError> {
        let VerifyMacCommand { mac: req, tag: mac } = command;
        let algorithm = req.mac_algorithm;
        let key = self.resolve(
            caller,
            &req.key_id,
            &Access {
                mac_algorithm: Some(algorithm.as_str()),
                ..Access::to("VerifyMac")
            },
        )?;
        let message = &req.message;
        self.check_grant_tokens(&req.grant_tokens)?;
        let hash = self.prepare_mac(&key, "VerifyMac", algorithm)?;
        dry_run(req.dry_run)?;
        if !self.hsm.hmac_verify(
            &key.current_material,
            hash,
            message.expose(),
            mac.as_bytes(),
        )? {
            return Err(KmsError::KmsInvalidMac);
        }
        Ok(VerifyMacResponse {
            key_id: Some(self.arn_of(&key)),
            mac_valid: Some(true),
            mac_algorithm: Some(algorithm.as_str().into()),
        })
    }

    // === data key pairs ===

    /// The pair made in the token, as SPKI and PKCS #8, the latter sealed under `key`.
    fn data_key_pair(
        &self,
        caller: &Caller,
        key: &Authorized<KeyRecord>,
        pair_spec: &WireName<KeySpec>,
        context: &std::collections::BTreeMap<String, String>,
        dry: Option<bool>,
        operation: &str,
    ) -> Result<DataKeyPair, KmsError> {
        self.require_usable(key)?;
        self.require_symmetric_encryption(key, operation, None)?;
        let supported = match pair_spec {
            WireName::Supported(spec) => KeyKind::of(*spec).pair(),
            WireName::Unsupported(_) => None,
        };
        let pair = supported.ok_or_else(|| {
            KmsError::UnsupportedOperation(format!(
                "KeyPairSpec {pair_spec} is not supported by this gateway."
            ))
        })?;
        dry_run(dry)?;
        let (public, private) = self.hsm.generate_exportable_pair(pair)?;
        let curve = match pair {
            PairKind::Ec(curve) => Some(curve),
            PairKind::Rsa { .. } => None,
        };
        let private_der = keyformat::pkcs8(&private, &public, curve)?;
        drop(private);
        let public_der = keyformat::spki(&public)?;
        let blob = self.seal(caller, key, context, &private_der)?;
        Ok(DataKeyPair {
            blob,
            private: private_der,
            public: public_der,
        })
    }

    pub fn generate_data_key_pair(
        &self,
        caller: &Caller,
        req: GenerateDataKeyPairCommand,
    ) -> Result<GenerateDataKeyPairResponse, KmsError> {
        let context = req.encryption_context.clone().unwrap_or_default();
        let key = self.resolve(
            caller,
            &req.key_id,
            &Access {
                context: Some(&context),
                ..Access::to("GenerateDataKeyPair")
            },
        )?;
        let pair_spec = &req.key_pair_spec;
        self.check_grant_tokens(&req.grant_tokens)?;
        reject_recipient(&req.recipient)?;
        let pair = self.data_key_pair(
            caller,
            &key,
            pair_spec,
            &context,
            req.dry_run,
            "GenerateDataKeyPair",
        )?;
        Ok(GenerateDataKeyPairResponse {
            private_key_ciphertext_blob: Some(Blob(pair.blob)),
            private_key_plaintext: Some(SecretBlob::new(pair.private)),
            public_key: Some(Blob(pair.public)),
            key_id: Some(self.arn_of(&key)),
            key_pair_spec: Some(pair_spec.to_string()),
            ciphertext_for_recipient: None,
            key_material_id: Some(key.current_material.to_hex()),
        })
    }

    pub fn generate_data_key_pair_without_plaintext(
        &self,
        caller: &Caller,
        req: GenerateDataKeyPairWithoutPlaintextCommand,
    ) -> Result<GenerateDataKeyPairWithoutPlaintextResponse, KmsError> {
        let context = req.encryption_context.clone().unwrap_or_default();
        let key = self.resolve(
            caller,
            &req.key_id,
            &Access {
                context: Some(&context),
                ..Access::to("GenerateDataKeyPairWithoutPlaintext")
            },
        )?;
        let pair_spec = &req.key_pair_spec;
        self.check_grant_tokens(&req.grant_tokens)?;
        // The private key is in host memory only between the token and the token's
        // encryption, in buffers wiped on drop; it is never returned or logged.
        let pair = self.data_key_pair(
            caller,
            &key,
            pair_spec,
            &context,
            req.dry_run,
            "GenerateDataKeyPairWithoutPlaintext",
        )?;
        Ok(GenerateDataKeyPairWithoutPlaintextResponse {
            private_key_ciphertext_blob: Some(Blob(pair.blob)),
            public_key: Some(Blob(pair.public)),
            key_id: Some(self.arn_of(&key)),
            key_pair_spec: Some(pair_spec.to_string()),
            key_material_id: Some(key.current_material.to_hex()),
        })
    }
}

/// A data key pair: the sealed PKCS #8 private key, the plaintext PKCS #8 (wiped on drop)
/// and the SPKI public key.
struct DataKeyPair {
    blob: Vec<u8>,
    private: zeroize::Zeroizing<Vec<u8>>,
    public: Vec<u8>,
}

/// HMAC key length per spec: as long as the hash output, as AWS makes them.
fn hmac_key_len(hash: MacHash) -> usize {
    match hash {
        MacHash::Sha224 => 28,
        MacHash::Sha256 => 32,
        MacHash::Sha384 => 48,
        MacHash::Sha512 => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oaep_limits_match_aws() {
        for (bits, hash, max) in [
            (2048, OaepHash::Sha1, 214),
            (2048, OaepHash::Sha256, 190),
            (3072, OaepHash::Sha1, 342),
            (3072, OaepHash::Sha256, 318),
            (4096, OaepHash::Sha1, 470),
            (4096, OaepHash::Sha256, 446),
        ] {
            assert_eq!(rsa_max_plaintext(bits, hash), max);
        }
    }

    #[test]
    fn signing_algorithms_parse() {
        let mechanism = |name| signing_mechanism(SigningAlgorithm::parse(name).expect("a name"));
        assert_eq!(
            mechanism("RSASSA_PKCS1_V1_5_SHA_384"),
            Some((SignMechanism::RsaPkcs1, SigHash::Sha384))
        );
        assert_eq!(
            mechanism("ECDSA_SHA_512"),
            Some((SignMechanism::Ecdsa, SigHash::Sha512))
        );
        assert_eq!(mechanism("SM2DSA"), None);
        assert_eq!(mechanism("ED25519_SHA_512"), None);
    }

    #[test]
    fn spec_usage_matrix() {
        use KeyUsage::*;
        let kind = |spec| KeyKind::of(KeySpec::parse(spec).expect("a spec the gateway makes"));
        let rsa = kind("RSA_3072");
        assert!(rsa.allows_usage(EncryptDecrypt) && rsa.allows_usage(SignVerify));
        assert!(!rsa.allows_usage(GenerateVerifyMac));
        let ecc = kind("ECC_SECG_P256K1");
        assert!(ecc.allows_usage(SignVerify) && !ecc.allows_usage(EncryptDecrypt));
        let hmac = kind("HMAC_224");
        assert!(hmac.allows_usage(GenerateVerifyMac) && !hmac.allows_usage(SignVerify));
        assert!(!kind("ECC_NIST_P256").allows_usage(KeyAgreement));
        assert_eq!(KeySpec::parse("SM2"), None);
    }
}
