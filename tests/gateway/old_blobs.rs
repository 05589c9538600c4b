//! Frozen ciphertexts: symmetric blobs issued by commit ca7dec4 (format 1, scheme 1), with the
//! data directory that issued them, in `tests/data/old-blobs/<token>/` (made by
//! `tests/data/old-blobs/generate.py`; see its README). Whatever version is built must still,
//! on a copy of that data directory:
//!
//! - decrypt every blob with its context, naming its key and its key material;
//! - refuse it with a wrong context, and refuse a copy with one byte changed (header, key id,
//!   material id, nonce, wrapped key, IV, payload, tag), on Decrypt and on ReEncrypt;
//! - re-encrypt it to another key of the corpus and back to its own key.
//!
//! One test per token. Kryoptic's runs only when its library is there, as in
//! `tests/kryoptic.rs`: without it the test says so and passes, except in CI (`CI` set).

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::*;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::EncryptionAlgorithmSpec;
use aws_sdk_kms::Client;
use serde::Deserialize;

/// Offsets of scheme 1 (src/kms/ciphertext.rs at ca7dec4), frozen with the corpus.
const KEY_ID_AT: usize = 2;
const MATERIAL_AT: usize = 18;
const NONCE_AT: usize = 50;
const WRAPPED_AT: usize = 66;
const IV_AT: usize = 106;
const PAYLOAD_AT: usize = 118;

/// The changed copies of each blob: (offset, XOR mask, what it hits). `None` is the last
/// byte (the GCM tag's). Byte 1 also becomes 2 and 3: an old blob relabelled with a newer
/// scheme id must not open either.
const TAMPERS: &[(Option<usize>, u8, &str)] = &[
    (Some(0), 0xff, "format version"),
    (Some(1), 0xff, "scheme id"),
    (Some(1), 0x03, "scheme id 1 -> 2"),
    (Some(1), 0x02, "scheme id 1 -> 3"),
    (Some(KEY_ID_AT + 5), 0x01, "key id"),
    (Some(MATERIAL_AT + 7), 0x80, "key-material id"),
    (Some(NONCE_AT + 3), 0x01, "nonce"),
    (Some(WRAPPED_AT + 20), 0x01, "wrapped data key"),
    (Some(IV_AT + 5), 0x01, "IV"),
    (Some(PAYLOAD_AT), 0x01, "payload's first byte"),
    (None, 0x01, "last byte"),
];

#[derive(Deserialize)]
struct Manifest {
    token: String,
    commit: String,
    keys: Vec<CorpusKey>,
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct CorpusKey {
    key_id: String,
    /// Oldest first; the last is the key's current material.
    materials: Vec<String>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    made_by: String,
    key_id: String,
    encryption_context: HashMap<String, String>,
    plaintext_hex: String,
    blob_base64: String,
    key_material_id: String,
}

impl Entry {
    fn blob(&self) -> Vec<u8> {
        unb64(&self.blob_base64)
    }

    fn plaintext(&self) -> Vec<u8> {
        hex::decode(&self.plaintext_hex).expect("plaintext_hex")
    }
}

fn fixture(token: &str) -> PathBuf {
    repository_root().join("tests/data/old-blobs").join(token)
}

/// The token's manifest, or `None` (with a message) when its fixture is not in the tree,
/// outside CI.
fn load_manifest(token: &str) -> Option<Manifest> {
    let path = fixture(token).join("manifest.json");
    if !path.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the old-blobs corpus: {} is missing",
            path.display()
        );
        eprintln!("SKIPPED: no {}", path.display());
        return None;
    }
    let text = std::fs::read_to_string(&path).expect("read manifest.json");
    let manifest: Manifest = serde_json::from_str(&text).expect("parse manifest.json");
    assert_eq!(manifest.token, token, "{}", path.display());
    Some(manifest)
}

