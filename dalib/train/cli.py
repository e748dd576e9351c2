"""One training loop for the Depth Anything teacher and student: the command line.

    python -m dalib.train --config configs/train.yaml                       # a YAML of TrainConfig fields
    python -m dalib.train --datasets synth-indoor --crop 112 --steps 200 --out-dir runs/t
    torchrun --nproc_per_node 2 -m dalib.train --datasets synth-indoor ...  # DDP (NCCL on GPUs, gloo on CPU)
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
from typing import Sequence

from dalib.distributed import dist_env, report_result
from dalib.train.config import BOOL_WORDS, TrainConfig, config_from_mapping, read_config_file
from dalib.train.loop import train
from dalib.train.step import TrainHooks


def _parse_list(text: str, conv) -> list:
    return [conv(x) for x in text.split(",") if x != ""]


def _parse_bool(text: str) -> bool:
    try:
        return BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected one of {'/'.join(BOOL_WORDS)}, got {text!r}") from None


def _field_parser(f: dataclasses.Field):
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, (list, tuple)):
        elem = type(default[0]) if default else str
        conv = float if elem is float else int if elem is int else str
        return (lambda s: tuple(_parse_list(s, conv))) if isinstance(default, tuple) else (lambda s: _parse_list(s, conv))
    if isinstance(default, (int, float)):
        return type(default)
    if f.name == "data_n":
        return lambda s: None if s.lower() == "none" else int(s)
    return lambda s: None if s.lower() == "none" else s


def field_comments(cls=TrainConfig) -> dict[str, str]:
    """{field: its comment} read from a config dataclass's source (the help text of its command line)."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^#]+#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def add_field_flags(ap: argparse.ArgumentParser, cls) -> list[str]:
    """One `--field-name` flag per field of config dataclass `cls` (its comment as help; lists comma-separated,
    booleans only as true/false words); returns the field names. `python -m dalib.train` and `dalib.pretrain`."""
    comments = field_comments(cls)
    names = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_field_parser(f), default=None,
                        help=(f"{comments.get(f.name, '')} (default {default!r}"
                              + ("; comma-separated" if isinstance(default, (list, tuple)) else "") + ")").replace("%", "%%"))
        names.append(f.name)
    return names


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """`--config file.yaml` (TrainConfig fields) then `--field value` flags (lists comma-separated)."""
    ap = argparse.ArgumentParser(prog="python -m dalib.train", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file with TrainConfig fields")
    names = add_field_flags(ap, TrainConfig)
    args = ap.parse_args(argv)
    values: dict = read_config_file(args.config) if args.config else {}
    for name in names:
        v = getattr(args, name)
        if v is not None:
            values[name] = v
    return config_from_mapping(values, args.config or "command line")  # flags are known: unknowns come from the file


def command_error(prog: str, e: Exception) -> int:
    """Print one error line for a failed command; the exit code: 2 for bad settings or data (a ValueError, or a
    path that is missing, not a folder or not writable), 1 for other failures (a diverged run, a full disk)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        msg = f"{e.filename}: {e.strerror}"
    else:
        msg = str(e)
    print(f"{prog}: error: {msg}", file=sys.stderr)
    unusable_path = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)
    return 2 if isinstance(e, (ValueError, *unusable_path)) else 1


def train_and_report(cfg: TrainConfig, hooks: TrainHooks | None = None, *, prog: str = "dalib.train") -> int:
    """`train(cfg, hooks)` as a command: the result goes to the launching process (`report_result`) and, on
    rank 0, to stdout as JSON; bad settings or data (exit 2) and a diverged run (exit 1) print one error line."""
    try:
        result = train(cfg, hooks)
    except (ValueError, OSError, FloatingPointError) as e:  # bad settings or data, unusable paths, a diverged run
        return command_error(prog, e)
    report_result(result)
    if dist_env()[0] == 0:
        print(json.dumps(result, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = config_from_args(argv)
    except (ValueError, OSError) as e:  # the config file or its fields
        return command_error("dalib.train", e)
    return train_and_report(cfg)


if __name__ == "__main__":
    sys.exit(main())
