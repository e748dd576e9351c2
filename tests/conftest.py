"""Fixtures shared by several test files."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dalib.runfiles import REPO_ROOT


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module: the machine is shared (and CI runs two workers), so timings and
    throughput stay stable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def run_cli():
    """Run `python -m MODULE ARGS...` as a user would (repository root, this checkout first on the path, one
    thread); returns the CompletedProcess."""
    def run(module, *args, env=None, timeout=300):
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        full = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **(env or {})}
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            full.pop(k, None)
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, env=full,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def cli_error(run_cli):
    """Run a command that must fail cleanly: exit `code`, no traceback; returns its last stderr line (the error)."""
    def run(code, module, *args, env=None, timeout=300):
        proc = run_cli(module, *args, env=env, timeout=timeout)
        assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        lines = proc.stderr.strip().splitlines()
        assert lines, "no error message"
        return lines[-1]

    return run


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder in which this process cannot create files: a 0o555 folder, or, where permissions do not bind
    (root), /sys, where nobody can."""
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").touch()
    except PermissionError:
        yield d
    else:
        (d / "probe").unlink()
        yield Path("/sys")
    d.chmod(0o755)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of the test's own, offline, with a data folder of its own; tests write hub
    fixtures into it (tests/hub_fixtures.py)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DALIB_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DALIB_MANIFESTS", raising=False)
    return tmp_path / "hub"
