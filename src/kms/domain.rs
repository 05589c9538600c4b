//! Domain-key mode's service side: the store behind the HSM's wrapped materials, start-up
//! checks, and the `p11kms domain create` / `rotate [--prepare | --activate]` commands.
//!
//! A rotation in a domain of several tokens has two stages: `--prepare` makes the new key
//! in this token and records it `pending` (it wraps nothing yet); the ceremony enrols it
//! into every other member; `--activate` checks the membership record (every member of the
//! old key holds the new one), then switches, rewraps every blob and retires the old key.
//! The one-step `rotate` is kept for a domain whose only recorded member is this token.

use std::sync::Arc;

mod error;
pub use error::DomainSetupError;

use crate::error::KmsError;
use crate::hsm::domain::WrappedMaterials;
use crate::hsm::{DomainWrapped, Hsm, KeyProvider, MaterialSourceError};
use crate::model::{
    now_epoch, DomainKeyId, DomainKeyRecord, DomainKeyState, MaterialId, WrappedMaterial,
};
use crate::store::{DomainMember, MetadataStore};

/// Blobs rewrapped per store page during a rotation.
const ROTATION_PAGE: usize = 500;

/// The metadata store as the HSM's keeper of wrapped materials.
pub struct StoreMaterials(pub Arc<dyn MetadataStore>);

impl WrappedMaterials for StoreMaterials {
    fn active_domain_key(&self) -> Result<DomainKeyId, MaterialSourceError> {
        active_domain_key(self.0.as_ref())
            .map_err(material_source_error)?
            .ok_or_else(|| {
                MaterialSourceError::Failed("the store names no active domain key".into())
            })
    }

    fn save(&self, wrapped: &WrappedMaterial) -> Result<bool, MaterialSourceError> {
        self.0
            .insert_wrapped_material(wrapped)
            .map_err(|e| material_source_error(e.into()))
    }

    fn load(&self, material: &MaterialId) -> Result<Option<WrappedMaterial>, MaterialSourceError> {
        self.0
            .get_wrapped_material(material)
            .map_err(|e| material_source_error(e.into()))
    }

    fn forget(&self, material: &MaterialId) -> Result<(), MaterialSourceError> {
        self.0
            .delete_wrapped_material(material)
            .map_err(|e| material_source_error(e.into()))
    }
}

/// A store failure as the provider passes it back: retryable or not, as the store said.
fn material_source_error(e: KmsError) -> MaterialSourceError {
    match e {
        KmsError::StoreUnavailable(fault) => MaterialSourceError::Unavailable(fault.to_string()),
        KmsError::Store(fault) => MaterialSourceError::Failed(fault.to_string()),
        other => MaterialSourceError::Failed(other.to_string()),
    }
}

fn active_domain_key(store: &dyn MetadataStore) -> Result<Option<DomainKeyId>, KmsError> {
    Ok(store
        .domain_keys()?
        .into_iter()
        .find(|k| k.state == DomainKeyState::Active)
        .map(|k| k.id))
}

/// The domain-wrapped provider over `hsm`'s engine, its materials kept in `store`, chosen
/// at start-up. With no active domain key in the store, `may_create` (the embedded
/// default) makes one; otherwise start-up fails.
pub fn start(
    store: Arc<dyn MetadataStore>,
    hsm: Hsm,
    may_create: bool,
    capacity: usize,
) -> Result<Hsm<DomainWrapped>, DomainSetupError> {
    if active_domain_key(store.as_ref())
        .map_err(DomainSetupError::kms(
            "cannot read the domain keys from the store",
        ))?
        .is_none()
    {
        if !may_create {
            return Err(DomainSetupError::NoActiveKeyToServe);
        }
        let id = create_domain_key(store.as_ref(), &hsm)?;
        tracing::warn!(domain_key = %id, "created the domain key in the embedded token");
    }
    Ok(hsm.into_domain_wrapped(Arc::new(StoreMaterials(store)), capacity)?)
}

