//! Every condition operator and set qualifier.

use super::*;

// --- conditions ----------------------------------------------------------------------------

#[test]
fn string_operators() {
    let account = r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#;
    check(
        account,
        &[
            ("kms:CallerAccount=111122223333", true),
            ("kms:CallerAccount=444455556666", false),
            ("", false),
        ],
    );
    let either = r#"{"StringEquals":{"kms:CallerAccount":["444455556666","111122223333"]}}"#;
    check(
        either,
        &[
            ("kms:CallerAccount=111122223333", true),
            ("kms:CallerAccount=1", false),
        ],
    );
    let service = r#"{"StringEquals":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#;
    check(
        service,
        &[("kms:ViaService=EC2.us-east-1.amazonaws.com", false)],
    );

    let not_account = r#"{"StringNotEquals":{"kms:CallerAccount":"111122223333"}}"#;
    check(
        not_account,
        &[
            ("kms:CallerAccount=444455556666", true),
            ("kms:CallerAccount=111122223333", false),
            ("", true),
        ],
    );
    let not_either = r#"{"StringNotEquals":{"kms:CallerAccount":["1","111122223333"]}}"#;
    check(
        not_either,
        &[
            ("kms:CallerAccount=111122223333", false),
            ("kms:CallerAccount=2", true),
        ],
    );

    let ignore_case = r#"{"StringEqualsIgnoreCase":{"aws:username":"ALICE"}}"#;
    check(
        ignore_case,
        &[
            ("aws:username=alice", true),
            ("aws:username=bob", false),
            ("", false),
        ],
    );
    let unicode = r#"{"StringEqualsIgnoreCase":{"aws:username":"Ärger"}}"#;
    check(unicode, &[("aws:username=äRGER", true)]);
    let not_ignore_case = r#"{"StringNotEqualsIgnoreCase":{"aws:username":"ALICE"}}"#;
    check(
        not_ignore_case,
        &[
            ("aws:username=alice", false),
            ("aws:username=bob", true),
            ("", true),
        ],
    );

    let like = r#"{"StringLike":{"kms:ViaService":["*.amazonaws.com","ec2.us-east-?.example"]}}"#;
    check(
        like,
        &[
            ("kms:ViaService=ec2.us-east-1.amazonaws.com", true),
            ("kms:ViaService=ec2.us-east-2.example", true),
            ("kms:ViaService=ec2.us-east-12.example", false),
            ("kms:ViaService=amazonaws.com", false),
            ("", false),
        ],
    );
    check(
        r#"{"StringLike":{"kms:ViaService":"EC2.*"}}"#,
        &[("kms:ViaService=ec2.x", false)],
    );
    check(
        r#"{"StringLike":{"kms:ViaService":"*"}}"#,
        &[("kms:ViaService=", false), ("", false)],
    );
    let not_like = r#"{"StringNotLike":{"kms:ViaService":"ec2.*"}}"#;
    check(
        not_like,
        &[
            ("kms:ViaService=s3.x", true),
            ("kms:ViaService=ec2.x", false),
            ("", true),
        ],
    );

    // Policy variables are not substituted: compared literally.
    let variable = r#"{"StringLike":{"aws:username":"${aws:username}"}}"#;
    check(
        variable,
        &[
            ("aws:username=alice", false),
            ("aws:username=${aws:username}", true),
        ],
    );
    // Numbers and booleans compare as their JSON text.
    check(
        r#"{"StringEquals":{"kms:GrantIsForAWSResource":true}}"#,
        &[("kms:GrantIsForAWSResource=true", true)],
    );
    check(
        r#"{"StringEquals":{"kms:ValidTo":42}}"#,
        &[("kms:ValidTo=42", true), ("kms:ValidTo=42.0", false)],
    );
}

