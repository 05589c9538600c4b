//! Backup and restore of a cluster (`scripts/cluster.sh backup` / `restore`): a `pg_dump` of
//! the database plus the custody of the domain key. Keys of every kind, aliases and grants are
//! made on an old cluster; its dump is restored into a new cluster (new PostgreSQL, new
//! tokens) whose first token received the domain key from the old cluster's token by the
//! ceremony; every key and every old ciphertext, signature and MAC works there. The dump alone
//! opens nothing: a new cluster with a domain key of its own refuses it.
//!
//! `P11KMS_BACKUP_KEYS=N` adds N symmetric keys, each with a ciphertext (default 100).

use std::time::Instant;

use crate::cluster_script::{run_script, ScriptCluster};
use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    EncryptionAlgorithmSpec, GrantOperation, KeySpec, KeyUsageType, MacAlgorithmSpec,
    SigningAlgorithmSpec,
};
use aws_sdk_kms::Client;

async fn make_key(kms: &Client, spec: KeySpec, usage: KeyUsageType) -> String {
    kms.create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .unwrap()
        .key_id()
        .to_string()
}

async fn sign(kms: &Client, key: &str, algorithm: SigningAlgorithmSpec) -> Vec<u8> {
    kms.sign()
        .key_id(key)
        .message(Blob::new(b"signed before the backup".to_vec()))
        .signing_algorithm(algorithm)
        .send()
        .await
        .expect("Sign")
        .signature
        .unwrap()
        .into_inner()
}

async fn verify(kms: &Client, key: &str, algorithm: SigningAlgorithmSpec, signature: &[u8]) {
    assert!(
        kms.verify()
            .key_id(key)
            .message(Blob::new(b"signed before the backup".to_vec()))
            .signing_algorithm(algorithm)
            .signature(Blob::new(signature.to_vec()))
            .send()
            .await
            .expect("Verify")
            .signature_valid
    );
}

/// What the old cluster made, to be checked on the new one.
struct Made {
    symmetric: String,
    rsa_encrypt: String,
    rsa_sign: String,
    ec: String,
    hmac: String,
    alias: String,
    grant: String,
    /// Under the symmetric key's first and second material (rotated in between).
    ciphertexts: Vec<Vec<u8>>,
    data_key: (Vec<u8>, Vec<u8>),
    rsa_ciphertext: Vec<u8>,
    rsa_signature: Vec<u8>,
    ec_signature: Vec<u8>,
    mac: Vec<u8>,
    extra: Vec<(String, Vec<u8>)>,
}

