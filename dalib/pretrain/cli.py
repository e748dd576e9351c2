"""The command line of `dalib.pretrain`: one flag per PretrainConfig field (lists comma-separated), plus
`--export FILE` to write the encoder once the run has finished."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
from typing import Sequence

from dalib.pretrain.config import PretrainConfig, config_from_mapping
from dalib.pretrain.export import export_encoder
from dalib.pretrain.loop import pretrain


def _parser_for(default):
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    if isinstance(default, (list, tuple)):
        conv = float if default and isinstance(default[0], float) else int if default and isinstance(
            default[0], int) else str
        return lambda s: [conv(x) for x in s.split(",") if x != ""]
    if isinstance(default, (int, float)):
        return type(default)
    return lambda s: None if s.lower() == "none" else s


def _comments() -> dict[str, str]:
    """{field: its comment} from the PretrainConfig source: the help text of each flag."""
    out = {}
    for line in inspect.getsource(PretrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^#]+#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def parse_args(argv: Sequence[str] | None = None) -> tuple[PretrainConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="python -m dalib.pretrain",
                                 description="Self-supervised pretraining of the encoder (DINOv2 or MAE).")
    ap.add_argument("--export", metavar="FILE", help="after the run, write its encoder here (fp16 safetensors + .json)")
    ap.add_argument("--force-export", action="store_true", help="export a DINO run whose teacher is still uniform")
    comments = _comments()
    for f in dataclasses.fields(PretrainConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_parser_for(default), default=None,
                        help=f"{comments.get(f.name, '')} (default {default!r})".replace("%", "%%"))
    args = ap.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig)
              if getattr(args, f.name) is not None}
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
