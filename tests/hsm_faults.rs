//! The HSM layer's recovery paths, in-process, through the network-HSM emulator
//! (`tools/pkcs11-delay`) in front of a fresh SoftHSM2 token. The fault matrix
//! (`tests/faults`) shows the same under load through the server; these pin each fix down.
//! One test per binary: SoftHSM2 reads `SOFTHSM2_CONF` once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use p11kms::error::KmsError;
use p11kms::hsm::{
    Curve, EmbeddedSoftHsm, Hsm, HsmConfig, KeyMaterials, KeyProvider, PairKind, PairUse,
    TokenAdoption,
};
use p11kms::kms::ciphertext::{self, Envelope};
use p11kms::model::{KeyId, MaterialId, TokenKeyRef};

fn build_emulator(out: &Path) -> PathBuf {
    let script = common::repository_root().join("tools/pkcs11-delay/build.sh");
    let result = Command::new("sh").arg(script).arg(out).output().unwrap();
    assert!(
        result.status.success(),
        "tools/pkcs11-delay must build: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&result.stdout).trim())
}

/// Switches a fault on through the emulator's control file; the module looks at the file
/// at most every 2 ms, so wait a little longer than that.
fn control(path: &Path, words: &str) {
    let staged = path.with_extension("next");
    std::fs::write(&staged, format!("{words}\n")).unwrap();
    std::fs::rename(&staged, path).unwrap();
    std::thread::sleep(Duration::from_millis(20));
}

fn seal(hsm: &Hsm, material: &MaterialId) -> Result<(), KmsError> {
    let key = KeyId::from_bytes([7; 16]);
    let context = std::collections::BTreeMap::new();
    let sealed = ciphertext::seal(hsm, &key, material, &context, b"payload")?;
    let opened = ciphertext::open(hsm, &Envelope::parse(&sealed)?, &context)?;
    assert_eq!(opened.as_slice(), b"payload");
    Ok(())
}

/// Retries `op` for up to `within`; returns how long it took to succeed.
fn succeeds_within(within: Duration, mut op: impl FnMut() -> Result<(), KmsError>) -> Duration {
    let started = Instant::now();
    loop {
        match op() {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() < within => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("still failing after {within:?}: {e}"),
        }
    }
}

#[test]
fn lost_sessions_logins_and_hung_calls_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let module = build_emulator(&dir.path().join("emulator"));
    let control_file = dir.path().join("control");
    std::env::set_var("P11DELAY_CONTROL", &control_file);
    let embedded = EmbeddedSoftHsm::prepare(dir.path()).unwrap();
    std::env::set_var("SOFTHSM2_CONF", &embedded.conf_path);
    embedded.ensure_token(&module, "p11kms").unwrap();
    let hsm = Hsm::open(
        HsmConfig {
            module,
            token_label: "p11kms".into(),
            user_pin: embedded.user_pin().unwrap(),
            pool_size: 4,
            session_wait: Duration::from_secs(5),
            operation_timeout: Some(Duration::from_millis(500)),
            recycle_after_operations: 0,
            session_key_copies: true,
            context_key_cache: p11kms::hsm::DEFAULT_CONTEXT_KEY_CACHE,
            transient_objects_per_session: p11kms::hsm::DEFAULT_TRANSIENT_OBJECTS_PER_SESSION,
            ciphertext_scheme: None,
        },
        None,
    )
    .unwrap();
    let material = MaterialId::new_random();
    hsm.create_material(&KeyId::new_random(), &material)
        .unwrap();
    // A key pair puts a public object in the token: visible without login.
    hsm.create_key_pair(
        &KeyId::new_random(),
        &MaterialId::new_random(),
        PairKind::Ec(Curve::P256),
        PairUse::SignVerify,
    )
    .unwrap();
    for _ in 0..4 {
        seal(&hsm, &material).unwrap();
    }

    // Every session lost at once, and with them the session copy of the key and the login
    // (SoftHSM2 logs out when its last session closes): the next operations run on fresh,
    // logged-in sessions without an error, and without reinitialising the library.
    control(&control_file, "fault=session_invalid");
    for _ in 0..4 {
        seal(&hsm, &material).expect("an operation after its session was lost");
    }
    assert!(hsm.lost_sessions() > 0, "the lost sessions were counted");
    assert_eq!(hsm.reinitialisations(), 0);

    // A key made while the sessions are lost is made once: a lost answer is looked for
    // before the key is made again.
    control(&control_file, "fault=session_invalid");
    let made_after_loss = MaterialId::new_random();
    hsm.create_material(&KeyId::new_random(), &made_after_loss)
        .expect("CreateKey after the sessions were lost");
    match hsm
        .inspect_adoptable(&TokenKeyRef::Id(made_after_loss.0.to_vec()))
        .unwrap()
    {
        Ok(_) => {}
        Err(why) => panic!("not exactly one usable token object for the material: {why}"),
    }
    seal(&hsm, &made_after_loss).unwrap();

    // The token drops the login while the sessions stay open. A readiness check that then
    // finds the key missing must not blame the key (the token shows its public objects
    // only): the library is reinitialised and logs in again.
    control(&control_file, "fault=logout");
    let took = succeeds_within(Duration::from_secs(5), || Ok(hsm.check()?));
    eprintln!("the check passed again {took:?} after the login was lost");
    seal(&hsm, &material).unwrap();

    // Calls that hang: the operation stops at its deadline (500 ms here) with a timeout,
    // not after every one of its calls has hung, and its session is replaced.
    control(&control_file, "fault=hang hang_ms=400");
    let started = Instant::now();
    let outcome = seal(&hsm, &material);
    let took = started.elapsed();
    control(&control_file, "fault=none");
    assert!(
        matches!(outcome, Err(KmsError::HsmTimeout)),
        "a hung operation answers a timeout: {outcome:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "the operation stopped at its deadline plus one call, not after {took:?}"
    );
    assert_eq!(hsm.operation_timeouts(), 1);
    for _ in 0..4 {
        seal(&hsm, &material).expect("operations after the hang");
    }
    assert!(hsm.shutdown());
}
