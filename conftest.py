"""Test-session set-up shared by `tests/` and the notebooks run by nbval (`make test`).

- Notebooks 04-07 hand artifacts to each other through one run folder (teachers -> pseudo-labels ->
  students -> evaluation), so under pytest-xdist they form one unit that a single worker runs in order;
  every other test file is its own unit, as with `--dist loadfile`.
- The notebooks' default run folder ($DALIB_RUN_DIR) is a fresh temporary folder per test session (removed
  at the end), so a test run never reuses the teachers or students of an earlier one.
"""
import os
import re
import shutil
import tempfile

import pytest

CHAIN = re.compile(r"notebooks/0[4-9]_\w+\.ipynb$")  # notebooks that read an earlier notebook's artifacts


_created = []


def pytest_configure(config):
    if "DALIB_RUN_DIR" not in os.environ:  # xdist workers inherit the controller's folder
        os.environ["DALIB_RUN_DIR"] = tempfile.mkdtemp(prefix="dalib-test-run-")
        _created.append(os.environ["DALIB_RUN_DIR"])


def pytest_unconfigure(config):
    for d in _created:
        shutil.rmtree(d, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist: whole files per worker (as `--dist loadfile`), and notebooks 04-07 as one unit."""
    from xdist.scheduler import LoadFileScheduling

    class NotebookChainScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "notebook-chain" if CHAIN.search(path) else path

    return NotebookChainScheduling(config, log)
