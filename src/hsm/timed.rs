//! A session that reports every PKCS#11 call it makes (function, CKR outcome, latency),
//! and stops making them once its operation's deadline has passed.
//!
//! The HSM code works on `TimedSession` rather than `cryptoki::Session` so that every call
//! is observed without a process-wide registry: the observer travels with the session.
//!
//! A PKCS#11 call cannot be interrupted, so the deadline cannot cut a call that hangs; it
//! stops the operation from making the next one. A call refused for the deadline fails
//! with `CKR_FUNCTION_CANCELED`, which the caller answers `DependencyTimeoutException`.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Result as CkResult, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use pkcs11_direct::DirectModule;

/// Receives one observation per PKCS#11 call.
pub trait CallObserver: Send + Sync {
    fn observe(&self, function: &'static str, outcome: &str, seconds: f64);
}

/// SoftHSM2 before 2.7 (upstream issue 573, fixed by its commit 07f0b98): a `C_FindObjects`
/// that runs while another session creates a token object can catch the object's file
/// empty and mark the object invalid, and the creation then fails with CKR_GENERAL_ERROR.
/// On such a library a token object's creation excludes finds; finds share.
#[derive(Default)]
pub struct ObjectScanLock(RwLock<()>);

impl ObjectScanLock {
    /// Whether `pkcs11` is a library with that race: SoftHSM2 older than 2.7.
    pub fn needed_by(pkcs11: &cryptoki::context::Pkcs11) -> bool {
        pkcs11.get_library_info().is_ok_and(|info| {
            let version = info.library_version();
            info.manufacturer_id().trim_end() == "SoftHSM"
                && (version.major(), version.minor()) < (2, 7)
        })
    }

    fn creating(&self) -> RwLockWriteGuard<'_, ()> {
        if let Ok(guard) = self.0.try_write() {
            return guard;
        }
        CREATIONS_WAITED.fetch_add(1, Ordering::Relaxed);
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    fn scanning(&self) -> RwLockReadGuard<'_, ()> {
        if let Ok(guard) = self.0.try_read() {
            return guard;
        }
        SEARCHES_WAITED.fetch_add(1, Ordering::Relaxed);
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// How many searches and token-object creations had to wait for the other kind, in
    /// this process (every library initialisation): the price of the workaround.
    pub fn waits() -> ObjectScanWaits {
        ObjectScanWaits {
            searches: SEARCHES_WAITED.load(Ordering::Relaxed),
            creations: CREATIONS_WAITED.load(Ordering::Relaxed),
        }
    }
}

static SEARCHES_WAITED: AtomicU64 = AtomicU64::new(0);
static CREATIONS_WAITED: AtomicU64 = AtomicU64::new(0);

/// See [`ObjectScanLock::waits`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectScanWaits {
    pub searches: u64,
    pub creations: u64,
}

/// Whether a template makes a token object: `CKA_TOKEN` defaults to false, except for a
/// copy, which keeps its source's (`inherits` true).
fn makes_token_object(template: &[Attribute], inherits: bool) -> bool {
    template
        .iter()
        .find_map(|a| match a {
            Attribute::Token(token) => Some(*token),
            _ => None,
        })
        .unwrap_or(inherits)
}

pub struct TimedSession<'a> {
    session: &'a Session,
    observer: Option<&'a dyn CallObserver>,
    deadline: Option<Instant>,
    /// Single-call entry points of the same module (`pkcs11_direct`); without them the
    /// `*_sized` calls take cryptoki's path (a length query first).
    direct: Option<&'a DirectModule>,
    /// Set on a library whose finds race token-object creation ([`ObjectScanLock`]).
    scans: Option<&'a ObjectScanLock>,
    /// The count of transient objects left to this session, on a pool that sweeps (see
    /// `pool.rs`); `None`: transient objects are destroyed one by one.
    left: Option<&'a Cell<u32>>,
}

impl<'a> TimedSession<'a> {
    pub fn new(session: &'a Session, observer: Option<&'a dyn CallObserver>) -> Self {
        TimedSession {
            session,
            observer,
            deadline: None,
            direct: None,
            scans: None,
            left: None,
        }
    }

    /// Leaves transient objects to the session, counted in `left` (a pool that sweeps).
    pub(super) fn with_sweep(mut self, left: Option<&'a Cell<u32>>) -> Self {
        self.left = left;
        self
    }

    /// Leaves a transient object to be destroyed with the session instead of now; false
    /// when this session's objects are destroyed one by one.
    pub(super) fn leave_to_sweep(&self) -> bool {
        match self.left {
            Some(left) => {
                left.set(left.get().saturating_add(1));
                true
            }
            None => false,
        }
    }

