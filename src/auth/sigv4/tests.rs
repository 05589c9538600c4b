use super::*;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use secrecy::SecretString;

const REGION: &str = "eu-west-1";
const AKID: &str = "AKIAP11KMSTEST000001";
const SECRET: &str = "p11kmsTestSecretKey/0123456789abcdefghijklmn";
const LIST_KEYS_BODY: &[u8] = b"{\"Limit\":10}";

/// 2026-11-29T05:58:00Z
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_931_880)
}

fn credential(akid: &str, secret: &str) -> Credential {
    Credential {
        access_key_id: akid.into(),
        secret_access_key: SecretString::from(secret.to_owned()),
        account: "111122223333".into(),
        principal_arn: "arn:aws:iam::111122223333:user/alice".into(),
    }
}

fn verifier() -> SigV4Verifier {
    SigV4Verifier::new(REGION.into(), "kms", vec![credential(AKID, SECRET)])
}

/// A boto3-style KMS request: POST /, JSON 1.1 content type, X-Amz-Target, Host.
fn kms_request(body: &[u8]) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "kms.eu-west-1.amazonaws.com")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "TrentService.ListKeys")
        .body(body.to_vec())
        .unwrap()
}

/// Signs `req` in place with the aws-sigv4 crate (as the AWS SDKs do).
fn sign_with(
    req: &mut http::Request<Vec<u8>>,
    akid: &str,
    secret: &str,
    session_token: Option<&str>,
    region: &str,
    service: &str,
    time: SystemTime,
) {
    let identity =
        Credentials::new(akid, secret, session_token.map(str::to_owned), None, "test").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let instructions = {
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        let uri = req.uri().to_string();
        let signable = SignableRequest::new(
            req.method().as_str(),
            uri,
            headers.into_iter(),
            SignableBody::Bytes(req.body()),
        )
        .unwrap();
        let (instructions, _signature) = sign(signable, &params).unwrap().into_parts();
        instructions
    };
    instructions.apply_to_request_http1x(req);
}

fn signed_kms_request(body: &[u8], time: SystemTime) -> http::Request<Vec<u8>> {
    let mut req = kms_request(body);
    sign_with(&mut req, AKID, SECRET, None, REGION, "kms", time);
    req
}

fn run(
    v: &SigV4Verifier,
    req: http::Request<Vec<u8>>,
    now: SystemTime,
) -> Result<Principal, KmsError> {
    let (parts, body) = req.into_parts();
    v.verify(&parts, &body, now)
}

fn signature_of(req: &http::Request<Vec<u8>>) -> String {
    let auth = req.headers()[AUTHORIZATION].to_str().unwrap();
    auth.rsplit("Signature=").next().unwrap().to_owned()
}

fn expect_invalid(result: Result<Principal, KmsError>, needle: &str) -> String {
    match result {
        Err(KmsError::InvalidSignature(m)) => {
            assert!(m.contains(needle), "message {m:?} lacks {needle:?}");
            m
        }
        other => panic!("expected InvalidSignature, got {other:?}"),
    }
}

fn expect_incomplete(result: Result<Principal, KmsError>, needle: &str) -> String {
    match result {
        Err(KmsError::IncompleteSignature(m)) => {
            assert!(m.contains(needle), "message {m:?} lacks {needle:?}");
            m
        }
        other => panic!("expected IncompleteSignature, got {other:?}"),
    }
}

#[test]
fn accepts_sdk_signed_kms_request() {
    let v = verifier();
    let principal = run(&v, signed_kms_request(LIST_KEYS_BODY, t0()), t0()).unwrap();
    assert_eq!(
        principal,
        Principal {
            access_key_id: AKID.into(),
            account: "111122223333".into(),
            arn: "arn:aws:iam::111122223333:user/alice".into(),
        }
    );
}

#[test]
fn accepts_within_skew_and_reuses_cached_key() {
    let v = verifier();
    for offset in [0u64, 299, 300] {
        let req = signed_kms_request(LIST_KEYS_BODY, t0());
        run(&v, req, t0() + Duration::from_secs(offset)).unwrap();
        let req = signed_kms_request(LIST_KEYS_BODY, t0());
        run(&v, req, t0() - Duration::from_secs(offset)).unwrap();
    }
    assert_eq!(lock(&v.cache).keys.len(), 1);
}

