//! The symmetric ciphertext parser ([`Envelope::parse`]) and the canonical encryption context.

use std::collections::BTreeMap;

use crate::api::validate::CIPHERTEXT;
use crate::error::KmsError;
use crate::kms::ciphertext::{canonical_context, overhead, Envelope, FORMAT_VERSION};

/// Invariants:
/// - a blob parses exactly when it starts with our version and a scheme byte (1, 2 or 3)
///   and is longer than that scheme's overhead;
/// - a refused blob is `InvalidCiphertextException` (400, no message: nothing about why);
/// - what parses reassembles to the same bytes, and `peek_key_id` names the same key;
/// - the canonical encryption context of a context built from the bytes decodes back to
///   that context (the encoding is injective, so no two contexts share a wrapping key).
pub fn ciphertext(data: &[u8]) {
    // The wire refuses a longer CiphertextBlob before it reaches the parser, and inputs of
    // tens of kilobytes in the queue slowed the run to a few hundred executions a second.
    if data.len() > CIPHERTEXT.max {
        return;
    }
    let well_formed = data.first() == Some(&FORMAT_VERSION)
        && data
            .get(1)
            .and_then(|&scheme| overhead(scheme))
            .is_some_and(|overhead| data.len() > overhead);
    match Envelope::parse(data) {
        Ok(envelope) => {
            assert!(well_formed, "a malformed blob parsed");
            assert_eq!(
                envelope.to_bytes(),
                data,
                "parse then assemble changed the blob"
            );
            assert_eq!(Envelope::peek_key_id(data), Some(envelope.key_id));
        }
        Err(e) => {
            assert!(!well_formed, "a well-formed blob was refused: {e:?}");
            assert_eq!(e, KmsError::InvalidCiphertext);
            let wire = e.wire();
            assert_eq!((wire.status, wire.message), (400, None));
            assert_eq!(Envelope::peek_key_id(data), None);
        }
    }

    let context = context_from(data);
    assert_eq!(
        decode_canonical_context(&canonical_context(&context)).as_ref(),
        Some(&context),
        "the canonical context does not decode to its context"
    );
}

/// A context from the bytes: NUL-separated strings taken as key, value, key, value, ...
fn context_from(data: &[u8]) -> BTreeMap<String, String> {
    let mut parts = data
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned());
    let mut context = BTreeMap::new();
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        context.insert(k, v);
    }
    context
}

/// The inverse of `canonical_context`: count, then length-prefixed key and value per pair;
/// `None` unless the bytes are exactly one such encoding of a sorted, duplicate-free map.
fn decode_canonical_context(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    fn length(bytes: &mut &[u8]) -> Option<usize> {
        let raw: [u8; 4] = take(bytes, 4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(raw)).ok()
    }
    fn string(bytes: &mut &[u8]) -> Option<String> {
        let n = length(bytes)?;
        String::from_utf8(take(bytes, n)?.to_vec()).ok()
    }
    let mut rest = bytes;
    let count = length(&mut rest)?;
    let mut out = BTreeMap::new();
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let key = string(&mut rest)?;
        let value = string(&mut rest)?;
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return None;
        }
        previous = Some(key.clone());
        out.insert(key, value);
    }
    rest.is_empty().then_some(out)
}
