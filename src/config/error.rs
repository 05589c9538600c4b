//! Why a configuration cannot be used. Every message names the setting (and its `P11KMS_*`
//! variable where that helps); none quotes a secret.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::FileError;
use crate::policy::PolicyError;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Read(#[from] FileError),
    /// The configuration file is not TOML of the expected shape.
    #[error("{}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{variable}: cannot parse '{value}'")]
    EnvNotParsed { variable: String, value: String },
    #[error("{variable}: expected true or false, got '{value}'")]
    EnvNotBool { variable: String, value: String },
    /// A setting that takes one of a few words got another.
    #[error("{setting}: expected {expected}, got '{got}'")]
    NotOneOf {
        setting: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error(transparent)]
    EmbeddedToken(#[from] crate::hsm::UnknownEmbeddedToken),
    /// A leaf error: its text is part of this one's, so it is not also a source.
    #[error("audit.on_failure: {0}")]
    AuditOnFailure(#[from] crate::telemetry::audit::UnknownOnFailure),
    #[error("{setting} must be at least {min}")]
    TooSmall { setting: &'static str, min: u64 },
    #[error("limits.{setting} ({variable}) must be at least 1 ms")]
    ZeroTimeout {
        setting: &'static str,
        variable: String,
    },
    #[error("listen: '{0}' is not a socket address")]
    Listen(String),
    #[error("account: '{0}' is not a 12-digit AWS account id")]
    Account(String),
    #[error(
        "listen: {0} is not a loopback address and TLS is not configured; set tls.cert_file \
         and tls.key_file (P11KMS_TLS_CERT_FILE, P11KMS_TLS_KEY_FILE), or allow_plain_http = true \
         (P11KMS_ALLOW_PLAIN_HTTP=true) when TLS terminates in front of the gateway"
    )]
    PlainHttpExposed(SocketAddr),
    /// Settings that do not fit together, or a value a rule refuses; the text names them.
    #[error("{0}")]
    Rule(&'static str),
    #[error("credential {access_key_id}")]
    Credential {
        access_key_id: String,
        #[source]
        source: CredentialError,
    },
}

/// Why a `[[credentials]]` entry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error(transparent)]
    Read(#[from] FileError),
    #[error("no secret_access_key, secret_access_key_env or secret_access_key_file")]
    NoSecret,
    #[error("identity policy {origin}")]
    Policy {
        origin: String,
        #[source]
        source: PolicyError,
    },
}
