//! The domain ceremony through the real binary (`p11kms domain join-request`, `enrol`,
//! `join`, `members`) on two real SoftHSM2 tokens, "holder" and "joiner", in one token
//! directory, with one shared SQLite store. Afterwards, in this process: the key material
//! wrapped under D on the holder opens on the joiner and both compute the same result, and
//! a user-PIN holder cannot take D out under an AES key of their own on either token.
//!
//! One test function: SoftHSM2 reads `SOFTHSM2_CONF` once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use p11kms::hsm::ceremony::{
    fingerprint, parse_rsa_spki, rsa_spki, TRANSPORT_KEY_LABEL, TRUSTED_TRANSPORT_LABEL,
};
use p11kms::hsm::domain::{domain_key_template, DOMAIN_KEY_LABEL};
use serde_json::Value;

const HOLDER: &str = "holder";
const JOINER: &str = "joiner";
const USER_PIN: &str = "user-pin-1234";
const SO_PIN: &str = "so-pin-5678";

struct Lab {
    dir: tempfile::TempDir,
    module: PathBuf,
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `p11kms domain <args>` on the token `label`, with nothing from the developer's
    /// environment steering it.
    fn domain(&self, label: &str, args: &[&str]) -> Output {
        let bin = std::env::var_os("P11KMS_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_p11kms-under-test").into());
        let mut cmd = Command::new(bin);
        cmd.arg("domain").args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("P11KMS_") {
                cmd.env_remove(&name);
            }
        }
        let data = self.path(label);
        std::fs::create_dir_all(&data).unwrap();
        cmd.env("SOFTHSM2_CONF", self.path("softhsm2.conf"))
            .env("P11KMS_EMBEDDED_SOFTHSM", "false")
            .env("P11KMS_PKCS11_MODULE", &self.module)
            .env("P11KMS_TOKEN_LABEL", label)
            .env("P11KMS_PIN_FILE", self.path("user.pin"))
            .env("P11KMS_SO_PIN_FILE", self.path("so.pin"))
            .env("P11KMS_DATA_DIR", &data)
            .env("P11KMS_SQLITE_PATH", self.path("shared.sqlite"))
            .env("P11KMS_LOG", "warn");
        let started = std::time::Instant::now();
        let out = cmd.output().expect("run p11kms domain");
        eprintln!(
            "$ p11kms domain {} ({label}) -> {:?} in {} ms\n{}{}",
            args.join(" "),
            out.status.code(),
            started.elapsed().as_millis(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn load(module: &Path) -> Pkcs11 {
    let pkcs11 = Pkcs11::new(module).unwrap();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    pkcs11
}

fn user_session(pkcs11: &Pkcs11, label: &str) -> Session {
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap_or_else(|| panic!("no token {label}"));
    let session = pkcs11.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .unwrap();
    session
}

/// Two fresh tokens with the same PINs, and a domain key D in the holder.
fn lab() -> (Lab, Vec<u8>) {
    let dir = tempfile::Builder::new()
        .prefix("p11kms-ceremony-")
        .tempdir()
        .unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("user.pin"), USER_PIN).unwrap();
    std::fs::write(dir.path().join("so.pin"), SO_PIN).unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let module = p11kms::hsm::find_softhsm_module().expect("SoftHSM2 is installed");
    let pkcs11 = load(&module);
    for label in [HOLDER, JOINER] {
        let free = pkcs11
            .get_all_slots()
            .unwrap()
            .into_iter()
            .find(|s| !pkcs11.get_token_info(*s).unwrap().token_initialized())
            .unwrap();
        let so = AuthPin::new(SO_PIN.into());
        pkcs11.init_token(free, &so, label).unwrap();
        let slot = pkcs11
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == label)
            .unwrap();
        let session = pkcs11.open_rw_session(slot).unwrap();
        session.login(UserType::So, Some(&so)).unwrap();
        session.init_pin(&AuthPin::new(USER_PIN.into())).unwrap();
        session.logout().unwrap();
    }
    let domain_id: [u8; 16] = rand::random();
    let session = user_session(&pkcs11, HOLDER);
    let mut template = domain_key_template(&domain_id);
    template.push(Attribute::ValueLen(32.into()));
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .unwrap();
    drop(session);
    pkcs11.finalize().unwrap();
    (Lab { dir, module }, domain_id.to_vec())
}

fn find(session: &Session, label: &str, class: ObjectClass) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
}

