//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases.

use std::collections::HashSet;

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::AliasListEntry;
use aws_sdk_kms::Client;

async fn create_alias(kms: &Client, name: &str, target: &str) {
    kms.create_alias()
        .alias_name(name)
        .target_key_id(target)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateAlias {name}: {e:?}"));
}

/// Every alias, following the paging markers.
async fn all_aliases(kms: &Client, key_id: Option<&str>) -> Vec<AliasListEntry> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..100 {
        let resp = kms
            .list_aliases()
            .set_key_id(key_id.map(str::to_string))
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        out.extend(resp.aliases().iter().cloned());
        if !resp.truncated() {
            return out;
        }
        marker = Some(resp.next_marker().expect("NextMarker").to_string());
    }
    panic!("ListAliases paging does not end");
}

fn find<'a>(list: &'a [AliasListEntry], name: &str) -> Option<&'a AliasListEntry> {
    list.iter().find(|a| a.alias_name() == Some(name))
}

// -------------------------------------------------------------------------------------------
// CreateAlias
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_alias_is_listed_with_arn_and_target() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, md.key_id()).await;
    let list = all_aliases(&kms, None).await;
    let entry = find(&list, &name).expect("alias listed");
    assert_eq!(entry.alias_arn(), Some(alias_arn(&name).as_str()));
    assert_eq!(entry.target_key_id(), Some(md.key_id()));
}

#[tokio::test]
async fn create_alias_accepts_target_key_arn() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, md.arn().unwrap()).await;
    let list = all_aliases(&kms, None).await;
    assert_eq!(
        find(&list, &name).expect("alias listed").target_key_id(),
        Some(md.key_id())
    );
}

#[tokio::test]
async fn create_alias_requires_alias_prefix() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .create_alias()
        .alias_name("noprefix-name")
        .target_key_id(md.key_id())
        .send()
        .await;
    expect_error(res, "ValidationException").assert_message(
        "Alias must start with the prefix \"alias/\". Please see \
         https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
    );
}

#[tokio::test]
async fn create_alias_twice_is_already_exists() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let other = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, md.key_id()).await;
    let res = kms
        .create_alias()
        .alias_name(&name)
        .target_key_id(other.key_id())
        .send()
        .await;
    expect_error(res, "AlreadyExistsException");
    // The alias still points at the first key.
    assert_eq!(describe(&kms, &name).await.key_id(), md.key_id());
}

#[tokio::test]
async fn create_alias_in_reserved_aws_namespace_is_refused() {
    // AWS reserves alias/aws/ for AWS managed keys. The exact code real AWS answers is not on
    // record here (emulators disagree: moto answers NotAuthorizedException, others
    // InvalidAliasNameException or ValidationException), so the authorization-class codes
    // (NotAuthorizedException, AccessDeniedException) and the validation-class codes are
    // accepted. What is pinned: the request fails with 400 and no alias is created.
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .create_alias()
        .alias_name("alias/aws/my-service")
        .target_key_id(md.key_id())
        .send()
        .await;
    expect_error_in(
        res,
        &[
            "NotAuthorizedException",
            "AccessDeniedException",
            "InvalidAliasNameException",
            "ValidationException",
        ],
    );
    let list = all_aliases(&kms, Some(md.key_id())).await;
    assert!(find(&list, "alias/aws/my-service").is_none());
}

#[tokio::test]
async fn create_alias_for_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms
        .create_alias()
        .alias_name(unique_alias())
        .target_key_id(UNKNOWN_KEY_ID)
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

#[tokio::test]
async fn alias_resolves_for_encrypt_and_decrypt() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, md.key_id()).await;
    let resp = kms
        .encrypt()
        .key_id(&name)
        .plaintext(Blob::new("via alias"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.key_id(), md.arn());
    let blob = resp.ciphertext_blob().unwrap().as_ref().to_vec();
    let out = kms
        .decrypt()
        .key_id(alias_arn(&name))
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"via alias");
}

// -------------------------------------------------------------------------------------------
// UpdateAlias
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_alias_retargets_to_another_key() {
    let srv = TestServer::start();
    let kms = srv.client();
    let old = create_key(&kms).await;
    let new = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, old.key_id()).await;
    kms.update_alias()
        .alias_name(&name)
        .target_key_id(new.key_id())
        .send()
        .await
        .unwrap();

    let for_new = all_aliases(&kms, Some(new.key_id())).await;
    assert_eq!(
        find(&for_new, &name)
            .expect("alias listed for the new key")
            .target_key_id(),
        Some(new.key_id())
    );
    let for_old = all_aliases(&kms, Some(old.key_id())).await;
    assert!(
        find(&for_old, &name).is_none(),
        "alias still listed for the old key"
    );

    let resp = kms
        .encrypt()
        .key_id(&name)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.key_id(), new.arn());
}

#[tokio::test]
async fn update_unknown_alias_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let res = kms
        .update_alias()
        .alias_name(unique_alias())
        .target_key_id(md.key_id())
        .send()
        .await;
    expect_error(res, "NotFoundException");
}

#[tokio::test]
async fn update_alias_to_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, md.key_id()).await;
    let res = kms
        .update_alias()
        .alias_name(&name)
        .target_key_id(UNKNOWN_KEY_ID)
        .send()
        .await;
    expect_error(res, "NotFoundException");
    assert_eq!(describe(&kms, &name).await.key_id(), md.key_id());
}

