//! DER encodings the asymmetric operations return or accept: SubjectPublicKeyInfo (GetPublicKey,
//! GenerateDataKeyPair), PKCS #8 private keys (GenerateDataKeyPair), PKCS #1 v1.5 DigestInfo,
//! and ECDSA signatures (the token speaks raw r‖s, AWS speaks DER).

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

use crate::error::KmsError;
pub use crate::hsm::SigHash;
use crate::hsm::{Curve, PrivateKeyParts, PublicKeyParts};

/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

fn encoding_error(what: &str, e: der::Error) -> KmsError {
    KmsError::Internal(format!("cannot encode {what}: {e}"))
}

/// The uncompressed point inside `CKA_EC_POINT`. PKCS #11 wants a DER OCTET STRING there,
/// but some tokens store the bare point; accept both.
fn bare_point(point: &[u8]) -> Result<&[u8], KmsError> {
    match OctetStringRef::from_der(point) {
        Ok(inner) if inner.as_bytes().first() == Some(&0x04) => Ok(inner.as_bytes()),
        _ if point.first() == Some(&0x04) && point.len() % 2 == 1 => Ok(point),
        _ => Err(KmsError::Internal(
            "the token's EC point is not an uncompressed point".into(),
        )),
    }
}

/// DER SubjectPublicKeyInfo of a public key read from the token.
pub fn spki(public: &PublicKeyParts) -> Result<Vec<u8>, KmsError> {
    match public {
        PublicKeyParts::Rsa { modulus, exponent } => {
            let key = pkcs1::RsaPublicKey {
                modulus: UintRef::new(modulus).map_err(|e| encoding_error("the modulus", e))?,
                public_exponent: UintRef::new(exponent)
                    .map_err(|e| encoding_error("the exponent", e))?,
            }
            .to_der()
            .map_err(|e| encoding_error("RSAPublicKey", e))?;
            encode_spki(RSA_ENCRYPTION, AnyRef::NULL, &key)
        }
        PublicKeyParts::Ec { params, point } => {
            let curve = AnyRef::from_der(params).map_err(|e| encoding_error("EC params", e))?;
            encode_spki(EC_PUBLIC_KEY, curve, bare_point(point)?)
        }
    }
}

fn encode_spki(
    oid: ObjectIdentifier,
    parameters: AnyRef<'_>,
    key: &[u8],
) -> Result<Vec<u8>, KmsError> {
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid,
            parameters: Some(parameters),
        },
        subject_public_key: BitStringRef::from_bytes(key)
            .map_err(|e| encoding_error("the public key bits", e))?,
    }
    .to_der()
    .map_err(|e| encoding_error("SubjectPublicKeyInfo", e))
}

/// DER PKCS #8 PrivateKeyInfo of a private key read from the token, in a buffer wiped on drop.
pub fn pkcs8(
    private: &PrivateKeyParts,
    public: &PublicKeyParts,
    curve: Option<Curve>,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    match (private, public, curve) {
        (PrivateKeyParts::Rsa(rsa), _, _) => {
            let inner = Zeroizing::new(
                pkcs1::RsaPrivateKey {
                    modulus: uint(&rsa.modulus)?,
                    public_exponent: uint(&rsa.public_exponent)?,
                    private_exponent: uint(&rsa.private_exponent)?,
                    prime1: uint(&rsa.prime1)?,
                    prime2: uint(&rsa.prime2)?,
                    exponent1: uint(&rsa.exponent1)?,
                    exponent2: uint(&rsa.exponent2)?,
                    coefficient: uint(&rsa.coefficient)?,
                    other_prime_infos: None,
                }
                .to_der()
                .map_err(|e| encoding_error("RSAPrivateKey", e))?,
            );
            encode_pkcs8(RSA_ENCRYPTION, AnyRef::NULL, &inner)
        }
        (PrivateKeyParts::Ec(ec), PublicKeyParts::Ec { params, point }, Some(curve)) => {
            // RFC 5915: the scalar is exactly as long as the group order's bytes.
            let field = curve.field_len();
            let value = ec.value.as_slice();
            let trimmed = &value[value.len().saturating_sub(field)..];
            let mut scalar = Zeroizing::new(vec![0u8; field]);
            scalar[field - trimmed.len()..].copy_from_slice(trimmed);
            let named = ObjectIdentifier::from_der(params)
                .map_err(|e| encoding_error("the curve OID", e))?;
            let inner = Zeroizing::new(
                sec1::EcPrivateKey {
                    private_key: &scalar,
                    parameters: Some(sec1::EcParameters::NamedCurve(named)),
                    public_key: Some(bare_point(point)?),
                }
                .to_der()
                .map_err(|e| encoding_error("ECPrivateKey", e))?,
            );
            let curve_any = AnyRef::from_der(params).map_err(|e| encoding_error("EC params", e))?;
            encode_pkcs8(EC_PUBLIC_KEY, curve_any, &inner)
        }
        _ => Err(KmsError::Internal(
            "private and public key parts do not match".into(),
        )),
    }
}

