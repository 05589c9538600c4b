//! The service core: KMS semantics on the typed commands `api` decodes. It knows nothing of HTTP.
//!
//! Every operation runs synchronously on a blocking thread: it reads the metadata store,
//! checks key state and usage as in AWS's key-state table, and asks the HSM for the
//! cryptography.

mod access;
mod asymmetric;
pub mod ciphertext;
pub mod clock;
mod crypto;
pub mod domain;
mod grants;
mod import;
mod jobs;
mod keyformat;
mod keys;
pub mod leases;
mod provider_errors;
pub mod seed;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::api::EncryptionAlgorithm;
use crate::auth::Principal;
use crate::error::KmsError;
use crate::hsm::KeyProvider;
use crate::model::{KeyId, KeyRecord, KeySpec, KeyState, KeyUsage};
use crate::store::{Changed, KeyChange, MetadataStore, StoreError};

pub use access::{Authorized, IdentityPolicies};
pub use jobs::{reconcile, run_due_jobs, run_leased_jobs};

use access::{Access, KeyPolicyCache};

const SECONDS_PER_DAY: f64 = 86_400.0;

/// The states [`KmsService::require_not_pending_deletion`] accepts.
const MANAGEABLE: &[KeyState] = &[
    KeyState::Enabled,
    KeyState::Disabled,
    KeyState::PendingImport,
];
/// The states [`KmsService::require_usable`] accepts.
const USABLE: &[KeyState] = &[KeyState::Enabled];

/// Settings of the service core.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub region: String,
    /// Length of a "day" for deletion windows and rotation periods; shorter only in test rigs.
    pub day_seconds: f64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            region: "us-east-1".into(),
            day_seconds: SECONDS_PER_DAY,
        }
    }
}

/// Who is calling, and what the request touched (for the audit trail and the log span).
#[derive(Debug)]
pub struct Caller {
    pub principal: Principal,
    /// The client's address (`aws:SourceIp`), when known.
    pub source_ip: Option<IpAddr>,
    /// Whether the request came over TLS (`aws:SecureTransport`), when known.
    pub secure_transport: Option<bool>,
    facts: RefCell<RequestFacts>,
}

/// Identifiers a request touched. Never plaintext or key material.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts {
    pub key_arns: Vec<String>,
    pub key_material_ids: Vec<String>,
    pub encryption_context: Option<BTreeMap<String, String>>,
    pub destination_encryption_context: Option<BTreeMap<String, String>>,
    /// Grants that authorized the request.
    pub grant_ids: Vec<String>,
    /// Keys the request named through an alias (`kms:RequestAlias`).
    pub aliases: Vec<(KeyId, String)>,
}

impl Caller {
    pub fn new(principal: Principal) -> Self {
        Caller {
            principal,
            source_ip: None,
            secure_transport: None,
            facts: RefCell::new(RequestFacts::default()),
        }
    }

    /// Where the request came from, for `aws:SourceIp` and `aws:SecureTransport`.
    pub fn with_transport(mut self, source_ip: Option<IpAddr>, secure: Option<bool>) -> Self {
        self.source_ip = source_ip;
        self.secure_transport = secure;
        self
    }

    fn note_grant(&self, grant_id: String) {
        let mut facts = self.facts.borrow_mut();
        if !facts.grant_ids.contains(&grant_id) {
            facts.grant_ids.push(grant_id);
        }
    }

    fn note_alias(&self, key_id: KeyId, alias: &str) {
        self.facts
            .borrow_mut()
            .aliases
            .push((key_id, alias.to_string()));
    }

    fn alias_used_for(&self, key_id: &KeyId) -> Option<String> {
        let facts = self.facts.borrow();
        facts
            .aliases
            .iter()
            .rev()
            .find(|(k, _)| k == key_id)
            .map(|(_, alias)| alias.clone())
    }

    pub fn account(&self) -> &str {
        &self.principal.account
    }

    pub fn facts(&self) -> RequestFacts {
        self.facts.borrow().clone()
    }

