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
pub const EXPIRATION_MODEL_VALUES: &[&str] =
    &["KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"];
/// `EncryptionAlgorithmSpec`.
pub const ENCRYPTION_ALGORITHM_SPEC_VALUES: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];
/// `SigningAlgorithmSpec`.
pub const SIGNING_ALGORITHM_SPEC_VALUES: &[&str] = super::commands::SigningAlgorithm::NAMES;
/// `MacAlgorithmSpec`.
pub const MAC_ALGORITHM_SPEC_VALUES: &[&str] = super::commands::MacAlgorithm::NAMES;
/// `KeyAgreementAlgorithmSpec`.
pub const KEY_AGREEMENT_ALGORITHM_SPEC_VALUES: &[&str] = &["ECDH"];
/// `DataKeySpec`.
pub const DATA_KEY_SPEC_VALUES: &[&str] = &["AES_256", "AES_128"];
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
pub const GRANT_OPERATION_VALUES: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];
/// `DryRunModifierType`.
pub const DRY_RUN_MODIFIER_TYPE_VALUES: &[&str] = &["IGNORE_CIPHERTEXT"];
/// `KeyEncryptionMechanism`.
pub const KEY_ENCRYPTION_MECHANISM_VALUES: &[&str] = &["RSAES_OAEP_SHA_256"];
/// `IncludeKeyMaterial`.
pub const INCLUDE_KEY_MATERIAL_VALUES: &[&str] = &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"];
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
pub const WRAPPING_ALGORITHM_VALUES: &[&str] = &[
    "RSAES_PKCS1_V1_5",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
    "SM2PKE",
];
/// `WrappingKeySpec`.
pub const WRAPPING_KEY_SPEC_VALUES: &[&str] = &["RSA_2048", "RSA_3072", "RSA_4096", "SM2"];
/// `ImportType`.
pub const IMPORT_TYPE_VALUES: &[&str] = &["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"];
