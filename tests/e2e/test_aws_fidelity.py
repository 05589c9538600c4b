"""Fidelity to real AWS KMS: black-box checks of answers recorded against AWS.

Each test names its source:
  awsfact   -- a response recorded against real AWS in LocalStack's
               tests/aws/services/kms/test_kms.snapshot.json (test id / snapshot key), for
               tests marked aws.validated there. The checks are written here from the
               recorded responses; nothing of LocalStack's test code is reused.
  awsreport -- a real-AWS response quoted in a public GitHub issue (URL).
  awsdoc    -- the AWS API reference / botocore's KMS model.

Scenarios for features p11kms does not have (multi-region replicas, imported key
material, custom key stores, DeriveSharedSecret) are left out; see the README's feature list.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import pytest
from botocore.exceptions import ClientError

from p11kms_server import kms_client

INCORRECT_KEY = "The key ID in the request does not identify a CMK that can perform this operation."
RESERVED_TAGS = "Tags beginning with aws: are reserved"
MESSAGE = b"test message 123 !%$@ 1234567890"


@pytest.fixture(scope="module")
def raw(endpoint):
    """A client without botocore's own parameter checks, so the server sees what the test sends."""
    return kms_client(endpoint, parameter_validation=False)


def expect_error(call, code: str, message: str | None = None, message_re: str | None = None):
    """Runs `call`, which must fail with `code` and HTTP 400 (every error AWS recorded is a 400)."""
    with pytest.raises(ClientError) as info:
        call()
    resp = info.value.response
    assert resp["Error"]["Code"] == code, resp
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400, resp
    got = resp["Error"].get("Message", "")
    if message is not None:
        assert got == message, resp
    if message_re is not None:
        assert re.fullmatch(message_re, got), resp
    return resp


def tag_list(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in pairs.items()]


def list_tags(kms, key_id: str) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}


# --------------------------------------------------------------------------
# Tags (issue 15 item 5): reserved prefix, tag count, duplicates, lengths
# --------------------------------------------------------------------------
@pytest.mark.parametrize("tag_key", ["aws:key1", "AWS:key1", "Aws:Key1"])
def test_create_key_reserved_tag_prefix(create_key, tag_key):
    # awsfact: TestKMS::test_create_key_with_invalid_tag_key[lowercase_prefix|uppercase_prefix]
    #          / invalid-tag-key (mixed case follows from "any case")
    expect_error(lambda: create_key(Tags=tag_list({tag_key: "value1"})), "TagException", RESERVED_TAGS)


def test_tag_resource_reserved_tag_prefix(kms, create_key):
    # awsfact: TestKMS::test_tag_existing_key_with_invalid_tag_key / invalid-tag-key
    key_id = create_key()["KeyId"]
    expect_error(
        lambda: kms.tag_resource(KeyId=key_id, Tags=tag_list({"aws:key1": "value1"})),
        "TagException",
        RESERVED_TAGS,
    )
    assert list_tags(kms, key_id) == {}


def test_prefix_not_reserved_elsewhere(kms, create_key):
    key_id = create_key(Tags=tag_list({"awskey": "a", "my-aws:key": "b", "aws": "c"}))["KeyId"]
    assert list_tags(kms, key_id) == {"awskey": "a", "my-aws:key": "b", "aws": "c"}


def test_create_key_too_many_tags(kms, create_key):
    # awsfact: TestKMS::test_create_key_with_too_many_tags_raises_error / invalid-tag-key (51 tags)
    expect_error(
        lambda: create_key(Tags=tag_list({f"key{i}": f"value{i}" for i in range(51)})),
        "TagException",
        "Too many tags",
    )
    # 50 is the limit, not over it.
    key_id = create_key(Tags=tag_list({f"key{i}": f"value{i}" for i in range(50)}))["KeyId"]
    assert len(list_tags(kms, key_id)) == 50


def test_tag_resource_too_many_tags(kms, create_key):
    # The same limit on TagResource (awsdoc: a KMS key has at most 50 tags).
    key_id = create_key()["KeyId"]
    expect_error(
        lambda: kms.tag_resource(KeyId=key_id, Tags=tag_list({f"k{i}": "v" for i in range(51)})),
        "TagException",
        "Too many tags",
    )
    assert list_tags(kms, key_id) == {}


