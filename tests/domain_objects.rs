//! Domain-key mode keeps the token's object count constant: a gateway on a fresh embedded
//! SoftHSM2 token creates 1,000 keys (and uses some), and the token still holds exactly one
//! object, the domain key. Counted with `C_FindObjects` over token objects by this process
//! (its own library instance, logged in as the user, so private objects count too). One test
//! per binary: SoftHSM2 reads `SOFTHSM2_CONF` once per process.
//!
//! `P11KMS_DOMAIN_KEYS` sets the number of keys (default 1,000; the README's scale figures
//! used 100,000). The test also prints the latency of a key's first use (a cache miss: the
//! blob is read from the store and unwrapped) and of its second (a hit), over a sample of
//! symmetric keys never used before; run with `--nocapture` to see it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use secrecy::ExposeSecret;

const CLIENTS: usize = 8;
/// Keys whose first and second Encrypt are timed.
const SAMPLE: usize = 200;

fn keys() -> usize {
    std::env::var("P11KMS_DOMAIN_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn quantile(sorted: &[std::time::Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn token_objects(data_dir: &std::path::Path) -> usize {
    let embedded = p11kms::hsm::EmbeddedSoftHsm::prepare(data_dir).unwrap();
    std::env::set_var("SOFTHSM2_CONF", &embedded.conf_path);
    let module = p11kms::hsm::find_softhsm_module().expect("SoftHSM2 is installed");
    let pkcs11 = Pkcs11::new(module).unwrap();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = pkcs11.get_slots_with_initialized_token().unwrap()[0];
    let session = pkcs11.open_ro_session(slot).unwrap();
    let pin = embedded.user_pin().unwrap();
    session
        .login(
            UserType::User,
            Some(&cryptoki::types::AuthPin::new(pin.expose_secret().into())),
        )
        .unwrap();
    let count = session
        .find_objects(&[Attribute::Token(true)])
        .unwrap()
        .len();
    drop(session);
    pkcs11.finalize().unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_holds_only_the_domain_key_whatever_the_number_of_keys() {
    let srv = TestServer::start_with(&[("P11KMS_KEY_STORAGE", "domain")]);
    let kms = srv.client();
    let total_keys = keys();
    let per_client = total_keys / CLIENTS;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let kms = kms.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..per_client {
                let (spec, usage) = match i % 10 {
                    0 => (KeySpec::EccNistP256, KeyUsageType::SignVerify),
                    1 => (KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac),
                    _ => (KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt),
                };
                let key = kms
                    .create_key()
                    .key_spec(spec)
                    .key_usage(usage)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("client {client} CreateKey {i}: {e:?}"))
                    .key_metadata
                    .unwrap()
                    .key_id;
                if i % 10 > 1 && i % 5 == 2 && i > SAMPLE {
                    let blob = encrypt(&kms, &key, b"used").await;
                    assert_eq!(decrypt(&kms, &blob).await, b"used");
                }
                made.push(key);
            }
            made
        }));
    }
    let mut made = Vec::new();
    for task in tasks {
        made.push(task.await.unwrap());
    }
    let total: usize = made.iter().map(Vec::len).sum();
    assert_eq!(total, per_client * CLIENTS);
    eprintln!(
        "created {total} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Symmetric keys of the first client never used yet: first use (miss), then a hit.
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for (i, key) in made[0].iter().enumerate().take(SAMPLE) {
        if i % 10 <= 1 {
            continue;
        }
        let t = std::time::Instant::now();
        encrypt(&kms, key, b"first use").await;
        cold.push(t.elapsed());
        let t = std::time::Instant::now();
        encrypt(&kms, key, b"second use").await;
        warm.push(t.elapsed());
    }
    cold.sort();
    warm.sort();
    eprintln!(
        "Encrypt latency over {} keys, µs: first use (cache miss) median {:.0} p90 {:.0}; \
         second use (hit) median {:.0} p90 {:.0}",
        cold.len(),
        quantile(&cold, 0.5),
        quantile(&cold, 0.9),
        quantile(&warm, 0.5),
        quantile(&warm, 0.9)
    );
    assert_eq!(
        token_objects(srv.data_dir()),
        1,
        "the token should hold the domain key only"
    );
}
