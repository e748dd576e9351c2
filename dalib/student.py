"""The student recipe of Depth Anything as hooks of the one training loop (notebook 06_student_training).

    from dalib.student import PerturbConfig, StudentHooks
        from dalib.train.loop import train
    hooks = StudentHooks(perturbed=[1], frozen=teacher, feat_weight=1.0, perturb=PerturbConfig(cutmix_p=0.5))
    train(TrainConfig(datasets=[labelled, pool], ratios=[1, 2], targets=["depth", "disparity"]), hooks)

What the hooks add to a `dalib.train` step (V1 arXiv 2401.10891 Sec. 3.2-3.3; V2 arXiv 2406.09414):
    perturb   the images of the `perturbed` sources (the pseudo-labelled ones; the teacher labelled them
              clean) get colour jitter and Gaussian blur (torchvision transforms v2), per image
    CutMix    with probability `cutmix_p` a pseudo-labelled image receives a box cut from another
              pseudo-labelled image of the batch; the loss scores the two regions, each against its own
              image's pseudo-label and aligned on its own (the two labels have unrelated scale and shift),
              weighted by area:  L = (1 - a) L(outside box) + a L(inside box),  a = |box| / HW
              (`dalib.losses.cutmix_regions`, called by the loop's `batch_loss` for batch["cutmix"])
    feature   L_feat = 1 - mean cos(student tokens, frozen tokens), tokens with 1 - cos < margin ignored
              (`dalib.losses.feature_alignment_loss`); the frozen encoder is DINOv2 in the papers, here any
              DepthAnything whose encoder is used as is (the teacher's when no DINOv2 weights exist)

The random numbers of step s come from a generator seeded by (seed, s, rank), never from the global RNG,
so a resumed run perturbs and mixes exactly as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from dalib.distributed import dist_env
from dalib.losses import feature_alignment_loss
from dalib.model import DepthAnything
from dalib.train.cli import command_error, train_and_report
from dalib.train.config import TrainConfig, config_from_mapping, per_batch, read_config_file
from dalib.train.plan import batch_to_device, build_plan
from dalib.train.step import TrainHooks, use_autocast
from dalib.transforms import denormalize_image, imagenet_stats, sample_seed
from dalib.weights import build_model


@dataclass
class PerturbConfig:
    """Strong colour perturbations of the student's pseudo-labelled inputs (V1: colour jitter + blur)."""

    jitter_p: float = 0.8  # probability of colour jitter per image
    brightness: float = 0.5  # ColorJitter factors, as in common strong augmentations of semi-supervised learning
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.25
    blur_p: float = 0.5  # probability of a Gaussian blur per image
    blur_sigma: tuple = (0.1, 2.0)  # blur sigma range, pixels
    cutmix_p: float = 0.5  # probability that an image gets a CutMix box (V1: 0.5)
    box_area: tuple = (0.02, 0.4)  # CutMix box area as a fraction of the image
    box_aspect: tuple = (0.3, 1 / 0.3)  # CutMix box aspect ratio (height / width) range


def colour_perturbation(cfg: PerturbConfig) -> v2.Transform:
    """torchvision v2 pipeline on one (3, H, W) float image in [0, 1]: jitter (p) then blur (p)."""
    k = 2 * math.ceil(3 * cfg.blur_sigma[1]) + 1  # kernel covers +-3 sigma of the largest blur
    return v2.Compose([
        v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p),
        v2.RandomApply([v2.GaussianBlur(k, sigma=tuple(cfg.blur_sigma))], p=cfg.blur_p),
    ])


