//! The audit writer thread: group commit, retries with backoff, and no torn lines.
//!
//! A batch is encoded once (its `seq` and `prev` fixed) and then appended until the append
//! succeeds: a batch is never given up, so the chain has no hole. A failed append may leave
//! part of a line (a short write on a full disk); the file is cut back to its last whole line
//! at once, and again before the next attempt if that cut failed, so the file never holds a
//! torn line for longer than the failure lasts and each retry continues the chain exactly.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{
    hash_line, open_append, AuditRecord, AuditRefusal, AuditSettings, AuditWriteError, ChainedLine,
    Durable, FileAction, Message, Shared, RECORDS_DROPPED,
};

/// How long the writer gathers records between two syncs while requests keep coming:
/// senders then find it asleep rather than waiting on the queue, so a request never pays for
/// waking it, and one `fdatasync` covers a tick's requests. When requests wait for their
/// records (`audit.wait_for_sync`) the writer goes straight on with what queued meanwhile.
const GROUP_COMMIT_TICK: Duration = Duration::from_millis(5);
/// The first pause after a failed append; it doubles up to `RETRY_LONGEST`.
const RETRY_FIRST: Duration = Duration::from_millis(10);
/// The longest pause between two attempts: how long a recovered disk may go unnoticed.
const RETRY_LONGEST: Duration = Duration::from_millis(500);

pub(super) struct Writer {
    path: PathBuf,
    max_bytes: u64,
    /// `None` after a rotation whose new file could not be opened; the next append opens it.
    file: Option<File>,
    /// Bytes of whole lines in `file`; a failed append is cut back to this length.
    committed_len: u64,
    /// A failed append may have left bytes past `committed_len` that are not cut yet.
    torn: bool,
    seq: u64,
    prev: String,
    tick: Option<Duration>,
    batch_limit: usize,
    shared: Arc<Shared>,
}

impl Writer {
    pub(super) fn new(
        path: PathBuf,
        file: File,
        seq: u64,
        prev: String,
        settings: &AuditSettings,
        shared: Arc<Shared>,
    ) -> Result<Writer, AuditWriteError> {
        let committed_len = file
            .metadata()
            .map_err(|e| AuditWriteError::new(FileAction::Open, &path, e))?
            .len();
        Ok(Writer {
            path,
            max_bytes: settings.max_bytes,
            file: Some(file),
            committed_len,
            torn: false,
            seq,
            prev,
            tick: settings.sync_wait.is_none().then_some(GROUP_COMMIT_TICK),
            batch_limit: settings.queue_capacity.max(1),
            shared,
        })
    }

