//! Server-side verification of AWS Signature Version 4 (`Authorization` header form).
//!
//! The verifier rebuilds the canonical request from what arrived on the wire, derives the
//! signing key for the credential named in the header (cached per access key, day and
//! region), and compares signatures in constant time. Only the header form of SigV4 is
//! supported; presigned query-string requests are answered as unauthenticated.
//!
//! Secrets (secret access keys, derived signing keys, expected and provided signatures)
//! never reach logs, `Debug` output or error messages.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, AUTHORIZATION, DATE, HOST};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use zeroize::Zeroizing;

use super::{Credential, Principal};
use crate::error::KmsError;

/// The only signing algorithm accepted.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The fixed last element of a SigV4 credential scope.
const TERMINATOR: &str = "aws4_request";
/// Allowed difference between the request time and the server clock, in seconds.
const MAX_SKEW_SECS: i64 = 5 * 60;
/// Upper bound on cached signing keys. Keys are only derived for known credentials, the
/// configured region and a day within the skew window, so the live set is at most about
/// two entries per credential; the bound only guards against pathological tables.
const CACHE_CAPACITY: usize = 4096;

const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_TARGET: &str = "x-amz-target";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";

/// Verifies SigV4-signed requests against a reloadable credential table.
pub struct SigV4Verifier {
    region: String,
    service: &'static str,
    table: RwLock<Table>,
    cache: Mutex<KeyCache>,
}

/// The credential table, tagged with a generation that changes on every reload.
struct Table {
    generation: u64,
    by_access_key: HashMap<String, Arc<Credential>>,
}

/// Derived signing keys, valid only for the table generation they were derived from.
struct KeyCache {
    generation: u64,
    keys: HashMap<CacheKey, SigningKey>,
}

#[derive(Hash, PartialEq, Eq)]
struct CacheKey {
    access_key_id: String,
    date: String,
    region: String,
}

/// A derived SigV4 signing key; zeroed on drop and never printed.
#[derive(Clone)]
struct SigningKey(Zeroizing<Vec<u8>>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl fmt::Debug for SigV4Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = read_lock(&self.table).by_access_key.len();
        let cached_keys = lock(&self.cache).keys.len();
        f.debug_struct("SigV4Verifier")
            .field("region", &self.region)
            .field("service", &self.service)
            .field("credentials", &credentials)
            .field("cached_signing_keys", &cached_keys)
            .finish()
    }
}

impl SigV4Verifier {
    /// A verifier for requests scoped to `region` and `service` (`"kms"`).
    pub fn new(region: String, service: &'static str, credentials: Vec<Credential>) -> Self {
        SigV4Verifier {
            region,
            service,
            table: RwLock::new(Table {
                generation: 0,
                by_access_key: index_credentials(credentials),
            }),
            cache: Mutex::new(KeyCache {
                generation: 0,
                keys: HashMap::new(),
            }),
        }
    }

    /// Swaps the credential table (SIGHUP reload) and drops every cached signing key.
    ///
    /// Requests being verified concurrently finish against the table they started with;
    /// keys they derive from it are not cached.
    pub fn replace_credentials(&self, credentials: Vec<Credential>) {
        let by_access_key = index_credentials(credentials);
        let count = by_access_key.len();
        let mut table = write_lock(&self.table);
        table.generation = table.generation.wrapping_add(1);
        table.by_access_key = by_access_key;
        // Taken while the table is still write-locked, so no key derived from the old table
        // can be inserted under the new generation. `verify` never holds the cache lock while
        // taking the table lock, so this order cannot deadlock.
        let mut cache = lock(&self.cache);
        cache.generation = table.generation;
        cache.keys.clear();
        drop(cache);
        drop(table);
        tracing::info!(credentials = count, "credential table replaced");
    }

