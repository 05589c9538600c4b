//! Parsing: documents accepted and rejected.

use super::*;

// --- parsing: accepted ---------------------------------------------------------------------

#[test]
fn parses_the_default_key_policy() {
    let doc = parse(DEFAULT_KEY_POLICY, PolicyKind::Key);
    assert_eq!(doc.version(), Some("2012-10-17"));
    assert_eq!(doc.id(), Some("key-default-1"));
    assert_eq!(doc.kind(), PolicyKind::Key);
    assert_eq!(
        doc.sids().collect::<Vec<_>>(),
        vec![Some("Enable IAM User Permissions")]
    );
}

#[test]
fn accepts_optional_elements_and_shapes() {
    // A single statement object, no Version, no Id, no Sid, no Resource.
    let doc = parse(
        r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:Decrypt"}}"#,
        PolicyKind::Key,
    );
    assert_eq!(doc.version(), None);
    assert_eq!(doc.id(), None);
    assert_eq!(doc.sids().collect::<Vec<_>>(), vec![None]);
    parse(
        r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"NotAction":["kms:Decrypt","kms:Encrypt"],"NotResource":"arn:aws:kms:*:*:key/*"}]}"#,
        PolicyKind::Key,
    );
    parse(
        r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":["*"]}]}"#,
        PolicyKind::Identity,
    );
    // Condition values as booleans and numbers, and a multi-value list.
    parse(
        r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":true},"NumericLessThan":{"kms:ValidTo":1700000000.5},"StringEquals":{"kms:ViaService":["a","b"]}}}]}"#,
        PolicyKind::Identity,
    );
    // Whitespace and Unicode are fine.
    parse(
        "{ \"Statement\" : [ { \"Sid\": \"é ✓\", \"Effect\": \"Allow\", \"Action\": \"kms:*\", \"Resource\": \"*\" } ] }\n",
        PolicyKind::Identity,
    );
}

#[test]
fn key_statements_without_action_or_resource_have_no_effect() {
    // AWS KMS accepts them (PutKeyPolicy succeeds) but they grant and deny nothing.
    let doc = parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*"},{"Effect":"Deny","Principal":"*","Resource":"*"}]}"#,
        PolicyKind::Key,
    );
    assert_eq!(evaluate(&doc, "kms:Decrypt", ALICE), Evaluation::default());
    // IAM refuses identity policies without them.
    assert_eq!(
        rejected(
            r#"{"Statement":{"Effect":"Allow","Action":"kms:*"}}"#,
            PolicyKind::Identity
        ),
        "Policy statement must contain resources."
    );
    assert_eq!(
        rejected(
            r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
            PolicyKind::Identity
        ),
        "Policy statement must contain actions."
    );
}

#[test]
fn accepts_every_principal_form() {
    for principal in [
        r#""*""#,
        r#"{"AWS":"*"}"#,
        r#"{"AWS":"111122223333"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:root"}"#,
        r#"{"AWS":"arn:aws-cn:iam::111122223333:root"}"#,
        r#"{"AWS":"arn:aws-us-gov:iam::111122223333:user/alice"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:user/division/team/alice"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:user/a+b=c,d.e@f_g-h"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:role/KeyAdmin"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:role/service-role/KeyAdmin"}"#,
        r#"{"AWS":"arn:aws:sts::111122223333:assumed-role/KeyAdmin/session-1"}"#,
        r#"{"AWS":"arn:aws:sts::111122223333:federated-user/carol"}"#,
        r#"{"AWS":["111122223333","arn:aws:iam::444455556666:root","*"]}"#,
        r#"{"Service":"logs.amazonaws.com"}"#,
        r#"{"Service":["logs.amazonaws.com","s3.amazonaws.com"]}"#,
        r#"{"Federated":"cognito-identity.amazonaws.com"}"#,
        r#"{"CanonicalUser":"79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}"#,
        r#"{"AWS":"111122223333","Service":"logs.amazonaws.com"}"#,
    ] {
        key_policy(&format!(
            r#"{{"Effect":"Allow","Principal":{principal},"Action":"kms:*","Resource":"*"}}"#
        ));
        key_policy(&format!(
            r#"{{"Effect":"Deny","NotPrincipal":{principal},"Action":"kms:*"}}"#
        ));
    }
}

// --- parsing: rejected ---------------------------------------------------------------------