def cutmix_boxes(n: int, height: int, width: int, cfg: PerturbConfig, g: torch.Generator) -> list[tuple[int, int, int, int] | None]:
    """For each of n images, a CutMix box (top, left, h, w) with probability cfg.cutmix_p, else None.

    Area uniform in cfg.box_area of the image, aspect (h / w) log-uniform in cfg.box_aspect, position
    uniform with the box inside the image. Drawn from `g` (CPU), so no device synchronisation.
    """
    boxes: list = []
    lo, hi = math.log(cfg.box_aspect[0]), math.log(cfg.box_aspect[1])
    for _ in range(n):
        u = torch.rand(3, generator=g).tolist()
        if u[0] >= cfg.cutmix_p:
            boxes.append(None)
            continue
        area = (cfg.box_area[0] + u[1] * (cfg.box_area[1] - cfg.box_area[0])) * height * width
        aspect = math.exp(lo + u[2] * (hi - lo))
        h = min(height, max(1, round(math.sqrt(area * aspect))))
        w = min(width, max(1, round(math.sqrt(area / aspect))))
        pos = torch.rand(2, generator=g).tolist()
        top, left = int(pos[0] * (height - h + 1)), int(pos[1] * (width - w + 1))
        boxes.append((min(top, height - h), min(left, width - w), h, w))
    return boxes


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Global RNGs (torchvision's v2 transforms draw from them) seeded for a block, restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def perturb_images(images: Tensor, cfg: PerturbConfig, seed: int) -> Tensor:
    """Colour jitter + Gaussian blur per image of an ImageNet-normalised (b, 3, H, W) batch.

    Each image draws its own parameters (torchvision v2 draws one set per call, so the call is per
    image); the random numbers are a pure function of `seed`. Returns the normalised perturbed batch.
    """
    tf = colour_perturbation(cfg)
    raw = denormalize_image(images.float())
    with _seeded(seed, images.device):
        out = torch.stack([tf(im) for im in raw])
    mean, std = imagenet_stats(out)
    return ((out - mean) / std).to(images.dtype)


def apply_cutmix(batch: dict, start: int, count: int, boxes: Sequence) -> dict:
    """Paste boxes into images start..start+count-1 of `batch` from their partner (the next image of the
    group, cyclically); records batch["cutmix"] = [(index, partner, top, left, h, w), ...] for the loss."""
    if count < 2:
        return batch
    img = batch["image"].clone()
    src = batch["image"]
    mixed = []
    for j, box in enumerate(boxes):
        if box is None:
            continue
        i, p = start + j, start + (j + 1) % count
        top, left, h, w = box
        img[i, :, top:top + h, left:left + w] = src[p, :, top:top + h, left:left + w]
        mixed.append((i, p, top, left, h, w))
    out = dict(batch)
    out["image"] = img
    out["cutmix"] = out.get("cutmix", []) + mixed
    return out


class StudentHooks(TrainHooks):
    """Student training (V1/V2) on top of `dalib.train.loop.train`; see the module docstring.

    perturbed: indices of TrainConfig.datasets that are pseudo-labelled (perturbed, CutMix-ed).
    frozen: a DepthAnything whose encoder gives the frozen features (None: no feature alignment).
    feat_weight: weight of L_feat in the total; margin: tolerance of the alignment (V1: 0.15).
    perturb: PerturbConfig (cutmix_p=0 disables CutMix, jitter_p=blur_p=0 the colour perturbations).
    """

    def __init__(self, perturbed: Sequence[int] = (0,), frozen: nn.Module | str | os.PathLike | None = None, *,
                 feat_weight: float = 1.0, margin: float = 0.15, perturb: PerturbConfig | None = None):
        self.perturbed = sorted(int(i) for i in perturbed)
        # frozen as a path: a checkpoint folder (DepthAnything.from_pretrained, e.g. the teacher) or a DINOv2
        # weights file (a DepthAnything of the student's size with that encoder); loaded in `setup`
        self.frozen_source = str(frozen) if isinstance(frozen, (str, os.PathLike)) else None
        self.frozen = None if self.frozen_source else frozen
        self.feat_weight = float(feat_weight) if frozen is not None else 0.0
        self.margin = float(margin)
        self.perturb = perturb or PerturbConfig()
        self.seed, self.rank, self.shares, self.amp = 0, 0, None, False

    def to_spec(self) -> dict:
        """JSON-able description from which `from_spec` rebuilds these hooks (for torchrun launches)."""
        if self.frozen is not None and self.frozen_source is None:
            raise ValueError("StudentHooks with an in-memory frozen model cannot be described; pass the frozen "
                             "encoder as a checkpoint folder or a DINOv2 weights file")
        return {"perturbed": self.perturbed, "frozen": self.frozen_source, "feat_weight": self.feat_weight,
                "margin": self.margin, "perturb": dataclasses.asdict(self.perturb)}

    @classmethod
    def from_spec(cls, spec: dict) -> "StudentHooks":
        p = dict(spec.get("perturb") or {})
        for k in ("blur_sigma", "box_area", "box_aspect"):
            if k in p:
                p[k] = tuple(p[k])
        return cls(spec.get("perturbed", (0,)), spec.get("frozen"), feat_weight=spec.get("feat_weight", 1.0),
                   margin=spec.get("margin", 0.15), perturb=PerturbConfig(**p))

    def bind(self, cfg: TrainConfig, rank: int = 0, world: int = 1) -> None:
        """The run's seed and this rank's batch layout (images per source), from which the perturbations
        of each step are drawn; `setup` calls it, `preview_batch` too."""
        self.seed, self.rank = cfg.seed, rank
        self.shares = [k // world for k in per_batch(cfg, world)]
        if any(i >= len(self.shares) for i in self.perturbed):
            raise ValueError(f"StudentHooks.perturbed={self.perturbed}, but TrainConfig has {len(self.shares)} datasets")

    @property
    def wants_tokens(self) -> bool:
        return self.feat_weight > 0

    def setup(self, model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        rank, world, _ = dist_env()
        self.bind(cfg, rank, world)
        self.amp = use_autocast(cfg, device)  # the frozen encoder runs in the student's arithmetic
        if self.frozen_source is not None and self.frozen is None:
            src = Path(self.frozen_source)
            if src.is_dir():
                self.frozen = DepthAnything.from_pretrained(src, map_location="cpu")
            elif src.is_file():
                self.frozen = build_model(cfg.encoder, cfg.version, pretrained_encoder=str(src))
            else:
                raise FileNotFoundError(f"StudentHooks frozen encoder {src}: neither a checkpoint folder nor a weights file")
        if self.frozen is not None:
            self.frozen.to(device).eval().requires_grad_(False)
            if self.frozen.cfg.embed_dim != model.cfg.embed_dim:
                raise ValueError(f"frozen encoder has {self.frozen.cfg.embed_dim} channels, the student "
                                 f"{model.cfg.embed_dim}; feature alignment needs equal widths")

    def perturb_batch(self, batch: dict, step: int) -> dict:
        """Colour jitter + blur on the `perturbed` sources' images, then CutMix boxes among each one's images."""
        H, W = batch["image"].shape[-2:]
        g = torch.Generator().manual_seed(sample_seed(self.seed, 6, step, self.rank))
        starts = [sum(self.shares[:k]) for k in range(len(self.shares))]
        img = batch["image"]
        for k in self.perturbed:
            s, c = starts[k], self.shares[k]
            if self.perturb.jitter_p > 0 or self.perturb.blur_p > 0:
                seed = int(torch.randint(0, 2**62, (1,), generator=g))
                img = torch.cat([img[:s], perturb_images(img[s:s + c], self.perturb, seed), img[s + c:]])
        batch = {**batch, "image": img}
        for k in self.perturbed:
            if self.perturb.cutmix_p > 0:
                boxes = cutmix_boxes(self.shares[k], H, W, self.perturb, g)
                batch = apply_cutmix(batch, starts[k], self.shares[k], boxes)
        return batch

    def extra_losses(self, batch: dict, tokens: Tensor | None, step: int) -> dict[str, Tensor]:
        """{"feat": feat_weight * L_feat}: the student's final patch tokens against the frozen encoder's on the
        same (perturbed) images."""
        if self.feat_weight <= 0:
            return {}
        image = batch["image"]
        with torch.no_grad(), torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=self.amp):
            frozen = self.frozen.encode_patch_tokens(image)
        return {"feat": self.feat_weight * feature_alignment_loss(tokens.float(), frozen.float(), margin=self.margin)}


def photometric_hooks(n_sources: int, perturb: PerturbConfig | None = None) -> StudentHooks:
    """Colour jitter + Gaussian blur on the images of all `n_sources` sources, no CutMix, no feature
    alignment: photometric robustness for a teacher trained from scratch (notebook 04), a stand-in for what a
    pretrained DINOv2 encoder brings to the papers' teachers. perturb: default PerturbConfig with cutmix_p=0."""
    p = dataclasses.replace(perturb or PerturbConfig(), cutmix_p=0.0)
    return StudentHooks(perturbed=range(n_sources), frozen=None, perturb=p)


def preview_batch(cfg: TrainConfig, hooks: StudentHooks, step: int = 0) -> tuple[dict, dict]:
    """(clean batch, the batch the student trains on) of step `step` of a run, on the CPU, without
    training: the same data plan and the same seeded perturbations / CutMix as `train(cfg, hooks)`."""
    clean = batch_to_device(build_plan(cfg)[step], "cpu")
    hooks.bind(cfg)
    return clean, hooks.perturb_batch(dict(clean), step)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dalib.student --config run.yaml`: TrainConfig fields plus a `student` mapping (the
    `StudentHooks.to_spec()` fields); under torchrun every rank runs it (what `dalib.train.loop.launch` starts)."""
    ap = argparse.ArgumentParser(prog="python -m dalib.student", description=main.__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="YAML/JSON: TrainConfig fields + `student:` (StudentHooks spec)")
    args = ap.parse_args(argv)
    try:
        raw = read_config_file(args.config)
        spec = raw.pop("student", None)
        if spec is None:
            raise ValueError(f"{args.config}: no `student` mapping (perturbed, frozen, feat_weight, margin, perturb)")
        cfg, hooks = config_from_mapping(raw, args.config), StudentHooks.from_spec(spec)
    except (ValueError, OSError) as e:  # the config file or its fields
        return command_error("dalib.student", e)
    return train_and_report(cfg, hooks, prog="dalib.student")


if __name__ == "__main__":
    sys.exit(main())
