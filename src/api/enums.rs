//! Enum value sets of the botocore KMS model (2014-11-01), in the model's order. Requests keep
//! enum members as `String` so an unknown value is a ValidationException listing these sets.

/// `KeyUsageType`.
pub const KEY_USAGE_VALUES: &[&str] = &[
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
];
/// `KeySpec`.
pub const KEY_SPEC_VALUES: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
];
/// `CustomerMasterKeySpec`.
pub const CUSTOMER_MASTER_KEY_SPEC_VALUES: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
];
/// `OriginType`.
pub const ORIGIN_VALUES: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];
/// `KeyState`.
pub const KEY_STATE_VALUES: &[&str] = &[
    "Creating",
    "Enabled",
    "Disabled",
    "PendingDeletion",
    "PendingImport",
    "PendingReplicaDeletion",
    "Unavailable",
    "Updating",
];
/// `KeyManagerType`.
pub const KEY_MANAGER_VALUES: &[&str] = &["AWS", "CUSTOMER"];
/// `ExpirationModelType`.
pub const EXPIRATION_MODEL_VALUES: &[&str] = super::commands::ExpirationModel::NAMES;
/// `EncryptionAlgorithmSpec`.
pub const ENCRYPTION_ALGORITHM_SPEC_VALUES: &[&str] = super::commands::EncryptionAlgorithm::NAMES;
/// `SigningAlgorithmSpec`.
pub const SIGNING_ALGORITHM_SPEC_VALUES: &[&str] = super::commands::SigningAlgorithm::NAMES;
/// `MacAlgorithmSpec`.
pub const MAC_ALGORITHM_SPEC_VALUES: &[&str] = super::commands::MacAlgorithm::NAMES;
/// `KeyAgreementAlgorithmSpec`.
pub const KEY_AGREEMENT_ALGORITHM_SPEC_VALUES: &[&str] = &["ECDH"];
/// `DataKeySpec`.
pub const DATA_KEY_SPEC_VALUES: &[&str] = super::commands::DataKeySpec::NAMES;
/// `DataKeyPairSpec`.
pub const DATA_KEY_PAIR_SPEC_VALUES: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SM2",
    "ECC_NIST_EDWARDS25519",
];
/// `MessageType`.
pub const MESSAGE_TYPE_VALUES: &[&str] = super::commands::MessageType::NAMES;
/// `GrantOperation`.
pub const GRANT_OPERATION_VALUES: &[&str] = super::commands::GrantOperation::NAMES;
/// `DryRunModifierType`.
pub const DRY_RUN_MODIFIER_TYPE_VALUES: &[&str] = super::commands::DryRunModifier::NAMES;
/// `KeyEncryptionMechanism`.
pub const KEY_ENCRYPTION_MECHANISM_VALUES: &[&str] = &["RSAES_OAEP_SHA_256"];
/// `IncludeKeyMaterial`.
pub const INCLUDE_KEY_MATERIAL_VALUES: &[&str] = super::commands::IncludeKeyMaterial::NAMES;
/// `MultiRegionKeyType`.
pub const MULTI_REGION_KEY_TYPE_VALUES: &[&str] = &["PRIMARY", "REPLICA"];
/// `RotationType`.
pub const ROTATION_TYPE_VALUES: &[&str] = &["AUTOMATIC", "ON_DEMAND"];
/// `ImportState`.
pub const IMPORT_STATE_VALUES: &[&str] = &["IMPORTED", "PENDING_IMPORT"];
/// `KeyMaterialState`.
pub const KEY_MATERIAL_STATE_VALUES: &[&str] = &[
    "NON_CURRENT",
    "CURRENT",
    "PENDING_ROTATION",
    "PENDING_MULTI_REGION_IMPORT_AND_ROTATION",
];
/// `AlgorithmSpec` (GetParametersForImport's wrapping algorithms).
pub const WRAPPING_ALGORITHM_VALUES: &[&str] = super::commands::WrappingAlgorithm::NAMES;
/// `WrappingKeySpec`.
pub const WRAPPING_KEY_SPEC_VALUES: &[&str] = super::commands::WrappingKeySpec::NAMES;
/// `ImportType`.
pub const IMPORT_TYPE_VALUES: &[&str] = super::commands::ImportType::NAMES;
