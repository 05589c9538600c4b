//! Typed identities and the metadata records the service core and the store share.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A KMS key id: a UUID, shown in lower-case hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub uuid::Uuid);

impl KeyId {
    pub fn new_random() -> Self {
        KeyId(uuid::Uuid::new_v4())
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        KeyId(uuid::Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = ();
    /// Accepts only the canonical lower-case hyphenated form, as AWS does.
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 36 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(());
        }
        uuid::Uuid::try_parse(s).map(KeyId).map_err(|_| ())
    }
}

/// A key-material version id: 32 random bytes, shown as 64 lower-case hex digits
/// (`BackingKeyIdType` in the botocore model). It is also the HSM object's `CKA_ID`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaterialId(pub [u8; 32]);

impl MaterialId {
    pub fn new_random() -> Self {
        MaterialId(rand::random())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for MaterialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MaterialId({})", self.to_hex())
    }
}

impl fmt::Display for MaterialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for MaterialId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ())?;
        Ok(MaterialId(out))
    }
}

/// Key states from AWS's key-state table that this gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Creating,
    Enabled,
    Disabled,
    PendingDeletion,
    PendingImport,
    Unavailable,
}

impl KeyState {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyState::Creating => "Creating",
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingImport => "PendingImport",
            KeyState::Unavailable => "Unavailable",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Creating" => KeyState::Creating,
            "Enabled" => KeyState::Enabled,
            "Disabled" => KeyState::Disabled,
            "PendingDeletion" => KeyState::PendingDeletion,
            "PendingImport" => KeyState::PendingImport,
            "Unavailable" => KeyState::Unavailable,
            _ => return None,
        })
    }
}

/// Declares a fieldless enum whose variants each stand for one wire string, with
/// `as_str` for the wire and `parse` for the text as stored or sent.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            /// Every wire name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text,)+];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use wire_enum;

wire_enum! {
    /// The key specs this gateway makes (`KeySpec` on the wire).
    KeySpec {
        SymmetricDefault = "SYMMETRIC_DEFAULT",
        Rsa2048 = "RSA_2048",
        Rsa3072 = "RSA_3072",
        Rsa4096 = "RSA_4096",
        EccNistP256 = "ECC_NIST_P256",
        EccNistP384 = "ECC_NIST_P384",
        EccNistP521 = "ECC_NIST_P521",
        EccSecgP256k1 = "ECC_SECG_P256K1",
        Hmac224 = "HMAC_224",
        Hmac256 = "HMAC_256",
        Hmac384 = "HMAC_384",
        Hmac512 = "HMAC_512",
    }
}

wire_enum! {
    /// `KeyUsageType`.
    KeyUsage {
        EncryptDecrypt = "ENCRYPT_DECRYPT",
        SignVerify = "SIGN_VERIFY",
        GenerateVerifyMac = "GENERATE_VERIFY_MAC",
        KeyAgreement = "KEY_AGREEMENT",
    }
}

wire_enum! {
    /// Where a key's material comes from (`OriginType`): made in the token, or an adopted
    /// token object.
    KeyOrigin {
        AwsKms = "AWS_KMS",
        External = "EXTERNAL",
    }
}

/// How a key-material version came to be (`RotationType` in ListKeyRotations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaterialOrigin {
    /// The material made with the key.
    Initial,
    Automatic,
    OnDemand,
}

impl MaterialOrigin {
    pub fn as_str(&self) -> &'static str {
        match self {
            MaterialOrigin::Initial => "INITIAL",
            MaterialOrigin::Automatic => "AUTOMATIC",
            MaterialOrigin::OnDemand => "ON_DEMAND",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "INITIAL" => MaterialOrigin::Initial,
            "AUTOMATIC" => MaterialOrigin::Automatic,
            "ON_DEMAND" => MaterialOrigin::OnDemand,
            _ => return None,
        })
    }
}

/// Seconds since the Unix epoch, the unit AWS JSON 1.1 uses for timestamps.
pub type EpochSeconds = f64;

/// One KMS key's metadata. Key material never appears here: it lives in the HSM.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub key_id: KeyId,
    /// 12-digit AWS account id that owns the key.
    pub account: String,
    pub description: String,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub origin: KeyOrigin,
    pub state: KeyState,
    pub creation_date: EpochSeconds,
    /// Set while the key is PendingDeletion.
    pub deletion_date: Option<EpochSeconds>,
    pub pending_window_days: Option<u32>,
    pub rotation_enabled: bool,
    pub rotation_period_days: Option<u32>,
    pub next_rotation_date: Option<EpochSeconds>,
    /// The material used for new encryptions.
    pub current_material: MaterialId,
    /// Key policy document (JSON text).
    pub policy: String,
}

