"""dalib.evaluate: dataset -> predictions -> metrics overall and per material region."""
import datasets
import numpy as np
import pytest

from dalib.evaluate import (MIDDLEBURY_SAMPLES, claim_line, claim_lower, constant_predictor, dataset_arrays,
                            evaluate, evaluate_constant, evaluate_middlebury, evaluate_model,
                            mean_disparity_baseline, metrics_table, middlebury_samples, paper_claims,
                            predict_disparities, results_table)
from dalib.synth.engine import generate
from dalib.synth.scenes import MATERIALS


@pytest.fixture(scope="module")
def scenes():
    out = generate("indoor", 4, seed=3, height=56, width=70)
    feats = datasets.Features({
        "image": datasets.Image(),
        "depth": datasets.Array2D((56, 70), "float32"),
        "mask": datasets.Array2D((56, 70), "bool"),
        "material": datasets.Array2D((56, 70), "uint8"),
    })
    ds = datasets.Dataset.from_dict(
        {"image": list(out["image"]), "depth": list(out["depth"]), "mask": list(out["mask"]),
         "material": list(out["material"])}, features=feats)
    return out, ds


def _reference_metrics(pred_disp, depth, mask, region=None) -> dict:
    """abs_rel and delta1 written out per image with numpy: least-squares scale and shift of the prediction
    to 1/depth on the valid pixels, clamped to the image's depth range, scored (on the region) as depth."""
    abs_rel, delta1 = [], []
    for p, t, m, r in zip(pred_disp, depth, mask, region if region is not None else [None] * len(depth)):
        v = m & np.isfinite(t) & (t > 0)
        if v.sum() < 2 or (r is not None and not (v & r).any()):
            continue
        A = np.stack([p[v], np.ones(v.sum())], 1).astype(np.float64)
        (scale, shift), *_ = np.linalg.lstsq(A, 1.0 / t[v].astype(np.float64), rcond=None)
        aligned = np.clip(scale * p.astype(np.float64) + shift, 1.0 / t[v].max(), 1.0 / t[v].min())
        sel = v if r is None else v & r
        d, g = 1.0 / aligned[sel], t[sel].astype(np.float64)
        abs_rel.append(np.mean(np.abs(d - g) / g))
        delta1.append(np.mean(np.maximum(d / g, g / d) < 1.25))
    return {"abs_rel": float(np.mean(abs_rel)), "delta1": float(np.mean(delta1))}


def test_evaluate_matches_a_per_image_numpy_reference(scenes):
    out, _ = scenes
    rng = np.random.default_rng(5)
    disp = np.where(out["mask"], 1.0 / np.where(out["mask"], out["depth"], 1.0), 0.0)
    pred = disp * rng.uniform(0.6, 1.4, disp.shape) + rng.uniform(0, 0.2, disp.shape)
    rep = evaluate(pred, out["depth"], out["mask"], out["material"])
    want = _reference_metrics(pred, out["depth"], out["mask"])
    assert rep["all"]["abs_rel"] == pytest.approx(want["abs_rel"], rel=1e-6)
    assert rep["all"]["delta1"] == pytest.approx(want["delta1"], abs=1e-9)
    assert 0.05 < want["abs_rel"] < 1.0  # a real error, not a degenerate 0


def test_dataset_arrays_round_trip(scenes):
    out, ds = scenes
    arr = dataset_arrays(ds)
    assert arr["image"].shape == (4, 56, 70, 3) and arr["image"].dtype == np.uint8
    np.testing.assert_array_equal(arr["depth"], out["depth"])
    assert arr["mask"].dtype == bool and (arr["mask"] == out["mask"]).all()
    with pytest.raises(ValueError, match="no column 'depth'"):
        dataset_arrays(ds.remove_columns("depth"))


