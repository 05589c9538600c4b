//! The audit trail on a full disk, for real: the trail lives on a 256 KiB tmpfs, a filler file
//! takes the rest of it, and the gateway (the real binary) must then refuse requests
//! (`audit.on_failure = "refuse"`) or serve them and count what it dropped (`"log"`), keep the
//! hash chain intact with no torn line, and recover by itself once the filler is deleted.
//!
//! Mounting needs root (CAP_SYS_ADMIN); without it the tests say why and pass without
//! running. CI runs as root.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// A small tmpfs mounted on a fresh directory, unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    /// `None` (with the reason printed) where this process may not mount.
    fn mount(size: &str) -> Option<SmallTmpfs> {
        if let Some(reason) = cannot_mount() {
            eprintln!("SKIPPED: {reason}; this test mounts a size-limited tmpfs");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("p11kms-audit-tmpfs-")
            .tempdir()
            .expect("create mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed as root: {status}");
        Some(SmallTmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a server not yet reaped): detach it now, freed when last closed.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Why this process cannot mount a tmpfs, if it cannot: not root, or no CAP_SYS_ADMIN.
fn cannot_mount() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    let uid = field("Uid:").unwrap_or_default();
    if uid != "0" {
        return Some(format!("not running as root (uid {uid})"));
    }
    const CAP_SYS_ADMIN: u32 = 21;
    let caps = field("CapEff:").and_then(|hex| u64::from_str_radix(&hex, 16).ok());
    match caps {
        Some(caps) if caps & (1 << CAP_SYS_ADMIN) != 0 => None,
        _ => Some("root without CAP_SYS_ADMIN (an unprivileged container)".into()),
    }
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create filler");
    let block = [0u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull,
                    "filling the tmpfs: {e}"
                );
                break;
            }
        }
    }
    // Single bytes too, in case a partial block is left.
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
}

async fn get(url: String) -> (u16, String) {
    http_get(&url).await
}

/// The value of one sample line, e.g. `p11kms_audit_healthy`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.starts_with(' ').then(|| rest.trim().parse().ok())?
        })
        .unwrap_or(f64::NAN)
}

async fn metrics(srv: &TestServer) -> String {
    get(format!("{}/metrics", srv.endpoint())).await.1
}

async fn encrypt_raw(srv: &TestServer, key_id: &str) -> RawResponse {
    let body = serde_json::json!({ "KeyId": key_id, "Plaintext": b64(b"audited") });
    srv.raw("TrentService.Encrypt", body.to_string())
        .send()
        .await
}

fn request_id(response: &RawResponse) -> String {
    response
        .header("x-amzn-requestid")
        .expect("x-amzn-RequestId")
        .to_string()
}

/// The trail's records by request id (outcome), after checking every line is whole JSON.
fn records(trail: &Path) -> (Vec<serde_json::Value>, HashMap<String, String>) {
    let text = std::fs::read_to_string(trail).expect("read the trail");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the trail ends in a torn line: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a record ({e}): {l}")))
        .collect();
    let by_id = lines
        .iter()
        .filter_map(|l| {
            Some((
                l["request_id"].as_str()?.to_string(),
                l["outcome"].as_str()?.to_string(),
            ))
        })
        .collect();
    (lines, by_id)
}

fn verify(trail: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"))
        .args(["audit", "verify"])
        .arg(trail)
        .output()
        .expect("run p11kms audit verify");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "audit verify: {said}");
    said
}

/// Starts a gateway whose audit trail is on `tmpfs`.
fn start_on(tmpfs: &SmallTmpfs, extra: &[(&str, &str)]) -> (TestServer, PathBuf) {
    let trail = tmpfs.path().join("audit.log");
    let trail_text = trail.display().to_string();
    let mut env = vec![("P11KMS_AUDIT_LOG", trail_text.as_str())];
    env.extend_from_slice(extra);
    (TestServer::start_with(&env), trail)
}

/// Makes the trail's length not a multiple of the page size, so that filling the tmpfs
/// leaves room for part of a line: the first failed append is then a short write, which
/// must be cut back.
async fn unalign(srv: &TestServer, key_id: &str, trail: &Path) {
    for _ in 0..4 {
        let len = std::fs::metadata(trail).map(|m| m.len()).unwrap_or(0);
        if len % 4096 != 0 {
            return;
        }
        assert_eq!(encrypt_raw(srv, key_id).await.status, 200);
    }
}

