"""What the token holds, seen from outside the server with OpenSC's pkcs11-tool.

* every KMS key's material is a token object that is sensitive and was never
  extractable, so the token refuses to give out CKA_VALUE (checked by asking);
* on-demand rotation adds a second object for the same key;
* when a deletion window ends (with P11KMS_DAY_SECONDS=1, seven "days" are
  seven seconds) the key is gone from the API and its objects from the token.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from p11kms_server import E2E_TOKEN, Server, ServerError, find_binary

SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)


def _softhsm_module() -> str:
    for cand in SOFTHSM_CANDIDATES:
        if os.path.exists(cand):
            return cand
    pytest.fail(f"SoftHSM2 not found at {SOFTHSM_CANDIDATES}", pytrace=False)


class Token:
    """pkcs11-tool against the server's embedded token (SoftHSM2 or Kryoptic)."""

    def __init__(self, data_dir):
        tool = shutil.which("pkcs11-tool")
        if not tool:
            pytest.fail("pkcs11-tool not found (Debian package opensc); scripts/test.sh installs it", pytrace=False)
        self.tool = tool
        if E2E_TOKEN == "kryoptic":
            self.module = os.environ.get("P11KMS_KRYOPTIC_MODULE") or str(
                find_binary().parent / "libkryoptic_pkcs11.so"
            )
            self.env = dict(os.environ, KRYOPTIC_CONF=str(data_dir / "kryoptic.conf"))
        else:
            self.module = _softhsm_module()
            self.env = dict(os.environ, SOFTHSM2_CONF=str(data_dir / "softhsm2.conf"))
        self.pin = (data_dir / "user.pin").read_text().strip()

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.tool, "--module", self.module, "--token-label", "p11kms", "--login", "--pin", self.pin, *args],
            env=self.env, capture_output=True, text=True, timeout=60,
        )

    def objects(self) -> list[dict]:
        """Secret-key objects as dicts with label, id, usage, access."""
        proc = self.run("--list-objects", "--type", "secrkey")
        assert proc.returncode == 0, proc.stderr
        objs, cur = [], None
        for line in proc.stdout.splitlines():
            if line.startswith("Secret Key Object"):
                cur = {"header": line}
                objs.append(cur)
            elif cur is not None and ":" in line and line.startswith("  "):
                name, _, value = line.strip().partition(":")
                cur[name.strip().lower()] = value.strip()
        return objs

    def objects_of(self, key_id: str) -> list[dict]:
        return [o for o in self.objects() if o.get("label", "").endswith(key_id)]


@pytest.fixture
def fast_server(p11kms_binary, tmp_path):
    server = Server(
        p11kms_binary,
        workdir=tmp_path / "srv",
        env={"P11KMS_DAY_SECONDS": "1", "P11KMS_JOB_INTERVAL_MS": "250"},
        name="token",
    )
    try:
        server.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    yield server
    server.cleanup()


def test_key_material_lives_and_dies_in_the_token(fast_server):
    kms = fast_server.client()
    token = Token(fast_server.data_dir)

    doomed = kms.create_key(Description="to be deleted")["KeyMetadata"]
    kept = kms.create_key(Description="kept")["KeyMetadata"]
    blob = kms.encrypt(KeyId=doomed["KeyId"], Plaintext=b"short-lived")["CiphertextBlob"]

    objs = token.objects_of(doomed["KeyId"])
    assert len(objs) == 1, f"expected one token object for {doomed['KeyId']}: {token.objects()}"
    obj = objs[0]
    assert "AES length 32" in obj["header"], obj
    access = [a.strip() for a in obj.get("access", "").split(",")]
    assert "sensitive" in access and "never extractable" in access, obj
    assert "extractable" not in access, obj
    material = kms.describe_key(KeyId=doomed["KeyId"])["KeyMetadata"].get("CurrentKeyMaterialId")
    if material:
        assert obj.get("id", "").lower() == material, obj

    # The token refuses to hand out the key value.
    read = token.run("--read-object", "--type", "secrkey", "--id", obj["id"], "-o", os.devnull)
    assert read.returncode != 0, "pkcs11-tool read a key material's CKA_VALUE"
    assert re.search(r"CKR_ATTRIBUTE_SENSITIVE|CKA_VALUE", read.stdout + read.stderr), read

    # Rotation adds material in the token; the old one stays (old ciphertext needs it).
    kms.rotate_key_on_demand(KeyId=kept["KeyId"])
    deadline = time.monotonic() + 60
    while len(token.objects_of(kept["KeyId"])) < 2:
        assert time.monotonic() < deadline, f"no second token object after rotation: {token.objects()}"
        time.sleep(0.5)

    # Deletion: 7 "days" of one second each, then the job removes key and material.
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    deadline = time.monotonic() + 60
    while True:
        try:
            kms.describe_key(KeyId=doomed["KeyId"])
        except ClientError as err:
            assert err.response["Error"]["Code"] == "NotFoundException", err.response["Error"]
            break
        assert time.monotonic() < deadline, "key still there 60 s after a 7-second deletion window"
        time.sleep(0.5)
    assert token.objects_of(doomed["KeyId"]) == [], "the deleted key's material is still in the token"
    assert doomed["KeyId"] not in {k["KeyId"] for k in kms.list_keys()["Keys"]}
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=blob)
    assert info.value.response["Error"]["Code"] in ("NotFoundException", "InvalidCiphertextException")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # The other key is untouched.
    assert len(token.objects_of(kept["KeyId"])) == 2
    assert kms.decrypt(
        CiphertextBlob=kms.encrypt(KeyId=kept["KeyId"], Plaintext=b"still here")["CiphertextBlob"]
    )["Plaintext"] == b"still here"
