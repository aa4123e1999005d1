"""Every lab as a person uses it: JupyterLab in Debian's chromium, driven by Playwright.

For each notebook in labs/ (globbed at run time): open it in a fresh workspace, wait for the kernel,
Run All, wait until every cell ran and the kernel is idle, then check that no cell shows an error (in the
notebook model and in the rendered DOM), that plotly figures are drawn in the DOM (``.js-plotly-plot``), and,
where the lab has sliders, that pressing an arrow key on a slider handle changes the data of a figure in the
same output. Screenshots and a JSON summary per lab go to build/browser-artifacts/.

Skipped (with the reason) only where chromium cannot be installed: see scripts/install_chromium.sh.
"""

from __future__ import annotations

import json
import time

import pytest

from .helpers import (
    JS_CLIPPED,
    JS_DOM_ERRORS,
    JS_PLOTS_NEAR_SLIDER,
    JS_SCROLL_TOP,
    JS_SLIDER_READOUT,
    JS_SLIDERS_ENABLED,
    JS_STATE,
    lab_notebooks,
)

RUN_ALL_TIMEOUT = 420.0  # s per lab; the labs take <= 90 s in nbclient on 2 cores, the browser adds to that
NOTEBOOKS = lab_notebooks()
SLIDERS_MOVED: list[str] = []  # labs where a slider changed a figure (checked by the last test)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll ``predicate()`` until it returns a truthy value; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def run_all(page, path: str) -> dict:
    """Wait for the kernel to be idle, run every cell, and wait until all ran (or one failed) and it is idle."""
    state = lambda: page.evaluate(JS_STATE, path)  # noqa: E731
    wait_for(lambda: (s := state())["ready"] and s["kernel"] == "idle", 180, f"the kernel of {path} to be idle")
    # NOTE: not awaited: the command's promise resolves only when every cell has run, longer than
    # Playwright's evaluate should block; completion is polled from the notebook model instead.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    last = {}

    def finished():
        s = state()
        done = s["kernel"] == "idle" and (s["executed"] == s["code"] or s["errors"])
        stable = done and last.get("s") == s  # the same finished state on two polls in a row
        last["s"] = s
        return s if stable else None

    return wait_for(finished, RUN_ALL_TIMEOUT, f"Run All of {path} to finish", interval=1.0)


def settle_plots(page, path: str, expected: int) -> int:
    """Wait until at least ``expected`` plotly divs are drawn and their number stops changing for 3 s."""
    seen = {"n": -1, "since": time.monotonic()}

    def settled():
        n = page.evaluate(JS_STATE, path)["dom_plots"]
        if n != seen["n"]:
            seen.update(n=n, since=time.monotonic())
        return n >= expected and time.monotonic() - seen["since"] > 3.0

    try:
        wait_for(settled, 90, f"{expected} plotly figures to be drawn")
    except AssertionError:
        pass  # the assertion below reports the numbers
    return page.evaluate(JS_STATE, path)["dom_plots"]


