//! After the faults: every key works, every acknowledged write is there.

use std::collections::HashMap;
use std::sync::Arc;

use p11kms_bench::{Connection, Endpoint, Reply};
use serde_json::{json, Value};

use crate::load::{b64, field_bytes, verify_signature, Fixture, Ledger, Sealed};

/// What the checks looked at, and what they found wrong.
#[derive(Debug, Default)]
pub struct Verdict {
    pub ciphertexts: usize,
    pub keys: usize,
    pub aliases: usize,
    pub toggles: usize,
    pub problems: Vec<String>,
}

/// Calls until the answer is not ThrottlingException (the checks run at full concurrency
/// too); `Err` describes a failure.
async fn call(
    conn: &mut Connection,
    endpoint: &Endpoint,
    op: &str,
    body: &Value,
) -> Result<Value, String> {
    for _ in 0..20 {
        let reply: Reply = conn
            .call(endpoint, op, body)
            .await
            .map_err(|e| format!("{op}: no response: {e}"))?;
        if reply.status == 200 {
            return reply.json();
        }
        if reply.error_type() == "ThrottlingException" {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        return Err(format!(
            "{op}: HTTP {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    Err(format!("{op}: throttled 20 times"))
}

async fn decrypts(conn: &mut Connection, endpoint: &Endpoint, s: &Sealed) -> Result<(), String> {
    let v = call(
        conn,
        endpoint,
        "Decrypt",
        &json!({"CiphertextBlob": b64(&s.blob), "EncryptionContext": s.context}),
    )
    .await?;
    if field_bytes(&v, "Plaintext").as_deref() != Some(&s.plaintext[..]) {
        return Err("Decrypt returned another plaintext".into());
    }
    if !v["KeyId"].as_str().is_some_and(|k| k.ends_with(&s.key_id)) {
        return Err(format!(
            "Decrypt named {} instead of {}",
            v["KeyId"], s.key_id
        ));
    }
    Ok(())
}

/// Decrypts every acknowledged ciphertext, `concurrency` at a time.
async fn check_ciphertexts(
    endpoint: &Endpoint,
    ciphertexts: Vec<Sealed>,
    concurrency: usize,
) -> Vec<String> {
    let shared = Arc::new(ciphertexts);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let shared = shared.clone();
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut problems = Vec::new();
            let mut conn = Connection::open(&endpoint).await.expect("connect");
            for (i, s) in shared.iter().enumerate().skip(w).step_by(concurrency) {
                if let Err(e) = decrypts(&mut conn, &endpoint, s).await {
                    problems.push(format!(
                        "acknowledged ciphertext {i} under {}: {e}",
                        s.key_id
                    ));
                    conn = Connection::open(&endpoint).await.expect("reconnect");
                }
            }
            problems
        }));
    }
    let mut problems = Vec::new();
    for t in tasks {
        problems.extend(t.await.expect("check task"));
    }
    problems
}

async fn list_all(
    conn: &mut Connection,
    endpoint: &Endpoint,
    op: &str,
    member: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut body = json!({ "Limit": 100 });
        if let Some(m) = &marker {
            body["Marker"] = json!(m);
        }
        let v = call(conn, endpoint, op, &body)
            .await
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        out.extend(v[member].as_array().cloned().unwrap_or_default());
        match v["NextMarker"].as_str() {
            Some(m) if v["Truncated"] == json!(true) => marker = Some(m.to_string()),
            _ => break,
        }
    }
    out
}

