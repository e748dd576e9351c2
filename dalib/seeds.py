"""Statistics over seeded runs: one aggregate `metrics.json` and `report.md` for `DIR/seed-*/` run folders.

    python -m dalib.pipeline --profile cpu --seeds 0,1,2 --run-dir runs/cpu-seeds

runs one ordinary pipeline per seed into `runs/cpu-seeds/seed-<s>/` and then calls `write_aggregate`,
which leaves next to them

    DIR/metrics.json   every numeric leaf of the per-seed metrics as {"mean", "std", "n", "values"},
                       non-numeric leaves identical in every seed, `seeds`, `status`, `seconds`, `claims`
    DIR/report.md      results table (mean ± std over seeds), teachers' table, claims with 95% intervals

Claims (notebook 07, `07_evaluation.claims`) are paired over seeds: d_s = b_s - a_s for "model `lower` has
a lower value than model `than`" (for a claim against the baseline, d_s = baseline_s - model_s per model),
so d > 0 favours the claim. Its 95% Student-t interval is

    mean(d) ± t_{0.975, n-1} · s / sqrt(n),     s = sample std of d (ddof=1),

and a claim is held when the interval's lower end is above 0; with fewer than 2 seeds it is undecided.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

from scipy.stats import t as student_t

from dalib.runfiles import atomic_write_bytes, atomic_write_json

CONFIDENCE = 0.95  # two-sided level of the claims' intervals
SEED_DIR = "seed-{seed}"  # folder of one seed's run inside the aggregate run folder

# 07_evaluation.table columns in the per-seed report's order: (header, dotted path under table.<model>)
RESULT_COLUMNS = [
    ("clean AbsRel", "clean.abs_rel"), ("clean δ1", "clean.delta1"),
    ("photo AbsRel", "photo.abs_rel"), ("photo δ1", "photo.delta1"),
    ("Middlebury AbsRel", "middlebury.abs_rel"), ("Middlebury δ1", "middlebury.delta1"),
    ("thin AbsRel", "clean.thin_abs_rel"), ("glass/mirror AbsRel", "clean.glass_mirror_abs_rel"),
    ("edge F1", "clean.edge_f1"), ("ordinal acc.", "photo.ordinal_accuracy"),
]
# 04_teacher_training.<teacher> columns: synthetic test (all, thin, glass/mirror) and photo test
TEACHER_COLUMNS = [
    ("AbsRel", "all.abs_rel"), ("δ1", "all.delta1"), ("thin AbsRel", "thin.abs_rel"), ("thin δ1", "thin.delta1"),
    ("glass/mirror AbsRel", "glass_mirror.abs_rel"), ("glass/mirror δ1", "glass_mirror.delta1"),
    ("photo AbsRel", "photo.abs_rel"), ("photo δ1", "photo.delta1"),
]


def seed_dir(run_dir: Path, seed: int) -> Path:
    """DIR/seed-<seed>: where one seed's ordinary pipeline run lives."""
    return Path(run_dir) / SEED_DIR.format(seed=seed)


