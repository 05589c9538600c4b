//! Start-up probe of the mechanisms p11kms's schemes need, asked of the token itself.
//!
//! Mechanism support differs between HSMs (SoftHSM2 cannot GCM-wrap, CloudHSM has SP800-108,
//! ...), so nothing is assumed: each mechanism is looked up with `C_GetMechanismInfo` and
//! its flags checked for the uses the scheme makes of it.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::{MechanismInfo, MechanismType};
use cryptoki::slot::Slot;

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
        name: "CKM_AES_KEY_WRAP_PAD",
        mechanism: MechanismType::AES_KEY_WRAP_PAD,
        uses: &[
            ("wrap", MechanismInfo::wrap),
            ("unwrap", MechanismInfo::unwrap),
        ],
    },
    Need {
        name: "CKM_AES_CBC_ENCRYPT_DATA",
        mechanism: MechanismType::AES_CBC_ENCRYPT_DATA,
        uses: &[("derive", MechanismInfo::derive)],
    },
];

/// The outcome of the probe: which needed mechanism uses are missing.
#[derive(Debug, Clone, Default)]
pub struct MechanismReport {
    pub missing_symmetric: Vec<String>,
}

impl MechanismReport {
    /// `None` when the symmetric scheme can run, else the missing mechanisms and uses.
    pub fn missing_for_symmetric(&self) -> Option<String> {
        (!self.missing_symmetric.is_empty()).then(|| self.missing_symmetric.join(", "))
    }
}

pub fn probe_mechanisms(pkcs11: &Pkcs11, slot: Slot) -> MechanismReport {
    let mut report = MechanismReport::default();
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
