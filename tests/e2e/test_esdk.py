"""The AWS Encryption SDK for Python, unchanged, against the gateway: pointed at it only with
`AWS_ENDPOINT_URL_KMS`, as an application would be. The SDK calls GenerateDataKey, Encrypt
(for each extra key) and Decrypt with its own encryption context and key ARNs."""

from __future__ import annotations

import os

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.exceptions import DecryptKeyError

from p11kms_server import DEV_ACCESS_KEY, DEV_SECRET_KEY, REGION


@pytest.fixture
def sdk_env(endpoint, monkeypatch):
    """Only the standard AWS environment: endpoint, region and credentials."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DEV_SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def _provider(*key_arns):
    return aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=list(key_arns), botocore_session=botocore.session.Session()
    )


def test_encrypt_and_decrypt_a_message(sdk_env, create_key):
    key = create_key()["Arn"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    message = os.urandom(5000)
    context = {"purpose": "esdk-e2e", "tenant": "a"}
    ciphertext, header = client.encrypt(
        source=message, key_provider=_provider(key), encryption_context=context
    )
    assert ciphertext != message and len(header.encrypted_data_keys) == 1
    [edk] = header.encrypted_data_keys
    assert edk.key_provider.provider_id == "aws-kms" and edk.key_provider.key_info.decode() == key
    plaintext, decrypted_header = client.decrypt(source=ciphertext, key_provider=_provider(key))
    assert plaintext == message
    for k, v in context.items():
        assert decrypted_header.encryption_context[k] == v


def test_a_message_for_two_keys_opens_with_either(sdk_env, create_key):
    first, second = create_key()["Arn"], create_key()["Arn"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    ciphertext, header = client.encrypt(source=b"for two keys", key_provider=_provider(first, second))
    assert len(header.encrypted_data_keys) == 2
    for key in (first, second):
        plaintext, _ = client.decrypt(source=ciphertext, key_provider=_provider(key))
        assert plaintext == b"for two keys"
    third = create_key()["Arn"]
    with pytest.raises(DecryptKeyError):
        client.decrypt(source=ciphertext, key_provider=_provider(third))
