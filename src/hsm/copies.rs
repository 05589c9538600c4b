//! Session copies of key materials' secret keys (`HsmConfig::session_key_copies`): made
//! once per key and library lifetime, owned by a session of their own, destroyed with
//! their material.

use std::sync::Arc;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};

use super::{
    flatten_op_error, outer_provider_error, Half, Hsm, OnLostSession, OpError, ProviderError, Token,
};
use crate::model::MaterialId;

impl<M> Hsm<M> {
    /// Caches and returns the handle operations use for a material's secret key: its
    /// session copy when `session_key_copies` is on and the module makes one, else the
    /// token object. The copy is cached under the lock that guards making it, so a request
    /// that waited for the lock finds it rather than making another.
    pub(super) fn cache_secret(
        &self,
        token: &Arc<Token>,
        material: &MaterialId,
        object: ObjectHandle,
    ) -> ObjectHandle {
        let slot = (*material, Half::Secret);
        if !self.config.session_key_copies {
            token.materials_mut().insert(slot, object);
            return object;
        }
        let mut copies = token.copies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = token.materials_read().get(&slot) {
            return *cached;
        }
        // The handle cache was cleared (after an object error) while a copy existed: keep
        // the copy if it is still alive and still this material's, as requests may hold it.
        if let Some(&earlier) = copies.get(material) {
            if self.is_copy_of(token, earlier, object) {
                token.materials_mut().insert(slot, earlier);
                return earlier;
            }
            copies.remove(material);
        }
        let copied = self.on_pool(token, &token.copy_owner, OnLostSession::Retry, |s| {
            s.copy_object(object, &[Attribute::Token(false)])
                .map_err(|e| OpError::Hsm(e.into()))
        });
        let usable = match flatten_op_error(copied) {
            Ok(copy) => {
                copies.insert(*material, copy);
                copy
            }
            Err(e) => {
                tracing::warn!(%material, function = %e.function, rv = %e.rv, "cannot make a session copy of a key; using the token object");
                object
            }
        };
        token.materials_mut().insert(slot, usable);
        usable
    }

    /// Whether `copy` is still an object with the same `CKA_ID` as the token object
    /// `original` (a dead copy's handle may since name something else).
    fn is_copy_of(&self, token: &Arc<Token>, copy: ObjectHandle, original: ObjectHandle) -> bool {
        let checked = self.on_pool(token, &token.copy_owner, OnLostSession::Retry, |s| {
            let id = |handle| match s.get_attributes(handle, &[AttributeType::Id]) {
                Ok(attributes) => attributes.into_iter().find_map(|a| match a {
                    Attribute::Id(id) => Some(id),
                    _ => None,
                }),
                // Errors mean "no": the caller makes a new copy, which meets any real fault.
                Err(_) => None,
            };
            Ok(matches!((id(copy), id(original)), (Some(a), Some(b)) if a == b))
        });
        checked.unwrap_or(false)
    }

    /// Destroys the session copy of a material's secret key, if there is one.
    pub(super) fn destroy_session_copy(
        &self,
        token: &Arc<Token>,
        material: &MaterialId,
    ) -> Result<(), ProviderError> {
        let mut copies = token.copies.lock().unwrap_or_else(|p| p.into_inner());
        token.materials_mut().remove(&(*material, Half::Secret));
        let Some(&copy) = copies.get(material) else {
            return Ok(());
        };
        let destroyed = self.on_pool(token, &token.copy_owner, OnLostSession::Retry, |s| match s
            .destroy_object(copy)
        {
            // Already gone with its session: nothing of it is left.
            Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) | Ok(()) => Ok(()),
            Err(e) => Err(OpError::Hsm(e.into())),
        });
        outer_provider_error(destroyed)?.map_err(ProviderError::from)?;
        copies.remove(material);
        Ok(())
    }
}