def test_tag_resource_counts_the_tags_a_key_already_has(kms, create_key):
    # The quota is per key (awsdoc: a KMS key has at most 50 tags), so tags already on the key
    # count; tags whose keys it already holds only change their values.
    held = {f"held{i}": "v" for i in range(45)}
    key_id = create_key(Tags=tag_list(held))["KeyId"]
    expect_error(
        lambda: kms.tag_resource(KeyId=key_id, Tags=tag_list({f"new{i}": "v" for i in range(6)})),
        "TagException",
        "Too many tags",
    )
    assert list_tags(kms, key_id) == held, "a refused TagResource wrote some of its tags"
    changed = {"held0": "changed", **{f"new{i}": "v" for i in range(5)}}
    kms.tag_resource(KeyId=key_id, Tags=tag_list(changed))
    assert list_tags(kms, key_id) == {**held, **changed}
    kms.tag_resource(KeyId=key_id, Tags=tag_list({"held1": "again"}))
    expect_error(
        lambda: kms.tag_resource(KeyId=key_id, Tags=tag_list({"one-more": "v"})),
        "TagException",
        "Too many tags",
    )
    kms.untag_resource(KeyId=key_id, TagKeys=["held2"])
    kms.tag_resource(KeyId=key_id, Tags=tag_list({"one-more": "v"}))
    assert len(list_tags(kms, key_id)) == 50


def test_tag_resource_duplicate_keys(kms, create_key):
    # awsfact: TestKMS::test_tag_key_with_duplicate_tag_keys_raises_error / duplicate-tag-keys
    key_id = create_key()["KeyId"]
    expect_error(
        lambda: kms.tag_resource(
            KeyId=key_id,
            Tags=[{"TagKey": "tag1", "TagValue": "value1"}, {"TagKey": "tag1", "TagValue": "another-value1"}],
        ),
        "TagException",
        "Duplicate tag keys",
    )


def test_create_key_tag_key_too_long(create_key):
    # awsfact: TestKMS::test_create_key_with_invalid_tag_key[too_long_key] / invalid-tag-key
    key = "a" * 129
    expect_error(
        lambda: create_key(Tags=tag_list({key: "value1"})),
        "ValidationException",
        f"1 validation error detected: Value '{key}' at 'tags.1.member.tagKey' failed to satisfy "
        "constraint: Member must have length less than or equal to 128",
    )


def test_create_key_tag_value_too_long(create_key):
    # awsfact: TestKMS::test_key_with_long_tag_value_raises_error / too-long-tag-value
    value = "v" * 257
    expect_error(
        lambda: create_key(Tags=tag_list({"tag1": value})),
        "ValidationException",
        f"1 validation error detected: Value '{value}' at 'tags.1.member.tagValue' failed to satisfy "
        "constraint: Member must have length less than or equal to 256",
    )


def test_model_constraints_come_before_tag_rules(create_key):
    # AWS checks the model's constraints before the service's rules: a reserved key that is
    # also too long is a ValidationException naming the member.
    key = "aws:" + "a" * 125
    expect_error(
        lambda: create_key(Tags=tag_list({key: "v"})),
        "ValidationException",
        f"1 validation error detected: Value '{key}' at 'tags.1.member.tagKey' failed to satisfy "
        "constraint: Member must have length less than or equal to 128",
    )


def test_tags_update_and_partial_untag(kms, create_key):
    # awsfact: TestKMS::test_update_and_add_tags_on_tagged_key, test_untag_key_partially,
    #          test_create_key_with_tag_and_untag, test_tag_existing_key_and_untag
    key_id = create_key(Tags=tag_list({"tag1": "value1", "tag2": "value2", "tag3": "value3"}))["KeyId"]
    kms.tag_resource(KeyId=key_id, Tags=tag_list({"tag4": "value4", "tag2": "updated_value2"}))
    assert list_tags(kms, key_id) == {"tag1": "value1", "tag2": "updated_value2", "tag3": "value3", "tag4": "value4"}
    kms.untag_resource(KeyId=key_id, TagKeys=["tag2", "tag4"])
    assert list_tags(kms, key_id) == {"tag1": "value1", "tag3": "value3"}


