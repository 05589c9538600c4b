//! `p11kms doctor`: what a PKCS#11 module and token can really do for p11kms.
//!
//! Mechanism lists lie by omission: cryptoki's `get_mechanism_list()` silently drops the
//! mechanisms it cannot name (design notes §3: 40 of SoftHSM's 70), and a mechanism that is
//! offered may still refuse the parameters p11kms needs (SoftHSM offers `CKM_RSA_PKCS_OAEP`
//! but answers `CKR_ARGUMENTS_BAD` for SHA-256). So the doctor asks `C_GetMechanismInfo` for
//! each mechanism p11kms uses, and then *tries* every operation with the exact parameters the
//! gateway would use, on throwaway session keys (`CKA_TOKEN` false) that die with the
//! session: nothing is written to the token. The verdict per p11kms feature rests on the
//! trials, not on the flags.

use cryptoki::context::Pkcs11;
use cryptoki::error::Error as CkError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

mod error;
pub use error::{DoctorError, TrialFailure};

use super::asymmetric::{Curve, SigHash};
use super::timed::TimedSession;
use super::{
    derive_kek, find_token, generate_dek, initialise, trial_run, unwrap_dek, HsmError, KeyWrap,
    SessionObject, IV_LEN, WRAPPED_DEK_LEN,
};

/// What the doctor needs: the same module, token and PIN `serve` would use.
pub struct DoctorTarget {
    pub module: std::path::PathBuf,
    pub token_label: String,
    pub user_pin: SecretString,
}

/// One mechanism p11kms cares about, as the token describes it.
#[derive(Debug, Clone)]
pub struct MechanismRow {
    pub name: &'static str,
    /// `None` when `C_GetMechanismInfo` refused it: not offered.
    pub info: Option<MechanismSummary>,
}

#[derive(Debug, Clone)]
pub struct MechanismSummary {
    pub flags: Vec<&'static str>,
    pub min_key_size: usize,
    pub max_key_size: usize,
}

/// One trial operation and what happened.
#[derive(Debug, Clone)]
pub struct Trial {
    pub id: &'static str,
    pub description: &'static str,
    /// `Ok(detail)` or why it did not pass.
    pub outcome: Result<String, TrialFailure>,
}

/// One p11kms feature and whether this token can serve it.
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: &'static str,
    pub supported: bool,
    pub evidence: String,
}

/// Everything the doctor found.
#[derive(Debug, Clone)]
pub struct DoctorReport {
    pub module: String,
    pub library: String,
    pub token: String,
    /// How many mechanisms `get_mechanism_list()` returned (cryptoki drops unnamed ones).
    pub listed_mechanisms: usize,
    pub mechanisms: Vec<MechanismRow>,
    pub trials: Vec<Trial>,
    pub features: Vec<Feature>,
}

impl DoctorReport {
    /// Whether `p11kms serve` can run on this token (its symmetric scheme works).
    pub fn gateway_can_run(&self) -> bool {
        self.features
            .iter()
            .find(|f| f.name == FEATURE_SYMMETRIC)
            .is_some_and(|f| f.supported)
    }
}

