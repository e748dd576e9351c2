"""Command line: `python -m dalib COMMAND ...` (also installed as `dalib`).

    python -m dalib predict IMAGE_OR_DIR... --weights PATH     relative depth for images (dalib.predict)
    python -m dalib export CHECKPOINT --onnx OUT.onnx          ONNX export (dalib.export)
    python -m dalib pipeline --profile cpu --run-dir runs/cpu   run the notebooks (dalib.pipeline)
    python -m dalib data {list,validate,build} ...              data manifests and datasets (dalib.data)
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "predict": ("dalib.predict", "relative depth for images or folders"),
    "export": ("dalib.export", "export a checkpoint to ONNX (dynamic batch, height, width)"),
    "pipeline": ("dalib.pipeline", "run the course notebooks headless with a profile"),
    "data": ("dalib.data.cli", "list, validate and build datasets from data_manifests/"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m dalib COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