fn attribute_bool(session: &Session, object: ObjectHandle, kind: AttributeType) -> bool {
    match session.get_attributes(object, &[kind]).unwrap().as_slice() {
        [Attribute::Sensitive(b)
        | Attribute::Extractable(b)
        | Attribute::WrapWithTrusted(b)
        | Attribute::Token(b)] => *b,
        other => panic!("{kind:?}: {other:?}"),
    }
}

/// The request with its public key replaced by another RSA key (one modulus byte flipped);
/// when `refingerprint`, the fingerprint field is made to match the new key too (an
/// attacker who rewrote the whole file).
fn tampered(request: &Value, refingerprint: bool) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let spki = b64
        .decode(request["transport_public_key"].as_str().unwrap())
        .unwrap();
    let (mut modulus, exponent) = parse_rsa_spki(&spki).unwrap();
    modulus[100] ^= 0x01;
    let other = rsa_spki(&modulus, &exponent).unwrap();
    let mut request = request.clone();
    request["transport_public_key"] = Value::String(b64.encode(&other));
    if refingerprint {
        request["fingerprint"] = Value::String(fingerprint(&other));
    }
    request
}

#[test]
fn the_ceremony_moves_the_domain_key_between_tokens_and_keeps_it_protected() {
    let (lab, domain_id) = lab();
    let domain_hex = hex::encode(&domain_id);
    let request_path = lab.path("request.json");
    let package_path = lab.path("package.json");

    // 1. The joining token makes its transport key pair and request.
    let out = lab.domain(
        JOINER,
        &["join-request", "--out", request_path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let request: Value =
        serde_json::from_str(&std::fs::read_to_string(&request_path).unwrap()).unwrap();
    let fp = request["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.len(), 64);
    assert!(request["key_bits"].as_u64().unwrap() >= 2048);
    assert_eq!(request["token"]["label"], JOINER);
    // SoftHSM2 does OAEP with SHA-1 only (design §3).
    assert_eq!(request["oaep_hashes"], serde_json::json!(["sha1"]));

    // 2. Tampered requests fail the fingerprint check, before the holder token is touched.
    for (name, refingerprint, expected) in [
        ("tampered-key.json", false, "the request was altered"),
        ("tampered-all.json", true, "the joining operator read out"),
    ] {
        let path = lab.path(name);
        std::fs::write(&path, tampered(&request, refingerprint).to_string()).unwrap();
        let out = lab.domain(
            HOLDER,
            &[
                "enrol",
                "--request",
                path.to_str().unwrap(),
                "--fingerprint",
                &fp,
                "--out",
                package_path.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("fingerprint check failed"),
            "{}",
            text(&out)
        );
        assert!(text(&out).contains(expected), "{}", text(&out));
        assert!(!package_path.exists());
    }
    // The right request with a wrong out-of-band fingerprint fails too.
    let mut wrong = fp.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let out = lab.domain(
        HOLDER,
        &[
            "enrol",
            "--request",
            request_path.to_str().unwrap(),
            "--fingerprint",
            std::str::from_utf8(&wrong).unwrap(),
            "--out",
            package_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!package_path.exists());

    // On SoftHSM2 the user cannot make the trusted key: an enrolment without the SO fails.
    let out = lab.domain(
        HOLDER,
        &[
            "enrol",
            "--request",
            request_path.to_str().unwrap(),
            "--fingerprint",
            &fp,
            "--trusted-by",
            "user",
            "--out",
            package_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("C_CreateObject (trusted key, as the user)"),
        "{}",
        text(&out)
    );
    assert!(!package_path.exists());

    // 3. The holder wraps D under the (SO-trusted) transport key; the operator types the
    //    fingerprint as read out, in groups and upper case.
    let spoken = fp
        .to_uppercase()
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let out = lab.domain(
        HOLDER,
        &[
            "enrol",
            "--request",
            request_path.to_str().unwrap(),
            "--fingerprint",
            &spoken,
            "--out",
            package_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let package: Value =
        serde_json::from_str(&std::fs::read_to_string(&package_path).unwrap()).unwrap();
    assert_eq!(package["domain_id"], domain_hex.as_str());
    assert_eq!(package["mechanism"], "CKM_RSA_PKCS_OAEP");
    assert_eq!(package["oaep_hash"], "sha1");
    assert_eq!(package["holder"]["label"], HOLDER);
    assert_eq!(package["joiner"]["label"], JOINER);

    // A package whose check value is not D's: the joiner unwraps, finds the mismatch, and
    // destroys what it unwrapped (the real join below then finds no D there yet).
    let mut forged = package.clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut check = b64
        .decode(forged["check"]["wrapped"].as_str().unwrap())
        .unwrap();
    check[10] ^= 0x80;
    forged["check"]["wrapped"] = Value::String(b64.encode(&check));
    let forged_path = lab.path("forged-package.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let out = lab.domain(
        JOINER,
        &["join", "--package", forged_path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("fails the holder's check value"),
        "{}",
        text(&out)
    );

    // 4. The joiner unwraps and checks D.
    let out = lab.domain(
        JOINER,
        &["join", "--package", package_path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The transport pair is gone: the package cannot be replayed.
    let out = lab.domain(
        JOINER,
        &["join", "--package", package_path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // 5. Both tokens are members.
    let out = lab.domain(HOLDER, &["members", "--domain", &domain_hex]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(
        lines[0].contains(&format!("domain {domain_hex} token '{HOLDER}'")),
        "{listing}"
    );
    assert!(lines[0].contains("by holder transport -"), "{listing}");
    assert!(
        lines[1].contains(&format!("domain {domain_hex} token '{JOINER}'")),
        "{listing}"
    );
    assert!(lines[1].contains(&format!("transport {fp}")), "{listing}");
    let out = lab.domain(JOINER, &["members", "--domain", &"00".repeat(16)]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no members recorded"
    );

    // 6. In this process, on both tokens.
    let pkcs11 = load(&lab.module);
    let holder = user_session(&pkcs11, HOLDER);
    let joiner = user_session(&pkcs11, JOINER);
    let d_of = |s: &Session| {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(DOMAIN_KEY_LABEL.as_bytes().to_vec()),
                Attribute::Id(domain_id.clone()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1);
        found[0]
    };
    let (d_holder, d_joiner) = (d_of(&holder), d_of(&joiner));
    for kind in [
        AttributeType::Token,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::WrapWithTrusted,
    ] {
        assert!(attribute_bool(&joiner, d_joiner, kind), "{kind:?}");
    }
    // Nothing of the ceremony is left behind.
    assert!(find(&joiner, TRANSPORT_KEY_LABEL, ObjectClass::PRIVATE_KEY).is_empty());
    assert!(find(&joiner, TRANSPORT_KEY_LABEL, ObjectClass::PUBLIC_KEY).is_empty());
    assert!(find(&holder, TRUSTED_TRANSPORT_LABEL, ObjectClass::PUBLIC_KEY).is_empty());

    // Key material wrapped under D on the holder opens on the joiner, and both encrypt
    // alike with it.
    let material = holder
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let blob = holder
        .wrap_key(&Mechanism::AesKeyWrapPad, d_holder, material)
        .unwrap();
    let opened = joiner
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            d_joiner,
            &blob,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let block = [0x5au8; 32];
    let on_holder = holder
        .encrypt(&Mechanism::AesEcb, material, &block)
        .unwrap();
    let on_joiner = joiner.encrypt(&Mechanism::AesEcb, opened, &block).unwrap();
    assert_eq!(on_holder, on_joiner);
    assert_ne!(on_holder, block.to_vec());

    // A user-PIN holder cannot wrap D under an AES key of their own, on either token
    // (CKA_WRAP_WITH_TRUSTED, enforced by SoftHSM2), though the same key wraps material
    // without that attribute.
    for (index, (session, d)) in [(&holder, d_holder), (&joiner, d_joiner)]
        .into_iter()
        .enumerate()
    {
        let own = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                ],
            )
            .unwrap();
        match session.wrap_key(&Mechanism::AesKeyWrapPad, own, d) {
            Err(CkError::Pkcs11(RvError::KeyNotWrappable, _)) => {}
            other => panic!("wrapping D under the user's own key: {other:?}"),
        }
        if index == 0 {
            session
                .wrap_key(&Mechanism::AesKeyWrapPad, own, material)
                .unwrap();
        }
        // Nor can the user make a trusted key of their own to wrap D under.
        let trusted = session.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![7u8; 32]),
            Attribute::Wrap(true),
            Attribute::Trusted(true),
        ]);
        assert!(
            trusted.is_err(),
            "a user created a trusted key: {trusted:?}"
        );
    }
    drop((holder, joiner));
    pkcs11.finalize().unwrap();
}
