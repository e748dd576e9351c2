"""dalib.pretrain: the losses against written-out references, the masked embedding, the EMA teacher, a tiny run
that learns, exact resume after a stop, the exported encoder file, and the seeds of the pretrain splits."""
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dalib import weights
from dalib.model import DepthAnything
from dalib.pretrain.cli import main as cli_main
from dalib.pretrain.config import PretrainConfig
from dalib.pretrain.export import export_encoder, reproduce_command
from dalib.pretrain.heads import DINOHead, patchify
from dalib.pretrain.loop import PRETRAIN_WEIGHTS_FILE, param_groups, pretrain
from dalib.pretrain.losses import (centered_softmax, dino_loss, entropies, ibot_loss, koleo_loss, mae_loss,
                                   sinkhorn_knopp, update_center)
from dalib.pretrain.objectives import DinoObjective, Schedule
from dalib.pretrain.views import ImagePool, PretrainBatches, block_mask, colour_level
from dalib.weights import COURSE_ENCODERS, build_model, course_encoder_info, load_encoder_weights


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- losses
def test_sinkhorn_knopp_matches_the_written_out_algorithm():
    rng = np.random.default_rng(0)
    logits = rng.uniform(-1, 1, (6, 10))
    temp, n, k = 0.1, 6, 10
    q = np.exp(logits / temp).T  # K x n
    q /= q.sum()
    for _ in range(3):
        for r in range(k):
            q[r] /= q[r].sum() * k
        for c in range(n):
            q[:, c] /= q[:, c].sum() * n
    ref = (q * n).T
    got = sinkhorn_knopp(torch.tensor(logits, dtype=torch.float32), temp).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)  # every sample a distribution
    plain = _softmax(logits / temp)  # 3 iterations move every prototype's share towards n / K
    assert np.abs(got.sum(0) - n / k).max() < 0.5 * np.abs(plain.sum(0) - n / k).max()


def test_centering_and_dino_loss_match_a_reference():
    rng = np.random.default_rng(1)
    b, k, temp_s = 4, 5, 0.1
    student = [rng.normal(size=(b, k)) for _ in range(3)]  # global 1, global 2, one local crop
    logits_t = [rng.uniform(-1, 1, (b, k)) for _ in range(2)]
    center = rng.normal(size=(1, k)) * 0.1
    teacher = [_softmax((t - center) / 0.04) for t in logits_t]
    got_t = [centered_softmax(torch.tensor(t), torch.tensor(center), 0.04).numpy() for t in logits_t]
    np.testing.assert_allclose(got_t[0], teacher[0], rtol=1e-5)
    # pairs (teacher u, student v), u != v: (1,0) (0,1) (0,2) (1,2)
    terms = []
    for v, s in enumerate(student):
        logp = np.log(_softmax(s / temp_s))
        terms += [-(t * logp).sum(-1).mean() for u, t in enumerate(teacher) if u != v]
    ref = np.mean(terms)
    got = dino_loss([torch.tensor(s) for s in student], [torch.tensor(t) for t in teacher], temp_s)
    assert len(terms) == 4 and float(got) == pytest.approx(ref, rel=1e-6)
    c = torch.tensor(center, dtype=torch.float32)
    update_center(c, torch.tensor(logits_t[0], dtype=torch.float32), 0.9)
    np.testing.assert_allclose(c.numpy(), 0.9 * center + 0.1 * logits_t[0].mean(0, keepdims=True), rtol=1e-5)


def test_ibot_loss_averages_per_image_over_masked_tokens_only():
    rng = np.random.default_rng(2)
    k = 6
    image = np.array([0, 0, 0, 2])  # image 0 has three masked patches, image 1 none, image 2 one
    s, t = rng.normal(size=(4, k)), _softmax(rng.normal(size=(4, k)))
    ce = -(t * np.log(_softmax(s / 0.1))).sum(-1)
    ref = (ce[:3].mean() + ce[3]) / 2  # each masked image weighs 1; image 1 does not count
    got = ibot_loss(torch.tensor(s), torch.tensor(t), torch.tensor(image), 0.1)
    assert float(got) == pytest.approx(ref, rel=1e-6)
    empty = ibot_loss(torch.zeros(0, k, requires_grad=True), torch.zeros(0, k), torch.zeros(0, dtype=torch.long), 0.1)
    assert empty.requires_grad and float(empty.detach()) == 0.0


