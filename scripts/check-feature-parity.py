#!/usr/bin/env python3
"""Fails when `cargo test` would resolve a shared dependency with other features than the
shipped build (`cargo build --release --workspace`).

It also fails when a `[profile.release.package.NAME]` override of the root Cargo.toml (test-only
dependencies built at a lower opt-level) names a crate the shipped build compiles.

A crate whose feature set differs is compiled twice, with everything that depends on it, the
library included: that cost the test stage 134 crates. crates/workspace-hack lists the features
the tests add; this check says which crate and feature to add there when a dependency changes.

    scripts/check-feature-parity.py          exit 0 when both builds agree, 1 otherwise
"""

import re
import subprocess
import sys
from pathlib import Path

TESTED = [
    "-p", "p11kms", "-p", "p11kms-tests", "-p", "p11kms-bench", "-p", "pkcs11-direct",
    "-p", "pkcs11-unnamed",
]


def features(args):
    """{"name vX.Y.Z": {feature, ...}} for every package in the resolved graph."""
    out = subprocess.run(
        ["cargo", "tree", "--locked", "--prefix", "none", "--no-dedupe", "-f", "{p}|{f}", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        package, names = line.split("|", 1)
        package = package.replace("(*)", "").strip()
        if "(/" in package:  # a workspace member, listed with its path
            continue
        found.setdefault(package, set()).update(n for n in names.split(",") if n)
    return found


def profile_overrides():
    """Crate names of the root Cargo.toml's `[profile.release.package.NAME]` sections."""
    manifest = Path(__file__).resolve().parent.parent / "Cargo.toml"
    return re.findall(r"^\[profile\.release\.package\.([\w-]+)\]", manifest.read_text(), re.M)


def main():
    shipped = features(["--workspace", "-e", "no-dev"])
    tested = features(TESTED)
    shipped_names = {package.split(" ")[0] for package in shipped}
    overridden = [name for name in profile_overrides() if name in shipped_names]
    if overridden:
        print("feature parity: these profile overrides would change the shipped build: "
              + ", ".join(overridden))
        return 1
    missing = {
        package: sorted(tested[package] - names)
        for package, names in shipped.items()
        if package in tested and tested[package] - names
    }
    if not missing:
        print(f"feature parity: the tests resolve all {len(shipped)} shared crates as shipped")
        return 0
    print("feature parity: `cargo test` adds features to crates the shipped build also compiles;")
    print("add them to crates/workspace-hack/Cargo.toml or the test stage recompiles them:")
    for package, names in sorted(missing.items()):
        print(f"  {package}: {', '.join(names)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
