//! Server-level behaviour: state survives a restart, concurrent requests, and the log keeps
//! secrets out.

mod common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use common::*;

#[tokio::test]
async fn keys_aliases_and_ciphertexts_survive_a_restart() {
    let mut srv = TestServer::start();
    let kms = srv.client();
    let kept = create_key(&kms).await;
    let disabled = create_key(&kms).await;
    let alias = unique_alias();
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(kept.key_id())
        .send()
        .await
        .unwrap();
    kms.disable_key()
        .key_id(disabled.key_id())
        .send()
        .await
        .unwrap();
    let blob = encrypt_ctx(&kms, kept.key_id(), b"persisted", &[("k", "v")]).await;

    srv.restart();
    let kms = srv.client();

    let md = describe(&kms, &alias).await;
    assert_eq!(md.key_id(), kept.key_id());
    assert_eq!(md.current_key_material_id(), kept.current_key_material_id());
    assert_eq!(
        describe(&kms, disabled.key_id()).await.key_state(),
        Some(&KeyState::Disabled)
    );
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context(&[("k", "v")])))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"persisted");
    // New keys can still be made after the restart (the token is reopened, not re-created).
    let fresh = create_key(&kms).await;
    let blob = encrypt(&kms, fresh.key_id(), b"after restart").await;
    assert_eq!(decrypt(&kms, &blob).await, b"after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_all_succeed() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32u32 {
        let kms = kms.clone();
        let key_id = md.key_id().to_string();
        tasks.spawn(async move {
            let data = format!("message number {i}").into_bytes();
            let blob = encrypt(&kms, &key_id, &data).await;
            assert_eq!(decrypt(&kms, &blob).await, data);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a concurrent encrypt/decrypt failed");
    }
}

#[tokio::test]
async fn logs_and_state_files_never_contain_plaintexts_data_keys_or_the_pin() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;

    let marker = b"PLAINTEXT-MARKER-7f3a9c-do-not-log";
    let blob = encrypt_ctx(&kms, md.key_id(), marker, &[("ctx", "value")]).await;
    kms.decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context(&[("ctx", "value")])))
        .send()
        .await
        .unwrap();
    let dk = kms
        .generate_data_key()
        .key_id(md.key_id())
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let data_key = dk.plaintext().unwrap().as_ref().to_vec();
    let random = kms
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .unwrap()
        .plaintext()
        .unwrap()
        .as_ref()
        .to_vec();
    // A failing request too: errors must not echo the plaintext either.
    let _ = kms
        .encrypt()
        .key_id(UNKNOWN_KEY_ID)
        .plaintext(Blob::new(marker.as_slice()))
        .send()
        .await;

    let log = srv.log_text();
    assert!(!log.is_empty(), "the server logged nothing at debug level");
    let mut secrets: Vec<(&str, Vec<u8>)> = vec![
        ("plaintext", marker.to_vec()),
        ("plaintext (base64)", b64(marker).into_bytes()),
        ("data key", data_key.clone()),
        ("data key (base64)", b64(&data_key).into_bytes()),
        ("data key (hex)", hex::encode(&data_key).into_bytes()),
        ("random bytes (base64)", b64(&random).into_bytes()),
    ];
    // No file the server writes (log, audit trail, SQLite store, token) holds them.
    for path in files_under(srv.data_dir()) {
        let content = std::fs::read(&path).unwrap_or_default();
        for (what, secret) in &secrets {
            assert!(
                !contains(&content, secret),
                "{} contains the {what}",
                path.display()
            );
        }
    }
    // The PIN lives in user.pin (and whatever SoftHSM keeps), never in the log or audit trail.
    if let Ok(pin) = std::fs::read_to_string(srv.data_dir().join("user.pin")) {
        let pin = pin.trim().as_bytes().to_vec();
        if pin.len() >= 4 {
            secrets.push(("user PIN", pin));
        }
    }
    let audit = std::fs::read(srv.data_dir().join("audit.log")).unwrap_or_default();
    for (what, secret) in &secrets {
        assert!(
            !contains(log.as_bytes(), secret),
            "the server log contains the {what}"
        );
        assert!(
            !contains(&audit, secret),
            "the audit trail contains the {what}"
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The scheduling policy of each of the gateway's threads whose name starts with `prefix`,
/// read from `/proc/<pid>/task/<tid>/stat` (field 41: 0 is SCHED_OTHER, 3 SCHED_BATCH).
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32, prefix: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // The name in parentheses may hold spaces; fields are counted after it (state is 3).
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let policy = after_name.split_whitespace().nth(41 - 3).unwrap();
        policies.push(policy.parse().unwrap());
    }
    policies
}

