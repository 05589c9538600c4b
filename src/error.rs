//! The one domain error type and its one mapping to the AWS wire.
//!
//! Every failure a request can meet becomes a [`KmsError`]. [`KmsError::wire`] is the only
//! place that decides the AWS exception name, HTTP status and message a client sees; adding a
//! variant makes the compiler point here (the rustls pattern). Messages never carry plaintext,
//! data keys, PINs or secrets: variants hold only identifiers and fixed text.

use std::fmt;

pub use crate::file_error::FileError;

/// A PKCS#11 failure: the function that failed and its CKR code, kept for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Failure {
    /// PKCS#11 function name, for example `C_UnwrapKey`.
    pub function: String,
    /// The CKR code's name, for example `CKR_DEVICE_ERROR`.
    pub rv: String,
}

impl fmt::Display for Pkcs11Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed with {}", self.function, self.rv)
    }
}

/// A metadata-store failure inside a [`KmsError`], its cause chain kept. Shared so that
/// `KmsError` stays cheap to clone; two are equal when their texts are.
#[derive(Debug, Clone)]
pub struct StoreFault(std::sync::Arc<crate::store::StoreError>);

impl StoreFault {
    /// The store's own error, for a caller that needs to tell its kinds apart.
    pub fn error(&self) -> &crate::store::StoreError {
        &self.0
    }
}

impl From<crate::store::StoreError> for StoreFault {
    fn from(error: crate::store::StoreError) -> Self {
        StoreFault(std::sync::Arc::new(error))
    }
}

/// The whole chain on one line: the edge logs a `KmsError` by its `Display`.
impl fmt::Display for StoreFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.chain())
    }
}

/// Its causes are the store error's causes (its own text is already in `Display`).
impl std::error::Error for StoreFault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

impl PartialEq for StoreFault {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for StoreFault {}

/// Everything that can go wrong in a request, in KMS terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    // --- request shape -------------------------------------------------------------------
    /// Constraint violation, with AWS's wording already formed
    /// (`1 validation error detected: ...`).
    #[error("validation: {0}")]
    Validation(String),
    /// The body was not JSON, or a member had the wrong JSON type.
    #[error("serialization: {0}")]
    Serialization(String),
    /// `X-Amz-Target` names no KMS operation.
    #[error("unknown operation")]
    UnknownOperation,
    /// Request body larger than the gateway accepts.
    #[error("request entity too large")]
    RequestTooLarge,
    /// The request body did not arrive before the request's deadline (`limits.request_timeout_ms`).
    #[error("request body not received within the deadline")]
    RequestTimeout,

    // --- authentication ------------------------------------------------------------------
    #[error("missing authentication token")]
    MissingAuthenticationToken,
    /// Malformed `Authorization` header, with AWS's explanation.
    #[error("incomplete signature: {0}")]
    IncompleteSignature(String),
    /// The access key id is not in the credential table.
    #[error("unrecognized client")]
    UnrecognizedClient,
    /// Signature mismatch or expired request; the message says which.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    #[error("access denied: {0}")]
    AccessDenied(String),

    // --- key lookup ------------------------------------------------------------------------
    /// `NotFoundException` with AWS's message, e.g. `Invalid keyId 'x'`,
    /// `Key '<arn>' does not exist`, `Alias <alias-arn> is not found.`
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// An ARN or name of a kind the operation does not take, e.g. an alias where only a key
    /// id or key ARN is accepted.
    #[error("invalid ARN: {0}")]
    InvalidArn(String),

    // --- key state and usage -------------------------------------------------------------
    /// `<key-arn> is disabled.`
    #[error("{arn} is disabled.")]
    Disabled { arn: String },
    /// `KMSInvalidStateException` with its message (`<arn> is pending deletion.`, ...).
    #[error("invalid state: {0}")]
    InvalidState(String),
    #[error("invalid key usage: {0}")]
    InvalidKeyUsage(String),
    #[error("incorrect key")]
    IncorrectKey,
    #[error("unsupported operation: {0}")]
    UnsupportedOperation(String),
    #[error("invalid marker")]
    InvalidMarker,
    #[error("invalid grant token")]
    InvalidGrantToken,
    /// RetireGrant/RevokeGrant with a grant id that is not a grant of the key.
    #[error("invalid grant id: {0}")]
    InvalidGrantId(String),
    /// A key policy that does not parse, or that would lock the caller out.
    #[error("malformed policy document: {0}")]
    MalformedPolicyDocument(String),
    #[error("invalid alias name: {0}")]
    InvalidAliasName(String),
    #[error("tag: {0}")]
    Tag(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),

