//! Condition keys: encryption context, caller account, source IP, key spec and usage, grants.

use super::*;

// ---- condition keys ----------------------------------------------------------------------

#[tokio::test]
async fn encryption_context_conditions() {
    let rig = Rig::start();
    let bob = rig.as_user("bob");

    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:Encrypt",
            json!({"StringEquals": {"kms:EncryptionContext:tenant": "a"}}),
        )])
        .await;
    allowed(try_encrypt(&bob, &key, &[("tenant", "a")]).await);
    denied(try_encrypt(&bob, &key, &[("tenant", "b")]).await);
    denied(try_encrypt(&bob, &key, &[]).await);

    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:Encrypt",
            json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant", "app"]}}),
        )])
        .await;
    allowed(try_encrypt(&bob, &key, &[("tenant", "a"), ("app", "x")]).await);
    denied(try_encrypt(&bob, &key, &[("tenant", "a"), ("other", "x")]).await);

    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:Encrypt",
            json!({"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "tenant"}}),
        )])
        .await;
    allowed(try_encrypt(&bob, &key, &[("tenant", "z"), ("other", "x")]).await);
    denied(try_encrypt(&bob, &key, &[]).await);
}

#[tokio::test]
async fn caller_account_via_service_and_principal_arn_conditions() {
    let rig = Rig::start();
    let (bob, frank) = (rig.as_user("bob"), rig.as_user("frank"));

    let key = rig
        .key_with(vec![allow_if(
            "*",
            "kms:Encrypt",
            json!({"StringEquals": {"kms:CallerAccount": "111122223333"}}),
        )])
        .await;
    allowed(try_encrypt(&bob, &key, &[]).await);
    let key = rig
        .key_with(vec![allow_if(
            "*",
            "kms:Encrypt",
            json!({"StringEquals": {"kms:CallerAccount": OTHER_ACCOUNT}}),
        )])
        .await;
    denied(try_encrypt(&bob, &key, &[]).await);

    // No AWS service stands between the caller and this gateway: kms:ViaService is absent.
    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:Encrypt",
            json!({"Null": {"kms:ViaService": "true"}}),
        )])
        .await;
    allowed(try_encrypt(&bob, &key, &[]).await);
    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:Encrypt",
            json!({"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}),
        )])
        .await;
    denied(try_encrypt(&bob, &key, &[]).await);

    let key = rig
        .key_with(vec![allow_if(
            "*",
            "kms:Encrypt",
            json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/b*"}}),
        )])
        .await;
    allowed(try_encrypt(&bob, &key, &[]).await);
    denied(try_encrypt(&frank, &key, &[]).await);
}