def move_a_slider(page, path: str, shot) -> dict:
    """Press an arrow key on enabled slider handles (DOM order) until one changes a figure in its output area.

    Returns what happened: ``slider`` is None when no slider changed a figure, e.g. every slider is
    disabled at the lab's defaults or only sets up work a button starts; :func:`test_a_slider_changed_a_figure`
    then needs another lab's slider to do it.
    """
    handles = page.locator(".jp-Notebook .widget-slider .noUi-handle")
    enabled = page.evaluate(JS_SLIDERS_ENABLED, path)
    tried = [f"slider {i}: disabled" for i, on in enumerate(enabled) if not on]
    candidates = [i for i, on in enumerate(enabled) if on][:8]
    if not candidates:
        return {"slider": None, "tried": tried}
    for i in candidates:
        handle = handles.nth(i)
        before_plots = page.evaluate(JS_PLOTS_NEAR_SLIDER, [path, i])
        before = page.evaluate(JS_SLIDER_READOUT, [path, i])
        handle.scroll_into_view_if_needed()
        handle.focus()
        for key in ("ArrowRight", "ArrowLeft", "ArrowLeft"):  # at its maximum: go the other way
            handle.press(key)
            time.sleep(0.3)
            after = page.evaluate(JS_SLIDER_READOUT, [path, i])
            if after != before:
                break
        if after == before:
            tried.append(f"slider {i}: did not move ({before!r})")
            continue
        try:
            wait_for(lambda: page.evaluate(JS_PLOTS_NEAR_SLIDER, [path, i]) != before_plots, 30,
                     "a figure to change", interval=0.5)
        except AssertionError:
            tried.append(f"slider {i}: {before!r} -> {after!r}, no figure in its output changed in 30 s")
            continue
        time.sleep(1.0)  # let the rest of the batch update draw before the screenshot
        handle.scroll_into_view_if_needed()
        shot("slider")
        return {"slider": i, "from": before, "to": after, "tried": tried}
    return {"slider": None, "tried": tried}


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_lab_runs_in_chromium(notebook, lab_server, browser, artifacts):
    name = notebook.stem
    source = notebook.with_suffix(".py").read_text() if notebook.with_suffix(".py").exists() else ""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:500]) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"[:500]))
    shot = lambda tag: page.screenshot(path=str(artifacts / f"{name}-{tag}.png"))  # noqa: E731
    summary: dict = {"notebook": notebook.name}
    t0 = time.perf_counter()
    try:
        page.goto(lab_server.notebook_url(f"t-{name}", notebook.name), wait_until="domcontentloaded")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=120_000)
        state = run_all(page, notebook.name)
        summary["run_all_s"] = round(time.perf_counter() - t0, 1)
        dom_plots = settle_plots(page, notebook.name, state["plotly"])
        state = page.evaluate(JS_STATE, notebook.name)
        dom_errors = page.evaluate(JS_DOM_ERRORS, notebook.name)
        summary.update(cells=state["code"], executed=state["executed"], plotly_outputs=state["plotly"],
                       widget_outputs=state["widgets"], dom_plots=dom_plots, sliders=state["sliders"],
                       errors=state["errors"], dom_errors=dom_errors, console_errors=console[:20])
        shot("run-all")  # where Run All left the view (the last cells)
        page.evaluate(JS_SCROLL_TOP, notebook.name)
        time.sleep(0.5)
        shot("top")  # banner and introduction

        assert not state["errors"], f"{notebook.name}: error outputs {state['errors']}"
        assert state["executed"] == state["code"], f"{notebook.name}: {state['executed']}/{state['code']} cells ran"
        assert not dom_errors, f"{notebook.name}: error text in the rendered outputs {dom_errors}"
        # nothing cut at notebook width: figure and axis titles inside their plot, widget labels and
        # button captions not truncated (recorded in the lab's JSON artifact too)
        summary["clipped"] = clipped = page.evaluate(JS_CLIPPED, notebook.name)
        assert not clipped, f"{notebook.name}: cut at notebook width: {clipped}"
        tracebacks = [s for s in state["stderr"] if "Traceback" in s]
        assert not tracebacks, tracebacks
        # figures: every plotly output is drawn, and a lab that builds figures shows at least one
        assert dom_plots >= state["plotly"], f"{dom_plots} plotly divs drawn for {state['plotly']} figure outputs"
        if "viz" in source or state["plotly"]:
            assert dom_plots > 0, f"{notebook.name} builds figures but none is drawn in the DOM"
        if state["sliders"]:
            summary["slider"] = moved = move_a_slider(page, notebook.name, shot)
            if moved["slider"] is not None:
                SLIDERS_MOVED.append(name)
            after = page.evaluate(JS_STATE, notebook.name)
            assert not after["errors"] and not page.evaluate(JS_DOM_ERRORS, notebook.name)
            summary["clipped_after_slider"] = clipped = page.evaluate(JS_CLIPPED, notebook.name)
            assert not clipped, f"{notebook.name}: cut at notebook width after a slider moved: {clipped}"
    except BaseException:
        try:
            shot("failure")
        except Exception:
            pass
        raise
    finally:
        summary["total_s"] = round(time.perf_counter() - t0, 1)
        (artifacts / f"{name}.json").write_text(json.dumps(summary, indent=1, default=str))
        page.close()
        lab_server.shutdown_kernels()


@pytest.mark.browser
@pytest.mark.slow
def test_a_slider_changed_a_figure(request, chromium_path):
    """Across the labs driven above, at least one slider moved in the browser changed a figure.

    (A lab none of whose sliders changes a figure by itself, see :func:`move_a_slider`, is not failed for
    it; the labs together must show a live slider.)
    """
    driven = [i for i in request.session.items if i.originalname == "test_lab_runs_in_chromium"]
    if not driven:
        pytest.skip("no lab was driven in this run (deselected)")
    assert SLIDERS_MOVED, "no enabled slider in any lab changed a figure (see build/browser-artifacts/*.json)"
