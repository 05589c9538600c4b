//! Drives `scripts/cluster.sh` from tests: start (with its arguments), the replicas' lines,
//! clients, backup, stop. A started cluster is stopped when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_kms::Client;

/// Runs `scripts/cluster.sh ARGS` with the test build of p11kms and nothing of the caller's
/// P11KMS_* environment.
pub fn run_script(args: &[&str]) -> Output {
    run_script_with(args, &[])
}

/// `run_script` with extra environment variables.
pub fn run_script_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let script = crate::common::repository_root().join("scripts/cluster.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("P11KMS_BIN", env!("CARGO_BIN_EXE_p11kms-under-test"))
        .env_remove("SOFTHSM2_CONF")
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/cluster.sh")
}

/// A cluster `scripts/cluster.sh` started on `dir`.
pub struct ScriptCluster {
    pub dir: PathBuf,
    /// Endpoint and pid of each replica, from the script's lines.
    pub replicas: Vec<(String, u32)>,
    running: bool,
}

impl ScriptCluster {
    /// `cluster.sh start DIR ARGS...`; panics with the script's output if it fails.
    pub fn start(dir: &Path, args: &[&str]) -> ScriptCluster {
        ScriptCluster::start_with(dir, args, &[])
    }

    /// `start` with extra environment variables (e.g. `P11KMS_CLUSTER_KEY_STORAGE`).
    pub fn start_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> ScriptCluster {
        let dir_arg = dir.display().to_string();
        let mut all = vec!["start", dir_arg.as_str()];
        all.extend_from_slice(args);
        ScriptCluster::from_output(dir, run_script_with(&all, env))
    }

    /// `cluster.sh restore DIR FILE ARGS...`
    pub fn restore(dir: &Path, file: &Path, args: &[&str]) -> ScriptCluster {
        let (dir_arg, file_arg) = (dir.display().to_string(), file.display().to_string());
        let mut all = vec!["restore", dir_arg.as_str(), file_arg.as_str()];
        all.extend_from_slice(args);
        ScriptCluster::from_output(dir, run_script(&all))
    }

    /// `cluster.sh restore DIR FILE` on this (running) cluster: the replicas restart on
    /// new ports.
    pub fn restore_again(mut self, file: &Path) -> ScriptCluster {
        self.running = false;
        ScriptCluster::restore(&self.dir, file, &[])
    }

    fn from_output(dir: &Path, out: Output) -> ScriptCluster {
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            run_script(&["stop", &dir.display().to_string()]);
            panic!(
                "cluster.sh failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let replicas = stdout
            .lines()
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(words.len(), 5, "{line}");
                assert_eq!((words[0], words[3]), ("replica", "pid"), "{line}");
                (words[2].to_string(), words[4].parse().unwrap())
            })
            .collect();
        ScriptCluster {
            dir: dir.to_path_buf(),
            replicas,
            running: true,
        }
    }

    /// An SDK client for replica `i` (0-based) with the dev credential, retries disabled.
    pub fn client(&self, i: usize) -> Client {
        client(&self.replicas[i].0)
    }

    /// `cluster.sh backup DIR FILE`; returns its line.
    pub fn backup(&self, file: &Path) -> String {
        let out = run_script(&[
            "backup",
            &self.dir.display().to_string(),
            &file.display().to_string(),
        ]);
        assert!(
            out.status.success(),
            "cluster.sh backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cluster.sh stop DIR`
    pub fn stop(&mut self) {
        if self.running {
            let out = run_script(&["stop", &self.dir.display().to_string()]);
            assert!(out.status.success(), "cluster.sh stop failed");
            self.running = false;
        }
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_replica_logs();
        }
        if self.running {
            run_script(&["stop", &self.dir.display().to_string()]);
        }
    }
}

impl ScriptCluster {
    /// The end of every replica's stderr, for a failed test: the temporary DIR is gone after.
    fn print_replica_logs(&self) {
        for i in 1.. {
            let log = self.dir.join(format!("replica-{i}/stderr.log"));
            let Ok(text) = std::fs::read_to_string(&log) else {
                break;
            };
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!("--- {} (last 30 lines)\n{tail}", log.display());
        }
    }
}

/// An SDK client of one replica, as the credential `test` (every including test crate has
/// `mod common` beside this module).
pub fn client(endpoint: &str) -> Client {
    crate::common::client_of(endpoint, "test", "test")
}
