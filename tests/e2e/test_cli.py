"""The AWS CLI, end to end, against p11kms.

Every call is a real `aws --endpoint-url ... kms ...` process with
`--output json`; binary arguments go in as `fileb://` files, exactly as an
operator would type them.
"""

from __future__ import annotations

import json
import os
import re

from conftest import b64d

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ARN_RE = re.compile(r"^arn:aws:kms:us-east-1:\d{12}:key/[0-9a-f-]{36}$")


def _create_key(aws, description="p11kms-e2e-cli"):
    md = aws.json("create-key", "--description", description)["KeyMetadata"]
    return md


def _schedule_deletion(aws, *key_ids):
    for key_id in key_ids:
        aws.run("schedule-key-deletion", "--key-id", key_id, "--pending-window-in-days", "7", check=False)


def test_cli_create_describe_list_alias(aws, alias_name):
    md = _create_key(aws, "cli key one")
    try:
        assert UUID_RE.match(md["KeyId"]), md
        assert ARN_RE.match(md["Arn"]), md
        assert md["KeyState"] == "Enabled"
        assert md["Enabled"] is True
        assert md["KeyUsage"] == "ENCRYPT_DECRYPT"
        assert md["KeySpec"] == "SYMMETRIC_DEFAULT"
        assert md["Description"] == "cli key one"

        described = aws.json("describe-key", "--key-id", md["KeyId"])["KeyMetadata"]
        assert described["Arn"] == md["Arn"]
        assert described["Description"] == "cli key one"

        assert aws.run("create-alias", "--alias-name", alias_name, "--target-key-id", md["KeyId"]).stdout.strip() == ""
        by_alias = aws.json("describe-key", "--key-id", alias_name)["KeyMetadata"]
        assert by_alias["KeyId"] == md["KeyId"]

        # The CLI follows NextMarker by itself; the new key must be in the full listing.
        keys = aws.json("list-keys")["Keys"]
        assert {"KeyId": md["KeyId"], "KeyArn": md["Arn"]} in keys
        # ... and with a small page size (the CLI pages with --page-size).
        paged = aws.json("list-keys", "--page-size", "1")["Keys"]
        assert md["KeyId"] in {k["KeyId"] for k in paged}
        assert len(paged) == len({k["KeyId"] for k in paged}), "duplicate keys across pages"

        aliases = aws.json("list-aliases", "--key-id", md["KeyId"])["Aliases"]
        assert [a["AliasName"] for a in aliases] == [alias_name]
        assert aliases[0]["TargetKeyId"] == md["KeyId"]
        assert aliases[0]["AliasArn"] == md["Arn"].split(":key/")[0] + ":" + alias_name
    finally:
        aws.run("delete-alias", "--alias-name", alias_name, check=False)
        _schedule_deletion(aws, md["KeyId"])


