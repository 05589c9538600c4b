//! Principals: who a statement names, and deny and NotPrincipal.

use super::*;

// --- principals ----------------------------------------------------------------------------

#[test]
fn default_key_policy_delegates_to_the_account() {
    let doc = parse(DEFAULT_KEY_POLICY, PolicyKind::Key);
    for action in ["kms:Decrypt", "kms:ScheduleKeyDeletion", "kms:PutKeyPolicy"] {
        assert_eq!(
            evaluate(&doc, action, ROOT),
            Evaluation {
                deny: false,
                allow: AllowMatch::Direct
            }
        );
        assert_eq!(
            evaluate(&doc, action, ALICE),
            Evaluation {
                deny: false,
                allow: AllowMatch::Account
            }
        );
        assert_eq!(evaluate(&doc, action, BOB), Evaluation::default());
        assert_eq!(evaluate(&doc, action, OTHER_ROOT), Evaluation::default());
    }
    let session = "arn:aws:sts::111122223333:assumed-role/KeyAdmin/s1";
    assert_eq!(allow(&doc, "kms:Decrypt", session), AllowMatch::Account);
    // Account-level actions use resource "*".
    let e = evaluate_with(
        &doc,
        "kms:CreateKey",
        "*",
        ROOT,
        &ConditionValues::default(),
    );
    assert_eq!(e.allow, AllowMatch::Direct);
    // Only kms actions.
    assert_eq!(allow(&doc, "s3:GetObject", ROOT), AllowMatch::None);
}

#[test]
fn account_id_principal_matches_like_the_root_arn() {
    let doc =
        key_policy(r#"{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*"}"#);
    assert_eq!(allow(&doc, "kms:Decrypt", ROOT), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Account);
    assert_eq!(allow(&doc, "kms:Decrypt", BOB), AllowMatch::None);
}

#[test]
fn root_arn_principal_respects_the_partition() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws-cn:iam::111122223333:root"},"Action":"kms:*"}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ROOT), AllowMatch::None);
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::None);
    assert_eq!(
        allow(&doc, "kms:Decrypt", "arn:aws-cn:iam::111122223333:root"),
        AllowMatch::Direct
    );
    assert_eq!(
        allow(
            &doc,
            "kms:Decrypt",
            "arn:aws-cn:iam::111122223333:user/alice"
        ),
        AllowMatch::Account
    );
}

#[test]
fn a_root_arn_of_another_account_is_not_the_callers_root() {
    // The caller claims account 111122223333 but its ARN is another account's root.
    let doc = parse(DEFAULT_KEY_POLICY, PolicyKind::Key);
    let e = doc.evaluate(&RequestContext {
        action: "kms:Decrypt",
        resource: KEY_ARN,
        principal_arn: OTHER_ROOT,
        principal_account: ACCOUNT,
        values: &ConditionValues::default(),
    });
    assert_eq!(e.allow, AllowMatch::Account);
}

#[test]
fn everyone_principals_match_directly() {
    for principal in [
        r#""*""#,
        r#"{"AWS":"*"}"#,
        r#"{"AWS":["arn:aws:iam::999999999999:root","*"]}"#,
    ] {
        let doc = key_policy(&format!(
            r#"{{"Effect":"Allow","Principal":{principal},"Action":"kms:Decrypt"}}"#
        ));
        for caller in [ROOT, ALICE, BOB] {
            assert_eq!(
                allow(&doc, "kms:Decrypt", caller),
                AllowMatch::Direct,
                "{principal}"
            );
        }
    }
}

#[test]
fn user_principal_matches_only_that_user() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:user/alice"]},"Action":"kms:Decrypt"}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Decrypt", CAROL), AllowMatch::None);
    assert_eq!(allow(&doc, "kms:Decrypt", ROOT), AllowMatch::None);
    assert_eq!(
        allow(&doc, "kms:Decrypt", "arn:aws:iam::111122223333:user/Alice"),
        AllowMatch::None
    );
}

#[test]
fn the_strongest_allow_wins() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*"},
           {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:Decrypt"}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Encrypt", ALICE), AllowMatch::Account);
    assert_eq!(allow(&doc, "kms:Encrypt", CAROL), AllowMatch::Account);
}

#[test]
fn foreign_principals_never_match() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"Service":"logs.amazonaws.com","Federated":"accounts.google.com","CanonicalUser":"abc"},"Action":"kms:*"}"#,
    );
    for caller in [ROOT, ALICE, BOB] {
        assert_eq!(evaluate(&doc, "kms:Decrypt", caller), Evaluation::default());
    }
}

#[test]
fn role_principal_matches_its_sessions() {
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/ops/KeyAdmin"},"Action":"kms:*"}"#,
    );
    let cases = [
        (
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/alice-session",
            AllowMatch::Direct,
        ),
        (
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/other",
            AllowMatch::Direct,
        ),
        (
            "arn:aws:iam::111122223333:role/ops/KeyAdmin",
            AllowMatch::Direct,
        ),
        (
            "arn:aws:sts::111122223333:assumed-role/KeyUser/alice-session",
            AllowMatch::None,
        ),
        (
            "arn:aws:sts::444455556666:assumed-role/KeyAdmin/alice-session",
            AllowMatch::None,
        ),
        (
            "arn:aws-cn:sts::111122223333:assumed-role/KeyAdmin/s",
            AllowMatch::None,
        ),
        ("arn:aws:iam::111122223333:user/KeyAdmin", AllowMatch::None),
        (
            "arn:aws:sts::111122223333:federated-user/KeyAdmin",
            AllowMatch::None,
        ),
        (ROOT, AllowMatch::None),
    ];
    for (caller, expected) in cases {
        assert_eq!(allow(&doc, "kms:Decrypt", caller), expected, "{caller}");
    }
    // A session principal names that session only.
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/KeyAdmin/s1"},"Action":"kms:*"}"#,
    );
    assert_eq!(
        allow(
            &doc,
            "kms:Decrypt",
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/s1"
        ),
        AllowMatch::Direct
    );
    assert_eq!(
        allow(
            &doc,
            "kms:Decrypt",
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/s2"
        ),
        AllowMatch::None
    );
}

