//! Why the gateway (or `p11kms doctor` / `p11kms domain`) cannot start: one error over the
//! set-up errors of each concern, printed by `main` with its chain of causes.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::{FileError, KmsError};
use crate::hsm::doctor::DoctorError;
use crate::hsm::{DomainModeError, OpenError, ProvisionError, KRYOPTIC_LIBRARY};
use crate::kms::domain::DomainSetupError;
use crate::kms::seed::SeedError;
use crate::store::StoreError;
use crate::telemetry::audit::AuditSetupError;
use crate::tls::TlsError;
use crate::wire::ThreadStartError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "the Kryoptic library ({KRYOPTIC_LIBRARY}) was not found next to p11kms or in \
         target/release: build it with `cargo build --release --manifest-path \
         tokens/kryoptic/Cargo.toml --target-dir target`, or set P11KMS_KRYOPTIC_MODULE"
    )]
    NoKryoptic,
    #[error("SoftHSM2 is not installed (apt-get install softhsm2), and hsm.module is not set")]
    NoSoftHsm,
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("the PIN variable {0} is not set")]
    PinVariableUnset(String),
    /// The data directory cannot be made, or the PIN file read.
    #[error(transparent)]
    File(#[from] FileError),
    #[error("no PIN configured")]
    NoPin,
    #[error("metrics")]
    Metrics(#[source] prometheus::Error),
    #[error(transparent)]
    Hsm(#[from] OpenError),
    #[error("cannot open {}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("cannot open the PostgreSQL store")]
    Postgres(#[source] StoreError),
    #[error(transparent)]
    Domain(#[from] DomainSetupError),
    #[error(transparent)]
    DomainMode(#[from] DomainModeError),
    #[error("cannot load adopted keys")]
    Adoptions(#[source] KmsError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Doctor(#[from] DoctorError),
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("cannot read the listening address")]
    ListenAddress(#[source] std::io::Error),
    #[error(transparent)]
    Audit(#[from] AuditSetupError),
    #[error(transparent)]
    Threads(#[from] ThreadStartError),
}

/// Why the log filter could not be changed (SIGHUP).
#[derive(Debug, thiserror::Error)]
pub enum LogReloadError {
    #[error("log level '{level}'")]
    Filter {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("log level reload")]
    Reload(#[source] tracing_subscriber::reload::Error),
    #[error("logging was not initialised by p11kms")]
    NotInitialised,
}
