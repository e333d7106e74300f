"""JupyterLab as a learner uses it (`make lab`), in a real browser.

nbval and nbclient run the notebooks' kernels, not JupyterLab's front end: a broken kernelspec, a
missing front-end extension, a widget that does not render or a notebook JupyterLab will not open
would pass them. Here JupyterLab itself runs the notebooks:

- JupyterLab is started from this environment (``python -m jupyterlab``) on 127.0.0.1, with a
  random token, throw-away config, data, runtime, settings and workspaces folders, on copies of
  notebooks 02 and 03 in a temporary folder (the committed notebooks are never touched), in test
  mode (``VAN_EDU_QUICK=1``, set by conftest.py);
- headless Chromium (tests/browser.py) opens each notebook and runs it through JupyterLab's own
  "Run All" command (``notebook:run-all-cells``, reached through the application object that
  ``--LabApp.expose_app_in_browser`` exposes, as JupyterLab's own Galata tests do);
- asserted: the kernel is the ``python3`` the notebooks name and runs this environment's Python;
  every code cell ran, in order, and none has an error output; a figure is displayed; in 03, moving
  the d slider of the K/d explorer (the keyboard on its handle, as a learner can) redraws its image.

On failure a screenshot is saved in the test's temporary folder (its path is printed). The server,
its kernels and the browser are stopped in every case. Every wait is generous for 2 cores; on a
machine a heavier job shares, ``VAN_EDU_BROWSER_WAIT=10`` makes them ten times longer.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser import chromium

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("02_lka_from_scratch.ipynb", "03_why_k21_d3.ipynb")
EXPLORER_CALL = "kd_explorer("
# Every wait is multiplied by $VAN_EDU_BROWSER_WAIT (default 1): on a machine that a heavier job
# shares (this test at nice 19 beside a training run), JupyterLab can take minutes to start.
WAIT = float(os.environ.get("VAN_EDU_BROWSER_WAIT", "1"))
START_TIMEOUT = 120 * WAIT     # seconds: the server, then JupyterLab in the page, on 2 cores
RUN_TIMEOUT = 420 * WAIT       # seconds: one notebook's Run All in test mode
STEP_TIMEOUT = 60 * WAIT       # seconds: one thing drawn or answered


def _get(url: str, token: str, method: str = "GET"):
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc; an empty list elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _stop(server: subprocess.Popen, url: str, token: str) -> None:
    """Shut JupyterLab down (its kernels first), harder each time it does not go."""
    kernels = _children(server.pid)              # each kernel runs in a session of its own
    if server.poll() is None:
        try:
            _get(f"{url}/api/shutdown", token, method="POST")
        except OSError:
            pass
        try:
            server.wait(timeout=30 * WAIT)
        except subprocess.TimeoutExpired:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=15)
    for pid in kernels:                          # only if the server left them behind
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(url, token, folder) of a JupyterLab serving copies of notebooks 02 and 03."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is in the dev extra: pip install -e .[dev]")
    pytest.importorskip("ipywidgets", reason="the explorers' widgets need ipywidgets (dev extra)")
    base = tmp_path_factory.mktemp("lab")
    folder = base / "notebooks"
    folder.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, folder / name)
    dirs = {key: base / key.lower() for key in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                                                "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}
    for d in dirs.values():
        d.mkdir()
    # No "news" question and no update check: a learner's first start asks, a test has no one to answer.
    notification = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    token = secrets.token_hex(16)
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "JUPYTER_PREFER_ENV_PATH": "1"}
    log = open(base / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
         "--LabApp.expose_app_in_browser=True", *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = None
    try:
        deadline = time.time() + START_TIMEOUT
        while url is None and time.time() < deadline:
            assert server.poll() is None, (base / "server.log").read_text()[-3000:]
            for info in dirs["JUPYTER_RUNTIME_DIR"].glob(f"jpserver-{server.pid}.json"):
                port = json.loads(info.read_text() or "{}").get("port")
                url = f"http://127.0.0.1:{port}" if port else None
            time.sleep(0.5)
        assert url, f"JupyterLab did not start in {START_TIMEOUT} s:\n" + (base / "server.log").read_text()[-3000:]
        while time.time() < deadline:
            try:
                _get(f"{url}/api/status", token)
                break
            except OSError:
                time.sleep(0.5)
        yield url, token, folder
    finally:
        _stop(server, url or "http://127.0.0.1:1", token)
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    """The browser, on JupyterLab's page, once the application has started."""
    url, token, _ = lab
    with chromium(window="1400,1000") as driver:
        driver.set_page_load_timeout(START_TIMEOUT)
        driver.set_script_timeout(STEP_TIMEOUT)
        driver.get(f"{url}/lab?token={token}")
        _wait(driver, "return !!(window.jupyterapp && window.jupyterapp.shell && "
                      "document.querySelector('#jp-main-dock-panel'))", START_TIMEOUT, "JupyterLab's page")
        yield driver


