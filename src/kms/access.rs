//! Authorization: may this caller do this to this key?
//!
//! AWS KMS's model, evaluated on every request after the key is found and before anything
//! else is checked (so a DryRun reports a denial, not success):
//!
//! 1. An explicit `Deny` in the key policy or in the caller's identity policies refuses.
//! 2. Same account: the key policy allows the caller directly, or it allows the account
//!    (the `root` principal, "delegate to IAM") and an identity policy allows the caller.
//! 3. Another account: the key policy must allow the caller (directly or through its
//!    account) *and* the caller's identity policy must allow it: both sides, as in AWS.
//! 4. Failing that, a grant on the key for the caller that lists the operation, with its
//!    encryption-context constraints met, allows it.
//!
//! An account's root principal has every identity permission in its own account (it has no
//! identity policies), so with the default key policy it may do anything to its keys.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::{Arc, Mutex, RwLock};

use crate::api::EncryptionAlgorithm;
use crate::error::KmsError;
use crate::model::{GrantConstraints, KeyId, KeyRecord, KeySpec};
use crate::policy::{
    AllowMatch, ConditionValues, Evaluation, LazyConditionValues, PolicyDocument, PolicyKind,
    RequestContext,
};

use super::{Caller, KmsService};

/// Operations a principal of another account may call with a key's ARN (AWS's list).
const CROSS_ACCOUNT_ACTIONS: &[&str] = &[
    "CreateGrant",
    "Decrypt",
    "DeriveSharedSecret",
    "DescribeKey",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GetPublicKey",
    "ListGrants",
    "ReEncryptFrom",
    "ReEncryptTo",
    "RetireGrant",
    "RevokeGrant",
    "Sign",
    "Verify",
    "VerifyMac",
];

/// A resource the caller was authorized to use for one action. Only
/// [`KmsService::authorize`] makes one (its fields are private to this module), so a path
/// that takes an `Authorized<KeyRecord>` cannot run on a key nobody authorized.
///
/// ```compile_fail,E0451
/// fn forge(key: p11kms::model::KeyRecord) -> p11kms::kms::Authorized<p11kms::model::KeyRecord> {
///     p11kms::kms::Authorized { resource: key, action: "Encrypt" }
/// }
/// ```
#[derive(Debug)]
pub struct Authorized<R> {
    resource: R,
    action: &'static str,
}

impl<R> Authorized<R> {
    /// The action (`Encrypt`, `ReEncryptFrom`, ...) the caller was authorized for.
    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The resource itself, for a path that is done with the authorization.
    pub fn into_inner(self) -> R {
        self.resource
    }
}

impl<R> Deref for Authorized<R> {
    type Target = R;

    fn deref(&self) -> &R {
        &self.resource
    }
}

/// What a request asks of one key, as the policy conditions see it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Access<'a> {
    /// The permission without the `kms:` prefix, which is also the grant operation's name.
    pub action: &'static str,
    /// The encryption context, for operations on symmetric encryption keys (which take one,
    /// even when the request gives none). `None` elsewhere: grant constraints do not apply.
    pub context: Option<&'a BTreeMap<String, String>>,
    pub encryption_algorithm: Option<&'a str>,
    pub signing_algorithm: Option<&'a str>,
    pub mac_algorithm: Option<&'a str>,
    /// ReEncrypt: whether source and destination are the same key.
    pub same_key: Option<bool>,
    /// CreateGrant: the grant asked for.
    pub grant: Option<&'a NewGrant<'a>>,
    /// ListGrants: the grantee filter.
    pub grantee_filter: Option<&'a str>,
}

impl<'a> Access<'a> {
    pub fn to(action: &'static str) -> Self {
        Access {
            action,
            ..Default::default()
        }
    }

