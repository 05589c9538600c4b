//! The provider's errors: PKCS#11 failures, kept with their function and CKR code and
//! classified by scope, and the gateway's own refusals about the token.
//!
//! The scope decides recovery (design §6): a data error leaves the session usable, a session
//! error replaces the session, a token error reinitialises the library. What a client sees
//! is decided by the core (`crate::kms`), which maps a [`ProviderError`] to its own error.

use cryptoki::error::{Error as CkError, RvError};

use crate::model::DomainKeyId;

/// Everything a [`KeyProvider`](super::KeyProvider) primitive can fail with. It says what
/// happened in the provider's terms; the KMS meaning (an invalid ciphertext, a throttled
/// request) is the core's decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// A PKCS#11 call failed.
    #[error("{0}")]
    Pkcs11(HsmError),
    /// A PKCS#11 call refused data the client supplied (a ciphertext, a locked data key):
    /// see [`ProviderError::is_bad_data`].
    #[error("{0} (on client-supplied data)")]
    RejectedData(HsmError),
    /// No session came free before the session wait ran out.
    #[error("no HSM session came free in time")]
    Busy,
    /// The token cannot be used now: lost, not yet reinitialised, shutting down, or missing
    /// an object it must hold. `function` and `reason` are for the log.
    #[error("the HSM token is unavailable: {function} failed with {reason}")]
    TokenUnavailable { function: String, reason: String },
    /// The token lacks a mechanism the operation needs (named).
    #[error("mechanism unsupported by the token: {0}")]
    MechanismUnsupported(String),
    /// A material's blob names a domain key this token does not hold, even after a
    /// reinitialisation.
    #[error("domain key {0} is not in this token")]
    MissingDomainKey(DomainKeyId),
    /// The keeper of wrapped materials (domain mode) failed, or gave back a record that
    /// cannot be used.
    #[error("wrapped materials: {0}")]
    MaterialSource(MaterialSourceError),
    /// An internal invariant broke (message for the log only).
    #[error("internal: {0}")]
    Internal(String),
}

impl ProviderError {
    /// A refusal of the token itself, not of a PKCS#11 call (e.g. no token to use).
    pub fn token_unavailable(function: &str, reason: &str) -> Self {
        ProviderError::TokenUnavailable {
            function: function.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Whether the module refused client-supplied data as not authenticating: a tampered
    /// or foreign ciphertext, the wrong context. Whether that is the client's fault is the
    /// core's call (it knows which data came from the client).
    pub fn is_bad_data(&self) -> bool {
        matches!(self, ProviderError::RejectedData(e) if e.is_bad_data())
    }
}

impl From<HsmError> for ProviderError {
    fn from(e: HsmError) -> Self {
        ProviderError::Pkcs11(e)
    }
}

impl From<CkError> for ProviderError {
    fn from(e: CkError) -> Self {
        ProviderError::Pkcs11(e.into())
    }
}

impl From<MaterialSourceError> for ProviderError {
    fn from(e: MaterialSourceError) -> Self {
        ProviderError::MaterialSource(e)
    }
}

/// A failure of the keeper of wrapped materials (`domain::WrappedMaterials`), as the
/// provider passes it on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaterialSourceError {
    /// It cannot be reached or did not answer in time; nothing was written (retryable).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Any other failure, or a record that cannot be used (message for the log only).
    #[error("{0}")]
    Failed(String),
}

/// How far a PKCS#11 failure reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Bad input or failed authentication of data; the session stays.
    Data,
    /// A stale object handle; the handle cache must forget it.
    Object,
    /// The session is unusable; replace it.
    Session,
    /// The token or library is away; reinitialise with backoff.
    Token,
}

/// A PKCS#11 failure with the function that failed and its CKR code.
#[derive(Debug, Clone)]
pub struct HsmError {
    pub function: String,
    pub rv: String,
    pub scope: Scope,
    /// The raw code, when the failure came from the module.
    pub code: Option<RvError>,
}

impl HsmError {
    /// A failure raised by the gateway itself about the HSM (e.g. a missing token).
    pub fn gateway(function: &str, rv: &str, scope: Scope) -> Self {
        HsmError {
            function: function.to_string(),
            rv: rv.to_string(),
            scope,
            code: None,
        }
    }

