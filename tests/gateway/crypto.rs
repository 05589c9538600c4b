//! Cryptography: Encrypt/Decrypt, encryption context, GenerateDataKey(WithoutPlaintext),
//! GenerateRandom and DryRun.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, EncryptionAlgorithmSpec};

const MESSAGE: &[u8] = b"test message 123 !%$@ 1234567890";

fn tamper_last_byte(blob: &[u8]) -> Vec<u8> {
    let mut out = blob.to_vec();
    *out.last_mut().unwrap() ^= 0x01;
    out
}

// -------------------------------------------------------------------------------------------
// Encrypt / Decrypt
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn round_trip_of_1_byte() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), b"\x00").await;
    assert_eq!(decrypt(&kms, &blob).await, b"\x00");
}

#[tokio::test]
async fn round_trip_of_4096_bytes() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let data = random_bytes(4096);
    let blob = encrypt(&kms, md.key_id(), &data).await;
    assert!(blob.len() <= 6144, "ciphertext of {} bytes", blob.len());
    assert_eq!(decrypt(&kms, &blob).await, data);
}

#[tokio::test]
async fn encrypt_of_4097_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .encrypt()
        .key_id(md.key_id())
        .plaintext(Blob::new(random_bytes(4097)))
        .send()
        .await;
    expect_error(res, "ValidationException").assert_message_contains("plaintext");
}

#[tokio::test]
async fn encrypt_of_empty_plaintext_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .encrypt()
        .key_id(md.key_id())
        .plaintext(Blob::new(Vec::new()))
        .send()
        .await;
    expect_error(res, "ValidationException");
}

#[tokio::test]
async fn ciphertext_is_randomised() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let a = encrypt(&kms, md.key_id(), MESSAGE).await;
    let b = encrypt(&kms, md.key_id(), MESSAGE).await;
    assert_ne!(a, b);
    assert!(
        !a.windows(MESSAGE.len()).any(|w| w == MESSAGE),
        "plaintext visible in ciphertext"
    );
}

#[tokio::test]
async fn encrypt_response_names_key_arn_and_algorithm() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .encrypt()
        .key_id(md.key_id())
        .plaintext(Blob::new(MESSAGE))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.key_id(), md.arn());
    assert_eq!(
        resp.encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
}

#[tokio::test]
async fn encrypt_accepts_every_key_identifier_form() {
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
    for ident in [
        md.key_id().to_string(),
        md.arn().unwrap().to_string(),
        alias.clone(),
        alias_arn(&alias),
    ] {
        let resp = kms
            .encrypt()
            .key_id(&ident)
            .plaintext(Blob::new(MESSAGE))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Encrypt with {ident}: {e:?}"));
        assert_eq!(resp.key_id(), md.arn(), "Encrypt with {ident}");
    }
}

#[tokio::test]
async fn decrypt_response_names_key_arn_algorithm_and_material() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
    assert_eq!(out.key_id(), md.arn());
    assert_eq!(
        out.encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    assert_eq!(out.key_material_id(), md.current_key_material_id());
}

#[tokio::test]
async fn decrypt_accepts_matching_key_id_in_every_form() {
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
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    for ident in [
        md.key_id().to_string(),
        md.arn().unwrap().to_string(),
        alias.clone(),
        alias_arn(&alias),
    ] {
        let out = kms
            .decrypt()
            .key_id(&ident)
            .ciphertext_blob(Blob::new(blob.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Decrypt with {ident}: {e:?}"));
        assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
    }
}

#[tokio::test]
async fn decrypt_with_other_key_id_is_incorrect_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let blob = encrypt(&kms, a.key_id(), MESSAGE).await;
    let res = kms
        .decrypt()
        .key_id(b.key_id())
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await;
    expect_error(res, "IncorrectKeyException").assert_message(INCORRECT_KEY_MESSAGE);
}

#[tokio::test]
async fn decrypt_with_unknown_key_id_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let blob = encrypt(&kms, a.key_id(), MESSAGE).await;
    let res = kms
        .decrypt()
        .key_id(UNKNOWN_KEY_ID)
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Key '{}' does not exist", key_arn(UNKNOWN_KEY_ID)));
}

#[tokio::test]
async fn decrypt_tampered_ciphertext_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(tamper_last_byte(&blob)))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn decrypt_ciphertext_with_flipped_byte_anywhere_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    for pos in [0, 1, blob.len() / 2, blob.len() - 17] {
        let mut bad = blob.clone();
        bad[pos] ^= 0x80;
        let res = kms.decrypt().ciphertext_blob(Blob::new(bad)).send().await;
        let err = api_error(res);
        // Damaging the bytes that name the key may make the ciphertext point at no key
        // (AWS then answers InvalidCiphertextException as well).
        assert_eq!(
            err.code.as_deref(),
            Some("InvalidCiphertextException"),
            "byte {pos}: {}",
            err.display
        );
    }
}

