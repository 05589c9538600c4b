//! Authentication and wire protocol, checked with hand-signed raw HTTP requests (hyper +
//! aws-sigv4, `common::plain_http`) and with the SDK where it can express the case.

use std::time::{Duration, SystemTime};

use crate::common::*;
use aws_sdk_kms::primitives::Blob;

const ONE_MIB: usize = 1024 * 1024;

#[track_caller]
fn assert_error(resp: &RawResponse, status: u16, code: &str) {
    assert_eq!(
        resp.status,
        status,
        "status; headers {:?}; body {}",
        resp.headers,
        resp.text()
    );
    assert_eq!(
        resp.error_code().as_deref(),
        Some(code),
        "error code; headers {:?}; body {}",
        resp.headers,
        resp.text()
    );
}

// -------------------------------------------------------------------------------------------
// Authentication
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn signed_request_with_dev_credential_succeeds() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.GenerateRandom", r#"{"NumberOfBytes":16}"#)
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(unb64(resp.json()["Plaintext"].as_str().unwrap()).len(), 16);
}

#[tokio::test]
async fn unsigned_request_is_missing_authentication_token() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.ListKeys", "{}")
        .unsigned()
        .send()
        .await;
    assert_error(&resp, 400, "MissingAuthenticationTokenException");
}

#[tokio::test]
async fn unknown_access_key_is_unrecognized_client() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.ListKeys", "{}")
        .credential("AKIAUNKNOWNKEY000000", "whatever")
        .send()
        .await;
    assert_error(&resp, 400, "UnrecognizedClientException");
}

#[tokio::test]
async fn sdk_with_unknown_access_key_is_unrecognized_client() {
    let srv = TestServer::start();
    let kms = srv.client_with("AKIAUNKNOWNKEY000000", "whatever");
    let res = kms.list_keys().send().await;
    expect_error(res, "UnrecognizedClientException");
}

#[tokio::test]
async fn wrong_secret_is_invalid_signature() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.ListKeys", "{}")
        .credential(DEV_AKID, "not-the-secret")
        .send()
        .await;
    assert_error(&resp, 400, "InvalidSignatureException");
}

#[tokio::test]
async fn sdk_with_wrong_secret_is_invalid_signature() {
    let srv = TestServer::start();
    let kms = srv.client_with(DEV_AKID, "not-the-secret");
    let res = kms.list_keys().send().await;
    expect_error(res, "InvalidSignatureException");
}

#[tokio::test]
async fn body_changed_after_signing_is_invalid_signature() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.GenerateRandom", r#"{"NumberOfBytes":16}"#)
        .send_other_body(r#"{"NumberOfBytes":32}"#)
        .send()
        .await;
    assert_error(&resp, 400, "InvalidSignatureException");
}

#[tokio::test]
async fn signature_ten_minutes_old_is_expired() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.ListKeys", "{}")
        .signed_at(SystemTime::now() - Duration::from_secs(600))
        .send()
        .await;
    assert_error(&resp, 400, "InvalidSignatureException");
    let message = resp.json()["message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains("Signature expired"),
        "message {message:?} does not say the signature expired"
    );
}

#[tokio::test]
async fn signature_two_minutes_old_is_accepted() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.ListKeys", "{}")
        .signed_at(SystemTime::now() - Duration::from_secs(120))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

// -------------------------------------------------------------------------------------------
// Protocol errors
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_target_is_unknown_operation() {
    let srv = TestServer::start();
    let resp = srv.raw("TrentService.FrobnicateKey", "{}").send().await;
    assert_error(&resp, 400, "UnknownOperationException");
}

#[tokio::test]
async fn target_of_another_service_is_unknown_operation() {
    let srv = TestServer::start();
    let resp = srv.raw("DynamoDB_20120810.ListTables", "{}").send().await;
    assert_error(&resp, 400, "UnknownOperationException");
}

#[tokio::test]
async fn malformed_json_is_serialization_exception() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.DescribeKey", r#"{"KeyId": "#)
        .send()
        .await;
    assert_error(&resp, 400, "SerializationException");
}

#[tokio::test]
async fn member_of_wrong_json_type_is_serialization_exception() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.GenerateRandom", r#"{"NumberOfBytes":"ten"}"#)
        .send()
        .await;
    assert_error(&resp, 400, "SerializationException");
}

