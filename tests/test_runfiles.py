"""dalib.runfiles: atomic writes leave the old file intact when a write is interrupted; metrics records."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from dalib import runfiles
from dalib.runfiles import atomic_write_bytes, atomic_write_json, load_metrics, record_metrics


def test_write_and_replace(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second" and os.listdir(path.parent) == ["file.bin"]


def test_an_exception_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})

    def interrupted(fd):
        raise KeyboardInterrupt("interrupted while syncing")

    monkeypatch.setattr(runfiles.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"step": 2, "big": "x" * 100_000})
    assert json.loads(path.read_text()) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.json"]  # the temp file is removed


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    """SIGKILL while the new bytes are half on disk: the reader still sees the complete old file."""
    path = tmp_path / "weights.bin"
    old = os.urandom(1 << 16)
    atomic_write_bytes(path, old)
    script = textwrap.dedent(f"""
        import os, sys, time
        from dalib import runfiles
        def stall(fd):  # the data is written, not yet renamed into place
            print("written", flush=True)
            time.sleep(60)
        runfiles.os.fsync = stall
        runfiles.atomic_write_bytes({str(path)!r}, b"n" * (1 << 20))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert path.read_bytes() == old
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "weights.bin"]
    assert all(n.startswith(".weights.bin.") and n.endswith(".tmp") for n in leftovers)


def test_record_and_load_metrics(tmp_path):
    record_metrics(tmp_path, "04_teacher_training", {"abs_rel": 0.25, "nan": float("nan")})
    record_metrics(tmp_path, "07_evaluation", {"n": 3})
    record_metrics(tmp_path, "04_teacher_training", {"abs_rel": 0.2})  # re-recording replaces the section
    assert load_metrics(tmp_path) == {"04_teacher_training": {"abs_rel": 0.2}, "07_evaluation": {"n": 3}}
