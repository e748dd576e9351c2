"""Relative depth for images and folders (notebook 04_teacher_training shows the same in Python).

    python -m dalib predict photo.jpg photos/ --weights depth_anything_v2_vits.pth --out depth/
    python -m dalib predict photos/ --weights model.onnx --backend onnxruntime --out depth/

For every image it writes `<name>_disp16.png` (16-bit PNG of the disparity normalised to [0, 1] per
image: near = 65535), `<name>_color.png` (colourised, `dalib.viz.colorize`) and with `--npy` the raw
float32 disparity `<name>.npy`. `--weights` takes an official `.pth`, an HF-format `.safetensors` /
model directory, or a `save_pretrained` directory of this library; the format is read from the keys.
`--backend onnxruntime` runs the network in ONNX Runtime (`dalib.export`): `--weights` is then an exported
`.onnx` file, or any checkpoint, exported on the fly once (cached in ~/.cache/dalib/onnx, $DALIB_ONNX_CACHE).
Both backends share the preprocessing (`dalib.images.preprocess_batch`) and the resize back.
Unreadable images are reported by name and skipped; the exit code is then 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dalib.export import load_predictor
from dalib.images import read_image
from dalib.model import CONFIGS
from dalib.viz import colorize

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".jp2"}


# ============================================================================ inputs
def collect_inputs(inputs: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Files and folders -> [(file, name relative to its input for the outputs)], [error messages]."""
    files, errors = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if not found:
                errors.append(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_EXTS))})")
            files += [(f, f.relative_to(p).with_suffix("")) for f in found]
        elif p.is_file():
            files.append((p, Path(p.stem)))
        else:
            errors.append(f"{p}: no such file or folder")
    return files, errors


# ============================================================================ outputs
def disparity_to_uint16(disp: np.ndarray) -> np.ndarray:
    """(H, W) disparity -> uint16, min..max of the image mapped to 0..65535 (constant image -> 0)."""
    d = np.nan_to_num(disp.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = d.min(), d.max()
    x = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
    return np.round(x * 65535).astype(np.uint16)


def write_outputs(disp: np.ndarray, stem: Path, npy: bool) -> list[Path]:

    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + "_disp16.png"), stem.with_name(stem.name + "_color.png")]
    Image.fromarray(disparity_to_uint16(disp)).save(paths[0])  # mode I;16 -> 16-bit grayscale PNG
    Image.fromarray(colorize(disp)).save(paths[1])
    if npy:
        paths.append(stem.with_name(stem.name + ".npy"))
        np.save(paths[-1], disp.astype(np.float32))
    return paths


# ============================================================================ command line
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dalib predict", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders (searched recursively)")
    ap.add_argument("--weights", required=True,
                    help="official .pth, HF .safetensors / model dir, dalib checkpoint dir, or (onnxruntime) an .onnx file")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                    help="torch (PyTorch) or onnxruntime (a checkpoint is exported to ONNX on the fly, cached)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of the backend (default: torch's count)")
    ap.add_argument("--encoder", default=None, help="vitt|vits|vitb|vitl|vitg (default: read from the weights)")
    ap.add_argument("--version", default=None, choices=("v1", "v2"), help="Depth Anything version (default v2; HF dirs carry it)")
    ap.add_argument("--input-size", type=int, default=518, help="shorter side of the network input, multiple of 14 (518)")
    ap.add_argument("--out", default="depth_predictions", help="output folder (created)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--npy", action="store_true", help="also write the raw float32 disparity as .npy")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    ap.add_argument("--max-size", type=int, default=4096,
                    help="downscale images whose longer side exceeds this before inference; outputs use that size (0 = never)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.encoder is not None and args.encoder not in CONFIGS:
        print(f"error: --encoder {args.encoder!r}: expected one of {sorted(CONFIGS)}", file=sys.stderr)
        return 2
    if args.input_size < 14 or args.input_size % 14:
        print(f"error: --input-size {args.input_size}: must be a positive multiple of 14", file=sys.stderr)
        return 2
    files, errors = collect_inputs(args.inputs)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads {args.threads}: must be >= 1", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    try:  # before the model loads and any image is read: an unusable --out fails once, not once per image
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        print(f"error: --out {out}: not a folder ({e.strerror})", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: --out {out}: cannot create the folder ({e.strerror or e})", file=sys.stderr)
        return 2
    try:
        model = load_predictor(args.weights, args.backend, device=args.device, threads=args.threads,
                               encoder=args.encoder, version=args.version)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: cannot load weights: {e}", file=sys.stderr)
        return 2
    used: set[Path] = set()
    failed, done = len(errors), 0
    for path, rel in tqdm(files, desc="predict", unit="img", disable=len(files) < 2):
        stem = out / rel
        n = 1
        while stem in used:  # two inputs with one name (e.g. a.png and a.jpg): a_1, a_2, ...
            stem = out / rel.parent / f"{rel.name}_{n}"
            n += 1
        used.add(stem)
        try:
            rgb = read_image(path, args.max_size)
            disp = model.infer_image(rgb, args.input_size, amp=args.bf16)
            write_outputs(disp, stem, args.npy)
            done += 1
        except (ValueError, OSError) as e:
            failed += 1
            tqdm.write(f"error: {e}" if str(path) in str(e) else f"error: {path}: {e}", file=sys.stderr)
    print(f"wrote {done} of {done + failed - len(errors)} images to {out}"
          + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
