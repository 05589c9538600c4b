//! Smoke runs of `p11kms-bench`, so the harness cannot rot: every operation once through
//! its correctness checks and a few bounded closed-loop rounds, with zero errors.
//! Nothing here looks at timing.
//!
//! The bench starts the gateway binary next to its own, `target/release/p11kms`, which
//! `cargo build --release --workspace` builds (scripts/test.sh runs it before the tests);
//! `P11KMS_BIN` points elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_p11kms-bench");

/// The repository's root, where `tools/` is.
fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs the bench as `command` says: whether it succeeded, and its stdout and stderr.
fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("run p11kms-bench");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn bench(args: &[&str]) -> (bool, String) {
    run(Command::new(BENCH).args(args))
}

/// A row for every operation and raw chain, and the PKCS#11 calls per request read from the
/// gateway's metrics.
fn assert_every_row(text: &str) {
    for op in [
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenDataKey",
        "GenDataKeyNoPt",
    ] {
        assert!(text.contains(op), "no row for {op}:\n{text}");
    }
    for chain in ["seal", "open", "rewrap", "random+seal"] {
        assert!(text.contains(chain), "no raw row for {chain}:\n{text}");
    }
    assert!(
        text.contains("# PKCS#11 per request, ReEncrypt 32 B"),
        "{text}"
    );
}

#[test]
fn bench_smoke_runs_every_operation_without_errors() {
    let (ok, text) = bench(&["--smoke"]);
    assert!(ok, "p11kms-bench --smoke failed:\n{text}");
    assert_every_row(&text);
    // The raw ceiling uses the key wrap the probe found on SoftHSM2.
    assert!(text.contains("# token: softhsm2"), "{text}");
    assert!(
        text.contains("probed key wrap CKM_AES_KEY_WRAP_PAD"),
        "{text}"
    );
}

/// The Kryoptic library as a string: `P11KMS_KRYOPTIC_MODULE`, else next to the binaries.
/// When it was not built: `None` with a SKIPPED line, except in CI (`CI` set), which builds
/// it, where that is a failure (as `tests/common`'s `kryoptic_module_or_skip`).
fn kryoptic_module() -> Option<String> {
    let module = std::env::var_os("P11KMS_KRYOPTIC_MODULE")
        .map(PathBuf::from)
        .or_else(|| Some(Path::new(BENCH).parent()?.join("libkryoptic_pkcs11.so")))
        .filter(|m| m.is_file());
    if module.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must build the Kryoptic library (tokens/kryoptic) before these tests"
        );
        eprintln!("SKIPPED: no libkryoptic_pkcs11.so next to the p11kms-bench binary");
    }
    module.map(|m| m.to_string_lossy().into_owned())
}

#[test]
fn bench_smoke_on_kryoptic() {
    let Some(module) = kryoptic_module() else {
        return;
    };
    let (ok, text) = run(Command::new(BENCH)
        .args(["--smoke", "--token", "kryoptic"])
        .env("P11KMS_KRYOPTIC_MODULE", &module));
    assert!(ok, "p11kms-bench --smoke --token kryoptic failed:\n{text}");
    assert!(text.contains("# token: kryoptic"), "{text}");
    // The same chain as the gateway's, with Kryoptic's RFC 5649 mechanism (0x210B).
    assert!(
        text.contains("probed key wrap CKM_AES_KEY_WRAP_KWP"),
        "{text}"
    );
    assert_every_row(&text);
}

/// Builds the network-HSM emulator with its script; `None` when this machine cannot
/// (no C compiler or no pkcs11.h).
fn build_delay_module(out: &Path) -> Option<PathBuf> {
    let script = repository().join("tools/pkcs11-delay/build.sh");
    let result = Command::new("sh").arg(script).arg(out).output().ok()?;
    if !result.status.success() {
        eprintln!(
            "cannot build tools/pkcs11-delay: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        return None;
    }
    let path = PathBuf::from(String::from_utf8_lossy(&result.stdout).trim());
    path.exists().then_some(path)
}

#[test]
fn bench_smoke_through_the_network_hsm_emulator() {
    let out = std::env::temp_dir().join(format!("p11delay-{}", std::process::id()));
    // scripts/test.sh installs the compiler and pkcs11.h, so not building is a failure.
    let module = build_delay_module(&out)
        .expect("tools/pkcs11-delay must build (needs cc and libp11-kit-dev)");
    let module = module.to_string_lossy().into_owned();
    let delayed = [
        "--smoke",
        "--module",
        &module,
        "--delay-us",
        "200",
        "--pool-size",
        "4",
        "--ops",
        "encrypt,decrypt,re-encrypt",
        "--sizes",
        "32",
    ];
    let (ok, text) = bench(&delayed);
    assert!(ok, "p11kms-bench through the delay module failed:\n{text}");
    assert!(text.contains("# delayed: gateway"), "{text}");
    // The raw ceiling runs too, through the emulator with the same delay.
    assert!(text.contains("## raw ceiling"), "{text}");

    // The emulator in front of Kryoptic: the bench points it at Kryoptic's library, and the
    // probe through it finds Kryoptic's key wrap.
    if let Some(kryoptic) = kryoptic_module() {
        let (ok, text) = run(Command::new(BENCH)
            .args(delayed)
            .args(["--token", "kryoptic"])
            .env("P11KMS_KRYOPTIC_MODULE", &kryoptic)
            .env_remove("P11DELAY_MODULE"));
        assert!(ok, "bench on Kryoptic through the emulator failed:\n{text}");
        assert!(text.contains("# delayed: gateway"), "{text}");
        assert!(
            text.contains("probed key wrap CKM_AES_KEY_WRAP_KWP"),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
