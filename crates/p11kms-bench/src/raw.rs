//! The raw ceiling: the gateway's ciphertext construction called directly through the
//! library's [`Hsm`] API, with no HTTP, no JSON, no SigV4 and no metadata store.
//!
//! Each chain does the host-side work the service core does too (derivation hashes, blob
//! layout and parsing), so the gateway/raw ratio isolates what the gateway adds.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use p11kms::hsm::{Hsm, HsmConfig, KeyMaterials, SymmetricPrimitives};
use p11kms::kms::ciphertext::{self, Envelope};
use p11kms::model::{KeyId, MaterialId};

use super::report::RawRow;
use super::{proc, run_bounds, BenchArgs, Percentiles};

/// A raw chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RawOp {
    /// Encrypt: generate DEK, GCM encrypt, lock the DEK (the token's scheme), destroy.
    Seal,
    /// Decrypt: unlock the DEK, GCM decrypt, destroy.
    Open,
    /// ReEncrypt: unlock the DEK for rewrapping, lock it under the destination, destroy.
    Rewrap,
    /// GenerateDataKey: random bytes, then Seal.
    RandomSeal,
}

impl RawOp {
    pub fn name(self) -> &'static str {
        match self {
            RawOp::Seal => "seal",
            RawOp::Open => "open",
            RawOp::Rewrap => "rewrap",
            RawOp::RandomSeal => "random+seal",
        }
    }
}

/// What one chain needs: a key, its material, contexts and a sealed blob to open.
struct Fixture {
    key: KeyId,
    material: MaterialId,
    source_context: BTreeMap<String, String>,
    destination_context: BTreeMap<String, String>,
    plaintext: Vec<u8>,
    blob: Vec<u8>,
}

/// Runs every raw chain the selected operations need, at every thread count.
pub fn run_matrix(
    args: &BenchArgs,
    module: &Path,
    user_pin: SecretString,
) -> Result<Vec<RawRow>, String> {
    let hsm = Hsm::open(
        HsmConfig {
            module: module.to_path_buf(),
            token_label: p11kms::config::DEFAULT_TOKEN_LABEL.into(),
            user_pin,
            pool_size: args.pool_size,
            // Threads beyond the pool size wait their turn: the ceiling never throttles.
            session_wait: Duration::from_secs(60),
            operation_timeout: None,
            recycle_after_operations: 0,
            // As the gateway does on either embedded token, which every bench runs on.
            session_key_copies: true,
            // The gateway's defaults, or what the bench's environment pins for both.
            context_key_cache: std::env::var("P11KMS_CONTEXT_KEY_CACHE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(p11kms::hsm::DEFAULT_CONTEXT_KEY_CACHE),
            transient_objects_per_session: std::env::var("P11KMS_TRANSIENT_OBJECTS_PER_SESSION")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(p11kms::hsm::DEFAULT_TRANSIENT_OBJECTS_PER_SESSION),
            ciphertext_scheme: std::env::var("P11KMS_CIPHERTEXT_SCHEME")
                .ok()
                .and_then(|v| v.parse().ok()),
        },
        None,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "# raw ceiling: {} (probed key wrap {}, ciphertext scheme {})",
        module.display(),
        hsm.key_wrap().name(),
        hsm.ciphertext_scheme()
    );
    let key = KeyId::new_random();
    let material = MaterialId::new_random();
    hsm.create_material(&key, &material)
        .map_err(|e| format!("raw: cannot create a key material: {e}"))?;
    let result = run_all(args, &hsm, key, material);
    // The gateway would remove this orphan at start-up anyway; leave the token clean.
    let _ = hsm.destroy_material(&material);
    result
}

fn run_all(
    args: &BenchArgs,
    hsm: &Hsm,
    key: KeyId,
    material: MaterialId,
) -> Result<Vec<RawRow>, String> {
    let mut chains: Vec<(RawOp, usize)> = Vec::new();
    for op in &args.ops {
        for size in op.payload_sizes(&args.sizes) {
            let chain = (op.raw(), size);
            if !chains.contains(&chain) {
                chains.push(chain);
            }
        }
    }
    chains.sort();
    let mut rows = Vec::new();
    for (op, size) in chains {
        let plaintext = vec![0x5au8; size];
        let source_context: BTreeMap<String, String> = [("purpose".into(), "bench".into())].into();
        let destination_context: BTreeMap<String, String> =
            [("purpose".into(), "bench-re".into())].into();
        // The second ciphertext of a context is the warm one, as the gateway's client makes.
        let mut blob = Vec::new();
        for _ in 0..2 {
            blob = seal(hsm, &key, &material, &source_context, &plaintext)
                .map_err(|e| format!("raw {}: {e}", op.name()))?;
        }
        let fixture = Fixture {
            key,
            material,
            source_context,
            destination_context,
            plaintext,
            blob,
        };
        // One checked round of the chain before timing it.
        once(hsm, &fixture, op, true).map_err(|e| format!("raw {}: {e}", op.name()))?;
        for &threads in &args.concurrency {
            rows.push(run_one(args, hsm, &fixture, op, threads));
        }
    }
    Ok(rows)
}

fn run_one(args: &BenchArgs, hsm: &Hsm, fixture: &Fixture, op: RawOp, threads: usize) -> RawRow {
    let (duration, max) = run_bounds(args);
    let issued = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let cpu_before = proc::own_cpu_seconds();
    let started = Instant::now();
    let deadline = started + duration;
    let mut samples: Vec<u64> = Vec::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    while issued.fetch_add(1, Ordering::Relaxed) < max {
                        let t = Instant::now();
                        if t >= deadline {
                            break;
                        }
                        if once(hsm, fixture, op, false).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        mine.push(t.elapsed().as_micros() as u64);
                    }
                    mine
                })
            })
            .collect();
        for worker in workers {
            if let Ok(mine) = worker.join() {
                samples.extend(mine);
            }
        }
    });
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, proc::own_cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let done = samples.len() as u64;
    RawRow {
        op,
        size: fixture.plaintext.len(),
        threads,
        ops: done,
        seconds: elapsed.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
        latency: Percentiles::of(samples),
        cpu_per_op_us: cpu.filter(|_| done > 0).map(|c| c * 1e6 / done as f64),
        load: proc::load_average(),
    }
}

