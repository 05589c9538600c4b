//! What is checked after every restart: the store and the token agree, every acknowledged
//! result is still there (keys, their state, description and rotation, rotations, grants,
//! aliases), and every acknowledged ciphertext decrypts. An in-doubt change may have
//! happened or not; whichever the gateway shows becomes the journal's new value.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;
use rand::rngs::StdRng;
use rand::Rng;

use super::inspect;
use super::journal::{Cipher, Role, State};
use super::workload::{call, list_rotations, Answer, Ctx};

/// How many acknowledged things one check looked at.
#[derive(Debug, Default, Clone)]
pub struct Checked {
    pub keys: u64,
    pub rotation_materials: u64,
    pub grants: u64,
    pub aliases: u64,
    pub ciphertexts: u64,
    /// Material rows compared with token objects.
    pub materials: u64,
    /// Keys the deletion job removed after their acknowledged waiting period.
    pub deleted_keys: u64,
}

impl Checked {
    pub fn add(&mut self, other: &Checked) {
        self.keys += other.keys;
        self.rotation_materials += other.rotation_materials;
        self.grants += other.grants;
        self.aliases += other.aliases;
        self.ciphertexts += other.ciphertexts;
        self.materials += other.materials;
        self.deleted_keys += other.deleted_keys;
    }
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The store and the token agree: every material row has its token object and every
/// p11kms token object has its row. The gateway's jobs keep running meanwhile (a rotation
/// creates its object before its row; a deletion removes its row before its objects), so the
/// store is read before and after the token: a row present in both reads existed throughout
/// and its object must be there; an object with no row in either read must be gone (or have
/// its row) within a second.
pub fn store_matches_token(
    sqlite: &Path,
    module: &Path,
    pin: &str,
    failures: &mut Vec<String>,
) -> Result<u64, String> {
    let mut orphans: BTreeSet<String> = BTreeSet::new();
    let mut compared = 0;
    for attempt in 0..6 {
        let before = inspect::store_materials(sqlite)?;
        let token = inspect::token_materials(module, pin)?;
        let after = inspect::store_materials(sqlite)?;
        if attempt == 0 {
            compared = before.len() as u64;
            for material in before.intersection(&after) {
                if !token.contains(material) {
                    failures.push(format!(
                        "material {material} has a store row but no token object"
                    ));
                }
            }
            orphans = token
                .iter()
                .filter(|m| !before.contains(*m) && !after.contains(*m))
                .cloned()
                .collect();
        } else {
            orphans.retain(|m| token.contains(m) && !after.contains(m));
        }
        if orphans.is_empty() {
            return Ok(compared);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for material in orphans {
        failures.push(format!(
            "token object {material} has no store row (not reconciled)"
        ));
    }
    Ok(compared)
}

/// Keys, rotations, grants and aliases against the journal.
pub async fn metadata(ctx: &Ctx, failures: &mut Vec<String>) -> Checked {
    let mut checked = Checked::default();
    let keys: Vec<(usize, String)> = {
        let journal = ctx.journal();
        journal
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| !k.deleted)
            .map(|(i, k)| (i, k.id.clone()))
            .collect()
    };
    for (index, id) in keys {
        check_key(ctx, index, &id, failures, &mut checked).await;
    }
    check_aliases(ctx, failures, &mut checked).await;
    checked
}

async fn check_key(
    ctx: &Ctx,
    index: usize,
    id: &str,
    failures: &mut Vec<String>,
    checked: &mut Checked,
) {
    let described = call(ctx, "DescribeKey", ctx.kms.describe_key().key_id(id).send()).await;
    let metadata = match described {
        Answer::Ok(out) => match out.key_metadata().cloned() {
            Some(m) => m,
            None => {
                failures.push(format!("DescribeKey {id}: no KeyMetadata"));
                return;
            }
        },
        Answer::Refused { code, .. } if code == "NotFoundException" => {
            let mut journal = ctx.journal();
            let key = &mut journal.keys[index];
            let may_be_gone = (key.state.value == State::PendingDeletion
                && key.deletion_date.is_none_or(|d| now_epoch() >= d - 0.5))
                || key.state.alt == Some(State::PendingDeletion);
            if may_be_gone {
                key.deleted = true;
                checked.deleted_keys += 1;
                let id = key.id.clone();
                journal.ciphers.retain(|c| c.key != id);
                journal
                    .aliases
                    .retain(|_, a| a.target.value.as_deref() != Some(id.as_str()));
            } else {
                failures.push(format!(
                    "acknowledged key {id} is gone (journal: {:?}, deletion date {:?}, now {:.3})",
                    key.state,
                    key.deletion_date,
                    now_epoch()
                ));
            }
            return;
        }
        Answer::Refused { code, message } => {
            failures.push(format!("DescribeKey {id}: {code}: {message}"));
            return;
        }
        Answer::Lost(e) => {
            failures.push(format!("DescribeKey {id}: no answer: {e}"));
            return;
        }
    };
    checked.keys += 1;
    let seen_state = match metadata.key_state() {
        Some(KeyState::Enabled) => State::Enabled,
        Some(KeyState::Disabled) => State::Disabled,
        Some(KeyState::PendingDeletion) => State::PendingDeletion,
        other => {
            failures.push(format!("key {id} is in state {other:?}"));
            return;
        }
    };
    let role = {
        let mut journal = ctx.journal();
        let key = &mut journal.keys[index];
        if !key.state.accepts(&seen_state) {
            failures.push(format!(
                "key {id}: state {seen_state:?}, acknowledged {:?}",
                key.state
            ));
        }
        key.state.set(seen_state);
        if seen_state == State::PendingDeletion {
            let seen_date = metadata.deletion_date().map(|d| d.as_secs_f64());
            if let (Some(acked), Some(seen)) = (key.deletion_date, seen_date) {
                if (acked - seen).abs() > 1.0 {
                    failures.push(format!(
                        "key {id}: deletion date {seen}, acknowledged {acked}"
                    ));
                }
            }
            key.deletion_date = seen_date;
        } else {
            key.deletion_date = None;
        }
        let description = metadata.description().unwrap_or("").to_string();
        if !key.description.accepts(&description) {
            failures.push(format!(
                "key {id}: description {description:?}, acknowledged {:?}",
                key.description
            ));
        }
        key.description.set(description);
        key.role
    };
    if role != Role::Stable {
        return;
    }
    match call(
        ctx,
        "GetKeyRotationStatus",
        ctx.kms.get_key_rotation_status().key_id(id).send(),
    )
    .await
    {
        Answer::Ok(out) => {
            let enabled = out.key_rotation_enabled();
            let mut journal = ctx.journal();
            let key = &mut journal.keys[index];
            if !key.rotation_enabled.accepts(&enabled) {
                failures.push(format!(
                    "key {id}: rotation enabled {enabled}, acknowledged {:?}",
                    key.rotation_enabled
                ));
            }
            key.rotation_enabled.set(enabled);
        }
        Answer::Refused { code, message } => {
            failures.push(format!("GetKeyRotationStatus {id}: {code}: {message}"))
        }
        Answer::Lost(e) => failures.push(format!("GetKeyRotationStatus {id}: no answer: {e}")),
    }
    match list_rotations(ctx, id).await {
        Answer::Ok((on_demand, materials)) => {
            let mut journal = ctx.journal();
            let key = &mut journal.keys[index];
            if on_demand < key.on_demand || on_demand > key.on_demand + key.on_demand_in_doubt {
                failures.push(format!(
                    "key {id}: {on_demand} on-demand rotations listed, {} acknowledged (+{} in doubt)",
                    key.on_demand, key.on_demand_in_doubt
                ));
            }
            key.on_demand = on_demand;
            key.on_demand_in_doubt = 0;
            for lost in key.materials.difference(&materials) {
                failures.push(format!(
                    "key {id}: rotation material {lost} is no longer listed"
                ));
            }
            checked.rotation_materials += key.materials.len() as u64;
            key.materials = materials;
        }
        Answer::Refused { code, message } => {
            failures.push(format!("ListKeyRotations {id}: {code}: {message}"))
        }
        Answer::Lost(e) => failures.push(format!("ListKeyRotations {id}: no answer: {e}")),
    }
    let has_grants = !ctx.journal().keys[index].grants.is_empty();
    if has_grants {
        check_grants(ctx, index, id, failures, checked).await;
    }
}

async fn check_grants(
    ctx: &Ctx,
    index: usize,
    id: &str,
    failures: &mut Vec<String>,
    checked: &mut Checked,
) {
    let mut listed = BTreeSet::new();
    let mut marker: Option<String> = None;
    loop {
        let answer = call(
            ctx,
            "ListGrants",
            ctx.kms
                .list_grants()
                .key_id(id)
                .limit(100)
                .set_marker(marker.clone())
                .send(),
        )
        .await;
        let out = match answer {
            Answer::Ok(out) => out,
            Answer::Refused { code, message } => {
                failures.push(format!("ListGrants {id}: {code}: {message}"));
                return;
            }
            Answer::Lost(e) => {
                failures.push(format!("ListGrants {id}: no answer: {e}"));
                return;
            }
        };
        listed.extend(
            out.grants()
                .iter()
                .filter_map(|g| g.grant_id().map(str::to_string)),
        );
        match out.next_marker() {
            Some(m) if out.truncated() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    let mut journal = ctx.journal();
    let key = &mut journal.keys[index];
    for (grant, present) in key.grants.iter_mut() {
        checked.grants += 1;
        let seen = listed.contains(grant);
        if !present.accepts(&seen) {
            failures.push(format!(
                "key {id}: grant {grant} {}, acknowledged {present:?}",
                if seen { "exists" } else { "is gone" }
            ));
        }
        present.set(seen);
    }
    key.grants.retain(|_, g| g.value);
}

async fn check_aliases(ctx: &Ctx, failures: &mut Vec<String>, checked: &mut Checked) {
    let mut listed: HashMap<String, String> = HashMap::new();
    let mut marker: Option<String> = None;
    loop {
        let answer = call(
            ctx,
            "ListAliases",
            ctx.kms
                .list_aliases()
                .limit(100)
                .set_marker(marker.clone())
                .send(),
        )
        .await;
        let out = match answer {
            Answer::Ok(out) => out,
            Answer::Refused { code, message } => {
                failures.push(format!("ListAliases: {code}: {message}"));
                return;
            }
            Answer::Lost(e) => {
                failures.push(format!("ListAliases: no answer: {e}"));
                return;
            }
        };
        for alias in out.aliases() {
            if let (Some(name), Some(target)) = (alias.alias_name(), alias.target_key_id()) {
                listed.insert(name.to_string(), target.to_string());
            }
        }
        match out.next_marker() {
            Some(m) if out.truncated() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    let mut journal = ctx.journal();
    for (name, alias) in journal.aliases.iter_mut() {
        checked.aliases += 1;
        let seen = listed.get(name).cloned();
        if !alias.target.accepts(&seen) {
            failures.push(format!(
                "alias {name}: target {seen:?}, acknowledged {:?}",
                alias.target
            ));
        }
        alias.target.set(seen);
    }
    journal.aliases.retain(|_, a| a.target.value.is_some());
}

/// A key's state as the check found it, with its deletion date when pending deletion.
type KeyNow = (State, Option<f64>);

/// Decrypts acknowledged ciphertexts: all not yet checked, and up to `sample` of the others
/// (`None`: every one). A ciphertext under a disabled or pending-deletion key must be refused
/// for that reason; one under a deleted key has left the journal.
pub async fn ciphertexts(
    ctx: &Arc<Ctx>,
    rng: &mut StdRng,
    sample: Option<usize>,
    failures: &mut Vec<String>,
) -> u64 {
    let chosen: Vec<(usize, Cipher, Option<KeyNow>)> = {
        let journal = ctx.journal();
        let states: HashMap<&str, KeyNow> = journal
            .keys
            .iter()
            .filter(|k| !k.deleted)
            .map(|k| (k.id.as_str(), (k.state.value, k.deletion_date)))
            .collect();
        let mut old: Vec<usize> = Vec::new();
        let mut chosen = Vec::new();
        for (i, c) in journal.ciphers.iter().enumerate() {
            if !c.checked || sample.is_none() {
                chosen.push(i);
            } else {
                old.push(i);
            }
        }
        if let Some(n) = sample {
            for _ in 0..n.min(old.len()) {
                let at = rng.random_range(0..old.len());
                chosen.push(old.swap_remove(at));
            }
        }
        chosen
            .into_iter()
            .map(|i| {
                let c = journal.ciphers[i].clone();
                let state = states.get(c.key.as_str()).copied();
                (i, c, state)
            })
            .collect()
    };
    // Eight at a time.
    let mut results: Vec<(usize, Result<(), String>)> = Vec::new();
    for chunk in chosen.chunks(8) {
        let mut tasks = Vec::new();
        for (i, cipher, state) in chunk.iter().cloned() {
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move {
                (i, decrypt_one(&ctx, &cipher, state).await)
            }));
        }
        for task in tasks {
            match task.await {
                Ok(r) => results.push(r),
                Err(e) => failures.push(format!("decrypt task failed: {e}")),
            }
        }
    }
    let mut journal = ctx.journal();
    let mut count = 0;
    for (i, result) in results {
        count += 1;
        match result {
            Ok(()) => {
                if let Some(c) = journal.ciphers.get_mut(i) {
                    c.checked = true;
                }
            }
            Err(e) => failures.push(e),
        }
    }
    count
}

async fn decrypt_one(ctx: &Ctx, cipher: &Cipher, key: Option<KeyNow>) -> Result<(), String> {
    let state = key.map(|(s, _)| s);
    // The deletion job may remove a key pending deletion during the check; its ciphertexts
    // then name a key that does not exist, which is refused as InvalidCiphertextException.
    let may_be_deleted = key.is_some_and(|(s, date)| {
        s == State::PendingDeletion && date.is_none_or(|d| now_epoch() >= d - 0.5)
    });
    let context = (!cipher.context.is_empty()).then(|| cipher.context.clone());
    let answer = call(
        ctx,
        "Decrypt",
        ctx.kms
            .decrypt()
            .ciphertext_blob(Blob::new(cipher.blob.clone()))
            .set_encryption_context(context)
            .send(),
    )
    .await;
    let what = || {
        format!(
            "ciphertext under {} (material {})",
            cipher.key, cipher.material
        )
    };
    match (state, answer) {
        (Some(State::Enabled), Answer::Ok(out)) => {
            if out.plaintext().map(|p| p.as_ref()) != Some(cipher.plaintext.as_slice()) {
                return Err(format!("{} decrypts to another plaintext", what()));
            }
            if out.key_material_id() != Some(cipher.material.as_str()) {
                return Err(format!(
                    "{} decrypts with material {:?}",
                    what(),
                    out.key_material_id()
                ));
            }
            if !out.key_id().is_some_and(|k| k.ends_with(&cipher.key)) {
                return Err(format!("{} decrypts under key {:?}", what(), out.key_id()));
            }
            Ok(())
        }
        (Some(State::Disabled), Answer::Refused { code, .. }) if code == "DisabledException" => {
            Ok(())
        }
        (Some(State::PendingDeletion), Answer::Refused { code, .. })
            if code == "KMSInvalidStateException"
                || (may_be_deleted && code == "InvalidCiphertextException") =>
        {
            Ok(())
        }
        (state, Answer::Ok(_)) => Err(format!(
            "{} decrypts under a key in state {state:?}",
            what()
        )),
        (state, Answer::Refused { code, message }) => Err(format!(
            "{} (key {state:?}) is refused: {code}: {message}",
            what()
        )),
        (_, Answer::Lost(e)) => Err(format!("{}: no answer: {e}", what())),
    }
}

/// At the very end: enable the stable keys left disabled, so that every journaled
/// ciphertext is decrypted, not only refused.
pub async fn enable_all(ctx: &Ctx, failures: &mut Vec<String>) {
    let disabled: Vec<(usize, String)> = {
        let journal = ctx.journal();
        journal
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| {
                !k.deleted && k.role == Role::Stable && k.state.value == State::Disabled
            })
            .map(|(i, k)| (i, k.id.clone()))
            .collect()
    };
    for (index, id) in disabled {
        match call(ctx, "EnableKey", ctx.kms.enable_key().key_id(&id).send()).await {
            Answer::Ok(_) => ctx.journal().keys[index].state.set(State::Enabled),
            Answer::Refused { code, message } => {
                failures.push(format!("EnableKey {id}: {code}: {message}"))
            }
            Answer::Lost(e) => failures.push(format!("EnableKey {id}: no answer: {e}")),
        }
    }
}

/// Which acknowledged request ids have no audit record.
pub fn unaudited(acknowledged: &[String], audited: &std::collections::HashSet<String>) -> u64 {
    acknowledged
        .iter()
        .filter(|id| !audited.contains(*id))
        .count() as u64
}

/// Kills that landed inside a job or a recycle, from the gateway's log (JSON lines): a
/// "begin" line without its "end" line.
#[derive(Debug, Default, Clone)]
pub struct InsideWork {
    pub recycle: bool,
    pub rotations: u32,
    pub deletions: u32,
}

pub fn inside_work(log: &str) -> InsideWork {
    let mut recycle = false;
    let mut rotations: BTreeMap<String, bool> = BTreeMap::new();
    let mut deletions: BTreeMap<String, bool> = BTreeMap::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &v["fields"];
        let message = fields["message"].as_str().unwrap_or("");
        let key = fields["key_id"].as_str().unwrap_or("").to_string();
        match message {
            "recycling the PKCS#11 library" => recycle = true,
            m if m.starts_with("PKCS#11 library recycled")
                || m.starts_with("HSM did not come back after a planned recycle")
                || m.starts_with("planned HSM recycle skipped") =>
            {
                recycle = false
            }
            "rotating a key automatically" => {
                rotations.insert(key, true);
            }
            m if m.starts_with("key rotated automatically")
                || m.starts_with("rotation no longer due")
                || m.starts_with("automatic rotation failed") =>
            {
                rotations.remove(&key);
            }
            "deleting a key whose waiting period ended" => {
                deletions.insert(key, true);
            }
            m if m.starts_with("key deleted after its waiting period")
                || m.starts_with("key no longer due for deletion")
                || m.starts_with("scheduled key deletion failed") =>
            {
                deletions.remove(&key);
            }
            _ => {}
        }
    }
    InsideWork {
        recycle,
        rotations: rotations.len() as u32,
        deletions: deletions.len() as u32,
    }
}