#[test]
fn rejects_text_that_is_not_json() {
    for text in [
        "",
        "{",
        "[1,",
        "{} x",
        "{'Statement':[]}",
        "nul",
        "{\"a\":1,}",
    ] {
        assert_eq!(
            rejected(text, PolicyKind::Key),
            "The policy document is not valid JSON.",
            "{text:?}"
        );
    }
}

#[test]
fn rejects_duplicate_keys() {
    let message = rejected(
        r#"{"Statement":[{"Effect":"Deny","Effect":"Allow","Principal":"*","Action":"kms:*"}]}"#,
        PolicyKind::Key,
    );
    assert!(
        message.starts_with("The policy document contains a duplicate key (line 1, column"),
        "{message}"
    );
    let message = rejected(
        r#"{"Statement":{"Effect":"Allow","Action":"kms:*"},"Statement":[]}"#,
        PolicyKind::Identity,
    );
    assert!(message.contains("duplicate key"), "{message}");
    // Keys equal only ignoring case are different keys (and then an unknown element).
    assert_eq!(
        rejected(
            r#"{"Statement":{"Effect":"Allow","effect":"Deny","Action":"kms:*"}}"#,
            PolicyKind::Identity
        ),
        "Policy statement has an unsupported element: effect."
    );
}

#[test]
fn rejects_malformed_documents() {
    let cases = [
        ("[]", "The policy document must be a JSON object."),
        (r#""policy""#, "The policy document must be a JSON object."),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"kms:*"},"Extra":1}"#,
            "The policy document has an unsupported element: Extra.",
        ),
        (
            r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"kms:*"}}"#,
            "Version must be 2012-10-17 or 2008-10-17.",
        ),
        (
            r#"{"Version":20121017,"Statement":{"Effect":"Allow","Action":"kms:*"}}"#,
            "Version must be 2012-10-17 or 2008-10-17.",
        ),
        (
            r#"{"Id":7,"Statement":{"Effect":"Allow","Action":"kms:*"}}"#,
            "Id must be a string.",
        ),
        (
            r#"{"Version":"2012-10-17"}"#,
            "The policy document is missing Statement.",
        ),
        (
            r#"{"Statement":[]}"#,
            "Statement must be an object or a non-empty array.",
        ),
        (
            r#"{"Statement":"Allow"}"#,
            "Statement must be an object or a non-empty array.",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"},"x"]}"#,
            "Each policy statement must be a JSON object.",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"kms:*","Principals":"*"}}"#,
            "Policy statement has an unsupported element: Principals.",
        ),
        (
            r#"{"Statement":{"Sid":1,"Effect":"Allow","Action":"kms:*"}}"#,
            "Sid must be a string.",
        ),
        (
            r#"{"Statement":{"Action":"kms:*"}}"#,
            "Policy statement is missing Effect.",
        ),
        (
            r#"{"Statement":{"Effect":"allow","Action":"kms:*"}}"#,
            "Effect must be Allow or Deny.",
        ),
        (
            r#"{"Statement":{"Effect":true,"Action":"kms:*"}}"#,
            "Effect must be Allow or Deny.",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*"}}"#,
            "Identity policies must not contain Principal or NotPrincipal.",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","NotPrincipal":"*","Action":"kms:*"}}"#,
            "Identity policies must not contain Principal or NotPrincipal.",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(rejected(text, PolicyKind::Identity), message, "{text}");
    }
}

#[test]
fn rejects_malformed_statements() {
    let cases = [
        (
            r#"{"Effect":"Allow","Action":"kms:*"}"#,
            "Policy statement is missing Principal.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","NotPrincipal":"*","Action":"kms:*"}"#,
            "Statement has both Principal and NotPrincipal.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","NotAction":"kms:Encrypt"}"#,
            "Statement has both Action and NotAction.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":""}"#,
            "Action must not be an empty string.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","NotAction":["kms:Decrypt",""]}"#,
            "NotAction must not be an empty string.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":[]}"#,
            "Action must be a string or a non-empty array of strings.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":["kms:Decrypt",3]}"#,
            "Action must be a string or a non-empty array of strings.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":{"kms":"Decrypt"}}"#,
            "Action must be a string or a non-empty array of strings.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","NotResource":"*"}"#,
            "Statement has both Resource and NotResource.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":[]}"#,
            "Resource must be a string or a non-empty array of strings.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","NotResource":7}"#,
            "NotResource must be a string or a non-empty array of strings.",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":""}"#,
            "Invalid resource: .",
        ),
        (
            r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"key/1234"}"#,
            "Invalid resource: key/1234.",
        ),
    ];
    for (statement, message) in cases {
        assert_eq!(key_statement_rejected(statement), message, "{statement}");
    }
}

