//! The default key policy, identity policies, and ReEncrypt's two permissions.

use super::*;

// ---- the default key policy and identity policies ------------------------------------------

#[tokio::test]
async fn default_policy_delegates_to_identity_policies() {
    let rig = Rig::start();
    let key = create_key(&rig.root).await.key_id;
    let arn = key_arn(&key);

    let blob = allowed(try_encrypt(&rig.as_user("alice"), &key, &[]).await);
    let e = denied(try_encrypt(&rig.as_user("bob"), &key, &[]).await);
    e.assert_message(&format!(
        "User: {BOB} is not authorized to perform: kms:Encrypt on resource: {arn} \
         because no identity-based policy allows the kms:Encrypt action"
    ));

    let eve = rig.as_user("eve");
    allowed(try_encrypt(&eve, &key, &[]).await);
    let e = expect_error(
        eve.decrypt().ciphertext_blob(Blob::new(blob)).send().await,
        "AccessDeniedException",
    );
    e.assert_message(&format!(
        "User: arn:aws:iam::111122223333:user/eve is not authorized to perform: kms:Decrypt \
         on resource: {arn} with an explicit deny in an identity-based policy"
    ));

    // Operations on no key are governed by identity policies alone.
    rig.as_user("alice")
        .create_key()
        .send()
        .await
        .expect("alice CreateKey");
    expect_error(
        rig.as_user("bob").create_key().send().await,
        "AccessDeniedException",
    )
    .assert_message_contains("kms:CreateKey on resource: *");
    expect_error(
        rig.as_user("bob").list_keys().send().await,
        "AccessDeniedException",
    );
}

#[tokio::test]
async fn policy_matrix_of_allow_deny_not_action_and_wildcards() {
    let rig = Rig::start();
    let key = rig
        .key_with(vec![
            allow(BOB, json!(["kms:Encrypt", "kms:Describe*"])),
            json!({"Effect": "Deny", "Principal": {"AWS": ALICE}, "Action": "kms:Decrypt", "Resource": "*"}),
            // Bob is denied everything but what is listed.
            json!({"Effect": "Deny", "Principal": {"AWS": BOB},
                   "NotAction": ["kms:Encrypt", "kms:DescribeKey", "kms:Decrypt"], "Resource": "*"}),
            // Frank may use the key for anything cryptographic (`*crypt*` wildcard).
            allow(FRANK, json!("kms:*crypt*")),
        ])
        .await;
    let arn = key_arn(&key);
    let (alice, bob, frank) = (
        rig.as_user("alice"),
        rig.as_user("bob"),
        rig.as_user("frank"),
    );

    // Bob: direct Allow for Encrypt and Describe*, no identity policy needed.
    let blob = allowed(try_encrypt(&bob, &key, &[]).await);
    bob.describe_key()
        .key_id(&key)
        .send()
        .await
        .expect("bob DescribeKey");
    // Decrypt: not denied, but only the account (delegation) allows it, and bob has no
    // identity policy.
    expect_error(
        bob.decrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .send()
            .await,
        "AccessDeniedException",
    )
    .assert_message_contains("because no identity-based policy allows the kms:Decrypt action");
    // NotAction Deny.
    expect_error(
        bob.generate_data_key()
            .key_id(&key)
            .number_of_bytes(32)
            .send()
            .await,
        "AccessDeniedException",
    )
    .assert_message(&format!(
        "User: {BOB} is not authorized to perform: kms:GenerateDataKey on resource: {arn} \
         with an explicit deny in a resource-based policy"
    ));

    // Alice: the account delegation plus her identity policy, except the explicit Deny.
    allowed(try_encrypt(&alice, &key, &[]).await);
    expect_error(
        alice
            .decrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .send()
            .await,
        "AccessDeniedException",
    )
    .assert_message_contains("with an explicit deny in a resource-based policy");

    // Frank: `kms:*crypt*` covers Encrypt, Decrypt and ReEncrypt*, not DescribeKey.
    allowed(try_encrypt(&frank, &key, &[]).await);
    frank
        .decrypt()
        .ciphertext_blob(Blob::new(blob.clone()))
        .send()
        .await
        .expect("frank Decrypt");
    frank
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(&key)
        .send()
        .await
        .expect("frank ReEncrypt");
    // Only the root statement (delegation to the account) covers it, and frank has no
    // identity policy.
    expect_error(
        frank.describe_key().key_id(&key).send().await,
        "AccessDeniedException",
    )
    .assert_message_contains("because no identity-based policy allows the kms:DescribeKey action");
}

// ---- ReEncrypt's two permissions ---------------------------------------------------------

#[tokio::test]
async fn reencrypt_checks_from_on_the_source_and_to_on_the_destination() {
    let rig = Rig::start();
    let only_from = rig
        .key_with(vec![allow(BOB, json!("kms:ReEncryptFrom"))])
        .await;
    let only_to = rig
        .key_with(vec![allow(BOB, json!("kms:ReEncryptTo"))])
        .await;
    let both = rig
        .key_with(vec![allow(BOB, json!("kms:ReEncrypt*"))])
        .await;
    let bob = rig.as_user("bob");
    let reencrypt = |source: &str, destination: &str, dry_run: bool| {
        let bob = bob.clone();
        let destination = destination.to_string();
        let root = rig.root.clone();
        let source = source.to_string();
        async move {
            let blob = encrypt(&root, &source, b"moving").await;
            bob.re_encrypt()
                .ciphertext_blob(Blob::new(blob))
                .destination_key_id(destination)
                .dry_run(dry_run)
                .send()
                .await
        }
    };

    // From allowed on the source, To allowed on the destination.
    reencrypt(&only_from, &only_to, false)
        .await
        .expect("From -> To");
    reencrypt(&both, &both, false)
        .await
        .expect("ReEncrypt* covers both");
    // From allowed but not To.
    expect_error(
        reencrypt(&only_from, &only_from, false).await,
        "AccessDeniedException",
    )
    .assert_message_contains(&format!(
        "kms:ReEncryptTo on resource: {}",
        key_arn(&only_from)
    ));
    // To allowed but not From.
    expect_error(
        reencrypt(&only_to, &only_to, false).await,
        "AccessDeniedException",
    )
    .assert_message_contains(&format!(
        "kms:ReEncryptFrom on resource: {}",
        key_arn(&only_to)
    ));
    // DryRun reports the denial, and success only when both are allowed.
    expect_error(
        reencrypt(&only_to, &only_from, true).await,
        "AccessDeniedException",
    );
    expect_error(
        reencrypt(&only_from, &only_to, true).await,
        "DryRunOperationException",
    )
    .assert_message(DRY_RUN_MESSAGE);
}
