"""The run folder: where notebooks leave artifacts for each other and for the report.

Notebooks never share hidden state; they pass checkpoints, datasets and numbers through `run_dir`:

    run_dir/metrics/<section>.json   numbers a notebook reports (merged into run_dir/metrics.json)
    run_dir/figures/<name>.png       figures the report embeds
    run_dir/{teacher,student,data}/  checkpoints and datasets (written by the later chapters)

Writes are atomic (temp file, fsync, rename), so an interrupted run never leaves half a file.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_dir_path(run_dir: str | os.PathLike | None = None) -> Path:
    """The run folder as an absolute Path, created if missing.

    None -> $DALIB_RUN_DIR, else `<repo>/runs/notebooks` (what a student stepping through JupyterLab gets).
    """
    if run_dir is None or str(run_dir) == "":
        run_dir = os.environ.get("DALIB_RUN_DIR") or REPO_ROOT / "runs" / "notebooks"
    p = Path(run_dir).expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()  # numpy / torch scalars
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN/inf
    return x


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def record_metrics(run_dir, section: str, metrics: dict) -> Path:
    """Save a notebook's numbers as run_dir/metrics/<section>.json; the pipeline merges every section
    into run_dir/metrics.json under the key `section`. Re-recording a section replaces it."""
    if not section or "/" in section:
        raise ValueError(f"section must be a plain name, got {section!r}")
    return atomic_write_json(run_dir_path(run_dir) / "metrics" / f"{section}.json", metrics)


def save_figure(run_dir, fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as run_dir/figures/<name>.png (atomically) for the report."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(run_dir_path(run_dir) / "figures" / f"{name}.png", buf.getvalue())


def load_metrics(run_dir) -> dict:
    """All recorded sections of a run folder, {section: metrics}."""
    out = {}
    for f in sorted((run_dir_path(run_dir) / "metrics").glob("*.json")):
        out[f.stem] = json.loads(f.read_text())
    return out


def record_report_section(run_dir, name: str, markdown: str) -> Path:
    """A markdown snippet (e.g. a results table) that the pipeline's report.md includes verbatim,
    ordered by name: run_dir/report/<name>.md."""
    if not name or "/" in name:
        raise ValueError(f"name must be a plain name, got {name!r}")
    return atomic_write_bytes(run_dir_path(run_dir) / "report" / f"{name}.md", markdown.encode())


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict:
    """Machine, Python, key package versions and git revision, for params.json, a training run's
    config.json and the report."""
    from importlib import metadata

    pkgs = {}
    for name in ("torch", "torchvision", "timm", "datasets", "transformers", "papermill", "numpy"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": pkgs,
        "git_revision": _git_revision(),
    }
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        info["cuda"] = None
    return info
