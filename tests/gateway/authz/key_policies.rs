//! Cross-account use by ARN, and the key policy operations with their lockout check and quota.

use super::*;

// ---- cross-account -------------------------------------------------------------------------

#[tokio::test]
async fn cross_account_by_arn_works_and_by_alias_fails() {
    let rig = Rig::start();
    let shared = rig
        .key_with(vec![allow(
            OTHER_ROOT,
            json!(["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]),
        )])
        .await;
    let private = create_key(&rig.root).await.key_id;
    rig.root
        .create_alias()
        .alias_name("alias/shared")
        .target_key_id(&shared)
        .send()
        .await
        .unwrap();
    let (carol, dan) = (rig.as_user("carol"), rig.as_user("dan"));

    // By key ARN and by alias ARN: allowed on both sides.
    let blob = allowed(try_encrypt(&carol, &key_arn(&shared), &[]).await);
    allowed(try_encrypt(&carol, &alias_arn("alias/shared"), &[]).await);
    let plain = carol
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .expect("cross-account Decrypt without KeyId");
    assert_eq!(plain.plaintext.unwrap().into_inner(), b"authz");
    // A bare key id or alias name is looked up in the caller's own account.
    expect_error(
        carol.describe_key().key_id("alias/shared").send().await,
        "NotFoundException",
    )
    .assert_message(&format!(
        "Alias arn:aws:kms:{REGION}:{OTHER_ACCOUNT}:alias/shared is not found."
    ));
    expect_error(
        carol.describe_key().key_id(&shared).send().await,
        "NotFoundException",
    );
    // The other side: dan's account is allowed by the key policy, but dan's own identity
    // policy allows nothing.
    denied(try_encrypt(&dan, &key_arn(&shared), &[]).await)
        .assert_message_contains("because no identity-based policy allows the kms:Encrypt action");
    // A key whose policy does not name account B.
    denied(try_encrypt(&carol, &key_arn(&private), &[]).await)
        .assert_message_contains("because no resource-based policy allows the kms:Encrypt action");
    // Management operations never work across accounts.
    expect_error(
        carol.disable_key().key_id(key_arn(&shared)).send().await,
        "AccessDeniedException",
    )
    .assert_message_contains("cannot be used with a KMS key in another AWS account");
}

// ---- key policy operations ---------------------------------------------------------------

#[tokio::test]
async fn key_policy_get_put_list_and_the_lockout_check() {
    let rig = Rig::start();
    let key = create_key(&rig.root).await.key_id;
    let got = rig
        .root
        .get_key_policy()
        .key_id(&key)
        .policy_name("default")
        .send()
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(got.policy.as_deref().unwrap()).unwrap();
    assert_eq!(doc["Statement"][0]["Principal"]["AWS"], ROOT);
    assert_eq!(got.policy_name.as_deref(), Some("default"));
    let names = rig
        .root
        .list_key_policies()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(names.policy_names.unwrap(), vec!["default".to_string()]);

    expect_error(
        rig.root
            .put_key_policy()
            .key_id(&key)
            .policy_name("default")
            .policy("{not json")
            .send()
            .await,
        "MalformedPolicyDocumentException",
    );
    // A policy that would lock the caller (the root) out.
    let bob_only =
        json!({"Version": "2012-10-17", "Statement": [allow(BOB, json!("kms:*"))]}).to_string();
    expect_error(
        rig.root
            .put_key_policy()
            .key_id(&key)
            .policy_name("default")
            .policy(&bob_only)
            .send()
            .await,
        "MalformedPolicyDocumentException",
    )
    .assert_message(
        "The new key policy will not allow you to update the key policy in the future.",
    );
    expect_error(
        rig.root.create_key().policy(&bob_only).send().await,
        "MalformedPolicyDocumentException",
    );
    // Bypassing the check is allowed, and then the root is locked out while bob is not.
    rig.root
        .put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(&bob_only)
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .expect("PutKeyPolicy with bypass");
    expect_error(
        rig.root.describe_key().key_id(&key).send().await,
        "AccessDeniedException",
    );
    rig.as_user("bob")
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .expect("bob is in");
}

#[tokio::test]
async fn key_policy_quota_and_statements_without_resource() {
    let rig = Rig::start();
    let key = create_key(&rig.root).await.key_id;
    // 32 KiB is AWS's key policy quota.
    let padding = "x".repeat(33_000);
    let big = policy(vec![
        json!({"Sid": padding, "Effect": "Allow", "Principal": {"AWS": BOB},
                                 "Action": "kms:Encrypt", "Resource": "*"}),
    ]);
    expect_error(
        rig.root
            .put_key_policy()
            .key_id(&key)
            .policy_name("default")
            .policy(big.to_string())
            .send()
            .await,
        "LimitExceededException",
    );
    // A statement without Resource is accepted and grants nothing.
    let key = rig
        .key_with(vec![
            json!({"Effect": "Allow", "Principal": {"AWS": BOB}, "Action": "kms:Encrypt"}),
        ])
        .await;
    denied(try_encrypt(&rig.as_user("bob"), &key, &[]).await);
}
