"""dalib.benchmarks: each zero-shot protocol on hand-computable depth maps, DA-2K accuracy, the official weights
from a cache laid out as huggingface_hub writes it, and the published numbers beside ours."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hub_fixtures as fx
from dalib.benchmarks import (CROPS, PAPER_DA2K, PAPER_TABLE2, PROTOCOLS, crop_mask, da2k_correct, evaluate_benchmark,
                              evaluate_da2k, score_dense, zero_shot_table)
from dalib.weights import OFFICIAL_WEIGHTS, official_model
from dalib.data.serve import load
from dalib.hub import HubFileError


def test_crops_are_the_published_pixel_boxes():
    eigen = crop_mask("eigen", (480, 640))  # rows 45:471, columns 41:601 on NYU's 480 x 640
    assert eigen.sum() == 426 * 560 and eigen[45, 41] and not eigen[44, 41] and not eigen[45, 601]
    garg = crop_mask("garg", (375, 1242))  # KITTI's usual size
    rows, cols = np.nonzero(garg.any(1))[0], np.nonzero(garg.any(0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    assert crop_mask(None, (3, 4)).all()
    assert PROTOCOLS["nyu"].crop == "eigen" and PROTOCOLS["kitti"].crop == "garg" and PROTOCOLS["diode"].crop is None
    assert set(CROPS) == {"eigen", "garg"}


def _two_planes(shape, crop, near=2.0, far=4.0):
    """Depth `near` on the left half of the crop, `far` on its right half (equal pixel counts), 0 elsewhere."""
    inside = crop_mask(crop, shape)
    cols = np.nonzero(inside.any(0))[0]
    mid = cols[0] + len(cols) // 2
    depth = np.where(inside, np.where(np.arange(shape[1]) < mid, near, far)[None, :], 0.0).astype(np.float32)
    return depth, inside


@pytest.mark.parametrize("bench, shape, outlier", [
    ("nyu", (48, 64), 50.0),     # beyond the 10 m cap
    ("kitti", (40, 125), 100.0),  # beyond the 80 m cap (the Garg crop is 116 columns wide here)
    ("diode", (30, 40), 0.3),    # below the 0.6 m floor
])
def test_dense_protocol_on_hand_computable_maps(bench, shape, outlier):
    p = PROTOCOLS[bench]
    depth, inside = _two_planes(shape, p.crop)
    perfect = np.where(inside, 3.0 / np.where(inside, depth, 1) + 7.0, 5.0)  # an affine map of 1/depth
    assert score_dense([perfect], [depth], None, bench) == pytest.approx(
        {"abs_rel": 0.0, "delta1": 1.0, "n_images": 1, "protocol": bench}, abs=1e-9)
    # a flat prediction: least squares gives the mean GT disparity (1/2 + 1/4) / 2, i.e. 8/3 m everywhere:
    # AbsRel = mean(|8/3 - 2| / 2, |8/3 - 4| / 4) = 1/3, and both ratios (4/3, 3/2) exceed 1.25, so delta1 = 0
    flat = np.ones(shape, np.float32)
    want = {"abs_rel": 1 / 3, "delta1": 0.0, "n_images": 1, "protocol": bench}
    assert score_dense([flat], [depth], None, bench) == pytest.approx(want)
    # pixels the protocol does not score change nothing: outside the cap or floor, outside the crop (where
    # there is one), and pixels the dataset's mask rules out
    noisy = depth.copy()
    noisy[inside & (np.arange(shape[1]) % 7 == 0)[None, :]] = outlier
    outside = ~inside if p.crop else np.zeros(shape, bool)
    noisy[outside] = 3.0
    mask = np.ones(shape, bool)
    mask[0, :] = False
    noisy[0, :] = np.where(inside[0], 9.0, noisy[0])
    pred = np.where(noisy == outlier, 100.0, flat)
    scored = score_dense([pred], [noisy], [mask], bench)
    assert scored["abs_rel"] == pytest.approx(1 / 3, abs=0.02) and scored["delta1"] == 0.0


def test_a_changed_cap_changes_the_number():
    depth, inside = _two_planes((48, 64), "eigen")
    far = inside & (np.arange(64) % 5 == 0)[None, :]
    depth[far] = 50.0
    pred = np.where(far, 1.0, 1 / np.where(depth > 0, depth, 1))  # exact, except a wrong guess at 50 m
    assert score_dense([pred], [depth], None, "nyu")["abs_rel"] == pytest.approx(0.0, abs=1e-9)  # beyond 10 m
    # under KITTI's 80 m cap the 50 m pixels are scored: were NYU's cap 80 m, the line above would fail
    assert score_dense([pred], [depth], None, "kitti")["abs_rel"] > 0.05


def test_images_of_several_sizes_and_errors():
    a, _ = _two_planes((48, 64), "eigen")
    b, _ = _two_planes((24, 32), "eigen")
    rep = score_dense([1 / np.maximum(a, 1), 1 / np.maximum(b, 1)], [a, b], None, "nyu")
    assert rep["n_images"] == 2 and rep["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="benchmark 'eth3d'"):
        score_dense([a], [a], None, "eth3d")
    with pytest.raises(ValueError, match="differ in size"):
        score_dense([b], [a], None, "nyu")
    with pytest.raises(ValueError, match=r"no image has 2 or more valid pixels in 0.001..10.0 m inside the eigen crop"):
        score_dense([a], [np.full_like(a, 20.0)], None, "nyu")


def test_da2k_correct_counts_the_closer_point_by_larger_disparity():
    pred = np.array([[5.0, 1.0], [3.0, 3.0]])
    #         closer = point1 at (0, 0): 5 > 1 right; point2 at (1, 0) vs point1 (0, 1): 3 > 1 right; a tie: wrong
    ok = da2k_correct(pred, [[0, 0], [0, 1], [1, 0]], [[0, 1], [1, 0], [1, 1]], [1, 2, 1])
    assert ok.tolist() == [True, True, False]
    assert da2k_correct(pred, [[0.4, 0.4]], [[5, 9]], [1]).tolist() == [True]  # rounded, clipped to the image


def test_da2k_accuracy_on_the_fixture(hub_cache):
    fx.write_da2k(hub_cache)
    ds = load("da-2k", "test")

    def rows_near(images):  # disparity falls with the row: the top (point1's rows 5..7) is closer
        n, h, w = np.asarray(images).shape[:3]
        return np.broadcast_to(-np.arange(h, dtype=np.float32)[:, None], (n, h, w)).copy()

    def rows_far(images):
        return -rows_near(images)

    rep = evaluate_da2k(rows_near, ds, input_size=14)
    assert rep == {"accuracy": 1.0, "n_pairs": 3 * fx.DA2K_PAIRS, "n_images": 3,
                   "per_scene": {"aerial": 1.0, "indoor": 1.0, "outdoor": 1.0}}
    assert evaluate_da2k(rows_far, ds)["accuracy"] == 0.0


def test_nyu_benchmark_end_to_end_on_the_fixture(hub_cache):
    fx.write_nyu(hub_cache)
    ds = load("nyu-d", "test")
    truth = {fx.nyu_sample(k)[0].transpose(1, 2, 0).tobytes(): fx.nyu_sample(k)[1] for k in range(3)}

    def oracle(images):  # the true disparity of each image: pairs image and depth correctly, or fails
        return np.stack([1 / np.maximum(truth[im.tobytes()], 1e-3) for im in np.asarray(images)])

    rep = evaluate_benchmark(oracle, ds, "nyu")
    assert rep["n_images"] == 3 and rep["abs_rel"] == pytest.approx(0.0, abs=1e-6) and rep["delta1"] == 1.0


def test_official_weights_come_from_the_cache_in_the_official_layout(hub_cache):
    ref = OFFICIAL_WEIGHTS["V2-S"]
    assert (ref.repo_id, ref.filename) == ("depth-anything/Depth-Anything-V2-Small", "depth_anything_v2_vits.pth")
    with pytest.raises(HubFileError, match=f"hf download {ref.repo_id} {ref.filename} --revision {ref.revision}"):
        official_model("V2-S")
    path, sd = fx.write_official_weights(hub_cache, ref)
    assert path.parent.name == ref.revision and next(iter(sd)).startswith("pretrained.")
    model = official_model("V2-S")
    assert model.encoder == "vits" and not model.training
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_the_table_puts_the_papers_numbers_beside_ours():
    rows = {"v2_student": {"nyu": {"abs_rel": 0.2, "delta1": 0.7}, "da-2k": {"accuracy": 0.6}}}
    md = zero_shot_table(rows, ["nyu", "kitti", "da-2k"])
    lines = md.splitlines()
    assert lines[0] == "| model | nyu AbsRel | nyu δ1 | kitti AbsRel | kitti δ1 | DA-2K acc. (%) |"
    assert "| v2_student | 0.200 | 0.700 | - | - | 60.0 |" in lines
    assert "| paper: V2-S | 0.053 | 0.973 | 0.078 | 0.936 | 95.3 |" in lines
    assert "| paper: Marigold | - | - | - | - | 86.8 |" in lines
    assert PAPER_TABLE2["V2-L"]["diode"] == (0.066, 0.952) and PAPER_DA2K["V2-G"] == 97.4
