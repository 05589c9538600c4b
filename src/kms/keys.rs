//! Key management: keys, aliases, tags and rotation.

use crate::api::*;
use crate::error::KmsError;
use crate::model::{
    AliasRecord, EpochSeconds, KeyId, KeyOrigin, KeyRecord, KeySpec, KeyState, KeyUsage,
    MaterialId, MaterialOrigin, MaterialRecord, Tag as TagRecord,
};

use super::access::Access;
use super::asymmetric::{self, KeyKind};
use super::{Caller, KmsService, MANAGEABLE, USABLE};
use crate::store::{Changed, KeyChange, RotationGuard, TagWrite};

const DEFAULT_LIST_LIMIT: i64 = 100;
const DEFAULT_PENDING_WINDOW_DAYS: i64 = 30;
const DEFAULT_ROTATION_PERIOD_DAYS: i64 = 365;
const ALIAS_PREFIX_MESSAGE: &str =
    "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html";

impl KmsService {
    pub fn key_metadata(&self, key: &KeyRecord) -> KeyMetadata {
        let symmetric = key.key_spec == KeySpec::SymmetricDefault;
        let pending = key.state == KeyState::PendingDeletion;
        KeyMetadata {
            aws_account_id: Some(key.account.clone()),
            key_id: key.key_id.to_string(),
            arn: Some(self.arn_of(key)),
            creation_date: Some(key.creation_date),
            enabled: Some(key.state == KeyState::Enabled),
            description: Some(key.description.clone()),
            key_usage: Some(key.key_usage.as_str().into()),
            key_state: Some(key.state.as_str().to_string()),
            deletion_date: if pending { key.deletion_date } else { None },
            origin: Some(key.origin.as_str().into()),
            key_manager: Some("CUSTOMER".into()),
            customer_master_key_spec: Some(key.key_spec.as_str().into()),
            key_spec: Some(key.key_spec.as_str().into()),
            encryption_algorithms: asymmetric::encryption_algorithms(key),
            signing_algorithms: asymmetric::signing_algorithms(key),
            mac_algorithms: asymmetric::mac_algorithms(key),
            multi_region: Some(false),
            pending_deletion_window_in_days: if pending {
                key.pending_window_days.map(i64::from)
            } else {
                None
            },
            current_key_material_id: symmetric.then(|| key.current_material.to_hex()),
            ..Default::default()
        }
    }

    pub(super) fn default_policy(&self, account: &str) -> String {
        serde_json::json!({
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [{
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                "Action": "kms:*",
                "Resource": "*"
            }]
        })
        .to_string()
    }

