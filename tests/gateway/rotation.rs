//! Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
//! RotateKeyOnDemand, ListKeyRotations, and the automatic rotation job.

use std::time::Duration;

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::RotationType;
use aws_sdk_kms::Client;

const DAY: i64 = 86_400;

/// Waits until the key's CurrentKeyMaterialId differs from `old` (AWS rotates on demand
/// asynchronously) and returns the new id.
async fn wait_for_new_material(kms: &Client, key_id: &str, old: &str, timeout: Duration) -> String {
    poll_until(timeout, Duration::from_millis(250), || {
        let kms = kms.clone();
        let key_id = key_id.to_string();
        let old = old.to_string();
        async move {
            let cur = current_material(&kms, &key_id).await;
            (cur != old).then_some(cur)
        }
    })
    .await
    .unwrap_or_else(|| panic!("CurrentKeyMaterialId still {old} after {timeout:?}"))
}

async fn rotate_now(kms: &Client, key_id: &str) -> (String, String) {
    let old = current_material(kms, key_id).await;
    kms.rotate_key_on_demand()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    let new = wait_for_new_material(kms, key_id, &old, Duration::from_secs(30)).await;
    (old, new)
}

// -------------------------------------------------------------------------------------------
// Enable / Disable / GetKeyRotationStatus
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn rotation_is_disabled_on_a_new_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let st = kms
        .get_key_rotation_status()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert!(!st.key_rotation_enabled());
    assert!(st.rotation_period_in_days().is_none());
    assert!(st.next_rotation_date().is_none());
    let kid = st.key_id().expect("KeyId");
    assert!(kid == md.key_id() || Some(kid) == md.arn(), "KeyId {kid}");
}

#[tokio::test]
async fn enable_key_rotation_defaults_to_365_days() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let now = now_secs();
    kms.enable_key_rotation()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    let st = kms
        .get_key_rotation_status()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert!(st.key_rotation_enabled());
    assert_eq!(st.rotation_period_in_days(), Some(365));
    let next = st.next_rotation_date().expect("NextRotationDate").secs();
    assert!(
        (next - (now + 365 * DAY)).abs() <= 2 * DAY,
        "NextRotationDate {next} is not about 365 days from {now}"
    );
}

#[tokio::test]
async fn enable_key_rotation_with_period_reports_it() {
    let srv = TestServer::start();
    let kms = srv.client();
    for days in [90, 180, 2560] {
        let md = create_key(&kms).await;
        let now = now_secs();
        kms.enable_key_rotation()
            .key_id(md.key_id())
            .rotation_period_in_days(days)
            .send()
            .await
            .unwrap();
        let st = kms
            .get_key_rotation_status()
            .key_id(md.key_id())
            .send()
            .await
            .unwrap();
        assert!(st.key_rotation_enabled());
        assert_eq!(st.rotation_period_in_days(), Some(days));
        let next = st.next_rotation_date().expect("NextRotationDate").secs();
        assert!(
            (next - (now + i64::from(days) * DAY)).abs() <= 2 * DAY,
            "NextRotationDate {next} is not about {days} days from {now}"
        );
    }
}

#[tokio::test]
async fn enable_key_rotation_rejects_period_outside_90_to_2560() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    for days in [0, 89, 2561] {
        let res = kms
            .enable_key_rotation()
            .key_id(md.key_id())
            .rotation_period_in_days(days)
            .send()
            .await;
        expect_error(res, "ValidationException").assert_message_contains("rotationPeriodInDays");
    }
    let st = kms
        .get_key_rotation_status()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert!(!st.key_rotation_enabled());
}

#[tokio::test]
async fn disable_key_rotation_turns_it_off() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.enable_key_rotation()
        .key_id(md.key_id())
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    kms.disable_key_rotation()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    let st = kms
        .get_key_rotation_status()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert!(!st.key_rotation_enabled());
    assert!(st.next_rotation_date().is_none());
}

#[tokio::test]
async fn enable_key_rotation_on_disabled_key_is_refused() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    let res = kms.enable_key_rotation().key_id(md.key_id()).send().await;
    expect_error_in(res, &["DisabledException", "KMSInvalidStateException"]);
}

#[tokio::test]
async fn rotation_operations_on_unknown_key_are_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let msg = format!("Key '{}' does not exist", key_arn(UNKNOWN_KEY_ID));
    let res = kms
        .get_key_rotation_status()
        .key_id(UNKNOWN_KEY_ID)
        .send()
        .await;
    expect_error(res, "NotFoundException").assert_message(&msg);
    let res = kms
        .enable_key_rotation()
        .key_id(UNKNOWN_KEY_ID)
        .send()
        .await;
    expect_error(res, "NotFoundException").assert_message(&msg);
    let res = kms
        .disable_key_rotation()
        .key_id(UNKNOWN_KEY_ID)
        .send()
        .await;
    expect_error(res, "NotFoundException").assert_message(&msg);
    let res = kms.list_key_rotations().key_id(UNKNOWN_KEY_ID).send().await;
    expect_error(res, "NotFoundException").assert_message(&msg);
}

// -------------------------------------------------------------------------------------------
// RotateKeyOnDemand / ListKeyRotations
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn rotate_key_on_demand_returns_key_arn() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .rotate_key_on_demand()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.key_id(), md.arn());
}

#[tokio::test]
async fn rotate_key_on_demand_changes_current_key_material_id() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let (old, new) = rotate_now(&kms, md.key_id()).await;
    assert!(is_material_id(&new), "{new}");
    assert_ne!(old, new);
}

