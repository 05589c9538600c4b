//! SigV4 verification: the `Authorization` header and date parsing, the canonical request,
//! and a differential check against AWS's own signer (the `aws-sigv4` crate the SDKs use).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use secrecy::SecretString;

use super::contains;
use crate::auth::{Credential, SigV4Verifier};
use crate::error::KmsError;

/// AWS's test-suite scope and credentials, so the suite's signed requests are valid seeds.
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const SERVICE: &str = "service";
/// 2015-08-30T12:36:00Z, the suite's signing time.
const NOW_UNIX: u64 = 1_440_938_160;

/// Headers the signer sets itself; a fuzzed copy of them is dropped before signing.
const SIGNER_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// The bytes are a request: `METHOD TARGET` on the first line, `name:value` header lines,
/// an empty line, the body. What `http` refuses to represent (hyper refuses it too) is
/// skipped.
///
/// Invariants:
/// - verification of the request as given never panics; a refusal is one of the four
///   authentication errors, all 400; its message never carries the secret and does not
///   change when the provided signature does;
/// - the same request (with a `Host`) signed by `aws-sigv4` as the AWS SDKs sign it, at
///   the verifier's clock, is accepted: both sides build the same canonical request.
pub fn sigv4(data: &[u8]) {
    let Some((parts, body)) = request_from(data) else {
        return;
    };
    let verifier = SigV4Verifier::new(
        REGION.into(),
        SERVICE,
        vec![Credential {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SecretString::from(SECRET.to_owned()),
            account: "111122223333".into(),
            principal_arn: "arn:aws:iam::111122223333:user/fuzz".into(),
        }],
    );
    let now = UNIX_EPOCH + Duration::from_secs(NOW_UNIX);

    match verifier.verify(&parts, body, now) {
        Ok(principal) => assert_eq!(principal.access_key_id, ACCESS_KEY),
        Err(e) => check_refusal(&verifier, &e, &parts, body, now),
    }

    if let Some(signed) = signed_like_sdk(&parts, body, now) {
        if let Err(e) = verifier.verify(&signed, body, now) {
            panic!("a request signed by aws-sigv4 was refused: {e:?}\n{signed:?}");
        }
    }
}

fn check_refusal(
    verifier: &SigV4Verifier,
    e: &KmsError,
    parts: &http::request::Parts,
    body: &[u8],
    now: SystemTime,
) {
    let message = |e: &KmsError| match e {
        KmsError::MissingAuthenticationToken | KmsError::UnrecognizedClient => String::new(),
        KmsError::IncompleteSignature(m) | KmsError::InvalidSignature(m) => m.clone(),
        other => panic!("verification gave {other:?}"),
    };
    let text = message(e);
    assert_eq!(e.wire().status, 400);
    assert!(!contains(&text, SECRET), "the message carries the secret");
    // The provided signature: the same request with another signature value of the same
    // length and shape must be refused with the same message.
    // (With several Authorization headers the refusal names that, whatever they hold.)
    let mut headers = parts.headers.get_all(AUTHORIZATION).iter();
    let (Some(header), None) = (headers.next(), headers.next()) else {
        return;
    };
    let Some(other) = header.to_str().ok().and_then(other_signature) else {
        return;
    };
    let mut changed = parts.clone();
    #[allow(clippy::expect_used)] // the fuzz target's assert: a panic is its finding
    let other = HeaderValue::from_str(&other).expect("ASCII in, ASCII out");
    changed.headers.insert(AUTHORIZATION, other);
    match verifier.verify(&changed, body, now) {
        Ok(_) => panic!("a changed signature was accepted"),
        Err(e) => assert_eq!(message(&e), text, "the message depends on the signature"),
    }
}

