"""Proof, from a PKCS#11 call trace, that domain-key mode's load path never brings key
material into host memory (`hsm.key_storage = "domain"`).

A server runs with pkcs11-spy in front of SoftHSM2, as in test_trace.py, in domain mode.

- CreateKey: the material is generated in the token and leaves it only as C_WrapKey output,
  which is the blob the store keeps; no CKA_VALUE is read.
- The first Encrypt under the key (a cache miss) loads it: exactly one C_UnwrapKey, whose
  input is the stored blob, into a sensitive, non-extractable session object; no
  C_GetAttributeValue of CKA_VALUE, no C_CreateObject.
- The second Encrypt (a cache hit) unwraps nothing.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from p11kms_server import E2E_TOKEN, Server, ServerError
from spytrace import contains_bytes, parse_calls
from test_trace import SOFTHSM_CANDIDATES, SPY_CANDIDATES, Trace, _first_existing


def _value_reads(calls):
    return [c for c in calls if c.name == "C_GetAttributeValue" and "CKA_VALUE" in c.attributes()]


def test_domain_mode_loads_keys_only_by_unwrapping_their_blob(p11kms_binary, tmp_path):
    if E2E_TOKEN != "softhsm2":
        # The server below is SoftHSM2 behind pkcs11-spy, whatever suite runs it; the
        # Kryoptic suite would start it as a Kryoptic server on SoftHSM2's library.
        pytest.skip("domain mode is traced on SoftHSM2; the gateway refuses it on Kryoptic")
    spy = _first_existing("P11KMS_SPY_MODULE", SPY_CANDIDATES)
    softhsm = _first_existing("P11KMS_SOFTHSM_MODULE", SOFTHSM_CANDIDATES)
    trace_path = tmp_path / "pkcs11-spy.log"
    server = Server(
        p11kms_binary,
        workdir=tmp_path,
        env={
            "P11KMS_PKCS11_MODULE": spy,
            "P11KMS_EMBEDDED_SOFTHSM": "1",
            "PKCS11SPY": softhsm,
            "PKCS11SPY_OUTPUT": str(trace_path),
            "P11KMS_KEY_STORAGE": "domain",
            "P11KMS_HSM_RECYCLE_AFTER": "0",
        },
        name="spy-domain",
    )
    try:
        server.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        trace = Trace(trace_path)
        kms = server.client()
        key, seg_create = trace.record(lambda: kms.create_key(Description="domain trace"))
        key_id = key["KeyMetadata"]["KeyId"]
        with sqlite3.connect(server.data_dir / "p11kms.sqlite") as db:
            rows = db.execute("SELECT blob FROM wrapped_materials WHERE key_id = ?", (key_id,)).fetchall()
        assert len(rows) == 1, rows
        blob = bytes(rows[0][0])
        assert len(blob) == 40, "an AES-256 key under KWP is 40 bytes"

        plaintext = os.urandom(48)
        _, seg_cold = trace.record(lambda: kms.encrypt(KeyId=key_id, Plaintext=plaintext))
        enc, seg_warm = trace.record(lambda: kms.encrypt(KeyId=key_id, Plaintext=plaintext))
        assert kms.decrypt(CiphertextBlob=enc["CiphertextBlob"])["Plaintext"] == plaintext

        created = parse_calls(seg_create)
        names = [c.name for c in created]
        assert "C_WrapKey" in names, names
        assert not _value_reads(created), "CreateKey read CKA_VALUE"
        assert contains_bytes(seg_create, blob), "the stored blob is not the C_WrapKey output"

        cold = parse_calls(seg_cold)
        unwraps = [c for c in cold if c.name == "C_UnwrapKey"]
        assert len(unwraps) == 1, [c.name for c in cold]
        load = unwraps[0]
        assert load.attribute_values("CKA_SENSITIVE") == ["True"], load.text
        assert load.attribute_values("CKA_EXTRACTABLE") == ["False"], load.text
        assert load.attribute_values("CKA_TOKEN") == ["False"], load.text
        assert contains_bytes(load.text, blob), "C_UnwrapKey was not given the stored blob"
        assert not _value_reads(cold), "the load path read CKA_VALUE"
        assert "C_CreateObject" not in [c.name for c in cold]

        warm = [c.name for c in parse_calls(seg_warm)]
        assert "C_UnwrapKey" not in warm, f"a cached key was unwrapped again: {warm}"
    finally:
        server.stop()
        server.cleanup()
