//! Sign and Verify: RSA and ECDSA signatures checked with RustCrypto.

use super::*;

// -------------------------------------------------------------------------------------------
// Sign / Verify
// -------------------------------------------------------------------------------------------

async fn sign(
    kms: &Client,
    key_id: &str,
    algorithm: &SigningAlgorithmSpec,
    message_type: MessageType,
    message: &[u8],
) -> Vec<u8> {
    let resp = kms
        .sign()
        .key_id(key_id)
        .signing_algorithm(algorithm.clone())
        .message_type(message_type)
        .message(Blob::new(message))
        .send()
        .await
        .unwrap_or_else(|e| panic!("Sign {algorithm:?}: {e:?}"));
    assert_eq!(resp.key_id(), Some(key_arn(key_id).as_str()));
    assert_eq!(resp.signing_algorithm(), Some(algorithm));
    resp.signature().unwrap().as_ref().to_vec()
}

async fn verify_in_kms(
    kms: &Client,
    key_id: &str,
    algorithm: &SigningAlgorithmSpec,
    message: &[u8],
    signature: &[u8],
) {
    let resp = kms
        .verify()
        .key_id(key_id)
        .signing_algorithm(algorithm.clone())
        .message(Blob::new(message))
        .signature(Blob::new(signature))
        .send()
        .await
        .expect("Verify");
    assert!(resp.signature_valid());
    let mut bad = signature.to_vec();
    let last = bad.len() - 2;
    bad[last] ^= 0x10;
    expect_error(
        kms.verify()
            .key_id(key_id)
            .signing_algorithm(algorithm.clone())
            .message(Blob::new(message))
            .signature(Blob::new(bad))
            .send()
            .await,
        "KMSInvalidSignatureException",
    )
    .assert_no_message();
}

fn digest(name: &str, message: &[u8]) -> Vec<u8> {
    match &name[name.len() - 3..] {
        "256" => sha2::Sha256::digest(message).to_vec(),
        "384" => sha2::Sha384::digest(message).to_vec(),
        _ => sha2::Sha512::digest(message).to_vec(),
    }
}