def test_exact_disparity_scores_perfectly_and_noise_does_not(scenes):
    out, _ = scenes
    depth, mask, mat = out["depth"], out["mask"], out["material"]
    exact = np.where(mask, 1.0 / np.where(mask, depth, 1.0), 0.0)
    rep = evaluate(exact, depth, mask, mat, ordinal_pairs=200)
    assert rep["all"]["abs_rel"] < 1e-5 and rep["all"]["delta1"] == 1.0 and rep["ordinal_accuracy"] == 1.0
    for name in ("thin", "glass_mirror"):
        has = np.isin(mat, [MATERIALS.index(m) for m in (("thin",) if name == "thin" else ("glass", "mirror"))]) & mask
        assert (rep[name] is None) == (not has.any())
    rng = np.random.default_rng(0)
    noisy = evaluate(exact * rng.uniform(0.5, 1.5, exact.shape), depth, mask, mat)
    assert noisy["all"]["abs_rel"] > 0.05


def test_evaluate_model_and_table(scenes):
    from dalib.model import DepthAnything

    _, ds = scenes
    model = DepthAnything("vitt").eval()
    rep, preds = evaluate_model(model, ds, input_size=56, batch_size=2)
    assert preds.shape == (4, 56, 70) and np.isfinite(preds).all()
    # the report is `evaluate` of `predict_disparities`' maps, and its numbers are those of the numpy reference below
    arr = dataset_arrays(ds)
    np.testing.assert_allclose(preds, predict_disparities(model, arr["image"], input_size=56, batch_size=4),
                               rtol=1e-5, atol=1e-6)
    for name in ("all", "thin", "glass_mirror"):
        if rep.get(name) is not None:
            want = _reference_metrics(preds, arr["depth"], arr["mask"], None if name == "all" else
                                      np.isin(arr["material"], [MATERIALS.index(m) for m in
                                                                (("thin",) if name == "thin" else ("glass", "mirror"))]))
            assert rep[name]["abs_rel"] == pytest.approx(want["abs_rel"], rel=1e-4)
            assert rep[name]["delta1"] == pytest.approx(want["delta1"], abs=1e-6)
    table = metrics_table({"random vitt": rep})
    assert table.splitlines()[0].startswith("| model | abs_rel (all)") and "random vitt" in table


def test_evaluate_edges_option(scenes):
    out, _ = scenes
    depth, mask = out["depth"], out["mask"]
    exact = np.where(mask, 1.0 / np.where(mask, depth, 1.0), 0.0)
    rep = evaluate(exact, depth, mask, edges=True)
    assert rep["edges"]["f1"] == pytest.approx(1.0) and rep["edges"]["recall"] == pytest.approx(1.0)
    assert "edges" not in evaluate(exact, depth, mask)
    flat = evaluate(np.ones_like(exact), depth, mask, edges=True)
    assert flat["edges"]["recall"] == 0.0


def test_mean_disparity_baseline_by_hand():
    depth = np.array([[[1.0, 2.0], [4.0, 0.0]], [[2.0, 2.0], [1.0, 4.0]]], np.float32)
    # disparities [[1, .5], [.25, -]] -> normalised [[1, 1/3], [0, 0]]; [[.5, .5], [1, .25]] -> [[1/3, 1/3], [1, 0]]
    base = mean_disparity_baseline(depth, depth > 0)
    np.testing.assert_allclose(base, [[2 / 3, 1 / 3], [0.5, 0.0]], atol=1e-6)
    big = mean_disparity_baseline(depth, None, size=(4, 6))
    assert big.shape == (4, 6) and big.dtype == np.float32
    assert big[0, 0] == pytest.approx(2 / 3) and big[-1, -1] == pytest.approx(0.0)  # corners kept (align_corners)
    assert mean_disparity_baseline(depth, None, size=5).shape == (5, 5)
    with pytest.raises(ValueError, match="N, H, W"):
        mean_disparity_baseline(depth[0])


