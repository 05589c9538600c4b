//! Session copies of key materials (`HsmConfig::session_key_copies`) on a fresh SoftHSM2
//! token, in-process: operations use one copy per material, shared by every session and
//! made once per library lifetime even when many requests need it at once (the library is
//! recycled every 64 operations here, so the copies are made again and again under load);
//! destroying the material destroys its copy, after which the material is unusable. One
//! test per binary: SoftHSM2 reads `SOFTHSM2_CONF` once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::open_fresh_hsm;
use p11kms::hsm::{Hsm, KeyMaterials};
use p11kms::kms::ciphertext::{self, Envelope, Plan};
use p11kms::model::{KeyId, MaterialId};

fn context(n: u8) -> BTreeMap<String, String> {
    [("n".to_string(), n.to_string())].into()
}

fn seal(hsm: &Hsm, material: &MaterialId, n: u8, data: &[u8]) -> Vec<u8> {
    ciphertext::seal(
        hsm,
        &KeyId::from_bytes([n; 16]),
        material,
        &context(n),
        data,
    )
    .unwrap()
}

fn open(hsm: &Hsm, blob: &[u8], n: u8) -> Result<Vec<u8>, p11kms::error::KmsError> {
    let envelope = Envelope::parse(blob)?;
    Ok(ciphertext::open(hsm, &envelope, &context(n))?.to_vec())
}

/// Seals `data` under `from`, rewraps it to `to` and opens it there: the plaintext.
fn seal_rewrap_open(hsm: &Hsm, from: &MaterialId, to: &MaterialId, data: &[u8], n: u8) -> Vec<u8> {
    let sealed = seal(hsm, from, n, data);
    let destination_context = context(!n);
    let plan = Plan::new(hsm, &KeyId::from_bytes([!n; 16]), to, &destination_context).unwrap();
    let envelope = Envelope::parse(&sealed).unwrap();
    let rewrapped = ciphertext::rewrap(hsm, &envelope, &context(n), &plan).unwrap();
    open(hsm, &rewrapped, !n).unwrap()
}

#[test]
fn a_material_is_used_through_one_session_copy_that_dies_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = open_fresh_hsm(dir.path(), 4, 64);
    let (first, second) = (MaterialId::new_random(), MaterialId::new_random());
    hsm.create_material(&KeyId::new_random(), &first).unwrap();
    hsm.create_material(&KeyId::new_random(), &second).unwrap();
    assert_eq!(hsm.session_key_copies(), 2, "one copy per material");

    // Four threads on four sessions seal, rewrap and open with the same two copies.
    std::thread::scope(|scope| {
        for n in 0..4u8 {
            let (hsm, first, second) = (&hsm, &first, &second);
            scope.spawn(move || {
                for i in 0..100u8 {
                    let data = [n, i, 7, 7];
                    assert_eq!(seal_rewrap_open(hsm, first, second, &data, n), data);
                }
            });
        }
    });
    assert!(hsm.recycles() > 0, "the library was never recycled");
    assert!(hsm.session_key_copies() <= 2, "copies made per request");

    // Both copies in use, then one material destroyed. A planned recycle (every 64
    // operations here) drops every copy: a step that straddled one is run again.
    let sealed = loop {
        let recycles = hsm.recycles();
        assert_eq!(
            seal_rewrap_open(&hsm, &first, &second, b"moved", 1),
            b"moved"
        );
        let sealed = seal(&hsm, &first, 1, b"gone");
        if hsm.recycles() == recycles {
            assert_eq!(hsm.session_key_copies(), 2, "one copy per material");
            break sealed;
        }
    };

    hsm.destroy_material(&first).unwrap();
    // Using the other material makes its copy again if a recycle dropped it; the destroyed
    // material's copy must not be there either way.
    seal(&hsm, &second, 2, b"kept");
    assert_eq!(
        hsm.session_key_copies(),
        1,
        "the copy went with its material"
    );
    let after = open(&hsm, &sealed, 1);
    assert!(
        after.is_err(),
        "a destroyed material still opened a ciphertext"
    );
    // The other material is untouched.
    assert_eq!(
        seal_rewrap_open(&hsm, &second, &second, b"kept", 3),
        b"kept"
    );
}