#[test]
fn tampered_body_is_rejected() {
    let v = verifier();
    let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
    *req.body_mut() = b"{\"Limit\":11}".to_vec();
    expect_invalid(run(&v, req, t0()), "does not match");
}

#[test]
fn tampered_target_is_rejected() {
    let v = verifier();
    let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
    req.headers_mut().insert(
        "x-amz-target",
        http::HeaderValue::from_static("TrentService.ScheduleKeyDeletion"),
    );
    expect_invalid(run(&v, req, t0()), "does not match");
}

#[test]
fn wrong_secret_is_rejected() {
    let v = verifier();
    let mut req = kms_request(LIST_KEYS_BODY);
    sign_with(&mut req, AKID, "not-the-secret", None, REGION, "kms", t0());
    let signature = signature_of(&req);
    let message = expect_invalid(run(&v, req, t0()), "signature we calculated");
    assert!(!message.contains(&signature));
    assert!(!message.contains(SECRET));
}

#[test]
fn unknown_access_key_is_unrecognized() {
    let v = verifier();
    let mut req = kms_request(LIST_KEYS_BODY);
    sign_with(
        &mut req,
        "AKIAUNKNOWN000000000",
        SECRET,
        None,
        REGION,
        "kms",
        t0(),
    );
    assert_eq!(run(&v, req, t0()), Err(KmsError::UnrecognizedClient));
}

#[test]
fn missing_authorization_header() {
    let v = verifier();
    let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
    req.headers_mut().remove(AUTHORIZATION);
    assert_eq!(
        run(&v, req, t0()),
        Err(KmsError::MissingAuthenticationToken)
    );
}

#[test]
fn presigned_query_auth_is_not_supported() {
    let v = verifier();
    let req = http::Request::builder()
        .method("GET")
        .uri(
            "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAP11KMSTEST000001%2F\
             20261129%2Feu-west-1%2Fkms%2Faws4_request&X-Amz-Date=20261129T055800Z\
             &X-Amz-SignedHeaders=host&X-Amz-Signature=00",
        )
        .header("host", "kms.eu-west-1.amazonaws.com")
        .body(Vec::new())
        .unwrap();
    assert_eq!(
        run(&v, req, t0()),
        Err(KmsError::MissingAuthenticationToken)
    );
}

#[test]
fn expired_request_uses_aws_wording() {
    let v = verifier();
    let now = t0() + Duration::from_secs(6 * 60);
    let message = expect_invalid(
        run(&v, signed_kms_request(LIST_KEYS_BODY, t0()), now),
        "Signature expired",
    );
    assert_eq!(
        message,
        "Signature expired: 20261129T055800Z is now earlier than 20261129T055900Z \
         (20261129T060400Z - 5 min.)"
    );
}

#[test]
fn future_request_uses_aws_wording() {
    let v = verifier();
    let now = t0() - Duration::from_secs(6 * 60);
    let message = expect_invalid(
        run(&v, signed_kms_request(LIST_KEYS_BODY, t0()), now),
        "not yet current",
    );
    assert_eq!(
        message,
        "Signature not yet current: 20261129T055800Z is still later than 20261129T055700Z \
         (20261129T055200Z + 5 min.)"
    );
}

