//! The client's journal: every result the gateway acknowledged, and what was in flight when
//! it died. An operation in flight at a kill may or may not have happened, so its field
//! holds two acceptable values until the check after the restart settles it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::Rng;

/// A value the gateway acknowledged, and the one an unanswered request may have set.
#[derive(Debug, Clone, PartialEq)]
pub struct Doubtful<T> {
    pub value: T,
    pub alt: Option<T>,
}

impl<T: Clone + PartialEq> Doubtful<T> {
    pub fn new(value: T) -> Self {
        Doubtful { value, alt: None }
    }

    /// An acknowledged change.
    pub fn set(&mut self, value: T) {
        self.value = value;
        self.alt = None;
    }

    /// A change whose answer never came.
    pub fn doubt(&mut self, value: T) {
        self.alt = Some(value);
    }

    pub fn accepts(&self, seen: &T) -> bool {
        *seen == self.value || self.alt.as_ref() == Some(seen)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Enabled,
    Disabled,
    PendingDeletion,
}

/// Stable keys live for the whole run (aliases, grants, rotation, state changes, most
/// ciphertexts); churn keys are created to be scheduled for deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Stable,
    Churn,
}

#[derive(Debug)]
pub struct KeyEntry {
    pub id: String,
    pub role: Role,
    pub state: Doubtful<State>,
    /// The acknowledged DeletionDate (epoch seconds) while PendingDeletion.
    pub deletion_date: Option<f64>,
    pub description: Doubtful<String>,
    pub rotation_enabled: Doubtful<bool>,
    /// Acknowledged RotateKeyOnDemand calls, and those left unanswered by a kill.
    pub on_demand: u32,
    pub on_demand_in_doubt: u32,
    /// Rotation material ids seen in an answer; each must stay listed.
    pub materials: BTreeSet<String>,
    /// Grant id -> whether the grant exists.
    pub grants: BTreeMap<String, Doubtful<bool>>,
    /// A worker holds the key (one request per key at a time).
    pub busy: bool,
    /// Deleted by the deletion job after its acknowledged waiting period.
    pub deleted: bool,
}

impl KeyEntry {
    pub fn new(id: String, role: Role, description: String) -> Self {
        KeyEntry {
            id,
            role,
            state: Doubtful::new(State::Enabled),
            deletion_date: None,
            description: Doubtful::new(description),
            rotation_enabled: Doubtful::new(false),
            on_demand: 0,
            on_demand_in_doubt: 0,
            materials: BTreeSet::new(),
            grants: BTreeMap::new(),
            busy: false,
            deleted: false,
        }
    }

    pub fn live_grants(&self) -> Vec<String> {
        self.grants
            .iter()
            .filter(|(_, g)| g.value)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[derive(Debug)]
pub struct AliasEntry {
    /// The target key id, or `None` once deleted.
    pub target: Doubtful<Option<String>>,
    pub busy: bool,
}

/// An acknowledged ciphertext and what it must decrypt to.
#[derive(Debug, Clone)]
pub struct Cipher {
    pub key: String,
    /// Key-material id from the ciphertext header (bytes 18..50).
    pub material: String,
    pub context: HashMap<String, String>,
    pub plaintext: Vec<u8>,
    pub blob: Vec<u8>,
    /// Decrypted after at least one restart.
    pub checked: bool,
}

/// The material id a symmetric ciphertext names (README, "The symmetric ciphertext").
pub fn material_of(blob: &[u8]) -> Option<String> {
    blob.get(18..50).map(hex::encode)
}

#[derive(Debug, Default)]
pub struct Journal {
    pub keys: Vec<KeyEntry>,
    pub aliases: BTreeMap<String, AliasEntry>,
    pub ciphers: Vec<Cipher>,
    /// Acknowledged requests by operation, over the whole run.
    pub acknowledged: BTreeMap<&'static str, u64>,
    /// Requests left unanswered by a kill, by operation.
    pub in_doubt: BTreeMap<&'static str, u64>,
    /// Request ids acknowledged since the last check (their audit records are looked for).
    pub acknowledged_ids: Vec<String>,
    pub alias_seq: u64,
}

impl Journal {
    pub fn stable_keys(&self) -> usize {
        self.keys
            .iter()
            .filter(|k| k.role == Role::Stable && !k.deleted)
            .count()
    }

    /// Claims a random idle key that `eligible` accepts.
    pub fn claim_key(
        &mut self,
        rng: &mut impl Rng,
        eligible: impl Fn(&KeyEntry) -> bool,
    ) -> Option<usize> {
        let candidates: Vec<usize> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| !k.busy && !k.deleted && eligible(k))
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let i = candidates[rng.random_range(0..candidates.len())];
        self.keys[i].busy = true;
        Some(i)
    }

    pub fn release_key(&mut self, i: usize) {
        self.keys[i].busy = false;
    }

    /// Claims a random idle alias that still exists.
    pub fn claim_alias(&mut self, rng: &mut impl Rng) -> Option<String> {
        let candidates: Vec<&String> = self
            .aliases
            .iter()
            .filter(|(_, a)| !a.busy && a.target.value.is_some())
            .map(|(n, _)| n)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let name = candidates[rng.random_range(0..candidates.len())].clone();
        if let Some(a) = self.aliases.get_mut(&name) {
            a.busy = true;
        }
        Some(name)
    }

    pub fn release_alias(&mut self, name: &str) {
        if let Some(a) = self.aliases.get_mut(name) {
            a.busy = false;
        }
    }

    pub fn live_aliases(&self) -> usize {
        self.aliases
            .values()
            .filter(|a| a.target.value.is_some() || a.target.alt.is_some())
            .count()
    }

    /// A random stable key id usable as an alias target (not claimed: aliases may point at
    /// keys whatever their state, and stable keys are never deleted).
    pub fn random_stable_key(&self, rng: &mut impl Rng) -> Option<String> {
        let stable: Vec<&KeyEntry> = self
            .keys
            .iter()
            .filter(|k| k.role == Role::Stable && !k.deleted)
            .collect();
        if stable.is_empty() {
            return None;
        }
        Some(stable[rng.random_range(0..stable.len())].id.clone())
    }

    pub fn key_index(&self, id: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.id == id)
    }

    pub fn acknowledge(&mut self, operation: &'static str, request_id: Option<&str>) {
        *self.acknowledged.entry(operation).or_default() += 1;
        if let Some(id) = request_id {
            self.acknowledged_ids.push(id.to_string());
        }
    }

    pub fn left_in_doubt(&mut self, operation: &'static str) {
        *self.in_doubt.entry(operation).or_default() += 1;
    }

    /// Keeps the journal's ciphertexts bounded: drops the oldest ones that have already
    /// been decrypted after a restart.
    pub fn trim_ciphers(&mut self, limit: usize) {
        let mut excess = self.ciphers.len().saturating_sub(limit);
        if excess == 0 {
            return;
        }
        self.ciphers.retain(|c| {
            if excess > 0 && c.checked {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}
