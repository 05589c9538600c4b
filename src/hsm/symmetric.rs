//! Randomness and the symmetric ciphertext primitives, for both providers: a fresh data
//! key seals the payload with AES-GCM and is locked under the material (see `locks.rs` for
//! the locks and `crate::kms::ciphertext` for the construction).

use std::sync::atomic::Ordering;

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use zeroize::Zeroizing;

use super::context_keys::{WriterChoice, RESERVOIR_BYTES};
use super::envelope::{generate_dek, DekUse};
use super::provider::SymmetricPrimitives;
use super::{
    bad_data, DekLock, DekUnlock, Half, Hsm, HsmError, LockedDek, Materials, ProviderError,
    SessionObject, Site, IV_LEN, TAG_LEN,
};
use crate::model::MaterialId;

impl<M: Materials> SymmetricPrimitives for Hsm<M> {
    /// Random bytes from the token's generator.
    fn generate_random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let mut out = Zeroizing::new(vec![0u8; len]);
        self.with_session(|_, s| s.generate_random_slice(&mut out).map_err(HsmError::from))??;
        Ok(out)
    }

    /// Fills `out` from the reservoir of token randomness, refilling it with one
    /// `C_GenerateRandom` when it runs dry.
    fn draw_random(&self, out: &mut [u8]) -> Result<(), ProviderError> {
        let mut reservoir = self.reservoir.lock().unwrap_or_else(|p| p.into_inner());
        if reservoir.take(out) {
            return Ok(());
        }
        let fresh = self.generate_random(RESERVOIR_BYTES.max(out.len()))?;
        self.context_counters
            .reservoir_refills
            .fetch_add(1, Ordering::Relaxed);
        reservoir.refill(fresh);
        if reservoir.take(out) {
            Ok(())
        } else {
            Err(ProviderError::Internal(
                "the random reservoir came back short".into(),
            ))
        }
    }

    /// The salt to lock a new ciphertext of `writer` (the core's name for a key, material and
    /// context) under a cached context key, or `None` when the context is cold and the
    /// ciphertext is to use the per-message scheme. `None` too without a cache.
    fn writer_salt(
        &self,
        writer: &[u8; 32],
        material: &MaterialId,
    ) -> Result<Option<[u8; 16]>, ProviderError> {
        if self.config.context_key_cache == 0 {
            self.context_counters
                .cold_writes
                .fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let token = self.token()?;
        let choice = token.context_keys().writer_salt(writer);
        match choice {
            WriterChoice::Salt(salt) => Ok(Some(salt)),
            WriterChoice::NewSalt => {
                let mut salt = [0u8; 16];
                self.draw_random(&mut salt)?;
                token.context_keys().start_writer(writer, material, salt);
                Ok(Some(salt))
            }
            WriterChoice::Cold => {
                self.context_counters
                    .cold_writes
                    .fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Encrypts `plaintext` with AES-GCM (`iv`, `aad`) under a fresh data key, then locks
    /// that key as `lock` says. Returns the payload (ciphertext and tag) and the locked key.
    fn seal(
        &self,
        material: &MaterialId,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
        lock: &DekLock<'_>,
    ) -> Result<(Vec<u8>, LockedDek), ProviderError> {
        self.with_objects_on([(material, Half::Secret)], |token, s, [base]| {
            let dek = SessionObject::transient(s, generate_dek(s)?);
            let mut iv_param = *iv;
            let gcm = GcmParams::new(&mut iv_param, aad, 128.into())?;
            let payload = s.encrypt_sized(
                &Mechanism::AesGcm(gcm),
                dek.handle,
                plaintext,
                plaintext.len() + TAG_LEN,
            )?;
            let at = Site {
                token,
                s,
                base,
                material,
            };
            let locked = self.lock_dek(&at, lock, dek.handle, &payload)?;
            Ok((payload, locked))
        })
        .map_err(|e| e.into_provider())
    }

    /// Checks and unlocks the data key in the token and decrypts the payload with it.
    fn open_sealed(
        &self,
        material: &MaterialId,
        unlock: &DekUnlock<'_>,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        payload: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.with_objects_on([(material, Half::Secret)], |token, s, [base]| {
            let at = Site {
                token,
                s,
                base,
                material,
            };
            let dek = self.unlock_dek(&at, unlock, DekUse::Decrypt)?;
            let mut iv_param = *iv;
            let gcm = GcmParams::new(&mut iv_param, aad, 128.into())?;
            // GCM's plaintext is 16 bytes shorter; SoftHSM2 asks for room for the whole input.
            let plaintext = s
                .decrypt_sized(&Mechanism::AesGcm(gcm), dek.handle, payload, payload.len())
                .map_err(|e| bad_data(s, e))?;
            Ok(Zeroizing::new(plaintext))
        })
        .map_err(|e| e.into_provider())
    }

    /// Moves a data key from one material/context to another inside the token: unlock
    /// into a sensitive session object that can only be wrapped, lock under the
    /// destination, destroy. Neither the data key nor the payload reaches host memory.
    fn rewrap(
        &self,
        source: &MaterialId,
        unlock: &DekUnlock<'_>,
        destination: &MaterialId,
        lock: &DekLock<'_>,
        payload: &[u8],
    ) -> Result<LockedDek, ProviderError> {
        self.with_objects_on(
            [(source, Half::Secret), (destination, Half::Secret)],
            |token, s, [src_base, dst_base]| {
                let from = Site {
                    token,
                    s,
                    base: src_base,
                    material: source,
                };
                let dek = self.unlock_dek(&from, unlock, DekUse::Rewrap)?;
                let to = Site {
                    base: dst_base,
                    material: destination,
                    ..from
                };
                self.lock_dek(&to, lock, dek.handle, payload)
            },
        )
        .map_err(|e| e.into_provider())
    }
}
