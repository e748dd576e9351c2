"""Training loop overhead and data-engine headroom, measured side by side in one run.

    python benchmarks/bench_train.py --threads 1              # CPU: vitt, 112 px, batch 8
    python benchmarks/bench_train.py --encoder vits --crop 518 --batch-size 16 --steps 40   # on a GPU

On a CPU shared with other jobs use --threads 1 (OpenMP threads that wait for a descheduled sibling
slow every step many times over, which swamps what is being measured).

Prints:
  loop    `dalib.train.loop.train` images/s from the median step time (data loading, augmentation, loss,
          clipping, schedule and JSON log lines included; one line per step on CPU, per 5 on CUDA)
  bare    forward + backward + AdamW step of the same model on one fixed batch of the same size, with a
          trivial loss (pred.mean()), median step time, run before and after the loop (the faster counts);
          ratio = loop time / bare time per step (target <= 1.15)
  data    the loop's input pipeline alone (DataLoader + decode + joint transforms, same workers) in
          images/s against the loop's consumption (target >= 10x); also the procedural generator
          (`dalib.synth.generate`, when present), which runs offline (datasets are built once)
  bf16    (CPU) the bare step under bf16 autocast against fp32, same model and batch: the speed-up and the
          relative difference of the loss; whether this CPU has native bf16 (AVX512-BF16/AMX), which is when
          `dalib.train` turns bf16 on by itself (`dalib.distributed.cpu_has_native_bf16`; DALIB_CPU_BF16=0/1 overrides)
  gpu     (CUDA only) bf16 images/s, achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode on one
          forward + backward) against the card's dense bf16 peak
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dalib.distributed import cpu_has_native_bf16
from dalib.model import DepthAnything
from dalib.train.config import TrainConfig, per_batch
from dalib.train.loop import train
from dalib.train.plan import BatchPlan, batch_to_device, open_training_dataset
from dalib.train.step import build_optimizer, freeze_unused, use_autocast
from dalib.transforms import JointTransform

# dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0}


def peak_tflops(name: str) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


def make_dataset(n: int, h: int, w: int, seed: int = 0):
    """n procedural scenes in the training schema (dalib.synth when available, else random boxes)."""
    import datasets

    try:
        from dalib.synth.engine import generate

        t0 = time.perf_counter()
        g = generate("indoor", n, seed=seed, height=h, width=w)
        gen_rate = n / (time.perf_counter() - t0)
        cols = {"image": list(g["image"]), "depth": list(g["depth"]), "mask": list(g["mask"])}
    except ImportError:
        gen_rate = None
        rng = np.random.default_rng(seed)
        yy = np.mgrid[0:h, 0:w][0].astype(np.float32)
        cols = {"image": [], "depth": [], "mask": []}
        for _ in range(n):
            d = 2.0 + 6.0 * (1 - yy / h)
            for _ in range(4):
                y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
                d[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0.8, 3.0)
            cols["image"].append((rng.uniform(0, 1, (h, w, 3)) * 255 / (1 + d[..., None] / 4)).astype(np.uint8))
            cols["depth"].append(d.astype(np.float32))
            cols["mask"].append(np.ones((h, w), bool))
    feats = datasets.Features({"image": datasets.Image(), "depth": datasets.Array2D((h, w), "float32"),
                               "mask": datasets.Array2D((h, w), "bool")})
    return datasets.Dataset.from_dict(cols, features=feats), gen_rate


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop_rate(cfg: TrainConfig) -> tuple[float, dict]:
    """Median seconds per step of `train`, from the elapsed times between its JSON log lines; the first
    interval (start-up) is dropped. The median ignores load spikes of a shared machine."""
    res = train(cfg)
    log = [json.loads(x) for x in (Path(cfg.out_dir) / "train_log.jsonl").read_text().splitlines()]
    if len(log) < 4:
        raise SystemExit("need at least 4 log lines: raise --steps or lower --log-every")
    dt = [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(log[1:], log[2:])]
    return statistics.median(dt), res


def bare_rate(cfg: TrainConfig, batch: dict, device: torch.device, steps: int, amp: bool) -> tuple[float, float | None]:
    """Seconds per forward + backward + optimiser step on one fixed batch (bf16 autocast when `amp`); FLOPs of
    one forward + backward."""
    torch.manual_seed(cfg.seed)
    model = DepthAnything(cfg.encoder, cfg.version).to(device).train()
    model.grad_checkpointing = cfg.grad_checkpointing
    freeze_unused(model, device)
    opt, _ = build_optimizer(model, cfg)
    x = batch["image"].to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        pred.float().mean().backward()
        opt.step()

    flops = None
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            step()
        flops = float(fc.get_total_flops())
    except Exception:
        step()
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), flops


def cpu_bf16_vs_fp32(cfg: TrainConfig, batch: dict, device: torch.device, steps: int) -> dict:
    """The bare step in fp32 and under bf16 autocast (forced, whatever the detection says), interleaved twice
    so that a load change hits both; prints the speed-up and the loss difference of one forward."""
    runs = [bare_rate(cfg, batch, device, steps, amp)[0] for amp in (False, True, False, True)]
    fp32, bf16 = min(runs[0::2]), min(runs[1::2])
    torch.manual_seed(cfg.seed)
    model = DepthAnything(cfg.encoder, cfg.version).eval()
    with torch.no_grad():
        ref = model(batch["image"]).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch["image"]).float()
    err = float((low - ref).abs().mean() / ref.abs().mean())
    native = cpu_has_native_bf16()
    print(f"{'bare fp32 (cpu)':24s}{cfg.batch_size / fp32:12.2f}")
    print(f"{'bare bf16 autocast (cpu)':24s}{cfg.batch_size / bf16:12.2f}{fp32 / bf16:9.2f}x  speed-up over fp32; "
          f"output differs by {err:.2%} (mean relative)")
    print(f"{'':24s}native bf16 on this CPU: {'yes' if native else 'no'} -> dalib.train uses "
          f"{'bf16' if native and cfg.amp else 'fp32'} here")
    return {"cpu_fp32_images_per_s": cfg.batch_size / fp32, "cpu_bf16_images_per_s": cfg.batch_size / bf16,
            "cpu_bf16_speedup": fp32 / bf16, "cpu_bf16_output_rel_diff": err, "cpu_native_bf16": native}


def data_rate(cfg: TrainConfig, batches: int) -> float:
    """images/s of the loop's input pipeline alone (same BatchPlan, transforms and workers)."""
    ds = open_training_dataset(cfg.datasets[0], "train")
    plan = BatchPlan([ds], per_batch(cfg), ["auto"], JointTransform(cfg.crop, scale=tuple(cfg.scale)), cfg.seed)
    loader = torch.utils.data.DataLoader(plan, batch_size=None, sampler=range(batches + 2), num_workers=cfg.num_workers,
                                         prefetch_factor=cfg.prefetch if cfg.num_workers else None)
    it = iter(loader)
    next(it), next(it)  # workers started and warm
    t0 = time.perf_counter()
    n = sum(b["image"].shape[0] for b in it)
    return n / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="vitt")
    ap.add_argument("--crop", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30, help="loop steps (the bare loop runs the same number)")
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--rows", type=int, default=64, help="scenes in the benchmark dataset")
    ap.add_argument("--height", type=int, default=0, help="scene height (default: crop + crop/7)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--log-every", type=int, default=0,
                    help="loop log interval (0: 1 on CPU; 5 on CUDA, where each log line synchronises)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    log_every = args.log_every or (5 if cuda else 1)
    h = args.height or args.crop + args.crop // 7
    w = h * 4 // 3
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        t0 = time.perf_counter()
        ds, gen_rate = make_dataset(args.rows, h, w)
        ds.save_to_disk(str(tmp / "data"))
        print(f"dataset: {args.rows} scenes {h}x{w} ({'dalib.synth' if gen_rate else 'random boxes'}), "
              f"{time.perf_counter() - t0:.1f}s")
        cfg = TrainConfig(datasets=[str(tmp / "data")], encoder=args.encoder, crop=args.crop, batch_size=args.batch_size,
                          steps=args.steps, lr_encoder=1e-4, log_every=log_every, checkpoint_every=0,
                          num_workers=args.num_workers, device=args.device, progress=False, out_dir=str(tmp / "run"))
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                              "cpu" if args.device == "auto" else args.device)
        batch = batch_to_device(BatchPlan([open_training_dataset(cfg.datasets[0], "train")], [args.batch_size],
                                          ["auto"], JointTransform(args.crop), 0)[0], "cpu")  # normalised images
        # bare before and after the loop, the faster one counts: a load spike cannot flatter the loop
        amp = use_autocast(cfg, device)  # what the loop does on this device
        bare_a, flops = bare_rate(cfg, batch, device, max(5, args.steps), amp)
        loop_s, res = loop_rate(cfg)
        bare_b, _ = bare_rate(cfg, batch, device, max(5, args.steps), amp)
        bare_s = min(bare_a, bare_b)
        loop_ips, bare_ips = args.batch_size / loop_s, args.batch_size / bare_s
        dr = data_rate(cfg, max(6, args.steps // 2))
        out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
               "encoder": args.encoder, "crop": args.crop, "batch_size": args.batch_size, "steps": args.steps,
               "num_workers": args.num_workers, "amp_bf16": amp,
               "loop_images_per_s": loop_ips, "bare_images_per_s": bare_ips, "loop_over_bare": loop_s / bare_s,
               "data_pipeline_images_per_s": dr, "data_over_loop": dr / loop_ips,
               "generator_images_per_s": gen_rate, "generator_over_loop": gen_rate / loop_ips if gen_rate else None}
        print(f"\n{'':24s}{'images/s':>12s}{'ratio':>10s}  target")
        print(f"{'bare fwd+bwd+step':24s}{bare_ips:12.2f}")
        print(f"{'dalib.train loop':24s}{loop_ips:12.2f}{loop_s / bare_s:9.3f}x  loop time <= 1.15x bare")
        print(f"{'data pipeline':24s}{dr:12.2f}{dr / loop_ips:9.1f}x  >= 10x loop consumption")
        if gen_rate:
            print(f"{'synth generator':24s}{gen_rate:12.2f}{gen_rate / loop_ips:9.1f}x  (offline: datasets are "
                  "materialised once by dalib.data.build, not rendered per step)")
        if device.type == "cpu":
            out.update(cpu_bf16_vs_fp32(cfg, batch, device, max(5, args.steps)))
        if device.type == "cuda" and flops:
            achieved = flops / bare_s / 1e12  # flops counted for one fwd+bwd of the batch
            peak = peak_tflops(out["device"])
            out.update(flops_per_step=flops, bare_tflops=achieved, loop_tflops=flops / loop_s / 1e12, peak_bf16_tflops=peak)
            print(f"{'bf16 TFLOP/s (bare)':24s}{achieved:12.1f}" + (f"{achieved / peak:9.1%}  of {peak:.0f} peak" if peak else ""))
            print(f"{'bf16 TFLOP/s (loop)':24s}{flops / loop_s / 1e12:12.1f}" +
                  (f"{flops / loop_s / 1e12 / peak:9.1%}  of {peak:.0f} peak" if peak else ""))
        print(f"bare runs: {args.batch_size / bare_a:.2f} and {args.batch_size / bare_b:.2f} images/s (before / after the loop)")
        print(f"\n{out['device']}; encoder {args.encoder}, crop {args.crop}, batch {args.batch_size}, "
              f"{args.steps} loop steps, {args.num_workers} workers")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
