//! The store conformance suite: what every [`MetadataStore`] must do, as plain functions
//! over `&dyn MetadataStore`. `main.rs` runs each against every implementation (SQLite in
//! memory and on a file, PostgreSQL); a new store is done when it passes them unchanged.

use p11kms::model::{
    AliasRecord, GrantRecord, KeyId, KeyOrigin, KeyRecord, KeySpec, KeyState, KeyUsage, MaterialId,
    MaterialOrigin, MaterialRecord, Tag, TokenKeyRef,
};
use p11kms::store::{
    Changed, DomainMember, KeyChange, MetadataStore, RotationGuard, StoreError, TagWrite,
};

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

pub fn a_key_read_follows_every_write_to_the_key(store: &dyn MetadataStore) {
    let key = minimal_key(ACCOUNT, key_id(7), material_id(7));
    insert(store, &key);
    // Read once (a caching store now holds the row), then change it each way a key changes.
    assert_eq!(store.get_key(&key.key_id).unwrap(), Some(key.clone()));
    let disabled = KeyRecord {
        state: KeyState::Disabled,
        policy: r#"{"Statement":[]}"#.into(),
        ..key.clone()
    };
    store
        .change_key(
            &key.key_id,
            &KeyChange::State(KeyState::Disabled),
            ALL_STATES,
        )
        .unwrap();
    store
        .change_key(
            &key.key_id,
            &KeyChange::Policy(&disabled.policy),
            ALL_STATES,
        )
        .unwrap();
    assert_eq!(store.get_key(&key.key_id).unwrap(), Some(disabled.clone()));

    let rotated = MaterialRecord {
        key_id: key.key_id,
        material_id: material_id(8),
        created: key.creation_date + 1.0,
        origin: MaterialOrigin::OnDemand,
    };
    store.add_material(&rotated, None, &ANY_STATE).unwrap();
    let got = store.get_key(&key.key_id).unwrap().unwrap();
    assert_eq!(got.current_material, rotated.material_id);

    store.delete_key(&key.key_id, None).unwrap();
    assert_eq!(store.get_key(&key.key_id).unwrap(), None);
}

pub fn key_round_trip_with_optional_fields_set_and_unset(store: &dyn MetadataStore) {
    let minimal = minimal_key(ACCOUNT, key_id(1), material_id(1));
    let full = full_key(ACCOUNT, key_id(2), material_id(2));
    insert(store, &minimal);
    store
        .insert_key(
            &full,
            &initial_material(&full),
            &[tag("a", "1"), tag("b", "")],
        )
        .unwrap();
    assert_eq!(
        store.get_key(&minimal.key_id).unwrap(),
        Some(minimal.clone())
    );
    assert_eq!(store.get_key(&full.key_id).unwrap(), Some(full.clone()));
    assert_eq!(store.get_key(&key_id(3)).unwrap(), None);
    assert_eq!(
        store.list_tags(&full.key_id, None, 10).unwrap(),
        vec![tag("a", "1"), tag("b", "")]
    );
    assert!(store
        .list_tags(&minimal.key_id, None, 10)
        .unwrap()
        .is_empty());
}

pub fn insert_key_is_atomic_and_rejects_duplicates(store: &dyn MetadataStore) {
    let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
    insert(store, &key);
    // Same key id again.
    let again = minimal_key(ACCOUNT, key_id(1), material_id(2));
    let err = store
        .insert_key(&again, &initial_material(&again), &[])
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    // New key id but a material id already used: nothing of the new key may remain.
    let clash = minimal_key(ACCOUNT, key_id(2), material_id(1));
    let err = store
        .insert_key(&clash, &initial_material(&clash), &[tag("t", "v")])
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    assert_eq!(store.get_key(&key_id(2)).unwrap(), None);
    assert!(store.list_tags(&key_id(2), None, 10).unwrap().is_empty());
    // A material that is not the key's current one is refused.
    let key3 = minimal_key(ACCOUNT, key_id(3), material_id(3));
    let mut wrong = initial_material(&key3);
    wrong.material_id = material_id(4);
    assert!(matches!(
        store.insert_key(&key3, &wrong, &[]),
        Err(StoreError::Backend { .. })
    ));
    assert_eq!(store.get_key(&key_id(3)).unwrap(), None);
    assert_eq!(store.all_material_ids().unwrap(), vec![material_id(1)]);
}