#[test]
fn rejects_invalid_actions() {
    for action in [
        "kms",
        "kms:",
        ":Decrypt",
        "kms:De crypt",
        "kms:Decrypt:Extra",
        "km s:Decrypt",
        "*:Decrypt",
        "kms*",
    ] {
        assert_eq!(
            key_statement_rejected(&format!(
                r#"{{"Effect":"Allow","Principal":"*","Action":"{action}"}}"#
            )),
            format!("Invalid action: {action}."),
        );
    }
}

#[test]
fn rejects_invalid_principals() {
    for principal in [
        r#""arn:aws:iam::111122223333:root""#,
        r#""**""#,
        r#"{}"#,
        r#"{"AWS":[]}"#,
        r#"{"AWS":5}"#,
        r#"{"AWS":["*",5]}"#,
        r#"{"AWS":"alice"}"#,
        r#"{"AWS":"11112222333"}"#,
        r#"{"AWS":"1111222233334"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:user/*"}"#,
        r#"{"AWS":"arn:aws:iam::*:root"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:group/devs"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:user/"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:user//alice"}"#,
        r#"{"AWS":"arn:aws:iam:us-east-1:111122223333:root"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333"}"#,
        r#"{"AWS":"arn::iam::111122223333:root"}"#,
        r#"{"AWS":"arn:AWS:iam::111122223333:root"}"#,
        r#"{"AWS":"urn:aws:iam::111122223333:root"}"#,
        r#"{"AWS":"arn:aws:s3:::bucket"}"#,
        r#"{"AWS":"arn:aws:sts::111122223333:assumed-role/KeyAdmin"}"#,
        r#"{"AWS":"arn:aws:sts::111122223333:assumed-role/KeyAdmin/a/b"}"#,
        r#"{"AWS":"arn:aws:iam::111122223333:user/al ice"}"#,
        r#"{"Service":""}"#,
        r#"{"Service":"logs amazonaws com"}"#,
        r#"{"Federated":[]}"#,
    ] {
        assert_eq!(
            key_statement_rejected(&format!(
                r#"{{"Effect":"Allow","Principal":{principal},"Action":"kms:*"}}"#
            )),
            "Policy contains a statement with one or more invalid principals.",
            "{principal}"
        );
    }
    assert_eq!(
        key_statement_rejected(r#"{"Effect":"Allow","Principal":{"Users":"x"},"Action":"kms:*"}"#),
        "Unsupported principal type: Users."
    );
}

#[test]
fn rejects_malformed_conditions() {
    let cases = [
        (r#""StringEquals""#, "Condition must be a JSON object."),
        (r#"[]"#, "Condition must be a JSON object."),
        (
            r#"{"Foo":{"kms:ViaService":"x"}}"#,
            "Unsupported condition operator: Foo.",
        ),
        (
            r#"{"ForSomeValues:StringEquals":{"kms:ViaService":"x"}}"#,
            "Unsupported condition operator: ForSomeValues:StringEquals.",
        ),
        (
            r#"{"StringEqualsIfExistsIfExists":{"kms:ViaService":"x"}}"#,
            "Unsupported condition operator: StringEqualsIfExistsIfExists.",
        ),
        (
            r#"{"NullIfExists":{"kms:ViaService":"true"}}"#,
            "Unsupported condition operator: NullIfExists.",
        ),
        (
            r#"{"ForAnyValue:Null":{"kms:ViaService":"true"}}"#,
            "Unsupported condition operator: ForAnyValue:Null.",
        ),
        (
            r#"{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#,
            "Unsupported condition operator: DateLessThan.",
        ),
        (
            r#"{"StringEquals":"kms:ViaService"}"#,
            "Condition operator StringEquals must map condition keys to values.",
        ),
        (
            r#"{"StringEquals":{}}"#,
            "Condition operator StringEquals names no condition keys.",
        ),
        (
            r#"{"StringEquals":{"ViaService":"x"}}"#,
            "Invalid condition key: ViaService.",
        ),
        (
            r#"{"StringEquals":{":ViaService":"x"}}"#,
            "Invalid condition key: :ViaService.",
        ),
        (
            r#"{"StringEquals":{"kms:":"x"}}"#,
            "Invalid condition key: kms:.",
        ),
        (
            r#"{"StringEquals":{"kms:Via Service":"x"}}"#,
            "Invalid condition key: kms:Via Service.",
        ),
        (
            r#"{"StringEquals":{"kms:ViaService":null}}"#,
            "Condition values must be strings, numbers or booleans.",
        ),
        (
            r#"{"StringEquals":{"kms:ViaService":{"a":"b"}}}"#,
            "Condition values must be strings, numbers or booleans.",
        ),
        (
            r#"{"StringEquals":{"kms:ViaService":["a",["b"]]}}"#,
            "Condition values must be strings, numbers or booleans.",
        ),
        (
            r#"{"StringEquals":{"kms:ViaService":[]}}"#,
            "Condition key kms:ViaService has an empty list of values.",
        ),
        (
            r#"{"NumericEquals":{"kms:ValidTo":"soon"}}"#,
            "Invalid numeric condition value: soon.",
        ),
        (
            r#"{"NumericEquals":{"kms:ValidTo":"inf"}}"#,
            "Invalid numeric condition value: inf.",
        ),
        (
            r#"{"NumericEquals":{"kms:ValidTo":"NaN"}}"#,
            "Invalid numeric condition value: NaN.",
        ),
        (
            r#"{"Bool":{"kms:GrantIsForAWSResource":"yes"}}"#,
            "Invalid Bool condition value: yes.",
        ),
        (
            r#"{"Null":{"kms:GrantIsForAWSResource":"maybe"}}"#,
            "Invalid Null condition value: maybe.",
        ),
        (
            r#"{"IpAddress":{"aws:SourceIp":"300.1.1.1"}}"#,
            "Invalid IP address condition value: 300.1.1.1.",
        ),
        (
            r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}"#,
            "Invalid IP address condition value: 10.0.0.0/33.",
        ),
        (
            r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/"}}"#,
            "Invalid IP address condition value: 10.0.0.0/.",
        ),
        (
            r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/+8"}}"#,
            "Invalid IP address condition value: 10.0.0.0/+8.",
        ),
        (
            r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/129"}}"#,
            "Invalid IP address condition value: 2001:db8::/129.",
        ),
        (
            r#"{"IpAddress":{"aws:SourceIp":"example.com"}}"#,
            "Invalid IP address condition value: example.com.",
        ),
    ];
    for (condition, message) in cases {
        assert_eq!(
            key_statement_rejected(&format!(
                r#"{{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{condition}}}"#
            )),
            message,
            "{condition}"
        );
    }
}

#[test]
fn error_messages_never_echo_huge_input() {
    let huge = "X".repeat(100_000);
    let texts = [
        format!(
            r#"{{"Statement":{{"Effect":"Allow","Action":"kms:*","Condition":{{"{huge}":{{"a:b":"c"}}}}}}}}"#
        ),
        format!(r#"{{"Statement":{{"Effect":"Allow","Action":"kms:{huge} "}}}}"#),
        format!(r#"{{"{huge}":1,"Statement":{{"Effect":"Allow","Action":"kms:*"}}}}"#),
        format!(r#"{{"Statement":{{"Effect":"Allow","Action":"kms:*"}}}} {huge}"#),
    ];
    for text in &texts {
        let error = PolicyDocument::parse(text, PolicyKind::Identity).unwrap_err();
        assert!(error.0.len() < 200, "{}", &error.0[..200]);
        assert_eq!(error.to_string(), error.0);
    }
    // Control characters are not passed through either.
    let message = rejected(
        r#"{"Statement":{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"Bad\nOp":{"a:b":"c"}}}}"#,
        PolicyKind::Identity,
    );
    assert_eq!(message, "Unsupported condition operator: Bad?Op.");
}

#[test]
fn public_types_are_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_traits::<PolicyDocument>();
    assert_traits::<PolicyError>();
    assert_traits::<ConditionValues>();
    assert_traits::<Evaluation>();
    let doc = parse(DEFAULT_KEY_POLICY, PolicyKind::Key);
    let copy = doc.clone();
    assert_eq!(allow(&copy, "kms:Decrypt", ROOT), AllowMatch::Direct);
    assert!(AllowMatch::None < AllowMatch::Account && AllowMatch::Account < AllowMatch::Direct);
    assert_eq!(
        Evaluation::default(),
        Evaluation {
            deny: false,
            allow: AllowMatch::None
        }
    );
}
