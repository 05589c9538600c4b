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

use super::{find_token, initialise, ProvisionError};
use crate::file_error::FileError;

/// Where SoftHSM2 keeps its library on Debian and elsewhere.
pub const SOFTHSM_MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

/// Under the data directory: a copy of each token's `token.object` (see
/// [`EmbeddedSoftHsm::keep_token_files`]).
const TOKEN_FILE_COPIES: &str = "token-copies";
/// The file in which SoftHSM2's file object store keeps a token's label, PIN blobs and flags.
const TOKEN_FILE: &str = "token.object";

/// A SoftHSM2 configuration under the data directory.
pub struct EmbeddedSoftHsm {
    pub conf_path: PathBuf,
    pub user_pin_path: PathBuf,
    so_pin_path: PathBuf,
    token_dir: PathBuf,
    copies_dir: PathBuf,
}

impl EmbeddedSoftHsm {
    /// Writes `softhsm2.conf` and the token directory if missing, and repairs token files
    /// torn by a crash ([`EmbeddedSoftHsm::keep_token_files`]). The caller must export
    /// `SOFTHSM2_CONF` before the module is loaded.
    pub fn prepare(data_dir: &Path) -> Result<Self, ProvisionError> {
        let token_dir = data_dir.join("tokens");
        fs::create_dir_all(&token_dir).map_err(FileError::on("create", &token_dir))?;
        let _ = fs::set_permissions(&token_dir, fs::Permissions::from_mode(0o700));
        let conf_path = data_dir.join("softhsm2.conf");
        if !conf_path.exists() {
            let token_dir = token_dir
                .canonicalize()
                .map_err(FileError::on("resolve", &token_dir))?;
            let text = format!(
                "# Written by p11kms for its embedded SoftHSM2 token.\n\
                 directories.tokendir = {}\n\
                 objectstore.backend = file\n\
                 log.level = ERROR\n\
                 slots.removable = false\n",
                token_dir.display()
            );
            fs::write(&conf_path, text).map_err(FileError::on("write", &conf_path))?;
        }
        let embedded = EmbeddedSoftHsm {
            conf_path,
            user_pin_path: data_dir.join("user.pin"),
            so_pin_path: data_dir.join("so.pin"),
            token_dir,
            copies_dir: data_dir.join(TOKEN_FILE_COPIES),
        };
        for repaired in embedded.repair_token_files()? {
            tracing::warn!(
                file = %repaired.display(),
                "the token file was torn by a crash during a PKCS#11 login; it was put back from the copy taken at the last start"
            );
        }
        let removed = embedded.remove_unfinished_objects()?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed empty token object files left by a crash during an object's creation"
            );
        }
        Ok(embedded)
    }

    /// SoftHSM2's file store creates a token object's file empty and writes its attributes
    /// when the object is complete; a process killed in between leaves an empty `<id>.object`
    /// (and its `.lock`). Such a file holds no key and no attribute, SoftHSM2 skips it, and
    /// no store row names it (a key's row is written only after its object is complete), but
    /// every crash during a key creation or rotation would leave one more. They are removed
    /// here, before the library is loaded; the token directory belongs to this gateway alone.
    fn remove_unfinished_objects(&self) -> Result<usize, ProvisionError> {
        let mut removed = 0;
        for token in self.token_directories()? {
            let entries = fs::read_dir(&token).map_err(FileError::on("read", &token))?;
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let empty = entry.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
                if name == TOKEN_FILE || !name.ends_with(".object") || !empty {
                    continue;
                }
                fs::remove_file(&path).map_err(FileError::on("remove", &path))?;
                let _ = fs::remove_file(path.with_extension("lock"));
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The token directories SoftHSM2 made (one per token), each holding a `token.object`.
    fn token_directories(&self) -> Result<Vec<PathBuf>, ProvisionError> {
        let entries =
            fs::read_dir(&self.token_dir).map_err(FileError::on("read", &self.token_dir))?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .filter(|path| path.join(TOKEN_FILE).exists())
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    fn copy_of(&self, token: &Path) -> Option<PathBuf> {
        token
            .file_name()
            .map(|name| self.copies_dir.join(name).with_extension(TOKEN_FILE))
    }

    /// SoftHSM2's file object store rewrites a token's `token.object` in place (truncate,
    /// then write) at every successful `C_Login`, to store the PIN-count flags. A process
    /// killed inside that window leaves the file empty or short; SoftHSM2 then no longer
    /// lists the token, and every key in it is out of reach. The gateway keeps a copy of
    /// each token's file ([`EmbeddedSoftHsm::keep_token_files`]); here, before the library
    /// is loaded, a file shorter than its copy is put back from it (the rewrite writes the
    /// same attributes at the same sizes, so a whole file is never shorter). The copy may
    /// hold older PIN-count flags, which only say whether the last login failed. Returns the
    /// files repaired.
    fn repair_token_files(&self) -> Result<Vec<PathBuf>, ProvisionError> {
        let mut repaired = Vec::new();
        for token in self.token_directories()? {
            let Some(copy) = self.copy_of(&token) else {
                continue;
            };
            let Ok(kept) = fs::read(&copy) else {
                continue;
            };
            let file = token.join(TOKEN_FILE);
            let len = fs::metadata(&file)
                .map_err(FileError::on("read", &file))?
                .len();
            if len < kept.len() as u64 {
                write_synced(&file, &kept)?;
                repaired.push(file);
            }
        }
        Ok(repaired)
    }

    /// Copies each token's `token.object` aside, for [`EmbeddedSoftHsm::repair_token_files`].
    /// Call it after the gateway has logged in and before anything else can log in: the file
    /// is whole then, since SoftHSM2 finished rewriting it before `C_Login` returned. The copy
    /// is written to a temporary file, synced and renamed, so it is never torn itself.
    pub fn keep_token_files(&self) -> Result<(), ProvisionError> {
        fs::create_dir_all(&self.copies_dir).map_err(FileError::on("create", &self.copies_dir))?;
        let _ = fs::set_permissions(&self.copies_dir, fs::Permissions::from_mode(0o700));
        for token in self.token_directories()? {
            let Some(copy) = self.copy_of(&token) else {
                continue;
            };
            let file = token.join(TOKEN_FILE);
            let bytes = fs::read(&file).map_err(FileError::on("read", &file))?;
            if fs::read(&copy).is_ok_and(|kept| kept == bytes) {
                continue;
            }
            let temporary = copy.with_extension("tmp");
            write_synced(&temporary, &bytes)?;
            fs::rename(&temporary, &copy).map_err(FileError::on("rename", &copy))?;
            if let Ok(dir) = fs::File::open(&self.copies_dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    /// The SO PIN file written when the token was initialised (the ceremony's `enrol`
    /// reads it to create a trusted key; it is never generated here).
    pub fn so_pin_path(&self) -> &Path {
        &self.so_pin_path
    }

    /// The user PIN, generated on first start.
    pub fn user_pin(&self) -> Result<SecretString, ProvisionError> {
        read_or_create_pin(&self.user_pin_path)
    }

    /// Initialises a token labelled `label` through PKCS#11 unless one exists.
    /// Returns whether a token was created.
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
        // A token SoftHSM2 cannot read any more (a damaged token file) must never be replaced
        // by a new, empty one: its keys would be gone without a word. Only an operator can
        // decide what to do with it.
        let directories = self.token_directories()?;
        let readable = pkcs11
            .get_slots_with_token()
            .map_err(ProvisionError::call("C_GetSlotList"))?
            .into_iter()
            .filter(|slot| {
                pkcs11
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.token_initialized())
            })
            .count();
        if readable < directories.len() {
            return Err(ProvisionError::DamagedToken {
                token_dir: self.token_dir.clone(),
                copies_dir: self.copies_dir.clone(),
                directories: directories.len(),
                readable,
                label: label.into(),
            });
        }
        let so_pin = read_or_create_pin(&self.so_pin_path)?;
        let user_pin = self.user_pin()?;
        let slots = pkcs11
            .get_all_slots()
            .map_err(ProvisionError::call("C_GetSlotList"))?;
        let free = slots
            .into_iter()
            .find(|slot| {
                pkcs11
                    .get_token_info(*slot)
                    .map(|info| !info.token_initialized())
                    .unwrap_or(false)
            })
            .ok_or(ProvisionError::NoFreeSlot)?;
        initialise_token(pkcs11, free, label, &so_pin, &user_pin)?;
        Ok(true)
    }
}

/// Runs `f` on the PKCS#11 library `module`, initialised for it alone, and finalises the
/// library afterwards, leaving it as it was found: the gateway initialises it again for real.
pub(super) fn with_library<T>(
    module: &Path,
    f: impl FnOnce(&cryptoki::context::Pkcs11) -> Result<T, ProvisionError>,
) -> Result<T, ProvisionError> {
    let pkcs11 = initialise(module).map_err(ProvisionError::Library)?;
    let result = f(&pkcs11);
    let _ = pkcs11.finalize();
    result
}

/// `C_InitToken` on `slot` with the SO PIN, then `C_InitPIN` for the user PIN, as an operator
/// would with a real HSM's tools.
pub(super) fn initialise_token(
    pkcs11: &cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<(), ProvisionError> {
    let so = AuthPin::new(so_pin.expose_secret().into());
    pkcs11
        .init_token(slot, &so, label)
        .map_err(ProvisionError::call("C_InitToken"))?;
    // SoftHSM renumbers slots after C_InitToken: look the token up again by label.
    let slot = find_token(pkcs11, label).map_err(ProvisionError::Library)?;
    let session = pkcs11
        .open_rw_session(slot)
        .map_err(ProvisionError::call("C_OpenSession"))?;
    session
        .login(UserType::So, Some(&so))
        .map_err(ProvisionError::call("C_Login(SO)"))?;
    session
        .init_pin(&AuthPin::new(user_pin.expose_secret().into()))
        .map_err(ProvisionError::call("C_InitPIN"))?;
    let _ = session.logout();
    Ok(())
}

/// Writes `bytes` to `path` (mode 0600) and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    let fail = |e: std::io::Error| ProvisionError::from(FileError::on("write", path)(e));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// The first SoftHSM2 library found on this machine.
pub fn find_softhsm_module() -> Option<PathBuf> {
    SOFTHSM_MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

pub(super) fn read_or_create_pin(path: &Path) -> Result<SecretString, ProvisionError> {
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
        .map_err(FileError::on("create", path))?;
    file.write_all(pin.as_bytes())
        .map_err(FileError::on("write", path))?;
    Ok(SecretString::from(pin))
}
