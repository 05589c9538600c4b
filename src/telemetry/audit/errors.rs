//! Why the audit trail cannot be opened at start-up, and where a chain check finds it broken.

use std::fmt;
use std::path::PathBuf;

use super::AuditWriteError;
use crate::error::FileError;

/// The trail at start-up: its last record cannot be read, or the writer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AuditSetupError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{}: the last line is not UTF-8", path.display())]
    LastLineNotUtf8 { path: PathBuf },
    #[error("{}: the last line is not an audit record", path.display())]
    LastLineNotARecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Writer(#[from] AuditWriteError),
    #[error("cannot start the audit writer")]
    WriterThread(#[source] std::io::Error),
}

/// A line of a trail file, counted from 1.
#[derive(Debug)]
pub struct LineAt {
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for LineAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.path.display(), self.line)
    }
}

/// Where `p11kms audit verify` finds the chain broken, or cannot read it.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{at}")]
    ReadLine {
        at: LineAt,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: not an audit record (edited?)")]
    NotARecord { at: LineAt },
    #[error("{at}: sequence {seq} follows {prev_seq}: a line was removed or reordered before it")]
    OutOfSequence { at: LineAt, seq: u64, prev_seq: u64 },
    #[error("{at}: the chain is broken: the line before it was edited, removed or reordered")]
    Broken { at: LineAt },
    #[error("{at}: the first record does not start the chain")]
    BadStart { at: LineAt },
}
