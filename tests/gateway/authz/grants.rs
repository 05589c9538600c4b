//! Grants: made, used by token, retired and revoked; constraints; never more than the grantor has.

use super::*;

// ---- grants --------------------------------------------------------------------------------

#[tokio::test]
async fn grant_create_use_by_token_retire_and_revoke() {
    let rig = Rig::start();
    let key = create_key(&rig.root).await.key_id;
    let bob = rig.as_user("bob");
    denied(try_encrypt(&bob, &key, &[]).await);

    let grant = rig
        .root
        .create_grant()
        .key_id(&key)
        .grantee_principal(BOB)
        .operations(GrantOperation::Encrypt)
        .operations(GrantOperation::Decrypt)
        .name("bob-crypto")
        .send()
        .await
        .expect("CreateGrant");
    let (grant_id, token) = (grant.grant_id.unwrap(), grant.grant_token.unwrap());
    assert_eq!(grant_id.len(), 64);

    // Usable at once, with the token and without it.
    let blob = bob
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"granted".to_vec()))
        .grant_tokens(&token)
        .send()
        .await
        .expect("Encrypt through the grant")
        .ciphertext_blob
        .unwrap();
    let plain = bob
        .decrypt()
        .ciphertext_blob(blob)
        .grant_tokens(&token)
        .send()
        .await
        .expect("Decrypt through the grant");
    assert_eq!(plain.plaintext.unwrap().into_inner(), b"granted");
    // The grant gives only what it lists.
    expect_error(
        bob.generate_data_key()
            .key_id(&key)
            .number_of_bytes(16)
            .send()
            .await,
        "AccessDeniedException",
    );

    // Same name and parameters: the same grant.
    let again = rig
        .root
        .create_grant()
        .key_id(&key)
        .grantee_principal(BOB)
        .operations(GrantOperation::Decrypt)
        .operations(GrantOperation::Encrypt)
        .name("bob-crypto")
        .send()
        .await
        .expect("CreateGrant again");
    assert_eq!(again.grant_id.as_deref(), Some(grant_id.as_str()));

    let listed = rig.root.list_grants().key_id(&key).send().await.unwrap();
    let entry = &listed.grants.unwrap()[0];
    assert_eq!(entry.grant_id.as_deref(), Some(grant_id.as_str()));
    assert_eq!(entry.grantee_principal.as_deref(), Some(BOB));
    assert_eq!(entry.issuing_account.as_deref(), Some(ROOT));

    // Malformed tokens are refused before anything else.
    expect_error(
        bob.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .grant_tokens("not-a-token")
            .send()
            .await,
        "InvalidGrantTokenException",
    );

    // Retire by token: the grant stops working, and its token with it.
    rig.root
        .retire_grant()
        .grant_token(&token)
        .send()
        .await
        .expect("RetireGrant");
    denied(try_encrypt(&bob, &key, &[]).await);
    expect_error(
        rig.root.retire_grant().grant_token(&token).send().await,
        "InvalidGrantTokenException",
    );

    // Revoke.
    let grant = rig
        .root
        .create_grant()
        .key_id(&key)
        .grantee_principal(BOB)
        .operations(GrantOperation::Encrypt)
        .retiring_principal(FRANK)
        .send()
        .await
        .unwrap();
    allowed(try_encrypt(&bob, &key, &[]).await);
    let retirable = rig
        .root
        .list_retirable_grants()
        .retiring_principal(FRANK)
        .send()
        .await
        .unwrap();
    assert_eq!(retirable.grants.unwrap().len(), 1);
    // Bob is the grantee but RetireGrant is not among its operations.
    expect_error(
        bob.retire_grant()
            .key_id(&key)
            .grant_id(grant.grant_id.clone().unwrap())
            .send()
            .await,
        "AccessDeniedException",
    );
    rig.root
        .revoke_grant()
        .key_id(&key)
        .grant_id(grant.grant_id.clone().unwrap())
        .send()
        .await
        .expect("RevokeGrant");
    denied(try_encrypt(&bob, &key, &[]).await);
    expect_error(
        rig.root
            .revoke_grant()
            .key_id(&key)
            .grant_id(grant.grant_id.unwrap())
            .send()
            .await,
        "NotFoundException",
    );
}

#[tokio::test]
async fn grant_constraints_on_the_encryption_context() {
    let rig = Rig::start();
    let key = create_key(&rig.root).await.key_id;
    let (bob, frank) = (rig.as_user("bob"), rig.as_user("frank"));
    let grant = |grantee: &'static str, constraints: GrantConstraints| {
        rig.root
            .create_grant()
            .key_id(&key)
            .grantee_principal(grantee)
            .operations(GrantOperation::Encrypt)
            .constraints(constraints)
            .send()
    };
    grant(
        BOB,
        GrantConstraints::builder()
            .encryption_context_subset("tenant", "a")
            .build(),
    )
    .await
    .expect("subset grant");
    grant(
        FRANK,
        GrantConstraints::builder()
            .encryption_context_equals("tenant", "a")
            .build(),
    )
    .await
    .expect("equals grant");

    allowed(try_encrypt(&bob, &key, &[("tenant", "a")]).await);
    allowed(try_encrypt(&bob, &key, &[("tenant", "a"), ("app", "x")]).await);
    denied(try_encrypt(&bob, &key, &[("tenant", "b")]).await);
    denied(try_encrypt(&bob, &key, &[]).await);

    allowed(try_encrypt(&frank, &key, &[("tenant", "a")]).await);
    denied(try_encrypt(&frank, &key, &[("tenant", "a"), ("app", "x")]).await);
}

#[tokio::test]
async fn a_grant_passes_on_at_most_what_it_has() {
    let rig = Rig::start();
    let key = create_key(&rig.root).await.key_id;
    let bob = rig.as_user("bob");
    rig.root
        .create_grant()
        .key_id(&key)
        .grantee_principal(BOB)
        .operations(GrantOperation::CreateGrant)
        .operations(GrantOperation::Encrypt)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_subset("tenant", "a")
                .build(),
        )
        .send()
        .await
        .expect("parent grant");
    let child = |ops: Vec<GrantOperation>, constraints: Option<GrantConstraints>| {
        bob.create_grant()
            .key_id(&key)
            .grantee_principal(FRANK)
            .set_operations(Some(ops))
            .set_constraints(constraints)
            .send()
    };
    // Stricter constraints and a subset of the operations: allowed.
    child(
        vec![GrantOperation::Encrypt],
        Some(
            GrantConstraints::builder()
                .encryption_context_subset("Tenant", "a")
                .encryption_context_subset("app", "x")
                .build(),
        ),
    )
    .await
    .expect("child grant");
    // No constraint at all, or an operation the parent lacks: refused.
    expect_error(
        child(vec![GrantOperation::Encrypt], None).await,
        "AccessDeniedException",
    );
    expect_error(
        child(
            vec![GrantOperation::Decrypt],
            Some(
                GrantConstraints::builder()
                    .encryption_context_subset("tenant", "a")
                    .build(),
            ),
        )
        .await,
        "AccessDeniedException",
    );
    // Frank's grant works within its constraint (keys match ignoring case).
    allowed(
        try_encrypt(
            &rig.as_user("frank"),
            &key,
            &[("tenant", "a"), ("app", "x")],
        )
        .await,
    );
    denied(try_encrypt(&rig.as_user("frank"), &key, &[("tenant", "a")]).await);
}
