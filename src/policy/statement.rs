//! The document and statement grammar: which elements exist, which are required, and what
//! their values may be.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::condition::{self, Condition};
use super::principal::{self, PrincipalClause};
use super::AllowMatch;
use super::{glob, shown, Caller, PolicyError, PolicyKind, RequestContext};

const DOCUMENT_KEYS: &[&str] = &["Version", "Id", "Statement"];
const STATEMENT_KEYS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    Allow,
    Deny,
}

/// A list of patterns, or (for `NotAction`/`NotResource`) everything but them.
#[derive(Debug, Clone)]
struct Patterns {
    patterns: Vec<String>,
    negated: bool,
}

impl Patterns {
    fn applies_to(&self, text: &str) -> bool {
        self.patterns.iter().any(|p| glob::matches(p, text)) != self.negated
    }
}

#[derive(Debug, Clone)]
pub(super) struct Statement {
    pub(super) sid: Option<String>,
    pub(super) effect: Effect,
    principal: PrincipalClause,
    /// Lowercased: actions match ignoring case.
    actions: Patterns,
    /// Empty (and not negated) when a key policy statement has no `Resource`: it then
    /// applies to nothing, as in AWS KMS.
    resources: Patterns,
    conditions: Vec<Condition>,
}

/// The parsed document's parts.
pub(super) struct Parsed {
    pub(super) version: Option<String>,
    pub(super) id: Option<String>,
    pub(super) statements: Vec<Statement>,
}

fn error(message: &str) -> PolicyError {
    PolicyError(message.to_owned())
}

fn check_keys(map: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), PolicyError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(PolicyError(format!(
            "{what} has an unsupported element: {}.",
            shown(unknown)
        ))),
        None => Ok(()),
    }
}

/// An element that, when present, must be a string (`Id`, `Sid`).
fn optional_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, PolicyError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(PolicyError(format!("{name} must be a string."))),
    }
}

pub(super) fn parse_document(value: &Value, kind: PolicyKind) -> Result<Parsed, PolicyError> {
    let Value::Object(doc) = value else {
        return Err(error("The policy document must be a JSON object."));
    };
    check_keys(doc, DOCUMENT_KEYS, "The policy document")?;
    let version = match doc.get("Version") {
        None => None,
        Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => Some(v.clone()),
        Some(_) => return Err(error("Version must be 2012-10-17 or 2008-10-17.")),
    };
    let id = optional_string(doc, "Id")?;
    let statements = match doc.get("Statement") {
        None => return Err(error("The policy document is missing Statement.")),
        Some(single @ Value::Object(_)) => vec![parse_statement(single, kind)?],
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|s| parse_statement(s, kind))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(error("Statement must be an object or a non-empty array.")),
    };
    Ok(Parsed {
        version,
        id,
        statements,
    })
}

/// The element named `positive` or `negative` (`Action`/`NotAction`, ...), at most one.
fn one_of<'v>(
    map: &'v Map<String, Value>,
    positive: &str,
    negative: &str,
) -> Result<Option<(&'v Value, bool)>, PolicyError> {
    match (map.get(positive), map.get(negative)) {
        (Some(_), Some(_)) => Err(PolicyError(format!(
            "Statement has both {positive} and {negative}."
        ))),
        (Some(v), None) => Ok(Some((v, false))),
        (None, Some(v)) => Ok(Some((v, true))),
        (None, None) => Ok(None),
    }
}

/// A string, or a non-empty array of strings.
fn strings<'v>(value: &'v Value, element: &str) -> Result<Vec<&'v str>, PolicyError> {
    let bad = || {
        PolicyError(format!(
            "{element} must be a string or a non-empty array of strings."
        ))
    };
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|v| v.as_str().ok_or_else(bad)).collect()
        }
        _ => Err(bad()),
    }
}

/// `*`, or `service:pattern` with a service of letters, digits and `-`, and a pattern of
/// letters, digits, `*` and `?`.
fn valid_action(action: &str) -> bool {
    if action == "*" {
        return true;
    }
    let Some((service, name)) = action.split_once(':') else {
        return false;
    };
    !service.is_empty()
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?')
}

/// `*` or an ARN pattern (`arn:...`, wildcards allowed), without whitespace.
fn valid_resource(resource: &str) -> bool {
    (resource == "*" || resource.starts_with("arn:"))
        && !resource
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
}

