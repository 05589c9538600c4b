//! The domain ceremony, token side: a token joins a domain without the domain key D ever
//! being outside a token in plaintext.
//!
//! 1. **Join request** (joining token): an RSA transport key pair is generated in the token
//!    (private half sensitive, non-extractable, `CKA_UNWRAP` only); its public half leaves
//!    as a DER SubjectPublicKeyInfo with its SHA-256 fingerprint, which the operators compare
//!    out of band.
//! 2. **Enrol** (holder token): the public key is created in the holder token as a
//!    *trusted* key, D is wrapped under it with `CKM_RSA_PKCS_OAEP`, and the trusted key is
//!    destroyed. D carries `CKA_WRAP_WITH_TRUSTED`: on a token that enforces it (SoftHSM2),
//!    only a trusted key can wrap D, and only the Security Officer can make one, so a holder
//!    of the user PIN alone cannot take D out under a key of their own (design §8).
//! 3. **Join** (joining token): D is unwrapped with the transport private key into a token
//!    object with D's template, checked against the holder's check value, and the transport
//!    pair is destroyed.
//!
//! Runs in its own process (`p11kms domain ...`), never in a serving gateway: the SO login
//! and the logouts here would destroy a gateway's session keys (design §8).

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef};
use der::{Decode, Encode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

use super::domain::{domain_key_template, DOMAIN_KEY_LABEL};
use super::{find_token, initialise, HsmError};

mod error;
pub use error::CeremonyError;

/// `CKA_LABEL` of a joining token's transport key pair.
pub const TRANSPORT_KEY_LABEL: &str = "p11kms-transport";
/// `CKA_LABEL` of the holder's short-lived trusted copy of a transport public key.
pub const TRUSTED_TRANSPORT_LABEL: &str = "p11kms-ceremony-trusted-transport";
pub const REQUEST_FORMAT: &str = "p11kms-domain-join-request/1";
pub const PACKAGE_FORMAT: &str = "p11kms-domain-package/1";
/// The smallest transport key an enrolment accepts.
const MIN_TRANSPORT_BITS: usize = 2048;
/// The transport key size when the token can make it (else [`MIN_TRANSPORT_BITS`]).
const PREFERRED_TRANSPORT_BITS: usize = 3072;
const DOMAIN_KEY_ID_LEN: usize = 16;
/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Which token, through which module, with which user PIN.
pub struct CeremonyTarget {
    pub module: std::path::PathBuf,
    pub token_label: String,
    pub user_pin: SecretString,
}

/// Who creates the holder's trusted copy of the transport public key.
pub enum TrustedBy {
    /// The Security Officer, in a session of its own: SoftHSM2 lets nobody else set
    /// `CKA_TRUSTED`, which is what makes `CKA_WRAP_WITH_TRUSTED` protect D there.
    SecurityOfficer(SecretString),
    /// The user: for tokens that let users create trusted keys (Kryoptic), where trust
    /// therefore protects nothing against a holder of the user PIN.
    User,
}

/// A token as `C_GetTokenInfo` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIdentity {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
}

impl std::fmt::Display for TokenIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'{}' ({} {}, serial {})",
            self.label, self.manufacturer, self.model, self.serial
        )
    }
}

/// The OAEP hash (with MGF1 on the same hash) a transport wrap uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportHash {
    Sha256,
    Sha1,
}

impl TransportHash {
    /// In order of preference.
    const ALL: [TransportHash; 2] = [TransportHash::Sha256, TransportHash::Sha1];

    fn mechanism(self) -> Mechanism<'static> {
        let (hash, mgf) = match self {
            TransportHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            TransportHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }
}

/// What the joining token sends the holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub format: String,
    pub token: TokenIdentity,
    /// The transport pair's `CKA_ID`, hex.
    pub transport_key_id: String,
    /// DER SubjectPublicKeyInfo, base64.
    pub transport_public_key: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, hex: what the operators compare.
    pub fingerprint: String,
    pub key_bits: usize,
    /// The OAEP hashes the joining token unwraps with (tried on the pair itself).
    pub oaep_hashes: Vec<TransportHash>,
}

