//! Actions and resources.

use super::*;

// --- actions and resources -----------------------------------------------------------------

#[test]
fn action_wildcards_and_case() {
    let matches = |pattern: &str, action: &str| {
        let doc = key_policy(&format!(
            r#"{{"Effect":"Allow","Principal":"*","Action":"{pattern}"}}"#
        ));
        allow(&doc, action, ALICE) == AllowMatch::Direct
    };
    let cases = [
        ("kms:ReEncrypt*", "kms:ReEncryptFrom", true),
        ("kms:ReEncrypt*", "kms:ReEncryptTo", true),
        ("kms:ReEncrypt*", "kms:ReEncrypt", true),
        ("kms:ReEncrypt*", "kms:Encrypt", false),
        ("kms:*crypt", "kms:Decrypt", true),
        ("kms:*crypt", "kms:Encrypt", true),
        ("kms:*crypt", "kms:ReEncryptFrom", false),
        ("kms:?ecrypt", "kms:Decrypt", true),
        ("kms:?ecrypt", "kms:Encrypt", false),
        ("kms:Describe*", "kms:DescribeKey", true),
        ("kms:Get*Policy", "kms:GetKeyPolicy", true),
        ("kms:Get*Policy", "kms:GetKeyRotationStatus", false),
        ("kms:*", "kms:Decrypt", true),
        ("kms:*", "s3:GetObject", false),
        ("*", "kms:Decrypt", true),
        ("*", "s3:GetObject", true),
        ("s3:*", "kms:Decrypt", false),
        ("kms:Decrypt", "kms:Decrypt", true),
        ("kms:Decrypt", "kms:DecryptX", false),
        ("kms:Decrypt", "kms:Decryp", false),
        // Case-insensitive both ways.
        ("KMS:DECRYPT", "kms:decrypt", true),
        ("kms:decrypt", "KMS:Decrypt", true),
        ("Kms:ReEncrypt*", "kms:reencryptfrom", true),
    ];
    for (pattern, action, expected) in cases {
        assert_eq!(matches(pattern, action), expected, "{pattern} vs {action}");
    }
}

#[test]
fn not_action() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":"*","NotAction":["kms:ScheduleKeyDeletion","kms:*Policy"]}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Direct);
    assert_eq!(
        allow(&doc, "kms:ScheduleKeyDeletion", ALICE),
        AllowMatch::None
    );
    assert_eq!(
        allow(&doc, "KMS:schedulekeydeletion", ALICE),
        AllowMatch::None
    );
    assert_eq!(allow(&doc, "kms:PutKeyPolicy", ALICE), AllowMatch::None);
    assert_eq!(allow(&doc, "kms:PutKeyPolicyX", ALICE), AllowMatch::Direct);
    // A Deny with NotAction denies everything else.
    let doc = key_policy(r#"{"Effect":"Deny","Principal":"*","NotAction":"kms:Decrypt"}"#);
    assert!(!evaluate(&doc, "kms:Decrypt", ALICE).deny);
    assert!(evaluate(&doc, "kms:Encrypt", ALICE).deny);
}

#[test]
fn resources() {
    let on = |resource_element: &str, resource: &str| {
        let doc = key_policy(&format!(
            r#"{{"Effect":"Allow","Principal":"*","Action":"kms:*",{resource_element}}}"#
        ));
        evaluate_with(
            &doc,
            "kms:Decrypt",
            resource,
            ALICE,
            &ConditionValues::default(),
        )
        .allow
            == AllowMatch::Direct
    };
    let other_key = "arn:aws:kms:us-east-1:111122223333:key/other";
    let exact = format!(r#""Resource":"{KEY_ARN}""#);
    let exact = exact.as_str();
    let not_exact = format!(r#""NotResource":"{KEY_ARN}""#);
    let not_exact = not_exact.as_str();
    let cases = [
        (r#""Resource":"*""#, KEY_ARN, true),
        (r#""Resource":"*""#, "*", true),
        (exact, KEY_ARN, true),
        (exact, other_key, false),
        (exact, "*", false),
        (
            r#""Resource":"arn:aws:kms:*:111122223333:key/*""#,
            KEY_ARN,
            true,
        ),
        (
            r#""Resource":"arn:aws:kms:*:444455556666:key/*""#,
            KEY_ARN,
            false,
        ),
        (
            r#""Resource":"arn:aws:kms:us-east-?:111122223333:key/*""#,
            KEY_ARN,
            true,
        ),
        // Case-sensitive.
        (
            r#""Resource":"arn:aws:kms:*:111122223333:KEY/*""#,
            KEY_ARN,
            false,
        ),
        (
            r#""Resource":["arn:aws:kms:*:*:alias/*","arn:aws:kms:*:*:key/*"]"#,
            KEY_ARN,
            true,
        ),
        (not_exact, KEY_ARN, false),
        (not_exact, other_key, true),
        (r#""NotResource":"*""#, KEY_ARN, false),
    ];
    for (element, resource, expected) in cases {
        assert_eq!(on(element, resource), expected, "{element} on {resource}");
    }
}
