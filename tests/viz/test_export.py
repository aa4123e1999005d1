"""samoyeds_lab.viz.export: offline HTML exports, the kaleido requirement for images, the notebook renderer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from samoyeds_lab.viz import export
from samoyeds_lab.viz.export import ExportDependencyError, export_figure, plotlyjs_path, set_notebook_renderer


@pytest.fixture
def fig():
    return go.Figure(go.Bar(x=["2:4", "samoyeds"], y=[0.5625, 0.28125], name="bytes-ratio-trace",
                            marker_color="#1f77b4"), layout={"title": {"text": "bytes per format"}})


def embedded_figure_json(html: str) -> dict:
    """The data passed to Plotly.newPlot in an exported page."""
    m = re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{', html, re.S)
    assert m, "no Plotly.newPlot call in the page"
    return {"data": json.loads(m.group(1)), "layout": json.loads(m.group(2))}


def test_html_embeds_plotlyjs_and_the_figure(tmp_path, fig):
    out = export_figure(fig, tmp_path / "sub" / "bytes")  # no suffix: .html, parents created
    assert out == tmp_path / "sub" / "bytes.html" and out.is_file()
    html = out.read_text()
    js = plotlyjs_path().read_text()
    assert js in html  # the whole bundle is inside
    page = html.replace(js, "")  # (the bundle itself names a topojson CDN, used only by geo maps)
    assert "cdn.plot.ly" not in page and not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched
    data = embedded_figure_json(html)
    assert data["data"][0]["name"] == "bytes-ratio-trace" and data["data"][0]["y"] == [0.5625, 0.28125]
    assert data["layout"]["title"]["text"] == "bytes per format"


def test_html_sibling_plotlyjs(tmp_path, fig):
    a = export_figure(fig, tmp_path / "a.html", plotlyjs="sibling")
    b = export_figure(go.FigureWidget(fig), tmp_path / "b.html", plotlyjs="sibling")  # a panel's widget too
    js = tmp_path / "plotly.min.js"
    assert js.read_bytes() == plotlyjs_path().read_bytes()
    for out in (a, b):
        html = out.read_text()
        assert '<script charset="utf-8" src="plotly.min.js"></script>' in html
        assert len(html) < 50_000 and "cdn.plot.ly" not in html
        assert embedded_figure_json(html)["data"][0]["name"] == "bytes-ratio-trace"


def test_static_image_without_kaleido_names_the_package(tmp_path, fig, monkeypatch):
    monkeypatch.setattr(export, "_kaleido_available", lambda: False)
    for name in ("f.png", "f.svg", "f.pdf"):
        with pytest.raises(ExportDependencyError, match=r"needs the 'kaleido' package.*pip install kaleido"):
            export_figure(fig, tmp_path / name)
    with pytest.raises(ExportDependencyError, match="kaleido"):
        export_figure(fig, tmp_path / "f", format="png")
    assert issubclass(ExportDependencyError, ImportError)
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(fig={"data": []}), TypeError, "fig: expected a plotly Figure or FigureWidget, got dict"),
    (dict(path="f.txt"), ValueError, r"path: expected a suffix in .*got '\.txt'"),
    (dict(path="f.html", format="png"), ValueError, "path: its suffix '.html' contradicts format='png'"),
    (dict(format="gif"), ValueError, "format: expected one of"),
    (dict(plotlyjs="cdn"), ValueError, "plotlyjs: expected 'inline' or 'sibling', got 'cdn'"),
])
def test_bad_arguments(tmp_path, fig, kwargs, exc, match):
    call = dict(fig=fig, path="f") | kwargs
    call["path"] = tmp_path / call["path"]
    with pytest.raises(exc, match=match):
        export_figure(call.pop("fig"), call.pop("path"), **call)


def test_format_argument_adds_the_suffix(tmp_path, fig):
    assert export_figure(fig, tmp_path / "f", format="html").name == "f.html"


def test_notebook_renderer_keeps_plots_in_saved_outputs(fig):
    previous = set_notebook_renderer()
    try:
        assert pio.renderers.default == "plotly_mimetype+notebook"
        # (each part's bundle: activating the notebook part outside a kernel would print plotly.js)
        bundle = {}
        for part in pio.renderers.default.split("+"):
            bundle.update(pio.renderers[part].to_mimebundle(fig.to_dict()))
        # JupyterLab draws the JSON; nbconvert / nbviewer use the HTML, which needs no CDN
        assert bundle["application/vnd.plotly.v1+json"]["data"][0]["name"] == "bytes-ratio-trace"
        assert "bytes-ratio-trace" in bundle["text/html"] and "cdn.plot.ly" not in bundle["text/html"]
        assert not pio.renderers["notebook"].connected  # plotly.js is embedded once, not fetched
    finally:
        assert set_notebook_renderer(previous) == "plotly_mimetype+notebook"
    assert pio.renderers.default == previous
    with pytest.raises(ValueError, match="renderer: expected names from plotly.io.renderers, got unknown"):
        set_notebook_renderer("plotly_mimetype+nope")


CHROMIUM = next((c for c in export.CHROMIUM_CANDIDATES if Path(c).is_file()), None)


@pytest.mark.slow
@pytest.mark.skipif(not export._kaleido_available(), reason="kaleido is not installed here")
@pytest.mark.skipif(CHROMIUM is None, reason="no Chrome/Chromium for kaleido (make chromium installs Debian's)")
def test_png_export_with_kaleido_and_debian_chromium(tmp_path, fig, monkeypatch):
    import struct

    monkeypatch.delenv("BROWSER_PATH", raising=False)
    out = export_figure(fig, tmp_path / "f.png", width=640, height=360)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])  # IHDR: the size asked for
    assert (w, h) == (640, 360)
    assert export._browser_for_kaleido() == CHROMIUM


def test_static_image_without_a_browser_names_what_is_missing(tmp_path, fig, monkeypatch):
    monkeypatch.setattr(export, "_kaleido_available", lambda: True)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(export, "CHROMIUM_CANDIDATES", (str(tmp_path / "no-chromium"),))
    with pytest.raises(ExportDependencyError, match="needs a Chrome/Chromium.*make chromium"):
        export_figure(fig, tmp_path / "f.png")
