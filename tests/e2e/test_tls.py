"""TLS and mTLS with real clients: boto3 and the AWS CLI over https to a server
whose certificate chains to a CA made here with the `openssl` command, and a
server that requires client certificates (mTLS).

Each server is started with a configuration file (`serve --config`) holding the
`[tls]` section, on a fresh data directory and a free port.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, SSLError

from conftest import AwsCli, _find_aws, b64d
from p11kms_server import Server, ServerError, kms_client

# What a refused TLS connection looks like to botocore: no HTTP response at all.
NO_RESPONSE = (ConnectionError, HTTPClientError)


# --------------------------------------------------------------------------
# A throwaway PKI, made with the openssl command
# --------------------------------------------------------------------------
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(cwd: Path, *args: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"


def _make_ca(cwd: Path, name: str) -> None:
    _openssl(
        cwd, "req", "-x509", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "2", "-subj", f"/CN=p11kms e2e {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )


def _make_leaf(cwd: Path, ca: str, name: str, usage: str) -> None:
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    _openssl(cwd, "req", "-new", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}")
    _openssl(cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem; server.pem/.key (localhost, 127.0.0.1) and client.pem/.key under it;
    rogue-ca.pem and rogue-client.pem/.key under that one."""
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    _make_leaf(d, "ca", "server", "serverAuth")
    _make_leaf(d, "ca", "client", "clientAuth")
    _make_leaf(d, "rogue-ca", "rogue-client", "clientAuth")
    return d


def _start(binary, workdir: Path, tls_section: str) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "p11kms.toml"
    config.write_text(tls_section)
    server = Server(binary, workdir=workdir, args=["--config", str(config)], name="tls")
    try:
        server.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    return server


@pytest.fixture(scope="module")
def tls_server(p11kms_binary, pki, tmp_path_factory):
    server = _start(
        p11kms_binary,
        tmp_path_factory.mktemp("tls-server"),
        f'[tls]\ncert_file = "{pki / "server.pem"}"\nkey_file = "{pki / "server.key"}"\n',
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(p11kms_binary, pki, tmp_path_factory):
    server = _start(
        p11kms_binary,
        tmp_path_factory.mktemp("mtls-server"),
        f'[tls]\ncert_file = "{pki / "server.pem"}"\nkey_file = "{pki / "server.key"}"\n'
        f'client_ca_file = "{pki / "ca.pem"}"\n',
    )
    yield server
    server.stop()


def _round_trip(kms) -> str:
    key_id = kms.create_key(Description="p11kms-e2e-tls")["KeyMetadata"]["KeyId"]
    plain = os.urandom(64)
    blob = kms.encrypt(KeyId=key_id, Plaintext=plain, EncryptionContext={"via": "tls"})["CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"via": "tls"})
    assert out["Plaintext"] == plain and out["KeyId"].endswith(key_id)
    return key_id


def _audit_records(server: Server, operation: str, timeout: float = 10.0) -> list[dict]:
    path = server.data_dir / "audit.log"
    deadline = time.monotonic() + timeout
    while True:
        records = []
        if path.exists():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        found = [r for r in records if r.get("operation") == operation]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------
def test_ready_line_says_https(tls_server):
    assert tls_server.endpoint.startswith("https://127.0.0.1:"), tls_server.endpoint


def test_boto3_trusting_the_test_ca_round_trips(tls_server, pki):
    kms = kms_client(tls_server.endpoint, verify=str(pki / "ca.pem"))
    key_id = _round_trip(kms)
    # The client address still reaches the handlers over TLS (it is in the audit trail).
    records = [r for r in _audit_records(tls_server, "Encrypt") if any(key_id in a for a in r.get("key_arns", []))]
    assert records and records[0]["source_ip"] == "127.0.0.1", records


def test_boto3_with_the_system_trust_store_refuses_the_server(tls_server, monkeypatch):
    for var in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(var, raising=False)
    kms = kms_client(tls_server.endpoint)
    with pytest.raises(SSLError) as info:
        kms.list_keys()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value), info.value


def test_aws_cli_with_ca_bundle(tls_server, pki, tmp_path):
    exe = _find_aws()
    if exe is None:
        pytest.fail("the AWS CLI (`aws`) is not installed; scripts/test.sh installs it", pytrace=False)
    aws = AwsCli(exe, tls_server.endpoint, tmp_path)
    ca = str(pki / "ca.pem")
    key_id = aws.json("create-key", "--ca-bundle", ca, "--description", "tls cli")["KeyMetadata"]["KeyId"]
    blob = aws.json(
        "encrypt", "--ca-bundle", ca, "--key-id", key_id, "--plaintext", aws.file("plain.bin", b"over https")
    )["CiphertextBlob"]
    out = aws.json("decrypt", "--ca-bundle", ca, "--ciphertext-blob", aws.file("blob.bin", b64d(blob)))
    assert b64d(out["Plaintext"]) == b"over https"

    aws.env.pop("AWS_CA_BUNDLE", None)
    refused = aws.run("list-keys", check=False)
    assert refused.returncode != 0
    assert "SSL validation failed" in refused.stderr or "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr


# --------------------------------------------------------------------------
# mTLS
# --------------------------------------------------------------------------
def test_mtls_client_with_a_certificate_from_the_client_ca_round_trips(mtls_server, pki):
    kms = kms_client(
        mtls_server.endpoint,
        verify=str(pki / "ca.pem"),
        client_cert=(str(pki / "client.pem"), str(pki / "client.key")),
    )
    _round_trip(kms)


def test_mtls_client_without_a_certificate_is_refused(mtls_server, pki):
    kms = kms_client(mtls_server.endpoint, verify=str(pki / "ca.pem"))
    with pytest.raises(NO_RESPONSE) as info:
        kms.list_keys()
    assert not isinstance(info.value, ClientError)

    # The same with a bare TLS socket: the handshake is refused and no HTTP byte comes back.
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    port = int(mtls_server.endpoint.rsplit(":", 1)[1])
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                while chunk := tls.recv(4096):
                    answer += chunk
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    assert b"HTTP/1.1" not in answer
    assert b"client certificate refused" in _wait_output(mtls_server, b"client certificate refused")


def test_mtls_client_certificate_from_another_ca_is_refused(mtls_server, pki):
    kms = kms_client(
        mtls_server.endpoint,
        verify=str(pki / "ca.pem"),
        client_cert=(str(pki / "rogue-client.pem"), str(pki / "rogue-client.key")),
    )
    with pytest.raises(NO_RESPONSE) as info:
        kms.list_keys()
    assert not isinstance(info.value, ClientError)
    # ... and the server keeps serving those it trusts.
    good = kms_client(
        mtls_server.endpoint,
        verify=str(pki / "ca.pem"),
        client_cert=(str(pki / "client.pem"), str(pki / "client.key")),
    )
    assert "Keys" in good.list_keys()


def _wait_output(server: Server, needle: bytes, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        out = server.output()
        if needle in out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def test_secure_transport_condition_sees_tls(tls_server, pki):
    """A key policy can demand TLS: `aws:SecureTransport` is "true" on this listener."""
    kms = kms_client(tls_server.endpoint, verify=str(pki / "ca.pem"))
    account = "111122223333"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "kms:*",
             "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}},
        ],
    }
    key = kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"over tls")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"over tls"