pub fn each_key_change_sets_only_its_own_columns(store: &dyn MetadataStore) {
    let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
    insert(store, &key);
    let applied =
        |change: KeyChange<'_>| match store.change_key(&key.key_id, &change, ALL_STATES).unwrap() {
            Changed::Applied(now) => {
                assert_eq!(store.get_key(&key.key_id).unwrap().as_ref(), Some(&now));
                now
            }
            Changed::Refused(now) => panic!("refused: {now:?}"),
        };
    let mut want = key.clone();
    want.description = "new".into();
    assert_eq!(applied(KeyChange::Description("new")), want);
    want.policy = "{}".into();
    assert_eq!(applied(KeyChange::Policy("{}")), want);
    want.rotation_enabled = true;
    want.rotation_period_days = Some(90);
    want.next_rotation_date = Some(5.5);
    let enable = KeyChange::EnableRotation {
        period_days: 90,
        next_rotation: 5.5,
    };
    assert_eq!(applied(enable), want);
    want.rotation_enabled = false;
    want.next_rotation_date = None;
    assert_eq!(applied(KeyChange::DisableRotation), want);
    want.state = KeyState::PendingDeletion;
    want.deletion_date = Some(9.25);
    want.pending_window_days = Some(7);
    let schedule = KeyChange::ScheduleDeletion {
        deletion_date: 9.25,
        pending_window_days: 7,
    };
    assert_eq!(applied(schedule), want);
    want.state = KeyState::Disabled;
    want.deletion_date = None;
    want.pending_window_days = None;
    assert_eq!(applied(KeyChange::CancelDeletion), want);
    want.state = KeyState::Enabled;
    assert_eq!(applied(KeyChange::State(KeyState::Enabled)), want);

    let missing = KeyChange::State(KeyState::Disabled);
    assert!(matches!(
        store.change_key(&key_id(9), &missing, ALL_STATES),
        Err(StoreError::NotFound)
    ));
}

pub fn a_key_change_is_refused_unless_the_key_is_in_an_allowed_state(store: &dyn MetadataStore) {
    let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
    insert(store, &key);
    let schedule = KeyChange::ScheduleDeletion {
        deletion_date: 9.0,
        pending_window_days: 7,
    };
    let manageable = &[KeyState::Enabled, KeyState::Disabled];
    let Changed::Applied(pending) = store
        .change_key(&key.key_id, &schedule, manageable)
        .unwrap()
    else {
        panic!("an Enabled key can be scheduled for deletion");
    };
    // Re-enabling a key pending deletion is refused, and nothing changes.
    let enable = KeyChange::State(KeyState::Enabled);
    assert_eq!(
        store.change_key(&key.key_id, &enable, manageable).unwrap(),
        Changed::Refused(pending.clone())
    );
    assert_eq!(store.get_key(&key.key_id).unwrap(), Some(pending));
}

pub fn a_rotation_is_refused_when_the_key_fails_its_guard(store: &dyn MetadataStore) {
    let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
    insert(store, &key);
    let rotated = MaterialRecord {
        key_id: key.key_id,
        material_id: material_id(2),
        created: 10.0,
        origin: MaterialOrigin::Automatic,
    };
    // Not due: rotation is not enabled on the key.
    let due = RotationGuard {
        allowed: ALL_STATES,
        due_by: Some(100.0),
    };
    let outcome = store.add_material(&rotated, Some(200.0), &due).unwrap();
    assert_eq!(outcome, Changed::Refused(key.clone()));
    // Not in an allowed state.
    let enabled_only = RotationGuard {
        allowed: &[KeyState::Disabled],
        due_by: None,
    };
    let outcome = store.add_material(&rotated, None, &enabled_only).unwrap();
    assert_eq!(outcome, Changed::Refused(key.clone()));
    // Neither attempt left a material row behind.
    assert_eq!(store.list_materials(&key.key_id).unwrap().len(), 1);
    assert_eq!(store.get_key(&key.key_id).unwrap(), Some(key));
}

pub fn a_due_deletion_skips_a_key_no_longer_pending_deletion(store: &dyn MetadataStore) {
    let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
    insert(store, &key);
    assert!(!store.delete_key(&key.key_id, Some(100.0)).unwrap());
    let schedule = KeyChange::ScheduleDeletion {
        deletion_date: 50.0,
        pending_window_days: 7,
    };
    store
        .change_key(&key.key_id, &schedule, ALL_STATES)
        .unwrap();
    assert!(!store.delete_key(&key.key_id, Some(49.0)).unwrap());
    assert!(store.delete_key(&key.key_id, Some(50.0)).unwrap());
    assert_eq!(store.get_key(&key.key_id).unwrap(), None);
}