def _wait(driver, script: str, timeout: float, what: str, *args):
    """Poll ``script`` in the page until it returns something true; its last value. A page too busy
    to answer one poll in time (the browser's script timeout) is polled again until ``timeout``."""
    from selenium.common.exceptions import TimeoutException

    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        try:
            value = driver.execute_script(script, *args)
        except TimeoutException:
            continue
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value {value!r})")


@contextmanager
def _screenshot_on_failure(driver, path: Path):
    try:
        yield
    except BaseException:
        driver.save_screenshot(str(path))
        print(f"screenshot of the failure: {path}")
        raise


# One panel of the main area, found by its file's path (the first argument of each script).
PANEL = ("const panel = Array.from(window.jupyterapp.shell.widgets('main'))"
         ".find(w => w.context && w.context.path === arguments[0]);")


def _open_and_run_all(driver, name: str) -> dict:
    """Open ``name`` in JupyterLab, wait for its kernel, Run All; what the notebook's model holds."""
    driver.execute_script("window.jupyterapp.commands.execute('docmanager:open', {path: arguments[0]});", name)
    _wait(driver, PANEL + "return panel && panel.sessionContext.isReady && panel.sessionContext.session"
          " && panel.sessionContext.session.kernel && panel.sessionContext.session.kernel.status === 'idle'"
          " && panel.sessionContext.session.kernel.connectionStatus === 'connected';",
          START_TIMEOUT, f"{name} to open with an idle kernel", name)
    driver.execute_script(
        PANEL + "window.jupyterapp.shell.activateById(panel.id); window.__runAll = null;"
        "window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')"
        ".then(() => window.jupyterapp.commands.execute('notebook:run-all-cells'))"
        ".then(ok => { window.__runAll = {ok: ok}; }, err => { window.__runAll = {error: String(err)}; });", name)
    result = _wait(driver, "return window.__runAll;", RUN_TIMEOUT, f"Run All of {name}")
    return driver.execute_script(
        PANEL + "const kernel = panel.sessionContext.session.kernel;"
        "return {result: arguments[1], kernel: kernel.name, cells: panel.content.widgets"
        ".filter(c => c.model.type === 'code').map(c => ({source: c.model.sharedModel.getSource(),"
        " count: c.model.executionCount, outputs: c.model.outputs.toJSON()}))};", name, result)


def _kernel_prefix(driver, name: str) -> str:
    """``sys.prefix`` of the notebook's kernel (its environment), asked through JupyterLab's connection."""
    driver.execute_script(
        PANEL + "window.__python = null; let out = '';"
        "const future = panel.sessionContext.session.kernel.requestExecute("
        "{code: 'import sys; print(sys.prefix)', store_history: false});"
        "future.onIOPub = msg => { if (msg.header.msg_type === 'stream') { out += msg.content.text; } };"
        "future.done.then(() => { window.__python = out.trim() || '?'; });", name)
    return _wait(driver, "return window.__python;", STEP_TIMEOUT, "the kernel's answer")


