//! The embedded tokens: SoftHSM2 (the default) or Kryoptic, created and configured by the
//! gateway under its data directory.
//!
//! Which mechanisms each token has is never inferred from the choice made here: the gateway
//! probes the token it loaded (`probe.rs`, `Hsm::probe_asymmetric`). This module only writes
//! each token's configuration, initialises the token and finds its library.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::provision::{initialise_token, read_or_create_pin, with_library};
use super::{find_token, EmbeddedSoftHsm, ProvisionError};
use crate::file_error::FileError;

/// The Kryoptic library's file name, as `tokens/kryoptic` builds it.
pub const KRYOPTIC_LIBRARY: &str = "libkryoptic_pkcs11.so";
/// The environment variable Kryoptic reads its configuration file's path from.
const KRYOPTIC_CONF_VAR: &str = "KRYOPTIC_CONF";
/// The slot number the gateway gives its Kryoptic token.
const KRYOPTIC_SLOT: u64 = 1;

/// Which software token the gateway embeds (`hsm.embedded_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbeddedTokenKind {
    #[default]
    SoftHsm2,
    Kryoptic,
}

impl EmbeddedTokenKind {
    pub fn parse(text: &str) -> Result<Self, UnknownEmbeddedToken> {
        match text {
            "softhsm2" => Ok(EmbeddedTokenKind::SoftHsm2),
            "kryoptic" => Ok(EmbeddedTokenKind::Kryoptic),
            other => Err(UnknownEmbeddedToken(other.into())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EmbeddedTokenKind::SoftHsm2 => "softhsm2",
            EmbeddedTokenKind::Kryoptic => "kryoptic",
        }
    }
}

/// A `hsm.embedded_token` value that names no embedded token.
#[derive(Debug, thiserror::Error)]
#[error("hsm.embedded_token: expected softhsm2 or kryoptic, got '{0}'")]
pub struct UnknownEmbeddedToken(pub String);

/// An embedded token prepared under the data directory.
pub enum EmbeddedToken {
    SoftHsm2(EmbeddedSoftHsm),
    Kryoptic(EmbeddedKryoptic),
}

impl EmbeddedToken {
    /// Writes the token's configuration (and repairs what a crash left, for SoftHSM2) and
    /// exports the variable its library reads the configuration's path from. Must run
    /// before any thread is started and before the library is loaded.
    pub fn prepare(kind: EmbeddedTokenKind, data_dir: &Path) -> Result<Self, ProvisionError> {
        match kind {
            EmbeddedTokenKind::SoftHsm2 => {
                let embedded = EmbeddedSoftHsm::prepare(data_dir)?;
                std::env::set_var("SOFTHSM2_CONF", &embedded.conf_path);
                Ok(EmbeddedToken::SoftHsm2(embedded))
            }
            EmbeddedTokenKind::Kryoptic => {
                let embedded = EmbeddedKryoptic::prepare(data_dir)?;
                std::env::set_var(KRYOPTIC_CONF_VAR, &embedded.conf_path);
                Ok(EmbeddedToken::Kryoptic(embedded))
            }
        }
    }

    /// Initialises a token labelled `label` through PKCS#11 unless one exists. `module` may
    /// be a shim (pkcs11-spy) in front of the token's library. Returns whether a token was
    /// created.
    pub fn ensure_token(&self, module: &Path, label: &str) -> Result<bool, ProvisionError> {
        match self {
            EmbeddedToken::SoftHsm2(embedded) => embedded.ensure_token(module, label),
            EmbeddedToken::Kryoptic(embedded) => embedded.ensure_token(module, label),
        }
    }

    /// The user PIN, generated on first start.
    pub fn user_pin(&self) -> Result<SecretString, ProvisionError> {
        match self {
            EmbeddedToken::SoftHsm2(embedded) => embedded.user_pin(),
            EmbeddedToken::Kryoptic(embedded) => read_or_create_pin(&embedded.user_pin_path),
        }
    }

    /// The SO PIN file, generated on first start (the domain ceremony reads it).
    pub fn so_pin_path(&self) -> &Path {
        match self {
            EmbeddedToken::SoftHsm2(embedded) => embedded.so_pin_path(),
            EmbeddedToken::Kryoptic(embedded) => &embedded.so_pin_path,
        }
    }