#[tokio::test]
async fn rsa_signatures_verify_with_rustcrypto() {
    let srv = TestServer::start();
    let kms = srv.client();
    let key = create(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let public =
        rsa::RsaPublicKey::from_public_key_der(&public_key_der(&kms, key.key_id()).await).unwrap();
    for algorithm in [
        SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        SigningAlgorithmSpec::RsassaPkcs1V15Sha384,
        SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
        SigningAlgorithmSpec::RsassaPssSha256,
        SigningAlgorithmSpec::RsassaPssSha384,
        SigningAlgorithmSpec::RsassaPssSha512,
    ] {
        let name = algorithm.as_str();
        let hashed = digest(name, MESSAGE);
        for (message_type, input) in [
            (MessageType::Raw, MESSAGE.to_vec()),
            (MessageType::Digest, hashed.clone()),
        ] {
            let signature = sign(&kms, key.key_id(), &algorithm, message_type, &input).await;
            assert_eq!(signature.len(), 256);
            let checked = match (name.contains("PSS"), &name[name.len() - 3..]) {
                (false, "256") => public.verify(
                    rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                    &hashed,
                    &signature,
                ),
                (false, "384") => public.verify(
                    rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    &hashed,
                    &signature,
                ),
                (false, _) => public.verify(
                    rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    &hashed,
                    &signature,
                ),
                (true, "256") => {
                    public.verify(rsa::Pss::new::<sha2::Sha256>(), &hashed, &signature)
                }
                (true, "384") => {
                    public.verify(rsa::Pss::new::<sha2::Sha384>(), &hashed, &signature)
                }
                (true, _) => public.verify(rsa::Pss::new::<sha2::Sha512>(), &hashed, &signature),
            };
            checked.unwrap_or_else(|e| panic!("{name} does not verify: {e}"));
            verify_in_kms(&kms, key.key_id(), &algorithm, MESSAGE, &signature).await;
        }
        // A digest of the wrong length.
        expect_error(
            kms.sign()
                .key_id(key.key_id())
                .signing_algorithm(algorithm.clone())
                .message_type(MessageType::Digest)
                .message(Blob::new(&b"thirty-three bytes, not a digest!"[..]))
                .send()
                .await,
            "ValidationException",
        )
        .assert_message(&format!("Digest is invalid length for algorithm {name}."));
    }
    // ECDSA on an RSA key.
    expect_error(
        kms.sign()
            .key_id(key.key_id())
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .message(Blob::new(MESSAGE))
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message("Algorithm ECDSA_SHA_256 is incompatible with key spec RSA_2048.");
}

#[tokio::test]
async fn ecdsa_signatures_are_der_and_verify_with_rustcrypto() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let srv = TestServer::start();
    let kms = srv.client();
    for (spec, algorithm) in [
        (KeySpec::EccNistP256, SigningAlgorithmSpec::EcdsaSha256),
        (KeySpec::EccNistP384, SigningAlgorithmSpec::EcdsaSha384),
        (KeySpec::EccNistP521, SigningAlgorithmSpec::EcdsaSha512),
        (KeySpec::EccSecgP256K1, SigningAlgorithmSpec::EcdsaSha256),
    ] {
        let key = create(&kms, spec.clone(), KeyUsageType::SignVerify).await;
        let spki = public_key_der(&kms, key.key_id()).await;
        let hashed = digest(algorithm.as_str(), MESSAGE);
        for (message_type, input) in [
            (MessageType::Raw, MESSAGE.to_vec()),
            (MessageType::Digest, hashed.clone()),
        ] {
            let sig = sign(&kms, key.key_id(), &algorithm, message_type, &input).await;
            let ok = match spec {
                KeySpec::EccNistP256 => {
                    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
                    vk.verify_prehash(&hashed, &p256::ecdsa::Signature::from_der(&sig).unwrap())
                }
                KeySpec::EccNistP384 => {
                    let vk = p384::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
                    vk.verify_prehash(&hashed, &p384::ecdsa::Signature::from_der(&sig).unwrap())
                }
                KeySpec::EccNistP521 => {
                    let pk = p521::PublicKey::from_public_key_der(&spki).unwrap();
                    let vk = p521::ecdsa::VerifyingKey::from_affine(*pk.as_affine()).unwrap();
                    vk.verify_prehash(&hashed, &p521::ecdsa::Signature::from_der(&sig).unwrap())
                }
                _ => {
                    // k256 accepts only low-S signatures (a Bitcoin rule); AWS, like the
                    // token, does not normalise S, so normalise before checking.
                    let vk = k256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
                    let parsed = k256::ecdsa::Signature::from_der(&sig).unwrap();
                    let low_s = parsed.normalize_s().unwrap_or(parsed);
                    vk.verify_prehash(&hashed, &low_s)
                }
            };
            ok.unwrap_or_else(|e| panic!("{spec:?} signature does not verify: {e}"));
            verify_in_kms(&kms, key.key_id(), &algorithm, MESSAGE, &sig).await;
        }
        // Garbage is an invalid signature, not an error of another kind.
        expect_error(
            kms.verify()
                .key_id(key.key_id())
                .signing_algorithm(algorithm.clone())
                .message(Blob::new(MESSAGE))
                .signature(Blob::new(b"not DER".to_vec()))
                .send()
                .await,
            "KMSInvalidSignatureException",
        );
    }
    // P-256 only signs with SHA-256.
    let key = create(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    expect_error(
        kms.sign()
            .key_id(key.key_id())
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha384)
            .message(Blob::new(MESSAGE))
            .send()
            .await,
        "InvalidKeyUsageException",
    )
    .assert_message("Algorithm ECDSA_SHA_384 is incompatible with key spec ECC_NIST_P256.");
}
