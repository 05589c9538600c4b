//! Keys with known identity: the seed file, applied at start-up.
//!
//! A seed file (TOML) declares keys with fixed key ids, their spec, description, aliases,
//! tags and rotation settings. At start-up every declared key that the store does not have
//! is created; a key that exists is **never** touched, whatever the file now says (its
//! state, description, tags and material belong to whoever manages it through the API).
//! Declared aliases that do not exist are created; an alias that exists is never repointed.
//!
//! A seed entry may **adopt** an AES key already in the token (by `CKA_LABEL` or `CKA_ID`)
//! instead of generating material: the custody case. The key's material is then that token
//! object, used in place and never copied, modified or destroyed. Its material id is the
//! object's `CKA_ID` when that is 32 bytes (the id p11kms gives its own objects), otherwise
//! a fresh random id; either way the store records which object the material id stands for
//! (`adopted_materials`), and [`load_adoptions`] tells the HSM layer at every start. The key
//! shows `Origin` `EXTERNAL`, as AWS shows keys whose material came from outside KMS.
//!
//! ```toml
//! [[keys]]
//! key_id = "0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10"
//! description = "payments"
//! aliases = ["alias/payments"]
//! tags = { team = "payments" }
//! rotation_period_days = 365     # enables automatic rotation
//!
//! [[keys]]
//! key_id = "7c9d..."
//! adopt = { label = "legacy-master" }   # or adopt = { id = "<CKA_ID in hex>" }
//! ```

use std::collections::BTreeMap;

mod error;
pub use error::{ApplyError, EntryError, SeedError};
use std::path::Path;

use serde::Deserialize;

use crate::error::KmsError;
use crate::model::{
    AliasRecord, KeyId, KeyOrigin, KeyRecord, KeySpec, KeyState, KeyUsage, MaterialId,
    MaterialOrigin, MaterialRecord, Tag, TokenKeyRef,
};
use crate::store::StoreError;

use super::KmsService;

/// The seed file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    #[serde(default)]
    pub keys: Vec<SeedKey>,
}

/// One declared key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKey {
    /// The fixed key id (lower-case UUID).
    pub key_id: String,
    /// Owning account; defaults to the configured account.
    pub account: Option<String>,
    #[serde(default)]
    pub description: String,
    /// `SYMMETRIC_DEFAULT` (the default; the only spec this gateway serves so far).
    pub key_spec: Option<String>,
    /// `ENCRYPT_DECRYPT` (the default).
    pub key_usage: Option<String>,
    /// `false` creates the key Disabled.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Enables automatic rotation with this period (90..=2560 days, as AWS).
    pub rotation_period_days: Option<u32>,
    /// Adopt a key already in the token instead of generating material.
    pub adopt: Option<SeedAdopt>,
}

/// A token key to adopt: exactly one of `label` or `id` (hex `CKA_ID`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAdopt {
    pub label: Option<String>,
    pub id: Option<String>,
}

fn yes() -> bool {
    true
}

/// What applying a seed did, for the start-up log and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedOutcome {
    pub created: Vec<KeyId>,
    pub adopted: Vec<KeyId>,
    /// Declared keys that already existed and were left as they are.
    pub existing: Vec<KeyId>,
    pub aliases_created: Vec<String>,
}

/// A declared key after validation.
struct Planned {
    key_id: KeyId,
    account: String,
    description: String,
    enabled: bool,
    aliases: Vec<String>,
    tags: Vec<Tag>,
    rotation_period_days: Option<u32>,
    adopt: Option<TokenKeyRef>,
}

