//! A private PostgreSQL server for tests, from the distribution's packages.
//!
//! `initdb` into a temporary directory, `pg_ctl start` on a free port on 127.0.0.1 with the
//! unix socket in that directory, password (SCRAM) authentication: no system service, no
//! shared state. The server stops and its directory goes when the [`PgServer`] is dropped;
//! a small watchdog shell also stops it once the test process has exited, so a server
//! shared by a whole test binary (never dropped: it lives in a static) or one left by a
//! killed test does not outlive the tests.
//!
//! `initdb` and `postgres` refuse to run as root. As root (CI), the server runs as the
//! `postgres` user the Debian package creates, or `nobody`, through `runuser`; the
//! temporary directory is handed to that user. Binaries are found in
//! `/usr/lib/postgresql/<version>/bin` (newest first), then `pg_config --bindir`, then `PATH`.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The database superuser the tests connect as.
pub const PG_USER: &str = "p11kms";

pub struct PgServer {
    bin: PathBuf,
    /// The temporary directory: `data/`, the socket, the log, the password file.
    dir: PathBuf,
    port: u16,
    password: String,
    /// Who runs the server when the tests run as root.
    run_as: Option<String>,
    /// With TLS (`ssl=on`): the CA that signed the server's certificate.
    ca_file: Option<PathBuf>,
    databases: AtomicUsize,
}

/// Where the server binaries are.
fn find_bindir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return dir;
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql \
         package (scripts/test.sh does)"
    );
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn id_of(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn check(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PgServer {
    /// A new server of its own.
    pub fn start() -> PgServer {
        PgServer::start_with(false)
    }

    /// A new server of its own that also accepts TLS, with a certificate for `127.0.0.1`
    /// signed by a CA of its own ([`ca_file`](Self::ca_file)).
    pub fn start_tls() -> PgServer {
        PgServer::start_with(true)
    }

    fn start_with(tls: bool) -> PgServer {
        let bin = find_bindir();
        let run_as = is_root().then(|| {
            ["postgres", "nobody"]
                .into_iter()
                .find(|u| id_of(u, "-u").is_some())
                .expect("a user to run PostgreSQL as (postgres or nobody)")
                .to_string()
        });
        let dir = tempfile::Builder::new()
            .prefix("p11kms-pg-")
            .tempdir()
            .expect("create temporary directory")
            .keep();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let password = format!("pw-{}-{nanos:x}", std::process::id());
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("write password file");
        if let Some(user) = &run_as {
            let uid = id_of(user, "-u");
            let gid = id_of(user, "-g");
            for path in [dir.as_path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, uid, gid).expect("hand the directory over");
            }
        }
        let uid_gid = run_as.as_deref().map(|u| (id_of(u, "-u"), id_of(u, "-g")));
        let ca_file = tls.then(|| {
            let ca = make_ca(&dir, "server-ca");
            sign_server_certificate(&dir, "server-ca", "127.0.0.1");
            if let Some((uid, gid)) = uid_gid {
                for file in ["server.pem", "server.key"] {
                    std::os::unix::fs::chown(dir.join(file), uid, gid)
                        .expect("hand the server key over");
                }
            }
            ca
        });
        let server = PgServer {
            bin,
            dir,
            port: free_port(),
            password,
            run_as,
            ca_file,
            databases: AtomicUsize::new(0),
        };
        server.spawn_watchdog();
        let data = server.data_dir();
        check(
            "initdb",
            server
                .command("initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    PG_USER,
                    "--auth=scram-sha-256",
                    "--no-locale",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .output()
                .expect("run initdb"),
        );
        // A port found free may be taken before the server binds it: try a few.
        let mut server = server;
        for attempt in 0..5 {
            if server.try_start() {
                return server;
            }
            assert!(attempt < 4, "PostgreSQL did not start:\n{}", server.log());
            server.port = free_port();
        }
        unreachable!()
    }

    /// One server for the whole test binary; each test makes its own database in it.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(PgServer::start)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A server program, run as the server's user when the tests run as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        };
        cmd.stdin(Stdio::null()).current_dir(&self.dir);
        cmd
    }

    /// Stops the server and removes its directory once this process has exited, whatever
    /// way it exits. Polls once a second; ends by itself.
    fn spawn_watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- {}", pg_ctl.display()),
            None => pg_ctl.display().to_string(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            data = self.data_dir().display(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// `fsync=off` only spares the disk: the tests never crash the machine, and an immediate
    /// stop (a crash of PostgreSQL) keeps every commit, since each reached the kernel.
    /// (`synchronous_commit=off` would lose the last commits on such a stop.)
    fn try_start(&self) -> bool {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c max_connections=300 -c fsync=off",
            self.port,
            self.dir.display()
        );
        if self.ca_file.is_some() {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                self.dir.join("server.pem").display(),
                self.dir.join("server.key").display()
            ));
        }
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false)
    }

    /// Starts the stopped server again on the same port.
    pub fn start_again(&self) {
        assert!(
            self.try_start(),
            "PostgreSQL did not start again:\n{}",
            self.log()
        );
    }

    /// `pg_ctl stop -m immediate`: every backend is killed, connections drop at once.
    pub fn stop_immediate(&self) {
        check(
            "pg_ctl stop",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "stop"])
                .output()
                .expect("run pg_ctl stop"),
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// A libpq URL for `database`, with the password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{PG_USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// A new, empty database; returns its name.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs SQL through `psql` (as a client, over TCP) and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|e| panic!("psql failed: {e}"))
    }

    /// As [`psql`], with the error text when the SQL fails.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                PG_USER,
            ])
            .args([
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-A",
                "-t",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Waits until the server accepts connections again (after [`start_again`]).
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL not ready within {within:?}:\n{}", self.log());
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA of a [`start_tls`](Self::start_tls) server.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    check(
        "openssl",
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl"),
    );
}

/// A self-signed P-256 CA, `<name>.pem` and `<name>.key` in `dir`; returns the certificate.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(cert)
}

/// `server.pem` and `server.key` (mode 0600) in `dir`, for the IP address `ip`, signed by
/// the CA `ca`.
fn sign_server_certificate(dir: &Path, ca: &str, ip: &str) {
    std::fs::write(
        dir.join("server.ext"),
        format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("write extensions");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={ip}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("server key mode 0600");
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
