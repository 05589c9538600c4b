//! Grants and key policies: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant,
//! RevokeGrant, GetKeyPolicy, PutKeyPolicy and ListKeyPolicies.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::api::*;
use crate::error::KmsError;
use crate::model::{GrantConstraints as ConstraintsRecord, GrantRecord, KeyRecord};
use crate::policy::{PolicyDocument, PolicyKind};

use super::access::{Access, NewGrant};
use super::{dry_run, Caller, KmsService, MANAGEABLE};
use crate::store::KeyChange;

/// The only key policy name AWS KMS has.
const POLICY_NAME: &str = "default";
const DEFAULT_GRANT_LIST_LIMIT: i64 = 50;
const TOKEN_VERSION: u8 = 1;
const TOKEN_LEN: usize = 1 + 32 + 16;
/// AWS KMS's key policy size quota (32 KiB).
const MAX_KEY_POLICY_BYTES: usize = 32_768;
/// AWS's limit on grants per key.
const MAX_GRANTS_PER_KEY: u64 = 50_000;

impl KmsService {
    /// Every token in `GrantTokens` must be a token this gateway issued for a grant that
    /// still exists. Grants take effect as soon as CreateGrant returns (the store is the
    /// one source of truth), so a valid token adds nothing beyond that check.
    pub(super) fn check_grant_tokens(&self, tokens: &Option<Vec<String>>) -> Result<(), KmsError> {
        for token in tokens.iter().flatten() {
            self.grant_of_token(token)?;
        }
        Ok(())
    }