/// The mechanisms p11kms uses or may use, asked one by one.
const MECHANISMS: &[(&str, MechanismType)] = &[
    ("CKM_AES_KEY_GEN", MechanismType::AES_KEY_GEN),
    ("CKM_AES_GCM", MechanismType::AES_GCM),
    ("CKM_AES_KEY_WRAP", MechanismType::AES_KEY_WRAP),
    ("CKM_AES_KEY_WRAP_PAD", MechanismType::AES_KEY_WRAP_PAD),
    (
        "CKM_AES_CBC_ENCRYPT_DATA",
        MechanismType::AES_CBC_ENCRYPT_DATA,
    ),
    ("CKM_AES_CMAC", MechanismType::AES_CMAC),
    (
        "CKM_GENERIC_SECRET_KEY_GEN",
        MechanismType::GENERIC_SECRET_KEY_GEN,
    ),
    (
        "CKM_RSA_PKCS_KEY_PAIR_GEN",
        MechanismType::RSA_PKCS_KEY_PAIR_GEN,
    ),
    ("CKM_RSA_PKCS", MechanismType::RSA_PKCS),
    ("CKM_RSA_PKCS_OAEP", MechanismType::RSA_PKCS_OAEP),
    ("CKM_RSA_PKCS_PSS", MechanismType::RSA_PKCS_PSS),
    ("CKM_SHA256_RSA_PKCS", MechanismType::SHA256_RSA_PKCS),
    ("CKM_SHA384_RSA_PKCS", MechanismType::SHA384_RSA_PKCS),
    ("CKM_SHA512_RSA_PKCS", MechanismType::SHA512_RSA_PKCS),
    (
        "CKM_SHA256_RSA_PKCS_PSS",
        MechanismType::SHA256_RSA_PKCS_PSS,
    ),
    (
        "CKM_SHA384_RSA_PKCS_PSS",
        MechanismType::SHA384_RSA_PKCS_PSS,
    ),
    (
        "CKM_SHA512_RSA_PKCS_PSS",
        MechanismType::SHA512_RSA_PKCS_PSS,
    ),
    ("CKM_EC_KEY_PAIR_GEN", MechanismType::ECC_KEY_PAIR_GEN),
    ("CKM_ECDSA", MechanismType::ECDSA),
    ("CKM_ECDSA_SHA256", MechanismType::ECDSA_SHA256),
    ("CKM_SHA224_HMAC", MechanismType::SHA224_HMAC),
    ("CKM_SHA256_HMAC", MechanismType::SHA256_HMAC),
    ("CKM_SHA384_HMAC", MechanismType::SHA384_HMAC),
    ("CKM_SHA512_HMAC", MechanismType::SHA512_HMAC),
    ("CKM_SHA256", MechanismType::SHA256),
];

const FEATURE_SYMMETRIC: &str = "symmetric envelope scheme (SYMMETRIC_DEFAULT)";

/// Which trials each p11kms feature needs (all must pass).
const FEATURES: &[(&str, &[&str])] = &[
    (
        FEATURE_SYMMETRIC,
        &["aes-keygen", "gcm", "kwp", "derive", "envelope"],
    ),
    ("ReEncrypt in token", &["rewrap"]),
    ("GenerateRandom", &["random"]),
    ("RSA key pairs (RSA_2048)", &["rsa-keygen"]),
    ("RSAES_OAEP_SHA_1 encrypt/decrypt", &["oaep-sha1"]),
    ("RSAES_OAEP_SHA_256 encrypt/decrypt", &["oaep-sha256"]),
    ("RSA OAEP SHA-1 wrap/unwrap", &["oaep-sha1-wrap"]),
    ("RSA OAEP SHA-256 wrap/unwrap", &["oaep-sha256-wrap"]),
    (
        "RSASSA_PKCS1_V1_5_SHA_256",
        &["pkcs1-sha256", "pkcs1-digest"],
    ),
    ("RSASSA_PKCS1_V1_5_SHA_384", &["pkcs1-sha384"]),
    ("RSASSA_PKCS1_V1_5_SHA_512", &["pkcs1-sha512"]),
    ("RSASSA_PSS_SHA_256", &["pss-sha256", "pss-digest"]),
    ("RSASSA_PSS_SHA_384", &["pss-sha384"]),
    ("RSASSA_PSS_SHA_512", &["pss-sha512"]),
    ("ECDSA_SHA_256 (ECC_NIST_P256)", &["ecdsa-p256"]),
    ("ECDSA_SHA_384 (ECC_NIST_P384)", &["ecdsa-p384"]),
    ("ECDSA_SHA_512 (ECC_NIST_P521)", &["ecdsa-p521"]),
    ("ECDSA_SHA_256 (ECC_SECG_P256K1)", &["ecdsa-secp256k1"]),
    ("HMAC_224 (HMAC_SHA_224)", &["hmac-sha224"]),
    ("HMAC_256 (HMAC_SHA_256)", &["hmac-sha256"]),
    ("HMAC_384 (HMAC_SHA_384)", &["hmac-sha384"]),
    ("HMAC_512 (HMAC_SHA_512)", &["hmac-sha512"]),
];

/// Loads the module, logs in to the token and examines it. Only session objects are made.
pub fn examine(target: &DoctorTarget) -> Result<DoctorReport, DoctorError> {
    let pkcs11 = initialise(&target.module).map_err(DoctorError::Module)?;
    let result = examine_with(&pkcs11, target);
    let _ = pkcs11.finalize();
    result
}