/// A value only the same D produces: a known 32-byte key wrapped under D with
/// `CKM_AES_KEY_WRAP` (RFC 3394, deterministic). D's template allows wrapping only, so no
/// MAC or encryption of a zero block is possible; a wrap of a known, non-secret key is the
/// check value D's attributes allow. Equal outputs for the same input mean equal keys (AES
/// is a permutation under each key); the pair reveals nothing of D (AES resists known
/// plaintext), and the known key is a throwaway that protects nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyCheck {
    pub mechanism: String,
    /// Hex; not a secret.
    pub known_key: String,
    /// Base64.
    pub wrapped: String,
}

/// What the holder sends the joining token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolPackage {
    pub format: String,
    /// D's `CKA_ID`, hex.
    pub domain_id: String,
    pub mechanism: String,
    pub oaep_hash: TransportHash,
    /// D wrapped under the transport public key, base64.
    pub wrapped_domain_key: String,
    pub check: KeyCheck,
    pub holder: TokenIdentity,
    pub joiner: TokenIdentity,
    pub transport_key_id: String,
    /// The request's fingerprint: the transport key the package is for.
    pub request_fingerprint: String,
}

/// The result of `join_request`.
pub struct JoinRequestOutcome {
    pub request: JoinRequest,
    /// Transport objects of an earlier request that were replaced.
    pub replaced: usize,
}

/// The result of `enrol`.
pub struct EnrolOutcome {
    pub package: EnrolPackage,
    /// Set when the trusted copy of the transport key could not be destroyed.
    pub cleanup_warning: Option<String>,
}

/// The result of `join`.
pub struct JoinOutcome {
    pub domain_id: String,
    pub token: TokenIdentity,
}

fn ck(function: &'static str) -> impl Fn(CkError) -> CeremonyError {
    move |e| CeremonyError::Pkcs11 {
        function,
        error: HsmError::from(e),
    }
}

