//! Operability: HSM outage and recovery, throttling under a saturated session pool,
//! Prometheus metrics and the audit trail.

use std::time::Duration;

use crate::common::*;

/// The value of one sample line, e.g. `p11kms_requests_total{operation="Encrypt",outcome="OK"}`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The outage is the token directory vanishing, which SoftHSM2 notices only when it reads a
/// token object's file. With session copies of the keys (the embedded default) Encrypt and
/// Decrypt never read one, and keep working through such an outage; the test turns the
/// copies off to reach the token objects, as on an HSM that keeps no copies.
#[tokio::test]
async fn a_lost_token_answers_key_unavailable_and_recovers() {
    let srv = TestServer::start_with(&[("P11KMS_HSM_SESSION_KEY_COPIES", "0")]);
    let kms = srv.client();
    let md = create_key(&kms).await;
    let blob = encrypt(&kms, md.key_id(), b"before the outage").await;

    let tokens = srv.data_dir().join("tokens");
    let away = srv.data_dir().join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();
    let err = api_error(
        kms.encrypt()
            .key_id(md.key_id())
            .plaintext(b"x".as_slice().into())
            .send()
            .await,
    );
    assert_eq!(
        err.code.as_deref(),
        Some("KeyUnavailableException"),
        "{}",
        err.display
    );
    let (status, _) = http_get(&format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 503, "readyz must fail while the token is away");

    std::fs::rename(&away, &tokens).unwrap();
    let recovered = poll_until(
        Duration::from_secs(15),
        Duration::from_millis(300),
        || async {
            kms.decrypt()
                .ciphertext_blob(blob.clone().into())
                .send()
                .await
                .ok()
                .and_then(|r| r.plaintext().map(|p| p.as_ref().to_vec()))
        },
    )
    .await;
    assert_eq!(recovered.as_deref(), Some(b"before the outage".as_slice()));
    let (status, _) = http_get(&format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 200);
    let (_, metrics) = http_get(&format!("{}/metrics", srv.endpoint())).await;
    assert!(
        sample(&metrics, "p11kms_hsm_reinitialisations_total") >= 1.0,
        "{metrics}"
    );
    let log = srv.log_text();
    assert!(
        log.contains("C_"),
        "PKCS#11 failures are logged with their function"
    );
}

