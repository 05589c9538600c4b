//! From operation and raw body to the service core and back to JSON.
//!
//! Decoding, validation and encoding run on the async side ([`prepare`], then the returned
//! [`Encoder`]); only the service call itself runs on a core thread. With one HSM session
//! the core thread is the bottleneck, so whatever it does not have to do is throughput.

use crate::api::{encode, FromBody, Operation};
use crate::error::KmsError;
use crate::kms::{Caller, KmsService};

/// Encodes a response; runs on the async side.
pub type Encoder = Box<dyn FnOnce() -> Result<Vec<u8>, KmsError> + Send>;

/// The service call of a decoded, validated request; runs on a core thread.
pub type CoreCall = Box<dyn FnOnce(&KmsService, &Caller) -> Result<Encoder, KmsError> + Send>;

/// Decodes and validates the request body for `operation`.
pub fn prepare(operation: Operation, body: &[u8]) -> Result<CoreCall, KmsError> {
    macro_rules! call {
        ($method:ident) => {{
            let request = FromBody::from_body(body)?;
            Box::new(move |service: &KmsService, caller: &Caller| {
                let response = service.$method(caller, request)?;
                Ok(Box::new(move || encode(&response)) as Encoder)
            })
        }};
    }
    use Operation::*;
    Ok(match operation {
        CreateKey => call!(create_key),
        DescribeKey => call!(describe_key),
        ListKeys => call!(list_keys),
        EnableKey => call!(enable_key),
        DisableKey => call!(disable_key),
        ScheduleKeyDeletion => call!(schedule_key_deletion),
        CancelKeyDeletion => call!(cancel_key_deletion),
        UpdateKeyDescription => call!(update_key_description),
        CreateAlias => call!(create_alias),
        UpdateAlias => call!(update_alias),
        DeleteAlias => call!(delete_alias),
        ListAliases => call!(list_aliases),
        TagResource => call!(tag_resource),
        UntagResource => call!(untag_resource),
        ListResourceTags => call!(list_resource_tags),
        EnableKeyRotation => call!(enable_key_rotation),
        DisableKeyRotation => call!(disable_key_rotation),
        GetKeyRotationStatus => call!(get_key_rotation_status),
        RotateKeyOnDemand => call!(rotate_key_on_demand),
        ListKeyRotations => call!(list_key_rotations),
        Encrypt => call!(encrypt),
        Decrypt => call!(decrypt),
        ReEncrypt => call!(re_encrypt),
        GenerateDataKey => call!(generate_data_key),
        GenerateDataKeyWithoutPlaintext => call!(generate_data_key_without_plaintext),
        GenerateRandom => call!(generate_random),
        GetPublicKey => call!(get_public_key),
        Sign => call!(sign),
        Verify => call!(verify),
        GenerateMac => call!(generate_mac),
        VerifyMac => call!(verify_mac),
        GenerateDataKeyPair => call!(generate_data_key_pair),
        GenerateDataKeyPairWithoutPlaintext => call!(generate_data_key_pair_without_plaintext),
        CreateGrant => call!(create_grant),
        ListGrants => call!(list_grants),
        ListRetirableGrants => call!(list_retirable_grants),
        RetireGrant => call!(retire_grant),
        RevokeGrant => call!(revoke_grant),
        GetKeyPolicy => call!(get_key_policy),
        PutKeyPolicy => call!(put_key_policy),
        ListKeyPolicies => call!(list_key_policies),
        GetParametersForImport => call!(get_parameters_for_import),
        ImportKeyMaterial => call!(import_key_material),
        DeleteImportedKeyMaterial => call!(delete_imported_key_material),
    })
}
