//! Request and response shapes of the KMS operations, named and ordered as in botocore's model.
//!
//! Requests: every member is an `Option` (a missing required member is a ValidationException,
//! not a serde error), enum members are `String`, integers are `i64`, and each request's
//! [`Validate`] checks sit right under its members. Responses and shared structures: optional
//! members are skipped when `None`. Timestamps are `f64` epoch seconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::blob::{Blob, SecretBlob};
use super::enums::*;
use super::validate::*;
use crate::error::KmsError;

/// `EncryptionContextType`: string to string, kept sorted.
pub type EncryptionContext = BTreeMap<String, String>;

/// A request: all members optional on the wire, plus its model checks in member order.
macro_rules! request {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? }
     |$r:ident, $v:ident| $checks:block) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name {
            $($(#[$fdoc])* pub $field: Option<$ty>,)*
        }

        impl Validate for $name {
            fn validate(&self) -> Result<(), KmsError> {
                let $r = self;
                let mut $v = Violations::new();
                $checks
                $v.finish()
            }
        }

        impl super::commands::FromBody for $name {
            fn from_body(body: &[u8]) -> Result<Self, KmsError> {
                super::decode(body)
            }
        }
    };
}

/// A response or shared structure whose members are all optional.
macro_rules! shape {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name {
            $($(#[$fdoc])*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $field: Option<$ty>,)*
        }
    };
}

// ---- shared structures --------------------------------------------------------------------

shape!(
    /// `Tag`. Both members are required by the model; they are `Option` so that a missing one
    /// in a request is reported as `Value null at 'tags.1.member.tagKey'`.
    Tag { tag_key: String, tag_value: String }
);

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Tag {
            tag_key: Some(key.into()),
            tag_value: Some(value.into()),
        }
    }
}

shape!(GrantConstraints {
    encryption_context_subset: EncryptionContext,
    encryption_context_equals: EncryptionContext,
});

shape!(
    /// `RecipientInfo` (Nitro Enclaves attestation).
    RecipientInfo { key_encryption_algorithm: String, attestation_document: Blob }
);

shape!(MultiRegionKey {
    arn: String,
    region: String
});

shape!(MultiRegionConfiguration {
    multi_region_key_type: String,
    primary_key: MultiRegionKey,
    replica_keys: Vec<MultiRegionKey>,
});

shape!(
    /// `XksKeyConfigurationType`.
    XksKeyConfiguration { id: String }
);

shape!(KeyListEntry {
    key_id: String,
    key_arn: String
});

shape!(AliasListEntry {
    alias_name: String,
    alias_arn: String,
    target_key_id: String,
    creation_date: f64,
    last_updated_date: f64,
});

shape!(RotationsListEntry {
    key_id: String,
    key_material_id: String,
    key_material_description: String,
    import_state: String,
    key_material_state: String,
    expiration_model: String,
    valid_to: f64,
    rotation_date: f64,
    rotation_type: String,
});

shape!(GrantListEntry {
    key_id: String,
    grant_id: String,
    name: String,
    creation_date: f64,
    grantee_principal: String,
    retiring_principal: String,
    issuing_account: String,
    operations: Vec<String>,
    constraints: GrantConstraints,
});

/// `KeyMetadata`. `KeyId` is the only member the model requires.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    #[serde(
        rename = "AWSAccountId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub aws_account_id: Option<String>,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_usage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_hsm_cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_manager: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_master_key_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_agreement_algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region_configuration: Option<MultiRegionConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xks_key_configuration: Option<XksKeyConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_key_material_id: Option<String>,
}

// ---- keys -----------------------------------------------------------------------------------