#[tokio::test]
async fn source_ip_conditions() {
    let rig = Rig::start();
    let bob = rig.as_user("bob");
    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:Encrypt",
            json!({"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}}),
        )])
        .await;
    allowed(try_encrypt(&bob, &key, &[]).await);
    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:Encrypt",
            json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
        )])
        .await;
    denied(try_encrypt(&bob, &key, &[]).await);
    // Everyone outside 10/8 is denied everything; the lockout check would refuse this
    // policy, so the test bypasses it.
    let fence = policy(vec![
        json!({"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:*",
                                  "Resource": "*", "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}),
    ]);
    expect_error(
        rig.root.create_key().policy(fence.to_string()).send().await,
        "MalformedPolicyDocumentException",
    );
    let key = rig
        .root
        .create_key()
        .policy(fence.to_string())
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .expect("CreateKey with bypass")
        .key_metadata
        .unwrap()
        .key_id;
    expect_error(
        rig.root.describe_key().key_id(&key).send().await,
        "AccessDeniedException",
    )
    .assert_message_contains("with an explicit deny in a resource-based policy");
}

#[tokio::test]
async fn key_spec_key_usage_algorithm_and_alias_conditions() {
    let rig = Rig::start();
    let bob = rig.as_user("bob");
    let describe_if = |condition: Value| vec![allow_if(BOB, "kms:DescribeKey", condition)];

    let spec = json!({"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}});
    let sym = rig.key_with(describe_if(spec.clone())).await;
    let rsa = rig
        .key_of_spec(
            describe_if(spec),
            Some((KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt)),
        )
        .await;
    bob.describe_key()
        .key_id(&sym)
        .send()
        .await
        .expect("KeySpec matches");
    expect_error(
        bob.describe_key().key_id(&rsa).send().await,
        "AccessDeniedException",
    );

    let usage = json!({"StringEquals": {"kms:KeyUsage": "ENCRYPT_DECRYPT"}});
    let sym = rig.key_with(describe_if(usage.clone())).await;
    let signing = rig
        .key_of_spec(
            describe_if(usage),
            Some((KeySpec::EccNistP256, KeyUsageType::SignVerify)),
        )
        .await;
    bob.describe_key()
        .key_id(&sym)
        .send()
        .await
        .expect("KeyUsage matches");
    expect_error(
        bob.describe_key().key_id(&signing).send().await,
        "AccessDeniedException",
    );

    let rsa = rig
        .key_of_spec(
            vec![allow_if(
                BOB,
                "kms:Encrypt",
                json!({"StringEquals": {"kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}}),
            )],
            Some((KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt)),
        )
        .await;
    let rsa_encrypt = |algorithm: &'static str| {
        bob.encrypt()
            .key_id(&rsa)
            .plaintext(Blob::new(b"x".to_vec()))
            .encryption_algorithm(algorithm.into())
            .send()
    };
    rsa_encrypt("RSAES_OAEP_SHA_1")
        .await
        .expect("algorithm matches");
    expect_error(
        rsa_encrypt("RSAES_OAEP_SHA_256").await,
        "AccessDeniedException",
    );

    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:Encrypt",
            json!({"StringEquals": {"kms:RequestAlias": "alias/good"}}),
        )])
        .await;
    for alias in ["alias/good", "alias/bad"] {
        rig.root
            .create_alias()
            .alias_name(alias)
            .target_key_id(&key)
            .send()
            .await
            .expect("CreateAlias");
    }
    allowed(try_encrypt(&bob, "alias/good", &[]).await);
    denied(try_encrypt(&bob, "alias/bad", &[]).await);
    denied(try_encrypt(&bob, &key, &[]).await);
}

#[tokio::test]
async fn grant_conditions() {
    let rig = Rig::start();
    let bob = rig.as_user("bob");
    let create_grant = |key: String, operations: Vec<GrantOperation>| {
        bob.create_grant()
            .key_id(key)
            .grantee_principal(FRANK)
            .set_operations(Some(operations))
            .send()
    };

    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:CreateGrant",
            json!({"Bool": {"kms:GrantIsForAWSResource": "true"}}),
        )])
        .await;
    expect_error(
        create_grant(key, vec![GrantOperation::Decrypt]).await,
        "AccessDeniedException",
    );
    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:CreateGrant",
            json!({"Bool": {"kms:GrantIsForAWSResource": "false"}}),
        )])
        .await;
    create_grant(key, vec![GrantOperation::Decrypt])
        .await
        .expect("GrantIsForAWSResource false");

    let key = rig
        .key_with(vec![allow_if(
            BOB,
            "kms:CreateGrant",
            json!({"ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt", "Decrypt"]}}),
        )])
        .await;
    create_grant(
        key.clone(),
        vec![GrantOperation::Decrypt, GrantOperation::Encrypt],
    )
    .await
    .expect("operations within the allowed set");
    expect_error(
        create_grant(
            key,
            vec![GrantOperation::Decrypt, GrantOperation::ReEncryptFrom],
        )
        .await,
        "AccessDeniedException",
    )
    .assert_message_contains("kms:CreateGrant");
}
