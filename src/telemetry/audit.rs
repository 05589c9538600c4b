//! The audit trail: one JSON line per request, hash-chained, appended durably.
//!
//! Each line carries `seq` (consecutive across files) and `prev`, the SHA-256 of the previous
//! line's bytes, so editing, removing or reordering a line breaks the chain at the next line
//! and `p11kms audit verify` says where. Rotation starts a new file whose first line chains
//! to the last line of the old one; verify the files in order. (A chain alone cannot show
//! that lines were cut from the very end; ship the files off the host to guard against
//! that.) Records never contain plaintext, data keys or secrets.
//!
//! Lines are written by one thread ([`writer`]) and `fdatasync`ed after each batch. The
//! async side never blocks on it: a request takes its place in the bounded queue before it
//! runs ([`AuditLog::admit`]) and hands its record over afterwards ([`AuditLog::commit`]).
//! What happens while records cannot be written is [`OnFailure`]'s choice.

mod errors;
mod writer;

pub use errors::{AuditSetupError, ChainError, LineAt};

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{FileError, KmsError};
use crate::telemetry::Metrics;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What one request did, in CloudTrail's spirit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// RFC 3339 UTC.
    pub time: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    pub operation: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub key_arns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub key_material_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_encryption_context: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub grant_ids: Vec<String>,
    /// `OK` or the AWS error name.
    pub outcome: String,
    /// Only on the gateway's own `AuditRecordsDropped` line (`audit.on_failure = "log"`):
    /// how many requests' records were dropped since the line before it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub records_dropped: Option<u64>,
}

/// The `operation` of the line that marks a gap left by dropped records.
pub const RECORDS_DROPPED: &str = "AuditRecordsDropped";

/// A chained line: the record plus its place in the chain.
#[derive(Serialize, Deserialize)]
struct ChainedLine {
    seq: u64,
    prev: String,
    #[serde(flatten)]
    record: AuditRecord,
}

/// What the gateway does while audit records cannot be written (`audit.on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Fail closed: no request runs while the trail is failing, none that finishes then gets
    /// its result, and every record of a request that ran is kept until it is written.
    Refuse,
    /// Fail open: requests are served; records that find the queue full are dropped (and
    /// counted, and the gap marked in the trail once writing resumes).
    Log,
}

/// An `audit.on_failure` value that is neither `refuse` nor `log`.
#[derive(Debug, thiserror::Error)]
#[error("expected refuse or log, got '{0}'")]
pub struct UnknownOnFailure(pub String);

impl std::str::FromStr for OnFailure {
    type Err = UnknownOnFailure;
    fn from_str(text: &str) -> Result<Self, UnknownOnFailure> {
        match text {
            "refuse" => Ok(OnFailure::Refuse),
            "log" => Ok(OnFailure::Log),
            other => Err(UnknownOnFailure(other.into())),
        }
    }
}

/// How the audit trail is written.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Rotate the file once it passes this size.
    pub max_bytes: u64,
    pub on_failure: OnFailure,
    /// Records queued for the writer (and, with `Refuse`, places held by requests running).
    pub queue_capacity: usize,
    /// With `Refuse` only: answer a request only once its record is synced to disk, waiting
    /// at most this long (`audit.wait_for_sync`). `None`: answer once the record is queued.
    pub sync_wait: Option<Duration>,
}

/// Why a request was refused on the audit trail's account (`KMSInternalException`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditRefusal {
    /// Refused before it ran: the writer's last attempt failed (it keeps retrying).
    #[error("the audit trail cannot be written; the request did not run")]
    TrailFailing,
    /// It ran, but the write of its record failed; the record is kept and retried.
    #[error("the request's audit record could not be written; its result was withheld")]
    RecordNotWritten,
    /// It ran, but its record was not on disk within `audit.sync_wait_ms`.
    #[error("the request's audit record was not on disk in time; its result was withheld")]
    NotDurableInTime,
    #[error("the audit writer has stopped")]
    WriterStopped,
}

/// What a file operation of the writer was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    Open,
    Append,
    Sync,
    Truncate,
    Rotate,
}

