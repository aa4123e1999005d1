"""Interactive ipywidgets panels built on the pure figure builders of :mod:`samoyeds_lab.viz.sparsity`.

A panel keeps its logic in a plain method, ``update(**values) -> view``, that computes everything from the
widget values and returns the figures and the numbers behind them; the widget callbacks only call it
and copy the figures into ``go.FigureWidget``\\ s inside ``batch_update()``. Tests drive ``update`` over
every widget's range without a browser.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from .._checks import check_choice, check_int
from ..formats import as_dense, compress_nm, compress_samoyeds, compress_venom, to_csr
from ..prune import outlier_activations, prune_mask, reconstruction_error
from ._args import check_text, offered
from .sparsity import (
    _TEMPLATE,
    bytes_bar,
    error_bar,
    mask_heatmap,
    message_figure,
    metadata_word_figure,
    values_heatmap,
)

__all__ = ["PATTERNS", "METHODS", "SparsityPanel", "SparsityView"]

#: Patterns offered by :class:`SparsityPanel` (dropdown order).
PATTERNS = ("2:4", "N:M", "Samoyeds", "VENOM", "unstructured")
#: Pruning methods offered by :class:`SparsityPanel`.
METHODS = ("magnitude", "wanda")
#: What each pattern does with the N, M and V widgets.
_USES = {
    "2:4": (),
    "N:M": ("n", "m"),
    "Samoyeds": ("n", "m", "vector"),
    "VENOM": ("n", "m", "vector"),
    "unstructured": ("n", "m"),
}
#: Values the N / M / V widgets jump to when a pattern is picked (its usual configuration).
_PRESETS = {
    "2:4": {},
    "N:M": {"n": 2, "m": 8},
    "Samoyeds": {"n": 1, "m": 2, "vector": 32},
    "VENOM": {"n": 4, "m": 8, "vector": 16},
    "unstructured": {"n": 1, "m": 4},
}
_N_RANGE = (1, 8)
_M_RANGE = (2, 16)
_VECTORS = (4, 8, 16, 32, 64, 128)
_FIGURES = ("mask", "values", "metadata", "bytes", "error")
#: Pixel width of each figure widget: two side by side fit a JupyterLab notebook column (~1000 px).
_WIDTHS = {"mask": 500, "values": 500, "metadata": 640, "bytes": 500, "error": 500}


@dataclass
class SparsityView:
    """Everything one :meth:`SparsityPanel.update` computed.

    Attributes
    ----------
    settings : dict
        The values used: ``pattern, n, m, vector, rows, cols, method``.
    figures : dict[str, go.Figure]
        ``"mask"``, ``"values"``, ``"metadata"``, ``"bytes"``, ``"error"``.
    message : str or None
        Why this combination cannot be built (e.g. ``N >= M``), or None when it can. The figures then
        show the message instead of data (the bytes chart still shows the reference formats).
    summary : str
        One line describing the result (density, bytes, errors) or the message.
    mask : torch.Tensor or None
        ``bool [rows, cols]`` mask of the selected method.
    compressed : object or None
        The compressed operand (``NMWeight``, ``SamoyedsWeight``, ``VenomWeight`` or ``CSRWeight``) of
        the pruned fp16 weight.
    nbytes : dict[str, int]
        Bytes per format label (reference formats + the selected one), from each operand's ``.nbytes``.
    dense_bytes : int
        Bytes of the dense fp16 matrix.
    errors : dict[str, dict[str, float]]
        ``{method: {"weight": e_w, "output": e_o}}`` relative reconstruction errors of both methods.
    elapsed_s : float
        Wall time of the computation.
    """

    settings: dict[str, Any]
    figures: dict[str, go.Figure]
    message: str | None = None
    summary: str = ""
    mask: torch.Tensor | None = None
    compressed: Any = None
    nbytes: dict[str, int] = field(default_factory=dict)
    dense_bytes: int = 0
    errors: dict[str, dict[str, float]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        _check_view_fields(self)


def _size_options(total: int, lo: int) -> tuple[int, ...]:
    """Powers of two from ``lo`` up to ``total`` (and ``total`` itself)."""
    opts = []
    s = lo
    while s < total:
        opts.append(s)
        s *= 2
    opts.append(total)
    return tuple(sorted(set(o for o in opts if o <= total)))


class SparsityPanel:
    """Explore sparsity patterns, their metadata, their size and their error on one weight matrix.

    Widgets: pattern (2:4 / N:M / Samoyeds / VENOM / unstructured), N, M, V, matrix rows and columns
    (top-left slices of ``weight``), pruning method (magnitude / Wanda). The patterns read the sliders as

    ================  ============================================================================
    2:4               N, M, V unused (2 of every 4 along a row)
    N:M               N of every M consecutive elements along a row
    Samoyeds          N of every M consecutive rows per V-wide column window, 2:4 inside kept rows
    VENOM (V:N:M)     per block of V rows × M columns, N columns kept (same for the V rows), 2:4 inside
    unstructured      the N/M fraction of largest scores anywhere
    ================  ============================================================================

    Parameters
    ----------
    weight : torch.Tensor, optional
        ``[R, C]`` float weight; the size widgets take top-left slices of it. Default: a seeded
        ``N(0, 0.02²)`` matrix of 256×512.
    acts : torch.Tensor, optional
        ``[tokens, C]`` calibration activations for Wanda and the output error. Default:
        :func:`outlier_activations` with 128 tokens.
    seed : int
        Seed of the default weight and activations.
    rows, cols : int, optional
        Initial size (default 64×128, or the whole weight if smaller).
    pattern : str
        The pattern the panel opens with (default ``"Samoyeds"``, 1:2 rows per V = 32 window, so N, M and V
        are live from the start; 2:4 uses none of them).

    Notes
    -----
    Display it as the last expression of a cell (or with ``display(panel)``). ``panel.update(**values)``
    can be called without a front-end; it returns a :class:`SparsityView`.
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        acts: torch.Tensor | None = None,
        *,
        seed: int = 0,
        rows: int | None = None,
        cols: int | None = None,
        pattern: str = "Samoyeds",
    ) -> None:
        check_int("seed", seed)
        self._initial_pattern = check_choice("pattern", pattern, PATTERNS)
        if weight is None:
            gen = torch.Generator().manual_seed(seed)
            weight = 0.02 * torch.randn(256, 512, generator=gen)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or not weight.is_floating_point():
            got = f"{type(weight).__name__} of shape {tuple(weight.shape)}, dtype {weight.dtype}" \
                if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise ValueError(f"weight: expected a 2-D float tensor, got {got}")
        R, C = weight.shape
        if R < 32 or C < 64 or R % 32 or C % 64:
            raise ValueError(f"weight: expected rows a multiple of 32 and cols a multiple of 64, got {R}×{C}")
        _check_finite("weight", weight)
        if acts is None:
            acts = outlier_activations(128, C, seed=seed)
        if not isinstance(acts, torch.Tensor) or acts.ndim != 2 or acts.shape[1] != C:
            got = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
            raise ValueError(f"acts: expected a [tokens, {C}] tensor (the weight's columns), got {got}")
        if not acts.is_floating_point() or acts.shape[0] == 0:
            raise ValueError(f"acts: expected a non-empty [tokens, {C}] float tensor, got shape "
                             f"{tuple(acts.shape)}, dtype {acts.dtype}")
        _check_finite("acts", acts)
        self.weight = weight.detach().float().cpu()
        self.acts = acts.detach().float().cpu()
        self.rows_options = _size_options(R, 32)
        self.cols_options = _size_options(C, 64)
        rows = rows if rows is not None else min(64, R)
        cols = cols if cols is not None else min(128, C)
        if not offered(rows, self.rows_options):
            raise ValueError(f"rows: expected one of {self.rows_options}, got {rows!r}")
        if not offered(cols, self.cols_options):
            raise ValueError(f"cols: expected one of {self.cols_options}, got {cols!r}")
        self._reference_cache: dict[tuple[int, int], dict[str, int]] = {}
        self._busy = False
        self._build_widgets(rows, cols)
        self.last: SparsityView | None = None

    # ------------------------------------------------------------------------------------------ widgets
    def _build_widgets(self, rows: int, cols: int) -> None:
        style = {"description_width": "90px"}
        lay = widgets.Layout(width="300px")
        preset = _PRESETS[self._initial_pattern]
        self.controls: dict[str, widgets.ValueWidget] = {
            "pattern": widgets.Dropdown(options=PATTERNS, value=self._initial_pattern, description="pattern",
                                        style=style, layout=lay),
            "n": widgets.IntSlider(value=preset.get("n", 2), min=_N_RANGE[0], max=_N_RANGE[1],
                                   description="N (keep)", continuous_update=False, style=style, layout=lay),
            "m": widgets.IntSlider(value=preset.get("m", 4), min=_M_RANGE[0], max=_M_RANGE[1], description="M (of)",
                                   continuous_update=False, style=style, layout=lay),
            "vector": widgets.SelectionSlider(options=_VECTORS, value=preset.get("vector", 32), description="V (vector)",
                                              continuous_update=False, style=style, layout=lay),
            "rows": widgets.Dropdown(options=self.rows_options, value=rows, description="rows", style=style,
                                     layout=lay),
            "cols": widgets.Dropdown(options=self.cols_options, value=cols, description="cols", style=style,
                                     layout=lay),
            "method": widgets.ToggleButtons(options=METHODS, value="magnitude", description="pruning",
                                            style={"description_width": "90px", "button_width": "95px"}),
        }
        self.status = widgets.HTML()
        # an explicit template spares each widget the deep copy of plotly's default one
        self.figure_widgets = {name: go.FigureWidget(layout={"template": _TEMPLATE}) for name in _FIGURES}
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        fw = self.figure_widgets
        left = widgets.VBox(list(self.controls.values()), layout=widgets.Layout(min_width="320px"))
        self.widget = widgets.VBox([
            widgets.HBox([left, widgets.VBox([self.status, fw["metadata"]], layout=widgets.Layout(flex="1"))]),
            widgets.HBox([fw["mask"], fw["values"]]),
            widgets.HBox([fw["bytes"], fw["error"]]),
        ])
        self._sync_enabled(self.controls["pattern"].value)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.widget)

    def _sync_enabled(self, pattern: str) -> None:
        for name in ("n", "m", "vector"):
            self.controls[name].disabled = name not in _USES[pattern]

    def _on_change(self, change: dict) -> None:
        if self._busy:
            return
        if change["owner"] is self.controls["pattern"]:
            _set_quietly(self, _PRESETS[change["new"]])
        self.update()

    def values(self) -> dict[str, Any]:
        """The current widget values."""
        return {name: w.value for name, w in self.controls.items()}

    def options(self) -> dict[str, tuple]:
        """Every value each widget can take (what a test sweeps)."""
        return {
            "pattern": PATTERNS,
            "n": tuple(range(_N_RANGE[0], _N_RANGE[1] + 1)),
            "m": tuple(range(_M_RANGE[0], _M_RANGE[1] + 1)),
            "vector": _VECTORS,
            "rows": self.rows_options,
            "cols": self.cols_options,
            "method": METHODS,
        }

    # ------------------------------------------------------------------------------------------ logic
    def update(self, **values: Any) -> SparsityView:
        """Recompute for the given widget values (the rest from the widgets) and refresh the figures.

        Parameters
        ----------
        **values
            Any of ``pattern, n, m, vector, rows, cols, method``; each must be a value its widget offers
            (see :meth:`options`). The widgets are moved to these values.

        Returns
        -------
        SparsityView
            Figures and numbers. Combinations a pattern cannot build (``N >= M``, sizes not divisible, …)
            give a view whose ``message`` says why; they never raise.

        Raises
        ------
        TypeError, ValueError
            For an unknown name or a value no widget offers.
        """
        _check_update_values(values, self.options())
        _set_quietly(self, values)
        settings = self.values()
        self._sync_enabled(settings["pattern"])
        view = self.compute(**settings)
        self._show(view)
        self.last = view
        return view

    def compute(self, pattern: str, n: int, m: int, vector: int, rows: int, cols: int, method: str) -> SparsityView:
        """The pure part of :meth:`update`: build the view for these values without touching widgets.

        Each value must be one its widget offers (see :meth:`options`), as for :meth:`update`.
        """
        t0 = time.perf_counter()
        settings = dict(pattern=pattern, n=n, m=m, vector=vector, rows=rows, cols=cols, method=method)
        _check_update_values(settings, self.options())
        w = self.weight[:rows, :cols]
        acts = self.acts[:, :cols]
        dense_bytes = as_dense(w.half()).nbytes
        reference = self._reference_bytes(rows, cols)
        label, kwargs, problem = _pattern_args(pattern, n, m, vector, rows, cols)
        if problem is None:
            try:
                masks = {meth: prune_mask(w, kwargs["pattern"], method=meth,
                                          acts=acts if meth == "wanda" else None, **kwargs["options"])
                         for meth in METHODS}
                mask = masks[method]
                compressed = _compress(pattern, (w * mask).half(), kwargs)
            except ValueError as exc:  # the library's own check, should _pattern_args miss a case
                problem = str(exc)
        if problem is not None:
            msg = f"{label}: {problem}"
            figs = {name: message_figure(msg, title=title) for name, title in
                    (("mask", "Mask"), ("values", "Kept values"), ("metadata", "Metadata"),
                     ("error", "Reconstruction error"))}
            figs["bytes"] = bytes_bar(reference, dense_bytes)
            return SparsityView(settings, figs, message=msg, summary=msg, nbytes=dict(reference),
                                dense_bytes=dense_bytes, elapsed_s=time.perf_counter() - t0)

        errors = {meth: {"weight": float(reconstruction_error(w, mk)),
                         "output": float(reconstruction_error(w, mk, acts))}
                  for meth, mk in masks.items()}
        selected = f"▶ {label}"
        nbytes = {**reference, selected: compressed.nbytes}
        figs = {
            "mask": mask_heatmap(mask, title=f"Mask · {label} · {method}",
                                 highlight=_word_box(pattern, compressed, kwargs), **_separators(pattern, kwargs)),
            "values": _values_figure(pattern, compressed, kwargs),
            "metadata": _metadata_figure(pattern, compressed, kwargs),
            "bytes": bytes_bar(nbytes, dense_bytes, highlight=selected),
            "error": error_bar(errors, highlight=method,
                               title="Relative error<br><sup>weight ‖W−Ŵ‖/‖W‖ · output ‖XWᵀ−XŴᵀ‖/‖XWᵀ‖</sup>"),
        }
        density = float(mask.float().mean())
        e = errors[method]
        summary = (f"{label}, {method}: density {density:.1%}, {compressed.nbytes:,} bytes = "
                   f"{compressed.nbytes / dense_bytes:.1%} of dense fp16; output error {e['output']:.3f} "
                   f"(magnitude {errors['magnitude']['output']:.3f}, wanda {errors['wanda']['output']:.3f})")
        return SparsityView(settings, figs, summary=summary, mask=mask, compressed=compressed, nbytes=nbytes,
                            dense_bytes=dense_bytes, errors=errors, elapsed_s=time.perf_counter() - t0)

    def _reference_bytes(self, rows: int, cols: int) -> dict[str, int]:
        """Bytes of the usual formats at this size (dense, CSR, 2:4, VENOM, Samoyeds), cached per size."""
        key = (rows, cols)
        if key not in self._reference_cache:
            w = self.weight[:rows, :cols]
            w16 = w.half()
            m24 = prune_mask(w, "2:4")
            vec = min(128, cols)
            v = min(64, rows)
            m_sam = prune_mask(w, "samoyeds", n=1, m=2, vector=vec)
            m_ven = prune_mask(w, "venom", v=v, n=4, m=8)
            m_25 = prune_mask(w, "unstructured", density=0.25)
            self._reference_cache[key] = {
                "dense fp16": as_dense(w16).nbytes,
                "CSR, 50% kept": to_csr(w16 * m24).nbytes,
                "2:4 (50%)": compress_nm(w16 * m24, 2, 4).nbytes,
                "CSR, 25% kept": to_csr(w16 * m_25).nbytes,
                f"VENOM {v}:4:8 (25%)": compress_venom(w16 * m_ven, v=v, n=4, m=8).nbytes,
                f"Samoyeds 1:2 V={vec} (25%)": compress_samoyeds(w16 * m_sam, n=1, m=2, vector=vec).nbytes,
            }
        return self._reference_cache[key]

    def _show(self, view: SparsityView) -> None:
        if view.message:
            self.status.value = (f"<div style='background:#fef3c7;border-left:4px solid #f59e0b;padding:6px 10px'>"
                                 f"⚠️ {html.escape(view.message)}</div>")
        else:
            self.status.value = (f"<div style='padding:6px 10px;color:#111827'>{html.escape(view.summary)} "
                                 f"<span style='color:#6b7280'>({view.elapsed_s * 1000:.0f} ms)</span></div>")
        for name, fig in view.figures.items():
            _copy_into(self.figure_widgets[name], fig, width=_WIDTHS[name])


