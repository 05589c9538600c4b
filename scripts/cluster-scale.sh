#!/usr/bin/env bash
# How ReEncrypt throughput scales from one replica to two on a network HSM (issue 17).
#
#   scripts/cluster-scale.sh [ROUNDS]      (default 3)
#
# Starts `scripts/cluster.sh start DIR 2` (its default: each replica on its own SoftHSM2 token,
# enrolled in one domain; P11KMS_CLUSTER_KEY_STORAGE=token for one shared token) with every
# token behind the network-HSM emulator (tools/pkcs11-delay, P11DELAY_US per cryptographic
# call, default 2000; the ceremony's calls go through it too), then per
# round: `p11kms-bench` against replica 1 alone, then one bench per replica at once. It prints
# each round's one-replica and two-replica req/s and their ratio, then the range over rounds.
# The replicas' token calls wait on the emulated network, not the CPU, so two replicas
# should give about twice one replica's throughput; on a busy 2-core machine the two
# benches and gateways also compete for CPU, which is why each round pairs its figures.
#
# Environment: P11DELAY_US (default 2000), P11KMS_SESSION_POOL_SIZE (default 4),
# P11KMS_SCALE_CONCURRENCY (connections per replica, default 16: four per session, enough to keep one replica's pool saturated), P11KMS_SCALE_MS (each
# bench's measured time, default 5000), P11KMS_BIN (default target/release/p11kms),
# P11KMS_BENCH_BIN (default target/release/p11kms-bench),
# P11KMS_SCALE_DIR (cluster directory, default a fresh temporary one, removed after).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=${1:-3}
BIN=${P11KMS_BIN:-$ROOT/target/release/p11kms}
BENCH=${P11KMS_BENCH_BIN:-$ROOT/target/release/p11kms-bench}
DELAY_US=${P11DELAY_US:-2000}
POOL=${P11KMS_SESSION_POOL_SIZE:-4}
CONC=${P11KMS_SCALE_CONCURRENCY:-16}
MS=${P11KMS_SCALE_MS:-5000}
SOFTHSM=${P11KMS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

for exe in "$BIN" "$BENCH"; do
    [[ -x $exe ]] || { echo "$exe not found: cargo build --release --workspace first" >&2; exit 1; }
done
EMULATOR=$("$ROOT/tools/pkcs11-delay/build.sh" | tail -1)
DIR=${P11KMS_SCALE_DIR:-$(mktemp -d /tmp/p11kms-scale.XXXXXX)}
cleanup() {
    "$ROOT/scripts/cluster.sh" stop "$DIR" >/dev/null 2>&1 || true
    [[ -n ${P11KMS_SCALE_DIR:-} ]] || rm -rf "$DIR"
}
trap cleanup EXIT

# The emulator forwards to SoftHSM2; P11KMS_EMBEDDED_SOFTHSM keeps each token embedded (made
# and managed by p11kms under the replica's data directory) with the emulator in front.
mapfile -t replicas < <(
    P11KMS_EMBEDDED_SOFTHSM=1 P11KMS_PKCS11_MODULE="$EMULATOR" P11DELAY_MODULE="$SOFTHSM" \
        P11DELAY_US="$DELAY_US" P11KMS_SESSION_POOL_SIZE="$POOL" \
        "$ROOT/scripts/cluster.sh" start "$DIR" 2
)
url() { echo "${replicas[$1]}" | awk '{print $3}'; }
A=$(url 0)
B=$(url 1)

# bench URL: ReEncrypt req/s of one bench run against URL.
bench() {
    "$BENCH" --endpoint "$1" --ops re-encrypt --sizes 32 --concurrency "$CONC" --no-raw \
        --duration-ms "$MS" --max-requests 1000000 2>&1 | awk '$1 == "ReEncrypt" {print $5}'
}

echo "# ReEncrypt, 32 B, ${CONC} connections per replica, pool ${POOL} sessions per replica," \
    "${DELAY_US} us per PKCS#11 call; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %12s %12s %12s %12s %7s\n' round one_replica two_A two_B two_total ratio
ratios=()
for round in $(seq 1 "$ROUNDS"); do
    one=$(bench "$A")
    bench "$A" >"$DIR/a.out" &
    pa=$!
    bench "$B" >"$DIR/b.out" &
    pb=$!
    wait "$pa" "$pb"
    two_a=$(cat "$DIR/a.out")
    two_b=$(cat "$DIR/b.out")
    total=$((two_a + two_b))
    ratio=$(awk -v t="$total" -v o="$one" 'BEGIN { printf "%.2f", t / o }')
    ratios+=("$ratio")
    printf '%-6s %12s %12s %12s %12s %7s\n' "$round" "$one" "$two_a" "$two_b" "$total" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '
    NR == 1 { lo = $1 } { hi = $1; all[NR] = $1 }
    END { printf "ratio two/one over %d rounds: %s to %s (median %s); load at end: ", NR, lo, hi, all[int((NR + 1) / 2)] }'
cut -d' ' -f1-3 /proc/loadavg