/// Refused before it ran (`TrailFailing`), or ran and had its result withheld.
const NOT_CARRIED_OUT: &str = "was not carried out";
const MAY_HAVE_TAKEN_EFFECT: &str = "may have taken effect";

#[tokio::test]
async fn a_full_disk_refuses_requests_until_space_frees_and_loses_no_record() {
    // The default: `refuse` (no P11KMS_AUDIT_ON_FAILURE), answering once a record is queued.
    refuse_on_a_full_disk(&[], false).await;
}

#[tokio::test]
async fn waiting_for_sync_a_full_disk_withholds_the_result_whose_record_failed() {
    refuse_on_a_full_disk(&[("P11KMS_AUDIT_WAIT_FOR_SYNC", "1")], true).await;
}

async fn refuse_on_a_full_disk(env: &[(&str, &str)], waits_for_sync: bool) {
    let Some(tmpfs) = SmallTmpfs::mount("256k") else {
        return;
    };
    let (srv, trail) = start_on(&tmpfs, env);
    let pid = srv.pid();
    let kms = srv.client();
    let key = create_key(&kms).await;
    let key_id = key.key_id().to_string();
    unalign(&srv, &key_id, &trail).await;

    fill(&tmpfs.path().join("filler"));

    // Answers that came back OK; requests that ran but whose result was withheld; requests
    // refused before they ran.
    let mut answered_ok = Vec::new();
    let mut withheld = Vec::new();
    let mut refused = Vec::new();
    let mut first_refusal = None;
    for _ in 0..200 {
        let response = encrypt_raw(&srv, &key_id).await;
        if response.status == 200 {
            answered_ok.push(request_id(&response));
            continue;
        }
        first_refusal = Some(response);
        break;
    }
    let first = first_refusal.expect("200 requests on a full disk were all answered OK");
    assert_eq!(first.status, 500, "{}", first.text());
    assert_eq!(first.error_code().as_deref(), Some("KMSInternalException"));
    if first.text().contains(MAY_HAVE_TAKEN_EFFECT) {
        withheld.push(request_id(&first));
    } else {
        assert!(
            !waits_for_sync,
            "a request that waits for its record must learn it failed: {}",
            first.text()
        );
        assert!(first.text().contains(NOT_CARRIED_OUT), "{}", first.text());
        refused.push(request_id(&first));
    }
    eprintln!(
        "{} requests answered OK after the fill; the first refusal: {}",
        answered_ok.len(),
        first.text()
    );

    // While the disk stays full: every KMS request is refused before it runs.
    for _ in 0..5 {
        let response = encrypt_raw(&srv, &key_id).await;
        assert_eq!(response.status, 500, "{}", response.text());
        assert_eq!(
            response.error_code().as_deref(),
            Some("KMSInternalException")
        );
        assert!(
            response.text().contains(NOT_CARRIED_OUT),
            "{}",
            response.text()
        );
        refused.push(request_id(&response));
    }
    let described = kms.describe_key().key_id(&key_id).send().await;
    let described = api_error(described);
    assert_eq!(described.status, 500);
    assert_eq!(described.code.as_deref(), Some("KMSInternalException"));

    let (status, text) = get(format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("audit trail"), "{text}");
    assert!(text.contains("no space left"), "{text}");
    let during = metrics(&srv).await;
    assert_eq!(sample(&during, "p11kms_audit_healthy"), 0.0, "{during}");
    assert!(sample(&during, "p11kms_audit_write_failures_total") >= 1.0);
    assert!(sample(&during, "p11kms_audit_refused_requests_total") >= 7.0);
    assert_eq!(sample(&during, "p11kms_audit_records_dropped_total"), 0.0);

    // Even now the trail holds only whole lines, and its chain verifies.
    records(&trail);
    verify(&trail);

    // A longer outage, so that the writer's pause between attempts reaches its longest
    // (500 ms): still refused at the end of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = encrypt_raw(&srv, &key_id).await;
    assert!(
        response.text().contains(NOT_CARRIED_OUT),
        "{}",
        response.text()
    );
    refused.push(request_id(&response));

    // Space frees up: the same process serves again within seconds.
    std::fs::remove_file(tmpfs.path().join("filler")).expect("remove filler");
    let freed = Instant::now();
    let recovered = loop {
        let response = encrypt_raw(&srv, &key_id).await;
        if response.status == 200 {
            answered_ok.push(request_id(&response));
            break freed.elapsed();
        }
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "still refused 5 s after space was freed: {}",
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "recovered {} ms after the filler was deleted",
        recovered.as_millis()
    );
    assert_eq!(srv.pid(), pid);
    let (status, text) = get(format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 200, "{text}");
    let after = metrics(&srv).await;
    assert_eq!(sample(&after, "p11kms_audit_healthy"), 1.0, "{after}");
    // Answered once queued, the last record may still be in its group-commit tick.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Nothing lost: every OK answer has its record, and so has every request that ran but
    // had its result withheld (kept and retried); the ones refused before they ran did
    // nothing, and have none.
    let (lines, by_id) = records(&trail);
    for id in answered_ok.iter().chain(&withheld) {
        assert_eq!(
            by_id.get(id).map(String::as_str),
            Some("OK"),
            "request {id}"
        );
    }
    for id in &refused {
        assert!(!by_id.contains_key(id), "refused request {id} has a record");
    }
    let said = verify(&trail);
    assert!(said.contains(&format!("{} records", lines.len())), "{said}");
    let log = srv.log_text();
    assert!(log.contains("audit write failed"), "no failure was logged");
    assert!(log.contains("the audit trail is written again"));
    assert!(
        log.contains("cut a short audit write back to the last whole line"),
        "the fill left room for part of a line, so a short write should have been cut"
    );
    drop(srv);
}

