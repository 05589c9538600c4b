//! Connection counting: at most so many open connections for the process and per client
//! address. A connection over a limit is refused as it is accepted, before any TLS or HTTP
//! work, so refusing costs one lock and one `close`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use crate::telemetry::metrics::{Metrics, LIMIT_PER_ADDRESS, LIMIT_PROCESS};

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Process,
    PerAddress,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Process => LIMIT_PROCESS,
            Refusal::PerAddress => LIMIT_PER_ADDRESS,
        }
    }
}

/// The open-connection counts, shared by the accept loop and every connection's [`Permit`].
pub struct Admission {
    max_total: usize,
    max_per_address: Option<usize>,
    counts: Mutex<Counts>,
    metrics: Option<Arc<Metrics>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only addresses with open connections: at most `max_total` entries.
    per_address: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(
        max_total: usize,
        max_per_address: Option<usize>,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Admission> {
        if let Some(m) = &metrics {
            m.connection_limits
                .with_label_values(&[LIMIT_PROCESS])
                .set(max_total as i64);
            m.connection_limits
                .with_label_values(&[LIMIT_PER_ADDRESS])
                .set(max_per_address.unwrap_or(0) as i64);
        }
        Arc::new(Admission {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
            metrics,
        })
    }

    /// Counts a new connection from `peer`, or says which limit it would break.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refusal> {
        let address = address_key(peer);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if counts.total >= self.max_total {
            drop(counts);
            self.refused(Refusal::Process);
            return Err(Refusal::Process);
        }
        let of_address = counts.per_address.get(&address).copied().unwrap_or(0);
        if self.max_per_address.is_some_and(|max| of_address >= max) {
            drop(counts);
            self.refused(Refusal::PerAddress);
            return Err(Refusal::PerAddress);
        }
        counts.total += 1;
        counts.per_address.insert(address, of_address + 1);
        drop(counts);
        if let Some(m) = &self.metrics {
            m.connections_open.inc();
            m.connections_accepted.inc();
        }
        Ok(Permit {
            admission: self.clone(),
            address,
        })
    }

    /// Open connections now: the process's, and those of `peer`'s address.
    pub fn open(&self, peer: IpAddr) -> (usize, usize) {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let of_address = counts
            .per_address
            .get(&address_key(peer))
            .copied()
            .unwrap_or(0);
        (counts.total, of_address)
    }

    fn refused(&self, refusal: Refusal) {
        if let Some(m) = &self.metrics {
            m.connections_refused
                .with_label_values(&[refusal.label()])
                .inc();
        }
    }

    fn release(&self, address: IpAddr) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&address);
            }
        }
        drop(counts);
        if let Some(m) = &self.metrics {
            m.connections_open.dec();
        }
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Permit {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(self.address);
    }
}

/// What counts as one client address: an IPv4 address, or an IPv6 /64 (a host is usually
/// given a whole /64, so counting single IPv6 addresses would let one host open connections
/// without bound). IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn address_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn counts_per_process_and_per_address_and_frees_on_drop() {
        let admission = Admission::new(3, Some(2), None);
        let a1 = admission.admit(ip("127.0.0.1")).unwrap();
        let a2 = admission.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            admission.admit(ip("127.0.0.1")).err(),
            Some(Refusal::PerAddress)
        );
        let b1 = admission.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(
            admission.admit(ip("127.0.0.3")).err(),
            Some(Refusal::Process)
        );
        assert_eq!(admission.open(ip("127.0.0.1")), (3, 2));
        drop(a1);
        assert_eq!(admission.open(ip("127.0.0.1")), (2, 1));
        let a3 = admission.admit(ip("127.0.0.1")).unwrap();
        drop((a2, a3, b1));
        assert_eq!(admission.open(ip("127.0.0.1")), (0, 0));
        assert!(admission.counts.lock().unwrap().per_address.is_empty());
    }

    #[test]
    fn no_per_address_limit_when_none() {
        let admission = Admission::new(3, None, None);
        let held: Vec<Permit> = (0..3)
            .map(|_| admission.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            admission.admit(ip("10.0.0.1")).err(),
            Some(Refusal::Process)
        );
        drop(held);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(address_key(ip("::1")), ip("::"));
    }
}
