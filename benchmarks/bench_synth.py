"""Throughput and memory of the synthetic data engine (`dalib.synth`), notebook 00_depth_data.

Run:  python benchmarks/bench_synth.py            (about two minutes on 2 CPU cores)
      python benchmarks/bench_synth.py --quick    (smaller N, a smoke run)

For 112x112, 224x224 and 518x518 it prints images/second for
  render   generate samples (scene sampling + ray casting + shading + style), nothing written;
  +npz     render, PNG-encode the image, write image/depth/material shards as .npz files;
  +arrow   render, write shards as HF `datasets` Arrow folders (Dataset.from_dict(...).save_to_disk);
with the renderer in this process (`--threads`, default 1) and in 2 worker processes (`workers=2`,
one thread each, as torch DataLoader workers). One thread per process is the robust choice on a
shared CPU: several OpenMP threads per process stall badly when other jobs hold the cores.
Memory: peak RSS (resource.getrusage) and peak Python/numpy heap (tracemalloc) while streaming N and
4N samples to disk; streaming keeps both flat in N.
The `photo` style (camera-pipeline simulation incl. JPEG) is timed at 112x112 as well. The target at
112x112 is >= 300 images/s for render + write. Timings on a shared machine are noisy:
the load average is printed with the numbers.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
import tracemalloc

import numpy as np
import torch

from dalib.synth.engine import iter_generate

KINDS = ("indoor", "outdoor")


def _png(img: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return buf.tobytes()


class NpzWriter:
    """Shards of PNG bytes + raw depth/material arrays, one .npz per chunk."""

    def __init__(self, root):
        self.root, self.k = root, 0

    def write(self, part):
        pngs = np.array([_png(im) for im in part["image"]], dtype=object)
        np.savez(os.path.join(self.root, f"shard_{self.k:05d}.npz"), image_png=pngs, depth=part["depth"],
                 material=part["material"], allow_pickle=True)
        self.k += 1

    def close(self):
        pass


class ArrowWriter:
    """HF `datasets` shards (Arrow on disk): image as PNG (datasets Image feature), depth float32, material uint8."""

    def __init__(self, root, shard_size=256):
        import datasets

        datasets.disable_progress_bars()
        self.ds, self.root, self.shard_size, self.k = datasets, root, shard_size, 0
        self.buf: dict[str, list] = {"image": [], "depth": [], "material": []}

    def write(self, part):
        self.buf["image"] += [{"bytes": _png(im), "path": None} for im in part["image"]]
        self.buf["depth"] += list(part["depth"])
        self.buf["material"] += list(part["material"])
        if len(self.buf["image"]) >= self.shard_size:
            self.flush()

    def flush(self):
        if not self.buf["image"]:
            return
        ds = self.ds
        h, w = self.buf["depth"][0].shape
        feats = ds.Features({"image": ds.Image(), "depth": ds.Array2D((h, w), "float32"),
                             "material": ds.Array2D((h, w), "uint8")})
        ds.Dataset.from_dict(self.buf, features=feats).save_to_disk(os.path.join(self.root, f"shard_{self.k:05d}"))
        self.k += 1
        self.buf = {"image": [], "depth": [], "material": []}

    def close(self):
        self.flush()


def run(kind, n, size, writer_cls, workers, seed=0, shard_size=256, style="clean"):
    """Images/second to produce n samples of `kind` at size x size and (optionally) write them."""
    tmp = tempfile.mkdtemp(prefix="bench_synth_")
    try:
        writer = (writer_cls(tmp, shard_size) if writer_cls is ArrowWriter else writer_cls(tmp)) if writer_cls else None
        t0 = time.perf_counter()
        done = 0
        for part in iter_generate(kind, n, seed=seed, height=size, width=size, workers=workers, style=style):
            if writer:
                writer.write(part)
            done += len(part["meta"])
        if writer:
            writer.close()
        dt = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done / dt


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_check(n, size):
    """Peak heap while streaming n and then 4n samples to Arrow shards of 64: should not grow with N."""
    out = []
    for m in (n, 4 * n):
        tracemalloc.start()
        run("outdoor", m, size, ArrowWriter, 0, seed=1, shard_size=64)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        out.append((m, peak, rss_mb()))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small N (smoke run)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[112, 224, 518])
    ap.add_argument("--workers", type=int, default=2, help="worker processes for the multi-process rows")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads of this process")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scale = 0.25 if args.quick else 1.0
    n_for = {112: 480, 224: 120, 518: 24}
    print(f"dalib.synth benchmark | torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"cpus {os.cpu_count()} | load avg {os.getloadavg()[0]:.2f}")
    # warm-up: texture atlas, lookup tables, worker-independent caches
    run("indoor", 4, 64, None, 0)
    print(f"{'size':>9} {'kind':>8} {'N':>5} | {'render':>8} {'+npz':>8} {'+arrow':>8} | "
          f"{'render w' + str(args.workers):>10} {'+arrow w' + str(args.workers):>10}   (images/s)")
    for size in args.sizes:
        n = max(8, int(n_for.get(size, 64) * scale))
        for kind in KINDS:
            r = run(kind, n, size, None, 0)
            z = run(kind, n, size, NpzWriter, 0)
            a = run(kind, n, size, ArrowWriter, 0)
            rw = run(kind, n, size, None, args.workers)
            aw = run(kind, n, size, ArrowWriter, args.workers)
            print(f"{size:>4}x{size:<4} {kind:>8} {n:>5} | {r:8.1f} {z:8.1f} {a:8.1f} | {rw:10.1f} {aw:10.1f}",
                  flush=True)
    n = max(8, int(240 * scale))
    for kind in KINDS:
        r = run(kind, n, 112, None, 0, style="photo")
        a = run(kind, n, 112, ArrowWriter, 0, style="photo")
        print(f" 112x112  {kind:>8} {n:>5} | {r:8.1f} {'':8} {a:8.1f} |   (style='photo': + camera pipeline, JPEG)")
    n = 128 if not args.quick else 64
    print("memory while streaming outdoor 112x112 to Arrow shards (peak Python/numpy heap, process peak RSS):")
    for m, peak, rss in memory_check(n, 112):
        print(f"  N={m:5d}: tracemalloc peak {peak:7.1f} MiB | ru_maxrss {rss:7.1f} MiB")
    print(f"load avg after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
