"""The gpu-smoke profile's hub paths end to end on the CPU: notebooks 04-07 with tiny overrides, offline, on the
fixtures of tests/hub_fixtures.py in a Hugging Face cache of their own (real photographs pseudo-labelled in 05,
the zero-shot table with the official-weights row in 07). About 2 minutes on 2 cores."""
import json

import pytest

import hub_fixtures as fx
from dalib.benchmarks import OFFICIAL_WEIGHTS
from dalib.data.schema import data_root
from dalib.pipeline import load_profile, run_pipeline
from dalib.pseudo_label.pool import status

# the gpu-smoke profile at CPU scale: vitt from random init, 56 px crops, two steps per model
TINY = dict(encoder="vitt", pretrained_encoder=None, image_size=64, n_train=24, crop=56, batch_size=6, steps=2,
            lr_test_steps=0, overfit_steps=0, n_test=2, eval_input_size=56, log_every=1, num_workers=0,
            n_unlabelled=6, input_size=56, n_real=3, n_labelled=12, middlebury_input_size=56, ordinal_pairs=50,
            n_baseline=4, n_eval=3, zero_shot_input_size=56)
MODELS = {"v2_teacher", "v1_teacher", "v2_student", "v1_student", "official V2-S"}


def test_only_the_gpu_profiles_go_to_the_hub():
    for name in ("smoke", "cpu", "cpu-study"):
        nbs = load_profile(name).get("notebooks") or {}
        assert not (nbs.get("07_evaluation") or {}).get("zero_shot"), name
        assert (nbs.get("05_pseudo_labelling") or {}).get("unlabelled", "photo") == "photo", name
    for name in ("gpu", "gpu-smoke"):
        nbs = load_profile(name)["notebooks"]
        assert nbs["07_evaluation"]["zero_shot"] is True and nbs["05_pseudo_labelling"]["unlabelled"] == "photo+hub"


@pytest.mark.slow
def test_gpu_smoke_on_hub_fixtures(tmp_path, monkeypatch):
    renders = str(data_root())  # the rendered datasets stay shared; hub conversions go to the test's own folder
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DALIB_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DALIB_MANIFESTS", raising=False)
    fx.write_all(tmp_path / "hub", OFFICIAL_WEIGHTS["V2-S"])
    run = tmp_path / "run"
    metrics = run_pipeline("gpu-smoke", run, TINY | {"data_root": renders}, only=["04", "05", "06", "07"],
                           log=lambda *_: None)
    assert metrics["pipeline"]["status"] == "ok"

    m05 = metrics["05_pseudo_labelling"]
    assert m05["unlabelled"] == "photo+hub" and m05["n_real"] == 3 and "commoncatalog-cc-by" in m05["sources"]
    assert status(run / "pseudo_labels" / "v2_teacher" / "commoncatalog-cc-by")["rows"] == 3
    assert any(d.endswith("commoncatalog-cc-by") for d in m05["v2_teacher"]["dirs_rel"])  # the student's pool

    zs = metrics["07_evaluation"]["zero_shot"]
    assert set(zs["rows"]) == MODELS and zs["n_eval"] == 3 and zs["benchmarks"] == ["nyu-d", "da-2k"]
    assert zs["official"]["V2-S"]["revision"] == OFFICIAL_WEIGHTS["V2-S"].revision
    for name, reps in zs["rows"].items():
        assert reps["nyu"]["n_images"] == 3 and reps["nyu"]["protocol"] == "nyu", name
        assert reps["da-2k"]["n_pairs"] == 3 * fx.DA2K_PAIRS and 0 <= reps["da-2k"]["accuracy"] <= 1, name
    report = (run / "report.md").read_text()
    assert "| official V2-S |" in report and "| paper: V2-S | 0.053 | 0.973 | 95.3 |" in report
    assert json.loads((run / "metrics.json").read_text())["07_evaluation"]["zero_shot"]["rows"]
