"""Run the course notebooks in order, headless, with papermill.

    python -m dalib.pipeline --profile smoke|cpu|gpu|... --run-dir DIR [-p NAME VALUE ...]
    python -m dalib.pipeline --profile cpu --seeds 0,1,2 --run-dir DIR   # one run per seed + aggregate
    make pipeline          # = --profile cpu --run-dir runs/cpu

A profile is any `configs/PROFILE.yaml`.

Each notebook `notebooks/NN_*.ipynb` is executed with the parameters of `configs/PROFILE.yaml`
(section `parameters` for every notebook that declares the name, section `notebooks.<stem>` for one
notebook), then the `-p` overrides, and always `run_dir`. The run folder receives:

    DIR/notebooks/*.ipynb   executed copies (a failing one keeps its traceback)
    DIR/params.json         resolved parameters, profile, git revision, package versions, machine
    DIR/metrics.json        every section the notebooks recorded (dalib.runfiles.record_metrics),
                            plus `pipeline` (status, seconds per notebook)
    DIR/report.md           tables of those numbers, report snippets and figures

A failing notebook stops the run with its name, cell and error, exit code 1. Re-running the same
command resumes after the last notebook that completed with the same parameters (`--restart` executes all
again, reusing finished checkpoints and datasets in the run folder: a new run folder retrains).

With `--seeds 0,1,2` each seed is such a run in `DIR/seed-<s>/` (parameter `seed` = s, resumable on its
own), and `DIR/metrics.json` / `DIR/report.md` aggregate them over seeds (dalib.seeds: mean ± std, claims
with 95% intervals). A failing seed stops the loop; the aggregate of the seeds before it is marked incomplete.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import papermill
import torch
import yaml
from papermill.exceptions import PapermillExecutionError

from dalib.distributed import cuda_missing_message, device_info
from dalib.runfiles import (REPO_ROOT, atomic_write_bytes, atomic_write_json, environment_info, load_metrics,
                            read_yaml, run_dir_path)
from dalib.seeds import seed_dir, write_aggregate
from dalib.weights import describe_weights, resolve_pretrained_encoder

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
CONFIG_DIR = REPO_ROOT / "configs"
PIPELINE_STATE_FILE = "pipeline_state.json"


class PipelineError(RuntimeError):
    """A notebook failed or the configuration is wrong; the message says which and why."""


# ----------------------------------------------------------------------------- configuration
NOTEBOOK_NAME = re.compile(r"\d\d[a-z]?_\w+\.ipynb")  # NN_name, or NNa_name for a chapter between NN and NN+1


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Course notebooks in pipeline order: `NN_name.ipynb` and `NNa_name.ipynb` (after NN), sorted by number."""
    nbs = [p for p in notebook_dir.glob("[0-9][0-9]*_*.ipynb") if NOTEBOOK_NAME.fullmatch(p.name)]
    return sorted(nbs, key=lambda p: (int(p.name[:2]), p.name))