    /// An encryption-family action on `key`: the context counts only for a symmetric key
    /// (asymmetric ones take none), and the algorithm defaults to `SYMMETRIC_DEFAULT`.
    pub fn encryption(
        action: &'static str,
        key: &KeyRecord,
        context: &'a BTreeMap<String, String>,
        algorithm: Option<EncryptionAlgorithm>,
    ) -> Self {
        let algorithm = algorithm.unwrap_or(EncryptionAlgorithm::SymmetricDefault);
        Access {
            context: (key.key_spec == KeySpec::SymmetricDefault).then_some(context),
            encryption_algorithm: Some(algorithm.as_str()),
            ..Access::to(action)
        }
    }
}

/// The grant a CreateGrant request asks for (conditions and grant chaining look at it).
#[derive(Debug)]
pub(super) struct NewGrant<'a> {
    pub operations: &'a [String],
    pub grantee: &'a str,
    pub retiring: Option<&'a str>,
    pub constraints: &'a GrantConstraints,
}

/// Identity (IAM) policies per principal ARN, from the configuration; replaced on SIGHUP.
#[derive(Debug, Default)]
pub struct IdentityPolicies {
    by_principal: RwLock<HashMap<String, Arc<Vec<PolicyDocument>>>>,
}

impl IdentityPolicies {
    pub fn new(by_principal: HashMap<String, Vec<PolicyDocument>>) -> Self {
        let policies = IdentityPolicies::default();
        policies.replace(by_principal);
        policies
    }

    pub fn replace(&self, by_principal: HashMap<String, Vec<PolicyDocument>>) {
        let map = by_principal
            .into_iter()
            .map(|(arn, docs)| (arn, Arc::new(docs)))
            .collect();
        *self
            .by_principal
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = map;
    }

    fn of(&self, principal_arn: &str) -> Option<Arc<Vec<PolicyDocument>>> {
        self.by_principal
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(principal_arn)
            .cloned()
    }
}

/// Keys whose parsed policy is kept; when full the cache starts over (a working set beyond
/// this many keys only costs the parse it would have cost anyway). Without a bound every key
/// ever authorized stayed here after its deletion: the soak's key churn grew RSS by about
/// 10 MiB an hour.
const KEY_POLICY_CACHE_CAPACITY: usize = 4096;

/// Parsed key policies, keyed by key and checked against the stored text on every use, so
/// a PutKeyPolicy by any replica is seen at once.
#[derive(Debug, Default)]
pub(super) struct KeyPolicyCache {
    parsed: Mutex<HashMap<KeyId, Arc<(String, PolicyDocument)>>>,
}

impl KeyPolicyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, Arc<(String, PolicyDocument)>>> {
        self.parsed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `policy` (the stored text of `key_id`'s policy), parsed once per text.
    fn parsed(
        &self,
        key_id: &KeyId,
        policy: &str,
    ) -> Result<Arc<(String, PolicyDocument)>, KmsError> {
        let mut cache = self.lock();
        if let Some(entry) = cache.get(key_id) {
            if entry.0 == policy {
                return Ok(entry.clone());
            }
        }
        let doc = PolicyDocument::parse(policy, PolicyKind::Key).map_err(|e| {
            KmsError::Internal(format!("stored key policy of {key_id} does not parse: {e}"))
        })?;
        let entry = Arc::new((policy.to_owned(), doc));
        if cache.len() >= KEY_POLICY_CACHE_CAPACITY && !cache.contains_key(key_id) {
            cache.clear();
        }
        cache.insert(*key_id, entry.clone());
        Ok(entry)
    }

    /// Drops a deleted key's entry (keys deleted by another replica go when the cache is full).
    pub(super) fn forget(&self, key_id: &KeyId) {
        self.lock().remove(key_id);
    }
}

/// Why a request was refused, for AWS's message.
enum Refusal {
    ExplicitDenyInKeyPolicy,
    ExplicitDenyInIdentityPolicy,
    NoKeyPolicyAllows,
    NoIdentityPolicyAllows,
    NotCrossAccount,
}

impl KmsService {
    /// Authorizes `access` to `key` for the caller, or answers AccessDeniedException.
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        key: KeyRecord,
        access: &Access<'_>,
    ) -> Result<Authorized<KeyRecord>, KmsError> {
        self.check_authorized(caller, &key, access)?;
        Ok(Authorized {
            resource: key,
            action: access.action,
        })
    }