fn parse_statement(value: &Value, kind: PolicyKind) -> Result<Statement, PolicyError> {
    let Value::Object(map) = value else {
        return Err(error("Each policy statement must be a JSON object."));
    };
    check_keys(map, STATEMENT_KEYS, "Policy statement")?;

    let sid = optional_string(map, "Sid")?;

    let effect = match map.get("Effect") {
        None => return Err(error("Policy statement is missing Effect.")),
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(_) => return Err(error("Effect must be Allow or Deny.")),
    };

    let principal = match (kind, one_of(map, "Principal", "NotPrincipal")?) {
        (PolicyKind::Identity, None) => PrincipalClause::Caller,
        (PolicyKind::Identity, Some(_)) => {
            return Err(error(
                "Identity policies must not contain Principal or NotPrincipal.",
            ))
        }
        (PolicyKind::Key, None) => {
            return Err(error("Policy statement is missing Principal."));
        }
        (PolicyKind::Key, Some((v, false))) => PrincipalClause::Principal(principal::parse(v)?),
        (PolicyKind::Key, Some((v, true))) => PrincipalClause::NotPrincipal(principal::parse(v)?),
    };

    // AWS KMS accepts a key policy statement without Action or Resource and gives it no
    // effect; IAM refuses such an identity policy.
    let (action_value, not_action) = match (kind, one_of(map, "Action", "NotAction")?) {
        (_, Some(found)) => (Some(found.0), found.1),
        (PolicyKind::Key, None) => (None, false),
        (PolicyKind::Identity, None) => {
            return Err(error("Policy statement must contain actions."))
        }
    };
    let element = if not_action { "NotAction" } else { "Action" };
    let mut actions = Vec::new();
    for action in action_value
        .map(|v| strings(v, element))
        .transpose()?
        .unwrap_or_default()
    {
        if action.is_empty() {
            return Err(PolicyError(format!(
                "{element} must not be an empty string."
            )));
        }
        if !valid_action(action) {
            return Err(PolicyError(format!("Invalid action: {}.", shown(action))));
        }
        actions.push(action.to_ascii_lowercase());
    }

    let resources = match one_of(map, "Resource", "NotResource")? {
        None if kind == PolicyKind::Identity => {
            return Err(error("Policy statement must contain resources."))
        }
        None => Patterns {
            patterns: Vec::new(),
            negated: false,
        },
        Some((value, negated)) => {
            let element = if negated { "NotResource" } else { "Resource" };
            let mut patterns = Vec::new();
            for resource in strings(value, element)? {
                if !valid_resource(resource) {
                    return Err(PolicyError(format!(
                        "Invalid resource: {}.",
                        shown(resource)
                    )));
                }
                patterns.push(resource.to_owned());
            }
            Patterns { patterns, negated }
        }
    };

    let conditions = match map.get("Condition") {
        None => Vec::new(),
        Some(block) => condition::parse_block(block)?,
    };

    Ok(Statement {
        sid,
        effect,
        principal,
        actions: Patterns {
            patterns: actions,
            negated: not_action,
        },
        resources,
        conditions,
    })
}

impl Statement {
    /// How the statement applies to the request: `None` when it does not, otherwise the
    /// strength of the principal match.
    pub(super) fn applies(
        &self,
        request: &RequestContext<'_>,
        caller: &Caller<'_>,
        action: &str,
    ) -> AllowMatch {
        let matched = self.principal.matches(caller);
        if matched == AllowMatch::None
            || !self.actions.applies_to(action)
            || !self.resources.applies_to(request.resource)
            || !self
                .conditions
                .iter()
                .all(|c| c.holds(lookup(request, &c.key).as_deref()))
        {
            return AllowMatch::None;
        }
        matched
    }
}

/// The request's values for a normalised condition key. `aws:PrincipalArn` and
/// `aws:PrincipalAccount` default to the request's caller when the integrator did not set
/// them, as AWS always supplies them.
fn lookup<'r>(request: &RequestContext<'r>, key: &str) -> Option<Cow<'r, [String]>> {
    if let Some(values) = request.values.get_normalized(key) {
        return Some(Cow::Borrowed(values));
    }
    let implied = match key {
        "aws:principalarn" => request.principal_arn,
        "aws:principalaccount" => request.principal_account,
        _ => return None,
    };
    Some(Cow::Owned(vec![implied.to_owned()]))
}
