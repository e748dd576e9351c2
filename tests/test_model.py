"""dalib.model: parity with transformers' DepthAnything, official checkpoint layout, counts, I/O.

The reference is `transformers.DepthAnythingForDepthEstimation`, an independent implementation. Its
DINOv2 resamples position embeddings with `size=`, the official code with `scale_factor` and a +0.1
offset; at sizes other than 518x518 the reference is given the official formula (written out here).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dalib import model as M
from dalib import weights as W

transformers = pytest.importorskip("transformers")
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation  # noqa: E402
from transformers.models.dinov2 import modeling_dinov2  # noqa: E402
from dalib.images import network_size
from dalib.pos_embed import interpolate_pos_encoding
from dalib.weights import from_hf_state_dict, from_official_state_dict, load_weights, to_hf_state_dict

RTOL = 1e-4


# ----------------------------------------------------------------------------- reference helpers
def official_interpolate(self, embeddings, height, width):
    """DINOv2 `interpolate_pos_encoding` of the official repository, written for transformers' embeddings."""
    pos = self.position_embeddings
    n = pos.shape[1] - 1
    h0, w0 = height // 14, width // 14
    if n == h0 * w0 and height == width:
        return pos
    dim = pos.shape[-1]
    sqrt_n = math.sqrt(n)
    patch = pos[:, 1:].float().reshape(1, int(sqrt_n), int(sqrt_n), dim).permute(0, 3, 1, 2)
    patch = torch.nn.functional.interpolate(
        patch, scale_factor=((h0 + 0.1) / sqrt_n, (w0 + 0.1) / sqrt_n), mode="bicubic", antialias=False
    )
    assert patch.shape[-2:] == (h0, w0)
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos[:, :1].float(), patch), dim=1).to(pos.dtype)


def hf_vitt_config(out_indices=(3, 6, 9, 12), **backbone):
    """transformers config for the vitt size, written by hand (not derived from dalib)."""
    bb = dict(model_type="dinov2", hidden_size=192, num_hidden_layers=12, num_attention_heads=3, image_size=518,
              patch_size=14, out_indices=list(out_indices), reshape_hidden_states=False, apply_layernorm=True)
    bb.update(backbone)
    return DepthAnythingConfig(backbone_config=bb, reassemble_hidden_size=bb["hidden_size"],
                               neck_hidden_sizes=[24, 48, 96, 192], fusion_hidden_size=32, patch_size=14)


def randomise_(hf: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (LayerScale, norms, biases too) and an output bias that keeps ~half
    of the pixels above the final ReLU, so the comparison sees a non-trivial map."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() > 1 and "embeddings" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif "lambda1" in name or ("norm" in name and name.endswith("weight")):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        conv3 = hf.head.conv3
        conv3.bias.zero_()
        seen = {}
        h = conv3.register_forward_hook(lambda m, i, o: seen.update(o=o))
        hf(pixel_values=torch.randn(1, 3, 182, 182, generator=g))
        h.remove()
        conv3.bias.fill_(-seen["o"].median().item())
    return hf.eval()


def hf_predict(hf, x, official_pos=True):
    with torch.no_grad():
        if official_pos:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(modeling_dinov2.Dinov2Embeddings, "interpolate_pos_encoding", official_interpolate)
                return hf(pixel_values=x).predicted_depth
        return hf(pixel_values=x).predicted_depth


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def hf_vitt():
    torch.manual_seed(0)
    return randomise_(DepthAnythingForDepthEstimation(hf_vitt_config()))


@pytest.fixture(scope="module")
def ours_vitt(hf_vitt):
    return from_hf_state_dict(hf_vitt.state_dict(), "vitt").eval()


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("hw", [(518, 518), (364, 476)])
def test_parity_with_transformers(hf_vitt, ours_vitt, hw):
    x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(1))
    ref = hf_predict(hf_vitt, x)
    with torch.no_grad():
        out = ours_vitt(x)
    assert out.shape == (1, *hw)
    assert (ref > 0).float().mean() > 0.1  # the map is not all zeros after the ReLU
    assert rel_err(out, ref) < RTOL
    assert (out >= 0).all()


