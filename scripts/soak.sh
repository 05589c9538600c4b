#!/usr/bin/env bash
# Soak (issue 13, item 7): a mixed workload against the release gateway for a given time,
# sampling it every 30 s (RSS, open file descriptors, threads, CPU; the interval's requests,
# p50/p99 latency, errors), then a table and a verdict: whether RSS, descriptors, p99 and the
# error rate stayed flat (the last third of the samples against the first third, after two
# warm-up samples). Exit status 0 when flat. Not run in CI.
#
#   scripts/soak.sh [SECONDS]            default 3600
#
# The load is `p11kms-bench --soak-seconds` (crates/p11kms-bench/src/soak.rs): 7 connections
# cycle through Encrypt, Decrypt, ReEncrypt, GenerateDataKey and
# GenerateDataKeyWithoutPlaintext at 32 and 4096 bytes, and 1 churns keys, aliases and grants
# (CreateKey, CreateAlias, CreateGrant, RetireGrant, DeleteAlias, ScheduleKeyDeletion). The gateway runs on a fresh data directory
# with the embedded defaults (SoftHSM2 token, SQLite, audit trail, a library recycle every
# 20000 operations), and with a test "day" of 1 s so that the churned keys' 7-day deletion
# windows pass and the deletion job removes them: the store and token stay the same size,
# so whatever grows is the gateway's.
#
# Environment:
#   P11KMS_SOAK_SAMPLE_SECONDS   seconds between samples (30)
#   P11KMS_SOAK_CONCURRENCY      connections (8); the machine may be shared, keep it moderate
# Further arguments after SECONDS go to `p11kms-bench` (e.g. --endpoint URL --server-pid PID
# to soak a running gateway, --keep-data).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

DURATION="${1:-3600}"
[[ "$DURATION" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [bench options...]" >&2; exit 2; }
shift || true
SAMPLE="${P11KMS_SOAK_SAMPLE_SECONDS:-30}"
CONCURRENCY="${P11KMS_SOAK_CONCURRENCY:-8}"

# The bench starts the gateway binary next to it.
cargo build --release -p p11kms -p p11kms-bench --bins
# The soak ends by itself after DURATION; this bound stops it whatever happens.
exec timeout --signal=KILL "$((DURATION + 600))" \
    target/release/p11kms-bench \
    --soak-seconds "$DURATION" \
    --sample-seconds "$SAMPLE" \
    --soak-concurrency "$CONCURRENCY" \
    --ops encrypt,decrypt,re-encrypt,generate-data-key,generate-data-key-without-plaintext \
    --sizes 32,4096 \
    --gateway-env P11KMS_DAY_SECONDS=1 \
    --gateway-env P11KMS_JOB_INTERVAL_MS=1000 \
    "$@"
