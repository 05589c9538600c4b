//! Key pairs and HMAC keys in the token: creation, public-key export, RSA-OAEP, signatures,
//! MACs and exportable data key pairs.
//!
//! Every private key and HMAC key of a KMS key is a token object that is sensitive and
//! non-extractable and can do only what its key usage needs (decrypt+unwrap, or sign). The
//! public half can only encrypt+wrap or verify. Both halves carry the material id as `CKA_ID`
//! and the `p11kms:` label, so reconciliation and deletion treat a pair as one material.
//!
//! Digests for signatures are computed by the caller: tokens (SoftHSM among them) offer ECDSA
//! only over a digest, and hashing a 4 KB message in the host costs less than a streamed
//! `C_SignUpdate`. The private-key operation on the digest always runs in the token.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroizing;

use super::provider::AsymmetricPrimitives;
use super::{
    bad_data, Half, Hsm, HsmError, Materials, OnLostSession, OpError, ProviderError, Scope,
    SessionObject, TimedSession, TokenMaterials, OBJECT_LABEL_PREFIX, RSA_OUTPUT_BOUND,
};
use crate::model::{KeyId, MaterialId};

/// The public exponent of every RSA key the gateway makes (F4, as AWS uses).
const RSA_PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];
/// Key size of the throwaway pair the start-up probe uses: big enough for OAEP-SHA-256.
const PROBE_RSA_BITS: u64 = 1024;

/// Hash functions of the signing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigHash {
    Sha256,
    Sha384,
    Sha512,
}

impl SigHash {
    /// Bytes of the digest.
    pub fn digest_len(self) -> usize {
        match self {
            SigHash::Sha256 => 32,
            SigHash::Sha384 => 48,
            SigHash::Sha512 => 64,
        }
    }

    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            SigHash::Sha256 => sha2::Sha256::digest(message).to_vec(),
            SigHash::Sha384 => sha2::Sha384::digest(message).to_vec(),
            SigHash::Sha512 => sha2::Sha512::digest(message).to_vec(),
        }
    }

    /// PKCS #1 v1.5 DigestInfo prefix (RFC 8017 §9.2 note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            SigHash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            SigHash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            SigHash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    /// The DER DigestInfo that `CKM_RSA_PKCS` signs for PKCS #1 v1.5.
    pub fn digest_info(self, digest: &[u8]) -> Vec<u8> {
        let mut out = self.digest_info_prefix().to_vec();
        out.extend_from_slice(digest);
        out
    }
}

/// Elliptic curves of KMS key specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
    Secp256k1,
}

impl Curve {
    /// DER of the curve's named OID: the `CKA_EC_PARAMS` value and the SPKI parameter.
    pub fn params_der(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
            Curve::Secp256k1 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
        }
    }

    pub const ALL: [Curve; 4] = [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1];

    /// The curve's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::Secp256k1 => "secp256k1",
        }
    }

    fn index(self) -> usize {
        match self {
            Curve::P256 => 0,
            Curve::P384 => 1,
            Curve::P521 => 2,
            Curve::Secp256k1 => 3,
        }
    }

    /// Bytes of a field element (and of each half of a raw ECDSA signature).
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// What kind of key pair to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    Rsa { bits: u32 },
    Ec(Curve),
}

/// What a KMS key pair may do; decides the pair's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairUse {
    EncryptDecrypt,
    SignVerify,
}

/// The hash of RSA-OAEP (and of its MGF1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl OaepHash {
    pub(super) fn mechanism(self) -> Mechanism<'static> {
        let (hash, mgf) = match self {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }

    /// The mechanism and parameters, named for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "CKM_RSA_PKCS_OAEP with SHA-1 and MGF1-SHA-1",
            OaepHash::Sha256 => "CKM_RSA_PKCS_OAEP with SHA-256 and MGF1-SHA-256",
        }
    }
}

/// A private-key operation on a digest the caller computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMechanism {
    /// `CKM_RSA_PKCS` over a DER DigestInfo.
    RsaPkcs1,
    /// `CKM_RSA_PKCS_PSS` over a SHA-256/384/512 digest (picked by its length), MGF1 with the
    /// same hash and a salt as long as the digest, as AWS signs.
    RsaPss,
    /// `CKM_ECDSA` over a digest; the token answers raw r‖s.
    Ecdsa,
}

