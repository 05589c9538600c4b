//! AWS's SigV4 test suite (header form) as known-answer tests of the verifier.
//!
//! Each vector in `tests/data/sigv4/<name>/` (see the README there for the source and
//! licence) is a signed HTTP request with the canonical request, string to sign and signature
//! AWS's reference signer produced for it. For every vector this rebuilds all three with the
//! verifier's own code, then runs the whole verifier on the request at the vector's time.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::*;

/// The suite's credentials (`context.json` of every AWS vector).
const SUITE_ACCESS_KEY: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// The vectors that apply to a POST JSON service verifying the `Authorization` header.
const APPLICABLE: &[&str] = &[
    "double-url-encode",
    "get-header-key-duplicate",
    "get-header-value-order",
    "get-header-value-trim",
    "get-relative-normalized",
    "get-relative-relative-normalized",
    "get-slash-dot-slash-normalized",
    "get-slash-normalized",
    "get-slash-pointless-dot-normalized",
    "get-slashes-normalized",
    "get-unreserved",
    "get-vanilla",
    "get-vanilla-empty-query-key",
    "get-vanilla-query",
    "get-vanilla-query-order-encoded",
    "get-vanilla-query-order-key-case",
    "get-vanilla-query-unreserved",
    "get-vanilla-with-session-token",
    "post-header-key-case",
    "post-header-key-sort",
    "post-header-value-case",
    "post-sts-header-after",
    "post-sts-header-before",
    "post-vanilla",
    "post-vanilla-empty-query-value",
    "post-vanilla-query",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
];

/// Vectors of the suite that are deliberately not here, with the reason (also in the README
/// of the data directory). Every vector's query-string (presigned) form is left out as well:
/// the verifier supports only the `Authorization` header form.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    (
        "get-header-value-multiline",
        "obs-fold header continuation lines: HTTP/1.1 servers reject them (RFC 9112 5.2), \
         and hyper does, so such a request never reaches the verifier",
    ),
    (
        "get-utf8",
        "raw UTF-8 bytes in the request target: not a valid HTTP/1.1 request target, rejected \
         before the verifier",
    ),
    (
        "get-vanilla-utf8-query",
        "raw UTF-8 bytes in the query: not a valid HTTP/1.1 request target",
    ),
    (
        "get-space-normalized",
        "a raw space in the request target (invalid HTTP/1.1; sent as %20, KMS-style double \
         encoding gives %2520, as AWS's own verifier would)",
    ),
    (
        "get-space-unnormalized",
        "a raw space in the request target (invalid HTTP/1.1), and S3-style unnormalised path",
    ),
    (
        "get-relative-unnormalized",
        "S3-style signing without path normalisation; KMS normalises paths and encodes twice",
    ),
    (
        "get-relative-relative-unnormalized",
        "S3-style signing without path normalisation",
    ),
    (
        "get-slash-dot-slash-unnormalized",
        "S3-style signing without path normalisation",
    ),
    (
        "get-slash-pointless-dot-unnormalized",
        "S3-style signing without path normalisation",
    ),
    (
        "get-slash-unnormalized",
        "S3-style signing without path normalisation",
    ),
    (
        "get-slashes-unnormalized",
        "S3-style signing without path normalisation",
    ),
    (
        "double-encode-path",
        "an aws-sigv4 crate addition whose canonical request (2021-05-11) and signed request \
         (2015-08-30) disagree on the date; double encoding is covered by double-url-encode",
    ),
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4")
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// What a vector run found wrong (test output only).
type Mismatch = Box<dyn std::error::Error>;

/// `header-signed-request.txt`: request line, `Name:value` headers, blank line, body. Header
/// values lose their surrounding whitespace, as an HTTP/1.1 parser strips it.
fn parse_request(text: &str) -> Result<(http::request::Parts, Vec<u8>), Mismatch> {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().ok_or("no request line")?;
    let mut words = request_line.split(' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(format!("request line {request_line:?}").into());
    };
    // The aws-sigv4 crate's own vector leaves the HTTP version out.
    if !matches!(words.next(), None | Some("HTTP/1.1")) || words.next().is_some() {
        return Err(format!("request line {request_line:?}").into());
    }
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header line {line:?}"))?;
        builder = builder.header(name, value.trim_matches([' ', '\t']));
    }
    let (parts, ()) = builder.body(()).map_err(|e| e.to_string())?.into_parts();
    Ok((parts, body.as_bytes().to_vec()))
}

/// The suite's `context.json`, or, for the aws-sigv4 crate's own addition that has none, the
/// scope its `Authorization` header names with the suite's credentials.
struct Context {
    access_key_id: String,
    secret: String,
    region: String,
    service: String,
}

fn context(dir: &Path, scope: &CredentialScope<'_>) -> Context {
    let Some(text) = read(dir, "context.json") else {
        return Context {
            access_key_id: SUITE_ACCESS_KEY.into(),
            secret: SUITE_SECRET.into(),
            region: scope.region.into(),
            service: scope.service.into(),
        };
    };
    let json: serde_json::Value = serde_json::from_str(&text).expect("context.json is JSON");
    let field = |v: &serde_json::Value| v.as_str().expect("a string").to_owned();
    Context {
        access_key_id: field(&json["credentials"]["access_key_id"]),
        secret: field(&json["credentials"]["secret_access_key"]),
        region: field(&json["region"]),
        service: field(&json["service"]),
    }
}

