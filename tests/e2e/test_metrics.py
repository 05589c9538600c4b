"""`/metrics` read with the Prometheus project's own text-format parser (prometheus_client),
checking that counters move by exactly what the requests did."""

from __future__ import annotations

import urllib.request

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families


def scrape(endpoint: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers.get("content-type", "").startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_by_the_right_amounts(endpoint, kms, create_key):
    key = create_key()["KeyId"]
    before = scrape(endpoint)
    for _ in range(3):
        kms.encrypt(KeyId=key, Plaintext=b"metrics")
    with pytest.raises(ClientError):
        kms.describe_key(KeyId="fake-key-id")
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key)
    after = scrape(endpoint)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("p11kms_requests_total", operation="Encrypt", outcome="OK") == 4
    assert delta("p11kms_requests_total", operation="DescribeKey", outcome="NotFoundException") == 1
    assert delta("p11kms_requests_total", operation="ReEncrypt", outcome="OK") == 1
    assert delta("p11kms_request_duration_seconds_count", operation="Encrypt") == 4
    # One ReEncrypt: one unwrap and one wrap in the token, and no C_Decrypt.
    assert delta("p11kms_pkcs11_call_duration_seconds_count", function="C_UnwrapKey", outcome="CKR_OK") == 1
    assert delta("p11kms_pkcs11_call_duration_seconds_count", function="C_Decrypt", outcome="CKR_OK") == 0
    assert delta("p11kms_pkcs11_call_duration_seconds_count", function="C_Encrypt", outcome="CKR_OK") == 4
    assert value(after, "p11kms_session_pool_sessions", state="size") >= 1
    assert value(after, "p11kms_keys", state="Enabled") >= 1
    assert ("p11kms_throttled_requests_total", ()) in after
    assert ("p11kms_hsm_reinitialisations_total", ()) in after


def test_session_sweeps_are_counted_within_their_limit(endpoint, kms, create_key):
    """Each Encrypt leaves its data key to its session; a session holding
    hsm.transient_objects_per_session of them is closed (swept). Sequential requests reuse
    the most recently returned session, so twice the limit sweeps at least once."""
    key = create_key()["KeyId"]
    before = scrape(endpoint)
    limit = value(before, "p11kms_session_pool_transient_objects", state="per_session_limit")
    assert limit == 32, "the default hsm.transient_objects_per_session"
    for _ in range(2 * int(limit) + 1):
        kms.encrypt(KeyId=key, Plaintext=b"swept")
    after = scrape(endpoint)
    assert value(after, "p11kms_session_pool_sweeps_total") - value(before, "p11kms_session_pool_sweeps_total") >= 1
    left = value(after, "p11kms_session_pool_transient_objects", state="left")
    assert 0 <= left <= limit * value(after, "p11kms_session_pool_sessions", state="size")


def test_metrics_carry_no_secrets_or_contexts(endpoint, kms, create_key):
    key = create_key()["KeyId"]
    kms.encrypt(KeyId=key, Plaintext=b"secret-plaintext-in-metrics",
                EncryptionContext={"tenant": "context-value-in-metrics"})
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for needle in ("secret-plaintext-in-metrics", "context-value-in-metrics", key, "arn:aws"):
        assert needle not in text
