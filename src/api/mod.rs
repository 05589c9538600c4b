//! Request and response shapes of the KMS API (being written).
