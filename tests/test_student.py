"""dalib.student: perturbations, CutMix boxes and their area-weighted loss, feature alignment, exact resume."""
import json
import shutil

import pytest
import torch

from dalib.losses import cutmix_regions, depth_loss
from dalib.model import DepthAnything
from dalib.student import (
    PerturbConfig,
    StudentHooks,
    apply_cutmix,
    cutmix_boxes,
    perturb_images,
    preview_batch,
)
from dalib.train.config import TrainConfig
from dalib.train.loop import train
from dalib.train.step import batch_loss
from test_train import final_weights, log_of, make_scenes, tiny


def _batch(n=4, h=28, w=42, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, h, w, generator=g), "target": torch.rand(n, h, w, generator=g),
            "mask": torch.rand(n, h, w, generator=g) > 0.1}


def test_cutmix_boxes_probability_bounds_and_determinism():
    cfg = PerturbConfig(cutmix_p=1.0)
    boxes = cutmix_boxes(200, 56, 70, cfg, torch.Generator().manual_seed(1))
    assert all(b is not None for b in boxes)
    for top, left, h, w in boxes:
        assert 0 <= top and top + h <= 56 and 0 <= left and left + w <= 70
        assert 0.015 <= h * w / (56 * 70) <= 0.45  # area range 0.02-0.4, up to rounding of the sides
    assert boxes == cutmix_boxes(200, 56, 70, cfg, torch.Generator().manual_seed(1))
    assert cutmix_boxes(50, 56, 70, PerturbConfig(cutmix_p=0.0), torch.Generator()) == [None] * 50
    half = cutmix_boxes(2000, 56, 70, PerturbConfig(cutmix_p=0.5), torch.Generator().manual_seed(2))
    assert 0.45 < sum(b is not None for b in half) / 2000 < 0.55


def test_perturbation_is_seeded_per_image_and_off_when_disabled():
    x = _batch()["image"].clamp(-2, 2)
    cfg = PerturbConfig(jitter_p=1.0, blur_p=1.0)
    a, b = perturb_images(x, cfg, seed=3), perturb_images(x, cfg, seed=3)
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.allclose(a, perturb_images(x, cfg, seed=4))
    assert not torch.allclose(a, x, atol=1e-3)
    # different images of one call get different parameters: two copies of one image end up different
    twin = perturb_images(torch.stack([x[0], x[0]]), cfg, seed=5)
    assert not torch.allclose(twin[0], twin[1], atol=1e-3)
    off = perturb_images(x, PerturbConfig(jitter_p=0.0, blur_p=0.0), seed=3)
    from dalib.transforms import denormalize_image, normalize_image
    assert torch.allclose(off, normalize_image(denormalize_image(x) * 255), atol=1e-5)
    before = torch.get_rng_state()
    perturb_images(x, cfg, seed=9)
    assert torch.equal(before, torch.get_rng_state()), "the global RNG must not move"


def test_cutmix_pastes_the_partner_box():
    b = _batch()
    out = apply_cutmix(b, 1, 3, [(2, 3, 10, 12), None, (0, 0, 5, 5)])
    assert out["cutmix"] == [(1, 2, 2, 3, 10, 12), (3, 1, 0, 0, 5, 5)]
    assert torch.equal(out["image"][1, :, 2:12, 3:15], b["image"][2, :, 2:12, 3:15])
    assert torch.equal(out["image"][1, :, 12:], b["image"][1, :, 12:])
    assert torch.equal(out["image"][3, :, :5, :5], b["image"][1, :, :5, :5])  # the partner of the last is the first
    assert torch.equal(out["image"][0], b["image"][0]) and torch.equal(out["image"][2], b["image"][2])


def test_cutmix_loss_is_area_weighted_with_each_region_aligned_on_its_own():
    """A prediction equal to the composite label, with unrelated scale and shift in the two regions, has
    zero loss under the region split; as one image (no split) it does not."""
    torch.manual_seed(0)
    H, W = 28, 28
    t = torch.rand(2, H, W) + 0.1
    mask = torch.ones(2, H, W, dtype=torch.bool)
    top, left, h, w = 4, 6, 14, 10
    comp = t[0].clone()
    comp[top:top + h, left:left + w] = 5.0 * t[1, top:top + h, left:left + w] + 3.0  # partner, other scale/shift
    pred = torch.stack([comp, 2.0 * t[1] - 0.1])
    mixed = [(0, 1, top, left, h, w)]
    batch = {"target": t, "mask": mask, "cutmix": mixed}
    cfg = TrainConfig(align="lstsq", gm_weight=2.0)
    src = cfg.sources()
    p, tg, m, weights, shares = cutmix_regions(pred, t, mask, mixed, [2])
    assert shares == [3] and p.shape[0] == 3 and torch.equal(tg[2], t[1])
    a = h * w / (H * W)
    assert torch.allclose(weights, torch.tensor([1 - a, 1.0, a]))
    split = batch_loss(pred, batch, src, [2], cfg=cfg, gm_weight=2.0)["total"]
    whole = batch_loss(pred, {"target": t, "mask": mask}, src, [2], cfg=cfg, gm_weight=2.0)["total"]
    assert split.item() < 1e-5 and whole.item() > 1e-2

    # general case: equals the hand-written area-weighted mean of the per-region losses
    pred = torch.rand(2, H, W)
    got = batch_loss(pred, batch, src, [2], cfg=cfg, gm_weight=2.0)["total"]
    box = torch.zeros(H, W, dtype=torch.bool)
    box[top:top + h, left:left + w] = True

    def one(pr, tg, mk):
        return depth_loss(pr[None], tg[None], mk[None], align="lstsq", reduction="image")["total"]

    want = ((1 - a) * one(pred[0], t[0], ~box) + a * one(pred[0], t[1], box) + one(pred[1], t[1], mask[1])) / 2
    assert torch.allclose(got, want, rtol=1e-5)