#[tokio::test]
async fn old_ciphertexts_still_decrypt_after_rotation() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), b"before rotation").await;
    let (old, new) = rotate_now(&kms, md.key_id()).await;

    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"before rotation");
    assert_eq!(out.key_material_id(), Some(old.as_str()));

    let fresh = encrypt(&kms, md.key_id(), b"after rotation").await;
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(fresh))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"after rotation");
    assert_eq!(out.key_material_id(), Some(new.as_str()));
}

#[tokio::test]
async fn list_key_rotations_is_empty_for_a_new_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .list_key_rotations()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert!(resp.rotations().is_empty(), "{:?}", resp.rotations());
    assert!(!resp.truncated());
}

#[tokio::test]
async fn list_key_rotations_shows_on_demand_rotation() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let before = now_secs();
    let (_, new) = rotate_now(&kms, md.key_id()).await;
    let resp = kms
        .list_key_rotations()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    let entries = resp.rotations();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry.rotation_type(), Some(&RotationType::OnDemand));
    assert_eq!(entry.key_material_id(), Some(new.as_str()));
    let date = entry.rotation_date().expect("RotationDate").secs();
    assert!(
        (before - 60..=now_secs() + 60).contains(&date),
        "RotationDate {date} is not about now"
    );
}

#[tokio::test]
async fn list_key_rotations_pages_over_several_rotations() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let mut materials = Vec::new();
    for _ in 0..3 {
        materials.push(rotate_now(&kms, md.key_id()).await.1);
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..10 {
        let resp = kms
            .list_key_rotations()
            .key_id(md.key_id())
            .limit(2)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        assert!(resp.rotations().len() <= 2);
        seen.extend(
            resp.rotations()
                .iter()
                .map(|r| r.key_material_id().unwrap().to_string()),
        );
        if !resp.truncated() {
            break;
        }
        marker = Some(resp.next_marker().expect("NextMarker").to_string());
    }
    seen.sort();
    materials.sort();
    assert_eq!(seen, materials);
}

#[tokio::test]
async fn on_demand_rotation_leaves_automatic_rotation_disabled() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    rotate_now(&kms, md.key_id()).await;
    let st = kms
        .get_key_rotation_status()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert!(!st.key_rotation_enabled());
    assert!(st.rotation_period_in_days().is_none());
    assert!(st.next_rotation_date().is_none());
}

#[tokio::test]
async fn rotate_key_on_demand_of_disabled_key_is_disabled_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    let res = kms.rotate_key_on_demand().key_id(md.key_id()).send().await;
    expect_error(res, "DisabledException")
        .assert_message(&format!("{} is disabled.", md.arn().unwrap()));
}

#[tokio::test]
async fn rotate_key_on_demand_of_key_pending_deletion_is_invalid_state() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let res = kms.rotate_key_on_demand().key_id(md.key_id()).send().await;
    expect_error(res, "KMSInvalidStateException")
        .assert_message(&format!("{} is pending deletion.", md.arn().unwrap()));
}

#[tokio::test]
async fn rotate_key_on_demand_of_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .rotate_key_on_demand()
        .key_id(UNKNOWN_KEY_ID)
        .send()
        .await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Key '{}' does not exist", key_arn(UNKNOWN_KEY_ID)));
}

// -------------------------------------------------------------------------------------------
// Automatic rotation job (a "day" is a tenth of a second here: 90 days = 9 s)
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn rotation_job_rotates_key_when_period_ends() {
    let srv = TestServer::start_with(&[
        ("P11KMS_DAY_SECONDS", "0.1"),
        ("P11KMS_JOB_INTERVAL_MS", "200"),
    ]);
    let kms = srv.client();
    let md = create_key(&kms).await;
    let old = current_material(&kms, md.key_id()).await;
    let blob = encrypt(&kms, md.key_id(), b"before automatic rotation").await;
    let enabled_at = now_secs();
    kms.enable_key_rotation()
        .key_id(md.key_id())
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    let st = kms
        .get_key_rotation_status()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    let first_next = st.next_rotation_date().expect("NextRotationDate").secs();
    assert!(
        (enabled_at + 7..=enabled_at + 11).contains(&first_next),
        "NextRotationDate {first_next} is not 90 tenth-of-a-second days after {enabled_at}"
    );

    // Not rotated early.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        current_material(&kms, md.key_id()).await,
        old,
        "rotated long before the period ended"
    );

    let new = wait_for_new_material(&kms, md.key_id(), &old, Duration::from_secs(30)).await;
    // Whole seconds on both sides: a rotation at 9.0 s may read as 8.
    let rotated_after = now_secs() - enabled_at;
    assert!(
        rotated_after >= 8,
        "rotated after {rotated_after} s, before the 9 s period ended"
    );

    let rotations = kms
        .list_key_rotations()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    let automatic: Vec<_> = rotations
        .rotations()
        .iter()
        .filter(|r| r.rotation_type() == Some(&RotationType::Automatic))
        .collect();
    assert_eq!(automatic.len(), 1, "{:?}", rotations.rotations());
    assert_eq!(automatic[0].key_material_id(), Some(new.as_str()));
    assert!(automatic[0].rotation_date().is_some());

    let st = kms
        .get_key_rotation_status()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert!(st.key_rotation_enabled());
    let next = st.next_rotation_date().expect("NextRotationDate").secs();
    assert!(
        next > first_next,
        "NextRotationDate did not advance: {next} <= {first_next}"
    );

    assert_eq!(decrypt(&kms, &blob).await, b"before automatic rotation");
}