/// HMAC hash functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl MacHash {
    fn mechanism(self) -> Mechanism<'static> {
        match self {
            MacHash::Sha224 => Mechanism::Sha224Hmac,
            MacHash::Sha256 => Mechanism::Sha256Hmac,
            MacHash::Sha384 => Mechanism::Sha384Hmac,
            MacHash::Sha512 => Mechanism::Sha512Hmac,
        }
    }
}

/// The public half of a pair as the token holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyParts {
    Rsa {
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// `params`: DER of the curve OID; `point`: `CKA_EC_POINT` as the token gives it (usually
    /// a DER OCTET STRING around the uncompressed point).
    Ec {
        params: Vec<u8>,
        point: Vec<u8>,
    },
}

/// An RSA private key's CRT components, big-endian.
pub struct RsaPrivateParts {
    pub modulus: Vec<u8>,
    pub public_exponent: Vec<u8>,
    pub private_exponent: Zeroizing<Vec<u8>>,
    pub prime1: Zeroizing<Vec<u8>>,
    pub prime2: Zeroizing<Vec<u8>>,
    pub exponent1: Zeroizing<Vec<u8>>,
    pub exponent2: Zeroizing<Vec<u8>>,
    pub coefficient: Zeroizing<Vec<u8>>,
}

/// An EC private key's scalar, big-endian.
pub struct EcPrivateParts {
    pub value: Zeroizing<Vec<u8>>,
}

/// The private half of an exportable data key pair.
pub enum PrivateKeyParts {
    Rsa(RsaPrivateParts),
    Ec(EcPrivateParts),
}

/// What the token can do for asymmetric keys, measured at start-up by trial operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsymmetricCapabilities {
    /// RSA-OAEP with SHA-1 for encrypt, unwrap, wrap and decrypt.
    pub oaep_sha1: bool,
    /// RSA-OAEP with SHA-256/MGF1-SHA-256 for the same (SoftHSM 2.6.1 lacks it).
    pub oaep_sha256: bool,
    /// `CKM_AES_GCM` usable with `C_WrapKey` (moving a plaintext key object into a symmetric
    /// payload in the token).
    pub gcm_wrap: bool,
    /// `CKM_AES_GCM` usable with `C_UnwrapKey` (opening a symmetric payload into a key object
    /// in the token).
    pub gcm_unwrap: bool,
    /// `CKM_EC_KEY_PAIR_GEN` per curve, in [`Curve::ALL`]'s order (Kryoptic lacks secp256k1).
    pub curves: [bool; 4],
}

impl AsymmetricCapabilities {
    pub fn oaep(&self, hash: OaepHash) -> bool {
        match hash {
            OaepHash::Sha1 => self.oaep_sha1,
            OaepHash::Sha256 => self.oaep_sha256,
        }
    }

    pub fn curve(&self, curve: Curve) -> bool {
        self.curves[curve.index()]
    }

    /// `Err` naming the mechanism when the token cannot make a pair of `kind`.
    pub fn require_pair(&self, kind: PairKind) -> Result<(), ProviderError> {
        match kind {
            PairKind::Ec(curve) if !self.curve(curve) => Err(ProviderError::MechanismUnsupported(
                format!("CKM_EC_KEY_PAIR_GEN on {}", curve.name()),
            )),
            _ => Ok(()),
        }
    }
}