def test_cli_encrypt_reencrypt_decrypt(aws, alias_name):
    src = _create_key(aws, "cli source")
    dst = _create_key(aws, "cli destination")
    try:
        aws.run("create-alias", "--alias-name", alias_name, "--target-key-id", dst["KeyId"])
        plaintext = os.urandom(200)
        src_ctx = {"purpose": "e2e-cli", "stage": "one"}
        dst_ctx = {"purpose": "e2e-cli", "stage": "two"}

        enc = aws.json(
            "encrypt",
            "--key-id", src["KeyId"],
            "--plaintext", aws.file("plain.bin", plaintext),
            "--encryption-context", json.dumps(src_ctx),
        )
        assert enc["KeyId"] == src["Arn"]
        assert enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        blob = b64d(enc["CiphertextBlob"])
        assert plaintext not in blob

        re_enc = aws.json(
            "re-encrypt",
            "--ciphertext-blob", aws.file("ct1.bin", blob),
            "--source-encryption-context", json.dumps(src_ctx),
            "--destination-key-id", alias_name,
            "--destination-encryption-context", json.dumps(dst_ctx),
        )
        assert re_enc["SourceKeyId"] == src["Arn"]
        assert re_enc["KeyId"] == dst["Arn"]
        assert re_enc["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        assert re_enc["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        blob2 = b64d(re_enc["CiphertextBlob"])
        assert blob2 != blob

        dec = aws.json(
            "decrypt",
            "--ciphertext-blob", aws.file("ct2.bin", blob2),
            "--encryption-context", json.dumps(dst_ctx),
        )
        assert dec["KeyId"] == dst["Arn"]
        assert b64d(dec["Plaintext"]) == plaintext

        # The classic shell idiom: --query Plaintext --output text gives base64.
        text = aws.run(
            "decrypt",
            "--ciphertext-blob", aws.file("ct2b.bin", blob2),
            "--encryption-context", json.dumps(dst_ctx),
            "--key-id", dst["KeyId"],
            "--query", "Plaintext",
            "--output", "text",
        ).stdout.strip()
        assert b64d(text) == plaintext

        # The old context does not open the new ciphertext; the CLI reports the service error.
        bad = aws.run(
            "decrypt",
            "--ciphertext-blob", aws.file("ct2c.bin", blob2),
            "--encryption-context", json.dumps(src_ctx),
            check=False,
        )
        assert bad.returncode != 0
        assert "InvalidCiphertextException" in bad.stderr, bad.stderr

        # The original ciphertext is untouched by ReEncrypt.
        dec1 = aws.json(
            "decrypt",
            "--ciphertext-blob", aws.file("ct1b.bin", blob),
            "--encryption-context", json.dumps(src_ctx),
        )
        assert b64d(dec1["Plaintext"]) == plaintext
    finally:
        aws.run("delete-alias", "--alias-name", alias_name, check=False)
        _schedule_deletion(aws, src["KeyId"], dst["KeyId"])


def test_cli_generate_data_key(aws):
    md = _create_key(aws, "cli data keys")
    try:
        ctx = {"bucket": "e2e"}
        gdk = aws.json(
            "generate-data-key",
            "--key-id", md["Arn"],
            "--key-spec", "AES_256",
            "--encryption-context", json.dumps(ctx),
        )
        assert gdk["KeyId"] == md["Arn"]
        data_key = b64d(gdk["Plaintext"])
        assert len(data_key) == 32
        dec = aws.json(
            "decrypt",
            "--ciphertext-blob", aws.file("dk.bin", b64d(gdk["CiphertextBlob"])),
            "--encryption-context", json.dumps(ctx),
        )
        assert b64d(dec["Plaintext"]) == data_key

        small = aws.json("generate-data-key", "--key-id", md["KeyId"], "--number-of-bytes", "24")
        assert len(b64d(small["Plaintext"])) == 24

        without = aws.json("generate-data-key-without-plaintext", "--key-id", md["KeyId"], "--key-spec", "AES_128")
        assert "Plaintext" not in without
        dec2 = aws.json("decrypt", "--ciphertext-blob", aws.file("dk2.bin", b64d(without["CiphertextBlob"])))
        assert len(b64d(dec2["Plaintext"])) == 16
    finally:
        _schedule_deletion(aws, md["KeyId"])


def test_cli_key_state_changes(aws):
    md = _create_key(aws, "cli lifecycle")
    kid = md["KeyId"]
    aws.run("disable-key", "--key-id", kid)
    assert aws.json("describe-key", "--key-id", kid)["KeyMetadata"]["KeyState"] == "Disabled"
    denied = aws.run("encrypt", "--key-id", kid, "--plaintext", aws.file("p.bin", b"x"), check=False)
    assert denied.returncode != 0 and "DisabledException" in denied.stderr, denied.stderr
    aws.run("enable-key", "--key-id", kid)
    sched = aws.json("schedule-key-deletion", "--key-id", kid, "--pending-window-in-days", "7")
    assert sched["KeyId"] == md["Arn"]
    assert sched["KeyState"] == "PendingDeletion"
    assert sched["PendingWindowInDays"] == 7
    assert aws.json("describe-key", "--key-id", kid)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    cancelled = aws.json("cancel-key-deletion", "--key-id", kid)
    assert cancelled["KeyId"] == md["Arn"]
    assert aws.json("describe-key", "--key-id", kid)["KeyMetadata"]["KeyState"] == "Disabled"
    _schedule_deletion(aws, kid)


def test_cli_generate_random(aws):
    out = aws.json("generate-random", "--number-of-bytes", "48")
    assert len(b64d(out["Plaintext"])) == 48
