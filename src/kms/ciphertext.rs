//! The symmetric ciphertext format: three schemes, named by the second byte, all read
//! forever. New ciphertexts use the best scheme the token's probe allows (scheme 3 with
//! AES-GCM key wrap, else 2), but scheme 1 for a context seen for the first time.
//!
//! Every scheme is an envelope: a per-message AES-256 data key encrypts the payload with
//! AES-GCM (AAD [`PAYLOAD_AAD`], the same in every scheme, since ReEncrypt copies the
//! payload between schemes), and the data key is locked in the token as the scheme says.
//!
//! ```text
//! scheme 1, per-message wrapping key          scheme 2, context key + HMAC tag
//! offset size field                           offset size field
//!      0    1 format version (1)                   0    1 format version (1)
//!      1    1 scheme (1)                           1    1 scheme (2)
//!      2   16 key id                               2   16 key id
//!     18   32 key-material id                     18   32 key-material id
//!     50   16 nonce                               50   16 salt
//!     66   40 data key, KWP under K_wrap          66   16 nonce
//!    106   12 payload IV                          82   40 data key, KWP under K_ctx
//!    118 n+16 payload                            122   12 payload IV
//!                                                134   32 HMAC-SHA256 tag under K_mac
//! scheme 3, context key with GCM key wrap        166 n+16 payload
//!      0    1 format version (1)
//!      1    1 scheme (3)
//!      2   16 key id
//!     18   32 key-material id
//!     50   16 salt
//!     66   12 wrap IV
//!     78   48 data key, AES-GCM under K_ctx, tag appended
//!    126   12 payload IV
//!    138 n+16 payload
//! ```
//!
//! - Scheme 1: `K_wrap = derive(material, SHA-256("p11kms/1/kwrap\0" ‖ key id ‖ material
//!   id ‖ canonical context ‖ nonce ‖ SHA-256(IV ‖ payload)))`, made and destroyed per
//!   message. A changed byte anywhere gives another `K_wrap`, and the KWP unwrap fails.
//! - Schemes 2 and 3: `K_ctx = derive(material, SHA-256("p11kms/N/kctx\0" ‖ key id ‖
//!   material id ‖ canonical context ‖ salt))`, cached in the token per (material, context,
//!   salt). The salt is drawn per writer and renewed every [`crate::hsm::WRITES_PER_SALT`]
//!   ciphertexts, which bounds the GCM wraps under one key.
//! - Scheme 2 (tokens without GCM key wrap): the data key is KWP-wrapped under `K_ctx`,
//!   which is deterministic, so the freshness of a ReEncrypt comes from the nonce and the
//!   integrity of the header and payload from the tag: `HMAC-SHA256(K_mac, "p11kms/2/mac\0"
//!   ‖ bytes 0..134 ‖ SHA-256(canonical context) ‖ SHA-256(IV ‖ payload))`, with
//!   `K_mac = derive(material, SHA-256("p11kms/2/kmac\0" ‖ material id))` (a generic secret
//!   that can only sign and verify). Decrypt and ReEncrypt verify the tag first.
//! - Scheme 3: the data key is GCM-wrapped under `K_ctx` with a fresh wrap IV and AAD
//!   `"p11kms/3/dek\0" ‖ bytes 0..78 ‖ SHA-256(IV ‖ payload)`: the wrap's own tag binds
//!   the header and the payload, and the wrap IV makes every output fresh.
//!
//! The canonical context is the pair count and each key and value length-prefixed (u32
//! big-endian), pairs sorted by key bytes.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::provider_errors::on_client_ciphertext;
use crate::error::KmsError;
use crate::hsm::{
    DekLock, DekUnlock, KeyProvider, LockedDek, OaepHash, SealedParts, GCM_WRAPPED_DEK_LEN, IV_LEN,
    MAC_TAG_LEN, NONCE_LEN, TAG_LEN, WRAPPED_DEK_LEN,
};
use crate::model::{KeyId, MaterialId};

