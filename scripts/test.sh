#!/usr/bin/env bash
# The one command that runs the whole p11kms test suite.
#
#   scripts/test.sh
#
# Meant for a fresh Debian (bookworm) machine, run as root or by a user with
# sudo.  It installs what is missing, then runs, in order:
#
#   1. cargo fmt --check, and scripts/check-feature-parity.py (the tests resolve every shared
#      dependency with the shipped build's features, so cargo test reuses that build)
#   2. cargo clippy --all-targets --workspace -- -D warnings (the library, the bench and the
#      two FFI crates)
#   3. cargo build --release --workspace (p11kms, p11kms-bench, the tests' p11kms-under-test), and the Kryoptic token
#      library (tokens/kryoptic, its own workspace, into the same target dir)
#   4. cargo test --release            (Rust integration tests, the package tests/Cargo.toml,
#                                       start their own build of the binary;
#                                       the bench's smoke starts p11kms-bench; the test
#                                       binaries run in two lanes, scripts/cargo-test-lanes.py)
#   then once per embedded token, SoftHSM2 first, then Kryoptic:
#   5. starts target/release/p11kms serve on a fresh temp data dir and a free port, with
#      P11KMS_EMBEDDED_TOKEN=<token>
#   6. pytest tests/e2e                (AWS CLI, boto3, PKCS#11 trace, log secrecy), every
#      server it starts on the same token (P11KMS_E2E_TOKEN)
#   7. the boto3 conformance suite in $P11KMS_CONFORMANCE_DIR (default ../shared/conformance),
#      every area (reencrypt crypto datakeys keys misc sign mac grants policy), minus the node ids listed in
#      tests/conformance-deselect.txt (SoftHSM2) or tests/conformance-deselect-kryoptic.txt
#
# and stops the server at the end.  Exit status is non-zero if anything failed;
# a summary is printed last.  Logs and JUnit files go to target/test-logs/.
#
# Environment:
#   P11KMS_CONFORMANCE_DIR  conformance suite folder (default: <repo>/../shared/conformance)
#   CARGO_TARGET_DIR        honoured as usual (the binary is taken from there)
#   PYTHON                  interpreter for the virtualenv (default: python3)
#   P11KMS_TEST_SKIP        space-separated stages to skip: fmt feature-parity clippy cargo-test e2e conformance
#                           build-kryoptic e2e-kryoptic conformance-kryoptic, or kryoptic (all three)
#   P11KMS_NO_INSTALL=1     never install packages, only check for them
#   P11KMS_TEST_LANES       test binaries run side by side in the cargo-test stage (default 2)
#   PYTEST_ADDOPTS          passed through to both pytest runs (e.g. "-x" or "-k reencrypt")

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONF_DIR="${P11KMS_CONFORMANCE_DIR:-$ROOT/../shared/conformance}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$ROOT/target/venv"
LOG_DIR="$ROOT/target/test-logs"
DESELECT_FILE="$ROOT/tests/conformance-deselect.txt"
DESELECT_FILE_KRYOPTIC="$ROOT/tests/conformance-deselect-kryoptic.txt"
CONFORMANCE_MARKERS="reencrypt or crypto or datakeys or keys or misc or sign or mac or grants or policy"
SKIP=" ${P11KMS_TEST_SKIP:-} "
[[ "$SKIP" == *" kryoptic "* ]] && SKIP="$SKIP build-kryoptic e2e-kryoptic conformance-kryoptic "
SPY_MODULE=/usr/lib/x86_64-linux-gnu/pkcs11-spy.so

# Debian packages the run needs (binary -> package):
#   softhsm2        SoftHSM2 (libsofthsm2.so, softhsm2-util): the test token
#   opensc-pkcs11   pkcs11-spy.so (/usr/lib/x86_64-linux-gnu/pkcs11-spy.so), used by tests/e2e/test_trace.py
#   opensc          pkcs11-tool, used by tests/e2e/test_token.py to look into the token
#   libsqlite3-0    SQLite runtime
#   python3-venv    virtualenv for the Python tests
#   gcc, libc6-dev  C compiler for crates that build C (rusqlite's bundled SQLite, jemalloc)
#   make            jemalloc's build (tikv-jemalloc-sys runs configure and make)
#   curl            rustup bootstrap when no Rust toolchain is present
#   python3-yaml    YAML parser for tests/gateway/deploy.rs (compose and Kubernetes manifests)
#   systemd         systemd-analyze verify of deploy/systemd/p11kms.service
#   libp11-kit-dev  pkcs11.h, to build the network-HSM emulator tools/pkcs11-delay
#   openssl         the openssl command: test CAs and certificates for tests/gateway/tls.rs and tests/e2e/test_tls.py
#   postgresql      PostgreSQL 15 on bookworm (initdb, pg_ctl, postgres, psql, pg_isready): the PostgreSQL
#                   store's tests start a private server of their own (tests/pg_server: initdb into a
#                   temp dir, own port, run as the postgres user when root). They never use the
#                   package's own cluster or service, whether it runs or not.
#   libssl-dev, pkg-config, libsqlite3-dev, libclang-dev
#                   the second embedded token, Kryoptic (tokens/kryoptic): it links the system's
#                   OpenSSL 3 and SQLite, and its build generates OpenSSL bindings with libclang
APT_PACKAGES=(softhsm2 opensc-pkcs11 opensc libsqlite3-0 python3 python3-venv gcc libc6-dev make curl ca-certificates procps python3-yaml systemd libp11-kit-dev openssl postgresql libssl-dev pkg-config libsqlite3-dev libclang-dev)

mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*.xml "$LOG_DIR"/*.log

SUMMARY=()
FAILED_STAGES=()
SERVER_PID=""
SERVER_DIR=""

log() { printf '\n==> %s\n' "$*" >&2; }

# run_stage NAME CMD...: run CMD with errexit in a subshell, record the result.
# run_stage --inline NAME CMD...: run CMD in this shell (it must return its own
# status explicitly), for stages that set variables such as the server's pid.
run_stage() {
    local inline=0
    if [[ "$1" == --inline ]]; then inline=1; shift; fi
    local name="$1" start rc
    shift
    if [[ "$SKIP" == *" $name "* ]]; then
        SUMMARY+=("SKIP  $name (P11KMS_TEST_SKIP)")
        return 0
    fi
    log "$name"
    start=$(date +%s)
    set +e
    if (( inline )); then
        "$@"
    else
        (set -e; "$@")
    fi
    rc=$?
    set -e
    local took=$(( $(date +%s) - start ))
    if (( rc == 0 )); then
        SUMMARY+=("PASS  $name (${took}s)")
    else
        SUMMARY+=("FAIL  $name (exit $rc, ${took}s)")
        FAILED_STAGES+=("$name")
    fi
    return 0
}

stage_failed() {
    local s
    for s in "${FAILED_STAGES[@]+"${FAILED_STAGES[@]}"}"; do
        [[ "$s" == "$1" ]] && return 0
    done
    return 1
}

# --------------------------------------------------------------------------
# 0. Prerequisites
# --------------------------------------------------------------------------
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if (( ${#missing[@]} == 0 )); then
        echo "all Debian packages present"
        return 0
    fi
    if [[ "${P11KMS_NO_INSTALL:-}" == 1 ]]; then
        echo "missing Debian packages: ${missing[*]} (P11KMS_NO_INSTALL=1)" >&2
        return 1
    fi
    echo "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        # Debian's own cargo is older than the crate's rust-version, so use rustup.
        echo "no Rust toolchain: installing one with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if command -v rustup >/dev/null 2>&1; then
        local comp
        for comp in rustfmt clippy; do
            rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
        done
    fi
    cargo --version
}

ensure_venv() {
    local python="${PYTHON:-python3}"
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$VENV"
        if ! "$python" -m venv "$VENV"; then
            # a python3 without ensurepip (Debian's without python3-venv): use Debian's
            rm -rf "$VENV"
            /usr/bin/python3 -m venv "$VENV"
        fi
    fi
    # AWS CLI v1 from PyPI (the `awscli` package): it is a plain pip package that
    # shares botocore with boto3; v2 is not on PyPI.  The tests use only
    # commands that v1 and v2 share.
    # aws-encryption-sdk: tests/e2e/test_esdk.py runs the AWS Encryption SDK, unchanged, against the gateway.
    # boto3 and cryptography are what tests/e2e needs of the conformance suite's requirements.
    local reqs=(boto3 cryptography awscli pytest prometheus-client aws-encryption-sdk)
    [[ -f "$CONF_DIR/requirements.txt" ]] && reqs+=("-r" "$CONF_DIR/requirements.txt")
    local stamp="$VENV/.p11kms-requirements"
    local want
    want="${reqs[*]}"
    [[ -f "$CONF_DIR/requirements.txt" ]] && want+="$(cat "$CONF_DIR/requirements.txt")"
    if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$want" ]]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}"
        printf '%s' "$want" > "$stamp"
    fi
    "$VENV/bin/python" -c 'import boto3, botocore, pytest, cryptography; print("boto3", boto3.__version__, "pytest", pytest.__version__)'
    "$VENV/bin/aws" --version
}

prerequisites() {
    install_packages
    [[ -e "$SPY_MODULE" ]] || echo "warning: $SPY_MODULE is missing; test_trace.py will fail" >&2
    ensure_rust
    ensure_venv
}

# --------------------------------------------------------------------------
# 5. The server under test
# --------------------------------------------------------------------------
server_env_unset() {
    # Inherited P11KMS_* server settings would change the server under test.
    local v
    for v in $(compgen -e | grep '^P11KMS_' || true); do
        case "$v" in
            P11KMS_CONFORMANCE_DIR|P11KMS_TEST_SKIP|P11KMS_NO_INSTALL|P11KMS_BIN) ;;
            *) printf -- '-u\n%s\n' "$v" ;;
        esac
    done
}

# start_server TOKEN: a server on a fresh embedded token of that kind (softhsm2, kryoptic).
start_server() {
    local token="$1"
    SERVER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/p11kms-test.XXXXXX")"
    local out="$LOG_DIR/server-$token.stdout.log" err="$LOG_DIR/server-$token.stderr.log"
    local -a unset_args
    mapfile -t unset_args < <(server_env_unset)
    env "${unset_args[@]}" -u SOFTHSM2_CONF \
        P11KMS_LISTEN=127.0.0.1:0 \
        P11KMS_DATA_DIR="$SERVER_DIR/data" \
        P11KMS_EMBEDDED_TOKEN="$token" \
        P11KMS_LOG=info \
        "$TARGET_DIR/release/p11kms" serve </dev/null >"$out" 2>"$err" &
    SERVER_PID=$!
    local deadline=$(( $(date +%s) + 120 )) line
    while :; do
        line="$(grep -m1 -oE '^p11kms listening on http://[^[:space:]]+' "$out" || true)"
        if [[ -n "$line" ]]; then
            KMS_ENDPOINT_URL="${line#p11kms listening on }"
            export KMS_ENDPOINT_URL
            echo "server pid $SERVER_PID at $KMS_ENDPOINT_URL on $token (data dir $SERVER_DIR/data)"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" || true
            echo "p11kms serve exited before it was ready; stderr:" >&2
            tail -n 50 "$err" >&2 || true
            SERVER_PID=""
            return 1
        fi
        if (( $(date +%s) > deadline )); then
            echo "p11kms serve printed no ready line within 120 s; stderr:" >&2
            tail -n 50 "$err" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    if [[ -n "$SERVER_DIR" ]]; then
        rm -rf "$SERVER_DIR"
        SERVER_DIR=""
    fi
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------
# Test stages
# --------------------------------------------------------------------------
cargo_test() {
    set -o pipefail
    # p11kms: the library's unit tests; p11kms-tests: the integration tests (tests/), which
    # start their own p11kms-under-test binary. The two small crates hold the `unsafe` FFI;
    # their own unit tests run too. The bench's smoke starts target/release/p11kms next to
    # p11kms-bench, which the build stage made. The test binaries run in two lanes
    # (scripts/cargo-test-lanes.py): most of their time is waiting.
    python3 scripts/cargo-test-lanes.py --lanes "${P11KMS_TEST_LANES:-2}" \
        --times "$LOG_DIR/../test-times.json" -- \
        --release -p p11kms -p p11kms-tests -p p11kms-bench -p pkcs11-direct -p pkcs11-unnamed 2>&1 |
        tee "$LOG_DIR/cargo-test.log"
}

# The fuzz smoke: every committed fuzz corpus file and saved crash through the fuzz targets,
# as a cargo test (AFL++ is not needed; see scripts/fuzz.sh and the README's "Fuzzing").
fuzz_smoke() {
    set -o pipefail
    scripts/fuzz.sh replay 2>&1 | tee "$LOG_DIR/fuzz-smoke.log"
}

# e2e TOKEN JUNIT
e2e() {
    P11KMS_BIN="$TARGET_DIR/release/p11kms" P11KMS_E2E_TOKEN="$1" \
        "$VENV/bin/python" -m pytest tests/e2e -ra -p no:cacheprovider \
        --junitxml="$LOG_DIR/$2"
}

# conformance DESELECT_FILE JUNIT
conformance() {
    local deselect="$1" junit="$2"
    cd "$CONF_DIR"
    # The folder is read-only: no cache, no bytecode.  Deselection is by exact
    # node id (tests/conformance_deselect.py); pytest's --deselect would match
    # prefixes and drop e.g. test_create_hmac_key_without_key_usage as well.
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH="$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}" \
    P11KMS_DESELECT_FILE="$deselect" \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
        "$VENV/bin/python" -m pytest -p no:cacheprovider -p conformance_deselect \
        -m "$CONFORMANCE_MARKERS" --junitxml="$LOG_DIR/$junit"
}

# --------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------
START=$(date +%s)
# The shared conformance suite lives beside the repository (../shared/conformance). CI must
# have it; a clone elsewhere runs everything the repository holds and skips only that suite.
if [[ ! -f "$CONF_DIR/requirements.txt" ]]; then
    if [[ -n "${CI:-}" ]]; then
        echo "conformance suite not found at $CONF_DIR (set P11KMS_CONFORMANCE_DIR)" >&2
        exit 1
    fi
    echo "notice: no conformance suite at $CONF_DIR; skipping that stage (set P11KMS_CONFORMANCE_DIR to run it)" >&2
    SKIP="$SKIP conformance conformance-kryoptic "
fi
run_stage prerequisites prerequisites
if stage_failed prerequisites; then
    echo "prerequisites failed; nothing else can run" >&2
else
    export PATH="$HOME/.cargo/bin:$PATH"
    run_stage fmt cargo fmt --all -- --check
    run_stage feature-parity python3 scripts/check-feature-parity.py
    run_stage clippy cargo clippy --all-targets --workspace -- -D warnings
    run_stage build cargo build --release --workspace
    # The second embedded token: its own workspace (tokens/kryoptic), built into the same
    # target dir so that the gateway and tests/kryoptic.rs find it next to the binary.
    run_stage build-kryoptic cargo build --release --manifest-path tokens/kryoptic/Cargo.toml \
        --target-dir "$TARGET_DIR"
    if stage_failed build; then
        SUMMARY+=("SKIP  cargo-test, e2e, conformance (no binary)")
    else
        run_stage cargo-test cargo_test
        for token in softhsm2 kryoptic; do
            if [[ "$token" == softhsm2 ]]; then
                e2e_stage=e2e conformance_stage=conformance deselect="$DESELECT_FILE"
            else
                e2e_stage=e2e-kryoptic conformance_stage=conformance-kryoptic
                deselect="$DESELECT_FILE_KRYOPTIC"
            fi
            if [[ "$SKIP" == *" $e2e_stage "* && "$SKIP" == *" $conformance_stage "* ]]; then
                continue
            fi
            if [[ "$token" == kryoptic ]] && stage_failed build-kryoptic; then
                SUMMARY+=("SKIP  $e2e_stage, $conformance_stage (no Kryoptic library)")
                continue
            fi
            run_stage --inline "server-$token" start_server "$token"
            if stage_failed "server-$token"; then
                SUMMARY+=("SKIP  $e2e_stage, $conformance_stage (server did not start)")
            else
                run_stage "$e2e_stage" e2e "$token" "$e2e_stage.xml"
                run_stage "$conformance_stage" conformance "$deselect" "$conformance_stage.xml"
            fi
            stop_server
        done
    fi
fi

# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------
count_junit() {
    [[ -f "$1" ]] || { echo "0 0 0"; return; }
    "$VENV/bin/python" - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
t = f = s = 0
for su in suites:
    t += int(su.get("tests", 0))
    f += int(su.get("failures", 0)) + int(su.get("errors", 0))
    s += int(su.get("skipped", 0))
print(t - f - s, f, s)
EOF
}

count_cargo() {
    local p=0 f=0 i=0
    if [[ -f "$LOG_DIR/cargo-test.log" ]]; then
        while read -r a b c; do
            p=$((p + a)); f=$((f + b)); i=$((i + c))
        done < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' \
                   "$LOG_DIR/cargo-test.log")
    fi
    echo "$p $f $i"
}

TOTAL_P=0 TOTAL_F=0 TOTAL_S=0
printf '\n==================== p11kms test summary ====================\n'
for line in "${SUMMARY[@]}"; do printf '  %s\n' "$line"; done
printf '  ------------------------------------------------------------\n'
read -r p f s < <(count_cargo)
printf '  %-21s %4d passed, %4d failed, %4d ignored\n' "cargo test:" "$p" "$f" "$s"
TOTAL_P=$((TOTAL_P + p)); TOTAL_F=$((TOTAL_F + f)); TOTAL_S=$((TOTAL_S + s))
if [[ -x "$VENV/bin/python" ]]; then
    for junit in e2e conformance e2e-kryoptic conformance-kryoptic; do
        read -r p f s < <(count_junit "$LOG_DIR/$junit.xml")
        printf '  %-21s %4d passed, %4d failed, %4d skipped\n' "$junit:" "$p" "$f" "$s"
        TOTAL_P=$((TOTAL_P + p)); TOTAL_F=$((TOTAL_F + f)); TOTAL_S=$((TOTAL_S + s))
    done
fi
printf '  logs: %s   time: %ss\n' "$LOG_DIR" "$(( $(date +%s) - START ))"
if (( ${#FAILED_STAGES[@]} > 0 )); then
    printf '  FAILED stages: %s\n' "${FAILED_STAGES[*]}"
fi
printf '=============================================================\n'
printf 'total: %d passed, %d failed, %d skipped\n' "$TOTAL_P" "$TOTAL_F" "$TOTAL_S"

if (( ${#FAILED_STAGES[@]} > 0 )); then
    exit 1
fi
exit 0