request! {
    CreateKeyRequest {
        policy: String,
        description: String,
        key_usage: String,
        customer_master_key_spec: String,
        key_spec: String,
        origin: String,
        custom_key_store_id: String,
        bypass_policy_lockout_safety_check: bool,
        tags: Vec<Tag>,
        multi_region: bool,
        xks_key_id: String,
    }
    |r, v| {
        v.string("policy", &r.policy, &POLICY, OPTIONAL);
        v.string("description", &r.description, &DESCRIPTION, OPTIONAL);
        v.one_of("keyUsage", &r.key_usage, KEY_USAGE_VALUES, OPTIONAL);
        v.one_of(
            "customerMasterKeySpec",
            &r.customer_master_key_spec,
            CUSTOMER_MASTER_KEY_SPEC_VALUES,
            OPTIONAL,
        );
        v.one_of("keySpec", &r.key_spec, KEY_SPEC_VALUES, OPTIONAL);
        v.one_of("origin", &r.origin, ORIGIN_VALUES, OPTIONAL);
        v.string("customKeyStoreId", &r.custom_key_store_id, &CUSTOM_KEY_STORE_ID, OPTIONAL);
        v.tags(&r.tags, OPTIONAL);
        v.string("xksKeyId", &r.xks_key_id, &XKS_KEY_ID, OPTIONAL);
    }
}
shape!(CreateKeyResponse {
    key_metadata: KeyMetadata
});

request! {
    DescribeKeyRequest { key_id: String, grant_tokens: Vec<String> }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
    }
}
shape!(DescribeKeyResponse {
    key_metadata: KeyMetadata
});

request! {
    ListKeysRequest { limit: i64, marker: String }
    |r, v| {
        v.int("limit", &r.limit, &LIMIT, OPTIONAL);
        v.string("marker", &r.marker, &MARKER, OPTIONAL);
    }
}
shape!(ListKeysResponse { keys: Vec<KeyListEntry>, next_marker: String, truncated: bool });

request! {
    EnableKeyRequest { key_id: String }
    |r, v| { v.string("keyId", &r.key_id, &KEY_ID, REQUIRED); }
}
shape!(EnableKeyResponse {});

request! {
    DisableKeyRequest { key_id: String }
    |r, v| { v.string("keyId", &r.key_id, &KEY_ID, REQUIRED); }
}
shape!(DisableKeyResponse {});

request! {
    ScheduleKeyDeletionRequest { key_id: String, pending_window_in_days: i64 }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.int("pendingWindowInDays", &r.pending_window_in_days, &PENDING_WINDOW_IN_DAYS, OPTIONAL);
    }
}
shape!(ScheduleKeyDeletionResponse {
    key_id: String,
    deletion_date: f64,
    key_state: String,
    pending_window_in_days: i64,
});

request! {
    CancelKeyDeletionRequest { key_id: String }
    |r, v| { v.string("keyId", &r.key_id, &KEY_ID, REQUIRED); }
}
shape!(CancelKeyDeletionResponse { key_id: String });

request! {
    UpdateKeyDescriptionRequest { key_id: String, description: String }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.string("description", &r.description, &DESCRIPTION, REQUIRED);
    }
}
shape!(UpdateKeyDescriptionResponse {});

// ---- aliases --------------------------------------------------------------------------------

request! {
    CreateAliasRequest { alias_name: String, target_key_id: String }
    |r, v| {
        v.string("aliasName", &r.alias_name, &ALIAS_NAME, REQUIRED);
        v.string("targetKeyId", &r.target_key_id, &KEY_ID, REQUIRED);
    }
}
shape!(CreateAliasResponse {});

request! {
    UpdateAliasRequest { alias_name: String, target_key_id: String }
    |r, v| {
        v.string("aliasName", &r.alias_name, &ALIAS_NAME, REQUIRED);
        v.string("targetKeyId", &r.target_key_id, &KEY_ID, REQUIRED);
    }
}
shape!(UpdateAliasResponse {});

request! {
    DeleteAliasRequest { alias_name: String }
    |r, v| { v.string("aliasName", &r.alias_name, &ALIAS_NAME, REQUIRED); }
}
shape!(DeleteAliasResponse {});

