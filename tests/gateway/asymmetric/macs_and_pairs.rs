//! GenerateMac and VerifyMac, data key pairs, and key usage enforced everywhere.

use super::*;

// -------------------------------------------------------------------------------------------
// GenerateMac / VerifyMac
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn hmac_keys_generate_and_verify_macs() {
    let srv = TestServer::start();
    let kms = srv.client();
    for (spec, algorithm, len) in [
        (KeySpec::Hmac224, MacAlgorithmSpec::HmacSha224, 28),
        (KeySpec::Hmac256, MacAlgorithmSpec::HmacSha256, 32),
        (KeySpec::Hmac384, MacAlgorithmSpec::HmacSha384, 48),
        (KeySpec::Hmac512, MacAlgorithmSpec::HmacSha512, 64),
    ] {
        let key = create(&kms, spec.clone(), KeyUsageType::GenerateVerifyMac).await;
        let resp = kms
            .generate_mac()
            .key_id(key.key_id())
            .mac_algorithm(algorithm.clone())
            .message(Blob::new(MESSAGE))
            .send()
            .await
            .expect("GenerateMac");
        assert_eq!(resp.key_id(), Some(key_arn(key.key_id()).as_str()));
        assert_eq!(resp.mac_algorithm(), Some(&algorithm));
        let mac = resp.mac().unwrap().as_ref().to_vec();
        assert_eq!(mac.len(), len);
        let ok = kms
            .verify_mac()
            .key_id(key.key_id())
            .mac_algorithm(algorithm.clone())
            .message(Blob::new(MESSAGE))
            .mac(Blob::new(mac.clone()))
            .send()
            .await
            .expect("VerifyMac");
        assert!(ok.mac_valid());
        let mut bad = mac.clone();
        bad[0] ^= 1;
        for (message, mac) in [(MESSAGE.to_vec(), bad), (b"other".to_vec(), mac.clone())] {
            expect_error(
                kms.verify_mac()
                    .key_id(key.key_id())
                    .mac_algorithm(algorithm.clone())
                    .message(Blob::new(message))
                    .mac(Blob::new(mac))
                    .send()
                    .await,
                "KMSInvalidMacException",
            )
            .assert_no_message();
        }
        // Another key gives another MAC.
        let other = create(&kms, spec, KeyUsageType::GenerateVerifyMac).await;
        let other_mac = kms
            .generate_mac()
            .key_id(other.key_id())
            .mac_algorithm(algorithm)
            .message(Blob::new(MESSAGE))
            .send()
            .await
            .unwrap();
        assert_ne!(other_mac.mac().unwrap().as_ref(), mac.as_slice());
    }
    let key = create(&kms, KeySpec::Hmac224, KeyUsageType::GenerateVerifyMac).await;
    expect_error(
        kms.generate_mac()
            .key_id(key.key_id())
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(MESSAGE))
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message("Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_224.");
}