pub fn material_round_trip_and_add_material(store: &dyn MetadataStore) {
    let key = full_key(ACCOUNT, key_id(1), material_id(1));
    insert(store, &key);
    let first = initial_material(&key);
    assert_eq!(
        store.get_material(&key.key_id, &first.material_id).unwrap(),
        Some(first.clone())
    );

    let second = MaterialRecord {
        key_id: key.key_id,
        material_id: material_id(2),
        created: key.creation_date + 10.0,
        origin: MaterialOrigin::OnDemand,
    };
    store
        .add_material(&second, Some(2_000_000_000.0), &ANY_STATE)
        .unwrap();
    let got = store.get_key(&key.key_id).unwrap().unwrap();
    assert_eq!(got.current_material, second.material_id);
    assert_eq!(got.next_rotation_date, Some(2_000_000_000.0));

    // Same creation time as the second: insertion order decides.
    let third = MaterialRecord {
        material_id: material_id(0),
        origin: MaterialOrigin::Automatic,
        ..second.clone()
    };
    store.add_material(&third, None, &ANY_STATE).unwrap();
    let got = store.get_key(&key.key_id).unwrap().unwrap();
    assert_eq!(got.current_material, third.material_id);
    assert_eq!(got.next_rotation_date, None);

    assert_eq!(
        store.list_materials(&key.key_id).unwrap(),
        vec![first.clone(), second.clone(), third.clone()]
    );
    assert_eq!(
        store.get_material(&key.key_id, &material_id(2)).unwrap(),
        Some(second.clone())
    );
    // A material is only found under its own key.
    assert_eq!(
        store.get_material(&key_id(2), &material_id(2)).unwrap(),
        None
    );
    let mut ids = store.all_material_ids().unwrap();
    ids.sort();
    assert_eq!(ids, vec![material_id(0), material_id(1), material_id(2)]);

    // Duplicate material id, and a material for a key that does not exist.
    assert!(matches!(
        store.add_material(&second, None, &ANY_STATE),
        Err(StoreError::AlreadyExists)
    ));
    let orphan = MaterialRecord {
        key_id: key_id(7),
        material_id: material_id(7),
        ..second.clone()
    };
    assert!(matches!(
        store.add_material(&orphan, None, &ANY_STATE),
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .get_key(&key.key_id)
            .unwrap()
            .unwrap()
            .current_material,
        material_id(0)
    );
}

pub fn alias_round_trip_update_and_delete(store: &dyn MetadataStore) {
    insert(store, &minimal_key(ACCOUNT, key_id(1), material_id(1)));
    insert(store, &minimal_key(ACCOUNT, key_id(2), material_id(2)));
    let alias = AliasRecord {
        account: ACCOUNT.into(),
        name: "alias/app".into(),
        target: key_id(1),
        creation_date: 1_700_000_000.5,
        last_updated: 1_700_000_000.5,
    };
    store.insert_alias(&alias).unwrap();
    assert_eq!(
        store.get_alias(ACCOUNT, "alias/app").unwrap(),
        Some(alias.clone())
    );
    assert_eq!(store.get_alias(OTHER_ACCOUNT, "alias/app").unwrap(), None);

    store
        .update_alias(ACCOUNT, "alias/app", &key_id(2), 1_800_000_000.0)
        .unwrap();
    let updated = AliasRecord {
        target: key_id(2),
        last_updated: 1_800_000_000.0,
        ..alias.clone()
    };
    assert_eq!(
        store.get_alias(ACCOUNT, "alias/app").unwrap(),
        Some(updated)
    );

    let err = store
        .update_alias(ACCOUNT, "alias/none", &key_id(1), 0.0)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    // Target that does not exist.
    let err = store
        .update_alias(ACCOUNT, "alias/app", &key_id(9), 0.0)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    store.delete_alias(ACCOUNT, "alias/app").unwrap();
    assert_eq!(store.get_alias(ACCOUNT, "alias/app").unwrap(), None);
    assert!(matches!(
        store.delete_alias(ACCOUNT, "alias/app"),
        Err(StoreError::NotFound)
    ));
}

pub fn alias_names_are_unique_per_account(store: &dyn MetadataStore) {
    insert(store, &minimal_key(ACCOUNT, key_id(1), material_id(1)));
    insert(store, &minimal_key(ACCOUNT, key_id(2), material_id(2)));
    insert(
        store,
        &minimal_key(OTHER_ACCOUNT, key_id(3), material_id(3)),
    );
    let alias = |account: &str, target: KeyId| AliasRecord {
        account: account.into(),
        name: "alias/shared".into(),
        target,
        creation_date: 1.0,
        last_updated: 1.0,
    };
    store.insert_alias(&alias(ACCOUNT, key_id(1))).unwrap();
    let err = store.insert_alias(&alias(ACCOUNT, key_id(2))).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    store
        .insert_alias(&alias(OTHER_ACCOUNT, key_id(3)))
        .unwrap();
    assert_eq!(
        store
            .get_alias(ACCOUNT, "alias/shared")
            .unwrap()
            .unwrap()
            .target,
        key_id(1)
    );
    assert_eq!(
        store
            .get_alias(OTHER_ACCOUNT, "alias/shared")
            .unwrap()
            .unwrap()
            .target,
        key_id(3)
    );
}

pub fn alias_cannot_target_a_missing_key_or_another_accounts_key(store: &dyn MetadataStore) {
    insert(
        store,
        &minimal_key(OTHER_ACCOUNT, key_id(3), material_id(3)),
    );
    let alias = |target: KeyId| AliasRecord {
        account: ACCOUNT.into(),
        name: "alias/x".into(),
        target,
        creation_date: 1.0,
        last_updated: 1.0,
    };
    assert!(matches!(
        store.insert_alias(&alias(key_id(9))),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.insert_alias(&alias(key_id(3))),
        Err(StoreError::NotFound)
    ));
}

pub fn keys_paginate_per_account(store: &dyn MetadataStore) {
    for n in (1..=7u8).rev() {
        insert(store, &minimal_key(ACCOUNT, key_id(n), material_id(n)));
    }
    insert(
        store,
        &minimal_key(OTHER_ACCOUNT, key_id(100), material_id(100)),
    );

    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store.list_keys(ACCOUNT, after.as_ref(), 3).unwrap();
        pages += 1;
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|k| k.key_id);
        seen.extend(page.into_iter().map(|k| k.key_id));
    }
    assert_eq!(pages, 4, "3 + 3 + 1 + empty");
    assert_eq!(seen, (1..=7u8).map(key_id).collect::<Vec<_>>());
    assert_eq!(store.list_keys(OTHER_ACCOUNT, None, 100).unwrap().len(), 1);
    assert!(store.list_keys(ACCOUNT, None, 0).unwrap().is_empty());
    assert_eq!(store.list_keys(ACCOUNT, None, usize::MAX).unwrap().len(), 7);
}

