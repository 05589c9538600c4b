//! The library's life: opening the token, losing it, reinitialising it with backoff, and
//! the planned recycle. A [`Token`] is one initialised library with its logged-in session
//! pools; the [`Hsm`] swaps it for a fresh one when it is lost.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::pool::{AcquireError, SessionPool};
use super::{Half, Hsm, HsmConfig, HsmError, ProviderError, Scope};
use crate::model::MaterialId;

/// How long to wait between attempts to bring a lost token back.
const REINIT_BACKOFF: Duration = Duration::from_secs(1);

/// One initialised library with its logged-in sessions.
pub(super) struct Token {
    pub(super) pkcs11: Pkcs11,
    pub(super) slot: Slot,
    pub(super) pool: SessionPool,
    /// One session of its own for key-pair generation, which can take seconds (RSA 4096
    /// on SoftHSM2): it never holds a session that requests are waiting for.
    pub(super) key_pairs: SessionPool,
    pub(super) materials: RwLock<HashMap<(MaterialId, Half), ObjectHandle>>,
    /// The session that owns the session copies of secret keys (`HsmConfig::session_key_copies`),
    /// used for nothing else so that no request's failure closes it.
    pub(super) copy_owner: SessionPool,
    /// The live session copy of each material, so that it can be destroyed with it. Held
    /// while a copy is made, so two requests never copy the same material at once.
    pub(super) copies: Mutex<HashMap<MaterialId, ObjectHandle>>,
    /// Domain mode's unwrapped materials: session objects of `copy_owner`, so they live
    /// exactly as long as this library initialisation.
    pub(super) domain: Mutex<super::domain::DomainCache>,
    /// Context keys of schemes 2 and 3 (session objects of `copy_owner`).
    pub(super) context_keys: Mutex<super::context_keys::ContextKeys>,
    /// The same module's raw entry points, for single-call encrypt, decrypt, sign and wrap;
    /// `None` (cryptoki's two calls) if they could not be loaded.
    pub(super) direct: Option<pkcs11_direct::DirectModule>,
    /// `Some` on a library whose finds race token-object creation (SoftHSM2 before 2.7).
    pub(super) object_scans: Option<super::timed::ObjectScanLock>,
}

impl<M> Hsm<M> {
    pub(super) fn recover(&self, token: &Arc<Token>, error: &HsmError) {
        match error.scope {
            Scope::Object => {
                token.materials_mut().clear();
                // A context key may have died with its owner session too.
                let stale = token.context_keys().clear();
                self.destroy_context_keys(token, &stale);
            }
            Scope::Token => {
                tracing::error!(function = %error.function, rv = %error.rv, "HSM token lost; reinitialising");
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, token)) {
                    *self.retired.lock().unwrap_or_else(|p| p.into_inner()) = current.take();
                }
            }
            Scope::Data | Scope::Session => {}
        }
    }

    pub(super) fn current_token(&self) -> Option<Arc<Token>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current token, reopening a lost one with backoff.
    pub(super) fn token(&self) -> Result<Arc<Token>, ProviderError> {
        let limit = self.config.recycle_after_operations;
        if limit > 0 && self.operations.load(Ordering::Relaxed) >= limit {
            self.recycle();
        }
        if let Some(token) = self.current_token() {
            return Ok(token);
        }
        if let Some(token) = self.wait_for_recycle() {
            return Ok(token);
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(ProviderError::token_unavailable(
                "C_Finalize",
                "the gateway is shutting down",
            ));
        }
        let unavailable =
            || ProviderError::token_unavailable("C_Initialize", "token not yet reinitialised");
        let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = self.current_token() {
            return Ok(token);
        }
        if last.is_some_and(|t| t.elapsed() < REINIT_BACKOFF) {
            return Err(unavailable());
        }
        {
            // Requests still on the lost token finish (or fail) first. Waiting for them is
            // not an attempt: the backoff is for opens that failed, and starting it here
            // kept a token whose fault had passed in milliseconds away for a whole second.
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = retired.take() {
                match Arc::try_unwrap(old) {
                    Ok(old) => old.finalize(),
                    Err(in_use) => {
                        *retired = Some(in_use);
                        return Err(unavailable());
                    }
                }
            }
        }
        *last = Some(Instant::now());
        match Token::open(&self.config) {
            Ok(token) => {
                let token = Arc::new(token);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
                self.reinitialisations.fetch_add(1, Ordering::Relaxed);
                tracing::info!("HSM token reinitialised");
                Ok(token)
            }
            Err(e) => {
                tracing::warn!(function = %e.function, rv = %e.rv, "HSM still unavailable");
                Err(ProviderError::token_unavailable(&e.function, &e.rv))
            }
        }
    }
}