async fn make_everything(a: &Client, b: &Client, extra: usize) -> Made {
    let symmetric = make_key(a, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let first = encrypt(a, &symmetric, b"under the first material").await;
    a.rotate_key_on_demand()
        .key_id(&symmetric)
        .send()
        .await
        .unwrap();
    let second = encrypt(b, &symmetric, b"under the second material").await;
    let data_key = a
        .generate_data_key()
        .key_id(&symmetric)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let rsa_encrypt = make_key(b, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let rsa_ciphertext = a
        .encrypt()
        .key_id(&rsa_encrypt)
        .plaintext(Blob::new(b"rsa before the backup".to_vec()))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
        .into_inner();
    let rsa_sign = make_key(a, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let rsa_signature = sign(b, &rsa_sign, SigningAlgorithmSpec::RsassaPssSha256).await;
    let ec = make_key(b, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let ec_signature = sign(a, &ec, SigningAlgorithmSpec::EcdsaSha256).await;
    let hmac = make_key(a, KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac).await;
    let mac = b
        .generate_mac()
        .key_id(&hmac)
        .message(Blob::new(b"mac before the backup".to_vec()))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .unwrap()
        .mac
        .unwrap()
        .into_inner();
    let alias = unique_alias();
    a.create_alias()
        .alias_name(&alias)
        .target_key_id(&symmetric)
        .send()
        .await
        .unwrap();
    let grant = a
        .create_grant()
        .key_id(&symmetric)
        .grantee_principal("arn:aws:iam::111122223333:user/restored")
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .unwrap()
        .grant_id
        .unwrap();
    let mut extra_keys = Vec::new();
    for i in 0..extra {
        let kms = if i % 2 == 0 { a } else { b };
        let key = create_key(kms).await.key_id().to_string();
        let blob = encrypt(kms, &key, key.as_bytes()).await;
        extra_keys.push((key, blob));
    }
    Made {
        symmetric,
        rsa_encrypt,
        rsa_sign,
        ec,
        hmac,
        alias,
        grant,
        ciphertexts: vec![first, second],
        data_key: (
            data_key.plaintext.unwrap().into_inner(),
            data_key.ciphertext_blob.unwrap().into_inner(),
        ),
        rsa_ciphertext,
        rsa_signature,
        ec_signature,
        mac,
        extra: extra_keys,
    }
}

/// Every key and every old result works through `kms`.
async fn check_everything(kms: &Client, made: &Made) {
    assert_eq!(
        decrypt(kms, &made.ciphertexts[0]).await,
        b"under the first material"
    );
    assert_eq!(
        decrypt(kms, &made.ciphertexts[1]).await,
        b"under the second material"
    );
    assert_eq!(decrypt(kms, &made.data_key.1).await, made.data_key.0);
    // ReEncrypt of an old ciphertext under the alias (the same key), then Decrypt.
    let moved = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(made.ciphertexts[0].clone()))
        .destination_key_id(&made.alias)
        .send()
        .await
        .expect("ReEncrypt")
        .ciphertext_blob
        .unwrap()
        .into_inner();
    assert_eq!(decrypt(kms, &moved).await, b"under the first material");
    assert_eq!(
        decrypt(kms, &encrypt(kms, &made.alias, b"new").await).await,
        b"new"
    );
    let opened = kms
        .decrypt()
        .key_id(&made.rsa_encrypt)
        .ciphertext_blob(Blob::new(made.rsa_ciphertext.clone()))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .expect("RSA Decrypt")
        .plaintext
        .unwrap()
        .into_inner();
    assert_eq!(opened, b"rsa before the backup");
    verify(
        kms,
        &made.rsa_sign,
        SigningAlgorithmSpec::RsassaPssSha256,
        &made.rsa_signature,
    )
    .await;
    verify(
        kms,
        &made.ec,
        SigningAlgorithmSpec::EcdsaSha256,
        &made.ec_signature,
    )
    .await;
    // New signatures with the restored private halves.
    let fresh = sign(kms, &made.ec, SigningAlgorithmSpec::EcdsaSha256).await;
    verify(kms, &made.ec, SigningAlgorithmSpec::EcdsaSha256, &fresh).await;
    let fresh = sign(kms, &made.rsa_sign, SigningAlgorithmSpec::RsassaPssSha256).await;
    verify(
        kms,
        &made.rsa_sign,
        SigningAlgorithmSpec::RsassaPssSha256,
        &fresh,
    )
    .await;
    assert!(
        kms.verify_mac()
            .key_id(&made.hmac)
            .message(Blob::new(b"mac before the backup".to_vec()))
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .mac(Blob::new(made.mac.clone()))
            .send()
            .await
            .expect("VerifyMac")
            .mac_valid
    );
    let grants = kms
        .list_grants()
        .key_id(&made.symmetric)
        .send()
        .await
        .unwrap();
    assert!(grants
        .grants()
        .iter()
        .any(|g| g.grant_id() == Some(made.grant.as_str())));
    let aliases = kms
        .list_aliases()
        .key_id(&made.symmetric)
        .send()
        .await
        .unwrap();
    assert!(aliases
        .aliases()
        .iter()
        .any(|a| a.alias_name() == Some(made.alias.as_str())));
    for (key, blob) in &made.extra {
        assert_eq!(&decrypt(kms, blob).await, key.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_new_cluster_of_the_same_domain_gives_back_every_key() {
    let extra: usize = std::env::var("P11KMS_BACKUP_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let work = tempfile::Builder::new()
        .prefix("p11kms-backup-")
        .tempdir()
        .unwrap();
    let (old_dir, new_dir, lone_dir) = (
        work.path().join("old"),
        work.path().join("new"),
        work.path().join("lone"),
    );
    let dump = work.path().join("cluster.dump");

    let mut old = ScriptCluster::start(&old_dir, &["2"]);
    let made = make_everything(&old.client(0), &old.client(1), extra).await;
    let started = Instant::now();
    let line = old.backup(&dump);
    println!(
        "{} keys: {} (backup took {} ms)",
        5 + extra,
        line.trim(),
        started.elapsed().as_millis()
    );
    let domain = std::fs::read_to_string(old_dir.join("replica-1/domain-member")).unwrap();
    assert!(line.contains(domain.trim()), "{line}");
    // The old cluster's replicas and PostgreSQL stop; its token directories stay, holding D.
    old.stop();

    // The dump alone opens nothing: a new cluster that makes a domain key of its own refuses
    // the restored store (which names the old D), before any replica serves.
    let out = run_script(&[
        "start",
        &lone_dir.display().to_string(),
        "2",
        "--restore",
        &dump.display().to_string(),
    ]);
    assert!(!out.status.success());
    let log = std::fs::read_to_string(lone_dir.join("ceremony/ceremony.log")).unwrap();
    assert!(
        log.contains("already has an active domain key"),
        "{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lone_dir.join("pg/data/postmaster.pid").exists());

    // A new cluster: new PostgreSQL, new tokens; its first token receives D from the old
    // cluster's first token by the ceremony, the second from the first; then the dump.
    let started = Instant::now();
    let new = ScriptCluster::restore(
        &new_dir,
        &dump,
        &["2", "--join-from", &old_dir.display().to_string()],
    );
    println!(
        "restore into a new cluster of 2 replicas (initdb, pg_restore, 2 ceremonies, start): {} ms",
        started.elapsed().as_millis()
    );
    for i in 1..=2 {
        let member =
            std::fs::read_to_string(new_dir.join(format!("replica-{i}/domain-member"))).unwrap();
        assert_eq!(member, domain, "replica {i}");
    }
    for i in 0..2 {
        check_everything(&new.client(i), &made).await;
    }
    let (kms, mut listed, mut marker) = (new.client(0), 0, None);
    loop {
        let page = kms
            .list_keys()
            .limit(1000)
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        listed += page.keys().len();
        marker = page.next_marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    assert_eq!(listed, 5 + extra);

    // A rollback: `restore DIR FILE` on the running new cluster (its tokens hold the dump's D)
    // replaces its database; a key made after the dump is gone, the dump's keys work.
    let later = create_key(&kms).await.key_id().to_string();
    let started = Instant::now();
    let mut new = new.restore_again(&dump);
    println!(
        "restore into the running cluster (stop, pg_restore --clean, start): {} ms",
        started.elapsed().as_millis()
    );
    let kms = new.client(1);
    let err = api_error(kms.describe_key().key_id(&later).send().await);
    assert_eq!(err.code.as_deref(), Some("NotFoundException"));
    check_everything(&kms, &made).await;
    new.stop();
}

/// `cluster.sh rotate DIR` while both replicas serve: the new domain key is prepared in
/// replica 1's token, enrolled into replica 2's by the ceremony and activated; no replica
/// restarts, no request fails, and every key made before works on both replicas afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_rotates_the_domain_key_while_the_replicas_serve() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let work = tempfile::Builder::new()
        .prefix("p11kms-rotate-")
        .tempdir()
        .unwrap();
    let dir = work.path().join("cluster");
    let cluster = ScriptCluster::start(&dir, &["2"]);
    let (a, b) = (cluster.client(0), cluster.client(1));
    let made = make_everything(&a, &b, 10).await;
    let old_domain = std::fs::read_to_string(dir.join("replica-1/domain-member")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        let clients = [a.clone(), b.clone()];
        let (key, blob) = made.extra[0].clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let kms = &clients[n % 2];
                let ok = kms
                    .decrypt()
                    .ciphertext_blob(Blob::new(blob.clone()))
                    .send()
                    .await
                    .is_ok()
                    && kms
                        .re_encrypt()
                        .ciphertext_blob(Blob::new(blob.clone()))
                        .destination_key_id(&key)
                        .send()
                        .await
                        .is_ok();
                let counter = if ok { &served } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    };

    let dir_arg = dir.display().to_string();
    let out = tokio::task::spawn_blocking(move || run_script(&["rotate", &dir_arg]))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        out.status.success(),
        "cluster.sh rotate failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "{}; {} requests served during it, {} failed",
        stdout.lines().last().unwrap_or_default(),
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rotation"
    );
    assert!(served.load(Ordering::Relaxed) > 0);

    let new_domain = std::fs::read_to_string(dir.join("replica-1/domain-member")).unwrap();
    assert_ne!(new_domain.trim(), old_domain.trim(), "no new domain key");
    assert_eq!(
        std::fs::read_to_string(dir.join("replica-2/domain-member")).unwrap(),
        new_domain,
        "replica 2's token did not join the new domain key"
    );
    assert!(
        stdout.contains(&format!("retired {}", old_domain.trim())),
        "{stdout}"
    );
    // The same processes serve everything made before, and new keys, on both replicas.
    check_everything(&a, &made).await;
    check_everything(&b, &made).await;
    let fresh = make_key(&b, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await;
    let blob = encrypt(&b, &fresh, b"after the rotation").await;
    let plain = a
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext.unwrap().as_ref(), b"after the rotation");
}
