"""Save the labs' figures as files that open anywhere, offline, and keep plots in saved notebooks.

Two decisions live here.

**Files** (:func:`export_figure`): HTML by default, with plotly.js *embedded* (``include_plotlyjs=True``,
about 4.7 MB per file) or written once as a sibling ``plotly.min.js`` copied from the installed plotly
package (``plotlyjs="sibling"``; the HTML then stays a few kB and needs that file beside it). Never the CDN
(``include_plotlyjs="cdn"``): the lab must work on a machine without internet, and a CDN export shows an
empty page there. MathJax is not referenced either (it would come from a CDN). Static images (PNG, SVG,
PDF, JPEG, WebP) are written by ``kaleido`` (in the ``lab`` and ``test`` extras), which drives a
Chrome/Chromium: Debian's ``/usr/bin/chromium`` (installed by ``make chromium``, which ``make test`` runs) is
used unless ``BROWSER_PATH`` names another. Without kaleido :func:`export_figure` raises
:class:`ExportDependencyError` naming the package; without a browser, an error saying so.

**Notebooks** (:func:`set_notebook_renderer`): in a Jupyter kernel plotly's default renderer is
``"plotly_mimetype"``: JupyterLab draws the figure from its JSON (``application/vnd.plotly.v1+json``),
and a saved ``.ipynb`` re-renders only where the JupyterLab plotly extension is installed;
``jupyter nbconvert --to html``, nbviewer and GitHub show nothing. ``"notebook_connected"`` would load
plotly.js from the CDN (offline: blank). We use ``"plotly_mimetype+notebook"``: each figure output carries
both the JSON (drawn by JupyterLab, interactive) and a ``text/html`` version, and the first figure of the
session also emits plotly.js itself inline (once, ~4.7 MB in a saved notebook), so a notebook saved with
its outputs and exported to HTML keeps every plot, offline. Widget panels (``go.FigureWidget``) are live
views of the kernel and are not part of this: save their figures with :func:`export_figure`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.basedatatypes import BaseFigure

from ..errors import SamoyedsLabError

__all__ = ["EXPORT_FORMATS", "IMAGE_FORMATS", "NOTEBOOK_RENDERER", "ExportDependencyError", "export_figure",
           "plotlyjs_path", "set_notebook_renderer"]

#: Formats written by plotly itself (no extra package).
EXPORT_FORMATS = ("html",)
#: Static image formats, written by kaleido.
IMAGE_FORMATS = ("png", "svg", "pdf", "jpeg", "jpg", "webp")
#: The renderer :func:`set_notebook_renderer` selects (see the module docstring for why).
NOTEBOOK_RENDERER = "plotly_mimetype+notebook"


class ExportDependencyError(SamoyedsLabError, ImportError):
    """A figure format needs a package that is not installed (kaleido for static images)."""


def plotlyjs_path() -> Path:
    """The ``plotly.min.js`` bundled with the installed plotly package (what exports embed or copy)."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():  # pragma: no cover - a plotly wheel always ships it
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package at {path}")
    return path


def _kaleido_available() -> bool:
    return importlib.util.find_spec("kaleido") is not None