/// The header with the value of its first `Signature=` component (found as the verifier's
/// parser finds components: after the algorithm, split at commas and whitespace) replaced by
/// as many `Z`s (`Y` where the original has a `Z`); `None` if it has no such component.
fn other_signature(header: &str) -> Option<String> {
    let trimmed = header.trim_start();
    let rest_at = header.len() - trimmed.len() + trimmed.find(|c: char| c.is_ascii_whitespace())?;
    let mut at = rest_at;
    for component in header[rest_at..].split(|c: char| c == ',' || c.is_ascii_whitespace()) {
        if let Some(value) = component.strip_prefix("Signature=") {
            let from = at + "Signature=".len();
            let replaced: String = value
                .chars()
                .map(|c| if c == 'Z' { 'Y' } else { 'Z' })
                .collect();
            return Some(format!(
                "{}{replaced}{}",
                &header[..from],
                &header[from + value.len()..]
            ));
        }
        at += component.len() + 1;
    }
    None
}

fn request_from(data: &[u8]) -> Option<(http::request::Parts, &[u8])> {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next()?;
    let space = request_line.iter().position(|&b| b == b' ')?;
    let method = http::Method::from_bytes(&request_line[..space]).ok()?;
    let uri = http::Uri::try_from(&request_line[space + 1..]).ok()?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    for line in lines.filter(|l| !l.is_empty()) {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = line[colon + 1..].trim_ascii();
        // An HTTP/1.1 parser strips optional whitespace around a value, as trim_ascii does
        // for spaces and tabs (and line-ending bytes, which a header value cannot hold).
        let value = HeaderValue::from_bytes(value).ok()?;
        builder = builder.header(name, value);
    }
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    Some((parts, body))
}

/// `http::Uri` refuses more than `u16::MAX - 1` bytes; percent-encoding at most triples a query.
const MAX_URI_FOR_SDK_SIGNER: usize = (u16::MAX as usize - 1) / 3;

/// The request signed by `aws-sigv4` with default settings, or `None` where it cannot sign
/// it as sent (header values that are not UTF-8, a URI it does not parse) or where the two
/// sides deliberately differ:
/// - a request target that is not origin-form (`/path?query`): `aws-sigv4` panics on some
///   (`adding query should not invalidate URI`, found by this target), and an HTTP/1.1 client
///   talking to the server, as every SDK does, sends origin-form;
/// - a request target longer than a third of what `http::Uri` holds: `aws-sigv4` re-encodes the
///   query, which can triple it, and panics (`InvalidUri(TooLong)`, found by this target) when
///   that passes the limit. KMS requests carry `/` and no query;
/// - a query whose percent-decoded bytes are not UTF-8: `aws-sigv4` replaces them with U+FFFD
///   before encoding, so `%9F` and `%9E` sign alike; the verifier signs the bytes as sent,
///   which keeps distinct queries distinct. SDKs encode UTF-8 strings, so never send these.
fn signed_like_sdk(
    parts: &http::request::Parts,
    body: &[u8],
    now: SystemTime,
) -> Option<http::request::Parts> {
    let uri = &parts.uri;
    let origin_form =
        uri.scheme().is_none() && uri.authority().is_none() && uri.path().starts_with('/');
    let query = uri.query().unwrap_or("");
    if !origin_form
        || uri.to_string().len() > MAX_URI_FOR_SDK_SIGNER
        || std::str::from_utf8(&percent_decoded(query)).is_err()
    {
        return None;
    }
    let mut request = http::Request::from_parts(parts.clone(), ());
    for name in SIGNER_HEADERS {
        request.headers_mut().remove(*name);
    }
    if !request.headers().contains_key(HOST) {
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_static("example.amazonaws.com"));
    }
    let identity = Credentials::new(ACCESS_KEY, SECRET, None, None, "fuzz").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(SERVICE)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .ok()?
        .into();
    let instructions = {
        let mut headers = Vec::new();
        for (name, value) in request.headers() {
            headers.push((name.as_str(), value.to_str().ok()?));
        }
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.uri().to_string(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .ok()?;
        sign(signable, &params).ok()?.into_parts().0
    };
    instructions.apply_to_request_http1x(&mut request);
    Some(request.into_parts().0)
}

/// `%XX` escapes decoded; anything else, malformed escapes included, kept as it is.
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escape = bytes
            .get(i + 1..i + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (b, escape) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}
