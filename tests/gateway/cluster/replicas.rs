//! Two replicas on one store: keys, changes and background jobs seen by every replica.

use super::*;

/// Keys of every kind made on A after B started, used on B for every cryptographic
/// operation (B unwraps each material from the store with its own token's copy of the domain
/// key); a rotation and an alias made on A are in force on B at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_on_one_replica_works_on_the_other_for_every_operation() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.client(0), cluster.client(1));

    let key = create_key(&a).await.key_id().to_string();
    let blob = encrypt(&a, &key, b"made on A").await;
    assert_eq!(decrypt(&b, &blob).await, b"made on A");
    let on_b = encrypt(&b, &key, b"made on B").await;
    assert_eq!(decrypt(&a, &on_b).await, b"made on B");
    let other = create_key(&a).await.key_id().to_string();
    let moved = b
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob.clone()))
        .destination_key_id(&other)
        .send()
        .await
        .expect("ReEncrypt on B")
        .ciphertext_blob
        .unwrap()
        .into_inner();
    assert_eq!(decrypt(&a, &moved).await, b"made on A");
    let data_key = b
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .expect("GenerateDataKey on B");
    let wrapped = data_key.ciphertext_blob.unwrap().into_inner();
    assert_eq!(
        decrypt(&a, &wrapped).await,
        data_key.plaintext.unwrap().into_inner()
    );

    // A new material made on A (rotation) is current on B at once.
    a.rotate_key_on_demand().key_id(&key).send().await.unwrap();
    let material_a = current_material(&a, &key).await;
    assert_eq!(current_material(&b, &key).await, material_a);
    let rotated = encrypt(&b, &key, b"after rotation").await;
    assert_eq!(decrypt(&a, &rotated).await, b"after rotation");
    assert_eq!(decrypt(&b, &blob).await, b"made on A");

    // An alias made on A names the key on B.
    let alias = unique_alias();
    a.create_alias()
        .alias_name(&alias)
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(decrypt(&b, &encrypt(&b, &alias, b"x").await).await, b"x");

    let signing = a
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_string();
    let signature = b
        .sign()
        .key_id(&signing)
        .message(Blob::new(b"message".to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .send()
        .await
        .expect("Sign on B")
        .signature
        .unwrap();
    let valid = a
        .verify()
        .key_id(&signing)
        .message(Blob::new(b"message".to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .signature(signature)
        .send()
        .await
        .expect("Verify on A")
        .signature_valid;
    assert!(valid);

    // EC: signed on B, verified on A.
    let ec = a
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_string();
    let signature = b
        .sign()
        .key_id(&ec)
        .message(Blob::new(b"message".to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .expect("ECDSA Sign on B")
        .signature
        .unwrap();
    assert!(
        a.verify()
            .key_id(&ec)
            .message(Blob::new(b"message".to_vec()))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .signature(signature)
            .send()
            .await
            .expect("ECDSA Verify on A")
            .signature_valid
    );

    // RSA encryption: encrypted on A, decrypted on B (B unwraps the private half).
    let rsa = a
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_string();
    let sealed = a
        .encrypt()
        .key_id(&rsa)
        .plaintext(Blob::new(b"rsa on A".to_vec()))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .expect("RSA Encrypt on A")
        .ciphertext_blob
        .unwrap();
    let opened = b
        .decrypt()
        .key_id(&rsa)
        .ciphertext_blob(sealed)
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .expect("RSA Decrypt on B")
        .plaintext
        .unwrap()
        .into_inner();
    assert_eq!(opened, b"rsa on A");

    let mac_key = a
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_string();
    let mac = b
        .generate_mac()
        .key_id(&mac_key)
        .message(Blob::new(b"message".to_vec()))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .expect("GenerateMac on B")
        .mac
        .unwrap();
    let mac_valid = a
        .verify_mac()
        .key_id(&mac_key)
        .message(Blob::new(b"message".to_vec()))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .mac(mac)
        .send()
        .await
        .expect("VerifyMac on A")
        .mac_valid;
    assert!(mac_valid);
}

/// Polls `refused` on B from the moment a change through A was acknowledged; the delay until
/// B refuses.
async fn refusal_delay<F, Fut>(mut refused: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let acknowledged = Instant::now();
    loop {
        if refused().await {
            return acknowledged.elapsed();
        }
        assert!(
            acknowledged.elapsed() < Duration::from_secs(5),
            "the change never took effect on the other replica"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// DisableKey, ScheduleKeyDeletion, PutKeyPolicy, RevokeGrant and DeleteAlias through A:
/// B refuses within a second. Prints the DisableKey delay distribution over the trials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_is_in_force_on_the_other_within_a_second() {
    let trials: usize = std::env::var("P11KMS_CLUSTER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.client(0), cluster.client(1));
    let key = create_key(&a).await.key_id().to_string();
    let mut delays = Vec::new();
    for _ in 0..trials {
        encrypt(&b, &key, b"x").await;
        a.disable_key().key_id(&key).send().await.unwrap();
        delays.push(
            refusal_delay(|| async {
                b.encrypt()
                    .key_id(&key)
                    .plaintext(Blob::new(b"x".to_vec()))
                    .send()
                    .await
                    .is_err()
            })
            .await,
        );
        a.enable_key().key_id(&key).send().await.unwrap();
        // Enabled again on B too before the next trial.
        poll_until(Duration::from_secs(5), Duration::from_millis(2), || async {
            b.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
                .ok()
        })
        .await
        .expect("EnableKey took effect on B");
    }
    delays.sort();
    println!(
        "DisableKey on A -> Encrypt refused on B, {} trials: min {:?} p50 {:?} p90 {:?} max {:?}",
        delays.len(),
        delays[0],
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        delays[delays.len() - 1]
    );
    assert!(
        delays[delays.len() - 1] < Duration::from_secs(1),
        "{delays:?}"
    );

    // The other changes the issue names, once each.
    let err = b
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await;
    assert!(err.is_ok());
    let deny_all = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"kms:Encrypt","Resource":"*"},{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
    a.put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(deny_all)
        .send()
        .await
        .unwrap();
    let delay = refusal_delay(|| async {
        b.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(delay < Duration::from_secs(1), "PutKeyPolicy: {delay:?}");

    let alias = unique_alias();
    let target = create_key(&a).await.key_id().to_string();
    a.create_alias()
        .alias_name(&alias)
        .target_key_id(&target)
        .send()
        .await
        .unwrap();
    encrypt(&b, &alias, b"x").await;
    a.delete_alias().alias_name(&alias).send().await.unwrap();
    let delay = refusal_delay(|| async {
        b.encrypt()
            .key_id(&alias)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(delay < Duration::from_secs(1), "DeleteAlias: {delay:?}");

    let grant = a
        .create_grant()
        .key_id(&target)
        .grantee_principal("arn:aws:iam::111122223333:user/other")
        .operations(aws_sdk_kms::types::GrantOperation::Decrypt)
        .send()
        .await
        .unwrap()
        .grant_id
        .unwrap();
    let listed = |client: Client, target: String, grant: String| async move {
        client
            .list_grants()
            .key_id(&target)
            .send()
            .await
            .map(|r| r.grants().iter().any(|g| g.grant_id() == Some(&grant)))
            .unwrap_or(true)
    };
    assert!(listed(b.clone(), target.clone(), grant.clone()).await);
    a.revoke_grant()
        .key_id(&target)
        .grant_id(&grant)
        .send()
        .await
        .unwrap();
    let delay = refusal_delay(|| {
        let still_listed = listed(b.clone(), target.clone(), grant.clone());
        async move { !still_listed.await }
    })
    .await;
    assert!(delay < Duration::from_secs(1), "RevokeGrant: {delay:?}");

    a.schedule_key_deletion()
        .key_id(&target)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let delay = refusal_delay(|| async {
        b.encrypt()
            .key_id(&target)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(
        delay < Duration::from_secs(1),
        "ScheduleKeyDeletion: {delay:?}"
    );
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// Three replicas, jobs every 200 ms, a day of 50 ms: keys scheduled for deletion are
/// deleted exactly once, and due rotations happen once each (one log line and one material
/// per rotation across all replicas, never a round that found the work already done).
/// Then the lease holder is killed: another replica takes the jobs over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_exactly_once_with_three_replicas_and_survive_the_holder() {
    let mut cluster = Cluster::start(
        3,
        &[
            ("P11KMS_JOB_INTERVAL_MS", "200"),
            ("P11KMS_DAY_SECONDS", "0.05"),
        ],
    );
    let a = cluster.client(0);
    let mut doomed = Vec::new();
    for _ in 0..6 {
        let key = create_key(&a).await.key_id().to_string();
        a.schedule_key_deletion()
            .key_id(&key)
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
        doomed.push(key);
    }
    let rotating = create_key(&a).await.key_id().to_string();
    a.enable_key_rotation()
        .key_id(&rotating)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    // 7 days = 0.35 s; 90 days = 4.5 s: wait for two rotations.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    for key in &doomed {
        let err = api_error(a.describe_key().key_id(key).send().await);
        assert_eq!(err.code.as_deref(), Some("NotFoundException"), "{key}");
    }
    let logs = cluster.logs();
    for key in &doomed {
        assert_eq!(
            count_lines(&logs, key, "key deleted after its waiting period"),
            1,
            "{key}"
        );
    }
    assert_eq!(count(&logs, "key no longer due for deletion"), 0);
    assert_eq!(count(&logs, "rotation no longer due; skipped"), 0);
    let rotations = a
        .list_key_rotations()
        .key_id(&rotating)
        .send()
        .await
        .unwrap()
        .rotations()
        .len();
    let logged = count_lines(&logs, &rotating, "key rotated automatically");
    println!(
        "{rotations} automatic rotations in 10.5 s with a 4.5 s period, logged {logged} times"
    );
    assert!((2..=3).contains(&rotations), "{rotations}");
    assert_eq!(logged, rotations);

    // Kill whichever replica ran the deletions (the lease holder), then schedule more.
    let holder = cluster
        .replicas
        .iter()
        .position(|r| {
            r.log_text()
                .contains("key deleted after its waiting period")
        })
        .expect("one replica ran the deletions");
    sigkill(cluster.replicas[holder].pid());
    assert!(cluster.replicas[holder].wait_exit(Duration::from_secs(5)));
    let survivor = (holder + 1) % 3;
    let s = cluster.client(survivor);
    let key = create_key(&s).await.key_id().to_string();
    s.schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let scheduled = Instant::now();
    let gone = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let r = s.describe_key().key_id(&key).send().await;
            r.is_err().then_some(())
        },
    )
    .await;
    assert!(gone.is_some(), "no replica took the deletion job over");
    println!(
        "deletion job taken over after the holder's SIGKILL: key gone {} ms after scheduling",
        scheduled.elapsed().as_millis()
    );
    // The killed replica is restarted for Drop to reap; nothing else.
    cluster.replicas[holder].restart();
}
