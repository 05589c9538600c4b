//! Start-up probe of the mechanisms p11kms's schemes need, asked of the token itself.
//!
//! Mechanism support differs between HSMs (SoftHSM2 cannot GCM-wrap, CloudHSM has SP800-108,
//! ...), so nothing is assumed: each mechanism is looked up with `C_GetMechanismInfo` and
//! its flags checked for the uses the scheme makes of it.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
use cryptoki::slot::Slot;

/// The AES key wrap with padding the token offers, found by asking it. Both wrap a 32-byte
/// data key to the same 40 bytes (RFC 5649), so ciphertexts move between tokens that differ
/// here; they differ only for secrets whose length is not a multiple of 8, which the
/// symmetric scheme never wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrap {
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B), RFC 5649 as PKCS#11 3.0 names it (Kryoptic).
    Kwp,
    /// `CKM_AES_KEY_WRAP_PAD` (0x210A), SoftHSM2's: RFC 5649 for multiples of 8 bytes.
    Pad,
}

impl KeyWrap {
    /// In order of preference: the standard RFC 5649 first.
    const ALL: [KeyWrap; 2] = [KeyWrap::Kwp, KeyWrap::Pad];

    pub fn mechanism(self) -> Mechanism<'static> {
        match self {
            KeyWrap::Kwp => pkcs11_unnamed::aes_key_wrap_kwp_mechanism(),
            KeyWrap::Pad => Mechanism::AesKeyWrapPad,
        }
    }

    pub fn mechanism_type(self) -> MechanismType {
        match self {
            KeyWrap::Kwp => pkcs11_unnamed::aes_key_wrap_kwp(),
            KeyWrap::Pad => MechanismType::AES_KEY_WRAP_PAD,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyWrap::Kwp => "CKM_AES_KEY_WRAP_KWP",
            KeyWrap::Pad => "CKM_AES_KEY_WRAP_PAD",
        }
    }

    /// The first key wrap the token offers for both wrap and unwrap.
    pub fn probe(pkcs11: &Pkcs11, slot: Slot) -> Option<KeyWrap> {
        KeyWrap::ALL.into_iter().find(|wrap| {
            pkcs11
                .get_mechanism_info(slot, wrap.mechanism_type())
                .is_ok_and(|info| info.wrap() && info.unwrap())
        })
    }
}

/// A use of a mechanism (its name in messages) and the flag that allows it.
type Use = (&'static str, fn(&MechanismInfo) -> bool);

/// What one mechanism must be able to do.
struct Need {
    name: &'static str,
    mechanism: MechanismType,
    uses: &'static [Use],
}

const SYMMETRIC_SCHEME: &[Need] = &[
    Need {
        name: "CKM_AES_KEY_GEN",
        mechanism: MechanismType::AES_KEY_GEN,
        uses: &[("generate", MechanismInfo::generate)],
    },
    Need {
        name: "CKM_AES_GCM",
        mechanism: MechanismType::AES_GCM,
        uses: &[
            ("encrypt", MechanismInfo::encrypt),
            ("decrypt", MechanismInfo::decrypt),
        ],
    },
    Need {
        name: "CKM_AES_CBC_ENCRYPT_DATA",
        mechanism: MechanismType::AES_CBC_ENCRYPT_DATA,
        uses: &[("derive", MechanismInfo::derive)],
    },
];

/// The outcome of the probe: which needed mechanism uses are missing, and the key wrap.
#[derive(Debug, Clone, Default)]
pub struct MechanismReport {
    pub missing_symmetric: Vec<String>,
    pub key_wrap: Option<KeyWrap>,
}

impl MechanismReport {
    /// `None` when the symmetric scheme can run, else the missing mechanisms and uses.
    pub fn missing_for_symmetric(&self) -> Option<String> {
        (!self.missing_symmetric.is_empty()).then(|| self.missing_symmetric.join(", "))
    }
}

pub fn probe_mechanisms(pkcs11: &Pkcs11, slot: Slot) -> MechanismReport {
    let mut report = MechanismReport {
        key_wrap: KeyWrap::probe(pkcs11, slot),
        ..MechanismReport::default()
    };
    if report.key_wrap.is_none() {
        report
            .missing_symmetric
            .push("CKM_AES_KEY_WRAP_KWP or CKM_AES_KEY_WRAP_PAD (wrap, unwrap)".into());
    }
    for need in SYMMETRIC_SCHEME {
        match pkcs11.get_mechanism_info(slot, need.mechanism) {
            Ok(info) => {
                let lacking: Vec<&str> = need
                    .uses
                    .iter()
                    .filter(|(_, has)| !has(&info))
                    .map(|(used_for, _)| *used_for)
                    .collect();
                if !lacking.is_empty() {
                    report.missing_symmetric.push(format!(
                        "{} ({})",
                        need.name,
                        lacking.join(", ")
                    ));
                }
            }
            Err(_) => report
                .missing_symmetric
                .push(format!("{} (not offered)", need.name)),
        }
    }
    report
}