/// One run of a chain; `check` verifies its result.
fn once(hsm: &Hsm, f: &Fixture, op: RawOp, check: bool) -> Result<(), String> {
    match op {
        RawOp::Seal => {
            let blob = seal(hsm, &f.key, &f.material, &f.source_context, &f.plaintext)?;
            if check {
                let opened = open(hsm, &f.source_context, &blob)?;
                if opened != f.plaintext {
                    return Err("seal/open round trip mismatch".into());
                }
            }
        }
        RawOp::Open => {
            let opened = open(hsm, &f.source_context, &f.blob)?;
            if check && opened != f.plaintext {
                return Err("open returned the wrong plaintext".into());
            }
        }
        RawOp::Rewrap => {
            let blob = rewrap(hsm, f)?;
            if check {
                let opened = open(hsm, &f.destination_context, &blob)?;
                if opened != f.plaintext {
                    return Err("rewrap round trip mismatch".into());
                }
            }
        }
        RawOp::RandomSeal => {
            let data_key = hsm.generate_random(32).map_err(|e| e.to_string())?;
            let blob = seal(hsm, &f.key, &f.material, &f.source_context, &data_key)?;
            if check && open(hsm, &f.source_context, &blob)? != data_key.as_slice() {
                return Err("random+seal round trip mismatch".into());
            }
        }
    }
    Ok(())
}

fn seal(
    hsm: &Hsm,
    key: &KeyId,
    material: &MaterialId,
    context: &BTreeMap<String, String>,
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    ciphertext::seal(hsm, key, material, context, plaintext).map_err(|e| e.to_string())
}

fn open(hsm: &Hsm, context: &BTreeMap<String, String>, blob: &[u8]) -> Result<Vec<u8>, String> {
    let env = Envelope::parse(blob).map_err(|e| e.to_string())?;
    let plaintext = ciphertext::open(hsm, &env, context).map_err(|e| e.to_string())?;
    Ok(plaintext.to_vec())
}

fn rewrap(hsm: &Hsm, f: &Fixture) -> Result<Vec<u8>, String> {
    let env = Envelope::parse(&f.blob).map_err(|e| e.to_string())?;
    let plan = ciphertext::Plan::new(hsm, &f.key, &f.material, &f.destination_context)
        .map_err(|e| e.to_string())?;
    ciphertext::rewrap(hsm, &env, &f.source_context, &plan).map_err(|e| e.to_string())
}