#[tokio::test]
async fn a_saturated_pool_throttles_and_never_answers_5xx() {
    let srv = TestServer::start_with(&[
        ("P11KMS_SESSION_POOL_SIZE", "1"),
        ("P11KMS_SESSION_WAIT_MS", "1"),
    ]);
    let kms = srv.client();
    // With one session and a 1 ms wait even the setup can be throttled, when start-up work
    // still holds the session on a loaded machine: it retries, and its refusals are counted.
    let mut setup_throttled = 0;
    let md = loop {
        match kms.create_key().send().await {
            Ok(out) => break out.key_metadata.expect("KeyMetadata in CreateKey response"),
            Err(e) => {
                let err = api_error::<_, _>(Err::<(), _>(e));
                assert_eq!(err.code.as_deref(), Some("ThrottlingException"));
                setup_throttled += 1;
                assert!(
                    setup_throttled < 100,
                    "CreateKey throttled 100 times in a row"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let kms = kms.clone();
        let key = md.key_id().to_string();
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..5 {
                let result = kms
                    .encrypt()
                    .key_id(&key)
                    .plaintext(vec![7u8; 4096].into())
                    .send()
                    .await;
                codes.push(match result {
                    Ok(_) => ("OK".to_string(), 200),
                    Err(e) => {
                        let err = api_error::<_, _>(Err::<(), _>(e));
                        (err.code.unwrap_or_default(), err.status)
                    }
                });
            }
            codes
        }));
    }
    let mut ok = 0;
    let mut throttled = 0;
    for task in tasks {
        for (code, status) in task.await.unwrap() {
            assert!(status < 500, "{code} with HTTP {status}");
            match code.as_str() {
                "OK" => ok += 1,
                "ThrottlingException" => throttled += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert!(ok > 0 && throttled > 0, "ok={ok} throttled={throttled}");
    let (_, metrics) = http_get(&format!("{}/metrics", srv.endpoint())).await;
    assert_eq!(
        sample(&metrics, "p11kms_throttled_requests_total"),
        (throttled + setup_throttled) as f64
    );
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_outcome() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    for _ in 0..3 {
        encrypt(&kms, md.key_id(), b"counted").await;
    }
    let _ = kms.describe_key().key_id("fake-key-id").send().await;
    let (status, metrics) = http_get(&format!("{}/metrics", srv.endpoint())).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &metrics,
            r#"p11kms_requests_total{operation="Encrypt",outcome="OK"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"p11kms_requests_total{operation="DescribeKey",outcome="NotFoundException"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"p11kms_request_duration_seconds_count{operation="Encrypt"}"#
        ),
        3.0
    );
    assert!(
        sample(
            &metrics,
            r#"p11kms_pkcs11_call_duration_seconds_count{function="C_Encrypt",outcome="CKR_OK"}"#
        ) >= 3.0
    );
    assert_eq!(sample(&metrics, r#"p11kms_keys{state="Enabled"}"#), 1.0);
    assert!(!metrics.contains("counted"));
}

#[tokio::test]
async fn every_request_is_audited_in_an_intact_chain() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let plaintext = b"audited but never recorded";
    let blob = encrypt_ctx(&kms, md.key_id(), plaintext, &[("tenant", "7")]).await;
    let _ = kms.decrypt().ciphertext_blob(blob.into()).send().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = srv.data_dir().join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[1]["operation"], "Encrypt");
    assert_eq!(lines[1]["key_arns"][0], srv.key_arn(md.key_id()));
    assert_eq!(lines[1]["encryption_context"]["tenant"], "7");
    assert_eq!(lines[1]["principal_arn"], "arn:aws:iam::111122223333:root");
    assert_eq!(lines[2]["outcome"], "InvalidCiphertextException");
    assert!(!text.contains("audited but never"));

    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"))
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // Three kinds of tampering with a copy, each found and located by `p11kms audit verify`.
    let original: Vec<&str> = text.lines().collect();
    let edited = text.replacen("Encrypt", "Decrypt", 1);
    let removed = [original[0], original[2]].join("\n") + "\n";
    let reordered = [original[0], original[2], original[1]].join("\n") + "\n";
    for (name, tampered, line) in [
        ("edited", edited, "line 3"),
        ("removed", removed, "line 2"),
        ("reordered", reordered, "line 2"),
    ] {
        let copy = srv.data_dir().join(format!("{name}.log"));
        std::fs::write(&copy, tampered).unwrap();
        let verify = std::process::Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"))
            .args(["audit", "verify"])
            .arg(&copy)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&verify.stdout);
        assert!(!verify.status.success(), "{name} copy verified: {said}");
        assert!(
            said.contains(line),
            "{name}: expected the break at {line}: {said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_accepted_request() {
    let mut srv = TestServer::start_with(&[("P11KMS_DRAIN_MS", "10000")]);
    let kms = srv.client();
    let md = create_key(&kms).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let kms = kms.clone();
        let key = md.key_id().to_string();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut server_errors) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match kms
                    .encrypt()
                    .key_id(&key)
                    .plaintext(vec![1u8; 512].into())
                    .send()
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                        Some(status) if status >= 500 => {
                            server_errors.push(format!("HTTP {status}"))
                        }
                        Some(_) => {}
                        // Refused or closed before an answer: not accepted by the gateway (the
                        // audit count below proves no completed request went missing).
                        None => tokio::time::sleep(Duration::from_millis(20)).await,
                    },
                }
            }
            (ok, server_errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &srv.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::block_in_place(|| srv.wait_exit(Duration::from_secs(20)));
    assert!(exited, "the gateway did not exit after SIGTERM");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered_ok = 0;
    for worker in workers {
        let (ok, server_errors) = worker.await.unwrap();
        assert!(
            server_errors.is_empty(),
            "5xx during shutdown: {server_errors:?}"
        );
        answered_ok += ok;
    }
    assert!(answered_ok > 0);
    // Every request the gateway accepted is in its audit trail (flushed before exit); each of
    // those the gateway completed must have reached its client.
    let text = std::fs::read_to_string(srv.data_dir().join("audit.log")).unwrap();
    let audited_ok = text
        .lines()
        .filter(|l| l.contains(r#""operation":"Encrypt""#) && l.contains(r#""outcome":"OK""#))
        .count() as u64;
    assert_eq!(
        audited_ok, answered_ok,
        "the gateway completed {audited_ok} Encrypts but clients received {answered_ok}"
    );
}

/// SoftHSM2 frees session objects only at C_Finalize, so the gateway recycles the library
/// every `recycle_after_operations`. Under concurrent load the recycles must be invisible:
/// every request succeeds, and keys made before a recycle keep working after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planned_library_recycles_are_invisible_to_clients() {
    let srv = TestServer::start_with(&[
        ("P11KMS_HSM_RECYCLE_AFTER", "40"),
        ("P11KMS_SESSION_POOL_SIZE", "2"),
    ]);
    let kms = srv.client();
    let a = create_key(&kms).await.key_id;
    let b = create_key(&kms).await.key_id;
    let mut workers = Vec::new();
    for worker in 0..8u8 {
        let kms = kms.clone();
        let (a, b) = (a.clone(), b.clone());
        workers.push(tokio::spawn(async move {
            for round in 0..25u8 {
                let plaintext = [worker, round, 7];
                let blob = encrypt(&kms, &a, &plaintext).await;
                let moved = kms
                    .re_encrypt()
                    .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
                    .destination_key_id(&b)
                    .send()
                    .await
                    .expect("ReEncrypt across recycles")
                    .ciphertext_blob
                    .unwrap()
                    .into_inner();
                assert_eq!(decrypt(&kms, &moved).await, plaintext);
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let (_, metrics) = http_get(&format!("{}/metrics", srv.endpoint())).await;
    let recycles = sample(&metrics, "p11kms_hsm_recycles_total");
    // 600 requests of about 3 token operations each, recycled every 40 operations.
    assert!(recycles >= 10.0, "only {recycles} recycles");
    assert_eq!(sample(&metrics, "p11kms_hsm_reinitialisations_total"), 0.0);
    let (status, _) = http_get(&format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 200);
}

/// With one session, a multi-second RSA 4096 generation must not hold the requests behind
/// it: key generation has its own lane and session. Requests wait at most 300 ms here, so
/// without the lane the Encrypts queued behind a generation would be throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_pair_generation_does_not_stall_other_requests() {
    // A stalled pool would throttle Encrypt after the wait, or let few pairs through; 2 s
    // keeps that visible (three RSA-4096 generations take longer) without failing a request
    // that only waited on a loaded machine.
    let srv = TestServer::start_with(&[
        ("P11KMS_SESSION_POOL_SIZE", "1"),
        ("P11KMS_SESSION_WAIT_MS", "2000"),
    ]);
    let kms = srv.client();
    let key = create_key(&kms).await.key_id;
    let generating = {
        let kms = kms.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            for _ in 0..3 {
                kms.create_key()
                    .key_spec(aws_sdk_kms::types::KeySpec::Rsa4096)
                    .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
                    .send()
                    .await
                    .expect("CreateKey RSA_4096");
            }
            started.elapsed()
        })
    };
    let mut during = 0u32;
    while !generating.is_finished() {
        let blob = encrypt(&kms, &key, b"while a key pair is generated").await;
        assert_eq!(decrypt(&kms, &blob).await, b"while a key pair is generated");
        during += 1;
    }
    let generation = generating.await.expect("generation task");
    assert!(
        during >= 3,
        "only {during} Encrypt+Decrypt pairs finished during {generation:?} of key generation"
    );
}

/// Key-pair generation has one session: a second generation that cannot have it within the
/// wait is throttled (400), never a PKCS#11 failure (500).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_pair_generations_beyond_their_session_are_throttled() {
    let srv = TestServer::start_with(&[("P11KMS_SESSION_WAIT_MS", "300")]);
    let kms = srv.client();
    let key = create_key(&kms).await.key_id;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (kms, key) = (kms.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let result = kms
                .generate_data_key_pair_without_plaintext()
                .key_id(key)
                .key_pair_spec(aws_sdk_kms::types::DataKeyPairSpec::Rsa4096)
                .send()
                .await;
            match result {
                Ok(_) => ("OK".to_string(), 200),
                Err(e) => {
                    let err = api_error::<_, _>(Err::<(), _>(e));
                    (err.code.unwrap_or_default(), err.status)
                }
            }
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    for (code, status) in &outcomes {
        assert!(
            code == "OK" || (code == "ThrottlingException" && *status == 400),
            "{outcomes:?}"
        );
    }
    assert!(
        outcomes.iter().any(|(code, _)| code == "OK"),
        "{outcomes:?}"
    );
}