    fn check_authorized(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        access: &Access<'_>,
    ) -> Result<(), KmsError> {
        let key_arn = self.arn_of(key);
        let cross_account = caller.account() != key.account;
        if cross_account && !CROSS_ACCOUNT_ACTIONS.contains(&access.action) {
            return Err(self.refuse(caller, access.action, &key_arn, Refusal::NotCrossAccount));
        }
        let values = LazyConditionValues::new(|| self.condition_values(caller, Some(key), access));
        let action = format!("kms:{}", access.action);
        let request = RequestContext {
            action: &action,
            resource: &key_arn,
            principal_arn: &caller.principal.arn,
            principal_account: caller.account(),
            values: &values,
        };
        let key_policy = self.key_policy(key)?.1.evaluate(&request);
        let identity = self.identity_evaluation(caller, &request);
        let refusal = match verdict(key_policy, identity, cross_account) {
            Ok(()) => return Ok(()),
            // Grants can allow what the policies leave open, never what they deny.
            Err(r @ (Refusal::ExplicitDenyInKeyPolicy | Refusal::ExplicitDenyInIdentityPolicy)) => {
                r
            }
            Err(r) => match self.grant_allowing(caller, key, access)? {
                Some(grant_id) => {
                    caller.note_grant(grant_id);
                    return Ok(());
                }
                None => r,
            },
        };
        Err(self.refuse(caller, access.action, &key_arn, refusal))
    }

    /// Authorizes an operation that names no key (CreateKey, ListKeys, ...): identity
    /// policies only, as in AWS.
    pub(super) fn authorize_account(
        &self,
        caller: &Caller,
        access: &Access<'_>,
        extra: &[(&str, &str)],
    ) -> Result<(), KmsError> {
        let mut values = self.condition_values(caller, None, access);
        for (name, value) in extra {
            values.set(name, *value);
        }
        let action = format!("kms:{}", access.action);
        let request = RequestContext {
            action: &action,
            resource: "*",
            principal_arn: &caller.principal.arn,
            principal_account: caller.account(),
            values: &values,
        };
        let identity = self.identity_evaluation(caller, &request);
        let refusal = if identity.deny {
            Refusal::ExplicitDenyInIdentityPolicy
        } else if identity.allow == AllowMatch::None {
            Refusal::NoIdentityPolicyAllows
        } else {
            return Ok(());
        };
        Err(self.refuse(caller, access.action, "*", refusal))
    }

    /// Whether `policy` would let the caller change the key policy later (CreateKey and
    /// PutKeyPolicy refuse a policy that locks its author out, unless told to bypass).
    pub(super) fn policy_keeps_caller_in(
        &self,
        caller: &Caller,
        key_account: &str,
        key_arn: &str,
        policy: &PolicyDocument,
    ) -> bool {
        let values = self.condition_values(caller, None, &Access::to("PutKeyPolicy"));
        let request = RequestContext {
            action: "kms:PutKeyPolicy",
            resource: key_arn,
            principal_arn: &caller.principal.arn,
            principal_account: caller.account(),
            values: &values,
        };
        let identity = self.identity_evaluation(caller, &request);
        verdict(
            policy.evaluate(&request),
            identity,
            caller.account() != key_account,
        )
        .is_ok()
    }

