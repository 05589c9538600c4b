"""The server as a process: start-up contract, state across restarts, clean
shutdown, concurrent clients and request authentication."""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import re
import socket
import stat

import botocore.auth
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from p11kms_server import DEV_ACCESS_KEY, E2E_TOKEN, Server, ServerError, kms_client

READY_LINE = re.compile(r"^p11kms listening on http://127\.0\.0\.1:(\d+)$")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def _expect(fn, code: str) -> ClientError:
    with pytest.raises(ClientError) as info:
        fn()
    assert _code(info.value) == code, info.value.response.get("Error")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return info.value


# --------------------------------------------------------------------------
# Start-up contract, embedded default, restart, SIGTERM
# --------------------------------------------------------------------------
def test_embedded_default_survives_restart(p11kms_binary, tmp_path):
    workdir = tmp_path / "srv"
    first = Server(p11kms_binary, workdir=workdir, name="restart")
    try:
        first.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        # The contract's stdout: the ready line with the real port, then the dev-credential line.
        lines = first.stdout_path.read_text().splitlines()
        m = READY_LINE.match(lines[0])
        assert m, f"first stdout line is not the ready line: {lines[0]!r}"
        assert int(m.group(1)) != 0 and first.endpoint.endswith(":" + m.group(1))
        assert len(lines) >= 2 and DEV_ACCESS_KEY in lines[1], f"no dev-credential line on stdout: {lines!r}"
        assert sum(1 for line in lines if READY_LINE.match(line)) == 1

        data = first.data_dir
        conf_name = "kryoptic.conf" if E2E_TOKEN == "kryoptic" else "softhsm2.conf"
        for name in ("user.pin", conf_name, "p11kms.sqlite"):
            assert (data / name).is_file(), f"embedded default wrote no <data>/{name}"
        assert _mode(data / "user.pin") & 0o077 == 0, "user.pin is readable by group/others"
        if (data / "so.pin").exists():
            assert _mode(data / "so.pin") & 0o077 == 0, "so.pin is readable by group/others"
        conf = (data / conf_name).read_text()
        if E2E_TOKEN == "kryoptic":
            database = (data / "kryoptic" / "token.sql").resolve()
            assert f'dbargs = "{database}"' in conf, conf
            assert database.is_file(), "no token at <data>/kryoptic/token.sql"
        else:
            assert re.search(rf"^directories\.tokendir\s*=\s*{re.escape(str(data / 'tokens'))}/?\s*$", conf, re.M), conf
            assert (data / "tokens").is_dir() and any((data / "tokens").iterdir()), "no token under <data>/tokens"
        pin_before = (data / "user.pin").read_bytes()

        kms = first.client()
        plain = os.urandom(100)
        key_a = kms.create_key(Description="restart A")["KeyMetadata"]
        key_b = kms.create_key(Description="restart B")["KeyMetadata"]
        kms.create_alias(AliasName="alias/restart", TargetKeyId=key_b["KeyId"])
        blob_a = kms.encrypt(KeyId=key_a["KeyId"], Plaintext=plain, EncryptionContext={"r": "1"})["CiphertextBlob"]
        blob_b_old = kms.encrypt(KeyId="alias/restart", Plaintext=plain)["CiphertextBlob"]
        kms.rotate_key_on_demand(KeyId=key_b["KeyId"])
        kms.enable_key_rotation(KeyId=key_a["KeyId"], RotationPeriodInDays=120)
        kms.tag_resource(KeyId=key_a["KeyId"], Tags=[{"TagKey": "team", "TagValue": "e2e"}])
        kms.disable_key(KeyId=key_b["KeyId"])
        material_b = kms.describe_key(KeyId=key_b["KeyId"])["KeyMetadata"].get("CurrentKeyMaterialId")

        # SIGTERM: a clean exit.
        rc = first.stop()
        assert rc == 0, f"p11kms serve exited with {rc} on SIGTERM\n{first.describe_output()}"
    finally:
        first.stop()

    second = Server(p11kms_binary, workdir=workdir, name="restart")
    try:
        second.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        assert (data / "user.pin").read_bytes() == pin_before, "the user PIN changed across a restart"
        kms = second.client()
        ids = {k["KeyId"] for k in kms.list_keys()["Keys"]}
        assert {key_a["KeyId"], key_b["KeyId"]} <= ids
        md_a = kms.describe_key(KeyId=key_a["KeyId"])["KeyMetadata"]
        md_b = kms.describe_key(KeyId=key_b["KeyId"])["KeyMetadata"]
        assert md_a["KeyState"] == "Enabled" and md_a["Description"] == "restart A"
        assert md_b["KeyState"] == "Disabled"
        assert md_b.get("CurrentKeyMaterialId") == material_b
        status = kms.get_key_rotation_status(KeyId=key_a["KeyId"])
        assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 120
        assert kms.list_resource_tags(KeyId=key_a["KeyId"])["Tags"] == [{"TagKey": "team", "TagValue": "e2e"}]
        assert [r["KeyMaterialId"] for r in kms.list_key_rotations(KeyId=key_b["KeyId"])["Rotations"]] == [material_b]
        assert kms.describe_key(KeyId="alias/restart")["KeyMetadata"]["KeyId"] == key_b["KeyId"]

        assert kms.decrypt(CiphertextBlob=blob_a, EncryptionContext={"r": "1"})["Plaintext"] == plain
        _expect(lambda: kms.decrypt(CiphertextBlob=blob_b_old), "DisabledException")
        kms.enable_key(KeyId=key_b["KeyId"])
        # Pre-rotation material of key B, made before the restart, still opens.
        assert kms.decrypt(CiphertextBlob=blob_b_old)["Plaintext"] == plain
        moved = kms.re_encrypt(CiphertextBlob=blob_a, SourceEncryptionContext={"r": "1"}, DestinationKeyId="alias/restart")
        assert moved["KeyId"] == key_b["Arn"]
        assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])["Plaintext"] == plain
        assert second.stop() == 0
    finally:
        second.cleanup()


