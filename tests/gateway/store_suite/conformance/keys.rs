//! Key records: reads after writes, optional fields, atomic inserts, and the conditional writes of each key change.

use super::*;

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