pub fn aliases_paginate_and_filter_by_target(store: &dyn MetadataStore) {
    insert(store, &minimal_key(ACCOUNT, key_id(1), material_id(1)));
    insert(store, &minimal_key(ACCOUNT, key_id(2), material_id(2)));
    insert(
        store,
        &minimal_key(OTHER_ACCOUNT, key_id(3), material_id(3)),
    );
    for n in 0..8u8 {
        let target = if n % 2 == 0 { key_id(1) } else { key_id(2) };
        let alias = AliasRecord {
            account: ACCOUNT.into(),
            name: format!("alias/a{n}"),
            target,
            creation_date: 1.0,
            last_updated: 1.0,
        };
        store.insert_alias(&alias).unwrap();
    }
    store
        .insert_alias(&AliasRecord {
            account: OTHER_ACCOUNT.into(),
            name: "alias/a0".into(),
            target: key_id(3),
            creation_date: 1.0,
            last_updated: 1.0,
        })
        .unwrap();

    let collect = |target: Option<&KeyId>, limit: usize| {
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_aliases(ACCOUNT, target, after.as_deref(), limit)
                .unwrap();
            assert!(page.len() <= limit);
            if page.is_empty() {
                return names;
            }
            assert!(page.iter().all(|a| a.account == ACCOUNT));
            after = page.last().map(|a| a.name.clone());
            names.extend(page.into_iter().map(|a| a.name));
        }
    };
    let all: Vec<String> = (0..8).map(|n| format!("alias/a{n}")).collect();
    assert_eq!(collect(None, 3), all);
    let even: Vec<String> = (0..8).step_by(2).map(|n| format!("alias/a{n}")).collect();
    assert_eq!(collect(Some(&key_id(1)), 3), even);
    assert!(collect(Some(&key_id(3)), 3).is_empty());
}

pub fn tags_put_replace_remove_and_paginate(store: &dyn MetadataStore) {
    let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
    store
        .insert_key(&key, &initial_material(&key), &[tag("k0", "old")])
        .unwrap();
    let tags: Vec<Tag> = (0..7)
        .map(|n| tag(&format!("k{n}"), &format!("v{n}")))
        .collect();
    assert_eq!(
        store.put_tags(&key.key_id, &tags, 50).unwrap(),
        TagWrite::Written
    );

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_tags(&key.key_id, after.as_deref(), 2).unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|t| t.key.clone());
        seen.extend(page);
    }
    assert_eq!(seen, tags, "k0 replaced, all in order");

    store
        .remove_tags(&key.key_id, &["k1".into(), "k3".into(), "absent".into()])
        .unwrap();
    let keys: Vec<String> = store
        .list_tags(&key.key_id, None, 100)
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(keys, ["k0", "k2", "k4", "k5", "k6"]);

    assert!(matches!(
        store.put_tags(&key_id(9), &tags, 50),
        Err(StoreError::NotFound)
    ));
    // A failed put leaves nothing behind, even partially.
    assert!(store.list_tags(&key_id(9), None, 100).unwrap().is_empty());
}

/// The tag quota counts what the key already holds, and a refused put writes nothing.
pub fn tags_over_the_quota_are_refused_whole(store: &dyn MetadataStore) {
    let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
    store
        .insert_key(
            &key,
            &initial_material(&key),
            &[tag("a", "1"), tag("b", "1")],
        )
        .unwrap();
    let listed = |store: &dyn MetadataStore| -> Vec<(String, String)> {
        let tags = store.list_tags(&key.key_id, None, 100).unwrap();
        tags.into_iter().map(|t| (t.key, t.value)).collect()
    };
    // a and b held, c and d new: 4 > 3. Nothing changes, not even a's value.
    let over = [tag("a", "2"), tag("c", "1"), tag("d", "1")];
    assert_eq!(
        store.put_tags(&key.key_id, &over, 3).unwrap(),
        TagWrite::OverQuota
    );
    assert_eq!(
        listed(store),
        [("a".into(), "1".into()), ("b".into(), "1".into())]
    );
    // Replacing held tags and adding one fits exactly.
    let fits = [tag("a", "2"), tag("b", "2"), tag("c", "1")];
    assert_eq!(
        store.put_tags(&key.key_id, &fits, 3).unwrap(),
        TagWrite::Written
    );
    assert_eq!(listed(store).len(), 3);
    assert_eq!(
        store.put_tags(&key.key_id, &[tag("d", "1")], 3).unwrap(),
        TagWrite::OverQuota
    );
}