    /// Keeps finds and token-object creations apart through `scans` (see [`ObjectScanLock`]).
    pub fn with_object_scans(mut self, scans: Option<&'a ObjectScanLock>) -> Self {
        self.scans = scans;
        self
    }

    /// Held across one call that makes a token object, when the library needs it.
    fn creation_guard(
        &self,
        template: &[Attribute],
        inherits: bool,
    ) -> Option<RwLockWriteGuard<'a, ()>> {
        let scans = self.scans?;
        makes_token_object(template, inherits).then(|| scans.creating())
    }

    /// Makes the `*_sized` calls single calls through `direct`, which must be the module
    /// this session's cryptoki context loaded (same path).
    pub fn with_direct(mut self, direct: Option<&'a DirectModule>) -> Self {
        self.direct = direct;
        self
    }

    /// No call starts after `deadline`.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Whether the operation's deadline has passed: its calls are refused now.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Runs one PKCS#11 call and reports it; refuses it once the deadline has passed.
    fn call<T>(
        &self,
        function: &'static str,
        id: Function,
        call: impl FnOnce(&Session) -> CkResult<T>,
    ) -> CkResult<T> {
        if self.expired() {
            return Err(CkError::Pkcs11(RvError::FunctionCanceled, id));
        }
        let Some(observer) = self.observer else {
            return call(self.session);
        };
        let started = Instant::now();
        let result = call(self.session);
        let outcome: Cow<'static, str> = match &result {
            Ok(_) => Cow::Borrowed("CKR_OK"),
            Err(CkError::Pkcs11(rv, _)) => Cow::Owned(super::error::ckr_name(*rv)),
            Err(_) => Cow::Borrowed("error"),
        };
        observer.observe(function, &outcome, started.elapsed().as_secs_f64());
        result
    }

    pub fn generate_random_slice(&self, out: &mut [u8]) -> CkResult<()> {
        self.call("C_GenerateRandom", Function::GenerateRandom, |s| {
            s.generate_random_slice(out)
        })
    }

    pub fn generate_key(
        &self,
        mechanism: &Mechanism,
        template: &[Attribute],
    ) -> CkResult<ObjectHandle> {
        let _creating = self.creation_guard(template, false);
        self.call("C_GenerateKey", Function::GenerateKey, |s| {
            s.generate_key(mechanism, template)
        })
    }

    pub fn derive_key(
        &self,
        mechanism: &Mechanism,
        base: ObjectHandle,
        template: &[Attribute],
    ) -> CkResult<ObjectHandle> {
        let _creating = self.creation_guard(template, false);
        self.call("C_DeriveKey", Function::DeriveKey, |s| {
            s.derive_key(mechanism, base, template)
        })
    }

    pub fn wrap_key(
        &self,
        mechanism: &Mechanism,
        wrapping: ObjectHandle,
        key: ObjectHandle,
    ) -> CkResult<Vec<u8>> {
        self.call("C_WrapKey", Function::WrapKey, |s| {
            s.wrap_key(mechanism, wrapping, key)
        })
    }

    /// `wrap_key` in one `C_WrapKey` into `out_len` bytes (the exact output length or an
    /// upper bound of it; a token that needs more gets cryptoki's path, never truncation).
    pub fn wrap_key_sized(
        &self,
        mechanism: &Mechanism,
        wrapping: ObjectHandle,
        key: ObjectHandle,
        out_len: usize,
    ) -> CkResult<Vec<u8>> {
        self.call("C_WrapKey", Function::WrapKey, |s| match self.direct {
            Some(direct) => direct.wrap_key(s, mechanism, wrapping, key, out_len),
            None => s.wrap_key(mechanism, wrapping, key),
        })
    }

    pub fn unwrap_key(
        &self,
        mechanism: &Mechanism,
        unwrapping: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> CkResult<ObjectHandle> {
        let _creating = self.creation_guard(template, false);
        self.call("C_UnwrapKey", Function::UnwrapKey, |s| {
            s.unwrap_key(mechanism, unwrapping, wrapped, template)
        })
    }

    pub fn encrypt(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
    ) -> CkResult<Vec<u8>> {
        self.call("C_Encrypt", Function::Encrypt, |s| {
            s.encrypt(mechanism, key, data)
        })
    }

    pub fn decrypt(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
    ) -> CkResult<Vec<u8>> {
        self.call("C_Decrypt", Function::Decrypt, |s| {
            s.decrypt(mechanism, key, data)
        })
    }

    /// `encrypt` with one `C_Encrypt` into `out_len` bytes (see [`Self::wrap_key_sized`]).
    pub fn encrypt_sized(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
        out_len: usize,
    ) -> CkResult<Vec<u8>> {
        self.call("C_Encrypt", Function::Encrypt, |s| match self.direct {
            Some(direct) => direct.encrypt(s, mechanism, key, data, out_len),
            None => s.encrypt(mechanism, key, data),
        })
    }

    /// `decrypt` with one `C_Decrypt` into `out_len` bytes (see [`Self::wrap_key_sized`]).
    pub fn decrypt_sized(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
        out_len: usize,
    ) -> CkResult<Vec<u8>> {
        self.call("C_Decrypt", Function::Decrypt, |s| match self.direct {
            Some(direct) => direct.decrypt(s, mechanism, key, data, out_len),
            None => s.decrypt(mechanism, key, data),
        })
    }

    /// `sign` with one `C_Sign` into `out_len` bytes (see [`Self::wrap_key_sized`]).
    pub fn sign_sized(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
        out_len: usize,
    ) -> CkResult<Vec<u8>> {
        self.call("C_Sign", Function::Sign, |s| match self.direct {
            Some(direct) => direct.sign(s, mechanism, key, data, out_len),
            None => s.sign(mechanism, key, data),
        })
    }

    pub fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: &[Attribute],
        private: &[Attribute],
    ) -> CkResult<(ObjectHandle, ObjectHandle)> {
        let _creating = self
            .creation_guard(public, false)
            .or_else(|| self.creation_guard(private, false));
        self.call("C_GenerateKeyPair", Function::GenerateKeyPair, |s| {
            s.generate_key_pair(mechanism, public, private)
        })
    }

    pub fn sign(&self, mechanism: &Mechanism, key: ObjectHandle, data: &[u8]) -> CkResult<Vec<u8>> {
        self.call("C_Sign", Function::Sign, |s| s.sign(mechanism, key, data))
    }

    pub fn verify(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
        signature: &[u8],
    ) -> CkResult<()> {
        self.call("C_Verify", Function::Verify, |s| {
            s.verify(mechanism, key, data, signature)
        })
    }

    pub fn copy_object(
        &self,
        object: ObjectHandle,
        template: &[Attribute],
    ) -> CkResult<ObjectHandle> {
        let _creating = self.creation_guard(template, true);
        self.call("C_CopyObject", Function::CopyObject, |s| {
            s.copy_object(object, template)
        })
    }

    pub fn create_object(&self, template: &[Attribute]) -> CkResult<ObjectHandle> {
        let _creating = self.creation_guard(template, false);
        self.call("C_CreateObject", Function::CreateObject, |s| {
            s.create_object(template)
        })
    }

    pub fn find_objects(&self, template: &[Attribute]) -> CkResult<Vec<ObjectHandle>> {
        let _scanning = self.scans.map(ObjectScanLock::scanning);
        self.call("C_FindObjects", Function::FindObjectsInit, |s| {
            s.find_objects(template)
        })
    }

    pub fn get_attributes(
        &self,
        object: ObjectHandle,
        attributes: &[AttributeType],
    ) -> CkResult<Vec<Attribute>> {
        self.call("C_GetAttributeValue", Function::GetAttributeValue, |s| {
            s.get_attributes(object, attributes)
        })
    }

    pub fn destroy_object(&self, object: ObjectHandle) -> CkResult<()> {
        self.call("C_DestroyObject", Function::DestroyObject, |s| {
            s.destroy_object(object)
        })
    }

    /// The plain session, for calls that are not worth observing (login at start-up).
    pub fn raw(&self) -> &Session {
        self.session
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_makes_a_token_object_only_when_it_says_so_or_its_source_is_one() {
        let token = [Attribute::Sensitive(true), Attribute::Token(true)];
        let session = [Attribute::Token(false), Attribute::Sensitive(true)];
        let silent = [Attribute::Sensitive(true)];
        for inherits in [false, true] {
            assert!(makes_token_object(&token, inherits));
            assert!(!makes_token_object(&session, inherits));
        }
        // CKA_TOKEN defaults to false for a new object; a copy keeps its source's.
        assert!(!makes_token_object(&silent, false));
        assert!(makes_token_object(&silent, true));
    }

    #[test]
    fn creations_exclude_searches_and_searches_share() {
        let lock = ObjectScanLock::default();
        let first = lock.scanning();
        let second = lock.scanning();
        assert!(
            lock.0.try_write().is_err(),
            "a creation ran beside a search"
        );
        drop((first, second));
        let creating = lock.creating();
        assert!(lock.0.try_read().is_err(), "a search ran beside a creation");
        drop(creating);
    }
}
