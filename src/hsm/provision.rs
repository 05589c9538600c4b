//! The embedded default: a SoftHSM2 token the gateway creates and configures for itself.
//!
//! Everything lives under the data directory: `softhsm2.conf`, the token directory and the
//! PIN files (mode 0600). The token is initialised through PKCS#11 (`C_InitToken`,
//! `C_InitPIN`), exactly as an operator would with a real HSM's tools.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};

use super::{find_token, initialise};

/// Where SoftHSM2 keeps its library on Debian and elsewhere.
pub const SOFTHSM_MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

/// A SoftHSM2 configuration under the data directory.
pub struct EmbeddedSoftHsm {
    pub conf_path: PathBuf,
    pub user_pin_path: PathBuf,
    so_pin_path: PathBuf,
}

impl EmbeddedSoftHsm {
    /// Writes `softhsm2.conf` and the token directory if missing. The caller must export
    /// `SOFTHSM2_CONF` before the module is loaded.
    pub fn prepare(data_dir: &Path) -> Result<Self, String> {
        let token_dir = data_dir.join("tokens");
        fs::create_dir_all(&token_dir)
            .map_err(|e| format!("cannot create {}: {e}", token_dir.display()))?;
        let _ = fs::set_permissions(&token_dir, fs::Permissions::from_mode(0o700));
        let conf_path = data_dir.join("softhsm2.conf");
        if !conf_path.exists() {
            let token_dir = token_dir
                .canonicalize()
                .map_err(|e| format!("cannot resolve {}: {e}", token_dir.display()))?;
            let text = format!(
                "# Written by p11kms for its embedded SoftHSM2 token.\n\
                 directories.tokendir = {}\n\
                 objectstore.backend = file\n\
                 log.level = ERROR\n\
                 slots.removable = false\n",
                token_dir.display()
            );
            fs::write(&conf_path, text)
                .map_err(|e| format!("cannot write {}: {e}", conf_path.display()))?;
        }
        Ok(EmbeddedSoftHsm {
            conf_path,
            user_pin_path: data_dir.join("user.pin"),
            so_pin_path: data_dir.join("so.pin"),
        })
    }

    /// The user PIN, generated on first start.
    pub fn user_pin(&self) -> Result<SecretString, String> {
        read_or_create_pin(&self.user_pin_path)
    }

    /// Initialises a token labelled `label` through PKCS#11 unless one exists.
    /// Returns whether a token was created.
    pub fn ensure_token(&self, module: &Path, label: &str) -> Result<bool, String> {
        let pkcs11 = initialise(module).map_err(|e| e.to_string())?;
        let result = self.ensure_token_with(&pkcs11, label);
        // Leave the library as we found it: the gateway initialises it again for real.
        let _ = pkcs11.finalize();
        result
    }

    fn ensure_token_with(
        &self,
        pkcs11: &cryptoki::context::Pkcs11,
        label: &str,
    ) -> Result<bool, String> {
        if find_token(pkcs11, label).is_ok() {
            return Ok(false);
        }
        let so_pin = read_or_create_pin(&self.so_pin_path)?;
        let user_pin = self.user_pin()?;
        let slots = pkcs11
            .get_all_slots()
            .map_err(|e| format!("C_GetSlotList: {e}"))?;
        let free = slots
            .into_iter()
            .find(|slot| {
                pkcs11
                    .get_token_info(*slot)
                    .map(|info| !info.token_initialized())
                    .unwrap_or(false)
            })
            .ok_or("SoftHSM2 offers no free slot for a new token")?;
        let so = AuthPin::new(so_pin.expose_secret().into());
        pkcs11
            .init_token(free, &so, label)
            .map_err(|e| format!("C_InitToken: {}", super::HsmError::from(e)))?;
        // SoftHSM renumbers slots after C_InitToken: look the token up again by label.
        let slot = find_token(pkcs11, label).map_err(|e| e.to_string())?;
        let session = pkcs11
            .open_rw_session(slot)
            .map_err(|e| format!("C_OpenSession: {}", super::HsmError::from(e)))?;
        session
            .login(UserType::So, Some(&so))
            .map_err(|e| format!("C_Login(SO): {}", super::HsmError::from(e)))?;
        session
            .init_pin(&AuthPin::new(user_pin.expose_secret().into()))
            .map_err(|e| format!("C_InitPIN: {}", super::HsmError::from(e)))?;
        let _ = session.logout();
        Ok(true)
    }
}

/// The first SoftHSM2 library found on this machine.
pub fn find_softhsm_module() -> Option<PathBuf> {
    SOFTHSM_MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn read_or_create_pin(path: &Path) -> Result<SecretString, String> {
    if let Ok(text) = fs::read_to_string(path) {
        let pin = text.trim().to_string();
        if !pin.is_empty() {
            return Ok(SecretString::from(pin));
        }
    }
    let pin = hex::encode(rand::random::<[u8; 16]>());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(pin.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(SecretString::from(pin))
}
