//! `scripts/cluster.sh`: a working cluster started and stopped, token mode behind a switch, and what each token holds.

use super::*;

/// `scripts/cluster.sh start DIR 2` prints one line per replica; each replica has a token of
/// its own in one domain; a key made on replica 1 works on replica 2; `stop` ends every
/// process it started, PostgreSQL too; `start` again on the same DIR reuses the database and
/// tokens (no second domain key, no ceremony again), so the key still works, and a third
/// replica asked for is enrolled then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_starts_and_stops_a_working_cluster() {
    let dir = tempfile::Builder::new()
        .prefix("p11kms-cluster-")
        .tempdir()
        .unwrap();
    let started = Instant::now();
    let mut cluster = ScriptCluster::start(dir.path(), &["2"]);
    println!(
        "cluster.sh start DIR 2 (new DIR): {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(cluster.replicas.len(), 2);
    let domain = |i: usize| {
        std::fs::read_to_string(dir.path().join(format!("replica-{i}/domain-member"))).unwrap()
    };
    assert_eq!(domain(1), domain(2));
    let serial = |i: usize| {
        std::fs::read_dir(dir.path().join(format!("replica-{i}/tokens")))
            .unwrap()
            .count()
    };
    assert_eq!((serial(1), serial(2)), (1, 1), "one token directory each");
    let (one, two) = (cluster.client(0), cluster.client(1));
    let key = create_key(&one).await.key_id().to_string();
    let blob = encrypt(&one, &key, b"s").await;
    assert_eq!(decrypt(&two, &blob).await, b"s");
    let pids: Vec<u32> = cluster.replicas.iter().map(|r| r.1).collect();
    cluster.stop();
    for pid in &pids {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "replica {pid} still runs"
        );
    }
    assert!(
        !dir.path().join("pg/data/postmaster.pid").exists(),
        "PostgreSQL still runs"
    );

    let before = domain(1);
    let started = Instant::now();
    let cluster = ScriptCluster::start(dir.path(), &["3"]);
    println!(
        "cluster.sh start DIR 3 (stopped DIR of 2): {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(domain(1), before);
    assert_eq!(domain(3), before);
    let log = std::fs::read_to_string(dir.path().join("ceremony/ceremony.log")).unwrap();
    assert_eq!(log.matches("== domain create").count(), 1, "{log}");
    assert_eq!(log.matches("== join on").count(), 2, "{log}");
    for i in 0..3 {
        assert_eq!(
            decrypt(&cluster.client(i), &blob).await,
            b"s",
            "replica {i}"
        );
    }
}

/// `P11KMS_CLUSTER_KEY_STORAGE=token`: the former layout, one token under DIR/hsm shared by
/// every replica in token mode; a key made on replica 1 works on replica 2, before and after a
/// stop and start (the mode is kept; the replicas start one at a time on the shared token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_keeps_token_mode_behind_a_switch() {
    let dir = tempfile::Builder::new()
        .prefix("p11kms-cluster-token-")
        .tempdir()
        .unwrap();
    let token_mode = [("P11KMS_CLUSTER_KEY_STORAGE", "token")];
    let mut cluster = ScriptCluster::start_with(dir.path(), &["2"], &token_mode);
    assert!(dir.path().join("hsm/user.pin").exists());
    assert!(!dir.path().join("replica-1/tokens").exists());
    let key = create_key(&cluster.client(0)).await.key_id().to_string();
    let blob = encrypt(&cluster.client(0), &key, b"t").await;
    assert_eq!(decrypt(&cluster.client(1), &blob).await, b"t");
    cluster.stop();
    // No switch this time: the DIR's mode is kept.
    let cluster = ScriptCluster::start(dir.path(), &["2"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("key-storage")).unwrap(),
        "token\n"
    );
    for i in 0..2 {
        assert_eq!(
            decrypt(&cluster.client(i), &blob).await,
            b"t",
            "replica {i}"
        );
    }
    assert!(!dir.path().join("replica-1/tokens").exists());
}

/// Keys of every kind made and used through both replicas: each replica's token still holds
/// one object, its copy of the domain key, with the domain's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_holds_only_its_domain_key_whatever_the_keys() {
    let mut cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.client(0), cluster.client(1));
    let specs = [
        (KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt),
        (KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt),
        (KeySpec::Rsa2048, KeyUsageType::SignVerify),
        (KeySpec::EccNistP256, KeyUsageType::SignVerify),
        (KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac),
    ];
    let mut made = 0;
    for round in 0..6 {
        for (spec, usage) in &specs {
            let (maker, user) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let key = maker
                .create_key()
                .key_spec(spec.clone())
                .key_usage(usage.clone())
                .send()
                .await
                .unwrap()
                .key_metadata
                .unwrap()
                .key_id()
                .to_string();
            made += 1;
            // Used on the other replica, which unwraps it into a session object.
            match usage {
                KeyUsageType::EncryptDecrypt if *spec == KeySpec::SymmetricDefault => {
                    assert_eq!(decrypt(user, &encrypt(maker, &key, b"k").await).await, b"k");
                }
                KeyUsageType::EncryptDecrypt => {
                    user.get_public_key().key_id(&key).send().await.unwrap();
                }
                KeyUsageType::SignVerify => {
                    let algorithm = if *spec == KeySpec::Rsa2048 {
                        SigningAlgorithmSpec::RsassaPssSha256
                    } else {
                        SigningAlgorithmSpec::EcdsaSha256
                    };
                    user.sign()
                        .key_id(&key)
                        .message(Blob::new(b"m".to_vec()))
                        .signing_algorithm(algorithm)
                        .send()
                        .await
                        .unwrap();
                }
                _ => {
                    user.generate_mac()
                        .key_id(&key)
                        .message(Blob::new(b"m".to_vec()))
                        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
                        .send()
                        .await
                        .unwrap();
                }
            }
            if round == 5 {
                maker.rotate_key_on_demand().key_id(&key).send().await.ok();
            }
        }
    }
    // The replicas stop first: a login from another process rewrites SoftHSM2's token file.
    cluster.replicas.clear();
    let Tokens::Domain(tokens) = &cluster.tokens else {
        unreachable!()
    };
    for i in 0..2 {
        let objects = token_objects(&tokens.data_dir(i));
        println!("after {made} keys, token {i}: {objects:?}");
        assert_eq!(
            objects,
            vec![(
                "p11kms-domain".to_string(),
                hex::decode(&tokens.domain_id).unwrap()
            )],
            "token {i}"
        );
    }
}

/// The label and id of every token object in the embedded token under `data_dir`, logged
/// in as the user (private objects count too).
fn token_objects(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType};
    use cryptoki::session::UserType;
    use secrecy::ExposeSecret;
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
    let mut objects = Vec::new();
    for handle in session.find_objects(&[Attribute::Token(true)]).unwrap() {
        let mut label = String::new();
        let mut id = Vec::new();
        for attribute in session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
            .unwrap()
        {
            match attribute {
                Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Id(i) => id = i,
                _ => {}
            }
        }
        objects.push((label, id));
    }
    drop(session);
    pkcs11.finalize().unwrap();
    objects
}