fn examine_with(pkcs11: &Pkcs11, target: &DoctorTarget) -> Result<DoctorReport, DoctorError> {
    let library = match pkcs11.get_library_info() {
        Ok(info) => format!(
            "{} {} (library {}, Cryptoki {})",
            info.manufacturer_id().trim_end(),
            info.library_description().trim_end(),
            info.library_version(),
            info.cryptoki_version()
        ),
        Err(e) => format!("unknown ({})", HsmError::from(e)),
    };
    let slot = find_token(pkcs11, &target.token_label).map_err(DoctorError::Token)?;
    let token = match pkcs11.get_token_info(slot) {
        Ok(info) => format!(
            "'{}' {} {} serial {} firmware {}",
            info.label().trim_end(),
            info.manufacturer_id().trim_end(),
            info.model().trim_end(),
            info.serial_number().trim_end(),
            info.firmware_version()
        ),
        Err(e) => format!("unknown ({})", HsmError::from(e)),
    };
    let listed_mechanisms = pkcs11
        .get_mechanism_list(slot)
        .map(|l| l.len())
        .unwrap_or(0);
    // cryptoki has no named type for CKM_AES_KEY_WRAP_KWP (0x210B), so it cannot sit in the
    // constant list; it is asked next to CKM_AES_KEY_WRAP_PAD.
    let mechanisms = MECHANISMS
        .iter()
        .copied()
        .flat_map(|row| {
            let kwp = (row.1 == MechanismType::AES_KEY_WRAP_PAD)
                .then(|| (KeyWrap::Kwp.name(), KeyWrap::Kwp.mechanism_type()));
            std::iter::once(row).chain(kwp)
        })
        .map(|(name, mechanism)| MechanismRow {
            name,
            info: pkcs11
                .get_mechanism_info(slot, mechanism)
                .ok()
                .map(|i| summarise(&i)),
        })
        .collect();

    let session = pkcs11
        .open_rw_session(slot)
        .map_err(|e| DoctorError::Session(HsmError::from(e)))?;
    let pin = AuthPin::new(target.user_pin.expose_secret().into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(DoctorError::Login(HsmError::from(e))),
    }
    // The key wrap the gateway would pick; a token with neither fails the trials that use it.
    let key_wrap = KeyWrap::probe(pkcs11, slot).unwrap_or(KeyWrap::Pad);
    let trials = run_trials(&TimedSession::new(&session, None), key_wrap);
    let _ = session.logout();
    drop(session);
    let features = judge(&trials);
    Ok(DoctorReport {
        module: target.module.display().to_string(),
        library,
        token,
        listed_mechanisms,
        mechanisms,
        trials,
        features,
    })
}

