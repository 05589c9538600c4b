"""Fixtures for p11kms end-to-end tests (real clients against a real server).

Environment:
  KMS_ENDPOINT_URL   use this already-running server for the shared fixtures
                     instead of starting one (scripts/test.sh starts one)
  P11KMS_BIN         the p11kms binary; default target/release/p11kms, then
                     target/debug/p11kms (under $CARGO_TARGET_DIR if set).
                     test_trace.py and test_log_secrecy.py always start their
                     own servers from it, whatever KMS_ENDPOINT_URL says.
  P11KMS_E2E_KEEP=1  keep the temporary server directories (logs, traces)
  P11KMS_E2E_TOKEN   the embedded token of every server the tests start:
                     softhsm2 (default) or kryoptic; scripts/test.sh runs the
                     suite once per token
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from p11kms_server import (  # noqa: E402
    E2E_TOKEN,
    DEV_ACCESS_KEY,
    DEV_SECRET_KEY,
    REGION,
    Server,
    ServerError,
    find_binary,
    kms_client,
)


def pytest_report_header(config):
    ep = os.environ.get("KMS_ENDPOINT_URL")
    return [f"p11kms endpoint: {ep or 'started by the session fixture'}  embedded token: {E2E_TOKEN}"]


# What a token lacks, by a substring of the test id, with the reason (the gateway refuses
# these with UnsupportedOperationException naming the mechanism).
TOKEN_GAPS = {
    "kryoptic": {
        "ECC_SECG_P256K1": "Kryoptic 1.5.4 cannot generate secp256k1 keys (CKR_GENERAL_ERROR)",
    },
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for needle, reason in TOKEN_GAPS.get(E2E_TOKEN, {}).items():
            if needle in item.nodeid:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def p11kms_binary() -> Path:
    try:
        return find_binary()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory) -> str:
    given = os.environ.get("KMS_ENDPOINT_URL")
    if given:
        yield given.rstrip("/")
        return
    try:
        server = Server(find_binary(), workdir=tmp_path_factory.mktemp("server"), name="e2e")
        server.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kms(endpoint):
    return kms_client(endpoint)


@pytest.fixture
def create_key(kms):
    """Factory for fresh symmetric keys, scheduled for deletion afterwards."""
    made: list[str] = []

    def _create(**kwargs):
        kwargs.setdefault("Description", "p11kms-e2e")
        md = kms.create_key(**kwargs)["KeyMetadata"]
        made.append(md["KeyId"])
        return md

    yield _create
    for key_id in made:
        try:
            kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        except ClientError:
            pass


@pytest.fixture
def alias_name():
    return f"alias/e2e-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------
# The AWS CLI
# --------------------------------------------------------------------------
def _find_aws() -> str | None:
    # Prefer the CLI installed next to this interpreter (the test virtualenv).
    local = Path(sys.executable).parent / "aws"
    if local.is_file():
        return str(local)
    return shutil.which("aws")


class AwsCli:
    def __init__(self, exe: str, endpoint: str, workdir: Path):
        self.exe = exe
        self.endpoint = endpoint
        self.workdir = workdir
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("AWS_")
        }
        self.env.update(
            AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=DEV_SECRET_KEY,
            AWS_DEFAULT_REGION=REGION,
            # no user config / credentials files may leak into the test
            AWS_CONFIG_FILE=str(workdir / "aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(workdir / "aws-credentials"),
            AWS_MAX_ATTEMPTS="1",
            AWS_RETRY_MODE="standard",
            AWS_PAGER="",
        )

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.exe, "--endpoint-url", self.endpoint, "--output", "json", "kms", *args]
        proc = subprocess.run(
            cmd, env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=120
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"aws {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}",
                pytrace=False,
            )
        return proc

    def json(self, *args: str) -> dict:
        out = self.run(*args).stdout
        return json.loads(out) if out.strip() else {}

    def file(self, name: str, data: bytes) -> str:
        """Write data to a file in the work dir; return the fileb:// URL for it."""
        path = self.workdir / name
        path.write_bytes(data)
        return f"fileb://{path}"


@pytest.fixture
def aws(endpoint, tmp_path) -> AwsCli:
    exe = _find_aws()
    if exe is None:
        pytest.fail("the AWS CLI (`aws`) is not installed; scripts/test.sh installs it", pytrace=False)
    return AwsCli(exe, endpoint, tmp_path)


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
