//! Policy documents: parsing ([`PolicyDocument::parse`]) and evaluation.

use serde_json::{json, Value};

use crate::policy::{
    AllowMatch, ConditionValues, Evaluation, PolicyDocument, PolicyKind, RequestContext,
};

/// The longest message a refused document may give: fixed text plus at most one short
/// excerpt of the document (64 characters and an ellipsis).
const MAX_MESSAGE_CHARS: usize = 256;

/// The first byte picks the mode. Even: a document, a NUL, then a request (lines: action,
/// resource, principal ARN, account, then `key=value` condition values). Odd: a resource
/// pattern, a NUL, then a resource, for the wildcard matcher.
///
/// Invariants (documents):
/// - parsing never panics; a refusal's message is short and free of control characters;
/// - no document is both a valid key policy and a valid identity policy;
/// - an identity policy never allows through account delegation (`AllowMatch::Account`);
/// - re-serialising the document's JSON changes neither validity nor any evaluation.
///
/// Invariant (wildcards): a `Resource` pattern allows a resource exactly when a plain
/// dynamic-programming matcher says the pattern matches it.
pub fn policy(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    if mode & 1 == 1 {
        wildcard(
            &String::from_utf8_lossy(first),
            &String::from_utf8_lossy(second),
        );
    } else if let Ok(text) = std::str::from_utf8(first) {
        document(text, &String::from_utf8_lossy(second));
    }
}

fn document(text: &str, request: &str) {
    let key = PolicyDocument::parse(text, PolicyKind::Key);
    let identity = PolicyDocument::parse(text, PolicyKind::Identity);
    assert!(
        key.is_err() || identity.is_err(),
        "a document is both a key and an identity policy"
    );
    for refused in [&key, &identity]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
    {
        let message = &refused.0;
        assert!(!message.is_empty());
        assert!(
            message.chars().count() <= MAX_MESSAGE_CHARS,
            "a long message: {message:?}"
        );
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }

    let lines: Vec<&str> = request.split('\n').collect();
    let line = |i: usize, default: &'static str| -> String {
        lines.get(i).map_or(default, |l| *l).to_owned()
    };
    let action = line(0, "kms:Decrypt");
    let resource = line(1, "arn:aws:kms:us-east-1:111122223333:key/k");
    let principal_arn = line(2, "arn:aws:iam::111122223333:user/alice");
    let account = line(3, "111122223333");
    let mut values = ConditionValues::default();
    let mut keys: Vec<(&str, Vec<String>)> = Vec::new();
    for pair in lines.iter().skip(4) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match keys.iter_mut().find(|(name, _)| *name == k) {
            Some((_, list)) => list.push(v.to_owned()),
            None => keys.push((k, vec![v.to_owned()])),
        }
    }
    for (k, list) in keys {
        values.set_many(k, list);
    }
    let context = RequestContext {
        action: &action,
        resource: &resource,
        principal_arn: &principal_arn,
        principal_account: &account,
        values: &values,
    };

    // Re-serialised: the strict parser accepted it, so it has no repeated keys and
    // serde_json's `Value` holds all of it.
    let normalised = serde_json::from_str::<Value>(text)
        .ok()
        .map(|v| v.to_string());
    for (kind, parsed) in [(PolicyKind::Key, &key), (PolicyKind::Identity, &identity)] {
        let Ok(doc) = parsed else { continue };
        let evaluation = doc.evaluate(&context);
        if kind == PolicyKind::Identity {
            assert_ne!(evaluation.allow, AllowMatch::Account);
        }
        #[allow(clippy::expect_used)] // the fuzz target's assert: a panic is its finding
        let normalised = normalised.as_deref().expect("an accepted document is JSON");
        let again = PolicyDocument::parse(normalised, kind)
            .unwrap_or_else(|e| panic!("accepted, but refused once re-serialised: {e}"));
        assert_eq!(again.evaluate(&context), evaluation);
        assert_eq!(again.version(), doc.version());
        assert_eq!(again.id(), doc.id());
        assert!(again.sids().eq(doc.sids()));
    }
}

fn wildcard(pattern: &str, text: &str) {
    let pattern = format!("arn:{pattern}");
    let resource = format!("arn:{text}");
    let document = json!({
        "Statement": {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": pattern}
    })
    .to_string();
    let doc = match PolicyDocument::parse(&document, PolicyKind::Identity) {
        Ok(doc) => doc,
        Err(_) => {
            assert!(
                pattern.chars().any(|c| c.is_whitespace() || c.is_control()),
                "a resource pattern without whitespace was refused: {pattern:?}"
            );
            return;
        }
    };
    let values = ConditionValues::default();
    let evaluation = doc.evaluate(&RequestContext {
        action: "kms:Decrypt",
        resource: &resource,
        principal_arn: "arn:aws:iam::111122223333:user/alice",
        principal_account: "111122223333",
        values: &values,
    });
    let expected = if reference_match(&pattern, &resource) {
        AllowMatch::Direct
    } else {
        AllowMatch::None
    };
    assert_eq!(
        evaluation,
        Evaluation {
            deny: false,
            allow: expected
        },
        "{pattern:?} against {resource:?}"
    );
}

/// `*` any run of characters, `?` exactly one: the textbook table, O(pattern × text).
fn reference_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // row[j]: does p[..i] match t[..j]
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        next[0] = row[0] && pc == '*';
        for j in 1..=t.len() {
            next[j] = match pc {
                '*' => next[j - 1] || row[j],
                '?' => row[j - 1],
                c => row[j - 1] && c == t[j - 1],
            };
        }
        row = next;
    }
    row[t.len()]
}