/// What the corpus must be: scheme-1 blobs only, each naming its key and material, and the
/// coverage it was made with (so that a thinner or newer corpus cannot slip in).
fn check_corpus(manifest: &Manifest) {
    assert_eq!(
        manifest.commit, "ca7dec4",
        "the corpus is frozen at ca7dec4"
    );
    assert!(manifest.entries.len() >= 20, "about 25 blobs per token");
    for e in &manifest.entries {
        let blob = e.blob();
        assert_eq!(
            &blob[..2],
            &[1, 1],
            "{}: not format 1, scheme 1; the corpus must not be regenerated with a newer scheme",
            e.name
        );
        let key_id = uuid::Uuid::parse_str(&e.key_id).expect("key_id is a UUID");
        assert_eq!(
            &blob[KEY_ID_AT..MATERIAL_AT],
            key_id.as_bytes(),
            "{}: key id",
            e.name
        );
        assert_eq!(
            hex::encode(&blob[MATERIAL_AT..NONCE_AT]),
            e.key_material_id,
            "{}: key-material id",
            e.name
        );
        assert_eq!(
            blob.len(),
            PAYLOAD_AT + e.plaintext().len() + 16,
            "{}: length",
            e.name
        );
        let key = manifest.keys.iter().find(|k| k.key_id == e.key_id);
        assert!(
            key.is_some_and(|k| k.materials.contains(&e.key_material_id)),
            "{}: its key or material is not in the manifest's keys",
            e.name
        );
    }
    for made_by in [
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "ReEncrypt",
    ] {
        assert!(
            manifest.entries.iter().any(|e| e.made_by == made_by),
            "no blob made by {made_by}"
        );
    }
    let rotated = manifest
        .keys
        .iter()
        .find(|k| k.materials.len() >= 2)
        .expect("a key rotated on demand");
    for material in &rotated.materials {
        assert!(
            manifest
                .entries
                .iter()
                .any(|e| &e.key_material_id == material),
            "no blob under material {material} of the rotated key"
        );
    }
    for size in [1, 32, 4096] {
        assert!(
            manifest
                .entries
                .iter()
                .any(|e| e.plaintext_hex.len() == 2 * size),
            "no plaintext of {size} bytes"
        );
    }
}

// -------------------------------------------------------------------------------------------
// A gateway on a copy of the fixture's data directory
// -------------------------------------------------------------------------------------------

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read fixture directory") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// `p11kms serve` on a temporary copy of a fixture's data directory.
fn start_on_corpus(token: &str, env: &[(&str, &str)]) -> TestServer {
    let mut env = env.to_vec();
    env.push(("P11KMS_EMBEDDED_TOKEN", token));
    TestServer::start_prepared(&env, |data_dir| {
        copy_tree(&fixture(token).join("data"), data_dir);
        // These hold the absolute path of the directory they were written in, and the
        // gateway writes them only when missing: never take them from the fixture.
        for conf in ["softhsm2.conf", "kryoptic.conf"] {
            let _ = std::fs::remove_file(data_dir.join(conf));
        }
    })
}

// -------------------------------------------------------------------------------------------
// The checks
// -------------------------------------------------------------------------------------------

/// A failed SDK call in one line: its code, HTTP status and message, else the whole error.
fn short<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match (err.code(), err.raw_response()) {
        (Some(code), Some(raw)) => format!(
            "{code} (HTTP {}){}",
            raw.status().as_u16(),
            err.message().map(|m| format!(": {m}")).unwrap_or_default()
        ),
        _ => format!("{}", DisplayErrorContext(err)),
    }
}

/// `Ok` when the call failed with HTTP 400 InvalidCiphertextException.
fn invalid_ciphertext<T, E>(result: Result<T, SdkError<E, HttpResponse>>) -> Result<(), String>
where
    T: Debug,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(value) => Err(format!("succeeded: {value:?}")),
        Err(err) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            if err.code() == Some("InvalidCiphertextException") && status == Some(400) {
                Ok(())
            } else {
                Err(format!(
                    "expected InvalidCiphertextException (HTTP 400), got {}",
                    short(&err)
                ))
            }
        }
    }
}

