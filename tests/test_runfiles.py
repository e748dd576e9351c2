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
from dalib.train.checkpoints import training_summary


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


def test_require_section_returns_the_record_or_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run notebook 04_teacher_training\.ipynb first.*the teachers"):
        runfiles.require_section(tmp_path, "04_teacher_training", "the teachers")
    record_metrics(tmp_path, "04_teacher_training", {"v2_teacher": {"checkpoint_rel": "t/ck"}})
    assert runfiles.require_section(tmp_path, "04_teacher_training", "the teachers") == {
        "v2_teacher": {"checkpoint_rel": "t/ck"}}


def test_require_path_checks_the_recorded_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"v2_teacher checkpoint is not recorded: run notebook 04_x"):
        runfiles.require_path(tmp_path, "04_x", None, "v2_teacher checkpoint")
    with pytest.raises(FileNotFoundError, match=r"is gone .*t/ck"):
        runfiles.require_path(tmp_path, "04_x", "t/ck", "v2_teacher checkpoint")
    (tmp_path / "t" / "ck").mkdir(parents=True)
    assert runfiles.require_path(tmp_path, "04_x", "t/ck", "v2_teacher checkpoint") == tmp_path.resolve() / "t" / "ck"
    assert runfiles.run_relative(tmp_path, tmp_path / "t" / "ck") == os.path.join("t", "ck")
    with pytest.raises(ValueError):
        runfiles.run_relative(tmp_path / "t", tmp_path / "elsewhere")


def test_training_summary_reads_the_run_log(tmp_path):
    from types import SimpleNamespace

    out = tmp_path / "teacher"
    out.mkdir()
    rows = [{"step": 1, "total": 3.0, "elapsed_s": 1.5}, {"step": 2, "total": 2.5, "feat": 0.25, "elapsed_s": 4.0}]
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = SimpleNamespace(out_dir=str(out), steps=2, batch_size=6, datasets=[[0] * 32, "synth-indoor"])
    s = training_summary(tmp_path, cfg, {"checkpoint": str(out / "checkpoints" / "step-00000002")})
    assert s["checkpoint_rel"] == os.path.join("teacher", "checkpoints", "step-00000002")
    assert (s["steps"], s["batch_size"], s["images_seen"]) == (2, 6, 12)
    assert s["train_images"] == [32, None] and (s["final_loss"], s["final_feat"]) == (2.5, 0.25)
    assert s["train_seconds"] == pytest.approx(4.0)


def test_record_chapter_writes_metrics_and_report(tmp_path):
    runfiles.record_chapter(tmp_path, "06_x", {"a": 1}, title="Students", table="| m |\n|---|",
                            figures=["06_loss"])
    assert load_metrics(tmp_path) == {"06_x": {"a": 1}}
    assert (tmp_path / "report" / "06_x.md").read_text() == (
        "### Students\n\n| m |\n|---|\n\n![06_loss](figures/06_loss.png)\n")


# ----------------------------------------------------------------------------- file modes in shared run folders
def test_checkpoint_files_get_the_mode_open_gives_under_the_umask(tmp_path):
    """Temp files (mkstemp) and safetensors are created 0o600: files of a checkpoint would then differ in who may
    read them. Every file dalib writes gets 0o666 & ~umask, as `open(path, "w")` gives."""
    import stat

    import torch

    from dalib.model import DepthAnything
    from dalib.train.checkpoints import save_checkpoint

    model = DepthAnything("vitt")
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    old = os.umask(0o022)
    try:
        ckpt = save_checkpoint(tmp_path, 1, model, opt, sched)
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "group-only.bin", b"x")
    finally:
        os.umask(old)
    files = [ckpt / "model.safetensors", ckpt / "config.json", ckpt / "train_state.pt",
             tmp_path / "checkpoints" / "latest.json"]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o644" for f in files}
    assert stat.S_IMODE((tmp_path / "group-only.bin").stat().st_mode) == 0o640
