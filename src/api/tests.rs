use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::enums::*;
use super::*;
use crate::model::{KeyOrigin, KeySpec, KeyUsage};

fn decode_json<T: serde::de::DeserializeOwned + Validate>(v: Value) -> Result<T, KmsError> {
    decode(v.to_string().as_bytes())
}

fn validation_msg<T: serde::de::DeserializeOwned + Validate + std::fmt::Debug>(v: Value) -> String {
    match decode_json::<T>(v) {
        Err(KmsError::Validation(m)) => m,
        other => panic!("expected a ValidationException, got {other:?}"),
    }
}

fn b64(n: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::from_slice(&encode(t).unwrap()).unwrap()
}

// ---- operations -----------------------------------------------------------------------------

#[test]
fn operation_targets_round_trip() {
    assert_eq!(Operation::ALL.len(), 44);
    for op in Operation::ALL {
        let target = format!("TrentService.{}", op.name());
        assert_eq!(Operation::from_target(&target), Some(*op));
    }
    assert_eq!(
        Operation::from_target("TrentService.GenerateDataKeyPairWithoutPlaintext"),
        Some(Operation::GenerateDataKeyPairWithoutPlaintext)
    );
    assert_eq!(Operation::from_target("GenerateRandom"), None);
    assert_eq!(Operation::from_target("TrentService.generaterandom"), None);
    assert_eq!(Operation::from_target("TrentService.ReplicateKey"), None);
    assert_eq!(Operation::from_target("Foo.Encrypt"), None);
}

// ---- exact AWS messages ---------------------------------------------------------------------

#[test]
fn generate_random_number_of_bytes_bounds() {
    assert_eq!(
        validation_msg::<GenerateRandomRequest>(json!({"NumberOfBytes": 0})),
        "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: \
         Member must have value greater than or equal to 1"
    );
    assert_eq!(
        validation_msg::<GenerateRandomRequest>(json!({"NumberOfBytes": 1025})),
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: \
         Member must have value less than or equal to 1024"
    );
    assert!(
        validation_msg::<GenerateRandomRequest>(json!({"NumberOfBytes": -5}))
            .contains("Value '-5' at 'numberOfBytes'")
    );
    // Optional in the model: absence is the service core's business.
    let r: GenerateRandomRequest = decode(b"{}").unwrap();
    assert!(r.number_of_bytes.is_none());
    let r: GenerateRandomRequest = decode(b"").unwrap();
    assert!(r.number_of_bytes.is_none());
    let r: GenerateRandomRequest = decode_json(json!({"NumberOfBytes": 1024})).unwrap();
    assert_eq!(r.number_of_bytes, Some(1024));
}

#[test]
fn create_key_tag_lengths() {
    let key = "k".repeat(129);
    assert_eq!(
        validation_msg::<CreateKeyRequest>(json!({"Tags": [{"TagKey": key, "TagValue": "v"}]})),
        format!(
            "1 validation error detected: Value '{key}' at 'tags.1.member.tagKey' failed to satisfy \
             constraint: Member must have length less than or equal to 128"
        )
    );
    let value = "v".repeat(257);
    assert_eq!(
        validation_msg::<CreateKeyRequest>(json!({"Tags": [
            {"TagKey": "ok", "TagValue": "ok"},
            {"TagKey": "a", "TagValue": value},
        ]})),
        format!(
            "1 validation error detected: Value '{value}' at 'tags.2.member.tagValue' failed to \
             satisfy constraint: Member must have length less than or equal to 256"
        )
    );
    assert_eq!(
        validation_msg::<TagResourceRequest>(json!({"KeyId": "k", "Tags": [{"TagValue": "v"}]})),
        "1 validation error detected: Value null at 'tags.1.member.tagKey' failed to satisfy \
         constraint: Member must not be null"
    );
    // Empty tag values are allowed (min 0); 128/256 are the limits.
    let ok = json!({"Tags": [{"TagKey": "k".repeat(128), "TagValue": ""}, {"TagKey": "x", "TagValue": "v".repeat(256)}]});
    decode_json::<CreateKeyRequest>(ok).unwrap();
}

#[test]
fn create_key_usage_enum() {
    assert_eq!(
        validation_msg::<CreateKeyRequest>(json!({"KeyUsage": "RANDOM"})),
        "1 validation error detected: Value 'RANDOM' at 'keyUsage' failed to satisfy constraint: \
         Member must satisfy enum value set: [SIGN_VERIFY, ENCRYPT_DECRYPT, GENERATE_VERIFY_MAC, KEY_AGREEMENT]"
    );
    let r: CreateKeyRequest =
        decode_json(json!({"KeyUsage": "SIGN_VERIFY", "KeySpec": "ECC_NIST_P256"})).unwrap();
    assert_eq!(r.key_spec.as_deref(), Some("ECC_NIST_P256"));
}

#[test]
fn re_encrypt_destination_algorithm_enum() {
    assert_eq!(
        validation_msg::<ReEncryptRequest>(json!({
            "CiphertextBlob": b64(10), "DestinationKeyId": "k",
            "DestinationEncryptionAlgorithm": "RSAES_FOO",
        })),
        "1 validation error detected: Value 'RSAES_FOO' at 'destinationEncryptionAlgorithm' failed \
         to satisfy constraint: Member must satisfy enum value set: \
         [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]"
    );
}

