//! Unit tests of the policy engine: grammar, principals, actions, resources, every condition
//! operator, set qualifiers and the wildcard matcher.

use std::time::{Duration, Instant};

use super::*;

const ACCOUNT: &str = "111122223333";
const ROOT: &str = "arn:aws:iam::111122223333:root";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const CAROL: &str = "arn:aws:iam::111122223333:user/carol";
const BOB: &str = "arn:aws:iam::444455556666:user/bob";
const OTHER_ROOT: &str = "arn:aws:iam::444455556666:root";
const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

const DEFAULT_KEY_POLICY: &str = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

// --- helpers -------------------------------------------------------------------------------

fn parse(text: &str, kind: PolicyKind) -> PolicyDocument {
    PolicyDocument::parse(text, kind).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A key policy of `statements`; a statement without `Resource`/`NotResource` gets
/// `"Resource": "*"` (without one it would apply to nothing).
fn key_policy(statements: &str) -> PolicyDocument {
    parse(&with_resources(statements), PolicyKind::Key)
}

fn with_resources(statements: &str) -> String {
    let mut list: Vec<serde_json::Value> =
        serde_json::from_str(&format!("[{statements}]")).expect("statements are JSON");
    for statement in &mut list {
        if let Some(map) = statement.as_object_mut() {
            if !map.contains_key("Resource") && !map.contains_key("NotResource") {
                map.insert("Resource".into(), "*".into());
            }
        }
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": list}).to_string()
}

fn rejected(text: &str, kind: PolicyKind) -> String {
    match PolicyDocument::parse(text, kind) {
        Ok(doc) => panic!("accepted {text}: {doc:?}"),
        Err(e) => e.0,
    }
}

fn key_statement_rejected(statement: &str) -> String {
    rejected(
        &format!(r#"{{"Version":"2012-10-17","Statement":[{statement}]}}"#),
        PolicyKind::Key,
    )
}

fn account_of(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap()
}

fn evaluate_with(
    doc: &PolicyDocument,
    action: &str,
    resource: &str,
    caller: &str,
    values: &ConditionValues,
) -> Evaluation {
    doc.evaluate(&RequestContext {
        action,
        resource,
        principal_arn: caller,
        principal_account: account_of(caller),
        values,
    })
}

fn evaluate(doc: &PolicyDocument, action: &str, caller: &str) -> Evaluation {
    evaluate_with(doc, action, KEY_ARN, caller, &ConditionValues::default())
}

fn allow(doc: &PolicyDocument, action: &str, caller: &str) -> AllowMatch {
    evaluate(doc, action, caller).allow
}

/// Condition values from `key=v1,v2;key2=v3`; `key=` sets an empty set of values.
fn values(spec: &str) -> ConditionValues {
    let mut out = ConditionValues::default();
    for entry in spec.split(';').filter(|e| !e.is_empty()) {
        let (key, list) = entry.split_once('=').expect("key=values");
        let list = if list.is_empty() {
            Vec::new()
        } else {
            list.split(',').map(String::from).collect()
        };
        out.set_many(key, list);
    }
    out
}

/// Whether an identity policy allowing everything under `condition` allows alice's request.
fn condition_holds(condition: &str, spec: &str) -> bool {
    let doc = parse(
        &format!(
            r#"{{"Statement":{{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{condition}}}}}"#
        ),
        PolicyKind::Identity,
    );
    let e = evaluate_with(&doc, "kms:Decrypt", KEY_ARN, ALICE, &values(spec));
    assert!(!e.deny);
    e.allow == AllowMatch::Direct
}

/// Checks one condition block against several requests: (request values, whether it holds).
fn check(condition: &str, cases: &[(&str, bool)]) {
    for &(spec, expected) in cases {
        assert_eq!(
            condition_holds(condition, spec),
            expected,
            "condition {condition} with values {spec:?}"
        );
    }
}

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

// --- principals ----------------------------------------------------------------------------

#[test]
fn default_key_policy_delegates_to_the_account() {
    let doc = parse(DEFAULT_KEY_POLICY, PolicyKind::Key);
    for action in ["kms:Decrypt", "kms:ScheduleKeyDeletion", "kms:PutKeyPolicy"] {
        assert_eq!(
            evaluate(&doc, action, ROOT),
            Evaluation {
                deny: false,
                allow: AllowMatch::Direct
            }
        );
        assert_eq!(
            evaluate(&doc, action, ALICE),
            Evaluation {
                deny: false,
                allow: AllowMatch::Account
            }
        );
        assert_eq!(evaluate(&doc, action, BOB), Evaluation::default());
        assert_eq!(evaluate(&doc, action, OTHER_ROOT), Evaluation::default());
    }
    let session = "arn:aws:sts::111122223333:assumed-role/KeyAdmin/s1";
    assert_eq!(allow(&doc, "kms:Decrypt", session), AllowMatch::Account);
    // Account-level actions use resource "*".
    let e = evaluate_with(
        &doc,
        "kms:CreateKey",
        "*",
        ROOT,
        &ConditionValues::default(),
    );
    assert_eq!(e.allow, AllowMatch::Direct);
    // Only kms actions.
    assert_eq!(allow(&doc, "s3:GetObject", ROOT), AllowMatch::None);
}

#[test]
fn account_id_principal_matches_like_the_root_arn() {
    let doc =
        key_policy(r#"{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*"}"#);
    assert_eq!(allow(&doc, "kms:Decrypt", ROOT), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Account);
    assert_eq!(allow(&doc, "kms:Decrypt", BOB), AllowMatch::None);
}

#[test]
fn root_arn_principal_respects_the_partition() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws-cn:iam::111122223333:root"},"Action":"kms:*"}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ROOT), AllowMatch::None);
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::None);
    assert_eq!(
        allow(&doc, "kms:Decrypt", "arn:aws-cn:iam::111122223333:root"),
        AllowMatch::Direct
    );
    assert_eq!(
        allow(
            &doc,
            "kms:Decrypt",
            "arn:aws-cn:iam::111122223333:user/alice"
        ),
        AllowMatch::Account
    );
}

#[test]
fn a_root_arn_of_another_account_is_not_the_callers_root() {
    // The caller claims account 111122223333 but its ARN is another account's root.
    let doc = parse(DEFAULT_KEY_POLICY, PolicyKind::Key);
    let e = doc.evaluate(&RequestContext {
        action: "kms:Decrypt",
        resource: KEY_ARN,
        principal_arn: OTHER_ROOT,
        principal_account: ACCOUNT,
        values: &ConditionValues::default(),
    });
    assert_eq!(e.allow, AllowMatch::Account);
}

#[test]
fn everyone_principals_match_directly() {
    for principal in [
        r#""*""#,
        r#"{"AWS":"*"}"#,
        r#"{"AWS":["arn:aws:iam::999999999999:root","*"]}"#,
    ] {
        let doc = key_policy(&format!(
            r#"{{"Effect":"Allow","Principal":{principal},"Action":"kms:Decrypt"}}"#
        ));
        for caller in [ROOT, ALICE, BOB] {
            assert_eq!(
                allow(&doc, "kms:Decrypt", caller),
                AllowMatch::Direct,
                "{principal}"
            );
        }
    }
}

#[test]
fn user_principal_matches_only_that_user() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:user/alice"]},"Action":"kms:Decrypt"}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Decrypt", CAROL), AllowMatch::None);
    assert_eq!(allow(&doc, "kms:Decrypt", ROOT), AllowMatch::None);
    assert_eq!(
        allow(&doc, "kms:Decrypt", "arn:aws:iam::111122223333:user/Alice"),
        AllowMatch::None
    );
}

