"""Vectorised SSI + gradient-matching losses against a per-image Python loop of the same math.

    python benchmarks/bench_losses.py [--batch 32] [--size 256] [--repeats 5] [--device cpu]

Both sides compute ssi_loss + gradient_matching_loss (4 scales) forward and backward on the same
inputs in the same run; the loop is tests/loop_reference.py, which the tests check for equal values.
Prints both times and the ratio (target: >= 5x on CPU at batch 32, 256x256).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from loop_reference import gradient_matching_loss_loop, ssi_loss_loop  # noqa: E402

from dalib.losses import depth_loss, gradient_matching_loss, ssi_loss  # noqa: E402


def vectorised(pred, target, mask, align):
    return ssi_loss(pred, target, mask, align=align) + gradient_matching_loss(pred, target, mask, align=align)


def combined(pred, target, mask, align):
    """The training loop's form: both terms from one alignment (dalib.losses.depth_loss, weight 1:1 here)."""
    return depth_loss(pred, target, mask, align=align, gm_weight=1.0)["total"]


def loop(pred, target, mask, align):
    return ssi_loss_loop(pred, target, mask, align=align) + gradient_matching_loss_loop(pred, target, mask, align=align)


def timed(fn, pred, target, mask, align, repeats, device):
    times = []
    for i in range(repeats + 1):  # first call warms up
        p = pred.detach().clone().requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(p, target, mask, align).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), p.grad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.size, args.size)
    target = (torch.rand(shape, generator=g) + 0.05).to(dev)
    pred = (0.7 * target.cpu() + 0.1 * torch.rand(shape, generator=g)).to(dev)
    mask = (torch.rand(shape, generator=g) > 0.1).to(dev)  # 10% invalid pixels, a different count per image
    print(f"device {dev}, torch threads {torch.get_num_threads()}, batch {args.batch}, {args.size}x{args.size}, "
          f"forward+backward of ssi_loss + gradient_matching_loss (4 scales), median of {args.repeats}")
    print(f"{'align':<8} {'vectorised ms':>14} {'per-image loop ms':>18} {'speed-up':>9} "
          f"{'depth_loss ms':>14} {'speed-up':>9}  max |grad diff| / max |grad|")
    for align in ("median", "lstsq"):
        tv, gv = timed(vectorised, pred, target, mask, align, args.repeats, dev)
        tc, _ = timed(combined, pred, target, mask, align, args.repeats, dev)
        tl, gl = timed(loop, pred, target, mask, align, args.repeats, dev)
        diff = ((gv - gl).abs().max() / gl.abs().max()).item()
        print(f"{align:<8} {tv * 1e3:14.1f} {tl * 1e3:18.1f} {tl / tv:8.2f}x {tc * 1e3:14.1f} {tl / tc:8.2f}x  {diff:.1e}")


if __name__ == "__main__":
    main()