/// One version of a key's material: the HSM object with `CKA_ID` = `material_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct MaterialRecord {
    pub key_id: KeyId,
    pub material_id: MaterialId,
    pub created: EpochSeconds,
    pub origin: MaterialOrigin,
}

/// An alias, always within one account. `name` includes the `alias/` prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasRecord {
    pub account: String,
    pub name: String,
    pub target: KeyId,
    pub creation_date: EpochSeconds,
    pub last_updated: EpochSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

pub fn now_epoch() -> EpochSeconds {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How an adopted token key is found: an HSM object p11kms did not create (the custody
/// case). Its material id maps to this reference; the object itself is never copied,
/// modified or destroyed by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenKeyRef {
    /// By `CKA_ID` (any length).
    Id(Vec<u8>),
    /// By `CKA_LABEL`, for objects without a `CKA_ID`.
    Label(String),
}

impl fmt::Display for TokenKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKeyRef::Id(id) => write!(f, "CKA_ID {}", hex::encode(id)),
            TokenKeyRef::Label(label) => write!(f, "CKA_LABEL '{label}'"),
        }
    }
}

/// A grant: permission for `grantee_principal` to run `operations` on one key.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantRecord {
    /// 64 lower-case hex digits, as AWS shows them.
    pub grant_id: String,
    pub key_id: KeyId,
    pub name: Option<String>,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    /// 12-digit account id of the key's owner, where the grant was created.
    pub issuing_account: String,
    /// Grant operation names (`GrantOperation`), e.g. `Decrypt`.
    pub operations: Vec<String>,
    pub constraints: GrantConstraints,
    pub creation_date: EpochSeconds,
    /// Random part of the grant token, so a token cannot be made from a grant id alone.
    pub token_secret: [u8; 16],
}

/// Encryption-context constraints of a grant; either, both or neither may be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantConstraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<std::collections::BTreeMap<String, String>>,
}

impl GrantConstraints {
    pub fn is_empty(&self) -> bool {
        self.equals.is_none() && self.subset.is_none()
    }

    /// Whether a request's encryption context satisfies the constraints. As in AWS, the
    /// keys of a constraint match ignoring case; the values must match exactly.
    pub fn admit(&self, context: &std::collections::BTreeMap<String, String>) -> bool {
        let equals_ok = self
            .equals
            .as_ref()
            .is_none_or(|want| want.len() == context.len() && contains_pairs(context, want));
        let subset_ok = self
            .subset
            .as_ref()
            .is_none_or(|want| contains_pairs(context, want));
        equals_ok && subset_ok
    }

    /// Whether `self` (a grant being made through a grant's CreateGrant permission) is at
    /// least as strict as `parent`: every context `self` admits, `parent` admits too.
    pub fn at_least_as_strict_as(&self, parent: &GrantConstraints) -> bool {
        if let Some(want) = &parent.equals {
            // Only an identical EncryptionContextEquals admits nothing more.
            return self
                .equals
                .as_ref()
                .is_some_and(|mine| mine.len() == want.len() && contains_pairs(mine, want));
        }
        match &parent.subset {
            None => true,
            Some(want) => {
                self.equals
                    .as_ref()
                    .is_some_and(|mine| contains_pairs(mine, want))
                    || self
                        .subset
                        .as_ref()
                        .is_some_and(|mine| contains_pairs(mine, want))
            }
        }
    }
}

/// Whether `context` holds every pair of `pairs`, keys compared ignoring case.
fn contains_pairs(
    context: &std::collections::BTreeMap<String, String>,
    pairs: &std::collections::BTreeMap<String, String>,
) -> bool {
    pairs.iter().all(|(key, value)| {
        context
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(key) && v == value)
    })
}

#[cfg(test)]
mod tests {
    use super::GrantConstraints;
    use std::collections::BTreeMap;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn grant_constraints_match_keys_ignoring_case_and_values_exactly() {
        let subset = GrantConstraints {
            equals: None,
            subset: Some(ctx(&[("Tenant", "a")])),
        };
        assert!(subset.admit(&ctx(&[("tenant", "a"), ("x", "y")])));
        assert!(!subset.admit(&ctx(&[("tenant", "A")])));
        assert!(!subset.admit(&ctx(&[])));
        let equals = GrantConstraints {
            equals: Some(ctx(&[("tenant", "a")])),
            subset: None,
        };
        assert!(equals.admit(&ctx(&[("TENANT", "a")])));
        assert!(!equals.admit(&ctx(&[("tenant", "a"), ("x", "y")])));
        assert!(GrantConstraints::default().admit(&ctx(&[("any", "thing")])));
    }

