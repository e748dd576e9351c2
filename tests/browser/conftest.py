"""The browser test runs only from `make test-browser` (which sets DALIB_BROWSER_TEST=1 and installs
chromium when missing); `make test` and a plain `pytest` do not collect it."""
import os

if not os.environ.get("DALIB_BROWSER_TEST"):
    collect_ignore_glob = ["test_*.py"]