impl std::fmt::Display for FileAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileAction::Open => "open",
            FileAction::Append => "append to",
            FileAction::Sync => "sync",
            FileAction::Truncate => "truncate",
            FileAction::Rotate => "rotate",
        })
    }
}

/// A failed write of the audit trail. A full disk (or quota) is told apart from the rest:
/// it is the failure operators can fix by freeing space, and the writer recovers by itself.
#[derive(Debug, thiserror::Error)]
pub enum AuditWriteError {
    #[error("no space left to {action} the audit trail {path}: {source}")]
    NoSpace {
        action: FileAction,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {action} the audit trail {path}: {source}")]
    Io {
        action: FileAction,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AuditWriteError {
    /// What `/readyz` says: the kind of failure, without the file's path.
    pub fn summary(&self) -> String {
        match self {
            AuditWriteError::NoSpace { .. } => "no space left on its device".into(),
            AuditWriteError::Io { action, source, .. } => {
                format!("{action} failed: {}", source.kind())
            }
        }
    }

    fn new(action: FileAction, path: &Path, source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let path = path.to_path_buf();
        match source.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => AuditWriteError::NoSpace {
                action,
                path,
                source,
            },
            _ => AuditWriteError::Io {
                action,
                path,
                source,
            },
        }
    }
}

/// Answer to a request waiting for its record to be on disk.
type Durable = oneshot::Sender<Result<(), AuditRefusal>>;

/// What the writer thread is asked to do.
enum Message {
    Record {
        record: Box<AuditRecord>,
        durable: Option<Durable>,
    },
    /// Write and sync everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// What the writer and the request side share.
struct Shared {
    /// `None` while writes succeed; the reason of the last failure while they do not.
    failure: watch::Sender<Option<String>>,
    /// Records dropped (`Log`) since the writer last marked a gap in the trail.
    unmarked_drops: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Handle to the audit writer thread.
pub struct AuditLog {
    sender: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    on_failure: OnFailure,
    sync_wait: Option<Duration>,
}

/// A request's place in the audit queue, taken before the request runs (see
/// [`AuditLog::admit`]).
pub struct AuditSlot {
    permit: Option<mpsc::OwnedPermit<Message>>,
}

impl AuditLog {
    /// Opens (or continues) the trail at `path` and starts its writer thread.
    pub fn open(
        path: PathBuf,
        settings: AuditSettings,
        metrics: Arc<Metrics>,
    ) -> Result<AuditLog, AuditSetupError> {
        set_aside_torn_tail(&path)?;
        let last = match last_line(&path)? {
            Some(line) => Some(line),
            // Just rotated: the chain continues from the newest rotated file.
            None => match newest_rotated(&path) {
                Some(rotated) => last_line(&rotated)?,
                None => None,
            },
        };
        let (seq, prev) = match last {
            Some(line) => {
                let parsed: ChainedLine = serde_json::from_str(&line).map_err(|source| {
                    AuditSetupError::LastLineNotARecord {
                        path: path.clone(),
                        source,
                    }
                })?;
                (parsed.seq, hash_line(&line))
            }
            None => (0, GENESIS.to_string()),
        };
        let file = open_append(&path).map_err(FileError::on("open", &path))?;
        let queue_capacity = settings.queue_capacity.max(1);
        let (sender, receiver) = mpsc::channel(queue_capacity);
        metrics.audit_queue_capacity.set(queue_capacity as i64);
        metrics.audit_healthy.set(1);
        let shared = Arc::new(Shared {
            failure: watch::Sender::new(None),
            unmarked_drops: AtomicU64::new(0),
            metrics,
        });
        let writer = writer::Writer::new(path, file, seq, prev, &settings, shared.clone())?;
        std::thread::Builder::new()
            .name("p11kms-audit".into())
            .spawn(move || writer.run(receiver))
            .map_err(AuditSetupError::WriterThread)?;
        Ok(AuditLog {
            sender,
            shared,
            on_failure: settings.on_failure,
            sync_wait: settings.sync_wait,
        })
    }

    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// Why records cannot be written at the moment, or `None` while they can.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.borrow().clone()
    }

    /// Called before a request runs; never blocks. With `Refuse` a request runs only while
    /// the trail is being written and holds a place in the queue for its record, so the
    /// record always finds room: a failing trail refuses it (`KMSInternalException`), a
    /// full queue (the writer is behind) throttles it (`ThrottlingException`). With `Log`
    /// every request runs, and its record takes its chances in [`AuditLog::commit`].
    pub fn admit(&self) -> Result<AuditSlot, KmsError> {
        if self.on_failure == OnFailure::Log {
            return Ok(AuditSlot { permit: None });
        }
        let refused = |error: KmsError| {
            self.shared.metrics.audit_refused.inc();
            Err(error)
        };
        if self.shared.failure.borrow().is_some() {
            return refused(KmsError::AuditUnavailable(AuditRefusal::TrailFailing));
        }
        match self.sender.clone().try_reserve_owned() {
            Ok(permit) => Ok(AuditSlot {
                permit: Some(permit),
            }),
            Err(mpsc::error::TrySendError::Full(_)) => refused(KmsError::Throttled),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                refused(KmsError::AuditUnavailable(AuditRefusal::WriterStopped))
            }
        }
    }

    /// Hands a request's record to the writer. With `Refuse` the record always goes in (its
    /// place was held), and the result is withheld if the trail is failing by now (or, with
    /// `sync_wait`, unless the record reaches the disk in time); the record stays queued and
    /// is written when the trail recovers. With `Log` it returns at once, and a record that
    /// finds the queue full is dropped and counted.
    pub async fn commit(&self, slot: AuditSlot, record: AuditRecord) -> Result<(), KmsError> {
        let record = Box::new(record);
        let Some(permit) = slot.permit else {
            let message = Message::Record {
                record,
                durable: None,
            };
            if self.sender.try_send(message).is_err() {
                self.shared.metrics.audit_dropped.inc();
                self.shared.unmarked_drops.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        };
        let refusal = match self.sync_wait {
            None => {
                permit.send(Message::Record {
                    record,
                    durable: None,
                });
                if self.shared.failure.borrow().is_none() {
                    return Ok(());
                }
                AuditRefusal::RecordNotWritten
            }
            Some(limit) => {
                let (durable, on_disk) = oneshot::channel();
                let mut failure = self.shared.failure.subscribe();
                permit.send(Message::Record {
                    record,
                    durable: Some(durable),
                });
                tokio::select! {
                    biased;
                    answer = on_disk => match answer {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(refusal)) => refusal,
                        Err(_) => AuditRefusal::WriterStopped,
                    },
                    // A failure elsewhere in the queue: the record would wait for the recovery.
                    _ = failure.wait_for(Option::is_some) => AuditRefusal::RecordNotWritten,
                    _ = tokio::time::sleep(limit) => AuditRefusal::NotDurableInTime,
                }
            }
        };
        self.shared.metrics.audit_refused.inc();
        Err(KmsError::AuditUnavailable(refusal))
    }

    /// Copies the queue's depth (records queued and places held) into its gauge.
    pub fn refresh_metrics(&self) {
        let depth = self.sender.max_capacity() - self.sender.capacity();
        self.shared.metrics.audit_queue_depth.set(depth as i64);
    }

    /// Waits until every record queued so far is on disk, up to `within` (at shutdown);
    /// returns whether they are.
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, written) = oneshot::channel();
        let flushed =
            async { self.sender.send(Message::Flush(done)).await.is_ok() && written.await.is_ok() };
        tokio::time::timeout(within, flushed).await.unwrap_or(false)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// A process killed while writing (SIGKILL, power loss) can leave the last line cut short:
/// every whole line ends with a newline, so bytes after the last one are a torn write of a
/// record that was never synced. They are moved to `<path>-torn-<unix ms>` and the chain
/// continues from the last whole line. A whole last line that does not parse is not a crash
/// but damage, and `AuditLog::open` still refuses it.
fn set_aside_torn_tail(path: &Path) -> Result<(), AuditSetupError> {
    let fail = |e: std::io::Error| FileError::on("set aside the torn end of", path)(e);
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(e).into()),
    };
    let len = file.metadata().map_err(fail)?.len();
    let whole = last_newline_before(&mut file, len)
        .map_err(fail)?
        .map_or(0, |newline| newline + 1);
    if whole == len {
        return Ok(());
    }
    let mut torn = Vec::new();
    file.seek(SeekFrom::Start(whole)).map_err(fail)?;
    file.read_to_end(&mut torn).map_err(fail)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let aside = PathBuf::from(format!("{}-torn-{millis}", path.display()));
    let mut kept = open_append(&aside).map_err(fail)?;
    kept.write_all(&torn).map_err(fail)?;
    kept.sync_all().map_err(fail)?;
    file.set_len(whole).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    tracing::warn!(
        path = %path.display(),
        bytes = torn.len(),
        aside = %aside.display(),
        "the audit trail ended in a torn write (the process was killed while writing); it was set aside"
    );
    Ok(())
}

