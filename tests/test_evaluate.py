"""dalib.evaluate: dataset -> predictions -> metrics overall and per material region."""
import datasets
import numpy as np
import pytest

from dalib.evaluate import dataset_arrays, evaluate, evaluate_model, metrics_table
from dalib.synth import MATERIALS, generate


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
    assert 0 <= rep["all"]["delta1"] <= 1 and np.isfinite(rep["all"]["abs_rel"])
    table = metrics_table({"random vitt": rep})
    assert table.splitlines()[0].startswith("| model | abs_rel (all)") and "random vitt" in table
