"""The run folder: where notebooks leave artifacts for each other and for the report.

Notebooks never share hidden state; they pass checkpoints, datasets and numbers through `run_dir`:

    run_dir/metrics/<section>.json   numbers a notebook reports (merged into run_dir/metrics.json)
    run_dir/figures/<name>.png       figures the report embeds
    run_dir/{teacher,student,data}/  checkpoints and datasets (written by the later chapters)

Writes are atomic (temp file, fsync, rename), so an interrupted run never leaves half a file.
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import torch
import yaml

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


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it, a race with other threads' files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_default_mode(target) -> None:
    """Give a file (path or open descriptor) the mode `open(path, "w")` would: 0o666 & ~umask. Temp files from
    `tempfile.mkstemp` and safetensors are 0o600, which other users of a shared run folder cannot read."""
    mode = 0o666 & ~_umask()
    if isinstance(target, int):
        os.fchmod(target, mode)
    else:
        os.chmod(target, mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder + fsync + rename (mode as `open` gives)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # named by the file being written, not by a random temp name
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        give_default_mode(fd)
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


def read_json_object(path: str | os.PathLike, advice: str = "") -> dict:
    """The JSON object (mapping) in file `path`; ValueError naming the file, then `advice`, when the file holds
    anything else (not JSON, a list, ...)."""
    try:
        obj = json.loads(Path(path).read_text())
        problem = None if isinstance(obj, dict) else f"holds a JSON {type(obj).__name__}, expected an object"
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"is not JSON ({e})"
    if problem is not None:
        raise ValueError(f"{path}: {problem}" + (f"; {advice}" if advice else ""))
    return obj


def read_yaml(path: str | os.PathLike):
    """The YAML document in file `path`; ValueError naming the file and the line and column of a syntax error
    (yaml's own message spans several lines and names neither)."""

    try:
        return yaml.safe_load(Path(path).read_text())
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a YAML text file ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e)
        if getattr(e, "context", None):
            what += f" ({e.context})"
        raise ValueError(f"{path}: not valid YAML{where}: {' '.join(what.split())}") from None


def record_metrics(run_dir, section: str, metrics: dict) -> Path:
    """Save a notebook's numbers as run_dir/metrics/<section>.json; the pipeline merges every section
    into run_dir/metrics.json under the key `section`. Re-recording a section replaces it."""
    if not section or "/" in section:
        raise ValueError(f"section must be a plain name, got {section!r}")
    return atomic_write_json(run_dir_path(run_dir) / "metrics" / f"{section}.json", metrics)


def save_figure(run_dir, fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as run_dir/figures/<name>.png (atomically) for the report."""

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
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        info["cuda"] = None
    return info


# ----------------------------------------------------------------------------- what chapters hand on
def run_relative(run_dir, path) -> str:
    """`path` (a checkpoint, a label folder) relative to the run folder, as chapters record it, so that a
    run folder can be moved or copied and still be read by the next chapter."""
    return str(Path(path).resolve().relative_to(run_dir_path(run_dir)))


def require_section(run_dir, notebook: str, what: str) -> dict:
    """What notebook `notebook` recorded in run_dir (run_dir/metrics/<notebook>.json), for a chapter that
    builds on it.

    When it is missing, a FileNotFoundError names the notebook that makes it (`what` says what it makes)
    and the run folder to run it with.
    """
    run_dir = run_dir_path(run_dir)
    path = run_dir / "metrics" / f"{notebook}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run notebook {notebook}.ipynb first with run_dir={str(run_dir)!r} (it makes "
            f"{what}), or `python -m dalib.pipeline --run-dir {run_dir}`")
    return json.loads(path.read_text())


def require_path(run_dir, notebook: str, rel: str | None, what: str) -> Path:
    """run_dir / rel, a file or folder that notebook `notebook` wrote and recorded (e.g. a checkpoint).

    When nothing was recorded (rel None) or the path is gone, a FileNotFoundError names `what` and the
    notebook to run again.
    """
    run_dir = run_dir_path(run_dir)
    if rel is None or not (run_dir / rel).exists():
        where = "is not recorded" if rel is None else f"is gone ({run_dir / rel})"
        raise FileNotFoundError(
            f"{what} {where}: run notebook {notebook}.ipynb again with run_dir={str(run_dir)!r}")
    return run_dir / rel


def record_chapter(run_dir, section: str, metrics: dict, *, title: str, text: str = "", table: str = "",
                   figures=()) -> Path:
    """A chapter's closing bookkeeping in one call: its numbers (`record_metrics`) and its part of the
    report (`record_report_section`): a `### title` heading, then `text`, a Markdown `table` and the named
    figures of run_dir/figures. Returns the metrics file."""
    parts = [f"### {title}", text, table, "\n".join(f"![{f}](figures/{f}.png)" for f in figures)]
    record_report_section(run_dir, section, "\n\n".join(p for p in parts if p) + "\n")
    return record_metrics(run_dir, section, metrics)