    fn note_key(&self, arn: String) {
        let mut facts = self.facts.borrow_mut();
        if !facts.key_arns.contains(&arn) {
            facts.key_arns.push(arn);
        }
    }

    fn note_material(&self, material: &crate::model::MaterialId) {
        let hex = material.to_hex();
        let mut facts = self.facts.borrow_mut();
        if !facts.key_material_ids.contains(&hex) {
            facts.key_material_ids.push(hex);
        }
    }

    fn note_context(&self, context: &BTreeMap<String, String>, destination: bool) {
        let mut facts = self.facts.borrow_mut();
        let slot = if destination {
            &mut facts.destination_encryption_context
        } else {
            &mut facts.encryption_context
        };
        *slot = Some(context.clone());
    }
}

/// The KMS service core.
pub struct KmsService {
    config: ServiceConfig,
    store: Arc<dyn MetadataStore>,
    /// The key provider: the HSM, holding or wrapping every key material.
    hsm: Arc<dyn KeyProvider>,
    identity: Arc<IdentityPolicies>,
    key_policies: KeyPolicyCache,
    clock: Arc<dyn clock::Clock>,
}

/// How a request named a key.
#[derive(Debug, Clone, PartialEq)]
enum KeyName {
    Key { account: String, key_id: KeyId },
    Alias { account: String, name: String },
}

impl KmsService {
    pub fn new(
        config: ServiceConfig,
        store: Arc<dyn MetadataStore>,
        hsm: Arc<dyn KeyProvider>,
    ) -> Self {
        KmsService {
            config,
            store,
            hsm,
            identity: Arc::new(IdentityPolicies::default()),
            key_policies: KeyPolicyCache::default(),
            clock: Arc::new(clock::SystemClock),
        }
    }