/// Makes a domain key in the token and records it as the store's active one. Refused if
/// the store already has an active domain key.
pub fn create_domain_key(
    store: &dyn MetadataStore,
    hsm: &dyn KeyProvider,
) -> Result<DomainKeyId, DomainSetupError> {
    if let Some(active) = active_domain_key(store).map_err(DomainSetupError::kms(
        "cannot read the domain keys from the store",
    ))? {
        return Err(DomainSetupError::AlreadyActive(active));
    }
    let id = DomainKeyId::new_random();
    let trusted = hsm.create_domain_key(&id).map_err(DomainSetupError::kms(
        "cannot create the domain key in the token",
    ))?;
    let record = DomainKeyRecord {
        id,
        state: DomainKeyState::Active,
        created: now_epoch(),
    };
    if !store
        .insert_domain_key(&record)
        .map_err(DomainSetupError::store("cannot record the domain key"))?
    {
        return Err(DomainSetupError::ActivatedMeanwhile);
    }
    tracing::info!(domain_key = %id, trusted, "domain key created");
    Ok(id)
}

/// How the store records a token: by manufacturer, model and serial (as the ceremony does).
fn member_identity(m: &DomainMember) -> (&str, &str, &str) {
    (&m.token_manufacturer, &m.token_model, &m.token_serial)
}

/// A member as operators read it.
pub fn describe_member(m: &DomainMember) -> String {
    format!(
        "'{}' ({} {}, serial {})",
        m.token_label, m.token_manufacturer, m.token_model, m.token_serial
    )
}

fn members_of(
    store: &dyn MetadataStore,
    id: &DomainKeyId,
) -> Result<Vec<DomainMember>, DomainSetupError> {
    store
        .domain_members(Some(&id.to_hex()))
        .map_err(DomainSetupError::store("cannot read the domain members"))
}

/// Records this process's token as a member of domain key `id` (once: a recorded token
/// keeps its first row); returns the record.
fn record_this_token<M>(
    store: &dyn MetadataStore,
    hsm: &Hsm<M>,
    id: &DomainKeyId,
    enrolled_by: &str,
) -> Result<DomainMember, DomainSetupError> {
    let token = hsm
        .token_identity()
        .map_err(DomainSetupError::TokenIdentity)?;
    let member = DomainMember {
        domain_id: id.to_hex(),
        token_label: token.label,
        token_manufacturer: token.manufacturer,
        token_model: token.model,
        token_serial: token.serial,
        transport_fingerprint: None,
        enrolled_at: now_epoch(),
        enrolled_by: enrolled_by.into(),
    };
    store
        .insert_domain_member(&member)
        .map_err(DomainSetupError::store(format!(
            "cannot record this token as a member of {id}"
        )))?;
    Ok(member)
}

/// The recorded members of `old` that are not recorded as members of `new`.
pub fn members_lacking(
    store: &dyn MetadataStore,
    old: &DomainKeyId,
    new: &DomainKeyId,
) -> Result<Vec<DomainMember>, DomainSetupError> {
    let holders = members_of(store, new)?;
    Ok(members_of(store, old)?
        .into_iter()
        .filter(|m| {
            !holders
                .iter()
                .any(|h| member_identity(h) == member_identity(m))
        })
        .collect())
}

fn list_members(members: &[DomainMember]) -> String {
    members
        .iter()
        .map(describe_member)
        .collect::<Vec<_>>()
        .join(", ")
}

fn keys_in(keys: &[DomainKeyRecord], state: DomainKeyState) -> Vec<DomainKeyId> {
    keys.iter()
        .filter(|k| k.state == state)
        .map(|k| k.id)
        .collect()
}

fn read_domain_keys(store: &dyn MetadataStore) -> Result<Vec<DomainKeyRecord>, DomainSetupError> {
    store
        .domain_keys()
        .map_err(DomainSetupError::store("cannot read the domain keys"))
}

/// What `rotate --prepare` did.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRotation {
    pub pending: DomainKeyId,
    pub active: DomainKeyId,
    /// Recorded members of the active key that must be enrolled in the pending one
    /// before `--activate`.
    pub to_enrol: Vec<DomainMember>,
}