def test_constant_predictor_is_scored_like_a_model(scenes):
    out, ds = scenes
    base = mean_disparity_baseline(out["depth"], out["mask"], size=32)
    fn = constant_predictor(base)
    preds = predict_disparities(fn, out["image"])
    assert preds.shape == (4, 56, 70) and (preds == preds[0]).all()
    rep, preds2 = evaluate_constant(base, ds, ordinal_pairs=100, edges=True)
    np.testing.assert_array_equal(preds, preds2)
    direct = evaluate(preds, out["depth"], out["mask"], out["material"], ordinal_pairs=100, edges=True)
    assert rep["all"] == pytest.approx(direct["all"]) and rep["ordinal_accuracy"] == direct["ordinal_accuracy"]
    # the exact disparity of the first scene, used as a fixed prediction for all: perfect there only
    exact0 = np.where(out["mask"][0], 1 / np.where(out["mask"][0], out["depth"][0], 1), 0)
    per, _ = evaluate_constant(exact0, ds.select([0]))
    assert per["all"]["abs_rel"] < 1e-5
    with pytest.raises(ValueError, match="returned shape"):
        predict_disparities(lambda x: np.zeros((1, 2, 2)), out["image"])


def test_middlebury_samples_and_evaluation():
    samples = middlebury_samples()
    assert [s["name"] for s in samples] == list(MIDDLEBURY_SAMPLES)
    full = samples[0]
    H, W = full["depth"].shape
    assert full["image"].shape == (H, W, 3) and full["box"] == (0, 0, H, W)
    for s in samples[1:]:
        t, l, h, w = s["box"]
        assert (h, w) == (round(0.6 * H), round(0.6 * W)) and s["image"].shape == (h, w, 3)
        np.testing.assert_array_equal(s["depth"], full["depth"][t:t + h, l:l + w])
    assert samples[4]["box"][:2] == (H - round(0.6 * H), W - round(0.6 * W))  # bottom_right
    # exact GT disparity as the "prediction" of each sample: perfect scores
    lookup = {s["image"].tobytes(): np.where(s["mask"], 1 / np.where(s["mask"], s["depth"], 1), 0) for s in samples}
    rep, preds = evaluate_middlebury(lambda ims: np.stack([lookup[im.tobytes()] for im in ims]))
    assert rep["n_images"] == 6 and rep["samples"] == list(MIDDLEBURY_SAMPLES)
    assert rep["all"]["abs_rel"] < 1e-5 and rep["all"]["delta1"] == 1.0
    assert preds["centre"].shape == samples[5]["depth"].shape
    # a constant ramp: the mean of the six per-sample scores, each worse than perfect
    ramp, _ = evaluate_middlebury(constant_predictor(np.linspace(1, 0, 16)[:, None].repeat(16, 1)))
    vals = [v["abs_rel"] for v in ramp["per_sample"].values()]
    assert ramp["all"]["abs_rel"] == pytest.approx(np.mean(vals)) and min(vals) > 0.01
    with pytest.raises(ValueError, match="crop"):
        middlebury_samples(crop=1.5)


def test_middlebury_with_a_model():
    from dalib.model import DepthAnything

    rep, preds = evaluate_middlebury(DepthAnything("vitt").eval(), input_size=28)
    assert np.isfinite(rep["all"]["abs_rel"]) and preds["full"].shape == (500, 741)


def test_claim_lower_and_results_table():
    assert claim_lower(0.10, 0.12)["held"] is True
    assert claim_lower(0.12, 0.10)["held"] is False
    eq = claim_lower(0.100, 0.104)
    assert eq["held"] is False and eq["margin"] == pytest.approx(0.004)
    assert claim_lower(None, 0.1)["held"] is None
    rows = {"a": {"clean": {"abs_rel": 0.1234}, "images_seen": 96}, "b": {"clean": {"abs_rel": None}}}
    table = results_table(rows, [("AbsRel clean", "clean.abs_rel"), ("images", "images_seen", "{:d}")])
    lines = table.splitlines()
    assert lines[0] == "| model | AbsRel clean | images |" and lines[2] == "| a | 0.123 | 96 |" and lines[3] == "| b | - | - |"


