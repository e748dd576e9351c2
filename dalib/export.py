"""ONNX export of DepthAnything and an onnxruntime backend for inference (notebook 08_deployment).

    python -m dalib export runs/cpu/student/v2 --onnx student.onnx        # any checkpoint -> ONNX
    python -m dalib predict photo.jpg --weights student.onnx --backend onnxruntime --out depth/

    >>> from dalib.export import export_onnx, OnnxDepthAnything, load_predictor
    >>> export_onnx(model, "model.onnx")
    >>> onnx_model = OnnxDepthAnything("model.onnx")       # infer_image / infer_batch like DepthAnything
    >>> predictor = load_predictor("depth_anything_v2_vits.pth", backend="onnxruntime")

The graph comes from `torch.onnx.export(..., dynamo=True)` (torch.export): batch, height and width are
dynamic (height and width multiples of 14), and the official position-embedding interpolation, which
depends on the input size, is computed inside the graph (`dalib.pos_embed.interpolate_pos_encoding_traceable`).
The file carries metadata (`metadata_props`): encoder, version, patch size, input normalisation, the
source checkpoint's sha256 and a sha256 of the weights. Files are written atomically: an export that
fails leaves no file behind and an older file at the same path untouched.

Both backends run one preprocessing (`dalib.images.preprocess_batch`) and one inference recipe
(`dalib.images.infer_images`); only the network call differs.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from dalib.distributed import resolve_device
from dalib.images import IMAGENET_MEAN, IMAGENET_STD, PATCH, infer_images
from dalib.model import DepthAnything
from dalib.shards import file_sha256
from dalib.weights import load_weights

ONNX_FORMAT = "dalib.DepthAnything.onnx/1"  # metadata "format" of the files written here
INPUT_NAME, OUTPUT_NAME = "image", "disparity"
SAMPLE_SIZE = (266, 350)  # traced example (not the 37 x 37 training grid: that case is chosen in the graph)
MAX_PATCHES = 1024  # dynamic height/width range: 14 .. 14 * MAX_PATCHES pixels
MAX_BATCH = 4096
CHECK_RTOL = 1e-3  # export_onnx(check=True): largest relative error of ONNX Runtime vs PyTorch accepted
PROTOBUF_LIMIT = 2_000_000_000  # bytes; larger models keep their weights in OUT.onnx.data


# ============================================================================ hashes
def checkpoint_sha256(path) -> str:
    """sha256 of a weights file, or of the files `dalib.weights.load_weights` reads from a checkpoint folder
    (config.json, model.safetensors, pytorch_model.bin; names and contents)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such weights file or checkpoint folder")
    h = hashlib.sha256()
    files = [p / n for n in ("config.json", "model.safetensors", "pytorch_model.bin") if (p / n).is_file()]
    if not files:
        raise FileNotFoundError(f"{p}: holds no config.json, model.safetensors or pytorch_model.bin")
    for f in files:
        h.update(f.name.encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def weights_sha256(model) -> str:
    """sha256 over the names, shapes and float32 bytes of a model's state dict."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# ============================================================================ export
def _check_output_path(path: Path) -> None:
    """Fail early, before minutes of export, when `path` cannot be written; creates missing parent folders."""
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; expected the path of the .onnx file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe-"):
            pass
    except OSError as e:
        raise OSError(f"{path}: cannot write the ONNX file there ({type(e).__name__}: {e.strerror or e})") from None


def _metadata(model, source, sha_source: str | None) -> dict[str, str]:
    return {
        "format": ONNX_FORMAT,
        "encoder": model.encoder,
        "version": model.version,
        "patch_size": str(PATCH),
        "input": f"{INPUT_NAME}: float32 (B, 3, H, W), RGB in [0, 1] normalised as (x - mean) / std per channel; "
                 f"H and W multiples of {PATCH}",
        "input_mean": json.dumps(list(IMAGENET_MEAN)),
        "input_std": json.dumps(list(IMAGENET_STD)),
        "output": f"{OUTPUT_NAME}: float32 (B, H, W) relative disparity (>= 0; larger = nearer)",
        "source": str(source) if source is not None else "",
        "source_sha256": sha_source or "",
        "weights_sha256": weights_sha256(model),
        "config": json.dumps(dataclasses.asdict(model.cfg)),
        "torch_version": torch.__version__,
    }


def save_atomic(write, path: Path) -> Path:
    """Run `write(tmp_path)` on a path with `path`'s file name inside a temporary folder next to `path`, then
    move the result (and an external-data file `<name>.data`, when `write` made one) into place with
    os.replace. When `write` raises, nothing is left behind and an existing file at `path` is untouched."""
    path = Path(path)
    tmpdir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        tmp = tmpdir / path.name
        write(tmp)
        if not tmp.is_file():
            raise RuntimeError(f"{path}: the exporter wrote no file")
        data = tmpdir / (path.name + ".data")
        if data.is_file():  # weights stored outside the protobuf (models > 2 GB): in place before the graph
            os.replace(data, path.parent / data.name)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def export_onnx(model, path, *, source=None, size: tuple[int, int] | None = None, opset: int | None = None,
                check: bool = True, optimize: bool = True) -> Path:
    """DepthAnything -> ONNX file at `path` (atomic), with dynamic batch, height and width (multiples of 14).

    model: a DepthAnything (any size, V1 or V2; its device and training mode are left as they were).
    source: the checkpoint it came from (a path): its sha256 goes into the metadata. size: None (dynamic
    height and width), or a fixed (H, W) network input, multiples of 14: a graph for that size only, exported
    about 3x faster (the symbolic shapes of a dynamic export dominate its time); the batch stays dynamic.
    opset: ONNX opset (default: torch's). check: run the written graph in ONNX Runtime and compare with
    PyTorch (relative error <= 1e-3, else RuntimeError and no file). Returns `path`. Notebook 08_deployment.
    OSError (naming `path`) when the file cannot be written there, before any work.
    """
    if not isinstance(model, DepthAnything):
        raise TypeError(f"export_onnx: expected a dalib.model.DepthAnything, got {type(model).__name__}")
    path = Path(path)
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if min(size) < PATCH or size[0] % PATCH or size[1] % PATCH:
            raise ValueError(f"size {size[0]}x{size[1]}: height and width must be positive multiples of {PATCH}")
    _check_output_path(path)
    sha_source = checkpoint_sha256(source) if source is not None else None
    m = copy.deepcopy(model).to("cpu", torch.float32).eval()
    m.grad_checkpointing = False
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    ph = torch.export.Dim("patches_h", min=1, max=MAX_PATCHES)
    pw = torch.export.Dim("patches_w", min=1, max=MAX_PATCHES)
    x = torch.randn(2, 3, *(size or SAMPLE_SIZE), generator=torch.Generator().manual_seed(0))  # batch 2: not specialised
    dims = {0: batch} if size else {0: batch, 2: PATCH * ph, 3: PATCH * pw}
    kw = {} if opset is None else {"opset_version": opset}

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            m, (x,), dynamo=True, dynamic_shapes={"x": dims},
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], optimize=optimize, verbose=False, **kw)
    program.model.metadata_props.update(_metadata(m, source, sha_source))
    program.model.metadata_props["input_size"] = f"{size[0]}x{size[1]}" if size else "dynamic"
    program.model.doc_string = f"Depth Anything {m.version.upper()} {m.encoder} exported by dalib.export"
    big = sum(p.numel() * p.element_size() for p in m.parameters()) > PROTOBUF_LIMIT

    def write(tmp: Path) -> None:
        program.save(str(tmp), external_data=big)
        if check:
            _check_against_torch(m, tmp, [(1, 3, *size), (3, 3, *size)] if size else None)

    return save_atomic(write, path)


def _check_against_torch(model, onnx_path: Path, shapes=None) -> None:
    """The written graph in ONNX Runtime vs the PyTorch model (dynamic: at sizes other than the traced one)."""
    runner = OnnxDepthAnything(onnx_path, threads=torch.get_num_threads())
    g = torch.Generator().manual_seed(1)
    for shape in shapes or ((1, 3, 70, 98), (3, 3, 42, 28)):
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            ref = model(x)
        err = float((runner(x) - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        if not err <= CHECK_RTOL:
            raise RuntimeError(f"ONNX export check failed: ONNX Runtime differs from PyTorch by {err:.2e} "
                               f"(relative, input {tuple(shape)}); nothing written")


def export_checkpoint(weights, path, *, encoder: str | None = None, version: str | None = None, **kw) -> Path:
    """A checkpoint (dalib folder, official .pth, HF .safetensors / folder) -> ONNX file (`export_onnx`)."""

    weights = Path(weights)
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: no such checkpoint (a dalib checkpoint folder, an official .pth, "
                                f"or an HF .safetensors file or folder)")
    _check_output_path(Path(path))
    model = load_weights(weights, encoder=encoder, version=version)
    return export_onnx(model, path, source=weights, **kw)


def onnx_cache_dir() -> Path:
    """Where exports made on the fly are kept: $DALIB_ONNX_CACHE, default ~/.cache/dalib/onnx."""
    return Path(os.environ.get("DALIB_ONNX_CACHE", Path.home() / ".cache" / "dalib" / "onnx"))


def onnx_for(weights, *, encoder: str | None = None, version: str | None = None) -> Path:
    """An .onnx file for any weights: the file itself when it is one, else the export of the checkpoint,
    made once and kept in `onnx_cache_dir()` under the checkpoint's sha256 (and torch version)."""
    p = Path(weights)
    if p.suffix.lower() == ".onnx":
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such ONNX file")
        return p
    sha = checkpoint_sha256(p)
    key = hashlib.sha256(f"{sha}/{version}/{encoder}/{torch.__version__}/{ONNX_FORMAT}".encode()).hexdigest()[:24]
    out = onnx_cache_dir() / f"{key}.onnx"
    if not out.is_file():
        export_checkpoint(p, out, encoder=encoder, version=version)
    return out


# ============================================================================ onnxruntime backend
class OnnxDepthAnything:
    """An exported DepthAnything in ONNX Runtime, with the inference side of `DepthAnything`:
    `model(x)` ((B,3,H,W) -> (B,H,W) tensor), `infer_image`, `infer_batch` (notebook 08_deployment).

    path: a file written by `export_onnx`. threads: intra-op threads (default: torch's thread count).
    providers: ONNX Runtime execution providers (default: CUDA when available, else CPU).
    """

    training = False  # duck-types nn.Module's inference switches (pseudo-labelling calls eval/train)

    def __init__(self, path, *, threads: int | None = None, providers=None):
        import onnxruntime as ort  # local: a large native library, for this backend only

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        self.num_threads = int(threads or torch.get_num_threads())
        opts.intra_op_num_threads = self.num_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{self.path}: not a loadable ONNX model ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:300]})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("format") != ONNX_FORMAT:
            raise ValueError(f"{self.path}: not a Depth Anything export of dalib (metadata format="
                             f"{self.metadata.get('format')!r}, expected {ONNX_FORMAT!r}); write one with "
                             f"`python -m dalib export CHECKPOINT --onnx OUT.onnx`")
        self.encoder = self.metadata.get("encoder", "")
        self.version = self.metadata.get("version", "")
        self.patch = int(self.metadata.get("patch_size", 14))
        fixed = self.metadata.get("input_size", "dynamic")
        self.fixed_size = None if fixed == "dynamic" else tuple(int(v) for v in fixed.split("x"))

    def __repr__(self) -> str:
        return (f"OnnxDepthAnything({str(self.path)!r}, encoder={self.encoder!r}, version={self.version!r}, "
                f"providers={self.session.get_providers()}, threads={self.num_threads})")

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def __call__(self, x) -> torch.Tensor:
        """(B, 3, H, W) float32 ImageNet-normalised (tensor or array), H, W multiples of 14 -> (B, H, W) tensor."""
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"{self.path.name}: expected images (B, 3, H, W), got shape {tuple(a.shape)}")
        h, w = a.shape[-2:]
        if h % self.patch or w % self.patch or h == 0 or w == 0:
            raise ValueError(f"{self.path.name}: input size {h}x{w}: height and width must be positive multiples "
                             f"of {self.patch} (the patch size)")
        if self.fixed_size is not None and (h, w) != self.fixed_size:
            raise ValueError(f"{self.path.name}: input size {h}x{w}: this export takes {self.fixed_size[0]}x"
                             f"{self.fixed_size[1]} only (exported with a fixed size; export without `size` for any)")
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(a, dtype=np.float32)})[0]
        return torch.from_numpy(out)

    def infer_image(self, image, input_size: int = 518, **_) -> np.ndarray:
        """One image (path, PIL, RGB numpy) -> (H, W) float32 disparity; as `DepthAnything.infer_image`."""
        return self.infer_batch([image], input_size, batch_size=1)[0]

    def infer_batch(self, images, input_size: int = 518, *, batch_size: int = 8, **_) -> list[np.ndarray]:
        """Many images -> (H_i, W_i) float32 disparities; as `DepthAnything.infer_batch` (`infer_images`)."""

        return infer_images(self, images, input_size, batch_size=batch_size)


