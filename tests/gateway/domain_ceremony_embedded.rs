//! The domain ceremony between replicas on the embedded default, each with its own SoftHSM2
//! token under its own data directory (as `scripts/cluster.sh` replicas have), sharing one
//! PostgreSQL database (a private server, `tests/pg_server`) for the membership record. No PIN is configured: the commands use the
//! embedded token's generated PINs (`user.pin`, and `so.pin` for `enrol`), and a replica that
//! never ran gets its token made by `join-request`. The chain holder → second → third shows
//! that a joined token can enrol the next one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::put_domain_key_in_embedded_token;
use crate::pg_server::PgServer;
use serde_json::Value;

fn domain(dir: &Path, store: &str, args: &[&str]) -> Output {
    let bin = std::env::var_os("P11KMS_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_p11kms-under-test").into());
    let mut cmd = Command::new(bin);
    cmd.arg("domain").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            cmd.env_remove(&name);
        }
    }
    let out = cmd
        .env_remove("SOFTHSM2_CONF")
        .env("P11KMS_DATA_DIR", dir)
        .env("P11KMS_STORE_BACKEND", "postgres")
        .env("P11KMS_DATABASE_URL", store)
        .env("P11KMS_LOG", "warn")
        .output()
        .expect("run p11kms domain");
    eprintln!(
        "$ p11kms domain {} ({}) -> {:?}\n{}{}",
        args.join(" "),
        dir.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    out
}

/// `join-request` on `joiner`, `enrol` on `holder`, `join` on `joiner`.
fn enrol(holder: &Path, joiner: &Path, store: &str, work: &Path, name: &str) {
    let request = work.join(format!("{name}-request.json"));
    let package = work.join(format!("{name}-package.json"));
    domain(
        joiner,
        store,
        &["join-request", "--out", request.to_str().unwrap()],
    );
    let parsed: Value = serde_json::from_str(&std::fs::read_to_string(&request).unwrap()).unwrap();
    let fingerprint = parsed["fingerprint"].as_str().unwrap();
    domain(
        holder,
        store,
        &[
            "enrol",
            "--request",
            request.to_str().unwrap(),
            "--fingerprint",
            fingerprint,
            "--out",
            package.to_str().unwrap(),
        ],
    );
    domain(
        joiner,
        store,
        &["join", "--package", package.to_str().unwrap()],
    );
}

#[test]
fn replicas_on_embedded_tokens_join_one_after_another() {
    let work = tempfile::Builder::new()
        .prefix("p11kms-ceremony-embedded-")
        .tempdir()
        .unwrap();
    let dirs: Vec<PathBuf> = ["first", "second", "third"]
        .iter()
        .map(|n| work.path().join(n))
        .collect();
    let server = PgServer::shared();
    let store = server.url(&server.create_database());

    // The first replica's embedded token, with a domain key made in this process.
    std::fs::create_dir_all(&dirs[0]).unwrap();
    let domain_id: [u8; 16] = rand::random();
    put_domain_key_in_embedded_token(&dirs[0], &domain_id);

    // The second replica has never run: join-request makes its token.
    std::fs::create_dir_all(&dirs[1]).unwrap();
    std::fs::create_dir_all(&dirs[2]).unwrap();
    enrol(&dirs[0], &dirs[1], &store, work.path(), "second");
    // The second, now a member, enrols the third.
    enrol(&dirs[1], &dirs[2], &store, work.path(), "third");

    let out = domain(&dirs[2], &store, &["members"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    let hex_id = hex::encode(domain_id);
    assert!(lines
        .iter()
        .all(|l| l.starts_with(&format!("domain {hex_id} token 'p11kms'"))));
    // First by itself, second by the first, third by the second (three distinct tokens).
    let serial = |line: &str| {
        line.split(" serial ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let serials: Vec<String> = lines.iter().map(|l| serial(l)).collect();
    assert!(lines[0].contains("by holder transport -"), "{listing}");
    assert!(
        lines[1].contains(&format!("serial {})", serials[0])),
        "{listing}"
    );
    assert!(
        lines[2].contains(&format!("serial {})", serials[1])),
        "{listing}"
    );
    assert_ne!(serials[0], serials[1]);
    assert_ne!(serials[1], serials[2]);
    assert_ne!(serials[0], serials[2]);
}
