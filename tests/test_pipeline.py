"""dalib.pipeline: the smoke profile end to end, failures that name the notebook, resume, overrides."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dalib.pipeline import PipelineError, list_notebooks, run_pipeline

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
