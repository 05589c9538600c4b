//! The gateway on its second embedded token, Kryoptic (`P11KMS_EMBEDDED_TOKEN=kryoptic`),
//! through `aws-sdk-kms`: every ReEncrypt direction with RSA keys runs in the token, and
//! RSAES_OAEP_SHA_256 works end to end.
//!
//! RSA ciphertexts are made offline with RustCrypto from GetPublicKey, so the token's OAEP
//! is checked against a library that is not the HSM. Needs the Kryoptic library
//! (`cargo build --release --manifest-path tokens/kryoptic/Cargo.toml --target-dir target`);
//! without it the tests say so and pass, except in CI (`CI` set), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{EncryptionAlgorithmSpec, KeySpec, KeyUsageType};
use aws_sdk_kms::Client;
use common::*;
use rsa::pkcs8::DecodePublicKey;

const MESSAGE: &[u8] = b"kryoptic: a message that never leaves the token in clear";

/// A gateway on a fresh Kryoptic token, or `None` (with a message) when the library was not
/// built outside CI.
fn start_on_kryoptic() -> Option<TestServer> {
    let module = kryoptic_module_or_skip()?;
    let module = module.display().to_string();
    Some(TestServer::start_with(&[
        ("P11KMS_EMBEDDED_TOKEN", "kryoptic"),
        ("P11KMS_KRYOPTIC_MODULE", &module),
    ]))
}

async fn create_rsa(kms: &Client, spec: KeySpec) -> String {
    kms.create_key()
        .key_spec(spec)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("KeyMetadata")
        .key_id
}

async fn public_key(kms: &Client, key_id: &str) -> rsa::RsaPublicKey {
    let der = kms
        .get_public_key()
        .key_id(key_id)
        .send()
        .await
        .expect("GetPublicKey")
        .public_key
        .expect("PublicKey")
        .into_inner();
    rsa::RsaPublicKey::from_public_key_der(&der).expect("RSA SPKI")
}

/// OAEP with `algorithm`'s hash (and MGF1 with the same), done by RustCrypto.
fn encrypt_offline(
    public: &rsa::RsaPublicKey,
    algorithm: &EncryptionAlgorithmSpec,
    message: &[u8],
) -> Vec<u8> {
    let mut rng = rsa::rand_core::OsRng;
    match algorithm {
        EncryptionAlgorithmSpec::RsaesOaepSha1 => {
            public.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), message)
        }
        EncryptionAlgorithmSpec::RsaesOaepSha256 => {
            public.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), message)
        }
        other => panic!("not an OAEP algorithm: {other:?}"),
    }
    .expect("offline OAEP encryption")
}

async fn decrypt_rsa(
    kms: &Client,
    key_id: &str,
    algorithm: &EncryptionAlgorithmSpec,
    blob: Vec<u8>,
) -> Vec<u8> {
    kms.decrypt()
        .key_id(key_id)
        .encryption_algorithm(algorithm.clone())
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .expect("Decrypt")
        .plaintext
        .expect("Plaintext")
        .into_inner()
}

const OAEP: [EncryptionAlgorithmSpec; 2] = [
    EncryptionAlgorithmSpec::RsaesOaepSha1,
    EncryptionAlgorithmSpec::RsaesOaepSha256,
];