def test_configured_credentials_replace_the_dev_credential(p11kms_binary, tmp_path):
    config = tmp_path / "p11kms.toml"
    secret_file = tmp_path / "alice.secret"
    secret_file.write_text("alice-secret-" + os.urandom(8).hex() + "\n")
    secret_file.chmod(0o600)
    config.write_text(
        "[[credentials]]\n"
        'access_key_id = "AKIAALICEE2E0000001"\n'
        f'secret_access_key_file = "{secret_file}"\n'
        'account = "444455556666"\n'
        'principal_arn = "arn:aws:iam::444455556666:user/alice"\n'
        # A user (not the account root) acts only through its identity policies.
        'policies = [\'{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}\']\n'
    )
    server = Server(p11kms_binary, args=["--config", str(config)], workdir=tmp_path / "srv", name="creds")
    try:
        server.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        lines = server.stdout_path.read_text().splitlines()
        assert READY_LINE.match(lines[0]), lines
        alice = kms_client(server.endpoint, "AKIAALICEE2E0000001", secret_file.read_text().strip())
        md = alice.create_key()["KeyMetadata"]
        assert md["Arn"].startswith("arn:aws:kms:us-east-1:444455556666:key/"), md["Arn"]
        assert md["AWSAccountId"] == "444455556666"
        _expect(lambda: server.client().list_keys(), "UnrecognizedClientException")
    finally:
        server.cleanup()


def test_listen_address_in_use_fails_start(p11kms_binary, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        server = Server(p11kms_binary, env={"P11KMS_LISTEN": f"127.0.0.1:{port}"},
                        workdir=tmp_path / "srv", name="busy")
        try:
            with pytest.raises(ServerError, match=r"exited with status [1-9]"):
                server.start(timeout=60)
        finally:
            server.cleanup()


# --------------------------------------------------------------------------
# Concurrency (shared server)
# --------------------------------------------------------------------------
def test_concurrent_clients(kms, create_key):
    keys = [create_key()["KeyId"] for _ in range(3)]

    def worker(i: int) -> int:
        done = 0
        for j in range(12):
            src, dst = keys[(i + j) % 3], keys[(i + j + 1) % 3]
            data = os.urandom(1 + (i * 31 + j) % 500)
            ctx = {"worker": str(i), "n": str(j)}
            blob = kms.encrypt(KeyId=src, Plaintext=data, EncryptionContext=ctx)["CiphertextBlob"]
            moved = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ctx, DestinationKeyId=dst)
            assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])["Plaintext"] == data
            dk = kms.generate_data_key(KeyId=dst, KeySpec="AES_256")
            assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
            done += 1
        return done

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(worker, range(8)))
    assert results == [12] * 8


# --------------------------------------------------------------------------
# Request authentication (shared server, dev credential test/test)
# --------------------------------------------------------------------------
def test_wrong_secret_is_invalid_signature(endpoint):
    client = kms_client(endpoint, DEV_ACCESS_KEY, "not-the-secret")
    _expect(lambda: client.list_keys(), "InvalidSignatureException")


def test_unknown_access_key_is_unrecognized_client(endpoint):
    client = kms_client(endpoint, "AKIANOSUCHKEY0000000", "whatever")
    _expect(lambda: client.generate_random(NumberOfBytes=8), "UnrecognizedClientException")


def test_unsigned_request_is_missing_authentication_token(endpoint):
    import boto3

    client = boto3.session.Session(region_name="us-east-1").client(
        "kms", endpoint_url=endpoint,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    _expect(lambda: client.list_keys(), "MissingAuthenticationTokenException")


def test_stale_signature_is_rejected(endpoint, monkeypatch):
    client = kms_client(endpoint)
    stale = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: stale)
    err = _expect(lambda: client.list_keys(), "InvalidSignatureException")
    assert "Signature expired" in err.response["Error"]["Message"]
