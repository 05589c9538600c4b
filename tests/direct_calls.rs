//! `pkcs11-direct`, the single-call C_Encrypt / C_Decrypt / C_Sign / C_WrapKey, tested
//! directly on a fresh SoftHSM2 token against cryptoki's own calls on the same session:
//! equal output, buffers that are too small (never truncated, the session left usable), and
//! bad inputs (cryptoki's error, function and CKR code). One token per binary: SoftHSM2
//! reads `SOFTHSM2_CONF` once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::OnceLock;

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use pkcs11_direct::DirectModule;

struct Fixture {
    pkcs11: Pkcs11,
    slot: Slot,
    direct: DirectModule,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (pkcs11, slot, session) = common::open_embedded_softhsm(dir.path(), "direct");
        // Kept open: closing the last session would log the application out.
        std::mem::forget(session);
        let module = p11kms::hsm::find_softhsm_module().expect("SoftHSM2 is installed");
        let direct = DirectModule::load(&module).unwrap();
        Fixture {
            pkcs11,
            slot,
            direct,
            _dir: dir,
        }
    })
}

fn session() -> Session {
    let f = fixture();
    f.pkcs11.open_rw_session(f.slot).unwrap()
}

fn aes_key(s: &Session, extra: &[Attribute]) -> ObjectHandle {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Sensitive(true),
    ];
    template.extend_from_slice(extra);
    s.generate_key(&Mechanism::AesKeyGen, &template).unwrap()
}

fn gcm_key(s: &Session) -> ObjectHandle {
    aes_key(s, &[Attribute::Encrypt(true), Attribute::Decrypt(true)])
}

/// A KEK and an extractable 32-byte data key, as p11kms wraps them.
fn wrap_pair(s: &Session) -> (ObjectHandle, ObjectHandle) {
    let kek = aes_key(s, &[Attribute::Wrap(true), Attribute::Unwrap(true)]);
    let dek = aes_key(s, &[Attribute::Extractable(true), Attribute::Encrypt(true)]);
    (kek, dek)
}

fn hmac_key(s: &Session) -> ObjectHandle {
    s.generate_key(
        &Mechanism::GenericSecretKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ],
    )
    .unwrap()
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// The session has no operation left active: a fresh encrypt runs on it.
fn assert_usable(s: &Session, key: ObjectHandle) {
    let mut iv = [9u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap());
    s.encrypt(&gcm, key, b"still usable").unwrap();
}

#[test]
fn gcm_encrypt_and_decrypt_equal_cryptoki_for_every_size() {
    let f = fixture();
    let s = session();
    let key = gcm_key(&s);
    for len in [0, 1, 15, 16, 32, 100, 4096, 65536] {
        let data = payload(len);
        let mut iv = [len as u8; 12];
        let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
        let expected = s.encrypt(&gcm, key, &data).unwrap();
        let direct = f.direct.encrypt(&s, &gcm, key, &data, len + 16).unwrap();
        assert_eq!(direct, expected, "GCM ciphertext of {len} bytes");
        let opened = f
            .direct
            .decrypt(&s, &gcm, key, &direct, direct.len())
            .unwrap();
        assert_eq!(opened, data, "GCM round trip of {len} bytes");
        assert_eq!(opened, s.decrypt(&gcm, key, &expected).unwrap());
    }
}

#[test]
fn kwp_wrap_equals_cryptoki() {
    let f = fixture();
    let s = session();
    let (kek, dek) = wrap_pair(&s);
    let expected = s.wrap_key(&Mechanism::AesKeyWrapPad, kek, dek).unwrap();
    assert_eq!(expected.len(), 40);
    let direct = f
        .direct
        .wrap_key(&s, &Mechanism::AesKeyWrapPad, kek, dek, 40)
        .unwrap();
    assert_eq!(direct, expected);
    // An upper bound is as good as the exact length: the output is cut to what was written.
    let roomy = f
        .direct
        .wrap_key(&s, &Mechanism::AesKeyWrapPad, kek, dek, 512)
        .unwrap();
    assert_eq!(roomy, expected);
}

#[test]
fn hmac_sign_equals_cryptoki() {
    let f = fixture();
    let s = session();
    let key = hmac_key(&s);
    let data = payload(77);
    let expected = s.sign(&Mechanism::Sha256Hmac, key, &data).unwrap();
    let direct = f
        .direct
        .sign(&s, &Mechanism::Sha256Hmac, key, &data, 512)
        .unwrap();
    assert_eq!(direct, expected);
    assert_eq!(direct.len(), 32);
}

#[test]
fn a_buffer_too_small_is_never_truncated_and_leaves_the_session_usable() {
    let f = fixture();
    let s = session();
    let before = pkcs11_direct::buffers_too_small();
    let key = gcm_key(&s);
    let data = payload(48);
    let mut iv = [1u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
    let expected = s.encrypt(&gcm, key, &data).unwrap();
    for short in [0, 1, 47, 63] {
        let direct = f.direct.encrypt(&s, &gcm, key, &data, short).unwrap();
        assert_eq!(direct, expected, "encrypt into {short} bytes");
        assert_usable(&s, key);
        let opened = f.direct.decrypt(&s, &gcm, key, &expected, short).unwrap();
        assert_eq!(opened, data, "decrypt into {short} bytes");
        assert_usable(&s, key);
    }

    let (kek, dek) = wrap_pair(&s);
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrapPad, kek, dek).unwrap();
    for short in [0, 8, 39] {
        let direct = f
            .direct
            .wrap_key(&s, &Mechanism::AesKeyWrapPad, kek, dek, short)
            .unwrap();
        assert_eq!(direct, wrapped, "wrap into {short} bytes");
    }

    let mac_key = hmac_key(&s);
    let mac = s.sign(&Mechanism::Sha256Hmac, mac_key, &data).unwrap();
    let direct = f
        .direct
        .sign(&s, &Mechanism::Sha256Hmac, mac_key, &data, 31)
        .unwrap();
    assert_eq!(direct, mac);
    assert_usable(&s, key);
    // Every encrypt, wrap and sign above guessed short (tests of this binary run at once,
    // so others may add to the count, never take from it).
    const SHORT_CALLS: u64 = 4 + 3 + 1;
    let counted = pkcs11_direct::buffers_too_small() - before;
    assert!(counted >= SHORT_CALLS, "{counted} short buffers counted");
}

