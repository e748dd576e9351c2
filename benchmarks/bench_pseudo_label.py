"""Pseudo-labelling throughput against bare batched inference of the same model, in one run.

    python benchmarks/bench_pseudo_label.py                              # CPU-sized: vitt, input 112, 128 images
    python benchmarks/bench_pseudo_label.py --encoder vits --input-size 518 --n 1024 --batch-size 32 --device cuda

(a) bare: `model(x)` on pre-made batches of already-preprocessed tensors (grouped by network size,
    already on the device) - the floor set by the network alone;
(b) full: `dalib.pseudo_label.pseudo_label` - decode + preprocess (DataLoader workers) + infer +
    resize back + write shards - timed around the whole call.
Same model, images, batch size and autocast. Each is run `--repeat` times, alternating; the best
time of each is compared. Target: full <= 1.2x bare. Notebook 05_pseudo_labelling.
`--backends torch,onnxruntime` measures both pairs in the same run; onnxruntime's bare time runs the same
batches through the exported model (`dalib.export`, exported once and cached). Decoding overlaps the
model only where a core is left beside the model's threads; the line "decoding threads" says which.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dalib.data.serve import load


def bare_batches(ds, input_size: int, batch_size: int, device) -> list[torch.Tensor]:
    """Official preprocessing of every image, grouped by network size, `batch_size` per tensor, on `device`."""
    from dalib.images import network_size, preprocess, to_rgb_float

    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for i in range(len(ds)):
        rgb = to_rgb_float(ds[i]["image"])
        size = network_size(rgb.shape[0], rgb.shape[1], input_size)
        groups.setdefault(size, []).append(preprocess(rgb, size))
    out = []
    for xs in groups.values():
        for s in range(0, len(xs), batch_size):
            out.append(torch.from_numpy(np.stack(xs[s:s + batch_size])).to(device))
    return out


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_bare(model, batches, device, amp: bool) -> float:
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        for x in batches:
            model(x)
    sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default="vitt", help="model size (random weights) unless --teacher is given")
    p.add_argument("--teacher", default=None, help="weights to load instead (dalib checkpoint, official .pth, HF)")
    p.add_argument("--input-size", type=int, default=112)
    p.add_argument("--n", type=int, default=128, help="number of images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--source", default="synth-photo", help="dalib.data dataset with an image column")
    p.add_argument("--split", default="train")
    p.add_argument("--height", type=int, default=None, help="generator sources: image height (default: manifest)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--root", default=None, help="data folder (default $DALIB_DATA, else <repo>/data)")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=None, help="pseudo_label decoding processes (default: its own)")
    p.add_argument("--shard-size", type=int, default=None, help="rows per shard (default: pseudo_label's)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--backends", default="torch,onnxruntime", help="comma-separated: torch, onnxruntime")
    args = p.parse_args(argv)

    from dalib.distributed import resolve_device
    from dalib.model import DepthAnything, count_parameters
    from dalib.weights import load_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = not args.no_amp
    kw = {"n": args.n} | ({"height": args.height, "width": args.width} if args.height or args.width else {})
    t = time.perf_counter()
    ds = load(args.source, args.split, root=args.root, **kw)
    print(f"images: {len(ds)} from {args.source}/{args.split} ({time.perf_counter() - t:.1f} s to load/build)")
    torch.manual_seed(0)
    model = load_weights(args.teacher) if args.teacher else DepthAnything(args.encoder)
    model = model.to(device).eval()
    shape = np.asarray(ds[0]["image"]).shape
    print(f"model: {model.encoder} ({count_parameters(model.cfg) / 1e6:.1f} M params), input {args.input_size}, "
          f"batch {args.batch_size}, device {device}, amp {amp and device.type == 'cuda'}, "
          f"torch threads {torch.get_num_threads()}, first image {shape[0]}x{shape[1]}")

    batches = bare_batches(ds, args.input_size, args.batch_size, device)
    import os

    free = max(0, (os.cpu_count() or 1) - torch.get_num_threads())
    print(f"decoding threads: {args.num_workers if args.num_workers is not None else min(4, free)} "
          f"({os.cpu_count()} cpus, {torch.get_num_threads()} for the model"
          + ("; no spare core: decoding runs in line, not overlapped)" if free == 0 and args.num_workers is None else ")"))
    for backend in args.backends.split(","):
        runner = model
        if backend == "onnxruntime":
            from dalib.export import onnx_runner

            runner = onnx_runner(model.cpu())
            model.to(device)
        print(f"--- backend {backend}")
        bench_one(args, ds, runner if backend == "onnxruntime" else model, batches, device, amp, backend)
    return 0


def bench_one(args, ds, model, batches, device, amp, backend) -> None:
    from dalib.pseudo_label.labelling import pseudo_label

    if backend == "onnxruntime":
        device, amp = torch.device("cpu"), False
        batches = [x.cpu() for x in batches]
    work = Path(tempfile.mkdtemp(prefix="bench_pseudo_label-"))
    opts = dict(input_size=args.input_size, batch_size=args.batch_size, amp=amp,
                num_workers=args.num_workers, progress=False, backend=backend)
    if backend == "torch":
        opts["device"] = device
    if args.shard_size:
        opts["shard_size"] = args.shard_size
    try:
        time_bare(model, batches[:1], device, amp)  # warm-up: kernels, allocator, oneDNN primitives
        pseudo_label(model, ds.select(range(min(len(ds), 2 * args.batch_size))), work / "warmup", **opts)
        bare, full, loop = [], [], []
        for r in range(args.repeat):
            bare.append(time_bare(model, batches, device, amp))
            out = work / f"run{r}"
            t0 = time.perf_counter()
            res = pseudo_label(model, ds, out, **opts)
            sync(device)
            full.append(time.perf_counter() - t0)
            loop.append(res["seconds"])
            assert res["images"] == len(ds) and res["complete"], res
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(ds)
    b, f, lp = min(bare), min(full), min(loop)
    print(f"(a) bare model(x) on preprocessed batches : {n / b:8.1f} images/s  ({b:.3f} s, best of {args.repeat}: "
          f"{', '.join(f'{x:.3f}' for x in bare)})")
    print(f"(b) pseudo_label() decode..write shards   : {n / f:8.1f} images/s  ({f:.3f} s, best of {args.repeat}: "
          f"{', '.join(f'{x:.3f}' for x in full)}; its loop {lp:.3f} s)")
    ratio = f / b
    print(f"ratio full / bare time: {ratio:.2f}x  (target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())
