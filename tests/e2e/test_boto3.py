"""boto3 end to end: what an application built on the AWS SDK does with p11kms."""

from __future__ import annotations

import os
import time

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def _expect(fn, code: str):
    with pytest.raises(ClientError) as info:
        fn()
    assert _code(info.value) == code, info.value.response.get("Error")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return info.value


# --------------------------------------------------------------------------
# Envelope encryption
# --------------------------------------------------------------------------
def test_envelope_encryption_with_reencrypt(kms, create_key):
    """GenerateDataKey -> local AES-GCM -> ReEncrypt the data key to another
    key and context -> Decrypt it -> open the local ciphertext."""
    key_a, key_b = create_key(Description="tenant A"), create_key(Description="tenant B")
    ctx_a = {"tenant": "a", "object": "report.pdf"}
    ctx_b = {"tenant": "b", "object": "report.pdf", "moved": "yes"}

    gdk = kms.generate_data_key(KeyId=key_a["KeyId"], KeySpec="AES_256", EncryptionContext=ctx_a)
    assert gdk["KeyId"] == key_a["Arn"]
    data_key, wrapped = gdk["Plaintext"], gdk["CiphertextBlob"]
    assert len(data_key) == 32
    assert data_key not in wrapped

    document = b"quarterly numbers: " + os.urandom(4000)
    nonce = os.urandom(12)
    aad = b"report.pdf"
    sealed = AESGCM(data_key).encrypt(nonce, document, aad)
    del data_key  # the application keeps only the wrapped key and the sealed document

    moved = kms.re_encrypt(
        CiphertextBlob=wrapped,
        SourceEncryptionContext=ctx_a,
        DestinationKeyId=key_b["Arn"],
        DestinationEncryptionContext=ctx_b,
    )
    assert moved["SourceKeyId"] == key_a["Arn"]
    assert moved["KeyId"] == key_b["Arn"]
    assert moved["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert moved["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert "Plaintext" not in moved
    wrapped_b = moved["CiphertextBlob"]
    assert wrapped_b != wrapped

    # Only key B with context B opens the moved data key.
    _expect(lambda: kms.decrypt(CiphertextBlob=wrapped_b, EncryptionContext=ctx_a), "InvalidCiphertextException")
    _expect(lambda: kms.decrypt(CiphertextBlob=wrapped_b), "InvalidCiphertextException")
    _expect(
        lambda: kms.decrypt(CiphertextBlob=wrapped_b, EncryptionContext=ctx_b, KeyId=key_a["KeyId"]),
        "IncorrectKeyException",
    )
    opened = kms.decrypt(CiphertextBlob=wrapped_b, EncryptionContext=ctx_b, KeyId=key_b["KeyId"])
    assert opened["KeyId"] == key_b["Arn"]
    assert AESGCM(opened["Plaintext"]).decrypt(nonce, sealed, aad) == document

    # The source ciphertext still opens under key A (ReEncrypt copies, it does not move).
    again = kms.decrypt(CiphertextBlob=wrapped, EncryptionContext=ctx_a)
    assert again["Plaintext"] == opened["Plaintext"]

    # Disabling the source key stops further re-encryption of the old blob,
    # but not decryption of the moved one.
    kms.disable_key(KeyId=key_a["KeyId"])
    _expect(
        lambda: kms.re_encrypt(
            CiphertextBlob=wrapped, SourceEncryptionContext=ctx_a, DestinationKeyId=key_b["KeyId"]
        ),
        "DisabledException",
    )
    assert kms.decrypt(CiphertextBlob=wrapped_b, EncryptionContext=ctx_b)["Plaintext"] == opened["Plaintext"]


def test_data_key_without_plaintext_reencrypted(kms, create_key):
    key_a, key_b = create_key(), create_key()
    gdk = kms.generate_data_key_without_plaintext(KeyId=key_a["KeyId"], NumberOfBytes=48)
    assert "Plaintext" not in gdk
    moved = kms.re_encrypt(CiphertextBlob=gdk["CiphertextBlob"], DestinationKeyId=key_b["KeyId"])
    a = kms.decrypt(CiphertextBlob=gdk["CiphertextBlob"])["Plaintext"]
    b = kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])["Plaintext"]
    assert len(a) == 48 and a == b