impl<M> Hsm<M> {
    /// The planned recycle: take the token out of service, let the requests holding it
    /// finish (new ones wait in `wait_for_recycle`), then `C_Finalize` and open it again.
    /// If requests still hold it after the session deadline, it goes back into service
    /// and the recycle is tried again later. One thread recycles; the others carry on.
    /// Also run to find a domain key another process put in the token (see `domain`).
    pub(super) fn recycle(&self) {
        {
            let mut busy = self.recycling.lock().unwrap_or_else(|p| p.into_inner());
            if *busy {
                return;
            }
            *busy = true;
        }
        // With the line that ends it, this tells from the log whether a crash hit a recycle.
        tracing::debug!("recycling the PKCS#11 library");
        self.operations.store(0, Ordering::Relaxed);
        let taken = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut old) = taken {
            let started = Instant::now();
            let deadline = started + self.config.session_wait;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(token) => {
                        token.finalize();
                        match Token::open(&self.config) {
                            Ok(token) => {
                                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                                    Some(Arc::new(token));
                                self.recycles.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(
                                    pause_us = started.elapsed().as_micros() as u64,
                                    "PKCS#11 library recycled to free session objects"
                                );
                            }
                            Err(e) => {
                                // The lost-token path (with backoff) takes over from here.
                                tracing::error!(function = %e.function, rv = %e.rv, "HSM did not come back after a planned recycle");
                            }
                        }
                        break;
                    }
                    Err(in_use) if Instant::now() < deadline => {
                        old = in_use;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(in_use) => {
                        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(in_use);
                        tracing::warn!(
                            "planned HSM recycle skipped: requests held the token too long"
                        );
                        break;
                    }
                }
            }
        }
        *self.recycling.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.recycled.notify_all();
    }

    /// While a planned recycle runs, waits for it (up to the session deadline) and returns
    /// the reopened token. `None` when no recycle runs or it left no token.
    fn wait_for_recycle(&self) -> Option<Arc<Token>> {
        let deadline = Instant::now() + self.config.session_wait;
        let mut busy = self.recycling.lock().unwrap_or_else(|p| p.into_inner());
        while *busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            busy = self
                .recycled
                .wait_timeout(busy, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(busy);
        self.current_token()
    }
}

impl Token {
    /// Initialises the library, finds the token and logs in. On failure the library is
    /// finalised again, so the next attempt starts from `C_Initialize`: SoftHSM2 reads its
    /// tokens only then, and a module left initialised could keep a lost token lost.
    pub(super) fn open(config: &HsmConfig) -> Result<Token, HsmError> {
        let pkcs11 = initialise(&config.module)?;
        match Token::open_initialised(config, &pkcs11) {
            Ok(token) => Ok(token),
            Err(e) => {
                if let Err(f) = pkcs11.finalize() {
                    tracing::debug!(error = %HsmError::from(f), "C_Finalize after a failed open");
                }
                Err(e)
            }
        }
    }

