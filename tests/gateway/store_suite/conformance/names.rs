//! Materials, aliases and tags: round trips, uniqueness, pagination and the tag quota.

use super::*;

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