#[test]
fn the_strongest_allow_wins() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*"},
           {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:Decrypt"}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Encrypt", ALICE), AllowMatch::Account);
    assert_eq!(allow(&doc, "kms:Encrypt", CAROL), AllowMatch::Account);
}

#[test]
fn foreign_principals_never_match() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"Service":"logs.amazonaws.com","Federated":"accounts.google.com","CanonicalUser":"abc"},"Action":"kms:*"}"#,
    );
    for caller in [ROOT, ALICE, BOB] {
        assert_eq!(evaluate(&doc, "kms:Decrypt", caller), Evaluation::default());
    }
}

#[test]
fn role_principal_matches_its_sessions() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/ops/KeyAdmin"},"Action":"kms:*"}"#,
    );
    let cases = [
        (
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/alice-session",
            AllowMatch::Direct,
        ),
        (
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/other",
            AllowMatch::Direct,
        ),
        (
            "arn:aws:iam::111122223333:role/ops/KeyAdmin",
            AllowMatch::Direct,
        ),
        (
            "arn:aws:sts::111122223333:assumed-role/KeyUser/alice-session",
            AllowMatch::None,
        ),
        (
            "arn:aws:sts::444455556666:assumed-role/KeyAdmin/alice-session",
            AllowMatch::None,
        ),
        (
            "arn:aws-cn:sts::111122223333:assumed-role/KeyAdmin/s",
            AllowMatch::None,
        ),
        ("arn:aws:iam::111122223333:user/KeyAdmin", AllowMatch::None),
        (
            "arn:aws:sts::111122223333:federated-user/KeyAdmin",
            AllowMatch::None,
        ),
        (ROOT, AllowMatch::None),
    ];
    for (caller, expected) in cases {
        assert_eq!(allow(&doc, "kms:Decrypt", caller), expected, "{caller}");
    }
    // A session principal names that session only.
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/KeyAdmin/s1"},"Action":"kms:*"}"#,
    );
    assert_eq!(
        allow(
            &doc,
            "kms:Decrypt",
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/s1"
        ),
        AllowMatch::Direct
    );
    assert_eq!(
        allow(
            &doc,
            "kms:Decrypt",
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/s2"
        ),
        AllowMatch::None
    );
}

