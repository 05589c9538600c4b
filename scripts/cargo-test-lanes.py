#!/usr/bin/env python3
"""Builds the Rust tests with cargo, then runs the test binaries in parallel lanes.

    scripts/cargo-test-lanes.py [--lanes N] -- CARGO_TEST_ARGS...

`cargo test` runs one test binary after another. Most of this suite's time is spent in a few
binaries that mostly wait (the fault matrix, the cluster and limit tests wait on timeouts and
restarts), so on 2 cores two lanes of binaries finish in about half the time. Each binary still
runs alone in its own process, exactly as `cargo test` would run it (same working directory
and CARGO_* variables); only its neighbour in the other lane runs at the same time.

The binaries whose assertions bound latency (the fault matrix, the limits, the crash loop) run
first, alone, one after another: a neighbour's load made the slow-loris test miss its 8 s
header-read window. The rest are then spread longest first over the lanes, using the
durations of the last run (--times) or, for a binary never run, a small default.

`tests/gateway` is one binary of many modules (each was a binary of its own): each of its
modules runs as a unit of its own, in its own process (`--exact` and the module's test names),
named by the module, so the schedule and the isolation are those of separate binaries.

The output is cargo's: a "Running" line and the binary's own output per binary, one binary at a
time, then the doc tests through `cargo test --doc`, so scripts/test.sh counts the "test
result:" lines as before. Exit status 1 when any binary
failed (all still run, as with --no-fail-fast), 101 when the build failed.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# Binaries whose tests bound latency: each runs alone, before the lanes start.
ALONE = ("faults", "limits", "crash_loop")
# Binaries of many modules, run one module per process.
SPLIT = ("gateway",)
# Seconds, for a binary with no recorded time yet.
DEFAULT_SECONDS = {"cluster": 40, "cluster_backup": 15}
UNKNOWN_SECONDS = 3.0


def build(cargo_args):
    """Runs `cargo test --no-run`; returns [(name, src_path, manifest_dir, executable)]."""
    cmd = ["cargo", "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    found = []
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue
        target = msg["target"]
        kind = "unittests" if "lib" in target["kind"] or "bin" in target["kind"] else "tests"
        found.append(
            (
                target["name"] if kind == "tests" else f"{target['name']}[{target['kind'][0]}]",
                target["src_path"],
                str(Path(msg["manifest_path"]).parent),
                msg["executable"],
                kind,
            )
        )
    if proc.wait() != 0:
        sys.exit(101)
    return found


def split_modules(binaries):
    """Each module of a SPLIT binary as a unit of its own: (name, ..., exact test names)."""
    units = []
    for name, src, manifest_dir, exe, kind in binaries:
        if name not in SPLIT:
            units.append((name, src, manifest_dir, exe, kind, []))
            continue
        listing = subprocess.run(
            [exe, "--list", "--format", "terse"], cwd=manifest_dir, check=True,
            stdout=subprocess.PIPE, text=True,
        ).stdout
        modules = {}
        for line in listing.splitlines():
            if line.endswith(": test"):
                test = line[: -len(": test")]
                modules.setdefault(test.split("::", 1)[0], []).append(test)
        for module, tests in sorted(modules.items()):
            units.append((module, src, manifest_dir, exe, kind, tests))
    return units


def plan(binaries, lanes, times):
    """Longest first onto the least-loaded lane."""
    def seconds(name):
        return times.get(name, DEFAULT_SECONDS.get(name, UNKNOWN_SECONDS))

    loads = [0.0] * lanes
    queues = [[] for _ in range(lanes)]
    for binary in sorted(binaries, key=lambda b: -seconds(b[0])):
        lane = loads.index(min(loads))
        queues[lane].append(binary)
        loads[lane] += seconds(binary[0])
    return queues


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--times", default="target/test-logs/test-times.json")
    parser.add_argument("cargo_args", nargs="*")
    args = parser.parse_args()

    binaries = split_modules(build(args.cargo_args))
    times_file = Path(args.times)
    try:
        times = json.loads(times_file.read_text())
    except (OSError, ValueError):
        times = {}

    out_lock = threading.Lock()
    failed = []
    took = {}

    def run_lane(queue):
        for name, src, manifest_dir, exe, kind, tests in queue:
            env = dict(os.environ, CARGO_MANIFEST_DIR=manifest_dir)
            start = time.monotonic()
            proc = subprocess.run(
                [exe, *(["--exact", *tests] if tests else [])], cwd=manifest_dir, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            )
            took[name] = round(time.monotonic() - start, 1)
            rel = os.path.relpath(src, manifest_dir)
            label = f"unittests {rel}" if kind == "unittests" else rel
            if tests:
                label = f"{rel} {name}::"
            with out_lock:
                print(f"     Running {label} ({os.path.relpath(exe)}) [{took[name]} s]", flush=True)
                sys.stdout.write(proc.stdout)
                sys.stdout.flush()
                if proc.returncode != 0:
                    failed.append(label)

    run_lane([b for b in binaries if b[0] in ALONE])
    threads = [
        threading.Thread(target=run_lane, args=(queue,))
        for queue in plan([b for b in binaries if b[0] not in ALONE], max(1, args.lanes), times)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Doc tests (the `compile_fail` ones among them) are no binaries: cargo runs them itself.
    if subprocess.run(["cargo", "test", "--doc", *args.cargo_args]).returncode != 0:
        failed.append("doc tests")

    try:
        times_file.parent.mkdir(parents=True, exist_ok=True)
        times_file.write_text(json.dumps({**times, **took}, indent=1, sort_keys=True))
    except OSError:
        pass
    if failed:
        print("error: test binaries failed: " + ", ".join(failed), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