    /// Whether the module reported an authentication-style failure on client data:
    /// SoftHSM answers every failed GCM tag, KWP integrity check or wrong derived key with
    /// CKR_GENERAL_ERROR; other HSMs use the specific codes. A device error the token
    /// survived (scope narrowed to `Data` by the caller) counts too: Kryoptic answers a
    /// failed KWP integrity check with CKR_DEVICE_ERROR. A ciphertext's HMAC tag that does
    /// not verify (scheme 2) is `CKR_SIGNATURE_INVALID`.
    pub fn is_bad_data(&self) -> bool {
        (self.code == Some(RvError::DeviceError) && self.scope == Scope::Data)
            || matches!(
                self.code,
                Some(
                    RvError::GeneralError
                        | RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::WrappedKeyInvalid
                        | RvError::WrappedKeyLenRange
                        | RvError::DataInvalid
                        | RvError::DataLenRange
                        | RvError::SignatureInvalid
                        | RvError::SignatureLenRange
                )
            )
    }

    /// Whether the gateway cut the operation at its deadline (`TimedSession`): the HSM did
    /// not answer in time.
    pub fn is_deadline(&self) -> bool {
        self.code == Some(RvError::FunctionCanceled)
    }
}

impl std::fmt::Display for HsmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed with {} ({:?} scope)",
            self.function, self.rv, self.scope
        )
    }
}

impl From<CkError> for HsmError {
    fn from(e: CkError) -> Self {
        match e {
            CkError::Pkcs11(rv, function) => HsmError {
                function: format!("C_{function:?}"),
                rv: ckr_name(rv),
                scope: classify(rv),
                code: Some(rv),
            },
            CkError::LibraryLoading(_) => {
                HsmError::gateway("dlopen", "library loading failed", Scope::Token)
            }
            other => HsmError::gateway("cryptoki", &format!("{other:?}"), Scope::Session),
        }
    }
}

/// The scope of a CKR code (design §6).
pub fn classify(rv: RvError) -> Scope {
    use RvError::*;
    match rv {
        DeviceError
        | DeviceMemory
        | DeviceRemoved
        | TokenNotPresent
        | TokenNotRecognized
        | CryptokiNotInitialized
        | SlotIdInvalid
        | FunctionFailed
        | HostMemory => Scope::Token,
        SessionHandleInvalid
        | SessionClosed
        | SessionCount
        | OperationActive
        | UserNotLoggedIn
        | OperationNotInitialized
        // Refused at the operation's deadline: whatever it left in the session goes with it.
        | FunctionCanceled => Scope::Session,
        ObjectHandleInvalid
        | KeyHandleInvalid
        | WrappingKeyHandleInvalid
        | UnwrappingKeyHandleInvalid
        // Every key p11kms uses may do what it is used for: a refusal means the handle no
        // longer names that key (SoftHSM2 answers so for a session object a logout
        // destroyed under the call).
        | KeyFunctionNotPermitted => Scope::Object,
        _ => Scope::Data,
    }
}

/// `GeneralError` -> `CKR_GENERAL_ERROR`.
pub(super) fn ckr_name(rv: RvError) -> String {
    let debug = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names_follow_the_spec_spelling() {
        assert_eq!(ckr_name(RvError::GeneralError), "CKR_GENERAL_ERROR");
        assert_eq!(ckr_name(RvError::DeviceError), "CKR_DEVICE_ERROR");
    }

    #[test]
    fn device_errors_are_token_outages() {
        let e = HsmError::from(CkError::Pkcs11(
            RvError::DeviceError,
            cryptoki::context::Function::Encrypt,
        ));
        assert_eq!(e.scope, Scope::Token);
    }

    fn failure(rv: RvError) -> HsmError {
        HsmError::from(CkError::Pkcs11(rv, cryptoki::context::Function::DeriveKey))
    }

    #[test]
    fn a_lost_session_is_session_scope() {
        assert_eq!(failure(RvError::SessionHandleInvalid).scope, Scope::Session);
    }

    #[test]
    fn an_operation_cut_at_its_deadline_is_a_deadline() {
        let e = failure(RvError::FunctionCanceled);
        assert!(e.is_deadline());
        // Its session is replaced, not reused: the operation stopped half-way.
        assert_eq!(e.scope, Scope::Session);
        // Not bad data, even on client data: the module never judged the data.
        assert!(!ProviderError::RejectedData(e).is_bad_data());
    }

    #[test]
    fn only_a_refusal_of_client_data_is_bad_data() {
        let e = failure(RvError::EncryptedDataInvalid);
        assert!(ProviderError::RejectedData(e.clone()).is_bad_data());
        assert!(!ProviderError::Pkcs11(e).is_bad_data());
    }

    #[test]
    fn a_key_refusing_its_own_function_is_a_stale_handle() {
        assert_eq!(
            failure(RvError::KeyFunctionNotPermitted).scope,
            Scope::Object
        );
    }
}
