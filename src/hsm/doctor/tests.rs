use super::*;

fn trial(id: &'static str, ok: bool) -> Trial {
    Trial {
        id,
        description: "",
        outcome: if ok {
            Ok("ok".into())
        } else {
            Err(TrialFailure::Failed {
                function: "C_X".into(),
                rv: "CKR_Y".into(),
            })
        },
    }
}

#[test]
fn a_feature_needs_every_trial_it_names() {
    let trials = vec![
        trial("aes-keygen", true),
        trial("gcm", true),
        trial("kwp", true),
        trial("derive", false),
        trial("envelope", true),
    ];
    let features = judge(&trials);
    let symmetric = features.iter().find(|f| f.name == FEATURE_SYMMETRIC);
    assert!(symmetric.is_some_and(|f| !f.supported && f.evidence.starts_with("derive:")));
}

#[test]
fn every_feature_names_known_trials() {
    let known = [
        "random",
        "aes-keygen",
        "gcm",
        "kwp",
        "derive",
        "envelope",
        "rewrap",
        "rsa-keygen",
        "oaep-sha1",
        "oaep-sha256",
        "oaep-sha1-wrap",
        "oaep-sha256-wrap",
        "pkcs1-sha256",
        "pkcs1-sha384",
        "pkcs1-sha512",
        "pkcs1-digest",
        "pss-sha256",
        "pss-sha384",
        "pss-sha512",
        "pss-digest",
        "ecdsa-p256",
        "ecdsa-p384",
        "ecdsa-p521",
        "ecdsa-secp256k1",
        "hmac-sha224",
        "hmac-sha256",
        "hmac-sha384",
        "hmac-sha512",
    ];
    for (name, needs) in FEATURES {
        for id in *needs {
            assert!(known.contains(id), "{name} needs unknown trial {id}");
        }
    }
}

#[test]
fn tables_pad_columns() {
    let t = table(
        &["a", "b", "c"],
        &[["long cell".into(), "x".into(), "tail".into()]],
    );
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "| a         | b | c");
    assert_eq!(lines[2], "| long cell | x | tail");
}