/// The direct call fails exactly as cryptoki's does: same CKR code, same function.
fn same_error(direct: Result<Vec<u8>, Error>, cryptoki: Result<Vec<u8>, Error>) -> RvError {
    let (Err(Error::Pkcs11(rv, function)), Err(Error::Pkcs11(crv, cfunction))) = (direct, cryptoki)
    else {
        panic!("both calls must fail with a PKCS#11 error");
    };
    assert_eq!(rv, crv);
    assert_eq!(format!("{function:?}"), format!("{cfunction:?}"));
    rv
}

#[test]
fn bad_inputs_fail_like_cryptoki_and_leave_the_session_usable() {
    let f = fixture();
    let s = session();
    let key = gcm_key(&s);
    let data = payload(32);
    let mut iv = [2u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
    let sealed = s.encrypt(&gcm, key, &data).unwrap();

    // A changed byte: the tag does not verify (SoftHSM2: CKR_GENERAL_ERROR, at C_Decrypt).
    let mut tampered = sealed.clone();
    tampered[3] ^= 1;
    let rv = same_error(
        f.direct.decrypt(&s, &gcm, key, &tampered, tampered.len()),
        s.decrypt(&gcm, key, &tampered),
    );
    assert_eq!(rv, RvError::GeneralError);
    assert!(matches!(
        f.direct.decrypt(&s, &gcm, key, &tampered, tampered.len()),
        Err(Error::Pkcs11(_, Function::Decrypt))
    ));
    assert_usable(&s, key);
    // Other AAD fails the same way.
    let mut iv = [2u8; 12];
    let other_aad = Mechanism::AesGcm(GcmParams::new(&mut iv, b"AAD", 128.into()).unwrap());
    same_error(
        f.direct.decrypt(&s, &other_aad, key, &sealed, sealed.len()),
        s.decrypt(&other_aad, key, &sealed),
    );
    assert_usable(&s, key);

    // A handle that names no key fails at the init, naming it.
    let nothing = gcm_key(&s);
    s.destroy_object(nothing).unwrap();
    let rv = same_error(
        f.direct.encrypt(&s, &gcm, nothing, &data, 48),
        s.encrypt(&gcm, nothing, &data),
    );
    assert!(matches!(
        f.direct.encrypt(&s, &gcm, nothing, &data, 48),
        Err(Error::Pkcs11(_, Function::EncryptInit))
    ));
    assert!(matches!(
        rv,
        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid
    ));
    assert_usable(&s, key);

    // A key that may not wrap, and a key that may not be wrapped.
    let (kek, dek) = wrap_pair(&s);
    same_error(
        f.direct
            .wrap_key(&s, &Mechanism::AesKeyWrapPad, dek, kek, 40),
        s.wrap_key(&Mechanism::AesKeyWrapPad, dek, kek),
    );
    // GCM cannot wrap on SoftHSM 2.6.1 (design §3).
    let mut iv = [3u8; 12];
    let gcm_wrap = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap());
    let rv = same_error(
        f.direct.wrap_key(&s, &gcm_wrap, kek, dek, 48),
        s.wrap_key(&gcm_wrap, kek, dek),
    );
    assert_eq!(rv, RvError::MechanismInvalid);
    assert_usable(&s, key);

    // A key without CKA_ENCRYPT.
    let mac_key = hmac_key(&s);
    same_error(
        f.direct.encrypt(&s, &gcm, mac_key, &data, 48),
        s.encrypt(&gcm, mac_key, &data),
    );
    assert_usable(&s, key);
}

#[test]
fn sessions_on_many_threads_use_the_one_module() {
    let f = fixture();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            scope.spawn(move || {
                let s = session();
                let key = gcm_key(&s);
                let (kek, dek) = wrap_pair(&s);
                let wrapped = s.wrap_key(&Mechanism::AesKeyWrapPad, kek, dek).unwrap();
                for i in 0..200u8 {
                    let data = [t, i, 1, 2, 3];
                    let mut iv = [t ^ i; 12];
                    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap());
                    let sealed = f.direct.encrypt(&s, &gcm, key, &data, 21).unwrap();
                    assert_eq!(f.direct.decrypt(&s, &gcm, key, &sealed, 21).unwrap(), data);
                    let again = f
                        .direct
                        .wrap_key(&s, &Mechanism::AesKeyWrapPad, kek, dek, 40)
                        .unwrap();
                    assert_eq!(again, wrapped);
                }
            });
        }
    });
}

#[test]
fn closing_a_session_destroys_its_objects_on_softhsm2() {
    let f = fixture();
    common::assert_closing_a_session_destroys_its_objects(&f.pkcs11, f.slot);
}