#[tokio::test]
async fn decrypt_truncated_ciphertext_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(&blob[..blob.len() - 16]))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn decrypt_ciphertext_missing_its_header_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    let res = kms
        .decrypt()
        .key_id(md.key_id())
        .ciphertext_blob(Blob::new(&blob[40..]))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn decrypt_ciphertext_with_appended_bytes_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let mut blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    blob.extend_from_slice(b"bad_data");
    let res = kms.decrypt().ciphertext_blob(Blob::new(blob)).send().await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn decrypt_garbage_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    create_key(&kms).await;
    for len in [1, 16, 128] {
        let res = kms
            .decrypt()
            .ciphertext_blob(Blob::new(random_bytes(len)))
            .send()
            .await;
        expect_error(res, "InvalidCiphertextException");
    }
}

#[tokio::test]
async fn decrypt_with_disabled_key_is_disabled_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    let res = kms.decrypt().ciphertext_blob(Blob::new(blob)).send().await;
    expect_error(res, "DisabledException")
        .assert_message(&format!("{} is disabled.", md.arn().unwrap()));
}

#[tokio::test]
async fn decrypt_with_key_pending_deletion_is_invalid_state() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    kms.schedule_key_deletion()
        .key_id(md.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let res = kms.decrypt().ciphertext_blob(Blob::new(blob)).send().await;
    expect_error(res, "KMSInvalidStateException")
        .assert_message(&format!("{} is pending deletion.", md.arn().unwrap()));
}

#[tokio::test]
async fn encrypt_with_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .encrypt()
        .key_id(UNKNOWN_KEY_ID)
        .plaintext(Blob::new(MESSAGE))
        .send()
        .await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Key '{}' does not exist", key_arn(UNKNOWN_KEY_ID)));
}

#[tokio::test]
async fn encrypt_with_malformed_key_id_is_invalid_key_id() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .encrypt()
        .key_id("x")
        .plaintext(Blob::new(MESSAGE))
        .send()
        .await;
    expect_error(res, "NotFoundException").assert_message("Invalid keyId 'x'");
}

// -------------------------------------------------------------------------------------------
// Encryption context
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn encryption_context_round_trip() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let ctx = [("purpose", "test"), ("tenant", "42")];
    let blob = encrypt_ctx(&kms, md.key_id(), MESSAGE, &ctx).await;
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
}

#[tokio::test]
async fn decrypt_without_the_encryption_context_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt_ctx(&kms, md.key_id(), MESSAGE, &[("a", "b")]).await;
    let res = kms.decrypt().ciphertext_blob(Blob::new(blob)).send().await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn decrypt_with_changed_context_value_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt_ctx(&kms, md.key_id(), MESSAGE, &[("a", "b")]).await;
    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context(&[("a", "c")])))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn decrypt_with_extra_context_pair_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt_ctx(&kms, md.key_id(), MESSAGE, &[("a", "b")]).await;
    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context(&[("a", "b"), ("extra", "x")])))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn decrypt_with_context_when_none_was_used_is_invalid_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context(&[("a", "b")])))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
}

#[tokio::test]
async fn encryption_context_is_order_independent() {
    // The SDK's map has no order, so send the JSON by hand with the pairs in two orders.
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let enc_body = format!(
        r#"{{"KeyId":"{}","Plaintext":"{}","EncryptionContext":{{"a":"1","b":"2","c":"3"}}}}"#,
        md.key_id(),
        b64(MESSAGE)
    );
    let enc = srv.raw("TrentService.Encrypt", enc_body).send().await;
    assert_eq!(enc.status, 200, "{}", enc.text());
    let blob = enc.json()["CiphertextBlob"].as_str().unwrap().to_string();
    let dec_body =
        format!(r#"{{"CiphertextBlob":"{blob}","EncryptionContext":{{"c":"3","a":"1","b":"2"}}}}"#);
    let dec = srv.raw("TrentService.Decrypt", dec_body).send().await;
    assert_eq!(dec.status, 200, "{}", dec.text());
    assert_eq!(unb64(dec.json()["Plaintext"].as_str().unwrap()), MESSAGE);
}

#[tokio::test]
async fn encryption_context_with_unicode_round_trips() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let ctx = [("clé", "värde ✓"), ("path", "/a b/c")];
    let blob = encrypt_ctx(&kms, md.key_id(), MESSAGE, &ctx).await;
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), MESSAGE);
}