// -------------------------------------------------------------------------------------------
// Data key pairs
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn data_key_pairs_are_pkcs8_and_spki_and_decrypt() {
    let srv = TestServer::start();
    let kms = srv.client();
    let key = create_key(&kms).await;
    for spec in [
        DataKeyPairSpec::Rsa2048,
        DataKeyPairSpec::EccNistP256,
        DataKeyPairSpec::EccNistP384,
        DataKeyPairSpec::EccNistP521,
        DataKeyPairSpec::EccSecgP256K1,
    ] {
        let resp = kms
            .generate_data_key_pair()
            .key_id(key.key_id())
            .key_pair_spec(spec.clone())
            .encryption_context("purpose", "test")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GenerateDataKeyPair {spec:?}: {e:?}"));
        assert_eq!(resp.key_id(), Some(key_arn(key.key_id()).as_str()));
        assert_eq!(resp.key_pair_spec(), Some(&spec));
        let private = resp.private_key_plaintext().unwrap().as_ref().to_vec();
        let public = resp.public_key().unwrap().as_ref().to_vec();
        let derived = match spec {
            DataKeyPairSpec::Rsa2048 => {
                let sk = rsa::RsaPrivateKey::from_pkcs8_der(&private).expect("RSA PKCS#8");
                sk.validate().expect("consistent RSA key");
                rsa::RsaPublicKey::from(&sk)
                    .to_public_key_der()
                    .unwrap()
                    .into_vec()
            }
            DataKeyPairSpec::EccNistP256 => {
                use p256::pkcs8::EncodePublicKey;
                let sk = p256::SecretKey::from_pkcs8_der(&private).expect("P-256 PKCS#8");
                sk.public_key().to_public_key_der().unwrap().into_vec()
            }
            DataKeyPairSpec::EccNistP384 => {
                use p384::pkcs8::EncodePublicKey;
                let sk = p384::SecretKey::from_pkcs8_der(&private).expect("P-384 PKCS#8");
                sk.public_key().to_public_key_der().unwrap().into_vec()
            }
            DataKeyPairSpec::EccNistP521 => {
                use p521::pkcs8::EncodePublicKey;
                let sk = p521::SecretKey::from_pkcs8_der(&private).expect("P-521 PKCS#8");
                sk.public_key().to_public_key_der().unwrap().into_vec()
            }
            _ => {
                use k256::pkcs8::EncodePublicKey;
                let sk = k256::SecretKey::from_pkcs8_der(&private).expect("secp256k1 PKCS#8");
                sk.public_key().to_public_key_der().unwrap().into_vec()
            }
        };
        assert_eq!(derived, public, "{spec:?}: private and public halves match");
        let opened = kms
            .decrypt()
            .ciphertext_blob(resp.private_key_ciphertext_blob().unwrap().clone())
            .encryption_context("purpose", "test")
            .send()
            .await
            .expect("Decrypt of the private key blob");
        assert_eq!(opened.plaintext().unwrap().as_ref(), private.as_slice());
    }

    let resp = kms
        .generate_data_key_pair_without_plaintext()
        .key_id(key.key_id())
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .send()
        .await
        .expect("GenerateDataKeyPairWithoutPlaintext");
    let private = decrypt(&kms, resp.private_key_ciphertext_blob().unwrap().as_ref()).await;
    let sk = p256::SecretKey::from_pkcs8_der(&private).unwrap();
    {
        use p256::pkcs8::EncodePublicKey;
        assert_eq!(
            sk.public_key().to_public_key_der().unwrap().as_bytes(),
            resp.public_key().unwrap().as_ref()
        );
    }

    // Only a symmetric encryption key can protect a data key pair.
    let rsa_key = create(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    expect_error(
        kms.generate_data_key_pair()
            .key_id(rsa_key.key_id())
            .key_pair_spec(DataKeyPairSpec::EccNistP256)
            .send()
            .await,
        "InvalidKeyUsageException",
    );
}

// -------------------------------------------------------------------------------------------
// Key usage everywhere
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn key_usage_is_enforced_everywhere() {
    let srv = TestServer::start();
    let kms = srv.client();
    let signer = create(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let mac_key = create(&kms, KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac).await;
    let sym = create_key(&kms).await;
    let signer_arn = key_arn(signer.key_id());
    let mac_arn = key_arn(mac_key.key_id());

    expect_error(
        kms.encrypt()
            .key_id(signer.key_id())
            .plaintext(Blob::new(MESSAGE))
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message(&format!(
        "{signer_arn} key usage is SIGN_VERIFY which is not valid for Encrypt."
    ));
    expect_error(
        kms.sign()
            .key_id(mac_key.key_id())
            .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
            .message(Blob::new(MESSAGE))
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message(&format!(
        "{mac_arn} key usage is GENERATE_VERIFY_MAC which is not valid for Sign."
    ));
    expect_error(
        kms.generate_mac()
            .key_id(signer.key_id())
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(MESSAGE))
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message(&format!(
        "{signer_arn} key usage is SIGN_VERIFY which is not valid for GenerateMac."
    ));
    expect_error(
        kms.verify()
            .key_id(sym.key_id())
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .message(Blob::new(MESSAGE))
            .signature(Blob::new(b"x".to_vec()))
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message(&format!(
        "{} key usage is ENCRYPT_DECRYPT which is not valid for Verify.",
        key_arn(sym.key_id())
    ));
    // As ReEncrypt destination and source.
    let blob = encrypt(&kms, sym.key_id(), MESSAGE).await;
    for destination in [signer.key_id(), mac_key.key_id()] {
        expect_error(
            kms.re_encrypt()
                .ciphertext_blob(Blob::new(blob.clone()))
                .destination_key_id(destination)
                .send()
                .await,
            "InvalidKeyUsageException",
        )
        .assert_message_contains("which is not valid for ReEncrypt.");
    }
    // A key of another usage named as the source of a symmetric ciphertext is not the key
    // that encrypted it: IncorrectKeyException, as recorded against AWS
    // (test_re_encrypt_incorrect_source_key, test_error_messaging_for_invalid_keys).
    let incorrect =
        "The key ID in the request does not identify a CMK that can perform this operation.";
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .source_key_id(signer.key_id())
            .destination_key_id(sym.key_id())
            .send()
            .await,
        "IncorrectKeyException",
    )
    .assert_message(incorrect);
    expect_error(
        kms.decrypt()
            .ciphertext_blob(Blob::new(blob))
            .key_id(mac_key.key_id())
            .send()
            .await,
        "IncorrectKeyException",
    )
    .assert_message(incorrect);
    // Disabled keys.
    kms.disable_key()
        .key_id(mac_key.key_id())
        .send()
        .await
        .unwrap();
    expect_error(
        kms.generate_mac()
            .key_id(mac_key.key_id())
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(MESSAGE))
            .send()
            .await,
        "DisabledException",
    )
    .assert_message(&format!("{mac_arn} is disabled."));
}