    /// Verifies a request: `parts` is the HTTP request head, `body` the complete raw body and
    /// `now` the server clock. Returns the authenticated principal.
    pub fn verify(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Principal, KmsError> {
        let result = self.verify_inner(parts, body, now);
        if let Err(e) = &result {
            // Only the error's own text, which never carries secrets or the header.
            tracing::debug!(error = %e, "SigV4 verification failed");
        }
        result
    }

    fn verify_inner(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Principal, KmsError> {
        let headers = &parts.headers;

        // 1. The Authorization header and its three components.
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let header = values.next().ok_or(KmsError::MissingAuthenticationToken)?;
        if values.next().is_some() {
            return Err(incomplete(
                "Request must contain exactly one Authorization header.",
            ));
        }
        let header = header.to_str().map_err(|_| {
            incomplete("Authorization header contains characters that are not visible ASCII.")
        })?;
        let auth = AuthorizationHeader::parse(header, has_date_header(headers))?;
        let scope = CredentialScope::parse(auth.credential)?;
        let signed_headers = parse_signed_headers(auth.signed_headers)?;

        // 2. Request time and clock skew.
        let request_time = request_time(headers)?;
        check_skew(&request_time, now)?;

        // 3. Credential scope against the request and this endpoint.
        let request_day = request_time.date_stamp();
        if scope.date != request_day {
            return Err(KmsError::InvalidSignature(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{}', from '{}'.",
                echo(scope.date),
                request_day,
                request_time.amz_date()
            )));
        }
        if scope.region != self.region {
            return Err(KmsError::InvalidSignature(format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                echo(scope.region)
            )));
        }
        if scope.service != self.service {
            return Err(KmsError::InvalidSignature(format!(
                "Credential should be scoped to correct service: '{}'. ",
                self.service
            )));
        }
        if scope.terminator != TERMINATOR {
            return Err(KmsError::InvalidSignature(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'. ",
                echo(scope.terminator)
            )));
        }

