//! IAM policy documents: parsing, validation and evaluation of KMS key policies and IAM
//! identity policies.
//!
//! [`PolicyDocument::parse`] reads the JSON text and refuses anything malformed with a
//! [`PolicyError`] worded for `MalformedPolicyDocumentException`. [`PolicyDocument::evaluate`]
//! reports, for one request, whether some Deny statement applies and how strongly some Allow
//! statement applies ([`AllowMatch`]); combining key policy, identity policy and grants is
//! the caller's business.
//!
//! Supported: `Principal`/`NotPrincipal` (`AWS`, `Service`, `Federated`, `CanonicalUser`),
//! `Action`/`NotAction` and `Resource`/`NotResource` with `*` and `?` wildcards, and the
//! `Condition` operators of the string, numeric, `Bool`, IP address, ARN, `BinaryEquals` and
//! `Null` families, each with `IfExists` and the `ForAnyValue:`/`ForAllValues:` set
//! qualifiers (except `Null`). Not supported: the `Date*` operators (refused as unsupported)
//! and policy variables (`${...}` is compared literally).
//!
//! Everything here is plain data and std; no I/O, no locking.

mod cidr;
mod condition;
mod glob;
mod json;
mod principal;
mod statement;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;

use principal::Caller;
use statement::{Effect, Statement};

/// Which kind of policy a document is; it decides whether statements name principals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A key policy: every statement has exactly one of `Principal` and `NotPrincipal`.
    Key,
    /// An identity policy: attached to the caller, no statement names a principal.
    Identity,
}

/// Why a policy document was refused. The message is fit for a
/// `MalformedPolicyDocumentException` and quotes at most a short excerpt of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// At most this many characters of a document's text are quoted in an error message.
const SHOWN_CHARS: usize = 64;

/// A piece of the document for an error message: shortened, control characters replaced.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(SHOWN_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(SHOWN_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

const ENCRYPTION_CONTEXT_PREFIX: &str = "kms:encryptioncontext:";

/// The form condition keys are stored and looked up in. Condition key names are
/// case-insensitive, so they are lowercased; except that in
/// `kms:EncryptionContext:<context-key>` only the `kms:EncryptionContext:` prefix is, because
/// the encryption context key after it is case-sensitive in AWS (`kms:EncryptionContext:Dept`
/// and `kms:EncryptionContext:dept` are different keys).
fn normalize_key(key: &str) -> String {
    match key.get(..ENCRYPTION_CONTEXT_PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(ENCRYPTION_CONTEXT_PREFIX) => {
            format!(
                "{ENCRYPTION_CONTEXT_PREFIX}{}",
                &key[ENCRYPTION_CONTEXT_PREFIX.len()..]
            )
        }
        _ => key.to_lowercase(),
    }
}

/// The condition keys of a request and their values. Keys are case-insensitive (see
/// [`ConditionValues::set`]); a key may have one value, several, or none (an empty set,
/// which conditions treat like an absent key).
#[derive(Default, Clone, Debug)]
pub struct ConditionValues {
    values: HashMap<String, Vec<String>>,
}

impl ConditionValues {
    /// Sets a single-valued key, replacing any earlier values. Key names are matched ignoring
    /// case, except the context key in `kms:EncryptionContext:<context-key>`.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(normalize_key(key), vec![value.into()]);
    }

    /// Sets a multi-valued key such as `kms:EncryptionContextKeys` (possibly to no values),
    /// replacing any earlier values.
    pub fn set_many(&mut self, key: &str, values: Vec<String>) {
        self.values.insert(normalize_key(key), values);
    }

    /// The values of a key, if it was set.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.get_normalized(&normalize_key(key))
    }
}

/// Where policy evaluation finds a request's condition keys, by normalised name.
pub trait ConditionSource: std::fmt::Debug {
    fn get_normalized(&self, key: &str) -> Option<&[String]>;
}

impl ConditionSource for ConditionValues {
    fn get_normalized(&self, key: &str) -> Option<&[String]> {
        self.values.get(key).map(Vec::as_slice)
    }
}

/// Condition values built on first use. Most requests meet only statements without
/// conditions (the default key policy has none), and for them building the values was
/// most of the cost of authorization.
pub struct LazyConditionValues<F> {
    build: F,
    values: std::cell::OnceCell<ConditionValues>,
}

impl<F: Fn() -> ConditionValues> LazyConditionValues<F> {
    pub fn new(build: F) -> Self {
        LazyConditionValues {
            build,
            values: std::cell::OnceCell::new(),
        }
    }
}

impl<F> std::fmt::Debug for LazyConditionValues<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyConditionValues")
            .field("values", &self.values.get())
            .finish()
    }
}

impl<F: Fn() -> ConditionValues> ConditionSource for LazyConditionValues<F> {
    fn get_normalized(&self, key: &str) -> Option<&[String]> {
        self.values.get_or_init(&self.build).get_normalized(key)
    }
}

/// One request, as policy evaluation sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// The action, e.g. `kms:Decrypt`.
    pub action: &'a str,
    /// The key ARN, or `*` for account-level actions.
    pub resource: &'a str,
    /// The caller, e.g. `arn:aws:iam::111122223333:user/alice` or
    /// `arn:aws:iam::111122223333:root`.
    pub principal_arn: &'a str,
    /// The caller's 12-digit account id.
    pub principal_account: &'a str,
    /// Condition keys. `aws:PrincipalArn` and `aws:PrincipalAccount` default to the two
    /// fields above when not set here.
    pub values: &'a dyn ConditionSource,
}

/// How strongly a policy allows a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub enum AllowMatch {
    /// No Allow statement applies.
    #[default]
    None,
    /// An Allow statement applies only because it names the caller's account, and the caller
    /// is not that account's root: the account delegates to its identity policies.
    Account,
    /// An Allow statement names the caller itself (its ARN, `*`, a `NotPrincipal` leaving it
    /// out, its account when the caller is the account root), or the policy is an identity
    /// policy.
    Direct,
}

/// The outcome of evaluating one policy for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evaluation {
    /// Some Deny statement applies (through any kind of principal match).
    pub deny: bool,
    /// The strongest match among the Allow statements that apply.
    pub allow: AllowMatch,
}

/// A parsed and validated policy document.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    kind: PolicyKind,
    version: Option<String>,
    id: Option<String>,
    statements: Vec<Statement>,
}

impl PolicyDocument {
    /// Parses and validates a policy document of the given kind.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<PolicyDocument, PolicyError> {
        let value = json::parse(text)?;
        let parsed = statement::parse_document(&value, kind)?;
        Ok(PolicyDocument {
            kind,
            version: parsed.version,
            id: parsed.id,
            statements: parsed.statements,
        })
    }

    /// Which statements apply to `request`, summarised.
    pub fn evaluate(&self, request: &RequestContext<'_>) -> Evaluation {
        let caller = Caller::new(request.principal_arn, request.principal_account);
        let action = request.action.to_ascii_lowercase();
        let mut evaluation = Evaluation::default();
        for statement in &self.statements {
            let matched = statement.applies(request, &caller, &action);
            if matched == AllowMatch::None {
                continue;
            }
            match statement.effect {
                Effect::Deny => evaluation.deny = true,
                Effect::Allow => evaluation.allow = evaluation.allow.max(matched),
            }
        }
        evaluation
    }

    /// The kind the document was parsed as.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// The `Version` element, if present.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The `Id` element, if present.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The `Sid` of each statement, in order (`None` where a statement has none).
    pub fn sids(&self) -> impl Iterator<Item = Option<&str>> {
        self.statements.iter().map(|s| s.sid.as_deref())
    }
}
