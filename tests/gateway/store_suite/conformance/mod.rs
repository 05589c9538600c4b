//! The store conformance suite: what every [`MetadataStore`] must do, as plain functions
//! over `&dyn MetadataStore`. `store_suite` runs each against every implementation (SQLite in
//! memory and on a file, PostgreSQL); a new store is done when it passes them unchanged.

use p11kms::model::{
    AliasRecord, GrantRecord, KeyId, KeyOrigin, KeyRecord, KeySpec, KeyState, KeyUsage, MaterialId,
    MaterialOrigin, MaterialRecord, Tag, TokenKeyRef,
};
use p11kms::store::{
    Changed, DomainMember, KeyChange, MetadataStore, RotationGuard, StoreError, TagWrite,
};
mod domains;
mod keys;
mod lifecycle;
mod names;
pub use domains::*;
pub use keys::*;
pub use lifecycle::*;
pub use names::*;

pub const ACCOUNT: &str = "111122223333";

pub const OTHER_ACCOUNT: &str = "444455556666";

pub fn key_id(n: u8) -> KeyId {
    KeyId::from_bytes([n; 16])
}

pub fn material_id(n: u8) -> MaterialId {
    MaterialId([n; 32])
}

/// A key with every optional field unset.
pub fn minimal_key(account: &str, id: KeyId, material: MaterialId) -> KeyRecord {
    KeyRecord {
        key_id: id,
        account: account.to_string(),
        description: String::new(),
        key_spec: KeySpec::SymmetricDefault,
        key_usage: KeyUsage::EncryptDecrypt,
        origin: KeyOrigin::AwsKms,
        state: KeyState::Enabled,
        creation_date: 1_700_000_000.0,
        deletion_date: None,
        pending_window_days: None,
        rotation_enabled: false,
        rotation_period_days: None,
        next_rotation_date: None,
        current_material: material,
        policy: "{}".into(),
    }
}

/// A key with every optional field set.
pub fn full_key(account: &str, id: KeyId, material: MaterialId) -> KeyRecord {
    KeyRecord {
        description: "full key – ünïcode".into(),
        state: KeyState::PendingDeletion,
        creation_date: 1_700_000_000.125,
        deletion_date: Some(1_700_600_000.5),
        pending_window_days: Some(7),
        rotation_enabled: true,
        rotation_period_days: Some(365),
        next_rotation_date: Some(1_731_536_000.25),
        policy: r#"{"Version":"2012-10-17","Statement":[]}"#.into(),
        ..minimal_key(account, id, material)
    }
}

pub const ALL_STATES: &[KeyState] = &[
    KeyState::Creating,
    KeyState::Enabled,
    KeyState::Disabled,
    KeyState::PendingDeletion,
    KeyState::PendingImport,
    KeyState::Unavailable,
];

pub const ANY_STATE: RotationGuard<'static> = RotationGuard {
    allowed: ALL_STATES,
    due_by: None,
};

pub fn initial_material(key: &KeyRecord) -> MaterialRecord {
    MaterialRecord {
        key_id: key.key_id,
        material_id: key.current_material,
        created: key.creation_date,
        origin: MaterialOrigin::Initial,
    }
}

pub fn tag(k: &str, v: &str) -> Tag {
    Tag {
        key: k.into(),
        value: v.into(),
    }
}

pub fn insert(store: &dyn MetadataStore, key: &KeyRecord) {
    store.insert_key(key, &initial_material(key), &[]).unwrap();
}

pub fn grant(key: &KeyRecord, n: u8, grantee: &str, retiring: Option<&str>) -> GrantRecord {
    GrantRecord {
        grant_id: hex::encode([n; 32]),
        key_id: key.key_id,
        name: Some(format!("g{n}")),
        grantee_principal: grantee.into(),
        retiring_principal: retiring.map(Into::into),
        issuing_account: key.account.clone(),
        operations: vec!["Decrypt".into(), "Encrypt".into()],
        constraints: p11kms::model::GrantConstraints {
            equals: None,
            subset: Some([("tenant".to_string(), "1".to_string())].into()),
        },
        creation_date: 1.5,
        token_secret: [n; 16],
    }
}
