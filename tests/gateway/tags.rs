//! Tags: TagResource, UntagResource, ListResourceTags, and tag validation in CreateKey.

use std::collections::BTreeMap;

use crate::common::*;
use aws_sdk_kms::types::Tag;
use aws_sdk_kms::Client;

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().tag_key(k).tag_value(v).build().unwrap()
}

async fn tags_of(kms: &Client, key_id: &str) -> BTreeMap<String, String> {
    let resp = kms
        .list_resource_tags()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    resp.tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn new_key_has_no_tags() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let resp = kms
        .list_resource_tags()
        .key_id(md.key_id())
        .send()
        .await
        .unwrap();
    assert!(resp.tags().is_empty());
    assert!(!resp.truncated());
}

#[tokio::test]
async fn tag_resource_adds_tags() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.tag_resource()
        .key_id(md.key_id())
        .tags(tag("tag1", "value1"))
        .tags(tag("tag2", "value2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags_of(&kms, md.key_id()).await,
        map(&[("tag1", "value1"), ("tag2", "value2")])
    );
}

#[tokio::test]
async fn tag_resource_by_key_arn() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.tag_resource()
        .key_id(md.arn().unwrap())
        .tags(tag("k", "v"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(&kms, md.arn().unwrap()).await, map(&[("k", "v")]));
}

#[tokio::test]
async fn tag_resource_updates_existing_values_and_adds_new_ones() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = kms
        .create_key()
        .tags(tag("tag1", "value1"))
        .tags(tag("tag2", "value2"))
        .tags(tag("tag3", "value3"))
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    kms.tag_resource()
        .key_id(md.key_id())
        .tags(tag("tag4", "value4"))
        .tags(tag("tag2", "updated_value2"))
        .tags(tag("tag5", "value5"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags_of(&kms, md.key_id()).await,
        map(&[
            ("tag1", "value1"),
            ("tag2", "updated_value2"),
            ("tag3", "value3"),
            ("tag4", "value4"),
            ("tag5", "value5"),
        ])
    );
}

#[tokio::test]
async fn untag_resource_removes_only_named_keys() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = kms
        .create_key()
        .tags(tag("tag1", "value1"))
        .tags(tag("tag2", "value2"))
        .tags(tag("tag3", "value3"))
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    kms.untag_resource()
        .key_id(md.key_id())
        .tag_keys("tag2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags_of(&kms, md.key_id()).await,
        map(&[("tag1", "value1"), ("tag3", "value3")])
    );
}

#[tokio::test]
async fn untag_resource_of_all_keys_leaves_empty_list() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.tag_resource()
        .key_id(md.key_id())
        .tags(tag("tag1", "value1"))
        .tags(tag("tag2", "value2"))
        .send()
        .await
        .unwrap();
    kms.untag_resource()
        .key_id(md.key_id())
        .tag_keys("tag1")
        .tag_keys("tag2")
        .send()
        .await
        .unwrap();
    assert!(tags_of(&kms, md.key_id()).await.is_empty());
}

#[tokio::test]
async fn untag_resource_of_absent_key_is_harmless() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    kms.tag_resource()
        .key_id(md.key_id())
        .tags(tag("keep", "me"))
        .send()
        .await
        .unwrap();
    kms.untag_resource()
        .key_id(md.key_id())
        .tag_keys("never-set")
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(&kms, md.key_id()).await, map(&[("keep", "me")]));
}

#[tokio::test]
async fn tags_are_per_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    kms.tag_resource()
        .key_id(a.key_id())
        .tags(tag("owner", "a"))
        .send()
        .await
        .unwrap();
    assert!(tags_of(&kms, b.key_id()).await.is_empty());
}

#[tokio::test]
async fn tag_resource_with_duplicate_keys_is_tag_exception() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .tag_resource()
        .key_id(md.key_id())
        .tags(tag("tag1", "value1"))
        .tags(tag("tag1", "another"))
        .send()
        .await;
    expect_error(res, "TagException").assert_message("Duplicate tag keys");
    assert!(tags_of(&kms, md.key_id()).await.is_empty());
}

#[tokio::test]
async fn create_key_with_too_long_tag_key_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let key = "a".repeat(129);
    let res = kms.create_key().tags(tag(&key, "value1")).send().await;
    expect_error(res, "ValidationException").assert_message(&format!(
        "1 validation error detected: Value '{key}' at 'tags.1.member.tagKey' failed to satisfy \
         constraint: Member must have length less than or equal to 128"
    ));
}

#[tokio::test]
async fn create_key_with_too_long_tag_value_is_validation_error() {
    let srv = TestServer::start();
    let kms = srv.client();
    let value = "v".repeat(257);
    let res = kms.create_key().tags(tag("tag1", &value)).send().await;
    expect_error(res, "ValidationException").assert_message(&format!(
        "1 validation error detected: Value '{value}' at 'tags.1.member.tagValue' failed to \
         satisfy constraint: Member must have length less than or equal to 256"
    ));
}

#[tokio::test]
async fn create_key_with_longest_allowed_tag_succeeds() {
    let srv = TestServer::start();
    let kms = srv.client();
    let (k, v) = ("k".repeat(128), "v".repeat(256));
    let md = kms
        .create_key()
        .tags(tag(&k, &v))
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(
        tags_of(&kms, md.key_id()).await,
        map(&[(k.as_str(), v.as_str())])
    );
}

#[tokio::test]
async fn rejected_create_key_creates_no_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let value = "v".repeat(257);
    let res = kms.create_key().tags(tag("tag1", &value)).send().await;
    expect_error(res, "ValidationException");
    let listed = kms.list_keys().send().await.unwrap();
    assert!(listed.keys().is_empty(), "{:?}", listed.keys());
}

#[tokio::test]
async fn list_resource_tags_of_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .list_resource_tags()
        .key_id(key_arn(UNKNOWN_KEY_ID))
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

#[tokio::test]
async fn tag_resource_of_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .tag_resource()
        .key_id(UNKNOWN_KEY_ID)
        .tags(tag("k", "v"))
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

#[tokio::test]
async fn untag_resource_of_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .untag_resource()
        .key_id(UNKNOWN_KEY_ID)
        .tag_keys("k")
        .send()
        .await;
    expect_error(res, "NotFoundException");
}
