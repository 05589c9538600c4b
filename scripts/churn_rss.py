#!/usr/bin/env python3
"""Key churn against a fresh gateway, and its RSS after each phase: how much memory a created
and deleted key leaves behind (the soak's RSS question, issue 13).

    scripts/churn_rss.py BINARY PHASES KEYS_PER_PHASE [NAME=VALUE ...]

Starts `BINARY serve` on a new data directory (embedded SoftHSM2 token, SQLite, audit trail)
with a 1 s test day and the jobs every second, so that a key scheduled for deletion (7 days)
is really deleted 7 s later. Each phase creates KEYS_PER_PHASE keys with boto3, describes each
and schedules its deletion, then waits 15 s (the deletions, and jemalloc's 10 s decay) and
prints the gateway's RSS. NAME=VALUE pairs go to the gateway's environment.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.config import Config


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    binary, phases, per_phase = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = tempfile.mkdtemp(prefix="p11kms-churn-rss-")
    env = dict(os.environ, P11KMS_DATA_DIR=data, P11KMS_LISTEN="127.0.0.1:0",
               P11KMS_LOG="warn", P11KMS_DAY_SECONDS="1", P11KMS_JOB_INTERVAL_MS="1000")
    env.pop("SOFTHSM2_CONF", None)
    for pair in sys.argv[4:]:
        name, value = pair.split("=", 1)
        env[name] = value
    with open(os.path.join(data, "gateway.log"), "w") as log:
        gateway = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE,
                                   stderr=log, text=True)
    try:
        url = None
        for line in gateway.stdout:
            found = re.match(r"p11kms listening on (\S+)", line.strip())
            if found:
                url = found.group(1)
                break
        if url is None:
            sys.exit(f"the gateway did not start; see {data}/gateway.log")
        kms = boto3.client("kms", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test",
                           config=Config(retries={"max_attempts": 1}))
        time.sleep(2)
        print(f"start: RSS {rss_mib(gateway.pid):.1f} MiB", flush=True)
        for phase in range(1, phases + 1):
            started = time.time()
            for _ in range(per_phase):
                key = kms.create_key()["KeyMetadata"]["KeyId"]
                kms.describe_key(KeyId=key)
                kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
            took = time.time() - started
            time.sleep(15)
            print(f"phase {phase}: {per_phase} keys in {took:.0f} s; RSS "
                  f"{rss_mib(gateway.pid):.1f} MiB", flush=True)
    finally:
        gateway.kill()
        gateway.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