    fn grant_of_token(&self, token: &str) -> Result<GrantRecord, KmsError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| KmsError::InvalidGrantToken)?;
        if bytes.len() != TOKEN_LEN || bytes[0] != TOKEN_VERSION {
            return Err(KmsError::InvalidGrantToken);
        }
        let grant_id = hex::encode(&bytes[1..33]);
        let grant = self
            .store
            .get_grant(&grant_id)?
            .ok_or(KmsError::InvalidGrantToken)?;
        let secret_matches: bool =
            subtle::ConstantTimeEq::ct_eq(&grant.token_secret[..], &bytes[33..]).into();
        if !secret_matches {
            return Err(KmsError::InvalidGrantToken);
        }
        Ok(grant)
    }

    fn token_of(grant: &GrantRecord) -> Result<String, KmsError> {
        let mut bytes = Vec::with_capacity(TOKEN_LEN);
        bytes.push(TOKEN_VERSION);
        bytes.extend(
            hex::decode(&grant.grant_id)
                .map_err(|_| KmsError::Internal("grant id is not hex".into()))?,
        );
        bytes.extend(grant.token_secret);
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn create_grant(
        &self,
        caller: &Caller,
        req: CreateGrantCommand,
    ) -> Result<CreateGrantResponse, KmsError> {
        let key_name = &req.key_id;
        let grantee = &req.grantee_principal;
        let operations: Vec<String> = req
            .operations
            .iter()
            .map(|operation| operation.as_str().to_owned())
            .collect();
        self.check_grant_tokens(&req.grant_tokens)?;
        if operations.is_empty() {
            return Err(KmsError::Validation(
                "1 validation error detected: Value '[]' at 'operations' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
            ));
        }
        let constraints = constraints_of(req.constraints.as_ref());
        let new_grant = NewGrant {
            operations: &operations,
            grantee,
            retiring: req.retiring_principal.as_deref(),
            constraints: &constraints,
        };
        let key = self.resolve_key_only(
            caller,
            key_name,
            &Access {
                grant: Some(&new_grant),
                ..Access::to("CreateGrant")
            },
        )?;
        self.require_not_pending_deletion(&key)?;
        dry_run(req.dry_run)?;
        let mut operations = operations.clone();
        operations.sort();
        operations.dedup();

        // A retry with the same name and parameters returns the grant made the first time.
        if let Some(name) = &req.name {
            let same = self
                .store
                .grants_named(&key.key_id, name)?
                .into_iter()
                .find(|g| {
                    g.grantee_principal == *grantee
                        && g.retiring_principal == req.retiring_principal
                        && g.operations == operations
                        && g.constraints == constraints
                });
            if let Some(grant) = same {
                return Ok(CreateGrantResponse {
                    grant_token: Some(Self::token_of(&grant)?),
                    grant_id: Some(grant.grant_id),
                });
            }
        }
        if self.store.count_grants(&key.key_id)? >= MAX_GRANTS_PER_KEY {
            return Err(KmsError::LimitExceeded(format!(
                "The request would exceed the limit of {MAX_GRANTS_PER_KEY} grants for {}.",
                self.arn_of(&key)
            )));
        }
        let grant = GrantRecord {
            grant_id: hex::encode(rand::random::<[u8; 32]>()),
            key_id: key.key_id,
            name: req.name.clone(),
            grantee_principal: grantee.clone(),
            retiring_principal: req.retiring_principal.clone(),
            issuing_account: key.account.clone(),
            operations,
            constraints,
            creation_date: self.now(),
            token_secret: rand::random(),
        };
        self.store.insert_grant(&grant)?;
        caller.note_grant(grant.grant_id.clone());
        Ok(CreateGrantResponse {
            grant_token: Some(Self::token_of(&grant)?),
            grant_id: Some(grant.grant_id),
        })
    }

    pub fn list_grants(
        &self,
        caller: &Caller,
        req: ListGrantsCommand,
    ) -> Result<ListGrantsResponse, KmsError> {
        let key = self.resolve_key_only(
            caller,
            &req.key_id,
            &Access {
                grantee_filter: req.grantee_principal.as_deref(),
                ..Access::to("ListGrants")
            },
        )?;
        let limit = req.limit.unwrap_or(DEFAULT_GRANT_LIST_LIMIT);
        let after = req.marker.as_deref();
        if let Some(marker) = after {
            check_marker(marker)?;
        }
        // Filters apply after paging by grant id, so a page may be short; the marker still
        // moves forward, as with AWS.
        let page = self
            .store
            .list_grants(&key.key_id, after, limit as usize + 1)?;
        let (page, next_marker) = split_page(page, limit as usize);
        let grants = page
            .iter()
            .filter(|g| req.grant_id.as_ref().is_none_or(|id| &g.grant_id == id))
            .filter(|g| {
                req.grantee_principal
                    .as_ref()
                    .is_none_or(|p| &g.grantee_principal == p)
            })
            .map(|g| self.grant_entry(g, &key))
            .collect();
        Ok(ListGrantsResponse {
            truncated: Some(next_marker.is_some()),
            grants: Some(grants),
            next_marker,
        })
    }

    pub fn list_retirable_grants(
        &self,
        caller: &Caller,
        req: ListRetirableGrantsCommand,
    ) -> Result<ListRetirableGrantsResponse, KmsError> {
        let principal = &req.retiring_principal;
        self.authorize_account(caller, &Access::to("ListRetirableGrants"), &[])?;
        let limit = req.limit.unwrap_or(DEFAULT_GRANT_LIST_LIMIT);
        if let Some(marker) = req.marker.as_deref() {
            check_marker(marker)?;
        }
        let page = self.store.list_retirable_grants(
            principal,
            req.marker.as_deref(),
            limit as usize + 1,
        )?;
        let (page, next_marker) = split_page(page, limit as usize);
        let mut grants = Vec::with_capacity(page.len());
        for grant in &page {
            // Only grants on keys of the caller's account are listed.
            if let Some(key) = self.store.get_key(&grant.key_id)? {
                if key.account == caller.account() {
                    grants.push(self.grant_entry(grant, &key));
                }
            }
        }
        Ok(ListGrantsResponse {
            truncated: Some(next_marker.is_some()),
            grants: Some(grants),
            next_marker,
        })
    }

    /// Retires a grant named by its token, or by key and grant id. Allowed to the grant's
    /// retiring principal, to its grantee when the grant lists RetireGrant, and to whoever
    /// the key's policy allows kms:RetireGrant (the key's account, by default).
    pub fn retire_grant(
        &self,
        caller: &Caller,
        req: RetireGrantCommand,
    ) -> Result<RetireGrantResponse, KmsError> {
        let grant = match &req.grant {
            GrantToRetire::Token(token) => self.grant_of_token(token)?,
            GrantToRetire::Id { key_id, grant_id } => {
                let key = self.find(caller, key_id)?;
                self.grant_of_key(&key, grant_id)?
            }
        };
        let key = self
            .store
            .get_key(&grant.key_id)?
            .ok_or_else(|| KmsError::NotFound("Grant not found".into()))?;
        caller.note_key(self.arn_of(&key));
        let me = caller.principal.arn.as_str();
        let may_retire = grant.retiring_principal.as_deref() == Some(me)
            || (grant.grantee_principal == me
                && grant
                    .operations
                    .iter()
                    .any(|o| o == GrantOperation::RetireGrant.as_str()));
        if !may_retire {
            self.authorize(caller, key, &Access::to("RetireGrant"))?;
        }
        dry_run(req.dry_run)?;
        self.delete_grant(&grant)?;
        caller.note_grant(grant.grant_id);
        Ok(RetireGrantResponse {})
    }

    pub fn revoke_grant(
        &self,
        caller: &Caller,
        req: RevokeGrantCommand,
    ) -> Result<RevokeGrantResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("RevokeGrant"))?;
        let grant = self.grant_of_key(&key, &req.grant_id)?;
        dry_run(req.dry_run)?;
        self.delete_grant(&grant)?;
        caller.note_grant(grant.grant_id);
        Ok(RevokeGrantResponse {})
    }

    fn grant_of_key(&self, key: &KeyRecord, grant_id: &str) -> Result<GrantRecord, KmsError> {
        match self.store.get_grant(grant_id)? {
            Some(grant) if grant.key_id == key.key_id => Ok(grant),
            _ => Err(KmsError::NotFound(format!(
                "Grant ID {grant_id} not found for key {}",
                self.arn_of(key)
            ))),
        }
    }

    fn delete_grant(&self, grant: &GrantRecord) -> Result<(), KmsError> {
        match self.store.delete_grant(&grant.grant_id) {
            Ok(()) => Ok(()),
            // Retired or revoked by someone else in the meantime.
            Err(crate::store::StoreError::NotFound) => Err(KmsError::NotFound(format!(
                "Grant ID {} not found",
                grant.grant_id
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn grant_entry(&self, grant: &GrantRecord, key: &KeyRecord) -> GrantListEntry {
        let c = &grant.constraints;
        GrantListEntry {
            key_id: Some(self.arn_of(key)),
            grant_id: Some(grant.grant_id.clone()),
            name: grant.name.clone(),
            creation_date: Some(grant.creation_date),
            grantee_principal: Some(grant.grantee_principal.clone()),
            retiring_principal: grant.retiring_principal.clone(),
            issuing_account: Some(format!("arn:aws:iam::{}:root", grant.issuing_account)),
            operations: Some(grant.operations.clone()),
            constraints: (!c.is_empty()).then(|| GrantConstraints {
                encryption_context_equals: c.equals.clone(),
                encryption_context_subset: c.subset.clone(),
            }),
        }
    }

    // ---- key policies -----------------------------------------------------------------------

    pub fn get_key_policy(
        &self,
        caller: &Caller,
        req: GetKeyPolicyCommand,
    ) -> Result<GetKeyPolicyResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("GetKeyPolicy"))?;
        check_policy_name(req.policy_name.as_deref())?;
        Ok(GetKeyPolicyResponse {
            policy: Some(key.into_inner().policy),
            policy_name: Some(POLICY_NAME.into()),
        })
    }

    pub fn put_key_policy(
        &self,
        caller: &Caller,
        req: PutKeyPolicyCommand,
    ) -> Result<PutKeyPolicyResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("PutKeyPolicy"))?;
        check_policy_name(req.policy_name.as_deref())?;
        let text = &req.policy;
        self.check_key_policy(
            caller,
            &key.account,
            &self.arn_of(&key),
            text,
            req.bypass_policy_lockout_safety_check == Some(true),
        )?;
        self.change_key(
            &key,
            KeyChange::Policy(text),
            MANAGEABLE,
            Self::require_not_pending_deletion,
        )?;
        Ok(PutKeyPolicyResponse {})
    }

    pub fn list_key_policies(
        &self,
        caller: &Caller,
        req: ListKeyPoliciesCommand,
    ) -> Result<ListKeyPoliciesResponse, KmsError> {
        self.resolve_key_only(caller, &req.key_id, &Access::to("ListKeyPolicies"))?;
        Ok(ListKeyPoliciesResponse {
            policy_names: Some(vec![POLICY_NAME.into()]),
            next_marker: None,
            truncated: Some(false),
        })
    }

    /// A policy must parse, and (unless bypassed) must let the caller change it again.
    pub(super) fn check_key_policy(
        &self,
        caller: &Caller,
        key_account: &str,
        key_arn: &str,
        text: &str,
        bypass_lockout_check: bool,
    ) -> Result<PolicyDocument, KmsError> {
        if text.len() > MAX_KEY_POLICY_BYTES {
            return Err(KmsError::LimitExceeded(format!(
                "The key policy is {} bytes; the quota is {MAX_KEY_POLICY_BYTES} bytes.",
                text.len()
            )));
        }
        let doc = PolicyDocument::parse(text, PolicyKind::Key)
            .map_err(|e| KmsError::MalformedPolicyDocument(e.to_string()))?;
        if !bypass_lockout_check && !self.policy_keeps_caller_in(caller, key_account, key_arn, &doc)
        {
            return Err(KmsError::MalformedPolicyDocument(
                "The new key policy will not allow you to update the key policy in the future."
                    .into(),
            ));
        }
        Ok(doc)
    }
}

/// `GetKeyPolicy`/`PutKeyPolicy` know one policy, `default` (the name may be omitted).
fn check_policy_name(name: Option<&str>) -> Result<(), KmsError> {
    match name {
        None | Some(POLICY_NAME) => Ok(()),
        Some(other) => Err(KmsError::NotFound(format!(
            "No such policy exists: {other}"
        ))),
    }
}

/// Markers are grant ids (64 hex digits).
fn check_marker(marker: &str) -> Result<(), KmsError> {
    if marker.len() == 64 && marker.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(KmsError::InvalidMarker)
    }
}

/// Splits a page fetched with one extra row into the page and the next marker.
fn split_page(mut rows: Vec<GrantRecord>, limit: usize) -> (Vec<GrantRecord>, Option<String>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let marker = rows.last().map(|g| g.grant_id.clone());
        (rows, marker)
    } else {
        (rows, None)
    }
}

fn constraints_of(wire: Option<&GrantConstraints>) -> ConstraintsRecord {
    ConstraintsRecord {
        equals: wire.and_then(|c| c.encryption_context_equals.clone()),
        subset: wire.and_then(|c| c.encryption_context_subset.clone()),
    }
}