def available_profiles(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Profile names: the stems of configs/*.yaml, sorted."""
    return sorted(p.stem for p in Path(config_dir).glob("*.yaml"))


def load_profile(profile: str, config_dir: Path = CONFIG_DIR, _chain: tuple = ()) -> dict:
    """configs/<profile>.yaml as {"parameters": {...}, "notebooks": {stem: {...}}, ...}.

    A profile with `extends: BASE` starts from BASE's parameters and notebook sections and changes only the
    values it names (e.g. `cpu-study` = `cpu` plus the ablations)."""
    path = config_dir / f"{profile}.yaml"
    if not path.is_file():
        known = available_profiles(config_dir)
        raise PipelineError(f"profile {profile!r}: no file {path} (profiles here: {', '.join(known) or 'none'})")
    try:
        cfg = read_yaml(path) or {}
    except ValueError as e:  # names the file and where the YAML breaks
        raise PipelineError(str(e)) from None
    if not isinstance(cfg, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level, got {type(cfg).__name__}")
    for key in ("parameters", "notebooks"):
        if not isinstance(cfg.get(key) or {}, dict):
            raise PipelineError(f"{path}: field '{key}' must be a mapping")
    for stem, over in (cfg.get("notebooks") or {}).items():
        if not isinstance(over or {}, dict):
            raise PipelineError(f"{path}: field 'notebooks.{stem}' must be a mapping of parameter names to values")
    base = cfg.pop("extends", None)
    if base is None:
        return cfg
    if base == profile or base in _chain:
        raise PipelineError(f"{path}: 'extends: {base}' makes a cycle ({' -> '.join((*_chain, profile, base))})")
    merged = load_profile(str(base), config_dir, (*_chain, profile))
    merged["parameters"] = {**(merged.get("parameters") or {}), **(cfg.get("parameters") or {})}
    notebooks = dict(merged.get("notebooks") or {})
    for stem, over in (cfg.get("notebooks") or {}).items():
        notebooks[stem] = {**(notebooks.get(stem) or {}), **(over or {})}
    merged["notebooks"] = notebooks
    merged.update({k: v for k, v in cfg.items() if k not in ("parameters", "notebooks")})
    return merged


def declared_parameters(nb_path: Path) -> dict:
    """Names and default values (as source text) of the notebook's `parameters` cell."""

    try:
        return papermill.inspect_notebook(str(nb_path))
    except Exception as e:  # malformed JSON and the like
        raise PipelineError(f"{nb_path.name}: cannot read its parameters cell ({type(e).__name__}: {e})") from e


def _default_value(source: str):
    """The default of a `parameters` cell entry as a Python value, or `_UNKNOWN` for an expression."""
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _UNKNOWN


_UNKNOWN = object()


def _type_matches(value, default) -> bool:
    """Does a profile or -p value fit the kind of the notebook's default? None defaults take anything;
    an int default takes an int, a float default an int or a float, a bool default only a bool."""
    if default is None or default is _UNKNOWN:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default)) or value is None


def check_parameter_types(nb_name: str, declared: dict, params: dict) -> None:
    """Stop before anything runs when a value has another kind than the notebook's default (`-p steps abc`
    where `steps = 20`), naming the parameter, the notebook and both values."""
    for name, value in params.items():
        if name == "run_dir" or name not in declared:
            continue
        default = _default_value(declared[name]["default"])
        if not _type_matches(value, default):
            raise PipelineError(f"{nb_name}: parameter {name!r} = {value!r} ({type(value).__name__}), but the "
                                f"notebook's default is {declared[name]['default']} ({type(default).__name__})")


def resolve_parameters(nb_path: Path, cfg: dict, overrides: dict, run_dir: Path, declared: dict | None = None) -> dict:
    """Profile parameters the notebook declares, then its own section, then -p overrides, then run_dir.

    declared: the notebook's `declared_parameters`, when the caller has read them already.
    """
    declared = declared_parameters(nb_path) if declared is None else declared
    if "run_dir" not in declared:
        raise PipelineError(f"{nb_path.name}: its `parameters` cell must define `run_dir`")
    stem = nb_path.stem
    params = {k: v for k, v in (cfg.get("parameters") or {}).items() if k in declared}
    own = dict((cfg.get("notebooks") or {}).get(stem) or {})
    scratch = own.pop("scratch", None) or {}  # values for a random-init encoder (pretrained_encoder null)
    unknown = sorted((set(own) | set(scratch)) - set(declared))
    if unknown:
        raise PipelineError(f"profile sets {unknown} for {nb_path.name}, which declares only {sorted(declared)}")
    params.update(own)
    params.update({k: v for k, v in overrides.items() if k in declared})
    if params.get("pretrained_encoder", "") is None:  # random init asked for: the from-scratch lr and warmup
        params.update({k: v for k, v in scratch.items() if k not in overrides})
    check_parameter_types(nb_path.name, declared, params)
    params["run_dir"] = str(run_dir)
    return params


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- execution
def _execute(nb_path: Path, out_path: Path, params: dict, run_dir: Path) -> None:
    env_backup = {k: os.environ.get(k) for k in ("DALIB_RUN_DIR", "DALIB_HEADLESS", "MPLBACKEND")}
    os.environ.update(DALIB_RUN_DIR=str(run_dir), DALIB_HEADLESS="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    try:
        papermill.execute_notebook(
            str(nb_path),
            str(out_path),
            parameters=params,
            kernel_name="python3",
            cwd=str(nb_path.parent),
            progress_bar=False,
            log_output=False,
        )
    except PapermillExecutionError as e:
        raise PipelineError(
            f"notebook {nb_path.name} failed in cell {e.cell_index} (execution count {e.exec_count}): "
            f"{e.ename}: {e.evalue}\n  executed copy with the traceback: {out_path}"
        ) from None
    except Exception as e:
        raise PipelineError(f"notebook {nb_path.name} could not be executed: {type(e).__name__}: {e}") from e
    finally:
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_pipeline(
    profile: str,
    run_dir: str | os.PathLike,
    overrides: dict | None = None,
    *,
    restart: bool = False,
    only: list[str] | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    config_dir: Path = CONFIG_DIR,
    log=print,
) -> dict:
    """Execute the notebooks; returns the merged metrics dict. Raises PipelineError on failure."""
    overrides = dict(overrides or {})
    cfg = load_profile(profile, config_dir)
    run_dir = run_dir_path(run_dir)
    notebooks, resolved = _resolve_run(cfg, run_dir, overrides, only, notebook_dir)
    _check_devices(resolved, profile)
    encoders = _resolve_encoders(resolved, log)  # downloads DINOv2 when asked for; stops when 'required' cannot
    (run_dir / "notebooks").mkdir(exist_ok=True)
    env = environment_info()
    atomic_write_json(
        run_dir / "params.json",
        {"profile": profile, "argv": sys.argv, "overrides": overrides, "notebooks": resolved, "environment": env,
         "devices": device_info(), "pretrained_encoders": encoders},
    )
    t_start = time.perf_counter()
    timings, failure = _execute_in_order(notebooks, resolved, profile, run_dir, restart, log)
    metrics = load_metrics(run_dir)
    metrics["pipeline"] = {
        "profile": profile,
        "status": "failed" if failure else "ok",
        "failure": failure,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "finished": _now(),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_run_report(run_dir, metrics, env)
    if failure:
        raise PipelineError(failure)
    return metrics


def _resolve_run(cfg: dict, run_dir: Path, overrides: dict, only, notebook_dir: Path) -> tuple[list[Path], dict]:
    """The notebooks to run (all, or those named by `only`) and each one's parameters resolved from the profile
    `cfg` and the overrides; a -p name that no notebook declares is a PipelineError."""
    notebooks = list_notebooks(notebook_dir)
    if only:
        notebooks = [p for p in notebooks if any(p.stem.startswith(o) or p.name == o for o in only)]
    if not notebooks:
        raise PipelineError(f"no notebooks to run in {notebook_dir} (selection: {only})")
    declared = {p.stem: declared_parameters(p) for p in notebooks}
    resolved = {p.stem: resolve_parameters(p, cfg, overrides, run_dir, declared[p.stem]) for p in notebooks}
    stray = sorted(set(overrides) - set().union(*declared.values()))
    if stray:
        raise PipelineError(f"-p {stray}: no notebook declares such a parameter")
    return notebooks, resolved


def _check_devices(resolved: dict, profile: str) -> None:
    """A notebook whose `device` is CUDA on a machine without it stops the run before anything runs, saying why
    and what to install (or `-p device cpu`)."""
    if torch.cuda.is_available():
        return
    for stem, params in resolved.items():
        device = str(params.get("device") or "auto")
        if device.startswith("cuda"):
            raise PipelineError(cuda_missing_message(f"profile {profile!r} ({stem}: device={device!r})"))


def _resolve_encoders(resolved: dict, log) -> dict:
    """Each notebook's `pretrained_encoder` resolved before any notebook runs (`dalib.weights`: the local caches,
    else a download): {stem: {"encoder", "choice", "path", "sha256", "source"} or {..., "random_init": True}}. A
    'required' encoder that cannot be had is a PipelineError naming the command that fetches it."""
    out = {}
    for stem, params in resolved.items():
        if "pretrained_encoder" not in params or "encoder" not in params:
            continue
        choice, encoder = params["pretrained_encoder"], params["encoder"]
        try:
            path = resolve_pretrained_encoder(choice, encoder)
        except FileNotFoundError as e:
            raise PipelineError(f"{stem}: {e}") from None
        if path and not Path(path).is_file():
            raise PipelineError(f"{stem}: pretrained_encoder={path!r}: no such weights file")
        entry = {"encoder": encoder, "choice": choice}
        entry.update(describe_weights(path) if path else {"random_init": True})
        if path:
            log(f"pipeline: {stem}: {encoder} encoder from {entry['source']} (sha256 {entry['sha256']})")
        out[stem] = entry
    return out


def _execute_in_order(notebooks: list[Path], resolved: dict, profile: str, run_dir: Path, restart: bool,
                      log) -> tuple[dict[str, float], str | None]:
    """Run the notebooks in order, skipping the leading ones already complete with the same parameters and source
    (unless `restart`); stops at the first failure. Returns (seconds per notebook, the failure or None)."""
    state_path = run_dir / PIPELINE_STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() and not restart else {}
    done = state.get("completed", {}) if state.get("profile") == profile else {}
    state = {"profile": profile, "completed": {}}
    timings: dict[str, float] = {}
    failure, resuming = None, True
    for nb in notebooks:
        params = resolved[nb.stem]
        key = _hash({"params": params, "source": hashlib.sha256(nb.read_bytes()).hexdigest()})
        out_path = run_dir / "notebooks" / nb.name
        prev = done.get(nb.stem)
        if resuming and prev and prev.get("key") == key and out_path.is_file():
            log(f"pipeline: {nb.name} already complete in {run_dir} ({prev['seconds']:.1f} s), skipped")
            state["completed"][nb.stem] = prev
            timings[nb.stem] = prev["seconds"]
            continue
        resuming = False  # everything after a re-executed notebook runs again: it may read its artifacts
        log(f"pipeline: running {nb.name} ({', '.join(f'{k}={v}' for k, v in params.items() if k != 'run_dir')})")
        t0 = time.perf_counter()
        try:
            _execute(nb, out_path, params, run_dir)
        except PipelineError as e:
            failure = str(e)
            timings[nb.stem] = time.perf_counter() - t0
            break
        timings[nb.stem] = round(time.perf_counter() - t0, 2)
        state["completed"][nb.stem] = {"key": key, "seconds": timings[nb.stem], "finished": _now()}
        atomic_write_json(state_path, state)
        log(f"pipeline: {nb.name} done in {timings[nb.stem]:.1f} s")
    atomic_write_json(state_path, state)
    return timings, failure


def run_seeds(
    profile: str,
    run_dir: str | os.PathLike,
    seeds: list[int],
    overrides: dict | None = None,
    *,
    log=print,
    **pipeline_kwargs,
) -> dict:
    """One `run_pipeline(profile, DIR/seed-<s>, overrides | {"seed": s})` per seed, then the aggregate
    DIR/metrics.json and DIR/report.md (dalib.seeds.write_aggregate); returns the aggregate.

    pipeline_kwargs: restart, only, notebook_dir, config_dir, as for `run_pipeline`. A failing seed stops
    the loop: the aggregate of the seeds before it is written (status "incomplete"), then PipelineError.
    """
    overrides = dict(overrides or {})
    if "seed" in overrides:
        raise PipelineError(f"seeds {list(seeds)} and the override seed={overrides['seed']!r} both set the seed; use one")
    if not seeds or len(set(seeds)) != len(seeds):
        raise PipelineError(f"seeds must be distinct and at least one, got {list(seeds)}")
    run_dir = run_dir_path(run_dir)
    completed: list[int] = []
    for seed in seeds:
        log(f"pipeline: seed {seed} -> {seed_dir(run_dir, seed)}")
        try:
            run_pipeline(profile, seed_dir(run_dir, seed), overrides | {"seed": seed}, log=log, **pipeline_kwargs)
        except PipelineError as e:
            write_aggregate(run_dir, completed, profile=profile, failure=str(e), failed_seed=seed)
            raise PipelineError(f"seed {seed}: {e}\n  aggregate of seeds {completed} (incomplete): {run_dir / 'report.md'}") from None
        completed.append(seed)
    return write_aggregate(run_dir, completed, profile=profile)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ----------------------------------------------------------------------------- report
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, name))
        else:
            out[name] = v
    return out


def write_run_report(run_dir: Path, metrics: dict, env: dict | None = None) -> Path:
    """DIR/report.md: run summary, one table per recorded section, report snippets, figures."""
    env = env or environment_info()
    p = metrics.get("pipeline", {})
    lines = [
        f"# depth-anything-course run: profile `{p.get('profile')}`",
        "",
        f"- status: **{p.get('status')}**, finished {p.get('finished')}, total {_fmt(p.get('total_seconds'))} s",
        f"- machine: {env.get('platform')}, {env.get('cpu_count')} CPU cores, GPU: {env.get('cuda') or 'none'}",
        f"- git revision: `{env.get('git_revision')}`; packages: "
        + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
        "",
    ]
    if p.get("failure"):
        lines += ["## Failure", "", "```", p["failure"], "```", ""]
    lines += ["## Notebooks", "", "| notebook | seconds |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in p.get("seconds", {}).items()]
    lines.append("")
    snippets = sorted((run_dir / "report").glob("*.md")) if (run_dir / "report").is_dir() else []
    for snip in snippets:
        lines += [snip.read_text().rstrip(), ""]
    for section, values in metrics.items():
        if section == "pipeline" or not isinstance(values, dict):
            continue
        flat = _flatten(values)
        lines += [f"## {section}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in flat.items()]
        lines.append("")
    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    if figs:
        lines += ["## Figures", ""]
        lines += [f"![{f.stem}](figures/{f.name})" for f in figs]
        lines.append("")
    return atomic_write_bytes(run_dir / "report.md", "\n".join(lines).encode())


# ----------------------------------------------------------------------------- command line
def _parse_value(text: str):
    """-p values are YAML scalars: 3 -> int, 0.5 -> float, true -> bool, vits -> str."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]: distinct non-negative integers separated by commas."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected non-negative integers separated by commas, like 0,1,2; got {text!r}")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dalib.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu",
                    help=f"configs/<profile>.yaml (default cpu; here: {', '.join(available_profiles())})")
    ap.add_argument("--run-dir", default=None, help="run folder (default runs/<profile>, or runs/<profile>-seeds with --seeds)")
    ap.add_argument("--seeds", type=parse_seeds, default=None, metavar="S,S,...",
                    help="one run per seed in RUN_DIR/seed-<s> (parameter seed = s), then an aggregate report")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a notebook parameter (YAML value), e.g. -p seed 1")
    ap.add_argument("--restart", action="store_true", help="execute every notebook again instead of resuming; finished "
                    "checkpoints and datasets in the run folder are reused (use a new --run-dir to retrain)")
    ap.add_argument("--only", nargs="+", default=None, help="run only notebooks whose name starts with these, e.g. 01 02")
    ap.add_argument("--notebook-dir", type=Path, default=NOTEBOOK_DIR, help="where the NN_*.ipynb live (default notebooks/)")
    ap.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="where PROFILE.yaml lives (default configs/)")
    args = ap.parse_args(argv)
    overrides = {k: _parse_value(v) for k, v in args.param}
    if args.seeds is not None and "seed" in overrides:
        ap.error(f"--seeds {','.join(map(str, args.seeds))} and -p seed {overrides['seed']} both set the seed; use one of them")
    try:
        load_profile(args.profile, args.config_dir)
    except PipelineError as e:  # a file's fault, not the command line's: one line, no usage
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    default_dir = args.profile + ("-seeds" if args.seeds is not None else "")
    run_dir = args.run_dir or str(REPO_ROOT / "runs" / default_dir)
    kwargs = dict(restart=args.restart, only=args.only, notebook_dir=args.notebook_dir, config_dir=args.config_dir)
    try:
        if args.seeds is not None:
            agg = run_seeds(args.profile, run_dir, args.seeds, overrides, **kwargs)
            seconds = agg["total_seconds"]
        else:
            seconds = run_pipeline(args.profile, run_dir, overrides, **kwargs)["pipeline"]["total_seconds"]
    except PipelineError as e:
        print(f"pipeline: FAILED: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a run folder that cannot be created or written (its message names the path)
        print(f"pipeline: FAILED: cannot write the run folder {run_dir}: {e}", file=sys.stderr)
        return 1
    print(f"pipeline: done in {seconds:.1f} s; report: {Path(run_dir) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
