#!/usr/bin/env bash
# Coverage-guided fuzzing of p11kms on the stable toolchain, with AFL++ through cargo-afl.
#
#   scripts/fuzz.sh replay                 the CI smoke: every committed corpus file and every
#                                          saved crash through the targets, as a cargo test
#                                          (no AFL needed; seconds once the tests are built)
#   scripts/fuzz.sh build                  install cargo-afl if missing (it builds AFL++ from
#                                          its bundled sources), then the instrumented targets
#   scripts/fuzz.sh smoke [SECONDS]        each target under afl-fuzz for SECONDS (default 20);
#                                          fails if any crash or hang was found
#   scripts/fuzz.sh run TARGET EXECS [MAX_SECONDS]
#                                          one long run: stops at EXECS executions (afl-fuzz -E)
#                                          or after MAX_SECONDS (default 7200), then prints the
#                                          figures; output in fuzz/out/TARGET
#   scripts/fuzz.sh resume TARGET EXECS [MAX_SECONDS]
#                                          continues the last run of TARGET in place (afl-fuzz
#                                          -i -): its corpus, and its execs_done and run_time
#                                          counters, carry on; stops when the run's total reaches
#                                          EXECS or after MAX_SECONDS more. Only for an unchanged
#                                          binary: rebuild the target, and start a new run
#   scripts/fuzz.sh stats TARGET           the figures of the last run of TARGET
#   scripts/fuzz.sh list                   the target names
#
# Targets (src/fuzzing/): ciphertext api_request sigv4 policy seed.
# afl-fuzz runs one instance at a time, under `nice -n 10` (the machine is shared), with no
# CPU binding. A crash is saved in fuzz/out/TARGET/default/crashes/; copy it to
# fuzz/regressions/TARGET/ (cargo test then replays it) and fix the cause.
#
# Environment: P11KMS_FUZZ_NICE (default 10), CARGO_AFL_VERSION (default 0.18.2),
# P11KMS_FUZZ_DIR (default fuzz/ beside this script: the harness crate, its build and out/).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="${P11KMS_FUZZ_DIR:-$ROOT/fuzz}"
OUT_DIR="$FUZZ_DIR/out"
TARGETS=(ciphertext api_request sigv4 policy seed)
NICE="${P11KMS_FUZZ_NICE:-10}"
CARGO_AFL_VERSION="${CARGO_AFL_VERSION:-0.18.2}"

export PATH="$HOME/.cargo/bin:$PATH"

die() { echo "fuzz.sh: $*" >&2; exit 1; }

is_target() {
    local t
    for t in "${TARGETS[@]}"; do [[ "$t" == "$1" ]] && return 0; done
    return 1
}

replay() {
    cd "$ROOT"
    cargo test --release --lib fuzzing::
}

build() {
    if ! cargo afl --version >/dev/null 2>&1; then
        echo "installing cargo-afl $CARGO_AFL_VERSION (builds AFL++ from its bundled sources)"
        cargo install cargo-afl --version "$CARGO_AFL_VERSION" --locked
    fi
    # Builds AFL++ for this toolchain if the install did not; an existing build is kept.
    cargo afl config --build >/dev/null 2>&1 || true
    cd "$FUZZ_DIR"
    cargo afl build --release --locked
}

binary() { echo "$FUZZ_DIR/target/release/$1"; }

# afl_fuzz TARGET ARGS...: one afl-fuzz instance on TARGET's corpus, output in fuzz/out/TARGET.
# With P11KMS_FUZZ_RESUME=1 it continues the run already in fuzz/out/TARGET instead.
afl_fuzz() {
    local target="$1" input
    shift
    [[ -x "$(binary "$target")" ]] || die "$(binary "$target") is missing: run scripts/fuzz.sh build"
    if [[ "${P11KMS_FUZZ_RESUME:-0}" == 1 ]]; then
        [[ -f "$OUT_DIR/$target/default/fuzzer_stats" ]] || die "no run of $target to resume"
        input=-
    else
        rm -rf "${OUT_DIR:?}/$target"
        mkdir -p "$OUT_DIR"
        input="$FUZZ_DIR/corpus/$target"
    fi
    # No UI (logs stay readable), no CPU binding (the cores are shared), no core-dump check
    # (core_pattern belongs to the machine), no CPU-frequency check.
    AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 \
    AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        nice -n "$NICE" cargo afl fuzz -m none -t 1000 \
        -i "$input" -o "$OUT_DIR/$target" "$@" -- "$(binary "$target")"
}