#[tokio::test]
async fn every_reencrypt_direction_runs_on_kryoptic() {
    let Some(srv) = start_on_kryoptic() else {
        return;
    };
    let kms = srv.client();
    let source = create_rsa(&kms, KeySpec::Rsa2048).await;
    let destination = create_rsa(&kms, KeySpec::Rsa3072).await;
    let symmetric = create_key(&kms).await.key_id;
    let source_public = public_key(&kms, &source).await;
    let pairs = [("purpose", "kryoptic test")];
    let ctx = context(&pairs);

    for from in &OAEP {
        let offline = encrypt_offline(&source_public, from, MESSAGE);

        // RSA -> symmetric: the new blob is an ordinary symmetric ciphertext.
        let resp = kms
            .re_encrypt()
            .ciphertext_blob(Blob::new(offline.clone()))
            .source_key_id(&source)
            .source_encryption_algorithm(from.clone())
            .destination_key_id(&symmetric)
            .set_destination_encryption_context(Some(ctx.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReEncrypt RSA ({from:?}) -> symmetric: {e:?}"));
        assert_eq!(resp.source_encryption_algorithm(), Some(from));
        assert_eq!(
            resp.destination_encryption_algorithm(),
            Some(&EncryptionAlgorithmSpec::SymmetricDefault)
        );
        assert!(resp
            .destination_key_material_id()
            .is_some_and(is_material_id));
        let blob = resp.ciphertext_blob().expect("blob").as_ref().to_vec();
        let opened = kms
            .decrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .set_encryption_context(Some(ctx.clone()))
            .send()
            .await
            .expect("Decrypt of the re-encrypted blob");
        assert_eq!(opened.plaintext().expect("plaintext").as_ref(), MESSAGE);
        // The context is bound to the new blob.
        expect_error(
            kms.decrypt().ciphertext_blob(Blob::new(blob)).send().await,
            "InvalidCiphertextException",
        );

        // RSA -> RSA, with every pair of OAEP hashes.
        for to in &OAEP {
            let resp = kms
                .re_encrypt()
                .ciphertext_blob(Blob::new(offline.clone()))
                .source_key_id(&source)
                .source_encryption_algorithm(from.clone())
                .destination_key_id(&destination)
                .destination_encryption_algorithm(to.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("ReEncrypt RSA {from:?} -> RSA {to:?}: {e:?}"));
            let out = resp.ciphertext_blob().expect("blob").as_ref().to_vec();
            assert_eq!(out.len(), 384, "an RSA-3072 ciphertext");
            assert_eq!(
                decrypt_rsa(&kms, &destination, to, out).await,
                MESSAGE,
                "RSA {from:?} -> RSA {to:?}"
            );
        }
    }

    // Symmetric -> RSA, with either hash.
    let sealed = encrypt_ctx(&kms, &symmetric, MESSAGE, &pairs).await;
    for to in &OAEP {
        let resp = kms
            .re_encrypt()
            .ciphertext_blob(Blob::new(sealed.clone()))
            .set_source_encryption_context(Some(ctx.clone()))
            .destination_key_id(&destination)
            .destination_encryption_algorithm(to.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReEncrypt symmetric -> RSA {to:?}: {e:?}"));
        assert_eq!(
            resp.source_encryption_algorithm(),
            Some(&EncryptionAlgorithmSpec::SymmetricDefault)
        );
        assert!(resp.source_key_material_id().is_some_and(is_material_id));
        let out = resp.ciphertext_blob().expect("blob").as_ref().to_vec();
        assert_eq!(decrypt_rsa(&kms, &destination, to, out).await, MESSAGE);
    }
    // A wrong source context, or a changed payload byte, does not open in the token.
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(sealed.clone()))
            .destination_key_id(&destination)
            .destination_encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
            .send()
            .await,
        "InvalidCiphertextException",
    );
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(tampered))
            .set_source_encryption_context(Some(ctx.clone()))
            .destination_key_id(&destination)
            .destination_encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
            .send()
            .await,
        "InvalidCiphertextException",
    );
    // A ciphertext of the wrong RSA key does not open either.
    let foreign = encrypt_offline(
        &public_key(&kms, &destination).await,
        &EncryptionAlgorithmSpec::RsaesOaepSha256,
        MESSAGE,
    );
    expect_error(
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(foreign))
            .source_key_id(&source)
            .source_encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
            .destination_key_id(&symmetric)
            .send()
            .await,
        "InvalidCiphertextException",
    );
}

