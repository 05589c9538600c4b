//! Single-call `C_Encrypt`, `C_Decrypt`, `C_Sign` and `C_WrapKey` into pre-sized buffers, on
//! sessions that cryptoki opened.
//!
//! cryptoki 0.12 runs every output-producing call twice: once with a NULL buffer to learn the
//! output length, then for real. SoftHSM2 runs the whole wrap for the length query, and on a
//! network HSM each call is a round trip of 0.5–2 ms. p11kms knows every output length in
//! its hot paths in advance (GCM adds 16 bytes; KWP of n bytes gives ceil(n/8)*8+8; OAEP
//! gives the modulus length), or a safe upper bound of it, so one call into a buffer of that
//! size does the job.
//!
//! cryptoki does not expose its function list, so [`DirectModule::load`] loads the same
//! module path again. `dlopen` of a loaded path returns the same instance, so the module's
//! state (initialisation, sessions, objects) is shared, and a shim in front of the token
//! (pkcs11-spy, tools/pkcs11-delay) sees these calls like cryptoki's. The function list is
//! taken the way cryptoki takes it: the default interface of `C_GetInterface` when it is a
//! 3.x list, `C_GetFunctionList` otherwise.
//!
//! Why `unsafe` here rather than in p11kms (which forbids it): the raw calls are FFI, and no
//! safe crate offers them without the length query. This crate confines the FFI to
//! [`DirectModule::single_part`] and [`DirectModule::wrap_key`], each of which hands the
//! module only pointers into buffers it owns for the call (input slice, output `Vec`,
//! mechanism struct built from a borrowed cryptoki `Mechanism`, so its parameters such as a
//! GCM IV and AAD outlive the call). The session is a `&cryptoki::session::Session`, which is
//! not `Sync`: one thread uses it at a time, as PKCS#11 requires.
//!
//! A buffer the module finds too small (`CKR_BUFFER_TOO_SMALL`) is never truncated: the
//! operation continues on cryptoki's protocol (a length query, then the call), so a wrong
//! guess costs calls, never bytes. Errors are cryptoki's own `Error::Pkcs11(rv, function)`,
//! so every mapping of cryptoki errors applies unchanged.

// A panic here would be a bug: failures are cryptoki errors. Unit tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::ffi::OsStr;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki::context::Function;
use cryptoki::error::{Error, Result, Rv, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki_sys::{
    CK_BYTE, CK_FUNCTION_LIST, CK_INTERFACE, CK_MECHANISM, CK_OBJECT_HANDLE, CK_RV,
    CK_SESSION_HANDLE, CK_ULONG,
};
use zeroize::Zeroize;

type InitFn = unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE) -> CK_RV;
type SinglePartFn = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    *mut CK_BYTE,
    CK_ULONG,
    *mut CK_BYTE,
    *mut CK_ULONG,
) -> CK_RV;
type WrapFn = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    *mut CK_MECHANISM,
    CK_OBJECT_HANDLE,
    CK_OBJECT_HANDLE,
    *mut CK_BYTE,
    *mut CK_ULONG,
) -> CK_RV;

/// Calls the module found a buffer too small for, in this process (every `DirectModule`).
static BUFFERS_TOO_SMALL: AtomicU64 = AtomicU64::new(0);

/// How many calls in this process met `CKR_BUFFER_TOO_SMALL` and took the longer way (a
/// length query and the call again): each is a guess of the output length that was wrong,
/// and on a network HSM two round trips more. Never decreases.
pub fn buffers_too_small() -> u64 {
    BUFFERS_TOO_SMALL.load(Ordering::Relaxed)
}

/// One single-part operation: its init and its call, with the names errors carry.
#[derive(Clone, Copy)]
struct Operation {
    init: InitFn,
    init_id: Function,
    call: SinglePartFn,
    call_id: Function,
}

/// The raw entry points of a PKCS#11 module that cryptoki has loaded from the same path.
pub struct DirectModule {
    /// Keeps the library loaded, so the function pointers below stay valid.
    _library: cryptoki_sys::Pkcs11,
    encrypt: Operation,
    decrypt: Operation,
    sign: Operation,
    wrap: WrapFn,
}

impl std::fmt::Debug for DirectModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectModule")
    }
}

