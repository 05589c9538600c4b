//! The audit trail: one JSON line per request, hash-chained, appended durably.
//!
//! Each line carries `seq` (consecutive across files) and `prev`, the SHA-256 of the previous
//! line's bytes, so editing, removing or reordering a line breaks the chain at the next line
//! and `p11kms audit verify` says where. Rotation starts a new file whose first line chains
//! to the last line of the old one; verify the files in order. (A chain alone cannot show
//! that lines were cut from the very end; ship the files off the host to guard against
//! that.) Records never contain plaintext, data keys or secrets.
//!
//! Lines are written by one thread and `fdatasync`ed after each batch, so a request never
//! waits on the disk; a full queue (bursts beyond 8192 pending records) applies back-pressure.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
}

/// A chained line: the record plus its place in the chain.
#[derive(Serialize, Deserialize)]
struct ChainedLine {
    seq: u64,
    prev: String,
    #[serde(flatten)]
    record: AuditRecord,
}

/// How long the audit writer gathers records between two syncs while requests keep coming.
const GROUP_COMMIT_TICK: std::time::Duration = std::time::Duration::from_millis(5);

/// What the writer thread is asked to do.
enum Message {
    Record(Box<AuditRecord>),
    /// Write and sync everything queued so far, then answer.
    Flush(SyncSender<()>),
}

/// Handle to the audit writer thread.
pub struct AuditLog {
    sender: SyncSender<Message>,
}

impl AuditLog {
    /// Opens (or continues) the trail at `path`, rotating when it passes `max_bytes`.
    pub fn open(path: PathBuf, max_bytes: u64) -> Result<AuditLog, String> {
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
                let parsed: ChainedLine = serde_json::from_str(&line).map_err(|e| {
                    format!(
                        "{}: the last line is not an audit record: {e}",
                        path.display()
                    )
                })?;
                (parsed.seq, hash_line(&line))
            }
            None => (0, GENESIS.to_string()),
        };
        let file = open_append(&path)?;
        let (sender, receiver) = sync_channel(8192);
        let writer = Writer {
            path,
            max_bytes,
            file,
            seq,
            prev,
        };
        std::thread::Builder::new()
            .name("p11kms-audit".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(AuditLog { sender })
    }

    pub fn record(&self, record: AuditRecord) {
        if self.sender.send(Message::Record(Box::new(record))).is_err() {
            tracing::error!("the audit writer has stopped; a record was lost");
        }
    }

    /// Waits until every record queued so far is on disk (at shutdown).
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    seq: u64,
    prev: String,
}

impl Writer {
    /// Group commit. When idle the writer blocks on the channel, and the first record wakes
    /// it. While records keep coming it writes and syncs what has queued, then sleeps for
    /// one tick: senders then find it asleep rather than waiting on the channel, so a
    /// request never pays for waking it, and one `fdatasync` covers a tick's requests.
    /// A tick with nothing queued sends it back to blocking.
    fn run(mut self, receiver: Receiver<Message>) {
        while let Ok(first) = receiver.recv() {
            let mut next = Some(first);
            loop {
                let mut batch = Vec::new();
                let mut flushes = Vec::new();
                while let Some(message) = next.take() {
                    match message {
                        Message::Record(record) => batch.push(*record),
                        Message::Flush(done) => flushes.push(done),
                    }
                    next = receiver.try_recv().ok();
                }
                if !batch.is_empty() {
                    if let Err(e) = self.write_batch(batch) {
                        tracing::error!(error = %e, path = %self.path.display(), "audit write failed");
                    }
                }
                for done in flushes {
                    let _ = done.send(());
                }
                std::thread::sleep(GROUP_COMMIT_TICK);
                next = receiver.try_recv().ok();
                if next.is_none() {
                    break;
                }
            }
        }
        let _ = self.file.sync_data();
    }

    fn write_batch(&mut self, batch: Vec<AuditRecord>) -> std::io::Result<()> {
        let mut buffer = Vec::with_capacity(batch.len() * 512);
        for record in batch {
            self.seq += 1;
            let line = serde_json::to_string(&ChainedLine {
                seq: self.seq,
                prev: std::mem::take(&mut self.prev),
                record,
            })
            .map_err(std::io::Error::other)?;
            self.prev = hash_line(&line);
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
        }
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        if self.file.metadata()?.len() >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Renames the full file aside (suffix = the first seq the next file will hold) and
    /// starts a new one; the chain continues through `prev`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let rotated = PathBuf::from(format!("{}.{:012}", self.path.display(), self.seq));
        std::fs::rename(&self.path, &rotated)?;
        self.file = open_append(&self.path).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// A process killed while writing (SIGKILL, power loss) can leave the last line cut short:
/// every whole line ends with a newline, so bytes after the last one are a torn write of a
/// record that was never synced. They are moved to `<path>-torn-<unix ms>` and the chain
/// continues from the last whole line. A whole last line that does not parse is not a crash
/// but damage, and `AuditLog::open` still refuses it.
fn set_aside_torn_tail(path: &Path) -> Result<(), String> {
    let fail =
        |e: std::io::Error| format!("cannot set aside the torn end of {}: {e}", path.display());
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(e)),
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
    let mut kept = open_append(&aside)?;
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
fn last_line(path: &Path) -> Result<Option<String>, String> {
    let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
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
            .map_err(|_| format!("{}: the last line is not UTF-8", path.display()));
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

fn hash_line(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Checks the chain through `files`, in order. Returns the number of records, or where the
/// chain breaks and why.
pub fn verify_files(files: &[PathBuf]) -> Result<u64, String> {
    let mut prev: Option<(String, u64)> = None;
    let mut count = 0;
    for path in files {
        let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let at = || format!("{} line {}", path.display(), index + 1);
            let line = line.map_err(|e| format!("{}: {e}", at()))?;
            let parsed: ChainedLine = serde_json::from_str(&line)
                .map_err(|_| format!("{}: not an audit record (edited?)", at()))?;
            if let Some((prev_hash, prev_seq)) = &prev {
                if parsed.seq != prev_seq + 1 {
                    return Err(format!(
                        "{}: sequence {} follows {prev_seq}: a line was removed or reordered before it",
                        at(),
                        parsed.seq
                    ));
                }
                if &parsed.prev != prev_hash {
                    return Err(format!(
                        "{}: the chain is broken: the line before it was edited, removed or reordered",
                        at()
                    ));
                }
            } else if parsed.seq == 1 && parsed.prev != GENESIS {
                return Err(format!(
                    "{}: the first record does not start the chain",
                    at()
                ));
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

    fn write(dir: &Path, n: usize, max_bytes: u64) -> PathBuf {
        let path = dir.join("audit.log");
        let log = AuditLog::open(path.clone(), max_bytes).unwrap();
        for i in 0..n {
            log.record(record(i));
        }
        drop(log);
        std::thread::sleep(std::time::Duration::from_millis(200));
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
        assert_eq!(verify_files(std::slice::from_ref(&path)), Ok(5));
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
        let refused = AuditLog::open(path, u64::MAX).err().unwrap_or_default();
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
        assert!(check(edited).unwrap_err().contains("line 4"));
        let mut removed: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        removed.remove(3);
        assert!(check(removed).unwrap_err().contains("line 4"));
        let mut swapped: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        swapped.swap(1, 2);
        assert!(check(swapped).is_err());
    }
}