def test_student_hooks_train_resume_exactly(tmp_path):
    """Labelled + pseudo-labelled 1:2 with perturbations, CutMix and feature alignment; a run stopped after
    step 2 and resumed equals an uninterrupted one, and the log holds every loss term."""
    labelled = make_scenes(6, seed=1)
    pseudo = make_scenes(8, seed=2, label="disparity")
    torch.manual_seed(5)
    frozen = DepthAnything("vitt")
    perturb = PerturbConfig(cutmix_p=1.0)
    kw = dict(datasets=[labelled, pseudo], ratios=[1, 2], trims=[0.0, 0.1], targets=["depth", "disparity"],
              batch_size=3, steps=4, checkpoint_every=2)

    def hooks():
        return StudentHooks(perturbed=[1], frozen=frozen, feat_weight=1.0, margin=0.0, perturb=perturb)

    train(tiny(tmp_path / "full", labelled, **kw), hooks())
    train(tiny(tmp_path / "part", labelled, **kw), hooks())
    root = tmp_path / "part" / "checkpoints"
    shutil.rmtree(root / "step-00000004")
    (root / "latest.json").write_text(json.dumps({"step": 2, "dir": "step-00000002"}))
    r = train(tiny(tmp_path / "part", labelled, **kw), hooks())
    assert r["start_step"] == 2
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = log_of(tmp_path / "full")
    assert [x["total"] for x in log] == [x["total"] for x in log_of(tmp_path / "part")]
    for rec in log:
        assert rec["feat"] > 0
        assert rec["total"] == pytest.approx(rec["ssi"] + 2 * rec["gm"] + rec["feat"], rel=1e-5)
    # the frozen encoder did not change
    assert all(not p.requires_grad for p in frozen.parameters())


def test_student_hooks_check_their_inputs(tmp_path):
    ds = make_scenes(4, seed=1, label="disparity")
    with pytest.raises(ValueError, match="perturbed"):
        train(tiny(tmp_path / "x", ds, steps=2), StudentHooks(perturbed=[1]))
    with pytest.raises(ValueError, match="equal widths"):
        train(tiny(tmp_path / "y", ds, steps=2), StudentHooks(perturbed=[0], frozen=DepthAnything("vits")))


def test_preview_batch_matches_what_training_sees(tmp_path):
    pseudo = make_scenes(6, seed=2, label="disparity")
    cfg = tiny(tmp_path / "p", pseudo, batch_size=4, steps=2)
    hooks = StudentHooks(perturbed=[0], perturb=PerturbConfig(cutmix_p=1.0))
    clean, student = preview_batch(cfg, hooks, step=1)
    clean2, student2 = preview_batch(cfg, hooks, step=1)
    assert torch.equal(student["image"], student2["image"]) and len(student["cutmix"]) == 4
    assert torch.equal(clean["target"], student["target"]) and not torch.allclose(clean["image"], student["image"])


@pytest.mark.slow
def test_launch_runs_the_student_under_torchrun(tmp_path, monkeypatch):
    """nproc=2: the run is written to launch.yaml, in-memory datasets saved, the hooks rebuilt from their
    spec in two gloo processes; the result matches what train() returns."""
    from dalib.train.loop import launch

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.manual_seed(3)
    DepthAnything("vitt").save_pretrained(tmp_path / "frozen")
    pseudo = make_scenes(8, seed=2, label="disparity")
    hooks = StudentHooks(perturbed=[0], frozen=tmp_path / "frozen", margin=0.0, perturb=PerturbConfig(cutmix_p=1.0))
    cfg = tiny(tmp_path / "run", pseudo, batch_size=4, steps=2, targets=["disparity"], trims=[0.1])
    r = launch(cfg, nproc=2, hooks=hooks)
    assert r["world_size"] == 2 and r["steps"] == 2 and (tmp_path / "run" / "inputs" / "source0").is_dir()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["world_size"] == 2
    assert all(rec["feat"] > 0 for rec in log_of(tmp_path / "run"))
    assert StudentHooks.from_spec(hooks.to_spec()).to_spec() == hooks.to_spec()
    with pytest.raises(ValueError, match="in-memory frozen model"):
        StudentHooks(perturbed=[0], frozen=DepthAnything("vitt")).to_spec()
