//! Request and response bodies carry plaintexts and data keys in base64, so the gateway wipes
//! the buffers that held them once it is done with them.
//!
//! - A request body arrives in chunks that are views of the connection's read buffer. Each
//!   chunk is copied into one zeroizing buffer and then handed to [`PendingWipes`], which
//!   zeroes it in place as soon as the HTTP layer no longer shares its memory (at once, or
//!   when the connection moves on to a fresh read buffer, or when it closes).
//! - A response body is encoded into a buffer that is zeroed when the HTTP layer drops its
//!   last reference, after the bytes were written to the socket ([`wiped_after_writing`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use prometheus::IntCounter;
use zeroize::{Zeroize, Zeroizing};

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit (by `Content-Length`, or by what arrived).
    TooLarge,
    /// The stream broke off (the client went away, or sent a malformed chunked body).
    Broken,
}

/// Reads a request body of at most `limit` bytes into a zeroizing buffer sized from
/// `declared` (`Content-Length`), so it never reallocates for a well-formed request. Every
/// chunk goes to `wipes` once copied.
pub async fn read_body(
    mut body: Body,
    declared: Option<usize>,
    limit: usize,
    wipes: &PendingWipes,
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(declared.unwrap_or(0)));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers: nothing a KMS request uses
        };
        let needed = out.len() + chunk.len();
        if needed > limit {
            wipes.defer(chunk);
            return Err(BodyError::TooLarge);
        }
        if needed > out.capacity() {
            // Grow by hand: `Vec` would free the old buffer without wiping it.
            let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(2 * out.capacity())));
            bigger.extend_from_slice(&out);
            out = bigger;
        }
        out.extend_from_slice(&chunk);
        wipes.defer(chunk);
    }
    Ok(out)
}

/// Counters of request-body bytes by whether the buffer they arrived in was wiped.
#[derive(Clone)]
pub struct WipeCounters {
    pub wiped: IntCounter,
    pub unwiped: IntCounter,
}

/// Chunks of request bodies, kept until their memory is no longer shared and can be zeroed.
///
/// The HTTP layer reads into one buffer per connection and hands out body chunks as views of
/// it; the buffer itself stays shared until the connection reads its next request into a
/// fresh one. One `PendingWipes` belongs to one connection: its chunks are retried when the
/// connection reads again ([`PendingWipes::retry`]) and, at the latest, when it closes (the
/// last clone's drop). Cloning shares the list.
#[derive(Clone, Default)]
pub struct PendingWipes(Arc<WipeList>);

#[derive(Default)]
struct WipeList {
    held: Mutex<Vec<Bytes>>,
    /// Whether `held` may be non-empty: the common case (nothing held) takes no lock.
    any: AtomicBool,
    counters: Option<WipeCounters>,
}

impl PendingWipes {
    pub fn new(counters: WipeCounters) -> Self {
        PendingWipes(Arc::new(WipeList {
            held: Mutex::default(),
            any: AtomicBool::new(false),
            counters: Some(counters),
        }))
    }

    /// Wipes `chunk` now if nothing else shares its memory, or keeps it for a later try.
    pub fn defer(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        match wipe(chunk) {
            Ok(n) => self.0.count_wiped(n),
            Err(chunk) => {
                self.0.lock().push(chunk);
                self.0.any.store(true, Ordering::Release);
            }
        }
    }

    /// Tries again to wipe the chunks kept so far.
    pub fn retry(&self) {
        if self.0.any.load(Ordering::Acquire) {
            self.0.retry();
        }
    }

    /// Chunks still waiting for their memory to be unshared.
    pub fn pending(&self) -> usize {
        self.0.lock().len()
    }
}

impl WipeList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Bytes>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn retry(&self) {
        let mut held = self.lock();
        let mut wiped = 0;
        let kept: Vec<Bytes> = std::mem::take(&mut *held)
            .into_iter()
            .filter_map(|chunk| match wipe(chunk) {
                Ok(n) => {
                    wiped += n;
                    None
                }
                Err(chunk) => Some(chunk),
            })
            .collect();
        self.any.store(!kept.is_empty(), Ordering::Release);
        *held = kept;
        drop(held);
        self.count_wiped(wiped);
    }

    fn count_wiped(&self, n: usize) {
        if let Some(c) = &self.counters {
            c.wiped.inc_by(n as u64);
        }
    }
}

impl Drop for WipeList {
    /// The connection is gone: a chunk still shared now is shared by something outside the
    /// gateway's reach and is released unwiped (and counted as such).
    fn drop(&mut self) {
        self.retry();
        let unwiped: usize = self.lock().iter().map(Bytes::len).sum();
        if let Some(c) = &self.counters {
            c.unwiped.inc_by(unwiped as u64);
        }
    }
}