    /// Blocks on the queue while idle; otherwise takes everything queued (up to the queue's
    /// capacity), commits it, and answers flushes queued with it.
    pub(super) fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(message) = next.take() {
                match message {
                    Message::Record { record, durable } => batch.push((*record, durable)),
                    Message::Flush(done) => flushes.push(done),
                }
                taken += 1;
                if taken < self.batch_limit {
                    next = receiver.try_recv().ok();
                }
            }
            self.commit(batch);
            for done in flushes {
                let _ = done.send(());
            }
            if let Some(tick) = self.tick {
                std::thread::sleep(tick);
            }
        }
        if let Some(file) = &self.file {
            let _ = file.sync_data();
        }
    }

    /// Writes the batch, retrying with backoff until it is on disk. While it fails, the
    /// trail is marked failing (requests are refused with `Refuse`), and the requests
    /// waiting on this batch are answered at once; their records stay in it.
    fn commit(&mut self, batch: Vec<(AuditRecord, Option<Durable>)>) {
        let drops = self.shared.unmarked_drops.swap(0, Ordering::Relaxed);
        let mut records = Vec::with_capacity(batch.len() + 1);
        if drops > 0 {
            records.push((records_dropped(drops), None));
        }
        records.extend(batch);
        if records.is_empty() {
            return;
        }
        let (lines, count, mut waiting) = self.encode(records);
        let mut pause = RETRY_FIRST;
        let mut failed_attempts: u64 = 0;
        while let Err(error) = self.append(&lines) {
            self.shared.metrics.audit_write_failures.inc();
            if failed_attempts == 0 {
                tracing::error!(
                    error = %error,
                    records = count,
                    "audit write failed; the records are kept and the write retried"
                );
                self.shared.metrics.audit_healthy.set(0);
                self.shared.failure.send_replace(Some(error.summary()));
            } else {
                tracing::debug!(error = %error, attempt = failed_attempts + 1, "audit write failed again");
            }
            failed_attempts += 1;
            for durable in waiting.drain(..) {
                let _ = durable.send(Err(AuditRefusal::RecordNotWritten));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(RETRY_LONGEST);
        }
        if failed_attempts > 0 {
            self.shared.failure.send_replace(None);
            self.shared.metrics.audit_healthy.set(1);
            tracing::warn!(
                failed_attempts,
                records = count,
                "the audit trail is written again"
            );
        }
        self.shared.metrics.audit_written.inc_by(count);
        for durable in waiting {
            let _ = durable.send(Ok(()));
        }
        if self.committed_len >= self.max_bytes {
            if let Err(error) = self.rotate() {
                tracing::warn!(error = %error, "audit rotation failed; tried again after the next batch");
            }
        }
    }

    /// The batch's lines, chained on from the last line written; how many; and the requests
    /// waiting for them.
    fn encode(
        &mut self,
        records: Vec<(AuditRecord, Option<Durable>)>,
    ) -> (Vec<u8>, u64, Vec<Durable>) {
        let mut lines = Vec::with_capacity(records.len() * 512);
        let mut count = 0;
        let mut waiting = Vec::new();
        for (record, durable) in records {
            let chained = ChainedLine {
                seq: self.seq + 1,
                prev: std::mem::take(&mut self.prev),
                record,
            };
            match serde_json::to_string(&chained) {
                Ok(line) => {
                    self.seq += 1;
                    self.prev = hash_line(&line);
                    lines.extend_from_slice(line.as_bytes());
                    lines.push(b'\n');
                    count += 1;
                    waiting.extend(durable);
                }
                // Records hold only strings; this cannot happen, but must not break the chain.
                Err(error) => {
                    self.prev = chained.prev;
                    tracing::error!(error = %error, "an audit record could not be encoded; it was left out");
                    self.shared.metrics.audit_dropped.inc();
                    if let Some(durable) = durable {
                        let _ = durable.send(Err(AuditRefusal::RecordNotWritten));
                    }
                }
            }
        }
        (lines, count, waiting)
    }

    /// Appends whole lines and syncs them; on failure, cuts the file back to its last whole
    /// line.
    fn append(&mut self, lines: &[u8]) -> Result<(), AuditWriteError> {
        let path = &self.path;
        let fail = |action, e| AuditWriteError::new(action, path, e);
        let file = match &mut self.file {
            Some(file) => file,
            none => {
                let file = open_append(path).map_err(|e| fail(FileAction::Open, e))?;
                self.committed_len = file
                    .metadata()
                    .map_err(|e| fail(FileAction::Open, e))?
                    .len();
                none.insert(file)
            }
        };
        if self.torn {
            cut(file, self.committed_len).map_err(|e| fail(FileAction::Truncate, e))?;
            self.torn = false;
        }
        self.torn = true;
        let written = match file.write_all(lines) {
            Ok(()) => file.sync_data().map_err(|e| (FileAction::Sync, e)),
            Err(e) => Err((FileAction::Append, e)),
        };
        match written {
            Ok(()) => {
                self.torn = false;
                self.committed_len += lines.len() as u64;
                Ok(())
            }
            Err((action, e)) => {
                let left = file.metadata().map_or(0, |m| m.len());
                match cut(file, self.committed_len) {
                    Ok(()) => {
                        self.torn = false;
                        if left > self.committed_len {
                            tracing::warn!(
                                bytes = left - self.committed_len,
                                "cut a short audit write back to the last whole line"
                            );
                        }
                    }
                    Err(cut_error) => tracing::error!(
                        error = %fail(FileAction::Truncate, cut_error),
                        "cannot cut a failed audit write back to its last whole line yet; done before the next attempt"
                    ),
                }
                Err(fail(action, e))
            }
        }
    }

    /// Renames the full file aside (suffix = the last seq it holds) and starts a new one; the
    /// chain continues through `prev`.
    fn rotate(&mut self) -> Result<(), AuditWriteError> {
        let rotated = PathBuf::from(format!("{}.{:012}", self.path.display(), self.seq));
        std::fs::rename(&self.path, &rotated)
            .map_err(|e| AuditWriteError::new(FileAction::Rotate, &self.path, e))?;
        self.file = None;
        self.committed_len = 0;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // Opened now if possible; otherwise the next append opens it (and fails until it can).
        match open_append(&self.path) {
            Ok(file) => self.file = Some(file),
            Err(e) => {
                let error = AuditWriteError::new(FileAction::Open, &self.path, e);
                tracing::warn!(error = %error, "cannot start a new audit file yet");
            }
        }
        Ok(())
    }
}

/// The line that marks where records were dropped (`Log`), and how many.
fn records_dropped(count: u64) -> AuditRecord {
    AuditRecord {
        time: super::rfc3339_now(),
        operation: RECORDS_DROPPED.into(),
        outcome: "RecordsDropped".into(),
        records_dropped: Some(count),
        ..Default::default()
    }
}

/// Cuts the file back to `len` bytes, durably.
fn cut(file: &File, len: u64) -> std::io::Result<()> {
    file.set_len(len)?;
    file.sync_all()
}
