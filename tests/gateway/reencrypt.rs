//! ReEncrypt: source and destination key forms, encryption context, key material ids,
//! rotation, key states, bad ciphertexts and DryRun.

use std::time::Duration;

use crate::common::*;
use aws_sdk_kms::operation::re_encrypt::ReEncryptOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, EncryptionAlgorithmSpec};
use aws_sdk_kms::Client;

const MESSAGE: &[u8] = b"test message 123 !%$@ 1234567890";

async fn reencrypt_to(kms: &Client, blob: &[u8], dest: &str) -> ReEncryptOutput {
    kms.re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ReEncrypt to {dest}: {e:?}"))
}

fn new_blob(resp: &ReEncryptOutput) -> Vec<u8> {
    resp.ciphertext_blob()
        .expect("CiphertextBlob")
        .as_ref()
        .to_vec()
}

async fn create_alias(kms: &Client, target: &str) -> String {
    let name = unique_alias();
    kms.create_alias()
        .alias_name(&name)
        .target_key_id(target)
        .send()
        .await
        .unwrap();
    name
}

async fn rotate_and_wait(kms: &Client, key_id: &str) -> String {
    let old = current_material(kms, key_id).await;
    kms.rotate_key_on_demand()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    poll_until(Duration::from_secs(30), Duration::from_millis(250), || {
        let kms = kms.clone();
        let key_id = key_id.to_string();
        let old = old.clone();
        async move {
            let cur = current_material(&kms, &key_id).await;
            (cur != old).then_some(cur)
        }
    })
    .await
    .expect("rotation did not change CurrentKeyMaterialId")
}

// -------------------------------------------------------------------------------------------
// Basic behaviour and response shape
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn reencrypt_without_source_key_id_moves_ciphertext_to_destination() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let resp = reencrypt_to(&kms, &blob, dst.key_id()).await;
    let out = kms
        .decrypt()
        .key_id(dst.key_id())
        .ciphertext_blob(Blob::new(new_blob(&resp)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
    assert_eq!(out.key_id(), dst.arn());
}

#[tokio::test]
async fn reencrypt_response_names_arns_and_algorithms() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let resp = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(src.key_id())
        .destination_key_id(dst.key_id())
        .source_encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
        .destination_encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.source_key_id(), src.arn());
    assert_eq!(resp.key_id(), dst.arn());
    assert_eq!(
        resp.source_encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    assert_eq!(
        resp.destination_encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    assert!(!new_blob(&resp).is_empty());
}

#[tokio::test]
async fn reencrypt_algorithms_default_to_symmetric_default() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let resp = reencrypt_to(&kms, &blob, dst.key_id()).await;
    assert_eq!(resp.source_key_id(), src.arn());
    assert_eq!(resp.key_id(), dst.arn());
    assert_eq!(
        resp.source_encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    assert_eq!(
        resp.destination_encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
}

#[tokio::test]
async fn reencrypt_reports_source_and_destination_key_material_ids() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let resp = reencrypt_to(&kms, &blob, dst.key_id()).await;
    let s = resp.source_key_material_id().expect("SourceKeyMaterialId");
    let d = resp
        .destination_key_material_id()
        .expect("DestinationKeyMaterialId");
    assert!(is_material_id(s) && is_material_id(d), "{s} / {d}");
    assert_eq!(Some(s), src.current_key_material_id());
    assert_eq!(Some(d), dst.current_key_material_id());
}

#[tokio::test]
async fn reencrypt_to_same_key_reports_equal_material_ids() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    let resp = reencrypt_to(&kms, &blob, md.key_id()).await;
    assert!(resp.source_key_material_id().is_some());
    assert_eq!(
        resp.source_key_material_id(),
        resp.destination_key_material_id()
    );
    assert_eq!(resp.source_key_id(), resp.key_id());
}

#[tokio::test]
async fn reencrypt_output_is_randomised() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let a = new_blob(&reencrypt_to(&kms, &blob, dst.key_id()).await);
    let b = new_blob(&reencrypt_to(&kms, &blob, dst.key_id()).await);
    assert_ne!(a, b);
    assert_eq!(decrypt(&kms, &a).await, MESSAGE);
    assert_eq!(decrypt(&kms, &b).await, MESSAGE);
}