def test_ibot_term_reads_the_student_only_at_masked_patches():
    cfg = PretrainConfig(encoder="vitt", prototypes=32, head_hidden=32, head_bottleneck=16, koleo_weight=0.0,
                         dino_weight=0.0, n_local=0)
    torch.manual_seed(0)
    obj = DinoObjective(cfg)
    views = torch.randn(4, 3, 28, 28, requires_grad=True)
    masks = torch.zeros(4, 4, dtype=torch.bool)
    masks[0, 1] = masks[3, 2] = True
    terms = obj({"global": views, "local": views[:0], "masks": masks}, Schedule.at(PretrainConfig(steps=10), 9))
    terms["ibot"].backward()
    grad = views.grad.abs().sum((1, 2, 3))
    assert terms["masked_patches"] == 2.0
    assert grad[1] == 0 and grad[2] == 0 and grad[0] > 0 and grad[3] > 0  # images without masks get no gradient
    none = obj({"global": views, "local": views[:0], "masks": torch.zeros_like(masks)}, Schedule.at(cfg, 0))
    assert float(none["ibot"].detach()) == 0.0


def test_koleo_matches_brute_force_nearest_neighbours():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 5))
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = [min(np.linalg.norm(z[i] - z[j]) for j in range(7) if j != i) for i in range(7)]
    ref = -np.mean(np.log(np.array(d) + 1e-8))
    assert float(koleo_loss(torch.tensor(x))) == pytest.approx(ref, rel=1e-5)


def test_mae_loss_uses_normalised_pixels_of_masked_patches():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 28, 28)
    patches = patchify(images)
    assert patches.shape == (2, 4, 588)
    np.testing.assert_array_equal(patches[0, 1].reshape(14, 14, 3).permute(2, 0, 1).numpy(),
                                  images[0, :, :14, 14:].numpy())  # patch 1 = top row, second column
    masked = torch.tensor([[True, False, False, True], [False, True, False, False]])
    pred = torch.randn(2, 4, 588)
    y = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    ref = torch.stack([((pred[b, n] - y[b, n]) ** 2).mean() for b, n in ((0, 0), (0, 3), (1, 1))]).mean()
    assert float(mae_loss(pred, patches, masked)) == pytest.approx(float(ref), rel=1e-6)


def test_entropies_uniform_and_collapsed():
    k = 16
    h, h_mean = entropies(torch.full((4, k), 1 / k))
    assert h == pytest.approx(math.log(k)) and h_mean == pytest.approx(math.log(k))
    onehot = torch.eye(k)[:4]
    h, h_mean = entropies(onehot)
    assert h == pytest.approx(0.0, abs=1e-6) and h_mean == pytest.approx(math.log(4))


def test_dino_head_outputs_cosines_to_unit_prototypes():
    head = DINOHead(8, 16, 4, 10)
    x = torch.randn(3, 8)
    with torch.no_grad():
        out = head(x)
        z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
        w = head.prototypes / head.prototypes.norm(dim=-1, keepdim=True)
        head.prototypes.mul_(torch.linspace(0.5, 5.0, 10)[:, None])  # weight normalisation: lengths do not matter
        scaled = head(x)
    assert out.shape == (3, 10) and out.abs().max() <= 1 + 1e-6
    assert torch.allclose(out, z @ w.t(), atol=1e-6) and torch.allclose(out, scaled, atol=1e-6)


# ----------------------------------------------------------------------------- encoder with masks
def test_masked_embedding_equals_the_unmasked_one_where_nothing_is_masked():
    torch.manual_seed(0)
    model = DepthAnything("vitt").eval()
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        plain = model.encode_tokens(x)
        none = model.encode_tokens(x, masks=torch.zeros(2, 12, dtype=torch.bool))
        keep_all = model.encode_tokens(x, keep=torch.arange(12).expand(2, 12))
        model.pretrained.mask_token.normal_()
        everything = model.encode_tokens(x, masks=torch.ones(2, 12, dtype=torch.bool))
        one = torch.zeros(2, 12, dtype=torch.bool)
        one[0, 5] = True
        partly = model.encode_tokens(x, masks=one)
    assert plain.shape == (2, 13, 192)
    assert torch.equal(plain, none) and torch.equal(plain, keep_all)
    assert torch.equal(plain[:, 1:], model.encode_patch_tokens(x))
    # every patch masked: the image no longer matters (only position embeddings and the mask token remain)
    assert torch.allclose(everything[0], everything[1], atol=1e-5)
    assert not torch.allclose(partly[0], plain[0]) and torch.equal(partly[1], plain[1])