pub fn delete_key_cascades_to_everything_of_the_key(store: &dyn MetadataStore) {
    let doomed = full_key(ACCOUNT, key_id(1), material_id(1));
    let kept = minimal_key(ACCOUNT, key_id(2), material_id(2));
    store
        .insert_key(&doomed, &initial_material(&doomed), &[tag("a", "1")])
        .unwrap();
    store
        .insert_key(&kept, &initial_material(&kept), &[tag("a", "1")])
        .unwrap();
    store
        .add_material(
            &MaterialRecord {
                key_id: doomed.key_id,
                material_id: material_id(3),
                created: 5.0,
                origin: MaterialOrigin::OnDemand,
            },
            None,
            &ANY_STATE,
        )
        .unwrap();
    for (name, target) in [("alias/doomed", doomed.key_id), ("alias/kept", kept.key_id)] {
        store
            .insert_alias(&AliasRecord {
                account: ACCOUNT.into(),
                name: name.into(),
                target,
                creation_date: 1.0,
                last_updated: 1.0,
            })
            .unwrap();
    }

    store.delete_key(&doomed.key_id, None).unwrap();
    assert_eq!(store.get_key(&doomed.key_id).unwrap(), None);
    assert!(store.list_materials(&doomed.key_id).unwrap().is_empty());
    assert!(store
        .list_tags(&doomed.key_id, None, 10)
        .unwrap()
        .is_empty());
    assert_eq!(store.get_alias(ACCOUNT, "alias/doomed").unwrap(), None);
    assert_eq!(store.all_material_ids().unwrap(), vec![material_id(2)]);

    // The other key is untouched.
    assert_eq!(store.get_key(&kept.key_id).unwrap(), Some(kept.clone()));
    assert_eq!(
        store.list_tags(&kept.key_id, None, 10).unwrap(),
        vec![tag("a", "1")]
    );
    assert!(store.get_alias(ACCOUNT, "alias/kept").unwrap().is_some());

    // Idempotent.
    store.delete_key(&doomed.key_id, None).unwrap();
}

pub fn due_for_deletion(store: &dyn MetadataStore) {
    let pending = |n: u8, date: f64| KeyRecord {
        state: KeyState::PendingDeletion,
        deletion_date: Some(date),
        pending_window_days: Some(7),
        ..minimal_key(ACCOUNT, key_id(n), material_id(n))
    };
    insert(store, &pending(1, 100.0));
    insert(store, &pending(2, 50.0));
    insert(store, &pending(3, 100.5)); // not yet
    insert(
        store,
        &KeyRecord {
            state: KeyState::Disabled,
            ..pending(4, 10.0)
        },
    ); // cancelled
    insert(store, &minimal_key(ACCOUNT, key_id(5), material_id(5)));

    let due: Vec<KeyId> = store
        .keys_due_for_deletion(100.0)
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(
        due,
        vec![key_id(2), key_id(1)],
        "date <= now, earliest first"
    );
    assert!(store.keys_due_for_deletion(49.0).unwrap().is_empty());
}

pub fn due_for_rotation(store: &dyn MetadataStore) {
    let rotating = |n: u8, next: Option<f64>| KeyRecord {
        rotation_enabled: true,
        rotation_period_days: Some(90),
        next_rotation_date: next,
        ..minimal_key(ACCOUNT, key_id(n), material_id(n))
    };
    insert(store, &rotating(1, Some(200.0)));
    insert(store, &rotating(2, Some(100.0)));
    insert(store, &rotating(3, Some(200.5))); // not yet
    insert(store, &rotating(4, None)); // no date
    insert(
        store,
        &KeyRecord {
            rotation_enabled: false,
            ..rotating(5, Some(1.0))
        },
    );
    insert(
        store,
        &KeyRecord {
            state: KeyState::Disabled,
            ..rotating(6, Some(1.0))
        },
    );
    insert(
        store,
        &KeyRecord {
            state: KeyState::PendingDeletion,
            ..rotating(7, Some(1.0))
        },
    );

    let due: Vec<KeyId> = store
        .keys_due_for_rotation(200.0)
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(due, vec![key_id(2), key_id(1)]);

    // Rotating key 2 moves its next date past now.
    store
        .add_material(
            &MaterialRecord {
                key_id: key_id(2),
                material_id: material_id(20),
                created: 200.0,
                origin: MaterialOrigin::Automatic,
            },
            Some(300.0),
            &ANY_STATE,
        )
        .unwrap();
    let due: Vec<KeyId> = store
        .keys_due_for_rotation(200.0)
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(due, vec![key_id(1)]);
}

pub fn adopted_keys_record_their_token_object_and_cascade(store: &dyn MetadataStore) {
    let by_id = minimal_key(ACCOUNT, key_id(1), material_id(1));
    let by_label = minimal_key(ACCOUNT, key_id(2), material_id(2));
    store
        .insert_adopted_key(
            &by_id,
            &initial_material(&by_id),
            &[],
            &TokenKeyRef::Id(vec![1, 2, 3]),
        )
        .unwrap();
    store
        .insert_adopted_key(
            &by_label,
            &initial_material(&by_label),
            &[],
            &TokenKeyRef::Label("legacy".into()),
        )
        .unwrap();
    // One token object cannot stand for two materials.
    let again = minimal_key(ACCOUNT, key_id(3), material_id(3));
    assert!(store
        .insert_adopted_key(
            &again,
            &initial_material(&again),
            &[],
            &TokenKeyRef::Label("legacy".into()),
        )
        .is_err());
    assert_eq!(
        store.get_key(&key_id(3)).unwrap(),
        None,
        "atomic with the key"
    );
    assert_eq!(
        store.adopted_materials().unwrap(),
        vec![
            (material_id(1), TokenKeyRef::Id(vec![1, 2, 3])),
            (material_id(2), TokenKeyRef::Label("legacy".into())),
        ]
    );
    store.delete_key(&key_id(1), None).unwrap();
    assert_eq!(
        store.adopted_materials().unwrap(),
        vec![(material_id(2), TokenKeyRef::Label("legacy".into()))]
    );
}