impl<M> Hsm<M> {
    /// Tries OAEP with each hash on a throwaway session key pair, and asks the token whether
    /// GCM may wrap. Never assumes anything from the token's name.
    pub(super) fn probe_asymmetric(&self) -> AsymmetricCapabilities {
        let mut caps = AsymmetricCapabilities::default();
        if let Some(token) = self.current_token() {
            if let Ok(info) = token
                .pkcs11
                .get_mechanism_info(token.slot, MechanismType::AES_GCM)
            {
                caps.gcm_wrap = info.wrap();
                caps.gcm_unwrap = info.unwrap();
            }
        }
        let trial = self.with_session(|_, s| {
            let (public, private) = generate_probe_pair(s)?;
            let public = SessionObject::new(s, public);
            let private = SessionObject::new(s, private);
            Ok((
                oaep_trial(s, public.handle, private.handle, OaepHash::Sha1),
                oaep_trial(s, public.handle, private.handle, OaepHash::Sha256),
            ))
        });
        match trial {
            Ok(Ok((sha1, sha256))) => {
                caps.oaep_sha1 = sha1;
                caps.oaep_sha256 = sha256;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the token cannot make an RSA key pair"),
            Err(e) => tracing::warn!(error = %e, "asymmetric probe failed"),
        }
        for curve in Curve::ALL {
            // A throwaway session pair on each curve: a token may list CKM_EC_KEY_PAIR_GEN
            // and still refuse a curve (Kryoptic on secp256k1: CKR_GENERAL_ERROR).
            let made = self.with_session(|_, s| {
                let mut public = vec![Attribute::Token(false), Attribute::Verify(true)];
                let mechanism = pair_template(PairKind::Ec(curve), &mut public);
                let private = [Attribute::Token(false), Attribute::Sign(true)];
                let (public, private) = s.generate_key_pair(&mechanism, &public, &private)?;
                drop(SessionObject::new(s, public));
                drop(SessionObject::new(s, private));
                Ok(())
            });
            caps.curves[curve.index()] = matches!(made, Ok(Ok(())));
            if let Ok(Err(e)) = made {
                tracing::info!(curve = curve.name(), error = %e, "the token cannot make key pairs on this curve");
            }
        }
        caps
    }
}

// === creating key objects in the token ===

impl Hsm<TokenMaterials> {
    /// Generates a KMS key pair in the token: private half sensitive, non-extractable, token
    /// and private; both halves limited to the pair's use; `CKA_ID` = the material id.
    pub(super) fn create_token_pair(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        kind: PairKind,
        usage: PairUse,
    ) -> Result<(), ProviderError> {
        let _serial = self.token_writes.lock().unwrap_or_else(|p| p.into_inner());
        let label = format!("{OBJECT_LABEL_PREFIX}{key_id}").into_bytes();
        let id = material.0.to_vec();
        let encrypt = usage == PairUse::EncryptDecrypt;
        let sign = usage == PairUse::SignVerify;
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Encrypt(encrypt),
            Attribute::Wrap(encrypt),
            Attribute::Verify(sign),
            Attribute::Derive(false),
            Attribute::Id(id.clone()),
            Attribute::Label(label.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(encrypt),
            Attribute::Unwrap(encrypt),
            Attribute::Sign(sign),
            Attribute::Derive(false),
            Attribute::Id(id),
            Attribute::Label(label),
        ];
        let mechanism = pair_template(kind, &mut public);
        // Not run again on a lost session: the pair may exist already (see
        // `create_token_secret`).
        let (public_handle, private_handle) =
            self.with_key_pair_session(OnLostSession::Fail, |s| {
                s.generate_key_pair(&mechanism, &public, &private)
                    .map_err(HsmError::from)
            })??;
        if let Some(token) = self.current_token() {
            let mut cache = token.materials_mut();
            cache.insert((*material, Half::Public), public_handle);
            cache.insert((*material, Half::Private), private_handle);
        }
        Ok(())
    }

    /// Generates an HMAC key of `len` bytes in the token: a generic secret that can only sign
    /// and verify, sensitive and non-extractable.
    pub(super) fn create_token_hmac(
        &self,
        key_id: &KeyId,
        material: &MaterialId,
        len: usize,
    ) -> Result<(), ProviderError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen((len as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Derive(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Id(material.0.to_vec()),
            Attribute::Label(format!("{OBJECT_LABEL_PREFIX}{key_id}").into_bytes()),
        ];
        self.create_token_secret(material, &Mechanism::GenericSecretKeyGen, &template)
    }
}

impl<M: Materials> AsymmetricPrimitives for Hsm<M> {
    // === public keys ===

    /// The public half's key attributes (RSA modulus and exponent, or EC params and point).
    fn public_key(&self, material: &MaterialId) -> Result<PublicKeyParts, ProviderError> {
        self.with_object(material, Half::Public, |s, handle| {
            Ok(read_public(s, handle)?)
        })
        .map_err(OpError::into_provider)
    }

    // === RSA-OAEP ===