def test_keep_feeds_only_the_listed_patches():
    torch.manual_seed(0)
    model = DepthAnything("vitt").eval()
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        out = model.encode_tokens(x, keep=torch.tensor([[0, 3]]))
        x2 = x.clone()
        x2[..., :14, 14:] = 5.0  # patch 1, not kept
        out2 = model.encode_tokens(x2, keep=torch.tensor([[0, 3]]))
    assert out.shape == (1, 3, 192) and torch.equal(out, out2)


# ----------------------------------------------------------------------------- EMA, schedules, groups, masks
def test_ema_update_and_schedules():
    cfg = PretrainConfig(prototypes=8, head_hidden=8, head_bottleneck=4, steps=100, momentum=(0.9, 1.0),
                         teacher_temp=(0.04, 0.07))
    torch.manual_seed(0)
    obj = DinoObjective(cfg)
    with torch.no_grad():
        obj.student.pretrained.cls_token.add_(1.0)
        obj.student_head.prototypes.add_(1.0)
    t0 = obj.teacher.pretrained.cls_token.clone()
    s = obj.student.pretrained.cls_token.clone()
    p0 = obj.teacher_head.prototypes.clone()
    obj.after_step(Schedule.at(cfg, 0))  # momentum 0.9
    assert torch.allclose(obj.teacher.pretrained.cls_token, 0.9 * t0 + 0.1 * s)
    assert torch.allclose(obj.teacher_head.prototypes, 0.9 * p0 + 0.1 * obj.student_head.prototypes)
    before = obj.teacher.pretrained.cls_token.clone()
    obj.after_step(Schedule.at(cfg, 99))  # momentum 1: the teacher stays
    assert torch.equal(obj.teacher.pretrained.cls_token, before)
    first, last = Schedule.at(cfg, 0), Schedule.at(cfg, 99)
    assert first.lr == pytest.approx(cfg.lr / 10) and Schedule.at(cfg, 9).lr == pytest.approx(cfg.lr)
    assert last.lr == pytest.approx(cfg.min_lr, rel=1e-3) and last.weight_decay == pytest.approx(0.4)
    assert first.teacher_temp == 0.04 and Schedule.at(cfg, 30).teacher_temp == pytest.approx(0.07)
    assert first.freeze_prototypes and not Schedule.at(cfg, 1).freeze_prototypes


def test_layer_wise_lr_decay_groups():
    cfg = PretrainConfig(prototypes=8, head_hidden=8, head_bottleneck=4)
    obj = DinoObjective(cfg)
    groups = param_groups(obj.trainable(), cfg, 12)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    decay = {n: g["decay"] for g in groups for n in g["names"]}
    assert scale["student_head.prototypes"] == 1.0 and scale["student.pretrained.norm.weight"] == 1.0
    assert scale["student.pretrained.blocks.11.attn.qkv.weight"] == pytest.approx(0.9)
    assert scale["student.pretrained.blocks.0.attn.qkv.weight"] == pytest.approx(0.9 ** 12)
    assert scale["student.pretrained.patch_embed.proj.weight"] == pytest.approx(0.9 ** 13 * 0.2)
    assert decay["student.pretrained.blocks.0.attn.qkv.weight"] and not decay["student.pretrained.blocks.0.ls1.gamma"]
    assert len(scale) == len(obj.trainable())


def test_block_mask_has_exactly_the_asked_count():
    g = torch.Generator().manual_seed(0)
    for n in (1, 4, 10, 18, 36):
        m = block_mask(6, 6, n, g)
        assert m.shape == (36,) and int(m.sum()) == n


# ----------------------------------------------------------------------------- runs
def tiny_cfg(out_dir, tmp_path, **kw):
    base = dict(sources=["synth-indoor:pretrain", "synth-photo:pretrain", "skimage-photos:train"],
                source_n=[24, 24, 9], image_size=56, data_root=str(tmp_path / "data"), global_crop=28,
                local_crop=14, n_local=2, prototypes=64, head_hidden=64, head_bottleneck=32, batch_size=8,
                steps=6, lr=1e-3, warmup=0.1, log_every=1, checkpoint_every=0, out_dir=str(out_dir))
    base.update(kw)
    return PretrainConfig(**base)


@pytest.fixture(scope="module")
def pool_root(tmp_path_factory):
    return tmp_path_factory.mktemp("pool")


