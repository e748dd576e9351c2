"""`python -m dalib.pseudo_label ...`: the command line of pseudo-labelling (usage in `dalib.pseudo_label`)."""
from __future__ import annotations

import argparse
import os
import sys

from dalib.distributed import report_result
from dalib.pseudo_label.labelling import pseudo_label
from dalib.pseudo_label.sources import parse_shard
from dalib.pseudo_label.store import DEFAULT_SHARD_SIZE


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m dalib.pseudo_label --teacher PATH --source NAME --split S --out DIR [--shard i/n] ...`."""
    p = argparse.ArgumentParser(prog="python -m dalib.pseudo_label",
                                description="label unlabelled images with a teacher (resumable, shardable)")
    p.add_argument("--teacher", required=True,
                   help="teacher weights: dalib checkpoint folder, official .pth, HF file (onnxruntime: or an .onnx file)")
    p.add_argument("--source", required=True, help="dalib.data dataset name, or a save_to_disk folder")
    p.add_argument("--split", default="train", help="split of the source (default train)")
    p.add_argument("--out", required=True, help="output folder (shards + index.json)")
    p.add_argument("--shard", type=_shard_arg, default=None,
                   help="i/n: compute shards k with k %% n == i (default RANK/WORLD_SIZE under torchrun, else 0/1)")
    p.add_argument("--input-size", type=int, default=518, help="shorter side of the network input (default 518)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--shard-size", type=int, default=None, help=f"rows per shard (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK, mps, cpu), cpu, cuda:1, ...")
    p.add_argument("--n", type=int, default=None, help="label the first N rows of the source only")
    p.add_argument("--root", default=None, help="data folder of the source (see dalib.data.serve.load)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="decoding threads (default min(4, cpus per local rank - 1), at least 1)")
    p.add_argument("--keep", action="append", default=None, metavar="COL",
                   help="source column to copy (repeatable; heldout_* loads the held-out ground truth)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                   help="torch, or onnxruntime (teacher: any checkpoint, exported once and cached, or an .onnx file)")
    p.add_argument("--overwrite", action="store_true", help="start over when DIR holds another job")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    shard = args.shard
    if shard is None:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            try:
                shard = parse_shard((os.environ["RANK"], os.environ["WORLD_SIZE"]))
            except ValueError as e:
                p.error(f"RANK/WORLD_SIZE: {e}")
        else:
            shard = (0, 1)
    try:
        res = pseudo_label(args.teacher, args.source, args.out, split=args.split, n=args.n, root=args.root,
                           input_size=args.input_size, batch_size=args.batch_size, shard=shard,
                           shard_size=args.shard_size, device=args.device, amp=not args.no_amp,
                           num_workers=args.num_workers, progress=not args.quiet, keep_columns=args.keep,
                           overwrite=args.overwrite, backend=args.backend)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    report_result(res)
    print(f"shard {shard[0]}/{shard[1]}: labelled {res['images']} images ({res['skipped']} already done) in "
          f"{res['seconds']:.1f} s = {res['images_per_s']:.1f} images/s -> {res['out_dir']}"
          + ("" if res["complete"] else " (other shards still missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