#[test]
fn grant_tokens_list_length() {
    let tokens: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let m = validation_msg::<EncryptRequest>(
        json!({"KeyId": "k", "Plaintext": b64(1), "GrantTokens": tokens}),
    );
    assert_eq!(
        m,
        "1 validation error detected: Value '[t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10]' at \
         'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10"
    );
    let m = validation_msg::<DescribeKeyRequest>(json!({"KeyId": "k", "GrantTokens": ["a", ""]}));
    assert_eq!(
        m,
        "1 validation error detected: Value '[a, ]' at 'grantTokens' failed to satisfy constraint: \
         Member must satisfy constraint: [Member must have length less than or equal to 8192, \
         Member must have length greater than or equal to 1]"
    );
    decode_json::<DescribeKeyRequest>(json!({"KeyId": "k", "GrantTokens": vec!["t"; 10]})).unwrap();
}

#[test]
fn ciphertext_blob_lengths() {
    let m = validation_msg::<DecryptRequest>(json!({"CiphertextBlob": b64(6145)}));
    assert!(m.starts_with("1 validation error detected"), "{m}");
    assert_eq!(
        m,
        "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: Member must have length less than or equal to 6144"
    );
    assert_eq!(
        validation_msg::<DecryptRequest>(json!({"CiphertextBlob": ""})),
        "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
    let r: DecryptRequest = decode_json(json!({"CiphertextBlob": b64(6144)})).unwrap();
    assert_eq!(r.ciphertext_blob.map(|b| b.len()), Some(6144));
}

#[test]
fn secret_blob_values_are_never_printed() {
    // "SECRET!!" in base64; neither it nor its encoding may appear in the message.
    let secret = "U0VDUkVUISE=";
    let m = validation_msg::<EncryptRequest>(json!({"KeyId": "", "Plaintext": secret}));
    assert!(!m.contains(secret) && !m.contains("SECRET"), "{m}");
    // awsfact: TestKMS::test_plaintext_size_for_encrypt / invalid-plaintext-size-encrypt
    assert_eq!(
        validation_msg::<EncryptRequest>(json!({"KeyId": "k", "Plaintext": b64(4097)})),
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"
    );
    let big = b64(4097);
    let m = validation_msg::<SignRequest>(
        json!({"KeyId": "k", "Message": big, "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    assert_eq!(
        m,
        "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length less than or equal to 4096"
    );
}

#[test]
fn required_members_are_reported_as_null() {
    let null_key =
        "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: \
                    Member must not be null";
    assert_eq!(validation_msg::<DescribeKeyRequest>(json!({})), null_key);
    assert_eq!(
        validation_msg::<DescribeKeyRequest>(json!({"KeyId": null})),
        null_key
    );
    assert_eq!(
        validation_msg::<EnableKeyRequest>(json!({"Other": 1})),
        null_key
    );
    assert_eq!(
        validation_msg::<ReEncryptRequest>(json!({"CiphertextBlob": "AAAA"})),
        "1 validation error detected: Value null at 'destinationKeyId' failed to satisfy \
         constraint: Member must not be null"
    );
    assert_eq!(
        validation_msg::<CreateAliasRequest>(json!({"AliasName": "alias/x"})),
        "1 validation error detected: Value null at 'targetKeyId' failed to satisfy constraint: \
         Member must not be null"
    );
    assert_eq!(
        validation_msg::<GenerateMacRequest>(json!({"KeyId": "k"})),
        "2 validation errors detected: Value null at 'message' failed to satisfy constraint: \
         Member must not be null; Value null at 'macAlgorithm' failed to satisfy constraint: \
         Member must not be null"
    );
    assert_eq!(
        null_member("ciphertextBlob").wire().message.as_deref(),
        Some(
            "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy \
             constraint: Member must not be null"
        )
    );
    // Optional-in-model members stay optional.
    decode::<DecryptRequest>(b"{}").unwrap();
    decode::<ListKeysRequest>(b"{}").unwrap();
    decode::<CreateKeyRequest>(b"").unwrap();
}

#[test]
fn multiple_violations_in_member_order() {
    assert_eq!(
        validation_msg::<CreateAliasRequest>(json!({"AliasName": "", "TargetKeyId": ""})),
        "3 validation errors detected: \
         Value '' at 'aliasName' failed to satisfy constraint: Member must have length greater than or equal to 1; \
         Value '' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$; \
         Value '' at 'targetKeyId' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
    assert_eq!(
        validation_msg::<ListKeysRequest>(json!({"Limit": 1001, "Marker": "é\u{100}"})),
        "2 validation errors detected: \
         Value '1001' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 1000; \
         Value 'é\u{100}' at 'marker' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\u0020-\\u00FF]*"
    );
}

#[test]
fn patterns_and_enum_lists() {
    assert_eq!(
        validation_msg::<DeleteAliasRequest>(json!({"AliasName": "alias/bad name"})),
        "1 validation error detected: Value 'alias/bad name' at 'aliasName' failed to satisfy \
         constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
    );
    decode_json::<DeleteAliasRequest>(json!({"AliasName": "alias/Good_one-1:x"})).unwrap();
    assert_eq!(
        validation_msg::<CreateGrantRequest>(json!({
            "KeyId": "k", "GranteePrincipal": "arn:aws:iam::111122223333:role/r",
            "Operations": ["Encrypt", "Nope"],
        })),
        format!(
            "1 validation error detected: Value '[Encrypt, Nope]' at 'operations' failed to satisfy \
             constraint: Member must satisfy constraint: [Member must satisfy enum value set: [{}]]",
            GRANT_OPERATION_VALUES.join(", ")
        )
    );
    assert!(validation_msg::<CreateGrantRequest>(json!({
        "KeyId": "k", "GranteePrincipal": "a b", "Operations": ["Encrypt"],
    }))
    .contains("at 'granteePrincipal' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[\\w+=,.@:/-]+$"));
    assert!(validation_msg::<PutKeyPolicyRequest>(json!({"KeyId": "k", "Policy": "{\u{2028}}"}))
        .contains("at 'policy' failed to satisfy constraint: Member must satisfy regular expression pattern"));
    decode_json::<PutKeyPolicyRequest>(
        json!({"KeyId": "k", "PolicyName": "default", "Policy": "{\n\t\"a\": \"é\"\r\n}"}),
    )
    .unwrap();
    assert!(
        validation_msg::<GetKeyPolicyRequest>(json!({"KeyId": "k", "PolicyName": "de-fault"}))
            .contains("Member must satisfy regular expression pattern: [\\w]+")
    );
    assert!(validation_msg::<UntagResourceRequest>(json!({"KeyId": "k", "TagKeys": ["a", ""]}))
        .contains("Value '[a, ]' at 'tagKeys' failed to satisfy constraint: Member must satisfy constraint: ["));
    assert!(validation_msg::<DecryptRequest>(
        json!({"CiphertextBlob": "AAAA", "Recipient": {"KeyEncryptionAlgorithm": "X"}})
    )
    .contains("Value 'X' at 'recipient.keyEncryptionAlgorithm'"));
}

#[test]
fn lengths_count_utf16_units() {
    // 128 astral characters are 256 UTF-16 units, as Java's String.length() counts them.
    let key = "\u{1F600}".repeat(64);
    decode_json::<CreateKeyRequest>(json!({"Tags": [{"TagKey": key, "TagValue": ""}]})).unwrap();
    let key = "\u{1F600}".repeat(65);
    assert!(
        validation_msg::<CreateKeyRequest>(json!({"Tags": [{"TagKey": key, "TagValue": ""}]}))
            .contains("less than or equal to 128")
    );
}

// ---- serde ----------------------------------------------------------------------------------

#[test]
fn serialization_errors_do_not_echo_input() {
    for body in [
        &b"{"[..],
        b"not json",
        b"{\"KeyId\": 12345678}",
        b"{\"KeyId\": \"k\", \"GrantTokens\": \"secret-token\"}",
        b"{\"KeyId\": \"k\", \"Plaintext\": \"c2VjcmV0!!\"}",
        b"{\"KeyId\": \"k\", \"Plaintext\": 5}",
        b"[]",
    ] {
        match decode::<EncryptRequest>(body) {
            Err(KmsError::Serialization(m)) => {
                assert!(
                    !m.contains("secret") && !m.contains("12345678") && !m.contains("c2Vj"),
                    "{m}"
                )
            }
            other => panic!("expected SerializationException, got {other:?}"),
        }
    }
    assert_eq!(
        decode::<EncryptRequest>(b"{\"KeyId\": \"k\", \"Plaintext\": \"***\"}").err(),
        Some(KmsError::Serialization(
            "A blob member is not valid base64.".into()
        ))
    );
    assert!(matches!(
        decode::<ListKeysRequest>(b"{\"Limit\": 99999999999999999999}"),
        Err(KmsError::Serialization(_))
    ));
}

#[test]
fn base64_round_trips() {
    let bytes: Vec<u8> = (0..=255).collect();
    let blob = Blob(bytes.clone());
    let text = serde_json::to_string(&blob).unwrap();
    assert_eq!(serde_json::from_str::<Blob>(&text).unwrap(), blob);
    let secret = SecretBlob::from(bytes.clone());
    let text2 = serde_json::to_string(&secret).unwrap();
    assert_eq!(text, text2);
    assert_eq!(
        serde_json::from_str::<SecretBlob>(&text2).unwrap().expose(),
        &bytes[..]
    );

    assert_eq!(
        serde_json::to_string(&Blob(b"hello".to_vec())).unwrap(),
        "\"aGVsbG8=\""
    );
    assert_eq!(serde_json::to_string(&Blob(vec![])).unwrap(), "\"\"");
    // Padding is accepted but not required; escaped slashes decode too.
    assert_eq!(
        serde_json::from_str::<Blob>("\"aGVsbG8\"")
            .unwrap()
            .as_bytes(),
        b"hello"
    );
    assert_eq!(
        serde_json::from_str::<Blob>("\"\\/\\/8=\"")
            .unwrap()
            .as_bytes(),
        &[0xff, 0xff]
    );
    assert!(serde_json::from_str::<Blob>("\"aGVsbG8-\"").is_err());
    assert!(serde_json::from_str::<Blob>("\"a\"").is_err());

    let r: EncryptRequest = decode(b"{\"KeyId\":\"k\",\"Plaintext\":\"aGVsbG8=\"}").unwrap();
    assert_eq!(
        r.plaintext.as_ref().map(|p| p.expose()),
        Some(&b"hello"[..])
    );
}

#[test]
fn secret_blob_debug_is_redacted() {
    let s = SecretBlob::new(Zeroizing::new(b"top secret".to_vec()));
    assert_eq!(format!("{s:?}"), "SecretBlob(10 bytes)");
    let r: EncryptRequest =
        decode(b"{\"KeyId\":\"k\",\"Plaintext\":\"dG9wIHNlY3JldA==\"}").unwrap();
    let dbg = format!("{r:?}");
    assert!(
        !dbg.contains("top secret") && !dbg.contains("dG9w") && !dbg.contains("116"),
        "{dbg}"
    );
    let resp = GenerateDataKeyResponse {
        plaintext: Some(s),
        ..Default::default()
    };
    assert!(!format!("{resp:?}").contains("top secret"));
    assert_eq!(format!("{:?}", Blob(vec![1, 2, 3])), "Blob(3 bytes)");
}

#[test]
fn key_metadata_field_names() {
    let md = KeyMetadata {
        aws_account_id: Some("111122223333".into()),
        key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        arn: Some(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        ),
        creation_date: Some(1_700_000_000.5),
        enabled: Some(true),
        description: Some(String::new()),
        key_usage: Some("ENCRYPT_DECRYPT".into()),
        key_state: Some("PendingDeletion".into()),
        deletion_date: Some(1_700_600_000.0),
        origin: Some("AWS_KMS".into()),
        key_manager: Some("CUSTOMER".into()),
        customer_master_key_spec: Some("SYMMETRIC_DEFAULT".into()),
        key_spec: Some("SYMMETRIC_DEFAULT".into()),
        encryption_algorithms: Some(vec!["SYMMETRIC_DEFAULT".into()]),
        signing_algorithms: Some(vec![]),
        mac_algorithms: Some(vec![]),
        multi_region: Some(false),
        pending_deletion_window_in_days: Some(7),
        current_key_material_id: Some("ab".repeat(32)),
        ..Default::default()
    };
    let v = to_value(&CreateKeyResponse {
        key_metadata: Some(md),
    });
    let obj = v["KeyMetadata"].as_object().unwrap();
    let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = vec![
        "AWSAccountId",
        "KeyId",
        "Arn",
        "CreationDate",
        "Enabled",
        "Description",
        "KeyUsage",
        "KeyState",
        "DeletionDate",
        "Origin",
        "KeyManager",
        "CustomerMasterKeySpec",
        "KeySpec",
        "EncryptionAlgorithms",
        "SigningAlgorithms",
        "MacAlgorithms",
        "MultiRegion",
        "PendingDeletionWindowInDays",
        "CurrentKeyMaterialId",
    ];
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert_eq!(v["KeyMetadata"]["CreationDate"], json!(1_700_000_000.5));
    assert_eq!(v["KeyMetadata"]["Enabled"], json!(true));
    assert_eq!(v["KeyMetadata"]["PendingDeletionWindowInDays"], json!(7));

    // Only KeyId when nothing else is set.
    let v = to_value(&KeyMetadata {
        key_id: "x".into(),
        ..Default::default()
    });
    assert_eq!(v, json!({"KeyId": "x"}));
}

#[test]
fn responses_skip_none_and_empty_is_braces() {
    assert_eq!(encode(&EnableKeyResponse {}).unwrap(), b"{}");
    assert_eq!(encode(&PutKeyPolicyResponse::default()).unwrap(), b"{}");
    assert_eq!(to_value(&EncryptResponse::default()), json!({}));
    let v = to_value(&GenerateDataKeyResponse {
        ciphertext_blob: Some(Blob(b"ct".to_vec())),
        plaintext: Some(SecretBlob::from(b"pt".to_vec())),
        key_id: Some("arn".into()),
        ..Default::default()
    });
    assert_eq!(
        v,
        json!({"CiphertextBlob": "Y3Q=", "Plaintext": "cHQ=", "KeyId": "arn"})
    );
    let v = to_value(&ListResourceTagsResponse {
        tags: Some(vec![Tag::new("k", "v")]),
        truncated: Some(false),
        ..Default::default()
    });
    assert_eq!(
        v,
        json!({"Tags": [{"TagKey": "k", "TagValue": "v"}], "Truncated": false})
    );
    let v = to_value(&ListGrantsResponse {
        grants: Some(vec![GrantListEntry {
            grant_id: Some("g".into()),
            operations: Some(vec!["Encrypt".into()]),
            constraints: Some(GrantConstraints {
                encryption_context_subset: Some([("a".to_string(), "b".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    assert_eq!(
        v,
        json!({"Grants": [{"GrantId": "g", "Operations": ["Encrypt"],
                           "Constraints": {"EncryptionContextSubset": {"a": "b"}}}]})
    );
    let v = to_value(&ListAliasesResponse {
        aliases: Some(vec![AliasListEntry {
            alias_name: Some("alias/a".into()),
            last_updated_date: Some(1.0),
            ..Default::default()
        }]),
        next_marker: Some("m".into()),
        ..Default::default()
    });
    assert_eq!(
        v,
        json!({"Aliases": [{"AliasName": "alias/a", "LastUpdatedDate": 1.0}], "NextMarker": "m"})
    );
}

#[test]
fn request_member_names_match_the_model() {
    let r: CreateKeyRequest = decode_json(json!({
        "Policy": "{}", "Description": "d", "KeyUsage": "ENCRYPT_DECRYPT",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT", "KeySpec": "SYMMETRIC_DEFAULT",
        "Origin": "AWS_KMS", "CustomKeyStoreId": "cks-1", "BypassPolicyLockoutSafetyCheck": true,
        "Tags": [{"TagKey": "a", "TagValue": "b"}], "MultiRegion": false, "XksKeyId": "x-1",
    }))
    .unwrap();
    assert!(r.policy.is_some() && r.description.is_some() && r.custom_key_store_id.is_some());
    assert_eq!(r.bypass_policy_lockout_safety_check, Some(true));
    assert_eq!(r.multi_region, Some(false));
    assert_eq!(r.xks_key_id.as_deref(), Some("x-1"));

    let r: ReEncryptRequest = decode_json(json!({
        "CiphertextBlob": "AAAA", "SourceEncryptionContext": {"a": "1"}, "SourceKeyId": "s",
        "DestinationKeyId": "d", "DestinationEncryptionContext": {"b": "2"},
        "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT", "DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
        "GrantTokens": ["t"], "DryRun": true, "DryRunModifiers": ["IGNORE_CIPHERTEXT"],
    }))
    .unwrap();
    assert_eq!(r.source_encryption_context.unwrap()["a"], "1");
    assert_eq!(r.destination_encryption_context.unwrap()["b"], "2");
    assert_eq!(r.dry_run_modifiers.unwrap(), vec!["IGNORE_CIPHERTEXT"]);

    let r: CreateGrantRequest = decode_json(json!({
        "KeyId": "k", "GranteePrincipal": "arn:aws:iam::111122223333:user/u",
        "RetiringPrincipal": "111122223333", "Operations": ["Decrypt", "ReEncryptFrom"],
        "Constraints": {"EncryptionContextEquals": {"x": "y"}}, "Name": "grant-1", "DryRun": false,
    }))
    .unwrap();
    assert_eq!(
        r.constraints.unwrap().encryption_context_equals.unwrap()["x"],
        "y"
    );

    let r: GenerateDataKeyRequest = decode_json(json!({
        "KeyId": "k", "NumberOfBytes": 32, "KeySpec": "AES_256",
        "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": "AAAA"},
    }))
    .unwrap();
    assert_eq!(r.recipient.unwrap().attestation_document.unwrap().len(), 3);

    let r: VerifyMacRequest = decode_json(json!({
        "KeyId": "k", "Message": "AAAA", "Mac": "AAAA", "MacAlgorithm": "HMAC_SHA_256",
    }))
    .unwrap();
    assert_eq!(r.mac.unwrap().len(), 3);
    assert_eq!(r.message.unwrap().len(), 3);
}

#[test]
fn integer_ranges() {
    assert!(validation_msg::<ScheduleKeyDeletionRequest>(json!({"KeyId": "k", "PendingWindowInDays": 366}))
        .ends_with("Value '366' at 'pendingWindowInDays' failed to satisfy constraint: Member must have value less than or equal to 365"));
    // 7..30 is a service rule, not a model constraint.
    decode_json::<ScheduleKeyDeletionRequest>(json!({"KeyId": "k", "PendingWindowInDays": 3}))
        .unwrap();
    assert!(validation_msg::<EnableKeyRotationRequest>(json!({"KeyId": "k", "RotationPeriodInDays": 89}))
        .ends_with("Value '89' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value greater than or equal to 90"));
    assert!(
        validation_msg::<ListAliasesRequest>(json!({"Limit": 0})).contains("Value '0' at 'limit'")
    );
}

// ---- typed commands -------------------------------------------------------------------------

fn command_error<C: FromBody + std::fmt::Debug>(v: &Value) -> String {
    match C::from_body(v.to_string().as_bytes()) {
        Err(KmsError::Validation(m)) => m,
        other => panic!("expected a ValidationException, got {other:?}"),
    }
}

#[test]
fn signing_and_mac_requests_decode_into_typed_commands() {
    let sign = SignCommand::from_body(
        br#"{"KeyId":"k","Message":"aGVsbG8=","SigningAlgorithm":"ECDSA_SHA_256"}"#,
    )
    .unwrap();
    assert_eq!(sign.key_id, "k");
    assert_eq!(sign.signing_algorithm, SigningAlgorithm::EcdsaSha256);
    assert_eq!(sign.message_type, MessageType::Raw);
    let mac = GenerateMacCommand::from_body(
        br#"{"KeyId":"k","Message":"aGVsbG8=","MacAlgorithm":"HMAC_SHA_384"}"#,
    )
    .unwrap();
    assert_eq!(mac.mac_algorithm, MacAlgorithm::HmacSha384);
    // The value sets the model checks are the enums' own names.
    assert_eq!(SIGNING_ALGORITHM_SPEC_VALUES.len(), 13);
    assert_eq!(MAC_ALGORITHM_SPEC_VALUES, MacAlgorithm::NAMES);
}

#[test]
fn a_command_refuses_what_its_request_refuses_word_for_word() {
    for body in [
        json!({"KeyId": "k", "Message": "aGVsbG8="}),
        json!({"KeyId": "k", "Message": "aGVsbG8=", "MacAlgorithm": "HMAC_SHA_1"}),
        json!({"Message": "aGVsbG8=", "MacAlgorithm": "HMAC_SHA_256"}),
    ] {
        assert_eq!(
            command_error::<VerifyMacCommand>(&body),
            validation_msg::<VerifyMacRequest>(body.clone())
        );
    }
    let body = json!({"KeyId": "k", "Message": "aGVsbG8=", "MessageType": "HASHED"});
    assert_eq!(
        command_error::<VerifyCommand>(&body),
        validation_msg::<VerifyRequest>(body.clone())
    );
}

/// A command made of `body` refuses it with its request's own message.
fn refuses_as_its_request<C, R>(body: Value)
where
    C: FromBody + std::fmt::Debug,
    R: serde::de::DeserializeOwned + Validate + std::fmt::Debug,
{
    assert_eq!(
        command_error::<C>(&body),
        validation_msg::<R>(body.clone()),
        "{body}"
    );
}

/// For each `Command: Request` pair, an empty body (every required member null, in the
/// model's order) is refused word for word as the request refuses it.
macro_rules! empty_body_refused_alike {
    ($($command:ty: $request:ty),* $(,)?) => {
        $(refuses_as_its_request::<$command, $request>(json!({}));)*
    };
}

#[test]
fn every_command_refuses_missing_members_as_its_request() {
    empty_body_refused_alike!(
        EncryptCommand: EncryptRequest,
        ReEncryptCommand: ReEncryptRequest,
        GenerateDataKeyCommand: GenerateDataKeyRequest,
        GenerateDataKeyWithoutPlaintextCommand: GenerateDataKeyWithoutPlaintextRequest,
        GenerateDataKeyPairCommand: GenerateDataKeyPairRequest,
        GenerateDataKeyPairWithoutPlaintextCommand: GenerateDataKeyPairWithoutPlaintextRequest,
        GetPublicKeyCommand: GetPublicKeyRequest,
        DescribeKeyCommand: DescribeKeyRequest,
        EnableKeyCommand: EnableKeyRequest,
        DisableKeyCommand: DisableKeyRequest,
        ScheduleKeyDeletionCommand: ScheduleKeyDeletionRequest,
        CancelKeyDeletionCommand: CancelKeyDeletionRequest,
        UpdateKeyDescriptionCommand: UpdateKeyDescriptionRequest,
        CreateAliasCommand: CreateAliasRequest,
        UpdateAliasCommand: UpdateAliasRequest,
        DeleteAliasCommand: DeleteAliasRequest,
        TagResourceCommand: TagResourceRequest,
        UntagResourceCommand: UntagResourceRequest,
        ListResourceTagsCommand: ListResourceTagsRequest,
        EnableKeyRotationCommand: EnableKeyRotationRequest,
        DisableKeyRotationCommand: DisableKeyRotationRequest,
        GetKeyRotationStatusCommand: GetKeyRotationStatusRequest,
        RotateKeyOnDemandCommand: RotateKeyOnDemandRequest,
        ListKeyRotationsCommand: ListKeyRotationsRequest,
        CreateGrantCommand: CreateGrantRequest,
        ListGrantsCommand: ListGrantsRequest,
        ListRetirableGrantsCommand: ListRetirableGrantsRequest,
        RevokeGrantCommand: RevokeGrantRequest,
        GetKeyPolicyCommand: GetKeyPolicyRequest,
        PutKeyPolicyCommand: PutKeyPolicyRequest,
        ListKeyPoliciesCommand: ListKeyPoliciesRequest,
        GetParametersForImportCommand: GetParametersForImportRequest,
        ImportKeyMaterialCommand: ImportKeyMaterialRequest,
        DeleteImportedKeyMaterialCommand: DeleteImportedKeyMaterialRequest,
    );
    // One required member missing among present ones.
    refuses_as_its_request::<UpdateKeyDescriptionCommand, UpdateKeyDescriptionRequest>(
        json!({"KeyId": "k"}),
    );
    refuses_as_its_request::<CreateGrantCommand, CreateGrantRequest>(
        json!({"KeyId": "k", "GranteePrincipal": "p"}),
    );
    refuses_as_its_request::<TagResourceCommand, TagResourceRequest>(
        json!({"KeyId": "k", "Tags": [{"TagKey": "a", "TagValue": "b"}, {"TagKey": "c"}]}),
    );
    refuses_as_its_request::<CreateKeyCommand, CreateKeyRequest>(
        json!({"Tags": [{"TagValue": "b"}]}),
    );
}

#[test]
fn every_command_refuses_a_name_outside_its_enum_as_its_request() {
    let blob = "aGk=";
    refuses_as_its_request::<EncryptCommand, EncryptRequest>(
        json!({"KeyId": "k", "Plaintext": blob, "EncryptionAlgorithm": "RSAES_OAEP_SHA_512"}),
    );
    refuses_as_its_request::<DecryptCommand, DecryptRequest>(
        json!({"CiphertextBlob": blob, "EncryptionAlgorithm": "AES"}),
    );
    refuses_as_its_request::<DecryptCommand, DecryptRequest>(
        json!({"CiphertextBlob": blob, "DryRunModifiers": ["IGNORE_PLAINTEXT"]}),
    );
    for member in [
        "SourceEncryptionAlgorithm",
        "DestinationEncryptionAlgorithm",
    ] {
        let mut body = json!({"CiphertextBlob": blob, "DestinationKeyId": "k"});
        body[member] = json!("SM3");
        refuses_as_its_request::<ReEncryptCommand, ReEncryptRequest>(body);
    }
    refuses_as_its_request::<ReEncryptCommand, ReEncryptRequest>(
        json!({"DestinationKeyId": "k", "DryRunModifiers": ["IGNORE_CIPHERTEXT", "X"]}),
    );
    refuses_as_its_request::<GenerateDataKeyCommand, GenerateDataKeyRequest>(
        json!({"KeyId": "k", "KeySpec": "AES_512"}),
    );
    refuses_as_its_request::<
        GenerateDataKeyWithoutPlaintextCommand,
        GenerateDataKeyWithoutPlaintextRequest,
    >(json!({"KeyId": "k", "KeySpec": "AES_192"}));
    refuses_as_its_request::<GenerateDataKeyPairCommand, GenerateDataKeyPairRequest>(
        json!({"KeyId": "k", "KeyPairSpec": "RSA_1024"}),
    );
    refuses_as_its_request::<
        GenerateDataKeyPairWithoutPlaintextCommand,
        GenerateDataKeyPairWithoutPlaintextRequest,
    >(json!({"KeyId": "k", "KeyPairSpec": "HMAC_256"}));
    for body in [
        json!({"KeyUsage": "ENCRYPT"}),
        json!({"KeySpec": "AES_256"}),
        json!({"CustomerMasterKeySpec": "ML_DSA_44"}),
        json!({"Origin": "SOFTHSM"}),
    ] {
        refuses_as_its_request::<CreateKeyCommand, CreateKeyRequest>(body);
    }
    refuses_as_its_request::<ListKeyRotationsCommand, ListKeyRotationsRequest>(
        json!({"KeyId": "k", "IncludeKeyMaterial": "ALL"}),
    );
    refuses_as_its_request::<CreateGrantCommand, CreateGrantRequest>(
        json!({"KeyId": "k", "GranteePrincipal": "p", "Operations": ["Encrypt", "Fly"]}),
    );
    refuses_as_its_request::<GetParametersForImportCommand, GetParametersForImportRequest>(
        json!({"KeyId": "k", "WrappingAlgorithm": "RSA_AES", "WrappingKeySpec": "RSA_1024"}),
    );
    refuses_as_its_request::<ImportKeyMaterialCommand, ImportKeyMaterialRequest>(json!({
        "KeyId": "k", "ImportToken": blob, "EncryptedKeyMaterial": blob,
        "ExpirationModel": "NEVER", "ImportType": "OLD_KEY_MATERIAL",
    }));
}

#[test]
fn members_the_core_required_are_refused_with_its_messages() {
    let null = |path: &str| {
        format!("1 validation error detected: Value null at '{path}' failed to satisfy constraint: Member must not be null")
    };
    assert_eq!(
        command_error::<DecryptCommand>(&json!({"KeyId": "k"})),
        null("ciphertextBlob")
    );
    assert_eq!(
        command_error::<GenerateRandomCommand>(&json!({})),
        "NumberOfBytes is required."
    );
    for body in [json!({}), json!({"KeyId": "k"}), json!({"GrantId": "g"})] {
        assert_eq!(
            command_error::<RetireGrantCommand>(&body),
            "Either GrantToken, or both KeyId and GrantId, must be specified."
        );
    }
    // ReEncrypt's path-dependent members decode, and are refused once the core gets there.
    let missing = |body: Value| match ReEncryptCommand::from_body(body.to_string().as_bytes()) {
        Ok(ReEncryptCommand {
            source: ReEncryptSource::Missing(member),
            ..
        }) => match KmsError::from(member) {
            KmsError::Validation(m) => m,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(
        missing(json!({"DestinationKeyId": "d", "SourceKeyId": "s"})),
        null("ciphertextBlob")
    );
    assert_eq!(
        missing(
            json!({"DestinationKeyId": "d", "CiphertextBlob": "aGk=", "DryRun": true,
                       "DryRunModifiers": ["IGNORE_CIPHERTEXT"]})
        ),
        null("sourceKeyId")
    );
}

#[test]
fn good_bodies_decode_into_typed_commands() {
    let body = |v: Value| v.to_string().into_bytes();
    let encrypt = EncryptCommand::from_body(&body(json!({
        "KeyId": "k", "Plaintext": "aGk=", "EncryptionAlgorithm": "RSAES_OAEP_SHA_256",
    })))
    .unwrap();
    assert_eq!(encrypt.key_id, "k");
    assert_eq!(encrypt.plaintext.expose(), b"hi");
    assert_eq!(
        encrypt.encryption_algorithm,
        Some(EncryptionAlgorithm::RsaesOaepSha256)
    );
    let decrypt = DecryptCommand::from_body(&body(json!({"CiphertextBlob": "aGk="}))).unwrap();
    assert_eq!(decrypt.ciphertext_blob.as_bytes(), b"hi");
    assert_eq!(decrypt.encryption_algorithm, None);

    let re_encrypt = |v: Value| ReEncryptCommand::from_body(&body(v)).unwrap().source;
    assert!(matches!(
        re_encrypt(json!({"DestinationKeyId": "d", "CiphertextBlob": "aGk="})),
        ReEncryptSource::Ciphertext {
            source_key_id: None,
            ..
        }
    ));
    // IGNORE_CIPHERTEXT counts only in a dry run.
    assert!(matches!(
        re_encrypt(
            json!({"DestinationKeyId": "d", "CiphertextBlob": "aGk=", "SourceKeyId": "s",
                          "DryRunModifiers": ["IGNORE_CIPHERTEXT"]})
        ),
        ReEncryptSource::Ciphertext {
            source_key_id: Some(_),
            ..
        }
    ));
    assert!(matches!(
        re_encrypt(json!({"DestinationKeyId": "d", "SourceKeyId": "s", "DryRun": true,
                          "DryRunModifiers": ["IGNORE_CIPHERTEXT"]})),
        ReEncryptSource::AuthorizationOnly { source_key_id } if source_key_id == "s"
    ));

    let data_key =
        GenerateDataKeyCommand::from_body(&body(json!({"KeyId": "k", "KeySpec": "AES_128"})))
            .unwrap();
    assert_eq!(data_key.key_spec, Some(DataKeySpec::Aes128));
    let pair = |spec: &str| {
        GenerateDataKeyPairWithoutPlaintextCommand::from_body(&body(
            json!({"KeyId": "k", "KeyPairSpec": spec}),
        ))
        .unwrap()
        .key_pair_spec
    };
    assert_eq!(
        pair("ECC_NIST_P384"),
        WireName::Supported(KeySpec::EccNistP384)
    );
    assert_eq!(pair("SM2"), WireName::Unsupported("SM2".into()));
    assert_eq!(pair("SM2").to_string(), "SM2");
    let random = GenerateRandomCommand::from_body(&body(json!({"NumberOfBytes": 32}))).unwrap();
    assert_eq!(random.number_of_bytes, 32);

    let create = CreateKeyCommand::from_body(&body(json!({
        "KeySpec": "ECC_NIST_EDWARDS25519", "KeyUsage": "SIGN_VERIFY", "Origin": "EXTERNAL",
    })))
    .unwrap();
    assert_eq!(create.key_usage, Some(KeyUsage::SignVerify));
    assert_eq!(
        create.key_spec,
        Some(WireName::Unsupported("ECC_NIST_EDWARDS25519".into()))
    );
    assert_eq!(
        create.origin,
        Some(WireName::Supported(KeyOrigin::External))
    );
    assert_eq!(create.origin.unwrap().to_string(), "EXTERNAL");
    let create = CreateKeyCommand::from_body(b"{}").unwrap();
    assert_eq!((create.key_spec, create.key_usage), (None, None));

    let tag = TagResourceCommand::from_body(&body(
        json!({"KeyId": "k", "Tags": [{"TagKey": "a", "TagValue": ""}]}),
    ))
    .unwrap();
    assert_eq!(tag.tags.len(), 1);
    let rotations = ListKeyRotationsCommand::from_body(&body(
        json!({"KeyId": "k", "IncludeKeyMaterial": "ROTATIONS_ONLY"}),
    ))
    .unwrap();
    assert_eq!(
        rotations.include_key_material,
        Some(IncludeKeyMaterial::RotationsOnly)
    );

    let grant = CreateGrantCommand::from_body(&body(json!({
        "KeyId": "k", "GranteePrincipal": "p", "Operations": ["Decrypt", "RetireGrant"],
    })))
    .unwrap();
    assert_eq!(
        grant.operations,
        [GrantOperation::Decrypt, GrantOperation::RetireGrant]
    );
    let retire = |v: Value| RetireGrantCommand::from_body(&body(v)).unwrap().grant;
    assert!(matches!(
        retire(json!({"GrantToken": "t", "KeyId": "k", "GrantId": "g"})),
        GrantToRetire::Token(t) if t == "t"
    ));
    assert!(matches!(
        retire(json!({"KeyId": "k", "GrantId": "g"})),
        GrantToRetire::Id { key_id, grant_id } if key_id == "k" && grant_id == "g"
    ));
    let import = GetParametersForImportCommand::from_body(&body(json!({
        "KeyId": "k", "WrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256", "WrappingKeySpec": "SM2",
    })))
    .unwrap();
    assert_eq!(
        (import.wrapping_algorithm, import.wrapping_key_spec),
        (WrappingAlgorithm::RsaAesKeyWrapSha256, WrappingKeySpec::Sm2)
    );
}

#[test]
fn the_model_value_sets_are_the_command_enums_names() {
    assert_eq!(
        ENCRYPTION_ALGORITHM_SPEC_VALUES,
        [
            "SYMMETRIC_DEFAULT",
            "RSAES_OAEP_SHA_1",
            "RSAES_OAEP_SHA_256",
            "SM2PKE"
        ]
    );
    assert_eq!(DATA_KEY_SPEC_VALUES, ["AES_256", "AES_128"]);
    assert_eq!(DRY_RUN_MODIFIER_TYPE_VALUES, ["IGNORE_CIPHERTEXT"]);
    assert_eq!(GRANT_OPERATION_VALUES.len(), 17);
    assert_eq!(GRANT_OPERATION_VALUES[0], "Decrypt");
    assert_eq!(GRANT_OPERATION_VALUES[16], "DeriveSharedSecret");
    assert_eq!(
        WRAPPING_KEY_SPEC_VALUES,
        ["RSA_2048", "RSA_3072", "RSA_4096", "SM2"]
    );
    assert_eq!(
        <KeyUsage as WireEnum>::NAMES,
        [
            "SIGN_VERIFY",
            "ENCRYPT_DECRYPT",
            "GENERATE_VERIFY_MAC",
            "KEY_AGREEMENT"
        ]
    );
}