fn header<'a>(parts: &'a http::request::Parts, name: &http::HeaderName) -> &'a str {
    parts.headers[name].to_str().expect("visible ASCII")
}

/// Runs one vector; returns what went wrong, if anything.
fn check_vector(name: &str) -> Result<(), Mismatch> {
    let dir = data_dir().join(name);
    let signed_request = read(&dir, "header-signed-request.txt").ok_or("no signed request")?;
    let (parts, body) = parse_request(&signed_request)?;

    // The Authorization header, parsed by the verifier's parser.
    let authorization = header(&parts, &AUTHORIZATION);
    let auth = AuthorizationHeader::parse(authorization, true).map_err(|e| e.to_string())?;
    let scope = CredentialScope::parse(auth.credential).map_err(|e| e.to_string())?;
    let signed_headers = parse_signed_headers(auth.signed_headers).map_err(|e| e.to_string())?;
    let context = context(&dir, &scope);

    // 1. Canonical request.
    let payload_hash = hex::encode(Sha256::digest(&body));
    let canonical = canonical_request(&parts, &signed_headers, &payload_hash);
    let expected = read(&dir, "header-canonical-request.txt").ok_or("no canonical request")?;
    if canonical != expected.as_bytes() {
        return Err(format!(
            "canonical request differs:\n--- ours\n{}\n--- suite\n{expected}",
            String::from_utf8_lossy(&canonical)
        )
        .into());
    }

    // 2. String to sign.
    let time = request_time(&parts.headers).map_err(|e| e.to_string())?;
    let sts = string_to_sign(&time, &context.region, &context.service, &canonical);
    let expected = read(&dir, "header-string-to-sign.txt").ok_or("no string to sign")?;
    // Some of the files end in a newline, which is not part of the string to sign.
    let expected = expected.trim_end_matches('\n');
    if sts != expected {
        return Err(
            format!("string to sign differs:\n--- ours\n{sts}\n--- suite\n{expected}").into(),
        );
    }

    // 3. Signature, against the suite's file and the one in the Authorization header.
    let at = system_time(time.unix).ok_or("time out of range")?;
    let key = aws_sigv4::sign::v4::generate_signing_key(
        &context.secret,
        at,
        &context.region,
        &context.service,
    );
    let signature = aws_sigv4::sign::v4::calculate_signature(key, sts.as_bytes());
    if let Some(expected) = read(&dir, "header-signature.txt") {
        if signature != expected.trim() {
            return Err(format!("signature {signature} != suite's {expected}").into());
        }
    }
    if signature != auth.signature {
        return Err(format!(
            "signature {signature} != Authorization's {}",
            auth.signature
        )
        .into());
    }

    // 4. The whole verifier accepts the request at the vector's own time, and refuses it
    //    with one signature digit changed.
    let service: &'static str = Box::leak(context.service.clone().into_boxed_str());
    let verifier = SigV4Verifier::new(
        context.region.clone(),
        service,
        vec![Credential {
            access_key_id: context.access_key_id.clone(),
            secret_access_key: SecretString::from(context.secret.clone()),
            account: "111122223333".into(),
            principal_arn: "arn:aws:iam::111122223333:user/suite".into(),
        }],
    );
    let principal = verifier
        .verify(&parts, &body, at)
        .map_err(|e| format!("the verifier refused the vector: {e}"))?;
    if principal.access_key_id != context.access_key_id {
        return Err(format!("principal {principal:?}").into());
    }
    let last = signature.chars().last().ok_or("empty signature")?;
    let flipped = if last == '0' { '1' } else { '0' };
    let tampered = authorization.replace(
        &signature,
        &format!("{}{flipped}", &signature[..signature.len() - 1]),
    );
    let mut tampered_parts = parts.clone();
    tampered_parts.headers.insert(
        AUTHORIZATION,
        http::HeaderValue::from_str(&tampered).map_err(|e| e.to_string())?,
    );
    match verifier.verify(&tampered_parts, &body, at) {
        Err(KmsError::InvalidSignature(_)) => Ok(()),
        other => Err(format!("a changed signature gave {other:?}").into()),
    }
}

#[test]
fn aws_sigv4_suite_vectors() {
    let mut failures = Vec::new();
    for name in APPLICABLE {
        if let Err(e) = check_vector(name) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        APPLICABLE.len(),
        failures.join("\n\n")
    );
}

/// Every vector directory is run, and nothing listed as not applicable slipped in.
#[test]
fn aws_sigv4_suite_is_complete() {
    let mut present: Vec<String> = std::fs::read_dir(data_dir())
        .expect("tests/data/sigv4")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut expected: Vec<String> = APPLICABLE.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(present, expected);
    for (name, reason) in NOT_APPLICABLE {
        assert!(!reason.is_empty());
        assert!(!APPLICABLE.contains(name), "{name}");
    }
}

/// The suite's vectors name the header in several spellings (`X-amz-date`, `Authorization:`
/// with a space after the colon): the parser above must not depend on one.
#[test]
fn suite_request_parser_trims_like_http() {
    let (parts, body) =
        parse_request("POST /a?b=c HTTP/1.1\nHost:h\nMy-Header1:  x  y \n\nbody").unwrap();
    assert_eq!(parts.method, http::Method::POST);
    assert_eq!(parts.uri.path(), "/a");
    assert_eq!(header(&parts, &HOST), "h");
    assert_eq!(parts.headers["my-header1"], "x  y");
    assert_eq!(body, b"body");
}