pub const FORMAT_VERSION: u8 = 1;
/// Scheme 1: per-message wrapping key (every version reads and may still write it).
pub const SCHEME_ENVELOPE: u8 = 1;
/// Scheme 2: cached context key with AES key wrap, and an HMAC tag.
pub const SCHEME_CONTEXT_KWP_MAC: u8 = 2;
/// Scheme 3: cached context key with AES-GCM key wrap.
pub const SCHEME_CONTEXT_GCM: u8 = 3;
const SALT_LEN: usize = 16;
const HEAD_LEN: usize = 2 + 16 + 32;
/// Bytes a ciphertext of each scheme adds to its plaintext.
pub const OVERHEAD_1: usize = HEAD_LEN + NONCE_LEN + WRAPPED_DEK_LEN + IV_LEN + TAG_LEN;
pub const OVERHEAD_2: usize =
    HEAD_LEN + SALT_LEN + NONCE_LEN + WRAPPED_DEK_LEN + IV_LEN + MAC_TAG_LEN + TAG_LEN;
pub const OVERHEAD_3: usize = HEAD_LEN + SALT_LEN + IV_LEN + GCM_WRAPPED_DEK_LEN + IV_LEN + TAG_LEN;
/// The bytes a ciphertext of `scheme` adds to its plaintext, or `None` for no scheme of ours.
pub fn overhead(scheme: u8) -> Option<usize> {
    match scheme {
        SCHEME_ENVELOPE => Some(OVERHEAD_1),
        SCHEME_CONTEXT_KWP_MAC => Some(OVERHEAD_2),
        SCHEME_CONTEXT_GCM => Some(OVERHEAD_3),
        _ => None,
    }
}

/// The GCM AAD of every payload.
pub const PAYLOAD_AAD: &[u8] = b"p11kms/1/payload";
const DERIVATION_DOMAIN: &[u8] = b"p11kms/1/kwrap\0";
const CONTEXT_KEY_DOMAIN_2: &[u8] = b"p11kms/2/kctx\0";
const CONTEXT_KEY_DOMAIN_3: &[u8] = b"p11kms/3/kctx\0";
const MAC_KEY_DOMAIN: &[u8] = b"p11kms/2/kmac\0";
const MAC_DOMAIN: &[u8] = b"p11kms/2/mac\0";
const WRAP_AAD_DOMAIN: &[u8] = b"p11kms/3/dek\0";
const WRITER_DOMAIN: &[u8] = b"p11kms/writer\0";

/// How a ciphertext holds its data key, by scheme.
#[derive(Debug, Clone, Copy)]
pub enum Lock<'a> {
    Derived {
        nonce: [u8; NONCE_LEN],
        wrapped: &'a [u8],
    },
    KwpMac {
        salt: [u8; SALT_LEN],
        nonce: [u8; NONCE_LEN],
        wrapped: &'a [u8],
        tag: &'a [u8],
    },
    Gcm {
        salt: [u8; SALT_LEN],
        wrap_iv: [u8; IV_LEN],
        wrapped: &'a [u8],
    },
}

/// A parsed symmetric ciphertext, borrowing from the blob.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub key_id: KeyId,
    pub material: MaterialId,
    pub lock: Lock<'a>,
    pub iv: [u8; IV_LEN],
    pub payload: &'a [u8],
    /// The leading bytes scheme 2's tag or scheme 3's AAD covers as they are.
    covered: &'a [u8],
}

/// Reads fixed-size fields off the front of a blob.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N));
        out
    }
}