#[test]
fn malformed_headers_are_incomplete() {
    let v = verifier();
    let req = signed_kms_request(LIST_KEYS_BODY, t0());
    let original = req.headers()[AUTHORIZATION].to_str().unwrap().to_owned();
    let signature = signature_of(&req);
    let (scheme_less, _) = original.split_once(' ').unwrap();
    assert_eq!(scheme_less, ALGORITHM);
    let credential_part = original
        .split(", ")
        .next()
        .unwrap()
        .trim_start_matches("AWS4-HMAC-SHA256 ")
        .to_owned();

    let cases: Vec<(String, &str)> = vec![
        (
            format!("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature={signature}"),
            "requires 'Credential' parameter",
        ),
        (
            format!("AWS4-HMAC-SHA256 {credential_part}, SignedHeaders=host;x-amz-date"),
            "requires 'Signature' parameter",
        ),
        (
            format!("AWS4-HMAC-SHA256 {credential_part}, Signature={signature}"),
            "requires 'SignedHeaders' parameter",
        ),
        (
            format!("AWS4-HMAC-SHA512 {credential_part}, Signature={signature}"),
            "Unsupported AWS 'algorithm'",
        ),
        ("Bearer abc.def".to_owned(), "Unsupported AWS 'algorithm'"),
        (
            format!(
                "AWS4-HMAC-SHA256 Credential={AKID}/20261129/eu-west-1/kms, \
                 SignedHeaders=host, Signature={signature}"
            ),
            "exactly 5 slash-delimited elements",
        ),
        (
            format!(
                "AWS4-HMAC-SHA256 {credential_part}, SignedHeaders=host;;x-amz-date, \
                 Signature={signature}"
            ),
            "SignedHeaders",
        ),
        (
            format!("AWS4-HMAC-SHA256 {credential_part}, garbage, Signature={signature}"),
            "missing equal-sign",
        ),
        (
            format!(
                "AWS4-HMAC-SHA256 {credential_part}, Signature={signature}, \
                 Signature={signature}, SignedHeaders=host"
            ),
            "more than once",
        ),
    ];
    for (header, needle) in cases {
        let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
        req.headers_mut()
            .insert(AUTHORIZATION, http::HeaderValue::from_str(&header).unwrap());
        let message = expect_incomplete(run(&v, req, t0()), needle);
        assert!(!message.contains(&signature), "{message}");
        assert!(!message.contains("Authorization="), "{message}");
    }
}

#[test]
fn missing_date_is_incomplete() {
    let v = verifier();
    let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
    req.headers_mut().remove("x-amz-date");
    expect_incomplete(run(&v, req, t0()), "'X-Amz-Date' or a 'Date' header");

    let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
    req.headers_mut().insert(
        "x-amz-date",
        http::HeaderValue::from_static("2026-11-29T05:58:00Z"),
    );
    expect_incomplete(run(&v, req, t0()), "ISO-8601 'basic format'");
}

#[test]
fn tolerates_comma_and_space_variants() {
    let v = verifier();
    let req = signed_kms_request(LIST_KEYS_BODY, t0());
    let original = req.headers()[AUTHORIZATION].to_str().unwrap().to_owned();
    for variant in [
        original.replace(", ", ","),
        original.replace(", ", " "),
        original.replace(", ", " ,  "),
        format!("  {}", original.replacen(' ', "   ", 1)),
    ] {
        let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
        req.headers_mut().insert(
            AUTHORIZATION,
            http::HeaderValue::from_str(&variant).unwrap(),
        );
        run(&v, req, t0()).unwrap_or_else(|e| panic!("{variant}: {e}"));
    }
}

#[test]
fn wrong_region_and_service_are_rejected() {
    let v = verifier();
    let mut req = kms_request(LIST_KEYS_BODY);
    sign_with(&mut req, AKID, SECRET, None, "us-east-1", "kms", t0());
    expect_invalid(
        run(&v, req, t0()),
        "Credential should be scoped to a valid region",
    );

    let mut req = kms_request(LIST_KEYS_BODY);
    sign_with(&mut req, AKID, SECRET, None, REGION, "dynamodb", t0());
    expect_invalid(run(&v, req, t0()), "scoped to correct service: 'kms'");
}

#[test]
fn scope_date_must_match_request_day() {
    let v = verifier();
    let req = signed_kms_request(LIST_KEYS_BODY, t0());
    let header = req.headers()[AUTHORIZATION]
        .to_str()
        .unwrap()
        .replace("/20261129/", "/20261128/");
    let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
    req.headers_mut()
        .insert(AUTHORIZATION, http::HeaderValue::from_str(&header).unwrap());
    expect_invalid(run(&v, req, t0()), "'20261128' != '20261129'");
}

