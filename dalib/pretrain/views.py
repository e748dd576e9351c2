"""The data of a pretraining run: unlabelled images, multi-crop views, patch masks; batch s is a pure function
of (seed, s), so a resumed run sees exactly what an uninterrupted one would have seen.

    pool = ImagePool(cfg)                 # renders of the pretrain splits + bundled photos, no labels
    batches = PretrainBatches(pool, cfg)  # batches[s] -> {"global", "local", "masks"} (dino) or {"image", "keep"} (mae)

Views (DINOv2's multi-crop, torchvision v2): 2 global crops of `global_crop` px (area 32-100% of the image)
and `n_local` local crops of `local_crop` px (area 5-32%), each flipped, colour-jittered, sometimes grey,
blurred and (global crop 2) solarised, then ImageNet-normalised. MAE sees one global crop, flipped only.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from dalib.data.schema import get_manifest
from dalib.data.serve import load
from dalib.images import IMAGENET_MEAN, IMAGENET_STD, PATCH
from dalib.pretrain.config import PretrainConfig
from dalib.transforms import image_to_uint8, sample_generator, sample_seed


class ImagePool:
    """The run's unlabelled images, indexed 0..len-1 over the sources in order; item i: (3, H, W) uint8 with
    the shorter side `image_size`. Only the `image` column of each source is read."""

    def __init__(self, cfg: PretrainConfig):
        self.size, self.parts, self.names = cfg.image_size, [], []
        for name, split, n in cfg.source_list():
            generator = get_manifest(name)["source"]["type"] == "generator"
            kw = dict(root=cfg.data_root, height=cfg.image_size, width=cfg.image_size) if generator else {}
            ds = load(name, split, n=n or None, **kw)
            self.parts.append(ds.select_columns(["image"]))
            self.names.append(f"{name}:{split}")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def counts(self) -> dict[str, int]:
        """Images per source, {"name:split": n}."""
        return {n: len(p) for n, p in zip(self.names, self.parts)}

    def __getitem__(self, i: int) -> Tensor:
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        img = image_to_uint8(self.parts[k][int(i - self.offsets[k])]["image"])
        if min(img.shape[-2:]) != self.size:
            img = TF.resize(img, self.size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        return img


def view_transform(cfg: PretrainConfig, size: int, scale, blur_p: float, solarize_p: float,
                   colour: float = 1.0) -> v2.Transform:
    """One DINOv2 view on a (3, H, W) uint8 image -> (3, size, size) ImageNet-normalised float. `colour` in
    [0, 1] scales the probabilities of colour jitter, grayscale and solarisation (`colour_level`)."""
    k = 2 * math.ceil(3 * cfg.blur_sigma[1]) + 1  # the kernel covers +-3 sigma of the widest blur
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=tuple(scale), interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(*cfg.jitter)], p=cfg.jitter_p * colour),
        v2.RandomGrayscale(p=cfg.gray_p * colour),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomApply([v2.GaussianBlur(k, sigma=tuple(cfg.blur_sigma))], p=blur_p),
        v2.RandomSolarize(threshold=0.5, p=solarize_p * colour),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def colour_level(cfg: PretrainConfig, step: int) -> float:
    """Colour-augmentation level of step `step`: rises linearly from 0 to 1 over `colour_warmup` of the run.

    With DINOv2's colour augmentation from the first step, the views of an image disagree in colour so much
    that a randomly initialised student cannot predict its teacher's assignment of another view: the DINO loss
    stays at ln K and the teacher drifts to the uniform distribution (measured on vitt, 84/42 px, batch 16;
    without colour changes the same run learns). Views that first agree in colour let it learn layout and
    texture; the (milder than DINOv2's, `PretrainConfig.jitter`) colour invariance is then added."""
    warm = round(cfg.colour_warmup * cfg.steps)
    return 1.0 if step >= warm else step / warm


def mae_transform(cfg: PretrainConfig) -> v2.Transform:
    """MAE's view: a random resized crop (area 20-100%) and a flip, no colour changes."""
    return v2.Compose([
        v2.RandomResizedCrop(cfg.global_crop, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC,
                             antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def block_mask(h: int, w: int, n: int, g: torch.Generator) -> Tensor:
    """(h*w,) bool with exactly n True: rectangles (aspect 0.3-3.3) as BEiT/iBOT, topped up at random."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    lo, hi = math.log(0.3), math.log(1 / 0.3)
    for _ in range(20):
        left = n - int(mask.sum())
        if left <= 0:
            break
        u = torch.rand(4, generator=g).tolist()
        area = min(4, left) + u[0] * (left - min(4, left))
        aspect = math.exp(lo + u[1] * (hi - lo))
        bh = min(h, max(1, round(math.sqrt(area * aspect))))
        bw = min(w, max(1, round(math.sqrt(area / aspect))))
        top, lft = int(u[2] * (h - bh + 1)), int(u[3] * (w - bw + 1))
        cand = mask.clone()
        cand[top:top + bh, lft:lft + bw] = True
        if int(cand.sum()) <= n:
            mask = cand
    mask = mask.flatten()
    left = n - int(mask.sum())
    if left > 0:
        free = (~mask).nonzero().squeeze(1)
        mask[free[torch.randperm(len(free), generator=g)[:left]]] = True
    return mask


def patch_mask(cfg: PretrainConfig, grid: int, g: torch.Generator) -> Tensor:
    """iBOT mask of one global crop: (grid*grid,) bool, all False with probability 1 - mask_prob, else a
    fraction uniform in `mask_ratio` of the patches (at least one)."""
    u = torch.rand(2, generator=g).tolist()
    n = grid * grid
    if u[0] >= cfg.mask_prob:
        return torch.zeros(n, dtype=torch.bool)
    k = max(1, round(n * (cfg.mask_ratio[0] + u[1] * (cfg.mask_ratio[1] - cfg.mask_ratio[0]))))
    if cfg.mask_shape == "block":
        return block_mask(grid, grid, k, g)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:k]] = True
    return mask


class PretrainBatches(torch.utils.data.Dataset):
    """Map-style dataset: item s is the batch of step s (collated), a pure function of (cfg.seed, s).

    Images are read in the order of one permutation of the pool per epoch; views and masks of image j of
    step s draw from generators seeded by (seed, s, j). dino item: "global" (2B, 3, G, G) (crop 1 of every
    image, then crop 2), "local" (n_local*B, 3, L, L) (local crop 0 of every image, then 1, ...), "masks"
    (2B, (G/14)^2) bool. mae item: "image" (B, 3, G, G), "keep" (B, K) long, the patches the encoder sees.
    """

    def __init__(self, pool: ImagePool, cfg: PretrainConfig):
        self.pool, self.cfg = pool, cfg
        self._perm: dict[int, Tensor] = {}
        self.mae_tf = mae_transform(cfg)
        self._set_colour(1.0)

    def _set_colour(self, colour: float) -> None:
        """DINOv2's three view recipes (global 1, global 2 with solarisation, local) at a colour level."""
        cfg = self.cfg
        self.colour = colour
        self.global_tf = (view_transform(cfg, cfg.global_crop, cfg.global_scale, cfg.blur_p[0], 0.0, colour),
                          view_transform(cfg, cfg.global_crop, cfg.global_scale, cfg.blur_p[1], cfg.solarize_p, colour))
        self.local_tf = view_transform(cfg, cfg.local_crop, cfg.local_scale, cfg.blur_p[2], 0.0, colour)

    def __len__(self) -> int:
        return 2**62

    def indices(self, step: int) -> list[int]:
        """Pool indices of the images of step `step`."""
        n, b = len(self.pool), self.cfg.batch_size
        out = []
        for j in range(b):
            epoch, p = divmod(step * b + j, n)
            if epoch not in self._perm:
                self._perm = {epoch: torch.randperm(n, generator=sample_generator(self.cfg.seed, 1, epoch))}
            out.append(int(self._perm[epoch][p]))
        return out

    def __getitem__(self, step: int) -> dict:
        step = int(step)
        if colour_level(self.cfg, step) != self.colour:
            self._set_colour(colour_level(self.cfg, step))
        items = [self._views(self.pool[i], sample_seed(self.cfg.seed, 2, step, j))
                 for j, i in enumerate(self.indices(step))]
        if self.cfg.objective == "mae":
            return {"image": torch.stack([x["image"] for x in items]), "keep": torch.stack([x["keep"] for x in items])}
        return {"global": torch.cat([torch.stack([x["global"][c] for x in items]) for c in range(2)]),
                "local": torch.cat([torch.stack([x["local"][c] for x in items]) for c in range(self.cfg.n_local)])
                if self.cfg.n_local else torch.zeros(0, 3, self.cfg.local_crop, self.cfg.local_crop),
                "masks": torch.cat([torch.stack([x["masks"][c] for x in items]) for c in range(2)])}

    def _views(self, img: Tensor, seed: int) -> dict:
        """All views and masks of one image; torchvision's transforms draw from the global RNG, which is
        seeded here and restored afterwards."""
        cfg, grid = self.cfg, self.cfg.global_crop // PATCH
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if cfg.objective == "mae":
                n = grid * grid
                keep = torch.randperm(n, generator=g)[: n - round(n * cfg.mae_mask_ratio)].sort().values
                return {"image": self.mae_tf(img), "keep": keep}
            views = {"global": [tf(img) for tf in self.global_tf],
                     "local": [self.local_tf(img) for _ in range(cfg.n_local)]}
            views["masks"] = [patch_mask(cfg, grid, g) for _ in range(2)]
            return views
