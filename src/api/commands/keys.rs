//! Key management, aliases, tags and rotation.

use super::{
    command, maybe_one_of, optional_enum, optional_name, present, required, IncludeKeyMaterial,
    WireName,
};
use crate::api::enums::{CUSTOMER_MASTER_KEY_SPEC_VALUES, KEY_SPEC_VALUES, ORIGIN_VALUES};
use crate::api::shapes::*;
use crate::error::KmsError;
use crate::model::{KeyOrigin, KeySpec, KeyUsage, Tag as TagRecord};

/// Request tags as key and value, both present (validation reports a missing one as
/// `tags.<n>.member.tagKey`).
fn tag_records(tags: Vec<Tag>) -> Result<Vec<TagRecord>, KmsError> {
    tags.into_iter()
        .enumerate()
        .map(|(i, tag)| {
            let member = |name| format!("tags.{}.member.{name}", i + 1);
            Ok(TagRecord {
                key: required(tag.tag_key, &member("tagKey"))?,
                value: required(tag.tag_value, &member("tagValue"))?,
            })
        })
        .collect()
}

command! {
    /// CreateKey. Which spec, usage and origin combinations the gateway makes is the core's
    /// decision; here the names are only parsed.
    CreateKeyCommand from CreateKeyRequest {
        policy: Option<String>,
        description: Option<String>,
        key_usage: Option<KeyUsage> = |v| optional_enum(v, "keyUsage"),
        customer_master_key_spec: Option<WireName<KeySpec>> = |v| optional_name(
            v,
            "customerMasterKeySpec",
            CUSTOMER_MASTER_KEY_SPEC_VALUES,
            KeySpec::parse,
        ),
        key_spec: Option<WireName<KeySpec>> =
            |v| optional_name(v, "keySpec", KEY_SPEC_VALUES, KeySpec::parse),
        origin: Option<WireName<KeyOrigin>> =
            |v| optional_name(v, "origin", ORIGIN_VALUES, KeyOrigin::parse),
        custom_key_store_id: Option<String>,
        bypass_policy_lockout_safety_check: Option<bool>,
        tags: Option<Vec<TagRecord>> = |v: Option<Vec<Tag>>| v.map(tag_records).transpose(),
        multi_region: Option<bool>,
        xks_key_id: Option<String>,
    }
}

command! {
    /// DescribeKey.
    DescribeKeyCommand from DescribeKeyRequest {
        key_id: String = present("keyId"),
        grant_tokens: Option<Vec<String>>,
    }
}

command! {
    /// EnableKey.
    EnableKeyCommand from EnableKeyRequest { key_id: String = present("keyId") }
}

command! {
    /// DisableKey.
    DisableKeyCommand from DisableKeyRequest { key_id: String = present("keyId") }
}

command! {
    /// ScheduleKeyDeletion. The window's 7 to 30 days are the core's rule, checked once the
    /// key is found.
    ScheduleKeyDeletionCommand from ScheduleKeyDeletionRequest {
        key_id: String = present("keyId"),
        pending_window_in_days: Option<i64>,
    }
}

command! {
    /// CancelKeyDeletion.
    CancelKeyDeletionCommand from CancelKeyDeletionRequest { key_id: String = present("keyId") }
}

command! {
    /// UpdateKeyDescription.
    UpdateKeyDescriptionCommand from UpdateKeyDescriptionRequest {
        key_id: String = present("keyId"),
        description: String = present("description"),
    }
}

command! {
    /// CreateAlias.
    CreateAliasCommand from CreateAliasRequest {
        alias_name: String = present("aliasName"),
        target_key_id: String = present("targetKeyId"),
    }
}

command! {
    /// UpdateAlias.
    UpdateAliasCommand from UpdateAliasRequest {
        alias_name: String = present("aliasName"),
        target_key_id: String = present("targetKeyId"),
    }
}

command! {
    /// DeleteAlias.
    DeleteAliasCommand from DeleteAliasRequest { alias_name: String = present("aliasName") }
}

command! {
    /// TagResource. Duplicates, quota and reserved names are the core's `TagException`s.
    TagResourceCommand from TagResourceRequest {
        key_id: String = present("keyId"),
        tags: Vec<TagRecord> = |v| tag_records(required(v, "tags")?),
    }
}

command! {
    /// UntagResource.
    UntagResourceCommand from UntagResourceRequest {
        key_id: String = present("keyId"),
        tag_keys: Vec<String> = present("tagKeys"),
    }
}

command! {
    /// ListResourceTags.
    ListResourceTagsCommand from ListResourceTagsRequest {
        key_id: String = present("keyId"),
        limit: Option<i64>,
        marker: Option<String>,
    }
}

command! {
    /// EnableKeyRotation.
    EnableKeyRotationCommand from EnableKeyRotationRequest {
        key_id: String = present("keyId"),
        rotation_period_in_days: Option<i64>,
    }
}

command! {
    /// DisableKeyRotation.
    DisableKeyRotationCommand from DisableKeyRotationRequest { key_id: String = present("keyId") }
}

command! {
    /// GetKeyRotationStatus.
    GetKeyRotationStatusCommand from GetKeyRotationStatusRequest {
        key_id: String = present("keyId"),
    }
}

command! {
    /// RotateKeyOnDemand.
    RotateKeyOnDemandCommand from RotateKeyOnDemandRequest { key_id: String = present("keyId") }
}

command! {
    /// ListKeyRotations.
    ListKeyRotationsCommand from ListKeyRotationsRequest {
        key_id: String = present("keyId"),
        include_key_material: Option<IncludeKeyMaterial> = maybe_one_of("includeKeyMaterial"),
        limit: Option<i64>,
        marker: Option<String>,
    }
}