pub fn grants_round_trip_list_filter_and_cascade(store: &dyn MetadataStore) {
    let key = full_key(ACCOUNT, key_id(1), material_id(1));
    insert(store, &key);
    let alice = "arn:aws:iam::111122223333:user/alice";
    let g1 = grant(&key, 1, alice, Some("arn:aws:iam::111122223333:role/r"));
    let g2 = grant(&key, 2, "arn:aws:iam::111122223333:user/bob", None);
    store.insert_grant(&g2).unwrap();
    store.insert_grant(&g1).unwrap();
    assert!(matches!(
        store.insert_grant(&g1),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(store.get_grant(&g1.grant_id).unwrap().as_ref(), Some(&g1));
    let all = store.list_grants(&key.key_id, None, 10).unwrap();
    assert_eq!(all, vec![g1.clone(), g2.clone()]);
    assert_eq!(store.count_grants(&key.key_id).unwrap(), 2);
    let page = store
        .list_grants(&key.key_id, Some(&g1.grant_id), 10)
        .unwrap();
    assert_eq!(page, vec![g2.clone()]);
    assert_eq!(
        store.grants_for_grantee(&key.key_id, alice).unwrap(),
        vec![g1.clone()]
    );
    assert_eq!(
        store.grants_named(&key.key_id, "g2").unwrap(),
        vec![g2.clone()]
    );
    assert_eq!(
        store
            .list_retirable_grants("arn:aws:iam::111122223333:role/r", None, 10)
            .unwrap(),
        vec![g1.clone()]
    );
    store.delete_grant(&g1.grant_id).unwrap();
    assert!(matches!(
        store.delete_grant(&g1.grant_id),
        Err(StoreError::NotFound)
    ));
    let mut orphan = grant(&key, 3, alice, None);
    orphan.key_id = key_id(9);
    assert!(matches!(
        store.insert_grant(&orphan),
        Err(StoreError::NotFound)
    ));
    store.delete_key(&key.key_id, None).unwrap();
    assert_eq!(store.get_grant(&g2.grant_id).unwrap(), None);
}

pub fn ping_answers(store: &dyn MetadataStore) {
    store.ping().unwrap();
}

fn member(domain: &str, serial: &str, at: f64, fingerprint: Option<&str>) -> DomainMember {
    DomainMember {
        domain_id: domain.into(),
        token_label: format!("replica-{serial}"),
        token_manufacturer: "SoftHSM project".into(),
        token_model: "SoftHSM v2".into(),
        token_serial: serial.into(),
        transport_fingerprint: fingerprint.map(str::to_owned),
        enrolled_at: at,
        enrolled_by: "holder".into(),
    }
}

/// A token is recorded once per domain (its first row stays), members list in enrolment
/// order, and one domain's list holds none of another's.
pub fn domain_members_are_recorded_once_and_listed_per_domain(store: &dyn MetadataStore) {
    let (d1, d2) = (
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
    );
    assert!(store.domain_members(None).unwrap().is_empty());
    let first = member(d1, "aaaa", 1_700_000_000.5, None);
    let second = member(d1, "bbbb", 1_700_000_100.25, Some(&"ab".repeat(32)));
    assert!(store.insert_domain_member(&second).unwrap());
    assert!(store.insert_domain_member(&first).unwrap());
    // The same token again, with other details: refused, the first row stays.
    let mut again = second.clone();
    again.enrolled_by = "someone else".into();
    again.enrolled_at = 1_800_000_000.0;
    assert!(!store.insert_domain_member(&again).unwrap());
    // The same token in another domain is another membership.
    let other = member(d2, "aaaa", 1_600_000_000.0, None);
    assert!(store.insert_domain_member(&other).unwrap());

    assert_eq!(
        store.domain_members(Some(d1)).unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(store.domain_members(Some(d2)).unwrap(), vec![other.clone()]);
    assert_eq!(
        store.domain_members(None).unwrap(),
        vec![first, second, other]
    );
    assert!(store.domain_members(Some("00")).unwrap().is_empty());
}

/// Two stores (two connections, or two pools) on one database, each inserting every other
/// key with tags, interleaved: both see all of them.
pub fn two_stores_on_one_database_write_concurrently(a: &dyn MetadataStore, b: &dyn MetadataStore) {
    std::thread::scope(|scope| {
        for (first, store) in [(0u8, a), (1, b)] {
            scope.spawn(move || {
                for n in (first..100).step_by(2) {
                    let key = minimal_key(ACCOUNT, key_id(n), material_id(n));
                    store
                        .insert_key(&key, &initial_material(&key), &[tag("n", "v")])
                        .unwrap();
                }
            });
        }
    });
    for store in [a, b] {
        assert_eq!(store.list_keys(ACCOUNT, None, 1000).unwrap().len(), 100);
    }
}

/// The states DisableKey and UpdateKeyDescription accept (the service's `MANAGEABLE`).
const MANAGEABLE: &[KeyState] = &[KeyState::Enabled, KeyState::Disabled];

/// No lost updates across connections: in each trial one thread disables a fresh key
/// through store `a` while three threads rewrite its description through `a` and `b`, all
/// released at once. Every change is acknowledged, so afterwards the key must be Disabled
/// with one of the written descriptions.
pub fn concurrent_state_and_description_changes_lose_nothing(
    a: &dyn MetadataStore,
    b: &dyn MetadataStore,
    trials: usize,
) {
    let describe = |store: &dyn MetadataStore, id: &KeyId, text: &str| {
        store
            .change_key(id, &KeyChange::Description(text), MANAGEABLE)
            .unwrap()
    };
    let lost = lost_state_changes(a, b, trials, &describe);
    assert!(
        lost.is_empty(),
        "{} of {trials} acknowledged state changes were undone: {lost:?}",
        lost.len()
    );
}

/// How a description is written, for [`lost_state_changes`].
pub type DescriptionWriter = dyn Fn(&dyn MetadataStore, &KeyId, &str) -> Changed + Sync;

/// The race of [`concurrent_state_and_description_changes_lose_nothing`] with descriptions
/// written by `describe`; the trials whose key did not end Disabled, and the state it had.
pub fn lost_state_changes(
    a: &dyn MetadataStore,
    b: &dyn MetadataStore,
    trials: usize,
    describe: &DescriptionWriter,
) -> Vec<(usize, KeyState)> {
    let mut lost = Vec::new();
    for trial in 0..trials {
        // Key ids stay distinct across trials (and from other tests' fixed ids).
        let id = KeyId::from_bytes(u128::try_from(trial + 1_000).unwrap().to_be_bytes());
        let mut material = [0u8; 32];
        material[..16].copy_from_slice(&id.0.into_bytes());
        let key = minimal_key(ACCOUNT, id, MaterialId(material));
        insert(a, &key);
        let start = std::sync::Barrier::new(4);
        let written: Vec<String> = (0..3)
            .flat_map(|w| (0..4).map(move |r| format!("trial {trial} writer {w} round {r}")))
            .collect();
        std::thread::scope(|scope| {
            let start = &start;
            let written = &written;
            scope.spawn(move || {
                start.wait();
                match a
                    .change_key(&id, &KeyChange::State(KeyState::Disabled), MANAGEABLE)
                    .unwrap()
                {
                    Changed::Applied(now) => assert_eq!(now.state, KeyState::Disabled),
                    Changed::Refused(now) => panic!("DisableKey refused: {now:?}"),
                }
            });
            for writer in 0..3 {
                let store = if writer % 2 == 0 { b } else { a };
                scope.spawn(move || {
                    start.wait();
                    for round in 0..4 {
                        let text = &written[writer * 4 + round];
                        match describe(store, &id, text) {
                            Changed::Applied(_) => {}
                            Changed::Refused(now) => panic!("description refused: {now:?}"),
                        }
                    }
                });
            }
        });
        let now = a.get_key(&id).unwrap().unwrap();
        assert!(written.contains(&now.description), "trial {trial}: {now:?}");
        assert_eq!(
            b.get_key(&id).unwrap().as_ref(),
            Some(&now),
            "trial {trial}"
        );
        if now.state != KeyState::Disabled {
            lost.push((trial, now.state));
        }
    }
    lost
}

// === domain mode ===

fn wrapped(n: u8, domain_key: p11kms::model::DomainKeyId) -> p11kms::model::WrappedMaterial {
    p11kms::model::WrappedMaterial {
        material_id: material_id(n),
        key_id: key_id(n),
        kind: p11kms::model::WrappedKind::AesDerive,
        domain_key_id: domain_key,
        mechanism: 0x210A,
        blob: vec![n; 40],
        public: Vec::new(),
    }
}

/// A prepared rotation: the new key is `pending` (at most one), takes no blob, and
/// becomes active only together with the old one's demotion, by one conditional write.
pub fn a_pending_domain_key_wraps_nothing_until_activated(store: &dyn MetadataStore) {
    use p11kms::model::{DomainKeyId, DomainKeyRecord, DomainKeyState};
    let (d1, d2, d3) = (
        DomainKeyId([1; 16]),
        DomainKeyId([2; 16]),
        DomainKeyId([3; 16]),
    );
    let record = |id, state| DomainKeyRecord {
        id,
        state,
        created: 1_700_000_000.0,
    };
    assert!(store
        .insert_domain_key(&record(d1, DomainKeyState::Active))
        .unwrap());
    assert!(store.insert_wrapped_material(&wrapped(1, d1)).unwrap());
    assert!(store
        .insert_domain_key(&record(d2, DomainKeyState::Pending))
        .unwrap());
    // At most one pending key.
    assert!(!store
        .insert_domain_key(&record(d3, DomainKeyState::Pending))
        .unwrap());
    // A pending key wraps nothing.
    assert!(!store.insert_wrapped_material(&wrapped(2, d2)).unwrap());
    // Activation needs the old key active and the new one pending.
    assert!(!store.activate_domain_key(&d2, &d1).unwrap());
    assert!(!store.activate_domain_key(&d1, &d3).unwrap());
    let states = |store: &dyn MetadataStore| -> Vec<(DomainKeyId, DomainKeyState)> {
        store
            .domain_keys()
            .unwrap()
            .into_iter()
            .map(|k| (k.id, k.state))
            .collect()
    };
    assert_eq!(
        states(store),
        vec![(d1, DomainKeyState::Active), (d2, DomainKeyState::Pending)]
    );
    assert!(store.activate_domain_key(&d1, &d2).unwrap());
    assert!(!store.activate_domain_key(&d1, &d2).unwrap());
    assert_eq!(
        states(store),
        vec![(d1, DomainKeyState::Retiring), (d2, DomainKeyState::Active)]
    );
    assert!(!store.insert_wrapped_material(&wrapped(3, d1)).unwrap());
    assert!(store.insert_wrapped_material(&wrapped(3, d2)).unwrap());
    assert!(store
        .rewrap_material(&material_id(1), &d1, &d2, 0x210A, &[0xee; 40])
        .unwrap());
    assert!(store.retire_domain_key(&d1).unwrap());
}

pub fn domain_keys_rotate_and_blobs_move_by_conditional_writes(store: &dyn MetadataStore) {
    use p11kms::model::{DomainKeyId, DomainKeyRecord, DomainKeyState};
    let d1 = DomainKeyId([1; 16]);
    let d2 = DomainKeyId([2; 16]);
    let record = |id, state| DomainKeyRecord {
        id,
        state,
        created: 1_700_000_000.0,
    };
    assert!(store.domain_keys().unwrap().is_empty());
    // A blob under a domain key that is not active is refused.
    assert!(!store.insert_wrapped_material(&wrapped(1, d1)).unwrap());
    assert!(store
        .insert_domain_key(&record(d1, DomainKeyState::Active))
        .unwrap());
    // At most one active domain key.
    assert!(!store
        .insert_domain_key(&record(d2, DomainKeyState::Active))
        .unwrap());
    for n in 1..=3 {
        assert!(store.insert_wrapped_material(&wrapped(n, d1)).unwrap());
    }
    assert_eq!(
        store
            .insert_wrapped_material(&wrapped(1, d1))
            .unwrap_err()
            .to_string(),
        StoreError::AlreadyExists.to_string()
    );
    assert_eq!(
        store.get_wrapped_material(&material_id(2)).unwrap(),
        Some(wrapped(2, d1))
    );
    assert_eq!(store.get_wrapped_material(&material_id(9)).unwrap(), None);

    // Rotation: d1 retiring, d2 active; a rotation from a key that is not active is refused.
    assert!(!store
        .begin_domain_rotation(&d2, &record(DomainKeyId([3; 16]), DomainKeyState::Active))
        .unwrap());
    assert!(store
        .begin_domain_rotation(&d1, &record(d2, DomainKeyState::Active))
        .unwrap());
    let states: Vec<_> = store
        .domain_keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.state))
        .collect();
    assert_eq!(
        states,
        vec![(d1, DomainKeyState::Retiring), (d2, DomainKeyState::Active)]
    );
    // New blobs go only under the active key now.
    assert!(!store.insert_wrapped_material(&wrapped(4, d1)).unwrap());
    assert!(store.insert_wrapped_material(&wrapped(4, d2)).unwrap());

    // Paging through the blobs of d1.
    let first = store.wrapped_under(&d1, None, 2).unwrap();
    assert_eq!(
        first.iter().map(|w| w.material_id).collect::<Vec<_>>(),
        vec![material_id(1), material_id(2)]
    );
    let rest = store.wrapped_under(&d1, Some(&material_id(2)), 2).unwrap();
    assert_eq!(rest.len(), 1);
    // The old key cannot retire while a blob names it.
    assert!(!store.retire_domain_key(&d1).unwrap());
    for n in 1..=3 {
        assert!(store
            .rewrap_material(&material_id(n), &d1, &d2, 0x210A, &[0xee; 40])
            .unwrap());
    }
    // Conditional: a blob already moved is not moved again.
    assert!(!store
        .rewrap_material(&material_id(1), &d1, &d2, 0x210A, &[0xff; 40])
        .unwrap());
    let moved = store
        .get_wrapped_material(&material_id(1))
        .unwrap()
        .unwrap();
    assert_eq!((moved.domain_key_id, moved.blob), (d2, vec![0xee; 40]));
    assert!(store.wrapped_under(&d1, None, 10).unwrap().is_empty());
    assert!(store.retire_domain_key(&d1).unwrap());
    assert!(!store.retire_domain_key(&d1).unwrap());
    assert_eq!(
        store.domain_keys().unwrap()[0].state,
        DomainKeyState::Retired
    );

    store.delete_wrapped_material(&material_id(1)).unwrap();
    store.delete_wrapped_material(&material_id(1)).unwrap();
    assert_eq!(store.get_wrapped_material(&material_id(1)).unwrap(), None);
}
