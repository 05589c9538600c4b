#!/usr/bin/env python3
"""Generates the frozen corpus of old symmetric ciphertexts in tests/data/old-blobs/.

For each embedded token (softhsm2, kryoptic) it starts a gateway on a fresh data directory,
makes three keys and about 25 ciphertexts through boto3 (Encrypt, GenerateDataKey,
GenerateDataKeyWithoutPlaintext, ReEncrypt, before and after a RotateKeyOnDemand), stops the
gateway with SIGTERM and writes

    <out>/<token>/data/        the gateway's data directory (token, SQLite store, PIN files)
    <out>/<token>/manifest.json

tests/gateway/old_blobs.rs then proves that whatever version is built still decrypts and
re-encrypts every one of them. The corpus is meant to be made once, by the version whose
format it freezes (scheme 1, commit ca7dec4):

    python3 tests/data/old-blobs/generate.py --bin /path/to/p11kms-at-ca7dec4 --force

Left out of data/: the audit trail (audit.log*), which the gateway starts afresh; the token
configuration files softhsm2.conf / kryoptic.conf, which hold the absolute path of the data
directory and which the gateway writes (only when missing) on start; token-copies/, the
crash-repair copies of SoftHSM2's token.object that the gateway takes again at every start.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

HERE = Path(__file__).resolve().parent
REGION = "us-east-1"
TOKENS = ("softhsm2", "kryoptic")
READY = re.compile(r"^p11kms listening on (\S+)")
# What is not copied from the data directory (see the module docstring).
LEFT_OUT = re.compile(r"^(audit\.log.*|softhsm2\.conf|kryoptic\.conf|token-copies)$")


def start(binary, token, data_dir, log_path, kryoptic_module):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("P11KMS_") and k not in ("SOFTHSM2_CONF", "KRYOPTIC_CONF")
    }
    env.update(
        P11KMS_DATA_DIR=str(data_dir),
        P11KMS_LISTEN="127.0.0.1:0",
        P11KMS_EMBEDDED_TOKEN=token,
        P11KMS_LOG="info",
    )
    if token == "kryoptic":
        env["P11KMS_KRYOPTIC_MODULE"] = str(kryoptic_module)
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [str(binary), "serve"],
        env=env,
        cwd=data_dir.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        m = READY.match(line)
        if m:
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    proc.wait()
    sys.exit(f"{token}: the gateway did not print its ready line; see {log_path}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        sys.exit("the gateway did not stop within 60 s of SIGTERM")
    if code != 0:
        sys.exit(f"the gateway exited with status {code} after SIGTERM")


def client(endpoint):
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )


def current_material(kms, key_id):
    return kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]


class Corpus:
    def __init__(self, kms):
        self.kms = kms
        self.entries = []

    def add(self, name, made_by, key_id, context, plaintext, blob, material, source=None):
        # The frozen format: version 1, scheme 1, then the key id and the material id.
        assert blob[:2] == b"\x01\x01", f"{name}: blob starts {blob[:2].hex()}, not 0101"
        assert blob[2:18].hex() == key_id.replace("-", ""), f"{name}: key id in blob"
        assert blob[18:50].hex() == material, f"{name}: material id in blob"
        # Check it against the issuing version before freezing it.
        resp = self.kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
        assert resp["Plaintext"] == plaintext, f"{name}: Decrypt gave another plaintext"
        assert resp["KeyId"].endswith("key/" + key_id), f"{name}: Decrypt KeyId {resp['KeyId']}"
        assert resp["KeyMaterialId"] == material, f"{name}: Decrypt KeyMaterialId"
        entry = {
            "name": name,
            "made_by": made_by,
            "key_id": key_id,
            "encryption_context": context,
            "plaintext_hex": plaintext.hex(),
            "blob_base64": base64.b64encode(blob).decode(),
            "key_material_id": material,
        }
        if source is not None:
            entry["reencrypted_from"] = source
        self.entries.append(entry)
        return blob

    def by_name(self, name):
        return next(e for e in self.entries if e["name"] == name)

    def encrypt(self, name, key_id, plaintext, context):
        resp = self.kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionContext=context)
        blob = resp["CiphertextBlob"]
        return self.add(name, "Encrypt", key_id, context, plaintext, blob, blob[18:50].hex())

    def generate_data_key(self, name, key_id, context, **size):
        resp = self.kms.generate_data_key(KeyId=key_id, EncryptionContext=context, **size)
        return self.add(
            name,
            "GenerateDataKey",
            key_id,
            context,
            resp["Plaintext"],
            resp["CiphertextBlob"],
            resp["KeyMaterialId"],
        )

    def generate_data_key_without_plaintext(self, name, key_id, context, **size):
        resp = self.kms.generate_data_key_without_plaintext(
            KeyId=key_id, EncryptionContext=context, **size
        )
        blob = resp["CiphertextBlob"]
        # The plaintext comes from a Decrypt made now, by the issuing version.
        plaintext = self.kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]
        return self.add(
            name,
            "GenerateDataKeyWithoutPlaintext",
            key_id,
            context,
            plaintext,
            blob,
            blob[18:50].hex(),
        )

    def re_encrypt(self, name, source, key_id, context):
        src = self.by_name(source)
        resp = self.kms.re_encrypt(
            CiphertextBlob=base64.b64decode(src["blob_base64"]),
            SourceEncryptionContext=src["encryption_context"],
            DestinationKeyId=key_id,
            DestinationEncryptionContext=context,
        )
        assert resp["SourceKeyMaterialId"] == src["key_material_id"], name
        return self.add(
            name,
            "ReEncrypt",
            key_id,
            context,
            bytes.fromhex(src["plaintext_hex"]),
            resp["CiphertextBlob"],
            resp["DestinationKeyMaterialId"],
            source=source,
        )


# Contexts. SEVERAL_A and SEVERAL_B are the same pairs given in different orders (Python dicts
# and the JSON boto3 sends keep insertion order); SEVERAL_B is used to decrypt SEVERAL_A's
# blob and the other way round when the generator checks them.
ONE = {"purpose": "old-blobs"}
SEVERAL_A = {"tenant": "t-42", "bucket": "archive", "object": "2024/01/report.pdf"}
SEVERAL_B = {"object": "2024/01/report.pdf", "tenant": "t-42", "bucket": "archive"}
NON_ASCII = {"ключ": "значение", "名前": "値 🔑", "café": "naïve résumé", "emoji🙂": "ü"}
PUNCTUATION = {'quote"key': "back\\slash", "a=b&c": "x y/z:+", "key with spaces": " padded "}


def make_corpus(kms):
    c = Corpus(kms)
    key_a = kms.create_key(Description="old-blobs key A")["KeyMetadata"]["KeyId"]
    key_b = kms.create_key(Description="old-blobs key B")["KeyMetadata"]["KeyId"]
    key_r = kms.create_key(Description="old-blobs key R (rotated on demand)")["KeyMetadata"][
        "KeyId"
    ]
    r_old = current_material(kms, key_r)

    # Key A: sizes and contexts.
    c.encrypt("a-encrypt-empty-1", key_a, os.urandom(1), {})
    c.encrypt("a-encrypt-empty-32", key_a, os.urandom(32), {})
    c.encrypt("a-encrypt-empty-4096", key_a, os.urandom(4096), {})
    c.encrypt("a-encrypt-one-32", key_a, os.urandom(32), ONE)
    c.encrypt("a-encrypt-several-order-a-32", key_a, os.urandom(32), SEVERAL_A)
    c.encrypt("a-encrypt-several-order-b-32", key_a, os.urandom(32), SEVERAL_B)
    c.encrypt("a-encrypt-non-ascii-1", key_a, os.urandom(1), NON_ASCII)
    c.encrypt("a-encrypt-non-ascii-text", key_a, "non-ASCII plaintext: ñ 中文 🔐".encode(), NON_ASCII)
    c.encrypt("a-encrypt-punctuation-4096", key_a, os.urandom(4096), PUNCTUATION)
    c.generate_data_key("a-gdk-aes256-one", key_a, ONE, KeySpec="AES_256")
    c.generate_data_key("a-gdk-1-byte-empty", key_a, {}, NumberOfBytes=1)
    c.generate_data_key_without_plaintext("a-gdkwp-aes128-several", key_a, SEVERAL_B, KeySpec="AES_128")
    c.generate_data_key_without_plaintext("a-gdkwp-64-empty", key_a, {}, NumberOfBytes=64)

    # Key B, and ReEncrypt between A and B.
    c.encrypt("b-encrypt-several-4096", key_b, os.urandom(4096), SEVERAL_A)
    c.encrypt("b-encrypt-non-ascii-32", key_b, os.urandom(32), NON_ASCII)
    c.re_encrypt("reencrypt-a-to-b-new-context", "a-encrypt-one-32", key_b, {"moved": "a-to-b"})
    c.re_encrypt("reencrypt-b-to-a-empty-context", "b-encrypt-several-4096", key_a, {})

    # Key R: blobs under its first material, a rotation on demand, blobs under the new one.
    c.encrypt("r-old-encrypt-empty-32", key_r, os.urandom(32), {})
    c.encrypt("r-old-encrypt-one-4096", key_r, os.urandom(4096), ONE)
    c.generate_data_key("r-old-gdk-aes256-non-ascii", key_r, NON_ASCII, KeySpec="AES_256")
    kms.rotate_key_on_demand(KeyId=key_r)
    deadline = time.monotonic() + 60
    while (r_new := current_material(kms, key_r)) == r_old:
        if time.monotonic() > deadline:
            sys.exit("RotateKeyOnDemand: the key's material did not change within 60 s")
        time.sleep(0.25)
    c.encrypt("r-new-encrypt-empty-1", key_r, os.urandom(1), {})
    c.encrypt("r-new-encrypt-several-32", key_r, os.urandom(32), SEVERAL_B)
    c.generate_data_key_without_plaintext("r-new-gdkwp-aes256-one", key_r, ONE, KeySpec="AES_256")
    c.re_encrypt("reencrypt-r-old-to-r-new", "r-old-encrypt-one-4096", key_r, {"moved": "r-old-to-r-new"})
    c.re_encrypt("reencrypt-r-old-to-a", "r-old-encrypt-empty-32", key_a, SEVERAL_A)
    c.re_encrypt("reencrypt-a-to-r-new", "a-encrypt-non-ascii-1", key_r, NON_ASCII)

    # The same pairs in another order are the same context.
    for name, other in (("a-encrypt-several-order-a-32", SEVERAL_B), ("a-encrypt-several-order-b-32", SEVERAL_A)):
        e = c.by_name(name)
        got = kms.decrypt(CiphertextBlob=base64.b64decode(e["blob_base64"]), EncryptionContext=other)
        assert got["Plaintext"].hex() == e["plaintext_hex"], name

    materials = {e["key_material_id"] for e in c.entries if e["key_id"] == key_r}
    assert materials == {r_old, r_new}, "key R's blobs are under both its materials"
    keys = [
        {"key_id": key_a, "role": "A", "materials": [current_material(kms, key_a)]},
        {"key_id": key_b, "role": "B", "materials": [current_material(kms, key_b)]},
        {"key_id": key_r, "role": "R (rotated on demand)", "materials": [r_old, r_new]},
    ]
    return keys, c.entries


def copy_data_dir(src, dst):
    kept = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if LEFT_OUT.match(rel.parts[0]):
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            kept.append(rel)
    # Nothing that is kept may name the directory it was made in: the test runs the corpus
    # from a copy at another path.
    needle = str(src).encode()
    for rel in kept:
        if needle in (dst / rel).read_bytes():
            sys.exit(f"{rel} holds the absolute path {src}; it would break a copy elsewhere")
    return kept


def generate(token, args):
    out = args.out / token
    if out.exists():
        if not args.force:
            sys.exit(f"{out} exists; the corpus is frozen (pass --force to make it again)")
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix=f"p11kms-old-blobs-{token}-") as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        log = tmp / "server.log"
        proc, endpoint = start(args.bin, token, data, log, args.kryoptic_module)
        try:
            keys, entries = make_corpus(client(endpoint))
        except BaseException:
            proc.kill()
            proc.wait()
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
            raise
        stop(proc)
        kept = copy_data_dir(data, out / "data")
    manifest = {
        "what": "symmetric ciphertexts issued by p11kms (format 1, scheme 1), frozen; "
        "see tests/data/old-blobs/README.md and tests/gateway/old_blobs.rs",
        "token": token,
        "commit": args.commit,
        "binary_sha256": hashlib.sha256(args.bin.read_bytes()).hexdigest(),
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "account": "111122223333",
        "data_files": [str(p) for p in kept],
        "keys": keys,
        "entries": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"{token}: {len(entries)} blobs, {len(kept)} data files -> {out}")


def main():
    repo = HERE.parent.parent.parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", type=Path, default=repo / "target/release/p11kms", help="the p11kms binary whose ciphertexts to freeze")
    p.add_argument("--kryoptic-module", type=Path, help="libkryoptic_pkcs11.so (default: next to --bin)")
    p.add_argument("--tokens", default=",".join(TOKENS), help="comma-separated: softhsm2,kryoptic")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--commit", default="ca7dec4", help="the commit --bin was built from (recorded in the manifests)")
    p.add_argument("--force", action="store_true", help="replace an existing corpus")
    args = p.parse_args()
    args.bin = args.bin.resolve()
    if args.kryoptic_module is None:
        args.kryoptic_module = args.bin.parent / "libkryoptic_pkcs11.so"
    for token in args.tokens.split(","):
        if token not in TOKENS:
            sys.exit(f"unknown token {token}")
        if token == "kryoptic" and not args.kryoptic_module.is_file():
            sys.exit(f"no Kryoptic library at {args.kryoptic_module}")
        generate(token, args)


if __name__ == "__main__":
    main()