#[tokio::test]
async fn oaep_sha256_encrypts_and_decrypts_on_kryoptic_and_keys_survive_a_restart() {
    let Some(mut srv) = start_on_kryoptic() else {
        return;
    };
    let kms = srv.client();
    let key = create_rsa(&kms, KeySpec::Rsa2048).await;
    let sha256 = EncryptionAlgorithmSpec::RsaesOaepSha256;
    let public = public_key(&kms, &key).await;
    let offline = encrypt_offline(&public, &sha256, MESSAGE);
    assert_eq!(
        decrypt_rsa(&kms, &key, &sha256, offline.clone()).await,
        MESSAGE
    );
    let online = kms
        .encrypt()
        .key_id(&key)
        .encryption_algorithm(sha256.clone())
        .plaintext(Blob::new(MESSAGE))
        .send()
        .await
        .expect("Encrypt with RSAES_OAEP_SHA_256")
        .ciphertext_blob
        .expect("blob")
        .into_inner();
    assert_eq!(online.len(), 256);
    assert_eq!(decrypt_rsa(&kms, &key, &sha256, online).await, MESSAGE);
    // AWS's limit for RSA_2048 with SHA-256: 2048/8 - 2*32 - 2 = 190 bytes.
    expect_error(
        kms.encrypt()
            .key_id(&key)
            .encryption_algorithm(sha256.clone())
            .plaintext(Blob::new(vec![7u8; 191]))
            .send()
            .await,
        "ValidationException",
    );
    let symmetric = create_key(&kms).await.key_id;
    let sealed = encrypt(&kms, &symmetric, MESSAGE).await;
    // secp256k1: the start-up probe found Kryoptic cannot make such pairs; refused by name.
    expect_error(
        kms.create_key()
            .key_spec(KeySpec::EccSecgP256K1)
            .key_usage(KeyUsageType::SignVerify)
            .send()
            .await,
        "UnsupportedOperationException",
    )
    .assert_message_contains("CKM_EC_KEY_PAIR_GEN on secp256k1");

    // The token (its SQLite file and PINs) is found again, not initialised again.
    srv.restart();
    let kms = srv.client();
    assert_eq!(decrypt_rsa(&kms, &key, &sha256, offline).await, MESSAGE);
    assert_eq!(decrypt(&kms, &sealed).await, MESSAGE);
    assert!(
        srv.data_dir().join("kryoptic/token.sql").is_file(),
        "the token lives under the data directory"
    );
}

/// `p11kms doctor` on a fresh embedded Kryoptic token: it prepares the token as `serve`
/// would, finds the key wrap by asking (0x210B, not SoftHSM2's 0x210A), every trial passes
/// but secp256k1, and its verdict is that the gateway can serve.
#[test]
fn doctor_on_kryoptic_passes_every_trial_but_secp256k1() {
    let Some(module) = kryoptic_module_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            command.env_remove(&name);
        }
    }
    let out = command
        .arg("doctor")
        .env("P11KMS_DATA_DIR", dir.path().join("data"))
        .env("P11KMS_EMBEDDED_TOKEN", "kryoptic")
        .env("P11KMS_KRYOPTIC_MODULE", &module)
        .env_remove("KRYOPTIC_CONF")
        .current_dir(dir.path())
        .output()
        .expect("run p11kms doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |first: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.split('|').nth(1).is_some_and(|cell| cell.trim() == first))
            .unwrap_or_else(|| panic!("no row '{first}' in:\n{stdout}"))
            .split('|')
            .skip(1)
            .map(|c| c.trim().to_string())
            .collect()
    };
    assert!(stdout.contains("token:   'p11kms' Kryoptic"), "{stdout}");
    // Mechanisms: RFC 5649 under its PKCS#11 3.0 number, GCM for wrapping too.
    assert!(row("CKM_AES_KEY_WRAP_KWP")[1].contains("wrap unwrap"));
    assert_eq!(row("CKM_AES_KEY_WRAP_PAD")[1], "not offered");
    assert!(row("CKM_AES_GCM")[1].contains("wrap unwrap"));
    // Trials: the key wrap the gateway picks, and every one passes but secp256k1.
    assert!(row("kwp")[2].contains("CKM_AES_KEY_WRAP_KWP"));
    let trials: Vec<Vec<String>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("TRIALS"))
        .skip(3)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('|').skip(1).map(|c| c.trim().to_string()).collect())
        .collect();
    assert!(trials.len() >= 20, "trials table:\n{stdout}");
    for trial in &trials {
        let expected = if trial[0] == "ecdsa-secp256k1" {
            "FAILED"
        } else {
            "ok"
        };
        assert_eq!(trial[1], expected, "trial {}: {}", trial[0], trial[2]);
    }
    for (feature, supported) in [
        ("symmetric envelope scheme (SYMMETRIC_DEFAULT)", "yes"),
        ("ReEncrypt in token", "yes"),
        ("RSAES_OAEP_SHA_256 encrypt/decrypt", "yes"),
        ("RSA OAEP SHA-256 wrap/unwrap", "yes"),
        ("ECDSA_SHA_256 (ECC_SECG_P256K1)", "no"),
    ] {
        assert_eq!(row(feature)[1], supported, "{feature}");
    }
    assert!(stdout.contains("verdict: p11kms can serve symmetric keys"));
    assert!(
        dir.path().join("data/kryoptic/token.sql").is_file(),
        "doctor prepares the token under the data directory, as serve does"
    );
}