// -------------------------------------------------------------------------------------------
// DeleteAlias
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_alias_removes_it_from_list() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, md.key_id()).await;
    kms.delete_alias().alias_name(&name).send().await.unwrap();
    let list = all_aliases(&kms, None).await;
    assert!(find(&list, &name).is_none(), "deleted alias still listed");
    // The key itself is untouched.
    describe(&kms, md.key_id()).await;
}

#[tokio::test]
async fn deleted_alias_is_not_found_when_used() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, md.key_id()).await;
    kms.delete_alias().alias_name(&name).send().await.unwrap();
    let res = kms
        .encrypt()
        .key_id(&name)
        .plaintext(Blob::new("x"))
        .send()
        .await;
    expect_error(res, "NotFoundException")
        .assert_message(&format!("Alias {} is not found.", alias_arn(&name)));
}

#[tokio::test]
async fn deleted_alias_name_can_be_reused() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let name = unique_alias();
    create_alias(&kms, &name, a.key_id()).await;
    kms.delete_alias().alias_name(&name).send().await.unwrap();
    create_alias(&kms, &name, b.key_id()).await;
    assert_eq!(describe(&kms, &name).await.key_id(), b.key_id());
}

#[tokio::test]
async fn delete_unknown_alias_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms.delete_alias().alias_name(unique_alias()).send().await;
    expect_error(res, "NotFoundException");
}

// -------------------------------------------------------------------------------------------
// ListAliases
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_aliases_returns_all_aliases() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let (na1, na2, nb) = (unique_alias(), unique_alias(), unique_alias());
    create_alias(&kms, &na1, a.key_id()).await;
    create_alias(&kms, &na2, a.key_id()).await;
    create_alias(&kms, &nb, b.key_id()).await;
    let list = all_aliases(&kms, None).await;
    for (name, key) in [(&na1, &a), (&na2, &a), (&nb, &b)] {
        let entry = find(&list, name).unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(entry.alias_arn(), Some(alias_arn(name).as_str()));
        assert_eq!(entry.target_key_id(), Some(key.key_id()));
    }
}

#[tokio::test]
async fn list_aliases_by_key_id_returns_only_that_keys_aliases() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let (na1, na2, nb) = (unique_alias(), unique_alias(), unique_alias());
    create_alias(&kms, &na1, a.key_id()).await;
    create_alias(&kms, &na2, a.key_id()).await;
    create_alias(&kms, &nb, b.key_id()).await;
    let list = all_aliases(&kms, Some(a.key_id())).await;
    let names: HashSet<&str> = list.iter().filter_map(|e| e.alias_name()).collect();
    assert_eq!(names, HashSet::from([na1.as_str(), na2.as_str()]));
    assert!(list.iter().all(|e| e.target_key_id() == Some(a.key_id())));
}

#[tokio::test]
async fn list_aliases_by_key_arn_filters_too() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let (na, nb) = (unique_alias(), unique_alias());
    create_alias(&kms, &na, a.key_id()).await;
    create_alias(&kms, &nb, b.key_id()).await;
    let list = all_aliases(&kms, Some(a.arn().unwrap())).await;
    let names: Vec<&str> = list.iter().filter_map(|e| e.alias_name()).collect();
    assert_eq!(names, vec![na.as_str()]);
}

#[tokio::test]
async fn list_aliases_for_key_without_aliases_is_empty() {
    let srv = TestServer::start();
    let kms = srv.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    create_alias(&kms, &unique_alias(), b.key_id()).await;
    let resp = kms.list_aliases().key_id(a.key_id()).send().await.unwrap();
    assert!(resp.aliases().is_empty(), "{:?}", resp.aliases());
    assert!(!resp.truncated());
}

#[tokio::test]
async fn list_aliases_by_unknown_key_is_not_found() {
    let srv = TestServer::start();
    let kms = srv.client();
    let res = kms.list_aliases().key_id(UNKNOWN_KEY_ID).send().await;
    expect_error(res, "NotFoundException");
}

#[tokio::test]
async fn list_aliases_pages_with_limit_and_marker() {
    let srv = TestServer::start();
    let kms = srv.client();
    let md = create_key(&kms).await;
    let mut created = HashSet::new();
    for _ in 0..5 {
        let name = unique_alias();
        create_alias(&kms, &name, md.key_id()).await;
        created.insert(name);
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let resp = kms
            .list_aliases()
            .limit(2)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert!(
            resp.aliases().len() <= 2,
            "page of {}",
            resp.aliases().len()
        );
        seen.extend(
            resp.aliases()
                .iter()
                .map(|a| a.alias_name().unwrap().to_string()),
        );
        if !resp.truncated() {
            assert!(resp.next_marker().is_none(), "NextMarker on the last page");
            break;
        }
        marker = Some(
            resp.next_marker()
                .expect("NextMarker when truncated")
                .into(),
        );
        assert!(pages < 50, "paging does not end");
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an alias was listed twice: {seen:?}"
    );
    assert!(
        created.is_subset(&unique),
        "created {created:?}, listed {seen:?}"
    );
    assert!(pages >= 3, "5 aliases with Limit 2 need at least 3 pages");
}