#[tokio::test]
async fn with_on_failure_log_a_full_disk_is_served_and_the_dropped_records_counted() {
    let Some(tmpfs) = SmallTmpfs::mount("256k") else {
        return;
    };
    let (srv, trail) = start_on(
        &tmpfs,
        &[
            ("P11KMS_AUDIT_ON_FAILURE", "log"),
            ("P11KMS_AUDIT_QUEUE_CAPACITY", "16"),
        ],
    );
    let kms = srv.client();
    let key = create_key(&kms).await;
    let key_id = key.key_id().to_string();
    unalign(&srv, &key_id, &trail).await;
    fill(&tmpfs.path().join("filler"));

    let sent = 100;
    for _ in 0..sent {
        let response = encrypt_raw(&srv, &key_id).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let (status, text) = get(format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 200, "fail open stays ready: {text}");
    let during = metrics(&srv).await;
    assert_eq!(sample(&during, "p11kms_audit_healthy"), 0.0, "{during}");
    assert!(sample(&during, "p11kms_audit_write_failures_total") >= 1.0);
    let dropped = sample(&during, "p11kms_audit_records_dropped_total");
    assert!(dropped >= 50.0, "dropped {dropped} of {sent}: {during}");
    records(&trail);
    verify(&trail);

    std::fs::remove_file(tmpfs.path().join("filler")).expect("remove filler");
    let healthy = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { (sample(&metrics(&srv).await, "p11kms_audit_healthy") == 1.0).then_some(()) },
    )
    .await;
    assert!(healthy.is_some(), "the writer did not recover within 5 s");
    // The next record carries the note of the gap before it.
    assert_eq!(encrypt_raw(&srv, &key_id).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (lines, _) = records(&trail);
    let noted: f64 = lines
        .iter()
        .filter(|l| l["operation"] == "AuditRecordsDropped")
        .map(|l| l["records_dropped"].as_f64().unwrap_or(0.0))
        .sum();
    let after = metrics(&srv).await;
    assert_eq!(
        noted,
        sample(&after, "p11kms_audit_records_dropped_total"),
        "the trail marks every dropped record"
    );
    let encrypts = lines.iter().filter(|l| l["operation"] == "Encrypt").count() as f64;
    // Every Encrypt since the fill is either in the trail or counted as dropped.
    let before_fill = 4.0;
    assert!(
        encrypts + noted >= f64::from(sent + 1)
            && encrypts + noted <= f64::from(sent + 1) + before_fill,
        "{encrypts} Encrypt records + {noted} dropped for {sent} + 1 requests"
    );
    verify(&trail);
    drop(srv);
}