/// Stage one of a rotation: a new domain key in this token, recorded `pending` (it wraps
/// nothing yet), and this token recorded as a member of both keys. Refused while another
/// rotation is prepared or unfinished, or when this token lacks the active key.
pub fn prepare_rotation(
    store: &dyn MetadataStore,
    hsm: &Hsm,
) -> Result<PreparedRotation, DomainSetupError> {
    let keys = read_domain_keys(store)?;
    let active = *keys_in(&keys, DomainKeyState::Active)
        .first()
        .ok_or(DomainSetupError::NoActiveKey)?;
    if let Some(pending) = keys_in(&keys, DomainKeyState::Pending).first() {
        return Err(DomainSetupError::AlreadyPending(*pending));
    }
    let retiring = keys_in(&keys, DomainKeyState::Retiring);
    if !retiring.is_empty() {
        return Err(DomainSetupError::RotationUnfinished(retiring));
    }
    if !hsm.has_domain_key(&active).map_err(DomainSetupError::kms(
        "cannot look for the active domain key",
    ))? {
        return Err(DomainSetupError::ActiveKeyNotHere(active));
    }
    let pending = DomainKeyId::new_random();
    hsm.create_domain_key(&pending)
        .map_err(DomainSetupError::kms(
            "cannot create the new domain key in the token",
        ))?;
    let record = DomainKeyRecord {
        id: pending,
        state: DomainKeyState::Pending,
        created: now_epoch(),
    };
    if !store
        .insert_domain_key(&record)
        .map_err(DomainSetupError::store("cannot record the new domain key"))?
    {
        return Err(DomainSetupError::PreparedMeanwhile(pending));
    }
    // The domain's first token may never have been recorded (no enrolment yet).
    record_this_token(store, hsm, &active, "holder")?;
    record_this_token(store, hsm, &pending, "holder")?;
    tracing::info!(%active, %pending, "domain key rotation prepared");
    Ok(PreparedRotation {
        pending,
        active,
        to_enrol: members_lacking(store, &active, &pending)?,
    })
}

/// Stage two: refused unless every recorded member of the active key is recorded as
/// holding the pending one (the refusal names the missing members); then the pending key
/// becomes active and the old one retiring (one conditional write), every blob is
/// rewrapped and the old key retired. With nothing pending, finishes an interrupted
/// rotation.
pub fn activate_rotation(
    store: &dyn MetadataStore,
    hsm: &Hsm<DomainWrapped>,
) -> Result<RotationReport, DomainSetupError> {
    let keys = read_domain_keys(store)?;
    let active = *keys_in(&keys, DomainKeyState::Active)
        .first()
        .ok_or(DomainSetupError::NoActiveKey)?;
    let mut retiring = keys_in(&keys, DomainKeyState::Retiring);
    let Some(&pending) = keys_in(&keys, DomainKeyState::Pending).first() else {
        if retiring.is_empty() {
            return Err(DomainSetupError::NothingPrepared);
        }
        tracing::info!(new = %active, "finishing an interrupted domain key rotation");
        return finish_rotation(store, hsm, active, retiring);
    };
    let missing = members_lacking(store, &active, &pending)?;
    if !missing.is_empty() {
        return Err(DomainSetupError::MembersLacking {
            pending,
            active,
            count: missing.len(),
            members: list_members(&missing),
        });
    }
    if !hsm.has_domain_key(&pending).map_err(DomainSetupError::kms(
        "cannot look for the pending domain key",
    ))? {
        return Err(DomainSetupError::PendingKeyNotHere(pending));
    }
    if !store
        .activate_domain_key(&active, &pending)
        .map_err(DomainSetupError::store(format!(
            "cannot activate {pending}"
        )))?
    {
        return Err(DomainSetupError::ChangedMeanwhile);
    }
    tracing::info!(old = %active, new = %pending, "domain key rotation activated");
    retiring.push(active);
    finish_rotation(store, hsm, pending, retiring)
}

/// What a domain-key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub new_key: DomainKeyId,
    pub retired: Vec<DomainKeyId>,
    pub rewrapped: u64,
}