/// Normalises a fingerprint as operators type it: hex, any case, `:` and spaces allowed.
pub fn normalise_fingerprint(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A fingerprint in groups of four, for reading aloud.
pub fn display_fingerprint(hex: &str) -> String {
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn fingerprint(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// DER SubjectPublicKeyInfo of an RSA public key.
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, CeremonyError> {
    let bad = |what: &'static str, source: der::Error| CeremonyError::Encode { what, source };
    let key = pkcs1::RsaPublicKey {
        modulus: UintRef::new(modulus).map_err(|e| bad("the modulus", e))?,
        public_exponent: UintRef::new(exponent).map_err(|e| bad("the exponent", e))?,
    }
    .to_der()
    .map_err(|e| bad("RSAPublicKey", e))?;
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        subject_public_key: BitStringRef::from_bytes(&key).map_err(|e| bad("the key bits", e))?,
    }
    .to_der()
    .map_err(|e| bad("SubjectPublicKeyInfo", e))
}

/// Modulus and exponent of an RSA SubjectPublicKeyInfo.
pub fn parse_rsa_spki(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CeremonyError> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(CeremonyError::NotSpki)?;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(CeremonyError::NotRsa(spki.algorithm.oid.to_string()));
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CeremonyError::UnalignedKeyBits)?;
    let key = pkcs1::RsaPublicKey::from_der(bits).map_err(CeremonyError::NotRsaPublicKey)?;
    Ok((
        key.modulus.as_bytes().to_vec(),
        key.public_exponent.as_bytes().to_vec(),
    ))
}

/// Loads the module, finds the token, runs `work`, and finalises the library.
fn with_token<T>(
    target: &CeremonyTarget,
    work: impl FnOnce(&Pkcs11, Slot) -> Result<T, CeremonyError>,
) -> Result<T, CeremonyError> {
    let pkcs11 = initialise(&target.module).map_err(CeremonyError::Module)?;
    let result = find_token(&pkcs11, &target.token_label)
        .map_err(CeremonyError::Token)
        .and_then(|slot| work(&pkcs11, slot));
    let _ = pkcs11.finalize();
    result
}

pub(super) fn identity(pkcs11: &Pkcs11, slot: Slot) -> Result<TokenIdentity, CeremonyError> {
    let info = pkcs11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
    Ok(TokenIdentity {
        label: info.label().trim_end().to_string(),
        manufacturer: info.manufacturer_id().trim_end().to_string(),
        model: info.model().trim_end().to_string(),
        serial: info.serial_number().trim_end().to_string(),
    })
}

fn log_in(
    pkcs11: &Pkcs11,
    slot: Slot,
    user: UserType,
    pin: &SecretString,
) -> Result<Session, CeremonyError> {
    let session = pkcs11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    let pin = AuthPin::new(pin.expose_secret().into());
    match session.login(user, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(ck("C_Login")(e)),
    }
}

fn find(session: &Session, template: &[Attribute]) -> Result<Vec<ObjectHandle>, CeremonyError> {
    session.find_objects(template).map_err(ck("C_FindObjects"))
}

fn read_bytes(
    session: &Session,
    object: ObjectHandle,
    kind: AttributeType,
) -> Result<Vec<u8>, CeremonyError> {
    let attributes = session
        .get_attributes(object, &[kind])
        .map_err(ck("C_GetAttributeValue"))?;
    match attributes.into_iter().next() {
        Some(Attribute::Id(v) | Attribute::Modulus(v) | Attribute::PublicExponent(v)) => Ok(v),
        _ => Err(CeremonyError::AttributeMissing(kind)),
    }
}

fn read_bool(
    session: &Session,
    object: ObjectHandle,
    kind: AttributeType,
) -> Result<bool, CeremonyError> {
    let attributes = session
        .get_attributes(object, &[kind])
        .map_err(ck("C_GetAttributeValue"))?;
    match attributes.into_iter().next() {
        Some(
            Attribute::Sensitive(b)
            | Attribute::Extractable(b)
            | Attribute::WrapWithTrusted(b)
            | Attribute::Token(b),
        ) => Ok(b),
        _ => Err(CeremonyError::AttributeMissing(kind)),
    }
}

fn hex_id(text: &str, what: &'static str) -> Result<Vec<u8>, CeremonyError> {
    hex::decode(text).map_err(|_| CeremonyError::NotHex(what))
}

fn base64(text: &str, what: &'static str) -> Result<Vec<u8>, CeremonyError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| CeremonyError::NotBase64(what))
}

fn to_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// === join request ===

/// Makes the transport key pair in the joining token and the request that carries its
/// public half. A transport pair left by an earlier request is replaced.
pub fn join_request(target: &CeremonyTarget) -> Result<JoinRequestOutcome, CeremonyError> {
    with_token(target, |pkcs11, slot| {
        let token = identity(pkcs11, slot)?;
        let bits = match pkcs11.get_mechanism_info(slot, MechanismType::RSA_PKCS_KEY_PAIR_GEN) {
            Ok(info) if info.max_key_size() >= PREFERRED_TRANSPORT_BITS => PREFERRED_TRANSPORT_BITS,
            _ => MIN_TRANSPORT_BITS,
        };
        let session = log_in(pkcs11, slot, UserType::User, &target.user_pin)?;
        let stale = find(
            &session,
            &[Attribute::Label(TRANSPORT_KEY_LABEL.as_bytes().to_vec())],
        )?;
        for object in &stale {
            session
                .destroy_object(*object)
                .map_err(ck("C_DestroyObject"))?;
        }
        let id: [u8; 16] = rand::random();
        let label = TRANSPORT_KEY_LABEL.as_bytes().to_vec();
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::Label(label.clone()),
                    Attribute::Id(id.to_vec()),
                    Attribute::ModulusBits((bits as u64).into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                    Attribute::Wrap(true),
                    Attribute::Encrypt(false),
                    Attribute::Verify(false),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Label(label),
                    Attribute::Id(id.to_vec()),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Unwrap(true),
                    Attribute::Decrypt(false),
                    Attribute::Sign(false),
                    Attribute::Derive(false),
                ],
            )
            .map_err(ck("C_GenerateKeyPair"))?;
        let made = describe_pair(&session, token, &id, public, private);
        if made.is_err() {
            let _ = session.destroy_object(private);
            let _ = session.destroy_object(public);
        }
        Ok(JoinRequestOutcome {
            request: made?,
            replaced: stale.len(),
        })
    })
}