# --------------------------------------------------------------------------
# A key of another usage named in Decrypt / ReEncrypt (issue 15 item 5)
# --------------------------------------------------------------------------
@pytest.fixture
def keys(create_key):
    return {
        "sym": create_key(),
        "hmac": create_key(KeySpec="HMAC_224", KeyUsage="GENERATE_VERIFY_MAC"),
        "rsa_sign": create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"),
    }


def test_decrypt_with_hmac_key_is_incorrect_key(kms, keys):
    # awsfact: TestKMS::test_error_messaging_for_invalid_keys / decrypt-invalid-key-id
    blob = kms.encrypt(KeyId=keys["sym"]["KeyId"], Plaintext=b"test message 123!@#")["CiphertextBlob"]
    expect_error(
        lambda: kms.decrypt(CiphertextBlob=blob, KeyId=keys["hmac"]["KeyId"]), "IncorrectKeyException", INCORRECT_KEY
    )


def test_decrypt_with_signing_key_is_incorrect_key(kms, keys, create_key):
    # Not recorded for a signing key; AWS's rule (awsdoc, IncorrectKeyException: "The KeyId in
    # a Decrypt request ... must identify the same KMS key that was used to encrypt the
    # ciphertext") and the HMAC record above give IncorrectKeyException.
    blob = kms.encrypt(KeyId=keys["sym"]["KeyId"], Plaintext=MESSAGE)["CiphertextBlob"]
    ecc = create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    for signer in (keys["rsa_sign"], ecc):
        expect_error(
            lambda: kms.decrypt(CiphertextBlob=blob, KeyId=signer["Arn"]), "IncorrectKeyException", INCORRECT_KEY
        )


def test_re_encrypt_from_hmac_key_is_incorrect_key(kms, keys):
    # awsfact: TestKMS::test_re_encrypt_incorrect_source_key / incorrect-source-key
    # (SourceKeyId and DestinationKeyId both name the HMAC key: the source is checked first)
    blob = kms.encrypt(KeyId=keys["sym"]["KeyId"], Plaintext=MESSAGE, EncryptionAlgorithm="SYMMETRIC_DEFAULT")[
        "CiphertextBlob"
    ]
    hmac_id = keys["hmac"]["KeyId"]
    expect_error(
        lambda: kms.re_encrypt(
            SourceKeyId=hmac_id,
            DestinationKeyId=hmac_id,
            CiphertextBlob=blob,
            SourceEncryptionAlgorithm="SYMMETRIC_DEFAULT",
            DestinationEncryptionAlgorithm="SYMMETRIC_DEFAULT",
        ),
        "IncorrectKeyException",
        INCORRECT_KEY,
    )


def test_re_encrypt_from_signing_key_is_incorrect_key(kms, keys):
    blob = kms.encrypt(KeyId=keys["sym"]["KeyId"], Plaintext=MESSAGE)["CiphertextBlob"]
    expect_error(
        lambda: kms.re_encrypt(
            SourceKeyId=keys["rsa_sign"]["KeyId"], DestinationKeyId=keys["sym"]["KeyId"], CiphertextBlob=blob
        ),
        "IncorrectKeyException",
        INCORRECT_KEY,
    )


def test_re_encrypt_to_hmac_key_is_invalid_usage(kms, keys):
    # The destination is not a key that encrypts: InvalidKeyUsageException, worded as AWS words
    # it for the other operations (awsfact: test_error_messaging_for_invalid_keys).
    blob = kms.encrypt(KeyId=keys["sym"]["KeyId"], Plaintext=MESSAGE)["CiphertextBlob"]
    expect_error(
        lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=keys["hmac"]["KeyId"]),
        "InvalidKeyUsageException",
        f"{keys['hmac']['Arn']} key usage is GENERATE_VERIFY_MAC which is not valid for ReEncrypt.",
    )


