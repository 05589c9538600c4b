//! PKCS#11 failures, kept with their function and CKR code, and classified by scope.
//!
//! The scope decides recovery (design §6): a data error leaves the session usable, a session
//! error replaces the session, a token error reinitialises the library.

use cryptoki::error::{Error as CkError, RvError};

use crate::error::{KmsError, Pkcs11Failure};

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

    pub fn failure(&self) -> Pkcs11Failure {
        Pkcs11Failure {
            function: self.function.clone(),
            rv: self.rv.clone(),
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

    /// The failure as a domain error for an operation on client-supplied ciphertext.
    pub fn into_ciphertext_error(self) -> KmsError {
        if self.is_bad_data() {
            KmsError::InvalidCiphertext
        } else {
            self.into()
        }
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

impl From<HsmError> for KmsError {
    /// A lost token, or a session still lost after the retries on fresh ones, is the HSM
    /// being unavailable (`KeyUnavailableException`), not an internal error.
    fn from(e: HsmError) -> Self {
        if e.is_deadline() {
            return KmsError::HsmTimeout;
        }
        match e.scope {
            Scope::Token | Scope::Session => KmsError::HsmUnavailable(e.failure()),
            Scope::Data | Scope::Object => KmsError::Pkcs11(e.failure()),
        }
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
    fn token_outages_map_to_key_unavailable() {
        let e = HsmError::from(CkError::Pkcs11(
            RvError::DeviceError,
            cryptoki::context::Function::Encrypt,
        ));
        assert_eq!(e.scope, Scope::Token);
        assert_eq!(KmsError::from(e).wire().code, "KeyUnavailableException");
    }

    fn failure(rv: RvError) -> HsmError {
        HsmError::from(CkError::Pkcs11(rv, cryptoki::context::Function::DeriveKey))
    }

    #[test]
    fn a_session_still_lost_after_the_retries_is_the_hsm_unavailable() {
        let e = failure(RvError::SessionHandleInvalid);
        assert_eq!(e.scope, Scope::Session);
        let wire = KmsError::from(e).wire();
        assert_eq!((wire.code, wire.status), ("KeyUnavailableException", 500));
    }

    #[test]
    fn an_operation_cut_at_its_deadline_is_a_dependency_timeout() {
        let e = failure(RvError::FunctionCanceled);
        assert!(e.is_deadline());
        // Its session is replaced, not reused: the operation stopped half-way.
        assert_eq!(e.scope, Scope::Session);
        let wire = KmsError::from(e.clone()).wire();
        assert_eq!(
            (wire.code, wire.status),
            ("DependencyTimeoutException", 500)
        );
        assert_eq!(
            e.into_ciphertext_error().wire().code,
            "DependencyTimeoutException"
        );
    }

    #[test]
    fn a_key_refusing_its_own_function_is_a_stale_handle() {
        assert_eq!(
            failure(RvError::KeyFunctionNotPermitted).scope,
            Scope::Object
        );
    }
}