    #[test]
    fn a_child_grant_must_be_at_least_as_strict() {
        let none = GrantConstraints::default();
        let subset_a = GrantConstraints {
            equals: None,
            subset: Some(ctx(&[("tenant", "a")])),
        };
        let subset_ab = GrantConstraints {
            equals: None,
            subset: Some(ctx(&[("tenant", "a"), ("app", "b")])),
        };
        let equals_ab = GrantConstraints {
            equals: Some(ctx(&[("tenant", "a"), ("app", "b")])),
            subset: None,
        };
        assert!(none.at_least_as_strict_as(&none));
        assert!(subset_a.at_least_as_strict_as(&none));
        assert!(!none.at_least_as_strict_as(&subset_a));
        assert!(subset_ab.at_least_as_strict_as(&subset_a));
        assert!(equals_ab.at_least_as_strict_as(&subset_a));
        assert!(!subset_a.at_least_as_strict_as(&subset_ab));
        assert!(equals_ab.at_least_as_strict_as(&equals_ab));
        assert!(!subset_ab.at_least_as_strict_as(&equals_ab));
    }
}

/// The id of a domain key: 16 random bytes, its `CKA_ID` in every token of the domain,
/// kept as hex in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DomainKeyId(pub [u8; 16]);

impl DomainKeyId {
    pub fn new_random() -> Self {
        DomainKeyId(rand::random())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for DomainKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainKeyId({})", self.to_hex())
    }
}

impl fmt::Display for DomainKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for DomainKeyId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(|_| ())?;
        Ok(DomainKeyId(out))
    }
}

/// A domain key's place in its life: `pending` was made for a rotation and is being
/// enrolled into the domain's tokens, but wraps nothing yet (at most one is); `active`
/// wraps new material (at most one is); `retiring` was active until a rotation began and
/// still opens blobs not yet rewrapped; `retired` wraps nothing any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainKeyState {
    Pending,
    Active,
    Retiring,
    Retired,
}

impl DomainKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainKeyState::Pending => "pending",
            DomainKeyState::Active => "active",
            DomainKeyState::Retiring => "retiring",
            DomainKeyState::Retired => "retired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DomainKeyState::Pending),
            "active" => Some(DomainKeyState::Active),
            "retiring" => Some(DomainKeyState::Retiring),
            "retired" => Some(DomainKeyState::Retired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DomainKeyRecord {
    pub id: DomainKeyId,
    pub state: DomainKeyState,
    pub created: EpochSeconds,
}

/// What a wrapped material unwraps into, so that the unwrap template gives the object
/// exactly the attributes its key needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrappedKind {
    /// The AES-256 derive-only key of a symmetric encryption key.
    AesDerive,
    /// The generic secret of an HMAC key (sign and verify).
    Hmac,
    RsaDecrypt,
    RsaSign,
    EcSign,
}

impl WrappedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WrappedKind::AesDerive => "aes-derive",
            WrappedKind::Hmac => "hmac",
            WrappedKind::RsaDecrypt => "rsa-decrypt",
            WrappedKind::RsaSign => "rsa-sign",
            WrappedKind::EcSign => "ec-sign",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aes-derive" => Some(WrappedKind::AesDerive),
            "hmac" => Some(WrappedKind::Hmac),
            "rsa-decrypt" => Some(WrappedKind::RsaDecrypt),
            "rsa-sign" => Some(WrappedKind::RsaSign),
            "ec-sign" => Some(WrappedKind::EcSign),
            _ => None,
        }
    }
}

/// A key material as domain mode keeps it: `C_WrapKey` output under a domain key. The
/// blob is ciphertext under a key that never leaves a token; the public half of a pair is
/// public and kept in the clear.
#[derive(Clone, PartialEq)]
pub struct WrappedMaterial {
    pub material_id: MaterialId,
    pub key_id: KeyId,
    pub kind: WrappedKind,
    /// The domain key that wrapped `blob`.
    pub domain_key_id: DomainKeyId,
    /// The PKCS#11 mechanism (`CKM_*`) that wrapped it.
    pub mechanism: u64,
    pub blob: Vec<u8>,
    /// A key pair's public half (see `crate::hsm::domain::encode_public`); empty for secrets.
    pub public: Vec<u8>,
}

impl fmt::Debug for WrappedMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedMaterial")
            .field("material_id", &self.material_id)
            .field("kind", &self.kind)
            .field("domain_key_id", &self.domain_key_id)
            .field("blob_len", &self.blob.len())
            .finish()
    }
}