impl<'a> Envelope<'a> {
    /// Parses a blob; anything malformed is `InvalidCiphertext`, with no reason given.
    pub fn parse(blob: &'a [u8]) -> Result<Self, KmsError> {
        let overhead = match (blob.first(), blob.get(1)) {
            (Some(&FORMAT_VERSION), Some(&scheme)) => overhead(scheme),
            _ => None,
        };
        if overhead.is_none_or(|overhead| blob.len() < overhead + 1) {
            return Err(KmsError::InvalidCiphertext);
        }
        let scheme = blob[1];
        let mut f = Fields(&blob[2..]);
        let key_id = KeyId::from_bytes(f.array());
        let material = MaterialId(f.array());
        let (lock, covered_len) = match scheme {
            SCHEME_ENVELOPE => (
                Lock::Derived {
                    nonce: f.array(),
                    wrapped: f.take(WRAPPED_DEK_LEN),
                },
                0,
            ),
            SCHEME_CONTEXT_KWP_MAC => {
                let salt = f.array();
                let nonce = f.array();
                let wrapped = f.take(WRAPPED_DEK_LEN);
                let iv_at = blob.len() - f.0.len();
                let tag = &blob[iv_at + IV_LEN..iv_at + IV_LEN + MAC_TAG_LEN];
                (
                    Lock::KwpMac {
                        salt,
                        nonce,
                        wrapped,
                        tag,
                    },
                    iv_at + IV_LEN,
                )
            }
            _ => {
                let salt = f.array();
                let wrap_iv = f.array();
                let covered = blob.len() - f.0.len();
                (
                    Lock::Gcm {
                        salt,
                        wrap_iv,
                        wrapped: f.take(GCM_WRAPPED_DEK_LEN),
                    },
                    covered,
                )
            }
        };
        let iv = f.array();
        if scheme == SCHEME_CONTEXT_KWP_MAC {
            f.take(MAC_TAG_LEN);
        }
        Ok(Envelope {
            key_id,
            material,
            lock,
            iv,
            payload: f.0,
            covered: &blob[..covered_len],
        })
    }

    pub fn scheme(&self) -> u8 {
        match self.lock {
            Lock::Derived { .. } => SCHEME_ENVELOPE,
            Lock::KwpMac { .. } => SCHEME_CONTEXT_KWP_MAC,
            Lock::Gcm { .. } => SCHEME_CONTEXT_GCM,
        }
    }

    /// The key id a blob names, if it looks like one of ours (for `IncorrectKeyException`
    /// before any cryptography).
    pub fn peek_key_id(blob: &[u8]) -> Option<KeyId> {
        Envelope::parse(blob).ok().map(|e| e.key_id)
    }

    /// The blob's bytes again.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD_2 + self.payload.len());
        out.extend_from_slice(&[FORMAT_VERSION, self.scheme()]);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.material.0);
        match self.lock {
            Lock::Derived { nonce, wrapped } => {
                out.extend_from_slice(&nonce);
                out.extend_from_slice(wrapped);
                out.extend_from_slice(&self.iv);
            }
            Lock::KwpMac {
                salt,
                nonce,
                wrapped,
                tag,
            } => {
                out.extend_from_slice(&salt);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(wrapped);
                out.extend_from_slice(&self.iv);
                out.extend_from_slice(tag);
            }
            Lock::Gcm {
                salt,
                wrap_iv,
                wrapped,
            } => {
                out.extend_from_slice(&salt);
                out.extend_from_slice(&wrap_iv);
                out.extend_from_slice(wrapped);
                out.extend_from_slice(&self.iv);
            }
        }
        out.extend_from_slice(self.payload);
        out
    }

    /// How the token checks and unlocks this ciphertext's data key, given the key and
    /// context it is opened with.
    pub fn unlock(&self, context: &BTreeMap<String, String>) -> DekUnlock<'a> {
        let canonical = canonical_context(context);
        let payload_digest = payload_digest(&self.iv, self.payload);
        match self.lock {
            Lock::Derived { nonce, wrapped } => DekUnlock::Derived {
                derivation: derivation(
                    &self.key_id,
                    &self.material,
                    &canonical,
                    &nonce,
                    &payload_digest,
                ),
                wrapped,
            },
            Lock::KwpMac {
                salt, wrapped, tag, ..
            } => DekUnlock::KwpMac {
                context_key: context_key_name(
                    SCHEME_CONTEXT_KWP_MAC,
                    &self.key_id,
                    &self.material,
                    &canonical,
                    &salt,
                ),
                mac_key: mac_key_name(&self.material),
                mac_input: mac_input(self.covered, &canonical, &payload_digest),
                tag,
                wrapped,
            },
            Lock::Gcm {
                salt,
                wrap_iv,
                wrapped,
            } => DekUnlock::Gcm {
                context_key: context_key_name(
                    SCHEME_CONTEXT_GCM,
                    &self.key_id,
                    &self.material,
                    &canonical,
                    &salt,
                ),
                iv: wrap_iv,
                aad: wrap_aad(self.covered, &payload_digest),
                wrapped,
            },
        }
    }
}