    /// Reads "now" from `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Arc<dyn clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> crate::model::EpochSeconds {
        self.clock.now()
    }

    /// Identity policies per principal, shared with whoever reloads the configuration.
    pub fn with_identity_policies(mut self, identity: Arc<IdentityPolicies>) -> Self {
        self.identity = identity;
        self
    }

    pub fn identity_policies(&self) -> Arc<IdentityPolicies> {
        self.identity.clone()
    }

    pub fn hsm(&self) -> &dyn KeyProvider {
        self.hsm.as_ref()
    }

    pub fn store(&self) -> &dyn MetadataStore {
        self.store.as_ref()
    }

    pub fn key_arn(&self, account: &str, key_id: &KeyId) -> String {
        format!("arn:aws:kms:{}:{account}:key/{key_id}", self.config.region)
    }

    pub fn alias_arn(&self, account: &str, name: &str) -> String {
        format!("arn:aws:kms:{}:{account}:{name}", self.config.region)
    }

    fn arn_of(&self, key: &KeyRecord) -> String {
        self.key_arn(&key.account, &key.key_id)
    }

    fn days(&self, days: u32) -> f64 {
        f64::from(days) * self.config.day_seconds
    }

    /// Parses a key id, key ARN, alias name or alias ARN, with AWS's error messages.
    fn parse_key_name(&self, caller: &Caller, input: &str) -> Result<KeyName, KmsError> {
        let invalid = || KmsError::NotFound(format!("Invalid keyId '{input}'"));
        if let Some(name) = input.strip_prefix("alias/") {
            if name.is_empty() {
                return Err(invalid());
            }
            return Ok(KeyName::Alias {
                account: caller.account().to_string(),
                name: input.to_string(),
            });
        }
        if let Some(rest) = input.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [_partition, service, region, account, resource] = parts.as_slice() else {
                return Err(invalid());
            };
            if *service != "kms" {
                return Err(invalid());
            }
            if *region != self.config.region {
                return Err(KmsError::NotFound(format!("Invalid arn {region}")));
            }
            if resource.starts_with("alias/") {
                return Ok(KeyName::Alias {
                    account: account.to_string(),
                    name: resource.to_string(),
                });
            }
            let id = resource.strip_prefix("key/").ok_or_else(invalid)?;
            return self.parse_bare_key_id(id, account, input);
        }
        self.parse_bare_key_id(input, caller.account(), input)
    }

    fn parse_bare_key_id(&self, id: &str, account: &str, input: &str) -> Result<KeyName, KmsError> {
        if let Ok(key_id) = id.parse::<KeyId>() {
            return Ok(KeyName::Key {
                account: account.to_string(),
                key_id,
            });
        }
        // A well-formed multi-Region key id: this gateway has none, so it does not exist.
        if let Some(hex) = id.strip_prefix("mrk-") {
            if hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(KmsError::NotFound(format!(
                    "Key 'arn:aws:kms:{}:{account}:key/{id}' does not exist",
                    self.config.region
                )));
            }
        }
        Err(KmsError::NotFound(format!("Invalid keyId '{input}'")))
    }

    /// Finds the key a request names (any of the four forms) and authorizes `access` to it.
    fn resolve(
        &self,
        caller: &Caller,
        input: &str,
        access: &Access<'_>,
    ) -> Result<Authorized<KeyRecord>, KmsError> {
        let key = self.find(caller, input)?;
        self.authorize(caller, key, access)
    }

    /// Finds the key a request names, without authorizing anything yet.
    fn find(&self, caller: &Caller, input: &str) -> Result<KeyRecord, KmsError> {
        match self.parse_key_name(caller, input)? {
            KeyName::Key { account, key_id } => self.load_key_for(caller, &account, &key_id),
            KeyName::Alias { account, name } => {
                // An alias is found only in the caller's own account: another account's
                // key is reached by key ARN or alias ARN, never by a bare alias name.
                let alias = self.store.get_alias(&account, &name)?.ok_or_else(|| {
                    KmsError::NotFound(format!(
                        "Alias {} is not found.",
                        self.alias_arn(&account, &name)
                    ))
                })?;
                caller.note_alias(alias.target, &name);
                self.load_key_for(caller, &account, &alias.target)
            }
        }
    }

    /// Finds a key named by key id or key ARN only (operations that refuse aliases) and
    /// authorizes `access` to it.
    fn resolve_key_only(
        &self,
        caller: &Caller,
        input: &str,
        access: &Access<'_>,
    ) -> Result<Authorized<KeyRecord>, KmsError> {
        let key = self.find_key_only(caller, input)?;
        self.authorize(caller, key, access)
    }

    /// Finds a key named by key id or key ARN only, without authorizing anything yet. An alias
    /// name or alias ARN is AWS's InvalidArnException (awsreport: GetKeyPolicy and CreateGrant
    /// with an alias answer "Key Aliases are not supported for this operation.").
    fn find_key_only(&self, caller: &Caller, input: &str) -> Result<KeyRecord, KmsError> {
        match self.parse_key_name(caller, input)? {
            KeyName::Key { account, key_id } => self.load_key_for(caller, &account, &key_id),
            KeyName::Alias { .. } => Err(KmsError::InvalidArn(
                "Key Aliases are not supported for this operation.".into(),
            )),
        }
    }

    fn load_key_for(
        &self,
        caller: &Caller,
        account: &str,
        key_id: &KeyId,
    ) -> Result<KeyRecord, KmsError> {
        let key = self.load_key(account, key_id)?;
        caller.note_key(self.arn_of(&key));
        Ok(key)
    }

    fn load_key(&self, account: &str, key_id: &KeyId) -> Result<KeyRecord, KmsError> {
        match self.store.get_key(key_id)? {
            Some(key) if key.account == account => Ok(key),
            _ => Err(KmsError::NotFound(format!(
                "Key '{}' does not exist",
                self.key_arn(account, key_id)
            ))),
        }
    }

    /// Makes `change` to `key` in one conditional write. `rule` is the state rule the change
    /// needs and `allowed` the states that pass it: the rule answers for the row read before,
    /// the store checks `allowed` again in the write itself, and a key that changed state in
    /// between gets the rule's error for its new state. So no write is lost or undone.
    fn change_key(
        &self,
        key: &Authorized<KeyRecord>,
        change: KeyChange<'_>,
        allowed: &[KeyState],
        rule: impl Fn(&KmsService, &KeyRecord) -> Result<(), KmsError>,
    ) -> Result<KeyRecord, KmsError> {
        rule(self, key)?;
        match self.store.change_key(&key.key_id, &change, allowed) {
            Ok(Changed::Applied(now)) => Ok(now),
            Ok(Changed::Refused(now)) => {
                rule(self, &now)?;
                Err(self.invalid_state(&now, now.state))
            }
            Err(StoreError::NotFound) => Err(KmsError::NotFound(format!(
                "Key '{}' does not exist",
                self.arn_of(key)
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The key must be usable for cryptography: Enabled.
    fn require_usable(&self, key: &KeyRecord) -> Result<(), KmsError> {
        match key.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled {
                arn: self.arn_of(key),
            }),
            other => Err(self.invalid_state(key, other)),
        }
    }

    /// The key may be managed (not pending deletion).
    /// [`MANAGEABLE`] lists the states this accepts.
    fn require_not_pending_deletion(&self, key: &KeyRecord) -> Result<(), KmsError> {
        match key.state {
            KeyState::PendingDeletion | KeyState::Creating | KeyState::Unavailable => {
                Err(self.invalid_state(key, key.state))
            }
            _ => Ok(()),
        }
    }

    /// CancelKeyDeletion's rule: the key must be pending deletion.
    fn require_pending_deletion(&self, key: &KeyRecord) -> Result<(), KmsError> {
        if key.state == KeyState::PendingDeletion {
            return Ok(());
        }
        Err(KmsError::InvalidState(format!(
            "{} is not pending deletion.",
            self.arn_of(key)
        )))
    }

    fn invalid_state(&self, key: &KeyRecord, state: KeyState) -> KmsError {
        let arn = self.arn_of(key);
        KmsError::InvalidState(match state {
            KeyState::PendingDeletion => format!("{arn} is pending deletion."),
            KeyState::PendingImport => format!("{arn} is pending import."),
            KeyState::Disabled => format!("{arn} is disabled."),
            KeyState::Enabled => format!("{arn} is enabled."),
            KeyState::Creating => format!("{arn} is being created."),
            KeyState::Unavailable => format!("{arn} is unavailable."),
        })
    }

    /// The key must be a symmetric encryption key for `operation`, used with `algorithm`.
    fn require_symmetric_encryption(
        &self,
        key: &KeyRecord,
        operation: &str,
        algorithm: Option<EncryptionAlgorithm>,
    ) -> Result<(), KmsError> {
        if key.key_usage != KeyUsage::EncryptDecrypt {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{} key usage is {} which is not valid for {operation}.",
                self.arn_of(key),
                key.key_usage
            )));
        }
        let algorithm = algorithm.unwrap_or(EncryptionAlgorithm::SymmetricDefault);
        if key.key_spec != KeySpec::SymmetricDefault
            || algorithm != EncryptionAlgorithm::SymmetricDefault
        {
            return Err(KmsError::InvalidKeyUsage(format!(
                "Algorithm {algorithm} is incompatible with key spec {}.",
                key.key_spec
            )));
        }
        Ok(())
    }
}

/// Nitro Enclaves attestation (`Recipient`) needs an enclave-aware KMS; this gateway refuses it.
fn reject_recipient<T>(recipient: &Option<T>) -> Result<(), KmsError> {
    match recipient {
        Some(_) => Err(KmsError::UnsupportedOperation(
            "Recipient (Nitro Enclaves) is not supported by this gateway.".into(),
        )),
        None => Ok(()),
    }
}

fn dry_run(flag: Option<bool>) -> Result<(), KmsError> {
    if flag == Some(true) {
        Err(KmsError::DryRun)
    } else {
        Ok(())
    }
}