/// Decrypts `blob` with `context` and checks the plaintext, key and material.
async fn decrypts_to(
    kms: &Client,
    blob: &[u8],
    context: &HashMap<String, String>,
    key_id: Option<&str>,
    want: (&[u8], &str, &str),
) -> Result<(), String> {
    let (plaintext, key_id_expected, material) = want;
    let resp = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(context.clone()))
        .set_key_id(key_id.map(str::to_string))
        .send()
        .await
        .map_err(|e| format!("Decrypt: {}", short(&e)))?;
    let mut wrong = Vec::new();
    if resp.plaintext().map(|p| p.as_ref()) != Some(plaintext) {
        wrong.push("Plaintext".to_string());
    }
    if resp.key_id() != Some(key_arn(key_id_expected).as_str()) {
        wrong.push(format!("KeyId {:?}", resp.key_id()));
    }
    if resp.key_material_id() != Some(material) {
        wrong.push(format!(
            "KeyMaterialId {:?}, expected {material}",
            resp.key_material_id()
        ));
    }
    if resp.encryption_algorithm() != Some(&EncryptionAlgorithmSpec::SymmetricDefault) {
        wrong.push(format!(
            "EncryptionAlgorithm {:?}",
            resp.encryption_algorithm()
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("Decrypt: wrong {}", wrong.join(", ")))
    }
}

/// ReEncrypts `e` to `dest` under `context`, checks the answer's ids, and that the new blob
/// decrypts to the plaintext.
async fn reencrypts(
    kms: &Client,
    e: &Entry,
    dest: &CorpusKey,
    context: &HashMap<String, String>,
) -> Result<(), String> {
    let resp = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(e.blob()))
        .set_source_encryption_context(Some(e.encryption_context.clone()))
        .destination_key_id(&dest.key_id)
        .set_destination_encryption_context(Some(context.clone()))
        .send()
        .await
        .map_err(|err| format!("ReEncrypt to {}: {}", dest.key_id, short(&err)))?;
    let current = dest.materials.last().expect("a material");
    let ids = (
        resp.source_key_id(),
        resp.source_key_material_id(),
        resp.key_id(),
        resp.destination_key_material_id(),
    );
    let want = (
        Some(key_arn(&e.key_id)),
        Some(e.key_material_id.as_str()),
        Some(key_arn(&dest.key_id)),
        Some(current.as_str()),
    );
    if (ids.0, ids.1, ids.2, ids.3) != (want.0.as_deref(), want.1, want.2.as_deref(), want.3) {
        return Err(format!(
            "ReEncrypt to {}: (SourceKeyId, SourceKeyMaterialId, KeyId, \
             DestinationKeyMaterialId) = {ids:?}, expected {want:?}",
            dest.key_id
        ));
    }
    let blob = resp.ciphertext_blob().expect("CiphertextBlob").as_ref();
    decrypts_to(
        kms,
        blob,
        context,
        None,
        (&e.plaintext(), &dest.key_id, current),
    )
    .await
    .map_err(|err| format!("the ReEncrypt output to {}: {err}", dest.key_id))
}

