//! The service's clock is injected: deletion windows and rotation periods are measured on
//! it, so a test moves time forward by days instead of waiting. The service runs in this
//! process on a fresh SoftHSM2 token and a SQLite file, with a [`ManualClock`]; the jobs are
//! the ones the server runs (`run_due_jobs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use p11kms::api::{
    CreateKeyCommand, DescribeKeyCommand, EnableKeyRotationCommand, FromBody,
    GetKeyRotationStatusCommand, ListKeyRotationsCommand, ScheduleKeyDeletionCommand,
};
use p11kms::auth::Principal;
use p11kms::error::KmsError;
use p11kms::hsm::{find_softhsm_module, EmbeddedSoftHsm, Hsm, HsmConfig};
use p11kms::kms::clock::ManualClock;
use p11kms::kms::{run_due_jobs, Caller, KmsService, ServiceConfig};
use p11kms::store::SqliteStore;
use serde_json::json;

const DAY: f64 = 86_400.0;
const START: f64 = 1_800_000_000.0;

struct Fixture {
    service: KmsService,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedSoftHsm::prepare(dir.path()).unwrap();
    // One token per binary: SoftHSM2 reads SOFTHSM2_CONF once per process.
    std::env::set_var("SOFTHSM2_CONF", &embedded.conf_path);
    let module = find_softhsm_module().expect("SoftHSM2 is installed");
    embedded.ensure_token(&module, "clock").unwrap();
    let hsm = Hsm::open(
        HsmConfig {
            module,
            token_label: "clock".into(),
            user_pin: embedded.user_pin().unwrap(),
            pool_size: 1,
            session_wait: Duration::from_secs(5),
            operation_timeout: None,
            recycle_after_operations: 0,
            session_key_copies: false,
            context_key_cache: p11kms::hsm::DEFAULT_CONTEXT_KEY_CACHE,
            transient_objects_per_session: p11kms::hsm::DEFAULT_TRANSIENT_OBJECTS_PER_SESSION,
            ciphertext_scheme: None,
        },
        None,
    )
    .unwrap();
    let store = SqliteStore::open(&dir.path().join("p11kms.sqlite")).unwrap();
    let clock = Arc::new(ManualClock::starting_at(START));
    let service = KmsService::new(ServiceConfig::default(), Arc::new(store), Arc::new(hsm))
        .with_clock(clock.clone());
    Fixture {
        service,
        clock,
        _dir: dir,
    }
}

fn root() -> Caller {
    Caller::new(Principal {
        access_key_id: "test".into(),
        account: "111122223333".into(),
        arn: "arn:aws:iam::111122223333:root".into(),
    })
}

fn request<T: FromBody>(value: serde_json::Value) -> T {
    T::from_body(value.to_string().as_bytes()).unwrap()
}

fn key_state(f: &Fixture, key_id: &str) -> Result<String, KmsError> {
    let md = f.service.describe_key(
        &root(),
        request::<DescribeKeyCommand>(json!({"KeyId": key_id})),
    )?;
    Ok(serde_json::to_value(md).unwrap()["KeyMetadata"]["KeyState"]
        .as_str()
        .unwrap()
        .to_string())
}

#[test]
fn days_pass_on_the_injected_clock_for_rotation_and_deletion() {
    let f = fixture();
    let created = f
        .service
        .create_key(&root(), request::<CreateKeyCommand>(json!({})))
        .unwrap();
    let created = serde_json::to_value(created).unwrap();
    let key_id = created["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created["KeyMetadata"]["CreationDate"].as_f64(), Some(START));

    // Rotation: due 90 days on, not a second before.
    f.service
        .enable_key_rotation(
            &root(),
            request::<EnableKeyRotationCommand>(
                json!({"KeyId": key_id, "RotationPeriodInDays": 90}),
            ),
        )
        .unwrap();
    let status = f
        .service
        .get_key_rotation_status(
            &root(),
            request::<GetKeyRotationStatusCommand>(json!({"KeyId": key_id})),
        )
        .unwrap();
    let status = serde_json::to_value(status).unwrap();
    assert_eq!(
        status["NextRotationDate"].as_f64(),
        Some(START + 90.0 * DAY)
    );
    let rotations = |f: &Fixture| {
        let listed = f
            .service
            .list_key_rotations(
                &root(),
                request::<ListKeyRotationsCommand>(json!({"KeyId": key_id})),
            )
            .unwrap();
        serde_json::to_value(listed).unwrap()["Rotations"]
            .as_array()
            .map_or(0, Vec::len)
    };
    f.clock.advance(90.0 * DAY - 1.0);
    run_due_jobs(&f.service);
    assert_eq!(rotations(&f), 0, "rotated a second early");
    f.clock.advance(1.0);
    run_due_jobs(&f.service);
    assert_eq!(rotations(&f), 1, "not rotated when the period ended");

    // Deletion: a 7-day window, the key deleted when it ends.
    let scheduled = f
        .service
        .schedule_key_deletion(
            &root(),
            request::<ScheduleKeyDeletionCommand>(
                json!({"KeyId": key_id, "PendingWindowInDays": 7}),
            ),
        )
        .unwrap();
    let deletion_date = serde_json::to_value(scheduled).unwrap()["DeletionDate"].as_f64();
    assert_eq!(deletion_date, Some(START + 97.0 * DAY));
    f.clock.advance(7.0 * DAY - 1.0);
    run_due_jobs(&f.service);
    assert_eq!(key_state(&f, &key_id).unwrap(), "PendingDeletion");
    f.clock.advance(1.0);
    run_due_jobs(&f.service);
    assert!(
        matches!(key_state(&f, &key_id), Err(KmsError::NotFound(_))),
        "the key outlived its deletion window"
    );
}
