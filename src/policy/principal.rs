//! The `Principal` and `NotPrincipal` elements: parsing, validation and matching a caller.

use serde_json::Value;

use super::{shown, AllowMatch, PolicyError};

const INVALID_PRINCIPALS: &str = "Policy contains a statement with one or more invalid principals.";

/// Who a statement is about.
#[derive(Debug, Clone)]
pub(super) enum PrincipalClause {
    /// An identity policy: it is attached to the caller, so it always names the caller.
    Caller,
    Principal(Vec<PrincipalId>),
    NotPrincipal(Vec<PrincipalId>),
}

/// One principal named in a policy.
#[derive(Debug, Clone)]
pub(super) enum PrincipalId {
    /// `"*"` or `{"AWS": "*"}`.
    Everyone,
    /// A 12-digit account id (any partition) or `arn:<partition>:iam::<account>:root`.
    Account {
        partition: Option<String>,
        account: String,
    },
    /// A user, assumed-role session or federated-user ARN, matched exactly.
    Exact(String),
    /// `arn:<partition>:iam::<account>:role/<path/><name>`: the role and its sessions.
    Role {
        arn: String,
        partition: String,
        account: String,
        name: String,
    },
    /// `Service`, `Federated` or `CanonicalUser`: valid, but never one of our callers.
    Foreign,
}

/// The caller of a request, with its ARN taken apart once per evaluation.
pub(super) struct Caller<'a> {
    arn: &'a str,
    account: &'a str,
    partition: Option<&'a str>,
    is_root: bool,
    /// For `arn:<p>:sts::<account>:assumed-role/<role>/<session>`: (account, role).
    session_of: Option<(&'a str, &'a str)>,
}

impl<'a> Caller<'a> {
    pub(super) fn new(arn: &'a str, account: &'a str) -> Caller<'a> {
        let mut caller = Caller {
            arn,
            account,
            partition: None,
            is_root: false,
            session_of: None,
        };
        if let Some(parts) = split_arn(arn) {
            let [_, partition, service, region, arn_account, resource] = parts;
            caller.partition = Some(partition);
            caller.is_root = service == "iam"
                && region.is_empty()
                && arn_account == account
                && resource == "root";
            if service == "sts" {
                caller.session_of = resource
                    .strip_prefix("assumed-role/")
                    .and_then(|rest| rest.split_once('/'))
                    .map(|(role, _session)| (arn_account, role));
            }
        }
        caller
    }
}

impl PrincipalClause {
    /// How the clause names `caller`; `None` when the statement does not apply to it.
    pub(super) fn matches(&self, caller: &Caller<'_>) -> AllowMatch {
        match self {
            PrincipalClause::Caller => AllowMatch::Direct,
            PrincipalClause::Principal(ids) => ids
                .iter()
                .map(|id| id.matches(caller))
                .max()
                .unwrap_or(AllowMatch::None),
            // A caller is excluded only by naming it directly: listing an account excludes that
            // account's root, not its users (as in AWS, where a Deny with NotPrincipal must list
            // both the user and its account to spare the user).
            PrincipalClause::NotPrincipal(ids) => {
                if ids
                    .iter()
                    .any(|id| id.matches(caller) == AllowMatch::Direct)
                {
                    AllowMatch::None
                } else {
                    AllowMatch::Direct
                }
            }
        }
    }
}

impl PrincipalId {
    fn matches(&self, caller: &Caller<'_>) -> AllowMatch {
        match self {
            PrincipalId::Everyone => AllowMatch::Direct,
            PrincipalId::Account { partition, account } => {
                let same_partition = partition
                    .as_deref()
                    .is_none_or(|p| caller.partition == Some(p));
                if account != caller.account || !same_partition {
                    AllowMatch::None
                } else if caller.is_root {
                    AllowMatch::Direct
                } else {
                    AllowMatch::Account
                }
            }
            PrincipalId::Exact(arn) => direct_if(arn == caller.arn),
            PrincipalId::Role {
                arn,
                partition,
                account,
                name,
            } => direct_if(
                arn == caller.arn
                    || (caller.partition == Some(partition.as_str())
                        && caller.session_of == Some((account.as_str(), name.as_str()))),
            ),
            PrincipalId::Foreign => AllowMatch::None,
        }
    }
}