def test_transformers_size_resampling_differs_from_official(hf_vitt, ours_vitt):
    """Why the reference is patched: `size=` resampling differs by far more than the tolerance."""
    x = torch.randn(1, 3, 182, 238, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = ours_vitt(x)
    assert rel_err(out, hf_predict(hf_vitt, x, official_pos=False)) > 10 * RTOL


def test_forward_features_and_encoder_tokens(hf_vitt, ours_vitt):
    x = torch.randn(1, 3, 182, 252, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(modeling_dinov2.Dinov2Embeddings, "interpolate_pos_encoding", official_interpolate)
        ref_tokens = hf_vitt.backbone(pixel_values=x).feature_maps[-1][:, 1:]  # block 12, layernormed
        disp, tokens = ours_vitt.forward_features(x)
        enc = ours_vitt.encode_patch_tokens(x)
        plain = ours_vitt(x)
        via_forward = ours_vitt(x, return_features=True)
    assert tokens.shape == (1, (182 // 14) * (252 // 14), 192)
    assert rel_err(tokens, ref_tokens) < RTOL
    torch.testing.assert_close(enc, tokens)
    torch.testing.assert_close(disp, plain)
    torch.testing.assert_close(via_forward[0], disp)
    torch.testing.assert_close(via_forward[1], tokens)


def test_v1_takes_last_four_blocks(tmp_path):
    torch.manual_seed(0)
    hf = randomise_(DepthAnythingForDepthEstimation(hf_vitt_config(out_indices=(9, 10, 11, 12))), seed=5)
    ours = from_hf_state_dict(hf.state_dict(), "vitt", version="v1").eval()
    assert ours.intermediate_layer_idx == (8, 9, 10, 11)
    x = torch.randn(1, 3, 182, 238, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = ours(x)
    ref = hf_predict(hf, x)
    assert rel_err(out, ref) < RTOL
    # a model directory written by transformers itself: the version is read from its config.json
    hf.save_pretrained(tmp_path / "hf_dir")
    loaded = load_weights(tmp_path / "hf_dir").eval()
    assert loaded.version == "v1"
    with torch.no_grad():
        assert rel_err(loaded(x), ref) < RTOL


def test_swiglu_encoder_parity_and_conversion():
    """The vitg-style SwiGLU MLP (official w12/w3, timm fc1/fc2, transformers gate/up/down) on a tiny width."""
    cfg = M.ModelConfig("tiny_glu", "vit_giant_patch14_dinov2", 48, 4, 2, 16, (8, 16, 32, 48), (0, 1, 2, 3),
                        ffn="swiglu")
    hc = DepthAnythingConfig(
        backbone_config=dict(model_type="dinov2", hidden_size=48, num_hidden_layers=4, num_attention_heads=2,
                             image_size=518, patch_size=14, out_indices=[1, 2, 3, 4], use_swiglu_ffn=True,
                             reshape_hidden_states=False),
        reassemble_hidden_size=48, neck_hidden_sizes=[8, 16, 32, 48], fusion_hidden_size=16)
    torch.manual_seed(0)
    hf = randomise_(DepthAnythingForDepthEstimation(hc), seed=7)
    ours = from_hf_state_dict(hf.state_dict(), cfg).eval()
    x = torch.randn(1, 3, 182, 238, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = ours(x)
    assert rel_err(out, hf_predict(hf, x)) < RTOL
    # legacy hub names (weights_in = [gate; up]) round-trip; official names (w12/w3) load
    back = from_hf_state_dict(to_hf_state_dict(ours, legacy=True), cfg)
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    official = {k.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3."): v for k, v in ours.state_dict().items()}
    assert any(".mlp.w12." in k for k in official)
    sd = W._official_to_ours(official)
    m2 = M.DepthAnything(cfg)
    m2.load_state_dict(sd, strict=True)


def test_to_hf_state_dict_loads_strictly_and_matches(ours_vitt):
    hf = DepthAnythingForDepthEstimation(hf_vitt_config()).eval()
    hf.load_state_dict(to_hf_state_dict(ours_vitt), strict=True)
    x = torch.randn(2, 3, 238, 182, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert rel_err(ours_vitt(x), hf_predict(hf, x)) < RTOL


def test_legacy_hf_names_round_trip(ours_vitt):
    legacy = to_hf_state_dict(ours_vitt, legacy=True)
    assert "backbone.encoder.layer.0.attention.attention.query.weight" in legacy
    assert "backbone.encoder.layer.0.attention.output.dense.bias" in legacy
    back = from_hf_state_dict(legacy, "vitt")
    for k, v in ours_vitt.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


# ----------------------------------------------------------------------------- official layout
def official_vits_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released depth_anything_v2_vits.pth, written out from the architecture."""
    C, F, oc = 384, 64, (48, 96, 192, 384)
    s = {"pretrained.cls_token": (1, 1, C), "pretrained.pos_embed": (1, 37 * 37 + 1, C),
         "pretrained.mask_token": (1, C), "pretrained.patch_embed.proj.weight": (C, 3, 14, 14),
         "pretrained.patch_embed.proj.bias": (C,), "pretrained.norm.weight": (C,), "pretrained.norm.bias": (C,)}
    for n in range(12):
        b = f"pretrained.blocks.{n}."
        s.update({b + "norm1.weight": (C,), b + "norm1.bias": (C,), b + "attn.qkv.weight": (3 * C, C),
                  b + "attn.qkv.bias": (3 * C,), b + "attn.proj.weight": (C, C), b + "attn.proj.bias": (C,),
                  b + "ls1.gamma": (C,), b + "norm2.weight": (C,), b + "norm2.bias": (C,),
                  b + "mlp.fc1.weight": (4 * C, C), b + "mlp.fc1.bias": (4 * C,),
                  b + "mlp.fc2.weight": (C, 4 * C), b + "mlp.fc2.bias": (C,), b + "ls2.gamma": (C,)})
    h = "depth_head."
    for i, c in enumerate(oc):
        s[f"{h}projects.{i}.weight"], s[f"{h}projects.{i}.bias"] = (c, C, 1, 1), (c,)
        s[f"{h}scratch.layer{i + 1}_rn.weight"] = (F, c, 3, 3)
    for i, k in ((0, 4), (1, 2)):
        s[f"{h}resize_layers.{i}.weight"], s[f"{h}resize_layers.{i}.bias"] = (oc[i], oc[i], k, k), (oc[i],)
    s[f"{h}resize_layers.3.weight"], s[f"{h}resize_layers.3.bias"] = (oc[3], oc[3], 3, 3), (oc[3],)
    for r in range(1, 5):
        p = f"{h}scratch.refinenet{r}."
        s[p + "out_conv.weight"], s[p + "out_conv.bias"] = (F, F, 1, 1), (F,)
        for u in (1, 2):
            for c in (1, 2):
                s[f"{p}resConfUnit{u}.conv{c}.weight"], s[f"{p}resConfUnit{u}.conv{c}.bias"] = (F, F, 3, 3), (F,)
    s[f"{h}scratch.output_conv1.weight"], s[f"{h}scratch.output_conv1.bias"] = (F // 2, F, 3, 3), (F // 2,)
    s[f"{h}scratch.output_conv2.0.weight"], s[f"{h}scratch.output_conv2.0.bias"] = (32, F // 2, 3, 3), (32,)
    s[f"{h}scratch.output_conv2.2.weight"], s[f"{h}scratch.output_conv2.2.bias"] = (1, 32, 1, 1), (1,)
    return s


def test_official_layout_loads_strictly(tmp_path):
    shapes = official_vits_shapes()
    assert len(shapes) == 239
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v, generator=g) for k, v in shapes.items()}
    model = from_official_state_dict(sd, "vits")
    own = model.state_dict()
    assert set(own) == set(shapes)
    for k, v in sd.items():
        assert torch.equal(own[k], v), k
    # through a .pth file, read with weights_only=True, encoder inferred from the shapes
    torch.save(sd, tmp_path / "depth_anything_v2_vits.pth")
    loaded = load_weights(tmp_path / "depth_anything_v2_vits.pth")
    assert loaded.encoder == "vits" and torch.equal(loaded.state_dict()["pretrained.blocks.3.ls1.gamma"],
                                                    sd["pretrained.blocks.3.ls1.gamma"])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_a_file_that_is_not_weights_says_so(tmp_path, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(1 << 16))
    with pytest.raises(ValueError, match="not a readable") as err:
        load_weights(path)
    msg = str(err.value)
    assert str(path) in msg and "weights_only=False" not in msg


def test_a_pickle_with_objects_is_refused_without_running_it(tmp_path):
    import datetime

    path = tmp_path / "objects.pth"  # a datetime is not on torch's weights-only allow list
    torch.save({"pretrained.pos_embed": torch.zeros(1, 5, 192), "saved": datetime.date(2026, 1, 1)}, path)
    with pytest.raises(ValueError, match="never unpickled") as err:
        load_weights(path)
    assert str(path) in str(err.value) and "weights_only=False" not in str(err.value)


def test_official_layout_errors_name_the_key():
    sd = {k: torch.zeros(v) for k, v in official_vits_shapes().items()}
    broken = dict(sd)
    del broken["depth_head.scratch.refinenet4.resConfUnit1.conv1.weight"]
    with pytest.raises(ValueError, match="refinenet4.resConfUnit1.conv1.weight"):
        from_official_state_dict(broken, "vits")
    bad = dict(sd)
    bad["pretrained.norm.weight"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"pretrained.norm.weight: got \(5,\), expected \(384,\)"):
        from_official_state_dict(bad, "vits")


@pytest.mark.parametrize("name,count", [("vits", 24_785_089), ("vitb", 97_470_785), ("vitl", 335_315_649),
                                        ("vitg", 1_258_132_225)])
def test_parameter_counts(name, count):
    assert M.count_parameters(name) == count


def test_encoder_count_and_configs():
    with torch.device("meta"):
        m = M.DepthAnything("vits")
    assert sum(p.numel() for p in m.pretrained.parameters()) == 22_056_576
    assert M.CONFIGS["vitl"].layers == (4, 11, 17, 23) and M.CONFIGS["vitg"].layers == (9, 19, 29, 39)
    assert M.CONFIGS["vitb"].out_channels == (96, 192, 384, 768) and M.CONFIGS["vitb"].features == 128
    assert M.CONFIGS["vitl"].block_indices("v1") == (20, 21, 22, 23)


# ----------------------------------------------------------------------------- behaviour
def test_position_embedding_interpolation():
    pos = torch.randn(1, 37 * 37 + 1, 8)
    assert interpolate_pos_encoding(pos, 37, 37) is pos
    out = interpolate_pos_encoding(pos, 37, 50)  # 518 x 700
    assert out.shape == (1, 37 * 50 + 1, 8)
    torch.testing.assert_close(out[:, 0], pos[:, 0])
    # a constant table stays constant (bicubic weights sum to one)
    const = torch.ones(1, 37 * 37 + 1, 4)
    torch.testing.assert_close(interpolate_pos_encoding(const, 26, 34), torch.ones(1, 26 * 34 + 1, 4))


def test_input_checks():
    m = M.DepthAnything("vitt")
    with pytest.raises(ValueError, match="multiples of 14"):
        m(torch.zeros(1, 3, 100, 112))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        m(torch.zeros(3, 112, 112))
    with pytest.raises(ValueError, match="unknown encoder"):
        M.DepthAnything("vitx")


def test_training_step_and_checkpointing():
    torch.manual_seed(0)
    m = M.DepthAnything("vitt").train()
    x = torch.randn(2, 3, 98, 126)
    disp, tokens = m.forward_features(x)
    (disp.mean() + tokens.pow(2).mean()).backward()
    g1 = m.pretrained.blocks[0].attn.qkv.weight.grad.clone()
    assert torch.isfinite(g1).all() and g1.abs().sum() > 0
    m.zero_grad()
    m.grad_checkpointing = True
    disp2, tokens2 = m.forward_features(x)
    (disp2.mean() + tokens2.pow(2).mean()).backward()
    torch.testing.assert_close(m.pretrained.blocks[0].attn.qkv.weight.grad, g1, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_random_init_output_is_alive(seed):
    # Without the head's positive output bias, most seeds give a model that outputs 0 at >90% of
    # the pixels (final ReLU) and gets no gradient there; such a run cannot learn.
    torch.manual_seed(seed)
    m = M.DepthAnything("vitt").train()
    x = torch.randn(4, 3, 56, 70, generator=torch.Generator().manual_seed(100 + seed))
    disp = m(x)
    assert (disp > 0).float().mean().item() == 1.0
    disp.std().backward()  # a loss that depends on the map's variation, as the SSI loss does
    g = m.pretrained.blocks[0].attn.qkv.weight.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_network_size_matches_official_resize():
    # lower_bound resize to 518, multiple of 14: values worked out by hand from the official rule
    assert network_size(480, 640) == (518, 686)  # scale 1.0792: 690.7 -> 49.3 patches -> 49
    assert network_size(1000, 500) == (1036, 518)
    assert network_size(518, 518) == (518, 518)
    assert network_size(300, 301, 518) == (518, 518)  # 519.7 / 14 = 37.1 -> 37
    h, w = network_size(123, 4567)
    assert h >= 518 and h % 14 == 0 and w % 14 == 0


def test_infer_image_matches_manual_pipeline(ours_vitt, tmp_path):
    import cv2
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    out = ours_vitt.infer_image(img, input_size=70)
    assert out.shape == (50, 70) and out.dtype == np.float32 and (out >= 0).all()
    # by hand: the official resize (70 * 70/50 = 98 wide, 70 high), normalise, predict, resize back
    x = cv2.resize(img.astype(np.float32) / 255, (98, 70), interpolation=cv2.INTER_CUBIC)
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    with torch.no_grad():
        d = ours_vitt(torch.from_numpy(x.transpose(2, 0, 1)).float()[None])
    d = torch.nn.functional.interpolate(d[None], (50, 70), mode="bilinear", align_corners=True)[0, 0]
    np.testing.assert_allclose(out, d.numpy(), rtol=1e-4, atol=1e-6)
    # PIL input, path input and the batched path give the same map
    Image.fromarray(img).save(tmp_path / "a.png")
    np.testing.assert_allclose(ours_vitt.infer_image(Image.fromarray(img), 70), out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours_vitt.infer_image(tmp_path / "a.png", 70), out, rtol=1e-5, atol=1e-6)
    other = rng.integers(0, 256, size=(40, 40), dtype=np.uint8)
    batch = ours_vitt.infer_batch([img, other, img], 70, batch_size=2)
    assert [b.shape for b in batch] == [(50, 70), (40, 40), (50, 70)]
    np.testing.assert_allclose(batch[0], out, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(batch[2], out, rtol=1e-4, atol=1e-6)


def test_save_and_load_formats(ours_vitt, tmp_path):
    from safetensors.torch import save_file

    x = torch.randn(1, 3, 140, 182)
    with torch.no_grad():
        ref = ours_vitt(x)
    ours_vitt.save_pretrained(tmp_path / "ckpt", extra={"step": 7})
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["encoder"] == "vitt" and cfg["version"] == "v2" and cfg["extra"] == {"step": 7}
    save_file({k: v.contiguous() for k, v in to_hf_state_dict(ours_vitt, legacy=True).items()},
              str(tmp_path / "hf.safetensors"))
    torch.save(ours_vitt.state_dict(), tmp_path / "official.pth")
    for src in ("ckpt", "hf.safetensors", "official.pth"):
        m = load_weights(tmp_path / src).eval()
        assert m.encoder == "vitt"
        with torch.no_grad():
            torch.testing.assert_close(m(x), ref, msg=src)
    with pytest.raises(ValueError, match="'vitt'.*encoder='vits'"):
        load_weights(tmp_path / "official.pth", encoder="vits")
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_weights(tmp_path / "nothere.pth")


def test_pretrained_encoder_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("DALIB_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no released DINOv2 weights"):
        W.build_model("vitt", pretrained_encoder=True)
    import huggingface_hub

    def empty_cache(*a, **k):  # as on a machine whose Hugging Face cache lacks the file
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", empty_cache)
    with pytest.raises(FileNotFoundError, match=r"weights[/\\]dinov2_vits14_pretrain.pth"):
        W.build_model("vits", pretrained_encoder=True)
    # a timm-format encoder file (no mask_token) initialises `pretrained`
    from safetensors.torch import save_file

    src = M.DepthAnything("vitt")
    enc = {k: v.contiguous() for k, v in src.pretrained.state_dict().items() if k != "mask_token"}
    save_file(enc, str(tmp_path / "enc.safetensors"))
    built = W.build_model("vitt", pretrained_encoder=tmp_path / "enc.safetensors")
    for k, v in enc.items():
        assert torch.equal(built.pretrained.state_dict()[k], v), k


def test_inference_leaves_each_module_in_its_own_mode():
    """infer_image runs the network in eval mode and afterwards gives back the mixed modes it found: a
    frozen encoder in eval mode inside a model in training mode stays in eval mode, the rest trains again."""
    m = M.DepthAnything("vitt").train()
    m.pretrained.eval()
    seen = []
    hook = m.depth_head.register_forward_pre_hook(lambda mod, _: seen.append(mod.training))
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    m.infer_image(rgb, 28)
    hook.remove()
    assert seen == [False]
    assert m.training and m.depth_head.training and not m.pretrained.training
    assert all(not sub.training for sub in m.pretrained.modules())


def test_bf16_autocast_keeps_the_output_stage_in_float32():
    """Under bf16 autocast the output is float32 and follows the float32 output's relief (the prediction minus its
    mean) to within a few bf16 rounding units (u = 2^-8: 8 significant bits). With the output stage in bf16 too,
    the relief of a random-init model, ~3% of its +1 offset, is rounded to a dozen levels per image (error ~12%)."""
    torch.manual_seed(0)
    model = M.DepthAnything("vitt").eval()
    x = torch.randn(2, 3, 84, 84)
    u = 2.0**-8
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.float32
    relief, relief_low = (y - y.mean((1, 2), keepdim=True) for y in (ref, low))
    err = ((relief_low - relief).abs().amax() / relief.abs().amax()).item()
    assert err < 4 * u, err
    levels = [len(torch.unique(low[i])) for i in range(2)]
    assert min(levels) > 0.9 * min(len(torch.unique(ref[i])) for i in range(2)), levels


# ============================================================================ bad inputs: one clear error each
@pytest.mark.parametrize("where", ["nan", "inf"])
def test_infer_image_refuses_non_finite_pixels_with_their_count(where):
    """One NaN pixel would turn the whole map into NaN; both backends share `infer_images`, which refuses it."""
    from dalib.images import infer_images

    img = np.random.default_rng(0).random((30, 40, 3)).astype(np.float32)
    img[3, 4, 1] = np.nan if where == "nan" else np.inf
    img[20, 30] = np.nan  # all channels of one pixel: still one pixel
    with pytest.raises(ValueError, match=r"2 pixel\(s\) with NaN or infinite values \(of 1200"):
        M.DepthAnything("vitt").infer_image(img, 28)
    with pytest.raises(ValueError, match=r"2 pixel\(s\)"):  # the recipe of the onnxruntime backend too
        infer_images(lambda x: x[:, 0], [img], 28)


def test_infer_image_refuses_an_empty_image_naming_its_shape():
    with pytest.raises(ValueError, match=r"empty image: shape \(0, 10, 3\)"):
        M.DepthAnything("vitt").infer_image(np.zeros((0, 10, 3), np.float32), 28)


def test_load_weights_names_a_config_json_that_is_not_an_object(tmp_path):
    M.DepthAnything("vitt").save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'}: holds a JSON list, expected an object"):
        W.load_weights(tmp_path)