/// Whether `hsm` can open ciphertexts of `scheme`. A blob of a scheme this token cannot
/// run is refused as any unreadable blob is (`InvalidCiphertextException`: its scheme byte
/// may be the changed one); the log says which mechanism the token lacks, for a cluster
/// whose tokens differ (see `HsmConfig::ciphertext_scheme`).
pub fn require_readable(hsm: &dyn KeyProvider, scheme: u8) -> Result<(), KmsError> {
    if hsm.capabilities().reads_scheme(scheme) {
        return Ok(());
    }
    let mechanism = match scheme {
        SCHEME_CONTEXT_GCM => "CKM_AES_GCM with C_WrapKey and C_UnwrapKey",
        _ => "CKM_SHA256_HMAC with a derived generic secret",
    };
    tracing::warn!(
        scheme,
        mechanism,
        "a ciphertext of a scheme this token cannot run was refused; pin ciphertext_scheme on every replica to one all tokens run"
    );
    Err(KmsError::InvalidCiphertext)
}

/// A new ciphertext's header fields, chosen before the token seals: the scheme (the
/// token's best for a warm context, else 1) and fresh randomness from the reservoir.
pub struct Plan {
    key_id: KeyId,
    material: MaterialId,
    canonical: Vec<u8>,
    scheme: u8,
    salt: [u8; SALT_LEN],
    /// Scheme 1 and 2's nonce, or scheme 3's wrap IV (first 12 bytes).
    nonce: [u8; NONCE_LEN],
    pub iv: [u8; IV_LEN],
}