request! {
    ListAliasesRequest { key_id: String, limit: i64, marker: String }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, OPTIONAL);
        v.int("limit", &r.limit, &LIMIT, OPTIONAL);
        v.string("marker", &r.marker, &MARKER, OPTIONAL);
    }
}
shape!(ListAliasesResponse { aliases: Vec<AliasListEntry>, next_marker: String, truncated: bool });

// ---- tags -----------------------------------------------------------------------------------

request! {
    TagResourceRequest { key_id: String, tags: Vec<Tag> }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.tags(&r.tags, REQUIRED);
    }
}
shape!(TagResourceResponse {});

request! {
    UntagResourceRequest { key_id: String, tag_keys: Vec<String> }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.string_list("tagKeys", &r.tag_keys, None, &TAG_KEY, REQUIRED);
    }
}
shape!(UntagResourceResponse {});

request! {
    ListResourceTagsRequest { key_id: String, limit: i64, marker: String }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.int("limit", &r.limit, &LIMIT, OPTIONAL);
        v.string("marker", &r.marker, &MARKER, OPTIONAL);
    }
}
shape!(ListResourceTagsResponse { tags: Vec<Tag>, next_marker: String, truncated: bool });

// ---- rotation -------------------------------------------------------------------------------

request! {
    EnableKeyRotationRequest { key_id: String, rotation_period_in_days: i64 }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.int(
            "rotationPeriodInDays",
            &r.rotation_period_in_days,
            &ROTATION_PERIOD_IN_DAYS,
            OPTIONAL,
        );
    }
}
shape!(EnableKeyRotationResponse {});

request! {
    DisableKeyRotationRequest { key_id: String }
    |r, v| { v.string("keyId", &r.key_id, &KEY_ID, REQUIRED); }
}
shape!(DisableKeyRotationResponse {});

request! {
    GetKeyRotationStatusRequest { key_id: String }
    |r, v| { v.string("keyId", &r.key_id, &KEY_ID, REQUIRED); }
}
shape!(GetKeyRotationStatusResponse {
    key_rotation_enabled: bool,
    key_id: String,
    rotation_period_in_days: i64,
    next_rotation_date: f64,
    on_demand_rotation_start_date: f64,
});

request! {
    RotateKeyOnDemandRequest { key_id: String }
    |r, v| { v.string("keyId", &r.key_id, &KEY_ID, REQUIRED); }
}
shape!(RotateKeyOnDemandResponse { key_id: String });

request! {
    ListKeyRotationsRequest {
        key_id: String,
        include_key_material: String,
        limit: i64,
        marker: String,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.one_of(
            "includeKeyMaterial",
            &r.include_key_material,
            INCLUDE_KEY_MATERIAL_VALUES,
            OPTIONAL,
        );
        v.int("limit", &r.limit, &LIMIT, OPTIONAL);
        v.string("marker", &r.marker, &MARKER, OPTIONAL);
    }
}
shape!(ListKeyRotationsResponse {
    rotations: Vec<RotationsListEntry>,
    next_marker: String,
    truncated: bool,
});

// ---- symmetric and asymmetric encryption ---------------------------------------------------

