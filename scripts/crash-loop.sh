#!/usr/bin/env bash
# Crash loop (issue 13, item 5): kills the release gateway (`p11kms serve` on one data
# directory: embedded SoftHSM2 token, SQLite file, audit trail) with SIGKILL at a random
# moment of a client's work, KILLS times, now and then again during its start-up, and after
# every restart checks that the store and the token agree, that every acknowledged result
# and ciphertext is still there, and that the audit chain verifies. Prints a summary; exits
# non-zero on any failure (the data directory and the last logs are then kept and named).
#
#   scripts/crash-loop.sh [KILLS]          default 100
#
# The loop is tests/crash_loop (the test `crash_loop`, ignored by `cargo test`; its short
# variant `crash_loop_ci`, 10 kills, runs with the rest of `cargo test --release`).
#
# Environment:
#   P11KMS_CRASH_SEED            phase order and kill moments of a previous run (printed)
#   P11KMS_CRASH_MAX_SECONDS     bound of the whole run (default 3600)
#   P11KMS_CRASH_KILL_WITHIN_MS  the kill lands uniformly within this long of the load (1200)
#   P11KMS_CRASH_WORKERS         workers on the phase's operations, plus one on crypto (4)
#   P11KMS_CRASH_REQUIRE_AUDIT=1 fail when an acknowledged request has no audit record; the
#                                gateway then runs with audit.wait_for_sync (without it the
#                                records of the last few ms of answers die with the process)
#   P11KMS_CRASH_KEEP=1          keep the data directory of a passing run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

KILLS="${1:-${P11KMS_CRASH_KILLS:-100}}"
[[ "$KILLS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [KILLS]" >&2; exit 2; }
export P11KMS_CRASH_KILLS="$KILLS"
MAX_SECONDS="${P11KMS_CRASH_MAX_SECONDS:-3600}"

cargo test --release --test crash_loop --no-run
# The loop checks its own bounds; this one stops it whatever happens.
exec timeout --signal=KILL "$((MAX_SECONDS + 600))" \
    cargo test --release --test crash_loop -- --ignored --exact crash_loop --nocapture
