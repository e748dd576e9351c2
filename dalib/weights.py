"""Foreign weights: official Depth Anything, `transformers` (HF) and DINOv2 encoder checkpoints (notebooks
04_teacher_training, 06_student_training and 08_deployment).

    from dalib.weights import load_weights, from_official_state_dict, to_hf_state_dict
    model = load_weights("depth_anything_v2_vits.pth")   # official .pth, HF file/folder, or a dalib folder
    model = build_model("vits", pretrained_encoder=True) # encoder: DINOv2 (local file, HF cache, hub); head random
    hf_sd = to_hf_state_dict(model)                      # names of transformers' DepthAnythingForDepthEstimation

Files are read safely: safetensors, or `torch.load(..., weights_only=True)` (tensors only; a file that
is not weights gets an error naming it, never advice to unpickle). Our own format (`save_pretrained` /
`from_pretrained`) lives in `dalib.model`, which this module builds on.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dalib.hub import HubFileError, hub_file
from dalib.images import PATCH
from dalib.model import (CHECKPOINT_FORMAT, CONFIGS, MODEL_CONFIG_FILE, WEIGHT_FORMATS, WEIGHTS_FILE, DepthAnything,
                         get_config, load_state_dict_strict, read_safetensors)
from dalib.runfiles import read_json_object
from dalib.shards import file_sha256


# ============================================================================ building a model
def build_model(encoder: str = "vits", version: str = "v2", pretrained_encoder=None) -> DepthAnything:
    """`DepthAnything(encoder, version)` with its encoder filled from DINOv2 weights when `pretrained_encoder`
    is a file, True or "auto" (`load_encoder_weights`); None or False: random init."""
    model = DepthAnything(encoder, version)
    if pretrained_encoder is not None and pretrained_encoder is not False:
        load_encoder_weights(model, pretrained_encoder)
    return model


# ============================================================================ weight conversion
def _official_to_ours(sd: dict) -> dict:
    """Official names -> module names; identical except the SwiGLU MLP of vitg (w12/w3 -> timm fc1/fc2)."""
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        k = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", k)
        k = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)
        out[k] = v
    return out


def infer_encoder(sd: dict) -> str:
    """Name of the CONFIGS entry whose encoder width and depth match a state dict (official or HF names)."""
    pos = sd.get("pretrained.pos_embed", sd.get("backbone.embeddings.position_embeddings"))
    if pos is None:
        raise ValueError("cannot infer the encoder size: no 'pretrained.pos_embed' or "
                         "'backbone.embeddings.position_embeddings' in the weights")
    pat = re.compile(r"^(?:pretrained\.blocks|backbone\.encoder\.layer)\.(\d+)\.")
    depth = 1 + max((int(m.group(1)) for k in sd if (m := pat.match(k))), default=-1)
    for name, cfg in CONFIGS.items():
        if cfg.embed_dim == pos.shape[-1] and cfg.depth == depth:
            return name
    raise ValueError(f"no CONFIGS entry has embed_dim={pos.shape[-1]} and depth={depth}")


def from_official_state_dict(sd: dict, encoder: str | None = None, version: str = "v2") -> DepthAnything:
    """Official Depth Anything checkpoint (`torch.load(..., weights_only=True)`) -> DepthAnything, strict."""
    sd = _official_to_ours(sd)
    model = DepthAnything(encoder or infer_encoder(sd), version=version)
    load_state_dict_strict(model, sd, "official state dict")
    return model


# transformers' DepthAnythingForDepthEstimation names. HF fusion_stage.layers.{0,1,2,3} = refinenet{4,3,2,1}.
_HEAD_TO_HF = [
    (r"depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
    (r"depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
    (r"depth_head\.scratch\.output_conv1\.", "head.conv1."),
    (r"depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
    (r"depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
]
_BLOCK_TO_HF = {  # official suffix inside blocks.N -> (new HF, legacy HF hub) suffix inside encoder.layer.N
    "norm1": ("norm1", "norm1"),
    "attn.proj": ("attention.o_proj", "attention.output.dense"),
    "ls1.gamma": ("layer_scale1.lambda1", "layer_scale1.lambda1"),
    "norm2": ("norm2", "norm2"),
    "ls2.gamma": ("layer_scale2.lambda1", "layer_scale2.lambda1"),
    "mlp.fc2": ("mlp.fc2", "mlp.fc2"),
}
_EMBED_TO_HF = {
    "pretrained.cls_token": "backbone.embeddings.cls_token",
    "pretrained.mask_token": "backbone.embeddings.mask_token",
    "pretrained.pos_embed": "backbone.embeddings.position_embeddings",
    "pretrained.patch_embed.proj.weight": "backbone.embeddings.patch_embeddings.projection.weight",
    "pretrained.patch_embed.proj.bias": "backbone.embeddings.patch_embeddings.projection.bias",
    "pretrained.norm.weight": "backbone.layernorm.weight",
    "pretrained.norm.bias": "backbone.layernorm.bias",
}


def _head_key_to_hf(k: str) -> str:
    m = re.match(r"depth_head\.scratch\.layer(\d)_rn\.(.*)", k)
    if m:
        return f"neck.convs.{int(m.group(1)) - 1}.{m.group(2)}"
    m = re.match(r"depth_head\.scratch\.refinenet(\d)\.(.*)", k)
    if m:
        rest = m.group(2).replace("out_conv", "projection")
        rest = rest.replace("resConfUnit1", "residual_layer1").replace("resConfUnit2", "residual_layer2")
        rest = rest.replace("conv1", "convolution1").replace("conv2", "convolution2")
        return f"neck.fusion_stage.layers.{4 - int(m.group(1))}.{rest}"
    for pat, rep in _HEAD_TO_HF:
        if re.match(pat, k):
            return re.sub(pat, rep, k)
    raise KeyError(f"no transformers name for {k!r}")


def to_hf_state_dict(model: DepthAnything, legacy: bool = False) -> dict[str, Tensor]:
    """Our weights -> `transformers` DepthAnythingForDepthEstimation names.

    legacy=False: the module names of transformers >= 5 (`attention.q_proj`, ...), loadable with
    `hf_model.load_state_dict`. legacy=True: the names in the hub checkpoints and transformers 4
    (`attention.attention.query`, `mlp.weights_in`, ...). qkv is split into query/key/value.
    """
    swiglu = model.cfg.ffn == "swiglu"
    out: dict[str, Tensor] = {}
    which = 1 if legacy else 0
    for k, v in model.state_dict().items():
        if k in _EMBED_TO_HF:
            out[_EMBED_TO_HF[k]] = v
            continue
        m = re.match(r"pretrained\.blocks\.(\d+)\.(.*)\.(weight|bias|gamma)$", k)
        if m:
            n, mod, kind = m.groups()
            pre = f"backbone.encoder.layer.{n}."
            if mod == "attn.qkv":
                names = ("attention.attention.query", "attention.attention.key", "attention.attention.value") \
                    if legacy else ("attention.q_proj", "attention.k_proj", "attention.v_proj")
                for name, part in zip(names, v.chunk(3, dim=0)):  # qkv rows = [q; k; v]
                    out[f"{pre}{name}.{kind}"] = part
            elif mod == "mlp.fc1" and swiglu:
                if legacy:
                    out[f"{pre}mlp.weights_in.{kind}"] = v
                else:  # official SwiGLU: x1, x2 = w12(x).chunk(2); silu(x1) * x2 -> gate = x1, up = x2
                    gate, up = v.chunk(2, dim=0)
                    out[f"{pre}mlp.gate_proj.{kind}"], out[f"{pre}mlp.up_proj.{kind}"] = gate, up
            elif mod == "mlp.fc2" and swiglu:
                out[f"{pre}mlp.{'weights_out' if legacy else 'down_proj'}.{kind}"] = v
            elif mod == "mlp.fc1":
                out[f"{pre}mlp.fc1.{kind}"] = v
            else:
                base = f"{mod}.gamma" if kind == "gamma" else mod
                if base not in _BLOCK_TO_HF:
                    raise KeyError(f"no transformers name for {k!r}")
                hf = _BLOCK_TO_HF[base][which]
                out[pre + hf if kind == "gamma" else f"{pre}{hf}.{kind}"] = v
            continue
        out[_head_key_to_hf(k)] = v
    return out


def _hf_to_official(sd: dict) -> dict:
    """transformers DepthAnything names (new or legacy) -> our module names."""
    sd = dict(sd)
    out: dict[str, Tensor] = {}
    inv_embed = {v: k for k, v in _EMBED_TO_HF.items()}
    inv_block = {}
    for ours, hf in _BLOCK_TO_HF.items():
        for name in hf:
            inv_block[name] = ours
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    glu: dict[tuple[str, str], dict[str, Tensor]] = {}
    for k, v in sd.items():
        if k in inv_embed:
            out[inv_embed[k]] = v
            continue
        m = re.match(r"backbone\.encoder\.layer\.(\d+)\.(.*)\.(weight|bias|lambda1)$", k)
        if m:
            n, mod, kind = m.groups()
            pre = f"pretrained.blocks.{n}."
            qm = re.match(r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)$", mod)
            if qm:
                part = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}[qm.group(1)]
                qkv.setdefault((n, kind), {})[part] = v
            elif mod in ("mlp.gate_proj", "mlp.up_proj"):
                glu.setdefault((n, kind), {})[mod] = v
            elif mod == "mlp.weights_in":
                out[f"{pre}mlp.fc1.{kind}"] = v
            elif mod in ("mlp.weights_out", "mlp.down_proj"):
                out[f"{pre}mlp.fc2.{kind}"] = v
            elif mod == "mlp.fc1":
                out[f"{pre}mlp.fc1.{kind}"] = v
            elif kind == "lambda1":
                out[pre + inv_block[f"{mod}.lambda1"]] = v
            elif mod in inv_block:
                out[f"{pre}{inv_block[mod]}.{kind}"] = v
            else:
                raise KeyError(f"unknown transformers key {k!r}")
            continue
        out[k] = v  # head keys: translated below
    for (n, kind), parts in qkv.items():
        if set(parts) != {0, 1, 2}:
            raise KeyError(f"layer {n}: attention {kind} needs query, key and value; got parts {sorted(parts)}")
        out[f"pretrained.blocks.{n}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    for (n, kind), parts in glu.items():
        out[f"pretrained.blocks.{n}.mlp.fc1.{kind}"] = torch.cat([parts["mlp.gate_proj"], parts["mlp.up_proj"]], 0)
    return out


def from_hf_state_dict(sd: dict, encoder: str | None = None, version: str = "v2") -> DepthAnything:
    """transformers DepthAnythingForDepthEstimation weights (new or legacy names) -> DepthAnything, strict.

    HF out_indices are 1-based over [embeddings, block 0, ...]: V2-S/B [3,6,9,12] = our blocks [2,5,8,11].
    """
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    enc = encoder or infer_encoder(sd)
    model = DepthAnything(enc, version=version)
    hf_head = {_head_key_to_hf(k): k for k in model.state_dict() if k.startswith("depth_head.")}
    conv = _hf_to_official({k: v for k, v in sd.items() if k.startswith("backbone.")})
    for k, v in sd.items():
        if k.startswith("backbone."):
            continue
        if k not in hf_head:
            raise KeyError(f"unknown transformers key {k!r} for DepthAnything({enc!r})")
        conv[hf_head[k]] = v
    load_state_dict_strict(model, conv, "transformers state dict")
    return model


def hf_config(encoder: str, version: str = "v2") -> dict:
    """kwargs for `transformers.DepthAnythingConfig(**hf_config(...))` describing the same network."""
    cfg = get_config(encoder)
    backbone = dict(model_type="dinov2", hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth,
                    num_attention_heads=cfg.num_heads, image_size=cfg.img_size, patch_size=PATCH,
                    layerscale_value=1.0, use_swiglu_ffn=cfg.ffn == "swiglu", mlp_ratio=4,
                    out_indices=[i + 1 for i in cfg.block_indices(version)], reshape_hidden_states=False,
                    apply_layernorm=True)
    return dict(backbone_config=backbone, reassemble_hidden_size=cfg.embed_dim, patch_size=PATCH,
                neck_hidden_sizes=list(cfg.out_channels), fusion_hidden_size=cfg.features,
                reassemble_factors=[4, 2, 1, 0.5], head_hidden_size=32, depth_estimation_type="relative")


# ============================================================================ loading any checkpoint
def torch_load_tensors(path: Path, what: str = "weights file", advice: str = WEIGHT_FORMATS):
    """torch.load(weights_only=True) on the CPU, with an error naming the file, then `advice`, for a file that is
    not a tensors-only checkpoint.

    torch's own error for such a file suggests `weights_only=False`, i.e. running the file's pickled code;
    this message does not, and names the file instead. Also reads the training state of `dalib.train`."""

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, KeyError,
            IndexError, TypeError, AttributeError) as e:  # text or other bytes trip the unpickler anywhere
        raise ValueError(f"{path}: not a readable {what}: torch.load(weights_only=True) rejected it "
                         f"({type(e).__name__}): it is not a PyTorch checkpoint, or it holds objects other than "
                         f"tensors, which are never unpickled; {advice}") from None


def _read_state_dict(path: Path) -> dict:
    """A .safetensors or torch pickle (.pth/.pt/.bin) file -> flat state dict (never unpickles objects)."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    sd = torch_load_tensors(path)
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return sd