#[tokio::test]
async fn body_over_one_mib_is_refused_without_server_error() {
    let srv = TestServer::start();
    let mut body = String::from(r#"{"KeyId":""#);
    body.push_str(&"a".repeat(ONE_MIB + 16));
    body.push_str(r#""}"#);
    let resp = srv
        .raw("TrentService.DescribeKey", body)
        .try_send()
        .await
        .unwrap_or_else(|e| panic!("no HTTP answer to an oversized body: {e:?}"));
    assert!(
        resp.status == 413 || resp.status == 400,
        "status {} for an oversized body: {}",
        resp.status,
        resp.text()
    );
    // The server is still healthy afterwards.
    let kms = srv.client();
    kms.list_keys().send().await.unwrap();
}

// -------------------------------------------------------------------------------------------
// Response shape
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn successful_response_is_amz_json_with_request_id() {
    let srv = TestServer::start();
    let resp = srv.raw("TrentService.ListKeys", "{}").send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let ct = resp.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/x-amz-json-1.1"),
        "content-type {ct:?}"
    );
    let rid = resp.header("x-amzn-RequestId").unwrap_or("");
    assert!(!rid.is_empty(), "no x-amzn-RequestId: {:?}", resp.headers);
    assert!(resp.json().is_object());
}

#[tokio::test]
async fn every_response_carries_a_distinct_request_id() {
    let srv = TestServer::start();
    let responses = vec![
        srv.raw("TrentService.ListKeys", "{}").send().await,
        srv.raw("TrentService.ListKeys", "{}").send().await,
        srv.raw("TrentService.DescribeKey", r#"{"KeyId":"x"}"#)
            .send()
            .await,
        srv.raw("TrentService.ListKeys", "{}")
            .unsigned()
            .send()
            .await,
        srv.raw("TrentService.ListKeys", "{}")
            .credential("AKIAUNKNOWNKEY000000", "x")
            .send()
            .await,
        srv.raw("TrentService.Nope", "{}").send().await,
        srv.raw("TrentService.ListKeys", "{").send().await,
    ];
    let mut ids = std::collections::HashSet::new();
    for resp in &responses {
        let rid = resp
            .header("x-amzn-RequestId")
            .unwrap_or_else(|| panic!("no x-amzn-RequestId on {} {}", resp.status, resp.text()));
        assert!(!rid.is_empty());
        assert!(ids.insert(rid.to_string()), "request id {rid} repeated");
    }
}

#[tokio::test]
async fn sdk_sees_request_id_on_errors() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms.describe_key().key_id("fake-key-id").send().await;
    let err = expect_error(res, "NotFoundException");
    assert!(
        err.request_id.as_deref().is_some_and(|r| !r.is_empty()),
        "{}",
        err.display
    );
}

#[tokio::test]
async fn error_response_has_error_type_header_and_type_and_message_in_body() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.DescribeKey", r#"{"KeyId":"fake-key-id"}"#)
        .send()
        .await;
    assert_error(&resp, 400, "NotFoundException");
    let header = resp.header("x-amzn-ErrorType").unwrap_or("");
    assert_eq!(
        header.split(':').next(),
        Some("NotFoundException"),
        "x-amzn-ErrorType {header:?}"
    );
    let ct = resp.header("content-type").unwrap_or("");
    assert!(ct.contains("json"), "content-type {ct:?}");
    let body = resp.json();
    let typ = body["__type"].as_str().unwrap_or("");
    assert!(
        typ == "NotFoundException" || typ.ends_with("#NotFoundException"),
        "__type {typ:?}"
    );
    assert_eq!(
        body["message"].as_str(),
        Some("Invalid keyId 'fake-key-id'")
    );
}

#[tokio::test]
async fn auth_error_has_error_type_header_and_body() {
    let srv = TestServer::start();
    let resp = srv
        .raw("TrentService.ListKeys", "{}")
        .credential("AKIAUNKNOWNKEY000000", "x")
        .send()
        .await;
    let header = resp.header("x-amzn-ErrorType").unwrap_or("");
    assert_eq!(
        header.split(':').next(),
        Some("UnrecognizedClientException"),
        "x-amzn-ErrorType {header:?}"
    );
    let body = resp.json();
    assert!(body["__type"]
        .as_str()
        .is_some_and(|t| t.ends_with("UnrecognizedClientException")));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn invalid_ciphertext_error_body_has_no_message() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let mut blob = encrypt(&kms, md.key_id(), b"x").await;
    *blob.last_mut().unwrap() ^= 0x01;
    let resp = srv
        .raw(
            "TrentService.Decrypt",
            format!(r#"{{"CiphertextBlob":"{}"}}"#, b64(&blob)),
        )
        .send()
        .await;
    assert_error(&resp, 400, "InvalidCiphertextException");
    let body = resp.json();
    assert!(
        body.get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .is_empty()
            && body
                .get("Message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .is_empty(),
        "{body}"
    );
}

#[tokio::test]
async fn application_json_content_type_is_accepted() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = srv
        .raw(
            "TrentService.Encrypt",
            format!(
                r#"{{"KeyId":"{}","Plaintext":"{}"}}"#,
                md.key_id(),
                b64(b"json")
            ),
        )
        .content_type("application/json")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let blob = unb64(resp.json()["CiphertextBlob"].as_str().unwrap());
    assert_eq!(decrypt(&kms, &blob).await, b"json");
}

#[tokio::test]
async fn blobs_are_base64_on_the_wire() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = srv
        .raw(
            "TrentService.Encrypt",
            format!(
                r#"{{"KeyId":"{}","Plaintext":"{}"}}"#,
                md.key_id(),
                b64(b"wire")
            ),
        )
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let json = resp.json();
    assert_eq!(json["KeyId"].as_str(), md.arn());
    assert_eq!(
        json["EncryptionAlgorithm"].as_str(),
        Some("SYMMETRIC_DEFAULT")
    );
    let blob = unb64(json["CiphertextBlob"].as_str().unwrap());
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"wire");
}

#[tokio::test]
async fn invalid_base64_blob_is_refused() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = srv
        .raw(
            "TrentService.Encrypt",
            format!(
                r#"{{"KeyId":"{}","Plaintext":"!!not base64!!"}}"#,
                md.key_id()
            ),
        )
        .send()
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    let code = resp.error_code().unwrap_or_default();
    assert!(
        code == "SerializationException" || code == "ValidationException",
        "code {code:?}: {}",
        resp.text()
    );
}
