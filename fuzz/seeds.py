#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

The seeds are small, hand-made starting points: one or two valid inputs per input shape and a
few near misses. AFL++ mutates from them. Run from anywhere: `python3 fuzz/seeds.py`.
"""
import json
import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
SIGV4_SUITE = HERE.parent / "tests" / "data" / "sigv4"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# --- ciphertext: src/kms/ciphertext.rs layout -------------------------------------------
def blob(payload_len, version=1, scheme=1):
    header = bytes([version, scheme])
    key_id = bytes(range(16))
    material = bytes(range(32, 64))
    nonce = b"\x11" * 16
    wrapped = b"\x22" * 40
    iv = b"\x33" * 12
    payload = bytes((i * 7) & 0xFF for i in range(payload_len + 16))
    return header + key_id + material + nonce + wrapped + iv + payload


write("ciphertext", "one-byte-plaintext", blob(1))
write("ciphertext", "32-byte-plaintext", blob(32))
write("ciphertext", "truncated", blob(0)[:-1])
write("ciphertext", "foreign-version", blob(8, version=2))
write("ciphertext", "context-pairs", b"Department\x00Engineering\x00aws:x\x00\xe2\x82\xac\x00")

# --- api_request: selector byte (index into Operation::ALL) + JSON body -------------------
OPS = """CreateKey DescribeKey ListKeys EnableKey DisableKey ScheduleKeyDeletion CancelKeyDeletion
UpdateKeyDescription CreateAlias UpdateAlias DeleteAlias ListAliases TagResource UntagResource
ListResourceTags EnableKeyRotation DisableKeyRotation GetKeyRotationStatus RotateKeyOnDemand
ListKeyRotations Encrypt Decrypt ReEncrypt GenerateDataKey GenerateDataKeyWithoutPlaintext
GenerateRandom GetPublicKey Sign Verify GenerateMac VerifyMac GenerateDataKeyPair
GenerateDataKeyPairWithoutPlaintext CreateGrant ListGrants ListRetirableGrants RetireGrant
RevokeGrant GetKeyPolicy PutKeyPolicy ListKeyPolicies GetParametersForImport ImportKeyMaterial
DeleteImportedKeyMaterial""".split()
KEY = "arn:aws:kms:us-east-1:111122223333:key/0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10"


def api(op, body):
    raw = body if isinstance(body, str) else json.dumps(body)
    write("api_request", op, bytes([OPS.index(op)]) + raw.encode())


api("Encrypt", {"KeyId": "alias/payments", "Plaintext": "aGVsbG8gd29ybGQ=",
                "EncryptionContext": {"Department": "Engineering"},
                "GrantTokens": ["token"], "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "DryRun": False})
api("Decrypt", {"CiphertextBlob": "AQEAAQIDBAUGBwgJCgsMDQ4P", "KeyId": KEY,
                "EncryptionContext": {"a": "b"}})
api("CreateKey", {"Description": "fuzz", "KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY",
                  "Tags": [{"TagKey": "team", "TagValue": "payments"}],
                  "Policy": "{\"Statement\":[]}", "MultiRegion": False})
api("CreateGrant", {"KeyId": KEY, "GranteePrincipal": "arn:aws:iam::111122223333:role/r",
                    "Operations": ["Decrypt", "Encrypt"],
                    "Constraints": {"EncryptionContextSubset": {"k": "v"}}, "Name": "g"})
api("Sign", {"KeyId": KEY, "Message": "ZGlnZXN0", "MessageType": "RAW",
             "SigningAlgorithm": "ECDSA_SHA_256"})
api("GenerateDataKey", {"KeyId": KEY, "NumberOfBytes": 64, "KeySpec": "AES_256"})
api("ListKeys", {"Limit": 1001, "Marker": "\u00ff"})
api("ReEncrypt", {"CiphertextBlob": "AQE=", "DestinationKeyId": "alias/x",
                  "SourceEncryptionContext": {}, "DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
api("GenerateDataKeyPair", {"KeyId": KEY, "KeyPairSpec": "RSA_2048",
                            "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                                          "AttestationDocument": "AAAA"}})
api("PutKeyPolicy", '{"KeyId":"k","PolicyName":"default","Policy":"{}","PolicyName":"x"}')
api("TagResource", '{"KeyId":"k","Tags":[{"TagKey":""},{"TagValue":1}]}')

# --- sigv4: `METHOD TARGET`, header lines, empty line, body -------------------------------
for name in ["get-vanilla", "get-header-key-duplicate", "get-vanilla-query-order-encoded",
             "post-x-www-form-urlencoded", "post-sts-header-before", "get-slashes-normalized"]:
    text = (SIGV4_SUITE / name / "header-signed-request.txt").read_text()
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, target, _version = lines[0].split(" ")
    write("sigv4", name, "\n".join([f"{method} {target}"] + lines[1:]) + "\n\n" + body)
write("sigv4", "kms-unsigned",
      "POST /\nHost:kms.us-east-1.amazonaws.com\nContent-Type:application/x-amz-json-1.1\n"
      "X-Amz-Target:TrentService.ListKeys\nX-Amz-Date:20150830T123600Z\n\n{\"Limit\":10}")
write("sigv4", "date-header",
      "POST /?a=b&a=%2F&c\nHost:h\nDate:Sun, 30 Aug 2015 12:36:00 GMT\nAuthorization:AWS4-HMAC-SHA256 "
      "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,SignedHeaders=date;host,"
      "Signature=0123456789abcdef\n\n")

# --- policy: mode byte; even = document NUL request lines, odd = pattern NUL resource ------
def policy(name, doc, request_lines=()):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    write("policy", name, b"\x00" + text.encode() + b"\x00" + "\n".join(request_lines).encode())


policy("default-key-policy", {
    "Version": "2012-10-17", "Id": "key-default-1",
    "Statement": [{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                   "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                   "Action": "kms:*", "Resource": "*"}]},
    ["kms:Decrypt", KEY, "arn:aws:iam::111122223333:user/alice", "111122223333"])
policy("conditions", {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ["111122223333", "arn:aws:iam::444455556666:role/r"]},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey?"],
         "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:Department": "Engineering"},
                       "ForAnyValue:StringLike": {"kms:EncryptionContextKeys": ["Dep*", "x?"]},
                       "IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]},
                       "Bool": {"aws:SecureTransport": "true"},
                       "NumericLessThanIfExists": {"kms:GrantOperations": "3"},
                       "Null": {"kms:GranteePrincipal": "true"},
                       "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/*"}}},
        {"Effect": "Deny", "NotPrincipal": {"Service": "kms.amazonaws.com"},
         "NotAction": "kms:Describe*", "NotResource": "arn:aws:kms:*:*:alias/*",
         "Condition": {"ForAllValues:StringNotEqualsIgnoreCase": {"kms:EncryptionContextKeys": "A"},
                       "BinaryEquals": {"kms:RecipientAttestation:ImageSha384": "AAAA"}}}]},
    ["kms:decrypt", KEY, "arn:aws:sts::444455556666:assumed-role/r/s", "444455556666",
     "kms:EncryptionContext:Department=Engineering", "kms:EncryptionContextKeys=Department",
     "kms:EncryptionContextKeys=x1", "aws:SourceIp=10.1.2.3", "aws:SecureTransport=true"])
policy("identity-policy", {"Statement": {"Effect": "Allow", "Action": "kms:*",
                                         "Resource": "arn:aws:kms:us-east-1:111122223333:key/*"}})
policy("duplicate-key", '{"Statement":{"Effect":"Deny","Effect":"Allow","Principal":"*"}}')
write("policy", "wildcard", b"\x01aws:kms:*:111122223333:key/??*-*\x00aws:kms:us-east-1:111122223333:key/ab-c")
write("policy", "wildcard-unicode", "\x01*\u00e9?*\x00x\u00e9\u00e9".encode())

# --- seed: TOML ---------------------------------------------------------------------------
write("seed", "full", """[[keys]]
key_id = "0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10"
description = "payments"
aliases = ["alias/payments", "alias/team/pay_1"]
tags = { team = "payments", env = "prod" }
rotation_period_days = 365
enabled = false

[[keys]]
key_id = "7c9d1f2e-3a4b-4c5d-8e6f-0a1b2c3d4e5f"
account = "444455556666"
adopt = { label = "legacy-master" }
""")
write("seed", "adopt-id", """[[keys]]
key_id = "7c9d1f2e-3a4b-4c5d-8e6f-0a1b2c3d4e5f"
key_spec = "SYMMETRIC_DEFAULT"
key_usage = "ENCRYPT_DECRYPT"
adopt = { id = "0a0b0c" }
""")
write("seed", "declared-twice", """[[keys]]
key_id = "0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10"
[[keys]]
key_id = "0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10"
""")
write("seed", "empty", "")