/// The request for a new transport pair.
fn describe_pair(
    session: &Session,
    token: TokenIdentity,
    id: &[u8],
    public: ObjectHandle,
    private: ObjectHandle,
) -> Result<JoinRequest, CeremonyError> {
    let oaep_hashes = unwrap_hashes(session, public, private)?;
    if oaep_hashes.is_empty() {
        return Err(CeremonyError::NoOaep);
    }
    let modulus = read_bytes(session, public, AttributeType::Modulus)?;
    let exponent = read_bytes(session, public, AttributeType::PublicExponent)?;
    let spki = rsa_spki(&modulus, &exponent)?;
    Ok(JoinRequest {
        format: REQUEST_FORMAT.into(),
        token,
        transport_key_id: hex::encode(id),
        fingerprint: fingerprint(&spki),
        transport_public_key: to_base64(&spki),
        key_bits: modulus.len() * 8,
        oaep_hashes,
    })
}

/// The OAEP hashes this pair wraps and unwraps with, tried on a throwaway session key.
fn unwrap_hashes(
    session: &Session,
    public: ObjectHandle,
    private: ObjectHandle,
) -> Result<Vec<TransportHash>, CeremonyError> {
    let probe = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
            ],
        )
        .map_err(ck("C_GenerateKey"))?;
    let mut works = Vec::new();
    for hash in TransportHash::ALL {
        let Ok(blob) = session.wrap_key(&hash.mechanism(), public, probe) else {
            continue;
        };
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ];
        if let Ok(back) = session.unwrap_key(&hash.mechanism(), private, &blob, &template) {
            let _ = session.destroy_object(back);
            works.push(hash);
        }
    }
    let _ = session.destroy_object(probe);
    Ok(works)
}

// === enrol ===

/// Checks a request before any token is touched: its fingerprint is that of its key, the
/// operator's fingerprint (compared out of band) is the same, and the key is RSA of at
/// least 2048 bits. Returns the modulus and exponent.
pub fn check_request(
    request: &JoinRequest,
    expected_fingerprint: &str,
) -> Result<(Vec<u8>, Vec<u8>), CeremonyError> {
    if request.format != REQUEST_FORMAT {
        return Err(CeremonyError::NotARequest(request.format.clone()));
    }
    let spki = base64(&request.transport_public_key, "transport_public_key")?;
    let actual = fingerprint(&spki);
    if normalise_fingerprint(&request.fingerprint) != actual {
        return Err(CeremonyError::RequestAltered {
            actual,
            claimed: request.fingerprint.clone(),
        });
    }
    if normalise_fingerprint(expected_fingerprint) != actual {
        return Err(CeremonyError::FingerprintMismatch {
            actual,
            expected: normalise_fingerprint(expected_fingerprint),
        });
    }
    let (modulus, exponent) = parse_rsa_spki(&spki)?;
    if modulus.len() * 8 < MIN_TRANSPORT_BITS {
        return Err(CeremonyError::TransportKeyTooSmall(modulus.len() * 8));
    }
    hex_id(&request.transport_key_id, "transport_key_id")?;
    Ok((modulus, exponent))
}

