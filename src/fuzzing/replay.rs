//! The fuzz smoke of `cargo test`: every committed corpus file and every crash ever found,
//! through the same target functions AFL++ runs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::{Target, TARGETS};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on every file of `fuzz/<kind>/<name>/`; returns how many ran.
fn replay(kind: &str, name: &str, target: Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(name);
    let files = files(&dir);
    for file in &files {
        let data = std::fs::read(file).expect("readable corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{} failed: {why}", file.display());
        }
    }
    files.len()
}

#[test]
fn corpora_replay_cleanly() {
    for (name, target) in TARGETS {
        let ran = replay("corpus", name, *target);
        assert!(
            ran >= 3,
            "fuzz/corpus/{name} has {ran} files; the seeds are missing"
        );
    }
}

/// Every input that ever crashed a target, kept as a regression test.
#[test]
fn regressions_replay_cleanly() {
    for (name, target) in TARGETS {
        replay("regressions", name, *target);
    }
}
