#!/usr/bin/env python3
"""Slow-loris run against a fresh gateway on 127.0.0.1 with its default limits (not in CI).

    python3 scripts/slow_loris.py [--connections 4000] [--seconds 25] [--binary target/release/p11kms]

Starts `p11kms serve` on a new data directory (embedded SoftHSM2, port chosen by the kernel),
opens the given number of TCP connections from 127.0.0.1 that each send half a request header,
and then samples once a second: the gateway's RSS (VmRSS), its open connections and refusals
(from /metrics, asked from 127.0.0.2, which is another client address), and the latency of a
GET /healthz from 127.0.0.3. Extra `NAME=VALUE` arguments go to the gateway's environment,
e.g. P11KMS_MAX_CONNECTIONS_PER_ADDRESS=0. Only loopback addresses are used; the run is
bounded by --connections (at most 10000) and --seconds (at most 120).
"""

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HALF_HEADER = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: TrentService.Encrypt\r\n"
    b"Content-Type: application/x-amz-js"
)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def get(port, source, path, timeout=10.0):
    """GET path from the loopback address `source`; (seconds, response text) or (None, error)."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0)) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return time.monotonic() - started, b"".join(chunks).decode(errors="replace")
    except OSError as e:
        return None, str(e)


def metric(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--binary", default="target/release/p11kms")
    parser.add_argument("env", nargs="*", help="NAME=VALUE for the gateway")
    args = parser.parse_args()
    count = max(1, min(args.connections, 10000))
    seconds = max(1, min(args.seconds, 120))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))

    data = tempfile.mkdtemp(prefix="p11kms-slowloris-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("P11KMS_")}
    env.update(P11KMS_DATA_DIR=data, P11KMS_LISTEN="127.0.0.1:0", P11KMS_LOG="info")
    env.update(dict(a.split("=", 1) for a in args.env))
    log = open(os.path.join(data, "server.log"), "w")
    server = subprocess.Popen([os.path.abspath(args.binary), "serve"], env=env, stdout=subprocess.PIPE,
                              stderr=log, text=True, cwd=data)
    try:
        line = server.stdout.readline()
        if "listening on" not in line:
            sys.exit(f"the gateway did not start: {line!r}; see {data}/server.log")
        port = int(line.strip().rsplit(":", 1)[1])
        time.sleep(0.5)
        before = rss_kib(server.pid)
        print(f"RSS before: {before} KiB")

        sockets, failed = [], 0
        opened = time.monotonic()
        for _ in range(count):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(HALF_HEADER)
                sockets.append(s)
            except OSError:
                failed += 1
        print(f"{count} connections attempted in {time.monotonic() - opened:.2f} s "
              f"({failed} failed at connect)")

        print("t(s)  RSS(KiB)  open  refused(per_address)  refused(process)  "
              "header_read_timeouts  healthz(ms)")
        for _ in range(seconds):
            time.sleep(1)
            _, text = get(port, "127.0.0.2", "/metrics")
            latency, answer = get(port, "127.0.0.3", "/healthz")
            ok = latency is not None and answer.startswith("HTTP/1.1 200")
            values = [metric(text, series) for series in (
                "p11kms_connections_open",
                'p11kms_connections_refused_total{limit="per_address"}',
                'p11kms_connections_refused_total{limit="process"}',
                'p11kms_connection_timeouts_total{kind="header_read"}',
            )]
            healthz_ms = latency * 1000 if ok else float("nan")
            print(f"{time.monotonic() - opened:4.0f}  {rss_kib(server.pid):8d}  "
                  f"{values[0]:4.0f}  {values[1]:20.0f}  {values[2]:16.0f}  "
                  f"{values[3]:20.0f}  {healthz_ms:11.2f}")
        still_open = 0
        for s in sockets:
            s.setblocking(False)
            try:
                if s.recv(1):
                    still_open += 1
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
            s.close()
        print(f"half-open connections still open at the end, seen from the client: {still_open}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