# ----------------------------------------------------------------------------- trees of metrics
def is_number(x) -> bool:
    """int or float, but not bool (True is an int in Python)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, object]:
    """Nested dicts -> {(key, subkey, ...): leaf}; lists and scalars are leaves, empty dicts vanish."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def unflatten(flat: dict[tuple, object]) -> dict:
    """Inverse of `flatten`: {(a, b): v} -> {a: {b: v}}. Where a path is a leaf in one place and a
    branch in another, the branch wins."""
    out: dict = {}
    for path, value in sorted(flat.items(), key=lambda kv: -len(kv[0])):
        node = out
        for k in path[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        if not isinstance(node.get(path[-1]), dict):
            node[path[-1]] = value
    return _ordered_like(out, flat)


def _ordered_like(tree: dict, flat: dict) -> dict:
    """Re-insert keys in the order of the flat paths (unflatten builds longest paths first)."""
    order: dict = {}
    for path in flat:
        for i in range(1, len(path) + 1):
            order.setdefault(path[:i], len(order))

    def sort(node, prefix):
        if not isinstance(node, dict):
            return node
        keys = sorted(node, key=lambda k: order.get(prefix + (k,), len(order)))
        return {k: sort(node[k], prefix + (k,)) for k in keys}

    return sort(tree, ())


# ----------------------------------------------------------------------------- statistics
def summarize(values: list) -> dict:
    """Per-seed values (None where a seed lacks it) -> {"mean", "std" (ddof=1; None for n < 2), "n", "values"}."""
    xs = [float(v) for v in values if is_number(v) and math.isfinite(v)]
    n = len(xs)
    mean = sum(xs) / n if n else None
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n >= 2 else None
    return {"mean": mean, "std": std, "n": n, "values": list(values)}


def t_interval(values: list, confidence: float = CONFIDENCE) -> dict:
    """Two-sided Student-t interval of the mean: mean ± t_{(1+c)/2, n-1} · s / sqrt(n).

    values: per-seed numbers (None entries are left out). Returns `summarize(values)` plus "low", "high"
    and "t" (the quantile); all three None when n < 2, where the interval is undefined.
    """
    out = summarize(values)
    out.update(low=None, high=None, t=None)
    n = out["n"]
    if n >= 2:
        q = float(student_t.ppf((1 + confidence) / 2, n - 1))
        half = q * out["std"] / math.sqrt(n)
        out.update(low=out["mean"] - half, high=out["mean"] + half, t=q)
    return out


def held_by_interval(stats: dict) -> bool | None:
    """Held when the interval lies above zero (low > 0); None when undefined (fewer than 2 seeds)."""
    return None if stats["low"] is None else bool(stats["low"] > 0)


def aggregate_metrics(per_seed: list[dict]) -> dict:
    """Per-seed metrics trees -> one tree: numeric leaves become `summarize` dicts (values in seed order,
    None where a seed lacks the leaf); other leaves are kept only if every seed has the same value."""
    flats = [flatten(m) for m in per_seed]
    paths = list(dict.fromkeys(p for f in flats for p in f))
    out = {}
    for path in paths:
        values = [f.get(path) for f in flats]
        present = [v for v in values if v is not None]
        if present and all(is_number(v) for v in present):
            out[path] = summarize(values)
        elif all(path in f for f in flats) and all(v == values[0] for v in values):
            out[path] = values[0]
    return unflatten(out)


# ----------------------------------------------------------------------------- claims
def claim_shape(claim) -> str | None:
    """"pairwise" ({"a", "b", "lower", "than"}), "baseline" ({"baseline", "models"}) or None (not a claim)."""
    if not isinstance(claim, dict):
        return None
    if "baseline" in claim and isinstance(claim.get("models"), dict):
        return "baseline"
    if "a" in claim and "b" in claim:
        return "pairwise"
    return None


def _common(claims: list[dict], key: str):
    """The value of `key` if every seed that has the claim agrees on it, else None."""
    values = [c.get(key) for c in claims if c is not None]
    return values[0] if values and all(v == values[0] for v in values) else None


def _verdict(held: bool | None, n: int) -> str:
    if held is None:
        return "not measured" if n == 0 else "not enough seeds"
    return "held" if held else "not held"


def aggregate_pairwise_claim(claims: list[dict | None]) -> dict:
    """One pairwise claim over seeds (None where a seed lacks it): d_s = b_s - a_s, its `t_interval`, held."""
    diffs = [c["b"] - c["a"] if c and is_number(c.get("a")) and is_number(c.get("b")) else None for c in claims]
    stats = t_interval(diffs)
    held = held_by_interval(stats)
    return {"shape": "pairwise", "metric": _common(claims, "metric"), "lower": _common(claims, "lower"),
            "than": _common(claims, "than"), "differences": diffs, **_stats_fields(stats),
            "held": held, "verdict": _verdict(held, stats["n"])}


def aggregate_baseline_claim(claims: list[dict | None]) -> dict:
    """"Every model beats the baseline" over seeds: per model d_s = baseline_s - model_s and its interval.

    Held only when every model's interval lies above zero; `not_beating` lists the models whose interval
    does not (or is undefined); None when no model has 2 or more seeds.
    """
    names = list(dict.fromkeys(m for c in claims if c for m in c["models"]))
    models = {}
    for name in names:
        diffs = []
        for c in claims:
            base, value = (c.get("baseline"), c["models"].get(name)) if c else (None, None)
            diffs.append(base - value if is_number(base) and is_number(value) else None)
        stats = t_interval(diffs)
        held = held_by_interval(stats)
        models[name] = {"differences": diffs, **_stats_fields(stats), "held": held, "verdict": _verdict(held, stats["n"])}
    decided = [m["held"] for m in models.values() if m["held"] is not None]
    held = None if not decided else all(m["held"] is True for m in models.values())
    n = max((m["n"] for m in models.values()), default=0)
    return {"shape": "baseline", "metric": _common(claims, "metric"), "models": models,
            "not_beating": [k for k, m in models.items() if m["held"] is not True],
            "held": held, "verdict": _verdict(held, n)}


def _stats_fields(stats: dict) -> dict:
    return {"mean": stats["mean"], "std": stats["std"], "n": stats["n"], "ci95": [stats["low"], stats["high"]],
            "t": stats["t"]}


def aggregate_claims(per_seed_claims: list[dict]) -> dict:
    """{claim name: per-seed claim} per seed -> {claim name: aggregate}, recognised by shape, not name."""
    names = list(dict.fromkeys(k for claims in per_seed_claims for k in claims))
    out = {}
    for name in names:
        claims = [c.get(name) for c in per_seed_claims]
        shapes = {claim_shape(c) for c in claims if c is not None}
        if shapes == {"pairwise"}:
            out[name] = aggregate_pairwise_claim(claims)
        elif shapes == {"baseline"}:
            out[name] = aggregate_baseline_claim(claims)
    return out


# ----------------------------------------------------------------------------- the aggregate run folder
def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def seed_seconds(metrics: dict) -> float | None:
    """Notebook seconds of one seed's run, summed (a resumed run counts the times recorded earlier)."""
    secs = (metrics.get("pipeline") or {}).get("seconds") or {}
    return round(sum(secs.values()), 2) if secs else None


def aggregate_runs(run_dir: Path, seeds: list[int], *, profile: str | None = None, failure: str | None = None,
                   failed_seed: int | None = None) -> dict:
    """Aggregate of the completed runs DIR/seed-<s>/metrics.json for s in `seeds` (see the module docstring).

    failure / failed_seed: a seed that stopped the run; it is not in `seeds`, and `status` becomes "incomplete".
    """
    seeds = list(seeds)
    per_seed = [_read_json(seed_dir(run_dir, s) / "metrics.json") for s in seeds]
    agg = aggregate_metrics(per_seed)
    claims = [((m.get("07_evaluation") or {}).get("claims") or {}) for m in per_seed]
    return {
        **agg,
        "profile": profile,
        "seeds": seeds,
        "status": "incomplete" if failure else "complete",
        "failure": None if failure is None else {"seed": failed_seed, "message": failure},
        "seconds": {SEED_DIR.format(seed=s): seed_seconds(m) for s, m in zip(seeds, per_seed)},
        "total_seconds": round(sum(seed_seconds(m) or 0.0 for m in per_seed), 2),
        "claims": aggregate_claims(claims),
        "finished": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def write_aggregate(run_dir: Path, seeds: list[int], *, profile: str | None = None,
                    failure: str | None = None, failed_seed: int | None = None) -> dict:
    """`aggregate_runs`, then DIR/metrics.json and DIR/report.md; returns the aggregate."""
    run_dir = Path(run_dir)
    agg = aggregate_runs(run_dir, seeds, profile=profile, failure=failure, failed_seed=failed_seed)
    atomic_write_json(run_dir / "metrics.json", agg)
    envs = {s: _read_json(seed_dir(run_dir, s) / "params.json").get("environment") or {} for s in seeds}
    write_seeds_report(run_dir, agg, envs)
    return agg


# ----------------------------------------------------------------------------- report.md
def _num(x, ref=None) -> str:
    """Number with precision by magnitude of `ref` (default x): >= 100 -> 0 decimals, >= 10 -> 1, else 3."""
    if not is_number(x):
        return "-"
    r = abs(ref if is_number(ref) else x)
    return f"{x:.0f}" if r >= 100 else f"{x:.1f}" if r >= 10 else f"{x:.3f}"


def mean_pm_std(summary, n_seeds: int | None = None) -> str:
    """A `summarize` dict as 'mean ± std' ('mean' for one seed, '-' if absent; '(n=k)' if k < n_seeds)."""
    if not isinstance(summary, dict) or summary.get("mean") is None:
        return "-"
    text = _num(summary["mean"])
    if summary.get("std") is not None:
        text += f" ± {_num(summary['std'], summary['mean'])}"
    if n_seeds is not None and summary["n"] < n_seeds:
        text += f" (n={summary['n']})"
    return text


def _is_summary(x) -> bool:
    return isinstance(x, dict) and {"mean", "std", "n", "values"} <= set(x)


def _summary_leaves(tree: dict, prefix: str = "") -> dict[str, dict]:
    """{dotted path: summary} of every `summarize` dict under `tree`."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if _is_summary(v):
            out[path] = v
        elif isinstance(v, dict):
            out.update(_summary_leaves(v, path))
    return out


def summary_table(rows: dict[str, dict], columns: list[tuple[str, str]], n_seeds: int) -> list[str]:
    """Markdown lines: one row per model, `columns` (header, dotted path) first, then every other numeric
    leaf found under the rows (header = its path); cells 'mean ± std'."""
    leaves = {name: _summary_leaves(row) for name, row in rows.items() if isinstance(row, dict)}
    known = {path for _, path in columns}
    extra = list(dict.fromkeys(p for lv in leaves.values() for p in lv if p not in known))
    cols = [(h, p) for h, p in columns if any(p in lv for lv in leaves.values())] + [(p, p) for p in extra]
    lines = ["| model | " + " | ".join(h for h, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for name, lv in leaves.items():
        lines.append(f"| {name} | " + " | ".join(mean_pm_std(lv.get(p), n_seeds) for _, p in cols) + " |")
    return lines


def _interval(c: dict) -> str:
    low, high = c["ci95"]
    return "-" if low is None else f"[{low:+.4f}, {high:+.4f}]"


def _diff(c: dict) -> str:
    return "-" if c["mean"] is None else f"{c['mean']:+.4f}"


def claims_table(claims: dict) -> list[str]:
    """Markdown lines: claim, metric, mean difference, 95% interval, n, verdict (one row per model of a
    baseline claim, then the claim's own verdict)."""
    lines = ["| claim | metric | mean difference | 95% interval | n | verdict |", "|---|---|---|---|---|---|"]
    for name, c in claims.items():
        if c["shape"] == "pairwise":
            label = f"{name} ({c['lower']} < {c['than']})" if c["lower"] and c["than"] else name
            lines.append(f"| {label} | {c['metric']} | {_diff(c)} | {_interval(c)} | {c['n']} | {c['verdict']} |")
            continue
        for model, m in c["models"].items():
            lines.append(f"| {name}: {model} | {c['metric']} | {_diff(m)} | {_interval(m)} | {m['n']} | {m['verdict']} |")
        missing = f" (not: {', '.join(c['not_beating'])})" if c["held"] is False else ""
        lines.append(f"| **{name}** | {c['metric']} | | | | **{c['verdict']}**{missing} |")
    return lines


def _machines(envs: dict[int, dict]) -> list[str]:
    seen = {}
    for seed, env in envs.items():
        text = f"{env.get('platform')}, {env.get('cpu_count')} CPU cores, GPU: {env.get('cuda') or 'none'}"
        seen.setdefault(text, []).append(seed)
    return [f"{text} (seeds {', '.join(map(str, s))})" if len(seen) > 1 else text for text, s in seen.items()]


def report_header(agg: dict, envs: dict[int, dict]) -> list[str]:
    """Title, status, seeds, date, machine(s), git revision(s) and wall time per seed."""
    seeds = ", ".join(map(str, agg["seeds"])) or "none"
    revisions = sorted({str(e.get("git_revision")) for e in envs.values()})
    lines = [f"# depth-anything-course seeds: profile `{agg['profile']}`, seeds {seeds}", "",
             f"- status: **{agg['status']}** ({len(agg['seeds'])} seeds aggregated), written {agg['finished']}",
             *[f"- machine: {m}" for m in _machines(envs)],
             f"- git revision: {', '.join(f'`{r}`' for r in revisions) or '-'}",
             f"- notebook seconds per seed: "
             + (", ".join(f"{k} {_num(v)}" for k, v in agg["seconds"].items()) or "-")
             + f"; total {_num(agg['total_seconds'])} s", ""]
    if agg["failure"]:
        lines += ["## Failure", "", f"seed {agg['failure']['seed']}:", "", "```", agg["failure"]["message"], "```", ""]
    return lines


def seed_links(agg: dict) -> list[str]:
    """Markdown list linking each seed's own report.md (the failed seed's too, marked)."""
    failed = (agg["failure"] or {}).get("seed")
    seeds = agg["seeds"] + ([failed] if failed is not None else [])
    return [f"- seed {s}{' (failed)' if s == failed else ''}: [{SEED_DIR.format(seed=s)}/report.md]"
            f"({SEED_DIR.format(seed=s)}/report.md)" for s in seeds]


def write_seeds_report(run_dir: Path, agg: dict, envs: dict[int, dict]) -> Path:
    """DIR/report.md: header, links to each seed's report, results table (mean ± std), teachers' table, claims."""
    n = len(agg["seeds"])
    lines = report_header(agg, envs) + ["## Seeds", "", *seed_links(agg), ""]
    table = (agg.get("07_evaluation") or {}).get("table")
    if isinstance(table, dict):
        lines += ["## Results (mean ± std over seeds)", "", *summary_table(table, RESULT_COLUMNS, n), ""]
    teachers = agg.get("04_teacher_training")
    if isinstance(teachers, dict):
        rows = {k: v for k, v in teachers.items() if isinstance(v, dict) and not _is_summary(v) and _summary_leaves(v)}
        if rows:
            lines += ["## Teachers (mean ± std over seeds)", "", *summary_table(rows, TEACHER_COLUMNS, n), ""]
    if agg["claims"]:
        lines += ["## Claims", "",
                  f"Paired over seeds: difference d = b - a (the claimed-worse value minus the claimed-better one; "
                  f"baseline - model for the baseline claims), so d > 0 favours the claim. 95% interval: "
                  f"mean ± t(0.975, n-1) · s / sqrt(n); held when it lies above 0.", "",
                  *claims_table(agg["claims"]), ""]
    return atomic_write_bytes(Path(run_dir) / "report.md", "\n".join(lines).encode())