    /// OAEP-encrypts under the public half, in the token.
    fn rsa_encrypt(
        &self,
        material: &MaterialId,
        hash: OaepHash,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ProviderError> {
        self.with_object(material, Half::Public, |s, handle| {
            Ok(s.encrypt_sized(&hash.mechanism(), handle, plaintext, RSA_OUTPUT_BOUND)?)
        })
        .map_err(OpError::into_provider)
    }

    /// OAEP-decrypts with the private half, in the token. A ciphertext that does not decode
    /// is `ProviderError::RejectedData`.
    fn rsa_decrypt(
        &self,
        material: &MaterialId,
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.with_object(material, Half::Private, |s, handle| {
            // The OAEP plaintext is shorter than its ciphertext.
            s.decrypt_sized(&hash.mechanism(), handle, ciphertext, ciphertext.len())
                .map(Zeroizing::new)
                .map_err(|e| bad_data(s, e))
        })
        .map_err(OpError::into_provider)
    }

    /// RSA to RSA re-encryption in the token: `C_UnwrapKey` (OAEP, source private half) into
    /// a sensitive session secret, `C_WrapKey` (OAEP, destination public half), destroy.
    /// `Ok(None)` when the plaintext is longer than `limit`, what the destination can take
    /// (its length is readable; its value is not).
    fn rsa_rewrap(
        &self,
        source: &MaterialId,
        source_hash: OaepHash,
        ciphertext: &[u8],
        destination: &MaterialId,
        destination_hash: OaepHash,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, ProviderError> {
        self.with_objects(
            [(source, Half::Private), (destination, Half::Public)],
            |s, [private, public]| {
                let secret = SessionObject::new(
                    s,
                    unwrap_secret(s, &source_hash.mechanism(), private, ciphertext)
                        .map_err(|e| bad_data(s, e))?,
                );
                let length = s
                    .get_attributes(secret.handle, &[AttributeType::ValueLen])?
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::ValueLen(len) => usize::try_from(u64::from(len)).ok(),
                        _ => None,
                    });
                if length.is_none_or(|len| len > limit) {
                    return Ok(None);
                }
                Ok(Some(s.wrap_key_sized(
                    &destination_hash.mechanism(),
                    public,
                    secret.handle,
                    RSA_OUTPUT_BOUND,
                )?))
            },
        )
        .map_err(OpError::into_provider)
    }

    // === signatures and MACs ===

