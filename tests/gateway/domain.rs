//! Domain-key mode (`hsm.key_storage = "domain"`) through the real gateway and
//! `aws-sdk-kms`, on a fresh embedded SoftHSM2 token (the gateway makes the domain key on
//! first start): every cryptographic operation, a restart with an empty cache, a domain-key
//! rotation by `p11kms domain rotate`, the cache metrics with a tiny capacity, and a second
//! gateway process on the same SQLite file and token.

use std::process::Command;

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeySpec, EncryptionAlgorithmSpec, KeySpec, KeyUsageType, MacAlgorithmSpec, MessageType,
    SigningAlgorithmSpec,
};
use aws_sdk_kms::Client;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;

const DOMAIN: &[(&str, &str)] = &[
    ("P11KMS_KEY_STORAGE", "domain"),
    // No planned recycle: the metrics test counts every miss.
    ("P11KMS_HSM_RECYCLE_AFTER", "0"),
];

async fn create(kms: &Client, spec: KeySpec, usage: KeyUsageType) -> String {
    kms.create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("KeyMetadata")
        .key_id
}

async fn metrics(srv: &TestServer) -> String {
    plain_http::get(&format!("{}/metrics", srv.endpoint()))
        .await
        .expect("GET /metrics")
        .text()
}

fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.starts_with(' ').then(|| rest.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

/// Runs `p11kms domain <action>` on a gateway's data directory; its standard output.
fn domain_command(srv: &TestServer, action: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"))
        .args(["domain", action])
        .env("P11KMS_DATA_DIR", srv.data_dir())
        .env("P11KMS_LOG", "warn")
        .current_dir(srv.data_dir())
        .output()
        .expect("run p11kms domain");
    assert!(
        out.status.success(),
        "p11kms domain {action} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Keys of every kind, and what each produced, to check again later.
struct Fixture {
    aes: String,
    aes_other: String,
    rsa_enc: String,
    rsa_sign: String,
    ec: String,
    hmac: String,
    ciphertext: Vec<u8>,
    rsa_ciphertext: Vec<u8>,
    ec_public: Vec<u8>,
    mac: Vec<u8>,
}

const MESSAGE: &[u8] = b"domain mode keeps keys off the token";

async fn make_fixture(kms: &Client) -> Fixture {
    let aes = create(kms, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let aes_other = create(kms, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let rsa_enc = create(kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let rsa_sign = create(kms, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let ec = create(kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let hmac = create(kms, KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac).await;
    let ciphertext = encrypt_ctx(kms, &aes, MESSAGE, &[("purpose", "domain")]).await;
    let rsa_ciphertext = kms
        .encrypt()
        .key_id(&rsa_enc)
        .plaintext(Blob::new(MESSAGE))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .expect("RSA Encrypt")
        .ciphertext_blob
        .expect("blob")
        .into_inner();
    let ec_public = kms
        .get_public_key()
        .key_id(&ec)
        .send()
        .await
        .expect("GetPublicKey")
        .public_key
        .expect("public key")
        .into_inner();
    let mac = kms
        .generate_mac()
        .key_id(&hmac)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(MESSAGE))
        .send()
        .await
        .expect("GenerateMac")
        .mac
        .expect("mac")
        .into_inner();
    Fixture {
        aes,
        aes_other,
        rsa_enc,
        rsa_sign,
        ec,
        hmac,
        ciphertext,
        rsa_ciphertext,
        ec_public,
        mac,
    }
}

/// Every operation of every key of `f`, old outputs included.
async fn check_fixture(kms: &Client, f: &Fixture) {
    // Symmetric: old ciphertext, a fresh one, ReEncrypt to the other key and back.
    let ctx = context(&[("purpose", "domain")]);
    let plain = kms
        .decrypt()
        .ciphertext_blob(Blob::new(f.ciphertext.clone()))
        .set_encryption_context(Some(ctx.clone()))
        .send()
        .await
        .expect("Decrypt old ciphertext")
        .plaintext
        .expect("plaintext")
        .into_inner();
    assert_eq!(plain, MESSAGE);
    let fresh = encrypt(kms, &f.aes, b"fresh").await;
    assert_eq!(decrypt(kms, &fresh).await, b"fresh");
    let moved = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(f.ciphertext.clone()))
        .set_source_encryption_context(Some(ctx))
        .destination_key_id(&f.aes_other)
        .send()
        .await
        .expect("ReEncrypt")
        .ciphertext_blob
        .expect("blob")
        .into_inner();
    assert_eq!(decrypt(kms, &moved).await, MESSAGE);
    let data_key = kms
        .generate_data_key()
        .key_id(&f.aes)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .expect("GenerateDataKey");
    let wrapped = data_key.ciphertext_blob.expect("blob").into_inner();
    assert_eq!(
        decrypt(kms, &wrapped).await,
        data_key.plaintext.expect("plaintext").into_inner()
    );
    let without = kms
        .generate_data_key_without_plaintext()
        .key_id(&f.aes)
        .number_of_bytes(32)
        .send()
        .await
        .expect("GenerateDataKeyWithoutPlaintext")
        .ciphertext_blob
        .expect("blob")
        .into_inner();
    assert_eq!(decrypt(kms, &without).await.len(), 32);

    // RSA-OAEP: the old ciphertext decrypts in the token.
    let rsa_plain = kms
        .decrypt()
        .key_id(&f.rsa_enc)
        .ciphertext_blob(Blob::new(f.rsa_ciphertext.clone()))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .expect("RSA Decrypt")
        .plaintext
        .expect("plaintext")
        .into_inner();
    assert_eq!(rsa_plain, MESSAGE);

    // Signatures: through the gateway, and ECDSA also against the public key from before.
    for (key, algorithm) in [
        (&f.rsa_sign, SigningAlgorithmSpec::RsassaPssSha256),
        (&f.ec, SigningAlgorithmSpec::EcdsaSha256),
    ] {
        let signature = kms
            .sign()
            .key_id(key)
            .message(Blob::new(MESSAGE))
            .message_type(MessageType::Raw)
            .signing_algorithm(algorithm.clone())
            .send()
            .await
            .expect("Sign")
            .signature
            .expect("signature")
            .into_inner();
        let valid = kms
            .verify()
            .key_id(key)
            .message(Blob::new(MESSAGE))
            .message_type(MessageType::Raw)
            .signing_algorithm(algorithm.clone())
            .signature(Blob::new(signature.clone()))
            .send()
            .await
            .expect("Verify")
            .signature_valid;
        assert!(valid, "{algorithm:?} signature does not verify");
        if algorithm == SigningAlgorithmSpec::EcdsaSha256 {
            let public = p256::ecdsa::VerifyingKey::from_public_key_der(&f.ec_public).unwrap();
            let signature = p256::ecdsa::Signature::from_der(&signature).unwrap();
            public
                .verify(MESSAGE, &signature)
                .expect("the signature verifies under the key's original public half");
        }
    }

    // HMAC: the old MAC verifies, and a new one is the same (same key).
    let mac = kms
        .generate_mac()
        .key_id(&f.hmac)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(MESSAGE))
        .send()
        .await
        .expect("GenerateMac")
        .mac
        .expect("mac")
        .into_inner();
    assert_eq!(mac, f.mac);
    let valid = kms
        .verify_mac()
        .key_id(&f.hmac)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(MESSAGE))
        .mac(Blob::new(f.mac.clone()))
        .send()
        .await
        .expect("VerifyMac")
        .mac_valid;
    assert!(valid);
}

#[tokio::test]
async fn every_operation_works_across_restart_and_domain_key_rotation() {
    let mut srv = TestServer::start_with(DOMAIN);
    assert!(srv.log_text().contains("created the domain key"));
    let kms = srv.client();
    let f = make_fixture(&kms).await;
    check_fixture(&kms, &f).await;

    // Key rotation makes new wrapped material; the old one still decrypts.
    kms.rotate_key_on_demand()
        .key_id(&f.aes)
        .send()
        .await
        .expect("RotateKeyOnDemand");
    let after_rotation = encrypt(&kms, &f.aes, b"new material").await;
    assert_eq!(decrypt(&kms, &after_rotation).await, b"new material");
    check_fixture(&kms, &f).await;

    // A restart starts with an empty cache: every key is unwrapped again from the store.
    srv.restart();
    let kms = srv.client();
    check_fixture(&kms, &f).await;
    assert_eq!(decrypt(&kms, &after_rotation).await, b"new material");

    // Domain-key rotation: every blob is rewrapped under a new domain key.
    let report = domain_command(&srv, "rotate");
    let rewrapped: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("rewrapped "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {report:?}"));
    // Two AES keys (one with two materials), two RSA keys, one EC key, one HMAC key.
    assert_eq!(rewrapped, 7, "{report}");
    srv.restart();
    let kms = srv.client();
    check_fixture(&kms, &f).await;
    assert_eq!(decrypt(&kms, &after_rotation).await, b"new material");
    // New keys are wrapped under the new domain key and work too.
    let g = make_fixture(&kms).await;
    check_fixture(&kms, &g).await;
    // A second rotation retires the first rotation's key.
    let report = domain_command(&srv, "rotate");
    // The first fixture's seven materials and the second's six.
    assert!(report.contains("rewrapped 13"), "{report}");
    srv.restart();
    let kms = srv.client();
    check_fixture(&kms, &f).await;
    check_fixture(&kms, &g).await;
}

#[tokio::test]
async fn the_cache_counts_hits_misses_and_evictions_within_its_capacity() {
    let mut env = DOMAIN.to_vec();
    env.push(("P11KMS_DOMAIN_CACHE_CAPACITY", "2"));
    let srv = TestServer::start_with(&env);
    let kms = srv.client();
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(
            create(
                &kms,
                KeySpec::SymmetricDefault,
                KeyUsageType::EncryptDecrypt,
            )
            .await,
        );
    }
    let before = metrics(&srv).await;
    assert_eq!(sample(&before, "p11kms_domain_cache_capacity"), 2);
    assert_eq!(sample(&before, "p11kms_domain_cache_objects"), 0);
    // A (miss), A (hit), B (miss), C (miss, evicts A), A (miss, evicts B).
    for i in [0, 0, 1, 2, 0] {
        encrypt(&kms, &keys[i], b"x").await;
    }
    let after = metrics(&srv).await;
    let delta = |series| sample(&after, series) - sample(&before, series);
    assert_eq!(delta("p11kms_domain_cache_misses_total"), 4, "{after}");
    assert_eq!(delta("p11kms_domain_cache_hits_total"), 1);
    assert_eq!(delta("p11kms_domain_cache_evictions_total"), 2);
    assert_eq!(sample(&after, "p11kms_domain_cache_objects"), 2);
    // Readiness looks for the domain key the cache used.
    let ready = plain_http::get(&format!("{}/readyz", srv.endpoint()))
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status, 200);
}

#[tokio::test]
async fn a_second_gateway_on_the_same_store_and_token_serves_the_first_ones_keys() {
    let first = TestServer::start_with(DOMAIN);
    let kms_a = first.client();
    let f = make_fixture(&kms_a).await;
    let data_dir = first.data_dir().display().to_string();
    let mut env = DOMAIN.to_vec();
    env.push(("P11KMS_DATA_DIR", &data_dir));
    let second = TestServer::start_with(&env);
    let kms_b = second.client();
    check_fixture(&kms_b, &f).await;
    // And the other way round: a key made by the second gateway works on the first.
    let g = make_fixture(&kms_b).await;
    check_fixture(&kms_a, &g).await;
}

#[tokio::test]
async fn a_store_without_a_domain_key_stops_a_gateway_with_its_own_token() {
    // `embedded_softhsm = false` with the module and PIN of a token made by a first gateway
    // (in token mode): the gateway may not make the domain key itself, and says what to run.
    let first = TestServer::start();
    let dir = first.data_dir().to_path_buf();
    let out = Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"))
        .arg("serve")
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .env("P11KMS_DATA_DIR", &dir)
        .env("P11KMS_LISTEN", "127.0.0.1:0")
        .env("P11KMS_KEY_STORAGE", "domain")
        .env("P11KMS_EMBEDDED_SOFTHSM", "false")
        .env("P11KMS_PIN_FILE", dir.join("user.pin"))
        .current_dir(&dir)
        .output()
        .expect("run p11kms serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no active domain key") && stderr.contains("p11kms domain create"),
        "{stderr}"
    );
}