/// Zeroes the chunk's bytes in place when it is the only reference to its memory.
fn wipe(chunk: Bytes) -> Result<usize, Bytes> {
    let n = chunk.len();
    // A unique chunk converts in place (no copy), so the zeroes land in the memory the bytes
    // arrived in.
    let mut owned = chunk.try_into_mut()?;
    owned.as_mut().zeroize();
    Ok(n)
}

/// A response body whose buffer is zeroed when the HTTP layer drops its last reference to
/// it, that is once the bytes were written to the socket (or the connection failed).
pub fn wiped_after_writing(encoded: Vec<u8>) -> Body {
    Body::from(Bytes::from_owner(WipedOnDrop::new(encoded)))
}

/// Owns an encoded response; zeroes it on drop.
struct WipedOnDrop {
    bytes: Vec<u8>,
    /// Tests: receives the buffer's contents after the wipe.
    #[cfg(test)]
    probe: Option<std::sync::mpsc::Sender<Vec<u8>>>,
}

impl WipedOnDrop {
    fn new(bytes: Vec<u8>) -> Self {
        WipedOnDrop {
            bytes,
            #[cfg(test)]
            probe: None,
        }
    }
}

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for WipedOnDrop {
    fn drop(&mut self) {
        self.bytes.as_mut_slice().zeroize();
        #[cfg(test)]
        if let Some(probe) = &self.probe {
            let _ = probe.send(self.bytes.clone());
        }
        // Also the spare capacity (none when the encoder sized the buffer exactly).
        self.bytes.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> WipeCounters {
        WipeCounters {
            wiped: IntCounter::new("w", "w").unwrap(),
            unwiped: IntCounter::new("u", "u").unwrap(),
        }
    }

    #[test]
    fn a_unique_chunk_is_wiped_at_once_and_a_shared_one_when_it_is_released() {
        let counters = counters();
        let wipes = PendingWipes::new(counters.clone());
        wipes.defer(Bytes::from(b"secret-1".to_vec()));
        assert_eq!(counters.wiped.get(), 8);
        assert_eq!(wipes.pending(), 0);

        // Another view of the same memory (the connection's read buffer, in the server).
        let buffer = Bytes::from(b"headers|secret-2|next".to_vec());
        let chunk = buffer.slice(8..16);
        wipes.defer(chunk);
        assert_eq!(wipes.pending(), 1, "shared: kept");
        assert_eq!(counters.wiped.get(), 8);
        wipes.retry();
        assert_eq!(wipes.pending(), 1, "still shared");
        assert_eq!(
            &buffer[8..16],
            b"secret-2",
            "shared memory is never written"
        );
        drop(buffer);
        wipes.retry();
        assert_eq!(wipes.pending(), 0);
        assert_eq!(counters.wiped.get(), 16);
        drop(wipes);
        assert_eq!(counters.unwiped.get(), 0);
    }

    #[test]
    fn chunks_still_shared_when_the_connection_ends_are_counted_unwiped() {
        let counters = counters();
        let wipes = PendingWipes::new(counters.clone());
        let buffer = Bytes::from(b"0123456789".to_vec());
        wipes.defer(buffer.slice(2..7));
        drop(wipes);
        assert_eq!(counters.unwiped.get(), 5);
        assert_eq!(counters.wiped.get(), 0);
        assert_eq!(&buffer[..], b"0123456789");
    }

    #[test]
    fn a_response_body_is_wiped_when_its_last_reference_goes() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut owner = WipedOnDrop::new(b"{\"Plaintext\":\"c2VjcmV0\"}".to_vec());
        owner.probe = Some(tx);
        let bytes = Bytes::from_owner(owner);
        // The HTTP layer may slice and clone what it writes; the buffer lives while any does.
        let head = bytes.slice(0..5);
        let rest = bytes.slice(5..);
        drop(bytes);
        drop(head);
        assert!(rx.try_recv().is_err(), "wiped while a reference remained");
        assert_eq!(&rest[..7], b"intext\"");
        drop(rest);
        let wiped = rx.try_recv().expect("wiped on the last drop");
        assert_eq!(wiped.len(), 24);
        assert!(wiped.iter().all(|&b| b == 0), "{wiped:?}");
    }

    #[tokio::test]
    async fn a_body_is_read_whole_within_its_limit() {
        let wipes = PendingWipes::new(counters());
        let body = Body::from(b"{\"KeyId\":\"k\"}".to_vec());
        let read = read_body(body, Some(13), 64, &wipes).await.unwrap();
        assert_eq!(&read[..], b"{\"KeyId\":\"k\"}");
        let too_long = Body::from(vec![b'x'; 65]);
        assert_eq!(
            read_body(too_long, None, 64, &wipes).await.unwrap_err(),
            BodyError::TooLarge
        );
        let declared_too_long = Body::from(vec![b'x'; 10]);
        assert_eq!(
            read_body(declared_too_long, Some(65), 64, &wipes)
                .await
                .unwrap_err(),
            BodyError::TooLarge
        );
    }
}