    /// Signs `data` (a digest, or a DigestInfo for PKCS #1 v1.5) with the private half.
    fn sign_digest(
        &self,
        material: &MaterialId,
        mechanism: SignMechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, ProviderError> {
        let mechanism = sign_mechanism(mechanism, data.len())?;
        self.with_object(material, Half::Private, |s, handle| {
            Ok(s.sign_sized(&mechanism, handle, data, RSA_OUTPUT_BOUND)?)
        })
        .map_err(OpError::into_provider)
    }

    /// Verifies a signature over `data` with the public half, in the token. `Ok(false)` when
    /// the signature does not verify.
    fn verify_digest(
        &self,
        material: &MaterialId,
        mechanism: SignMechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool, ProviderError> {
        let mechanism = sign_mechanism(mechanism, data.len())?;
        self.with_object(material, Half::Public, |s, handle| {
            verdict(s.verify(&mechanism, handle, data, signature))
        })
        .map_err(OpError::into_provider)
    }

    /// HMAC of `message` under an HMAC key, in the token.
    fn hmac(
        &self,
        material: &MaterialId,
        hash: MacHash,
        message: &[u8],
    ) -> Result<Vec<u8>, ProviderError> {
        self.with_object(material, Half::Secret, |s, handle| {
            Ok(s.sign_sized(&hash.mechanism(), handle, message, RSA_OUTPUT_BOUND)?)
        })
        .map_err(OpError::into_provider)
    }

    /// Checks an HMAC in the token (`C_Verify` compares in constant time there).
    fn hmac_verify(
        &self,
        material: &MaterialId,
        hash: MacHash,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, ProviderError> {
        self.with_object(material, Half::Secret, |s, handle| {
            verdict(s.verify(&hash.mechanism(), handle, message, mac))
        })
        .map_err(OpError::into_provider)
    }

    // === data key pairs ===

    /// Generates a key pair in the token for GenerateDataKeyPair and reads both halves out.
    ///
    /// The caller needs the private key's value (AWS returns it as PKCS #8). A PKCS #11 token
    /// exports a private key's components only from an object that is neither sensitive nor
    /// a token object, so the pair is made as session objects with `CKA_SENSITIVE=false`, can
    /// do nothing, is read, and destroyed before this returns.
    fn generate_exportable_pair(
        &self,
        kind: PairKind,
    ) -> Result<(PublicKeyParts, PrivateKeyParts), ProviderError> {
        self.capabilities.asymmetric.require_pair(kind)?;
        let mut public = vec![
            Attribute::Token(false),
            Attribute::Encrypt(false),
            Attribute::Verify(false),
            Attribute::Wrap(false),
        ];
        let private = [
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Sign(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ];
        let mechanism = pair_template(kind, &mut public);
        self.with_key_pair_session(OnLostSession::Retry, |s| {
            let (public_handle, private_handle) =
                s.generate_key_pair(&mechanism, &public, &private)?;
            let public_object = SessionObject::new(s, public_handle);
            let private_object = SessionObject::new(s, private_handle);
            let public_parts = read_public(s, public_object.handle)?;
            let private_parts = read_private(s, private_object.handle, kind)?;
            Ok((public_parts, private_parts))
        })?
        .map_err(ProviderError::from)
    }
}

/// The generation mechanism for `kind`, with its key-size attributes added to `public`.
pub(super) fn pair_template(kind: PairKind, public: &mut Vec<Attribute>) -> Mechanism<'static> {
    match kind {
        PairKind::Rsa { bits } => {
            public.push(Attribute::ModulusBits(u64::from(bits).into()));
            public.push(Attribute::PublicExponent(RSA_PUBLIC_EXPONENT.to_vec()));
            Mechanism::RsaPkcsKeyPairGen
        }
        PairKind::Ec(curve) => {
            public.push(Attribute::EcParams(curve.params_der().to_vec()));
            Mechanism::EccKeyPairGen
        }
    }
}

fn sign_mechanism(
    mechanism: SignMechanism,
    data_len: usize,
) -> Result<Mechanism<'static>, ProviderError> {
    Ok(match mechanism {
        SignMechanism::RsaPkcs1 => Mechanism::RsaPkcs,
        SignMechanism::Ecdsa => Mechanism::Ecdsa,
        SignMechanism::RsaPss => {
            let (hash_alg, mgf) = match data_len {
                32 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
                48 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
                64 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
                other => {
                    return Err(ProviderError::Internal(format!(
                        "no PSS hash has a {other}-byte digest"
                    )))
                }
            };
            Mechanism::RsaPkcsPss(PkcsPssParams {
                hash_alg,
                mgf,
                s_len: (data_len as u64).into(),
            })
        }
    })
}

/// `C_Verify`'s answer: a signature that does not verify is `false`, not an error.
fn verdict(result: Result<(), CkError>) -> Result<bool, OpError> {
    match result {
        Ok(()) => Ok(true),
        Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Unwraps a secret (a plaintext) into a sensitive session object that can only be wrapped
/// again.
pub(super) fn unwrap_secret(
    s: &TimedSession<'_>,
    mechanism: &Mechanism,
    key: ObjectHandle,
    wrapped: &[u8],
) -> Result<ObjectHandle, CkError> {
    s.unwrap_key(
        mechanism,
        key,
        wrapped,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
        ],
    )
}

pub(super) fn read_public(
    s: &TimedSession<'_>,
    handle: ObjectHandle,
) -> Result<PublicKeyParts, HsmError> {
    let attrs = s.get_attributes(
        handle,
        &[
            AttributeType::KeyType,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
            AttributeType::EcParams,
            AttributeType::EcPoint,
        ],
    )?;
    let mut key_type = None;
    let (mut modulus, mut exponent, mut params, mut point) = (None, None, None, None);
    for attr in attrs {
        match attr {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Modulus(v) => modulus = Some(v),
            Attribute::PublicExponent(v) => exponent = Some(v),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    match (key_type, modulus, exponent, params, point) {
        (Some(KeyType::RSA), Some(modulus), Some(exponent), _, _) => {
            Ok(PublicKeyParts::Rsa { modulus, exponent })
        }
        (Some(KeyType::EC), _, _, Some(params), Some(point)) => {
            Ok(PublicKeyParts::Ec { params, point })
        }
        _ => Err(HsmError::gateway(
            "C_GetAttributeValue",
            "public key attributes missing",
            Scope::Data,
        )),
    }
}

fn read_private(
    s: &TimedSession<'_>,
    handle: ObjectHandle,
    kind: PairKind,
) -> Result<PrivateKeyParts, HsmError> {
    let missing = || {
        HsmError::gateway(
            "C_GetAttributeValue",
            "private key components missing",
            Scope::Data,
        )
    };
    match kind {
        PairKind::Rsa { .. } => {
            let attrs = s.get_attributes(
                handle,
                &[
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::PrivateExponent,
                    AttributeType::Prime1,
                    AttributeType::Prime2,
                    AttributeType::Exponent1,
                    AttributeType::Exponent2,
                    AttributeType::Coefficient,
                ],
            )?;
            let mut parts: [Option<Zeroizing<Vec<u8>>>; 8] = Default::default();
            for attr in attrs {
                let (slot, value) = match attr {
                    Attribute::Modulus(v) => (0, v),
                    Attribute::PublicExponent(v) => (1, v),
                    Attribute::PrivateExponent(v) => (2, v),
                    Attribute::Prime1(v) => (3, v),
                    Attribute::Prime2(v) => (4, v),
                    Attribute::Exponent1(v) => (5, v),
                    Attribute::Exponent2(v) => (6, v),
                    Attribute::Coefficient(v) => (7, v),
                    _ => continue,
                };
                parts[slot] = Some(Zeroizing::new(value));
            }
            let [n, e, d, p, q, dp, dq, qinv] = parts;
            Ok(PrivateKeyParts::Rsa(RsaPrivateParts {
                modulus: n.ok_or_else(missing)?.to_vec(),
                public_exponent: e.ok_or_else(missing)?.to_vec(),
                private_exponent: d.ok_or_else(missing)?,
                prime1: p.ok_or_else(missing)?,
                prime2: q.ok_or_else(missing)?,
                exponent1: dp.ok_or_else(missing)?,
                exponent2: dq.ok_or_else(missing)?,
                coefficient: qinv.ok_or_else(missing)?,
            }))
        }
        PairKind::Ec(_) => {
            let attrs = s.get_attributes(handle, &[AttributeType::Value])?;
            let value = attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Value(v) => Some(Zeroizing::new(v)),
                    _ => None,
                })
                .ok_or_else(missing)?;
            Ok(PrivateKeyParts::Ec(EcPrivateParts { value }))
        }
    }
}

/// A throwaway session RSA pair for the start-up probe, able to do every OAEP use.
fn generate_probe_pair(s: &TimedSession<'_>) -> Result<(ObjectHandle, ObjectHandle), HsmError> {
    Ok(s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::ModulusBits(PROBE_RSA_BITS.into()),
            Attribute::PublicExponent(RSA_PUBLIC_EXPONENT.to_vec()),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
        ],
        &[
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(true),
            Attribute::Unwrap(true),
        ],
    )?)
}

/// Encrypt, unwrap into a session secret, wrap that again and decrypt: every OAEP use the
/// gateway makes, with one hash. `false` if any step fails or the round trip differs.
fn oaep_trial(
    s: &TimedSession<'_>,
    public: ObjectHandle,
    private: ObjectHandle,
    hash: OaepHash,
) -> bool {
    let probe = b"p11kms asymmetric start-up probe";
    let run = || -> Result<bool, CkError> {
        let ciphertext = s.encrypt(&hash.mechanism(), public, probe)?;
        let secret = SessionObject::new(
            s,
            unwrap_secret(s, &hash.mechanism(), private, &ciphertext)?,
        );
        let rewrapped = s.wrap_key(&hash.mechanism(), public, secret.handle)?;
        let plain = Zeroizing::new(s.decrypt(&hash.mechanism(), private, &rewrapped)?);
        Ok(plain.as_slice() == probe)
    };
    match run() {
        Ok(ok) => ok,
        Err(e) => {
            tracing::info!(mechanism = hash.describe(), error = %HsmError::from(e), "the token cannot do this OAEP variant");
            false
        }
    }
}