request! {
    EncryptRequest {
        key_id: String,
        plaintext: SecretBlob,
        encryption_context: EncryptionContext,
        grant_tokens: Vec<String>,
        encryption_algorithm: String,
        dry_run: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.blob("plaintext", &r.plaintext, &PLAINTEXT, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
        v.one_of(
            "encryptionAlgorithm",
            &r.encryption_algorithm,
            ENCRYPTION_ALGORITHM_SPEC_VALUES,
            OPTIONAL,
        );
    }
}
shape!(EncryptResponse {
    ciphertext_blob: Blob,
    key_id: String,
    encryption_algorithm: String
});

request! {
    /// `CiphertextBlob` is optional in the model (Recipient / `IGNORE_CIPHERTEXT` dry runs).
    DecryptRequest {
        ciphertext_blob: Blob,
        encryption_context: EncryptionContext,
        grant_tokens: Vec<String>,
        key_id: String,
        encryption_algorithm: String,
        recipient: RecipientInfo,
        dry_run: bool,
        dry_run_modifiers: Vec<String>,
    }
    |r, v| {
        v.blob("ciphertextBlob", &r.ciphertext_blob, &CIPHERTEXT, OPTIONAL);
        v.grant_tokens(&r.grant_tokens);
        v.string("keyId", &r.key_id, &KEY_ID, OPTIONAL);
        v.one_of(
            "encryptionAlgorithm",
            &r.encryption_algorithm,
            ENCRYPTION_ALGORITHM_SPEC_VALUES,
            OPTIONAL,
        );
        v.recipient(&r.recipient);
        v.enum_list(
            "dryRunModifiers",
            &r.dry_run_modifiers,
            DRY_RUN_MODIFIER_TYPE_VALUES,
            OPTIONAL,
        );
    }
}
shape!(DecryptResponse {
    key_id: String,
    plaintext: SecretBlob,
    encryption_algorithm: String,
    ciphertext_for_recipient: Blob,
    key_material_id: String,
});

request! {
    /// `CiphertextBlob` is optional in the model (`IGNORE_CIPHERTEXT` dry runs).
    ReEncryptRequest {
        ciphertext_blob: Blob,
        source_encryption_context: EncryptionContext,
        source_key_id: String,
        destination_key_id: String,
        destination_encryption_context: EncryptionContext,
        source_encryption_algorithm: String,
        destination_encryption_algorithm: String,
        grant_tokens: Vec<String>,
        dry_run: bool,
        dry_run_modifiers: Vec<String>,
    }
    |r, v| {
        v.blob("ciphertextBlob", &r.ciphertext_blob, &CIPHERTEXT, OPTIONAL);
        v.string("sourceKeyId", &r.source_key_id, &KEY_ID, OPTIONAL);
        v.string("destinationKeyId", &r.destination_key_id, &KEY_ID, REQUIRED);
        v.one_of(
            "sourceEncryptionAlgorithm",
            &r.source_encryption_algorithm,
            ENCRYPTION_ALGORITHM_SPEC_VALUES,
            OPTIONAL,
        );
        v.one_of(
            "destinationEncryptionAlgorithm",
            &r.destination_encryption_algorithm,
            ENCRYPTION_ALGORITHM_SPEC_VALUES,
            OPTIONAL,
        );
        v.grant_tokens(&r.grant_tokens);
        v.enum_list(
            "dryRunModifiers",
            &r.dry_run_modifiers,
            DRY_RUN_MODIFIER_TYPE_VALUES,
            OPTIONAL,
        );
    }
}
shape!(ReEncryptResponse {
    ciphertext_blob: Blob,
    source_key_id: String,
    key_id: String,
    source_encryption_algorithm: String,
    destination_encryption_algorithm: String,
    source_key_material_id: String,
    destination_key_material_id: String,
});

// ---- data keys and randomness ---------------------------------------------------------------

request! {
    GenerateDataKeyRequest {
        key_id: String,
        encryption_context: EncryptionContext,
        number_of_bytes: i64,
        key_spec: String,
        grant_tokens: Vec<String>,
        recipient: RecipientInfo,
        dry_run: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.int("numberOfBytes", &r.number_of_bytes, &NUMBER_OF_BYTES, OPTIONAL);
        v.one_of("keySpec", &r.key_spec, DATA_KEY_SPEC_VALUES, OPTIONAL);
        v.grant_tokens(&r.grant_tokens);
        v.recipient(&r.recipient);
    }
}
shape!(GenerateDataKeyResponse {
    ciphertext_blob: Blob,
    plaintext: SecretBlob,
    key_id: String,
    ciphertext_for_recipient: Blob,
    key_material_id: String,
});

request! {
    GenerateDataKeyWithoutPlaintextRequest {
        key_id: String,
        encryption_context: EncryptionContext,
        key_spec: String,
        number_of_bytes: i64,
        grant_tokens: Vec<String>,
        dry_run: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.one_of("keySpec", &r.key_spec, DATA_KEY_SPEC_VALUES, OPTIONAL);
        v.int("numberOfBytes", &r.number_of_bytes, &NUMBER_OF_BYTES, OPTIONAL);
        v.grant_tokens(&r.grant_tokens);
    }
}
shape!(GenerateDataKeyWithoutPlaintextResponse {
    ciphertext_blob: Blob,
    key_id: String,
    key_material_id: String,
});

request! {
    GenerateDataKeyPairRequest {
        encryption_context: EncryptionContext,
        key_id: String,
        key_pair_spec: String,
        grant_tokens: Vec<String>,
        recipient: RecipientInfo,
        dry_run: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.one_of("keyPairSpec", &r.key_pair_spec, DATA_KEY_PAIR_SPEC_VALUES, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
        v.recipient(&r.recipient);
    }
}
shape!(GenerateDataKeyPairResponse {
    private_key_ciphertext_blob: Blob,
    private_key_plaintext: SecretBlob,
    public_key: Blob,
    key_id: String,
    key_pair_spec: String,
    ciphertext_for_recipient: Blob,
    key_material_id: String,
});

request! {
    GenerateDataKeyPairWithoutPlaintextRequest {
        encryption_context: EncryptionContext,
        key_id: String,
        key_pair_spec: String,
        grant_tokens: Vec<String>,
        dry_run: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.one_of("keyPairSpec", &r.key_pair_spec, DATA_KEY_PAIR_SPEC_VALUES, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
    }
}
shape!(GenerateDataKeyPairWithoutPlaintextResponse {
    private_key_ciphertext_blob: Blob,
    public_key: Blob,
    key_id: String,
    key_pair_spec: String,
    key_material_id: String,
});

request! {
    /// `NumberOfBytes` is optional in the model; the service core handles its absence.
    GenerateRandomRequest {
        number_of_bytes: i64,
        custom_key_store_id: String,
        recipient: RecipientInfo,
    }
    |r, v| {
        v.int("numberOfBytes", &r.number_of_bytes, &NUMBER_OF_BYTES, OPTIONAL);
        v.string("customKeyStoreId", &r.custom_key_store_id, &CUSTOM_KEY_STORE_ID, OPTIONAL);
        v.recipient(&r.recipient);
    }
}
shape!(GenerateRandomResponse {
    plaintext: SecretBlob,
    ciphertext_for_recipient: Blob
});

// ---- signing and MACs -----------------------------------------------------------------------

request! {
    GetPublicKeyRequest { key_id: String, grant_tokens: Vec<String> }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
    }
}
shape!(GetPublicKeyResponse {
    key_id: String,
    public_key: Blob,
    customer_master_key_spec: String,
    key_spec: String,
    key_usage: String,
    encryption_algorithms: Vec<String>,
    signing_algorithms: Vec<String>,
    key_agreement_algorithms: Vec<String>,
});

request! {
    SignRequest {
        key_id: String,
        message: SecretBlob,
        message_type: String,
        grant_tokens: Vec<String>,
        signing_algorithm: String,
        dry_run: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.blob("message", &r.message, &PLAINTEXT, REQUIRED);
        v.one_of("messageType", &r.message_type, MESSAGE_TYPE_VALUES, OPTIONAL);
        v.grant_tokens(&r.grant_tokens);
        v.one_of("signingAlgorithm", &r.signing_algorithm, SIGNING_ALGORITHM_SPEC_VALUES, REQUIRED);
    }
}
shape!(SignResponse {
    key_id: String,
    signature: Blob,
    signing_algorithm: String
});

request! {
    VerifyRequest {
        key_id: String,
        message: SecretBlob,
        message_type: String,
        signature: Blob,
        signing_algorithm: String,
        grant_tokens: Vec<String>,
        dry_run: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.blob("message", &r.message, &PLAINTEXT, REQUIRED);
        v.one_of("messageType", &r.message_type, MESSAGE_TYPE_VALUES, OPTIONAL);
        v.blob("signature", &r.signature, &CIPHERTEXT, REQUIRED);
        v.one_of("signingAlgorithm", &r.signing_algorithm, SIGNING_ALGORITHM_SPEC_VALUES, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
    }
}
shape!(VerifyResponse {
    key_id: String,
    signature_valid: bool,
    signing_algorithm: String
});

request! {
    GenerateMacRequest {
        message: SecretBlob,
        key_id: String,
        mac_algorithm: String,
        grant_tokens: Vec<String>,
        dry_run: bool,
    }
    |r, v| {
        v.blob("message", &r.message, &PLAINTEXT, REQUIRED);
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.one_of("macAlgorithm", &r.mac_algorithm, MAC_ALGORITHM_SPEC_VALUES, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
    }
}
shape!(GenerateMacResponse {
    mac: Blob,
    mac_algorithm: String,
    key_id: String
});

request! {
    VerifyMacRequest {
        message: SecretBlob,
        key_id: String,
        mac_algorithm: String,
        mac: Blob,
        grant_tokens: Vec<String>,
        dry_run: bool,
    }
    |r, v| {
        v.blob("message", &r.message, &PLAINTEXT, REQUIRED);
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.one_of("macAlgorithm", &r.mac_algorithm, MAC_ALGORITHM_SPEC_VALUES, REQUIRED);
        v.blob("mac", &r.mac, &CIPHERTEXT, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
    }
}
shape!(VerifyMacResponse {
    key_id: String,
    mac_valid: bool,
    mac_algorithm: String
});

// ---- grants ---------------------------------------------------------------------------------

request! {
    CreateGrantRequest {
        key_id: String,
        grantee_principal: String,
        retiring_principal: String,
        operations: Vec<String>,
        constraints: GrantConstraints,
        grant_tokens: Vec<String>,
        name: String,
        dry_run: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.string("granteePrincipal", &r.grantee_principal, &PRINCIPAL_ID, REQUIRED);
        v.string("retiringPrincipal", &r.retiring_principal, &PRINCIPAL_ID, OPTIONAL);
        v.enum_list("operations", &r.operations, GRANT_OPERATION_VALUES, REQUIRED);
        v.grant_tokens(&r.grant_tokens);
        v.string("name", &r.name, &GRANT_NAME, OPTIONAL);
    }
}
shape!(CreateGrantResponse {
    grant_token: String,
    grant_id: String
});

request! {
    ListGrantsRequest {
        limit: i64,
        marker: String,
        key_id: String,
        grant_id: String,
        grantee_principal: String,
    }
    |r, v| {
        v.int("limit", &r.limit, &LIMIT, OPTIONAL);
        v.string("marker", &r.marker, &MARKER, OPTIONAL);
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.string("grantId", &r.grant_id, &GRANT_ID, OPTIONAL);
        v.string("granteePrincipal", &r.grantee_principal, &PRINCIPAL_ID, OPTIONAL);
    }
}
shape!(ListGrantsResponse { grants: Vec<GrantListEntry>, next_marker: String, truncated: bool });

request! {
    ListRetirableGrantsRequest { limit: i64, marker: String, retiring_principal: String }
    |r, v| {
        v.int("limit", &r.limit, &LIMIT, OPTIONAL);
        v.string("marker", &r.marker, &MARKER, OPTIONAL);
        v.string("retiringPrincipal", &r.retiring_principal, &PRINCIPAL_ID, REQUIRED);
    }
}
/// ListRetirableGrants answers with the `ListGrantsResponse` shape.
pub type ListRetirableGrantsResponse = ListGrantsResponse;

request! {
    RetireGrantRequest { grant_token: String, key_id: String, grant_id: String, dry_run: bool }
    |r, v| {
        v.string("grantToken", &r.grant_token, &GRANT_TOKEN, OPTIONAL);
        v.string("keyId", &r.key_id, &KEY_ID, OPTIONAL);
        v.string("grantId", &r.grant_id, &GRANT_ID, OPTIONAL);
    }
}
shape!(RetireGrantResponse {});

request! {
    RevokeGrantRequest { key_id: String, grant_id: String, dry_run: bool }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.string("grantId", &r.grant_id, &GRANT_ID, REQUIRED);
    }
}
shape!(RevokeGrantResponse {});

// ---- key policies ---------------------------------------------------------------------------

request! {
    GetKeyPolicyRequest { key_id: String, policy_name: String }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.string("policyName", &r.policy_name, &POLICY_NAME, OPTIONAL);
    }
}
shape!(GetKeyPolicyResponse {
    policy: String,
    policy_name: String
});

request! {
    PutKeyPolicyRequest {
        key_id: String,
        policy_name: String,
        policy: String,
        bypass_policy_lockout_safety_check: bool,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.string("policyName", &r.policy_name, &POLICY_NAME, OPTIONAL);
        v.string("policy", &r.policy, &POLICY, REQUIRED);
    }
}
shape!(PutKeyPolicyResponse {});

request! {
    ListKeyPoliciesRequest { key_id: String, limit: i64, marker: String }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.int("limit", &r.limit, &LIMIT, OPTIONAL);
        v.string("marker", &r.marker, &MARKER, OPTIONAL);
    }
}
shape!(ListKeyPoliciesResponse { policy_names: Vec<String>, next_marker: String, truncated: bool });

// ---- imported key material ------------------------------------------------------------------
// Every key here has origin AWS_KMS, so these only ever answer AWS's refusal; the requests are
// still checked against the model first, as AWS does.

request! {
    GetParametersForImportRequest { key_id: String, wrapping_algorithm: String, wrapping_key_spec: String }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.one_of("wrappingAlgorithm", &r.wrapping_algorithm, WRAPPING_ALGORITHM_VALUES, REQUIRED);
        v.one_of("wrappingKeySpec", &r.wrapping_key_spec, WRAPPING_KEY_SPEC_VALUES, REQUIRED);
    }
}
shape!(GetParametersForImportResponse {
    key_id: String,
    import_token: Blob,
    public_key: Blob,
    parameters_valid_to: f64,
});

request! {
    ImportKeyMaterialRequest {
        key_id: String,
        import_token: Blob,
        encrypted_key_material: Blob,
        valid_to: f64,
        expiration_model: String,
        import_type: String,
        key_material_description: String,
        key_material_id: String,
    }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.blob("importToken", &r.import_token, &CIPHERTEXT, REQUIRED);
        v.blob("encryptedKeyMaterial", &r.encrypted_key_material, &CIPHERTEXT, REQUIRED);
        v.one_of("expirationModel", &r.expiration_model, EXPIRATION_MODEL_VALUES, OPTIONAL);
        v.one_of("importType", &r.import_type, IMPORT_TYPE_VALUES, OPTIONAL);
        v.string(
            "keyMaterialDescription",
            &r.key_material_description,
            &KEY_MATERIAL_DESCRIPTION,
            OPTIONAL,
        );
        v.string("keyMaterialId", &r.key_material_id, &KEY_MATERIAL_ID, OPTIONAL);
    }
}
shape!(ImportKeyMaterialResponse {
    key_id: String,
    key_material_id: String
});

request! {
    DeleteImportedKeyMaterialRequest { key_id: String, key_material_id: String }
    |r, v| {
        v.string("keyId", &r.key_id, &KEY_ID, REQUIRED);
        v.string("keyMaterialId", &r.key_material_id, &KEY_MATERIAL_ID, OPTIONAL);
    }
}
shape!(DeleteImportedKeyMaterialResponse {
    key_id: String,
    key_material_id: String
});
