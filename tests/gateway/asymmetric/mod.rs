//! Asymmetric and HMAC keys through `aws-sdk-kms`: key specs, GetPublicKey, RSA-OAEP,
//! ReEncrypt directions, Sign/Verify, MACs and data key pairs.
//!
//! Everything the token produces is checked with RustCrypto, a library that is not the HSM:
//! signatures verify against the GetPublicKey key, ciphertexts made offline decrypt through
//! the gateway, data key pairs parse and match. Where the token lacks a mechanism (SoftHSM
//! 2.6.1 has no OAEP with SHA-256 and no AES-GCM key wrapping), the test accepts either a
//! working round trip or the gateway's UnsupportedOperationException that names it.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeyPairSpec, EncryptionAlgorithmSpec, KeySpec, KeyUsageType, MacAlgorithmSpec, MessageType,
    SigningAlgorithmSpec,
};
use aws_sdk_kms::Client;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use sha2::Digest;

mod encryption;
mod key_specs;
mod macs_and_pairs;
mod signing;

const MESSAGE: &[u8] = b"test message 123 !%$@ 1234567890";

async fn create(
    kms: &Client,
    spec: KeySpec,
    usage: KeyUsageType,
) -> aws_sdk_kms::types::KeyMetadata {
    kms.create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("KeyMetadata")
}

async fn public_key_der(kms: &Client, key_id: &str) -> Vec<u8> {
    kms.get_public_key()
        .key_id(key_id)
        .send()
        .await
        .expect("GetPublicKey")
        .public_key
        .expect("PublicKey")
        .into_inner()
}

fn strs(list: &[impl AsRef<str>]) -> Vec<String> {
    list.iter().map(|s| s.as_ref().to_string()).collect()
}

/// A call the token may not support: `Ok` when it worked, `Err` after checking it failed
/// with UnsupportedOperationException naming `mechanism`.
fn supported_or_named<T: std::fmt::Debug, E>(
    result: Result<T, aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>>,
    mechanism: &str,
) -> Option<T>
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let err = expect_error::<T, E>(Err(e), "UnsupportedOperationException");
            err.assert_message_contains(mechanism);
            None
        }
    }
}