def export_figure(fig: go.Figure, path: str | os.PathLike, *, format: str | None = None,
                  plotlyjs: str = "inline", width: int | None = None, height: int | None = None,
                  scale: float = 1.0) -> Path:
    """Write ``fig`` to ``path``: interactive HTML by default, a static image where kaleido is installed.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure or FigureWidget
        The figure (a panel's ``go.FigureWidget`` works too: its current state is written).
    path : str or path-like
        Destination. A missing suffix means ``.html``; parent folders are created.
    format : str, optional
        ``"html"`` or one of :data:`IMAGE_FORMATS`; default: from the suffix of ``path``.
    plotlyjs : {"inline", "sibling"}
        HTML only. ``"inline"``: plotly.js embedded, one self-contained file (~4.7 MB).
        ``"sibling"``: ``plotly.min.js`` copied beside the HTML (once per folder) and referenced by
        relative path; small HTML files that work offline as long as they stay together.
    width, height : int, optional
        Pixel size of a static image (default: the figure's layout size, else plotly's 700 x 500).
    scale : float
        Static images: resolution multiplier (2 for a crisp PNG in slides).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    TypeError
        ``fig`` is not a plotly figure.
    ValueError
        Unknown ``format``/suffix or ``plotlyjs``, or a suffix that contradicts ``format``.
    ExportDependencyError
        A static image was asked for and ``kaleido`` is not installed.
    """
    if not isinstance(fig, BaseFigure):
        raise TypeError(f"fig: expected a plotly Figure or FigureWidget, got {type(fig).__name__}")
    if plotlyjs not in ("inline", "sibling"):
        raise ValueError(f"plotlyjs: expected 'inline' or 'sibling', got {plotlyjs!r}")
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    known = EXPORT_FORMATS + IMAGE_FORMATS
    if format is not None:
        fmt = format.lower()
        if fmt not in known:
            raise ValueError(f"format: expected one of {known}, got {format!r}")
        if not suffix:
            path = path.with_suffix("." + fmt)
        elif suffix != fmt and {suffix, fmt} != {"jpg", "jpeg"}:
            raise ValueError(f"path: its suffix {path.suffix!r} contradicts format={format!r}")
    elif not suffix:
        fmt, path = "html", path.with_suffix(".html")
    elif suffix in known:
        fmt = suffix
    else:
        raise ValueError(f"path: expected a suffix in {tuple('.' + k for k in known)} (or none for .html), "
                         f"got {path.suffix!r}")
    if fmt in IMAGE_FORMATS and not _kaleido_available():
        raise ExportDependencyError(
            f"export_figure: writing {fmt.upper()} needs the 'kaleido' package, which is not installed "
            "(pip install kaleido; kaleido 1.x also drives a Chrome/Chromium such as /usr/bin/chromium). "
            f"Write HTML instead: export_figure(fig, {str(path.with_suffix('.html'))!r}).")
    path.parent.mkdir(parents=True, exist_ok=True)

    if fmt == "html":
        if plotlyjs == "sibling":
            js = path.parent / "plotly.min.js"
            src = plotlyjs_path()
            if not js.is_file() or js.stat().st_size != src.stat().st_size:
                shutil.copyfile(src, js)
            include = "plotly.min.js"  # a string ending in .js: plotly writes <script src="plotly.min.js">
        else:
            include = True
        fig.write_html(path, include_plotlyjs=include, include_mathjax=False, full_html=True)
        return path

    browser = _browser_for_kaleido()
    if browser is None:
        raise ExportDependencyError(
            f"export_figure: writing {fmt.upper()} needs a Chrome/Chromium for kaleido and none was found "
            f"(looked at BROWSER_PATH and {', '.join(CHROMIUM_CANDIDATES)}; `make chromium` installs Debian's). "
            f"Write HTML instead: export_figure(fig, {str(path.with_suffix('.html'))!r}).")
    try:
        fig.write_image(path, format="jpeg" if fmt == "jpg" else fmt, width=width, height=height, scale=scale)
    except Exception as exc:  # kaleido present but it cannot start its browser, etc.
        raise RuntimeError(f"export_figure: kaleido could not write {path} (it drove {browser}): {exc}") from exc
    return path


#: Browsers kaleido 1.x may drive, in order, when ``BROWSER_PATH`` is not set (Debian's first).
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def _browser_for_kaleido() -> str | None:
    """Point kaleido at Debian's chromium (``BROWSER_PATH``) unless the user chose a browser already.

    NOTE: kaleido 1.x looks for Chrome in its own places and would otherwise try to *download* one
    (impossible offline); the project installs Debian's chromium for the browser test, so use that.
    """
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for cand in CHROMIUM_CANDIDATES:
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            os.environ["BROWSER_PATH"] = cand
            return cand
    return None


def set_notebook_renderer(renderer: str = NOTEBOOK_RENDERER) -> str:
    """Make figures shown in this kernel survive saving and HTML export (see the module docstring).

    Returns the previous default renderer, so ``set_notebook_renderer(previous)`` undoes it.

    Raises
    ------
    ValueError
        ``renderer`` is not a plotly renderer name (``+``-combinations allowed).
    """
    if not isinstance(renderer, str):
        raise ValueError(f"renderer: expected a plotly renderer name, got {renderer!r}")
    # "" is plotly's "no default renderer" (plain Python): accepted so a previous value can be restored
    unknown = [r for r in renderer.split("+") if r and r not in pio.renderers]
    if unknown:
        raise ValueError(f"renderer: expected names from plotly.io.renderers, got unknown {unknown} in "
                         f"{renderer!r}")
    previous = pio.renderers.default
    pio.renderers.default = renderer
    return previous