def _check_ran_cleanly(state: dict, name: str) -> None:
    cells = state["cells"]
    assert state["result"].get("ok") is True, f"{name}: Run All did not succeed: {state['result']}"
    assert state["kernel"] == "python3"
    counts = [c["count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{name}: not every cell ran, in order, once: {counts}"
    errors = [(i + 1, o.get("ename"), o.get("evalue")) for i, c in enumerate(cells) for o in c["outputs"]
              if o["output_type"] == "error"]
    assert not errors, f"{name}: error outputs (code cell, error): {errors}"
    figures = [i for i, c in enumerate(cells) if any("image/png" in o.get("data", {}) for o in c["outputs"])]
    assert figures, f"{name}: no figure in any output"


def _show_cell(driver, name: str, index: int) -> None:
    """Scroll code cell ``index`` into view (JupyterLab draws only the cells near the view)."""
    driver.execute_script(
        PANEL + "const cells = panel.content.widgets; const code = cells.filter(c => c.model.type === 'code');"
        "const i = cells.indexOf(code[arguments[1]]); panel.content.activeCellIndex = i;"
        "panel.content.scrollToItem(i, 'start');", name, index)


def test_notebook_02_runs_in_jupyterlab_with_the_courses_kernel(page, lab, tmp_path):
    name = NOTEBOOKS[0]
    with _screenshot_on_failure(page, tmp_path / "02.png"):
        state = _open_and_run_all(page, name)
        _check_ran_cleanly(state, name)
        assert _kernel_prefix(page, name) == sys.prefix, "the kernel runs another environment's Python"
        sessions = _get(f"{lab[0]}/api/sessions", lab[1])
        assert {s["path"]: s["kernel"]["name"] for s in sessions}.get(name) == "python3", sessions
        first = next(i for i, c in enumerate(state["cells"]) if any("image/png" in o.get("data", {})
                                                                     for o in c["outputs"]))
        _show_cell(page, name, first)
        _wait(page, PANEL + "const code = panel.content.widgets.filter(c => c.model.type === 'code');"
              "const img = code[arguments[1]].node.querySelector('.jp-OutputArea-output img');"
              "return !!(img && img.complete && img.naturalWidth > 0);", STEP_TIMEOUT, "the figure to be drawn", name, first)


def test_the_kd_explorer_in_03_redraws_when_its_slider_moves(page, tmp_path):
    from selenium.webdriver.common.keys import Keys

    name = NOTEBOOKS[1]
    with _screenshot_on_failure(page, tmp_path / "03.png"):
        state = _open_and_run_all(page, name)
        _check_ran_cleanly(state, name)
        index = next(i for i, c in enumerate(state["cells"]) if EXPLORER_CALL in c["source"])
        _show_cell(page, name, index)
        cell = PANEL + "const cell = panel.content.widgets.filter(c => c.model.type === 'code')[arguments[1]].node;"
        pixels = ("const img = cell.querySelector('img.widget-image');"
                  "if (!img || !img.complete || !img.naturalWidth) { return null; }"
                  "const canvas = document.createElement('canvas');"
                  "canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;"
                  "canvas.getContext('2d').drawImage(img, 0, 0);"
                  "return {src: img.src, pixels: canvas.toDataURL('image/png')};")
        before = _wait(page, cell + pixels, STEP_TIMEOUT, "the explorer's image", name, index)
        # the d slider (its label says so), its handle and its readout
        slider = cell + ("const slider = Array.from(cell.querySelectorAll('.widget-slider'))"
                         ".find(s => s.textContent.includes('dilation d'));")
        readout = slider + "return slider.querySelector('.widget-readout').textContent.trim();"
        assert page.execute_script(readout, name, index) == "3"
        page.execute_script(slider + "return slider.querySelector('.noUi-handle');", name, index).send_keys(
            Keys.ARROW_RIGHT)
        _wait(page, slider + "return slider.querySelector('.widget-readout').textContent.trim() === '4';", STEP_TIMEOUT,
              "the d slider to move to 4", name, index)
        changed = cell + pixels.replace("return {src", "return img.src === arguments[2] ? null : {src")
        after = _wait(page, changed, RUN_TIMEOUT, "the kernel to redraw the image", name, index, before["src"])
        assert after["pixels"] != before["pixels"], "the explorer's image was replaced by the same picture"
        errors = page.execute_script(cell + "return cell.querySelector('.widget-html-content') ? "
                                     "cell.querySelector('.widget-html-content').textContent.trim() : '';", name, index)
        assert not errors, errors