def test_operations_on_keys_of_another_usage(kms, keys):
    # awsfact: TestKMS::test_error_messaging_for_invalid_keys / generate-mac-invalid-key-id,
    #          sign-invalid-key-id, verify-invalid-key-id, encrypt-invalid-key-id
    sym, hmac_key, signer = keys["sym"], keys["hmac"], keys["rsa_sign"]
    expect_error(
        lambda: kms.generate_mac(KeyId=sym["KeyId"], Message=b"some important message", MacAlgorithm="HMAC_SHA_224"),
        "InvalidKeyUsageException",
        f"{sym['Arn']} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac.",
    )
    expect_error(
        lambda: kms.sign(
            KeyId=hmac_key["KeyId"], MessageType="RAW", Message=b"test message 123!@#",
            SigningAlgorithm="RSASSA_PSS_SHA_256",
        ),
        "InvalidKeyUsageException",
        f"{hmac_key['Arn']} key usage is GENERATE_VERIFY_MAC which is not valid for Sign.",
    )
    expect_error(
        lambda: kms.verify(
            KeyId=sym["KeyId"], MessageType="RAW", Message=b"test message", Signature=b"random text",
            SigningAlgorithm="ECDSA_SHA_256",
        ),
        "InvalidKeyUsageException",
        f"{sym['Arn']} key usage is ENCRYPT_DECRYPT which is not valid for Verify.",
    )
    expect_error(
        lambda: kms.encrypt(KeyId=signer["KeyId"], Plaintext=b"test message 123!@#"),
        "InvalidKeyUsageException",
        f"{signer['Arn']} key usage is SIGN_VERIFY which is not valid for Encrypt.",
    )


def test_invalid_key_usage_rsa(kms, create_key):
    # awsfact (assertion): TestKMS::test_invalid_key_usage
    enc = create_key(KeySpec="RSA_4096", KeyUsage="ENCRYPT_DECRYPT")
    expect_error(
        lambda: kms.sign(KeyId=enc["KeyId"], MessageType="RAW", Message=b"hello", SigningAlgorithm="RSASSA_PSS_SHA_256"),
        "InvalidKeyUsageException",
    )
    signer = create_key(KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY")
    expect_error(
        lambda: kms.encrypt(KeyId=signer["KeyId"], Plaintext=b"hello", EncryptionAlgorithm="RSAES_OAEP_SHA_256"),
        "InvalidKeyUsageException",
    )


def test_decrypt_with_other_symmetric_key_is_incorrect_key(kms, create_key):
    # awsdoc: IncorrectKeyException when the KeyId is not the key that encrypted the ciphertext
    a, b = create_key(), create_key()
    blob = kms.encrypt(KeyId=a["KeyId"], Plaintext=MESSAGE)["CiphertextBlob"]
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob, KeyId=b["KeyId"]), "IncorrectKeyException", INCORRECT_KEY)


# --------------------------------------------------------------------------
# Validation messages of sensitive (blob) members: AWS never prints their value
# --------------------------------------------------------------------------
def test_plaintext_too_long_is_redacted(kms, create_key):
    # awsfact: TestKMS::test_plaintext_size_for_encrypt / invalid-plaintext-size-encrypt
    key_id = create_key()["KeyId"]
    resp = expect_error(
        lambda: kms.encrypt(KeyId=key_id, Plaintext=MESSAGE * 129),
        "ValidationException",
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096",
    )
    assert b"test message" not in repr(resp).encode()


def test_empty_plaintext_is_redacted(raw, create_key):
    key_id = create_key()["KeyId"]
    expect_error(
        lambda: raw.encrypt(KeyId=key_id, Plaintext=b""),
        "ValidationException",
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
    )


def test_ciphertext_blob_lengths_are_redacted(raw):
    # awsreport: the AWS CLI against real KMS answered a Decrypt of an empty blob with
    # "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint:
    # Member must have length greater than or equal to 1" (quoted in a public repository's
    # notes on KMS; same redacted form as the recorded 'plaintext' message above).
    expect_error(
        lambda: raw.decrypt(CiphertextBlob=b""),
        "ValidationException",
        "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
    )
    expect_error(
        lambda: raw.decrypt(CiphertextBlob=b"x" * 6145),
        "ValidationException",
        "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: "
        "Member must have length less than or equal to 6144",
    )