fn summarise(info: &MechanismInfo) -> MechanismSummary {
    let all: [(&'static str, bool); 10] = [
        ("generate", info.generate()),
        ("generate_key_pair", info.generate_key_pair()),
        ("encrypt", info.encrypt()),
        ("decrypt", info.decrypt()),
        ("sign", info.sign()),
        ("verify", info.verify()),
        ("wrap", info.wrap()),
        ("unwrap", info.unwrap()),
        ("derive", info.derive()),
        ("digest", info.digest()),
    ];
    MechanismSummary {
        flags: all
            .iter()
            .filter(|(_, has)| *has)
            .map(|(name, _)| *name)
            .collect(),
        min_key_size: info.min_key_size(),
        max_key_size: info.max_key_size(),
    }
}

fn judge(trials: &[Trial]) -> Vec<Feature> {
    FEATURES
        .iter()
        .map(|(name, needs)| {
            let failed = needs.iter().find_map(|id| {
                match trials.iter().find(|t| t.id == *id).map(|t| &t.outcome) {
                    Some(Ok(_)) => None,
                    Some(Err(e)) => Some(format!("{id}: {e}")),
                    None => Some(format!("{id}: not run")),
                }
            });
            match failed {
                Some(why) => Feature {
                    name,
                    supported: false,
                    evidence: why,
                },
                None => Feature {
                    name,
                    supported: true,
                    evidence: format!("trial {} ok", needs.join(", ")),
                },
            }
        })
        .collect()
}

// === trials ===

type TrialResult = Result<String, HsmError>;

fn err(function: &str, what: &str) -> HsmError {
    HsmError::gateway(function, what, super::Scope::Data)
}

fn record(trials: &mut Vec<Trial>, id: &'static str, description: &'static str, r: TrialResult) {
    trials.push(Trial {
        id,
        description,
        outcome: r.map_err(TrialFailure::from),
    });
}

fn skipped(trials: &mut Vec<Trial>, id: &'static str, description: &'static str, why: &str) {
    trials.push(Trial {
        id,
        description,
        outcome: Err(TrialFailure::Skipped(why.into())),
    });
}

fn run_trials(s: &TimedSession<'_>, key_wrap: KeyWrap) -> Vec<Trial> {
    let mut t = Vec::new();
    record(
        &mut t,
        "random",
        "C_GenerateRandom, 32 bytes",
        trial_random(s),
    );
    record(
        &mut t,
        "aes-keygen",
        "AES-256 session key generation",
        trial_aes_keygen(s),
    );
    record(
        &mut t,
        "gcm",
        "AES-GCM encrypt/decrypt, 12-byte IV, 128-bit tag, AAD",
        trial_gcm(s),
    );
    record(
        &mut t,
        "kwp",
        "AES key wrap with padding (RFC 5649) wrap/unwrap",
        trial_kwp(s, key_wrap),
    );
    record(
        &mut t,
        "derive",
        "AES_CBC_ENCRYPT_DATA derive, deterministic",
        trial_derive(s, key_wrap),
    );
    record(
        &mut t,
        "envelope",
        "the whole p11kms envelope: seal, rewrap, open, wrong key rejected",
        trial_run(s, key_wrap).map(|()| "ok".into()),
    );
    record(
        &mut t,
        "rewrap",
        "unwrap into a sensitive object, wrap again; CKA_VALUE unreadable",
        trial_rewrap(s, key_wrap),
    );
    rsa_trials(s, &mut t);
    for (id, description, curve, digest) in CURVES {
        record(&mut t, id, description, trial_ecdsa(s, *curve, *digest));
    }
    for (id, description, mechanism, bytes) in HMACS {
        record(&mut t, id, description, trial_hmac(s, mechanism, *bytes));
    }
    t
}

fn trial_random(s: &TimedSession<'_>) -> TrialResult {
    let mut buf = Zeroizing::new([0u8; 32]);
    s.generate_random_slice(buf.as_mut())?;
    if buf.iter().all(|b| *b == 0) {
        return Err(err("C_GenerateRandom", "returned only zero bytes"));
    }
    Ok("32 bytes".into())
}

fn aes_session_key(s: &TimedSession<'_>, extra: &[Attribute]) -> Result<ObjectHandle, CkError> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Sensitive(true),
    ];
    template.extend_from_slice(extra);
    s.generate_key(&Mechanism::AesKeyGen, &template)
}

fn trial_aes_keygen(s: &TimedSession<'_>) -> TrialResult {
    let _key = SessionObject::new(s, aes_session_key(s, &[Attribute::Extractable(false)])?);
    Ok("AES-256, sensitive, non-extractable".into())
}

fn trial_gcm(s: &TimedSession<'_>) -> TrialResult {
    let key = SessionObject::new(
        s,
        aes_session_key(s, &[Attribute::Encrypt(true), Attribute::Decrypt(true)])?,
    );
    let plaintext = b"p11kms doctor gcm";
    let mut iv = [0u8; IV_LEN];
    s.generate_random_slice(&mut iv)?;
    let mut iv_param = iv;
    let sealed = s.encrypt(
        &Mechanism::AesGcm(GcmParams::new(&mut iv_param, b"aad", 128.into())?),
        key.handle,
        plaintext,
    )?;
    if sealed.len() != plaintext.len() + 16 {
        return Err(err(
            "C_Encrypt",
            "GCM output is not plaintext + 16-byte tag",
        ));
    }
    let mut iv_param = iv;
    let opened = Zeroizing::new(s.decrypt(
        &Mechanism::AesGcm(GcmParams::new(&mut iv_param, b"aad", 128.into())?),
        key.handle,
        &sealed,
    )?);
    if opened.as_slice() != plaintext {
        return Err(err("C_Decrypt", "GCM round trip mismatch"));
    }
    let mut iv_param = iv;
    if s.decrypt(
        &Mechanism::AesGcm(GcmParams::new(&mut iv_param, b"other", 128.into())?),
        key.handle,
        &sealed,
    )
    .is_ok()
    {
        return Err(err("C_Decrypt", "GCM accepted a wrong AAD"));
    }
    Ok("round trip ok, wrong AAD rejected, tag appended".into())
}