/// What Kryoptic enforces for a domain key (README, Domain ceremony): it will not wrap a key
/// marked `CKA_WRAP_WITH_TRUSTED` under an untrusted key, but an ordinary user may make a
/// trusted key, which then takes the domain key out. So on Kryoptic trust stops nothing a
/// holder of the user PIN wants to do.
#[test]
fn kryoptic_checks_wrap_with_trusted_but_lets_a_user_make_a_trusted_key() {
    use cryptoki::error::{Error, RvError};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    use cryptoki::session::UserType;

    let Some(kryoptic) = InProcessKryoptic::get() else {
        return;
    };
    let (pkcs11, slot, pin) = (&kryoptic.pkcs11, kryoptic.slot, &kryoptic.pin);
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(pin)).unwrap();
    let aes_key = |extra: &[Attribute]| {
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
        ];
        template.extend_from_slice(extra);
        session.generate_key(&Mechanism::AesKeyGen, &template)
    };

    let domain = aes_key(&[
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
    ])
    .unwrap();
    let untrusted = aes_key(&[Attribute::Wrap(true)]).unwrap();
    match session.wrap_key(&Mechanism::AesKeyWrap, untrusted, domain) {
        Err(Error::Pkcs11(rv, _)) => assert_eq!(rv, RvError::WrappingKeyHandleInvalid),
        other => panic!("an untrusted key wrapped a WRAP_WITH_TRUSTED key: {other:?}"),
    }
    let trusted = aes_key(&[Attribute::Wrap(true), Attribute::Trusted(true)])
        .expect("Kryoptic 1.5.4 lets a user make a trusted key");
    let wrapped = session
        .wrap_key(&Mechanism::AesKeyWrap, trusted, domain)
        .expect("a user's trusted key wraps the domain key");
    assert_eq!(wrapped.len(), 40, "RFC 3394 of 32 bytes");
    session.logout().unwrap();
}

#[test]
fn closing_a_session_destroys_its_objects_on_kryoptic() {
    let Some(kryoptic) = InProcessKryoptic::get() else {
        return;
    };
    common::assert_closing_a_session_destroys_its_objects(&kryoptic.pkcs11, kryoptic.slot);
}

/// Kryoptic loaded into this process on a fresh token, shared by the tests that need it:
/// Kryoptic reads its configuration once per process, so there is one such token per binary.
struct InProcessKryoptic {
    pkcs11: cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    pin: cryptoki::types::AuthPin,
    _dir: tempfile::TempDir,
}

impl InProcessKryoptic {
    fn get() -> Option<&'static Self> {
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        use p11kms::hsm::{EmbeddedToken, EmbeddedTokenKind};

        static SHARED: std::sync::OnceLock<InProcessKryoptic> = std::sync::OnceLock::new();
        let module = kryoptic_module_or_skip()?;
        Some(SHARED.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let token = EmbeddedToken::prepare(EmbeddedTokenKind::Kryoptic, dir.path()).unwrap();
            token.ensure_token(&module, "p11kms-in-process").unwrap();
            let pin = token.user_pin().unwrap();
            let pkcs11 = Pkcs11::new(&module).unwrap();
            pkcs11
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                .unwrap();
            let slot = pkcs11.get_slots_with_token().unwrap()[0];
            InProcessKryoptic {
                pkcs11,
                slot,
                pin,
                _dir: dir,
            }
        }))
    }
}
