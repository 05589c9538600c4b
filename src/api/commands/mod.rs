//! Typed commands: what decoding makes of a validated request for the operations whose core
//! takes one. Required members are not `Option` and enum members (algorithms, specs, usages,
//! grant operations, ...) are enums, so the core neither checks for an absent member nor
//! parses a name again ("parse, don't validate").
//!
//! Every operation whose core needs a member or an enum takes a command (one file per
//! family); only ListKeys and ListAliases, whose members are all optional strings and numbers,
//! still take their `XxxRequest`. A name the model allows but this gateway does not support
//! (key spec `SM2`, origin `AWS_CLOUDHSM`) is a [`WireName::Unsupported`]: the core refuses it at
//! the point it did before. A member that only one path of an operation requires, and that AWS
//! reports only after the key lookup, is kept as a [`MissingMember`] for the core to report.

mod crypto;
mod grants;
mod keys;
mod signing;

pub use crypto::*;
pub use grants::*;
pub use keys::*;
pub use signing::*;

use std::fmt;

use super::enums::KEY_USAGE_VALUES;
use super::validate::{enum_set, null_member};
use crate::error::KmsError;
use crate::model::{wire_enum, KeyUsage};

/// A request body as the service core takes it: a validated request, or a command made of one.
pub trait FromBody: Sized {
    fn from_body(body: &[u8]) -> Result<Self, KmsError>;
}

/// An enum of the model: its wire names, in the model's order, and their parse.
pub trait WireEnum: Sized {
    const NAMES: &'static [&'static str];
    fn parse_name(name: &str) -> Option<Self>;
}

/// `WireEnum` for enums whose declaration order is the model's.
macro_rules! model_order {
    ($($name:ty),* $(,)?) => {
        $(impl WireEnum for $name {
            const NAMES: &'static [&'static str] = <$name>::NAMES;
            fn parse_name(name: &str) -> Option<Self> {
                <$name>::parse(name)
            }
        })*
    };
}

model_order!(
    SigningAlgorithm,
    MacAlgorithm,
    MessageType,
    EncryptionAlgorithm,
    DataKeySpec,
    DryRunModifier,
    GrantOperation,
    IncludeKeyMaterial,
    WrappingAlgorithm,
    WrappingKeySpec,
    ExpirationModel,
    ImportType,
);

// The model lists key usages in another order than `KeyRecord`'s enum declares them.
impl WireEnum for KeyUsage {
    const NAMES: &'static [&'static str] = KEY_USAGE_VALUES;
    fn parse_name(name: &str) -> Option<Self> {
        KeyUsage::parse(name)
    }
}

wire_enum! {
    /// `EncryptionAlgorithmSpec`.
    EncryptionAlgorithm {
        SymmetricDefault = "SYMMETRIC_DEFAULT",
        RsaesOaepSha1 = "RSAES_OAEP_SHA_1",
        RsaesOaepSha256 = "RSAES_OAEP_SHA_256",
        Sm2Pke = "SM2PKE",
    }
}

wire_enum! {
    /// `DataKeySpec` of GenerateDataKey(WithoutPlaintext).
    DataKeySpec {
        Aes256 = "AES_256",
        Aes128 = "AES_128",
    }
}

wire_enum! {
    /// `DryRunModifierType`.
    DryRunModifier {
        IgnoreCiphertext = "IGNORE_CIPHERTEXT",
    }
}

wire_enum! {
    /// `GrantOperation`.
    GrantOperation {
        Decrypt = "Decrypt",
        Encrypt = "Encrypt",
        GenerateDataKey = "GenerateDataKey",
        GenerateDataKeyWithoutPlaintext = "GenerateDataKeyWithoutPlaintext",
        ReEncryptFrom = "ReEncryptFrom",
        ReEncryptTo = "ReEncryptTo",
        Sign = "Sign",
        Verify = "Verify",
        GetPublicKey = "GetPublicKey",
        CreateGrant = "CreateGrant",
        RetireGrant = "RetireGrant",
        DescribeKey = "DescribeKey",
        GenerateDataKeyPair = "GenerateDataKeyPair",
        GenerateDataKeyPairWithoutPlaintext = "GenerateDataKeyPairWithoutPlaintext",
        GenerateMac = "GenerateMac",
        VerifyMac = "VerifyMac",
        DeriveSharedSecret = "DeriveSharedSecret",
    }
}

wire_enum! {
    /// `IncludeKeyMaterial` of ListKeyRotations.
    IncludeKeyMaterial {
        AllKeyMaterial = "ALL_KEY_MATERIAL",
        RotationsOnly = "ROTATIONS_ONLY",
    }
}

wire_enum! {
    /// `AlgorithmSpec`: GetParametersForImport's wrapping algorithms.
    WrappingAlgorithm {
        RsaesPkcs1V15 = "RSAES_PKCS1_V1_5",
        RsaesOaepSha1 = "RSAES_OAEP_SHA_1",
        RsaesOaepSha256 = "RSAES_OAEP_SHA_256",
        RsaAesKeyWrapSha1 = "RSA_AES_KEY_WRAP_SHA_1",
        RsaAesKeyWrapSha256 = "RSA_AES_KEY_WRAP_SHA_256",
        Sm2Pke = "SM2PKE",
    }
}

