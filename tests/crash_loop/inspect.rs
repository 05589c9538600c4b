//! Reading what the gateway left behind, from outside it: the material rows of the SQLite
//! file, the p11kms objects of the SoftHSM2 token, and the audit trail.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use rusqlite::{Connection, OpenFlags};

/// Label prefix of the token objects p11kms creates (`p11kms::hsm::OBJECT_LABEL_PREFIX`).
const LABEL_PREFIX: &[u8] = b"p11kms:";
const TOKEN_LABEL: &str = "p11kms";

/// Material ids (hex) of every row of `key_materials`.
pub fn store_materials(sqlite: &Path) -> Result<BTreeSet<String>, String> {
    let conn = Connection::open_with_flags(sqlite, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", sqlite.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT material_id FROM key_materials")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| e.to_string())
}

/// Keys and materials the store holds, for the summary.
pub fn store_counts(sqlite: &Path) -> Result<(u64, u64), String> {
    let conn = Connection::open_with_flags(sqlite, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", sqlite.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let count = |sql: &str| -> Result<u64, String> {
        conn.query_row(sql, [], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    };
    Ok((
        count("SELECT count(*) FROM keys")?,
        count("SELECT count(*) FROM key_materials")?,
    ))
}

/// The token as a fresh process sees it: the material ids (`CKA_ID`, hex) of every token
/// object labelled `p11kms:`. The library is initialised for this call and finalised when it
/// returns, so the object files are read from disk now. `SOFTHSM2_CONF` must name the data
/// directory's configuration (set once by the caller).
pub fn token_materials(module: &Path, pin: &str) -> Result<BTreeSet<String>, String> {
    let pkcs11 = Pkcs11::new(module).map_err(|e| format!("load {}: {e}", module.display()))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    let mut slot = None;
    for s in pkcs11
        .get_slots_with_token()
        .map_err(|e| format!("C_GetSlotList: {e}"))?
    {
        let info = pkcs11
            .get_token_info(s)
            .map_err(|e| format!("C_GetTokenInfo: {e}"))?;
        if info.token_initialized() && info.label().trim_end() == TOKEN_LABEL {
            slot = Some(s);
        }
    }
    let slot = slot.ok_or("no token labelled p11kms")?;
    let session = pkcs11
        .open_ro_session(slot)
        .map_err(|e| format!("C_OpenSession: {e}"))?;
    session
        .login(UserType::User, Some(&AuthPin::new(pin.into())))
        .map_err(|e| format!("C_Login: {e}"))?;
    let handles = session
        .find_objects(&[Attribute::Token(true)])
        .map_err(|e| format!("C_FindObjects: {e}"))?;
    let mut out = BTreeSet::new();
    for handle in handles {
        let attrs = match session.get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
        {
            Ok(attrs) => attrs,
            // Destroyed by the gateway since C_FindObjects (a deletion job's material).
            Err(cryptoki::error::Error::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
            Err(e) => return Err(format!("C_GetAttributeValue: {e}")),
        };
        let mut ours = false;
        let mut id = None;
        for attr in attrs {
            match attr {
                Attribute::Label(l) => ours = l.starts_with(LABEL_PREFIX),
                Attribute::Id(bytes) if bytes.len() == 32 => id = Some(hex::encode(bytes)),
                _ => {}
            }
        }
        if let (true, Some(id)) = (ours, id) {
            out.insert(id);
        }
    }
    let _ = session.logout();
    drop(session);
    pkcs11.finalize().map_err(|e| format!("C_Finalize: {e}"))?;
    Ok(out)
}

/// Object files in the token directories (SoftHSM2's file store: one `<uuid>.object` per
/// token object, beside each token's own `token.object`).
pub fn token_object_files(data_dir: &Path) -> usize {
    let Ok(tokens) = std::fs::read_dir(data_dir.join("tokens")) else {
        return 0;
    };
    tokens
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_dir(t.path()).ok())
        .flat_map(|dir| dir.filter_map(|e| e.ok()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".object") && name != "token.object"
        })
        .count()
}

/// How many token objects a fresh process sees (every object, p11kms's or not).
pub fn token_object_count(module: &Path, pin: &str) -> Result<usize, String> {
    let pkcs11 = Pkcs11::new(module).map_err(|e| format!("load {}: {e}", module.display()))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    let mut count = 0;
    for slot in pkcs11
        .get_slots_with_token()
        .map_err(|e| format!("C_GetSlotList: {e}"))?
    {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| format!("C_GetTokenInfo: {e}"))?;
        if !info.token_initialized() || info.label().trim_end() != TOKEN_LABEL {
            continue;
        }
        let session = pkcs11
            .open_ro_session(slot)
            .map_err(|e| format!("C_OpenSession: {e}"))?;
        session
            .login(UserType::User, Some(&AuthPin::new(pin.into())))
            .map_err(|e| format!("C_Login: {e}"))?;
        count += session
            .find_objects(&[Attribute::Token(true)])
            .map_err(|e| format!("C_FindObjects: {e}"))?
            .len();
        let _ = session.logout();
    }
    pkcs11.finalize().map_err(|e| format!("C_Finalize: {e}"))?;
    Ok(count)
}

/// The audit files in chain order: rotated files (`audit.log.<seq>`) by sequence, then
/// `audit.log`. Set-aside torn tails (`audit.log-torn-*`) are not part of the chain.
pub fn audit_files(data_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut rotated: Vec<(u64, PathBuf)> = std::fs::read_dir(data_dir)
        .map_err(|e| format!("read {}: {e}", data_dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let seq: u64 = name.strip_prefix("audit.log.")?.parse().ok()?;
            Some((seq, entry.path()))
        })
        .collect();
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = data_dir.join("audit.log");
    if current.exists() {
        files.push(current);
    }
    Ok(files)
}

/// Files set aside because the trail ended in a torn write.
pub fn torn_tails(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("audit.log-torn-")
                })
                .count()
        })
        .unwrap_or(0)
}

/// `p11kms audit verify FILES...`: Ok(its report line) when the chain holds.
pub fn audit_verify(binary: &Path, files: &[PathBuf]) -> Result<String, String> {
    if files.is_empty() {
        return Ok("no audit files".into());
    }
    let out = Command::new(binary)
        .args(["audit", "verify"])
        .args(files)
        .output()
        .map_err(|e| format!("cannot run p11kms audit verify: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text.trim().to_string())
    } else {
        Err(format!(
            "audit verify failed ({}): {}",
            out.status,
            text.trim()
        ))
    }
}

/// Request ids named in the given audit files.
pub fn audited_request_ids(files: &[PathBuf]) -> Result<HashSet<String>, String> {
    let mut ids = HashSet::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).map_err(|e| format!("read {}: {e}", file.display()))?;
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if let Some(id) = v["request_id"].as_str() {
                    ids.insert(id.to_string());
                }
            }
        }
    }
    Ok(ids)
}
