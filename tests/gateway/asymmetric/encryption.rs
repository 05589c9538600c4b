//! RSA-OAEP Encrypt and Decrypt, and ReEncrypt with RSA keys on either side.

use super::*;

// -------------------------------------------------------------------------------------------
// RSA-OAEP Encrypt / Decrypt
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn rsa_oaep_round_trips_and_decrypts_offline_ciphertext() {
    let srv = TestServer::start();
    let kms = srv.client();
    let key = create(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let public =
        rsa::RsaPublicKey::from_public_key_der(&public_key_der(&kms, key.key_id()).await).unwrap();
    let sha1 = EncryptionAlgorithmSpec::RsaesOaepSha1;

    let enc = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new(MESSAGE))
        .encryption_algorithm(sha1.clone())
        .send()
        .await
        .expect("Encrypt");
    assert_eq!(enc.encryption_algorithm(), Some(&sha1));
    let blob = enc.ciphertext_blob().unwrap().as_ref().to_vec();
    assert_eq!(blob.len(), 256, "plain OAEP of the modulus length");
    let dec = kms
        .decrypt()
        .key_id(key.key_id())
        .ciphertext_blob(Blob::new(blob.clone()))
        .encryption_algorithm(sha1.clone())
        .send()
        .await
        .expect("Decrypt");
    assert_eq!(dec.plaintext().unwrap().as_ref(), MESSAGE);
    assert_eq!(dec.encryption_algorithm(), Some(&sha1));
    assert!(dec.key_material_id().is_none());

    // Randomised.
    let again = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new(MESSAGE))
        .encryption_algorithm(sha1.clone())
        .send()
        .await
        .unwrap();
    assert_ne!(again.ciphertext_blob().unwrap().as_ref(), blob.as_slice());

    // Made offline with RustCrypto, decrypted in the token.
    let offline = public
        .encrypt(
            &mut rsa::rand_core::OsRng,
            rsa::Oaep::new::<sha1::Sha1>(),
            MESSAGE,
        )
        .unwrap();
    let dec = kms
        .decrypt()
        .key_id(key.key_id())
        .ciphertext_blob(Blob::new(offline))
        .encryption_algorithm(sha1.clone())
        .send()
        .await
        .expect("Decrypt of an offline ciphertext");
    assert_eq!(dec.plaintext().unwrap().as_ref(), MESSAGE);

    // SHA-256: works where the token can, otherwise named.
    let offline256 = public
        .encrypt(
            &mut rsa::rand_core::OsRng,
            rsa::Oaep::new::<sha2::Sha256>(),
            MESSAGE,
        )
        .unwrap();
    if let Some(dec) = supported_or_named(
        kms.decrypt()
            .key_id(key.key_id())
            .ciphertext_blob(Blob::new(offline256))
            .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
            .send()
            .await,
        "CKM_RSA_PKCS_OAEP with SHA-256",
    ) {
        assert_eq!(dec.plaintext().unwrap().as_ref(), MESSAGE);
    }

    // Size limits with AWS's message.
    expect_error(
        kms.encrypt()
            .key_id(key.key_id())
            .plaintext(Blob::new(vec![7u8; 215]))
            .encryption_algorithm(sha1.clone())
            .send()
            .await,
        "ValidationException",
    )
    .assert_message(
        "Algorithm RSAES_OAEP_SHA_1 and key spec RSA_2048 cannot encrypt data larger than 214 bytes.",
    );
    expect_error(
        kms.encrypt()
            .key_id(key.key_id())
            .plaintext(Blob::new(vec![7u8; 191]))
            .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
            .send()
            .await,
        "ValidationException",
    )
    .assert_message(
        "Algorithm RSAES_OAEP_SHA_256 and key spec RSA_2048 cannot encrypt data larger than 190 bytes.",
    );
    kms.encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new(vec![7u8; 214]))
        .encryption_algorithm(sha1.clone())
        .send()
        .await
        .expect("214 bytes fit");

    // Asymmetric algorithms take no encryption context: refused, not ignored.
    expect_error(
        kms.encrypt()
            .key_id(key.key_id())
            .plaintext(Blob::new(MESSAGE))
            .encryption_algorithm(sha1.clone())
            .encryption_context("purpose", "test")
            .send()
            .await,
        "ValidationException",
    )
    .assert_message("EncryptionContext is not supported with asymmetric KMS keys.");

    // No algorithm: SYMMETRIC_DEFAULT does not fit an RSA key.
    expect_error(
        kms.encrypt()
            .key_id(key.key_id())
            .plaintext(Blob::new(MESSAGE))
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message("Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048.");

    // Without KeyId an RSA ciphertext cannot be found; with another key it does not open.
    expect_error(
        kms.decrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .encryption_algorithm(sha1.clone())
            .send()
            .await,
        "InvalidCiphertextException",
    );
    let other = create(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    expect_error(
        kms.decrypt()
            .key_id(other.key_id())
            .ciphertext_blob(Blob::new(blob.clone()))
            .encryption_algorithm(sha1.clone())
            .send()
            .await,
        "InvalidCiphertextException",
    )
    .assert_no_message();
    let mut tampered = blob.clone();
    tampered[100] ^= 1;
    expect_error(
        kms.decrypt()
            .key_id(key.key_id())
            .ciphertext_blob(Blob::new(tampered))
            .encryption_algorithm(sha1)
            .send()
            .await,
        "InvalidCiphertextException",
    );
}

// -------------------------------------------------------------------------------------------
// ReEncrypt with RSA keys
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn reencrypt_directions_with_rsa_keys() {
    let srv = TestServer::start();
    let kms = srv.client();
    let src = create(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let dst = create(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let sym = create_key(&kms).await;
    let sha1 = EncryptionAlgorithmSpec::RsaesOaepSha1;
    let blob = kms
        .encrypt()
        .key_id(src.key_id())
        .plaintext(Blob::new(MESSAGE))
        .encryption_algorithm(sha1.clone())
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    // RSA -> RSA in the token.
    let resp = kms
        .re_encrypt()
        .ciphertext_blob(blob.clone())
        .source_key_id(src.key_id())
        .source_encryption_algorithm(sha1.clone())
        .destination_key_id(dst.key_id())
        .destination_encryption_algorithm(sha1.clone())
        .send()
        .await
        .expect("ReEncrypt RSA -> RSA");
    assert_eq!(resp.source_key_id(), Some(key_arn(src.key_id()).as_str()));
    assert_eq!(resp.key_id(), Some(key_arn(dst.key_id()).as_str()));
    assert!(
        resp.source_key_material_id().is_none() && resp.destination_key_material_id().is_none()
    );
    let out = resp.ciphertext_blob().unwrap().as_ref().to_vec();
    assert_eq!(out.len(), 256);
    let dec = kms
        .decrypt()
        .key_id(dst.key_id())
        .ciphertext_blob(Blob::new(out))
        .encryption_algorithm(sha1.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), MESSAGE);

    // A wrong source key does not open it.
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(blob.clone())
            .source_key_id(dst.key_id())
            .source_encryption_algorithm(sha1.clone())
            .destination_key_id(dst.key_id())
            .destination_encryption_algorithm(sha1.clone())
            .send()
            .await,
        "InvalidCiphertextException",
    );
    // Missing source algorithm, missing SourceKeyId.
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(blob.clone())
            .source_key_id(src.key_id())
            .destination_key_id(dst.key_id())
            .destination_encryption_algorithm(sha1.clone())
            .send()
            .await,
        "InvalidKeyUsageException",
    );
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(blob.clone())
            .source_encryption_algorithm(sha1.clone())
            .destination_key_id(dst.key_id())
            .destination_encryption_algorithm(sha1.clone())
            .send()
            .await,
        "InvalidCiphertextException",
    );

    // RSA -> symmetric and symmetric -> RSA: in the token where it can, else named.
    if let Some(resp) = supported_or_named(
        kms.re_encrypt()
            .ciphertext_blob(blob.clone())
            .source_key_id(src.key_id())
            .source_encryption_algorithm(sha1.clone())
            .destination_key_id(sym.key_id())
            .send()
            .await,
        "CKM_AES_GCM",
    ) {
        assert_eq!(
            decrypt(&kms, resp.ciphertext_blob().unwrap().as_ref()).await,
            MESSAGE
        );
    }
    let sym_blob = encrypt(&kms, sym.key_id(), MESSAGE).await;
    if let Some(resp) = supported_or_named(
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(sym_blob.clone()))
            .destination_key_id(dst.key_id())
            .destination_encryption_algorithm(sha1.clone())
            .send()
            .await,
        "CKM_AES_GCM",
    ) {
        assert_eq!(resp.ciphertext_blob().unwrap().as_ref().len(), 256);
    }
    // Too large for the destination: AWS's message, before any capability question.
    let big = encrypt(&kms, sym.key_id(), &[1u8; 215]).await;
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(big))
            .destination_key_id(dst.key_id())
            .destination_encryption_algorithm(sha1.clone())
            .send()
            .await,
        "ValidationException",
    )
    .assert_message(
        "Algorithm RSAES_OAEP_SHA_1 and key spec RSA_2048 cannot encrypt data larger than 214 bytes.",
    );
    // No destination algorithm for an RSA destination.
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(sym_blob))
            .destination_key_id(dst.key_id())
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message("Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048.");
}
