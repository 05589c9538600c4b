"""Authorization end to end through boto3 and the AWS CLI with several credentials: every
condition key the gateway supports (allowed and denied), grants, cross-account use, the
audit trail's grant ids, and identity policies reloaded on SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from conftest import _find_aws
from p11kms_server import REGION, Server, ServerError, kms_client

A = "111122223333"
B = "444455556666"
ROOT = f"arn:aws:iam::{A}:root"
ALICE = f"arn:aws:iam::{A}:user/alice"
BOB = f"arn:aws:iam::{A}:user/bob"
CAROL = f"arn:aws:iam::{B}:user/carol"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}

USERS = {
    # name: (account, principal, identity policies)
    "alice": (A, ALICE, [ALLOW_ALL]),
    "bob": (A, BOB, []),
    "carol": (B, CAROL, [ALLOW_ALL]),
}


def _config(extra_bob_policies: list[dict] | None = None) -> str:
    lines = ['[[credentials]]', 'access_key_id = "test"', 'secret_access_key = "test"', ""]
    for name, (account, arn, policies) in USERS.items():
        if name == "bob" and extra_bob_policies:
            policies = extra_bob_policies
        lines += [
            "[[credentials]]",
            f'access_key_id = "{name}"',
            f'secret_access_key = "{name}-secret"',
            f'account = "{account}"',
            f'principal_arn = "{arn}"',
            "policies = [" + ", ".join("'" + json.dumps(p) + "'" for p in policies) + "]",
            "",
        ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def server(p11kms_binary, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authz")
    config = workdir / "p11kms.toml"
    config.write_text(_config())
    srv = Server(p11kms_binary, args=["--config", str(config)], workdir=workdir / "srv", name="authz")
    try:
        srv.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    srv.config_path = config
    yield srv
    srv.stop()
    srv.cleanup()


def _client(server, name: str = "test"):
    secret = "test" if name == "test" else f"{name}-secret"
    return kms_client(server.endpoint, access_key=name, secret_key=secret)


def _code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def _denied(fn) -> str:
    with pytest.raises(ClientError) as info:
        fn()
    assert _code(info.value) == "AccessDeniedException", info.value.response["Error"]
    return info.value.response["Error"]["Message"]


def _policy(*statements) -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
                      *statements],
    })


def _allow_bob(action, condition=None) -> dict:
    st = {"Effect": "Allow", "Principal": {"AWS": BOB}, "Action": action, "Resource": "*"}
    if condition:
        st["Condition"] = condition
    return st


def _key(server, *statements, **kwargs) -> str:
    return _client(server).create_key(Policy=_policy(*statements), **kwargs)["KeyMetadata"]["KeyId"]


def _encrypt(kms, key, ctx=None, **kw):
    args = dict(KeyId=key, Plaintext=b"e2e-authz", **kw)
    if ctx is not None:
        args["EncryptionContext"] = ctx
    return kms.encrypt(**args)


# Each case: a statement for bob, then a call bob may make and one he may not.
CONDITION_CASES = {
    "kms:EncryptionContext:<key>": (
        _allow_bob("kms:Encrypt", {"StringEquals": {"kms:EncryptionContext:tenant": "a"}}),
        lambda kms, key: _encrypt(kms, key, {"tenant": "a"}),
        lambda kms, key: _encrypt(kms, key, {"tenant": "b"}),
    ),
    "kms:EncryptionContextKeys": (
        _allow_bob("kms:Encrypt", {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant"]}}),
        lambda kms, key: _encrypt(kms, key, {"tenant": "a"}),
        lambda kms, key: _encrypt(kms, key, {"tenant": "a", "extra": "x"}),
    ),
    "kms:CallerAccount": (
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Encrypt", "Resource": "*",
         "Condition": {"StringEquals": {"kms:CallerAccount": A}, "StringLike": {"aws:PrincipalArn": "*:user/bob"}}},
        lambda kms, key: _encrypt(kms, key),
        None,
    ),
    "kms:ViaService": (
        _allow_bob("kms:Encrypt", {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}),
        None,
        lambda kms, key: _encrypt(kms, key),
    ),
    "kms:GrantIsForAWSResource": (
        _allow_bob("kms:CreateGrant", {"Bool": {"kms:GrantIsForAWSResource": "false"}}),
        lambda kms, key: kms.create_grant(KeyId=key, GranteePrincipal=ALICE, Operations=["Decrypt"]),
        None,
    ),
    "kms:GrantOperations": (
        _allow_bob("kms:CreateGrant", {"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]}}),
        lambda kms, key: kms.create_grant(KeyId=key, GranteePrincipal=ALICE, Operations=["Decrypt"]),
        lambda kms, key: kms.create_grant(KeyId=key, GranteePrincipal=ALICE, Operations=["Decrypt", "Encrypt"]),
    ),
    "kms:EncryptionAlgorithm": (
        _allow_bob("kms:Encrypt", {"StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}}),
        lambda kms, key: _encrypt(kms, key),
        None,
    ),
    "kms:KeySpec": (
        _allow_bob("kms:DescribeKey", {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}),
        lambda kms, key: kms.describe_key(KeyId=key),
        None,
    ),
    "kms:KeyUsage": (
        _allow_bob("kms:DescribeKey", {"StringEquals": {"kms:KeyUsage": "SIGN_VERIFY"}}),
        None,
        lambda kms, key: kms.describe_key(KeyId=key),
    ),
    "aws:PrincipalArn": (
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Encrypt", "Resource": "*",
         "Condition": {"ArnEquals": {"aws:PrincipalArn": BOB}}},
        lambda kms, key: _encrypt(kms, key),
        None,
    ),
    "aws:SourceIp": (
        _allow_bob("kms:Encrypt", {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}),
        lambda kms, key: _encrypt(kms, key),
        None,
    ),
    "aws:SecureTransport (plain HTTP)": (
        _allow_bob("kms:Encrypt", {"Bool": {"aws:SecureTransport": "false"}}),
        lambda kms, key: _encrypt(kms, key),
        None,
    ),
    "aws:SecureTransport (required)": (
        _allow_bob("kms:Encrypt", {"Bool": {"aws:SecureTransport": "true"}}),
        None,
        lambda kms, key: _encrypt(kms, key),
    ),
    "aws:SourceIp (outside)": (
        _allow_bob("kms:Encrypt", {"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}),
        None,
        lambda kms, key: _encrypt(kms, key),
    ),
}


@pytest.mark.parametrize("case", sorted(CONDITION_CASES))
def test_condition_key(server, case):
    statement, allowed, denied = CONDITION_CASES[case]
    key = _key(server, statement)
    bob = _client(server, "bob")
    if allowed:
        allowed(bob, key)
    if denied:
        _denied(lambda: denied(bob, key))


def test_request_alias_condition(server):
    key = _key(server, _allow_bob("kms:Encrypt", {"StringEquals": {"kms:RequestAlias": "alias/e2e-good"}}))
    root = _client(server)
    for name in ("alias/e2e-good", "alias/e2e-bad"):
        root.create_alias(AliasName=name, TargetKeyId=key)
    bob = _client(server, "bob")
    _encrypt(bob, "alias/e2e-good")
    _denied(lambda: _encrypt(bob, "alias/e2e-bad"))
    _denied(lambda: _encrypt(bob, key))


def test_reencrypt_from_and_to_with_dry_run(server):
    src = _key(server, _allow_bob("kms:ReEncryptFrom"))
    dst = _key(server, _allow_bob("kms:ReEncryptTo"))
    root, bob = _client(server), _client(server, "bob")
    blob_src = _encrypt(root, src)["CiphertextBlob"]
    blob_dst = _encrypt(root, dst)["CiphertextBlob"]
    out = bob.re_encrypt(CiphertextBlob=blob_src, DestinationKeyId=dst)
    assert out["SourceKeyId"].endswith(src) and out["KeyId"].endswith(dst)
    assert "kms:ReEncryptFrom" in _denied(lambda: bob.re_encrypt(CiphertextBlob=blob_dst, DestinationKeyId=dst))
    assert "kms:ReEncryptTo" in _denied(lambda: bob.re_encrypt(CiphertextBlob=blob_src, DestinationKeyId=src))
    _denied(lambda: bob.re_encrypt(CiphertextBlob=blob_dst, DestinationKeyId=src, DryRun=True))
    with pytest.raises(ClientError) as info:
        bob.re_encrypt(CiphertextBlob=blob_src, DestinationKeyId=dst, DryRun=True)
    assert _code(info.value) == "DryRunOperationException"


def test_grant_lifecycle_and_audit(server):
    root, bob = _client(server), _client(server, "bob")
    key = root.create_key()["KeyMetadata"]["KeyId"]
    _denied(lambda: _encrypt(bob, key, {"tenant": "a"}))
    grant = root.create_grant(KeyId=key, GranteePrincipal=BOB, Operations=["Encrypt", "Decrypt"],
                              Constraints={"EncryptionContextSubset": {"tenant": "a"}})
    blob = _encrypt(bob, key, {"tenant": "a"}, GrantTokens=[grant["GrantToken"]])["CiphertextBlob"]
    assert bob.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "a"})["Plaintext"] == b"e2e-authz"
    _denied(lambda: _encrypt(bob, key, {"tenant": "b"}))
    [entry] = root.list_grants(KeyId=key)["Grants"]
    assert entry["GrantId"] == grant["GrantId"] and entry["GranteePrincipal"] == BOB
    assert entry["Constraints"] == {"EncryptionContextSubset": {"tenant": "a"}}

    # The audit trail names the grant that authorized bob's request.
    audit = server.data_dir / "audit.log"
    deadline = time.time() + 10
    while time.time() < deadline:
        lines = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
        used = [x for x in lines if x.get("principal_arn") == BOB and x["outcome"] == "OK"
                and any(a.endswith(key) for a in x.get("key_arns", []))]
        if used:
            break
        time.sleep(0.2)
    assert used and all(x.get("grant_ids") == [grant["GrantId"]] for x in used), used

    root.retire_grant(GrantToken=grant["GrantToken"])
    _denied(lambda: _encrypt(bob, key, {"tenant": "a"}))
    g2 = root.create_grant(KeyId=key, GranteePrincipal=BOB, Operations=["Encrypt"])
    _encrypt(bob, key)
    root.revoke_grant(KeyId=key, GrantId=g2["GrantId"])
    _denied(lambda: _encrypt(bob, key))
    with pytest.raises(ClientError) as info:
        _encrypt(bob, key, GrantTokens=["not-a-grant-token"])
    assert _code(info.value) == "InvalidGrantTokenException"


def test_cross_account_with_the_aws_cli(server, tmp_path):
    key = _key(server, {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
                        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*"})
    root = _client(server)
    arn = root.describe_key(KeyId=key)["KeyMetadata"]["Arn"]
    root.create_alias(AliasName="alias/e2e-shared", TargetKeyId=key)
    exe = _find_aws()
    if exe is None:
        pytest.fail("the AWS CLI is not installed", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="carol", AWS_SECRET_ACCESS_KEY="carol-secret", AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE=str(tmp_path / "c"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "s"),
               AWS_MAX_ATTEMPTS="1", AWS_PAGER="")

    def cli(*args):
        return subprocess.run([exe, "--endpoint-url", server.endpoint, "--output", "json", "kms", *args],
                              env=env, capture_output=True, text=True, timeout=120)

    ok = cli("encrypt", "--key-id", arn, "--plaintext", "aGVsbG8=")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["KeyId"] == arn
    by_alias = cli("encrypt", "--key-id", "alias/e2e-shared", "--plaintext", "aGVsbG8=")
    assert by_alias.returncode != 0 and "NotFoundException" in by_alias.stderr, by_alias.stderr
    manage = cli("disable-key", "--key-id", arn)
    assert manage.returncode != 0 and "AccessDeniedException" in manage.stderr, manage.stderr


def test_identity_policies_reload_on_sighup(server):
    key = _client(server).create_key()["KeyMetadata"]["KeyId"]
    bob = _client(server, "bob")
    _denied(lambda: _encrypt(bob, key))
    server.config_path.write_text(_config(extra_bob_policies=[
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]}
    ]))
    try:
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.time() + 10
        while True:
            try:
                _encrypt(bob, key)
                break
            except ClientError as err:
                if _code(err) != "AccessDeniedException" or time.time() > deadline:
                    raise
                time.sleep(0.2)
        _denied(lambda: bob.describe_key(KeyId=key))
    finally:
        server.config_path.write_text(_config())
        os.kill(server.proc.pid, signal.SIGHUP)
