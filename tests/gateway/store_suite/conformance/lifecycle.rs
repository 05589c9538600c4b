//! Deletion, rotation, adopted keys and grants, and the store's ping.

use super::*;

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
