//! Asymmetric and HMAC key specs: CreateKey, DescribeKey, rotation and GetPublicKey.

use super::*;

// -------------------------------------------------------------------------------------------
// CreateKey, DescribeKey, rotation
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn key_specs_show_their_algorithms() {
    let srv = TestServer::start();
    let kms = srv.client();

    let rsa_enc = create(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    assert_eq!(
        strs(rsa_enc.encryption_algorithms()),
        ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    );
    assert!(rsa_enc.signing_algorithms().is_empty());
    assert!(rsa_enc.current_key_material_id().is_none());

    let rsa_sign = create(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    assert_eq!(
        strs(rsa_sign.signing_algorithms()),
        [
            "RSASSA_PKCS1_V1_5_SHA_256",
            "RSASSA_PKCS1_V1_5_SHA_384",
            "RSASSA_PKCS1_V1_5_SHA_512",
            "RSASSA_PSS_SHA_256",
            "RSASSA_PSS_SHA_384",
            "RSASSA_PSS_SHA_512"
        ]
    );
    assert!(rsa_sign.encryption_algorithms().is_empty());

    for (spec, algorithm) in [
        (KeySpec::EccNistP256, "ECDSA_SHA_256"),
        (KeySpec::EccNistP384, "ECDSA_SHA_384"),
        (KeySpec::EccNistP521, "ECDSA_SHA_512"),
        (KeySpec::EccSecgP256K1, "ECDSA_SHA_256"),
    ] {
        let md = create(&kms, spec.clone(), KeyUsageType::SignVerify).await;
        assert_eq!(md.key_spec(), Some(&spec));
        assert_eq!(strs(md.signing_algorithms()), [algorithm]);
        let described = describe(&kms, md.key_id()).await;
        assert_eq!(strs(described.signing_algorithms()), [algorithm]);
        assert!(described.current_key_material_id().is_none());
    }

    for (spec, algorithm) in [
        (KeySpec::Hmac224, "HMAC_SHA_224"),
        (KeySpec::Hmac256, "HMAC_SHA_256"),
        (KeySpec::Hmac384, "HMAC_SHA_384"),
        (KeySpec::Hmac512, "HMAC_SHA_512"),
    ] {
        let md = create(&kms, spec, KeyUsageType::GenerateVerifyMac).await;
        assert_eq!(strs(md.mac_algorithms()), [algorithm]);
        assert!(md.encryption_algorithms().is_empty() && md.signing_algorithms().is_empty());
        assert!(md.current_key_material_id().is_none());
    }

    // Spec and usage must fit together.
    for (spec, usage) in [
        (KeySpec::EccNistP256, KeyUsageType::EncryptDecrypt),
        (KeySpec::Hmac256, KeyUsageType::SignVerify),
        (KeySpec::SymmetricDefault, KeyUsageType::SignVerify),
        (KeySpec::Rsa2048, KeyUsageType::GenerateVerifyMac),
    ] {
        expect_error(
            kms.create_key()
                .key_spec(spec)
                .key_usage(usage)
                .send()
                .await,
            "ValidationException",
        );
    }

    // Rotation of asymmetric keys: unsupported (empty message), after the Disabled check.
    expect_error(
        kms.rotate_key_on_demand()
            .key_id(rsa_enc.key_id())
            .send()
            .await,
        "UnsupportedOperationException",
    )
    .assert_no_message();
    kms.disable_key()
        .key_id(rsa_sign.key_id())
        .send()
        .await
        .expect("DisableKey");
    expect_error(
        kms.rotate_key_on_demand()
            .key_id(rsa_sign.key_id())
            .send()
            .await,
        "DisabledException",
    )
    .assert_message(&format!("{} is disabled.", key_arn(rsa_sign.key_id())));
}

// -------------------------------------------------------------------------------------------
// GetPublicKey
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_public_key_returns_spki_that_rustcrypto_parses() {
    let srv = TestServer::start();
    let kms = srv.client();

    let rsa_key = create(&kms, KeySpec::Rsa3072, KeyUsageType::EncryptDecrypt).await;
    let resp = kms
        .get_public_key()
        .key_id(rsa_key.key_id())
        .send()
        .await
        .expect("GetPublicKey");
    assert_eq!(resp.key_id(), Some(key_arn(rsa_key.key_id()).as_str()));
    assert_eq!(resp.key_spec(), Some(&KeySpec::Rsa3072));
    assert_eq!(resp.key_usage(), Some(&KeyUsageType::EncryptDecrypt));
    assert_eq!(
        strs(resp.encryption_algorithms()),
        ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    );
    assert!(resp.signing_algorithms().is_empty());
    let der = resp.public_key().expect("PublicKey").as_ref().to_vec();
    let public = rsa::RsaPublicKey::from_public_key_der(&der).expect("RSA SPKI");
    assert_eq!(public.size(), 384);
    assert_eq!(public.e(), &rsa::BigUint::from(65537u32));
    // Canonical DER: re-encoding gives the same bytes.
    assert_eq!(
        public.to_public_key_der().unwrap().as_bytes(),
        der.as_slice()
    );

    let p256_key = create(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    p256::PublicKey::from_public_key_der(&public_key_der(&kms, p256_key.key_id()).await)
        .expect("P-256 SPKI");
    let p384_key = create(&kms, KeySpec::EccNistP384, KeyUsageType::SignVerify).await;
    p384::PublicKey::from_public_key_der(&public_key_der(&kms, p384_key.key_id()).await)
        .expect("P-384 SPKI");
    let p521_key = create(&kms, KeySpec::EccNistP521, KeyUsageType::SignVerify).await;
    p521::PublicKey::from_public_key_der(&public_key_der(&kms, p521_key.key_id()).await)
        .expect("P-521 SPKI");
    let k256_key = create(&kms, KeySpec::EccSecgP256K1, KeyUsageType::SignVerify).await;
    k256::PublicKey::from_public_key_der(&public_key_der(&kms, k256_key.key_id()).await)
        .expect("secp256k1 SPKI");

    // Symmetric and HMAC keys have no public key.
    let sym = create_key(&kms).await;
    expect_error(
        kms.get_public_key().key_id(sym.key_id()).send().await,
        "UnsupportedOperationException",
    );
    let hmac = create(&kms, KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac).await;
    expect_error(
        kms.get_public_key().key_id(hmac.key_id()).send().await,
        "UnsupportedOperationException",
    );
}
