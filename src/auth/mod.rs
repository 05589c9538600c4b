//! Authentication: AWS Signature Version 4 against a static credential table.

mod sigv4;

pub use sigv4::SigV4Verifier;

use secrecy::SecretString;

/// One entry of the credential table: access key id -> secret, account and principal.
#[derive(Clone)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// 12-digit account id the principal belongs to.
    pub account: String,
    /// The principal's ARN, e.g. `arn:aws:iam::111122223333:user/alice`.
    pub principal_arn: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("account", &self.account)
            .field("principal_arn", &self.principal_arn)
            .finish_non_exhaustive()
    }
}

/// Who a verified request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub access_key_id: String,
    pub account: String,
    pub arn: String,
}
