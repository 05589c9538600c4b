//! The cache of per-(material, context) keys that ciphertext schemes 2 and 3 lock data keys
//! under, and the reservoir of token randomness their nonces and IVs come from.
//!
//! A context key is derived in the token from a material (`CKM_AES_CBC_ENCRYPT_DATA`) and
//! named here by its derivation data, which the core computes (it binds key, material,
//! context and a salt, so two different keys never share a name). A cached key is a
//! sensitive, non-extractable session object owned by the token's `copy_owner` session, in
//! a bounded LRU; an eviction destroys it, and the cache dies with its [`super::Token`] (a
//! recycle or a lost token). The same reliance on growing handle counters as the domain
//! cache applies (see `domain.rs`).
//!
//! Admission: a key is cached only the second time it is asked for within the doorkeeper's
//! memory. A context seen once (the AWS Encryption SDK's signing suites put a fresh public
//! key in every context) costs a transient derivation in the request's own session, as the
//! per-message scheme always did, and never takes the `copy_owner` session.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cryptoki::object::ObjectHandle;
use zeroize::Zeroizing;

use crate::model::MaterialId;

/// The name of a context key: its derivation data.
pub type ContextKeyName = [u8; 32];

/// How many wraps one writer salt serves before a new one is drawn. Scheme 3 wraps with
/// AES-GCM under random 96-bit IVs; NIST SP 800-38D bounds that at 2^32 per key, and 2^24
/// keeps the chance of a repeated IV under one key below 2^-48.
pub const WRITES_PER_SALT: u64 = 1 << 24;

/// Bytes of token randomness drawn per `C_GenerateRandom` into the reservoir.
pub const RESERVOIR_BYTES: usize = 4096;

/// A small LRU map. Generic so that it can be tested without a token.
pub(super) struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    capacity: usize,
}

impl<K: Copy + Eq + Hash, V: Clone> Lru<K, V> {
    pub(super) fn new(capacity: usize) -> Self {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, *key);
        Some(value.clone())
    }

    /// Inserts or replaces `key`; returns the entries pushed out to make room.
    pub(super) fn insert(&mut self, key: K, value: V) -> Vec<(K, V)> {
        let mut evicted = Vec::new();
        if let Some((_, used)) = self.entries.remove(&key) {
            self.order.remove(&used);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                evicted.push((oldest, old));
            }
        }
        self.tick += 1;
        self.entries.insert(key, (value, self.tick));
        self.order.insert(self.tick, key);
        evicted
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let (value, used) = self.entries.remove(key)?;
        self.order.remove(&used);
        Some(value)
    }

    /// Removes and returns every entry `drop` selects.
    pub(super) fn remove_where(&mut self, mut drop: impl FnMut(&V) -> bool) -> Vec<V> {
        let doomed: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, (v, _))| drop(v))
            .map(|(k, _)| *k)
            .collect();
        doomed.iter().filter_map(|k| self.remove(k)).collect()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A cached context key.
#[derive(Clone, Copy)]
pub(super) struct CachedKey {
    pub(super) handle: ObjectHandle,
    pub(super) material: MaterialId,
}

/// A writer's current salt for one (key, material, context): the salt its context key was
/// derived with, and how many ciphertexts it has locked.
#[derive(Clone, Copy)]
struct WriterSalt {
    salt: [u8; 16],
    material: MaterialId,
    writes: u64,
}

/// See [`ContextKeys::writer_salt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriterChoice {
    Salt([u8; 16]),
    NewSalt,
    Cold,
}

/// The context keys of one library initialisation.
pub(super) struct ContextKeys {
    pub(super) keys: Lru<ContextKeyName, CachedKey>,
    writers: Lru<[u8; 32], WriterSalt>,
    /// Names asked for once; a second ask admits the key.
    seen: Lru<[u8; 32], ()>,
}

impl ContextKeys {
    pub(super) fn new(capacity: usize) -> Self {
        ContextKeys {
            keys: Lru::new(capacity),
            writers: Lru::new(capacity),
            seen: Lru::new(capacity.saturating_mul(4)),
        }
    }

    /// Whether a key (or writer) named `name` is asked for the second time, remembering it
    /// otherwise.
    pub(super) fn seen_before(&mut self, name: &[u8; 32]) -> bool {
        if self.seen.remove(name).is_some() {
            return true;
        }
        self.seen.insert(*name, ());
        false
    }

    /// What a new ciphertext of `writer` is locked with: the writer's current salt, a new
    /// salt (second sight, or the current one is worn out; the caller draws it and calls
    /// [`ContextKeys::start_writer`]), or nothing while the writer is cold (first sight):
    /// it then writes the per-message scheme.
    pub(super) fn writer_salt(&mut self, writer: &[u8; 32]) -> WriterChoice {
        match self.writers.get(writer) {
            Some(current) if current.writes < WRITES_PER_SALT => {
                self.writers.insert(
                    *writer,
                    WriterSalt {
                        writes: current.writes + 1,
                        ..current
                    },
                );
                WriterChoice::Salt(current.salt)
            }
            Some(_) => WriterChoice::NewSalt,
            None if self.seen_before(writer) => WriterChoice::NewSalt,
            None => WriterChoice::Cold,
        }
    }