    pub fn create_key(
        &self,
        caller: &Caller,
        req: CreateKeyCommand,
    ) -> Result<CreateKeyResponse, KmsError> {
        if req.key_spec.is_some() && req.customer_master_key_spec.is_some() {
            return Err(KmsError::Validation(
                "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.".into(),
            ));
        }
        let key_spec = req
            .key_spec
            .clone()
            .or(req.customer_master_key_spec.clone())
            .unwrap_or(WireName::Supported(KeySpec::SymmetricDefault));
        if key_spec != WireName::Supported(KeySpec::SymmetricDefault) && req.key_usage.is_none() {
            return Err(KmsError::Validation(
                "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.".into(),
            ));
        }
        let key_usage = req.key_usage.unwrap_or(KeyUsage::EncryptDecrypt);
        let key_spec = match key_spec {
            WireName::Supported(spec) => spec,
            WireName::Unsupported(name) => {
                return Err(KmsError::UnsupportedOperation(format!(
                    "KeySpec {name} is not supported by this gateway."
                )))
            }
        };
        let kind = KeyKind::of(key_spec);
        if !kind.allows_usage(key_usage) {
            return Err(KmsError::Validation(format!(
                "KeyUsage {key_usage} is not compatible with KeySpec {key_spec}"
            )));
        }
        match &req.origin {
            None | Some(WireName::Supported(KeyOrigin::AwsKms)) => {}
            Some(origin) => {
                return Err(KmsError::UnsupportedOperation(format!(
                    "Origin {origin} is not supported by this gateway."
                )))
            }
        }
        let origin = KeyOrigin::AwsKms;
        if req.custom_key_store_id.is_some() || req.xks_key_id.is_some() {
            return Err(KmsError::UnsupportedOperation(
                "Custom key stores are not supported by this gateway.".into(),
            ));
        }
        if req.multi_region == Some(true) {
            return Err(KmsError::UnsupportedOperation(
                "Multi-Region keys are not supported by this gateway.".into(),
            ));
        }
        let tags = checked_tags(req.tags.unwrap_or_default())?;
        self.authorize_account(
            caller,
            &Access::to("CreateKey"),
            &[
                ("kms:KeySpec", key_spec.as_str()),
                ("kms:KeyUsage", key_usage.as_str()),
                ("kms:KeyOrigin", origin.as_str()),
            ],
        )?;

        let now = self.now();
        let key_id = KeyId::new_random();
        if let Some(policy) = &req.policy {
            self.check_key_policy(
                caller,
                caller.account(),
                &self.key_arn(caller.account(), &key_id),
                policy,
                req.bypass_policy_lockout_safety_check == Some(true),
            )?;
        }
        let material_id = MaterialId::new_random();
        let key = KeyRecord {
            key_id,
            account: caller.account().to_string(),
            description: req.description.clone().unwrap_or_default(),
            key_spec,
            key_usage,
            origin,
            state: KeyState::Enabled,
            creation_date: now,
            deletion_date: None,
            pending_window_days: None,
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation_date: None,
            current_material: material_id,
            policy: req
                .policy
                .clone()
                .unwrap_or_else(|| self.default_policy(caller.account())),
        };
        // Material first, row second: a crash in between leaves only an orphan object,
        // which start-up reconciliation removes.
        self.create_key_material(&key_id, &material_id, kind, key.key_usage)?;
        let material = MaterialRecord {
            key_id,
            material_id,
            created: now,
            origin: MaterialOrigin::Initial,
        };
        if let Err(e) = self.store.insert_key(&key, &material, &tags) {
            let _ = self.hsm.destroy_material(&material_id);
            return Err(e.into());
        }
        caller.note_key(self.arn_of(&key));
        caller.note_material(&material_id);
        Ok(CreateKeyResponse {
            key_metadata: Some(self.key_metadata(&key)),
        })
    }

    pub fn describe_key(
        &self,
        caller: &Caller,
        req: DescribeKeyCommand,
    ) -> Result<DescribeKeyResponse, KmsError> {
        self.check_grant_tokens(&req.grant_tokens)?;
        let key = self.resolve(caller, &req.key_id, &Access::to("DescribeKey"))?;
        Ok(DescribeKeyResponse {
            key_metadata: Some(self.key_metadata(&key)),
        })
    }

