"""dalib.seeds: statistics over per-seed run folders, checked by hand against numpy and scipy."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from dalib.seeds import (aggregate_claims, aggregate_metrics, flatten, seed_dir, summarize, t_interval, unflatten,
                         write_aggregate)

SEEDS = [0, 1, 2]
# per seed: photo AbsRel of three models and the baseline (seed-to-seed noise, student clearly best)
STUDENT = [0.200, 0.210, 0.190]
TEACHER = [0.260, 0.250, 0.270]
UNSURE = [0.240, 0.280, 0.230]   # vs teacher: differences 0.02, -0.03, 0.04 -> interval includes 0
BASELINE = [0.300, 0.310, 0.305]


def _pair(a, b, lower, than, metric="photo.abs_rel"):
    return {"held": b - a > 0.005, "a": a, "b": b, "margin": b - a, "lower": lower, "than": than, "metric": metric}


def _seed_metrics(i: int) -> dict:
    models = {"v2_student": STUDENT[i], "v2_teacher": TEACHER[i], "unsure": UNSURE[i]}
    table = {name: {"clean": {"abs_rel": v / 2, "delta1": 0.9 - v / 10, "edge_f1": 0.5},
                    "photo": {"abs_rel": v, "delta1": 0.8 - v / 10},
                    "images_seen": 2400, "train_seconds": 100.0 + 10 * i}
             for name, v in models.items()}
    table["baseline"] = {"clean": {"abs_rel": BASELINE[i] / 2}, "photo": {"abs_rel": BASELINE[i]}}
    claims = {
        "student_beats_teacher_v2": _pair(STUDENT[i], TEACHER[i], "v2_student", "v2_teacher"),
        "unsure_beats_teacher": _pair(UNSURE[i], TEACHER[i], "unsure", "v2_teacher"),
        "every_model_beats_baseline_photo": {
            "held": True, "baseline": BASELINE[i], "models": models, "not_beating": [], "metric": "photo.abs_rel"},
    }
    teachers = {"v2_teacher": {"all": {"abs_rel": TEACHER[i] / 2, "delta1": 0.7}, "photo": {"abs_rel": TEACHER[i]},
                               "sources": ["synth-indoor", "synth-outdoor"]},
                "encoder": "vitt"}
    return {
        "04_teacher_training": teachers,
        "07_evaluation": {"table": table, "claims": claims, "claim_tolerance": 0.005, "frozen_encoder": False,
                          "middlebury_samples": ["full", f"crop{i}"]},
        "pipeline": {"profile": "cpu", "status": "ok", "seconds": {"00_depth_data": 10.0 + i, "07_evaluation": 20.0},
                     "total_seconds": 30.0 + i, "finished": f"2026-11-2{i} 10:00:00 UTC"},
    }


def _write_seed(run_dir, seed, metrics):
    d = seed_dir(run_dir, seed)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    env = {"platform": "Linux-x86_64-test", "cpu_count": 2, "cuda": None, "git_revision": "abc123", "packages": {}}
    (d / "params.json").write_text(json.dumps({"profile": "cpu", "overrides": {"seed": seed}, "environment": env}))


@pytest.fixture
def three_seeds(tmp_path):
    run = tmp_path / "cpu-seeds"
    for i, s in enumerate(SEEDS):
        _write_seed(run, s, _seed_metrics(i))
    return run


def test_flatten_and_unflatten_are_inverse_even_with_dots_in_keys():
    tree = {"a": {"b.c": 1, "d": {"e": [1, 2]}}, "f": "x"}
    flat = flatten(tree)
    assert flat == {("a", "b.c"): 1, ("a", "d", "e"): [1, 2], ("f",): "x"}
    assert unflatten(flat) == tree and list(unflatten(flat)) == ["a", "f"]


def test_numeric_leaves_are_summarized_as_numpy_would():
    per_seed = [_seed_metrics(i) for i in range(3)]
    per_seed[2]["07_evaluation"]["table"]["v2_student"]["clean"]["thin_abs_rel"] = None
    per_seed[0]["07_evaluation"]["table"]["v2_student"]["clean"]["thin_abs_rel"] = 0.4
    per_seed[1]["07_evaluation"]["table"]["v2_student"]["clean"]["thin_abs_rel"] = 0.5
    agg = aggregate_metrics(per_seed)
    cell = agg["07_evaluation"]["table"]["v2_student"]["photo"]["abs_rel"]
    assert cell["values"] == STUDENT and cell["n"] == 3
    assert cell["mean"] == pytest.approx(np.mean(STUDENT), abs=1e-12)
    assert cell["std"] == pytest.approx(np.std(STUDENT, ddof=1), abs=1e-12)
    thin = agg["07_evaluation"]["table"]["v2_student"]["clean"]["thin_abs_rel"]  # a seed without it: n=2
    assert thin["values"] == [0.4, 0.5, None] and thin["n"] == 2
    assert thin["std"] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert agg["07_evaluation"]["table"]["v2_student"]["images_seen"]["std"] == 0.0  # ints are numbers
    # non-numeric leaves: kept when identical in every seed, dropped when not; bools are not numbers
    assert agg["07_evaluation"]["frozen_encoder"] is False
    assert agg["04_teacher_training"]["encoder"] == "vitt"
    assert agg["04_teacher_training"]["v2_teacher"]["sources"] == ["synth-indoor", "synth-outdoor"]
    assert "middlebury_samples" not in agg["07_evaluation"] and "finished" not in agg["pipeline"]
    unsure = agg["07_evaluation"]["claims"]["unsure_beats_teacher"]  # held: True, False, True across seeds
    assert "held" not in unsure and unsure["margin"]["n"] == 3 and unsure["lower"] == "unsure"
    assert agg["07_evaluation"]["claims"]["student_beats_teacher_v2"]["held"] is True  # identical bools stay


def test_one_seed_has_no_std():
    s = summarize([0.3])
    assert s == {"mean": 0.3, "std": None, "n": 1, "values": [0.3]}


def test_t_interval_matches_scipy():
    d = [0.06, 0.04, 0.08]
    got = t_interval(d)
    m, sd, n = np.mean(d), np.std(d, ddof=1), len(d)
    lo, hi = stats.t.interval(0.95, n - 1, loc=m, scale=sd / math.sqrt(n))  # independent route through scipy
    assert got["low"] == pytest.approx(lo, abs=1e-12) and got["high"] == pytest.approx(hi, abs=1e-12)
    assert got["t"] == pytest.approx(4.302652729911275)  # t_{0.975, 2}
    one = t_interval([0.05, None])
    assert one["n"] == 1 and one["low"] is None and one["high"] is None


def test_pairwise_claim_held_only_when_the_interval_excludes_zero():
    per_seed = [_seed_metrics(i)["07_evaluation"]["claims"] for i in range(3)]
    claims = aggregate_claims(per_seed)
    good = claims["student_beats_teacher_v2"]
    diffs = np.array(TEACHER) - np.array(STUDENT)
    assert good["differences"] == pytest.approx(diffs.tolist())
    assert good["mean"] == pytest.approx(diffs.mean()) and good["std"] == pytest.approx(diffs.std(ddof=1))
    assert good["n"] == 3 and good["ci95"][0] > 0 and good["held"] is True and good["verdict"] == "held"
    assert (good["lower"], good["than"], good["metric"]) == ("v2_student", "v2_teacher", "photo.abs_rel")
    unsure = claims["unsure_beats_teacher"]
    assert unsure["ci95"][0] < 0 < unsure["ci95"][1] and unsure["held"] is False and unsure["verdict"] == "not held"

    single = aggregate_claims(per_seed[:1])["student_beats_teacher_v2"]
    assert single["n"] == 1 and single["held"] is None and single["verdict"] == "not enough seeds"
    unmeasured = aggregate_claims([{"c": {**_pair(0.1, 0.2, "x", "y"), "a": None, "held": None}}] * 3)["c"]
    assert unmeasured["n"] == 0 and unmeasured["held"] is None and unmeasured["verdict"] == "not measured"


def test_baseline_claim_needs_every_model_above_zero():
    per_seed = [_seed_metrics(i)["07_evaluation"]["claims"] for i in range(3)]
    c = aggregate_claims(per_seed)["every_model_beats_baseline_photo"]
    assert c["shape"] == "baseline" and set(c["models"]) == {"v2_student", "v2_teacher", "unsure"}
    d = np.array(BASELINE) - np.array(UNSURE)
    assert c["models"]["unsure"]["mean"] == pytest.approx(d.mean())
    assert c["models"]["unsure"]["std"] == pytest.approx(d.std(ddof=1))
    assert c["models"]["v2_student"]["held"] is True and c["models"]["unsure"]["held"] is False
    assert c["held"] is False and c["not_beating"] == ["unsure"]

    for claims in per_seed:  # without the noisy model every interval is above zero
        del claims["every_model_beats_baseline_photo"]["models"]["unsure"]
    c = aggregate_claims(per_seed)["every_model_beats_baseline_photo"]
    assert c["held"] is True and c["not_beating"] == []
    assert aggregate_claims(per_seed[:1])["every_model_beats_baseline_photo"]["held"] is None


def test_claims_are_recognised_by_shape_not_by_name():
    per_seed = []
    for i in range(3):
        per_seed.append({"v2_beats_v1_middlebury": _pair(0.1 + i / 100, 0.2, "v2", "v1", "middlebury.abs_rel"),
                         "all_beat_the_mean": {"held": True, "baseline": 0.5, "models": {"v2": 0.1 * (i + 1)},
                                               "not_beating": [], "metric": "middlebury.abs_rel"},
                         "tolerance": 0.005, "notes": {"text": "not a claim"}})
    claims = aggregate_claims(per_seed)
    assert set(claims) == {"v2_beats_v1_middlebury", "all_beat_the_mean"}
    assert claims["v2_beats_v1_middlebury"]["shape"] == "pairwise"
    assert claims["all_beat_the_mean"]["shape"] == "baseline"
    assert claims["all_beat_the_mean"]["models"]["v2"]["mean"] == pytest.approx(0.3)


def test_write_aggregate_files(three_seeds):
    agg = write_aggregate(three_seeds, SEEDS, profile="cpu")
    on_disk = json.loads((three_seeds / "metrics.json").read_text())
    assert on_disk["seeds"] == SEEDS and on_disk["status"] == "complete" and on_disk["profile"] == "cpu"
    assert on_disk["seconds"] == {"seed-0": 30.0, "seed-1": 31.0, "seed-2": 32.0} and on_disk["total_seconds"] == 93.0
    assert on_disk["claims"]["student_beats_teacher_v2"]["held"] is True
    assert on_disk["07_evaluation"]["table"]["v2_teacher"]["photo"]["abs_rel"]["values"] == TEACHER
    assert agg["claims"] == on_disk["claims"]

    report = (three_seeds / "report.md").read_text()
    assert "profile `cpu`, seeds 0, 1, 2" in report and "Linux-x86_64-test, 2 CPU cores" in report
    student = f"{np.mean(STUDENT):.3f} ± {np.std(STUDENT, ddof=1):.3f}"
    row = next(line for line in report.splitlines() if line.startswith("| v2_student |"))
    assert student in row and "train_seconds" in report and "| model | clean AbsRel | clean δ1 |" in report
    assert "| model | AbsRel | δ1 | photo AbsRel |" in report
    assert "## Teachers" in report and f"{np.mean(TEACHER):.3f} ± {np.std(TEACHER, ddof=1):.3f}" in report
    lo, hi = on_disk["claims"]["unsure_beats_teacher"]["ci95"]
    assert f"[{lo:+.4f}, {hi:+.4f}] | 3 | not held |" in report
    assert "| **every_model_beats_baseline_photo** |" in report and "(not: unsure)" in report
    assert all(f"(seed-{s}/report.md)" in report for s in SEEDS)


def test_incomplete_aggregate_is_marked(three_seeds):
    agg = write_aggregate(three_seeds, [0], profile="cpu", failure="notebook 04 failed in cell 7", failed_seed=1)
    assert agg["status"] == "incomplete" and agg["seeds"] == [0]
    assert agg["failure"] == {"seed": 1, "message": "notebook 04 failed in cell 7"}
    assert agg["claims"]["student_beats_teacher_v2"]["verdict"] == "not enough seeds"
    report = (three_seeds / "report.md").read_text()
    assert "**incomplete**" in report and "notebook 04 failed in cell 7" in report
    assert "seed 1 (failed): [seed-1/report.md]" in report and "seed-2/report.md" not in report
    row = next(line for line in report.splitlines() if line.startswith("| v2_student |"))
    assert "±" not in row  # one seed: a mean without a spread