    /// The caller's identity policies. The root principal of the caller's account holds
    /// every permission there (it has no identity policies in AWS); configured policies
    /// can still deny it.
    fn identity_evaluation(&self, caller: &Caller, request: &RequestContext<'_>) -> Evaluation {
        let mut combined = Evaluation::default();
        if let Some(docs) = self.identity.of(&caller.principal.arn) {
            for doc in docs.iter() {
                let e = doc.evaluate(request);
                combined.deny |= e.deny;
                combined.allow = combined.allow.max(e.allow);
            }
        }
        if is_account_root(&caller.principal.arn, caller.account()) {
            combined.allow = AllowMatch::Direct;
        }
        combined
    }

    /// The key's policy, parsed once per text.
    fn key_policy(&self, key: &KeyRecord) -> Result<Arc<(String, PolicyDocument)>, KmsError> {
        self.key_policies.parsed(&key.key_id, &key.policy)
    }

    /// A grant on `key` for the caller that permits `access`, if any.
    fn grant_allowing(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        access: &Access<'_>,
    ) -> Result<Option<String>, KmsError> {
        let grants = self
            .store
            .grants_for_grantee(&key.key_id, &caller.principal.arn)?;
        Ok(grants
            .into_iter()
            .find(|g| {
                g.operations.iter().any(|op| op == access.action)
                    && access.context.is_none_or(|ctx| g.constraints.admit(ctx))
                    && access.grant.is_none_or(|new| {
                        // A grant that allows CreateGrant passes on at most what it has.
                        new.operations.iter().all(|op| g.operations.contains(op))
                            && new.constraints.at_least_as_strict_as(&g.constraints)
                    })
            })
            .map(|g| g.grant_id))
    }

    fn condition_values(
        &self,
        caller: &Caller,
        key: Option<&KeyRecord>,
        access: &Access<'_>,
    ) -> ConditionValues {
        let mut v = ConditionValues::default();
        v.set("aws:PrincipalArn", caller.principal.arn.clone());
        v.set("aws:PrincipalAccount", caller.account());
        v.set("kms:CallerAccount", caller.account());
        if let Some(ip) = caller.source_ip {
            v.set("aws:SourceIp", ip.to_string());
        }
        if let Some(secure) = caller.secure_transport {
            v.set("aws:SecureTransport", secure.to_string());
        }
        if let Some(key) = key {
            v.set("kms:KeySpec", key.key_spec.as_str());
            v.set("kms:KeyUsage", key.key_usage.as_str());
            v.set("kms:KeyOrigin", key.origin.as_str());
            v.set("kms:MultiRegion", "false");
            if let Some(alias) = caller.alias_used_for(&key.key_id) {
                v.set("kms:RequestAlias", alias);
            }
        }
        if let Some(context) = access.context.filter(|c| !c.is_empty()) {
            for (k, value) in context {
                v.set(&format!("kms:EncryptionContext:{k}"), value.clone());
            }
            v.set_many(
                "kms:EncryptionContextKeys",
                context.keys().cloned().collect(),
            );
        }
        if let Some(a) = access.encryption_algorithm {
            v.set("kms:EncryptionAlgorithm", a);
        }
        if let Some(a) = access.signing_algorithm {
            v.set("kms:SigningAlgorithm", a);
        }
        if let Some(a) = access.mac_algorithm {
            v.set("kms:MacAlgorithm", a);
        }
        if let Some(same) = access.same_key {
            v.set("kms:ReEncryptOnSameKey", same.to_string());
        }
        if let Some(grant) = access.grant {
            v.set_many("kms:GrantOperations", grant.operations.to_vec());
            v.set("kms:GranteePrincipal", grant.grantee);
            if let Some(retiring) = grant.retiring {
                v.set("kms:RetiringPrincipal", retiring);
            }
            // Only AWS services integrated with KMS create grants "for an AWS resource".
            v.set("kms:GrantIsForAWSResource", "false");
            let constraint_types: Vec<String> = [
                grant
                    .constraints
                    .equals
                    .as_ref()
                    .map(|_| "EncryptionContextEquals"),
                grant
                    .constraints
                    .subset
                    .as_ref()
                    .map(|_| "EncryptionContextSubset"),
            ]
            .into_iter()
            .flatten()
            .map(String::from)
            .collect();
            if !constraint_types.is_empty() {
                v.set_many("kms:GrantConstraintType", constraint_types);
            }
        }
        if let Some(grantee) = access.grantee_filter {
            v.set("kms:GranteePrincipal", grantee);
        }
        v
    }

