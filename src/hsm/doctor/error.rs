//! Why `p11kms doctor` cannot examine the token, and why a trial did not pass.

use crate::hsm::HsmError;

/// The module or the token cannot be reached: there is no report to give.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot load the module: {0}")]
    Module(HsmError),
    #[error("{0}")]
    Token(HsmError),
    #[error("cannot open a session: {0}")]
    Session(HsmError),
    #[error("cannot log in: {0}")]
    Login(HsmError),
}

/// A trial that failed (the PKCS#11 call and its CKR code) or was not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrialFailure {
    #[error("{function} -> {rv}")]
    Failed { function: String, rv: String },
    #[error("skipped: {0}")]
    Skipped(String),
}

impl From<HsmError> for TrialFailure {
    fn from(e: HsmError) -> Self {
        TrialFailure::Failed {
            function: e.function,
            rv: e.rv,
        }
    }
}