    pub(super) fn start_writer(
        &mut self,
        writer: &[u8; 32],
        material: &MaterialId,
        salt: [u8; 16],
    ) {
        self.writers.insert(
            *writer,
            WriterSalt {
                salt,
                material: *material,
                writes: 1,
            },
        );
    }

    /// Forgets everything of a material; returns the handles to destroy.
    pub(super) fn purge_material(&mut self, material: &MaterialId) -> Vec<ObjectHandle> {
        self.writers.remove_where(|w| w.material == *material);
        self.keys
            .remove_where(|k| k.material == *material)
            .into_iter()
            .map(|k| k.handle)
            .collect()
    }

    /// Forgets every key (after an object error: the owning session may be gone); returns
    /// the handles to destroy.
    pub(super) fn clear(&mut self) -> Vec<ObjectHandle> {
        self.keys
            .remove_where(|_| true)
            .into_iter()
            .map(|k| k.handle)
            .collect()
    }
}

/// Counters of the context-key cache (metrics `p11kms_context_key_cache_*`).
#[derive(Debug, Default)]
pub(super) struct ContextKeyCounters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) admissions: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) cold_writes: AtomicU64,
    pub(super) reservoir_refills: AtomicU64,
}

/// What the context-key cache has done, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContextKeyStats {
    /// Lookups that found a cached key.
    pub hits: u64,
    /// Lookups that derived a transient key (first sight of a context, or no cache).
    pub misses: u64,
    /// Keys derived into the cache.
    pub admissions: u64,
    pub evictions: u64,
    /// Ciphertexts written with the per-message scheme because their context was cold.
    pub cold_writes: u64,
    /// `C_GenerateRandom` calls that refilled the nonce and IV reservoir.
    pub reservoir_refills: u64,
    pub size: usize,
    pub capacity: usize,
}

impl ContextKeyCounters {
    pub(super) fn stats(&self, size: usize, capacity: usize) -> ContextKeyStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ContextKeyStats {
            hits: read(&self.hits),
            misses: read(&self.misses),
            admissions: read(&self.admissions),
            evictions: read(&self.evictions),
            cold_writes: read(&self.cold_writes),
            reservoir_refills: read(&self.reservoir_refills),
            size,
            capacity,
        }
    }
}

/// Token randomness drawn in bulk: nonces, IVs and salts are taken from it, so that a
/// request makes no `C_GenerateRandom` of its own except the one in
/// `RESERVOIR_BYTES / 28` (or so) that refills it. The bytes are not secret (each goes
/// into a ciphertext in the clear) and each is handed out once.
pub(super) struct Reservoir {
    bytes: Zeroizing<Vec<u8>>,
    used: usize,
}

impl Default for Reservoir {
    fn default() -> Self {
        Reservoir {
            bytes: Zeroizing::new(Vec::new()),
            used: 0,
        }
    }
}

impl Reservoir {
    /// Takes `out.len()` unused bytes, or returns `false` when too few are left.
    pub(super) fn take(&mut self, out: &mut [u8]) -> bool {
        let end = self.used + out.len();
        if end > self.bytes.len() {
            return false;
        }
        out.copy_from_slice(&self.bytes[self.used..end]);
        self.used = end;
        true
    }

    pub(super) fn refill(&mut self, fresh: Zeroizing<Vec<u8>>) {
        self.bytes = fresh;
        self.used = 0;
    }
}

/// Guards a [`Reservoir`].
pub(super) type SharedReservoir = Mutex<Reservoir>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        assert!(lru.insert(1, 'a').is_empty());
        assert!(lru.insert(2, 'b').is_empty());
        assert_eq!(lru.get(&1), Some('a'));
        assert_eq!(lru.insert(3, 'c'), vec![(2, 'b')]);
        assert_eq!(lru.get(&2), None);
        assert_eq!(lru.len(), 2);
        assert!(lru.insert(1, 'z').is_empty(), "replacing is not evicting");
        assert_eq!(lru.get(&1), Some('z'));
    }

    #[test]
    fn a_writer_warms_on_second_sight_and_changes_salt_when_worn() {
        let mut keys = ContextKeys::new(4);
        let material = MaterialId::new_random();
        let writer = [7u8; 32];
        assert_eq!(keys.writer_salt(&writer), WriterChoice::Cold);
        assert_eq!(keys.writer_salt(&writer), WriterChoice::NewSalt);
        keys.start_writer(&writer, &material, [2; 16]);
        assert_eq!(keys.writer_salt(&writer), WriterChoice::Salt([2; 16]));
        keys.writers.insert(
            writer,
            WriterSalt {
                salt: [2; 16],
                material,
                writes: WRITES_PER_SALT,
            },
        );
        assert_eq!(keys.writer_salt(&writer), WriterChoice::NewSalt);
        keys.purge_material(&material);
        assert_eq!(keys.writer_salt(&writer), WriterChoice::Cold);
    }

    #[test]
    fn the_reservoir_hands_out_each_byte_once() {
        let mut r = Reservoir::default();
        let mut out = [0u8; 3];
        assert!(!r.take(&mut out));
        r.refill(Zeroizing::new(vec![1, 2, 3, 4, 5]));
        assert!(r.take(&mut out));
        assert_eq!(out, [1, 2, 3]);
        assert!(!r.take(&mut out), "only two bytes are left");
    }
}