/// Every check on one blob; returns the failures (and counts the checks made).
async fn check_entry(
    kms: &Client,
    manifest: &Manifest,
    e: &Entry,
    checks: &mut usize,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut record = |what: &str, result: Result<(), String>| {
        *checks += 1;
        if let Err(err) = result {
            failures.push(format!("{} [{}]: {what}: {err}", e.name, e.made_by));
        }
    };
    let blob = e.blob();
    let plaintext = e.plaintext();
    let want = (
        plaintext.as_slice(),
        e.key_id.as_str(),
        e.key_material_id.as_str(),
    );

    // Decrypt with its context, without and with the KeyId.
    let ctx = &e.encryption_context;
    record("Decrypt", decrypts_to(kms, &blob, ctx, None, want).await);
    record(
        "Decrypt with KeyId",
        decrypts_to(kms, &blob, ctx, Some(&e.key_id), want).await,
    );

    // Wrong contexts: one pair more; and, for a non-empty one, none and a changed value.
    let mut wrong = vec![("one pair more", {
        let mut c = ctx.clone();
        c.insert("old-blobs-extra".into(), "x".into());
        c
    })];
    if let Some(first) = ctx.keys().min() {
        let mut changed = ctx.clone();
        changed.insert(first.clone(), format!("{}-changed", ctx[first]));
        wrong.push(("no context", HashMap::new()));
        wrong.push(("a value changed", changed));
    }
    for (what, context) in wrong {
        let result = kms
            .decrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .set_encryption_context(Some(context))
            .send()
            .await;
        record(
            &format!("Decrypt with a wrong context ({what})"),
            invalid_ciphertext(result),
        );
    }

    // ReEncrypt to another key of the corpus under a new context, and to its own key.
    let own = manifest
        .keys
        .iter()
        .find(|k| k.key_id == e.key_id)
        .expect("the entry's key");
    let others: Vec<&CorpusKey> = manifest
        .keys
        .iter()
        .filter(|k| k.key_id != e.key_id)
        .collect();
    // Spread the destinations over the other keys.
    let index = manifest
        .entries
        .iter()
        .position(|x| x.name == e.name)
        .unwrap_or(0);
    let other = others[index % others.len()];
    let new_context = context(&[("old-blobs", "re-encrypted"), ("from", &e.name)]);
    record(
        &format!("ReEncrypt to another key ({})", other.key_id),
        reencrypts(kms, e, other, &new_context).await,
    );
    record(
        "ReEncrypt to its own key with its own context",
        reencrypts(kms, e, own, ctx).await,
    );

    // One byte changed: refused by Decrypt and by ReEncrypt.
    for &(at, mask, what) in TAMPERS {
        let mut bad = blob.clone();
        let at = at.unwrap_or(bad.len() - 1);
        bad[at] ^= mask;
        let result = kms
            .decrypt()
            .ciphertext_blob(Blob::new(bad.clone()))
            .set_encryption_context(Some(ctx.clone()))
            .send()
            .await;
        record(
            &format!("Decrypt with byte {at} ({what}) changed"),
            invalid_ciphertext(result),
        );
        let result = kms
            .re_encrypt()
            .ciphertext_blob(Blob::new(bad))
            .set_source_encryption_context(Some(ctx.clone()))
            .destination_key_id(&other.key_id)
            .send()
            .await;
        record(
            &format!("ReEncrypt with byte {at} ({what}) changed"),
            invalid_ciphertext(result),
        );
    }
    failures
}

async fn run_corpus(token: &str, manifest: &Manifest, env: &[(&str, &str)]) {
    let started = Instant::now();
    let srv = start_on_corpus(token, env);
    let kms = srv.client();

    // The store came through with every key and its current material.
    for key in &manifest.keys {
        let md = describe(&kms, &key.key_id).await;
        assert_eq!(
            md.current_key_material_id(),
            key.materials.last().map(String::as_str),
            "key {}: CurrentKeyMaterialId",
            key.key_id
        );
    }

    let mut checks = 0;
    let mut failures = Vec::new();
    for e in &manifest.entries {
        failures.extend(check_entry(&kms, manifest, e, &mut checks).await);
    }
    assert!(
        failures.is_empty(),
        "{token}: {} of {checks} checks failed on the old blobs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{token}: {} old blobs, {checks} checks passed in {:.1?}",
        manifest.entries.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn old_blobs_open_on_softhsm2() {
    let Some(manifest) = load_manifest("softhsm2") else {
        return;
    };
    check_corpus(&manifest);
    run_corpus("softhsm2", &manifest, &[]).await;
}

#[tokio::test]
async fn old_blobs_open_on_kryoptic() {
    let Some(manifest) = load_manifest("kryoptic") else {
        return;
    };
    check_corpus(&manifest);
    let Some(module) = kryoptic_module_or_skip() else {
        return;
    };
    let module = module.display().to_string();
    run_corpus(
        "kryoptic",
        &manifest,
        &[("P11KMS_KRYOPTIC_MODULE", module.as_str())],
    )
    .await;
}
