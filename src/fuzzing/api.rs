//! JSON request decoding and validation of every operation, through the handler's own
//! [`prepare`](crate::wire::prepare).

use serde_json::Value;

use crate::api::Operation;
use crate::error::KmsError;
use crate::wire::prepare;

/// The fixed texts a `SerializationException` may carry (serde's own text can quote input).
const SERIALIZATION_MESSAGES: &[&str] = &[
    "The request body is not valid JSON.",
    "A blob member is not valid base64.",
    "A member of the request has the wrong type or an invalid value.",
];

/// Request members the model marks `sensitive`: their values never appear in a message.
const SENSITIVE_MEMBERS: &[&str] = &["Plaintext", "Message"];

/// The first byte picks the operation (of all of them), the rest is the body.
///
/// Invariants:
/// - a refused body is a `SerializationException` with one of the fixed texts or a
///   `ValidationException`, both 400: never a 500 or a panic;
/// - a message depends on a sensitive member only through its length: replacing its
///   base64 text by another of the same length leaves the message as it was;
/// - a body that is accepted is still accepted after re-serialising its JSON (member
///   order, whitespace and escapes do not matter).
pub fn api_request(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let operation = Operation::ALL[usize::from(selector) % Operation::ALL.len()];
    let outcome = prepare(operation, body).map(drop);
    if let Err(e) = &outcome {
        check_error(operation, e);
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    #[allow(clippy::expect_used)] // the fuzz target's assert: a panic is its finding
    let normalised = serde_json::to_vec(&value).expect("a Value serialises");
    let normalised_outcome = prepare(operation, &normalised).map(drop);
    if let Err(e) = &normalised_outcome {
        check_error(operation, e);
        assert!(
            outcome.is_err(),
            "{operation:?}: accepted, but refused once re-serialised: {e:?}"
        );
    }
    for name in SENSITIVE_MEMBERS {
        let Some(masked) = masked(&value, name) else {
            continue;
        };
        let masked_outcome = prepare(operation, &masked).map(drop);
        if let (Err(KmsError::Validation(a)), Err(KmsError::Validation(b))) =
            (&normalised_outcome, &masked_outcome)
        {
            assert_eq!(
                a, b,
                "{operation:?}: the message depends on the {name} value"
            );
        }
    }
}

fn check_error(operation: Operation, e: &KmsError) {
    match e {
        KmsError::Serialization(m) => {
            assert!(SERIALIZATION_MESSAGES.contains(&m.as_str()), "{m:?}");
        }
        KmsError::Validation(_) => {}
        other => panic!("{operation:?}: decoding gave {other:?}"),
    }
    assert_eq!(e.wire().status, 400);
}

/// The body with the top-level string member `name` replaced by base64 text of the same
/// length and padding (every alphabet character becomes `A`), if it has such a member.
fn masked(value: &Value, name: &str) -> Option<Vec<u8>> {
    let Value::Object(members) = value else {
        return None;
    };
    let Some(Value::String(text)) = members.get(name) else {
        return None;
    };
    let replacement: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '+' || c == '/' {
                'A'
            } else {
                c
            }
        })
        .collect();
    let mut members = members.clone();
    members.insert(name.to_owned(), Value::String(replacement));
    serde_json::to_vec(&Value::Object(members)).ok()
}