# ---------------------------------------------------------------------------------------------- helpers
def _pattern_args(pattern: str, n: int, m: int, vector: int, rows: int, cols: int
                  ) -> tuple[str, dict[str, Any], str | None]:
    """(label, prune arguments, problem or None) for one widget setting."""
    if pattern == "2:4":
        return "2:4", {"pattern": "2:4", "options": {}}, None
    if pattern == "N:M":
        label = f"{n}:{m}"
        args = {"pattern": f"{n}:{m}", "options": {}}
        if n >= m:
            return label, args, f"N:M keeps N of every M elements, so N must be smaller than M (got N={n}, M={m})."
        if cols % m:
            return label, args, f"the row length cols={cols} must be a multiple of M={m} (whole groups)."
        return label, args, None
    if pattern == "Samoyeds":
        label = f"Samoyeds {n}:{m} rows, V={vector}"
        args = {"pattern": "samoyeds", "options": {"n": n, "m": m, "vector": vector}}
        if n >= m:
            return label, args, f"keeps N of every M rows per window, so N must be smaller than M (got N={n}, M={m})."
        if rows % m:
            return label, args, f"rows={rows} must be a multiple of M={m} (whole row groups)."
        if cols % vector:
            return label, args, f"cols={cols} must be a multiple of the window V={vector}."
        return label, args, None
    if pattern == "VENOM":
        label = f"VENOM {vector}:{n}:{m}"
        args = {"pattern": "venom", "options": {"v": vector, "n": n, "m": m}}
        if n > m:
            return label, args, f"keeps N of every M columns per block, so N must be at most M (got N={n}, M={m})."
        if rows % vector:
            return label, args, f"rows={rows} must be a multiple of the block height V={vector}."
        if cols % m:
            return label, args, f"cols={cols} must be a multiple of M={m} (whole column blocks)."
        if (cols // m * n) % 4:
            return label, args, (f"the kept columns per row, cols/M·N = {cols}/{m}·{n} = {cols // m * n}, must be "
                                 f"a multiple of 4 so that 2:4 can run over them.")
        return label, args, None
    if pattern == "unstructured":
        label = f"unstructured {n}/{m} kept"
        args = {"pattern": "unstructured", "options": {"density": n / m}}
        if n >= m:
            return label, args, f"keeps the fraction N/M of the weights; N must be smaller than M (got N={n}, M={m})."
        return label, args, None
    raise ValueError(f"pattern: expected one of {PATTERNS}, got {pattern!r}")


def _compress(pattern: str, pruned16: torch.Tensor, args: dict[str, Any]) -> Any:
    o = args["options"]
    if pattern == "2:4":
        return compress_nm(pruned16, 2, 4)
    if pattern == "N:M":
        n, m = (int(v) for v in args["pattern"].split(":"))
        return compress_nm(pruned16, n, m)
    if pattern == "Samoyeds":
        return compress_samoyeds(pruned16, n=o["n"], m=o["m"], vector=o["vector"])
    if pattern == "VENOM":
        return compress_venom(pruned16, v=o["v"], n=o["n"], m=o["m"])
    return to_csr(pruned16)


def _separators(pattern: str, args: dict[str, Any]) -> dict[str, int | None]:
    o = args["options"]
    if pattern == "2:4":
        return {"group_cols": 4}
    if pattern == "N:M":
        return {"group_cols": int(args["pattern"].split(":")[1])}
    if pattern == "Samoyeds":
        return {"group_cols": o["vector"], "group_rows": o["m"]}
    if pattern == "VENOM":
        return {"group_cols": o["m"], "group_rows": o["v"]}
    return {}


def _word_box(pattern: str, c: Any, args: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """Dense rows/cols covered by metadata word 0 of compressed row 0 (outlined on the mask)."""
    rows, cols = c.shape
    if pattern in ("2:4",):
        return (0, 1, 0, min(32, cols))
    if pattern == "Samoyeds" and c.vector >= 32:
        r = int(c.row_index[0, 0])  # compressed row 0, window 0 → this dense row of group 0
        return (r, r + 1, 0, 32)
    if pattern == "VENOM":
        return (0, 1, 0, min(cols, 32 * c.m // c.n))
    return None


def _values_figure(pattern: str, c: Any, args: dict[str, Any]) -> go.Figure:
    if pattern == "unstructured":
        rows = c.shape[0]
        counts = (c.crow_indices[1:] - c.crow_indices[:-1]).tolist()
        width = max(counts) if counts else 0
        ragged = torch.full((rows, max(width, 1)), float("nan"))
        for r in range(rows):
            lo, hi = int(c.crow_indices[r]), int(c.crow_indices[r + 1])
            ragged[r, : hi - lo] = c.values[lo:hi].float()
        return values_heatmap(ragged, title="CSR values, row by row (ragged: each row keeps a different count)")
    n = c.n if pattern == "N:M" else 2
    what = {"2:4": "2:4", "N:M": f"{c.n}:{c.m}", "Samoyeds": "Samoyeds (kept rows glued)",
            "VENOM": "VENOM (kept columns glued)"}[pattern]
    return values_heatmap(c.values, title=f"Stored values · {what}", group_cols=n)


def _metadata_figure(pattern: str, c: Any, args: dict[str, Any]) -> go.Figure:
    if pattern == "unstructured":
        return message_figure(
            "CSR has no per-group metadata: it stores a 32-bit column index for every kept value<br>"
            f"(+ one row pointer per row) — {c.col_indices.numel():,} indices here.",
            title="Metadata")
    if pattern == "N:M" and (c.n, c.m) != (2, 4):
        bits = c.index_bits
        pos = c.positions[0, : min(c.positions.shape[1], 2 * c.n)].view(-1, c.n).tolist()
        return message_figure(
            f"Sparse Tensor Cores read only 2:4 metadata.<br>A {c.n}:{c.m} format stores each kept value's position "
            f"in its group of {c.m} in ceil(log2 {c.m}) = {bits} bit(s).<br>Row 0, first groups: {pos}.",
            title="Metadata")
    if pattern == "VENOM":
        word = int(c.inner.sptc_metadata()[0, 0].item())
        return metadata_word_figure(
            word, col_label="kept col",
            title=f"Word 0x{word:08X} · row 0, 2:4 over the kept columns",
            subtitle=f"+ one column index per kept column of each {c.v}-row block · blue: bits[1:0] first position, "
                     f"amber: bits[3:2] second")
    word = int(c.sptc_metadata()[0, 0].item())
    if pattern == "Samoyeds":
        r = int(c.row_index[0, 0])
        return metadata_word_figure(
            word, title=f"Word 0x{word:08X} · compressed row 0 = dense row {r} in window 0",
            subtitle="+ one row index per window and kept row · blue: bits[1:0] first position, "
                     "amber: bits[3:2] second")
    return metadata_word_figure(word, title=f"Word 0x{word:08X} · row 0, columns 0–31")


def _check_update_values(values: dict, opts: dict) -> None:
    """Reject an ``update(**values)`` argument no widget has, or a value the widget does not offer."""
    for name, value in values.items():
        if name not in opts:
            raise TypeError(f"update: unexpected argument {name!r}; expected some of {list(opts)}")
        if not offered(value, opts[name]):
            raise ValueError(f"{name}: expected one of {opts[name]}, got {value!r}")


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf of {t.numel()}")


def _check_view_fields(view: Any) -> None:
    """The fields every panel view shares: ``settings`` a dict, ``figures`` a dict name -> go.Figure, the
    text fields str (a view is built by the panels; this catches one assembled by hand from the wrong parts)."""
    if not isinstance(view.settings, dict):
        raise TypeError(f"settings: expected a dict of widget values, got {type(view.settings).__name__}")
    if not isinstance(view.figures, dict):
        raise TypeError(f"figures: expected a dict name -> go.Figure, got {type(view.figures).__name__}")
    for k, f in view.figures.items():
        if not isinstance(k, str) or not isinstance(f, go.Figure):
            raise TypeError(f"figures[{k!r}]: expected a go.Figure under a str name, got {type(f).__name__}")
    check_text("summary", view.summary)
    if hasattr(view, "message"):
        check_text("message", view.message, optional=True)
    if hasattr(view, "notes") and (not isinstance(view.notes, list)
                                   or not all(isinstance(n, str) for n in view.notes)):
        raise TypeError(f"notes: expected a list of str, got {type(view.notes).__name__}")


def _set_quietly(panel, values: dict) -> None:
    """Set ``panel.controls[name].value`` for each item without triggering the panel's callbacks
    (they return early while ``panel._busy``)."""
    panel._busy = True
    try:
        for name, value in values.items():
            panel.controls[name].value = value
    finally:
        panel._busy = False


def _copy_into(fw: go.FigureWidget, fig: go.Figure, *, width: int | None = None) -> None:
    """Replace the traces and layout of ``fw`` with those of ``fig`` in one front-end update.

    NOTE: traces are removed and re-added rather than restyled, so no property of the old trace
    (e.g. a heatmap's ``text``) survives on the front-end. A relayout only replaces the layout keys it
    names, so keys the new layout lacks (e.g. a message's ``annotations``) are first set to None.
    """
    keep = {"width"} if width is not None else set()
    stale = set(fw.layout._props) - set(fig.layout._props) - keep  # top-level keys only the old layout has
    with fw.batch_update():
        if stale:
            fw.plotly_relayout({key: None for key in stale})
        fw.data = ()
        fw.add_traces(list(fig.data))
        fw.layout = fig.layout
        if width is not None:
            fw.layout.width = width
