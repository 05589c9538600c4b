//! What a provider's failure means in KMS terms: the one mapping from
//! [`ProviderError`] to [`KmsError`], and the decision about client-supplied ciphertexts.
//!
//! The match is exhaustive with no catch-all arm, so that a new provider error makes the
//! compiler point here.

use crate::error::{KmsError, Pkcs11Failure};
use crate::hsm::{HsmError, MaterialSourceError, ProviderError, Scope};
use crate::store::StoreError;

impl From<ProviderError> for KmsError {
    fn from(e: ProviderError) -> Self {
        match e {
            // Refused data that does not count as the client's fault here (see
            // `on_client_ciphertext`) is a PKCS#11 failure like any other.
            ProviderError::Pkcs11(e) | ProviderError::RejectedData(e) => pkcs11_error(e),
            ProviderError::Busy => KmsError::Throttled,
            ProviderError::TokenUnavailable { function, reason } => {
                KmsError::HsmUnavailable(Pkcs11Failure {
                    function,
                    rv: reason,
                })
            }
            ProviderError::MechanismUnsupported(mechanism) => {
                KmsError::MechanismUnsupported(mechanism)
            }
            // AWS answers `KMSInvalidStateException` for a key in a custom key store that
            // its HSMs cannot serve. The message names the domain key (an identifier, not a
            // secret) and what to do.
            ProviderError::MissingDomainKey(id) => KmsError::InvalidState(format!(
                "the domain key {id} that wraps this key's material is not in this replica's HSM \
                 token; enrol the token in it (p11kms domain enrol --domain {id})"
            )),
            ProviderError::MaterialSource(MaterialSourceError::Unavailable(message)) => {
                KmsError::StoreUnavailable(StoreError::unavailable(message).into())
            }
            ProviderError::MaterialSource(MaterialSourceError::Failed(message)) => {
                KmsError::Store(StoreError::backend(message).into())
            }
            ProviderError::Internal(message) => KmsError::Internal(message),
        }
    }
}

/// A lost token, or a session still lost after the retries on fresh ones, is the HSM being
/// unavailable (`KeyUnavailableException`), not an internal error; an operation cut at its
/// deadline is the HSM not answering in time.
fn pkcs11_error(e: HsmError) -> KmsError {
    if e.is_deadline() {
        return KmsError::HsmTimeout;
    }
    let failure = Pkcs11Failure {
        function: e.function,
        rv: e.rv,
    };
    match e.scope {
        Scope::Token | Scope::Session => KmsError::HsmUnavailable(failure),
        Scope::Data | Scope::Object => KmsError::Pkcs11(failure),
    }
}

/// A provider failure of an operation on a ciphertext the client sent: data the token
/// refused as not authenticating is `InvalidCiphertextException` (which says nothing more);
/// anything else keeps its own meaning.
pub(crate) fn on_client_ciphertext(e: ProviderError) -> KmsError {
    if e.is_bad_data() {
        KmsError::InvalidCiphertext
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;
    use cryptoki::error::{Error as CkError, RvError};

    use super::*;
    use crate::model::DomainKeyId;

    fn failure(rv: RvError) -> HsmError {
        HsmError::from(CkError::Pkcs11(rv, Function::DeriveKey))
    }

    fn wire_of(e: ProviderError) -> (&'static str, u16) {
        let wire = KmsError::from(e).wire();
        (wire.code, wire.status)
    }

    #[test]
    fn a_token_outage_is_key_unavailable() {
        let e = ProviderError::Pkcs11(failure(RvError::DeviceError));
        assert_eq!(wire_of(e), ("KeyUnavailableException", 500));
    }

    #[test]
    fn a_session_still_lost_after_the_retries_is_key_unavailable() {
        let e = ProviderError::Pkcs11(failure(RvError::SessionHandleInvalid));
        assert_eq!(wire_of(e), ("KeyUnavailableException", 500));
    }

    #[test]
    fn a_data_scope_failure_is_internal() {
        let e = ProviderError::Pkcs11(failure(RvError::MechanismInvalid));
        assert_eq!(wire_of(e), ("KMSInternalException", 500));
    }

    #[test]
    fn an_operation_cut_at_its_deadline_is_a_dependency_timeout() {
        let cut = failure(RvError::FunctionCanceled);
        assert_eq!(
            wire_of(ProviderError::Pkcs11(cut.clone())),
            ("DependencyTimeoutException", 500)
        );
        let on_ciphertext = on_client_ciphertext(ProviderError::RejectedData(cut)).wire();
        assert_eq!(on_ciphertext.code, "DependencyTimeoutException");
    }

    #[test]
    fn refused_client_data_is_an_invalid_ciphertext_only_on_a_client_ciphertext() {
        let refused = ProviderError::RejectedData(failure(RvError::EncryptedDataInvalid));
        assert_eq!(
            on_client_ciphertext(refused.clone()),
            KmsError::InvalidCiphertext
        );
        assert_eq!(wire_of(refused), ("KMSInternalException", 500));
        let ours = ProviderError::Pkcs11(failure(RvError::EncryptedDataInvalid));
        assert_eq!(
            on_client_ciphertext(ours).wire().code,
            "KMSInternalException"
        );
    }

    #[test]
    fn a_busy_provider_throttles() {
        assert_eq!(wire_of(ProviderError::Busy), ("ThrottlingException", 400));
    }

    #[test]
    fn an_unavailable_token_is_key_unavailable() {
        let e = ProviderError::token_unavailable("C_Initialize", "token not yet reinitialised");
        assert_eq!(wire_of(e), ("KeyUnavailableException", 500));
    }

    #[test]
    fn a_missing_mechanism_is_an_unsupported_operation() {
        let e = ProviderError::MechanismUnsupported("CKM_EC_KEY_PAIR_GEN on secp256k1".into());
        let wire = KmsError::from(e).wire();
        assert_eq!(
            (wire.code, wire.status),
            ("UnsupportedOperationException", 400)
        );
        assert!(wire.message.unwrap().contains("secp256k1"));
    }

    #[test]
    fn a_missing_domain_key_is_an_invalid_state_naming_it() {
        let id = DomainKeyId::new_random();
        let wire = KmsError::from(ProviderError::MissingDomainKey(id)).wire();
        assert_eq!(wire.code, "KMSInvalidStateException");
        assert!(wire.message.unwrap().contains(&id.to_string()));
    }

    #[test]
    fn the_material_store_keeps_its_own_meaning() {
        let down = ProviderError::MaterialSource(MaterialSourceError::Unavailable("x".into()));
        assert_eq!(wire_of(down), ("DependencyTimeoutException", 500));
        let broken = ProviderError::MaterialSource(MaterialSourceError::Failed("x".into()));
        assert_eq!(wire_of(broken), ("KMSInternalException", 500));
    }

    #[test]
    fn a_broken_invariant_is_internal() {
        let e = ProviderError::Internal("object handle count".into());
        assert_eq!(wire_of(e), ("KMSInternalException", 500));
    }
}
