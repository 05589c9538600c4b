//! The session pool hands a released session to a thread waiting for one at once: with more
//! threads than sessions (as on the key-generation lane), a missed wake-up would leave the
//! waiter asleep until its session wait (5 s here) ran out. One test per binary: SoftHSM2
//! reads `SOFTHSM2_CONF` once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::open_fresh_hsm;
use p11kms::hsm::KeyMaterials;
use p11kms::kms::ciphertext;
use p11kms::model::{KeyId, MaterialId};

#[test]
fn a_released_session_goes_to_a_waiting_thread_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = open_fresh_hsm(dir.path(), 1, 0);
    let material = MaterialId::new_random();
    hsm.create_material(&KeyId::new_random(), &material)
        .unwrap();

    let started = Instant::now();
    std::thread::scope(|scope| {
        for n in 0..4u8 {
            let (hsm, material) = (&hsm, &material);
            scope.spawn(move || {
                for _ in 0..50 {
                    let key = KeyId::from_bytes([n; 16]);
                    ciphertext::seal(hsm, &key, material, &Default::default(), b"data").unwrap();
                }
            });
        }
    });
    // 200 operations on one session take well under a second; a single missed wake-up
    // costs a whole session wait.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "200 operations took {elapsed:?}: a waiter slept through a release"
    );
}
