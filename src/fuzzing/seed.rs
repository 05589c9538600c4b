//! The seed file: TOML parsing ([`parse_seed`]) and the checks of every declared key
//! ([`validate_seed`]), which run before start-up creates anything.

use crate::kms::seed::{parse_seed, validate_seed};
use crate::model::KeyId;

const ACCOUNT: &str = "111122223333";

/// The bytes are the file's text (a seed file that is not UTF-8 cannot be read).
///
/// Invariants:
/// - neither parsing nor validation panics;
/// - in an accepted file every key id is a lower-case UUID that prints back unchanged, every
///   alias starts with `alias/` and no key is declared twice.
pub fn seed(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = parse_seed(text) else {
        return;
    };
    if validate_seed(&file, ACCOUNT).is_err() {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for key in &file.keys {
        let id: KeyId = key
            .key_id
            .parse()
            .unwrap_or_else(|()| panic!("accepted key id {:?}", key.key_id));
        assert_eq!(id.to_string(), key.key_id);
        assert!(seen.insert(id), "{id} declared twice");
        for alias in &key.aliases {
            assert!(alias.starts_with("alias/") && alias.len() > 6, "{alias:?}");
            assert!(!alias.starts_with("alias/aws/"), "{alias:?}");
        }
        if let Some(days) = key.rotation_period_days {
            assert!((90..=2560).contains(&days));
        }
    }
}
