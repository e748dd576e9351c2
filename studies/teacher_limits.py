"""What limits the cpu profile's V2 teacher? Two controlled experiments over seeds (README, "Results").

The cpu profile's V2 teacher (notebook 04: vitt from random init, 84 px crops of 128 px renders, batch 12,
420 steps, lr 3e-4, 5% warmup, gradient matching ramped in over half the steps, photometric augmentation)
misses the targets of 0.75x the trivial baseline's AbsRel on `clean` and 0.85x on `photo`. Arms, each
trained and scored exactly like notebooks 04/07 apart from the one thing named:

  profile   the recipe as it is (1,200 labelled clean renders, 600 indoor + 600 outdoor)
  budget2x  the same with 2x the steps (840): is `clean` a matter of budget?
  in_domain the same recipe and budget, trained on 1,200 labelled `photo` renders instead of `clean` ones:
            what a model of this size and budget reaches on `photo` when there is no domain shift, an
            upper bound for what pseudo-labels of the `photo` domain can give a student.

Scores: AbsRel on 192 clean and 192 photo test images (and shuffled inputs, `evaluate.input_dependence`),
Middlebury, and the mean-disparity baseline of notebook 07. Paired differences (same seed) with 95% t
intervals (`dalib.seeds.t_interval`).

    OMP_NUM_THREADS=1 python studies/teacher_limits.py --seeds 0,1,2 --out runs/studies/teacher_limits
    python studies/teacher_limits.py --seeds 0,1,2 --out runs/studies/teacher_limits --report-only

Each finished (arm, seed) is appended to `results.jsonl` and skipped when the script is run again. About
25 minutes per seed for the three arms on one core of a 2-core laptop-class CPU.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from dalib.data.serve import load

ARMS = {
    "profile": {"steps": 420, "train": ("synth-indoor", "synth-outdoor")},
    "budget2x": {"steps": 840, "train": ("synth-indoor", "synth-outdoor")},
    "in_domain": {"steps": 420, "train": ("synth-photo",)},
}
# the cpu profile's notebook-04 and notebook-07 settings (configs/cpu.yaml)
IMAGE_SIZE, CROP, BATCH, LR, N_TRAIN, N_TEST = 128, 84, 12, 3.0e-4, 1200, 96


def _load(name, split, n, root, **kw):

    return load(name, split, root=root, n=n, height=IMAGE_SIZE, width=IMAGE_SIZE, **kw)


def _labelled_train(name, n, root):
    """A training split with depth. `synth-photo`'s train split is served without its ground truth (it is the
    unlabelled pool of notebook 05); only this experiment reads it, through `with_heldout`."""
    if name != "synth-photo":
        return _load(name, "train", n, root)
    ds = _load(name, "train", n, root, with_heldout=True)
    return ds.rename_columns({"heldout_depth": "depth", "heldout_mask": "mask"})


def train_arm(arm: str, seed: int, out: Path, root, threads: int, amp: bool = True) -> dict:
    """Train one arm for one seed; returns the path of its checkpoint and the training seconds. amp: as
    TrainConfig.amp (bf16 autocast where `dalib.distributed.bf16_autocast_supported`, else float32)."""
    from dalib.student import photometric_hooks
    from dalib.train.config import TrainConfig
    from dalib.train.loop import train

    spec = ARMS[arm]
    sources = [_labelled_train(name, N_TRAIN // len(spec["train"]), root) for name in spec["train"]]
    steps = spec["steps"]
    cfg = TrainConfig(encoder="vitt", version="v2", datasets=sources, ratios=[1] * len(sources), crop=CROP,
                      batch_size=BATCH, steps=steps, lr_encoder=LR, warmup_steps=steps // 20,
                      gm_ramp_steps=steps // 2, gm_weight=2.0, seed=seed, threads=threads, num_workers=0, amp=amp,
                      log_every=20, checkpoint_every=0, progress=False, resume=True,
                      out_dir=str(out / f"{arm}-seed{seed}"))
    res = train(cfg, photometric_hooks(len(sources)))
    return {"checkpoint": res["checkpoint"], "train_s": res["seconds"]}


def score(model, root) -> dict:
    """AbsRel (matched, shuffled) on clean and photo test images, Middlebury AbsRel."""
    import datasets

    from dalib.evaluate import dataset_arrays, evaluate_middlebury, input_dependence, predict_disparities

    clean = datasets.concatenate_datasets([_load(k, "test", N_TEST, root) for k in ("synth-indoor", "synth-outdoor")])
    photo = _load("synth-photo", "test", 2 * N_TEST, root)
    out = {}
    for domain, ds in (("clean", clean), ("photo", photo)):
        arr = dataset_arrays(ds, ("image", "depth", "mask"))
        r = input_dependence(predict_disparities(model, arr["image"], input_size=CROP), arr["depth"], arr["mask"])
        out[domain], out[f"{domain}_shuffled"] = r["abs_rel"], r["abs_rel_shuffled"]
    out["middlebury"] = evaluate_middlebury(model, input_size=CROP)[0]["all"]["abs_rel"]
    return out


def baseline(root) -> dict:
    """The trivial baseline of notebook 07: the mean training disparity map, the same for every input."""
    from dalib.evaluate import constant_predictor, dataset_arrays, mean_disparity_baseline

    arrs = [dataset_arrays(_load(k, "train", N_TEST // 2, root), ("depth", "mask"))
            for k in ("synth-indoor", "synth-outdoor")]
    disp = mean_disparity_baseline(np.concatenate([a["depth"] for a in arrs]),
                                   np.concatenate([a["mask"] for a in arrs]), size=IMAGE_SIZE)
    return score(constant_predictor(disp), root)


def t_interval_text(diffs: list[float]) -> str:
    """Paired differences as 'mean [low, high]' (95% t interval), or 'mean (one seed)'."""
    from dalib.seeds import t_interval

    t = t_interval(diffs)
    ci = f"[{t['low']:+.3f}, {t['high']:+.3f}]" if t["low"] is not None else "(one seed)"
    return f"{t['mean']:+.3f} {ci}"


def report(rows: list[dict], base: dict, seeds: list[int]) -> str:
    from dalib.seeds import mean_pm_std, summarize

    by = {(r["arm"], r["seed"]): r for r in rows}
    keys = ["clean", "clean_shuffled", "photo", "photo_shuffled", "middlebury", "train_s"]
    lines = ["| arm | steps | train domain | " + " | ".join(keys) + " | seeds |",
             "|---" * (len(keys) + 4) + "|"]
    for arm, spec in ARMS.items():
        got = [by[(arm, s)] for s in seeds if (arm, s) in by]
        cells = [mean_pm_std(summarize([g[k] for g in got]), len(got)) for k in keys]
        domain = "photo" if arm == "in_domain" else "clean"
        lines.append(f"| {arm} | {spec['steps']} | {domain} | " + " | ".join(cells) + f" | {len(got)} |")
    lines.append("| baseline | - | clean | " + " | ".join(f"{base[k]:.3f}" for k in keys[:-1]) + " | - | - |")
    lines += ["", "Paired differences (same seed), mean and 95% t interval; ratio = mean AbsRel / baseline AbsRel:", ""]
    for a, b, metric in (("profile", "budget2x", "clean"), ("profile", "budget2x", "photo"),
                         ("profile", "budget2x", "middlebury"), ("profile", "in_domain", "photo"),
                         ("profile", "in_domain", "clean"), ("profile", "in_domain", "middlebury")):
        pairs = [(by[(a, s)][metric], by[(b, s)][metric]) for s in seeds if (a, s) in by and (b, s) in by]
        if not pairs:
            continue
        ra, rb = (np.mean([p[i] for p in pairs]) / base[metric] for i in (0, 1))
        lines.append(f"- {metric}: {b} - {a} = {t_interval_text([y - x for x, y in pairs])} over {len(pairs)} seeds "
                     f"(ratio to baseline {ra:.2f} -> {rb:.2f})")
    return "\n".join(lines) + "\n"


def run_arms(out: Path, seeds, arms, run_one) -> list[dict]:
    """Every row of out/results.jsonl, after running `run_one(arm, seed) -> row` for each (seed, arm) not in it yet
    (appended as it finishes, with its wall time, so an interrupted study continues where it stopped). The
    studies/ scripts share it."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["arm"], r["seed"]) for r in rows}
    for seed in seeds:
        for arm in arms:
            if (arm, seed) in done:
                continue
            t0 = time.time()
            row = run_one(arm, seed)
            row["wall_s"] = round(time.time() - t0, 1)
            print(json.dumps(row), flush=True)
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


