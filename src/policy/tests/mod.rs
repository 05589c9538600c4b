//! Unit tests of the policy engine: grammar, principals, actions, resources, every condition
//! operator, set qualifiers and the wildcard matcher.

use std::time::{Duration, Instant};

use super::*;

mod actions;
mod conditions;
mod matchers;
mod parsing;
mod principals;

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