fn trial_kwp(s: &TimedSession<'_>, key_wrap: KeyWrap) -> TrialResult {
    let kek = SessionObject::new(
        s,
        aes_session_key(s, &[Attribute::Wrap(true), Attribute::Unwrap(true)])?,
    );
    let dek = SessionObject::new(s, generate_dek(s)?);
    let wrapped = s.wrap_key(&key_wrap.mechanism(), kek.handle, dek.handle)?;
    if wrapped.len() != WRAPPED_DEK_LEN {
        return Err(err(
            "C_WrapKey",
            "KWP output of a 32-byte key is not 40 bytes",
        ));
    }
    let _back = SessionObject::new(s, unwrap_dek(s, key_wrap, kek.handle, &wrapped, false)?);
    Ok(format!(
        "32-byte key -> 40 bytes and back ({})",
        key_wrap.name()
    ))
}

fn derive_base(s: &TimedSession<'_>) -> Result<ObjectHandle, CkError> {
    aes_session_key(s, &[Attribute::Extractable(false), Attribute::Derive(true)])
}

fn trial_derive(s: &TimedSession<'_>, key_wrap: KeyWrap) -> TrialResult {
    let base = SessionObject::new(s, derive_base(s)?);
    let a = SessionObject::new(s, derive_kek(s, base.handle, &[9u8; 32])?);
    let b = SessionObject::new(s, derive_kek(s, base.handle, &[9u8; 32])?);
    // Equal keys wrap equally (KWP is deterministic): determinism without reading CKA_VALUE.
    let dek = SessionObject::new(s, generate_dek(s)?);
    let wa = s.wrap_key(&key_wrap.mechanism(), a.handle, dek.handle)?;
    let wb = s.wrap_key(&key_wrap.mechanism(), b.handle, dek.handle)?;
    if wa != wb {
        return Err(err("C_DeriveKey", "derivation is not deterministic"));
    }
    Ok("AES-256 from a derive-only base, deterministic".into())
}

fn trial_rewrap(s: &TimedSession<'_>, key_wrap: KeyWrap) -> TrialResult {
    let base = SessionObject::new(s, derive_base(s)?);
    let k1 = SessionObject::new(s, derive_kek(s, base.handle, &[1u8; 32])?);
    let k2 = SessionObject::new(s, derive_kek(s, base.handle, &[2u8; 32])?);
    let dek = SessionObject::new(s, generate_dek(s)?);
    let wrapped = s.wrap_key(&key_wrap.mechanism(), k1.handle, dek.handle)?;
    let moved = SessionObject::new(s, unwrap_dek(s, key_wrap, k1.handle, &wrapped, true)?);
    // get_attributes omits sensitive attributes rather than failing (design §4b).
    let value = s.get_attributes(moved.handle, &[AttributeType::Value])?;
    if value.iter().any(|a| matches!(a, Attribute::Value(_))) {
        return Err(err(
            "C_GetAttributeValue",
            "an unwrapped data key's CKA_VALUE was readable",
        ));
    }
    let rewrapped = s.wrap_key(&key_wrap.mechanism(), k2.handle, moved.handle)?;
    let _back = SessionObject::new(s, unwrap_dek(s, key_wrap, k2.handle, &rewrapped, false)?);
    Ok("no C_Decrypt, no CKA_VALUE".into())
}

// --- RSA ---