    /// See [`EmbeddedSoftHsm::keep_token_files`]. Kryoptic writes its SQLite file in
    /// transactions, so there is nothing to keep a copy of.
    pub fn keep_token_files(&self) -> Result<(), ProvisionError> {
        match self {
            EmbeddedToken::SoftHsm2(embedded) => embedded.keep_token_files(),
            EmbeddedToken::Kryoptic(_) => Ok(()),
        }
    }
}

/// A Kryoptic configuration under the data directory: `kryoptic.conf` naming one slot whose
/// token lives in the SQLite file `kryoptic/token.sql`, and the PIN files (mode 0600).
pub struct EmbeddedKryoptic {
    pub conf_path: PathBuf,
    user_pin_path: PathBuf,
    so_pin_path: PathBuf,
    database: PathBuf,
}

impl EmbeddedKryoptic {
    /// Writes `kryoptic.conf` and the token directory if missing.
    pub fn prepare(data_dir: &Path) -> Result<Self, ProvisionError> {
        let token_dir = data_dir.join("kryoptic");
        fs::create_dir_all(&token_dir).map_err(FileError::on("create", &token_dir))?;
        let _ = fs::set_permissions(&token_dir, fs::Permissions::from_mode(0o700));
        let token_dir = token_dir
            .canonicalize()
            .map_err(FileError::on("resolve", &token_dir))?;
        let database = token_dir.join("token.sql");
        let conf_path = data_dir.join("kryoptic.conf");
        if !conf_path.exists() {
            // TOML basic strings: a path with a quote or backslash would need escaping.
            let path = database.display().to_string();
            if path.contains(['"', '\\']) || path.chars().any(char::is_control) {
                return Err(ProvisionError::UnquotablePath(path));
            }
            let text = format!(
                "# Written by p11kms for its embedded Kryoptic token.\n\
                 [[slots]]\n\
                 slot = {KRYOPTIC_SLOT}\n\
                 dbtype = \"sqlite\"\n\
                 dbargs = \"{path}\"\n"
            );
            fs::write(&conf_path, text).map_err(FileError::on("write", &conf_path))?;
        }
        Ok(EmbeddedKryoptic {
            conf_path,
            user_pin_path: data_dir.join("user.pin"),
            so_pin_path: data_dir.join("so.pin"),
            database,
        })
    }

    /// Initialises the slot's token as `label` unless a token with that label exists.
    /// A token initialised under another label is never initialised again: `C_InitToken`
    /// would erase its keys.
    pub fn ensure_token(&self, module: &Path, label: &str) -> Result<bool, ProvisionError> {
        with_library(module, |pkcs11| self.ensure_token_with(pkcs11, label))
    }

    fn ensure_token_with(
        &self,
        pkcs11: &cryptoki::context::Pkcs11,
        label: &str,
    ) -> Result<bool, ProvisionError> {
        if find_token(pkcs11, label).is_ok() {
            return Ok(false);
        }
        let slot = pkcs11
            .get_slots_with_token()
            .map_err(ProvisionError::call("C_GetSlotList"))?
            .into_iter()
            .next()
            .ok_or_else(|| ProvisionError::NoKryopticSlot(self.conf_path.clone()))?;
        let info = pkcs11
            .get_token_info(slot)
            .map_err(ProvisionError::call("C_GetTokenInfo"))?;
        if info.token_initialized() {
            return Err(ProvisionError::LabelledOtherwise {
                database: self.database.clone(),
                found: info.label().trim_end().into(),
                label: label.into(),
            });
        }
        let so_pin = read_or_create_pin(&self.so_pin_path)?;
        let user_pin = read_or_create_pin(&self.user_pin_path)?;
        initialise_token(pkcs11, slot, label, &so_pin, &user_pin)?;
        Ok(true)
    }
}

/// Where the Kryoptic library is looked for when neither `hsm.module` nor
/// `P11KMS_KRYOPTIC_MODULE` names it: next to the p11kms binary (both are built into
/// `target/release`), then `target/release` under the working directory, then the usual
/// library directories.
pub fn find_kryoptic_module() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // The binary itself, or a test binary in target/release/deps.
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join(KRYOPTIC_LIBRARY));
        }
    }
    candidates.push(Path::new("target/release").join(KRYOPTIC_LIBRARY));
    for dir in ["/usr/local/lib", "/usr/lib64/pkcs11", "/usr/lib/pkcs11"] {
        candidates.push(Path::new(dir).join(KRYOPTIC_LIBRARY));
    }
    candidates.into_iter().find(|p| p.is_file())
}