impl DirectModule {
    /// Loads `path`, the module cryptoki loaded for the sessions this will be used with:
    /// every session passed in later must come from a cryptoki context on the same path, or
    /// its handle would name nothing (or another session) in this module. Fails (and callers
    /// keep cryptoki's path) if the module lacks an entry point.
    pub fn load(path: impl AsRef<OsStr>) -> Result<DirectModule> {
        // SAFETY: the same load cryptoki makes (libloading, the same flags); for a path
        // cryptoki already loaded, dlopen returns that instance and runs no initialiser again.
        let library = unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(Error::LibraryLoading)?;
        let list = function_list(&library)?;
        let missing = |name| Error::MissingSymbol(name);
        let op = |init: cryptoki_sys::CK_C_EncryptInit,
                  init_id,
                  call: cryptoki_sys::CK_C_Encrypt,
                  call_id,
                  names: (&'static str, &'static str)| {
            Ok::<_, Error>(Operation {
                init: init.ok_or(missing(names.0))?,
                init_id,
                call: call.ok_or(missing(names.1))?,
                call_id,
            })
        };
        Ok(DirectModule {
            encrypt: op(
                list.C_EncryptInit,
                Function::EncryptInit,
                list.C_Encrypt,
                Function::Encrypt,
                ("C_EncryptInit", "C_Encrypt"),
            )?,
            decrypt: op(
                list.C_DecryptInit,
                Function::DecryptInit,
                list.C_Decrypt,
                Function::Decrypt,
                ("C_DecryptInit", "C_Decrypt"),
            )?,
            sign: op(
                list.C_SignInit,
                Function::SignInit,
                list.C_Sign,
                Function::Sign,
                ("C_SignInit", "C_Sign"),
            )?,
            wrap: list.C_WrapKey.ok_or(missing("C_WrapKey"))?,
            _library: library,
        })
    }

    /// `C_EncryptInit` + one `C_Encrypt` into a buffer of `out_len` bytes (the exact output
    /// length or an upper bound of it).
    pub fn encrypt(
        &self,
        session: &Session,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
        out_len: usize,
    ) -> Result<Vec<u8>> {
        self.single_part(self.encrypt, session, mechanism, key, data, out_len)
    }

    /// `C_DecryptInit` + one `C_Decrypt` into a buffer of `out_len` bytes. Buffers dropped on
    /// the way are zeroised; the caller holds the plaintext in a zeroising type.
    pub fn decrypt(
        &self,
        session: &Session,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
        out_len: usize,
    ) -> Result<Vec<u8>> {
        self.single_part(self.decrypt, session, mechanism, key, data, out_len)
    }

    /// `C_SignInit` + one `C_Sign` into a buffer of `out_len` bytes.
    pub fn sign(
        &self,
        session: &Session,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
        out_len: usize,
    ) -> Result<Vec<u8>> {
        self.single_part(self.sign, session, mechanism, key, data, out_len)
    }

    /// One `C_WrapKey` into a buffer of `out_len` bytes; on `CKR_BUFFER_TOO_SMALL`, cryptoki's
    /// `wrap_key` (a length query, then the wrap).
    pub fn wrap_key(
        &self,
        session: &Session,
        mechanism: &Mechanism,
        wrapping: ObjectHandle,
        key: ObjectHandle,
        out_len: usize,
    ) -> Result<Vec<u8>> {
        let mut raw: CK_MECHANISM = mechanism.into();
        let mut out = vec![0u8; out_len.max(1)];
        let mut len = ck_len(out.len())?;
        // SAFETY: `raw` points into `mechanism`, borrowed for this call; `out` is `len` bytes
        // long and writable; the module writes at most `len` bytes and updates `len`.
        let rv = unsafe {
            (self.wrap)(
                session.handle(),
                &mut raw,
                wrapping.handle(),
                key.handle(),
                out.as_mut_ptr(),
                &mut len,
            )
        };
        match Rv::from(rv) {
            Rv::Error(RvError::BufferTooSmall) => {
                BUFFERS_TOO_SMALL.fetch_add(1, Ordering::Relaxed);
                session.wrap_key(mechanism, wrapping, key)
            }
            other => {
                other.into_result(Function::WrapKey)?;
                fit(out, len)
            }
        }
    }

    /// Init, then one call into `out_len` bytes. A too-small buffer leaves the operation
    /// active (PKCS#11 §5.2), so it continues with a length query and a call of that size;
    /// a module that ended it anyway gets the whole operation again on cryptoki's protocol.
    fn single_part(
        &self,
        op: Operation,
        session: &Session,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
        out_len: usize,
    ) -> Result<Vec<u8>> {
        let mut raw: CK_MECHANISM = mechanism.into();
        // SAFETY: `raw` and the parameters it points to (borrowed from `mechanism`) outlive
        // the call; the module copies what it keeps of them (PKCS#11 §5.2).
        let rv = unsafe { (op.init)(session.handle(), &mut raw, key.handle()) };
        Rv::from(rv).into_result(op.init_id)?;
        match self.call(op, session, data, out_len) {
            Err(Error::Pkcs11(RvError::BufferTooSmall, _)) => {
                BUFFERS_TOO_SMALL.fetch_add(1, Ordering::Relaxed);
            }
            done => return done,
        }
        let mut needed: CK_ULONG = 0;
        // SAFETY: a NULL output asks only for the length, written to `needed`.
        let rv = unsafe {
            (op.call)(
                session.handle(),
                data.as_ptr().cast_mut(),
                ck_len(data.len())?,
                ptr::null_mut(),
                &mut needed,
            )
        };
        match Rv::from(rv) {
            Rv::Ok => self.call(op, session, data, rust_len(needed)?),
            Rv::Error(RvError::OperationNotInitialized) => {
                // SAFETY: as for the first init.
                let rv = unsafe { (op.init)(session.handle(), &mut raw, key.handle()) };
                Rv::from(rv).into_result(op.init_id)?;
                let mut needed: CK_ULONG = 0;
                // SAFETY: as above, a length query.
                let rv = unsafe {
                    (op.call)(
                        session.handle(),
                        data.as_ptr().cast_mut(),
                        ck_len(data.len())?,
                        ptr::null_mut(),
                        &mut needed,
                    )
                };
                Rv::from(rv).into_result(op.call_id)?;
                self.call(op, session, data, rust_len(needed)?)
            }
            Rv::Error(e) => Err(Error::Pkcs11(e, op.call_id)),
        }
    }

