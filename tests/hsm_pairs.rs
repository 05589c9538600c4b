//! The HSM layer on a fresh SoftHSM2 token, in-process: key pairs and HMAC keys are found by
//! start-up reconciliation (`list_materials`, one id per pair) and destroyed whole
//! (`destroy_material` removes both halves). One test per binary: SoftHSM2 reads
//! `SOFTHSM2_CONF` once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::open_fresh_hsm;
use p11kms::hsm::{
    AsymmetricPrimitives, Curve, KeyMaterials, KeyProvider, OaepHash, PairKind, PairUse,
    PublicKeyParts,
};
use p11kms::model::{KeyId, MaterialId};

#[test]
fn pairs_are_listed_once_and_destroyed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = open_fresh_hsm(dir.path(), 2, 0);
    assert!(
        hsm.capabilities().asymmetric.oaep(OaepHash::Sha1),
        "every token here does OAEP SHA-1"
    );

    let key = KeyId::new_random();
    let (rsa, ec, mac, aes) = (
        MaterialId::new_random(),
        MaterialId::new_random(),
        MaterialId::new_random(),
        MaterialId::new_random(),
    );
    hsm.create_key_pair(
        &key,
        &rsa,
        PairKind::Rsa { bits: 2048 },
        PairUse::EncryptDecrypt,
    )
    .unwrap();
    hsm.create_key_pair(&key, &ec, PairKind::Ec(Curve::P256), PairUse::SignVerify)
        .unwrap();
    hsm.create_hmac_key(&key, &mac, 32).unwrap();
    hsm.create_material(&key, &aes).unwrap();

    let mut listed = hsm.list_materials().unwrap();
    listed.sort();
    let mut expected = vec![rsa, ec, mac, aes];
    expected.sort();
    assert_eq!(listed, expected, "each material once, pairs included");

    match hsm.public_key(&ec).unwrap() {
        PublicKeyParts::Ec { params, .. } => assert_eq!(params, Curve::P256.params_der()),
        other => panic!("not an EC key: {other:?}"),
    }

    hsm.destroy_material(&rsa).unwrap();
    hsm.destroy_material(&ec).unwrap();
    let listed = hsm.list_materials().unwrap();
    assert!(
        !listed.contains(&rsa) && !listed.contains(&ec),
        "{listed:?}"
    );
    assert!(listed.contains(&mac) && listed.contains(&aes));
    // Neither half is left: the public half cannot be read either.
    assert!(hsm.public_key(&rsa).is_err());
    assert!(hsm.public_key(&ec).is_err());
}