impl Plan {
    /// Plans a ciphertext under `material` of `key_id` for `context` (a ReEncrypt keeps its
    /// payload and leaves the plan's payload IV unused).
    pub fn new(
        hsm: &dyn KeyProvider,
        key_id: &KeyId,
        material: &MaterialId,
        context: &BTreeMap<String, String>,
    ) -> Result<Self, KmsError> {
        let canonical = canonical_context(context);
        let best = hsm.capabilities().ciphertext_scheme;
        let salt = if best == SCHEME_ENVELOPE {
            None
        } else {
            hsm.writer_salt(&writer_name(best, key_id, material, &canonical), material)?
        };
        let scheme = if salt.is_some() {
            best
        } else {
            SCHEME_ENVELOPE
        };
        let mut random = [0u8; NONCE_LEN + IV_LEN];
        hsm.draw_random(&mut random)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&random[..NONCE_LEN]);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&random[NONCE_LEN..]);
        Ok(Plan {
            key_id: *key_id,
            material: *material,
            canonical,
            scheme,
            salt: salt.unwrap_or_default(),
            nonce,
            iv,
        })
    }

    pub fn scheme(&self) -> u8 {
        self.scheme
    }

    /// The header up to the locked data key: what a scheme's derivation, tag or AAD covers.
    fn head(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_LEN + SALT_LEN + NONCE_LEN);
        out.extend_from_slice(&[FORMAT_VERSION, self.scheme]);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.material.0);
        match self.scheme {
            SCHEME_ENVELOPE => out.extend_from_slice(&self.nonce),
            SCHEME_CONTEXT_KWP_MAC => {
                out.extend_from_slice(&self.salt);
                out.extend_from_slice(&self.nonce);
            }
            _ => {
                out.extend_from_slice(&self.salt);
                out.extend_from_slice(&self.wrap_iv());
            }
        }
        out
    }

    fn wrap_iv(&self) -> [u8; IV_LEN] {
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&self.nonce[..IV_LEN]);
        iv
    }

    fn context_key(&self) -> [u8; 32] {
        context_key_name(
            self.scheme,
            &self.key_id,
            &self.material,
            &self.canonical,
            &self.salt,
        )
    }

    /// Runs `f` with the lock this plan asks of the token. `iv` is the payload's IV (the
    /// plan's own for a new payload, the source's for a ReEncrypt).
    pub fn with_lock<T>(&self, iv: &[u8; IV_LEN], f: impl FnOnce(&DekLock<'_>) -> T) -> T {
        let head = self.head();
        match self.scheme {
            SCHEME_ENVELOPE => {
                let derive = |payload: &[u8]| {
                    derivation(
                        &self.key_id,
                        &self.material,
                        &self.canonical,
                        &self.nonce,
                        &payload_digest(iv, payload),
                    )
                };
                f(&DekLock::Derived {
                    derivation: &derive,
                })
            }
            SCHEME_CONTEXT_KWP_MAC => {
                let mac = |wrapped: &[u8], payload: &[u8]| {
                    let mut covered = head.clone();
                    covered.extend_from_slice(wrapped);
                    covered.extend_from_slice(iv);
                    mac_input(&covered, &self.canonical, &payload_digest(iv, payload))
                };
                f(&DekLock::KwpMac {
                    context_key: self.context_key(),
                    mac_key: mac_key_name(&self.material),
                    mac_input: &mac,
                })
            }
            _ => {
                let aad = |payload: &[u8]| wrap_aad(&head, &payload_digest(iv, payload));
                f(&DekLock::Gcm {
                    context_key: self.context_key(),
                    iv: self.wrap_iv(),
                    aad: &aad,
                })
            }
        }
    }

    /// Lays out the ciphertext once the token has sealed (or kept) the payload.
    pub fn assemble(
        &self,
        iv: &[u8; IV_LEN],
        locked: &LockedDek,
        payload: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let (wrapped_len, tag_len) = match self.scheme {
            SCHEME_ENVELOPE => (WRAPPED_DEK_LEN, None),
            SCHEME_CONTEXT_KWP_MAC => (WRAPPED_DEK_LEN, Some(MAC_TAG_LEN)),
            _ => (GCM_WRAPPED_DEK_LEN, None),
        };
        let tag = locked.tag.as_deref();
        if locked.wrapped.len() != wrapped_len || tag.map(<[u8]>::len) != tag_len {
            return Err(KmsError::Internal(format!(
                "the token locked the data key into {} bytes (tag {:?}), expected {wrapped_len} (tag {tag_len:?})",
                locked.wrapped.len(),
                tag.map(<[u8]>::len)
            )));
        }
        let mut out = self.head();
        out.reserve(wrapped_len + IV_LEN + MAC_TAG_LEN + payload.len());
        out.extend_from_slice(&locked.wrapped);
        out.extend_from_slice(iv);
        if let Some(tag) = tag {
            out.extend_from_slice(tag);
        }
        out.extend_from_slice(payload);
        Ok(out)
    }
}

/// Encrypt: seals `plaintext` under `material` of `key_id` for `context`.
pub fn seal(
    hsm: &dyn KeyProvider,
    key_id: &KeyId,
    material: &MaterialId,
    context: &BTreeMap<String, String>,
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let plan = Plan::new(hsm, key_id, material, context)?;
    let (payload, locked) = plan.with_lock(&plan.iv, |lock| {
        hsm.seal(material, &plan.iv, PAYLOAD_AAD, plaintext, lock)
    })?;
    plan.assemble(&plan.iv, &locked, &payload)
}

/// Decrypt: opens a parsed ciphertext with `context`.
pub fn open(
    hsm: &dyn KeyProvider,
    envelope: &Envelope<'_>,
    context: &BTreeMap<String, String>,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    require_readable(hsm, envelope.scheme())?;
    hsm.open_sealed(
        &envelope.material,
        &envelope.unlock(context),
        &envelope.iv,
        PAYLOAD_AAD,
        envelope.payload,
    )
    .map_err(on_client_ciphertext)
}