    /// AccessDeniedException with AWS's message shape.
    fn refuse(&self, caller: &Caller, action: &str, resource: &str, why: Refusal) -> KmsError {
        let user = &caller.principal.arn;
        let head = format!(
            "User: {user} is not authorized to perform: kms:{action} on resource: {resource}"
        );
        KmsError::AccessDenied(match why {
            Refusal::ExplicitDenyInKeyPolicy => {
                format!("{head} with an explicit deny in a resource-based policy")
            }
            Refusal::ExplicitDenyInIdentityPolicy => {
                format!("{head} with an explicit deny in an identity-based policy")
            }
            Refusal::NoKeyPolicyAllows => {
                format!("{head} because no resource-based policy allows the kms:{action} action")
            }
            Refusal::NoIdentityPolicyAllows => {
                format!("{head} because no identity-based policy allows the kms:{action} action")
            }
            Refusal::NotCrossAccount => format!(
                "{head} because kms:{action} cannot be used with a KMS key in another AWS account"
            ),
        })
    }
}

/// AWS's rule for a key policy and the caller's identity policies together: an explicit
/// Deny wins; in the key's own account a direct Allow in the key policy suffices, while an
/// Allow through the account (delegation) or from another account also needs the caller's
/// identity policy to allow.
fn verdict(
    key_policy: Evaluation,
    identity: Evaluation,
    cross_account: bool,
) -> Result<(), Refusal> {
    if key_policy.deny {
        return Err(Refusal::ExplicitDenyInKeyPolicy);
    }
    if identity.deny {
        return Err(Refusal::ExplicitDenyInIdentityPolicy);
    }
    let identity_allows = identity.allow != AllowMatch::None;
    match key_policy.allow {
        AllowMatch::Direct if !cross_account => Ok(()),
        AllowMatch::Direct | AllowMatch::Account if identity_allows => Ok(()),
        AllowMatch::Direct | AllowMatch::Account => Err(Refusal::NoIdentityPolicyAllows),
        AllowMatch::None => Err(Refusal::NoKeyPolicyAllows),
    }
}

/// `arn:<partition>:iam::<account>:root`.
pub(super) fn is_account_root(principal_arn: &str, account: &str) -> bool {
    principal_arn
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(_, rest)| rest.strip_prefix("iam::"))
        .and_then(|rest| rest.strip_prefix(account))
        == Some(":root")
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

    #[test]
    fn the_key_policy_cache_is_bounded_and_forgets_deleted_keys() {
        let cache = KeyPolicyCache::default();
        let first = KeyId::new_random();
        cache.parsed(&first, POLICY).expect("parses");
        cache.forget(&first);
        assert!(cache.lock().is_empty());
        for _ in 0..KEY_POLICY_CACHE_CAPACITY + 10 {
            cache.parsed(&KeyId::new_random(), POLICY).expect("parses");
            assert!(cache.lock().len() <= KEY_POLICY_CACHE_CAPACITY);
        }
        // A changed text is parsed again; the same text is served from the cache.
        let key = KeyId::new_random();
        let a = cache.parsed(&key, POLICY).expect("parses");
        let b = cache.parsed(&key, POLICY).expect("parses");
        assert!(Arc::ptr_eq(&a, &b));
        let changed = POLICY.replace("kms:*", "kms:Encrypt");
        let c = cache.parsed(&key, &changed).expect("parses");
        assert_eq!(c.0, changed);
    }
}
