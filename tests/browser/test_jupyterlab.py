"""The course as a student meets it: JupyterLab in a real browser (`make test-browser`, not `make test`).

A JupyterLab server on a free local port (with a token) serves a temporary copy of the notebooks, with a
temporary DALIB_RUN_DIR and DALIB_DATA; Playwright drives Debian's chromium (`$CHROMIUM`, default
/usr/bin/chromium; no browser is downloaded). Checked:

- a committed notebook opens unmodified (no "unsaved changes" mark once its kernel is ready);
- 02 and 03 run with Run All Cells: every prompt gets its number, no "Error displaying widget", no raw
  `interactive(...)` text, no browser console errors;
- every slider of 02 and 03, dragged with the mouse and moved with the arrow keys, redraws its plot;
- an executed 07 (04-07 run by papermill at smoke size into the temporary run folder, in the background
  while 02 and 03 are tested) shows its results table as an HTML table and its claims without `**`.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# without the network flags chromium waits on background services that the closed network never answers
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXECUTED_FOR_07 = ["04_teacher_training", "05_pseudo_labelling", "06_student_training", "07_evaluation"]
KERNEL_TIMEOUT_MS = 180_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency: make setup")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    nbdir = root / "notebooks"
    shutil.copytree(REPO / "notebooks", nbdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.tmp"))
    (root / "executed").mkdir()
    settings = root / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell in the page (no virtual scrolling), so that prompts and outputs can be read
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**os.environ, "DALIB_RUN_DIR": str(root / "run"), "DALIB_DATA": str(root / "data"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    env.pop("DALIB_HEADLESS", None)
    return {"root": root, "notebooks": nbdir, "env": env}


@pytest.fixture(scope="module")
def executed_07(workspace):
    """04-07 run by papermill at smoke size, started now, in the background; yields a waiter."""
    ws = workspace
    script = "; ".join([
        "import papermill as pm",
        *[f"pm.execute_notebook({str(ws['notebooks'] / (n + '.ipynb'))!r}, "
          f"{str(ws['root'] / 'executed' / (n + '.ipynb'))!r}, cwd={str(ws['notebooks'])!r}, "
          f"kernel_name='python3', progress_bar=False)" for n in EXECUTED_FOR_07],
    ])
    log = open(ws["root"] / "papermill.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**ws["env"], "DALIB_HEADLESS": "1"},
                            stdout=log, stderr=subprocess.STDOUT)

    def wait() -> Path:
        rc = proc.wait(timeout=1800)
        log.close()
        assert rc == 0, f"papermill 04-07 failed:\n{(ws['root'] / 'papermill.log').read_text()[-3000:]}"
        out = ws["root"] / "executed" / "07_evaluation.ipynb"
        shutil.copy(out, ws["notebooks"] / "07_executed.ipynb")
        return ws["notebooks"] / "07_executed.ipynb"

    yield wait
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(workspace):
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={workspace['notebooks']}", "--ServerApp.port_retries=0",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
           "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(workspace["root"] / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, env=workspace["env"], cwd=workspace["notebooks"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start:\n{(workspace['root'] / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield {"url": url, "token": token}
    proc.terminate()   # the server this test started, and only it
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make test-browser` installs Debian's chromium"
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Lab:
    """One browser page on the server, with the console errors it collected."""

    def __init__(self, browser, server, tmp_path):
        # a fresh profile (--user-data-dir) per page: a new context is an empty, temporary profile
        self.ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.server = server

    def open(self, name: str):
        page = self.page
        # ?reset: a fresh workspace, not the tabs an earlier page left open
        page.goto(f"{self.server['url']}/lab/tree/{name}?reset&token={self.server['token']}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=KERNEL_TIMEOUT_MS)
        self.wait_kernel_idle()

    def wait_kernel_idle(self):
        self.page.wait_for_function(
            """() => { const app = window.jupyterapp; const w = app && app.shell.currentWidget;
                       const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                       return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }""",
            timeout=KERNEL_TIMEOUT_MS)

    def dirty(self) -> bool:
        return self.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty")

    def model_json(self) -> dict:
        return self.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.toJSON()")

    def current_path(self) -> str:
        return self.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.path")

    def run_all(self):
        # as a student would: the Run menu, Run All Cells
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        self.page.wait_for_function(
            """() => { const p = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
                       return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }""",
            timeout=600_000)
        self.wait_kernel_idle()

    def text(self) -> str:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").inner_text()

    def close(self):
        self.ctx.close()


@pytest.fixture
def lab(browser, server, tmp_path):
    lab = Lab(browser, server, tmp_path)
    yield lab
    lab.close()


def _plot_of(slider):
    """The image the interact output below a slider shows (its PNG data)."""
    box = slider.locator("xpath=ancestor::div[contains(@class, 'widget-interact')][1]")
    return box.locator(".jp-OutputArea-output img").last


def _wait_changed(page, img, before: str):
    deadline = time.time() + 60
    while time.time() < deadline:
        src = img.get_attribute("src") if img.count() else None
        if src and src != before:
            return src
        page.wait_for_timeout(250)
    pytest.fail("the plot did not change after the slider moved")


def _check_sliders(lab: Lab, expected: int):
    page = lab.page
    sliders = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-interact .widget-slider")
    assert sliders.count() == expected, f"{sliders.count()} sliders, expected {expected}"
    for k in range(expected):
        slider = sliders.nth(k)
        slider.scroll_into_view_if_needed()
        track = slider.locator(".noUi-target, .slider-container").first
        width = track.bounding_box()["width"]
        assert width >= 300, f"slider {k} is {width:.0f} px wide: a small drag jumps across the range"
        img = _plot_of(slider)
        before = img.get_attribute("src")
        assert before and before.startswith("data:image/png"), "no plot under the slider"
        # drag the handle by a fifth of the track
        handle = slider.locator(".noUi-handle").first
        hb = handle.bounding_box()
        x, y = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + width / 5, y, steps=8)
        page.mouse.up()
        after_drag = _wait_changed(page, img, before)
        lab.wait_kernel_idle()
        after_drag = img.get_attribute("src")
        # then the keyboard: focus the handle, three steps to the left
        handle.focus()
        for _ in range(3):
            page.keyboard.press("ArrowLeft")
        _wait_changed(page, img, after_drag)
        lab.wait_kernel_idle()


def _check_clean_run(lab: Lab):
    text = lab.text()
    assert "Error displaying widget" not in text
    assert "interactive(" not in text, "a widget printed as raw text: the widget front end is missing"
    assert not lab.errors, f"browser console errors: {lab.errors}"


@pytest.mark.parametrize("name, sliders", [("02_ssi_loss.ipynb", 2), ("03_gradient_matching_loss.ipynb", 1)])
def test_widgets_notebook_runs_and_sliders_redraw(lab, executed_07, name, sliders):
    lab.open(name)
    lab.page.wait_for_timeout(1500)   # metadata from the kernel arrives just after it is ready
    assert lab.current_path() == name
    if lab.dirty():
        stored = json.loads((REPO / "notebooks" / name).read_text())
        shown = lab.model_json()
        diff = {k: (stored.get(k), shown.get(k)) for k in set(stored) | set(shown)
                if k != "cells" and stored.get(k) != shown.get(k)}
        cells = [i for i, (a, b) in enumerate(zip(stored["cells"], shown["cells"])) if a != b]
        pytest.fail(f"{name} opens as modified before anything ran; differs from the file: {diff}, cells {cells}: "
                    f"{[(stored['cells'][i], shown['cells'][i]) for i in cells[:2]]}")
    lab.run_all()
    _check_clean_run(lab)
    _check_sliders(lab, sliders)
    assert not lab.errors, f"browser console errors: {lab.errors}"


def test_executed_07_shows_html_tables(lab, executed_07):
    path = executed_07()
    lab.open(path.name)
    page = lab.page
    outputs = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
    table = outputs.locator("table", has_text="clean AbsRel")
    assert table.count() == 1, "07's results table is not rendered as an HTML table"
    header = [h.strip() for h in table.locator("th").all_inner_texts()]
    assert header[:3] == ["model", "clean AbsRel", "clean δ1"], header
    assert table.locator("tbody tr").count() >= 5, "fewer model rows than 04-06 train"
    claims = outputs.locator("li", has_text="every_model_beats_baseline_clean")
    assert claims.count() == 1, "the claims are not a rendered list"
    shown = "\n".join(outputs.all_inner_texts())
    assert "**" not in shown, "literal Markdown asterisks in the executed notebook's outputs"
    assert not lab.errors, f"browser console errors: {lab.errors}"
