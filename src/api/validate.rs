//! Model constraints (required, length, range, enum, pattern) and AWS's message format.
//!
//! Each request's `validate` feeds its members, in the model's member order, to a
//! [`Violations`] collector; [`Violations::finish`] forms AWS's text:
//! `1 validation error detected: Value '<v>' at '<path>' failed to satisfy constraint: <c>` or
//! `N validation errors detected: <part>; <part>`. Only what the model states is checked here;
//! semantic rules belong to the service core.

use std::fmt::Write as _;

use super::blob::ByteLen;
use super::shapes::{RecipientInfo, Tag};
use crate::error::KmsError;

/// Checks a decoded request against the model's constraints.
pub trait Validate {
    fn validate(&self) -> Result<(), KmsError>;
}

/// Readable flags for the `required` argument of the [`Violations`] checks.
pub(crate) const REQUIRED: bool = true;
pub(crate) const OPTIONAL: bool = false;

/// A string pattern from the model: its text (quoted in messages) and a full-match test.
pub(crate) struct Pattern {
    pub text: &'static str,
    pub matches: fn(&str) -> bool,
}

/// A string shape: length bounds (Java `String.length()`, UTF-16 units) and optional pattern.
pub(crate) struct StrShape {
    pub min: usize,
    pub max: usize,
    pub pattern: Option<&'static Pattern>,
}

/// A blob or list shape's length bounds, or an integer shape's value bounds.
pub(crate) struct Bounds<T> {
    pub min: T,
    pub max: T,
}

const fn s(min: usize, max: usize, pattern: Option<&'static Pattern>) -> StrShape {
    StrShape { min, max, pattern }
}

fn all_chars(v: &str, nonempty: bool, ok: fn(char) -> bool) -> bool {
    (!nonempty || !v.is_empty()) && v.chars().all(ok)
}