def test_views_are_a_pure_function_of_seed_and_step(pool_root):
    cfg = tiny_cfg(pool_root / "r", pool_root)
    pool = ImagePool(cfg)
    assert pool.counts() == {"synth-indoor:pretrain": 24, "synth-photo:pretrain": 24, "skimage-photos:train": 9}
    assert all(min(pool[i].shape[-2:]) == 56 for i in (0, 30, 56))
    a, b = PretrainBatches(pool, cfg)[3], PretrainBatches(pool, cfg)[3]
    assert a["global"].shape == (16, 3, 28, 28) and a["local"].shape == (16, 3, 14, 14) and a["masks"].shape == (16, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["global"][:8], a["global"][8:])  # two different global crops


def test_mae_batches_and_the_colour_ramp(pool_root):
    cfg = tiny_cfg(pool_root / "r", pool_root, objective="mae", steps=10, colour_warmup=0.5)
    batch = PretrainBatches(ImagePool(cfg), cfg)[0]
    assert batch["image"].shape == (8, 3, 28, 28) and batch["keep"].shape == (8, 1)  # 25% of 4 patches
    assert [colour_level(cfg, s) for s in (0, 1, 5, 9)] == [0.0, 0.2, 1.0, 1.0]
    assert colour_level(tiny_cfg(pool_root / "r", pool_root, colour_warmup=0.0), 0) == 1.0


@pytest.mark.parametrize("objective", ["dino", "mae"])
def test_a_tiny_run_learns(tmp_path, pool_root, objective):
    """The loss falls. DINO: the student predicts its teacher far better than the uniform ln K, and the teacher's
    entropy falls while the entropy of its batch mean stays high (it tells images apart, not collapsed)."""
    kw = dict(steps=60, lr=2e-3, log_every=10, momentum=(0.9, 1.0), teacher_temp=(0.04, 0.04), n_local=0,
              global_scale=(0.8, 1.0), jitter_p=0.0, gray_p=0.0, solarize_p=0.0, blur_p=(0.0, 0.0, 0.0),
              mask_prob=0.0, head_bottleneck=256, source_n=[8, 8], sources=["synth-indoor:pretrain",
                                                                           "synth-photo:pretrain"])
    res = pretrain(tiny_cfg(tmp_path / objective, pool_root, objective=objective, **kw))
    log = [json.loads(x) for x in (tmp_path / objective / "train_log.jsonl").read_text().splitlines()]
    assert res["finished"] and log[-1]["images_seen"] == 60 * 8
    assert log[-1]["total"] < 0.9 * log[0]["total"]
    if objective == "dino":
        ln_k = math.log(64)
        assert log[-1]["dino"] < 0.85 * ln_k < log[0]["dino"]
        assert log[-1]["teacher_entropy"] < log[0]["teacher_entropy"] < ln_k
        assert log[-1]["teacher_mi"] > log[0]["teacher_mi"] + 0.1 and log[-1]["teacher_entropy_batch"] > 0.9 * ln_k