fn direct_if(condition: bool) -> AllowMatch {
    if condition {
        AllowMatch::Direct
    } else {
        AllowMatch::None
    }
}

/// Parses the value of a `Principal` or `NotPrincipal` element.
pub(super) fn parse(value: &Value) -> Result<Vec<PrincipalId>, PolicyError> {
    let invalid = || PolicyError(INVALID_PRINCIPALS.into());
    match value {
        Value::String(s) if s == "*" => Ok(vec![PrincipalId::Everyone]),
        Value::Object(map) if !map.is_empty() => {
            let mut ids = Vec::new();
            for (kind, names) in map {
                let names = string_list(names).ok_or_else(invalid)?;
                for name in names {
                    let id = match kind.as_str() {
                        "AWS" => parse_aws(name),
                        "Service" | "Federated" | "CanonicalUser" => {
                            plausible(name).then_some(PrincipalId::Foreign)
                        }
                        _ => {
                            return Err(PolicyError(format!(
                                "Unsupported principal type: {}.",
                                shown(kind)
                            )))
                        }
                    };
                    ids.push(id.ok_or_else(invalid)?);
                }
            }
            Ok(ids)
        }
        _ => Err(invalid()),
    }
}

/// A string, or a non-empty array of strings.
fn string_list(value: &Value) -> Option<Vec<&str>> {
    match value {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// Non-empty, without whitespace or control characters.
fn plausible(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Splits an ARN into its six components; the resource (last) may contain colons.
pub(super) fn split_arn(arn: &str) -> Option<[&str; 6]> {
    let mut parts = arn.splitn(6, ':');
    let mut out = [""; 6];
    for slot in &mut out {
        *slot = parts.next()?;
    }
    Some(out)
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// An IAM name or path segment: letters, digits and `+=,.@_-`.
fn is_iam_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// `name` or `path/.../name`, every segment an IAM name.
fn is_iam_path_and_name(s: &str) -> bool {
    s.split('/').all(is_iam_name)
}

/// An `AWS` principal: `*`, an account id, an account root ARN, or a user, role,
/// assumed-role or federated-user ARN. Wildcards inside ARNs are not principals.
fn parse_aws(name: &str) -> Option<PrincipalId> {
    if name == "*" {
        return Some(PrincipalId::Everyone);
    }
    if is_account_id(name) {
        return Some(PrincipalId::Account {
            partition: None,
            account: name.to_owned(),
        });
    }
    let [prefix, partition, service, region, account, resource] = split_arn(name)?;
    let partition_ok = !partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if prefix != "arn" || !partition_ok || !region.is_empty() || !is_account_id(account) {
        return None;
    }
    match service {
        "iam" if resource == "root" => Some(PrincipalId::Account {
            partition: Some(partition.to_owned()),
            account: account.to_owned(),
        }),
        "iam" => {
            if let Some(rest) = resource.strip_prefix("user/") {
                is_iam_path_and_name(rest).then(|| PrincipalId::Exact(name.to_owned()))
            } else {
                let rest = resource.strip_prefix("role/")?;
                if !is_iam_path_and_name(rest) {
                    return None;
                }
                let role = rest.rsplit('/').next().unwrap_or(rest);
                Some(PrincipalId::Role {
                    arn: name.to_owned(),
                    partition: partition.to_owned(),
                    account: account.to_owned(),
                    name: role.to_owned(),
                })
            }
        }
        "sts" => {
            let valid = if let Some(rest) = resource.strip_prefix("assumed-role/") {
                matches!(rest.split_once('/'), Some((role, session)) if is_iam_name(role) && is_iam_name(session))
            } else {
                resource
                    .strip_prefix("federated-user/")
                    .is_some_and(is_iam_name)
            };
            valid.then(|| PrincipalId::Exact(name.to_owned()))
        }
        _ => None,
    }
}