fn rsa_trials(s: &TimedSession<'_>, t: &mut Vec<Trial>) {
    const RSA_IDS: &[(&str, &str)] = &[
        (
            "oaep-sha1",
            "RSA-OAEP SHA-1/MGF1-SHA1 encrypt (public) / decrypt (private)",
        ),
        (
            "oaep-sha256",
            "RSA-OAEP SHA-256/MGF1-SHA256 encrypt / decrypt",
        ),
        (
            "oaep-sha1-wrap",
            "RSA-OAEP SHA-1 wrap / unwrap of an AES key",
        ),
        (
            "oaep-sha256-wrap",
            "RSA-OAEP SHA-256 wrap / unwrap of an AES key",
        ),
        ("pkcs1-sha256", "CKM_SHA256_RSA_PKCS sign / verify"),
        ("pkcs1-sha384", "CKM_SHA384_RSA_PKCS sign / verify"),
        ("pkcs1-sha512", "CKM_SHA512_RSA_PKCS sign / verify"),
        (
            "pkcs1-digest",
            "CKM_RSA_PKCS over a SHA-256 DigestInfo (MessageType DIGEST)",
        ),
        (
            "pss-sha256",
            "CKM_SHA256_RSA_PKCS_PSS sign / verify, salt 32",
        ),
        (
            "pss-sha384",
            "CKM_SHA384_RSA_PKCS_PSS sign / verify, salt 48",
        ),
        (
            "pss-sha512",
            "CKM_SHA512_RSA_PKCS_PSS sign / verify, salt 64",
        ),
        (
            "pss-digest",
            "CKM_RSA_PKCS_PSS over a SHA-256 digest (MessageType DIGEST)",
        ),
    ];
    let pair = match rsa_key_pair(s) {
        Ok(pair) => pair,
        Err(e) => {
            let e = HsmError::from(e);
            record(t, "rsa-keygen", "RSA-2048 key pair generation", Err(e));
            for (id, description) in RSA_IDS {
                skipped(t, id, description, "no RSA key pair");
            }
            return;
        }
    };
    let public = SessionObject::new(s, pair.0);
    let private = SessionObject::new(s, pair.1);
    record(
        t,
        "rsa-keygen",
        "RSA-2048 key pair generation",
        Ok("2048 bits, e=65537".into()),
    );
    let (pubk, privk) = (public.handle, private.handle);
    let [oaep1, oaep256, wrap1, wrap256, p256, p384, p512, pdig, s256, s384, s512, sdig] = RSA_IDS
    else {
        return;
    };
    record(t, oaep1.0, oaep1.1, trial_oaep(s, pubk, privk, OAEP_SHA1));
    record(
        t,
        oaep256.0,
        oaep256.1,
        trial_oaep(s, pubk, privk, OAEP_SHA256),
    );
    record(
        t,
        wrap1.0,
        wrap1.1,
        trial_oaep_wrap(s, pubk, privk, OAEP_SHA1),
    );
    record(
        t,
        wrap256.0,
        wrap256.1,
        trial_oaep_wrap(s, pubk, privk, OAEP_SHA256),
    );
    let message = b"p11kms doctor signing trial";
    record(
        t,
        p256.0,
        p256.1,
        sign_verify(s, &Mechanism::Sha256RsaPkcs, pubk, privk, message, 256),
    );
    record(
        t,
        p384.0,
        p384.1,
        sign_verify(s, &Mechanism::Sha384RsaPkcs, pubk, privk, message, 256),
    );
    record(
        t,
        p512.0,
        p512.1,
        sign_verify(s, &Mechanism::Sha512RsaPkcs, pubk, privk, message, 256),
    );
    let digest_info = SigHash::Sha256.digest_info(&SigHash::Sha256.digest(message));
    record(
        t,
        pdig.0,
        pdig.1,
        sign_verify(s, &Mechanism::RsaPkcs, pubk, privk, &digest_info, 256),
    );
    let pss = |hash: MechanismType, mgf: PkcsMgfType, len: u64| PkcsPssParams {
        hash_alg: hash,
        mgf,
        s_len: len.into(),
    };
    let m256 =
        Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32));
    let m384 =
        Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48));
    let m512 =
        Mechanism::Sha512RsaPkcsPss(pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64));
    let mdig = Mechanism::RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32));
    record(
        t,
        s256.0,
        s256.1,
        sign_verify(s, &m256, pubk, privk, message, 256),
    );
    record(
        t,
        s384.0,
        s384.1,
        sign_verify(s, &m384, pubk, privk, message, 256),
    );
    record(
        t,
        s512.0,
        s512.1,
        sign_verify(s, &m512, pubk, privk, message, 256),
    );
    let digest: [u8; 32] = Sha256::digest(message).into();
    record(
        t,
        sdig.0,
        sdig.1,
        sign_verify(s, &mdig, pubk, privk, &digest, 256),
    );
}

fn rsa_key_pair(s: &TimedSession<'_>) -> Result<(ObjectHandle, ObjectHandle), CkError> {
    s.raw().generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Encrypt(true),
            Attribute::Verify(true),
            Attribute::Wrap(true),
        ],
        &[
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(true),
            Attribute::Sign(true),
            Attribute::Unwrap(true),
        ],
    )
}