#[tokio::test]
async fn reencrypted_blob_decrypts_without_key_id() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let fresh = new_blob(&reencrypt_to(&kms, &blob, dst.key_id()).await);
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(fresh))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
    assert_eq!(out.key_id(), dst.arn());
    assert_eq!(out.key_material_id(), dst.current_key_material_id());
}

#[tokio::test]
async fn source_ciphertext_still_decrypts_after_reencrypt() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    reencrypt_to(&kms, &blob, dst.key_id()).await;
    assert_eq!(decrypt(&kms, &blob).await, MESSAGE);
}

#[tokio::test]
async fn reencrypt_of_4096_byte_plaintext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let data = random_bytes(4096);
    let blob = encrypt(&kms, src.key_id(), &data).await;
    let fresh = new_blob(&reencrypt_to(&kms, &blob, dst.key_id()).await);
    assert!(fresh.len() <= 6144);
    assert_eq!(decrypt(&kms, &fresh).await, data);
}

#[tokio::test]
async fn reencrypt_of_1_byte_plaintext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), b"z").await;
    let fresh = new_blob(&reencrypt_to(&kms, &blob, dst.key_id()).await);
    assert_eq!(decrypt(&kms, &fresh).await, b"z");
}

#[tokio::test]
async fn reencrypt_of_generate_data_key_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let ctx = [("f", "1")];
    let dk = kms
        .generate_data_key()
        .key_id(src.key_id())
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    let resp = kms
        .re_encrypt()
        .ciphertext_blob(dk.ciphertext_blob().unwrap().clone())
        .set_source_encryption_context(Some(context(&ctx)))
        .destination_key_id(dst.key_id())
        .set_destination_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(new_blob(&resp)))
        .set_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext(), dk.plaintext());
}

// -------------------------------------------------------------------------------------------
// SourceKeyId
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn source_key_id_accepts_every_identifier_form() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let alias = create_alias(&kms, src.key_id()).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    for ident in [
        src.key_id().to_string(),
        src.arn().unwrap().to_string(),
        alias.clone(),
        alias_arn(&alias),
    ] {
        let resp = kms
            .re_encrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .source_key_id(&ident)
            .destination_key_id(dst.key_id())
            .send()
            .await
            .unwrap_or_else(|e| panic!("SourceKeyId {ident}: {e:?}"));
        assert_eq!(resp.source_key_id(), src.arn(), "SourceKeyId {ident}");
    }
}

#[tokio::test]
async fn wrong_source_key_id_is_incorrect_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let other = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(other.key_id())
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "IncorrectKeyException").assert_message(INCORRECT_KEY_MESSAGE);
}

#[tokio::test]
async fn source_alias_of_other_key_is_incorrect_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let other = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let alias = create_alias(&kms, other.key_id()).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(&alias)
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "IncorrectKeyException");
}

#[tokio::test]
async fn unknown_source_key_id_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(UNKNOWN_KEY_ID)
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

// -------------------------------------------------------------------------------------------
// DestinationKeyId
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn destination_accepts_every_identifier_form() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let alias = create_alias(&kms, dst.key_id()).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    for ident in [
        dst.key_id().to_string(),
        dst.arn().unwrap().to_string(),
        alias.clone(),
        alias_arn(&alias),
    ] {
        let resp = reencrypt_to(&kms, &blob, &ident).await;
        assert_eq!(resp.key_id(), dst.arn(), "DestinationKeyId {ident}");
        let out = kms
            .decrypt()
            .ciphertext_blob(Blob::new(new_blob(&resp)))
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_id(), dst.arn());
        assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
    }
}

#[tokio::test]
async fn malformed_destination_key_id_is_invalid_key_id() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id("fake-key-id")
        .send()
        .await;
    expect_error(res, "NotFoundException").assert_message("Invalid keyId 'fake-key-id'");
}