wire_enum! {
    /// `WrappingKeySpec`.
    WrappingKeySpec {
        Rsa2048 = "RSA_2048",
        Rsa3072 = "RSA_3072",
        Rsa4096 = "RSA_4096",
        Sm2 = "SM2",
    }
}

wire_enum! {
    /// `ExpirationModelType`.
    ExpirationModel {
        KeyMaterialExpires = "KEY_MATERIAL_EXPIRES",
        KeyMaterialDoesNotExpire = "KEY_MATERIAL_DOES_NOT_EXPIRE",
    }
}

wire_enum! {
    /// `ImportType`.
    ImportType {
        NewKeyMaterial = "NEW_KEY_MATERIAL",
        ExistingKeyMaterial = "EXISTING_KEY_MATERIAL",
    }
}

/// A name from one of the model's enum sets for which the gateway has a narrower enum
/// (`KeySpec`, `KeyOrigin`): one it supports, or a valid name it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireName<E> {
    Supported(E),
    Unsupported(String),
}

impl<E: fmt::Display> fmt::Display for WireName<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireName::Supported(value) => value.fmt(f),
            WireName::Unsupported(name) => f.write_str(name),
        }
    }
}

/// A member the operation requires on one path only, whose absence AWS reports after the key
/// lookup: the core turns it into the null-member error there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingMember(pub &'static str);

impl From<MissingMember> for KmsError {
    fn from(missing: MissingMember) -> Self {
        null_member(missing.0)
    }
}

/// A required member: validation has refused a request without it, so this only keeps the
/// same answer should a command ever be made of an unvalidated request.
fn required<T>(value: Option<T>, path: &str) -> Result<T, KmsError> {
    value.ok_or_else(|| null_member(path))
}

/// An enum member's name parsed, with validation's message for a name outside the set.
fn parse_enum<E: WireEnum>(name: &str, path: &str) -> Result<E, KmsError> {
    E::parse_name(name).ok_or_else(|| KmsError::constraint(name, path, &enum_set(E::NAMES)))
}

/// A required enum member.
fn required_enum<E: WireEnum>(value: Option<String>, path: &str) -> Result<E, KmsError> {
    parse_enum(&required(value, path)?, path)
}

/// An optional enum member.
fn optional_enum<E: WireEnum>(value: Option<String>, path: &str) -> Result<Option<E>, KmsError> {
    value.map(|name| parse_enum(&name, path)).transpose()
}

/// An optional list of enum members, with validation's message for the whole list.
fn enum_list<E: WireEnum>(
    value: Option<Vec<String>>,
    path: &str,
) -> Result<Option<Vec<E>>, KmsError> {
    let Some(names) = value else {
        return Ok(None);
    };
    let parsed: Option<Vec<E>> = names.iter().map(|n| E::parse_name(n)).collect();
    parsed.map(Some).ok_or_else(|| {
        KmsError::constraint(
            format!("[{}]", names.join(", ")),
            path,
            &format!("Member must satisfy constraint: [{}]", enum_set(E::NAMES)),
        )
    })
}

/// An optional member from `names` (the model's set), kept as a [`WireName`] of `E`.
fn optional_name<E>(
    value: Option<String>,
    path: &str,
    names: &[&str],
    parse: fn(&str) -> Option<E>,
) -> Result<Option<WireName<E>>, KmsError> {
    value
        .map(|name| required_name(Some(name), path, names, parse))
        .transpose()
}

/// A required member from `names` (the model's set), kept as a [`WireName`] of `E`.
fn required_name<E>(
    value: Option<String>,
    path: &str,
    names: &[&str],
    parse: fn(&str) -> Option<E>,
) -> Result<WireName<E>, KmsError> {
    let name = required(value, path)?;
    if !names.contains(&name.as_str()) {
        return Err(KmsError::constraint(&name, path, &enum_set(names)));
    }
    Ok(match parse(&name) {
        Some(value) => WireName::Supported(value),
        None => WireName::Unsupported(name),
    })
}

/// A command made of its validated request: each member moved over as it is, or through the
/// conversion after `=` (a required member, an enum), which gets the member's value.
macro_rules! command {
    ($(#[$doc:meta])* $name:ident from $request:ident {
        $($(#[$fdoc:meta])* $field:ident: $ty:ty $(= $convert:expr)?),* $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $crate::api::commands::FromBody for $name {
            fn from_body(body: &[u8]) -> Result<Self, $crate::error::KmsError> {
                let request: $request = $crate::api::decode(body)?;
                Ok($name {
                    $($field: $crate::api::commands::command!(
                        @member request.$field $(, $convert)?
                    ),)*
                })
            }
        }
    };
    (@member $value:expr) => { $value };
    (@member $value:expr, $convert:expr) => { ($convert)($value)? };
}

pub(crate) use command;

/// A conversion for [`command!`]: the required member at `path`.
fn present<T>(path: &'static str) -> impl FnOnce(Option<T>) -> Result<T, KmsError> {
    move |value| required(value, path)
}

/// A conversion for [`command!`]: the required enum member at `path`.
fn one_of<E: WireEnum>(path: &'static str) -> impl FnOnce(Option<String>) -> Result<E, KmsError> {
    move |value| required_enum(value, path)
}

/// A conversion for [`command!`]: the optional enum member at `path`.
fn maybe_one_of<E: WireEnum>(
    path: &'static str,
) -> impl FnOnce(Option<String>) -> Result<Option<E>, KmsError> {
    move |value| optional_enum(value, path)
}