    pub fn list_keys(
        &self,
        caller: &Caller,
        req: ListKeysRequest,
    ) -> Result<ListKeysResponse, KmsError> {
        self.authorize_account(caller, &Access::to("ListKeys"), &[])?;
        let limit = req.limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, 1000) as usize;
        let after = match &req.marker {
            Some(m) => Some(m.parse::<KeyId>().map_err(|_| KmsError::InvalidMarker)?),
            None => None,
        };
        let mut keys = self
            .store
            .list_keys(caller.account(), after.as_ref(), limit + 1)?;
        let truncated = keys.len() > limit;
        keys.truncate(limit);
        Ok(ListKeysResponse {
            next_marker: truncated
                .then(|| keys.last().map(|k| k.key_id.to_string()))
                .flatten(),
            truncated: Some(truncated),
            keys: Some(
                keys.iter()
                    .map(|k| KeyListEntry {
                        key_id: Some(k.key_id.to_string()),
                        key_arn: Some(self.arn_of(k)),
                    })
                    .collect(),
            ),
        })
    }

    pub fn enable_key(
        &self,
        caller: &Caller,
        req: EnableKeyCommand,
    ) -> Result<EnableKeyResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("EnableKey"))?;
        self.change_key(
            &key,
            KeyChange::State(KeyState::Enabled),
            MANAGEABLE,
            Self::require_not_pending_deletion,
        )?;
        Ok(EnableKeyResponse {})
    }

    pub fn disable_key(
        &self,
        caller: &Caller,
        req: DisableKeyCommand,
    ) -> Result<DisableKeyResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("DisableKey"))?;
        self.change_key(
            &key,
            KeyChange::State(KeyState::Disabled),
            MANAGEABLE,
            Self::require_not_pending_deletion,
        )?;
        Ok(DisableKeyResponse {})
    }

    pub fn schedule_key_deletion(
        &self,
        caller: &Caller,
        req: ScheduleKeyDeletionCommand,
    ) -> Result<ScheduleKeyDeletionResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("ScheduleKeyDeletion"))?;
        let days = req
            .pending_window_in_days
            .unwrap_or(DEFAULT_PENDING_WINDOW_DAYS);
        if days < 7 {
            return Err(KmsError::constraint(
                days,
                "pendingWindowInDays",
                "Member must have value greater than or equal to 7",
            ));
        }
        if days > 30 {
            return Err(KmsError::constraint(
                days,
                "pendingWindowInDays",
                "Member must have value less than or equal to 30",
            ));
        }
        let days = days as u32;
        let deletion_date = self.now() + self.days(days);
        let key = self.change_key(
            &key,
            KeyChange::ScheduleDeletion {
                deletion_date,
                pending_window_days: days,
            },
            MANAGEABLE,
            Self::require_not_pending_deletion,
        )?;
        Ok(ScheduleKeyDeletionResponse {
            key_id: Some(self.arn_of(&key)),
            deletion_date: Some(deletion_date),
            key_state: Some(key.state.as_str().into()),
            pending_window_in_days: Some(i64::from(days)),
        })
    }

    pub fn cancel_key_deletion(
        &self,
        caller: &Caller,
        req: CancelKeyDeletionCommand,
    ) -> Result<CancelKeyDeletionResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("CancelKeyDeletion"))?;
        let key = self.change_key(
            &key,
            KeyChange::CancelDeletion,
            &[KeyState::PendingDeletion],
            Self::require_pending_deletion,
        )?;
        Ok(CancelKeyDeletionResponse {
            key_id: Some(self.arn_of(&key)),
        })
    }

    pub fn update_key_description(
        &self,
        caller: &Caller,
        req: UpdateKeyDescriptionCommand,
    ) -> Result<UpdateKeyDescriptionResponse, KmsError> {
        let key =
            self.resolve_key_only(caller, &req.key_id, &Access::to("UpdateKeyDescription"))?;
        let description = &req.description;
        self.change_key(
            &key,
            KeyChange::Description(description),
            MANAGEABLE,
            Self::require_not_pending_deletion,
        )?;
        Ok(UpdateKeyDescriptionResponse {})
    }

    // === aliases ===

    fn check_alias_name(&self, name: &str) -> Result<(), KmsError> {
        if !name.starts_with("alias/") {
            return Err(KmsError::Validation(ALIAS_PREFIX_MESSAGE.into()));
        }
        if name.starts_with("alias/aws/") {
            return Err(KmsError::AccessDenied(
                "Alias names that begin with alias/aws/ are reserved for AWS managed keys.".into(),
            ));
        }
        if name.len() <= "alias/".len() {
            return Err(KmsError::InvalidAliasName(format!(
                "{name} is not a valid alias name."
            )));
        }
        Ok(())
    }

    pub fn create_alias(
        &self,
        caller: &Caller,
        req: CreateAliasCommand,
    ) -> Result<CreateAliasResponse, KmsError> {
        let name = &req.alias_name;
        let target = &req.target_key_id;
        self.check_alias_name(name)?;
        let key = self.resolve_key_only(caller, target, &Access::to("CreateAlias"))?;
        self.require_not_pending_deletion(&key)?;
        let now = self.now();
        let alias = AliasRecord {
            account: caller.account().to_string(),
            name: name.clone(),
            target: key.key_id,
            creation_date: now,
            last_updated: now,
        };
        match self.store.insert_alias(&alias) {
            Ok(()) => Ok(CreateAliasResponse {}),
            Err(crate::store::StoreError::AlreadyExists) => Err(KmsError::AlreadyExists(format!(
                "An alias with the name {} already exists",
                self.alias_arn(caller.account(), name)
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub fn update_alias(
        &self,
        caller: &Caller,
        req: UpdateAliasCommand,
    ) -> Result<UpdateAliasResponse, KmsError> {
        let name = &req.alias_name;
        let target = &req.target_key_id;
        self.check_alias_name(name)?;
        let current = self
            .store
            .get_alias(caller.account(), name)?
            .ok_or_else(|| self.alias_not_found(caller.account(), name))?;
        let key = self.resolve_key_only(caller, target, &Access::to("UpdateAlias"))?;
        self.require_not_pending_deletion(&key)?;
        if let Some(old) = self.store.get_key(&current.target)? {
            // Moving an alias needs kms:UpdateAlias on both keys, as in AWS.
            let old = self.authorize(caller, old, &Access::to("UpdateAlias"))?;
            if old.key_spec != key.key_spec || old.key_usage != key.key_usage {
                return Err(KmsError::Validation(
                    "The new target key must have the same key type and key usage as the current target key.".into(),
                ));
            }
        }
        match self
            .store
            .update_alias(caller.account(), name, &key.key_id, self.now())
        {
            Ok(()) => Ok(UpdateAliasResponse {}),
            Err(crate::store::StoreError::NotFound) => {
                Err(self.alias_not_found(caller.account(), name))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn delete_alias(
        &self,
        caller: &Caller,
        req: DeleteAliasCommand,
    ) -> Result<DeleteAliasResponse, KmsError> {
        let name = &req.alias_name;
        self.check_alias_name(name)?;
        let alias = self
            .store
            .get_alias(caller.account(), name)?
            .ok_or_else(|| self.alias_not_found(caller.account(), name))?;
        if let Some(key) = self.store.get_key(&alias.target)? {
            self.authorize(caller, key, &Access::to("DeleteAlias"))?;
        }
        match self.store.delete_alias(caller.account(), name) {
            Ok(()) => Ok(DeleteAliasResponse {}),
            Err(crate::store::StoreError::NotFound) => {
                Err(self.alias_not_found(caller.account(), name))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn alias_not_found(&self, account: &str, name: &str) -> KmsError {
        KmsError::NotFound(format!(
            "Alias {} is not found.",
            self.alias_arn(account, name)
        ))
    }

    pub fn list_aliases(
        &self,
        caller: &Caller,
        req: ListAliasesRequest,
    ) -> Result<ListAliasesResponse, KmsError> {
        self.authorize_account(caller, &Access::to("ListAliases"), &[])?;
        let limit = req.limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, 100) as usize;
        let target = match &req.key_id {
            Some(id) => Some(self.find_key_only(caller, id)?.key_id),
            None => None,
        };
        let mut aliases = self.store.list_aliases(
            caller.account(),
            target.as_ref(),
            req.marker.as_deref(),
            limit + 1,
        )?;
        let truncated = aliases.len() > limit;
        aliases.truncate(limit);
        Ok(ListAliasesResponse {
            next_marker: truncated
                .then(|| aliases.last().map(|a| a.name.clone()))
                .flatten(),
            truncated: Some(truncated),
            aliases: Some(
                aliases
                    .iter()
                    .map(|a| AliasListEntry {
                        alias_name: Some(a.name.clone()),
                        alias_arn: Some(self.alias_arn(&a.account, &a.name)),
                        target_key_id: Some(a.target.to_string()),
                        creation_date: Some(a.creation_date),
                        last_updated_date: Some(a.last_updated),
                    })
                    .collect(),
            ),
        })
    }

    // === tags ===

    pub fn tag_resource(
        &self,
        caller: &Caller,
        req: TagResourceCommand,
    ) -> Result<TagResourceResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("TagResource"))?;
        let tags = checked_tags(req.tags)?;
        self.require_not_pending_deletion(&key)?;
        match self.store.put_tags(&key.key_id, &tags, MAX_TAGS_PER_KEY)? {
            TagWrite::Written => Ok(TagResourceResponse {}),
            // AWS's per-key quota counts the tags already there; the message is the one it
            // gives for a request over the quota.
            TagWrite::OverQuota => Err(KmsError::Tag("Too many tags".into())),
        }
    }

    pub fn untag_resource(
        &self,
        caller: &Caller,
        req: UntagResourceCommand,
    ) -> Result<UntagResourceResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("UntagResource"))?;
        let tag_keys = &req.tag_keys;
        self.require_not_pending_deletion(&key)?;
        self.store.remove_tags(&key.key_id, tag_keys)?;
        Ok(UntagResourceResponse {})
    }

    pub fn list_resource_tags(
        &self,
        caller: &Caller,
        req: ListResourceTagsCommand,
    ) -> Result<ListResourceTagsResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("ListResourceTags"))?;
        let limit = req.limit.unwrap_or(50).clamp(1, 50) as usize;
        let mut tags = self
            .store
            .list_tags(&key.key_id, req.marker.as_deref(), limit + 1)?;
        let truncated = tags.len() > limit;
        tags.truncate(limit);
        Ok(ListResourceTagsResponse {
            next_marker: truncated
                .then(|| tags.last().map(|t| t.key.clone()))
                .flatten(),
            truncated: Some(truncated),
            tags: Some(tags.into_iter().map(|t| Tag::new(t.key, t.value)).collect()),
        })
    }

    // === rotation ===

    fn require_rotatable(&self, key: &KeyRecord) -> Result<(), KmsError> {
        self.require_usable(key)?;
        if key.key_spec != KeySpec::SymmetricDefault {
            return Err(KmsError::UnsupportedOperation(String::new()));
        }
        Ok(())
    }

    pub fn enable_key_rotation(
        &self,
        caller: &Caller,
        req: EnableKeyRotationCommand,
    ) -> Result<EnableKeyRotationResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("EnableKeyRotation"))?;
        let period = req
            .rotation_period_in_days
            .unwrap_or(DEFAULT_ROTATION_PERIOD_DAYS) as u32;
        self.change_key(
            &key,
            KeyChange::EnableRotation {
                period_days: period,
                next_rotation: self.now() + self.days(period),
            },
            USABLE,
            Self::require_rotatable,
        )?;
        Ok(EnableKeyRotationResponse {})
    }

    pub fn disable_key_rotation(
        &self,
        caller: &Caller,
        req: DisableKeyRotationCommand,
    ) -> Result<DisableKeyRotationResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("DisableKeyRotation"))?;
        self.change_key(
            &key,
            KeyChange::DisableRotation,
            USABLE,
            Self::require_rotatable,
        )?;
        Ok(DisableKeyRotationResponse {})
    }

    pub fn get_key_rotation_status(
        &self,
        caller: &Caller,
        req: GetKeyRotationStatusCommand,
    ) -> Result<GetKeyRotationStatusResponse, KmsError> {
        let key =
            self.resolve_key_only(caller, &req.key_id, &Access::to("GetKeyRotationStatus"))?;
        self.require_not_pending_deletion(&key)?;
        let enabled = key.rotation_enabled;
        Ok(GetKeyRotationStatusResponse {
            key_rotation_enabled: Some(enabled),
            key_id: Some(self.arn_of(&key)),
            rotation_period_in_days: if enabled {
                key.rotation_period_days.map(i64::from)
            } else {
                None
            },
            next_rotation_date: if enabled {
                key.next_rotation_date
            } else {
                None
            },
            ..Default::default()
        })
    }

    pub fn rotate_key_on_demand(
        &self,
        caller: &Caller,
        req: RotateKeyOnDemandCommand,
    ) -> Result<RotateKeyOnDemandResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("RotateKeyOnDemand"))?;
        self.require_rotatable(&key)?;
        let on_demand = self
            .store
            .list_materials(&key.key_id)?
            .iter()
            .filter(|m| m.origin == MaterialOrigin::OnDemand)
            .count();
        if on_demand >= MAX_ON_DEMAND_ROTATIONS {
            // awsfact: TestKMS::test_key_rotations_limits / error-response. Like the grant limit,
            // a check before the write: concurrent rotations of one key may pass it together.
            return Err(KmsError::LimitExceeded(format!(
                "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {}",
                self.arn_of(&key)
            )));
        }
        self.rotate(&key, MaterialOrigin::OnDemand, None)?;
        Ok(RotateKeyOnDemandResponse {
            key_id: Some(self.arn_of(&key)),
        })
    }

    /// Makes new key material current if the key is still rotatable when the row is
    /// written (and, for automatic rotation, still due by `due_by`); old material stays
    /// for decryption. `Ok(None)`: automatic rotation found the key no longer due, because
    /// another run rotated it or rotation was turned off meanwhile.
    pub(super) fn rotate(
        &self,
        key: &KeyRecord,
        origin: MaterialOrigin,
        due_by: Option<EpochSeconds>,
    ) -> Result<Option<MaterialId>, KmsError> {
        let material_id = MaterialId::new_random();
        self.hsm.create_material(&key.key_id, &material_id)?;
        let now = self.now();
        let next = match (key.rotation_enabled, key.rotation_period_days) {
            (true, Some(days)) => Some(now + self.days(days)),
            _ => None,
        };
        let record = MaterialRecord {
            key_id: key.key_id,
            material_id,
            created: now,
            origin,
        };
        let guard = RotationGuard {
            allowed: USABLE,
            due_by,
        };
        let outcome = match self.store.add_material(&record, next, &guard) {
            Ok(Changed::Applied(_)) => return Ok(Some(material_id)),
            Ok(Changed::Refused(_)) if due_by.is_some() => Ok(None),
            Ok(Changed::Refused(current)) => self
                .require_rotatable(&current)
                .and_then(|()| Err(self.invalid_state(&current, current.state))),
            Err(e) => Err(e.into()),
        };
        // Row second: the material was never referenced, so it goes.
        let _ = self.hsm.destroy_material(&material_id);
        outcome
    }

    pub fn list_key_rotations(
        &self,
        caller: &Caller,
        req: ListKeyRotationsCommand,
    ) -> Result<ListKeyRotationsResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("ListKeyRotations"))?;
        if key.key_spec != KeySpec::SymmetricDefault {
            return Err(KmsError::UnsupportedOperation(String::new()));
        }
        let limit = req.limit.unwrap_or(100).clamp(1, 1000) as usize;
        let rotations: Vec<MaterialRecord> = self
            .store
            .list_materials(&key.key_id)?
            .into_iter()
            .filter(|m| m.origin != MaterialOrigin::Initial)
            .collect();
        let start = match &req.marker {
            Some(m) => m.parse::<usize>().map_err(|_| KmsError::InvalidMarker)?,
            None => 0,
        };
        let page: Vec<&MaterialRecord> = rotations.iter().skip(start).take(limit).collect();
        let truncated = start + page.len() < rotations.len();
        Ok(ListKeyRotationsResponse {
            rotations: Some(
                page.iter()
                    .map(|m| RotationsListEntry {
                        key_id: Some(key.key_id.to_string()),
                        key_material_id: Some(m.material_id.to_hex()),
                        key_material_state: Some(
                            if m.material_id == key.current_material {
                                "CURRENT"
                            } else {
                                "NON_CURRENT"
                            }
                            .into(),
                        ),
                        rotation_date: Some(m.created),
                        rotation_type: Some(m.origin.as_str().into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            next_marker: truncated.then(|| (start + page.len()).to_string()),
            truncated: Some(truncated),
        })
    }
}

/// On-demand rotations AWS allows per key over its lifetime.
const MAX_ON_DEMAND_ROTATIONS: usize = 10;

/// AWS's per-key tag quota: what a key may hold, so also what one CreateKey or TagResource
/// request may carry.
const MAX_TAGS_PER_KEY: usize = 50;

/// Request tags after AWS's `TagException` checks. The model's length limits were checked
/// when the request was decoded; then, as recorded against AWS: a key given twice
/// (`Duplicate tag keys`), more than 50 tags (`Too many tags`), a key in the reserved `aws:`
/// namespace in any case (`Tags beginning with aws: are reserved`).
fn checked_tags(tags: Vec<TagRecord>) -> Result<Vec<TagRecord>, KmsError> {
    for (i, tag) in tags.iter().enumerate() {
        if tags[..i].iter().any(|t| t.key == tag.key) {
            return Err(KmsError::Tag("Duplicate tag keys".into()));
        }
    }
    if tags.len() > MAX_TAGS_PER_KEY {
        return Err(KmsError::Tag("Too many tags".into()));
    }
    if tags.iter().any(|t| is_reserved_tag_key(&t.key)) {
        return Err(KmsError::Tag(
            "Tags beginning with aws: are reserved".into(),
        ));
    }
    Ok(tags)
}

/// `aws:` in any letter case starts AWS's reserved tag namespace.
fn is_reserved_tag_key(key: &str) -> bool {
    key.get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(keys: &[&str]) -> Vec<TagRecord> {
        keys.iter()
            .map(|k| TagRecord {
                key: (*k).into(),
                value: "v".into(),
            })
            .collect()
    }

    fn tag_error(keys: &[&str]) -> Option<String> {
        match checked_tags(tags(keys)) {
            Err(KmsError::Tag(m)) => Some(m),
            Err(other) => panic!("not a TagException: {other:?}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn reserved_prefix_in_any_case() {
        for key in ["aws:key1", "AWS:key1", "Aws:x", "aWs:"] {
            assert_eq!(
                tag_error(&[key]).as_deref(),
                Some("Tags beginning with aws: are reserved"),
                "{key}"
            );
        }
        for key in ["aws", "awskey", "my-aws:key", "ä", "aw"] {
            assert_eq!(tag_error(&[key]), None, "{key}");
        }
    }

    #[test]
    fn at_most_fifty_tags() {
        let names: Vec<String> = (0..=MAX_TAGS_PER_KEY).map(|i| format!("key{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(tag_error(&refs[..MAX_TAGS_PER_KEY]), None);
        assert_eq!(tag_error(&refs).as_deref(), Some("Too many tags"));
    }

    #[test]
    fn duplicates_are_reported_first() {
        assert_eq!(
            tag_error(&["aws:a", "aws:a"]).as_deref(),
            Some("Duplicate tag keys")
        );
    }
}
