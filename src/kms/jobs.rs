//! Background work: deleting keys whose waiting period ended, automatic rotation, and
//! reconciling the token with the store at start-up. With a shared store each job round
//! runs under a lease ([`super::leases`]), on one replica at a time.

use std::collections::HashSet;

use crate::error::KmsError;
use crate::model::{EpochSeconds, MaterialOrigin};

use super::leases::{Job, JobLeases, Round};
use super::KmsService;

/// Runs whatever is due now, in this process alone (no lease): for a store that only this
/// process uses.
pub fn run_due_jobs(service: &KmsService) {
    let now = service.now();
    delete_due_keys(service, now);
    rotate_due_keys(service, now);
}

/// Runs each job whose lease this process holds or can take now, so that replicas sharing
/// a store run each round once. Returns what each job did.
pub fn run_leased_jobs(service: &KmsService, leases: &JobLeases) -> Vec<(Job, Round)> {
    Job::ALL
        .into_iter()
        .map(|job| {
            let round = match leases.hold(service.store.as_ref(), job) {
                Ok(true) => {
                    let now = service.now();
                    match job {
                        Job::Deletion => delete_due_keys(service, now),
                        Job::Rotation => rotate_due_keys(service, now),
                    }
                    Round::Ran
                }
                Ok(false) => Round::Skipped,
                Err(e) => {
                    tracing::warn!(job = job.as_str(), error = %e.chain(), "cannot take the job's lease; the job waits for the next round");
                    Round::Failed
                }
            };
            (job, round)
        })
        .collect()
}

fn delete_due_keys(service: &KmsService, now: EpochSeconds) {
    match service.store.keys_due_for_deletion(now) {
        Ok(keys) => {
            for key in keys {
                // Begin and end lines tell from the log whether a crash hit a job's work.
                tracing::debug!(key_id = %key.key_id, "deleting a key whose waiting period ended");
                match delete_key_now(service, &key.key_id, now) {
                    Ok(true) => {
                        tracing::info!(key_id = %key.key_id, "key deleted after its waiting period")
                    }
                    Ok(false) => {
                        tracing::info!(key_id = %key.key_id, "key no longer due for deletion")
                    }
                    Err(e) => {
                        tracing::error!(key_id = %key.key_id, error = %e, "scheduled key deletion failed")
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list keys due for deletion"),
    }
}

fn rotate_due_keys(service: &KmsService, now: EpochSeconds) {
    match service.store.keys_due_for_rotation(now) {
        Ok(keys) => {
            for key in keys {
                tracing::debug!(key_id = %key.key_id, "rotating a key automatically");
                match service.rotate(&key, MaterialOrigin::Automatic, Some(now)) {
                    Ok(Some(material)) => {
                        tracing::info!(key_id = %key.key_id, %material, "key rotated automatically")
                    }
                    Ok(None) => {
                        tracing::info!(key_id = %key.key_id, "rotation no longer due; skipped")
                    }
                    Err(e) => {
                        tracing::error!(key_id = %key.key_id, error = %e, "automatic rotation failed")
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list keys due for rotation"),
    }
}

/// Row first, material second: a crash in between leaves only orphan objects. The row goes
/// only if the key is still due at `now`; whether it went.
fn delete_key_now(
    service: &KmsService,
    key_id: &crate::model::KeyId,
    now: EpochSeconds,
) -> Result<bool, KmsError> {
    let materials = service.store.list_materials(key_id)?;
    if !service.store.delete_key(key_id, Some(now))? {
        return Ok(false);
    }
    service.key_policies.forget(key_id);
    for material in materials {
        service.hsm.destroy_material(&material.material_id)?;
    }
    Ok(true)
}

/// Destroys p11kms token objects that no store row refers to (left by a crash between the
/// two writes of a create or delete). Returns how many were destroyed.
pub fn reconcile(service: &KmsService) -> Result<usize, KmsError> {
    let known: HashSet<_> = service.store.all_material_ids()?.into_iter().collect();
    let mut destroyed = 0;
    for material in service.hsm.list_materials()? {
        if !known.contains(&material) {
            tracing::warn!(%material, "destroying an orphan key-material object");
            service.hsm.destroy_material(&material)?;
            destroyed += 1;
        }
    }
    Ok(destroyed)
}