@pytest.mark.parametrize("objective", ["dino", "mae"])
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, pool_root, objective):
    whole = pretrain(tiny_cfg(tmp_path / "whole", pool_root, objective=objective))
    part = pretrain(tiny_cfg(tmp_path / "part", pool_root, objective=objective, stop_at=3))
    assert part["step"] == 3 and not part["finished"]
    rest = pretrain(tiny_cfg(tmp_path / "part", pool_root, objective=objective))
    assert rest["finished"] and json.loads((tmp_path / "part" / "config.json").read_text())["resumed_from"] == 3
    a = Path(whole["checkpoint"]) / PRETRAIN_WEIGHTS_FILE
    b = Path(rest["checkpoint"]) / PRETRAIN_WEIGHTS_FILE
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        assert set(fa.keys()) == set(fb.keys())
        for k in fa.keys():
            assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), k
    la = [json.loads(x) for x in (tmp_path / "whole" / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()]
    assert la[-1]["total"] == lb[-1]["total"] and [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="PretrainConfig.lr was 0.001 and is 0.005"):
        pretrain(tiny_cfg(tmp_path / "part", pool_root, objective=objective, lr=5e-3))


def test_export_loads_into_depth_anything(tmp_path, pool_root):
    out = tmp_path / "run"
    assert cli_main(["--objective", "mae", "--sources", "synth-indoor:pretrain", "--source-n", "8",
                     "--image-size", "56", "--data-root", str(pool_root / "data"), "--global-crop", "28",
                     "--batch-size", "4", "--steps", "2", "--out-dir", str(out),
                     "--export", str(tmp_path / "enc" / "vitt-mae.safetensors")]) == 0
    f = tmp_path / "enc" / "vitt-mae.safetensors"
    info = json.loads(f.with_suffix(".json").read_text())
    assert info["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest() and info["bytes"] == f.stat().st_size
    assert f.stat().st_size <= 12e6 and info["images_seen"] == 8 and info["objective"] == "mae"
    again = export_encoder(out, tmp_path / "again.safetensors")
    assert again["sha256"] == info["sha256"]  # the same checkpoint gives the same bytes
    assert info["reproduce"].startswith("python -m dalib.pretrain --objective mae --encoder vitt --sources "
                                        "synth-indoor:pretrain --source-n 8 --image-size 56")
    from dalib.pretrain.cli import parse_args

    again, _ = parse_args(info["reproduce"].split()[3:])  # the command gives back the run's config
    assert {k: v for k, v in again.to_dict().items() if k not in ("stop_at", "resume")} == {
        k: v for k, v in info["config"].items() if k not in ("stop_at", "resume")}
    with safe_open(str(f), "pt") as fh:
        keys = list(fh.keys())
        assert all(k.startswith("pretrained.") for k in keys)
        assert {fh.get_tensor(k).dtype for k in keys} == {torch.float16}
    model = DepthAnything("vitt")
    load_encoder_weights(model, f)
    ref = build_model("vitt", pretrained_encoder=str(f))
    with safe_open(str(out / "checkpoints" / "step-00000002" / PRETRAIN_WEIGHTS_FILE), "pt") as fh:
        trained = fh.get_tensor("student.pretrained.blocks.3.attn.qkv.weight")
    assert torch.equal(model.pretrained.blocks[3].attn.qkv.weight, trained.half().float())
    assert torch.equal(ref.pretrained.pos_embed, model.pretrained.pos_embed)
    assert model(torch.randn(1, 3, 28, 28)).shape == (1, 28, 28)


def test_export_refuses_a_uniform_dino_teacher(tmp_path, pool_root):
    # a wide bottleneck and a soft teacher: cosines to the prototypes ~ 1/32, so its softmax is near uniform
    cfg = tiny_cfg(tmp_path / "u", pool_root, steps=1, lr=1e-6, head_bottleneck=1024, teacher_temp=(0.07, 0.07))
    pretrain(cfg)
    with pytest.raises(ValueError, match="uniform phase"):
        export_encoder(cfg.out_dir, tmp_path / "e.safetensors")
    info = export_encoder(cfg.out_dir, tmp_path / "e.safetensors", force=True)
    assert info["objective"] == "dino" and "--steps 1 " in reproduce_command(cfg)
    # a random initialisation: a sharp-looking teacher (entropy well below ln K) that nothing has trained
    init = tiny_cfg(tmp_path / "init", pool_root, steps=2, lr=1e-6, head_bottleneck=256)
    pretrain(init)
    assert json.loads((tmp_path / "init" / "train_log.jsonl").read_text().splitlines()[-1])["teacher_entropy"] < 3.7
    with pytest.raises(ValueError, match="DINO loss"):
        export_encoder(init.out_dir, tmp_path / "e.safetensors")


# ----------------------------------------------------------------------------- data
def test_pretrain_splits_have_seeds_no_other_split_uses():
    from dalib.data.schema import list_manifests

    seeds, pretrain_splits = {}, []
    for m in list_manifests():
        if m["source"]["type"] != "generator":
            continue
        for split, entry in m["splits"].items():
            seeds.setdefault(entry["seed"], []).append(f"{m['name']}:{split}")
            if split == "pretrain":
                pretrain_splits.append(m["name"])
                assert entry.get("role") == "unlabelled"
    assert sorted(pretrain_splits) == ["synth-indoor", "synth-outdoor", "synth-photo"]
    assert {s: u for s, u in seeds.items() if len(u) > 1} == {}


def test_pool_has_no_labels(pool_root):
    cfg = tiny_cfg(pool_root / "r", pool_root)
    pool = ImagePool(cfg)
    assert all(p.column_names == ["image"] for p in pool.parts)
    from dalib.data.serve import load

    ds = load("synth-indoor", "pretrain", root=cfg.data_root, n=2, height=56, width=56)
    assert not {"depth", "mask", "material"} & set(ds.column_names)


# ----------------------------------------------------------------------------- probes of a frozen encoder
class _PatchMeans(torch.nn.Module):
    """A stand-in encoder whose tokens are each patch's mean of the red channel (and its square); `blind` gives
    every patch the same token, as an encoder that ignores its input."""

    def __init__(self, blind=False):
        super().__init__()
        self.blind, self.dummy = blind, torch.nn.Parameter(torch.zeros(1))

    def encode_patch_tokens(self, x):
        m = torch.nn.functional.avg_pool2d(x[:, :1], 14).flatten(1)  # (B, N)
        m = torch.zeros_like(m) if self.blind else m
        return torch.stack([m, m * m], -1)


def _scenes_whose_red_is_disparity(n, seed):
    rng = np.random.default_rng(seed)
    depth = np.empty((n, 56, 56), np.float32)
    for i in range(n):
        ramp = np.linspace(rng.uniform(1, 2), rng.uniform(4, 8), 56)[:, None]
        depth[i] = ramp if i % 2 else ramp.T  # a ramp along y or along x
    disp = 1 / depth
    red = (disp - disp.min()) / (disp.max() - disp.min())
    image = (np.stack([red, np.zeros_like(red), np.zeros_like(red)], -1) * 255).astype(np.uint8)
    return {"image": image, "depth": depth, "mask": depth > 0}


def test_linear_depth_probe_reads_an_encoder_that_sees_depth_and_not_a_blind_one():
    from dalib.pretrain.probe import linear_depth_probe

    train, test = _scenes_whose_red_is_disparity(12, 0), _scenes_whose_red_is_disparity(8, 1)
    seeing = linear_depth_probe(_PatchMeans(), train, test, (56, 56))
    blind = linear_depth_probe(_PatchMeans(blind=True), train, test, (56, 56))
    # red is disparity up to scale and shift per image: 0.03 from the 4 x 4 patch grid; shuffling hurts tenfold
    assert seeing["abs_rel"] < 0.05 and seeing["gain"] > 3.0, seeing
    assert blind["abs_rel"] > 0.25 and abs(blind["gain"]) < 0.05, blind  # one layout for every image
    assert seeing["n_images"] == 8 and "train_abs_rel" in seeing


def test_pca_rgb_and_patch_disparity():
    from dalib.pretrain.probe import patch_disparity, pca_rgb

    tokens = torch.randn(3, 4, 5, 16)
    rgb = pca_rgb(tokens)
    assert rgb.shape == (3, 4, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1
    depth = np.full((1, 28, 28), 2.0, np.float32)
    depth[0, :14, :14] = 4.0
    mask = np.ones((1, 28, 28), bool)
    mask[0, 14:, 14:] = False  # a patch with no valid pixel
    target, patch_depth = patch_disparity(depth, mask, (28, 28))
    assert np.allclose(patch_depth[0], [[4.0, 2.0], [2.0, 0.0]])
    assert np.allclose(target[0], [[0.0, 1.0], [1.0, 0.0]])  # far -> 0, near -> 1, invalid 0


# ----------------------------------------------------------------------------- the shipped encoders
@pytest.mark.parametrize("name", sorted(COURSE_ENCODERS))
def test_shipped_encoder_has_its_hash_and_loads(name, tmp_path, monkeypatch):
    """Each encoder in dalib/encoders/ is the file its sha256 names (checked by hashing it here, not only by the
    loader), at most 12 MB of fp16, and fills the encoder of a vitt exactly; a changed byte is refused."""
    file, digest = COURSE_ENCODERS[name]
    path = weights.ENCODER_DIR / file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert path.stat().st_size <= 12 * 2**20
    info = course_encoder_info(name)
    assert info["encoder"] == "vitt" and info["sha256"] == digest and info["reproduce"].startswith("python -m dalib")
    model = build_model("vitt", pretrained_encoder=name)
    with safe_open(str(path), "pt") as fh:
        for key in fh.keys():
            assert fh.get_tensor(key).dtype == torch.float16
            assert torch.equal(model.state_dict()[key], fh.get_tensor(key).float()), key
    damaged = tmp_path / "encoders"
    damaged.mkdir()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / file).write_bytes(bytes(data))
    monkeypatch.setattr(weights, "ENCODER_DIR", damaged)
    with pytest.raises(ValueError, match=f"{file}: sha256 .* expected {digest}"):
        build_model("vitt", pretrained_encoder=name)
    with pytest.raises(ValueError, match="is a vitt encoder"):
        weights.resolve_pretrained_encoder(name, "vits")