#[test]
fn host_must_be_signed() {
    let v = verifier();
    let req = signed_kms_request(LIST_KEYS_BODY, t0());
    let header = req.headers()[AUTHORIZATION].to_str().unwrap().to_owned();
    assert!(header.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target,"));
    let header = header.replace(
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target",
        "SignedHeaders=content-type;x-amz-date;x-amz-target",
    );
    let mut req = signed_kms_request(LIST_KEYS_BODY, t0());
    req.headers_mut()
        .insert(AUTHORIZATION, http::HeaderValue::from_str(&header).unwrap());
    expect_incomplete(run(&v, req, t0()), "'Host' must be a 'SignedHeader'");
}

#[test]
fn unsigned_target_is_rejected() {
    let v = verifier();
    let mut req = kms_request(LIST_KEYS_BODY);
    req.headers_mut().remove("x-amz-target");
    sign_with(&mut req, AKID, SECRET, None, REGION, "kms", t0());
    req.headers_mut().insert(
        "x-amz-target",
        http::HeaderValue::from_static("TrentService.ListKeys"),
    );
    expect_incomplete(
        run(&v, req, t0()),
        "'X-Amz-Target' must be a 'SignedHeader'",
    );
}

#[test]
fn content_sha256_header_must_match_body() {
    let v = verifier();
    let mut req = kms_request(LIST_KEYS_BODY);
    req.headers_mut().insert(
        X_AMZ_CONTENT_SHA256,
        http::HeaderValue::from_str(&hex::encode(Sha256::digest(LIST_KEYS_BODY))).unwrap(),
    );
    sign_with(&mut req, AKID, SECRET, None, REGION, "kms", t0());
    run(&v, req, t0()).unwrap();

    let mut req = kms_request(LIST_KEYS_BODY);
    req.headers_mut().insert(
        X_AMZ_CONTENT_SHA256,
        http::HeaderValue::from_str(&hex::encode(Sha256::digest(b"other"))).unwrap(),
    );
    sign_with(&mut req, AKID, SECRET, None, REGION, "kms", t0());
    expect_invalid(run(&v, req, t0()), "x-amz-content-sha256");
}

#[test]
fn security_token_is_accepted() {
    let v = verifier();
    let mut req = kms_request(LIST_KEYS_BODY);
    sign_with(
        &mut req,
        AKID,
        SECRET,
        Some("session-token-value"),
        REGION,
        "kms",
        t0(),
    );
    assert!(req.headers().contains_key("x-amz-security-token"));
    run(&v, req, t0()).unwrap();
}

#[test]
fn path_query_and_header_canonicalisation_match_the_sdk() {
    let v = verifier();
    let mut req = http::Request::builder()
        .method("GET")
        .uri("/a%20b/./c/../d~e/?b=2&a=x%2Fy&a=1&empty&sp=with+plus")
        .header("host", "kms.eu-west-1.amazonaws.com")
        .header("x-amz-meta", "  spaced    out   value ")
        .body(Vec::new())
        .unwrap();
    sign_with(&mut req, AKID, SECRET, None, REGION, "kms", t0());
    run(&v, req, t0()).unwrap();
}

#[test]
fn replace_credentials_swaps_table_and_clears_cache() {
    let v = verifier();
    run(&v, signed_kms_request(LIST_KEYS_BODY, t0()), t0()).unwrap();
    assert_eq!(lock(&v.cache).keys.len(), 1);

    v.replace_credentials(vec![credential(AKID, "rotated-secret")]);
    assert!(lock(&v.cache).keys.is_empty());
    expect_invalid(
        run(&v, signed_kms_request(LIST_KEYS_BODY, t0()), t0()),
        "signature we calculated",
    );
    let mut req = kms_request(LIST_KEYS_BODY);
    sign_with(&mut req, AKID, "rotated-secret", None, REGION, "kms", t0());
    run(&v, req, t0()).unwrap();

    v.replace_credentials(Vec::new());
    assert_eq!(
        run(&v, signed_kms_request(LIST_KEYS_BODY, t0()), t0()),
        Err(KmsError::UnrecognizedClient)
    );
}

#[test]
fn debug_output_has_no_secrets() {
    let v = verifier();
    run(&v, signed_kms_request(LIST_KEYS_BODY, t0()), t0()).unwrap();
    let text = format!("{v:?}");
    assert!(text.contains("eu-west-1"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    let cache = lock(&v.cache);
    let key = cache.keys.values().next().unwrap();
    assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
}

/// AWS SigV4 test suite, `get-vanilla`, verified with the published signature. The
/// suite's secret is `wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY` (a `+`, not a second `/`).
#[test]
fn known_answer_get_vanilla() {
    let v = SigV4Verifier::new(
        "us-east-1".into(),
        "service",
        vec![credential(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )],
    );
    let req = http::Request::builder()
        .method("GET")
        .uri("/")
        .header("host", "example.amazonaws.com")
        .header("x-amz-date", "20150830T123600Z")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .body(Vec::new())
        .unwrap();
    // 2015-08-30T12:36:00Z
    let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    let (parts, body) = req.into_parts();
    let principal = v.verify(&parts, &body, now).unwrap();
    assert_eq!(principal.access_key_id, "AKIDEXAMPLE");

    // Same request, one hex digit of the signature changed.
    let mut parts = parts;
    parts.headers.insert(
        AUTHORIZATION,
        http::HeaderValue::from_static(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf32",
        ),
    );
    expect_invalid(v.verify(&parts, &body, now), "signature we calculated");
}

/// The canonical request of `get-vanilla`, as published in the AWS test suite.
#[test]
fn known_answer_canonical_request() {
    let (parts, _) = http::Request::builder()
        .method("GET")
        .uri("/")
        .header("host", "example.amazonaws.com")
        .header("x-amz-date", "20150830T123600Z")
        .body(())
        .unwrap()
        .into_parts();
    let signed = vec!["host".to_owned(), "x-amz-date".to_owned()];
    let empty_hash = hex::encode(Sha256::digest(b""));
    let canonical = canonical_request(&parts, &signed, &empty_hash);
    assert_eq!(
        String::from_utf8(canonical).unwrap(),
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
         host;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

/// A request dated by the HTTP `Date` header instead of `X-Amz-Date`.
#[test]
fn date_header_fallback() {
    let v = verifier();
    let (mut parts, body) = kms_request(LIST_KEYS_BODY).into_parts();
    parts.headers.insert(
        DATE,
        http::HeaderValue::from_static("Sun, 29 Nov 2026 05:58:00 GMT"),
    );
    let signed: Vec<String> = ["content-type", "date", "host", "x-amz-target"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let canonical = canonical_request(&parts, &signed, &hex::encode(Sha256::digest(&body)));
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n20261129T055800Z\n20261129/{REGION}/kms/aws4_request\n{}",
        hex::encode(Sha256::digest(&canonical))
    );
    let key = aws_sigv4::sign::v4::generate_signing_key(SECRET, t0(), REGION, "kms");
    let signature = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
    parts.headers.insert(
        AUTHORIZATION,
        http::HeaderValue::from_str(&format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20261129/{REGION}/kms/aws4_request, \
             SignedHeaders=content-type;date;host;x-amz-target, Signature={signature}"
        ))
        .unwrap(),
    );
    v.verify(&parts, &body, t0()).unwrap();
}

#[test]
fn canonical_helpers() {
    let mut out = Vec::new();
    canonical_uri(&mut out, "/a//b/./c/../");
    assert_eq!(out, b"/a/b/");
    let mut out = Vec::new();
    canonical_uri(&mut out, "/../..");
    assert_eq!(out, b"/");
    let mut out = Vec::new();
    canonical_uri(&mut out, "/x%2Fy z");
    assert_eq!(out, b"/x%252Fy%20z");

    let mut out = Vec::new();
    canonical_query(&mut out, "b=2&a=%7e&a=1&c&d=%zz&e=a+b");
    assert_eq!(out, b"a=1&a=~&b=2&c=&d=%25zz&e=a%20b");

    let mut out = Vec::new();
    push_trimmed(&mut out, b"   a   b  c ");
    assert_eq!(out, b"a b c");

    assert!(parse_amz_date("20261329T000000Z").is_none());
    assert!(parse_amz_date("2026112 T000000Z").is_none());
    assert!(parse_amz_date("20261129T240000Z").is_none());
    assert_eq!(
        parse_amz_date("20261129T055800Z").map(|t| t.unix_timestamp()),
        Some(1_795_931_880)
    );
    assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1500)), -2);
}