def test_encrypt_decrypt_sizes(kms, create_key):
    key = create_key()
    for size in (1, 15, 16, 17, 1000, 4096):
        data = os.urandom(size)
        blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=data)["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == data
    with pytest.raises(ClientError) as info:
        kms.encrypt(KeyId=key["KeyId"], Plaintext=os.urandom(4097))
    assert _code(info.value) == "ValidationException"


# --------------------------------------------------------------------------
# Key lifecycle
# --------------------------------------------------------------------------
def test_key_lifecycle(kms, create_key):
    md = create_key(Description="lifecycle")
    kid = md["KeyId"]
    assert md["KeyState"] == "Enabled" and md["Enabled"] is True
    assert md["KeyManager"] == "CUSTOMER"
    assert md["Origin"] == "AWS_KMS"
    assert md["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    blob = kms.encrypt(KeyId=kid, Plaintext=b"lifecycle")["CiphertextBlob"]

    kms.update_key_description(KeyId=kid, Description="renamed")
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["Description"] == "renamed"

    kms.disable_key(KeyId=kid)
    described = kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert described["KeyState"] == "Disabled" and described["Enabled"] is False
    _expect(lambda: kms.encrypt(KeyId=kid, Plaintext=b"x"), "DisabledException")
    _expect(lambda: kms.decrypt(CiphertextBlob=blob), "DisabledException")

    kms.enable_key(KeyId=kid)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"lifecycle"

    sched = kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    assert sched["KeyId"] == md["Arn"]
    assert sched["KeyState"] == "PendingDeletion"
    assert sched["PendingWindowInDays"] == 7
    described = kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert described["DeletionDate"] > described["CreationDate"]
    _expect(lambda: kms.encrypt(KeyId=kid, Plaintext=b"x"), "KMSInvalidStateException")
    _expect(lambda: kms.decrypt(CiphertextBlob=blob), "KMSInvalidStateException")

    assert kms.cancel_key_deletion(KeyId=kid)["KeyId"] == md["Arn"]
    described = kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert described["KeyState"] == "Disabled"
    assert "DeletionDate" not in described
    kms.enable_key(KeyId=kid)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"lifecycle"

    # The key is still listed throughout.
    assert kid in _all_key_ids(kms)


def test_unknown_key(kms, create_key):
    md = create_key()
    fake = "00000000-1111-2222-3333-444444444444"
    _expect(lambda: kms.describe_key(KeyId=fake), "NotFoundException")
    _expect(lambda: kms.encrypt(KeyId=fake, Plaintext=b"x"), "NotFoundException")
    _expect(lambda: kms.encrypt(KeyId="alias/e2e-no-such-alias", Plaintext=b"x"), "NotFoundException")
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    _expect(lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=fake), "NotFoundException")


def test_tampered_ciphertext_is_rejected(kms, create_key):
    md = create_key()
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"integrity")["CiphertextBlob"]
    for pos in (len(blob) - 1, len(blob) // 2):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        _expect(lambda: kms.decrypt(CiphertextBlob=bytes(bad)), "InvalidCiphertextException")
        _expect(
            lambda: kms.re_encrypt(CiphertextBlob=bytes(bad), DestinationKeyId=md["KeyId"]),
            "InvalidCiphertextException",
        )


# --------------------------------------------------------------------------
# Aliases
# --------------------------------------------------------------------------
def test_aliases(kms, create_key, alias_name):
    one, two = create_key(), create_key()
    kms.create_alias(AliasName=alias_name, TargetKeyId=one["KeyId"])
    try:
        alias_arn = one["Arn"].split(":key/")[0] + ":" + alias_name
        for ref in (alias_name, alias_arn):
            resp = kms.encrypt(KeyId=ref, Plaintext=b"via alias")
            assert resp["KeyId"] == one["Arn"]
        blob_one = resp["CiphertextBlob"]

        listed = kms.list_aliases(KeyId=one["KeyId"])["Aliases"]
        assert [(a["AliasName"], a["AliasArn"], a["TargetKeyId"]) for a in listed] == [
            (alias_name, alias_arn, one["KeyId"])
        ]
        everything = _all_aliases(kms)
        assert alias_name in {a["AliasName"] for a in everything}

        _expect(lambda: kms.create_alias(AliasName=alias_name, TargetKeyId=two["KeyId"]), "AlreadyExistsException")

        kms.update_alias(AliasName=alias_name, TargetKeyId=two["KeyId"])
        assert kms.describe_key(KeyId=alias_name)["KeyMetadata"]["KeyId"] == two["KeyId"]
        resp = kms.encrypt(KeyId=alias_name, Plaintext=b"via alias")
        assert resp["KeyId"] == two["Arn"]
        # Ciphertext made through the alias before the update names key one.
        assert kms.decrypt(CiphertextBlob=blob_one)["KeyId"] == one["Arn"]
        assert kms.list_aliases(KeyId=one["KeyId"])["Aliases"] == []
        # An alias works as a ReEncrypt destination.
        moved = kms.re_encrypt(CiphertextBlob=blob_one, DestinationKeyId=alias_name)
        assert moved["KeyId"] == two["Arn"]
    finally:
        kms.delete_alias(AliasName=alias_name)
    _expect(lambda: kms.describe_key(KeyId=alias_name), "NotFoundException")
    _expect(lambda: kms.delete_alias(AliasName=alias_name), "NotFoundException")


# --------------------------------------------------------------------------
# Rotation
# --------------------------------------------------------------------------
def _material(kms, key_id):
    return kms.describe_key(KeyId=key_id)["KeyMetadata"].get("CurrentKeyMaterialId")


def _wait_new_material(kms, key_id, old, timeout=90.0):
    deadline = time.monotonic() + timeout
    while True:
        cur = _material(kms, key_id)
        if cur and cur != old:
            return cur
        if time.monotonic() > deadline:
            pytest.fail(f"CurrentKeyMaterialId still {cur!r} {timeout}s after RotateKeyOnDemand")
        time.sleep(0.5)


def test_rotation_keeps_old_ciphertext_and_reencrypts_to_new_material(kms, create_key):
    md = create_key(Description="rotation")
    kid = md["KeyId"]
    m1 = _material(kms, kid)
    assert m1, "DescribeKey has no CurrentKeyMaterialId"
    old_data = os.urandom(64)
    old_blob = kms.encrypt(KeyId=kid, Plaintext=old_data, EncryptionContext={"v": "1"})["CiphertextBlob"]

    assert kms.rotate_key_on_demand(KeyId=kid)["KeyId"] == md["Arn"]
    m2 = _wait_new_material(kms, kid, m1)

    # Old ciphertext still decrypts, and says which material it was made with.
    dec = kms.decrypt(CiphertextBlob=old_blob, EncryptionContext={"v": "1"})
    assert dec["Plaintext"] == old_data
    if "KeyMaterialId" in dec:
        assert dec["KeyMaterialId"] == m1

    # ReEncrypt to the same key moves the ciphertext onto the current material.
    moved = kms.re_encrypt(
        CiphertextBlob=old_blob,
        SourceEncryptionContext={"v": "1"},
        DestinationKeyId=kid,
        DestinationEncryptionContext={"v": "1"},
    )
    assert moved["SourceKeyId"] == moved["KeyId"] == md["Arn"]
    assert moved["SourceKeyMaterialId"] == m1
    assert moved["DestinationKeyMaterialId"] == m2
    dec2 = kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"v": "1"})
    assert dec2["Plaintext"] == old_data
    if "KeyMaterialId" in dec2:
        assert dec2["KeyMaterialId"] == m2

    # New encryptions use the new material; both generations stay usable
    # after a second rotation, and ListKeyRotations pages through them.
    new_blob = kms.encrypt(KeyId=kid, Plaintext=b"after")["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=kid)
    m3 = _wait_new_material(kms, kid, m2)
    assert len({m1, m2, m3}) == 3
    assert kms.decrypt(CiphertextBlob=old_blob, EncryptionContext={"v": "1"})["Plaintext"] == old_data
    assert kms.decrypt(CiphertextBlob=new_blob)["Plaintext"] == b"after"

    rotations, marker = [], None
    while True:
        kwargs = {"KeyId": kid, "Limit": 1}
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_key_rotations(**kwargs)
        assert len(page["Rotations"]) <= 1
        rotations += page["Rotations"]
        if not page.get("Truncated"):
            break
        marker = page["NextMarker"]
    assert len(rotations) == 2
    assert {r["RotationType"] for r in rotations} == {"ON_DEMAND"}
    assert {r["KeyMaterialId"] for r in rotations} == {m2, m3}


# --------------------------------------------------------------------------
# Paging
# --------------------------------------------------------------------------
def _all_key_ids(kms, limit=None):
    ids, marker, pages = [], None, 0
    while True:
        kwargs = {}
        if limit:
            kwargs["Limit"] = limit
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_keys(**kwargs)
        pages += 1
        assert pages < 10_000
        if limit:
            assert len(page["Keys"]) <= limit
        ids += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            return ids
        marker = page["NextMarker"]


def _all_aliases(kms, limit=None):
    out, marker = [], None
    while True:
        kwargs = {}
        if limit:
            kwargs["Limit"] = limit
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_aliases(**kwargs)
        if limit:
            assert len(page["Aliases"]) <= limit
        out += page["Aliases"]
        if not page["Truncated"]:
            return out
        marker = page["NextMarker"]


def test_paging(kms, create_key):
    made = [create_key(Description=f"paging {i}")["KeyId"] for i in range(5)]
    aliases = [f"alias/e2e-page-{i}-{made[i][:8]}" for i in range(5)]
    for name, kid in zip(aliases, made):
        kms.create_alias(AliasName=name, TargetKeyId=kid)
    try:
        for limit in (1, 2, 3):
            ids = _all_key_ids(kms, limit)
            assert len(ids) == len(set(ids)), f"duplicates with Limit={limit}"
            assert set(made) <= set(ids)
            names = [a["AliasName"] for a in _all_aliases(kms, limit)]
            assert len(names) == len(set(names))
            assert set(aliases) <= set(names)
        # A limited first page says it is truncated.
        first = kms.list_keys(Limit=1)
        assert first["Truncated"] is True and first["NextMarker"]
        # boto3's own paginator agrees with the manual walk.
        pages = kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2})
        via_paginator = [k["KeyId"] for p in pages for k in p["Keys"]]
        assert sorted(via_paginator) == sorted(_all_key_ids(kms))
        # A marker the server never issued is rejected.
        _expect(lambda: kms.list_keys(Marker="not-a-marker-this-server-issued"), "InvalidMarkerException")
    finally:
        for name in aliases:
            try:
                kms.delete_alias(AliasName=name)
            except ClientError:
                pass


def test_generate_random(kms):
    a = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    assert len(a) == len(b) == 32 and a != b
