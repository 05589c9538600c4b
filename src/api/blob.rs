//! Blob members: base64 strings on the wire (standard alphabet; padding written, and accepted
//! but not required on input, as Java's decoder behind AWS does).

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The serde error text for a blob that is not base64; [`super::decode`] recognises it.
pub(crate) const INVALID_BASE64: &str = "invalid base64 in a blob member";

/// Decodes into a zeroed buffer sized up front, so no reallocation leaves copies behind.
fn decode_b64(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(text.len())]);
    let n = ENGINE.decode_slice(text, out.as_mut_slice()).ok()?;
    out.truncate(n);
    Some(out)
}

struct B64Visitor;

impl Visitor<'_> for B64Visitor {
    type Value = Zeroizing<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        decode_b64(v).ok_or_else(|| E::custom(INVALID_BASE64))
    }
}

/// A non-secret blob: ciphertext, public key, signature, MAC tag.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl Blob {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Blob(v)
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ENGINE.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A ciphertext is not secret: move it out of the zeroizing buffer.
        d.deserialize_str(B64Visitor).map(|z| Blob(z.to_vec()))
    }
}

/// A secret blob (`"sensitive": true` in the model: `Plaintext`, `PrivateKeyPlaintext`,
/// `Message`). Wiped on drop; `Debug` shows only the length. No `PartialEq`, on purpose:
/// compare secrets in constant time where it matters.
#[derive(Clone, Default)]
pub struct SecretBlob(Zeroizing<Vec<u8>>);

impl SecretBlob {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        SecretBlob(bytes)
    }
    /// The secret bytes. Callers must not log or copy them into non-zeroizing buffers.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBlob {
    fn from(v: Zeroizing<Vec<u8>>) -> Self {
        SecretBlob(v)
    }
}

impl From<Vec<u8>> for SecretBlob {
    fn from(v: Vec<u8>) -> Self {
        SecretBlob(Zeroizing::new(v))
    }
}

impl fmt::Debug for SecretBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBlob({} bytes)", self.0.len())
    }
}

impl Serialize for SecretBlob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = Zeroizing::new(String::with_capacity(self.0.len().div_ceil(3) * 4));
        ENGINE.encode_string(self.0.as_slice(), &mut text);
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(B64Visitor).map(SecretBlob)
    }
}

/// What validation may learn about a blob: its length, never its bytes.
pub(crate) trait ByteLen {
    fn byte_len(&self) -> usize;
}

impl ByteLen for Blob {
    fn byte_len(&self) -> usize {
        self.len()
    }
}

impl ByteLen for SecretBlob {
    fn byte_len(&self) -> usize {
        self.len()
    }
}
