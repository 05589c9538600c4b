//! The gateway under test: `p11kms serve` on the crash loop's data directory, started,
//! waited for and killed with SIGKILL (`Child::kill` sends SIGKILL on Unix).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Followed by `http://<address>`.
const READY_PREFIX: &str = "p11kms listening on ";

/// The gateway as the test package builds it (`p11kms-under-test`, the same entry point as the
/// shipped `p11kms`), or `P11KMS_TEST_BIN`, to run the loop against another build.
pub fn binary() -> PathBuf {
    std::env::var_os("P11KMS_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_p11kms-under-test")))
}

/// A running `p11kms serve`.
pub struct Gateway {
    child: Child,
    pub endpoint: String,
    /// From spawning the process to its ready line.
    pub startup: Duration,
}

/// The command that starts the gateway on `data_dir`, logging to `log`.
fn command(data_dir: &Path, log: &Path, env: &[(String, String)]) -> Result<Command, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let mut cmd = Command::new(binary());
    cmd.arg("serve");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("SOFTHSM2_CONF")
        .env("P11KMS_DATA_DIR", data_dir)
        .env("P11KMS_LISTEN", "127.0.0.1:0")
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd)
}

impl Gateway {
    /// Starts the gateway and waits up to `timeout` for its ready line.
    pub fn start(
        data_dir: &Path,
        log: &Path,
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<Gateway, String> {
        let started = Instant::now();
        let mut child = command(data_dir, log, env)?
            .spawn()
            .map_err(|e| format!("cannot start p11kms: {e}"))?;
        let Some(stdout) = child.stdout.take() else {
            return Err("no stdout pipe".into());
        };
        let (tx, rx) = mpsc::channel::<String>();
        // Keep draining stdout after the ready line so the child never blocks on the pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = started + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim_end().strip_prefix(READY_PREFIX) {
                        return Ok(Gateway {
                            child,
                            endpoint: url.to_string(),
                            startup: started.elapsed(),
                        });
                    }
                }
                Err(e) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "no ready line within {timeout:?} ({e}; exit status {status:?}); log: {}",
                        log.display()
                    ));
                }
            }
        }
    }

    /// Starts the gateway and kills it `after` the spawn, whether or not it is ready by then
    /// (a crash during start-up: token open, reconciliation, audit recovery).
    pub fn start_and_kill(
        data_dir: &Path,
        log: &Path,
        env: &[(String, String)],
        after: Duration,
    ) -> Result<(), String> {
        let mut child = command(data_dir, log, env)?
            .spawn()
            .map_err(|e| format!("cannot start p11kms: {e}"))?;
        std::thread::sleep(after);
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// SIGTERM, and the process must exit with status 0 within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Result<(), String> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("exited with {status} after SIGTERM")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return Err(format!("still running {timeout:?} after SIGTERM")),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// SIGKILL, then reap. Returns whether the process was still running (it must be).
    pub fn kill(&mut self) -> bool {
        let running = matches!(self.child.try_wait(), Ok(None));
        let _ = self.child.kill();
        let _ = self.child.wait();
        running
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
