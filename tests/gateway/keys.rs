//! Key management: CreateKey, DescribeKey, ListKeys, EnableKey/DisableKey,
//! ScheduleKeyDeletion/CancelKeyDeletion, UpdateKeyDescription and the background deletion job.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
#[allow(deprecated)]
use aws_sdk_kms::types::CustomerMasterKeySpec;
use aws_sdk_kms::types::{
    EncryptionAlgorithmSpec, KeyManagerType, KeySpec, KeyState, KeyUsageType, OriginType, Tag,
};

const DAY: i64 = 86_400;

// -------------------------------------------------------------------------------------------
// CreateKey
// -------------------------------------------------------------------------------------------

#[tokio::test]
#[allow(deprecated)] // CustomerMasterKeySpec is deprecated but AWS still returns it
async fn create_key_default_is_an_enabled_symmetric_aws_kms_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let before = now_secs();
    let md = create_key(&kms).await;

    assert!(is_uuid(md.key_id()), "KeyId {:?}", md.key_id());
    assert_eq!(md.arn(), Some(key_arn(md.key_id()).as_str()));
    assert_eq!(md.aws_account_id(), Some(ACCOUNT));
    assert_eq!(md.key_state(), Some(&KeyState::Enabled));
    assert!(md.enabled());
    assert_eq!(md.key_spec(), Some(&KeySpec::SymmetricDefault));
    assert_eq!(
        md.customer_master_key_spec(),
        Some(&CustomerMasterKeySpec::SymmetricDefault)
    );
    assert_eq!(md.key_usage(), Some(&KeyUsageType::EncryptDecrypt));
    assert_eq!(
        md.encryption_algorithms(),
        &[EncryptionAlgorithmSpec::SymmetricDefault]
    );
    assert!(md.signing_algorithms().is_empty());
    assert!(md.mac_algorithms().is_empty());
    assert_eq!(md.origin(), Some(&OriginType::AwsKms));
    assert_eq!(md.key_manager(), Some(&KeyManagerType::Customer));
    assert_eq!(md.multi_region(), Some(false));
    assert!(md.deletion_date().is_none());
    let material = md.current_key_material_id().expect("CurrentKeyMaterialId");
    assert!(
        is_material_id(material),
        "CurrentKeyMaterialId {material:?}"
    );
    let created = md.creation_date().expect("CreationDate").secs();
    assert!(
        (before - 60..=now_secs() + 60).contains(&created),
        "CreationDate {created} is not about now ({before})"
    );
}

#[tokio::test]
async fn create_key_metadata_matches_describe_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let created = create_key(&kms).await;
    let described = describe(&kms, created.key_id()).await;
    assert_eq!(created, described);
}

#[tokio::test]
async fn create_key_gives_each_key_its_own_id_and_material() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    assert_ne!(a.key_id(), b.key_id());
    assert_ne!(a.current_key_material_id(), b.current_key_material_id());
}

#[tokio::test]
async fn create_key_stores_description() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = kms
        .create_key()
        .description("payroll data key")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(md.description(), Some("payroll data key"));
    let described = describe(&kms, md.key_id()).await;
    assert_eq!(described.description(), Some("payroll data key"));
}

#[tokio::test]
async fn create_key_stores_tags() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = kms
        .create_key()
        .tags(
            Tag::builder()
                .tag_key("team")
                .tag_value("red")
                .build()
                .unwrap(),
        )
        .tags(
            Tag::builder()
                .tag_key("env")
                .tag_value("test")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let tags = kms
        .list_resource_tags()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    let mut got: Vec<(String, String)> = tags
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("env".to_string(), "test".to_string()),
            ("team".to_string(), "red".to_string())
        ]
    );
}

#[tokio::test]
async fn create_key_rejects_unknown_key_usage() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .create_key()
        .key_usage(KeyUsageType::from("RANDOM"))
        .send()
        .await;
    let err = expect_error(res, "ValidationException");
    err.assert_message_contains(
        "1 validation error detected: Value 'RANDOM' at 'keyUsage' failed to satisfy constraint: \
         Member must satisfy enum value set: [",
    );
}

// -------------------------------------------------------------------------------------------
// DescribeKey
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn describe_key_by_key_id() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let got = describe(&kms, md.key_id()).await;
    assert_eq!(got.key_id(), md.key_id());
    assert_eq!(got.arn(), md.arn());
}