#[test]
fn explicit_deny() {
    let doc = key_policy(
        r#"{"Sid":"All","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*"},
           {"Sid":"NoDelete","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:ScheduleKeyDeletion"}"#,
    );
    assert_eq!(
        evaluate(&doc, "kms:ScheduleKeyDeletion", ALICE),
        Evaluation {
            deny: true,
            allow: AllowMatch::Direct
        }
    );
    assert_eq!(
        evaluate(&doc, "kms:Decrypt", ALICE),
        Evaluation {
            deny: false,
            allow: AllowMatch::Direct
        }
    );
    assert!(!evaluate(&doc, "kms:ScheduleKeyDeletion", CAROL).deny);
    assert_eq!(
        doc.sids().collect::<Vec<_>>(),
        vec![Some("All"), Some("NoDelete")]
    );
}

#[test]
fn deny_applies_through_an_account_match() {
    let doc = key_policy(
        r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:Decrypt"}"#,
    );
    assert_eq!(
        evaluate(&doc, "kms:Decrypt", ALICE),
        Evaluation {
            deny: true,
            allow: AllowMatch::None
        }
    );
    assert!(evaluate(&doc, "kms:Decrypt", ROOT).deny);
    assert!(!evaluate(&doc, "kms:Decrypt", BOB).deny);
    assert!(!evaluate(&doc, "kms:Encrypt", ALICE).deny);
}

#[test]
fn not_principal() {
    // Deny everyone but alice.
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"kms:*"},
           {"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::111122223333:user/alice"]},"Action":"kms:*"}"#,
    );
    assert!(!evaluate(&doc, "kms:Decrypt", ALICE).deny);
    assert!(evaluate(&doc, "kms:Decrypt", CAROL).deny);
    assert!(evaluate(&doc, "kms:Decrypt", ROOT).deny);
    assert!(evaluate(&doc, "kms:Decrypt", BOB).deny);

    // Naming the account spares its root only, not its users.
    let doc =
        key_policy(r#"{"Effect":"Deny","NotPrincipal":{"AWS":"111122223333"},"Action":"kms:*"}"#);
    assert!(!evaluate(&doc, "kms:Decrypt", ROOT).deny);
    assert!(evaluate(&doc, "kms:Decrypt", ALICE).deny);
    assert!(evaluate(&doc, "kms:Decrypt", BOB).deny);

    // A role spares its sessions.
    let doc = key_policy(
        r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/KeyAdmin"},"Action":"kms:*"}"#,
    );
    assert!(
        !evaluate(
            &doc,
            "kms:Decrypt",
            "arn:aws:sts::111122223333:assumed-role/KeyAdmin/s"
        )
        .deny
    );
    assert!(
        evaluate(
            &doc,
            "kms:Decrypt",
            "arn:aws:sts::111122223333:assumed-role/Other/s"
        )
        .deny
    );

    // An Allow with NotPrincipal is a direct match for everyone not listed.
    let doc = key_policy(
        r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::444455556666:user/bob"},"Action":"kms:Decrypt"}"#,
    );
    assert_eq!(allow(&doc, "kms:Decrypt", ALICE), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Decrypt", OTHER_ROOT), AllowMatch::Direct);
    assert_eq!(allow(&doc, "kms:Decrypt", BOB), AllowMatch::None);

    // NotPrincipal "*" leaves nobody; foreign principals exclude nobody.
    let doc = key_policy(r#"{"Effect":"Deny","NotPrincipal":"*","Action":"kms:*"}"#);
    assert!(!evaluate(&doc, "kms:Decrypt", ALICE).deny);
    let doc = key_policy(
        r#"{"Effect":"Deny","NotPrincipal":{"Service":"logs.amazonaws.com"},"Action":"kms:*"}"#,
    );
    assert!(evaluate(&doc, "kms:Decrypt", ALICE).deny);
}

#[test]
fn identity_policies_always_match_the_caller_directly() {
    let doc = parse(
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["kms:Decrypt","kms:Encrypt"],"Resource":"arn:aws:kms:us-east-1:111122223333:key/*"},
            {"Effect":"Deny","Action":"kms:Encrypt","Resource":"*"}]}"#,
        PolicyKind::Identity,
    );
    assert_eq!(
        evaluate(&doc, "kms:Decrypt", ALICE),
        Evaluation {
            deny: false,
            allow: AllowMatch::Direct
        }
    );
    assert_eq!(
        evaluate(&doc, "kms:Encrypt", BOB),
        Evaluation {
            deny: true,
            allow: AllowMatch::Direct
        }
    );
    assert_eq!(evaluate(&doc, "kms:Sign", ALICE), Evaluation::default());
}
