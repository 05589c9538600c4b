//! Asymmetric and HMAC keys through `aws-sdk-kms`: key specs, GetPublicKey, RSA-OAEP,
//! ReEncrypt directions, Sign/Verify, MACs and data key pairs.
//!
//! Everything the token produces is checked with RustCrypto, a library that is not the HSM:
//! signatures verify against the GetPublicKey key, ciphertexts made offline decrypt through
//! the gateway, data key pairs parse and match. Where the token lacks a mechanism (SoftHSM
//! 2.6.1 has no OAEP with SHA-256 and no AES-GCM key wrapping), the test accepts either a
//! working round trip or the gateway's UnsupportedOperationException that names it.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeyPairSpec, EncryptionAlgorithmSpec, KeySpec, KeyUsageType, MacAlgorithmSpec, MessageType,
    SigningAlgorithmSpec,
};
use aws_sdk_kms::Client;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use sha2::Digest;

const MESSAGE: &[u8] = b"test message 123 !%$@ 1234567890";

async fn create(
    kms: &Client,
    spec: KeySpec,
    usage: KeyUsageType,
) -> aws_sdk_kms::types::KeyMetadata {
    kms.create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("KeyMetadata")
}

async fn public_key_der(kms: &Client, key_id: &str) -> Vec<u8> {
    kms.get_public_key()
        .key_id(key_id)
        .send()
        .await
        .expect("GetPublicKey")
        .public_key
        .expect("PublicKey")
        .into_inner()
}

fn strs(list: &[impl AsRef<str>]) -> Vec<String> {
    list.iter().map(|s| s.as_ref().to_string()).collect()
}

/// A call the token may not support: `Ok` when it worked, `Err` after checking it failed
/// with UnsupportedOperationException naming `mechanism`.
fn supported_or_named<T: std::fmt::Debug, E>(
    result: Result<T, aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>>,
    mechanism: &str,
) -> Option<T>
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let err = expect_error::<T, E>(Err(e), "UnsupportedOperationException");
            err.assert_message_contains(mechanism);
            None
        }
    }
}

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