def is_onnx_teacher(teacher) -> bool:
    """An `OnnxDepthAnything` or a path ending in .onnx."""
    return isinstance(teacher, OnnxDepthAnything) or (
        isinstance(teacher, (str, os.PathLike)) and str(teacher).lower().endswith(".onnx"))


def onnx_runner(teacher, *, threads: int | None = None) -> OnnxDepthAnything:
    """An OnnxDepthAnything for a teacher given as one, as an .onnx path, as a checkpoint path (`onnx_for`), or
    as a DepthAnything (exported once into `onnx_cache_dir()` under the sha256 of its weights). Pseudo-labelling."""

    if isinstance(teacher, OnnxDepthAnything):
        return teacher
    if isinstance(teacher, DepthAnything):
        key = hashlib.sha256(f"{weights_sha256(teacher)}/{teacher.version}/{torch.__version__}/{ONNX_FORMAT}".encode())
        out = onnx_cache_dir() / f"model-{key.hexdigest()[:24]}.onnx"
        if not out.is_file():
            export_onnx(teacher, out)
        return OnnxDepthAnything(out, threads=threads)
    if isinstance(teacher, (str, os.PathLike)):
        return OnnxDepthAnything(onnx_for(teacher), threads=threads)
    raise TypeError(f"teacher: expected a DepthAnything, an OnnxDepthAnything or a path, got {type(teacher).__name__}")