    // --- cryptography ----------------------------------------------------------------------
    /// A ciphertext that does not open. Deliberately carries no reason.
    #[error("invalid ciphertext")]
    InvalidCiphertext,
    /// `DryRun` was set and the request would have succeeded.
    #[error("dry run")]
    DryRun,
    /// Verify: the signature does not verify (`KMSInvalidSignatureException`, no message).
    #[error("signature does not verify")]
    KmsInvalidSignature,
    /// VerifyMac: the MAC does not verify (`KMSInvalidMacException`, no message).
    #[error("MAC does not verify")]
    KmsInvalidMac,

    // --- capacity and dependencies -------------------------------------------------------
    /// No HSM session came free before the request's deadline.
    #[error("throttled")]
    Throttled,
    /// The HSM is away (token/library failure); the gateway is reinitialising it.
    #[error("HSM unavailable: {0}")]
    HsmUnavailable(Pkcs11Failure),
    /// The HSM did not answer in time.
    #[error("HSM timeout")]
    HsmTimeout,
    /// The request's work did not finish before its deadline (`limits.request_timeout_ms`).
    #[error("request deadline exceeded")]
    DeadlineExceeded,
    /// The token lacks a mechanism this request needs (named).
    #[error("mechanism unsupported by the HSM: {0}")]
    MechanismUnsupported(String),
    /// Any other PKCS#11 failure: a bug or an HSM misbehaving.
    #[error("PKCS#11: {0}")]
    Pkcs11(Pkcs11Failure),
    /// The audit trail cannot take this request's record (`audit.on_failure = "refuse"`).
    #[error("audit: {0}")]
    AuditUnavailable(crate::telemetry::audit::AuditRefusal),
    /// The metadata store cannot be reached or did not answer in time (for the log only);
    /// retryable.
    #[error("store unavailable: {0}")]
    StoreUnavailable(#[source] StoreFault),
    /// Metadata store failure (for the log only).
    #[error("store: {0}")]
    Store(#[source] StoreFault),
    /// An internal invariant broke (message for the log only).
    #[error("internal: {0}")]
    Internal(String),
}

/// What the wire shows for an error: AWS exception name, HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub code: &'static str,
    pub status: u16,
    /// `None` means the body has no `message` member at all (InvalidCiphertextException).
    pub message: Option<String>,
}

impl KmsError {
    /// The single, exhaustive mapping from domain errors to AWS's wire errors.
    pub fn wire(&self) -> WireError {
        use KmsError::*;
        let (code, status, message): (&'static str, u16, Option<String>) = match self {
            Validation(m) => ("ValidationException", 400, Some(m.clone())),
            Serialization(m) => ("SerializationException", 400, Some(m.clone())),
            UnknownOperation => ("UnknownOperationException", 400, None),
            RequestTooLarge => (
                "RequestEntityTooLargeException",
                413,
                Some("Request body is too large".into()),
            ),
            // What AWS front ends answer a request whose body stalls (Glacier's model; botocore
            // and the AWS SDKs retry it as a transient error).
            RequestTimeout => (
                "RequestTimeoutException",
                408,
                Some("The request body was not received within the request deadline.".into()),
            ),
            MissingAuthenticationToken => (
                "MissingAuthenticationTokenException",
                400,
                Some("Missing Authentication Token".into()),
            ),
            IncompleteSignature(m) => ("IncompleteSignatureException", 400, Some(m.clone())),
            UnrecognizedClient => (
                "UnrecognizedClientException",
                400,
                Some("The security token included in the request is invalid.".into()),
            ),
            InvalidSignature(m) => ("InvalidSignatureException", 400, Some(m.clone())),
            AccessDenied(m) => ("AccessDeniedException", 400, Some(m.clone())),
            NotFound(m) => ("NotFoundException", 400, Some(m.clone())),
            AlreadyExists(m) => ("AlreadyExistsException", 400, Some(m.clone())),
            InvalidArn(m) => ("InvalidArnException", 400, Some(m.clone())),
            Disabled { arn } => ("DisabledException", 400, Some(format!("{arn} is disabled."))),
            InvalidState(m) => ("KMSInvalidStateException", 400, Some(m.clone())),
            InvalidKeyUsage(m) => ("InvalidKeyUsageException", 400, Some(m.clone())),
            IncorrectKey => (
                "IncorrectKeyException",
                400,
                Some(
                    "The key ID in the request does not identify a CMK that can perform this operation."
                        .into(),
                ),
            ),
            UnsupportedOperation(m) => ("UnsupportedOperationException", 400, Some(m.clone())),
            InvalidMarker => (
                "InvalidMarkerException",
                400,
                Some("Invalid marker".into()),
            ),
            InvalidGrantToken => (
                "InvalidGrantTokenException",
                400,
                Some("Invalid grant token".into()),
            ),
            InvalidGrantId(m) => ("InvalidGrantIdException", 400, Some(m.clone())),
            MalformedPolicyDocument(m) => {
                ("MalformedPolicyDocumentException", 400, Some(m.clone()))
            }
            InvalidAliasName(m) => ("InvalidAliasNameException", 400, Some(m.clone())),
            Tag(m) => ("TagException", 400, Some(m.clone())),
            LimitExceeded(m) => ("LimitExceededException", 400, Some(m.clone())),
            InvalidCiphertext => ("InvalidCiphertextException", 400, None),
            KmsInvalidSignature => ("KMSInvalidSignatureException", 400, None),
            KmsInvalidMac => ("KMSInvalidMacException", 400, None),
            DryRun => (
                "DryRunOperationException",
                400,
                Some("The request would have succeeded, but the DryRun option is set.".into()),
            ),
            Throttled => (
                "ThrottlingException",
                400,
                Some("Rate exceeded".into()),
            ),
            HsmUnavailable(_) => (
                "KeyUnavailableException",
                500,
                Some("The HSM that holds the key material is currently unavailable.".into()),
            ),
            // botocore's KMS model marks DependencyTimeoutException a server fault with no
            // status of its own: 500, as AWS's API reference lists it.
            HsmTimeout => (
                "DependencyTimeoutException",
                500,
                Some("The HSM did not respond in time.".into()),
            ),
            StoreUnavailable(_) => (
                "DependencyTimeoutException",
                500,
                Some("The key metadata store did not respond in time. You can retry the request.".into()),
            ),
            DeadlineExceeded => (
                "DependencyTimeoutException",
                500,
                Some("The request did not complete within the request deadline.".into()),
            ),
            MechanismUnsupported(m) => (
                "UnsupportedOperationException",
                400,
                Some(format!(
                    "The HSM behind this gateway does not support the mechanism {m}."
                )),
            ),
            AuditUnavailable(refusal) => {
                use crate::telemetry::audit::AuditRefusal::*;
                let message = match refusal {
                    TrailFailing => "The audit trail cannot be written at the moment, so the request was not carried out. Retry later.",
                    RecordNotWritten | NotDurableInTime => "The request's audit record could not be written in time, so its result is withheld. The request may have taken effect.",
                    WriterStopped => "The audit trail is not being written, so the request's result is withheld.",
                };
                ("KMSInternalException", 500, Some(message.into()))
            }
            Pkcs11(_) | Store(_) | Internal(_) => (
                "KMSInternalException",
                500,
                Some("An internal error occurred.".into()),
            ),
        };
        WireError {
            code,
            status,
            message,
        }
    }

