//! PKCS#11 calls per request, read from the gateway's own metrics.
//!
//! The gateway counts every PKCS#11 operation it makes in
//! `p11kms_pkcs11_call_duration_seconds` (by function and outcome). Its `_count` series,
//! scraped from `/metrics` before and after a run, divided by the run's requests, gives the
//! operations per request without a shim in front of the token, so it works on either
//! embedded token and through the network-HSM emulator alike.
//!
//! The metric counts one entry per operation. Some of those are several PKCS#11 calls: the
//! single-call path (`crates/pkcs11-direct`) makes `C_EncryptInit` + `C_Encrypt`,
//! `C_DecryptInit` + `C_Decrypt` and `C_SignInit` + `C_Sign`, and cryptoki's `verify` makes
//! `C_VerifyInit` + `C_Verify`; `C_WrapKey` is one call. [`CallCounts::wire_calls`] adds the
//! init calls, for the round trips a network HSM sees (`tests/e2e/test_trace.py` counts the
//! same from a pkcs11-spy trace).
//!
//! A pool's sweep (`hsm.transient_objects_per_session`) is three calls the metric does not
//! time, `C_OpenSession`, `C_GetSessionInfo` and `C_CloseSession`; they are counted from
//! `p11kms_session_pool_sweeps_total`.

use std::collections::BTreeMap;

use http_body_util::Full;
use hyper::body::Bytes;

use super::client::{Connection, Endpoint};

/// The metric's count series.
const COUNT_SERIES: &str = "p11kms_pkcs11_call_duration_seconds_count{";

/// Sessions the pool swept, each three calls (see the module's comment).
const SWEEP_SERIES: &str = "p11kms_session_pool_sweeps_total ";
const SWEEP_CALLS: [&str; 3] = ["C_OpenSession", "C_GetSessionInfo", "C_CloseSession"];

/// PKCS#11 calls each counted operation makes beyond the one counted: its init call.
const EXTRA_CALLS: &[(&str, f64)] = &[
    ("C_Encrypt", 1.0),
    ("C_Decrypt", 1.0),
    ("C_Sign", 1.0),
    ("C_Verify", 1.0),
];

/// Counted operations by PKCS#11 function (totals, or per request after [`Self::per_request`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallCounts(pub BTreeMap<String, f64>);

impl CallCounts {
    /// Sums the count series of a Prometheus text exposition by function, over outcomes.
    pub fn parse(exposition: &str) -> CallCounts {
        let mut counts = BTreeMap::new();
        for line in exposition.lines() {
            if let Some(Ok(sweeps)) = line
                .strip_prefix(SWEEP_SERIES)
                .map(|v| v.trim().parse::<f64>())
            {
                for function in SWEEP_CALLS {
                    *counts.entry(function.to_string()).or_insert(0.0) += sweeps;
                }
                continue;
            }
            let Some(rest) = line.strip_prefix(COUNT_SERIES) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once('}') else {
                continue;
            };
            let Some(function) = label(labels, "function") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            *counts.entry(function.to_string()).or_insert(0.0) += value;
        }
        CallCounts(counts)
    }

    /// What happened between `before` and `self`, divided by `requests`.
    pub fn per_request(&self, before: &CallCounts, requests: u64) -> Option<CallCounts> {
        if requests == 0 {
            return None;
        }
        let per = self
            .0
            .iter()
            .map(|(function, after)| {
                let delta = after - before.0.get(function).copied().unwrap_or(0.0);
                (function.clone(), delta / requests as f64)
            })
            .filter(|(_, per)| *per > 0.0)
            .collect();
        Some(CallCounts(per))
    }

    /// Operations as the gateway counts them.
    pub fn counted(&self) -> f64 {
        self.0.values().sum()
    }

    /// PKCS#11 calls on the wire: the counted operations plus cryptoki's init and length-query
    /// calls (see the module's comment).
    pub fn wire_calls(&self) -> f64 {
        let extra: f64 = EXTRA_CALLS
            .iter()
            .map(|(function, more)| self.0.get(*function).copied().unwrap_or(0.0) * more)
            .sum();
        self.counted() + extra
    }

    /// `C_DeriveKey 1.00, C_UnwrapKey 1.00, ...`
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(function, per)| format!("{function} {per:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The value of `name="..."` in a label set (label values here never hold quotes).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        pair.trim()
            .strip_prefix(name)?
            .strip_prefix("=\"")?
            .strip_suffix('"')
    })
}

/// The gateway's counts now, or `None` when its `/metrics` cannot be read.
pub async fn scrape(endpoint: &Endpoint) -> Option<CallCounts> {
    let mut conn = Connection::open(endpoint).await.ok()?;
    let request = http::Request::builder()
        .method("GET")
        .uri("/metrics")
        .header("host", endpoint.host())
        .body(Full::new(Bytes::new()))
        .ok()?;
    let reply = conn.send(request).await.ok()?;
    if reply.status != 200 {
        return None;
    }
    Some(CallCounts::parse(&String::from_utf8_lossy(&reply.body)))
}

#[cfg(test)]
mod tests {
    use super::CallCounts;

    const EXPOSITION: &str = "\
# TYPE p11kms_pkcs11_call_duration_seconds histogram
p11kms_pkcs11_call_duration_seconds_bucket{function=\"C_WrapKey\",outcome=\"CKR_OK\",le=\"0.001\"} 9
p11kms_pkcs11_call_duration_seconds_count{function=\"C_WrapKey\",outcome=\"CKR_OK\"} 10
p11kms_pkcs11_call_duration_seconds_count{function=\"C_Encrypt\",outcome=\"CKR_OK\"} 10
p11kms_pkcs11_call_duration_seconds_count{function=\"C_DeriveKey\",outcome=\"CKR_OK\"} 18
p11kms_pkcs11_call_duration_seconds_count{function=\"C_DeriveKey\",outcome=\"CKR_DEVICE_ERROR\"} 2
p11kms_requests_total{operation=\"Encrypt\",outcome=\"OK\"} 10
";

    #[test]
    fn sums_outcomes_and_adds_cryptokis_extra_calls() {
        let after = CallCounts::parse(EXPOSITION);
        assert_eq!(after.0.get("C_DeriveKey"), Some(&20.0));
        let before = CallCounts([("C_WrapKey".to_string(), 5.0)].into());
        let per = after.per_request(&before, 5).expect("requests");
        // WrapKey 1, Encrypt 2, DeriveKey 4 per request.
        assert_eq!(per.counted(), 7.0);
        // Encrypt: +init, twice per request; WrapKey and DeriveKey are one call each.
        assert_eq!(per.wire_calls(), 7.0 + 2.0);
        assert_eq!(
            per.describe(),
            "C_DeriveKey 4.00, C_Encrypt 2.00, C_WrapKey 1.00"
        );
        assert!(after.per_request(&before, 0).is_none());
    }

    #[test]
    fn a_sweep_is_three_calls() {
        let after = CallCounts::parse(
            "p11kms_session_pool_sweeps_total 4\n\
             p11kms_session_pool_transient_objects{state=\"left\"} 7\n",
        );
        let per = after
            .per_request(&CallCounts::default(), 128)
            .expect("requests");
        assert_eq!(per.counted(), 3.0 * 4.0 / 128.0);
        assert_eq!(per.0.get("C_CloseSession"), Some(&(4.0 / 128.0)));
    }
}
