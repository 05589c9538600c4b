"""boto3 end to end for asymmetric and HMAC keys, every spec and algorithm, checked with
Python `cryptography` (a library that is not the HSM): signatures verify against the
GetPublicKey key, OAEP ciphertexts made offline decrypt through the gateway, data key pairs
parse and match their public keys.

Where the token lacks a mechanism (SoftHSM 2.6.1: OAEP with SHA-256), the gateway must answer
UnsupportedOperationException naming it; the tests accept that answer and nothing else.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_der_public_key,
)

MESSAGE = b"p11kms end-to-end asymmetric message"
HASHES = {"256": (hashes.SHA256(), hashlib.sha256), "384": (hashes.SHA384(), hashlib.sha384),
          "512": (hashes.SHA512(), hashlib.sha512)}
RSA_SIGNING = ["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
               "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512"]
ECC = [("ECC_NIST_P256", "ECDSA_SHA_256", ec.SECP256R1), ("ECC_NIST_P384", "ECDSA_SHA_384", ec.SECP384R1),
       ("ECC_NIST_P521", "ECDSA_SHA_512", ec.SECP521R1), ("ECC_SECG_P256K1", "ECDSA_SHA_256", ec.SECP256K1)]
MODULUS = {"RSA_2048": 256, "RSA_3072": 384, "RSA_4096": 512}


def _error(fn) -> dict:
    with pytest.raises(ClientError) as info:
        fn()
    return info.value.response["Error"]


def _verify_locally(pub, algo: str, message: bytes, signature: bytes):
    h, _ = HASHES[algo[-3:]]
    if algo.startswith("ECDSA"):
        pub.verify(signature, message, ec.ECDSA(h))
    elif "PSS" in algo:
        pub.verify(signature, message, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    else:
        pub.verify(signature, message, padding.PKCS1v15(), h)


def _sign_and_check(kms, key, algo):
    pub = load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    _, hashlib_fn = HASHES[algo[-3:]]
    for message_type, data in (("RAW", MESSAGE), ("DIGEST", hashlib_fn(MESSAGE).digest())):
        resp = kms.sign(KeyId=key["KeyId"], Message=data, MessageType=message_type, SigningAlgorithm=algo)
        assert resp["KeyId"] == key["Arn"] and resp["SigningAlgorithm"] == algo
        _verify_locally(pub, algo, MESSAGE, resp["Signature"])
        ok = kms.verify(KeyId=key["KeyId"], Message=data, MessageType=message_type,
                        Signature=resp["Signature"], SigningAlgorithm=algo)
        assert ok["SignatureValid"] is True
    err = _error(lambda: kms.verify(KeyId=key["KeyId"], Message=MESSAGE + b"!", SigningAlgorithm=algo,
                                    Signature=resp["Signature"]))
    assert err["Code"] == "KMSInvalidSignatureException", err


@pytest.mark.parametrize("spec", ["RSA_2048", "RSA_3072", "RSA_4096"])
def test_rsa_signing_every_algorithm(kms, create_key, spec):
    key = create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")
    assert key["SigningAlgorithms"] == sorted(RSA_SIGNING)
    pub = load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == MODULUS[spec] * 8
    for algo in RSA_SIGNING:
        _sign_and_check(kms, key, algo)


@pytest.mark.parametrize("spec,algo,curve", ECC)
def test_ecdsa_signing(kms, create_key, spec, algo, curve):
    key = create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")
    assert key["SigningAlgorithms"] == [algo]
    pub = load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    assert isinstance(pub.curve, curve)
    _sign_and_check(kms, key, algo)
    # A DIGEST of the wrong length.
    err = _error(lambda: kms.sign(KeyId=key["KeyId"], Message=b"short", MessageType="DIGEST",
                                  SigningAlgorithm=algo))
    assert err["Code"] == "ValidationException"
    assert err["Message"] == f"Digest is invalid length for algorithm {algo}."


@pytest.mark.parametrize("spec", ["RSA_2048", "RSA_3072", "RSA_4096"])
def test_rsa_oaep_every_size(kms, create_key, spec):
    key = create_key(KeySpec=spec, KeyUsage="ENCRYPT_DECRYPT")
    pub = load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    for algo, h in (("RSAES_OAEP_SHA_1", hashes.SHA1()), ("RSAES_OAEP_SHA_256", hashes.SHA256())):
        offline = pub.encrypt(MESSAGE, padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None))
        try:
            out = kms.decrypt(KeyId=key["KeyId"], CiphertextBlob=offline, EncryptionAlgorithm=algo)
        except ClientError as err:
            e = err.response["Error"]
            assert e["Code"] == "UnsupportedOperationException", e
            assert "CKM_RSA_PKCS_OAEP with SHA-256" in e["Message"], e
            assert algo == "RSAES_OAEP_SHA_256", "OAEP SHA-1 must work on every token"
            continue
        assert out["Plaintext"] == MESSAGE and out["EncryptionAlgorithm"] == algo
        blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=MESSAGE, EncryptionAlgorithm=algo)["CiphertextBlob"]
        assert len(blob) == MODULUS[spec]
        assert kms.decrypt(KeyId=key["KeyId"], CiphertextBlob=blob, EncryptionAlgorithm=algo)["Plaintext"] == MESSAGE


@pytest.mark.parametrize("spec,algo,size", [("HMAC_224", "HMAC_SHA_224", 28), ("HMAC_256", "HMAC_SHA_256", 32),
                                            ("HMAC_384", "HMAC_SHA_384", 48), ("HMAC_512", "HMAC_SHA_512", 64)])
def test_hmac_every_spec(kms, create_key, spec, algo, size):
    key = create_key(KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC")
    assert key["MacAlgorithms"] == [algo]
    mac = kms.generate_mac(KeyId=key["KeyId"], Message=MESSAGE, MacAlgorithm=algo)["Mac"]
    assert len(mac) == size
    assert kms.verify_mac(KeyId=key["KeyId"], Message=MESSAGE, MacAlgorithm=algo, Mac=mac)["MacValid"] is True
    err = _error(lambda: kms.verify_mac(KeyId=key["KeyId"], Message=MESSAGE + b"!", MacAlgorithm=algo, Mac=mac))
    assert err["Code"] == "KMSInvalidMacException" and not err.get("Message"), err


@pytest.mark.parametrize("pair_spec", ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384",
                                       "ECC_NIST_P521", "ECC_SECG_P256K1"])
def test_data_key_pair_every_spec(kms, create_key, pair_spec):
    key = create_key()
    ctx = {"purpose": "e2e"}
    resp = kms.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec=pair_spec, EncryptionContext=ctx)
    priv = load_der_private_key(resp["PrivateKeyPlaintext"], password=None)
    spki = priv.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert spki == resp["PublicKey"]
    # The pair works: sign with the private key, verify with the public one.
    pub = load_der_public_key(resp["PublicKey"])
    if pair_spec.startswith("RSA"):
        sig = priv.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        pub.verify(sig, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = priv.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
        pub.verify(sig, MESSAGE, ec.ECDSA(hashes.SHA256()))
    opened = kms.decrypt(CiphertextBlob=resp["PrivateKeyCiphertextBlob"], EncryptionContext=ctx)
    assert opened["Plaintext"] == resp["PrivateKeyPlaintext"]
    no_plain = kms.generate_data_key_pair_without_plaintext(KeyId=key["KeyId"], KeyPairSpec=pair_spec)
    assert "PrivateKeyPlaintext" not in no_plain
    priv2 = load_der_private_key(kms.decrypt(CiphertextBlob=no_plain["PrivateKeyCiphertextBlob"])["Plaintext"], None)
    assert priv2.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == no_plain["PublicKey"]


def test_ecdsa_digest_signature_is_prehashed(kms, create_key):
    """MessageType=DIGEST signs the given digest itself (no second hash)."""
    key = create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    digest = os.urandom(32)
    sig = kms.sign(KeyId=key["KeyId"], Message=digest, MessageType="DIGEST",
                   SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    pub = load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    pub.verify(sig, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