    /// One call of an initialised operation into a buffer of `out_len` bytes.
    fn call(
        &self,
        op: Operation,
        session: &Session,
        data: &[u8],
        out_len: usize,
    ) -> Result<Vec<u8>> {
        let mut out = vec![0u8; out_len.max(1)];
        let mut len = ck_len(out.len())?;
        // SAFETY: the module reads `data` (it does not write through the input pointer, which
        // PKCS#11 declares non-const only for C's sake) and writes at most `len` bytes of
        // `out`, then sets `len` to the output length.
        let rv = unsafe {
            (op.call)(
                session.handle(),
                data.as_ptr().cast_mut(),
                ck_len(data.len())?,
                out.as_mut_ptr(),
                &mut len,
            )
        };
        if let Err(e) = Rv::from(rv).into_result(op.call_id) {
            out.zeroize();
            return Err(e);
        }
        fit(out, len)
    }
}

/// `out` cut to the `len` bytes the module wrote; the rest (never written) is zeroised first.
/// A module that claims more than the buffer held is refused, never read past.
fn fit(mut out: Vec<u8>, len: CK_ULONG) -> Result<Vec<u8>> {
    let len = rust_len(len)?;
    if len > out.len() {
        out.zeroize();
        return Err(Error::InvalidValue);
    }
    out[len..].zeroize();
    out.truncate(len);
    Ok(out)
}

fn ck_len(len: usize) -> Result<CK_ULONG> {
    Ok(CK_ULONG::try_from(len)?)
}

fn rust_len(len: CK_ULONG) -> Result<usize> {
    Ok(usize::try_from(len)?)
}

/// The module's function list, chosen as cryptoki chooses it, so both reach the same entry
/// points. Only its PKCS#11 2.40 prefix is read, which the 3.x lists share.
fn function_list(library: &cryptoki_sys::Pkcs11) -> Result<CK_FUNCTION_LIST> {
    if library.C_GetInterface.is_ok() {
        let mut interface: *mut CK_INTERFACE = ptr::null_mut();
        // SAFETY: the default interface is requested; the module returns a pointer to a
        // static CK_INTERFACE or NULL.
        let rv =
            unsafe { library.C_GetInterface(ptr::null_mut(), ptr::null_mut(), &mut interface, 0) };
        Rv::from(rv).into_result(Function::GetInterface)?;
        if !interface.is_null() {
            // SAFETY: checked non-NULL; a CK_INTERFACE's list starts with the 2.40 layout.
            let list = unsafe { (*interface).pFunctionList as *const CK_FUNCTION_LIST };
            if !list.is_null() {
                // SAFETY: checked non-NULL; the module keeps the list for its lifetime.
                let list = unsafe { *list };
                if list.version.major >= 3 {
                    return Ok(list);
                }
            }
        }
    }
    if library.C_GetFunctionList.is_err() {
        return Err(Error::MissingSymbol("C_GetFunctionList"));
    }
    let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
    // SAFETY: the module writes a pointer to its static function list.
    let rv = unsafe { library.C_GetFunctionList(&mut list) };
    Rv::from(rv).into_result(Function::GetFunctionList)?;
    if list.is_null() {
        return Err(Error::NullFunctionPointer);
    }
    // SAFETY: checked non-NULL; the list lives as long as the loaded module.
    Ok(unsafe { *list })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_to_the_written_length_and_refuses_overlong_claims() {
        assert_eq!(fit(vec![1, 2, 3, 4], 2).unwrap(), vec![1, 2]);
        assert!(matches!(fit(vec![1, 2], 3), Err(Error::InvalidValue)));
    }

    #[test]
    fn a_module_that_is_not_there_fails_to_load() {
        assert!(matches!(
            DirectModule::load("/nonexistent/libnothing.so"),
            Err(Error::LibraryLoading(_))
        ));
    }
}
