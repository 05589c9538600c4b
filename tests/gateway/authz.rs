//! Who may do what: key policies, identity policies, grants and cross-account use, through
//! the real `aws-sdk-kms` client with several credentials against a real server.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{GrantConstraints, GrantOperation, KeySpec, KeyUsageType};
use aws_sdk_kms::Client;
use serde_json::{json, Value};

use crate::common::*;

const OTHER_ACCOUNT: &str = "444455556666";
const ROOT: &str = "arn:aws:iam::111122223333:root";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const FRANK: &str = "arn:aws:iam::111122223333:user/frank";
const CAROL: &str = "arn:aws:iam::444455556666:user/carol";
const OTHER_ROOT: &str = "arn:aws:iam::444455556666:root";

/// Credentials of two accounts. `test` is account A's root; alice has `kms:*` in her
/// identity policy; bob and frank have none; eve has `kms:*` but an explicit Deny of
/// kms:Decrypt; carol (account B) has `kms:*`; dan (account B) has none.
fn config() -> String {
    let allow_all = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}"#;
    let deny_decrypt = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]}"#;
    format!(
        r#"
[[credentials]]
access_key_id = "test"
secret_access_key = "test"

[[credentials]]
access_key_id = "alice"
secret_access_key = "alice-secret"
principal_arn = "{ALICE}"
policies = ['{allow_all}']

[[credentials]]
access_key_id = "bob"
secret_access_key = "bob-secret"
principal_arn = "{BOB}"

[[credentials]]
access_key_id = "frank"
secret_access_key = "frank-secret"
principal_arn = "{FRANK}"

[[credentials]]
access_key_id = "eve"
secret_access_key = "eve-secret"
principal_arn = "arn:aws:iam::111122223333:user/eve"
policies = ['{allow_all}', '{deny_decrypt}']

[[credentials]]
access_key_id = "carol"
secret_access_key = "carol-secret"
account = "{OTHER_ACCOUNT}"
principal_arn = "{CAROL}"
policies = ['{allow_all}']

[[credentials]]
access_key_id = "dan"
secret_access_key = "dan-secret"
account = "{OTHER_ACCOUNT}"
principal_arn = "arn:aws:iam::444455556666:user/dan"
"#
    )
}

struct Rig {
    server: TestServer,
    root: Client,
}

impl Rig {
    fn start() -> Rig {
        let server = TestServer::start_with_config(&config());
        let root = server.client();
        Rig { server, root }
    }

    fn as_user(&self, name: &str) -> Client {
        self.server.client_with(name, &format!("{name}-secret"))
    }

    /// A symmetric key whose policy is the root statement plus `statements`.
    async fn key_with(&self, statements: Vec<Value>) -> String {
        self.key_of_spec(statements, None).await
    }

    async fn key_of_spec(
        &self,
        statements: Vec<Value>,
        spec: Option<(KeySpec, KeyUsageType)>,
    ) -> String {
        let mut request = self
            .root
            .create_key()
            .policy(policy(statements).to_string());
        if let Some((spec, usage)) = spec {
            request = request.key_spec(spec).key_usage(usage);
        }
        request
            .send()
            .await
            .expect("CreateKey with policy")
            .key_metadata
            .expect("KeyMetadata")
            .key_id
    }
}

/// A key policy: account A's root may do anything, plus `statements`.
fn policy(statements: Vec<Value>) -> Value {
    let mut all = vec![json!({
        "Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"
    })];
    all.extend(statements);
    json!({"Version": "2012-10-17", "Statement": all})
}

fn allow(principal: &str, action: Value) -> Value {
    json!({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, "Resource": "*"})
}

fn allow_if(principal: &str, action: &str, condition: Value) -> Value {
    json!({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action,
           "Resource": "*", "Condition": condition})
}

async fn try_encrypt(kms: &Client, key: &str, ctx: &[(&str, &str)]) -> Result<Vec<u8>, ApiError> {
    kms.encrypt()
        .key_id(key)
        .plaintext(Blob::new(b"authz".to_vec()))
        .set_encryption_context((!ctx.is_empty()).then(|| context(ctx)))
        .send()
        .await
        .map(|r| r.ciphertext_blob.expect("CiphertextBlob").into_inner())
        .map_err(|e| api_error(Err::<(), _>(e)))
}

fn denied<T: std::fmt::Debug>(result: Result<T, ApiError>) -> ApiError {
    match result {
        Ok(v) => panic!("expected AccessDeniedException, got success {v:?}"),
        Err(e) => {
            assert_eq!(e.code.as_deref(), Some("AccessDeniedException"), "{e:?}");
            e
        }
    }
}

fn allowed<T>(result: Result<T, ApiError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("expected success, got {e:?}"),
    }
}

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
