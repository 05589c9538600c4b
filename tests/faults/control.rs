//! The emulator's control file (`P11DELAY_CONTROL`, see tools/pkcs11-delay/p11delay.c):
//! replaced whole by a rename, so the module never reads half a file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub struct Control {
    path: PathBuf,
}

impl Control {
    /// A control file at `path`; no file means no fault.
    pub fn new(path: &Path) -> Control {
        let _ = std::fs::remove_file(path);
        Control {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Switches `fault` (the control words, e.g. `fault=device_error`) on for `length`;
    /// the module ends it by itself at the wall-clock time written with it.
    pub fn switch_on(&self, fault: &str, length: Duration) {
        let until = SystemTime::now() + length;
        let until_ms = until
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis();
        self.write(&format!("{fault} until_ms={until_ms}\n"));
    }

    pub fn switch_off(&self) {
        self.write("fault=none\n");
    }

    fn write(&self, text: &str) {
        let staged = self.path.with_extension("next");
        std::fs::write(&staged, text).expect("write the control file");
        std::fs::rename(&staged, &self.path).expect("replace the control file");
    }
}