// -------------------------------------------------------------------------------------------
// GenerateDataKey
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn generate_data_key_aes_256() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .generate_data_key()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.key_id(), md.arn());
    let plaintext = resp.plaintext().unwrap().as_ref().to_vec();
    assert_eq!(plaintext.len(), 32);
    assert_eq!(resp.key_material_id(), md.current_key_material_id());
    let blob = resp.ciphertext_blob().unwrap().as_ref();
    assert_eq!(decrypt(&kms, blob).await, plaintext);
}

#[tokio::test]
async fn generate_data_key_aes_128() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .generate_data_key()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes128)
        .send()
        .await
        .unwrap();
    let plaintext = resp.plaintext().unwrap().as_ref().to_vec();
    assert_eq!(plaintext.len(), 16);
    let blob = resp.ciphertext_blob().unwrap().as_ref();
    assert_eq!(decrypt(&kms, blob).await, plaintext);
}

#[tokio::test]
async fn generate_data_key_with_number_of_bytes() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    for n in [1usize, 64, 1024] {
        let resp = kms
            .generate_data_key()
            .key_id(md.key_id())
            .number_of_bytes(n as i32)
            .send()
            .await
            .unwrap();
        let plaintext = resp.plaintext().unwrap().as_ref().to_vec();
        assert_eq!(plaintext.len(), n);
        let blob = resp.ciphertext_blob().unwrap().as_ref();
        assert_eq!(decrypt(&kms, blob).await, plaintext, "{n} bytes");
    }
}

#[tokio::test]
async fn generate_data_key_gives_fresh_keys() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let resp = kms
            .generate_data_key()
            .key_id(md.key_id())
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await
            .unwrap();
        assert!(seen.insert(resp.plaintext().unwrap().as_ref().to_vec()));
    }
}

#[tokio::test]
async fn generate_data_key_with_key_spec_and_number_of_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .generate_data_key()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .number_of_bytes(32)
        .send()
        .await;
    expect_error(res, "ValidationException");
}

#[tokio::test]
async fn generate_data_key_without_key_spec_or_number_of_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms.generate_data_key().key_id(md.key_id()).send().await;
    expect_error(res, "ValidationException");
}

#[tokio::test]
async fn generate_data_key_of_1025_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .generate_data_key()
        .key_id(md.key_id())
        .number_of_bytes(1025)
        .send()
        .await;
    expect_error(res, "ValidationException").assert_message(
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy \
         constraint: Member must have value less than or equal to 1024",
    );
}

#[tokio::test]
async fn generate_data_key_of_0_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .generate_data_key()
        .key_id(md.key_id())
        .number_of_bytes(0)
        .send()
        .await;
    expect_error(res, "ValidationException").assert_message_contains("numberOfBytes");
}

#[tokio::test]
async fn generate_data_key_binds_encryption_context() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let ctx = [("context-key", "context-value")];
    let resp = kms
        .generate_data_key()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    let blob = resp.ciphertext_blob().unwrap().as_ref().to_vec();
    let res = kms
        .decrypt()
        .key_id(md.key_id())
        .ciphertext_blob(Blob::new(blob.clone()))
        .send()
        .await;
    expect_error(res, "InvalidCiphertextException").assert_no_message();
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context(&ctx)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext(), resp.plaintext());
}

#[tokio::test]
async fn generate_data_key_with_disabled_key_is_disabled_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    let res = kms
        .generate_data_key()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await;
    expect_error(res, "DisabledException")
        .assert_message(&format!("{} is disabled.", md.arn().unwrap()));
}

#[tokio::test]
async fn generate_data_key_with_key_pending_deletion_is_invalid_state() {
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
        .generate_data_key()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await;
    expect_error(res, "KMSInvalidStateException")
        .assert_message(&format!("{} is pending deletion.", md.arn().unwrap()));
}

#[tokio::test]
async fn generate_data_key_with_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .generate_data_key()
        .key_id(UNKNOWN_KEY_ID)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

// -------------------------------------------------------------------------------------------
// GenerateDataKeyWithoutPlaintext
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn generate_data_key_without_plaintext_returns_only_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .generate_data_key_without_plaintext()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.key_id(), md.arn());
    let blob = resp.ciphertext_blob().expect("CiphertextBlob").as_ref();
    assert_eq!(decrypt(&kms, blob).await.len(), 32);
}