fn uint(bytes: &[u8]) -> Result<UintRef<'_>, KmsError> {
    UintRef::new(bytes).map_err(|e| encoding_error("an integer", e))
}

fn encode_pkcs8(
    oid: ObjectIdentifier,
    parameters: AnyRef<'_>,
    private_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    pkcs8::PrivateKeyInfo {
        algorithm: AlgorithmIdentifierRef {
            oid,
            parameters: Some(parameters),
        },
        private_key,
        public_key: None,
    }
    .to_der()
    .map(Zeroizing::new)
    .map_err(|e| encoding_error("PrivateKeyInfo", e))
}

/// ECDSA-Sig-Value (RFC 3279).
#[derive(Sequence)]
struct EcdsaSignature<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// The token's raw r‖s as DER, as AWS returns ECDSA signatures.
pub fn ecdsa_to_der(raw: &[u8]) -> Result<Vec<u8>, KmsError> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(KmsError::Internal(format!(
            "the token returned a {}-byte ECDSA signature",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    EcdsaSignature {
        r: UintRef::new(r).map_err(|e| encoding_error("r", e))?,
        s: UintRef::new(s).map_err(|e| encoding_error("s", e))?,
    }
    .to_der()
    .map_err(|e| encoding_error("ECDSA-Sig-Value", e))
}

/// A DER ECDSA signature as the raw r‖s the token verifies; `None` if it is not one for
/// this curve (so it cannot verify).
pub fn ecdsa_from_der(der: &[u8], curve: Curve) -> Option<Vec<u8>> {
    let sig = EcdsaSignature::from_der(der).ok()?;
    let field = curve.field_len();
    let mut out = vec![0u8; 2 * field];
    for (i, part) in [sig.r.as_bytes(), sig.s.as_bytes()].into_iter().enumerate() {
        if part.len() > field || part.iter().all(|b| *b == 0) {
            return None;
        }
        out[(i + 1) * field - part.len()..(i + 1) * field].copy_from_slice(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_params_are_the_named_oids() {
        for (curve, oid) in [
            (Curve::P256, "1.2.840.10045.3.1.7"),
            (Curve::P384, "1.3.132.0.34"),
            (Curve::P521, "1.3.132.0.35"),
            (Curve::Secp256k1, "1.3.132.0.10"),
        ] {
            let expected = ObjectIdentifier::new(oid).unwrap().to_der().unwrap();
            assert_eq!(curve.params_der(), expected.as_slice(), "{oid}");
        }
    }

    #[test]
    fn digest_info_prefixes_name_the_hash() {
        for (hash, oid) in [
            (SigHash::Sha256, "2.16.840.1.101.3.4.2.1"),
            (SigHash::Sha384, "2.16.840.1.101.3.4.2.2"),
            (SigHash::Sha512, "2.16.840.1.101.3.4.2.3"),
        ] {
            let digest = hash.digest(b"x");
            let info = hash.digest_info(&digest);
            let expected = spki::AlgorithmIdentifierRef {
                oid: ObjectIdentifier::new(oid).unwrap(),
                parameters: Some(AnyRef::NULL),
            }
            .to_der()
            .unwrap();
            // SEQUENCE { AlgorithmIdentifier, OCTET STRING digest }
            assert_eq!(info[0], 0x30);
            assert_eq!(usize::from(info[1]) + 2, info.len());
            assert_eq!(&info[2..2 + expected.len()], expected.as_slice());
            assert_eq!(&info[info.len() - digest.len()..], digest.as_slice());
        }
    }

    #[test]
    fn ecdsa_der_round_trips_with_leading_zeros_and_high_bits() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x00;
        raw[1] = 0x7f;
        raw[31] = 1;
        raw[32] = 0xff;
        raw[63] = 2;
        let der = ecdsa_to_der(&raw).unwrap();
        assert_eq!(ecdsa_from_der(&der, Curve::P256).unwrap(), raw);
        assert!(ecdsa_from_der(&der[..der.len() - 1], Curve::P256).is_none());
        assert!(ecdsa_from_der(b"junk", Curve::P256).is_none());
    }

    #[test]
    fn ec_point_accepts_octet_string_or_bare() {
        let bare = [4u8, 1, 2];
        let wrapped = OctetStringRef::new(&bare).unwrap().to_der().unwrap();
        assert_eq!(bare_point(&wrapped).unwrap(), &bare);
        assert_eq!(bare_point(&bare).unwrap(), &bare);
    }
}