/// Wraps the holder token's domain key under the joining token's transport key (after
/// [`check_request`]). `domain_id` picks the domain when the token holds several.
pub fn enrol(
    target: &CeremonyTarget,
    trusted_by: &TrustedBy,
    request: &JoinRequest,
    expected_fingerprint: &str,
    domain_id: Option<&str>,
) -> Result<EnrolOutcome, CeremonyError> {
    let (modulus, exponent) = check_request(request, expected_fingerprint)?;
    let transport_id = hex_id(&request.transport_key_id, "transport_key_id")?;
    let wanted = domain_id.map(|d| hex_id(d, "the domain id")).transpose()?;
    with_token(target, |pkcs11, slot| {
        let holder = identity(pkcs11, slot)?;
        let trusted_template = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Trusted(true),
            Attribute::Wrap(true),
            Attribute::Encrypt(false),
            Attribute::Verify(false),
            Attribute::Label(TRUSTED_TRANSPORT_LABEL.as_bytes().to_vec()),
            Attribute::Id(transport_id.clone()),
            Attribute::Modulus(modulus.clone()),
            Attribute::PublicExponent(exponent.clone()),
        ];
        let find_trusted = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(TRUSTED_TRANSPORT_LABEL.as_bytes().to_vec()),
        ];
        // Find D first, as the user, so that a wrong token fails before the SO logs in.
        let user = log_in(pkcs11, slot, UserType::User, &target.user_pin)?;
        let domain = find_domain_key(&user, wanted.as_deref())?;
        let domain_id = read_bytes(&user, domain, AttributeType::Id)?;
        if !read_bool(&user, domain, AttributeType::WrapWithTrusted)? {
            return Err(CeremonyError::NotWrapWithTrusted(hex::encode(&domain_id)));
        }
        match trusted_by {
            TrustedBy::User => {
                create_trusted(&user, &find_trusted, &trusted_template).map_err(|e| {
                    CeremonyError::TrustedKey {
                        by: "the user",
                        source: Box::new(e),
                    }
                })?;
            }
            TrustedBy::SecurityOfficer(so_pin) => {
                // One login state per application: the user leaves, the SO creates the key
                // in a session of its own and leaves, the user comes back.
                let _ = user.logout();
                drop(user);
                let so = log_in(pkcs11, slot, UserType::So, so_pin)?;
                let created = create_trusted(&so, &find_trusted, &trusted_template).map_err(|e| {
                    CeremonyError::TrustedKey {
                        by: "the SO",
                        source: Box::new(e),
                    }
                });
                let _ = so.logout();
                drop(so);
                created?;
            }
        }
        let user = log_in(pkcs11, slot, UserType::User, &target.user_pin)?;
        let wrapped = wrap_for_transport(&user, &transport_id, &request.oaep_hashes, &domain_id);
        let cleanup_warning = destroy_trusted(pkcs11, slot, &user, trusted_by, &find_trusted);
        let (oaep_hash, wrapped_domain_key, check) = wrapped?;
        Ok(EnrolOutcome {
            package: EnrolPackage {
                format: PACKAGE_FORMAT.into(),
                domain_id: hex::encode(&domain_id),
                mechanism: "CKM_RSA_PKCS_OAEP".into(),
                oaep_hash,
                wrapped_domain_key: to_base64(&wrapped_domain_key),
                check,
                holder,
                joiner: request.token.clone(),
                transport_key_id: request.transport_key_id.clone(),
                request_fingerprint: normalise_fingerprint(&request.fingerprint),
            },
            cleanup_warning,
        })
    })
}

/// Creates the trusted copy of the transport key, replacing one a crashed run left.
fn create_trusted(
    session: &Session,
    find_template: &[Attribute],
    template: &[Attribute],
) -> Result<ObjectHandle, CeremonyError> {
    for stale in find(session, find_template)? {
        session
            .destroy_object(stale)
            .map_err(ck("C_DestroyObject"))?;
    }
    session
        .create_object(template)
        .map_err(|e| CeremonyError::Token(HsmError::from(e)))
}

/// The domain key with `id`, or the only one the token holds.
fn find_domain_key(session: &Session, id: Option<&[u8]>) -> Result<ObjectHandle, CeremonyError> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(DOMAIN_KEY_LABEL.as_bytes().to_vec()),
    ];
    if let Some(id) = id {
        template.push(Attribute::Id(id.to_vec()));
    }
    let found = find(session, &template)?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(match id {
            Some(id) => CeremonyError::NoDomainKeyWithId(hex::encode(id)),
            None => CeremonyError::NoDomainKey,
        }),
        several => {
            let ids = several
                .iter()
                .map(|h| read_bytes(session, *h, AttributeType::Id).map(hex::encode))
                .collect::<Result<Vec<_>, _>>()?;
            Err(CeremonyError::SeveralDomainKeys(ids))
        }
    }
}