def test_message_too_long_is_redacted(kms, create_key):
    # Message is PlaintextType, sensitive in the model, as Encrypt's Plaintext.
    hmac_key = create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    signer = create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    expected = (
        "1 validation error detected: Value at 'message' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096"
    )
    big = b"m" * 4097
    calls = [
        lambda: kms.generate_mac(KeyId=hmac_key["KeyId"], Message=big, MacAlgorithm="HMAC_SHA_256"),
        lambda: kms.verify_mac(KeyId=hmac_key["KeyId"], Message=big, MacAlgorithm="HMAC_SHA_256", Mac=b"x" * 32),
        lambda: kms.sign(KeyId=signer["KeyId"], Message=big, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"),
        lambda: kms.verify(
            KeyId=signer["KeyId"], Message=big, MessageType="RAW", Signature=b"s", SigningAlgorithm="ECDSA_SHA_256"
        ),
    ]
    for call in calls:
        resp = expect_error(call, "ValidationException", expected)
        assert "HeapByteBuffer" not in resp["Error"]["Message"]


@pytest.mark.parametrize(
    "spec,algorithm,limit",
    [
        ("RSA_2048", "RSAES_OAEP_SHA_1", 214),
        ("RSA_2048", "RSAES_OAEP_SHA_256", 190),
        ("RSA_3072", "RSAES_OAEP_SHA_1", 342),
        ("RSA_4096", "RSAES_OAEP_SHA_1", 470),
    ],
)
def test_rsa_plaintext_limit(kms, create_key, spec, algorithm, limit):
    # awsfact: TestKMS::test_encrypt_validate_plaintext_size_per_key_type[*] / generate-random-exc
    key_id = create_key(KeySpec=spec, KeyUsage="ENCRYPT_DECRYPT")["KeyId"]
    expect_error(
        lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x" * (limit + 1), EncryptionAlgorithm=algorithm),
        "ValidationException",
        f"Algorithm {algorithm} and key spec {spec} cannot encrypt data larger than {limit} bytes.",
    )


# --------------------------------------------------------------------------
# Other recorded answers
# --------------------------------------------------------------------------
def test_generate_random_bounds(raw):
    # awsfact: TestKMS::test_generate_random_invalid_number_of_bytes[None|0|1025]
    expect_error(lambda: raw.generate_random(), "ValidationException", "NumberOfBytes is required.")
    expect_error(
        lambda: raw.generate_random(NumberOfBytes=0),
        "ValidationException",
        "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1",
    )
    expect_error(
        lambda: raw.generate_random(NumberOfBytes=1025),
        "ValidationException",
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: "
        "Member must have value less than or equal to 1024",
    )
    # awsfact: TestKMS::test_generate_random
    assert len(raw.generate_random(NumberOfBytes=32)["Plaintext"]) == 32


def test_describe_key_not_found_messages(kms, create_key):
    # awsfact: TestKMS::test_get_key_invalid_uuid / describe-key-with-invalid-uuid[-2|-mrk],
    #          TestKMS::test_get_key_does_not_exist / describe-nonexistent-key-with-id, -with-arn
    for bad in ("fake-key-id", "134f2428cec14b25a1ae9048164dba47", "mrk-fake-key-id"):
        expect_error(lambda: kms.describe_key(KeyId=bad), "NotFoundException", f"Invalid keyId '{bad}'")
    arn = create_key()["Arn"]
    missing_id = str(uuid.uuid4())
    missing_arn = re.sub(r"key/.*$", f"key/{missing_id}", arn)
    expect_error(lambda: kms.describe_key(KeyId=missing_id), "NotFoundException", f"Key '{missing_arn}' does not exist")
    expect_error(lambda: kms.describe_key(KeyId=missing_arn), "NotFoundException", f"Key '{missing_arn}' does not exist")


def test_describe_key_arn_of_other_region(kms, create_key):
    # awsfact: TestKMS::test_get_key_in_different_region / describe-key-diff-region-with-arn
    arn = create_key()["Arn"]
    region = arn.split(":")[3]
    other = "eu-central-1" if region != "eu-central-1" else "us-west-2"
    expect_error(
        lambda: kms.describe_key(KeyId=arn.replace(f":{region}:", f":{other}:")),
        "NotFoundException",
        f"Invalid arn {other}",
    )


def test_mac_with_invalid_key_id(kms):
    # awsfact: TestKMS::test_generate_and_verify_mac[*] / generate-mac-invalid-key-id, verify-mac-invalid-key-id
    expect_error(
        lambda: kms.generate_mac(KeyId="key_id", Message=b"some important message", MacAlgorithm="HMAC_SHA_256"),
        "NotFoundException",
        "Invalid keyId 'key_id'",
    )
    expect_error(
        lambda: kms.verify_mac(KeyId="key_id", Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=b"x" * 32),
        "NotFoundException",
        "Invalid keyId 'key_id'",
    )


def test_mac_algorithm_checks(kms, raw, create_key):
    # awsfact: TestKMS::test_invalid_generate_mac[HMAC_224-HMAC_SHA_256|HMAC_256-INVALID],
    #          TestKMS::test_invalid_verify_mac[*]
    k224 = create_key(KeySpec="HMAC_224", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    k256 = create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    expect_error(
        lambda: kms.generate_mac(KeyId=k224, Message=b"m", MacAlgorithm="HMAC_SHA_256"),
        "InvalidKeyUsageException",
        "Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_224.",
    )
    expect_error(
        lambda: raw.generate_mac(KeyId=k256, Message=b"m", MacAlgorithm="INVALID"),
        "ValidationException",
        message_re=r"1 validation error detected: Value 'INVALID' at 'macAlgorithm' failed to satisfy "
        r"constraint: Member must satisfy enum value set: \[.*HMAC_SHA_256.*\]",
    )
    mac = kms.generate_mac(KeyId=k256, Message=b"some important message", MacAlgorithm="HMAC_SHA_256")["Mac"]
    expect_error(
        lambda: kms.verify_mac(
            KeyId=k256, Message=b"some different important message", MacAlgorithm="HMAC_SHA_256", Mac=mac
        ),
        "KMSInvalidMacException",
    )
    expect_error(
        lambda: kms.verify_mac(KeyId=k256, Message=b"some important message", MacAlgorithm="HMAC_SHA_512", Mac=mac),
        "InvalidKeyUsageException",
        "Algorithm HMAC_SHA_512 is incompatible with key spec HMAC_256.",
    )


def test_hmac_create_key_invalid(raw, create_key):
    # awsfact: TestKMS::test_hmac_create_key_invalid_operations / create-hmac-key-without-key-usage,
    #          create-hmac-key-invalid-spec, create-hmac-key-invalid-key-usage (the enum sets
    #          grow as AWS adds specs, so only their form is checked)
    expect_error(
        lambda: create_key(KeySpec="HMAC_256"),
        "ValidationException",
        "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.",
    )
    expect_error(
        lambda: raw.create_key(KeySpec="HMAC_random"),
        "ValidationException",
        message_re=r"1 validation error detected: Value 'HMAC_random' at 'keySpec' failed to satisfy "
        r"constraint: Member must satisfy enum value set: \[.*HMAC_256.*\]",
    )
    expect_error(
        lambda: raw.create_key(KeySpec="HMAC_256", KeyUsage="RANDOM"),
        "ValidationException",
        message_re=r"1 validation error detected: Value 'RANDOM' at 'keyUsage' failed to satisfy "
        r"constraint: Member must satisfy enum value set: \[.*GENERATE_VERIFY_MAC.*\]",
    )


def test_create_alias_without_prefix(kms, create_key):
    # awsfact: TestKMS::test_create_alias / create_alias
    key_id = create_key()["KeyId"]
    expect_error(
        lambda: kms.create_alias(AliasName=f"fidelity-{uuid.uuid4().hex[:8]}", TargetKeyId=key_id),
        "ValidationException",
        'Alias must start with the prefix "alias/". Please see '
        "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
    )


@pytest.mark.parametrize(
    "spec,algorithm",
    [("RSA_2048", "RSASSA_PSS_SHA_256"), ("RSA_4096", "RSASSA_PKCS1_V1_5_SHA_512"), ("ECC_NIST_P256", "ECDSA_SHA_256"),
     ("ECC_NIST_P384", "ECDSA_SHA_384")],
)
def test_sign_bad_digest_and_bad_signature(kms, create_key, spec, algorithm):
    # awsfact: TestKMS::test_sign_verify[*] / bad-digest, bad-signature
    key_id = create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyId"]
    expect_error(
        lambda: kms.sign(KeyId=key_id, Message=b"x" * 7, MessageType="DIGEST", SigningAlgorithm=algorithm),
        "ValidationException",
        f"Digest is invalid length for algorithm {algorithm}.",
    )
    bits = algorithm.rsplit("_", 1)[1]
    digest = hashlib.new(f"sha{bits}", b"message").digest()
    sig = kms.sign(KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm=algorithm)["Signature"]
    assert kms.verify(KeyId=key_id, Message=digest, MessageType="DIGEST", Signature=sig, SigningAlgorithm=algorithm)[
        "SignatureValid"
    ]
    other = hashlib.new(f"sha{bits}", b"other").digest()
    resp = expect_error(
        lambda: kms.verify(KeyId=key_id, Message=other, MessageType="DIGEST", Signature=sig, SigningAlgorithm=algorithm),
        "KMSInvalidSignatureException",
    )
    assert resp["Error"].get("Message", "") == ""


def test_rotate_on_demand_errors(kms, create_key):
    # awsfact: TestKMS::test_rotate_key_on_demand_raises_error_given_key_is_disabled,
    #          ..._given_key_that_does_not_exist, ..._given_non_symmetric_key / error-response
    md = create_key()
    kms.disable_key(KeyId=md["KeyId"])
    expect_error(lambda: kms.rotate_key_on_demand(KeyId=md["KeyId"]), "DisabledException", f"{md['Arn']} is disabled.")
    missing = re.sub(r"key/.*$", f"key/{uuid.uuid4()}", md["Arn"])
    expect_error(lambda: kms.rotate_key_on_demand(KeyId=missing), "NotFoundException", f"Key '{missing}' does not exist")
    rsa = create_key(KeySpec="RSA_4096", KeyUsage="ENCRYPT_DECRYPT")
    resp = expect_error(lambda: kms.rotate_key_on_demand(KeyId=rsa["KeyId"]), "UnsupportedOperationException")
    assert resp["Error"].get("Message", "") == ""


def test_encryption_context_mismatch(kms, create_key):
    # awsfact: TestKMS::test_encrypt_decrypt_encryption_context / decrypt_response_without_encryption_context
    key_id = create_key()["KeyId"]
    ctx = {"context-key": "context-value"}
    blob = kms.encrypt(KeyId=key_id, Plaintext=MESSAGE, EncryptionContext=ctx)["CiphertextBlob"]
    resp = expect_error(lambda: kms.decrypt(CiphertextBlob=blob), "InvalidCiphertextException")
    assert resp["Error"].get("Message", "") == ""
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == MESSAGE


def test_data_key_pair_dry_run(kms, create_key):
    # awsfact: TestKMSGenerateKeys::test_generate_data_key_pair[_without_plaintext]_dry_run / dryrun_exception
    key_id = create_key()["KeyId"]
    msg = "The request would have succeeded, but the DryRun option is set."
    expect_error(
        lambda: kms.generate_data_key_pair(KeyId=key_id, KeyPairSpec="RSA_2048", DryRun=True),
        "DryRunOperationException", msg,
    )
    expect_error(
        lambda: kms.generate_data_key_pair_without_plaintext(KeyId=key_id, KeyPairSpec="ECC_NIST_P256", DryRun=True),
        "DryRunOperationException", msg,
    )


def test_disabled_and_deleted_keys(kms, create_key):
    # awsfact (assertions): TestKMS::test_cant_use_disabled_or_deleted_keys,
    #          test_cant_delete_deleted_key, test_schedule_and_cancel_key_deletion
    key_id = create_key()["KeyId"]
    kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    kms.disable_key(KeyId=key_id)
    expect_error(lambda: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256"), "DisabledException")
    kms.schedule_key_deletion(KeyId=key_id)
    expect_error(lambda: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256"), "KMSInvalidStateException")
    expect_error(lambda: kms.schedule_key_deletion(KeyId=key_id), "KMSInvalidStateException")
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "PendingDeletion" and md["Enabled"] is False and md["DeletionDate"]
    kms.cancel_key_deletion(KeyId=key_id)
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Disabled" and md["Enabled"] is False and not md.get("DeletionDate")


def test_grants_on_invalid_key(kms):
    # awsfact (assertions): TestKMS::test_create_grant_with_invalid_key, test_list_grants_with_invalid_key
    principal = "arn:aws:iam::111122223333:root"
    expect_error(
        lambda: kms.create_grant(KeyId="invalid", GranteePrincipal=principal, Operations=["Decrypt", "Encrypt"]),
        "NotFoundException",
    )
    expect_error(lambda: kms.list_grants(KeyId="invalid"), "NotFoundException")


def test_create_key_metadata(kms, create_key):
    # awsfact: TestKMS::test_create_key / describe-key
    md = create_key(Description="test key 123")
    described = kms.describe_key(KeyId=md["KeyId"])["KeyMetadata"]
    for field, value in {
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "Description": "test key 123",
        "Enabled": True,
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "KeyManager": "CUSTOMER",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "KeyState": "Enabled",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "MultiRegion": False,
        "Origin": "AWS_KMS",
    }.items():
        assert described[field] == value, field
    for field in ("AWSAccountId", "Arn", "CreationDate", "CurrentKeyMaterialId", "KeyId"):
        assert field in described, field


def test_import_operations_on_aws_kms_key(kms, raw, create_key):
    # awsfact: TestKMS::test_get_parameters_for_import_raises_for_non_external_kms_keys
    #          / get-import-parameters-error, TestKMS::test_get_parameters_for_import / response-error
    for md in (create_key(), create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")):
        refusal = f"{md['Arn']} origin is AWS_KMS which is not valid for this operation."
        expect_error(
            lambda: kms.get_parameters_for_import(
                KeyId=md["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
            ),
            "UnsupportedOperationException",
            refusal,
        )
        expect_error(
            lambda: kms.import_key_material(
                KeyId=md["KeyId"], ImportToken=b"token", EncryptedKeyMaterial=b"material",
                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
            ),
            "UnsupportedOperationException",
            refusal,
        )
        expect_error(lambda: kms.delete_imported_key_material(KeyId=md["KeyId"]), "UnsupportedOperationException", refusal)
    expect_error(
        lambda: kms.get_parameters_for_import(
            KeyId=str(uuid.uuid4()), WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        ),
        "NotFoundException",
    )
    expect_error(
        lambda: raw.get_parameters_for_import(KeyId=str(uuid.uuid4()), WrappingAlgorithm="X", WrappingKeySpec="RSA_2048"),
        "ValidationException",
        message_re=r"1 validation error detected: Value 'X' at 'wrappingAlgorithm' failed to satisfy constraint: "
        r"Member must satisfy enum value set: \[.*\]",
    )


def test_alias_where_only_a_key_is_accepted(kms, create_key, alias_name):
    # awsreport: "InvalidArnException ... when calling the GetKeyPolicy operation: Key Aliases are
    # not supported for this operation." (real AWS CLI output quoted in public repositories'
    # notes), and the same for CreateGrant (boto/boto#3202, https://github.com/boto/boto/pull/3202).
    md = create_key()
    kms.create_alias(AliasName=alias_name, TargetKeyId=md["KeyId"])
    alias_arn = re.sub(r"key/.*$", alias_name, md["Arn"])
    msg = "Key Aliases are not supported for this operation."
    principal = f"arn:aws:iam::{md['AWSAccountId']}:root"
    for name in (alias_name, alias_arn):
        expect_error(lambda: kms.get_key_policy(KeyId=name, PolicyName="default"), "InvalidArnException", msg)
        expect_error(
            lambda: kms.create_grant(KeyId=name, GranteePrincipal=principal, Operations=["Decrypt"]),
            "InvalidArnException",
            msg,
        )
        expect_error(lambda: kms.list_resource_tags(KeyId=name), "InvalidArnException", msg)
        expect_error(lambda: kms.disable_key(KeyId=name), "InvalidArnException", msg)
    # Operations that take aliases still do.
    assert kms.describe_key(KeyId=alias_name)["KeyMetadata"]["KeyId"] == md["KeyId"]


def test_on_demand_rotation_limit(kms, create_key):
    # awsfact: TestKMS::test_key_rotations_limits / error-response (10 on-demand rotations per key)
    md = create_key()
    for _ in range(10):
        assert kms.rotate_key_on_demand(KeyId=md["KeyId"])["KeyId"] == md["Arn"]
    expect_error(
        lambda: kms.rotate_key_on_demand(KeyId=md["KeyId"]),
        "LimitExceededException",
        "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations "
        f"can be performed for this key: {md['Arn']}",
    )
    # The key still works, and its earlier material still decrypts.
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=MESSAGE)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == MESSAGE