#[test]
fn explicit_deny() {
    let doc = key_policy(
        r#"{"Sid":"All","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*"},
           {"Sid":"NoDelete","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:ScheduleKeyDeletion"}"#,
    );
    assert_eq!(
        evaluate(&doc, "kms:ScheduleKeyDeletion", ALICE),
        Evaluation {
            deny: true,
            allow: AllowMatch::Direct
        }
    );
    assert_eq!(
        evaluate(&doc, "kms:Decrypt", ALICE),
        Evaluation {
            deny: false,
            allow: AllowMatch::Direct
        }
    );
    assert!(!evaluate(&doc, "kms:ScheduleKeyDeletion", CAROL).deny);
    assert_eq!(
        doc.sids().collect::<Vec<_>>(),
        vec![Some("All"), Some("NoDelete")]
    );
}

#[test]
fn deny_applies_through_an_account_match() {
    let doc = key_policy(
        r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:Decrypt"}"#,
    );
    assert_eq!(
        evaluate(&doc, "kms:Decrypt", ALICE),
        Evaluation {
            deny: true,
            allow: AllowMatch::None
        }
    );
    assert!(evaluate(&doc, "kms:Decrypt", ROOT).deny);
    assert!(!evaluate(&doc, "kms:Decrypt", BOB).deny);
    assert!(!evaluate(&doc, "kms:Encrypt", ALICE).deny);
}

#[test]
fn not_principal() {
    // Deny everyone but alice.
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"kms:*"},
           {"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::111122223333:user/alice"]},"Action":"kms:*"}"#,
    );
    assert!(!evaluate(&doc, "kms:Decrypt", ALICE).deny);
    assert!(evaluate(&doc, "kms:Decrypt", CAROL).deny);
    assert!(evaluate(&doc, "kms:Decrypt", ROOT).deny);
    assert!(evaluate(&doc, "kms:Decrypt", BOB).deny);

    // Naming the account spares its root only, not its users.
    let doc =
        key_policy(r#"{"Effect":"Deny","NotPrincipal":{"AWS":"111122223333"},"Action":"kms:*"}"#);
    assert!(!evaluate(&doc, "kms:Decrypt", ROOT).deny);
    assert!(evaluate(&doc, "kms:Decrypt", ALICE).deny);
    assert!(evaluate(&doc, "kms:Decrypt", BOB).deny);

    // A role spares its sessions.
    let doc = key_policy(
        r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/KeyAdmin"},"Action":"kms:*"}"#,
    );
    assert!(
        !evaluate(
            &doc,
            "kms:Decrypt",
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/s"
        )
        .deny
    );
    assert!(
        evaluate(
            &doc,
            "kms:Decrypt",
            "arn:aws:sts::111122223333:assumed-role/Other/s"
        )
        .deny
    );

    // An Allow with NotPrincipal is a direct match for everyone not listed.
    let doc = key_policy(
        r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::444455556666:user/bob"},"Action":"kms:Decrypt"}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Decrypt", OTHER_ROOT), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Decrypt", BOB), AllowMatch::None);

    // NotPrincipal "*" leaves nobody; foreign principals exclude nobody.
    let doc = key_policy(r#"{"Effect":"Deny","NotPrincipal":"*","Action":"kms:*"}"#);
    assert!(!evaluate(&doc, "kms:Decrypt", ALICE).deny);
    let doc = key_policy(
        r#"{"Effect":"Deny","NotPrincipal":{"Service":"logs.amazonaws.com"},"Action":"kms:*"}"#,
    );
    assert!(evaluate(&doc, "kms:Decrypt", ALICE).deny);
}

#[test]
fn identity_policies_always_match_the_caller_directly() {
    let doc = parse(
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["kms:Decrypt","kms:Encrypt"],"Resource":"arn:aws:kms:us-east-1:111122223333:key/*"},
            {"Effect":"Deny","Action":"kms:Encrypt","Resource":"*"}]}"#,
        PolicyKind::Identity,
    );
    assert_eq!(
        evaluate(&doc, "kms:Decrypt", ALICE),
        Evaluation {
            deny: false,
            allow: AllowMatch::Direct
        }
    );
    assert_eq!(
        evaluate(&doc, "kms:Encrypt", BOB),
        Evaluation {
            deny: true,
            allow: AllowMatch::Direct
        }
    );
    assert_eq!(evaluate(&doc, "kms:Sign", ALICE), Evaluation::default());
}

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

