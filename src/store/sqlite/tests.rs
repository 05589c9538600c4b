//! Unit tests of the SQLite store on in-memory and temporary databases: what only the SQLite store has: its file, pragmas and migrations. What every store
//! must do is the shared suite in `tests/gateway/store_suite` (run against SQLite and PostgreSQL).

use super::schema::MIGRATIONS;
use super::*;
use tempfile::TempDir;

const ACCOUNT: &str = "111122223333";

fn key_id(n: u8) -> KeyId {
    KeyId::from_bytes([n; 16])
}

fn material_id(n: u8) -> MaterialId {
    MaterialId([n; 32])
}

/// A key with every optional field unset.
fn minimal_key(account: &str, id: KeyId, material: MaterialId) -> KeyRecord {
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
fn full_key(account: &str, id: KeyId, material: MaterialId) -> KeyRecord {
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

fn initial_material(key: &KeyRecord) -> MaterialRecord {
    MaterialRecord {
        key_id: key.key_id,
        material_id: key.current_material,
        created: key.creation_date,
        origin: MaterialOrigin::Initial,
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag {
        key: k.into(),
        value: v.into(),
    }
}

fn insert(store: &SqliteStore, key: &KeyRecord) {
    store.insert_key(key, &initial_material(key), &[]).unwrap();
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<SqliteStore>();
}

#[test]
fn open_sets_pragmas_and_schema_version() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(&dir.path().join("meta.db")).unwrap();
    assert_eq!(store.schema_version().unwrap() as usize, MIGRATIONS.len());
    let conn = store.conn();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 1, "synchronous=NORMAL");
    let fk: bool = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert!(fk);
    let timeout: i64 = conn
        .pragma_query_value(None, "busy_timeout", |r| r.get(0))
        .unwrap();
    assert_eq!(timeout, 5000);
}

#[test]
fn open_fails_when_parent_dir_is_missing() {
    let dir = TempDir::new().unwrap();
    let err = SqliteStore::open(&dir.path().join("missing").join("meta.db")).unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
}

#[test]
fn reopening_keeps_data_and_does_not_rerun_migration() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("meta.db");
    let key = full_key(ACCOUNT, key_id(1), material_id(1));
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .insert_key(&key, &initial_material(&key), &[tag("a", "1")])
            .unwrap();
        store
            .insert_alias(&AliasRecord {
                account: ACCOUNT.into(),
                name: "alias/keep".into(),
                target: key.key_id,
                creation_date: 1.0,
                last_updated: 2.0,
            })
            .unwrap();
    }
    // The migrations have no IF NOT EXISTS: re-running one would fail the open.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap() as usize, MIGRATIONS.len());
    assert_eq!(store.get_key(&key.key_id).unwrap(), Some(key.clone()));
    assert_eq!(
        store.list_tags(&key.key_id, None, 10).unwrap(),
        vec![tag("a", "1")]
    );
    assert_eq!(
        store
            .get_alias(ACCOUNT, "alias/keep")
            .unwrap()
            .unwrap()
            .last_updated,
        2.0
    );
    assert_eq!(
        store.list_materials(&key.key_id).unwrap(),
        vec![initial_material(&key)]
    );
}

/// Another process holding the write lock past `BUSY_TIMEOUT` is a dependency that did
/// not answer in time (DependencyTimeoutException), not an internal error.
#[test]
fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
    let started = Instant::now();
    let err = store
        .insert_key(&key, &initial_material(&key), &[])
        .unwrap_err();
    assert!(started.elapsed() >= BUSY_TIMEOUT, "{:?}", started.elapsed());
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let kms: crate::error::KmsError = err.into();
    assert_eq!(kms.wire().code, "DependencyTimeoutException");
    other.execute_batch("ROLLBACK").unwrap();
    insert(&store, &key);
}

#[test]
fn refuses_a_newer_schema() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("meta.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend { message, .. } if message.contains("newer")),
        "{err:?}"
    );
}

/// Writes bypassing the schema's checks, to simulate a damaged or foreign file.
fn corrupt(store: &SqliteStore, sql: &str) {
    let conn = store.conn();
    conn.pragma_update(None, "foreign_keys", false).unwrap();
    conn.execute_batch(sql).unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
}

fn assert_names_column(result: StoreResult<impl std::fmt::Debug>, column: &str) {
    match result {
        Err(StoreError::Backend { message, .. }) => {
            assert!(message.contains(column), "{message}")
        }
        other => panic!("expected a Backend error naming {column}, got {other:?}"),
    }
}

#[test]
fn unreadable_rows_are_backend_errors_naming_the_column() {
    let store = SqliteStore::open_in_memory().unwrap();
    // Hex letters in the id, so that upper-casing it below changes it.
    let key = minimal_key(ACCOUNT, key_id(0xab), material_id(0xab));
    insert(&store, &key);
    let id = key.key_id.to_string();

    corrupt(
        &store,
        &format!("UPDATE keys SET state = 'Melted' WHERE key_id = '{id}'"),
    );
    assert_names_column(store.get_key(&key.key_id), "keys.state");
    assert_names_column(store.list_keys(ACCOUNT, None, 10), "keys.state");
    corrupt(
        &store,
        &format!("UPDATE keys SET state = 'Enabled' WHERE key_id = '{id}'"),
    );

    for (column, good) in [
        ("key_spec", "SYMMETRIC_DEFAULT"),
        ("key_usage", "ENCRYPT_DECRYPT"),
        ("origin", "AWS_KMS"),
    ] {
        corrupt(
            &store,
            &format!("UPDATE keys SET {column} = 'BOGUS' WHERE key_id = '{id}'"),
        );
        assert_names_column(store.get_key(&key.key_id), &format!("keys.{column}"));
        corrupt(
            &store,
            &format!("UPDATE keys SET {column} = '{good}' WHERE key_id = '{id}'"),
        );
    }

    corrupt(
        &store,
        &format!("UPDATE keys SET pending_window_days = -1 WHERE key_id = '{id}'"),
    );
    assert_names_column(store.get_key(&key.key_id), "keys.pending_window_days");
    corrupt(
        &store,
        &format!("UPDATE keys SET pending_window_days = NULL WHERE key_id = '{id}'"),
    );

    corrupt(
        &store,
        &format!("UPDATE key_materials SET origin = 'STOLEN' WHERE key_id = '{id}'"),
    );
    assert_names_column(store.list_materials(&key.key_id), "key_materials.origin");

    corrupt(&store, "UPDATE key_materials SET material_id = 'zz'");
    assert_names_column(store.all_material_ids(), "key_materials.material_id");

    corrupt(
        &store,
        "INSERT INTO aliases VALUES ('111122223333', 'alias/bad', 'not-a-uuid', 1.0, 1.0)",
    );
    assert_names_column(
        store.get_alias(ACCOUNT, "alias/bad"),
        "aliases.target_key_id",
    );

    // Upper-case ids are not canonical: the store never writes them.
    let upper = id.to_uppercase();
    corrupt(
        &store,
        &format!("UPDATE keys SET key_id = '{upper}' WHERE key_id = '{id}'"),
    );
    assert_names_column(store.list_keys(ACCOUNT, None, 10), "keys.key_id");
}
