"""Does a pretrained encoder help the cpu profile's V2 teacher? Random init vs encoders from `dalib.pretrain`.

Each arm trains the cpu profile's notebook-04 teacher exactly as `studies/teacher_limits.py`'s `profile` arm
(vitt, 84 px crops of 128 px renders, 600 indoor + 600 outdoor labelled clean renders, batch 12, 420 steps,
lr 3e-4, 5% warm-up, gradient matching ramped in over half the steps, photometric augmentation), with only
`pretrained_encoder` changed (and, in an arm `NAME=FILE@LR`, the encoder lr: a pretrained encoder is usually
fine-tuned more gently than a random one is trained), and is scored with `teacher_limits.score` (AbsRel on 192
clean and 192 photo test images, shuffled inputs, Middlebury) against the mean-disparity baseline of notebook 07.

    E=dalib/encoders
    OMP_NUM_THREADS=1 python studies/pretrain_downstream.py --out runs/studies/encoder_init --seeds 0,1,2 \
        --arms random,mae=$E/vitt-mae.safetensors,dino=$E/vitt-dino.safetensors,dino-lr3e-5=$E/vitt-dino.safetensors@3e-5

Each finished (arm, seed) is appended to `results.jsonl` and skipped when the script is run again.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling study: its recipe and scores

from teacher_limits import (BATCH, CROP, IMAGE_SIZE, LR, N_TRAIN, run_study, score,  # noqa: E402
                            t_interval_text)
from dalib.data.serve import load

STEPS = 420  # the cpu profile's teacher steps


def train_arm(name: str, encoder: str | None, seed: int, out: Path, root, threads: int, lr: float = LR) -> dict:
    """The cpu profile's teacher with `pretrained_encoder=encoder` (None: random init) and encoder lr `lr`."""
    from dalib.student import photometric_hooks
    from dalib.train.config import TrainConfig
    from dalib.train.loop import train

    sources = [load(k, "train", root=root, n=N_TRAIN // 2, height=IMAGE_SIZE, width=IMAGE_SIZE)
               for k in ("synth-indoor", "synth-outdoor")]
    cfg = TrainConfig(encoder="vitt", version="v2", pretrained_encoder=encoder, datasets=sources, ratios=[1, 1],
                      crop=CROP, batch_size=BATCH, steps=STEPS, lr_encoder=lr, warmup_steps=STEPS // 20,
                      gm_ramp_steps=STEPS // 2, gm_weight=2.0, seed=seed, threads=threads, num_workers=0,
                      log_every=20, checkpoint_every=0, progress=False, resume=True,
                      out_dir=str(out / f"{name}-seed{seed}"))
    res = train(cfg, photometric_hooks(len(sources)))
    return {"checkpoint": res["checkpoint"], "train_s": res["seconds"]}


def report(rows: list[dict], base: dict) -> str:
    from dalib.seeds import mean_pm_std, summarize

    keys = ["clean", "clean_shuffled", "photo", "photo_shuffled", "middlebury"]
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    lines = ["| init | " + " | ".join(keys) + " | clean / baseline | photo / baseline | seeds |",
             "|---" * (len(keys) + 4) + "|"]
    for arm in arms:
        got = [r for r in rows if r["arm"] == arm]
        cells = [mean_pm_std(summarize([g[k] for g in got]), len(got)) for k in keys]
        ratios = [f"{sum(g[k] for g in got) / len(got) / base[k]:.3f}" for k in ("clean", "photo")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {len(got)} |")
    lines.append("| baseline | " + " | ".join(f"{base[k]:.3f}" for k in keys) + " | 1 | 1 | - |")
    by = {(r["arm"], r["seed"]): r for r in rows}
    lines += ["", "Paired differences against random init (same seed), mean and 95% t interval (negative: lower "
              "AbsRel than random init):", ""]
    for arm in (a for a in arms if a != "random"):
        for metric in ("clean", "photo", "middlebury", "photo_shuffled"):
            pairs = [(by[("random", s)][metric], r[metric]) for (a, s), r in by.items()
                     if a == arm and ("random", s) in by]
            if pairs:
                lines.append(f"- {metric}: {arm} - random = {t_interval_text([b - a for a, b in pairs])} "
                             f"over {len(pairs)} seeds")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default="random", help="comma-separated NAME=ENCODER_FILE[@LR] (LR: the encoder lr "
                   "instead of the profile's), 'random', or NAME=@LR (random init at encoder lr LR)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", default="runs/studies/pretrain_downstream")
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch

    from dalib.model import DepthAnything

    torch.set_num_threads(a.threads)
    arms = [(x.split("=", 1)[0], x.split("=", 1)[1] if "=" in x else None) for x in a.arms.split(",") if x]
    lrs = {name: float(spec.rpartition("@")[2]) if spec and "@" in spec else LR for name, spec in arms}
    arms = [(name, (spec.rpartition("@")[0] if spec and "@" in spec else spec) or None) for name, spec in arms]
    out = Path(a.out)
    encoders = dict(arms)

    def run_one(name, seed):
        res = train_arm(name, encoders[name], seed, out, a.data_root, a.threads, lrs[name])
        return {"arm": name, "encoder": encoders[name], "lr_encoder": lrs[name], "seed": seed,
                "train_s": round(res["train_s"], 1),
                **score(DepthAnything.from_pretrained(res["checkpoint"]).eval(), a.data_root)}

    return run_study(out, [int(s) for s in a.seeds.split(",")], list(encoders), run_one, report, a.data_root)


if __name__ == "__main__":
    raise SystemExit(main())
