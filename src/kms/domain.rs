//! Domain-key mode's service side: the store behind the HSM's wrapped materials, start-up
//! checks, and the `p11kms domain create` / `rotate` commands.

use std::sync::Arc;

use super::KmsService;
use crate::error::KmsError;
use crate::hsm::domain::WrappedMaterials;
use crate::hsm::Hsm;
use crate::model::{
    now_epoch, DomainKeyId, DomainKeyRecord, DomainKeyState, MaterialId, WrappedMaterial,
};
use crate::store::MetadataStore;

/// Blobs rewrapped per store page during a rotation.
const ROTATION_PAGE: usize = 500;

/// The metadata store as the HSM's keeper of wrapped materials.
pub struct StoreMaterials(pub Arc<dyn MetadataStore>);

impl WrappedMaterials for StoreMaterials {
    fn active_domain_key(&self) -> Result<DomainKeyId, KmsError> {
        active_domain_key(self.0.as_ref())?
            .ok_or_else(|| KmsError::Internal("the store names no active domain key".into()))
    }

    fn save(&self, wrapped: &WrappedMaterial) -> Result<bool, KmsError> {
        Ok(self.0.insert_wrapped_material(wrapped)?)
    }

    fn load(&self, material: &MaterialId) -> Result<Option<WrappedMaterial>, KmsError> {
        Ok(self.0.get_wrapped_material(material)?)
    }

    fn forget(&self, material: &MaterialId) -> Result<(), KmsError> {
        Ok(self.0.delete_wrapped_material(material)?)
    }
}

fn active_domain_key(store: &dyn MetadataStore) -> Result<Option<DomainKeyId>, KmsError> {
    Ok(store
        .domain_keys()?
        .into_iter()
        .find(|k| k.state == DomainKeyState::Active)
        .map(|k| k.id))
}

/// Turns the service's HSM to domain mode at start-up. With no active domain key in the
/// store, `may_create` (the embedded default) makes one; otherwise start-up fails.
pub fn start(service: &KmsService, may_create: bool, capacity: usize) -> Result<(), String> {
    let store = service.store.clone();
    if active_domain_key(store.as_ref())
        .map_err(|e| format!("cannot read the domain keys from the store: {e}"))?
        .is_none()
    {
        if !may_create {
            return Err(
                "hsm.key_storage is \"domain\" but the store names no active domain \
                 key; run `p11kms domain create` first"
                    .into(),
            );
        }
        let id = create_domain_key(store.as_ref(), &service.hsm)?;
        tracing::warn!(domain_key = %id, "created the domain key in the embedded token");
    }
    service
        .hsm
        .enable_domain_mode(Arc::new(StoreMaterials(store)), capacity)
}

/// Makes a domain key in the token and records it as the store's active one. Refused if
/// the store already has an active domain key.
pub fn create_domain_key(store: &dyn MetadataStore, hsm: &Hsm) -> Result<DomainKeyId, String> {
    if let Some(active) = active_domain_key(store).map_err(|e| e.to_string())? {
        return Err(format!(
            "the store already has an active domain key ({active}); use `p11kms domain rotate` \
             to replace it"
        ));
    }
    let id = DomainKeyId::new_random();
    let trusted = hsm
        .create_domain_key(&id)
        .map_err(|e| format!("cannot create the domain key in the token: {e}"))?;
    let record = DomainKeyRecord {
        id,
        state: DomainKeyState::Active,
        created: now_epoch(),
    };
    if !store
        .insert_domain_key(&record)
        .map_err(|e| format!("cannot record the domain key: {}", e.chain()))?
    {
        return Err(
            "another domain key became active meanwhile; the new key in the token \
             is unused"
                .into(),
        );
    }
    tracing::info!(domain_key = %id, trusted, "domain key created");
    Ok(id)
}

/// What a domain-key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub new_key: DomainKeyId,
    pub retired: Vec<DomainKeyId>,
    pub rewrapped: u64,
}

/// Rotates the domain key: a new D becomes active (new material is wrapped under it from
/// then on), every blob under the old D is rewrapped under the new one in the token (one
/// conditional write per blob), then the old D is marked retired. An interrupted rotation
/// (a `retiring` key left) is finished instead of starting another. Blobs name the D that
/// wrapped them, so every key works throughout.
pub fn rotate_domain_key(store: &dyn MetadataStore, hsm: &Hsm) -> Result<RotationReport, String> {
    let keys = store
        .domain_keys()
        .map_err(|e| format!("cannot read the domain keys: {}", e.chain()))?;
    let active = keys
        .iter()
        .find(|k| k.state == DomainKeyState::Active)
        .map(|k| k.id)
        .ok_or("the store names no active domain key; run `p11kms domain create`")?;
    let mut retiring: Vec<DomainKeyId> = keys
        .iter()
        .filter(|k| k.state == DomainKeyState::Retiring)
        .map(|k| k.id)
        .collect();
    let new_key = if retiring.is_empty() {
        let new_key = DomainKeyId::new_random();
        hsm.create_domain_key(&new_key)
            .map_err(|e| format!("cannot create the new domain key in the token: {e}"))?;
        let record = DomainKeyRecord {
            id: new_key,
            state: DomainKeyState::Active,
            created: now_epoch(),
        };
        if !store
            .begin_domain_rotation(&active, &record)
            .map_err(|e| format!("cannot start the rotation: {}", e.chain()))?
        {
            return Err("another rotation started meanwhile".into());
        }
        tracing::info!(old = %active, new = %new_key, "domain key rotation started");
        retiring.push(active);
        new_key
    } else {
        tracing::info!(new = %active, "finishing an interrupted domain key rotation");
        active
    };
    let mut rewrapped = 0;
    for old in &retiring {
        // A blob stored just before the rotation began can commit after a page was read:
        // go round until the old key retires (no blob names it any more).
        for _ in 0..5 {
            rewrapped += rewrap_all(store, hsm, old, &new_key)?;
            if store
                .retire_domain_key(old)
                .map_err(|e| format!("cannot retire {old}: {}", e.chain()))?
            {
                break;
            }
        }
    }
    Ok(RotationReport {
        new_key,
        retired: retiring,
        rewrapped,
    })
}

fn rewrap_all(
    store: &dyn MetadataStore,
    hsm: &Hsm,
    old: &DomainKeyId,
    new_key: &DomainKeyId,
) -> Result<u64, String> {
    let mut done = 0;
    let mut after: Option<MaterialId> = None;
    loop {
        let page = store
            .wrapped_under(old, after.as_ref(), ROTATION_PAGE)
            .map_err(|e| format!("cannot list wrapped materials: {}", e.chain()))?;
        let Some(last) = page.last() else {
            return Ok(done);
        };
        after = Some(last.material_id);
        for wrapped in &page {
            let blob = hsm
                .rewrap_material(wrapped, new_key)
                .map_err(|e| format!("cannot rewrap material {}: {e}", wrapped.material_id))?;
            // `false`: the material was deleted (or rewrapped by another run) meanwhile.
            if store
                .rewrap_material(
                    &wrapped.material_id,
                    old,
                    new_key,
                    crate::hsm::domain::CKM_AES_KEY_WRAP_PAD,
                    &blob,
                )
                .map_err(|e| format!("cannot store a rewrapped material: {}", e.chain()))?
            {
                done += 1;
            }
        }
    }
}
