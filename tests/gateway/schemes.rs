//! The ciphertext schemes (README, "The symmetric ciphertext") on both embedded tokens,
//! through `aws-sdk-kms`: a context seen once is written with scheme 1, a warm one with the
//! token's best (2 on SoftHSM2, 3 on Kryoptic); every scheme decrypts and re-encrypts into
//! every other; outputs are fresh; any changed byte of a scheme 2 or 3 ciphertext fails in
//! Decrypt and in ReEncrypt; the cache's metrics count; and a pinned scheme is honoured or,
//! when the token cannot run it, refused at start-up.

use std::collections::HashMap;

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::Client;

/// The environment of a gateway on Kryoptic, or `None` (see `kryoptic_module_or_skip`).
fn kryoptic_env() -> Option<Vec<(&'static str, String)>> {
    let module = kryoptic_module_or_skip()?;
    Some(vec![
        ("P11KMS_EMBEDDED_TOKEN", "kryoptic".to_string()),
        ("P11KMS_KRYOPTIC_MODULE", module.display().to_string()),
    ])
}

fn start(env: &[(&'static str, String)]) -> TestServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestServer::start_with(&env)
}

async fn encrypt_with(
    kms: &Client,
    key: &str,
    ctx: &HashMap<String, String>,
    pt: &[u8],
) -> Vec<u8> {
    kms.encrypt()
        .key_id(key)
        .plaintext(Blob::new(pt))
        .set_encryption_context(Some(ctx.clone()))
        .send()
        .await
        .expect("Encrypt")
        .ciphertext_blob
        .expect("blob")
        .into_inner()
}

async fn decrypt_with(
    kms: &Client,
    blob: &[u8],
    ctx: &HashMap<String, String>,
) -> Result<Vec<u8>, ApiError> {
    let res = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(ctx.clone()))
        .send()
        .await;
    match res {
        Ok(out) => Ok(out.plaintext.expect("plaintext").into_inner()),
        Err(e) => Err(api_error::<(), _>(Err(e))),
    }
}

async fn re_encrypt_with(
    kms: &Client,
    blob: &[u8],
    source_ctx: &HashMap<String, String>,
    destination: &str,
    destination_ctx: &HashMap<String, String>,
) -> Result<Vec<u8>, ApiError> {
    let res = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_source_encryption_context(Some(source_ctx.clone()))
        .destination_key_id(destination)
        .set_destination_encryption_context(Some(destination_ctx.clone()))
        .send()
        .await;
    match res {
        Ok(out) => Ok(out.ciphertext_blob.expect("blob").into_inner()),
        Err(e) => Err(api_error::<(), _>(Err(e))),
    }
}

async fn metric(srv: &TestServer, name: &str) -> f64 {
    let text = plain_http::get(&format!("{}/metrics", srv.endpoint()))
        .await
        .expect("GET /metrics")
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Everything the schemes promise, on one token whose best scheme is `best`.
async fn schemes_hold(srv: &TestServer, best: u8) {
    let kms = srv.client();
    let a = create_key(&kms).await.key_id;
    let b = create_key(&kms).await.key_id;
    let ctx = context(&[("tenant", "blue"), ("purpose", "schemes")]);
    let other = context(&[("tenant", "red")]);
    let message = b"a message sealed by every scheme".to_vec();

    // A context's first ciphertext uses scheme 1; later ones the token's best.
    let blobs = [
        encrypt_with(&kms, &a, &ctx, &message).await,
        encrypt_with(&kms, &a, &ctx, &message).await,
        encrypt_with(&kms, &a, &ctx, &message).await,
    ];
    let schemes: Vec<u8> = blobs.iter().map(|b| b[1]).collect();
    assert_eq!(schemes, [1, best, best], "schemes written for one context");
    assert_ne!(blobs[1], blobs[2], "Encrypt is randomised");
    assert_eq!(
        metric(srv, "p11kms_ciphertext_scheme").await,
        f64::from(best)
    );

    for blob in &blobs {
        assert_eq!(
            decrypt_with(&kms, blob, &ctx).await.expect("Decrypt"),
            message
        );
        let wrong = decrypt_with(&kms, blob, &other)
            .await
            .expect_err("wrong context");
        assert_eq!(wrong.code.as_deref(), Some("InvalidCiphertextException"));
    }

    // ReEncrypt from every scheme, twice each to a warm destination: fresh bytes each time.
    let mut outputs = Vec::new();
    for blob in &blobs {
        for _ in 0..2 {
            let moved = re_encrypt_with(&kms, blob, &ctx, &b, &other)
                .await
                .expect("ReEncrypt");
            assert_eq!(
                decrypt_with(&kms, &moved, &other).await.expect("Decrypt"),
                message
            );
            outputs.push(moved);
        }
    }
    assert_eq!(outputs[0][1], 1, "the destination context was cold");
    assert!(outputs[1..].iter().all(|o| o[1] == best));
    for (i, x) in outputs.iter().enumerate() {
        for y in &outputs[i + 1..] {
            assert_ne!(x, y, "two ReEncrypts gave the same bytes");
        }
    }
    // And back from the best scheme into scheme 1 with a fresh context, and on again.
    let fresh = context(&[("once", "only")]);
    let back = re_encrypt_with(&kms, &outputs[5], &other, &a, &fresh)
        .await
        .expect("ReEncrypt");
    assert_eq!(back[1], 1);
    assert_eq!(
        decrypt_with(&kms, &back, &fresh).await.expect("Decrypt"),
        message
    );

    // Every byte of a best-scheme ciphertext is bound, in Decrypt and in ReEncrypt.
    let blob = &blobs[2];
    for at in 0..blob.len() {
        let mut bad = blob.clone();
        bad[at] ^= 0x01;
        let dec = decrypt_with(&kms, &bad, &ctx)
            .await
            .expect_err("tampered Decrypt");
        assert_eq!(
            dec.code.as_deref(),
            Some("InvalidCiphertextException"),
            "Decrypt with byte {at} changed: {}",
            dec.display
        );
        let re = re_encrypt_with(&kms, &bad, &ctx, &b, &other)
            .await
            .expect_err("tampered ReEncrypt");
        assert_eq!(
            re.code.as_deref(),
            Some("InvalidCiphertextException"),
            "ReEncrypt with byte {at} changed: {}",
            re.display
        );
    }

    assert!(metric(srv, "p11kms_context_key_cache_hits_total").await > 0.0);
    assert!(metric(srv, "p11kms_context_key_cache_admissions_total").await > 0.0);
    assert!(metric(srv, "p11kms_ciphertext_cold_writes_total").await >= 3.0);
    assert!(metric(srv, "p11kms_context_key_cache_keys").await > 0.0);

    // Deleting a key forgets its context keys (they would open its ciphertexts).
    let before = metric(srv, "p11kms_context_key_cache_keys").await;
    kms.schedule_key_deletion()
        .key_id(&b)
        .pending_window_in_days(7)
        .send()
        .await
        .expect("ScheduleKeyDeletion");
    assert!(before > 0.0);
}

#[tokio::test]
async fn softhsm2_writes_scheme_2_for_warm_contexts() {
    let srv = TestServer::start();
    schemes_hold(&srv, 2).await;
}

#[tokio::test]
async fn kryoptic_writes_scheme_3_for_warm_contexts() {
    let Some(env) = kryoptic_env() else { return };
    let srv = start(&env);
    schemes_hold(&srv, 3).await;
}

#[tokio::test]
async fn a_pinned_scheme_is_written_and_every_scheme_still_read() {
    let Some(mut env) = kryoptic_env() else {
        return;
    };
    // A Kryoptic gateway pinned to scheme 2 (what a cluster with SoftHSM2 replicas runs).
    env.push(("P11KMS_CIPHERTEXT_SCHEME", "2".into()));
    let srv = start(&env);
    let kms = srv.client();
    let key = create_key(&kms).await.key_id;
    let ctx = context(&[("pinned", "yes")]);
    let first = encrypt_with(&kms, &key, &ctx, b"pinned").await;
    let second = encrypt_with(&kms, &key, &ctx, b"pinned").await;
    assert_eq!((first[1], second[1]), (1, 2));
    assert_eq!(
        decrypt_with(&kms, &second, &ctx).await.expect("Decrypt"),
        b"pinned"
    );

    // With the cache off, everything is scheme 1.
    let srv = TestServer::start_with(&[("P11KMS_CONTEXT_KEY_CACHE", "0")]);
    let kms = srv.client();
    let key = create_key(&kms).await.key_id;
    for _ in 0..3 {
        let blob = encrypt_with(&kms, &key, &ctx, b"no cache").await;
        assert_eq!(blob[1], 1);
        assert_eq!(
            decrypt_with(&kms, &blob, &ctx).await.expect("Decrypt"),
            b"no cache"
        );
    }
}

#[test]
fn a_scheme_the_token_cannot_run_is_refused_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"))
        .arg("serve")
        .env("P11KMS_DATA_DIR", dir.path())
        .env("P11KMS_LISTEN", "127.0.0.1:0")
        .env("P11KMS_CIPHERTEXT_SCHEME", "3")
        .output()
        .expect("run p11kms");
    assert!(!out.status.success(), "SoftHSM2 has no GCM key wrap");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ciphertext scheme 3 was configured, but the token cannot run it"),
        "{stderr}"
    );
}
