"""Committed notebooks: valid, clean, and following the course conventions.

Executing them is nbval's job (`make test` runs `pytest --nbval-lax notebooks`): in that mode only the
cells marked `# NBVAL_CHECK_OUTPUT` are compared with their stored output, so those cells (and only those)
keep a reference output in the committed notebook (nbstripout's `keep_output` cell metadata, which
`make strip` respects). The tests here check that the references exist and that nothing else is stored.
"""
import json
import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
MARK = "# NBVAL_CHECK_OUTPUT"
MAX_LINE = 100   # JupyterLab's editor cuts longer lines at its default width


def _code_cells(path):
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _is_check_cell(cell) -> bool:
    return MARK in cell.source


def _output_text(output) -> str:
    if "text" in output:
        return output["text"]
    return "\n".join(v if isinstance(v, str) else json.dumps(v) for v in output.get("data", {}).values())


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no NN_name.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_only_in_check_cells(path):
    nbformat.validate(nbformat.read(path, as_version=4))
    for n, (i, cell) in enumerate(_code_cells(path), 1):
        if _is_check_cell(cell):
            # nbval skips a reference cell without an execution count ("Unrun reference cell")
            assert cell.execution_count == n, (
                f"{path.name}: check cell {i} has count {cell.execution_count}, not {n} (run `make strip`)")
            assert cell.metadata.get("keep_output") is True, (
                f"{path.name}: check cell {i} lacks `keep_output: true` metadata, so `make strip` drops its reference")
            assert cell.outputs, f"{path.name}: check cell {i} has no stored reference output: nbval compares nothing"
            for out in cell.outputs:
                assert out.get("execution_count") is None, f"{path.name}: cell {i}: an output keeps its count"
                assert out["output_type"] != "error", f"{path.name}: cell {i}: the stored reference is an error"
        else:
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count committed"
            assert not cell.outputs, f"{path.name}: cell {i} has outputs committed (run `make strip`)"
            assert "keep_output" not in cell.metadata, f"{path.name}: cell {i} keeps output but is no check cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_reference_outputs_are_machine_independent(path):
    # a reference that holds a path, a timing or a device name fails on the next machine
    forbidden = [re.escape(str(REPO)), "/tmp/", "/home/", r"\d ?s\b", "images/s", r"\bcuda\b", r"\bdevice\b"]
    for i, cell in _code_cells(path):
        text = "".join(_output_text(o) for o in cell.get("outputs", []))
        for pattern in forbidden:
            m = re.search(pattern, text)
            assert not m, f"{path.name}: check cell {i} prints {m.group()!r}, which differs between machines"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_round_trips_through_nbformat(path):
    """What JupyterLab would save: the same bytes, the current minor version, cell ids, the kernel's metadata.

    A notebook that differs from what the front end would write opens as "modified" before anything runs.
    """
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    assert nbformat.writes(nb) + "\n" == text, f"{path.name}: not in nbformat's own layout (run `make strip`)"
    raw = json.loads(text)
    assert (raw["nbformat"], raw["nbformat_minor"]) == (4, nbformat.current_nbformat_minor), path.name
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: cell ids missing or repeated"
    from ipykernel.ipkernel import IPythonKernel
    from ipykernel.kernelspec import get_kernel_dict

    spec = nb.metadata.get("kernelspec", {})
    assert spec == {"display_name": get_kernel_dict()["display_name"], "language": "python", "name": "python3"}, (
        f"{path.name}: kernelspec {spec} is not the one the python3 kernel reports")
    info = dict(nb.metadata.get("language_info", {}))
    want = dict(IPythonKernel.language_info)
    # the Python version is the one of the environment that last ran it; the rest must match exactly
    assert re.fullmatch(r"3\.\d+\.\d+", str(info.pop("version", ""))), f"{path.name}: language_info has no version"
    want.pop("version")
    assert info == want, f"{path.name}: language_info {info} differs from the kernel's {want}"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"{path.name}: extra metadata {sorted(nb.metadata)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_lines_fit_the_editor(path):
    long = [(i, len(line)) for i, c in _code_cells(path) for line in c.source.splitlines() if len(line) > MAX_LINE]
    assert not long, f"{path.name}: code lines over {MAX_LINE} characters (cell, length): {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("#"), f"{path.name}: no title cell"
    assert re.search(r"(?i)runtime", first.source), f"{path.name}: the header states no runtime"
    assert MARK in first.source, f"{path.name}: the header does not explain the {MARK} cells"
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = code[0]
    assert "parameters" in params.metadata.get("tags", []), f"{path.name}: first code cell is not tagged `parameters`"
    assert re.search(r"^run_dir\s*=", params.source, re.M), f"{path.name}: `parameters` cell defines no run_dir"
    checks = [c for c in code if _is_check_cell(c)]
    assert checks, f"{path.name}: no {MARK} cell"
    for c in checks:
        # the marker is what a student reads last, not first (nbval finds it on any line)
        assert c.source.rstrip().splitlines()[-1].strip() == MARK, f"{path.name}: {MARK} is not the cell's last line"
    assert any("dalib" in c.source for c in code), f"{path.name}: does not import dalib"