        // 4. Headers that must be covered by the signature.
        if !signed_headers.iter().any(|h| h == HOST.as_str()) {
            return Err(incomplete(
                "'Host' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        // X-Amz-Target selects the operation; an unsigned one could be swapped on replay.
        if headers.contains_key(X_AMZ_TARGET) && !signed_headers.iter().any(|h| h == X_AMZ_TARGET) {
            return Err(incomplete(
                "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }

        // 5. The credential.
        let (generation, credential) = {
            let table = read_lock(&self.table);
            let credential = table
                .by_access_key
                .get(scope.access_key_id)
                .cloned()
                .ok_or(KmsError::UnrecognizedClient)?;
            (table.generation, credential)
        };

        // 6. Payload hash, checked against x-amz-content-sha256 when the client sent one.
        let payload_hash = hex::encode(Sha256::digest(body));
        for value in headers.get_all(X_AMZ_CONTENT_SHA256) {
            let value = value.as_bytes();
            if value != UNSIGNED_PAYLOAD.as_bytes()
                && !value.eq_ignore_ascii_case(payload_hash.as_bytes())
            {
                return Err(KmsError::InvalidSignature(
                    "The provided 'x-amz-content-sha256' header does not match what was computed."
                        .into(),
                ));
            }
        }

        // 7. Canonical request, string to sign, signature.
        let canonical = canonical_request(parts, &signed_headers, &payload_hash);
        let string_to_sign = string_to_sign(&request_time, &self.region, self.service, &canonical);
        let signing_key = self.signing_key(generation, &credential, &request_time)?;
        let expected = Zeroizing::new(aws_sigv4::sign::v4::calculate_signature(
            &signing_key.0[..],
            string_to_sign.as_bytes(),
        ));
        let provided = Zeroizing::new(auth.signature.to_ascii_lowercase());
        if !bool::from(expected.as_bytes().ct_eq(provided.as_bytes())) {
            tracing::debug!(
                access_key_id = %credential.access_key_id,
                "signature mismatch"
            );
            return Err(KmsError::InvalidSignature(SIGNATURE_MISMATCH.into()));
        }

        Ok(Principal {
            access_key_id: credential.access_key_id.clone(),
            account: credential.account.clone(),
            arn: credential.principal_arn.clone(),
        })
    }

    /// The signing key for `credential` on the request's day, from the cache when possible.
    fn signing_key(
        &self,
        generation: u64,
        credential: &Credential,
        request_time: &RequestTime,
    ) -> Result<SigningKey, KmsError> {
        let key = CacheKey {
            access_key_id: credential.access_key_id.clone(),
            date: request_time.date_stamp(),
            region: self.region.clone(),
        };
        {
            let cache = lock(&self.cache);
            if cache.generation == generation {
                if let Some(found) = cache.keys.get(&key) {
                    return Ok(found.clone());
                }
            }
        }

        let time = system_time(request_time.unix)
            .ok_or_else(|| KmsError::Internal("request time out of range".into()))?;
        let derived = aws_sigv4::sign::v4::generate_signing_key(
            credential.secret_access_key.expose_secret(),
            time,
            &self.region,
            self.service,
        );
        let signing_key = SigningKey(Zeroizing::new(derived.as_ref().to_vec()));

        let mut cache = lock(&self.cache);
        // A reload since the table was read: the key belongs to a retired table; do not cache.
        if cache.generation == generation {
            if cache.keys.len() >= CACHE_CAPACITY {
                let today = key.date.clone();
                cache.keys.retain(|k, _| k.date == today);
                if cache.keys.len() >= CACHE_CAPACITY {
                    cache.keys.clear();
                }
            }
            cache.keys.insert(key, signing_key.clone());
        }
        Ok(signing_key)
    }
}

fn index_credentials(credentials: Vec<Credential>) -> HashMap<String, Arc<Credential>> {
    let mut by_access_key = HashMap::with_capacity(credentials.len());
    for credential in credentials {
        let access_key_id = credential.access_key_id.clone();
        if by_access_key
            .insert(access_key_id.clone(), Arc::new(credential))
            .is_some()
        {
            tracing::warn!(
                access_key_id = %access_key_id,
                "duplicate access key id in the credential table; the last entry wins"
            );
        }
    }
    by_access_key
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something ever did, the data is still
    // consistent (plain maps), so recover rather than propagate the poison.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_lock<T>(rw: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    rw.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(rw: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    rw.write().unwrap_or_else(PoisonError::into_inner)
}

fn incomplete(message: &str) -> KmsError {
    KmsError::IncompleteSignature(message.to_owned())
}

/// A client-supplied, non-secret value made safe to echo in a message: printable ASCII only,
/// at most 64 characters.
fn echo(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Authorization header
// ------------------------------------------------------------------------------------------

/// The components of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...`. Deliberately not `Debug`: it holds the signature.
struct AuthorizationHeader<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl<'a> AuthorizationHeader<'a> {
    /// Parses the header. Components may be separated by commas, spaces or both. Error
    /// messages never quote the header (it carries the signature).
    fn parse(header: &'a str, has_date: bool) -> Result<Self, KmsError> {
        let header = header.trim_start();
        let (algorithm, rest) = match header.find(|c: char| c.is_ascii_whitespace()) {
            Some(i) => (&header[..i], &header[i..]),
            None => (header, ""),
        };
        if algorithm != ALGORITHM {
            return Err(incomplete(
                "Unsupported AWS 'algorithm': the Authorization header must use \
                 AWS4-HMAC-SHA256 (Signature Version 4).",
            ));
        }

        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for component in rest
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|c| !c.is_empty())
        {
            let Some((key, value)) = component.split_once('=') else {
                return Err(incomplete(
                    "Authorization header contains a component that is not a valid key=value \
                     pair (missing equal-sign).",
                ));
            };
            let slot = match key {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                // Unknown components are not part of SigV4; ignore them as AWS does.
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(KmsError::IncompleteSignature(format!(
                    "Authorization header contains the '{key}' parameter more than once."
                )));
            }
        }

        match (credential, signed_headers, signature) {
            (Some(credential), Some(signed_headers), Some(signature)) => Ok(AuthorizationHeader {
                credential,
                signed_headers,
                signature,
            }),
            (credential, signed_headers, signature) => {
                let mut message = String::new();
                if credential.is_none() {
                    message.push_str("Authorization header requires 'Credential' parameter. ");
                }
                if signature.is_none() {
                    message.push_str("Authorization header requires 'Signature' parameter. ");
                }
                if signed_headers.is_none() {
                    message.push_str("Authorization header requires 'SignedHeaders' parameter. ");
                }
                if !has_date {
                    message.push_str(
                        "Authorization header requires existence of either a 'X-Amz-Date' or \
                         a 'Date' header. ",
                    );
                }
                Err(KmsError::IncompleteSignature(message.trim_end().to_owned()))
            }
        }
    }
}

/// `<access key id>/<yyyymmdd>/<region>/<service>/aws4_request`.
struct CredentialScope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
}

impl<'a> CredentialScope<'a> {
    fn parse(credential: &'a str) -> Result<Self, KmsError> {
        let mut parts = credential.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (
                Some(access_key_id),
                Some(date),
                Some(region),
                Some(service),
                Some(terminator),
                None,
            ) if !access_key_id.is_empty() => Ok(CredentialScope {
                access_key_id,
                date,
                region,
                service,
                terminator,
            }),
            _ => Err(incomplete(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term.",
            )),
        }
    }
}

/// The `SignedHeaders` list, lowercased, in the order the client gave it.
fn parse_signed_headers(list: &str) -> Result<Vec<String>, KmsError> {
    let names: Vec<String> = list.split(';').map(str::to_ascii_lowercase).collect();
    if names.iter().any(String::is_empty) {
        return Err(incomplete(
            "Authorization header 'SignedHeaders' parameter must be a non-empty, \
             semicolon-separated list of header names.",
        ));
    }
    Ok(names)
}

// ------------------------------------------------------------------------------------------
// Time
// ------------------------------------------------------------------------------------------

/// The request's timestamp, whole seconds, UTC.
struct RequestTime {
    unix: i64,
    at: OffsetDateTime,
}

impl RequestTime {
    fn from_datetime(at: OffsetDateTime) -> Self {
        RequestTime {
            unix: at.unix_timestamp(),
            at,
        }
    }

    /// `yyyymmddThhmmssZ`.
    fn amz_date(&self) -> String {
        format_amz_date(&self.at)
    }

    /// `yyyymmdd`.
    fn date_stamp(&self) -> String {
        format!(
            "{:04}{:02}{:02}",
            self.at.year(),
            u8::from(self.at.month()),
            self.at.day()
        )
    }
}

fn format_amz_date(at: &OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn format_unix(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(at) => format_amz_date(&at),
        Err(_) => unix.to_string(),
    }
}

fn has_date_header(headers: &HeaderMap) -> bool {
    headers.contains_key(X_AMZ_DATE) || headers.contains_key(DATE)
}

/// From `X-Amz-Date` if present, else from `Date`.
fn request_time(headers: &HeaderMap) -> Result<RequestTime, KmsError> {
    if let Some(value) = headers.get(X_AMZ_DATE) {
        let text = value.to_str().unwrap_or("");
        return parse_amz_date(text)
            .map(RequestTime::from_datetime)
            .ok_or_else(|| {
                KmsError::IncompleteSignature(format!(
                    "Date must be in ISO-8601 'basic format'. Got '{}'. See \
                     http://en.wikipedia.org/wiki/ISO_8601",
                    echo(text)
                ))
            });
    }
    if let Some(value) = headers.get(DATE) {
        let text = value.to_str().unwrap_or("");
        return parse_http_date(text)
            .map(RequestTime::from_datetime)
            .ok_or_else(|| {
                KmsError::IncompleteSignature(format!(
                    "Date header must be an HTTP date such as 'Sun, 06 Nov 1994 08:49:37 GMT'. \
                     Got '{}'.",
                    echo(text)
                ))
            });
    }
    Err(incomplete(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
    ))
}

/// `yyyymmddThhmmssZ`.
fn parse_amz_date(text: &str) -> Option<OffsetDateTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes.get(8) != Some(&b'T') || bytes.get(15) != Some(&b'Z') {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        text.get(from..to)?.bytes().try_fold(0u32, |acc, b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    };
    let year = i32::try_from(number(0, 4)?).ok()?;
    let month = Month::try_from(u8::try_from(number(4, 6)?).ok()?).ok()?;
    let day = u8::try_from(number(6, 8)?).ok()?;
    let hour = u8::try_from(number(9, 11)?).ok()?;
    let minute = u8::try_from(number(11, 13)?).ok()?;
    let second = u8::try_from(number(13, 15)?).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// IMF-fixdate (RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(text: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    PrimitiveDateTime::parse(text, &format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Whole seconds since the epoch, rounding down (also before 1970).
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let secs = if d.subsec_nanos() > 0 {
                secs.saturating_add(1)
            } else {
                secs
            };
            secs.saturating_neg()
        }
    }
}

fn system_time(unix: i64) -> Option<SystemTime> {
    if unix >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(unix.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(unix.unsigned_abs()))
    }
}

