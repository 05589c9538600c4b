"""Start and stop a real `p11kms serve` process for the end-to-end tests.

The server is started exactly as docs/server-contract.md describes: everything
through environment variables, `P11KMS_LISTEN=127.0.0.1:0` for a free port, and
the ready line `p11kms listening on http://127.0.0.1:<port>` on stdout
(`https://` when the server is given TLS settings).  stdout
and stderr go to files in the server's own directory so that tests can read
them afterwards (the log-secrecy test does) and so that a chatty server can
never block on a full pipe.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_RE = re.compile(rb"^p11kms listening on (https?://[^\s]+)\s*$", re.MULTILINE)

DEV_ACCESS_KEY = "test"
DEV_SECRET_KEY = "test"
REGION = "us-east-1"

# The embedded token every server runs on unless a test names another module:
# `softhsm2` (the default) or `kryoptic` (scripts/test.sh runs the suite once per token).
E2E_TOKEN = os.environ.get("P11KMS_E2E_TOKEN", "softhsm2")

# Variables from the caller's environment that would silently change how the
# server under test is configured; every test states its own configuration.
_SCRUBBED_PREFIXES = ("P11KMS_", "PKCS11SPY", "SOFTHSM2_CONF")
_KEPT = {"P11KMS_BIN"}


class ServerError(RuntimeError):
    pass


def find_binary() -> Path:
    """P11KMS_BIN, else target/release/p11kms, else target/debug/p11kms.

    `target` is $CARGO_TARGET_DIR when that is set, the repository's target/
    otherwise (both are tried).
    """
    explicit = os.environ.get("P11KMS_BIN")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ServerError(f"P11KMS_BIN={explicit} is not an executable file")
        return path.resolve()
    roots = []
    if os.environ.get("CARGO_TARGET_DIR"):
        roots.append(Path(os.environ["CARGO_TARGET_DIR"]))
    roots.append(REPO_ROOT / "target")
    candidates = [root / profile / "p11kms" for profile in ("release", "debug") for root in roots]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand.resolve()
    raise ServerError(
        "no p11kms binary: set P11KMS_BIN or run `cargo build --release` "
        f"(looked at {', '.join(str(c) for c in candidates)})"
    )


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _KEPT or not k.startswith(_SCRUBBED_PREFIXES)
    }
    if extra:
        env.update(extra)
    return env


class Server:
    """One `p11kms serve` process on a fresh data directory and a free port."""

    def __init__(
        self,
        binary: Path | None = None,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        workdir: Path | None = None,
        name: str = "p11kms",
    ):
        self.binary = Path(binary) if binary else find_binary()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.extra_env = dict(env or {})
        self.args = list(args or [])
        self.proc: subprocess.Popen | None = None
        self.endpoint: str | None = None

    # ------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> str:
        env = clean_env(
            {
                "P11KMS_LISTEN": "127.0.0.1:0",
                "P11KMS_DATA_DIR": str(self.data_dir),
                # No background deletion/rotation job between requests unless a
                # test asks for one (it would add PKCS#11 calls to traces).
                "P11KMS_JOB_INTERVAL_MS": "3600000",
                "P11KMS_EMBEDDED_TOKEN": E2E_TOKEN,
            }
        )
        env.update(self.extra_env)
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            out.close()
            err.close()
        deadline = time.monotonic() + timeout
        while True:
            match = READY_RE.search(self.stdout_path.read_bytes())
            if match:
                self.endpoint = match.group(1).decode().rstrip("/")
                return self.endpoint
            if self.proc.poll() is not None:
                raise ServerError(
                    f"p11kms serve exited with status {self.proc.returncode} before it was ready\n"
                    + self.describe_output()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"p11kms serve printed no ready line within {timeout}s\n" + self.describe_output()
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir and not os.environ.get("P11KMS_E2E_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ------------------------------------------------------------------
    def output(self) -> bytes:
        """Everything the server printed so far, stdout then stderr."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_bytes())
        return b"\n".join(parts)

    def describe_output(self, limit: int = 4000) -> str:
        text = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            data = path.read_bytes() if path.exists() else b""
            text.append(f"--- {label} ({path}) ---\n{data[-limit:].decode(errors='replace')}")
        return "\n".join(text)

    def client(self, **kwargs):
        return kms_client(self.endpoint, **kwargs)


def kms_client(
    endpoint: str,
    access_key: str = DEV_ACCESS_KEY,
    secret_key: str = DEV_SECRET_KEY,
    region: str = REGION,
    verify: str | bool | None = None,
    **config,
):
    """A boto3 KMS client without retries. `verify`: a CA bundle for https endpoints
    (None: botocore's default trust store); other keywords go to botocore's Config."""
    cfg = Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
        **config,
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
    )
    return session.client("kms", endpoint_url=endpoint, config=cfg, verify=verify)
