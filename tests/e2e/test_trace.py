"""Proof, from a PKCS#11 call trace, that ReEncrypt keeps the plaintext in the token.

A dedicated server is started with OpenSC's pkcs11-spy.so as its PKCS#11
module, in front of the embedded token (P11KMS_EMBEDDED_SOFTHSM=1 so the server still
manages the token under its data dir; on Kryoptic, tools/pkcs11-delay sits between
the spy and the token, see spy_server).  The spy logs every PKCS#11
call with its in/out buffers.  We then run

    Encrypt(64 random bytes)  ->  ReEncrypt to key B  ->  ReEncrypt (key B,
    new encryption context)  ->  Decrypt

and cut the trace into one segment per request (requests are sequential; the
file's size is taken before and after each call, once it stops growing).

For each ReEncrypt segment: no C_Decrypt* call, no C_GetAttributeValue that
asks for CKA_VALUE, C_UnwrapKey and C_WrapKey present, and the plaintext bytes
nowhere.  As a control that the search can find the plaintext at all, the
Decrypt segment must contain C_Decrypt and the plaintext bytes (Decrypt returns
the plaintext to the host, so it passes through C_Decrypt's output buffer).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from p11kms_server import E2E_TOKEN, Server, ServerError
from spytrace import DECRYPT_CALLS, contains_bytes, dumped_buffers, parse_calls

SPY_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
    "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11-spy.so",
)
SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)


def _first_existing(env_name: str, candidates) -> str:
    explicit = os.environ.get(env_name)
    if explicit:
        return explicit
    for cand in candidates:
        if os.path.exists(cand):
            return cand
    pytest.fail(f"none of {candidates} exists (set {env_name}); scripts/test.sh installs it", pytrace=False)


class Trace:
    def __init__(self, path: Path):
        self.path = path

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def settle(self, quiet: float = 0.4, timeout: float = 15.0) -> int:
        """Wait until the file has not grown for `quiet` seconds; return its size."""
        deadline = time.monotonic() + timeout
        last, since = self.size(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            cur = self.size()
            if cur != last:
                last, since = cur, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return cur
        return last

    def segment(self, start: int, end: int) -> str:
        with open(self.path, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start).decode("utf-8", errors="replace")

    def record(self, fn):
        start = self.settle()
        result = fn()
        end = self.settle()
        return result, self.segment(start, end)


def _token_module(p11kms_binary) -> str:
    """The embedded token's library, for pkcs11-spy to load behind the gateway."""
    if E2E_TOKEN == "kryoptic":
        beside = str(p11kms_binary.parent / "libkryoptic_pkcs11.so")
        return _first_existing("P11KMS_KRYOPTIC_MODULE", (beside,))
    return _first_existing("P11KMS_SOFTHSM_MODULE", SOFTHSM_CANDIDATES)