/// Rotates the domain key in one step, for a domain whose only recorded member is this
/// token: a new D becomes active (new material is wrapped under it from then on), every
/// blob under the old D is rewrapped under the new one in the token (one conditional write
/// per blob), then the old D is marked retired. An interrupted rotation (a `retiring` key
/// left) is finished instead of starting another. Blobs name the D that wrapped them, so
/// every key works throughout. Refused when other tokens are recorded as members (they
/// would not hold the new D) or a prepared rotation is pending.
pub fn rotate_domain_key(
    store: &dyn MetadataStore,
    hsm: &Hsm<DomainWrapped>,
) -> Result<RotationReport, DomainSetupError> {
    let keys = read_domain_keys(store)?;
    let active = *keys_in(&keys, DomainKeyState::Active)
        .first()
        .ok_or(DomainSetupError::NoActiveKey)?;
    if let Some(pending) = keys_in(&keys, DomainKeyState::Pending).first() {
        return Err(DomainSetupError::PendingRotation(*pending));
    }
    let retiring = keys_in(&keys, DomainKeyState::Retiring);
    if !retiring.is_empty() {
        tracing::info!(new = %active, "finishing an interrupted domain key rotation");
        return finish_rotation(store, hsm, active, retiring);
    }
    let me = hsm
        .token_identity()
        .map_err(DomainSetupError::TokenIdentity)?;
    let others: Vec<DomainMember> = members_of(store, &active)?
        .into_iter()
        .filter(|m| {
            member_identity(m)
                != (
                    me.manufacturer.as_str(),
                    me.model.as_str(),
                    me.serial.as_str(),
                )
        })
        .collect();
    if !others.is_empty() {
        return Err(DomainSetupError::OtherMembers {
            active,
            members: list_members(&others),
        });
    }
    let new_key = {
        let new_key = DomainKeyId::new_random();
        hsm.create_domain_key(&new_key)
            .map_err(DomainSetupError::kms(
                "cannot create the new domain key in the token",
            ))?;
        record_this_token(store, hsm, &new_key, "holder")?;
        let record = DomainKeyRecord {
            id: new_key,
            state: DomainKeyState::Active,
            created: now_epoch(),
        };
        if !store
            .begin_domain_rotation(&active, &record)
            .map_err(DomainSetupError::store("cannot start the rotation"))?
        {
            return Err(DomainSetupError::RotationStartedMeanwhile);
        }
        tracing::info!(old = %active, new = %new_key, "domain key rotation started");
        new_key
    };
    finish_rotation(store, hsm, new_key, vec![active])
}

/// Rewraps every blob under the `retiring` keys under `new_key` and retires them.
fn finish_rotation(
    store: &dyn MetadataStore,
    hsm: &Hsm<DomainWrapped>,
    new_key: DomainKeyId,
    retiring: Vec<DomainKeyId>,
) -> Result<RotationReport, DomainSetupError> {
    let mut rewrapped = 0;
    for old in &retiring {
        // A blob stored just before the rotation began can commit after a page was read:
        // go round until the old key retires (no blob names it any more).
        for _ in 0..5 {
            rewrapped += rewrap_all(store, hsm, old, &new_key)?;
            if store
                .retire_domain_key(old)
                .map_err(|source| DomainSetupError::Store {
                    doing: format!("cannot retire {old}"),
                    source,
                })?
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
    hsm: &Hsm<DomainWrapped>,
    old: &DomainKeyId,
    new_key: &DomainKeyId,
) -> Result<u64, DomainSetupError> {
    let mut done = 0;
    let mut after: Option<MaterialId> = None;
    loop {
        let page = store
            .wrapped_under(old, after.as_ref(), ROTATION_PAGE)
            .map_err(DomainSetupError::store("cannot list wrapped materials"))?;
        let Some(last) = page.last() else {
            return Ok(done);
        };
        after = Some(last.material_id);
        for wrapped in &page {
            let blob =
                hsm.rewrap_material(wrapped, new_key)
                    .map_err(|source| DomainSetupError::Kms {
                        doing: format!("cannot rewrap material {}", wrapped.material_id),
                        source: source.into(),
                    })?;
            // `false`: the material was deleted (or rewrapped by another run) meanwhile.
            if store
                .rewrap_material(
                    &wrapped.material_id,
                    old,
                    new_key,
                    crate::hsm::domain::CKM_AES_KEY_WRAP_PAD,
                    &blob,
                )
                .map_err(DomainSetupError::store("cannot store a rewrapped material"))?
            {
                done += 1;
            }
        }
    }
}
