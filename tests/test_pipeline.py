"""dalib.pipeline: the smoke profile end to end, failures that name the notebook, resume, overrides, seeds."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import dalib.pipeline
from dalib.pipeline import PipelineError, list_notebooks, main, run_pipeline, run_seeds

REPO = Path(__file__).resolve().parent.parent


def _nb(path: Path, params_src: str, *cells: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell("# test notebook"))
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells.append(p)
    nb.cells.extend(nbformat.v4.new_code_cell(c) for c in cells)
    nbformat.write(nb, path)


@pytest.fixture
def toy(tmp_path):
    nbdir, cfgdir = tmp_path / "nbs", tmp_path / "cfg"
    nbdir.mkdir()
    cfgdir.mkdir()
    _nb(nbdir / "01_first.ipynb", "run_dir = None\nscale = 1",
        "from dalib.runfiles import record_metrics\nrecord_metrics(run_dir, '01_first', {'value': 2 * scale})")
    _nb(nbdir / "02_second.ipynb", "run_dir = None\nboom = True",
        "if boom:\n    raise ValueError('the second notebook broke')",
        "from dalib.runfiles import record_metrics\nrecord_metrics(run_dir, '02_second', {'ok': 1})")
    (cfgdir / "smoke.yaml").write_text("parameters:\n  scale: 3\nnotebooks:\n  02_second: {boom: true}\n")
    return nbdir, cfgdir, tmp_path / "run"


@pytest.mark.slow
def test_failure_names_notebook_and_cell_then_resume(toy):
    nbdir, cfgdir, run = toy
    logs = []
    with pytest.raises(PipelineError, match=r"02_second\.ipynb failed in cell .*ValueError: the second notebook broke"):
        run_pipeline("smoke", run, notebook_dir=nbdir, config_dir=cfgdir, log=logs.append)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["01_first"] == {"value": 6}  # profile parameter reached the notebook
    assert metrics["pipeline"]["status"] == "failed"
    assert "02_second" in (run / "report.md").read_text()
    assert (run / "notebooks" / "02_second.ipynb").is_file()  # the executed copy keeps the traceback

    logs.clear()
    metrics = run_pipeline("smoke", run, {"boom": False}, notebook_dir=nbdir, config_dir=cfgdir, log=logs.append)
    assert any("01_first.ipynb already complete" in line for line in logs)
    assert any("running 02_second.ipynb" in line for line in logs)
    assert metrics["02_second"] == {"ok": 1} and metrics["pipeline"]["status"] == "ok"
    params = json.loads((run / "params.json").read_text())
    assert params["notebooks"]["02_second"]["boom"] is False and params["environment"]["packages"]["torch"]

    logs.clear()  # changing a parameter of the first notebook re-runs everything after it
    run_pipeline("smoke", run, {"boom": False, "scale": 5}, notebook_dir=nbdir, config_dir=cfgdir, log=logs.append)
    assert sum("running" in line for line in logs) == 2
    assert json.loads((run / "metrics.json").read_text())["01_first"] == {"value": 10}


def test_configuration_errors_are_named(toy):
    nbdir, cfgdir, run = toy
    with pytest.raises(PipelineError, match="no notebook declares"):
        run_pipeline("smoke", run, {"nonsense": 1}, notebook_dir=nbdir, config_dir=cfgdir)
    with pytest.raises(PipelineError, match="profile 'cpu'"):
        run_pipeline("cpu", run, notebook_dir=nbdir, config_dir=cfgdir)
    (cfgdir / "smoke.yaml").write_text("notebooks:\n  01_first: {wrong: 1}\n")
    with pytest.raises(PipelineError, match=r"\['wrong'\] for 01_first"):
        run_pipeline("smoke", run, notebook_dir=nbdir, config_dir=cfgdir)


@pytest.mark.parametrize("value, ok", [("notanumber", False), (2.5, False), (True, False), (None, True), (7, True)])
def test_parameter_of_the_wrong_kind_stops_before_any_notebook_runs(toy, value, ok):
    nbdir, cfgdir, run = toy  # 01_first declares `scale = 1` (an int)
    if ok:
        dalib.pipeline.resolve_parameters(nbdir / "01_first.ipynb", {}, {"scale": value}, run)
        return
    with pytest.raises(PipelineError, match=rf"01_first\.ipynb: parameter 'scale' = {value!r} .*default is 1 \(int\)"):
        run_pipeline("smoke", run, {"scale": value}, notebook_dir=nbdir, config_dir=cfgdir)
    assert not (run / "notebooks").exists()  # nothing ran


@pytest.mark.slow
def test_cli_exits_non_zero_and_names_the_notebook(toy):
    nbdir, cfgdir, run = toy
    proc = subprocess.run(
        [sys.executable, "-m", "dalib", "pipeline", "--profile", "smoke", "--run-dir", str(run),
         "--notebook-dir", str(nbdir), "--config-dir", str(cfgdir), "-p", "scale", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "02_second.ipynb failed" in proc.stderr and "the second notebook broke" in proc.stderr


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path):
    run = tmp_path / "smoke"
    metrics = run_pipeline("smoke", run)
    notebooks = list_notebooks()
    assert metrics["pipeline"]["status"] == "ok"
    assert set(metrics["pipeline"]["seconds"]) == {p.stem for p in notebooks}
    for p in notebooks:
        executed = nbformat.read(run / "notebooks" / p.name, as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code"), p.name
        assert p.stem in metrics, f"{p.name} recorded no metrics section"
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["pipeline"]["status"] == "ok"
    report = (run / "report.md").read_text()
    assert "profile `smoke`" in report and all(p.stem in report for p in notebooks)


# ----------------------------------------------------------------------------- seeds and the command line
def _cli_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 2
    return capsys.readouterr().err


def test_cli_argument_errors_are_clear(toy, capsys):
    nbdir, cfgdir, run = toy
    dirs = ["--notebook-dir", str(nbdir), "--config-dir", str(cfgdir), "--run-dir", str(run)]
    err = _cli_error(capsys, "--profile", "smoke", "--seeds", "0,1", "-p", "seed", "3", *dirs)
    assert "--seeds 0,1 and -p seed 3 both set the seed" in err
    err = _cli_error(capsys, "--profile", "smoke", "--seeds", "0,x", *dirs)
    assert "argument --seeds" in err and "non-negative integers" in err and "'0,x'" in err
    assert "distinct" in _cli_error(capsys, "--profile", "smoke", "--seeds", "1,1", *dirs)
    err = _cli_error(capsys, "--profile", "nope", *dirs)
    assert "profile 'nope'" in err and "profiles here: smoke" in err
    assert not run.exists()  # nothing ran


def test_any_yaml_in_the_config_dir_is_a_profile(toy, monkeypatch):
    nbdir, cfgdir, run = toy
    (cfgdir / "cpu-study.yaml").write_text("parameters:\n  scale: 1\n")
    calls = []
    monkeypatch.setattr(dalib.pipeline, "run_pipeline",
                        lambda profile, run_dir, overrides, **kw: calls.append((profile, run_dir, overrides))
                        or {"pipeline": {"total_seconds": 0.0}})
    rc = main(["--profile", "cpu-study", "--run-dir", str(run), "--notebook-dir", str(nbdir), "--config-dir", str(cfgdir)])
    assert rc == 0 and calls == [("cpu-study", str(run), {})]


def _fake_runner(calls, fail_seed=None):
    """Stands in for run_pipeline: records its arguments and leaves a small metrics.json."""
    def run(profile, run_dir, overrides, **kw):
        calls.append((profile, Path(run_dir), dict(overrides), kw))
        seed = overrides["seed"]
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "metrics.json").write_text(json.dumps(
            {"01_first": {"value": 10 + seed}, "pipeline": {"status": "ok", "seconds": {"01_first": 1.0}}}))
        if seed == fail_seed:
            raise PipelineError("notebook 01_first.ipynb failed in cell 2: ValueError: broke")
        return {}
    return run


def test_run_seeds_runs_one_pipeline_per_seed_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(dalib.pipeline, "run_pipeline", _fake_runner(calls))
    run = tmp_path / "seeds"
    agg = run_seeds("cpu", run, [3, 1], {"scale": 2}, restart=True, log=lambda *_: None)
    assert [(c[0], c[1], c[2]) for c in calls] == [
        ("cpu", run / "seed-3", {"scale": 2, "seed": 3}), ("cpu", run / "seed-1", {"scale": 2, "seed": 1})]
    assert all(c[3]["restart"] is True for c in calls)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["seeds"] == [3, 1] and on_disk["status"] == "complete" == agg["status"]
    assert on_disk["01_first"]["value"]["values"] == [13, 11] and on_disk["01_first"]["value"]["mean"] == 12
    assert "seed-3/report.md" in (run / "report.md").read_text()
    with pytest.raises(PipelineError, match="both set the seed"):
        run_seeds("cpu", run, [0], {"seed": 1})


def test_run_seeds_stops_at_a_failing_seed_and_keeps_the_aggregate(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(dalib.pipeline, "run_pipeline", _fake_runner(calls, fail_seed=1))
    run = tmp_path / "seeds"
    with pytest.raises(PipelineError, match=r"seed 1: notebook 01_first\.ipynb failed in cell 2: ValueError: broke"):
        run_seeds("cpu", run, [0, 1, 2], log=lambda *_: None)
    assert [c[2]["seed"] for c in calls] == [0, 1]  # seed 2 never started
    agg = json.loads((run / "metrics.json").read_text())
    assert agg["status"] == "incomplete" and agg["seeds"] == [0] and agg["failure"]["seed"] == 1
    assert agg["01_first"]["value"]["values"] == [10]
    assert "**incomplete**" in (run / "report.md").read_text()


@pytest.mark.slow
def test_seeds_command_line_with_notebooks_fails_then_resumes(tmp_path, capsys):
    nbdir, cfgdir, run = tmp_path / "nbs", tmp_path / "cfg", tmp_path / "seeds"
    nbdir.mkdir()
    cfgdir.mkdir()
    flag = tmp_path / "break-seed-1"
    flag.touch()
    _nb(nbdir / "01_eval.ipynb", "run_dir = None\nseed = 0\nflag = ''",
        "import os\nif seed == 1 and os.path.exists(flag):\n    raise ValueError('seed one broke')",
        "from dalib.runfiles import record_metrics\n"
        "a, b = 0.1 + seed / 100, 0.2 + seed / 50\n"
        "claim = {'held': True, 'a': a, 'b': b, 'margin': b - a, 'lower': 'x', 'than': 'y', 'metric': 'photo.abs_rel'}\n"
        "record_metrics(run_dir, '07_evaluation', {'table': {'x': {'photo': {'abs_rel': a}}}, 'claims': {'c': claim}})")
    (cfgdir / "cpu-study.yaml").write_text(f"parameters:\n  seed: 0\n  flag: '{flag}'\n")
    argv = ["--profile", "cpu-study", "--seeds", "0,1,2", "--run-dir", str(run),
            "--notebook-dir", str(nbdir), "--config-dir", str(cfgdir)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "seed 1: notebook 01_eval.ipynb failed in cell" in err and "seed one broke" in err
    assert json.loads((run / "metrics.json").read_text())["status"] == "incomplete"
    assert not (run / "seed-2").exists()

    flag.unlink()
    logs = []
    agg = run_seeds("cpu-study", run, [0, 1, 2], notebook_dir=nbdir, config_dir=cfgdir, log=logs.append)
    assert any("01_eval.ipynb already complete" in line and "seed-0" in line for line in logs)
    assert sum("running 01_eval.ipynb" in line for line in logs) == 2
    for s in (0, 1, 2):
        params = json.loads((run / f"seed-{s}" / "params.json").read_text())
        assert params["overrides"] == {"seed": s} and params["notebooks"]["01_eval"]["seed"] == s
    assert agg["status"] == "complete"
    assert agg["07_evaluation"]["table"]["x"]["photo"]["abs_rel"]["values"] == pytest.approx([0.1, 0.11, 0.12])
    assert agg["claims"]["c"]["differences"] == pytest.approx([0.1, 0.11, 0.12]) and agg["claims"]["c"]["held"] is True
    assert "0.110 ± 0.010" in (run / "report.md").read_text()


def test_profile_extends_another_and_cycles_are_named(tmp_path):
    from dalib.pipeline import PipelineError, load_profile

    (tmp_path / "base.yaml").write_text("description: base\nparameters: {seed: 0, a: 1}\n"
                                        "notebooks: {n1: {x: 1, y: 2}, n2: {z: 3}}\n")
    (tmp_path / "child.yaml").write_text("extends: base\ndescription: child\nparameters: {a: 5}\nnotebooks: {n1: {y: 9}}\n")
    cfg = load_profile("child", tmp_path)
    assert cfg["description"] == "child" and "extends" not in cfg
    assert cfg["parameters"] == {"seed": 0, "a": 5}
    assert cfg["notebooks"] == {"n1": {"x": 1, "y": 9}, "n2": {"z": 3}}
    (tmp_path / "loop1.yaml").write_text("extends: loop2\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop1\n")
    with pytest.raises(PipelineError, match="cycle"):
        load_profile("loop1", tmp_path)


def test_shipped_profiles_load():
    from dalib.pipeline import available_profiles, load_profile

    names = available_profiles()
    assert {"smoke", "cpu", "gpu", "cpu-study", "gpu-smoke"} <= set(names)
    study, cpu = load_profile("cpu-study"), load_profile("cpu")
    assert study["notebooks"]["06_student_training"]["ablations"] is True
    assert cpu["notebooks"]["06_student_training"]["ablations"] is False
    assert study["notebooks"]["04_teacher_training"] == cpu["notebooks"]["04_teacher_training"]


def test_a_run_folder_that_cannot_be_created_fails_clearly(toy, tmp_path, capsys):
    nbdir, cfgdir, _ = toy
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = main(["--profile", "smoke", "--run-dir", str(blocker / "run"), "--notebook-dir", str(nbdir),
               "--config-dir", str(cfgdir)])
    err = capsys.readouterr().err
    assert rc == 1 and "pipeline: FAILED: cannot write the run folder" in err and str(blocker) in err
    assert blocker.read_text() == "not a folder"


# ----------------------------------------------------------------------------- bad inputs: one clear error each
def test_cli_profile_that_does_not_parse_names_the_file_and_position(toy, run_cli):
    nbdir, cfgdir, run = toy
    (cfgdir / "broken.yaml").write_text("parameters:\n  scale: [1, 2\nnotebooks: {}\n")
    proc = run_cli("dalib.pipeline", "--profile", "broken", "--run-dir", run, "--notebook-dir", nbdir,
                   "--config-dir", cfgdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"python -m dalib.pipeline: error: {cfgdir / 'broken.yaml'}: not valid YAML at line 3, column 10: expected "
        f"',' or ']', but got ':' (while parsing a flow sequence)"]
    assert not run.exists()  # nothing ran


def test_a_chapter_between_two_numbers_runs_after_the_first(tmp_path):
    """`03a_name` runs after `03_name` and before `04_name`; other file names are not chapters."""
    for name in ("04_d.ipynb", "03a_c.ipynb", "03_b.ipynb", "00_a.ipynb", "3_x.ipynb", "03A_y.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in list_notebooks(tmp_path)] == ["00_a.ipynb", "03_b.ipynb", "03a_c.ipynb", "04_d.ipynb"]
