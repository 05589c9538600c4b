//! Who may do what: key policies, identity policies, grants and cross-account use, through
//! the real `aws-sdk-kms` client with several credentials against a real server.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{GrantConstraints, GrantOperation, KeySpec, KeyUsageType};
use aws_sdk_kms::Client;
use serde_json::{json, Value};

use crate::common::*;

mod conditions;
mod grants;
mod key_policies;
mod policies;

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
