//! The gateway process under test, and what `/proc` tells about a process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::BenchArgs;
use p11kms::hsm::EmbeddedTokenKind;

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux has reported `USER_HZ` = 100
/// to user space on every architecture for decades; reading `sysconf` would need FFI.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
/// How long the gateway may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The machine's load average, as `uptime` shows it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// User plus system CPU time of a process and all its threads, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime is field 14, stime 15 (1-based, whole line).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SECOND)
}

/// This process's CPU time, in seconds.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The gateway binary: `--gateway-bin` (or `P11KMS_BIN`), else `p11kms` next to this
/// executable, where `cargo build --release --workspace` puts both.
fn gateway_binary(args: &BenchArgs) -> Result<PathBuf, String> {
    if let Some(bin) = &args.gateway_bin {
        return Ok(bin.clone());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let bin = exe.with_file_name("p11kms");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no gateway binary at {}: build it with `cargo build --release --workspace`, \
             or give --gateway-bin (P11KMS_BIN)",
            bin.display()
        ))
    }
}

/// A gateway started by the harness: `p11kms serve` on the bench's data directory.
pub struct Gateway {
    child: Child,
    pub url: String,
    /// From spawning the process to its ready line.
    pub startup: Duration,
}

impl Gateway {
    pub fn start(args: &BenchArgs, data_dir: &Path, delay_us: u64) -> Result<Gateway, String> {
        let exe = gateway_binary(args)?;
        let log_path = data_dir.join("gateway.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .env("P11KMS_DATA_DIR", data_dir)
            .env("P11KMS_LISTEN", "127.0.0.1:0")
            .env("P11KMS_SESSION_POOL_SIZE", args.pool_size.to_string())
            .env("P11KMS_LOG", "warn")
            .env("P11DELAY_US", delay_us.to_string())
            .env("P11KMS_EMBEDDED_TOKEN", args.token.name())
            // The gateway points its token library at its own data directory.
            .env_remove("SOFTHSM2_CONF")
            .env_remove("KRYOPTIC_CONF")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if args.token == EmbeddedTokenKind::Kryoptic {
            command.env("P11KMS_KRYOPTIC_MODULE", super::token_library(args.token)?);
        }
        if let Some(module) = &args.module {
            command
                .env("P11KMS_PKCS11_MODULE", module)
                .env("P11KMS_EMBEDDED_SOFTHSM", "1");
        }
        for pair in &args.gateway_env {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("--gateway-env wants NAME=VALUE, got {pair}"))?;
            command.env(name, value);
        }
        if let Some(wait) = args.session_wait_ms {
            command.env("P11KMS_SESSION_WAIT_MS", wait.to_string());
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the gateway: {e}"))?;
        let stdout = child.stdout.take().ok_or("the gateway has no stdout")?;
        // The ready line is read on a helper thread so a silent gateway cannot hang the bench.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if let Some(url) = line.trim().strip_prefix("p11kms listening on ") {
                            let _ = tx.send(Some(url.to_string()));
                        }
                    }
                }
            }
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(url)) => Ok(Gateway {
                child,
                url,
                startup: started.elapsed(),
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                Err(format!(
                    "the gateway did not become ready; its log:\n{}",
                    tail.lines().rev().take(20).collect::<Vec<_>>().join("\n")
                ))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid())
    }

    /// Stops the gateway this harness started (by its own child handle).
    pub fn stop(mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
        // Drop then finds the child already reaped.
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `/proc/<pid>/status` field in its first unit (kB for memory), e.g. `VmRSS`, `Threads`.
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resident set size now (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS")
}

/// Threads of the process now.
pub fn threads(pid: u32) -> Option<u64> {
    status_field(pid, "Threads")
}

/// Open file descriptors of the process now (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.count())
}