#[tokio::test]
async fn describe_key_by_key_arn() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let got = describe(&kms, md.arn().unwrap()).await;
    assert_eq!(got.key_id(), md.key_id());
    assert_eq!(got.arn(), md.arn());
}

#[tokio::test]
async fn describe_key_by_alias_name() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let alias = unique_alias();
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(md.key_id())
        .send()
        .await
        .unwrap();
    let got = describe(&kms, &alias).await;
    assert_eq!(got.key_id(), md.key_id());
    assert_eq!(got.arn(), md.arn());
}

#[tokio::test]
async fn describe_key_by_alias_arn() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let alias = unique_alias();
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(md.key_id())
        .send()
        .await
        .unwrap();
    let got = describe(&kms, &alias_arn(&alias)).await;
    assert_eq!(got.key_id(), md.key_id());
    assert_eq!(got.arn(), md.arn());
}

#[tokio::test]
async fn describe_unknown_key_id_is_not_found_with_its_arn() {
    let srv = TestServer::start();
    let kms = srv.client();
    create_key(&kms).await;
    let res = kms.describe_key().key_id(UNKNOWN_KEY_ID).send().await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Key '{}' does not exist", key_arn(UNKNOWN_KEY_ID)));
}

#[tokio::test]
async fn describe_unknown_key_arn_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let arn = key_arn(UNKNOWN_KEY_ID);
    let res = kms.describe_key().key_id(&arn).send().await;
    expect_error(res, "NotFoundException").assert_message(&format!("Key '{arn}' does not exist"));
}

#[tokio::test]
async fn describe_malformed_key_id_is_invalid_key_id() {
    let srv = TestServer::start();
    let kms = srv.client();
    for bad in ["x", "fake-key-id", "134f2428cec14b25a1ae9048164dba47"] {
        let res = kms.describe_key().key_id(bad).send().await;
        expect_error(res, "NotFoundException").assert_message(&format!("Invalid keyId '{bad}'"));
    }
}

#[tokio::test]
async fn describe_key_arn_from_other_region_is_invalid_arn() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let other = md.arn().unwrap().replace(":us-east-1:", ":us-west-2:");
    let res = kms.describe_key().key_id(&other).send().await;
    expect_error(res, "NotFoundException").assert_message("Invalid arn us-west-2");
}

#[tokio::test]
async fn describe_unknown_alias_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let alias = unique_alias();
    let res = kms.describe_key().key_id(&alias).send().await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Alias {} is not found.", alias_arn(&alias)));
}

// -------------------------------------------------------------------------------------------
// ListKeys
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_keys_lists_created_keys_with_arns() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let resp = kms.list_keys().send().await.unwrap();
    assert!(!resp.truncated());
    assert!(resp.next_marker().is_none());
    for md in [&a, &b] {
        let entry = resp
            .keys()
            .iter()
            .find(|k| k.key_id() == Some(md.key_id()))
            .unwrap_or_else(|| panic!("{} missing from ListKeys", md.key_id()));
        assert_eq!(entry.key_arn(), md.arn());
    }
}

#[tokio::test]
async fn list_keys_pages_with_limit_and_marker() {
    let srv = TestServer::start();
    let kms = srv.client();
    let mut created = HashSet::new();
    for _ in 0..5 {
        created.insert(create_key(&kms).await.key_id().to_string());
    }

    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let resp = kms
            .list_keys()
            .limit(2)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert!(resp.keys().len() <= 2, "page of {}", resp.keys().len());
        seen.extend(resp.keys().iter().map(|k| k.key_id().unwrap().to_string()));
        if resp.truncated() {
            assert_eq!(resp.keys().len(), 2, "a truncated page must be full");
            marker = Some(
                resp.next_marker()
                    .expect("NextMarker when truncated")
                    .into(),
            );
        } else {
            assert!(resp.next_marker().is_none(), "NextMarker on the last page");
            break;
        }
        assert!(pages < 20, "paging does not end");
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a key was listed twice: {seen:?}");
    assert!(
        created.is_subset(&unique),
        "created {created:?}, listed {seen:?}"
    );
    assert!(
        pages >= 3,
        "5 keys with Limit 2 need at least 3 pages, got {pages}"
    );
}

