"""Committed notebooks: valid, stripped of outputs, and following the course conventions.

Executing them is nbval's job (`make test` runs `pytest --nbval-lax notebooks`)."""
import json
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no NN_name.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: cell {i} has outputs committed (run `make strip`)"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("#"), f"{path.name}: no title cell"
    assert re.search(r"(?i)runtime", first.source), f"{path.name}: the header states no runtime"
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = code[0]
    assert "parameters" in params.metadata.get("tags", []), f"{path.name}: first code cell is not tagged `parameters`"
    assert re.search(r"^run_dir\s*=", params.source, re.M), f"{path.name}: `parameters` cell defines no run_dir"
    assert any("# NBVAL_CHECK_OUTPUT" in c.source for c in code), f"{path.name}: no # NBVAL_CHECK_OUTPUT cell"
    assert any("dalib" in c.source for c in code), f"{path.name}: does not import dalib"
    assert json.loads(path.read_text())["nbformat"] == 4