#[tokio::test]
async fn generate_data_key_without_plaintext_has_no_plaintext_on_the_wire() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let body = format!(r#"{{"KeyId":"{}","KeySpec":"AES_256"}}"#, md.key_id());
    let resp = srv
        .raw("TrentService.GenerateDataKeyWithoutPlaintext", body)
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let json = resp.json();
    assert!(json.get("Plaintext").is_none(), "{json}");
    assert!(json.get("CiphertextBlob").is_some(), "{json}");
}

#[tokio::test]
async fn generate_data_key_without_plaintext_with_number_of_bytes() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .generate_data_key_without_plaintext()
        .key_id(md.key_id())
        .number_of_bytes(64)
        .send()
        .await
        .unwrap();
    let blob = resp.ciphertext_blob().unwrap().as_ref();
    assert_eq!(decrypt(&kms, blob).await.len(), 64);
}

#[tokio::test]
async fn generate_data_key_without_plaintext_with_disabled_key_is_disabled_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    let res = kms
        .generate_data_key_without_plaintext()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await;
    expect_error(res, "DisabledException");
}

#[tokio::test]
async fn generate_data_key_without_plaintext_of_1025_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .generate_data_key_without_plaintext()
        .key_id(md.key_id())
        .number_of_bytes(1025)
        .send()
        .await;
    expect_error(res, "ValidationException").assert_message(
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy \
         constraint: Member must have value less than or equal to 1024",
    );
}

// -------------------------------------------------------------------------------------------
// GenerateRandom
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn generate_random_returns_requested_sizes() {
    let srv = TestServer::start();
    let kms = srv.client();
    for n in [1usize, 2, 32, 1000, 1024] {
        let resp = kms
            .generate_random()
            .number_of_bytes(n as i32)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.plaintext().unwrap().as_ref().len(), n);
    }
}

#[tokio::test]
async fn generate_random_differs_between_calls() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = kms
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let b = kms
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    assert_ne!(a.plaintext(), b.plaintext());
    assert_ne!(a.plaintext().unwrap().as_ref(), &[0u8; 32]);
}

#[tokio::test]
async fn generate_random_of_0_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms.generate_random().number_of_bytes(0).send().await;
    expect_error(res, "ValidationException").assert_message(
        "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy \
         constraint: Member must have value greater than or equal to 1",
    );
}

#[tokio::test]
async fn generate_random_of_1025_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms.generate_random().number_of_bytes(1025).send().await;
    expect_error(res, "ValidationException").assert_message(
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy \
         constraint: Member must have value less than or equal to 1024",
    );
}

#[tokio::test]
async fn generate_random_without_number_of_bytes_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms.generate_random().send().await;
    expect_error(res, "ValidationException").assert_message("NumberOfBytes is required.");
}

// -------------------------------------------------------------------------------------------
// DryRun
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn encrypt_dry_run_is_dry_run_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .encrypt()
        .key_id(md.key_id())
        .plaintext(Blob::new(MESSAGE))
        .dry_run(true)
        .send()
        .await;
    expect_error(res, "DryRunOperationException").assert_message(DRY_RUN_MESSAGE);
}

#[tokio::test]
async fn decrypt_dry_run_is_dry_run_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), MESSAGE).await;
    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .dry_run(true)
        .send()
        .await;
    expect_error(res, "DryRunOperationException").assert_message(DRY_RUN_MESSAGE);
}

#[tokio::test]
async fn generate_data_key_dry_run_is_dry_run_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .generate_data_key()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .dry_run(true)
        .send()
        .await;
    expect_error(res, "DryRunOperationException").assert_message(DRY_RUN_MESSAGE);
}

#[tokio::test]
async fn generate_data_key_without_plaintext_dry_run_is_dry_run_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .generate_data_key_without_plaintext()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .dry_run(true)
        .send()
        .await;
    expect_error(res, "DryRunOperationException").assert_message(DRY_RUN_MESSAGE);
}

#[tokio::test]
async fn dry_run_with_disabled_key_reports_the_real_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.disable_key().key_id(md.key_id()).send().await.unwrap();
    let res = kms
        .encrypt()
        .key_id(md.key_id())
        .plaintext(Blob::new(MESSAGE))
        .dry_run(true)
        .send()
        .await;
    expect_error(res, "DisabledException");
}

#[tokio::test]
async fn dry_run_false_is_a_normal_call() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .encrypt()
        .key_id(md.key_id())
        .plaintext(Blob::new(MESSAGE))
        .dry_run(false)
        .send()
        .await
        .unwrap();
    let blob = resp.ciphertext_blob().unwrap().as_ref();
    assert_eq!(decrypt(&kms, blob).await, MESSAGE);
}