    fn open_initialised(config: &HsmConfig, pkcs11: &Pkcs11) -> Result<Token, HsmError> {
        let pkcs11 = pkcs11.clone();
        let slot = find_token(&pkcs11, &config.token_label)?;
        let pin = &config.user_pin;
        let timeout = config.operation_timeout;
        let pool = SessionPool::new(
            pkcs11.clone(),
            slot,
            pin.clone(),
            config.pool_size,
            timeout,
            config.transient_objects_per_session,
        );
        // The first session logs in (the pool does that for every session it opens while
        // the token shows the application logged out).
        let session = match pool.acquire(Instant::now() + config.session_wait) {
            Ok(s) => s,
            Err(AcquireError::Open(e)) => return Err(e),
            Err(AcquireError::Timeout) => {
                return Err(HsmError::gateway("C_OpenSession", "timeout", Scope::Token))
            }
        };
        pool.release(session);
        Ok(Token {
            key_pairs: SessionPool::new(pkcs11.clone(), slot, pin.clone(), 1, None, 0),
            // Owns the cached keys: never swept.
            copy_owner: SessionPool::new(pkcs11.clone(), slot, pin.clone(), 1, timeout, 0),
            copies: Mutex::new(HashMap::new()),
            domain: Mutex::new(super::domain::DomainCache::default()),
            context_keys: Mutex::new(super::context_keys::ContextKeys::new(
                config.context_key_cache,
            )),
            direct: load_direct(&config.module),
            object_scans: super::timed::ObjectScanLock::needed_by(&pkcs11)
                .then(super::timed::ObjectScanLock::default),
            pkcs11,
            slot,
            pool,
            materials: RwLock::new(HashMap::new()),
        })
    }

    pub(super) fn materials_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(MaterialId, Half), ObjectHandle>> {
        self.materials.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn context_keys(
        &self,
    ) -> std::sync::MutexGuard<'_, super::context_keys::ContextKeys> {
        self.context_keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn materials_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<(MaterialId, Half), ObjectHandle>> {
        self.materials.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn finalize(self) {
        self.pool.close_idle();
        self.key_pairs.close_idle();
        self.copy_owner.close_idle();
        let Token {
            pkcs11,
            pool,
            key_pairs,
            copy_owner,
            ..
        } = self;
        drop(pool);
        drop(key_pairs);
        drop(copy_owner);
        if let Err(e) = pkcs11.finalize() {
            tracing::warn!(error = %HsmError::from(e), "C_Finalize failed");
        }
    }
}

/// Loads and initialises a PKCS#11 module with OS locking (SoftHSM runs without mutexes
/// otherwise and crashes under threads).
pub(crate) fn initialise(module: &std::path::Path) -> Result<Pkcs11, HsmError> {
    let pkcs11 = Pkcs11::new(module).map_err(|e| {
        tracing::error!(module = %module.display(), error = %e, "cannot load the PKCS#11 module");
        HsmError::from(e)
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(pkcs11),
        Err(e) => Err(e.into()),
    }
}

/// The raw entry points of `module`, loaded again from the path cryptoki loaded (the same
/// instance). A failure only costs the length queries, so it is logged, not fatal.
fn load_direct(module: &std::path::Path) -> Option<pkcs11_direct::DirectModule> {
    match pkcs11_direct::DirectModule::load(module) {
        Ok(direct) => Some(direct),
        Err(e) => {
            tracing::warn!(module = %module.display(), error = %HsmError::from(e), "single-call PKCS#11 entry points unavailable; using cryptoki's length queries");
            None
        }
    }
}

pub(crate) fn find_token(pkcs11: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    for slot in pkcs11.get_slots_with_token()? {
        let info = pkcs11.get_token_info(slot)?;
        if info.token_initialized() && info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(HsmError::gateway(
        "C_GetTokenInfo",
        &format!("no token labelled '{label}'"),
        Scope::Token,
    ))
}

/// Whether the application is logged in as the user on this session's token.
pub(super) fn is_logged_in(session: &cryptoki::session::Session) -> Result<bool, HsmError> {
    use cryptoki::session::SessionState;
    Ok(matches!(
        session.get_session_info()?.session_state(),
        SessionState::RoUser | SessionState::RwUser
    ))
}

/// Logs the application in as the user (through `session`); already logged in is fine.
pub(super) fn log_in(
    session: &cryptoki::session::Session,
    pin: &SecretString,
) -> Result<(), HsmError> {
    let pin = cryptoki::types::AuthPin::new(secrecy::ExposeSecret::expose_secret(pin).into());
    match session.login(cryptoki::session::UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
