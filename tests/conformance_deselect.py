"""pytest plugin: deselect conformance tests by exact node id.

pytest's own `--deselect` matches node-id *prefixes*, so deselecting
`test_keys.py::test_create_hmac_key` would also drop
`test_keys.py::test_create_hmac_key_without_key_usage`.  This plugin reads
the file named by $P11KMS_DESELECT_FILE (one node id per line, `#` comments)
and deselects exactly those ids.  Ids that match no collected test are listed
in the terminal summary (and fail the run when P11KMS_DESELECT_STRICT=1), so
the file cannot silently go stale.

Used by scripts/test.sh as `-p conformance_deselect` with tests/ on PYTHONPATH.
"""

from __future__ import annotations

import os

_UNMATCHED: list[str] = []
_DESELECTED: list[str] = []


def read_ids(path: str) -> list[str]:
    ids = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                ids.append(line)
    return ids


import pytest


@pytest.hookimpl(trylast=True)  # after -m/-k have made their selection
def pytest_collection_modifyitems(config, items):
    path = os.environ.get("P11KMS_DESELECT_FILE")
    if not path:
        return
    wanted = set(read_ids(path))
    keep, drop = [], []
    for item in items:
        (drop if item.nodeid in wanted else keep).append(item)
    seen = {item.nodeid for item in drop}
    # ids that name no selected test: typos, tests renamed upstream, or tests
    # outside the -m area selection (which need no entry)
    _UNMATCHED[:] = sorted(wanted - seen)
    _DESELECTED[:] = sorted(seen)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not os.environ.get("P11KMS_DESELECT_FILE"):
        return
    terminalreporter.write_sep("-", f"{len(_DESELECTED)} deselected by {os.environ['P11KMS_DESELECT_FILE']}")
    for nodeid in _UNMATCHED:
        terminalreporter.write_line(f"warning: deselect entry matches no collected test: {nodeid}", yellow=True)


def pytest_sessionfinish(session, exitstatus):
    if _UNMATCHED and os.environ.get("P11KMS_DESELECT_STRICT") == "1" and exitstatus == 0:
        session.exitstatus = 1