#[derive(Clone, Copy)]
struct Oaep {
    hash: MechanismType,
    mgf: PkcsMgfType,
}

const OAEP_SHA1: Oaep = Oaep {
    hash: MechanismType::SHA1,
    mgf: PkcsMgfType::MGF1_SHA1,
};
const OAEP_SHA256: Oaep = Oaep {
    hash: MechanismType::SHA256,
    mgf: PkcsMgfType::MGF1_SHA256,
};

fn oaep_mechanism(o: Oaep) -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(o.hash, o.mgf, PkcsOaepSource::empty()))
}

fn trial_oaep(
    s: &TimedSession<'_>,
    public: ObjectHandle,
    private: ObjectHandle,
    o: Oaep,
) -> TrialResult {
    let plaintext = b"p11kms doctor oaep";
    let ciphertext = s.encrypt(&oaep_mechanism(o), public, plaintext)?;
    if ciphertext.len() != 256 {
        return Err(err("C_Encrypt", "OAEP output is not the modulus length"));
    }
    let opened = Zeroizing::new(s.decrypt(&oaep_mechanism(o), private, &ciphertext)?);
    if opened.as_slice() != plaintext {
        return Err(err("C_Decrypt", "OAEP round trip mismatch"));
    }
    Ok("round trip in token".into())
}

fn trial_oaep_wrap(
    s: &TimedSession<'_>,
    public: ObjectHandle,
    private: ObjectHandle,
    o: Oaep,
) -> TrialResult {
    let dek = SessionObject::new(s, generate_dek(s)?);
    let wrapped = s.wrap_key(&oaep_mechanism(o), public, dek.handle)?;
    let _back = SessionObject::new(
        s,
        s.unwrap_key(
            &oaep_mechanism(o),
            private,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Derive(true),
            ],
        )?,
    );
    Ok("AES-256 key wrapped and unwrapped".into())
}

fn sign_verify(
    s: &TimedSession<'_>,
    mechanism: &Mechanism,
    public: ObjectHandle,
    private: ObjectHandle,
    data: &[u8],
    signature_len: usize,
) -> TrialResult {
    let signature = s.raw().sign(mechanism, private, data)?;
    if signature.len() != signature_len {
        return Err(err(
            "C_Sign",
            &format!(
                "signature is {} bytes, expected {signature_len}",
                signature.len()
            ),
        ));
    }
    s.raw().verify(mechanism, public, data, &signature)?;
    let mut bad = signature.clone();
    if let Some(last) = bad.last_mut() {
        *last ^= 1;
    }
    if s.raw().verify(mechanism, public, data, &bad).is_ok() {
        return Err(err("C_Verify", "accepted a corrupted signature"));
    }
    Ok(format!(
        "{signature_len}-byte signature, verified, corruption rejected"
    ))
}

// --- ECDSA ---

/// (trial id, description, curve, digest).
type CurveTrial = (&'static str, &'static str, Curve, SigHash);

const CURVES: &[CurveTrial] = &[
    (
        "ecdsa-p256",
        "EC P-256 key pair, CKM_ECDSA over SHA-256",
        Curve::P256,
        SigHash::Sha256,
    ),
    (
        "ecdsa-p384",
        "EC P-384 key pair, CKM_ECDSA over SHA-384",
        Curve::P384,
        SigHash::Sha384,
    ),
    (
        "ecdsa-p521",
        "EC P-521 key pair, CKM_ECDSA over SHA-512",
        Curve::P521,
        SigHash::Sha512,
    ),
    (
        "ecdsa-secp256k1",
        "EC secp256k1 key pair, CKM_ECDSA over SHA-256",
        Curve::Secp256k1,
        SigHash::Sha256,
    ),
];

fn trial_ecdsa(s: &TimedSession<'_>, curve: Curve, hash: SigHash) -> TrialResult {
    let (public, private) = s.raw().generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::EcParams(curve.params_der().to_vec()),
            Attribute::Verify(true),
        ],
        &[
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ],
    )?;
    let public = SessionObject::new(s, public);
    let private = SessionObject::new(s, private);
    let digest = hash.digest(b"p11kms doctor ecdsa trial");
    let signature = s.raw().sign(&Mechanism::Ecdsa, private.handle, &digest)?;
    s.raw()
        .verify(&Mechanism::Ecdsa, public.handle, &digest, &signature)?;
    Ok(format!(
        "{}: raw r||s of {} bytes (the gateway DER-encodes it)",
        curve.name(),
        signature.len()
    ))
}