/// ReEncrypt between symmetric keys: moves the data key in the token, keeps the payload.
pub fn rewrap(
    hsm: &dyn KeyProvider,
    source: &Envelope<'_>,
    source_context: &BTreeMap<String, String>,
    destination: &Plan,
) -> Result<Vec<u8>, KmsError> {
    require_readable(hsm, source.scheme())?;
    let unlock = source.unlock(source_context);
    let locked = destination
        .with_lock(&source.iv, |lock| {
            hsm.rewrap(
                &source.material,
                &unlock,
                &destination.material,
                lock,
                source.payload,
            )
        })
        .map_err(on_client_ciphertext)?;
    destination.assemble(&source.iv, &locked, source.payload)
}

/// ReEncrypt symmetric → RSA: the payload's plaintext OAEP-wrapped in the token.
pub fn rewrap_to_rsa(
    hsm: &dyn KeyProvider,
    source: &Envelope<'_>,
    source_context: &BTreeMap<String, String>,
    destination: &MaterialId,
    hash: OaepHash,
) -> Result<Vec<u8>, KmsError> {
    require_readable(hsm, source.scheme())?;
    let unlock = source.unlock(source_context);
    hsm.sealed_to_rsa(
        &SealedParts {
            material: &source.material,
            unlock: &unlock,
            iv: &source.iv,
            aad: PAYLOAD_AAD,
            payload: source.payload,
        },
        destination,
        hash,
    )
    .map_err(on_client_ciphertext)
}

/// ReEncrypt RSA → symmetric: the OAEP plaintext sealed under `destination` in the token.
pub fn seal_from_rsa(
    hsm: &dyn KeyProvider,
    source: &MaterialId,
    hash: OaepHash,
    ciphertext: &[u8],
    destination: &Plan,
) -> Result<Vec<u8>, KmsError> {
    let (payload, locked) = destination
        .with_lock(&destination.iv, |lock| {
            hsm.rsa_to_sealed(
                source,
                hash,
                ciphertext,
                &destination.material,
                &destination.iv,
                PAYLOAD_AAD,
                lock,
            )
        })
        .map_err(on_client_ciphertext)?;
    destination.assemble(&destination.iv, &locked, &payload)
}

/// SHA-256 of IV ‖ payload: what binds the payload to the locked data key.
pub fn payload_digest(iv: &[u8; IV_LEN], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(iv);
    h.update(payload);
    h.finalize().into()
}

/// Scheme 1's derivation data for `K_wrap`: binds key, material, context, nonce and payload.
fn derivation(
    key_id: &KeyId,
    material: &MaterialId,
    canonical_context: &[u8],
    nonce: &[u8; NONCE_LEN],
    payload_digest: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DERIVATION_DOMAIN);
    h.update(key_id.as_bytes());
    h.update(material.0);
    h.update(canonical_context);
    h.update(nonce);
    h.update(payload_digest);
    h.finalize().into()
}

/// Schemes 2 and 3: the derivation data (and cache name) of `K_ctx`.
fn context_key_name(
    scheme: u8,
    key_id: &KeyId,
    material: &MaterialId,
    canonical_context: &[u8],
    salt: &[u8; SALT_LEN],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(if scheme == SCHEME_CONTEXT_GCM {
        CONTEXT_KEY_DOMAIN_3
    } else {
        CONTEXT_KEY_DOMAIN_2
    });
    h.update(key_id.as_bytes());
    h.update(material.0);
    h.update(canonical_context);
    h.update(salt);
    h.finalize().into()
}

/// Scheme 2: the derivation data (and cache name) of a material's `K_mac`.
fn mac_key_name(material: &MaterialId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(MAC_KEY_DOMAIN);
    h.update(material.0);
    h.finalize().into()
}

/// Scheme 2: what the HMAC tag covers.
fn mac_input(covered: &[u8], canonical_context: &[u8], payload_digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAC_DOMAIN.len() + covered.len() + 64);
    out.extend_from_slice(MAC_DOMAIN);
    out.extend_from_slice(covered);
    out.extend_from_slice(&Sha256::digest(canonical_context));
    out.extend_from_slice(payload_digest);
    out
}