// Java's `\w` is ASCII `[a-zA-Z_0-9]`.
fn word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(crate) const ALIAS_NAME_PATTERN: Pattern = Pattern {
    text: "^[a-zA-Z0-9:/_-]+$",
    matches: |v| all_chars(v, true, |c| c.is_ascii_alphanumeric() || ":/_-".contains(c)),
};
pub(crate) const MARKER_PATTERN: Pattern = Pattern {
    text: r"[\u0020-\u00FF]*",
    matches: |v| all_chars(v, false, |c| ('\u{20}'..='\u{FF}').contains(&c)),
};
pub(crate) const POLICY_PATTERN: Pattern = Pattern {
    text: r"[\u0009\u000A\u000D\u0020-\u00FF]+",
    matches: |v| {
        all_chars(v, true, |c| {
            matches!(c, '\t' | '\n' | '\r') || ('\u{20}'..='\u{FF}').contains(&c)
        })
    },
};
pub(crate) const POLICY_NAME_PATTERN: Pattern = Pattern {
    text: r"[\w]+",
    matches: |v| all_chars(v, true, word),
};
pub(crate) const PRINCIPAL_ID_PATTERN: Pattern = Pattern {
    text: r"^[\w+=,.@:/-]+$",
    matches: |v| all_chars(v, true, |c| word(c) || "+=,.@:/-".contains(c)),
};
pub(crate) const XKS_KEY_ID_PATTERN: Pattern = Pattern {
    text: "^[a-zA-Z0-9-_.]+$",
    matches: |v| all_chars(v, true, |c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
};

// String shapes of request members, named after the model's shapes.
pub(crate) const KEY_ID: StrShape = s(1, 2048, None);
pub(crate) const ALIAS_NAME: StrShape = s(1, 256, Some(&ALIAS_NAME_PATTERN));
pub(crate) const DESCRIPTION: StrShape = s(0, 8192, None);
pub(crate) const POLICY: StrShape = s(1, 131072, Some(&POLICY_PATTERN));
pub(crate) const POLICY_NAME: StrShape = s(1, 128, Some(&POLICY_NAME_PATTERN));
pub(crate) const MARKER: StrShape = s(1, 1024, Some(&MARKER_PATTERN));
pub(crate) const GRANT_TOKEN: StrShape = s(1, 8192, None);
pub(crate) const GRANT_ID: StrShape = s(1, 128, None);
pub(crate) const GRANT_NAME: StrShape = s(1, 256, Some(&ALIAS_NAME_PATTERN));
pub(crate) const PRINCIPAL_ID: StrShape = s(1, 256, Some(&PRINCIPAL_ID_PATTERN));
pub(crate) const TAG_KEY: StrShape = s(1, 128, None);
pub(crate) const TAG_VALUE: StrShape = s(0, 256, None);
pub(crate) const CUSTOM_KEY_STORE_ID: StrShape = s(1, 64, None);
pub(crate) const XKS_KEY_ID: StrShape = s(1, 128, Some(&XKS_KEY_ID_PATTERN));
pub(crate) const KEY_MATERIAL_ID: StrShape = s(64, 64, None);
pub(crate) const KEY_MATERIAL_DESCRIPTION: StrShape = s(0, 256, None);

// Blob shapes (byte lengths).
pub(crate) const PLAINTEXT: Bounds<usize> = Bounds { min: 1, max: 4096 };
pub(crate) const CIPHERTEXT: Bounds<usize> = Bounds { min: 1, max: 6144 };
pub(crate) const ATTESTATION_DOCUMENT: Bounds<usize> = Bounds {
    min: 1,
    max: 262144,
};

// Integer shapes.
pub(crate) const LIMIT: Bounds<i64> = Bounds { min: 1, max: 1000 };
pub(crate) const NUMBER_OF_BYTES: Bounds<i64> = Bounds { min: 1, max: 1024 };
pub(crate) const PENDING_WINDOW_IN_DAYS: Bounds<i64> = Bounds { min: 1, max: 365 };
pub(crate) const ROTATION_PERIOD_IN_DAYS: Bounds<i64> = Bounds { min: 90, max: 2560 };

/// `GrantTokenList`: at most 10 tokens.
const GRANT_TOKEN_LIST: Bounds<usize> = Bounds { min: 0, max: 10 };

/// Java's `List.toString()`: `[a, b, c]`.
fn render_list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn utf16_len(v: &str) -> usize {
    v.encode_utf16().count()
}

fn length_violation(len: usize, min: usize, max: usize) -> Option<String> {
    if len < min {
        Some(format!(
            "Member must have length greater than or equal to {min}"
        ))
    } else if len > max {
        Some(format!(
            "Member must have length less than or equal to {max}"
        ))
    } else {
        None
    }
}

/// The constraints of a string shape, as AWS lists them for a list's members.
fn describe(shape: &StrShape) -> String {
    let mut parts = vec![
        format!(
            "Member must have length less than or equal to {}",
            shape.max
        ),
        format!(
            "Member must have length greater than or equal to {}",
            shape.min
        ),
    ];
    if let Some(p) = shape.pattern {
        parts.push(format!(
            "Member must satisfy regular expression pattern: {}",
            p.text
        ));
    }
    format!("[{}]", parts.join(", "))
}

pub(crate) fn enum_set(values: &[&str]) -> String {
    format!(
        "Member must satisfy enum value set: [{}]",
        values.join(", ")
    )
}

/// Collects violations in check order and forms AWS's message.
#[derive(Default)]
pub(crate) struct Violations(Vec<String>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one violation; `value` is `None` for a null member.
    pub fn push(&mut self, value: Option<&str>, path: &str, constraint: &str) {
        let mut part = String::from("Value ");
        match value {
            Some(v) => {
                let _ = write!(part, "'{v}' ");
            }
            None => part.push_str("null "),
        }
        let _ = write!(
            part,
            "at '{path}' failed to satisfy constraint: {constraint}"
        );
        self.0.push(part);
    }

    /// Records a violation of a member whose value KMS never prints (every blob: recorded
    /// as `Value at 'plaintext' failed to satisfy constraint: ...`).
    fn push_redacted(&mut self, path: &str, constraint: &str) {
        self.0.push(format!(
            "Value at '{path}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// The null check; returns the value when present.
    fn present<'a, T>(
        &mut self,
        path: &str,
        value: &'a Option<T>,
        required: bool,
    ) -> Option<&'a T> {
        if value.is_none() && required {
            self.push(None, path, "Member must not be null");
        }
        value.as_ref()
    }

    pub fn string(&mut self, path: &str, value: &Option<String>, shape: &StrShape, required: bool) {
        let Some(v) = self.present(path, value, required) else {
            return;
        };
        if let Some(c) = length_violation(utf16_len(v), shape.min, shape.max) {
            self.push(Some(v), path, &c);
        }
        if let Some(p) = shape.pattern {
            if !(p.matches)(v) {
                let c = format!("Member must satisfy regular expression pattern: {}", p.text);
                self.push(Some(v), path, &c);
            }
        }
    }

    pub fn blob<B: ByteLen>(
        &mut self,
        path: &str,
        value: &Option<B>,
        shape: &Bounds<usize>,
        required: bool,
    ) {
        let Some(b) = self.present(path, value, required) else {
            return;
        };
        if let Some(c) = length_violation(b.byte_len(), shape.min, shape.max) {
            self.push_redacted(path, &c);
        }
    }

    pub fn int(&mut self, path: &str, value: &Option<i64>, shape: &Bounds<i64>, required: bool) {
        let Some(&v) = self.present(path, value, required) else {
            return;
        };
        let c = if v < shape.min {
            format!(
                "Member must have value greater than or equal to {}",
                shape.min
            )
        } else if v > shape.max {
            format!("Member must have value less than or equal to {}", shape.max)
        } else {
            return;
        };
        self.push(Some(&v.to_string()), path, &c);
    }

    pub fn one_of(&mut self, path: &str, value: &Option<String>, values: &[&str], required: bool) {
        let Some(v) = self.present(path, value, required) else {
            return;
        };
        if !values.contains(&v.as_str()) {
            self.push(Some(v), path, &enum_set(values));
        }
    }

    /// A list of strings: the list's own length, then one violation for the whole list when
    /// any member breaks the member shape (AWS's `Member must satisfy constraint: [...]`).
    pub fn string_list(
        &mut self,
        path: &str,
        value: &Option<Vec<String>>,
        bounds: Option<&Bounds<usize>>,
        member: &StrShape,
        required: bool,
    ) {
        let Some(items) = self.present(path, value, required) else {
            return;
        };
        if let Some(b) = bounds {
            if let Some(c) = length_violation(items.len(), b.min, b.max) {
                self.push(Some(&render_list(items)), path, &c);
            }
        }
        let bad = |v: &String| {
            length_violation(utf16_len(v), member.min, member.max).is_some()
                || member.pattern.is_some_and(|p| !(p.matches)(v))
        };
        if items.iter().any(bad) {
            let c = format!("Member must satisfy constraint: {}", describe(member));
            self.push(Some(&render_list(items)), path, &c);
        }
    }

    /// A list of enum values: one violation for the whole list.
    pub fn enum_list(
        &mut self,
        path: &str,
        value: &Option<Vec<String>>,
        values: &[&str],
        required: bool,
    ) {
        let Some(items) = self.present(path, value, required) else {
            return;
        };
        if items.iter().any(|v| !values.contains(&v.as_str())) {
            let c = format!("Member must satisfy constraint: [{}]", enum_set(values));
            self.push(Some(&render_list(items)), path, &c);
        }
    }

    /// `GrantTokens` (`GrantTokenList` of `GrantTokenType`).
    pub fn grant_tokens(&mut self, value: &Option<Vec<String>>) {
        self.string_list(
            "grantTokens",
            value,
            Some(&GRANT_TOKEN_LIST),
            &GRANT_TOKEN,
            OPTIONAL,
        );
    }

    /// `Tags` (`TagList` of `Tag`): members are addressed as `tags.<n>.member.tagKey`.
    pub fn tags(&mut self, value: &Option<Vec<Tag>>, required: bool) {
        let Some(tags) = self.present("tags", value, required) else {
            return;
        };
        for (i, tag) in tags.iter().enumerate() {
            let base = format!("tags.{}.member", i + 1);
            self.string(&format!("{base}.tagKey"), &tag.tag_key, &TAG_KEY, REQUIRED);
            self.string(
                &format!("{base}.tagValue"),
                &tag.tag_value,
                &TAG_VALUE,
                REQUIRED,
            );
        }
    }

    /// `Recipient` (`RecipientInfo`).
    pub fn recipient(&mut self, value: &Option<RecipientInfo>) {
        let Some(r) = self.present("recipient", value, OPTIONAL) else {
            return;
        };
        self.one_of(
            "recipient.keyEncryptionAlgorithm",
            &r.key_encryption_algorithm,
            super::enums::KEY_ENCRYPTION_MECHANISM_VALUES,
            OPTIONAL,
        );
        self.blob(
            "recipient.attestationDocument",
            &r.attestation_document,
            &ATTESTATION_DOCUMENT,
            OPTIONAL,
        );
    }

    /// AWS's message for what was collected, if anything.
    fn message(&self) -> Option<String> {
        let n = self.0.len();
        let noun = if n == 1 { "error" } else { "errors" };
        (n > 0).then(|| format!("{n} validation {noun} detected: {}", self.0.join("; ")))
    }

    pub fn finish(self) -> Result<(), KmsError> {
        self.message()
            .map_or(Ok(()), |m| Err(KmsError::Validation(m)))
    }
}

/// `Value null at '<path>' ... Member must not be null`, for the service core when a member the
/// model leaves optional is required in context (e.g. `CiphertextBlob` of Decrypt/ReEncrypt).
pub fn null_member(path: &str) -> KmsError {
    let mut v = Violations::new();
    v.push(None, path, "Member must not be null");
    KmsError::Validation(v.message().unwrap_or_default())
}
