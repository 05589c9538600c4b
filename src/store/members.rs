//! Domain membership: which tokens hold a domain key, as the ceremony recorded it
//! (`p11kms domain enrol`, `join`, `members`). The record is shared through the store so
//! that every operator of every replica sees the same list; the tokens themselves are the
//! truth of who holds the key, this table is the audit of how they came to hold it.

use crate::model::EpochSeconds;

/// One token enrolled in one domain. A token is identified by its manufacturer, model and
/// serial number (`C_GetTokenInfo`); its label is kept for the operator's eye.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainMember {
    /// The domain key's `CKA_ID`, in lower-case hex.
    pub domain_id: String,
    pub token_label: String,
    pub token_manufacturer: String,
    pub token_model: String,
    pub token_serial: String,
    /// SHA-256 of the transport public key (SPKI) the domain key travelled under, in
    /// lower-case hex; `None` for a token that held the key before any enrolment.
    pub transport_fingerprint: Option<String>,
    pub enrolled_at: EpochSeconds,
    /// Who enrolled it: the holder token's identity, or `holder` for the first member.
    pub enrolled_by: String,
}