BACKENDS = ("torch", "onnxruntime")


def load_predictor(weights, backend: str = "torch", *, device=None, threads: int | None = None,
                   encoder: str | None = None, version: str | None = None):
    """Weights -> an object with `infer_image` / `infer_batch` (and `model(x)`), on the chosen backend.

    backend "torch": `DepthAnything` on `device` (auto: CUDA, MPS, CPU); weights: any checkpoint.
    backend "onnxruntime": `OnnxDepthAnything`; weights: an .onnx file, or any checkpoint, exported on the
    fly once (`onnx_for`, cached). Notebook 08_deployment.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    p = Path(weights)
    if backend == "onnxruntime":
        return OnnxDepthAnything(onnx_for(p, encoder=encoder, version=version), threads=threads)
    if p.suffix.lower() == ".onnx":
        raise ValueError(f"{p}: an ONNX file runs on the onnxruntime backend (--backend onnxruntime), "
                         f"not on torch")

    return load_weights(p, encoder=encoder, version=version).to(resolve_device(device)).eval()


# ============================================================================ command line
def main(argv: list[str] | None = None) -> int:
    """`python -m dalib export CHECKPOINT --onnx OUT.onnx`."""
    ap = argparse.ArgumentParser(prog="python -m dalib export",
                                 description="export a Depth Anything checkpoint to ONNX (dynamic batch, height, width)")
    ap.add_argument("checkpoint", help="dalib checkpoint folder, official .pth, or HF .safetensors file / folder")
    ap.add_argument("--onnx", required=True, metavar="OUT.onnx", help="file to write (atomically)")
    ap.add_argument("--encoder", default=None, help="vitt|vits|vitb|vitl|vitg (default: read from the weights)")
    ap.add_argument("--version", default=None, choices=("v1", "v2"), help="Depth Anything version (default v2)")
    ap.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's)")
    ap.add_argument("--size", default=None, metavar="HxW", help="fixed network input (e.g. 518x686); default: dynamic")
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    args = ap.parse_args(argv)
    size = None
    if args.size:
        try:
            size = tuple(int(v) for v in args.size.lower().split("x"))
            assert len(size) == 2
        except (ValueError, AssertionError):
            ap.error(f"--size {args.size!r}: expected HxW, e.g. 518x686")
    try:
        out = export_checkpoint(args.checkpoint, args.onnx, encoder=args.encoder, version=args.version,
                                size=size, opset=args.opset, check=not args.no_check)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = OnnxDepthAnything(out, threads=1).metadata
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {meta['encoder']} {meta['version']}, "
          f"source sha256 {meta['source_sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