#[tokio::test]
async fn list_keys_rejects_invalid_marker() {
    let srv = TestServer::start();
    let kms = srv.client();
    create_key(&kms).await;
    let res = kms.list_keys().marker("not-a-marker").send().await;
    expect_error(res, "InvalidMarkerException");
}

#[tokio::test]
async fn list_keys_rejects_limit_out_of_range() {
    let srv = TestServer::start();
    let kms = srv.client();
    for limit in [0, 1001] {
        let res = kms.list_keys().limit(limit).send().await;
        expect_error(res, "ValidationException").assert_message_contains("'limit'");
    }
}

// -------------------------------------------------------------------------------------------
// EnableKey / DisableKey
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn disable_key_shows_disabled_in_describe_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    let got = describe(&kms, md.key_id()).await;
    assert_eq!(got.key_state(), Some(&KeyState::Disabled));
    assert!(!got.enabled());
}

#[tokio::test]
async fn enable_key_reenables_a_disabled_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    kms.enable_key().key_id(md.key_id()).send().await.unwrap();
    let got = describe(&kms, md.key_id()).await;
    assert_eq!(got.key_state(), Some(&KeyState::Enabled));
    assert!(got.enabled());
    encrypt(&kms, md.key_id(), b"works again").await;
}

#[tokio::test]
async fn encrypt_with_disabled_key_is_disabled_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    let res = kms
        .encrypt()
        .key_id(md.key_id())
        .plaintext(aws_sdk_kms::primitives::Blob::new("x"))
        .send()
        .await;
    expect_error(res, "DisabledException")
        .assert_message(&format!("{} is disabled.", md.arn().unwrap()));
}

#[tokio::test]
async fn disable_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms.disable_key().key_id(UNKNOWN_KEY_ID).send().await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Key '{}' does not exist", key_arn(UNKNOWN_KEY_ID)));
}

#[tokio::test]
async fn enable_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms.enable_key().key_id(UNKNOWN_KEY_ID).send().await;
    expect_error(res, "NotFoundException");
}

#[tokio::test]
async fn enable_key_pending_deletion_is_invalid_state() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let res = kms.enable_key().key_id(md.key_id()).send().await;
    expect_error(res, "KMSInvalidStateException");
}

// -------------------------------------------------------------------------------------------
// ScheduleKeyDeletion / CancelKeyDeletion
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn schedule_key_deletion_defaults_to_30_days() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let now = now_secs();
    let resp = kms
        .schedule_key_deletion()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.pending_window_in_days(), Some(30));
    assert_eq!(resp.key_id(), md.arn());
    assert_eq!(resp.key_state(), Some(&KeyState::PendingDeletion));
    let when = resp.deletion_date().expect("DeletionDate").secs();
    assert!(
        (when - (now + 30 * DAY)).abs() <= DAY,
        "DeletionDate {when} is not about 30 days from {now}"
    );
}

#[tokio::test]
async fn schedule_key_deletion_puts_key_pending_deletion() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let now = now_secs();
    let resp = kms
        .schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.pending_window_in_days(), Some(7));
    let got = describe(&kms, md.key_id()).await;
    assert_eq!(got.key_state(), Some(&KeyState::PendingDeletion));
    assert!(!got.enabled());
    let when = got
        .deletion_date()
        .expect("DeletionDate in DescribeKey")
        .secs();
    assert!(
        (when - (now + 7 * DAY)).abs() <= DAY,
        "DeletionDate {when} is not about 7 days from {now}"
    );
    assert_eq!(
        Some(when),
        resp.deletion_date().map(|d| d.secs()),
        "DescribeKey and ScheduleKeyDeletion disagree on DeletionDate"
    );
}

#[tokio::test]
async fn schedule_key_deletion_accepts_7_and_30_days() {
    let srv = TestServer::start();
    let kms = srv.client();
    for days in [7, 30] {
        let md = create_key(&kms).await;
        let resp = kms
            .schedule_key_deletion()
            .key_id(md.key_id())
            .pending_window_in_days(days)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.pending_window_in_days(), Some(days));
    }
}

