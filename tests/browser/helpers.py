"""JupyterLab + Debian chromium + Playwright plumbing for the browser test of the labs.

Nothing here downloads a browser: Playwright (PyPI) drives ``/usr/bin/chromium`` through
``executable_path``. JupyterLab runs on loopback with a random token, in a temporary copy of ``labs/`` with
its own settings, workspaces and runtime directories, so the repository and the user's Jupyter set-up are
never touched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LABS = REPO / "labs"
CHROMIUM = Path(os.environ.get("SAMOYEDS_LAB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("SAMOYEDS_LAB_BROWSER_ARTIFACTS", REPO / "build" / "browser-artifacts"))
#: Written by scripts/install_chromium.sh: why chromium could not be installed (read for the skip reason).
INSTALL_STATUS = REPO / "build" / "chromium-install.txt"
#: The flags verified to work with Debian's chromium in a container (see shared DESIGN "Browser testing facts").
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

# User settings for the test's JupyterLab: every cell attached to the DOM (the default "contentVisibility"
# windowing may skip laying out off-screen plots), and no news / update check (no network, no toast).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def lab_notebooks() -> list[Path]:
    """Every lab notebook in labs/, found at run time (labs added later are covered too)."""
    return sorted(LABS.glob("[0-9][0-9]_*.ipynb"))


def chromium_skip_reason() -> str | None:
    """None when /usr/bin/chromium exists, else why it is missing (from the install script's status file)."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return None
    why = INSTALL_STATUS.read_text().strip() if INSTALL_STATUS.is_file() else (
        "scripts/install_chromium.sh has not been run (`make test` runs it)")
    return f"Debian chromium is not installed at {CHROMIUM}: {why}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running ``jupyter lab`` on 127.0.0.1 serving a temporary copy of labs/."""

    process: subprocess.Popen
    url: str
    token: str
    root: Path
    log: Path

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Delete every session (and so its kernel): a lab's kernel must not slow the next lab down."""
        for s in self.api("/api/sessions"):
            self.api(f"/api/sessions/{s['id']}", method="DELETE")

    def notebook_url(self, workspace: str, notebook: str) -> str:
        # ?reset: JupyterLab would otherwise restore the previous workspace's open tabs
        return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_lab(workdir: Path, *, startup_timeout: float = 120.0) -> LabServer:
    """Copy labs/ into ``workdir/labs`` and start JupyterLab there; return once ``/api/status`` answers."""
    root = workdir / "labs"
    shutil.copytree(LABS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    settings = workdir / "settings"
    for rel, value in LAB_SETTINGS.items():
        f = settings / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                     ("IPYTHONDIR", "ipython")):
        env[var] = str(workdir / sub)
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    env.pop("JUPYTER_PATH", None)
    token = secrets.token_hex(16)
    port = free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = workdir / "jupyter-lab.log"
    logf = open(log, "w")  # noqa: SIM115 (kept open for the server's lifetime)
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=logf, stderr=subprocess.STDOUT)
    server = LabServer(proc, f"http://127.0.0.1:{port}", token, root, log)
    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            server.api("/api/status")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"jupyter lab did not answer within {startup_timeout:.0f} s:\n"
                                   f"{log.read_text()[-3000:]}") from None
            time.sleep(0.5)


# ------------------------------------------------------------------------------------------- page scripts
# Each takes the notebook path (relative to the server root) and looks its panel up among the main-area
# widgets of `window.jupyterapp` (exposed by --LabApp.expose_app_in_browser=True).
_PANEL = """
const app = window.jupyterapp;
let panel = null;
if (app && app.shell) {
  for (const w of app.shell.widgets('main')) { if (w.context && w.context.path === path) panel = w; }
}
"""

#: Kernel status and per-cell execution state, from the notebook model.
JS_STATE = "(path) => {" + _PANEL + """
if (!panel || !panel.content) return {ready: false};
const kernel = panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
let code = 0, executed = 0, plotly = 0, widgets = 0;
const errors = [], stderr = [];
for (const cell of panel.content.widgets) {
  if (cell.model.type !== 'code') continue;
  code += 1;
  if (cell.model.executionCount !== null) executed += 1;
  for (const o of cell.model.outputs.toJSON()) {
    if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    if (o.output_type === 'stream' && o.name === 'stderr') {
      stderr.push(Array.isArray(o.text) ? o.text.join('') : o.text);
    }
    if (o.data && o.data['application/vnd.plotly.v1+json']) plotly += 1;
    if (o.data && o.data['application/vnd.jupyter.widget-view+json']) widgets += 1;
  }
}
return {ready: true, kernel: kernel ? kernel.status : 'none', code, executed, errors, stderr, plotly, widgets,
        dom_plots: panel.content.node.querySelectorAll('.js-plotly-plot').length,
        sliders: panel.content.node.querySelectorAll('.widget-slider .noUi-handle').length};
}"""