def _p11delay(workdir: Path) -> str:
    """tools/pkcs11-delay built into workdir: a forwarding module with no delay set."""
    script = Path(__file__).resolve().parents[2] / "tools" / "pkcs11-delay" / "build.sh"
    try:
        out = subprocess.run([str(script), str(workdir / "p11delay")], check=True,
                             capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.fail(f"tools/pkcs11-delay must build (cc, libp11-kit-dev): {err}", pytrace=False)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def spy_server(p11kms_binary, tmp_path_factory):
    spy = _first_existing("P11KMS_SPY_MODULE", SPY_CANDIDATES)
    token_module = _token_module(p11kms_binary)
    workdir = tmp_path_factory.mktemp("spy")
    trace_path = workdir / "pkcs11-spy.log"
    env = {
        "P11KMS_PKCS11_MODULE": spy,
        "P11KMS_EMBEDDED_SOFTHSM": "1",
        "P11KMS_EMBEDDED_TOKEN": E2E_TOKEN,
        "PKCS11SPY": token_module,
        "PKCS11SPY_OUTPUT": str(trace_path),
    }
    if E2E_TOKEN == "kryoptic":
        # Debian 12's pkcs11-spy (OpenSC 0.23) hands out a PKCS#11 3.x module's own
        # interface from C_GetInterface without wrapping it, so it would log nothing after
        # that call. tools/pkcs11-delay (no delay set) sits between the spy and Kryoptic:
        # it offers only C_GetFunctionList, so the spy wraps every call.
        env["PKCS11SPY"] = _p11delay(workdir)
        env["P11DELAY_MODULE"] = token_module
        env["P11DELAY_US"] = "0"
    server = Server(p11kms_binary, workdir=workdir, env=env, name="spy")
    try:
        server.start()
    except ServerError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield server, Trace(trace_path)
    finally:
        server.stop()


def _assert_no_plaintext_path(name: str, segment: str, plaintext: bytes):
    calls = parse_calls(segment)
    names = [c.name for c in calls]
    assert calls, f"{name}: the trace segment holds no PKCS#11 call at all"
    decrypts = [n for n in names if n.startswith(DECRYPT_CALLS)]
    assert not decrypts, f"{name}: the host called {decrypts}; calls were {names}"
    value_reads = [c for c in calls if c.name == "C_GetAttributeValue" and "CKA_VALUE" in c.attributes()]
    assert not value_reads, f"{name}: C_GetAttributeValue asked for CKA_VALUE:\n" + "\n".join(
        c.text for c in value_reads
    )
    assert "C_UnwrapKey" in names, f"{name}: no C_UnwrapKey; calls were {names}"
    # The unwrapped data key is CKA_SENSITIVE: the token itself refuses to hand out its value.
    for call in calls:
        if call.name == "C_UnwrapKey":
            assert call.attribute_values("CKA_SENSITIVE") == ["True"], (
                f"{name}: C_UnwrapKey without CKA_SENSITIVE=True:\n{call.text}"
            )
    assert "C_WrapKey" in names, f"{name}: no C_WrapKey; calls were {names}"
    hits = contains_bytes(segment, plaintext)
    assert not hits, f"{name}: the plaintext appears in the PKCS#11 trace ({', '.join(hits)})"


def test_reencrypt_never_exposes_plaintext(spy_server):
    server, trace = spy_server
    kms = server.client()
    key_a = kms.create_key(Description="trace source")["KeyMetadata"]
    key_b = kms.create_key(Description="trace destination")["KeyMetadata"]
    plaintext = os.urandom(64)
    ctx1 = {"trace": "one"}
    ctx2 = {"trace": "two", "extra": "pair"}

    enc, seg_encrypt = trace.record(
        lambda: kms.encrypt(KeyId=key_a["KeyId"], Plaintext=plaintext, EncryptionContext=ctx1)
    )
    re1, seg_re1 = trace.record(
        lambda: kms.re_encrypt(
            CiphertextBlob=enc["CiphertextBlob"],
            SourceEncryptionContext=ctx1,
            DestinationKeyId=key_b["KeyId"],
            DestinationEncryptionContext=ctx1,
        )
    )
    assert re1["KeyId"] == key_b["Arn"]
    re2, seg_re2 = trace.record(
        lambda: kms.re_encrypt(
            CiphertextBlob=re1["CiphertextBlob"],
            SourceEncryptionContext=ctx1,
            DestinationKeyId=key_b["KeyId"],
            DestinationEncryptionContext=ctx2,
        )
    )
    assert re2["KeyId"] == key_b["Arn"]
    dec, seg_decrypt = trace.record(
        lambda: kms.decrypt(CiphertextBlob=re2["CiphertextBlob"], EncryptionContext=ctx2)
    )
    assert dec["Plaintext"] == plaintext

    keep = Path(os.environ.get("P11KMS_TRACE_DIR", "")) if os.environ.get("P11KMS_TRACE_DIR") else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        for label, seg in (("encrypt", seg_encrypt), ("reencrypt-1", seg_re1),
                           ("reencrypt-2", seg_re2), ("decrypt", seg_decrypt)):
            (keep / f"{label}.trace").write_text(seg)

    _assert_no_plaintext_path("ReEncrypt to another key", seg_re1, plaintext)
    _assert_no_plaintext_path("ReEncrypt with a new encryption context", seg_re2, plaintext)

    # No key value leaves the token in any of the four requests.
    for label, seg in (("Encrypt", seg_encrypt), ("Decrypt", seg_decrypt)):
        reads = [c for c in parse_calls(seg) if c.name == "C_GetAttributeValue" and "CKA_VALUE" in c.attributes()]
        assert not reads, f"{label}: C_GetAttributeValue asked for CKA_VALUE:\n" + "\n".join(c.text for c in reads)

    # Control: the same search finds the plaintext where it must be.
    dec_names = [c.name for c in parse_calls(seg_decrypt)]
    assert any(n.startswith(DECRYPT_CALLS) for n in dec_names), (
        f"control: Decrypt made no C_Decrypt* call; calls were {dec_names}"
    )
    assert contains_bytes(seg_decrypt, plaintext), (
        "control: the plaintext was not found in the Decrypt segment, so the search "
        "method cannot be trusted"
    )


def _assert_refused_without_plaintext(name: str, call, segment: str, plaintext: bytes):
    """A direction the token cannot run in-token: refused, naming the mechanism, and the
    host never decrypted anything nor saw the plaintext on the way."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        call()
    err = info.value.response["Error"]
    assert err["Code"] == "UnsupportedOperationException", err
    assert "does not support the mechanism" in err["Message"], err
    names = [c.name for c in parse_calls(segment)]
    decrypts = [n for n in names if n.startswith(DECRYPT_CALLS)]
    assert not decrypts, f"{name}: the host called {decrypts}; calls were {names}"
    assert not contains_bytes(segment, plaintext), f"{name}: the plaintext appears in the trace"


@pytest.mark.parametrize("algo", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
def test_rsa_reencrypt_directions_never_expose_plaintext(spy_server, algo):
    """RSA -> RSA runs in the token (OAEP C_UnwrapKey into a sensitive session secret, OAEP
    C_WrapKey under the destination's public key). Symmetric <-> RSA runs in the token only
    where AES-GCM can wrap/unwrap; elsewhere (SoftHSM 2.6.1) it is refused, and the trace
    shows the refusal did not decrypt anything either. On Kryoptic, which has GCM key
    wrapping and OAEP with SHA-256, all four directions must run in the token."""
    if algo == "RSAES_OAEP_SHA_256" and E2E_TOKEN == "softhsm2":
        pytest.skip("SoftHSM 2.6.1 has no OAEP with SHA-256; its refusal is tested in tests/gateway/asymmetric/")
    in_token_everywhere = E2E_TOKEN == "kryoptic"
    server, trace = spy_server
    kms = server.client()
    rsa_a = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    rsa_b = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    sym = kms.create_key(Description="trace symmetric")["KeyMetadata"]
    plaintext = os.urandom(48)

    enc = kms.encrypt(KeyId=rsa_a["KeyId"], Plaintext=plaintext, EncryptionAlgorithm=algo)
    re, seg_re = trace.record(
        lambda: kms.re_encrypt(
            CiphertextBlob=enc["CiphertextBlob"],
            SourceKeyId=rsa_a["KeyId"],
            SourceEncryptionAlgorithm=algo,
            DestinationKeyId=rsa_b["KeyId"],
            DestinationEncryptionAlgorithm=algo,
        )
    )
    _assert_no_plaintext_path("ReEncrypt RSA -> RSA", seg_re, plaintext)
    dec, seg_dec = trace.record(
        lambda: kms.decrypt(
            CiphertextBlob=re["CiphertextBlob"], KeyId=rsa_b["KeyId"], EncryptionAlgorithm=algo
        )
    )
    assert dec["Plaintext"] == plaintext
    assert contains_bytes(seg_dec, plaintext), "control: plaintext not found in the RSA Decrypt segment"

    def rsa_to_sym():
        return kms.re_encrypt(
            CiphertextBlob=enc["CiphertextBlob"],
            SourceKeyId=rsa_a["KeyId"],
            SourceEncryptionAlgorithm=algo,
            DestinationKeyId=sym["KeyId"],
        )

    sym_blob = kms.encrypt(KeyId=sym["KeyId"], Plaintext=plaintext)["CiphertextBlob"]

    def sym_to_rsa():
        return kms.re_encrypt(
            CiphertextBlob=sym_blob, DestinationKeyId=rsa_b["KeyId"], DestinationEncryptionAlgorithm=algo
        )

    for name, call in (("ReEncrypt RSA -> symmetric", rsa_to_sym), ("ReEncrypt symmetric -> RSA", sym_to_rsa)):
        if in_token_everywhere:
            result, seg = trace.record(call)
            _assert_no_plaintext_path(name, seg, plaintext)
            if name == "ReEncrypt RSA -> symmetric":
                assert kms.decrypt(CiphertextBlob=result["CiphertextBlob"])["Plaintext"] == plaintext
            else:
                back = kms.decrypt(
                    CiphertextBlob=result["CiphertextBlob"], KeyId=rsa_b["KeyId"], EncryptionAlgorithm=algo
                )
                assert back["Plaintext"] == plaintext
            continue
        start = trace.settle()
        try:
            call()
        except Exception:  # noqa: BLE001 - the refusal is checked below on a fresh call
            seg = trace.segment(start, trace.settle())
            _assert_refused_without_plaintext(name, call, seg, plaintext)
        else:
            seg = trace.segment(start, trace.settle())
            _assert_no_plaintext_path(name, seg, plaintext)


# --------------------------------------------------------------------------
# Calls and session objects per request (issue 16): a regression guard
# --------------------------------------------------------------------------
# PKCS#11 calls that create an object (every one in these requests is a session object).
CREATING_CALLS = ("C_GenerateKey", "C_DeriveKey", "C_UnwrapKey", "C_CopyObject", "C_CreateObject")

# The most calls (and session objects created) one symmetric request may make, per token.
# Warm: the context's key is cached and the token's best scheme is written (3 on Kryoptic:
# GCM key wrap; 2 on SoftHSM2: KWP and an HMAC tag). Issue 16's goals are Kryoptic 3/4/5 and
# SoftHSM2 6/5/7 (ReEncrypt/Decrypt/Encrypt).
# Cold: a context seen for the first time (scheme 1).
# A request's data key and per-message wrapping keys are left to its session, which the pool
# closes once it holds hsm.transient_objects_per_session of them (32 here): that sweep
# (C_CloseSession, then C_OpenSession and C_GetSessionInfo for the next request that needs a
# session) replaces a C_DestroyObject per request and is reported apart, as is
# C_GenerateRandom, which refills the nonce/IV reservoir (4 KiB, one call per ~146 requests).
MAX_CALLS = {
    "softhsm2": {"Encrypt": (6, 1), "Decrypt": (5, 1), "ReEncrypt": (6, 1)},
    "kryoptic": {"Encrypt": (4, 1), "Decrypt": (3, 1), "ReEncrypt": (2, 1)},
}
MAX_COLD_CALLS = {"Encrypt": (5, 2), "Decrypt": (4, 2), "ReEncrypt": (4, 3)}
# The pool's sweep of a session that holds its quota of transient objects.
SWEEP_CALLS = ("C_CloseSession", "C_OpenSession", "C_GetSessionInfo")
TRANSIENT_OBJECTS_PER_SESSION = 32


def _count(segment: str) -> tuple[list[str], int, int, int]:
    calls = parse_calls(segment)
    names = [c.name for c in calls if c.name != "C_GenerateRandom" and c.name not in SWEEP_CALLS]
    refills = sum(1 for c in calls if c.name == "C_GenerateRandom")
    sweeps = sum(1 for c in calls if c.name == "C_CloseSession")
    created = sum(1 for c in calls if c.name in CREATING_CALLS and "CKR_OK" in c.text)
    return names, created, refills, sweeps


def _check(label: str, limits, segments) -> list[str]:
    failures = []
    for op, seg in segments:
        names, created, refills, sweeps = _count(seg)
        max_calls, max_created = limits[op]
        print(f"{E2E_TOKEN} {label} {op}: {len(names)} PKCS#11 calls, {created} session objects "
              f"created (+{refills} reservoir refill, +{sweeps} session sweep): " + ", ".join(names))
        if len(names) > max_calls or created > max_created or refills > 1 or sweeps > 1:
            failures.append(f"{label} {op}: {len(names)} calls (at most {max_calls}), {created} "
                            f"objects (at most {max_created}), {refills} refills, {sweeps} sweeps: "
                            f"{names}")
    return failures


def test_symmetric_call_counts(spy_server):
    """Encrypt, Decrypt and ReEncrypt of 32 bytes: warm (a context used before, so its key is
    cached and the token's best scheme is written) and cold (a context never seen). Prints
    the calls; fails above MAX_CALLS / MAX_COLD_CALLS."""
    server, trace = spy_server
    kms = server.client()
    key_a = kms.create_key(Description="count source")["KeyMetadata"]["KeyId"]
    key_b = kms.create_key(Description="count destination")["KeyMetadata"]["KeyId"]
    ctx = {"purpose": "counting"}
    plaintext = os.urandom(32)

    def encrypt(context=ctx):
        return kms.encrypt(KeyId=key_a, Plaintext=plaintext, EncryptionContext=context)["CiphertextBlob"]

    def decrypt(blob, context=ctx):
        return kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]

    def re_encrypt(blob, source=ctx, destination=ctx):
        return kms.re_encrypt(
            CiphertextBlob=blob,
            SourceEncryptionContext=source,
            DestinationKeyId=key_b,
            DestinationEncryptionContext=destination,
        )["CiphertextBlob"]

    # Warm up: the contexts' writers and keys on both keys reach the cache.
    for _ in range(3):
        warm = encrypt()
        assert decrypt(warm) == plaintext
        assert decrypt(re_encrypt(warm)) == plaintext

    blob, seg_encrypt = trace.record(encrypt)
    back, seg_decrypt = trace.record(lambda: decrypt(blob))
    assert back == plaintext
    moved, seg_re = trace.record(lambda: re_encrypt(blob))
    assert decrypt(moved) == plaintext
    best = 3 if E2E_TOKEN == "kryoptic" else 2
    assert (blob[1], moved[1]) == (best, best), "warm contexts use the token's best scheme"
    failures = _check("warm", MAX_CALLS[E2E_TOKEN],
                      (("Encrypt", seg_encrypt), ("Decrypt", seg_decrypt), ("ReEncrypt", seg_re)))

    once = {"purpose": "once", "nonce": os.urandom(8).hex()}
    elsewhere = {"purpose": "elsewhere", "nonce": os.urandom(8).hex()}
    cold, seg_cold_encrypt = trace.record(lambda: encrypt(once))
    _, seg_cold_decrypt = trace.record(lambda: decrypt(cold, once))
    cold_moved, seg_cold_re = trace.record(lambda: re_encrypt(cold, once, elsewhere))
    assert cold[1] == 1 and cold_moved[1] == 1, "a context seen once is written with scheme 1"
    assert decrypt(cold_moved, elsewhere) == plaintext
    failures += _check("cold", MAX_COLD_CALLS,
                       (("Encrypt", seg_cold_encrypt), ("Decrypt", seg_cold_decrypt),
                        ("ReEncrypt", seg_cold_re)))
    assert not failures, "; ".join(failures)


def test_transient_objects_are_swept_with_their_session(spy_server):
    """Many ReEncrypts in a row: the data keys are never destroyed one by one, the pool
    closes a session once it holds its quota of them, and every call counted, sweeps and
    refills included, stays within the warm count plus its share of a sweep."""
    server, trace = spy_server
    kms = server.client()
    key_a = kms.create_key(Description="sweep source")["KeyMetadata"]["KeyId"]
    key_b = kms.create_key(Description="sweep destination")["KeyMetadata"]["KeyId"]
    ctx = {"purpose": "sweeping"}
    for _ in range(3):  # a warm context: the blob is written with the token's best scheme
        blob = kms.encrypt(KeyId=key_a, Plaintext=b"swept", EncryptionContext=ctx)["CiphertextBlob"]
    assert blob[1] in (2, 3)

    def re_encrypt():
        return kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ctx,
                              DestinationKeyId=key_b, DestinationEncryptionContext=ctx)
    for _ in range(3):
        re_encrypt()
    requests = 4 * TRANSIENT_OBJECTS_PER_SESSION
    _, segment = trace.record(lambda: [re_encrypt() for _ in range(requests)])
    calls = parse_calls(segment)
    names = [c.name for c in calls]
    destroys = names.count("C_DestroyObject")
    sweeps = names.count("C_CloseSession")
    created = sum(1 for c in calls if c.name in CREATING_CALLS and "CKR_OK" in c.text)
    warm = MAX_CALLS[E2E_TOKEN]["ReEncrypt"][0]
    per_request = len(names) / requests
    print(f"{E2E_TOKEN} {requests} ReEncrypts: {len(names)} PKCS#11 calls ({per_request:.2f} per "
          f"request), {created} objects created, {sweeps} sessions swept, {destroys} destroys")
    assert destroys == 0, f"{destroys} data keys were destroyed one by one"
    assert created == requests, f"{created} objects for {requests} requests"
    # The pool lends the most recently returned session first, so one session serves these
    # sequential requests and is swept once per quota.
    assert requests // TRANSIENT_OBJECTS_PER_SESSION - 1 <= sweeps <= requests // TRANSIENT_OBJECTS_PER_SESSION
    sweep_share = len(SWEEP_CALLS) / TRANSIENT_OBJECTS_PER_SESSION
    assert per_request <= warm + sweep_share + 2 / requests, f"{per_request:.2f} calls per request"


# --------------------------------------------------------------------------
# The trace reader itself, on a hand-written sample in pkcs11-spy's format
# --------------------------------------------------------------------------
SAMPLE = """\
7: C_GetAttributeValue
2026-11-29 06:11:52.113
[in] hSession = 0x1
[in] hObject = 0x2
[in] pTemplate[2]: 
    CKA_VALUE_LEN         00007ffd00000000 / 8
    CKA_VALUE             0000559bcc2b54e0 / 32
[out] pTemplate[2]: 
    CKA_VALUE             0000559bcc2b54e0 / 32
    00000000  0D 92 A9 21 07 DB BD D3 BA 2B D8 CB 84 6F EF FD  ...!.....+...o..
    00000010  13 91 BE 85 56 E4 E4 02 D8 B5 33 96 76 53 13 DF  ....V.....3.vS..
Returned:  0 CKR_OK

14: C_Decrypt
2026-11-29 06:08:27.665
[in] hSession = 0x1
[in] pEncryptedData[ulEncryptedDataLen] 00007fff2bf79ae0 / 5
    00000000  01 02 03 04 05                                   .....           
[out] pData[*pulDataLen] 00007fff2bf79ee0 / 42
    00000000  41 42 43 44 45 46 47 48 49 4A 4B 4C 4D 4E 4F 50  ABCDEFGHIJKLMNOP
    00000010  51 52 53 54 55 56 57 58 59 5A 30 31 32 33 34 35  QRSTUVWXYZ012345
    00000020  36 37 38 39 61 62 63 64 65 66                    6789abcdef      
Returned:  0 CKR_OK

"""

UNWRAP_SAMPLE = """\
53: C_UnwrapKey
2026-11-29 06:24:02.588
[in] hSession = 0x1
[in] pMechanism->type = 0x0000210A
[in] pMechanism->pParameter[ulParameterLen] NULL [size : 0x0 (0)]
[in] hUnwrappingKey = 0xd
[in] pWrappedKey[ulWrappedKeyLen] 00007fa6300169a2 / 40
    00000000  7B D1 D7 79 14 A9 4D CD 2D 14 CD 5D 05 1A 4A 0B  {..y..M.-..]..J.
    00000010  EE 38 D6 BA 38 28 10 2B A6 7E CB 77 69 67 0F FC  .8..8(.+.~.wig..
    00000020  EE 66 A5 EF 06 87 B2 A1                          .f......        
[in] pTemplate[7]: 
    CKA_CLASS             CKO_SECRET_KEY       
    CKA_KEY_TYPE          CKK_AES            
    CKA_TOKEN             False
    CKA_SENSITIVE         True
    CKA_EXTRACTABLE       True
    CKA_ENCRYPT           False
    CKA_DECRYPT           False
[out] hKey = 0xe
Returned:  0 CKR_OK
"""


def test_spytrace_reader_on_sample():
    calls = parse_calls(SAMPLE)
    assert [c.name for c in calls] == ["C_GetAttributeValue", "C_Decrypt"]
    assert calls[0].attributes().count("CKA_VALUE") == 2
    assert "CKA_VALUE_LEN" in calls[0].attributes()
    assert parse_calls(UNWRAP_SAMPLE)[0].attribute_values("CKA_SENSITIVE") == ["True"]
    assert parse_calls(UNWRAP_SAMPLE)[0].attribute_values("CKA_DECRYPT") == ["False"]
    bufs = dumped_buffers(SAMPLE)
    assert bufs[1] == bytes([1, 2, 3, 4, 5])
    assert bufs[2] == b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef"
    # a needle spanning a row boundary, binary and printable
    assert contains_bytes(SAMPLE, b"OPQRSTUV")
    assert contains_bytes(SAMPLE, bytes.fromhex("846FEFFD1391"))
    assert contains_bytes(SAMPLE, bytes.fromhex("EFFD1391BE85"))
    assert not contains_bytes(SAMPLE, bytes.fromhex("EFFD1391BE86"))
    assert not contains_bytes(SAMPLE, os.urandom(64))