#[tokio::test]
async fn unknown_destination_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(UNKNOWN_KEY_ID)
        .send()
        .await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Key '{}' does not exist", key_arn(UNKNOWN_KEY_ID)));
}

#[tokio::test]
async fn missing_destination_alias_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let name = unique_alias();
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(&name)
        .send()
        .await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Alias {} is not found.", alias_arn(&name)));
}

// -------------------------------------------------------------------------------------------
// Encryption context
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn reencrypt_to_same_key_changes_encryption_context() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let ctx_a = [("purpose", "a"), ("tenant", "1")];
    let ctx_b = [("purpose", "b"), ("tenant", "2")];
    let blob = encrypt_ctx(&kms, md.key_id(), MESSAGE, &ctx_a).await;
    let resp = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(md.key_id())
        .set_source_encryption_context(Some(context(&ctx_a)))
        .destination_key_id(md.key_id())
        .set_destination_encryption_context(Some(context(&ctx_b)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.source_key_id(), md.arn());
    assert_eq!(resp.key_id(), md.arn());
    let fresh = new_blob(&resp);

    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(fresh.clone()))
        .set_encryption_context(Some(context(&ctx_b)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);

    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(fresh.clone()))
        .set_encryption_context(Some(context(&ctx_a)))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();

    let res = kms.decrypt().ciphertext_blob(Blob::new(fresh)).send().await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn reencrypt_can_drop_the_encryption_context() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let ctx = [("k", "v")];
    let blob = encrypt_ctx(&kms, src.key_id(), MESSAGE, &ctx).await;
    let resp = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_source_encryption_context(Some(context(&ctx)))
        .destination_key_id(dst.key_id())
        .send()
        .await
        .unwrap();
    assert_eq!(decrypt(&kms, &new_blob(&resp)).await, MESSAGE);
}

#[tokio::test]
async fn source_context_missing_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt_ctx(&kms, src.key_id(), MESSAGE, &[("tenant", "1")]).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn source_context_changed_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt_ctx(&kms, src.key_id(), MESSAGE, &[("tenant", "1")]).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_source_encryption_context(Some(context(&[("tenant", "2")])))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn source_context_extra_pair_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt_ctx(&kms, src.key_id(), MESSAGE, &[("tenant", "1")]).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_source_encryption_context(Some(context(&[("tenant", "1"), ("extra", "x")])))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn destination_context_binds_the_new_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let ctx = [("dest", "yes")];
    let resp = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dst.key_id())
        .set_destination_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    let fresh = new_blob(&resp);
    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(fresh.clone()))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(fresh))
        .set_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
}

#[tokio::test]
async fn source_context_is_order_independent() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let enc = srv
        .raw(
            "TrentService.Encrypt",
            format!(
                r#"{{"KeyId":"{}","Plaintext":"{}","EncryptionContext":{{"a":"1","b":"2","c":"3"}}}}"#,
                src.key_id(),
                b64(MESSAGE)
            ),
        )
        .send()
        .await;
    assert_eq!(enc.status, 200, "{}", enc.text());
    let blob = enc.json()["CiphertextBlob"].as_str().unwrap().to_string();
    let re = srv
        .raw(
            "TrentService.ReEncrypt",
            format!(
                r#"{{"CiphertextBlob":"{blob}","SourceEncryptionContext":{{"c":"3","b":"2","a":"1"}},"DestinationKeyId":"{}","DestinationEncryptionContext":{{"b":"2","c":"3","a":"1"}}}}"#,
                dst.key_id()
            ),
        )
        .send()
        .await;
    assert_eq!(re.status, 200, "{}", re.text());
    let fresh = unb64(re.json()["CiphertextBlob"].as_str().unwrap());
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(fresh))
        .set_encryption_context(Some(context(&[("a", "1"), ("b", "2"), ("c", "3")])))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
}

