//! Domain-key mode keeps the token's object count constant: a gateway on a fresh embedded
//! SoftHSM2 token creates 1,000 keys (and uses some), and the token still holds exactly one
//! object, the domain key. Counted with `C_FindObjects` over token objects by this process
//! (its own library instance, logged in as the user, so private objects count too). One test
//! per binary: SoftHSM2 reads `SOFTHSM2_CONF` once per process.

mod common;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use secrecy::ExposeSecret;

const KEYS: usize = 1000;
const CLIENTS: usize = 8;

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
    let count = session.find_objects(&[Attribute::Token(true)]).unwrap().len();
    drop(session);
    pkcs11.finalize().unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_holds_only_the_domain_key_whatever_the_number_of_keys() {
    let srv = TestServer::start_with(&[("P11KMS_KEY_STORAGE", "domain")]);
    let kms = srv.client();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let kms = kms.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..KEYS / CLIENTS {
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
                if i % 10 > 1 && i % 5 == 2 {
                    let blob = encrypt(&kms, &key, b"used").await;
                    assert_eq!(decrypt(&kms, &blob).await, b"used");
                }
                made.push(key);
            }
            made
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap().len();
    }
    assert_eq!(total, KEYS);
    let listed = kms.list_keys().limit(1000).send().await.unwrap();
    assert_eq!(listed.keys().len(), KEYS);
    assert_eq!(
        token_objects(srv.data_dir()),
        1,
        "the token should hold the domain key only"
    );
}
