#!/bin/sh
# Builds the network-HSM emulator: tools/pkcs11-delay/build.sh [OUT_DIR]
# Prints the path of the built module. Needs a C compiler and p11-kit's pkcs11.h
# (Debian: libp11-kit-dev).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${CARGO_TARGET_DIR:-$here/../../target}/pkcs11-delay}
mkdir -p "$out"
inc=$(pkg-config --cflags p11-kit-1 2>/dev/null || echo "-I/usr/include/p11-kit-1")
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -fPIC -shared $inc \
    -fvisibility=hidden \
    -o "$out/libp11delay.so" "$here/p11delay.c" -ldl
echo "$out/libp11delay.so"
