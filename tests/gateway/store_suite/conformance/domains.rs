//! Domain members and domain keys, and two stores writing one database at once.

use super::*;

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