#: Text of outputs that show a front-end failure (a widget that could not render, a JS error output).
JS_DOM_ERRORS = "(path) => {" + _PANEL + """
if (!panel) return ['notebook panel not found'];
const out = [];
for (const el of panel.content.node.querySelectorAll('.jp-OutputArea-output')) {
  const t = el.innerText || '';
  const stderr = el.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr';
  if (stderr && /Traceback|Error/.test(t)) out.push(t.slice(0, 400));
  if (/Error displaying widget|Failed to load model class|Failed to display Jupyter Widget|Javascript Error/.test(t)) {
    out.push(t.slice(0, 400));
  }
}
return out;
}"""

#: The data of every plotly graph div in the slider's output area (gd.data, x/y/z/text only), as JSON.
JS_PLOTS_NEAR_SLIDER = "([path, i]) => {" + _PANEL + """
const handle = panel.content.node.querySelectorAll('.widget-slider .noUi-handle')[i];
const area = handle.closest('.jp-OutputArea') || panel.content.node;
const pick = (t) => ({type: t.type, x: t.x, y: t.y, z: t.z, text: t.text, values: t.values});
return JSON.stringify(Array.from(area.querySelectorAll('.js-plotly-plot')).map(gd => (gd.data || []).map(pick)));
}"""

#: The readout (current value) of slider i.
JS_SLIDER_READOUT = "([path, i]) => {" + _PANEL + """
const handle = panel.content.node.querySelectorAll('.widget-slider .noUi-handle')[i];
const box = handle.closest('.widget-slider');
const r = box && box.querySelector('.widget-readout');
return r ? (r.innerText || r.textContent) : handle.getAttribute('aria-valuenow');
}"""

#: For every slider handle (DOM order): whether it can be moved (ipywidgets marks a disabled slider's
#: noUiSlider target with a ``disabled`` attribute, and it ignores keys and drags).
JS_SLIDERS_ENABLED = "(path) => {" + _PANEL + """
return Array.from(panel.content.node.querySelectorAll('.widget-slider .noUi-handle'))
  .map(h => !h.closest('.noUi-target').hasAttribute('disabled'));
}"""

#: Scroll the notebook back to its first cell (for the screenshot of the top of a lab).
JS_SCROLL_TOP = "(path) => {" + _PANEL + """
if (!panel) return false;
panel.content.activeCellIndex = 0;
if (panel.content.scrollToItem) { panel.content.scrollToItem(0, 'start'); }
for (const el of panel.node.querySelectorAll('.jp-WindowedPanel-outer')) el.scrollTop = 0;
return true;
}"""

#: Figure titles, axis titles and widget labels that the notebook cuts: a plotly title (figure, subplot
#: annotation text excluded) whose rendered box leaves its graph div by more than 2 px, or a widget
#: description whose text is wider than its box (ipywidgets cuts it with an ellipsis).
JS_CLIPPED = "(path) => {" + _PANEL + """
if (!panel) return ['notebook panel not found'];
const out = [];
const plots = Array.from(panel.content.node.querySelectorAll('.js-plotly-plot'));
plots.forEach((gd, k) => {
  const box = gd.getBoundingClientRect();
  if (box.width < 10 || box.height < 10) return;  // not laid out (collapsed output)
  for (const el of gd.querySelectorAll('.gtitle, .xtitle, .ytitle, .x2title, .y2title, .x3title, .y3title, .x4title, .y4title')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const over = Math.max(box.left - r.left, r.right - box.right, box.top - r.top, r.bottom - box.bottom);
    if (over > 2) out.push(`figure ${k}: "${(el.textContent || '').slice(0, 60)}" cut by ${Math.round(over)} px`);
  }
  for (const el of gd.querySelectorAll('text.bartext, .textpoint text')) {  // value labels shrunk to fit
    const px = parseFloat(el.style.fontSize || getComputedStyle(el).fontSize);
    if (el.getBoundingClientRect().width > 0 && px < 8) out.push(`figure ${k}: value label "${(el.textContent || '').slice(0, 20)}" at ${px} px`);
  }
});
for (const el of panel.content.node.querySelectorAll('.widget-label, .widget-label-basic')) {
  if (!el.offsetParent || !el.textContent.trim()) continue;
  if (el.scrollWidth > el.clientWidth + 1) out.push(`widget label "${el.textContent.slice(0, 40)}" cut`);
}
for (const el of panel.content.node.querySelectorAll('button.jupyter-button, .widget-toggle-button')) {
  if (!el.offsetParent || !el.textContent.trim()) continue;
  if (el.scrollWidth > el.clientWidth + 1) out.push(`button "${el.textContent.trim().slice(0, 40)}" cut`);
}
return out;
}"""