// -------------------------------------------------------------------------------------------
// Rotation
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn reencrypt_across_rotation_moves_to_current_material() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let old = md.current_key_material_id().unwrap().to_string();
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    let new = rotate_and_wait(&kms, md.key_id()).await;

    let resp = reencrypt_to(&kms, &blob, md.key_id()).await;
    assert_eq!(resp.source_key_material_id(), Some(old.as_str()));
    assert_eq!(resp.destination_key_material_id(), Some(new.as_str()));
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(new_blob(&resp)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
    assert_eq!(out.key_material_id(), Some(new.as_str()));
}

#[tokio::test]
async fn reencrypt_from_rotated_key_to_other_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let old = src.current_key_material_id().unwrap().to_string();
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    rotate_and_wait(&kms, src.key_id()).await;
    let resp = reencrypt_to(&kms, &blob, dst.key_id()).await;
    assert_eq!(resp.source_key_material_id(), Some(old.as_str()));
    assert_eq!(decrypt(&kms, &new_blob(&resp)).await, MESSAGE);
}

// -------------------------------------------------------------------------------------------
// Key states
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn disabled_destination_is_disabled_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    kms.disable_key().key_id(dst.key_id()).send().await.unwrap();
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "DisabledException")
        .assert_message(&format!("{} is disabled.", dst.arn().unwrap()));
}

#[tokio::test]
async fn destination_pending_deletion_is_invalid_state() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    kms.schedule_key_deletion()
        .key_id(dst.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "KMSInvalidStateException")
        .assert_message(&format!("{} is pending deletion.", dst.arn().unwrap()));
}

#[tokio::test]
async fn destination_after_cancelled_deletion_is_disabled_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    kms.schedule_key_deletion()
        .key_id(dst.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    kms.cancel_key_deletion()
        .key_id(dst.key_id())
        .send()
        .await
        .unwrap();
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "DisabledException");
}

#[tokio::test]
async fn disabled_source_is_disabled_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    kms.disable_key().key_id(src.key_id()).send().await.unwrap();
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "DisabledException")
        .assert_message(&format!("{} is disabled.", src.arn().unwrap()));
}

#[tokio::test]
async fn source_pending_deletion_is_invalid_state() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    kms.schedule_key_deletion()
        .key_id(src.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(src.key_id())
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "KMSInvalidStateException")
        .assert_message(&format!("{} is pending deletion.", src.arn().unwrap()));
}

// -------------------------------------------------------------------------------------------
// Bad ciphertexts
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_ciphertext_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let mut blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    *blob.last_mut().unwrap() ^= 0x01;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(src.key_id())
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn truncated_ciphertext_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(&blob[..blob.len() - 16]))
        .source_key_id(src.key_id())
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn ciphertext_with_appended_bytes_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let mut blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    blob.extend_from_slice(b"bad_data");
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(src.key_id())
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn garbage_ciphertext_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let dst = create_key(&kms).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(random_bytes(128)))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException");
}

#[tokio::test]
async fn ciphertext_over_6144_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let dst = create_key(&kms).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(random_bytes(6145)))
        .destination_key_id(dst.key_id())
        .send()
        .await;
    expect_error(res, "ValidationException").assert_message_contains("1 validation error detected");
}

// -------------------------------------------------------------------------------------------
// DryRun
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn reencrypt_dry_run_is_dry_run_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dst.key_id())
        .dry_run(true)
        .send()
        .await;
    expect_error(res, "DryRunOperationException").assert_message(DRY_RUN_MESSAGE);
}

#[tokio::test]
async fn reencrypt_dry_run_still_validates_the_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let mut blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    *blob.last_mut().unwrap() ^= 0x01;
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .source_key_id(src.key_id())
        .destination_key_id(dst.key_id())
        .dry_run(true)
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException");
}

#[tokio::test]
async fn reencrypt_dry_run_false_is_a_normal_call() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create_key(&kms).await;
    let dst = create_key(&kms).await;
    let blob = encrypt(&kms, src.key_id(), MESSAGE).await;
    let resp = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(dst.key_id())
        .dry_run(false)
        .send()
        .await
        .unwrap();
    assert_eq!(decrypt(&kms, &new_blob(&resp)).await, MESSAGE);
}