def load_weights(path: str | os.PathLike, encoder: str | None = None, version: str | None = None) -> DepthAnything:
    """Any Depth Anything weights -> DepthAnything. Detects the format from the keys.

    path: a dalib `save_pretrained` directory; an official `.pth`; an HF-format `.safetensors`/`.bin` or
    an HF model directory (config.json + model.safetensors). encoder: checked against the weights
    (inferred when None). version: "v1"/"v2" (HF directories carry it in config.json; default v2).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such weights file or directory")
    hf_out_indices = None
    if p.is_dir():
        cfg_path = p / MODEL_CONFIG_FILE
        cfg = read_json_object(cfg_path, "a model folder's config.json describes the model (a dalib checkpoint's, "
                               "or a transformers one)") if cfg_path.is_file() else {}
        if cfg.get("format") == CHECKPOINT_FORMAT:
            model = DepthAnything.from_pretrained(p)
            if encoder and encoder != model.encoder:
                raise ValueError(f"{p}: holds a {model.encoder!r} model, but encoder={encoder!r} was asked for")
            return model
        files = [p / n for n in (WEIGHTS_FILE, "pytorch_model.bin") if (p / n).is_file()]
        if not files:
            raise FileNotFoundError(f"{p}: no {MODEL_CONFIG_FILE} of a dalib checkpoint and no model.safetensors")
        hf_out_indices = (cfg.get("backbone_config") or {}).get("out_indices")
        p = files[0]
    sd = _read_state_dict(p)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    official = any(k.startswith("pretrained.") for k in sd)
    if not official and not any(k.startswith("backbone.") for k in sd):
        raise ValueError(f"{p}: unknown key layout (first keys {list(sd)[:3]}); expected official "
                         "'pretrained.*'/'depth_head.*' or transformers 'backbone.*'/'neck.*'/'head.*'")
    try:
        found = infer_encoder(sd)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
    if encoder and encoder != found:
        raise ValueError(f"{p}: weights are for {found!r} (embed dim / depth), but encoder={encoder!r} was asked for")
    hf_version = None
    if hf_out_indices:  # 1-based block numbers in the HF config tell V1 (last four) from V2
        for v in ("v2", "v1"):
            if [i + 1 for i in CONFIGS[found].block_indices(v)] == list(hf_out_indices):
                hf_version = v
        if hf_version is None:
            raise ValueError(f"{p.parent}/{MODEL_CONFIG_FILE}: out_indices {hf_out_indices} match neither V1 nor V2 "
                             f"of {found!r}")
    try:
        if official:
            return from_official_state_dict(sd, found, version or "v2")
        return from_hf_state_dict(sd, found, version or hf_version or "v2")
    except (KeyError, ValueError) as e:
        raise ValueError(f"{p}: {e}") from None


# ============================================================================ DINOv2 encoder weights
def _weights_dir() -> Path:
    return Path(os.environ.get("DALIB_WEIGHTS_DIR", Path.home() / ".cache" / "dalib"))


@dataclass(frozen=True)
class HubWeights:
    """A weights file on the Hugging Face hub at a pinned commit (`dalib.hub.hub_file`)."""

    repo_id: str  # owner/name of the model repository
    filename: str  # the weights file in it
    revision: str  # the pinned commit (40 hex digits)
    encoder: str  # dalib.model.CONFIGS key it holds
    license: str  # as the model card states it
    size: str  # as the hub lists it
    card: str  # the model card's URL


# DINOv2 encoders as timm publishes them (the weights of github.com/facebookresearch/dinov2 in timm's layout,
# Apache-2.0 on each card), at commits whose file lists were checked on the hub (model.safetensors)
DINOV2_WEIGHTS = {name: HubWeights(f"timm/{timm_name}.lvd142m", "model.safetensors", revision, name, "Apache-2.0",
                                   size, f"https://huggingface.co/timm/{timm_name}.lvd142m")
                  for name, timm_name, revision, size in (
                      ("vits", "vit_small_patch14_dinov2", "0686a689726076609b20e80d263cb5aa7be945f5", "88 MB"),
                      ("vitb", "vit_base_patch14_dinov2", "117371543cc3adbf9bda0dbd93a85577e9f362a7", "346 MB"),
                      ("vitl", "vit_large_patch14_dinov2", "7eb792a1b3aabe5d55f3da6ff9e2e084744e25f9", "1.22 GB"),
                      ("vitg", "vit_giant_patch14_dinov2", "871560b601972c6d7c2a08a2c6e4f2c83c840432", "4.55 GB"))}

# official Depth Anything checkpoints, evaluated beside a run's models (notebook 07); checked on the model card
OFFICIAL_WEIGHTS = {
    "V2-S": HubWeights("depth-anything/Depth-Anything-V2-Small", "depth_anything_v2_vits.pth",
                       "c39ba42370cc2915c194638f9fa23d5cecf6f410", "vits", "Apache-2.0", "99.2 MB",
                       "https://huggingface.co/depth-anything/Depth-Anything-V2-Small"),
}
# The course's own vitt encoders, pretrained without labels by `dalib.pretrain` (notebook 03a) and shipped in
# dalib/encoders/ as fp16 safetensors, each with a JSON beside it (images seen, the command that reproduces it):
# pretrained_encoder name -> (file, the sha256 loading checks)
ENCODER_DIR = Path(__file__).resolve().parent / "encoders"
COURSE_ENCODERS = {
    "course": ("vitt-dino.safetensors", "f7209d159e8431f6dfe86dcd931aca2e2c17b69e0d49a76961451b8784b385ae"),
    "course-mae": ("vitt-mae.safetensors", "f306330db249b221b345ea7832b0f42988a3e3be437efdbbd4be38442ac07326"),
}
ENCODER_CHOICES = ("auto", "required")  # pretrained_encoder values resolved here (None: random init, or a file)


def find_encoder_weights(encoder, *, download: bool = True) -> Path:
    """DINOv2 weights of a size (name or ModelConfig): $DALIB_WEIGHTS_DIR (default ~/.cache/dalib)/
    `<dinov2_hub>_pretrain.pth` when the official file is there, else timm's release from the Hugging Face cache,
    downloaded into it when missing (`dalib.hub.hub_file`: not with download=False or $HF_HUB_OFFLINE). Raises
    FileNotFoundError with what was tried and the one command that fetches the file."""
    cfg = get_config(encoder)
    if cfg.name not in DINOV2_WEIGHTS:
        raise FileNotFoundError(f"no released DINOv2 weights exist for {cfg.name!r}; use pretrained_encoder=None "
                                "(random init) or a weights file you trained")
    local = _weights_dir() / f"{cfg.dinov2_hub}_pretrain.pth"
    if local.is_file():
        return local
    w = DINOV2_WEIGHTS[cfg.name]
    try:
        return hub_file(w.repo_id, w.filename, w.revision, local_only=not download)
    except HubFileError as e:
        raise FileNotFoundError(f"DINOv2 weights for {cfg.name!r} ({w.size}): not at {local} and {e}") from None


def course_encoder(name: str) -> Path:
    """The shipped encoder file of COURSE_ENCODERS[name], its sha256 checked (ValueError naming the file otherwise)."""
    if name not in COURSE_ENCODERS:
        raise ValueError(f"course encoder {name!r}: expected one of {', '.join(COURSE_ENCODERS)}")
    file, digest = COURSE_ENCODERS[name]
    path = ENCODER_DIR / file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the course's {name!r} encoder is missing from this installation")
    if (got := file_sha256(path)) != digest:
        raise ValueError(f"{path}: sha256 {got}, expected {digest}; the file was changed or damaged (git checkout "
                         f"restores it; the JSON beside it has the command that reproduces it)")
    return path


def course_encoder_info(name: str) -> dict:
    """The JSON shipped beside the course encoder `name` (objective, images seen, reproduction command, config),
    with the checked sha256."""
    path = course_encoder(name)
    return {**json.loads(path.with_suffix(".json").read_text()), "sha256": COURSE_ENCODERS[name][1]}


def describe_weights(path) -> dict:
    """{"path", "sha256", "source"} of a weights file, for a run's params.json and the notebooks' output; the source
    names the hub repo and commit when the file is in the Hugging Face cache."""
    path = Path(path)
    source = str(path)
    for w in (*DINOV2_WEIGHTS.values(), *OFFICIAL_WEIGHTS.values()):
        if f"models--{w.repo_id.replace('/', '--')}" in path.parts and w.revision in path.parts:
            source = f"hf://{w.repo_id}@{w.revision}/{w.filename}"
    return {"path": str(path), "sha256": file_sha256(path), "source": source}


def encoder_weights_file(choice, encoder) -> Path:
    """The weights file a `pretrained_encoder` value names for a model of size `encoder`: "course" / "course-mae"
    the course's shipped vitt encoders (`course_encoder`; ValueError for another size), True / "auto" /
    "required" DINOv2 (`find_encoder_weights`: local file, HF cache, download), else the value as a path.
    Raises FileNotFoundError saying what was tried."""
    if choice in COURSE_ENCODERS:
        if (size := get_config(encoder).name) != "vitt":
            raise ValueError(f"pretrained_encoder={choice!r} is a vitt encoder; the model is {size!r}")
        return course_encoder(choice)
    if choice is True or choice in ENCODER_CHOICES:
        return find_encoder_weights(encoder)
    path = Path(choice)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: DINOv2 encoder weights not found")
    return path


def resolve_pretrained_encoder(choice, encoder):
    """`pretrained_encoder` resolved to a weights file (str) or None (random init). Notebooks 04 and 06.

    "auto": DINOv2 from the local caches, else downloaded (`find_encoder_weights`), else None with a RuntimeWarning
    (e.g. `vitt`, for which no DINOv2 exists); "required": the same but a FileNotFoundError naming the command
    that fetches the weights instead of random init (the gpu profiles); "course" / "course-mae": the course's own
    shipped vitt encoders (`course_encoder`); None / False: random init; a path: as is.
    """
    if choice is None or choice is False:
        return None
    if choice not in ENCODER_CHOICES:
        return str(encoder_weights_file(choice, encoder)) if choice in COURSE_ENCODERS else str(choice)
    try:
        return str(find_encoder_weights(encoder))
    except FileNotFoundError as e:
        if choice == "required":
            raise FileNotFoundError(f"pretrained_encoder='required': {e}. Or train from random init knowingly "
                                    "(pretrained_encoder null: then with a from-scratch lr and warmup)") from None
        warnings.warn(f"pretrained_encoder='auto': {e}; the encoder starts from random weights, for which an "
                      "encoder lr near 1e-4 suits better than 5e-6", RuntimeWarning, stacklevel=2)
        return None


def official_model(name: str = "V2-S", *, local_only: bool | None = None) -> DepthAnything:
    """The official checkpoint `name` of OFFICIAL_WEIGHTS, from the Hugging Face cache or the hub
    (`dalib.hub.hub_file`; HubFileError says how to fetch it), loaded by `dalib.weights.load_weights`."""
    if name not in OFFICIAL_WEIGHTS:
        raise KeyError(f"official weights {name!r}: expected one of {', '.join(OFFICIAL_WEIGHTS)}")
    ref = OFFICIAL_WEIGHTS[name]
    path = hub_file(ref.repo_id, ref.filename, ref.revision, repo_type="model", local_only=local_only)
    return load_weights(path, encoder=ref.encoder, version="v2").eval()


def load_encoder_weights(model: DepthAnything, source=True) -> None:
    """Initialise `model.pretrained` from DINOv2 weights.

    source: a file (official `dinov2_vits14_pretrain.pth`, a timm `.safetensors`, or a full Depth
    Anything checkpoint whose `pretrained.*` part is used), True / "auto" / "required" for `find_encoder_weights`
    (the local file, the Hugging Face cache, the hub), or a COURSE_ENCODERS name. Raises FileNotFoundError
    saying what was tried.
    """
    path = encoder_weights_file(source, model.cfg)
    cfg = model.cfg
    sd = _official_to_ours(_read_state_dict(path))
    if any(k.startswith("pretrained.") for k in sd):
        sd = {k[len("pretrained."):]: v for k, v in sd.items() if k.startswith("pretrained.")}
    own = model.pretrained.state_dict()
    sd.setdefault("mask_token", own["mask_token"])  # timm checkpoints have no mask_token
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(("head", "fc_norm"))}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{path}: not DINOv2 {cfg.name} encoder weights: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatch {bad[:5]}")
    model.pretrained.load_state_dict(sd, strict=True)