// --- HMAC ---

/// (trial id, description, mechanism, key length in bytes as AWS's HMAC key specs use).
type Hmac = (&'static str, &'static str, Mechanism<'static>, u64);

const HMACS: &[Hmac] = &[
    (
        "hmac-sha224",
        "generic secret 28 bytes, CKM_SHA224_HMAC",
        Mechanism::Sha224Hmac,
        28,
    ),
    (
        "hmac-sha256",
        "generic secret 32 bytes, CKM_SHA256_HMAC",
        Mechanism::Sha256Hmac,
        32,
    ),
    (
        "hmac-sha384",
        "generic secret 48 bytes, CKM_SHA384_HMAC",
        Mechanism::Sha384Hmac,
        48,
    ),
    (
        "hmac-sha512",
        "generic secret 64 bytes, CKM_SHA512_HMAC",
        Mechanism::Sha512Hmac,
        64,
    ),
];

fn trial_hmac(s: &TimedSession<'_>, mechanism: &Mechanism, key_bytes: u64) -> TrialResult {
    let key = SessionObject::new(
        s,
        s.generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(key_bytes.into()),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )?,
    );
    let data = b"p11kms doctor mac trial";
    let mac = s.raw().sign(mechanism, key.handle, data)?;
    s.raw().verify(mechanism, key.handle, data, &mac)?;
    Ok(format!("{}-byte MAC, verified", mac.len()))
}

// === rendering ===

/// The report as plain-text tables for a terminal.
pub fn render(report: &DoctorReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("module:  {}\n", report.module));
    out.push_str(&format!("library: {}\n", report.library));
    out.push_str(&format!("token:   {}\n", report.token));
    out.push_str(&format!(
        "C_GetMechanismList via cryptoki: {} mechanisms it can name (it drops the others; \
         each mechanism below is asked with C_GetMechanismInfo)\n\n",
        report.listed_mechanisms
    ));

    out.push_str("MECHANISMS\n");
    let rows: Vec<[String; 3]> = report
        .mechanisms
        .iter()
        .map(|m| match &m.info {
            Some(i) => [
                m.name.to_string(),
                i.flags.join(" "),
                format!("{}..{}", i.min_key_size, i.max_key_size),
            ],
            None => [m.name.to_string(), "not offered".into(), "-".into()],
        })
        .collect();
    out.push_str(&table(&["mechanism", "flags", "key sizes"], &rows));

    out.push_str("\nTRIALS (throwaway session keys)\n");
    let rows: Vec<[String; 3]> = report
        .trials
        .iter()
        .map(|t| {
            let (result, detail) = match &t.outcome {
                Ok(d) => ("ok".to_string(), d.clone()),
                Err(e) => ("FAILED".to_string(), e.to_string()),
            };
            [
                t.id.to_string(),
                result,
                format!("{}: {detail}", t.description),
            ]
        })
        .collect();
    out.push_str(&table(&["trial", "result", "detail"], &rows));

    out.push_str("\nP11KMS FEATURES ON THIS HSM\n");
    let rows: Vec<[String; 3]> = report
        .features
        .iter()
        .map(|f| {
            [
                f.name.to_string(),
                if f.supported { "yes" } else { "no" }.to_string(),
                f.evidence.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["feature", "supported", "evidence"], &rows));
    out.push_str(if report.gateway_can_run() {
        "\nverdict: p11kms can serve symmetric keys from this token\n"
    } else {
        "\nverdict: p11kms cannot run on this token (its symmetric scheme fails)\n"
    });
    out
}

/// A `|`-separated table with padded columns (the last column is not padded).
fn table(header: &[&str; 3], rows: &[[String; 3]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 3]| {
        format!(
            "| {:<w0$} | {:<w1$} | {}\n",
            cells[0],
            cells[1],
            cells[2],
            w0 = widths[0],
            w1 = widths[1]
        )
    };
    let mut out = line(*header);
    out.push_str(&format!(
        "|{}|{}|{}\n",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 2),
        "-".repeat(widths[2] + 1)
    ));
    for row in rows {
        out.push_str(&line([&row[0], &row[1], &row[2]]));
    }
    out
}

#[cfg(test)]
mod tests;