/// Every key in the store works: Enabled or Disabled (never stuck in another state),
/// round-trips a plaintext (symmetric keys, after EnableKey) or signs (the signing key).
async fn check_key(
    conn: &mut Connection,
    endpoint: &Endpoint,
    fixture: &Fixture,
    key_id: &str,
) -> Result<(), String> {
    let v = call(conn, endpoint, "DescribeKey", &json!({ "KeyId": key_id })).await?;
    let state = v["KeyMetadata"]["KeyState"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if state != "Enabled" && state != "Disabled" {
        return Err(format!("key {key_id} is {state}"));
    }
    if key_id == fixture.keys.signing {
        let message = b"after the faults";
        let v = call(
            conn,
            endpoint,
            "Sign",
            &json!({"KeyId": key_id, "Message": b64(message), "MessageType": "RAW",
                    "SigningAlgorithm": "ECDSA_SHA_256"}),
        )
        .await?;
        let sig = field_bytes(&v, "Signature").unwrap_or_default();
        if !verify_signature(&fixture.keys.signing_public, message, &sig) {
            return Err(format!("key {key_id}: the signature does not verify"));
        }
        return Ok(());
    }
    if state == "Disabled" {
        call(conn, endpoint, "EnableKey", &json!({ "KeyId": key_id })).await?;
    }
    let plaintext = format!("after the faults, {key_id}").into_bytes();
    let v = call(
        conn,
        endpoint,
        "Encrypt",
        &json!({"KeyId": key_id, "Plaintext": b64(&plaintext)}),
    )
    .await?;
    let sealed = Sealed {
        blob: field_bytes(&v, "CiphertextBlob").unwrap_or_default(),
        plaintext,
        context: json!({}),
        key_id: key_id.to_string(),
    };
    decrypts(conn, endpoint, &sealed)
        .await
        .map_err(|e| format!("key {key_id}: {e}"))
}

pub async fn check(fixture: &Fixture, ledgers: Vec<Ledger>, concurrency: usize) -> Verdict {
    let endpoint = &fixture.endpoint;
    let mut verdict = Verdict::default();
    let mut conn = Connection::open(endpoint).await.expect("connect");

    // Control-plane writes first, before check_key enables the toggled keys.
    for ledger in &ledgers {
        let t = &ledger.toggle;
        verdict.toggles += 1;
        match call(
            &mut conn,
            endpoint,
            "DescribeKey",
            &json!({ "KeyId": t.key_id }),
        )
        .await
        {
            Ok(v) => {
                let enabled = v["KeyMetadata"]["Enabled"] == json!(true);
                let allowed = match t.unacknowledged {
                    None => enabled == t.enabled,
                    Some(tried) => enabled == t.enabled || enabled == tried,
                };
                if !allowed {
                    verdict.problems.push(format!(
                        "key {}: Enabled={enabled}, but the last acknowledged write left it Enabled={} (unacknowledged since: {:?})",
                        t.key_id, t.enabled, t.unacknowledged
                    ));
                }
            }
            Err(e) => verdict.problems.push(e),
        }
    }
    let aliases: HashMap<String, String> = list_all(&mut conn, endpoint, "ListAliases", "Aliases")
        .await
        .into_iter()
        .filter_map(|a| {
            Some((
                a["AliasName"].as_str()?.to_string(),
                a["TargetKeyId"].as_str()?.to_string(),
            ))
        })
        .collect();
    for ledger in &ledgers {
        for a in &ledger.aliases {
            verdict.aliases += 1;
            match aliases.get(&a.name) {
                Some(target) if target != &a.target => verdict
                    .problems
                    .push(format!("{} points at {target}, not {}", a.name, a.target)),
                None if a.acknowledged => verdict
                    .problems
                    .push(format!("acknowledged alias {} is gone", a.name)),
                _ => {}
            }
        }
    }

    // Every key: those made before the load, those CreateKey acknowledged under it, and
    // any a failed CreateKey left behind.
    let listed: Vec<String> = list_all(&mut conn, endpoint, "ListKeys", "Keys")
        .await
        .into_iter()
        .filter_map(|k| k["KeyId"].as_str().map(str::to_string))
        .collect();
    let mut expected: Vec<&String> = vec![
        &fixture.keys.main,
        &fixture.keys.destination,
        &fixture.keys.signing,
    ];
    expected.extend(fixture.keys.toggles.iter());
    expected.extend(ledgers.iter().flat_map(|l| l.created_keys.iter()));
    for key in expected {
        if !listed.contains(key) {
            verdict.problems.push(format!("key {key} is not listed"));
        }
    }
    for key in &listed {
        verdict.keys += 1;
        if let Err(e) = check_key(&mut conn, endpoint, fixture, key).await {
            verdict.problems.push(e);
        }
    }

    let mut ciphertexts: Vec<Sealed> = fixture.sealed.clone();
    for ledger in ledgers {
        ciphertexts.extend(ledger.ciphertexts);
    }
    verdict.ciphertexts = ciphertexts.len();
    verdict
        .problems
        .extend(check_ciphertexts(endpoint, ciphertexts, concurrency).await);
    verdict
}
