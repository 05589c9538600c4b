//! (being written)
pub struct SigV4Verifier;
