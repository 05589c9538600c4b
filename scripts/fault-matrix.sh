#!/usr/bin/env bash
# The long fault matrix (README, "Failure model"): the release gateway on a fresh SoftHSM2
# token behind the network-HSM emulator (tools/pkcs11-delay), a mixed workload at c=32
# (Encrypt, Decrypt, ReEncrypt, GenerateDataKey, Sign, DisableKey/EnableKey, CreateAlias,
# CreateKey), and each HSM fault and its variants switched on for FAULT_MATRIX_FAULT_MS,
# then off for FAULT_MATRIX_RECOVERY_MS. Two set-ups: the embedded SoftHSM2 defaults, and
# a network HSM (no session key copies, no recycle, FAULT_MATRIX_DELAY_US per call).
#
# Prints a table per set-up: requests, errors by type, 5xx, worst latency, HSM
# reinitialisations and recovery times per fault; then checks every key, every
# acknowledged ciphertext, DisableKey/EnableKey and CreateAlias. Exit status non-zero if
# any check failed. The short variant (tests/faults, fault_matrix_short) runs in CI.
#
#   scripts/fault-matrix.sh                       # 10 s faults, 10 s recovery windows
#   FAULT_MATRIX_FAULT_MS=30000 scripts/fault-matrix.sh
#   FAULT_MATRIX_SETUP=network FAULT_MATRIX_ONLY=hang scripts/fault-matrix.sh
#   FAULT_MATRIX_KEEP_LOG=/tmp/gateway.log ...   # keep the gateway's log of the last set-up
#
# Bounded: the run is stopped after FAULT_MATRIX_TIMEOUT_S (default 1800 s). Only
# 127.0.0.1 is contacted. The whole output is also in target/fault-matrix.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FAULT_MATRIX_FAULT_MS="${FAULT_MATRIX_FAULT_MS:-10000}"
export FAULT_MATRIX_RECOVERY_MS="${FAULT_MATRIX_RECOVERY_MS:-10000}"
export FAULT_MATRIX_DELAY_US="${FAULT_MATRIX_DELAY_US:-500}"
LOG="${CARGO_TARGET_DIR:-$ROOT/target}/fault-matrix.log"
mkdir -p "$(dirname "$LOG")"

cargo build --release --test faults
echo "fault ${FAULT_MATRIX_FAULT_MS} ms, recovery window ${FAULT_MATRIX_RECOVERY_MS} ms, network-HSM delay ${FAULT_MATRIX_DELAY_US} µs; log: $LOG"
set +e
timeout "${FAULT_MATRIX_TIMEOUT_S:-1800}" \
    cargo test --release --test faults -- --ignored --exact fault_matrix_long --nocapture \
    >"$LOG" 2>&1
status=$?
set -e
# The tables and the checks; the gateway's own log lines stay in the log file.
grep -E '^(##|\||requests:|problem:|panic:|not acceptable)' "$LOG" || true
grep -E '^test result:|panicked at' "$LOG" || true
if (( status == 124 )); then
    echo "fault matrix stopped after ${FAULT_MATRIX_TIMEOUT_S:-1800} s" >&2
fi
exit "$status"
