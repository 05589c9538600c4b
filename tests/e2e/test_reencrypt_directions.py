"""boto3 end to end: ReEncrypt in every direction between symmetric and RSA keys, with OAEP
SHA-1 and SHA-256 on either side, starting from RSA ciphertexts made offline by Python
`cryptography` from GetPublicKey (a library that is not the HSM).

On a token with AES-GCM key wrapping and OAEP SHA-256 (Kryoptic) every direction must run.
On SoftHSM 2.6.1 the gateway must refuse what the token lacks (symmetric <-> RSA needs GCM
wrap/unwrap; SHA-256 needs OAEP SHA-256) with UnsupportedOperationException naming the
mechanism, and nothing else; RSA -> RSA with SHA-1 must run there too.
"""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_der_public_key

from p11kms_server import E2E_TOKEN

ALGOS = {"RSAES_OAEP_SHA_1": hashes.SHA1, "RSAES_OAEP_SHA_256": hashes.SHA256}
FULL_TOKEN = E2E_TOKEN == "kryoptic"


def _offline(kms, key_id: str, algo: str, message: bytes) -> bytes:
    pub = load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    h = ALGOS[algo]()
    return pub.encrypt(message, padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None))


def _run_or_refused(call, must_run: bool):
    """The call's answer, or None when it was refused as the token's gap (only allowed where
    the token lacks a mechanism)."""
    try:
        return call()
    except ClientError as err:
        e = err.response["Error"]
        assert not must_run, f"refused on a token that has every mechanism: {e}"
        assert e["Code"] == "UnsupportedOperationException", e
        assert "does not support the mechanism" in e["Message"], e
        return None


@pytest.fixture(scope="module")
def keys(kms):
    def make(**kw):
        return kms.create_key(**kw)["KeyMetadata"]["KeyId"]

    return {
        "rsa_a": make(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT"),
        "rsa_b": make(KeySpec="RSA_3072", KeyUsage="ENCRYPT_DECRYPT"),
        "sym": make(Description="re-encrypt directions"),
    }


@pytest.mark.parametrize("src_algo", list(ALGOS))
@pytest.mark.parametrize("dst_algo", list(ALGOS))
def test_rsa_to_rsa(kms, keys, src_algo, dst_algo):
    message = os.urandom(100)
    try:
        offline = _offline(kms, keys["rsa_a"], src_algo, message)
    except Exception as err:  # noqa: BLE001 - cryptography without SHA-1 OAEP would be a setup gap
        pytest.fail(f"cryptography cannot make the offline ciphertext: {err}")
    must_run = FULL_TOKEN or "SHA_256" not in src_algo + dst_algo
    out = _run_or_refused(
        lambda: kms.re_encrypt(
            CiphertextBlob=offline,
            SourceKeyId=keys["rsa_a"],
            SourceEncryptionAlgorithm=src_algo,
            DestinationKeyId=keys["rsa_b"],
            DestinationEncryptionAlgorithm=dst_algo,
        ),
        must_run,
    )
    if out is None:
        return
    assert out["SourceEncryptionAlgorithm"] == src_algo
    assert out["DestinationEncryptionAlgorithm"] == dst_algo
    assert len(out["CiphertextBlob"]) == 384, "an RSA_3072 ciphertext is 384 bytes"
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], KeyId=keys["rsa_b"], EncryptionAlgorithm=dst_algo)
    assert back["Plaintext"] == message


@pytest.mark.parametrize("algo", list(ALGOS))
def test_rsa_to_symmetric(kms, keys, algo):
    message = os.urandom(150)
    offline = _offline(kms, keys["rsa_a"], algo, message)
    out = _run_or_refused(
        lambda: kms.re_encrypt(
            CiphertextBlob=offline,
            SourceKeyId=keys["rsa_a"],
            SourceEncryptionAlgorithm=algo,
            DestinationKeyId=keys["sym"],
            DestinationEncryptionContext={"moved": "from-rsa"},
        ),
        FULL_TOKEN,
    )
    if out is None:
        return
    assert out["SourceEncryptionAlgorithm"] == algo
    assert out["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"moved": "from-rsa"})
    assert back["Plaintext"] == message
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=out["CiphertextBlob"])
    assert info.value.response["Error"]["Code"] == "InvalidCiphertextException"


@pytest.mark.parametrize("algo", list(ALGOS))
def test_symmetric_to_rsa(kms, keys, algo):
    message = os.urandom(200)
    blob = kms.encrypt(KeyId=keys["sym"], Plaintext=message, EncryptionContext={"a": "b"})["CiphertextBlob"]
    out = _run_or_refused(
        lambda: kms.re_encrypt(
            CiphertextBlob=blob,
            SourceEncryptionContext={"a": "b"},
            DestinationKeyId=keys["rsa_b"],
            DestinationEncryptionAlgorithm=algo,
        ),
        FULL_TOKEN,
    )
    if out is None:
        return
    assert out["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert out["DestinationEncryptionAlgorithm"] == algo
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], KeyId=keys["rsa_b"], EncryptionAlgorithm=algo)
    assert back["Plaintext"] == message


def test_symmetric_to_rsa_refuses_a_plaintext_too_long_for_the_destination(kms, keys):
    # RSA_3072 with OAEP SHA-1 takes at most 342 bytes; AWS's ValidationException comes before
    # any capability question, on every token.
    blob = kms.encrypt(KeyId=keys["sym"], Plaintext=os.urandom(343))["CiphertextBlob"]
    with pytest.raises(ClientError) as info:
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=keys["rsa_b"],
                       DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_1")
    assert info.value.response["Error"]["Code"] == "ValidationException", info.value.response