/// Reads and parses a seed file.
pub fn read_seed_file(path: &Path) -> Result<SeedFile, SeedError> {
    let text = std::fs::read_to_string(path)
        .map_err(crate::error::FileError::on("read the seed file", path))?;
    parse_seed(&text).map_err(|source| SeedError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses seed file text (TOML); the fields are checked by [`validate_seed`].
pub fn parse_seed(text: &str) -> Result<SeedFile, toml::de::Error> {
    toml::from_str(text)
}

/// Checks every declared key, without the store or the token: what [`apply_seed`] refuses
/// before it creates anything.
pub fn validate_seed(seed: &SeedFile, default_account: &str) -> Result<(), SeedError> {
    plan_all(seed, default_account).map(drop)
}

/// Tells the HSM layer about every adopted material the store records. Call at start-up
/// before anything uses key material.
pub fn load_adoptions(service: &KmsService) -> Result<usize, KmsError> {
    let adoptions = service.store.adopted_materials()?;
    let n = adoptions.len();
    for (material, object) in adoptions {
        service.hsm.register_adopted(material, object);
    }
    Ok(n)
}

/// Creates the declared keys that do not exist yet, and their missing aliases. The whole
/// file is validated before anything is created.
pub fn apply_seed(
    service: &KmsService,
    seed: &SeedFile,
    default_account: &str,
) -> Result<SeedOutcome, SeedError> {
    let planned = plan_all(seed, default_account)?;
    let mut outcome = SeedOutcome::default();
    for p in &planned {
        let failed = |source: ApplyError| SeedError::Apply {
            key_id: p.key_id,
            source,
        };
        match service
            .store
            .get_key(&p.key_id)
            .map_err(|e| failed(e.into()))?
        {
            Some(existing) if existing.account != p.account => {
                return Err(failed(ApplyError::OtherAccount {
                    existing: existing.account,
                    declared: p.account.clone(),
                }));
            }
            Some(_) => {
                tracing::info!(key_id = %p.key_id, "seed key exists; left as it is");
                outcome.existing.push(p.key_id);
            }
            None => {
                create(service, p).map_err(failed)?;
                if p.adopt.is_some() {
                    outcome.adopted.push(p.key_id);
                } else {
                    outcome.created.push(p.key_id);
                }
            }
        }
        for name in &p.aliases {
            if ensure_alias(service, p, name).map_err(|source| {
                failed(ApplyError::Alias {
                    name: name.clone(),
                    source,
                })
            })? {
                outcome.aliases_created.push(name.clone());
            }
        }
    }
    Ok(outcome)
}

/// Every declared key validated, or the first reason the file is refused.
fn plan_all(seed: &SeedFile, default_account: &str) -> Result<Vec<Planned>, SeedError> {
    let planned = seed
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            plan(k, default_account).map_err(|source| SeedError::Entry {
                number: i + 1,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::new();
    for p in &planned {
        if !seen.insert(p.key_id) {
            return Err(SeedError::DeclaredTwice(p.key_id));
        }
    }
    Ok(planned)
}

fn plan(k: &SeedKey, default_account: &str) -> Result<Planned, EntryError> {
    let key_id: KeyId = k
        .key_id
        .parse()
        .map_err(|()| EntryError::KeyId(k.key_id.clone()))?;
    let account = k.account.clone().unwrap_or_else(|| default_account.into());
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EntryError::Account(account));
    }
    let symmetric = KeySpec::SymmetricDefault.as_str();
    let spec = k.key_spec.as_deref().unwrap_or(symmetric);
    if KeySpec::parse(spec) != Some(KeySpec::SymmetricDefault) {
        return Err(EntryError::KeySpec {
            spec: spec.into(),
            supported: symmetric,
        });
    }
    let usage = k
        .key_usage
        .as_deref()
        .unwrap_or(KeyUsage::EncryptDecrypt.as_str());
    if KeyUsage::parse(usage) != Some(KeyUsage::EncryptDecrypt) {
        return Err(EntryError::KeyUsage {
            usage: usage.into(),
            spec: spec.into(),
        });
    }
    if k.description.chars().count() > 8192 {
        return Err(EntryError::Description);
    }
    for name in &k.aliases {
        check_alias(name)?;
    }
    if k.tags.len() > 50 {
        return Err(EntryError::TooManyTags);
    }
    for (key, value) in &k.tags {
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(EntryError::Tag(key.clone()));
        }
    }
    if let Some(days) = k.rotation_period_days {
        if !(90..=2560).contains(&days) {
            return Err(EntryError::RotationPeriod(days));
        }
    }
    let adopt = match &k.adopt {
        None => None,
        Some(SeedAdopt {
            label: Some(label),
            id: None,
        }) if !label.is_empty() => Some(TokenKeyRef::Label(label.clone())),
        Some(SeedAdopt {
            label: None,
            id: Some(id),
        }) => match hex::decode(id) {
            Ok(bytes) if !bytes.is_empty() => Some(TokenKeyRef::Id(bytes)),
            _ => return Err(EntryError::AdoptId(id.clone())),
        },
        Some(_) => return Err(EntryError::AdoptChoice),
    };
    Ok(Planned {
        key_id,
        account,
        description: k.description.clone(),
        enabled: k.enabled,
        aliases: k.aliases.clone(),
        tags: k
            .tags
            .iter()
            .map(|(key, value)| Tag {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        rotation_period_days: k.rotation_period_days,
        adopt,
    })
}

fn check_alias(name: &str) -> Result<(), EntryError> {
    let Some(rest) = name.strip_prefix("alias/") else {
        return Err(EntryError::AliasPrefix(name.into()));
    };
    if rest.is_empty()
        || name.len() > 256
        || rest.starts_with("aws/")
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Err(EntryError::AliasName(name.into()));
    }
    Ok(())
}

fn create(service: &KmsService, p: &Planned) -> Result<(), ApplyError> {
    let now = service.now();
    let (material_id, adoption) = match &p.adopt {
        None => {
            let material_id = MaterialId::new_random();
            // Material first, row second, as CreateKey: a crash leaves only an orphan.
            service.hsm.create_material(&p.key_id, &material_id)?;
            (material_id, None)
        }
        Some(object) => {
            let found = service
                .hsm
                .inspect_adoptable(object)?
                .map_err(ApplyError::NotAdoptable)?;
            for warning in &found.warnings {
                tracing::warn!(key_id = %p.key_id, %object, "adopted key: {warning}");
            }
            // The object's own CKA_ID is the material id when it has the length p11kms uses;
            // otherwise the store maps a fresh material id to the object.
            let material_id = <[u8; 32]>::try_from(found.cka_id.as_slice())
                .map(MaterialId)
                .unwrap_or_else(|_| MaterialId::new_random());
            (material_id, Some(found.reference()))
        }
    };
    let rotation_enabled = p.rotation_period_days.is_some();
    let key = KeyRecord {
        key_id: p.key_id,
        account: p.account.clone(),
        description: p.description.clone(),
        key_spec: KeySpec::SymmetricDefault,
        key_usage: KeyUsage::EncryptDecrypt,
        origin: if adoption.is_some() {
            KeyOrigin::External
        } else {
            KeyOrigin::AwsKms
        },
        state: if p.enabled {
            KeyState::Enabled
        } else {
            KeyState::Disabled
        },
        creation_date: now,
        deletion_date: None,
        pending_window_days: None,
        rotation_enabled,
        rotation_period_days: p.rotation_period_days,
        next_rotation_date: p.rotation_period_days.map(|days| now + service.days(days)),
        current_material: material_id,
        policy: service.default_policy(&p.account),
    };
    let material = MaterialRecord {
        key_id: p.key_id,
        material_id,
        created: now,
        origin: MaterialOrigin::Initial,
    };
    match adoption {
        None => {
            if let Err(e) = service.store.insert_key(&key, &material, &p.tags) {
                let _ = service.hsm.destroy_material(&material_id);
                return Err(e.into());
            }
        }
        Some(object) => {
            service
                .store
                .insert_adopted_key(&key, &material, &p.tags, &object)
                .map_err(|e| match e {
                    StoreError::AlreadyExists => ApplyError::AlreadyAdopted {
                        object: object.clone(),
                        material: material_id,
                    },
                    other => other.into(),
                })?;
            service.hsm.register_adopted(material_id, object.clone());
            tracing::info!(key_id = %p.key_id, %object, material = %material_id, "adopted a token key");
        }
    }
    if p.adopt.is_none() {
        tracing::info!(key_id = %p.key_id, "created a seed key");
    }
    Ok(())
}

/// Creates a declared alias if it does not exist; never repoints one. Returns whether it
/// was created.
fn ensure_alias(service: &KmsService, p: &Planned, name: &str) -> Result<bool, StoreError> {
    match service.store.get_alias(&p.account, name)? {
        Some(alias) if alias.target == p.key_id => Ok(false),
        Some(alias) => {
            tracing::warn!(alias = name, target = %alias.target, key_id = %p.key_id,
                "seed alias points at another key; left as it is");
            Ok(false)
        }
        None => {
            let now = service.now();
            service.store.insert_alias(&AliasRecord {
                account: p.account.clone(),
                name: name.to_string(),
                target: p.key_id,
                creation_date: now,
                last_updated: now,
            })?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Planned, Box<dyn std::error::Error>> {
        let file: SeedFile = toml::from_str(text)?;
        Ok(plan(&file.keys[0], "111122223333")?)
    }

    #[test]
    fn a_full_entry_parses() {
        let p = parse(
            r#"
            [[keys]]
            key_id = "0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10"
            description = "payments"
            aliases = ["alias/payments", "alias/team/pay_1"]
            tags = { team = "payments", env = "prod" }
            rotation_period_days = 90
            enabled = false
            adopt = { id = "0a0b" }
            "#,
        )
        .unwrap();
        assert_eq!(p.account, "111122223333");
        assert!(!p.enabled);
        assert_eq!(p.aliases.len(), 2);
        assert_eq!(p.tags.len(), 2);
        assert_eq!(p.adopt, Some(TokenKeyRef::Id(vec![0x0a, 0x0b])));
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        let cases = [
            (r#"key_id = "not-a-uuid""#, "lower-case UUID"),
            (
                r#"key_id = "0B3E8A52-6F0C-4C1E-9D55-2F6F3F2D9A10""#,
                "lower-case UUID",
            ),
            (
                "key_id = \"0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10\"\naliases = [\"payments\"]",
                "must start with alias/",
            ),
            (
                "key_id = \"0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10\"\naliases = [\"alias/aws/x\"]",
                "not a valid alias",
            ),
            (
                "key_id = \"0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10\"\nrotation_period_days = 30",
                "90..=2560",
            ),
            (
                "key_id = \"0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10\"\nkey_spec = \"RSA_2048\"",
                "not supported yet",
            ),
            (
                "key_id = \"0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10\"\nadopt = { label = \"a\", id = \"00\" }",
                "exactly one",
            ),
            (
                "key_id = \"0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10\"\nadopt = { id = \"zz\" }",
                "hex",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(&format!("[[keys]]\n{body}\n"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(parse(
            "[[keys]]\nkey_id = \"0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10\"\nkeyspec = \"x\"\n"
        )
        .is_err());
    }
}
