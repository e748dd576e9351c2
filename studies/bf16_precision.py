"""What does bf16 autocast cost the cpu profile's teacher, and where does it lose? (README, "bf16 on the CPU")

Arms: the `profile` arm of studies/teacher_limits.py (the cpu profile's V2 teacher: vitt from random init,
84 px crops, batch 12, 420 steps, trained and scored as notebooks 04/07), differing only in the arithmetic:

  fp32         float32 throughout (TrainConfig.amp=False)
  bf16         bf16 autocast with the DPT head's full-resolution output stage in float32 (what dalib does)
  bf16_output  bf16 autocast everywhere, the output stage included (`DPTHead.float32_output = False`, the
               code before the output stage was kept in float32)

bf16 is forced with DALIB_CPU_BF16=1, so the arms run on any x86 CPU: one without native bf16 (AVX512-BF16 /
AMX) emulates the format, slower, with the same rounding to 8 significant bits. Scores as teacher_limits: AbsRel
on 192 clean and 192 photo test images, Middlebury, the trivial baseline; paired differences (same seed) with
95% t intervals; training seconds per arm (compare them only between runs on an otherwise idle machine).

    python studies/bf16_precision.py --seeds 0,1,2 --threads 2 --out runs/studies/bf16_precision
    python studies/bf16_precision.py --seeds 0,1,2 --out runs/studies/bf16_precision --report-only

Each finished (arm, seed) is appended to `results.jsonl` and skipped when the script is run again.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import teacher_limits  # noqa: E402  (the arm's recipe and scores, one copy)

ARMS = {"fp32": (False, True), "bf16": (True, True), "bf16_output": (True, False)}  # arm -> (amp, float32_output)
METRICS = ("clean", "photo", "middlebury")


def run_arm(arm: str, seed: int, out: Path, root, threads: int) -> dict:
    import torch

    from dalib.model import DepthAnything, DPTHead

    amp, float32_output = ARMS[arm]
    os.environ["DALIB_CPU_BF16"] = "1" if amp else "0"
    DPTHead.float32_output = float32_output
    try:
        res = teacher_limits.train_arm("profile", seed, out / arm, root, threads, amp=amp)
    finally:
        DPTHead.float32_output = True
    log = json.loads((Path(res["checkpoint"]).parent.parent / "config.json").read_text())
    assert log["bf16_autocast"] == amp, f"{arm}: the run's bf16_autocast is {log['bf16_autocast']}"
    with torch.no_grad():
        scores = teacher_limits.score(DepthAnything.from_pretrained(res["checkpoint"]).eval(), root)
    return {"arm": arm, "seed": seed, "train_s": round(res["train_s"], 1), **scores}


def report(rows: list[dict], base: dict, seeds: list[int]) -> str:
    from dalib.seeds import mean_pm_std, summarize

    by = {(r["arm"], r["seed"]): r for r in rows}
    keys = ["clean", "clean_shuffled", "photo", "photo_shuffled", "middlebury", "train_s"]
    lines = ["| arm | " + " | ".join(keys) + " | seeds |", "|---" * (len(keys) + 2) + "|"]
    for arm in ARMS:
        got = [by[(arm, s)] for s in seeds if (arm, s) in by]
        lines.append(f"| {arm} | " + " | ".join(mean_pm_std(summarize([g[k] for g in got]), len(got)) for k in keys)
                     + f" | {len(got)} |")
    lines.append("| baseline | " + " | ".join(f"{base[k]:.3f}" for k in keys[:-1]) + " | - | - |")
    lines += ["", "Paired differences (same seed), mean and 95% t interval; ratio = mean AbsRel / baseline AbsRel:", ""]
    for arm in ("bf16", "bf16_output"):
        for metric in METRICS:
            pairs = [(by[("fp32", s)][metric], by[(arm, s)][metric]) for s in seeds if ("fp32", s) in by and (arm, s) in by]
            if not pairs:
                continue
            t = teacher_limits.t_interval_text([b - a for a, b in pairs])
            ra, rb = (np.mean([p[i] for p in pairs]) / base[metric] for i in (0, 1))
            lines.append(f"- {metric}: {arm} - fp32 = {t} over {len(pairs)} seeds (ratio to baseline {ra:.2f} -> {rb:.2f})")
    speed = [(by[("fp32", s)]["train_s"], by[("bf16", s)]["train_s"]) for s in seeds if ("fp32", s) in by and ("bf16", s) in by]
    if speed:
        lines.append(f"- training time fp32 / bf16: {np.mean([a / b for a, b in speed]):.2f}x over {len(speed)} seeds")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a, seeds, arms = teacher_limits.study_args(__doc__.splitlines()[0], ARMS, "runs/studies/bf16_precision", argv)
    out = Path(a.out)
    return teacher_limits.run_study(out, [] if a.report_only else seeds, arms,
                                    lambda arm, seed: run_arm(arm, seed, out, a.data_root, a.threads),
                                    lambda rows, base: report(rows, base, seeds), a.data_root)


if __name__ == "__main__":
    raise SystemExit(main())
