#!/usr/bin/env bash
# Start the gateway on its embedded default: a SoftHSM2 token and a SQLite file under
# ./p11kms-data, listening on 127.0.0.1:8080, dev credentials test/test.
#
#   scripts/run.sh [extra `p11kms serve` arguments]
#
# On a fresh Debian machine it installs what it needs first (SoftHSM2, a C compiler for
# the bundled SQLite, make for jemalloc, and a Rust toolchain through rustup when cargo is missing).
# Environment overrides (P11KMS_LISTEN, P11KMS_DATA_DIR, ...) are described in README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO=sudo; fi

need_pkgs=()
[[ -e /usr/lib/softhsm/libsofthsm2.so || -e /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so ]] || need_pkgs+=(softhsm2)
command -v cc >/dev/null || need_pkgs+=(gcc libc6-dev)
command -v make >/dev/null || need_pkgs+=(make)
command -v curl >/dev/null || need_pkgs+=(curl ca-certificates)
if ((${#need_pkgs[@]})); then
    echo "==> installing ${need_pkgs[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >&2
fi
if ! command -v cargo >/dev/null; then
    [[ -x "$HOME/.cargo/bin/cargo" ]] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
    export PATH="$HOME/.cargo/bin:$PATH"
fi

[[ -x "${CARGO_TARGET_DIR:-$ROOT/target}/release/p11kms" ]] || echo "==> first build: compiling p11kms and its dependencies (several minutes)" >&2
cargo build --release --bin p11kms >&2
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/p11kms" serve "$@"
