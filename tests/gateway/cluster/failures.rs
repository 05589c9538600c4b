//! Replicas and PostgreSQL killed or restarted under load: nothing acknowledged is lost, and service comes back without a restart.

use super::*;

/// What the load recorded: keys whose CreateKey was acknowledged, ciphertexts whose
/// Encrypt was acknowledged.
#[derive(Default)]
struct Acknowledged {
    keys: Vec<String>,
    ciphertexts: Vec<(Vec<u8>, Vec<u8>)>,
    failures_after_kill: usize,
}

/// 16 clients spread over two replicas (CreateKey and Encrypt); replica A is SIGKILLed
/// mid-load. Clients of A move to B. The survivor serves every request after the kill;
/// every acknowledged key exists and every acknowledged ciphertext decrypts, on B and on A
/// once restarted (it catches up with what B did meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_nothing_acknowledged() {
    // All 16 clients on one replica after the kill: requests queue for an HSM session
    // rather than being throttled after the default wait (the SDK clients here do not
    // retry, and this 2-core machine runs other builds too).
    let mut cluster = Cluster::start(2, &[("P11KMS_SESSION_WAIT_MS", "20000")]);
    let key = create_key(&cluster.client(0)).await.key_id().to_string();
    let endpoints = [cluster.client(0), cluster.client(1)];
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for c in 0..16usize {
        let (a, b) = (endpoints[0].clone(), endpoints[1].clone());
        let (key, killed, acked) = (key.clone(), killed.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let dead = killed.load(std::sync::atomic::Ordering::SeqCst);
                // Half the clients use A until it dies (a load balancer's health check then
                // takes A out); requests to A that fail around the kill are not acknowledged.
                let client = if c % 2 == 0 && !dead { &a } else { &b };
                let on_survivor = c % 2 == 1 || dead;
                if n % 4 == 0 {
                    match client.create_key().send().await {
                        Ok(r) => acked
                            .lock()
                            .unwrap()
                            .keys
                            .push(r.key_metadata.unwrap().key_id().to_string()),
                        Err(_) if !on_survivor => {}
                        Err(e) => {
                            eprintln!("CreateKey on the survivor failed: {e:?}");
                            acked.lock().unwrap().failures_after_kill += 1;
                        }
                    }
                } else {
                    let plaintext = format!("client {c} request {n}").into_bytes();
                    match client
                        .encrypt()
                        .key_id(&key)
                        .plaintext(Blob::new(plaintext.clone()))
                        .send()
                        .await
                    {
                        Ok(r) => acked
                            .lock()
                            .unwrap()
                            .ciphertexts
                            .push((r.ciphertext_blob.unwrap().into_inner(), plaintext)),
                        Err(_) if !on_survivor => {}
                        Err(e) => {
                            eprintln!("Encrypt on the survivor failed: {e:?}");
                            acked.lock().unwrap().failures_after_kill += 1;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sigkill(cluster.replicas[0].pid());
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_eq!(
        acked.failures_after_kill, 0,
        "the survivor refused requests"
    );
    println!(
        "acknowledged: {} keys, {} ciphertexts",
        acked.keys.len(),
        acked.ciphertexts.len()
    );
    assert!(acked.keys.len() > 5 && acked.ciphertexts.len() > 50);
    let b = cluster.client(1);
    for key in &acked.keys {
        // Keys made on A before the kill: B unwraps their material from the store.
        assert_eq!(describe(&b, key).await.key_id(), key);
        encrypt(&b, key, b"on the survivor").await;
    }
    for (blob, plaintext) in &acked.ciphertexts {
        assert_eq!(&decrypt(&b, blob).await, plaintext);
    }
    // A restarts and serves everything, including what B did while A was down.
    cluster.replicas[0].restart();
    let a = cluster.client(0);
    for key in &acked.keys {
        assert_eq!(describe(&a, key).await.key_id(), key);
        encrypt(&a, key, b"after the restart").await;
    }
    for (blob, plaintext) in acked.ciphertexts.iter().step_by(7) {
        assert_eq!(&decrypt(&a, blob).await, plaintext);
    }
}

/// PostgreSQL stopped (immediate) and started again under load on two replicas: requests
/// in between get DependencyTimeoutException (never a 4xx, never a lost connection), and
/// both replicas serve again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_load_gives_typed_errors_then_recovery() {
    let cluster = Cluster::start(2, &[]);
    let key = create_key(&cluster.client(0)).await.key_id().to_string();
    let clients = [cluster.client(0), cluster.client(1)];
    let codes = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut load = Vec::new();
    for c in 0..8usize {
        let client = clients[c % 2].clone();
        let (key, codes) = (key.clone(), codes.clone());
        load.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                let outcome = client
                    .encrypt()
                    .key_id(&key)
                    .plaintext(Blob::new(b"x".to_vec()))
                    .send()
                    .await;
                let code = match outcome {
                    Ok(_) => "OK".to_string(),
                    Err(e) => api_error::<(), _>(Err(e))
                        .code
                        .unwrap_or_else(|| "none".into()),
                };
                *codes.lock().unwrap().entry(code).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.pg.stop_immediate();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.pg.start_again();
    let restarted = Instant::now();
    // Each replica serves again, while the load goes on, without a restart.
    for (i, client) in clients.iter().enumerate() {
        let back = poll_until(
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async {
                client
                    .encrypt()
                    .key_id(&key)
                    .plaintext(Blob::new(b"y".to_vec()))
                    .send()
                    .await
                    .ok()
            },
        )
        .await;
        assert!(back.is_some(), "replica {i} did not recover");
        println!(
            "replica {i} serving {} ms after pg_ctl start -w returned",
            restarted.elapsed().as_millis()
        );
    }
    for task in load {
        task.await.unwrap();
    }
    let codes = codes.lock().unwrap().clone();
    println!("outcomes during a PostgreSQL restart: {codes:?}");
    for code in codes.keys() {
        assert!(
            code == "OK" || code == "DependencyTimeoutException",
            "unexpected outcome {code}: {codes:?}"
        );
    }
    assert!(
        codes
            .get("DependencyTimeoutException")
            .copied()
            .unwrap_or(0)
            > 0
    );
    for replica in &cluster.replicas {
        assert_eq!(
            http_status(&format!("{}/readyz", replica.endpoint())).await,
            200
        );
    }
}

/// A replica started while PostgreSQL is down starts anyway: /readyz is 503, requests get
/// DependencyTimeoutException; once PostgreSQL is up it migrates the schema and serves,
/// without a restart.
///
/// Token mode, because that is the mode in which it holds: a domain-mode replica must read
/// the active domain key from the store before it serves, so while PostgreSQL is down it
/// refuses to start (checked first here) and its supervisor starts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_postgres_is_down_serves_once_it_is_up() {
    let domain = Cluster::start(0, &[]);
    domain.pg.stop_immediate();
    let env = domain.replica_env(0);
    let mut serve = Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"));
    serve.arg("serve").env_remove("SOFTHSM2_CONF");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            serve.env_remove(&name);
        }
    }
    let mut child = serve
        .envs(env)
        .env("P11KMS_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if refused_at.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("a domain-mode replica kept running with PostgreSQL down");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("cannot read the domain keys from the store"),
        "{stderr}"
    );

    let mut cluster = Cluster::start_token_mode(0, &[("P11KMS_JOB_INTERVAL_MS", "200")]);
    cluster.pg.stop_immediate();
    cluster.replicas.push(cluster.start_replica());
    let srv = &cluster.replicas[0];
    let kms = srv.client();
    assert_eq!(
        http_status(&format!("{}/readyz", srv.endpoint())).await,
        503
    );
    let err = api_error(kms.create_key().send().await);
    assert_eq!(err.code.as_deref(), Some("DependencyTimeoutException"));
    let pid = srv.pid();
    cluster.pg.start_again();
    let key = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { kms.create_key().send().await.ok() },
    )
    .await
    .expect("serves once PostgreSQL is up");
    let key = key.key_metadata.unwrap().key_id().to_string();
    assert_eq!(decrypt(&kms, &encrypt(&kms, &key, b"z").await).await, b"z");
    assert_eq!(
        http_status(&format!("{}/readyz", srv.endpoint())).await,
        200
    );
    assert_eq!(srv.pid(), pid);
    // The job loop runs under its lease once the store answers.
    let ran = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            let text = plain_http::get(&format!("{}/metrics", srv.endpoint()))
                .await
                .ok()?
                .text();
            text.contains("p11kms_job_rounds_total{job=\"deletion\",outcome=\"ran\"}")
                .then_some(())
        },
    )
    .await;
    assert!(ran.is_some(), "no job round ran");
}