/// The offset of the last newline before `end`, reading backwards in blocks: a trail of any
/// size is opened without reading it whole.
fn last_newline_before(file: &mut File, end: u64) -> std::io::Result<Option<u64>> {
    const BLOCK: u64 = 64 * 1024;
    let mut block = vec![0u8; BLOCK as usize];
    let mut end = end;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// The last non-empty line of a file, read from its end.
fn last_line(path: &Path) -> Result<Option<String>, AuditSetupError> {
    let fail = |e: std::io::Error| FileError::on("read", path)(e);
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e).into()),
    };
    // `end` is where the candidate line's text stops (before its newline, if any).
    let mut end = file.metadata().map_err(fail)?.len();
    while end > 0 {
        let start = match last_newline_before(&mut file, end).map_err(fail)? {
            // A newline right at the end: the line, if any, ends before it.
            Some(newline) if newline + 1 == end => {
                end = newline;
                continue;
            }
            Some(newline) => newline + 1,
            None => 0,
        };
        let mut line = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(fail)?;
        file.read_exact(&mut line).map_err(fail)?;
        return String::from_utf8(line)
            .map(Some)
            .map_err(|_| AuditSetupError::LastLineNotUtf8 {
                path: path.to_path_buf(),
            });
    }
    Ok(None)
}

