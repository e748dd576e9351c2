"""The command line of `dalib.pretrain`: one flag per PretrainConfig field (lists comma-separated), plus
`--export FILE` to write the encoder once the run has finished."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from dalib.pretrain.config import PretrainConfig, config_from_mapping
from dalib.pretrain.export import export_encoder
from dalib.pretrain.loop import pretrain
from dalib.train.cli import add_field_flags


def parse_args(argv: Sequence[str] | None = None) -> tuple[PretrainConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="python -m dalib.pretrain",
                                 description="Self-supervised pretraining of the encoder (DINOv2 or MAE).")
    ap.add_argument("--export", metavar="FILE", help="after the run, write its encoder here (fp16 safetensors + .json)")
    ap.add_argument("--force-export", action="store_true", help="export a DINO run whose teacher is still uniform")
    names = add_field_flags(ap, PretrainConfig)
    args = ap.parse_args(argv)
    values = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return config_from_mapping(values, "command line"), args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    try:
        result = pretrain(cfg)
        if args.export and result["finished"]:
            result["export"] = export_encoder(cfg.out_dir, args.export, force=args.force_export)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"dalib.pretrain: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, FloatingPointError) else 2
    print(json.dumps(result, default=str))
    return 0