#[test]
fn numeric_operators() {
    let t = |op: &str, listed: &str, value: &str| {
        let values = if value.is_empty() {
            String::new()
        } else {
            format!("kms:ValidTo={value}")
        };
        condition_holds(
            &format!(r#"{{"{op}":{{"kms:ValidTo":{listed}}}}}"#),
            &values,
        )
    };
    // (operator, result for a value below, equal to and above 100, result for a missing key)
    let table = [
        ("NumericEquals", [false, true, false], false),
        ("NumericNotEquals", [true, false, true], true),
        ("NumericLessThan", [true, false, false], false),
        ("NumericLessThanEquals", [true, true, false], false),
        ("NumericGreaterThan", [false, false, true], false),
        ("NumericGreaterThanEquals", [false, true, true], false),
    ];
    for (op, expected, missing) in table {
        for (value, want) in ["99", "100", "101"].into_iter().zip(expected) {
            assert_eq!(t(op, "100", value), want, "{op} 100 vs {value}");
            assert_eq!(t(op, r#""100""#, value), want, "{op} \"100\" vs {value}");
        }
        assert_eq!(t(op, "100", ""), missing, "{op} missing");
    }
    assert!(t("NumericLessThan", "2", "1.5"));
    assert!(t("NumericEquals", "1.50", "1.5"));
    assert!(t("NumericEquals", "100", "1e2"));
    assert!(t("NumericGreaterThan", "-5", "-4"));
    assert!(t("NumericEquals", "[1,2,3]", "2"));
    // Integers compare exactly beyond f64 precision.
    assert!(!t("NumericEquals", "9007199254740993", "9007199254740992"));
    assert!(t(
        "NumericGreaterThan",
        "9007199254740992",
        "9007199254740993"
    ));
    // A request value that is not a number matches nothing.
    assert!(!t("NumericEquals", "100", "abc"));
    assert!(!t("NumericLessThan", "100", "inf"));
    assert!(t("NumericNotEquals", "100", "abc"));
}

#[test]
fn bool_operator_with_grant_is_for_aws_resource() {
    for listed in [r#""true""#, "true", r#""True""#] {
        check(
            &format!(r#"{{"Bool":{{"kms:GrantIsForAWSResource":{listed}}}}}"#),
            &[
                ("kms:GrantIsForAWSResource=true", true),
                ("kms:GrantIsForAWSResource=TRUE", true),
                ("kms:GrantIsForAWSResource=false", false),
                ("kms:GrantIsForAWSResource=yes", false),
                ("", false),
            ],
        );
    }
    let falsy = r#"{"Bool":{"kms:GrantIsForAWSResource":false}}"#;
    check(
        falsy,
        &[
            ("kms:GrantIsForAWSResource=false", true),
            ("kms:GrantIsForAWSResource=true", false),
        ],
    );
    let if_exists = r#"{"BoolIfExists":{"kms:GrantIsForAWSResource":true}}"#;
    check(
        if_exists,
        &[("", true), ("kms:GrantIsForAWSResource=false", false)],
    );
}

#[test]
fn ip_address_operators() {
    let v4 = r#"{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#;
    check(
        v4,
        &[
            ("aws:SourceIp=203.0.113.7", true),
            ("aws:SourceIp=203.0.114.7", false),
            // An IPv4-mapped IPv6 address is its IPv4 address.
            ("aws:SourceIp=::ffff:203.0.113.7", true),
            ("aws:SourceIp=2001:db8::1", false),
            ("aws:SourceIp=not-an-ip", false),
            ("", false),
        ],
    );
    check(
        r#"{"IpAddress":{"aws:SourceIp":"203.0.113.99/24"}}"#,
        &[("aws:SourceIp=203.0.113.7", true)],
    );
    let single = r#"{"IpAddress":{"aws:SourceIp":["203.0.113.7","203.0.113.9/32"]}}"#;
    check(
        single,
        &[
            ("aws:SourceIp=203.0.113.7", true),
            ("aws:SourceIp=203.0.113.9", true),
            ("aws:SourceIp=203.0.113.8", false),
        ],
    );
    let any_v4 = r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#;
    check(
        any_v4,
        &[
            ("aws:SourceIp=198.51.100.1", true),
            ("aws:SourceIp=2001:db8::1", false),
        ],
    );
    let private = r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","192.168.0.0/16"]}}"#;
    check(
        private,
        &[
            ("aws:SourceIp=10.255.255.255", true),
            ("aws:SourceIp=11.0.0.0", false),
            ("aws:SourceIp=192.168.3.4", true),
        ],
    );

    let v6 = r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#;
    check(
        v6,
        &[
            ("aws:SourceIp=2001:db8:ffff::1", true),
            ("aws:SourceIp=2001:db9::1", false),
            ("aws:SourceIp=32.1.13.184", false),
        ],
    );
    let v6_64 = r#"{"IpAddress":{"aws:SourceIp":"2001:db8:abcd:12::/64"}}"#;
    check(
        v6_64,
        &[
            ("aws:SourceIp=2001:db8:abcd:12:ffff::1", true),
            ("aws:SourceIp=2001:db8:abcd:13::1", false),
        ],
    );
    check(
        r#"{"IpAddress":{"aws:SourceIp":"2001:db8::1"}}"#,
        &[("aws:SourceIp=2001:db8:0:0:0:0:0:1", true)],
    );
    check(
        r#"{"IpAddress":{"aws:SourceIp":"::/0"}}"#,
        &[
            ("aws:SourceIp=::1", true),
            ("aws:SourceIp=127.0.0.1", false),
        ],
    );

    let not_v4 = r#"{"NotIpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#;
    check(
        not_v4,
        &[
            ("aws:SourceIp=198.51.100.1", true),
            ("aws:SourceIp=203.0.113.1", false),
            ("", true),
        ],
    );
    let not_v6 = r#"{"NotIpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#;
    check(
        not_v6,
        &[
            ("aws:SourceIp=2001:db8::5", false),
            ("aws:SourceIp=2001:db9::5", true),
        ],
    );
    check(
        r#"{"IpAddressIfExists":{"aws:SourceIp":"203.0.113.0/24"}}"#,
        &[("", true)],
    );
}

#[test]
fn arn_operators_with_principal_arn() {
    // aws:PrincipalArn defaults to the caller (alice) when the request does not set it.
    let principal_arn = |op: &str, pattern: &str| {
        condition_holds(
            &format!(r#"{{"{op}":{{"aws:PrincipalArn":"{pattern}"}}}}"#),
            "",
        )
    };
    for op in ["ArnLike", "ArnEquals"] {
        assert!(principal_arn(op, "arn:aws:iam::111122223333:user/*"));
        assert!(principal_arn(op, "arn:aws:iam::*:user/alice"));
        assert!(principal_arn(op, "arn:aws:iam::111122223333:user/alic?"));
        assert!(principal_arn(op, "arn:aws:iam::111122223333:user/alice"));
        assert!(principal_arn(op, "arn:*:*:*:*:*"));
        assert!(!principal_arn(op, "arn:aws:iam::111122223333:role/*"));
        assert!(!principal_arn(op, "arn:aws:iam::111122223333:user/carol"));
        assert!(!principal_arn(op, "arn:aws:iam::111122223333:USER/*"));
        // Component-wise: a wildcard does not reach across colons; six components needed.
        assert!(!principal_arn(op, "arn:aws:*:user/alice"));
        assert!(!principal_arn(op, "arn:*"));
        assert!(!principal_arn(op, "*"));
    }
    for op in ["ArnNotLike", "ArnNotEquals"] {
        assert!(!principal_arn(op, "arn:aws:iam::111122223333:user/*"));
        assert!(principal_arn(op, "arn:aws:iam::111122223333:user/carol"));
        assert!(principal_arn(op, "arn:aws:iam::444455556666:*"));
    }
    // An explicitly set value wins over the default.
    let roles = r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/*"}}"#;
    check(
        roles,
        &[
            ("aws:PrincipalArn=arn:aws:iam::111122223333:role/R", true),
            ("", false),
        ],
    );
    check(
        r#"{"StringEquals":{"aws:PrincipalAccount":"111122223333"}}"#,
        &[("", true)],
    );

    // Resource components may contain colons.
    let colons = r#"{"ArnLike":{"kms:GranteePrincipal":"arn:aws:x:r:1:a:b:*"}}"#;
    check(
        colons,
        &[
            ("kms:GranteePrincipal=arn:aws:x:r:1:a:b:c", true),
            ("kms:GranteePrincipal=arn:aws:x:r:1:a:c", false),
        ],
    );
    let like = r#"{"ArnLike":{"kms:GranteePrincipal":"arn:aws:iam::*:*"}}"#;
    check(
        like,
        &[("kms:GranteePrincipal=not-an-arn", false), ("", false)],
    );
    let not_like = r#"{"ArnNotLike":{"kms:GranteePrincipal":"arn:aws:iam::*:*"}}"#;
    check(
        not_like,
        &[("kms:GranteePrincipal=not-an-arn", true), ("", true)],
    );
    check(
        r#"{"ArnLikeIfExists":{"kms:GranteePrincipal":"arn:aws:iam::*:*"}}"#,
        &[("", true)],
    );
}

#[test]
fn binary_equals() {
    let binary = r#"{"BinaryEquals":{"kms:ReplicaPolicy":"QmluYXJ5"}}"#;
    check(
        binary,
        &[
            ("kms:ReplicaPolicy=QmluYXJ5", true),
            ("kms:ReplicaPolicy=QmluYXJ6", false),
            ("", false),
        ],
    );
}

#[test]
fn null_operator() {
    let absent = r#"{"Null":{"kms:EncryptionContextKeys":"true"}}"#;
    check(
        absent,
        &[
            ("", true),
            ("kms:EncryptionContextKeys=", true),
            ("kms:EncryptionContextKeys=Dept", false),
        ],
    );
    let present = r#"{"Null":{"kms:EncryptionContextKeys":false}}"#;
    check(
        present,
        &[
            ("", false),
            ("kms:EncryptionContextKeys=", false),
            ("kms:EncryptionContextKeys=Dept", true),
        ],
    );
    let either = r#"{"Null":{"kms:EncryptionContextKeys":["true","false"]}}"#;
    check(
        either,
        &[("", true), ("kms:EncryptionContextKeys=Dept", true)],
    );
    check(r#"{"Null":{"aws:PrincipalArn":"true"}}"#, &[("", false)]);
}

#[test]
fn if_exists() {
    let equals = r#"{"StringEqualsIfExists":{"kms:ViaService":"ec2.amazonaws.com"}}"#;
    check(
        equals,
        &[
            ("", true),
            ("kms:ViaService=", true),
            ("kms:ViaService=ec2.amazonaws.com", true),
            ("kms:ViaService=s3.amazonaws.com", false),
        ],
    );
    let not_equals = r#"{"StringNotEqualsIfExists":{"kms:ViaService":"ec2.amazonaws.com"}}"#;
    check(
        not_equals,
        &[("", true), ("kms:ViaService=ec2.amazonaws.com", false)],
    );
    check(
        r#"{"StringLikeIfExists":{"kms:ViaService":"ec2.*"}}"#,
        &[("", true), ("kms:ViaService=s3", false)],
    );
    let less = r#"{"NumericLessThanIfExists":{"kms:ValidTo":"10"}}"#;
    check(
        less,
        &[
            ("", true),
            ("kms:ValidTo=11", false),
            ("kms:ValidTo=9", true),
        ],
    );
    // Operator names ignore case.
    check(
        r#"{"stringequalsifexists":{"kms:ViaService":"x"}}"#,
        &[("", true)],
    );
    check(
        r#"{"STRINGEQUALS":{"kms:ViaService":"x"}}"#,
        &[("kms:ViaService=x", true), ("", false)],
    );
}

#[test]
fn several_request_values_without_a_set_qualifier() {
    let equals = r#"{"StringEquals":{"kms:EncryptionContextKeys":"b"}}"#;
    check(
        equals,
        &[
            ("kms:EncryptionContextKeys=a,b", true),
            ("kms:EncryptionContextKeys=a,c", false),
        ],
    );
    check(equals, &[("kms:EncryptionContextKeys=", false)]);
    // Negated: no request value may match.
    let not_equals = r#"{"StringNotEquals":{"kms:EncryptionContextKeys":"b"}}"#;
    check(
        not_equals,
        &[
            ("kms:EncryptionContextKeys=a,b", false),
            ("kms:EncryptionContextKeys=a,c", true),
        ],
    );
    check(not_equals, &[("kms:EncryptionContextKeys=", true)]);
}

#[test]
fn for_any_value_with_encryption_context_keys() {
    let op = r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["Dept","Project"]}}"#;
    check(
        op,
        &[
            ("kms:EncryptionContextKeys=Dept", true),
            ("kms:EncryptionContextKeys=Other,Project", true),
            ("kms:EncryptionContextKeys=Other", false),
            ("kms:EncryptionContextKeys=dept", false),
            ("kms:EncryptionContextKeys=", false),
            ("", false),
        ],
    );
    check(
        r#"{"ForAnyValue:StringEqualsIfExists":{"kms:EncryptionContextKeys":"Dept"}}"#,
        &[("", true)],
    );
    let like = r#"{"ForAnyValue:StringLike":{"kms:EncryptionContextKeys":"aws:*"}}"#;
    check(
        like,
        &[
            ("kms:EncryptionContextKeys=Dept,aws:ebs:id", true),
            ("kms:EncryptionContextKeys=Dept", false),
        ],
    );
    // Some request value differs from all the listed ones.
    let not_equals = r#"{"ForAnyValue:StringNotEquals":{"kms:EncryptionContextKeys":"Dept"}}"#;
    check(
        not_equals,
        &[
            ("kms:EncryptionContextKeys=Dept,Other", true),
            ("kms:EncryptionContextKeys=Dept", false),
            ("", false),
        ],
    );
    let ignore_case =
        r#"{"foranyvalue:stringequalsignorecase":{"kms:EncryptionContextKeys":"DEPT"}}"#;
    check(ignore_case, &[("kms:EncryptionContextKeys=dept", true)]);
}

#[test]
fn for_all_values_with_encryption_context_keys_and_grant_operations() {
    let op = r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Dept","Project"]}}"#;
    check(
        op,
        &[
            ("kms:EncryptionContextKeys=Dept", true),
            ("kms:EncryptionContextKeys=Project,Dept", true),
            ("kms:EncryptionContextKeys=Dept,Other", false),
            ("kms:EncryptionContextKeys=Other", false),
            ("kms:EncryptionContextKeys=", true),
            ("", true),
        ],
    );
    // Every request value differs from all the listed ones.
    let not_equals = r#"{"ForAllValues:StringNotEquals":{"kms:EncryptionContextKeys":"Secret"}}"#;
    check(
        not_equals,
        &[
            ("kms:EncryptionContextKeys=Dept,Project", true),
            ("kms:EncryptionContextKeys=Dept,Secret", false),
        ],
    );
    let like = r#"{"ForAllValues:StringLike":{"kms:EncryptionContextKeys":"app:*"}}"#;
    check(
        like,
        &[
            ("kms:EncryptionContextKeys=app:a,app:b", true),
            ("kms:EncryptionContextKeys=app:a,web:b", false),
        ],
    );

    let grants = r#"{"ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt","Encrypt","GenerateDataKey"]}}"#;
    check(
        grants,
        &[
            ("kms:GrantOperations=Decrypt", true),
            ("kms:GrantOperations=Decrypt,GenerateDataKey", true),
            ("kms:GrantOperations=Decrypt,ReEncryptFrom", false),
            ("kms:GrantOperations=CreateGrant", false),
        ],
    );
    // Both qualifiers together: only the listed keys, and at least one of them.
    let both = r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Dept","Project"]},
                  "ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["Dept","Project"]}}"#;
    check(
        both,
        &[
            ("kms:EncryptionContextKeys=Dept", true),
            ("kms:EncryptionContextKeys=", false),
            ("", false),
            ("kms:EncryptionContextKeys=Dept,Other", false),
        ],
    );
}

#[test]
fn operators_and_keys_combine_with_and_values_with_or() {
    let condition = r#"{"StringEquals":{"kms:CallerAccount":"111122223333","kms:ViaService":["ec2.x","rds.x"]},
                       "Bool":{"kms:GrantIsForAWSResource":true}}"#;
    check(
        condition,
        &[
            ("kms:CallerAccount=111122223333;kms:ViaService=rds.x;kms:GrantIsForAWSResource=true", true),
            ("kms:CallerAccount=111122223333;kms:ViaService=ec2.x;kms:GrantIsForAWSResource=true", true),
            ("kms:CallerAccount=111122223333;kms:ViaService=s3.x;kms:GrantIsForAWSResource=true", false),
            ("kms:CallerAccount=444455556666;kms:ViaService=rds.x;kms:GrantIsForAWSResource=true", false),
            ("kms:CallerAccount=111122223333;kms:ViaService=rds.x;kms:GrantIsForAWSResource=false", false),
            ("kms:CallerAccount=111122223333;kms:ViaService=rds.x", false),
        ],
    );
}

#[test]
fn condition_keys_ignore_case() {
    check(
        r#"{"StringEquals":{"KMS:CALLERACCOUNT":"111122223333"}}"#,
        &[("kms:calleraccount=111122223333", true)],
    );
    check(
        r#"{"StringEquals":{"kms:calleraccount":"111122223333"}}"#,
        &[("Kms:CallerAccount=111122223333", true)],
    );
    check(
        r#"{"StringEquals":{"Aws:PrincipalARN":"arn:aws:iam::111122223333:user/alice"}}"#,
        &[("", true)],
    );

    let mut values = ConditionValues::default();
    values.set("kms:ViaService", "ec2.amazonaws.com");
    assert_eq!(
        values.get("KMS:VIASERVICE"),
        Some(&["ec2.amazonaws.com".to_owned()][..])
    );
    assert_eq!(values.get("kms:viaservice"), values.get("kms:ViaService"));
    assert_eq!(values.get("kms:Other"), None);
    values.set_many("kms:EncryptionContextKeys", Vec::new());
    assert_eq!(values.get("kms:encryptioncontextkeys"), Some(&[][..]));
    // `set` replaces earlier values.
    values.set("KMS:ViaService", "s3.amazonaws.com");
    assert_eq!(
        values.get("kms:ViaService"),
        Some(&["s3.amazonaws.com".to_owned()][..])
    );
}

#[test]
fn encryption_context_keys_keep_their_case() {
    let dept = r#"{"StringEquals":{"kms:EncryptionContext:Dept":"IT"}}"#;
    check(
        dept,
        &[
            ("kms:EncryptionContext:Dept=IT", true),
            ("KMS:ENCRYPTIONCONTEXT:Dept=IT", true),
            ("kms:EncryptionContext:dept=IT", false),
            // The value is case-sensitive too, unless the operator says otherwise.
            ("kms:EncryptionContext:Dept=it", false),
        ],
    );
    check(
        r#"{"StringEquals":{"KMS:ENCRYPTIONCONTEXT:Dept":"IT"}}"#,
        &[("kms:encryptioncontext:Dept=IT", true)],
    );
    check(
        r#"{"StringEquals":{"kms:EncryptionContext:dept":"IT"}}"#,
        &[("kms:EncryptionContext:Dept=IT", false)],
    );
    check(
        r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Dept":"IT"}}"#,
        &[("kms:EncryptionContext:Dept=it", true)],
    );
    let colons = r#"{"StringLike":{"kms:EncryptionContext:aws:s3:arn":"arn:aws:s3:::bucket/*"}}"#;
    check(
        colons,
        &[(
            "kms:EncryptionContext:aws:s3:arn=arn:aws:s3:::bucket/x",
            true,
        )],
    );

    let mut values = ConditionValues::default();
    values.set("KMS:EncryptionContext:Dept", "IT");
    assert!(values.get("kms:encryptioncontext:Dept").is_some());
    assert!(values.get("kms:encryptioncontext:dept").is_none());
}

#[test]
fn a_deny_unless_condition() {
    // The common "deny unless from the corporate network" pattern.
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*"},
           {"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}}"#,
    );
    let mut inside = ConditionValues::default();
    inside.set("aws:SourceIp", "10.1.2.3");
    let mut outside = ConditionValues::default();
    outside.set("aws:SourceIp", "198.51.100.7");
    let e = evaluate_with(&doc, "kms:Decrypt", KEY_ARN, ALICE, &inside);
    assert_eq!(
        e,
        Evaluation {
            deny: false,
            allow: AllowMatch::Account
        }
    );
    let e = evaluate_with(&doc, "kms:Decrypt", KEY_ARN, ALICE, &outside);
    assert_eq!(
        e,
        Evaluation {
            deny: true,
            allow: AllowMatch::Account
        }
    );
    // Without a source address the key is missing and the negated operator holds.
    assert!(evaluate(&doc, "kms:Decrypt", ALICE).deny);
    assert!(!evaluate_with(&doc, "kms:Encrypt", KEY_ARN, ALICE, &outside).deny);
}

#[test]
fn grant_policy_with_grant_is_for_aws_resource() {
    let doc = key_policy(
        r#"{"Sid":"Allow attachment of persistent resources","Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::111122223333:role/ExampleRole"},
            "Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*",
            "Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}"#,
    );
    let session = "arn:aws:sts::111122223333:assumed-role/ExampleRole/s";
    let mut for_resource = ConditionValues::default();
    for_resource.set("kms:GrantIsForAWSResource", "true");
    let mut not_for_resource = ConditionValues::default();
    not_for_resource.set("kms:GrantIsForAWSResource", "false");
    let run = |values: &ConditionValues| {
        evaluate_with(&doc, "kms:CreateGrant", KEY_ARN, session, values).allow
    };
    assert_eq!(run(&for_resource), AllowMatch::Direct);
    assert_eq!(run(&not_for_resource), AllowMatch::None);
    assert_eq!(run(&ConditionValues::default()), AllowMatch::None);
}