/// Scheme 3: the GCM key wrap's AAD.
fn wrap_aad(covered: &[u8], payload_digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WRAP_AAD_DOMAIN.len() + covered.len() + 32);
    out.extend_from_slice(WRAP_AAD_DOMAIN);
    out.extend_from_slice(covered);
    out.extend_from_slice(payload_digest);
    out
}

/// The writer cache's name for new ciphertexts of one key, material and context.
fn writer_name(
    scheme: u8,
    key_id: &KeyId,
    material: &MaterialId,
    canonical_context: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(WRITER_DOMAIN);
    h.update([scheme]);
    h.update(key_id.as_bytes());
    h.update(material.0);
    h.update(canonical_context);
    h.finalize().into()
}

/// The canonical encryption context: pairs sorted by key bytes (a `BTreeMap` already is),
/// each length-prefixed so no two contexts encode alike.
pub fn canonical_context(context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(context.len() as u32).to_be_bytes());
    for (k, v) in context {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(scheme: u8, payload_len: usize) -> Vec<u8> {
        let overhead = overhead(scheme).unwrap();
        let mut b: Vec<u8> = (0..overhead + payload_len).map(|i| i as u8).collect();
        b[0] = FORMAT_VERSION;
        b[1] = scheme;
        b
    }

    #[test]
    fn every_scheme_round_trips_its_layout() {
        for scheme in 1..=3u8 {
            let b = blob(scheme, 20);
            let env = Envelope::parse(&b).unwrap();
            assert_eq!(env.scheme(), scheme);
            assert_eq!(env.payload.len(), 20 + TAG_LEN);
            assert_eq!(env.to_bytes(), b, "scheme {scheme}");
            assert_eq!(env.key_id.as_bytes(), &b[2..18]);
        }
    }

    #[test]
    fn the_covered_bytes_are_where_the_layout_says() {
        let b = blob(2, 4);
        let env = Envelope::parse(&b).unwrap();
        assert_eq!(env.covered, &b[..134]);
        let Lock::KwpMac { tag, wrapped, .. } = env.lock else {
            panic!("scheme 2")
        };
        assert_eq!(tag, &b[134..166]);
        assert_eq!(wrapped, &b[82..122]);
        assert_eq!(env.iv, b[122..134]);
        let b = blob(3, 4);
        let env = Envelope::parse(&b).unwrap();
        assert_eq!(env.covered, &b[..78]);
        assert_eq!(env.iv, b[126..138]);
        assert_eq!(env.payload, &b[138..]);
    }

    #[test]
    fn short_or_foreign_blobs_are_invalid() {
        assert_eq!(
            Envelope::parse(&[1; 40]).unwrap_err(),
            KmsError::InvalidCiphertext
        );
        for scheme in 1..=3u8 {
            let mut b = blob(scheme, 1);
            b.pop();
            assert!(
                Envelope::parse(&b).is_err(),
                "scheme {scheme} without a payload byte"
            );
        }
        let mut b = blob(1, 4);
        b[1] = 4;
        assert!(Envelope::parse(&b).is_err());
        b[1] = 1;
        b[0] = 2;
        assert!(Envelope::parse(&b).is_err());
    }

    #[test]
    fn context_encoding_is_unambiguous() {
        let a: BTreeMap<_, _> = [("ab".to_string(), "c".to_string())].into();
        let b: BTreeMap<_, _> = [("a".to_string(), "bc".to_string())].into();
        assert_ne!(canonical_context(&a), canonical_context(&b));
    }

    #[test]
    fn key_names_separate_schemes_salts_and_contexts() {
        let key = KeyId::new_random();
        let material = MaterialId::new_random();
        let ctx = canonical_context(&BTreeMap::new());
        let a = context_key_name(2, &key, &material, &ctx, &[0; 16]);
        assert_ne!(a, context_key_name(3, &key, &material, &ctx, &[0; 16]));
        assert_ne!(a, context_key_name(2, &key, &material, &ctx, &[1; 16]));
        assert_ne!(
            a,
            context_key_name(2, &key, &material, &[0, 0, 0, 1], &[0; 16])
        );
        assert_ne!(a, mac_key_name(&material));
    }
}