/// Rejects requests more than five minutes away from `now`, with AWS's wording.
fn check_skew(request: &RequestTime, now: SystemTime) -> Result<(), KmsError> {
    let now = unix_seconds(now);
    let earliest = now.saturating_sub(MAX_SKEW_SECS);
    let latest = now.saturating_add(MAX_SKEW_SECS);
    if request.unix < earliest {
        return Err(KmsError::InvalidSignature(format!(
            "Signature expired: {} is now earlier than {} ({} - 5 min.)",
            request.amz_date(),
            format_unix(earliest),
            format_unix(now)
        )));
    }
    if request.unix > latest {
        return Err(KmsError::InvalidSignature(format!(
            "Signature not yet current: {} is still later than {} ({} + 5 min.)",
            request.amz_date(),
            format_unix(latest),
            format_unix(now)
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Canonical request
// ------------------------------------------------------------------------------------------

/// `AWS4-HMAC-SHA256 \n <amz-date> \n <scope> \n hex(SHA-256(canonical request))`.
fn string_to_sign(
    request_time: &RequestTime,
    region: &str,
    service: &str,
    canonical_request: &[u8],
) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}/{region}/{service}/{TERMINATOR}\n{}",
        request_time.amz_date(),
        request_time.date_stamp(),
        hex::encode(Sha256::digest(canonical_request))
    )
}

/// The SigV4 canonical request, as bytes (header values need not be UTF-8).
fn canonical_request(
    parts: &http::request::Parts,
    signed_headers: &[String],
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b'\n');
    canonical_uri(&mut out, parts.uri.path());
    out.push(b'\n');
    canonical_query(&mut out, parts.uri.query().unwrap_or(""));
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        canonical_header_value(&mut out, parts, name);
        out.push(b'\n');
    }
    out.push(b'\n');
    for (i, name) in signed_headers.iter().enumerate() {
        if i > 0 {
            out.push(b';');
        }
        out.extend_from_slice(name.as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// All values of header `name`, each trimmed with inner runs of spaces collapsed, joined by
/// commas. A missing `host` header falls back to the URI authority (HTTP/2 `:authority`).
fn canonical_header_value(out: &mut Vec<u8>, parts: &http::request::Parts, name: &str) {
    let mut values = parts.headers.get_all(name).iter().peekable();
    if values.peek().is_none() && name == HOST.as_str() {
        if let Some(authority) = parts.uri.authority() {
            push_trimmed(out, authority.as_str().as_bytes());
        }
        return;
    }
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_trimmed(out, value.as_bytes());
    }
}

fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let mut previous_space = false;
    let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    for &b in value.get(start..end).unwrap_or(&[]) {
        if b == b' ' {
            if !previous_space {
                out.push(b);
            }
            previous_space = true;
        } else {
            out.push(b);
            previous_space = false;
        }
    }
}

/// The path with dot segments and empty segments removed, each segment URI-encoded
/// (the path arrives encoded, so this is AWS's "double encoding" for non-S3 services).
fn canonical_uri(out: &mut Vec<u8>, path: &str) {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    out.push(b'/');
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        uri_encode(out, segment.as_bytes());
    }
    let trailing_slash = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if trailing_slash && !segments.is_empty() {
        out.push(b'/');
    }
}

/// Query parameters decoded, re-encoded strictly, sorted by name then value.
fn canonical_query(out: &mut Vec<u8>, query: &str) {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut encoded_name = Vec::new();
            uri_encode(&mut encoded_name, &percent_decode(name.as_bytes()));
            let mut encoded_value = Vec::new();
            uri_encode(&mut encoded_value, &percent_decode(value.as_bytes()));
            (encoded_name, encoded_value)
        })
        .collect();
    pairs.sort();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
    }
}

/// RFC 3986 encoding: everything but `A-Z a-z 0-9 - _ . ~` becomes `%XX` (upper-case hex).
fn uri_encode(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        }
    }
}

/// Form-style decoding: `%XX` escapes and `+` as space; malformed escapes stay literal.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    fn hex_value(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod suite;
