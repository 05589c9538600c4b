"""Read OpenSC pkcs11-spy trace output.

pkcs11-spy (opensc-pkcs11) writes one record per PKCS#11 call:

    14: C_Encrypt
    2026-11-29 06:08:27.665
    [in] hSession = 0x1
    [in] pData[ulDataLen] 00007fff2bf79ae0 / 42
        00000000  41 42 43 44 45 46 47 48 49 4A 4B 4C 4D 4E 4F 50  ABCDEFGHIJKLMNOP
        00000010  51 52 53 54 55 56 57 58 59 5A 30 31 32 33 34 35  QRSTUVWXYZ012345
    [out] pEncryptedData[*pulEncryptedDataLen] 00007fff2bf79ee0 / 48
        ...
    Returned:  0 CKR_OK

Buffers are hex dumps of 16 bytes a row (an 8-digit offset, the bytes in
upper-case hex, then an ASCII column), so a byte string longer than a few
bytes is split across rows and never appears as one hex run in the raw
text.  `dumped_buffers` reassembles every dumped buffer into bytes, and
`contains_bytes` searches those, a whitespace-free hex rendering of all dump
rows of a segment, and the raw text itself (hex in both cases, base64).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

CALL_RE = re.compile(r"^\d+: (C_\w+)\s*$", re.MULTILINE)
# offset, two spaces, 1..16 "XX " groups (the last row may be short), then the ASCII column
DUMP_ROW_RE = re.compile(r"^\s+([0-9A-Fa-f]{8})  ((?:[0-9A-Fa-f]{2} ){0,15}[0-9A-Fa-f]{2})(?: |$)")
TEMPLATE_ATTR_RE = re.compile(r"^\s+(CKA_[A-Z0-9_]+)\s", re.MULTILINE)

DECRYPT_CALLS = ("C_Decrypt", "C_DecryptInit", "C_DecryptUpdate", "C_DecryptFinal")


@dataclass
class Call:
    name: str
    text: str

    def attributes(self) -> list[str]:
        return TEMPLATE_ATTR_RE.findall(self.text)

    def attribute_values(self, attr: str) -> list[str]:
        """The printed values of attr in this call's templates, e.g. ['True']."""
        return re.findall(rf"^\s+{re.escape(attr)}\s+(\S+)\s*$", self.text, re.MULTILINE)


def parse_calls(text: str) -> list[Call]:
    calls: list[Call] = []
    matches = list(CALL_RE.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        calls.append(Call(m.group(1), text[m.start():end]))
    return calls


def dumped_buffers(text: str) -> list[bytes]:
    """Every hex-dumped buffer in text, reassembled from its rows."""
    buffers: list[bytearray] = []
    expected_offset = None
    for line in text.splitlines():
        m = DUMP_ROW_RE.match(line)
        if not m:
            expected_offset = None
            continue
        offset = int(m.group(1), 16)
        row = bytes.fromhex(m.group(2).replace(" ", ""))
        if offset == 0 or expected_offset is None or offset != expected_offset:
            buffers.append(bytearray())
        buffers[-1] += row
        expected_offset = offset + len(row)
    return [bytes(b) for b in buffers]


def _dump_hex(text: str) -> str:
    """All dump rows' bytes as one lower-case hex string (whitespace and
    offsets/ASCII columns removed)."""
    parts = []
    for line in text.splitlines():
        m = DUMP_ROW_RE.match(line)
        if m:
            parts.append(m.group(2).replace(" ", "").lower())
    return "".join(parts)


def contains_bytes(text: str, needle: bytes) -> list[str]:
    """Where needle shows up in a trace segment; an empty list means nowhere."""
    hits = []
    hexed = needle.hex()
    if any(needle in buf for buf in dumped_buffers(text)):
        hits.append("inside a dumped buffer")
    if hexed in _dump_hex(text):
        hits.append("in the concatenated hex of the dump rows")
    squeezed = re.sub(r"\s+", "", text).lower()
    if hexed in squeezed:
        hits.append("as a hex run in the raw text")
    b64 = base64.b64encode(needle).decode()
    if b64 in text or b64.rstrip("=") in text:
        hits.append("as base64 in the raw text")
    try:
        as_text = needle.decode("ascii")
    except UnicodeDecodeError:
        as_text = None
    if as_text and as_text.isprintable() and as_text in text:
        hits.append("as ASCII text")
    return hits