/// Wraps D under the trusted transport key with the first OAEP hash both tokens take, and
/// makes the check value.
fn wrap_for_transport(
    session: &Session,
    transport_id: &[u8],
    joiner_hashes: &[TransportHash],
    domain_id: &[u8],
) -> Result<(TransportHash, Vec<u8>, KeyCheck), CeremonyError> {
    let domain = find_domain_key(session, Some(domain_id))?;
    let trusted = find(
        session,
        &[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(TRUSTED_TRANSPORT_LABEL.as_bytes().to_vec()),
            Attribute::Id(transport_id.to_vec()),
        ],
    )?;
    let [trusted] = trusted.as_slice() else {
        return Err(CeremonyError::NoTrustedKey);
    };
    let mut refused = Vec::new();
    for hash in TransportHash::ALL
        .into_iter()
        .filter(|h| joiner_hashes.contains(h))
    {
        match session.wrap_key(&hash.mechanism(), *trusted, domain) {
            Ok(blob) => return Ok((hash, blob, check_value(session, domain)?)),
            Err(CkError::Pkcs11(
                rv @ (RvError::ArgumentsBad
                | RvError::MechanismParamInvalid
                | RvError::MechanismInvalid),
                _,
            )) => refused.push(format!("OAEP {hash:?}: {rv}")),
            Err(e) => return Err(ck("C_WrapKey (domain key, OAEP)")(e)),
        }
    }
    Err(CeremonyError::NoCommonOaep {
        offered: joiner_hashes.to_vec(),
        refused: refused.join("; "),
    })
}

/// [`KeyCheck`] for `domain`: a fresh known key wrapped under it.
fn check_value(session: &Session, domain: ObjectHandle) -> Result<KeyCheck, CeremonyError> {
    let known: [u8; 32] = rand::random();
    let wrapped = wrap_known_key(session, domain, &known)?;
    Ok(KeyCheck {
        mechanism: "CKM_AES_KEY_WRAP".into(),
        known_key: hex::encode(known),
        wrapped: to_base64(&wrapped),
    })
}

fn wrap_known_key(
    session: &Session,
    domain: ObjectHandle,
    known: &[u8],
) -> Result<Vec<u8>, CeremonyError> {
    let key = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(known.to_vec()),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ])
        .map_err(ck("C_CreateObject (check key)"))?;
    let wrapped = session
        .wrap_key(&Mechanism::AesKeyWrap, domain, key)
        .map_err(ck("C_WrapKey (check value)"));
    let _ = session.destroy_object(key);
    wrapped
}

/// Destroys the holder's trusted copy of the transport key, as the user or else as the
/// SO. Returns a warning when it is still there.
fn destroy_trusted(
    pkcs11: &Pkcs11,
    slot: Slot,
    user: &Session,
    trusted_by: &TrustedBy,
    template: &[Attribute],
) -> Option<String> {
    let as_user = find(user, template).and_then(|found| {
        found.into_iter().try_for_each(|object| {
            user.destroy_object(object)
                .map_err(ck("C_DestroyObject (trusted key)"))
        })
    });
    let Err(user_error) = as_user else {
        return None;
    };
    let TrustedBy::SecurityOfficer(so_pin) = trusted_by else {
        return Some(user_error.to_string());
    };
    let _ = user.logout();
    let as_so = log_in(pkcs11, slot, UserType::So, so_pin).and_then(|so| {
        let done = find(&so, template).and_then(|found| {
            found
                .into_iter()
                .try_for_each(|object| so.destroy_object(object).map_err(ck("C_DestroyObject")))
        });
        let _ = so.logout();
        done
    });
    as_so.err().map(|so_error| {
        format!(
            "the trusted transport key '{TRUSTED_TRANSPORT_LABEL}' is still in the token \
             (as the user: {user_error}; as the SO: {so_error}); destroy it by hand"
        )
    })
}

// === join ===