// --- matchers ------------------------------------------------------------------------------

#[test]
fn glob_matching() {
    use super::glob::matches;
    let cases = [
        ("", "", true),
        ("", "a", false),
        ("*", "", true),
        ("*", "anything", true),
        ("**", "", true),
        ("?", "", false),
        ("?", "a", true),
        ("?", "é", true),
        ("??", "é", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("a*c", "ac", true),
        ("a*c", "abbbc", true),
        ("a*c", "abbbd", false),
        ("*c", "abc", true),
        ("a*", "abc", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxcyyb", false),
        ("*a*", "bab", true),
        ("*ab", "aab", true),
        ("*aab", "aaab", true),
        ("a*?", "a", false),
        ("a*?", "ab", true),
        ("é*ü", "éxyzü", true),
        ("ABC", "abc", false),
        ("a*", "*", false),
        ("*", "*", true),
    ];
    for (pattern, text, expected) in cases {
        assert_eq!(matches(pattern, text), expected, "{pattern:?} vs {text:?}");
    }
}

#[test]
fn pathological_glob_finishes_fast() {
    use super::glob::matches;
    let text = "a".repeat(200_000);
    let start = Instant::now();
    assert!(!matches("a*a*a*a*a*b", &text));
    assert!(!matches("*a*a*a*a*a*a*a*a*a*a*b", &text));
    assert!(matches("a*a*a*a*a*b", &format!("{text}b")));
    assert!(matches("*a?a*a*", &text));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // Through the whole engine too: a long action and resource against many stars.
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"kms:a*a*a*a*a*a*a*b","Resource":"arn:a*a*a*a*a*a*b"}"#,
    );
    let action = format!("kms:{}", "a".repeat(50_000));
    let resource = format!("arn:{}", "a".repeat(50_000));
    let start = Instant::now();
    let e = evaluate_with(&doc, &action, &resource, ALICE, &ConditionValues::default());
    assert_eq!(e.allow, AllowMatch::None);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn cidr_parsing_and_containment() {
    use super::cidr::Cidr;
    use std::net::IpAddr;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let net = |s: &str| Cidr::parse(s).unwrap_or_else(|| panic!("{s}"));
    assert!(net("192.0.2.0/24").contains(ip("192.0.2.255")));
    assert!(!net("192.0.2.0/24").contains(ip("192.0.3.0")));
    assert!(net("192.0.2.128/25").contains(ip("192.0.2.200")));
    assert!(!net("192.0.2.128/25").contains(ip("192.0.2.127")));
    assert!(net("0.0.0.0/0").contains(ip("255.255.255.255")));
    assert!(net("192.0.2.1").contains(ip("192.0.2.1")));
    assert!(!net("192.0.2.1/32").contains(ip("192.0.2.2")));
    assert!(net("::/0").contains(ip("ffff::1")));
    assert!(net("fe80::/10").contains(ip("febf::1")));
    assert!(!net("fe80::/10").contains(ip("fec0::1")));
    assert!(net("2001:db8::1/128").contains(ip("2001:db8::1")));
    assert!(!net("2001:db8::1/128").contains(ip("2001:db8::2")));
    assert!(net("::ffff:0:0/96").contains(ip("::ffff:1.2.3.4")));
    assert!(!net("::ffff:0:0/96").contains(ip("1.2.3.4")));
    assert_eq!(net("10.1.2.3/8"), net("10.0.0.0/8"));
    for bad in [
        "",
        "/",
        "10.0.0.0/",
        "/8",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "10.0.0.0/ 8",
        "10.0.0/8",
        "::/129",
        "::/0000",
        "1.2.3.4/8/8",
        "x",
    ] {
        assert!(Cidr::parse(bad).is_none(), "{bad:?}");
    }
}
