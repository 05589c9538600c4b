//! PKCS#11 mechanism types that cryptoki 0.12 has no name for.
//!
//! cryptoki builds a `MechanismType` only from the values it names (or from vendor-defined
//! values), and p11kms forbids unsafe code. RFC 5649 key wrap is `CKM_AES_KEY_WRAP_KWP`
//! (0x210B) in PKCS#11 3.0, and some tokens (Kryoptic) offer only that value, so this crate
//! holds the one conversion that needs `unsafe`, for named constants only.

// A panic here would be a bug: failures are cryptoki errors. Unit tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki_sys::CK_MECHANISM_TYPE;

/// `CKM_AES_KEY_WRAP_KWP`: AES key wrap with padding, RFC 5649 (PKCS#11 3.0).
pub const CKM_AES_KEY_WRAP_KWP: CK_MECHANISM_TYPE = cryptoki_sys::CKM_AES_KEY_WRAP_KWP;

/// The `MechanismType` of `CKM_AES_KEY_WRAP_KWP`.
pub fn aes_key_wrap_kwp() -> MechanismType {
    // `MechanismType` is `#[repr(transparent)]` over `CK_MECHANISM_TYPE` (cryptoki relies on
    // that itself to read mechanism lists), so the value converts as is; `transmute` checks
    // the sizes at compile time.
    unsafe { std::mem::transmute::<CK_MECHANISM_TYPE, MechanismType>(CKM_AES_KEY_WRAP_KWP) }
}

/// `CKM_AES_KEY_WRAP_KWP` as a mechanism without parameters (the default IV of RFC 5649).
pub fn aes_key_wrap_kwp_mechanism() -> Mechanism<'static> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(aes_key_wrap_kwp(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_carries_the_raw_value() {
        assert_eq!(*aes_key_wrap_kwp(), CKM_AES_KEY_WRAP_KWP);
        assert_eq!(
            aes_key_wrap_kwp_mechanism().mechanism_type(),
            aes_key_wrap_kwp()
        );
    }
}
