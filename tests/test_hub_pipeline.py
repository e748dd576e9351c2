"""The gpu-smoke profile's hub paths end to end on the CPU: notebooks 04-07 with tiny overrides, offline, on the
fixtures of tests/hub_fixtures.py in a Hugging Face cache of their own (DINOv2 for the teachers, the students and
the frozen encoder; real photographs pseudo-labelled in 05; the zero-shot table with the official-weights row in
07). About 3 minutes on 2 cores. Also: the profile's stops (no CUDA, no DINOv2) and its from-scratch settings."""
import json

import pytest

import hub_fixtures as fx
from dalib.weights import DINOV2_WEIGHTS, OFFICIAL_WEIGHTS
from dalib.data.schema import data_root
from dalib.pipeline import NOTEBOOK_DIR, PipelineError, load_profile, resolve_parameters, run_pipeline
from dalib.pseudo_label.pool import status

# the gpu-smoke profile at CPU scale (knowingly on the CPU): vits from the DINOv2 fixture, 56 px crops, two steps
TINY = dict(device="cpu", encoder="vits", image_size=64, n_train=24, crop=56, batch_size=6, steps=2,
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
    fx.write_dinov2(tmp_path / "hub", DINOV2_WEIGHTS["vits"])
    run = tmp_path / "run"
    metrics = run_pipeline("gpu-smoke", run, TINY | {"data_root": renders}, only=["04", "05", "06", "07"],
                           log=lambda *_: None)
    assert metrics["pipeline"]["status"] == "ok"
    params = json.loads((run / "params.json").read_text())
    dinov2 = f"hf://{DINOV2_WEIGHTS['vits'].repo_id}@{DINOV2_WEIGHTS['vits'].revision}/model.safetensors"
    for stem in ("04_teacher_training", "06_student_training"):
        enc = params["pretrained_encoders"][stem]
        assert enc["choice"] == "required" and enc["source"] == dinov2 and len(enc["sha256"]) == 64, enc
    assert "gpus" in params["devices"] and params["devices"]["torch"]
    assert metrics["04_teacher_training"]["pretrained_encoder"] is True
    assert metrics["06_student_training"]["frozen_encoder"] == "pretrained"  # the same DINOv2, as in the papers

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


def test_gpu_profiles_stop_before_running_without_cuda_or_dinov2(tmp_path, monkeypatch):
    """No notebook starts: without CUDA the message names torch's build and how to install one (or -p device cpu);
    with no DINOv2 in the cache and the hub offline, 'required' names the command that fetches it."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DALIB_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(PipelineError, match=r"asks for a CUDA GPU, but torch .* sees none.*TORCH_SPEC.*-p device cpu"):
        run_pipeline("gpu-smoke", tmp_path / "a", {}, only=["04"], log=lambda *_: None)
    rev = DINOV2_WEIGHTS["vits"].revision
    with pytest.raises(PipelineError, match=rf"04_teacher_training: pretrained_encoder='required'.*hf download "
                                            rf"timm/vit_small_patch14_dinov2.lvd142m model.safetensors --revision {rev}"):
        run_pipeline("gpu-smoke", tmp_path / "b", {"device": "cpu"}, only=["04"], log=lambda *_: None)
    assert not (tmp_path / "b" / "notebooks" / "04_teacher_training.ipynb").exists()


def test_random_init_in_a_gpu_profile_takes_the_from_scratch_settings(tmp_path):
    nb = NOTEBOOK_DIR / "04_teacher_training.ipynb"
    cfg = load_profile("gpu")
    pretrained = resolve_parameters(nb, cfg, {}, tmp_path)
    scratch = resolve_parameters(nb, cfg, {"pretrained_encoder": None}, tmp_path)
    assert (pretrained["lr_encoder"], pretrained["warmup_steps"]) == (5e-6, 0)
    assert (scratch["lr_encoder"], scratch["warmup_steps"]) == (1e-4, 150)
    mine = resolve_parameters(nb, cfg, {"pretrained_encoder": None, "lr_encoder": 3e-4}, tmp_path)
    assert mine["lr_encoder"] == 3e-4 and mine["warmup_steps"] == 150  # a -p value wins over `scratch`


def test_cpu_dinov2_profile_starts_every_model_from_dinov2(tmp_path):
    """The laptop profile with the papers' encoder: vits from DINOv2-S for teachers and students (required: a stop
    with the command rather than random init at fine-tuning learning rates), the official lrs, no device demand."""
    cfg = load_profile("cpu-dinov2")
    for stem in ("04_teacher_training", "06_student_training"):
        p = resolve_parameters(NOTEBOOK_DIR / f"{stem}.ipynb", cfg, {}, tmp_path)
        assert (p["encoder"], p["pretrained_encoder"], p["lr_encoder"], p["warmup_steps"]) == \
            ("vits", "required", 5e-6, 0), stem
        assert p.get("device", "auto") == "auto" and p["crop"] == 84
    assert DINOV2_WEIGHTS["vits"].size == "88 MB"