#[tokio::test]
async fn schedule_key_deletion_rejects_window_outside_7_to_30() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    for days in [0, 6, 31, 365] {
        let res = kms
            .schedule_key_deletion()
            .key_id(md.key_id())
            .pending_window_in_days(days)
            .send()
            .await;
        expect_error(res, "ValidationException").assert_message_contains("pendingWindowInDays");
    }
    let got = describe(&kms, md.key_id()).await;
    assert_eq!(got.key_state(), Some(&KeyState::Enabled));
}

#[tokio::test]
async fn schedule_key_deletion_of_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .schedule_key_deletion()
        .key_id(UNKNOWN_KEY_ID)
        .pending_window_in_days(7)
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

#[tokio::test]
async fn schedule_key_deletion_twice_is_invalid_state() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let res = kms
        .schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await;
    expect_error(res, "KMSInvalidStateException");
}

#[tokio::test]
async fn encrypt_with_key_pending_deletion_is_invalid_state() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let res = kms
        .encrypt()
        .key_id(md.key_id())
        .plaintext(aws_sdk_kms::primitives::Blob::new("x"))
        .send()
        .await;
    expect_error(res, "KMSInvalidStateException")
        .assert_message(&format!("{} is pending deletion.", md.arn().unwrap()));
}

#[tokio::test]
async fn cancel_key_deletion_leaves_key_disabled() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let resp = kms
        .cancel_key_deletion()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.key_id(), md.arn());
    let got = describe(&kms, md.key_id()).await;
    assert_eq!(got.key_state(), Some(&KeyState::Disabled));
    assert!(!got.enabled());
    assert!(got.deletion_date().is_none(), "DeletionDate after cancel");
}

#[tokio::test]
async fn cancel_key_deletion_of_enabled_key_is_invalid_state() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms.cancel_key_deletion().key_id(md.key_id()).send().await;
    expect_error(res, "KMSInvalidStateException");
    let got = describe(&kms, md.key_id()).await;
    assert_eq!(got.key_state(), Some(&KeyState::Enabled));
}

#[tokio::test]
async fn cancel_key_deletion_of_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .cancel_key_deletion()
        .key_id(UNKNOWN_KEY_ID)
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

// -------------------------------------------------------------------------------------------
// UpdateKeyDescription
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_key_description_replaces_description() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = kms
        .create_key()
        .description("old_description")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    kms.update_key_description()
        .key_id(md.key_id())
        .description("new_description")
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&kms, md.key_id()).await.description(),
        Some("new_description")
    );
}

#[tokio::test]
async fn update_key_description_of_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .update_key_description()
        .key_id(UNKNOWN_KEY_ID)
        .description("x")
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

// -------------------------------------------------------------------------------------------
// Background deletion job (a "day" is one second here)
// -------------------------------------------------------------------------------------------

fn fast_clock_server() -> TestServer {
    TestServer::start_with(&[
        ("P11KMS_DAY_SECONDS", "1"),
        ("P11KMS_JOB_INTERVAL_MS", "500"),
    ])
}

#[tokio::test]
async fn deletion_job_deletes_key_when_window_ends() {
    let srv = fast_clock_server();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let arn = md.arn().unwrap().to_string();
    kms.schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();

    // Well inside the 7-second window the key must still exist.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        describe(&kms, md.key_id()).await.key_state(),
        Some(&KeyState::PendingDeletion),
        "key deleted before its window ended"
    );

    // After the window (7 s) plus a few job intervals it must be gone.
    let gone = poll_until(Duration::from_secs(20), Duration::from_millis(500), || {
        let kms = kms.clone();
        let id = md.key_id().to_string();
        async move { kms.describe_key().key_id(&id).send().await.err() }
    })
    .await
    .expect("key still exists 23 s after a 7-day (7 s) deletion window began");
    expect_error::<(), _>(Err(gone), "NotFoundException")
        .assert_message(&format!("Key '{arn}' does not exist"));

    let listed = kms.list_keys().send().await.unwrap();
    assert!(
        listed
            .keys()
            .iter()
            .all(|k| k.key_id() != Some(md.key_id())),
        "deleted key still in ListKeys"
    );
}

#[tokio::test]
async fn deletion_job_spares_key_whose_deletion_was_cancelled() {
    let srv = fast_clock_server();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    kms.cancel_key_deletion()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let got = describe(&kms, md.key_id()).await;
    assert_eq!(got.key_state(), Some(&KeyState::Disabled));
}