#[cfg(target_os = "linux")]
#[test]
fn core_threads_run_under_sched_batch_unless_turned_off() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    let batch = TestServer::start_with(&[("P11KMS_SESSION_POOL_SIZE", "3")]);
    // Each thread sets its own policy as it starts; give the last one a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut core = thread_policies(batch.pid(), "p11kms-core");
    while core != vec![SCHED_BATCH; 3] && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        core = thread_policies(batch.pid(), "p11kms-core");
    }
    assert_eq!(core, vec![SCHED_BATCH; 3], "one per session");
    let keygen = thread_policies(batch.pid(), "p11kms-keygen");
    assert!(!keygen.is_empty() && keygen.iter().all(|&p| p == SCHED_BATCH));
    let tokio = thread_policies(batch.pid(), "tokio");
    assert!(!tokio.is_empty() && tokio.iter().all(|&p| p == SCHED_OTHER));

    let normal = TestServer::start_with(&[
        ("P11KMS_SESSION_POOL_SIZE", "3"),
        ("P11KMS_BATCH_SCHEDULING", "false"),
    ]);
    assert_eq!(
        thread_policies(normal.pid(), "p11kms-core"),
        vec![SCHED_OTHER; 3]
    );
}

/// jemalloc replaces `malloc` for the whole process, the PKCS#11 library included: only the
/// unprefixed build reads `MALLOC_CONF` (a prefixed one would read `_RJEM_MALLOC_CONF`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_process_allocator_is_jemalloc_under_the_standard_names() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p11kms"))
        .arg("--version")
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Begin jemalloc statistics"),
        "no jemalloc statistics on stderr: {stderr:.200}"
    );
}

/// The request bodies' chunks are zeroed in the connection buffer they arrived in: every
/// byte of every body is counted wiped once its connection has moved on or closed, none
/// released unwiped (`p11kms_request_body_bytes_total`).
#[tokio::test]
async fn request_body_buffers_are_wiped_after_use() {
    let srv = TestServer::start();
    let kms = srv.client();
    let key = create_key(&kms).await;
    // A fresh server, and bodies whose lengths are known: count only raw requests from here.
    let scrape = |srv: &TestServer| {
        let url = format!("{}/metrics", srv.endpoint());
        async move {
            let text = reqwest::get(url).await.unwrap().text().await.unwrap();
            let value = |wiped: &str| -> u64 {
                let series = format!("p11kms_request_body_bytes_total{{wiped=\"{wiped}\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
                    .unwrap_or(0)
            };
            (value("yes"), value("no"))
        }
    };
    drop(kms);
    let (wiped_before, _) = common::poll_until(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(100),
        || async {
            // The SDK's kept-alive connection closes when the client goes; its bodies count then.
            let (yes, no) = scrape(&srv).await;
            Some((yes, no))
        },
    )
    .await
    .unwrap();
    let mut sent = 0u64;
    for i in 0..20 {
        let plaintext = b64(format!("secret number {i}").as_bytes());
        let body = format!(
            r#"{{"KeyId":"{}","Plaintext":"{plaintext}"}}"#,
            key.key_id()
        );
        sent += body.len() as u64;
        let response = srv.raw("TrentService.Encrypt", body).send().await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let (wiped, unwiped) = common::poll_until(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(100),
        || async {
            let (yes, no) = scrape(&srv).await;
            (yes >= wiped_before + sent).then_some((yes, no))
        },
    )
    .await
    .unwrap_or_else(|| panic!("fewer than {sent} request body bytes counted wiped"));
    assert!(wiped >= wiped_before + sent);
    assert_eq!(unwiped, 0, "request body bytes released unwiped");
}

/// On a kept-alive connection a request's body chunks are wiped when the connection reads
/// its next request (hyper then moves to a fresh read buffer), not only when it closes.
#[tokio::test]
async fn request_bodies_on_a_kept_alive_connection_are_wiped_as_it_moves_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::start();
    let address = srv.endpoint().trim_start_matches("http://").to_string();
    let wiped = |srv: &TestServer| {
        let url = format!("{}/metrics", srv.endpoint());
        async move {
            let text = reqwest::get(url).await.unwrap().text().await.unwrap();
            let value = |label: &str| -> u64 {
                let series = format!("p11kms_request_body_bytes_total{{wiped=\"{label}\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
                    .unwrap_or(0)
            };
            (value("yes"), value("no"))
        }
    };
    let (before, _) = wiped(&srv).await;
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut sizes = Vec::new();
    for i in 0..5 {
        // Unsigned: refused after the body was read, which is all this needs.
        let body = format!(r#"{{"KeyId":"alias/x","Plaintext":"{}"}}"#, b64(&[i; 48]));
        sizes.push(body.len() as u64);
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {address}\r\nX-Amz-Target: TrentService.Encrypt\r\n\
             Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // Read the whole response (headers, then Content-Length bytes).
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: ")?.trim().parse().ok())
                    .expect("content-length");
                if response.len() >= end + 4 + length {
                    assert!(text.starts_with("http/1.1 400"), "{text}");
                    break;
                }
            }
        }
    }
    // All but the last body are wiped while the connection stays open.
    let all_but_last: u64 = sizes[..4].iter().sum();
    let (yes, no) = common::poll_until(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(50),
        || async {
            let (yes, no) = wiped(&srv).await;
            (yes >= before + all_but_last).then_some((yes, no))
        },
    )
    .await
    .unwrap_or_else(|| panic!("bodies of a kept-alive connection not wiped"));
    assert!(yes >= before + all_but_last);
    assert_eq!(no, 0);
    drop(stream);
    let everything: u64 = sizes.iter().sum();
    common::poll_until(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(50),
        || async { (wiped(&srv).await.0 >= before + everything).then_some(()) },
    )
    .await
    .expect("the last body wiped when its connection closed");
}