    /// Whether the edge should log this error: server faults, not client mistakes.
    pub fn is_server_fault(&self) -> bool {
        self.wire().status >= 500
    }

    /// `1 validation error detected: Value '<v>' at '<field>' failed to satisfy constraint: <c>`.
    pub fn constraint(value: impl fmt::Display, field: &str, constraint: &str) -> Self {
        KmsError::Validation(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
        ))
    }
}

pub type Result<T, E = KmsError> = std::result::Result<T, E>;

/// An error followed by each of its causes (`a: b: c`), for a log line or the console.
/// A cause whose text its parent already ends with is not repeated.
pub fn display_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_store_failure_keeps_its_cause_and_answers_as_before() {
        let cause = std::io::Error::other("disk on fire");
        let e = KmsError::from(StoreError::backend_from("cannot read a key row", cause));
        assert_eq!(
            e.to_string(),
            "store: store backend: cannot read a key row: disk on fire"
        );
        let fault = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<StoreFault>())
            .expect("the store error is the source");
        assert!(matches!(fault.error(), StoreError::Backend { .. }));
        assert_eq!(
            e.wire(),
            WireError {
                code: "KMSInternalException",
                status: 500,
                message: Some("An internal error occurred.".into()),
            }
        );
        assert_eq!(e.clone(), e);
        let e = KmsError::from(StoreError::unavailable("no connection free"));
        assert!(matches!(e, KmsError::StoreUnavailable(_)));
        assert_eq!(e.wire().code, "DependencyTimeoutException");
    }

    #[test]
    fn a_chain_joins_each_cause_once() {
        let e = FileError::on("read", std::path::Path::new("/x"))(std::io::Error::other("gone"));
        assert_eq!(display_chain(&e), "cannot read /x: gone");
        // A cause whose text the parent already carries is not repeated.
        let store = StoreError::backend_from("a row", std::io::Error::other("bad"));
        let twice = KmsError::from(store);
        assert_eq!(display_chain(&twice), "store: store backend: a row: bad");
    }
}
