//! The KMS API surface in AWS JSON 1.1: operations, request/response shapes, and their
//! validation against botocore's KMS model (2014-11-01).
//!
//! - [`Operation`]: the operations this service speaks, parsed from `X-Amz-Target`.
//! - [`shapes`]: `XxxRequest` / `XxxResponse` and the shared structures.
//! - [`enums`]: the model's enum value sets (`KEY_SPEC_VALUES`, ...).
//! - [`Validate`], [`decode`], [`encode`]: body bytes to a validated request, response to bytes.
//! - [`commands`]: typed commands decoded from validated requests ([`FromBody`]).

mod blob;
pub mod commands;
pub mod enums;
pub mod shapes;
pub(crate) mod validate;

#[cfg(test)]
mod tests;

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use blob::{Blob, SecretBlob};
pub use commands::*;
pub use shapes::*;
pub use validate::{null_member, Validate};

use crate::error::KmsError;

/// The `X-Amz-Target` prefix of every KMS operation.
pub const TARGET_PREFIX: &str = "TrentService.";

macro_rules! operations {
    ($($name:ident),* $(,)?) => {
        /// A KMS operation this service speaks.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation {
            $($name,)*
        }

        impl Operation {
            /// Every operation, in declaration order.
            pub const ALL: &'static [Operation] = &[$(Operation::$name,)*];

            /// The operation's name as in the model, e.g. `GenerateDataKey`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Operation::$name => stringify!($name),)*
                }
            }

            /// Parses a bare operation name (case-sensitive, as AWS is).
            pub fn from_name(name: &str) -> Option<Operation> {
                match name {
                    $(stringify!($name) => Some(Operation::$name),)*
                    _ => None,
                }
            }
        }
    };
}

operations!(
    CreateKey,
    DescribeKey,
    ListKeys,
    EnableKey,
    DisableKey,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    UpdateKeyDescription,
    CreateAlias,
    UpdateAlias,
    DeleteAlias,
    ListAliases,
    TagResource,
    UntagResource,
    ListResourceTags,
    EnableKeyRotation,
    DisableKeyRotation,
    GetKeyRotationStatus,
    RotateKeyOnDemand,
    ListKeyRotations,
    Encrypt,
    Decrypt,
    ReEncrypt,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    GenerateRandom,
    GetPublicKey,
    Sign,
    Verify,
    GenerateMac,
    VerifyMac,
    GenerateDataKeyPair,
    GenerateDataKeyPairWithoutPlaintext,
    CreateGrant,
    ListGrants,
    ListRetirableGrants,
    RetireGrant,
    RevokeGrant,
    GetKeyPolicy,
    PutKeyPolicy,
    ListKeyPolicies,
    GetParametersForImport,
    ImportKeyMaterial,
    DeleteImportedKeyMaterial,
);

impl Operation {
    /// Parses an `X-Amz-Target` value, `TrentService.<Name>`.
    pub fn from_target(target: &str) -> Option<Operation> {
        target
            .strip_prefix(TARGET_PREFIX)
            .and_then(Operation::from_name)
    }
}

/// Body bytes to a validated request. An empty body counts as `{}`. JSON that does not parse
/// or does not fit the shape is a `Serialization` error whose text never echoes input values;
/// a well-formed request that breaks the model's constraints is a `Validation` error.
pub fn decode<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, KmsError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let req: T = serde_json::from_slice(body).map_err(|e| serialization_error(&e))?;
    req.validate()?;
    Ok(req)
}

/// serde_json's own text can quote input (`invalid type: string "..."`): replace it.
fn serialization_error(e: &serde_json::Error) -> KmsError {
    use serde_json::error::Category;
    let msg = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "The request body is not valid JSON.",
        Category::Data if e.to_string().starts_with(blob::INVALID_BASE64) => {
            "A blob member is not valid base64."
        }
        Category::Data => "A member of the request has the wrong type or an invalid value.",
    };
    KmsError::Serialization(msg.to_owned())
}

/// A response to body bytes. The buffer is sized exactly before writing, so a response that
/// carries a plaintext leaves no partial copies behind in reallocated memory.
pub fn encode<T: Serialize>(resp: &T) -> Result<Vec<u8>, KmsError> {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, resp).map_err(|e| encode_error(&e))?;
    let mut out = Vec::with_capacity(counter.0);
    serde_json::to_writer(&mut out, resp).map_err(|e| encode_error(&e))?;
    Ok(out)
}

fn encode_error(e: &serde_json::Error) -> KmsError {
    KmsError::Internal(format!(
        "response serialization failed ({:?})",
        e.classify()
    ))
}

/// An `io::Write` that only counts.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
