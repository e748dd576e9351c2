"""The data of a run: step s -> this rank's share of global batch s, a pure function of (seed, s), so
that a resumed run reads exactly what an uninterrupted one would have read (notebook 04)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from dalib.data.serve import open_dataset
from dalib.train.config import TrainConfig, describe_source, per_batch
from dalib.transforms import JointTransform, normalize_image, row_to_sample, sample_generator


def open_training_dataset(spec: Any, split: str, *, root: str | None = None, n: int | None = None):
    """A source of TrainConfig.datasets -> `datasets.Dataset` formatted as numpy.

    spec: a `datasets.Dataset` (used as is), a folder written by `Dataset.save_to_disk`, or a dalib.data
    dataset name (loaded with `dalib.data.serve.load(name, split, root=root, n=n)`).
    """

    ds = open_dataset(spec, split, root=root, n=n, what=f"TrainConfig.datasets entry {describe_source(spec)}")
    if "image" not in ds.column_names or not ({"depth", "disparity"} & set(ds.column_names)):
        raise ValueError(f"dataset {describe_source(spec)} (split {split!r}) has columns {ds.column_names}; training "
                         "needs 'image' and a label column 'depth' (metres) or 'disparity' (relative)")
    return ds.with_format("numpy")


class BatchPlan(torch.utils.data.Dataset):
    """Map-style dataset whose item s is this rank's share of the global batch of step s (collated).

    Pure function of (seed, step, rank): source i contributes counts[i] images per global batch, read
    in the order of its own permutation per epoch; rank r takes the r-th equal slice of each source's
    share. Item: {"image" (b,3,c,c) uint8, "target" (b,c,c), "mask" (b,c,c) bool, "source" (b,) long,
    "row" (b,) long}, which `batch_to_device` moves and normalises. Used with DataLoader(batch_size=None,
    sampler=range(start, steps)).
    """

    def __init__(self, sources: Sequence, counts: Sequence[int], targets: Sequence[str], transform: JointTransform,
                 seed: int, rank: int = 0, world_size: int = 1):
        self.sources, self.counts, self.targets = list(sources), list(counts), list(targets)
        self.transform, self.seed, self.rank, self.world = transform, int(seed), rank, world_size
        self._perm: dict[tuple[int, int], Tensor] = {}

    def __len__(self) -> int:
        return 2**62

    def _permutation(self, src: int, epoch: int) -> Tensor:
        key = (src, epoch)
        if key not in self._perm:
            if len(self._perm) > 8:
                self._perm.clear()
            self._perm[key] = torch.randperm(len(self.sources[src]), generator=sample_generator(self.seed, 1, src, epoch))
        return self._perm[key]

    def rows(self, step: int) -> list[tuple[int, int, int]]:
        """(source, epoch, row) of each image of this rank's share of step `step`, in batch order."""
        out = []
        for i, k in enumerate(self.counts):
            share = k // self.world
            n = len(self.sources[i])
            for j in range(self.rank * share, (self.rank + 1) * share):
                pos = step * k + j  # position in source i's endless stream
                epoch, p = divmod(pos, n)
                out.append((i, epoch, int(self._permutation(i, epoch)[p])))
        return out

    def __getitem__(self, step: int) -> dict:
        plan = self.rows(int(step))
        samples = []
        for i in range(len(self.sources)):
            mine = [(e, r) for s, e, r in plan if s == i]
            if not mine:
                continue
            cols = self.sources[i][[r for _, r in mine]]  # one batched read per source (faster than rows)
            for j, (epoch, row) in enumerate(mine):
                s = row_to_sample({c: v[j] for c, v in cols.items()}, self.targets[i])
                samples.append(self.transform(s, sample_generator(self.seed, 2, i, epoch, row)))
        batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", "target", "mask")}
        batch["source"] = torch.tensor([s for s, _, _ in plan], dtype=torch.long)
        batch["row"] = torch.tensor([r for _, _, r in plan], dtype=torch.long)
        return batch


def batch_to_device(batch: dict, device) -> dict:
    """A plan's batch on `device`, its uint8 images ImageNet-normalised there (`normalize_image`): workers hand over
    a quarter of float32's bytes through shared memory. What every step of the loop trains on."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["image"] = normalize_image(out["image"])
    return out


def worker_init(_):
    torch.set_num_threads(1)


def build_plan(cfg: TrainConfig, rank: int = 0, world: int = 1) -> BatchPlan:
    """The run's data: step s -> this rank's share of global batch s (`BatchPlan`)."""
    sources = cfg.sources()
    dsets = [open_training_dataset(s["dataset"], s["split"], root=cfg.data_root, n=cfg.data_n) for s in sources]
    transform = JointTransform(cfg.crop, scale=tuple(cfg.scale), hflip=cfg.hflip)
    return BatchPlan(dsets, per_batch(cfg, world), [s["target"] for s in sources], transform, cfg.seed, rank, world)