def run_study(out: Path, seeds, arms, run_one, report_of, root) -> int:
    """`run_arms`, then `report_of(rows, baseline)` written to out/report.md and printed; the end of each study."""
    rows = run_arms(out, seeds, arms, run_one)
    text = report_of(rows, cached_baseline(out, root))
    (out / "report.md").write_text(text)
    print(text)
    return 0


def cached_baseline(out: Path, root) -> dict:
    """The trivial baseline's scores (`baseline`), computed once into out/baseline.json."""
    path = out / "baseline.json"
    if not path.exists():
        path.write_text(json.dumps(baseline(root)))
    return json.loads(path.read_text())


def study_args(description: str, known_arms, out: str, argv=None) -> tuple[argparse.Namespace, list[int], list[str]]:
    """The command line of a study: --seeds, --arms (some of `known_arms`), --out, --data-root, --threads,
    --report-only; torch gets the threads. Returns (args, seeds, arms)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=",".join(known_arms))
    p.add_argument("--out", default=out)
    p.add_argument("--data-root", default=None, help="dataset cache (default: DALIB_DATA or data/)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    arms = [x for x in a.arms.split(",") if x]
    unknown = sorted(set(arms) - set(known_arms))
    if unknown:
        p.error(f"--arms: unknown {unknown}; expected some of {sorted(known_arms)}")
    return a, [int(s) for s in a.seeds.split(",")], arms


def main(argv=None) -> int:
    a, seeds, arms = study_args(__doc__.splitlines()[0], ARMS, "runs/studies/teacher_limits", argv)
    out = Path(a.out)

    def run_one(arm, seed):
        from dalib.model import DepthAnything

        res = train_arm(arm, seed, out, a.data_root, a.threads)
        return {"arm": arm, "seed": seed, "train_s": round(res["train_s"], 1),
                **score(DepthAnything.from_pretrained(res["checkpoint"]).eval(), a.data_root)}

    return run_study(out, [] if a.report_only else seeds, arms, run_one,
                     lambda rows, base: report(rows, base, seeds), a.data_root)


if __name__ == "__main__":
    raise SystemExit(main())