/// Unwraps D from `package` into the joining token as a token object with D's template,
/// checks it against the holder's check value, and destroys the transport pair.
pub fn join(target: &CeremonyTarget, package: &EnrolPackage) -> Result<JoinOutcome, CeremonyError> {
    if package.format != PACKAGE_FORMAT {
        return Err(CeremonyError::NotAPackage(package.format.clone()));
    }
    let domain_id = hex_id(&package.domain_id, "domain_id")?;
    if domain_id.len() != DOMAIN_KEY_ID_LEN {
        return Err(CeremonyError::DomainIdLength(domain_id.len()));
    }
    let transport_id = hex_id(&package.transport_key_id, "transport_key_id")?;
    let wrapped = Zeroizing::new(base64(&package.wrapped_domain_key, "wrapped_domain_key")?);
    let known = Zeroizing::new(hex_id(&package.check.known_key, "check.known_key")?);
    let expected_check = base64(&package.check.wrapped, "check.wrapped")?;
    if package.check.mechanism != "CKM_AES_KEY_WRAP" {
        return Err(CeremonyError::UnknownCheck(package.check.mechanism.clone()));
    }
    with_token(target, |pkcs11, slot| {
        let token = identity(pkcs11, slot)?;
        let session = log_in(pkcs11, slot, UserType::User, &target.user_pin)?;
        let pair = |class| {
            find(
                &session,
                &[
                    Attribute::Class(class),
                    Attribute::Label(TRANSPORT_KEY_LABEL.as_bytes().to_vec()),
                    Attribute::Id(transport_id.clone()),
                ],
            )
        };
        let (private, public) = match (
            pair(ObjectClass::PRIVATE_KEY)?.as_slice(),
            pair(ObjectClass::PUBLIC_KEY)?.as_slice(),
        ) {
            ([private], [public]) => (*private, *public),
            _ => {
                return Err(CeremonyError::NoTransportKey(
                    package.transport_key_id.clone(),
                ))
            }
        };
        let spki = rsa_spki(
            &read_bytes(&session, public, AttributeType::Modulus)?,
            &read_bytes(&session, public, AttributeType::PublicExponent)?,
        )?;
        if fingerprint(&spki) != normalise_fingerprint(&package.request_fingerprint) {
            return Err(CeremonyError::OtherTransportKey);
        }
        if !find(
            &session,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(DOMAIN_KEY_LABEL.as_bytes().to_vec()),
                Attribute::Id(domain_id.clone()),
            ],
        )?
        .is_empty()
        {
            return Err(CeremonyError::AlreadyJoined(package.domain_id.clone()));
        }
        let domain = session
            .unwrap_key(
                &package.oaep_hash.mechanism(),
                private,
                &wrapped,
                &domain_key_template(&domain_id),
            )
            .map_err(ck("C_UnwrapKey (domain key)"))?;
        let checked = check_joined(&session, domain, &known, &expected_check);
        if let Err(e) = checked {
            let _ = session.destroy_object(domain);
            return Err(e);
        }
        session
            .destroy_object(private)
            .map_err(ck("C_DestroyObject (transport private key)"))?;
        session
            .destroy_object(public)
            .map_err(ck("C_DestroyObject (transport public key)"))?;
        Ok(JoinOutcome {
            domain_id: package.domain_id.clone(),
            token,
        })
    })
}

/// The joined key gives the holder's check value and kept its protections.
fn check_joined(
    session: &Session,
    domain: ObjectHandle,
    known: &[u8],
    expected: &[u8],
) -> Result<(), CeremonyError> {
    if wrap_known_key(session, domain, known)? != expected {
        return Err(CeremonyError::CheckValueMismatch);
    }
    for kind in [
        AttributeType::Token,
        AttributeType::Sensitive,
        AttributeType::WrapWithTrusted,
    ] {
        if !read_bool(session, domain, kind)? {
            return Err(CeremonyError::ProtectionLost(kind));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips_and_fingerprints_normalise() {
        let modulus = [0xc3u8; 256];
        let der = rsa_spki(&modulus, &[1, 0, 1]).unwrap();
        let (m, e) = parse_rsa_spki(&der).unwrap();
        assert_eq!(m, modulus);
        assert_eq!(e, [1, 0, 1]);
        let fp = fingerprint(&der);
        assert_eq!(
            normalise_fingerprint(&display_fingerprint(&fp.to_uppercase())),
            fp
        );
        assert!(parse_rsa_spki(&der[1..]).is_err());
    }
}
