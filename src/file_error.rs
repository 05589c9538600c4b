//! A failed file-system call as a typed error. Its own module (not `crate::error`, the
//! core's error type) so that every layer, the HSM provider included, can use it.

/// A file-system call that failed: what was being done, on which path, and the OS's reason.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct FileError {
    /// The verb phrase, e.g. `read`, `create`, `set aside the torn end of`.
    pub action: &'static str,
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// For `map_err`: `fs::read(path).map_err(FileError::on("read", path))`.
    pub fn on(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| FileError {
            action,
            path,
            source,
        }
    }
}