/// The rotated file with the highest sequence suffix (`<path>.<seq>`), if any.
fn newest_rotated(path: &Path) -> Option<PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{}.", path.file_name()?.to_string_lossy());
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let seq: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((seq, entry.path()))
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, p)| p)
}

/// Now, as RFC 3339 UTC (the records' `time`).
pub fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn hash_line(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Checks the chain through `files`, in order. Returns the number of records, or where the
/// chain breaks and why.
pub fn verify_files(files: &[PathBuf]) -> Result<u64, ChainError> {
    let mut prev: Option<(String, u64)> = None;
    let mut count = 0;
    for path in files {
        let file = File::open(path).map_err(FileError::on("read", path))?;
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let at = || LineAt {
                path: path.clone(),
                line: index + 1,
            };
            let line = line.map_err(|source| ChainError::ReadLine { at: at(), source })?;
            let parsed: ChainedLine =
                serde_json::from_str(&line).map_err(|_| ChainError::NotARecord { at: at() })?;
            if let Some((prev_hash, prev_seq)) = &prev {
                if parsed.seq != prev_seq + 1 {
                    return Err(ChainError::OutOfSequence {
                        at: at(),
                        seq: parsed.seq,
                        prev_seq: *prev_seq,
                    });
                }
                if &parsed.prev != prev_hash {
                    return Err(ChainError::Broken { at: at() });
                }
            } else if parsed.seq == 1 && parsed.prev != GENESIS {
                return Err(ChainError::BadStart { at: at() });
            }
            prev = Some((hash_line(&line), parsed.seq));
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> AuditRecord {
        AuditRecord {
            time: "2026-11-29T00:00:00Z".into(),
            request_id: format!("r{n}"),
            operation: "Encrypt".into(),
            outcome: "OK".into(),
            ..Default::default()
        }
    }

    fn open(
        path: &Path,
        max_bytes: u64,
        on_failure: OnFailure,
    ) -> Result<AuditLog, AuditSetupError> {
        open_waiting(path, max_bytes, on_failure, None)
    }

    fn open_waiting(
        path: &Path,
        max_bytes: u64,
        on_failure: OnFailure,
        sync_wait: Option<Duration>,
    ) -> Result<AuditLog, AuditSetupError> {
        let settings = AuditSettings {
            max_bytes,
            on_failure,
            queue_capacity: 16,
            sync_wait,
        };
        AuditLog::open(
            path.to_path_buf(),
            settings,
            Arc::new(Metrics::new().unwrap()),
        )
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// Writes `n` records, each answered only once it is on disk.
    fn write(dir: &Path, n: usize, max_bytes: u64) -> PathBuf {
        let path = dir.join("audit.log");
        let wait = Some(Duration::from_secs(10));
        let log = open_waiting(&path, max_bytes, OnFailure::Refuse, wait).unwrap();
        runtime().block_on(async {
            for i in 0..n {
                let slot = log.admit().unwrap();
                log.commit(slot, record(i)).await.unwrap();
            }
        });
        path
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("audit.log."))
            .collect();
        rotated.sort();
        rotated.push(dir.join("audit.log"));
        rotated
    }

    /// `/dev/full` fails every write with ENOSPC (and cannot be cut back): a trail that
    /// never recovers.
    #[test]
    fn refuse_withholds_results_and_then_refuses_while_writes_fail() {
        let log = open(Path::new("/dev/full"), u64::MAX, OnFailure::Refuse).unwrap();
        runtime().block_on(async {
            // Admitted while the trail looked healthy; finishes after the failure is known.
            let running = log.admit().unwrap();
            let first = log.admit().unwrap();
            log.commit(first, record(1)).await.unwrap();
            let failed = poll(|| log.failure().is_some()).await;
            assert!(failed, "the write to /dev/full did not fail");
            let withheld = log.commit(running, record(2)).await.unwrap_err();
            assert_eq!(
                withheld,
                KmsError::AuditUnavailable(AuditRefusal::RecordNotWritten)
            );
            assert_eq!(withheld.wire().code, "KMSInternalException");
            assert_eq!(withheld.wire().status, 500);
            let refused = log.admit().err().unwrap();
            assert_eq!(
                refused,
                KmsError::AuditUnavailable(AuditRefusal::TrailFailing)
            );
        });
        assert_eq!(
            log.failure().as_deref(),
            Some("no space left on its device")
        );
        let metrics = &log.shared.metrics;
        assert_eq!(metrics.audit_healthy.get(), 0);
        assert!(metrics.audit_write_failures.get() >= 1);
        assert_eq!(metrics.audit_refused.get(), 2);
        assert_eq!(metrics.audit_written.get(), 0);
        assert_eq!(metrics.audit_dropped.get(), 0);
    }

    #[test]
    fn refuse_throttles_a_request_that_finds_the_queue_full() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("audit.log"), u64::MAX, OnFailure::Refuse).unwrap();
        // Sixteen requests running hold every place; the seventeenth does not start.
        let running: Vec<AuditSlot> = (0..16).map(|_| log.admit().unwrap()).collect();
        assert_eq!(log.admit().err(), Some(KmsError::Throttled));
        log.refresh_metrics();
        assert_eq!(log.shared.metrics.audit_queue_depth.get(), 16);
        assert_eq!(log.shared.metrics.audit_refused.get(), 1);
        runtime().block_on(async {
            for (i, slot) in running.into_iter().enumerate() {
                log.commit(slot, record(i)).await.unwrap();
            }
            assert!(log.flush(Duration::from_secs(5)).await);
        });
        assert!(log.admit().is_ok());
        assert_eq!(log.shared.metrics.audit_written.get(), 16);
    }

    #[test]
    fn waiting_for_sync_withholds_the_result_whose_record_fails() {
        let wait = Some(Duration::from_secs(10));
        let log = open_waiting(Path::new("/dev/full"), u64::MAX, OnFailure::Refuse, wait).unwrap();
        runtime().block_on(async {
            let slot = log.admit().unwrap();
            let withheld = log.commit(slot, record(1)).await.unwrap_err();
            assert_eq!(
                withheld,
                KmsError::AuditUnavailable(AuditRefusal::RecordNotWritten)
            );
            assert_eq!(
                log.admit().err(),
                Some(KmsError::AuditUnavailable(AuditRefusal::TrailFailing))
            );
        });
    }

    /// Polls `condition` for up to 5 s.
    async fn poll(condition: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn log_serves_while_writes_fail_and_counts_what_it_drops() {
        let log = open(Path::new("/dev/full"), u64::MAX, OnFailure::Log).unwrap();
        let metrics = &log.shared.metrics;
        runtime().block_on(async {
            // First let the writer take one record and start retrying it, so that what
            // follows meets a writer that takes nothing more from the queue.
            let slot = log.admit().unwrap();
            log.commit(slot, record(0)).await.unwrap();
            assert!(poll(|| metrics.audit_healthy.get() == 0).await);
            for i in 1..=100 {
                let slot = log.admit().unwrap();
                log.commit(slot, record(i)).await.unwrap();
            }
        });
        log.refresh_metrics();
        // The queue (16) is full; the rest were dropped, and each drop awaits its marker.
        assert_eq!(metrics.audit_queue_depth.get(), 16);
        assert_eq!(metrics.audit_dropped.get(), 100 - 16);
        assert_eq!(log.shared.unmarked_drops.load(Ordering::Relaxed), 100 - 16);
    }

    #[test]
    fn dropped_records_leave_a_marked_gap_and_an_intact_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = open(&path, u64::MAX, OnFailure::Log).unwrap();
        log.shared.unmarked_drops.store(7, Ordering::Relaxed);
        runtime().block_on(async {
            let slot = log.admit().unwrap();
            log.commit(slot, record(1)).await.unwrap();
            assert!(log.flush(Duration::from_secs(5)).await);
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<AuditRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0].operation, RECORDS_DROPPED);
        assert_eq!(lines[0].records_dropped, Some(7));
        assert_eq!(lines[1].request_id, "r1");
        assert_eq!(verify_files(&[path]).unwrap(), 2);
    }

    #[test]
    fn a_torn_last_line_is_set_aside_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 3, u64::MAX);
        let torn = br#"{"seq":4,"prev":"ab"#;
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(torn)
            .unwrap();
        write(dir.path(), 2, u64::MAX);
        assert_eq!(verify_files(std::slice::from_ref(&path)).unwrap(), 5);
        let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("-torn-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(&aside[0]).unwrap(), torn);
    }

    #[test]
    fn the_last_line_is_read_from_the_end_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines");
        let long = "x".repeat(70_000);
        let mut text: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        text.push_str(&long);
        text.push('\n');
        std::fs::write(&path, &text).unwrap();
        assert_eq!(last_line(&path).unwrap().as_deref(), Some(long.as_str()));
        text.push_str("last\n\n");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(last_line(&path).unwrap().as_deref(), Some("last"));
        std::fs::write(&path, "only").unwrap();
        assert_eq!(last_line(&path).unwrap().as_deref(), Some("only"));
        std::fs::write(&path, "").unwrap();
        assert_eq!(last_line(&path).unwrap(), None);
    }

    #[test]
    fn a_whole_last_line_that_is_no_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 2, u64::MAX);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"not a record\n")
            .unwrap();
        let refused = open(&path, u64::MAX, OnFailure::Refuse)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(refused.contains("not an audit record"), "{refused}");
    }

    #[test]
    fn an_intact_chain_verifies_across_rotation_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 20, 1500);
        write(dir.path(), 5, 1500);
        assert_eq!(verify_files(&files(dir.path())).unwrap(), 25);
    }

    #[test]
    fn edits_removals_and_reordering_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 6, u64::MAX);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let check = |lines: Vec<String>| {
            let p = dir.path().join("copy.log");
            std::fs::write(&p, lines.join("\n") + "\n").unwrap();
            verify_files(&[p])
        };
        let mut edited: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        edited[2] = edited[2].replace("Encrypt", "Decrypt");
        assert!(check(edited).unwrap_err().to_string().contains("line 4"));
        let mut removed: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        removed.remove(3);
        assert!(check(removed).unwrap_err().to_string().contains("line 4"));
        let mut swapped: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        swapped.swap(1, 2);
        assert!(check(swapped).is_err());
    }
}