def test_results_table_takes_a_function_as_format():
    from dalib.evaluate import yes_no

    rows = {"s1": {"teacher": "v2", "cutmix": True}, "s2": {"teacher": "v1", "cutmix": False}, "s3": {}}
    table = results_table(rows, [("teacher", "teacher", "{}"), ("CutMix", "cutmix", yes_no)])
    assert table.splitlines()[2:] == ["| s1 | v2 | yes |", "| s2 | v1 | no |", "| s3 | - | - |"]


def test_input_dependence_separates_a_model_from_a_layout_prior(scenes):
    from dalib.evaluate import input_dependence

    arr = dataset_arrays(scenes[1])
    exact = np.where(arr["mask"], 1.0 / np.where(arr["depth"] > 0, arr["depth"], 1.0), 0.0).astype(np.float32)
    r = input_dependence(exact, arr["depth"], arr["mask"])
    assert r["abs_rel"] < 1e-3 and r["abs_rel_shuffled"] > 0.05 and r["gain"] > 10
    same = np.broadcast_to(exact.mean(0), exact.shape)  # one map for every input
    r = input_dependence(same, arr["depth"], arr["mask"])
    assert abs(r["abs_rel_shuffled"] - r["abs_rel"]) < 1e-6 and abs(r["gain"]) < 1e-5
    with pytest.raises(ValueError, match="shift"):
        input_dependence(exact, arr["depth"], arr["mask"], shift=len(exact))


def test_paper_claims_and_their_lines():
    """The claims of notebook 07 from a results table: a pairwise claim held only beyond the tolerance, not
    measured when a model is missing, and the baseline claim listing the models that do not beat it."""
    def row(clean, photo, thin=1.0):
        return {"clean": {"abs_rel": clean, "thin_abs_rel": thin, "glass_mirror_abs_rel": 0.3},
                "photo": {"abs_rel": photo}, "middlebury": {"abs_rel": 0.15}}

    table = {"v2_teacher": row(0.23, 0.26, thin=0.9), "v1_teacher": row(0.24, 0.29),
             "v2_student": row(0.23, 0.25), "v1_student": row(0.24, 0.287), "baseline": row(0.28, 0.27, 1.3)}
    claims = paper_claims(table, ["v2_teacher", "v1_teacher", "v2_student", "v1_student"],
                          {"v2_student": "v2_teacher", "v1_student": "v1_teacher"})
    assert claims["student_beats_teacher_v2"]["held"] is True  # 0.25 vs 0.26: margin 0.01 > 0.005
    assert claims["student_beats_teacher_v1"]["held"] is False  # margin 0.003: equal
    assert claims["v2_teacher_beats_v1_teacher_thin"]["held"] is True
    assert claims["v2_teacher_beats_v1_teacher_glass_mirror"]["held"] is False
    assert claims["feature_alignment_helps"]["held"] is None  # the ablation was not trained
    photo = claims["every_model_beats_baseline_photo"]
    assert photo["held"] is False and photo["not_beating"] == ["v1_teacher", "v1_student"]
    assert claims["every_model_beats_baseline_clean"]["held"] is True
    assert claims["every_model_beats_baseline_middlebury"]["not_beating"] == list(claims[
        "every_model_beats_baseline_middlebury"]["models"])  # 0.15 vs 0.15: equal
    assert claim_line("student_beats_teacher_v2", claims["student_beats_teacher_v2"]) == (
        "student_beats_teacher_v2: **HELD** (photo.abs_rel: v2_student 0.250 vs v2_teacher 0.260 (margin +0.010))")
    assert "**not measured**" in claim_line("feature_alignment_helps", claims["feature_alignment_helps"])
    assert claim_line("every_model_beats_baseline_photo", photo).endswith(
        "baseline 0.270, models 0.250..0.290; not beating it: v1_teacher, v1_student)")
