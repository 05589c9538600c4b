//! IP address ranges for the `IpAddress` and `NotIpAddress` condition operators, on
//! `std::net` alone.

use std::net::IpAddr;

/// An IPv4 or IPv6 network: the address with its host bits cleared, and the prefix length.
/// A bare address is a network of one (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cidr {
    V4 { network: u32, prefix: u32 },
    V6 { network: u128, prefix: u32 },
}

impl Cidr {
    /// Parses `203.0.113.0/24`, `203.0.113.7`, `2001:db8::/32` or `2001:db8::1`. Host bits
    /// set in a network (`203.0.113.7/24`) are ignored, as AWS does.
    pub(super) fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        match address.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => {
                let prefix = parse_prefix(prefix, 32)?;
                let network = u32::from(v4) & mask_u32(prefix);
                Some(Cidr::V4 { network, prefix })
            }
            IpAddr::V6(v6) => {
                let prefix = parse_prefix(prefix, 128)?;
                let network = u128::from(v6) & mask_u128(prefix);
                Some(Cidr::V6 { network, prefix })
            }
        }
    }

    /// Whether `address` lies in this network. An IPv4-mapped IPv6 address
    /// (`::ffff:203.0.113.7`) counts as its IPv4 address for IPv4 networks.
    pub(super) fn contains(&self, address: IpAddr) -> bool {
        match (*self, address) {
            (Cidr::V4 { network, prefix }, IpAddr::V4(v4)) => {
                u32::from(v4) & mask_u32(prefix) == network
            }
            (Cidr::V4 { network, prefix }, IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| u32::from(v4) & mask_u32(prefix) == network),
            (Cidr::V6 { network, prefix }, IpAddr::V6(v6)) => {
                u128::from(v6) & mask_u128(prefix) == network
            }
            (Cidr::V6 { .. }, IpAddr::V4(_)) => false,
        }
    }
}

/// The prefix length after the `/`: decimal digits only, at most `max`; none means `max`.
fn parse_prefix(prefix: Option<&str>, max: u32) -> Option<u32> {
    let Some(prefix) = prefix else {
        return Some(max);
    };
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    prefix.parse::<u32>().ok().filter(|&p| p <= max)
}

fn mask_u32(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask_u128(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}