stat_value() { sed -nE "s/^$2 +: (.*)$/\1/p" "$OUT_DIR/$1/default/fuzzer_stats"; }

stats() {
    local target="$1" file="$OUT_DIR/$1/default/fuzzer_stats"
    [[ -f "$file" ]] || die "no fuzzer_stats for $target"
    local execs secs
    execs="$(stat_value "$target" execs_done)"
    secs="$(stat_value "$target" run_time)"
    printf '%-12s execs_done=%s run_time=%ss execs/s=%s corpus=%s edges=%s crashes=%s hangs=%s\n' \
        "$target" "$execs" "$secs" "$(( execs / (secs > 0 ? secs : 1) ))" \
        "$(stat_value "$target" corpus_count)" "$(stat_value "$target" edges_found)" \
        "$(stat_value "$target" saved_crashes)" "$(stat_value "$target" saved_hangs)"
}

found_nothing() {
    local target="$1"
    local crashes hangs
    crashes="$(stat_value "$target" saved_crashes)"
    hangs="$(stat_value "$target" saved_hangs)"
    if [[ "$crashes" != 0 || "$hangs" != 0 ]]; then
        echo "$target: $crashes crash(es), $hangs hang(s) in $OUT_DIR/$target/default/" >&2
        return 1
    fi
}

smoke() {
    local seconds="${1:-20}" target failed=0
    for target in "${TARGETS[@]}"; do
        afl_fuzz "$target" -V "$seconds" 2>&1 | tail -n 200 >"$OUT_DIR.$target.log" ||
            { tail -n 20 "$OUT_DIR.$target.log" >&2; die "afl-fuzz failed on $target"; }
        stats "$target"
        found_nothing "$target" || failed=1
    done
    return "$failed"
}

run() {
    local target="$1" execs="$2" max_seconds="${3:-7200}"
    is_target "$target" || die "unknown target $target (targets: ${TARGETS[*]})"
    local start
    start=$(date +%s)
    # AFL_NO_UI prints a line per test case: keep the log's tail only (a resumed run's after
    # the earlier session's).
    [[ "${P11KMS_FUZZ_RESUME:-0}" == 1 ]] || : >"$OUT_DIR.$target.log"
    afl_fuzz "$target" -E "$execs" -V "$max_seconds" 2>&1 | tail -n 200 >>"$OUT_DIR.$target.log" ||
        { tail -n 20 "$OUT_DIR.$target.log" >&2; die "afl-fuzz failed on $target"; }
    echo "wall time: $(( $(date +%s) - start ))s"
    stats "$target"
    found_nothing "$target"
}

case "${1:-}" in
    replay) replay ;;
    build) build ;;
    smoke) build && smoke "${2:-20}" ;;
    run) [[ $# -ge 3 ]] || die "usage: scripts/fuzz.sh run TARGET EXECS [MAX_SECONDS]"; run "$2" "$3" "${4:-7200}" ;;
    resume)
        [[ $# -ge 3 ]] || die "usage: scripts/fuzz.sh resume TARGET EXECS [MAX_SECONDS]"
        P11KMS_FUZZ_RESUME=1 run "$2" "$3" "${4:-7200}" ;;
    stats) [[ $# -ge 2 ]] || die "usage: scripts/fuzz.sh stats TARGET"; stats "$2" ;;
    list) printf '%s\n' "${TARGETS[@]}" ;;
    *) sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
