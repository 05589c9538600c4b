//! The `Condition` element: operators, set qualifiers and their evaluation.
//!
//! A block is `{Operator: {Key: value | [values]}}`. Every operator and every key within an
//! operator must hold (AND); the values listed for one key are alternatives (OR).
//!
//! Policy variables (`${aws:username}` and the like) are not substituted: `${...}` in a
//! condition value is compared literally.

use std::cmp::Ordering;
use std::net::IpAddr;

use serde_json::Value;

use super::cidr::Cidr;
use super::principal::split_arn;
use super::{glob, normalize_key, shown, PolicyError};

/// One operator applied to one condition key.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    qualifier: Qualifier,
    /// `StringNotEquals`, `NumericNotEquals`, `NotIpAddress`, `ArnNotEquals`, `ArnNotLike`,
    /// `StringNotEqualsIgnoreCase`, `StringNotLike`: the positive test, inverted per value.
    negated: bool,
    if_exists: bool,
    /// Normalised with [`normalize_key`].
    pub(super) key: String,
    test: Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    /// A context key with several values holds if any value passes (for negated operators:
    /// if no value matches the listed values).
    Single,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Numeric(NumericTest),
    Bool,
    Ip,
    Arn,
    Binary,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumericTest {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

/// The supported operators (without set qualifier or `IfExists`): family and negation.
const OPERATORS: &[(&str, Family, bool)] = &[
    ("StringEquals", Family::StringEquals, false),
    ("StringNotEquals", Family::StringEquals, true),
    (
        "StringEqualsIgnoreCase",
        Family::StringEqualsIgnoreCase,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        Family::StringEqualsIgnoreCase,
        true,
    ),
    ("StringLike", Family::StringLike, false),
    ("StringNotLike", Family::StringLike, true),
    ("NumericEquals", Family::Numeric(NumericTest::Equals), false),
    (
        "NumericNotEquals",
        Family::Numeric(NumericTest::Equals),
        true,
    ),
    (
        "NumericLessThan",
        Family::Numeric(NumericTest::LessThan),
        false,
    ),
    (
        "NumericLessThanEquals",
        Family::Numeric(NumericTest::LessThanEquals),
        false,
    ),
    (
        "NumericGreaterThan",
        Family::Numeric(NumericTest::GreaterThan),
        false,
    ),
    (
        "NumericGreaterThanEquals",
        Family::Numeric(NumericTest::GreaterThanEquals),
        false,
    ),
    ("Bool", Family::Bool, false),
    ("IpAddress", Family::Ip, false),
    ("NotIpAddress", Family::Ip, true),
    // As in AWS, ArnEquals behaves as ArnLike: both take wildcards per component.
    ("ArnEquals", Family::Arn, false),
    ("ArnLike", Family::Arn, false),
    ("ArnNotEquals", Family::Arn, true),
    ("ArnNotLike", Family::Arn, true),
    ("BinaryEquals", Family::Binary, false),
    ("Null", Family::Null, false),
];

/// The values listed for one key, typed for the operator's family at parse time.
#[derive(Debug, Clone)]
enum Test {
    StringEquals(Vec<String>),
    /// Listed values lowercased.
    StringEqualsIgnoreCase(Vec<String>),
    StringLike(Vec<String>),
    Numeric(NumericTest, Vec<Number>),
    Bool(Vec<bool>),
    Ip(Vec<Cidr>),
    Arn(Vec<String>),
    /// Base64 text, compared as text.
    Binary(Vec<String>),
    /// `true`: the key must be absent; `false`: present.
    Null(Vec<bool>),
}

/// A number, exact for integers that fit `i128`, `f64` otherwise.
#[derive(Debug, Clone, Copy)]
enum Number {
    Integer(i128),
    Float(f64),
}

impl Number {
    fn parse(text: &str) -> Option<Number> {
        if let Ok(i) = text.parse::<i128>() {
            return Some(Number::Integer(i));
        }
        // Rust also reads "inf" and "NaN"; those are not numbers in a policy.
        let looks_numeric = text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
        let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
        looks_numeric.then_some(Number::Float(f))
    }

    fn compare(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Integer(a), Number::Integer(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            // Precision loss beyond 2^53 only when the other side is fractional anyway.
            Number::Integer(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl NumericTest {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            NumericTest::Equals => ordering == Ordering::Equal,
            NumericTest::LessThan => ordering == Ordering::Less,
            NumericTest::LessThanEquals => ordering != Ordering::Greater,
            NumericTest::GreaterThan => ordering == Ordering::Greater,
            NumericTest::GreaterThanEquals => ordering != Ordering::Less,
        }
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Strips an ASCII-case-insensitive prefix.
fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Strips an ASCII-case-insensitive suffix.
fn strip_suffix_ci<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(suffix.len())?;
    let tail = text.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &text[..cut])
}

/// Operator names are matched ignoring ASCII case. `Null` takes neither a set qualifier nor
/// `IfExists`.
fn parse_operator(name: &str) -> Option<(Qualifier, Family, bool, bool)> {
    let (qualifier, rest) = if let Some(rest) = strip_prefix_ci(name, "ForAnyValue:") {
        (Qualifier::ForAnyValue, rest)
    } else if let Some(rest) = strip_prefix_ci(name, "ForAllValues:") {
        (Qualifier::ForAllValues, rest)
    } else {
        (Qualifier::Single, name)
    };
    let (base, if_exists) = match strip_suffix_ci(rest, "IfExists") {
        Some(base) => (base, true),
        None => (rest, false),
    };
    let &(_, family, negated) = OPERATORS
        .iter()
        .find(|(op, _, _)| op.eq_ignore_ascii_case(base))?;
    if family == Family::Null && (if_exists || qualifier != Qualifier::Single) {
        return None;
    }
    Some((qualifier, family, negated, if_exists))
}

/// A condition key: `prefix:name`, neither part empty, no whitespace or control characters.
fn valid_key(key: &str) -> bool {
    matches!(key.split_once(':'), Some((prefix, name)) if !prefix.is_empty() && !name.is_empty())
        && !key.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The values listed for one key, as text: strings, booleans (`true`/`false`) and numbers
/// (their JSON text), alone or in a non-empty array.
fn value_texts(key: &str, value: &Value) -> Result<Vec<String>, PolicyError> {
    fn scalar(value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    let bad = || PolicyError("Condition values must be strings, numbers or booleans.".into());
    match value {
        Value::Array(items) if items.is_empty() => Err(PolicyError(format!(
            "Condition key {} has an empty list of values.",
            shown(key)
        ))),
        Value::Array(items) => items.iter().map(|v| scalar(v).ok_or_else(bad)).collect(),
        other => Ok(vec![scalar(other).ok_or_else(bad)?]),
    }
}

fn typed<T>(
    texts: Vec<String>,
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>, PolicyError> {
    texts
        .iter()
        .map(|t| {
            parse(t).ok_or_else(|| {
                PolicyError(format!("Invalid {what} condition value: {}.", shown(t)))
            })
        })
        .collect()
}

fn make_test(family: Family, texts: Vec<String>) -> Result<Test, PolicyError> {
    Ok(match family {
        Family::StringEquals => Test::StringEquals(texts),
        Family::StringEqualsIgnoreCase => {
            Test::StringEqualsIgnoreCase(texts.iter().map(|t| t.to_lowercase()).collect())
        }
        Family::StringLike => Test::StringLike(texts),
        Family::Numeric(test) => Test::Numeric(test, typed(texts, Number::parse, "numeric")?),
        Family::Bool => Test::Bool(typed(texts, parse_bool, "Bool")?),
        Family::Ip => Test::Ip(typed(texts, Cidr::parse, "IP address")?),
        Family::Arn => Test::Arn(texts),
        Family::Binary => Test::Binary(texts),
        Family::Null => Test::Null(typed(texts, parse_bool, "Null")?),
    })
}

/// Parses a `Condition` element.
pub(super) fn parse_block(block: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(operators) = block else {
        return Err(PolicyError("Condition must be a JSON object.".into()));
    };
    let mut conditions = Vec::new();
    for (operator, keys) in operators {
        let (qualifier, family, negated, if_exists) =
            parse_operator(operator).ok_or_else(|| {
                PolicyError(format!(
                    "Unsupported condition operator: {}.",
                    shown(operator)
                ))
            })?;
        let Value::Object(keys) = keys else {
            return Err(PolicyError(format!(
                "Condition operator {} must map condition keys to values.",
                shown(operator)
            )));
        };
        if keys.is_empty() {
            return Err(PolicyError(format!(
                "Condition operator {} names no condition keys.",
                shown(operator)
            )));
        }
        for (key, value) in keys {
            if !valid_key(key) {
                return Err(PolicyError(format!(
                    "Invalid condition key: {}.",
                    shown(key)
                )));
            }
            let test = make_test(family, value_texts(key, value)?)?;
            conditions.push(Condition {
                qualifier,
                negated,
                if_exists,
                key: normalize_key(key),
                test,
            });
        }
    }
    Ok(conditions)
}

impl Condition {
    /// Whether the condition holds, given the request's values for its key (`None` when the
    /// request has no such key). An empty set of values counts as an absent key.
    pub(super) fn holds(&self, values: Option<&[String]>) -> bool {
        let present = values.filter(|v| !v.is_empty());
        if let Test::Null(expected) = &self.test {
            let absent = present.is_none();
            return expected.contains(&absent);
        }
        let Some(values) = present else {
            return self.if_exists
                || match self.qualifier {
                    Qualifier::Single => self.negated,
                    Qualifier::ForAnyValue => false,
                    Qualifier::ForAllValues => true,
                };
        };
        let passes = |value: &String| self.test.matches_any(value) != self.negated;
        match self.qualifier {
            Qualifier::Single if self.negated => values.iter().all(passes),
            Qualifier::Single | Qualifier::ForAnyValue => values.iter().any(passes),
            Qualifier::ForAllValues => values.iter().all(passes),
        }
    }
}

impl Test {
    /// Whether one request value matches any of the listed values under the positive form of
    /// the operator. A request value of the wrong type (not a number, address or boolean)
    /// matches nothing, so a negated operator holds for it.
    fn matches_any(&self, value: &str) -> bool {
        match self {
            Test::StringEquals(listed) | Test::Binary(listed) => listed.iter().any(|l| l == value),
            Test::StringEqualsIgnoreCase(listed) => {
                let value = value.to_lowercase();
                listed.contains(&value)
            }
            Test::StringLike(listed) => listed.iter().any(|l| glob::matches(l, value)),
            Test::Numeric(test, listed) => Number::parse(value).is_some_and(|v| {
                listed
                    .iter()
                    .any(|&l| v.compare(l).is_some_and(|o| test.holds(o)))
            }),
            Test::Bool(listed) => parse_bool(value).is_some_and(|v| listed.contains(&v)),
            Test::Ip(listed) => value
                .parse::<IpAddr>()
                .is_ok_and(|ip| listed.iter().any(|net| net.contains(ip))),
            Test::Arn(listed) => listed.iter().any(|l| arn_like(l, value)),
            Test::Null(_) => false,
        }
    }
}

/// ARN comparison component by component (`arn:partition:service:region:account:resource`),
/// each component a case-sensitive wildcard pattern. Either side not an ARN: no match.
fn arn_like(pattern: &str, arn: &str) -> bool {
    match (split_arn(pattern), split_arn(arn)) {
        (Some(p), Some(a)) => p.iter().zip(a.iter()).all(|(p, a)| glob::matches(p, a)),
        _ => false,
    }
}
