"""No secret reaches the server's output, even at P11KMS_LOG=trace.

A dedicated server runs with the most verbose log filter, once with the
default (pretty) format and once with P11KMS_LOG_FORMAT=json.  It accepts a
credential from its config file whose secret access key is a distinctive
random string.  We drive Encrypt / Decrypt / ReEncrypt / GenerateDataKey /
GenerateRandom, RSA Encrypt/Decrypt, Sign, GenerateMac and GenerateDataKeyPair, plus failing requests (bad signatures made with that very
secret, tampered ciphertext, wrong context), then search everything the
server printed (stdout and stderr) for:

* the plaintexts (raw, base64, hex, and Rust's `[1, 2, 3, ...]` Debug form),
* the returned data keys, random bytes and data-key-pair private keys, RSA plaintexts, signed
  and MACed messages (same forms),
* the token's user and SO PINs (the embedded default keeps them in <data>/user.pin, so.pin),
* the credential's secret access key and the SigV4 signing key derived from it,
* every request's `Signature=` value.

Prefixes are searched too, so a value cut short in a log line still counts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from p11kms_server import REGION, Server, ServerError, kms_client

ACCESS_KEY_ID = "AKIAP11KMSLOGTEST01"
ACCOUNT = "111122223333"


def _random_secret(n: int = 40) -> str:
    alphabet = string.ascii_letters + string.digits
    return "LogSecret" + "".join(secrets.choice(alphabet) for _ in range(n - 9))


def _byte_forms(value: bytes) -> list[bytes]:
    """Ways a byte string could show up in a log line."""
    forms = []
    for chunk in {value, value[:15] if len(value) >= 24 else value}:
        forms += [
            base64.b64encode(chunk),
            base64.b64encode(chunk).rstrip(b"="),
            base64.urlsafe_b64encode(chunk).rstrip(b"="),
            chunk.hex().encode(),
            chunk.hex().upper().encode(),
        ]
    if len(value) >= 8:
        forms.append(value)  # raw bytes
        forms.append(", ".join(str(b) for b in value[:8]).encode())  # Vec<u8> Debug
        forms.append(" ".join(f"{b:02x}" for b in value[:8]).encode())
    return [f for f in forms if len(f) >= 8]


def _text_forms(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, raw.hex().encode(), base64.b64encode(raw).rstrip(b"=")]


def _find_leaks(output: bytes, secrets_by_name: dict[str, list[bytes]]) -> list[str]:
    # JSON encoders may escape '/'; undo that so base64 still matches.  The
    # pretty format may colour fields with ANSI escapes; search without them too.
    plain = re.sub(rb"\x1b\[[0-9;]*m", b"", output)
    haystacks = [output, output.replace(b"\\/", b"/"), plain]
    leaks = []
    for name, forms in secrets_by_name.items():
        for form in forms:
            if any(form in h for h in haystacks):
                leaks.append(f"{name}: {form[:40]!r}")
                break
    return leaks


def test_leak_search_finds_what_it_should():
    data = os.urandom(32)
    log = b"DEBUG request body: {\"Plaintext\":\"" + base64.b64encode(data) + b"\"}"
    assert _find_leaks(log, {"p": _byte_forms(data)})
    log = b"TRACE key=" + repr(list(data)).encode()
    assert _find_leaks(log, {"p": _byte_forms(data)})
    log = b"TRACE key=" + data.hex()[:40].encode()
    assert _find_leaks(log, {"p": _byte_forms(data)})
    log = b"{\"pin\":\"" + b"1234abcdpin" + b"\"}"
    assert _find_leaks(log, {"pin": _text_forms("1234abcdpin")})
    assert not _find_leaks(b"nothing to see " * 100, {"p": _byte_forms(data), "pin": _text_forms("1234abcdpin")})


def _signing_key(secret: str, date: str) -> bytes:
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (REGION, "kms", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


class SignatureRecorder:
    def __init__(self):
        self.signatures: list[str] = []
        self.dates: set[str] = set()

    def add_from_headers(self, headers) -> None:
        auth = headers.get("Authorization")
        if isinstance(auth, bytes):
            auth = auth.decode()
        if auth and "Signature=" in auth:
            self.signatures.append(auth.split("Signature=")[1].split(",")[0].strip())
        amz_date = headers.get("X-Amz-Date")
        if isinstance(amz_date, bytes):
            amz_date = amz_date.decode()
        if amz_date:
            self.dates.add(amz_date[:8])

    def hook(self, request, **_kwargs):
        self.add_from_headers(request.headers)


def _raw_call(endpoint, target, body: dict, creds: Credentials, recorder, send_instead: dict | None = None):
    """A hand-signed request; with send_instead, that body (of the same length)
    is sent under the signature made for `body`."""
    data = json.dumps(body).encode()
    req = AWSRequest(
        method="POST",
        url=endpoint + "/",
        data=data,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
    )
    SigV4Auth(creds, "kms", REGION).add_auth(req)
    recorder.add_from_headers(req.headers)
    prepared = req.prepare()
    payload = prepared.body
    if send_instead is not None:
        payload = json.dumps(send_instead).encode()
        assert len(payload) == len(prepared.body)
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    ureq = urllib.request.Request(prepared.url, data=payload, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(ureq, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize("log_format", ["pretty", "json"])
def test_nothing_secret_in_trace_logs(p11kms_binary, tmp_path, log_format):
    secret = _random_secret()
    config = tmp_path / "p11kms.toml"
    config.write_text(
        "[[credentials]]\n"
        f'access_key_id = "{ACCESS_KEY_ID}"\n'
        f'secret_access_key = "{secret}"\n'
        f'account = "{ACCOUNT}"\n'
        f'principal_arn = "arn:aws:iam::{ACCOUNT}:user/log-secrecy"\n'
        'policies = [\'{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}\']\n'
    )
    env = {"P11KMS_LOG": "trace"}
    if log_format == "json":
        env["P11KMS_LOG_FORMAT"] = "json"
    server = Server(p11kms_binary, env=env, args=["--config", str(config)], workdir=tmp_path / "srv",
                    name="logsecrecy")
    try:
        server.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        pin_path = server.data_dir / "user.pin"
        assert pin_path.is_file(), f"the embedded default wrote no {pin_path}"
        assert (pin_path.stat().st_mode & 0o077) == 0, f"{pin_path} is readable by group/others"
        pin = pin_path.read_text().strip()
        assert pin, "empty user PIN"
        so_pin_path = server.data_dir / "so.pin"
        so_pin = so_pin_path.read_text().strip() if so_pin_path.is_file() else None

        recorder = SignatureRecorder()
        kms = kms_client(server.endpoint, ACCESS_KEY_ID, secret)
        kms.meta.events.register("before-send.kms", recorder.hook)

        found: dict[str, list[bytes]] = {}
        key_a = kms.create_key(Description="log secrecy A")["KeyMetadata"]["KeyId"]
        key_b = kms.create_key(Description="log secrecy B")["KeyMetadata"]["KeyId"]

        text_plain = ("secret-plaintext-" + secrets.token_hex(16)).encode()
        bin_plain = os.urandom(48)
        found["printable plaintext"] = _byte_forms(text_plain)
        found["binary plaintext"] = _byte_forms(bin_plain)
        ctx = {"log": "secrecy"}
        ct_text = kms.encrypt(KeyId=key_a, Plaintext=text_plain, EncryptionContext=ctx)["CiphertextBlob"]
        ct_bin = kms.encrypt(KeyId=key_a, Plaintext=bin_plain)["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=ct_text, EncryptionContext=ctx)["Plaintext"] == text_plain
        assert kms.decrypt(CiphertextBlob=ct_bin)["Plaintext"] == bin_plain
        moved = kms.re_encrypt(
            CiphertextBlob=ct_text, SourceEncryptionContext=ctx, DestinationKeyId=key_b,
            DestinationEncryptionContext={"log": "moved"},
        )["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=moved, EncryptionContext={"log": "moved"})["Plaintext"] == text_plain

        dk = kms.generate_data_key(KeyId=key_a, KeySpec="AES_256")
        found["data key (AES_256)"] = _byte_forms(dk["Plaintext"])
        dk64 = kms.generate_data_key(KeyId=key_b, NumberOfBytes=64, EncryptionContext=ctx)
        found["data key (64 bytes)"] = _byte_forms(dk64["Plaintext"])
        kms.re_encrypt(CiphertextBlob=dk64["CiphertextBlob"], SourceEncryptionContext=ctx, DestinationKeyId=key_a)
        rnd = kms.generate_random(NumberOfBytes=64)["Plaintext"]
        found["GenerateRandom bytes"] = _byte_forms(rnd)

        # Asymmetric and HMAC keys: RSA plaintexts, signed and MACed messages, data key pairs.
        rsa_key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
        rsa_plain = os.urandom(40)
        found["RSA plaintext"] = _byte_forms(rsa_plain)
        rsa_ct = kms.encrypt(KeyId=rsa_key, Plaintext=rsa_plain, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
        assert kms.decrypt(KeyId=rsa_key, CiphertextBlob=rsa_ct["CiphertextBlob"],
                           EncryptionAlgorithm="RSAES_OAEP_SHA_1")["Plaintext"] == rsa_plain
        signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        signed = os.urandom(48)
        found["signed message"] = _byte_forms(signed)
        kms.sign(KeyId=signer, Message=signed, SigningAlgorithm="ECDSA_SHA_256")
        mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
        maced = os.urandom(48)
        found["MACed message"] = _byte_forms(maced)
        kms.generate_mac(KeyId=mac_key, Message=maced, MacAlgorithm="HMAC_SHA_256")
        for spec in ("RSA_2048", "ECC_NIST_P256"):
            pair = kms.generate_data_key_pair(KeyId=key_a, KeyPairSpec=spec)
            # The whole PKCS#8 and its tail (the key material, past the fixed DER header).
            found[f"data key pair private key ({spec})"] = (
                _byte_forms(pair["PrivateKeyPlaintext"]) + _byte_forms(pair["PrivateKeyPlaintext"][-48:])
            )

        # Failing requests.
        tampered = bytearray(ct_bin)
        tampered[-1] ^= 1
        for call in (
            lambda: kms.decrypt(CiphertextBlob=bytes(tampered)),
            lambda: kms.re_encrypt(CiphertextBlob=bytes(tampered), DestinationKeyId=key_b),
            lambda: kms.decrypt(CiphertextBlob=ct_text, EncryptionContext={"log": "wrong"}),
        ):
            with pytest.raises(ClientError):
                call()
        wrong = kms_client(server.endpoint, ACCESS_KEY_ID, secret[::-1])
        wrong.meta.events.register("before-send.kms", recorder.hook)
        with pytest.raises(ClientError):
            wrong.encrypt(KeyId=key_a, Plaintext=text_plain)
        creds = Credentials(ACCESS_KEY_ID, secret)
        body = {"KeyId": key_a, "Plaintext": base64.b64encode(bin_plain).decode()}
        other = {"KeyId": key_a, "Plaintext": base64.b64encode(os.urandom(len(bin_plain))).decode()}
        status = _raw_call(server.endpoint, "TrentService.Encrypt", body, creds, recorder, send_instead=other)
        assert 400 <= status < 500, f"a body changed after signing was answered with HTTP {status}"
        status = _raw_call(server.endpoint, "TrentService.GenerateRandom", {"NumberOfBytes": 16},
                           Credentials("AKIAUNKNOWNKEY000000", secret), recorder)
        assert 400 <= status < 500, f"an unknown access key was answered with HTTP {status}"
        status = _raw_call(server.endpoint, "TrentService.GenerateRandom", {"NumberOfBytes": 16},
                           creds, recorder)
        assert status == 200
    finally:
        server.stop()

    found["user PIN"] = _text_forms(pin)
    if so_pin:
        found["SO PIN"] = _text_forms(so_pin)
    found["secret access key"] = _text_forms(secret)
    assert recorder.signatures, "no request signature was recorded"
    for i, sig in enumerate(recorder.signatures):
        found[f"Signature of request {i + 1}"] = [sig.encode(), sig.upper().encode()]
    for date in recorder.dates:
        found[f"SigV4 signing key for {date}"] = _byte_forms(_signing_key(secret, date))

    output = server.output()
    assert len(server.stderr_path.read_bytes()) > 0, "P11KMS_LOG=trace produced no log output at all"
    # Control: the server did log per request at this level (so it had every chance to leak).
    logged_ops = [op for op in (b"ReEncrypt", b"GenerateDataKey", b"GenerateRandom", b"Decrypt") if op in output]
    assert logged_ops, "P11KMS_LOG=trace logged no request at all; the secrecy check would prove nothing"
    if log_format == "json":
        for line in server.stderr_path.read_text(errors="replace").splitlines():
            if line.strip():
                json.loads(line)  # every log line is a JSON object
    leaks = _find_leaks(output, found)
    assert not leaks, (
        f"secrets in the server's output ({server.stdout_path}, {server.stderr_path}):\n  "
        + "\n  ".join(leaks)
    )
