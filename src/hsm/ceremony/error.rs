//! Why a ceremony step is refused or failed. A refusal says what the operator should check;
//! a PKCS#11 failure names the call. PINs and key bytes never appear.

use cryptoki::object::AttributeType;

use super::{TransportHash, DOMAIN_KEY_ID_LEN, MIN_TRANSPORT_BITS, PACKAGE_FORMAT, REQUEST_FORMAT};
use crate::hsm::HsmError;

#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    /// A PKCS#11 call, named with what it was for (`C_WrapKey (check value)`).
    #[error("{function}: {error}")]
    Pkcs11 {
        function: &'static str,
        error: HsmError,
    },
    /// The gateway's own token handle is unavailable.
    #[error(transparent)]
    Unavailable(#[from] super::super::ProviderError),
    #[error("cannot load the module: {0}")]
    Module(HsmError),
    /// The token cannot be found, or a call failed that names itself.
    #[error("{0}")]
    Token(HsmError),
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: der::Error,
    },
    #[error("the transport public key is not a SubjectPublicKeyInfo")]
    NotSpki(#[source] der::Error),
    #[error("the transport public key is not an RSA key (algorithm {0})")]
    NotRsa(String),
    #[error("the transport public key's bit string is not whole bytes")]
    UnalignedKeyBits,
    #[error("the transport public key is not an RSAPublicKey")]
    NotRsaPublicKey(#[source] der::Error),
    #[error("the token did not return {0:?}")]
    AttributeMissing(AttributeType),
    #[error("{0} is not hex")]
    NotHex(&'static str),
    #[error("{0} is not base64")]
    NotBase64(&'static str),
    #[error("the token cannot unwrap with RSA-OAEP (SHA-256 or SHA-1)")]
    NoOaep,
    #[error("not a join request (format {0:?}, expected {REQUEST_FORMAT:?})")]
    NotARequest(String),
    #[error(
        "fingerprint check failed: the request's public key has fingerprint {actual}, but the \
         request claims {claimed}; the request was altered"
    )]
    RequestAltered { actual: String, claimed: String },
    #[error(
        "fingerprint check failed: the request's public key has fingerprint {actual}, not the \
         {expected} the joining operator read out; refusing to enrol"
    )]
    FingerprintMismatch { actual: String, expected: String },
    #[error("the transport key has {0} bits; at least {MIN_TRANSPORT_BITS} are required")]
    TransportKeyTooSmall(usize),
    #[error("domain key {0} lacks CKA_WRAP_WITH_TRUSTED: refusing to move it")]
    NotWrapWithTrusted(String),
    /// The trusted copy of the transport key could not be made, as `by`.
    #[error("C_CreateObject (trusted key, as {by})")]
    TrustedKey {
        by: &'static str,
        #[source]
        source: Box<CeremonyError>,
    },
    #[error("this token holds no domain key {0}")]
    NoDomainKeyWithId(String),
    #[error("this token holds no domain key")]
    NoDomainKey,
    #[error(
        "this token holds {} domain keys ({}); name one with --domain",
        .0.len(),
        .0.join(", ")
    )]
    SeveralDomainKeys(Vec<String>),
    #[error("the trusted transport key is not in the token")]
    NoTrustedKey,
    #[error(
        "no OAEP hash both tokens support (the joiner offers {offered:?}; refused: {refused})"
    )]
    NoCommonOaep {
        offered: Vec<TransportHash>,
        refused: String,
    },
    #[error("not a domain package (format {0:?}, expected {PACKAGE_FORMAT:?})")]
    NotAPackage(String),
    #[error("domain_id has {0} bytes, not {DOMAIN_KEY_ID_LEN}")]
    DomainIdLength(usize),
    #[error("unknown check mechanism {0:?}")]
    UnknownCheck(String),
    #[error(
        "this token has no transport key {0} (the package is for another token, or a newer \
         join request replaced it)"
    )]
    NoTransportKey(String),
    #[error("the package was made for another transport key")]
    OtherTransportKey,
    #[error("this token already holds domain key {0}")]
    AlreadyJoined(String),
    #[error("the unwrapped key fails the holder's check value: it is not the holder's domain key")]
    CheckValueMismatch,
    #[error("the token did not keep {0:?} on the domain key")]
    ProtectionLost(AttributeType),
}
