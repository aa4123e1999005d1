"""An ipywidgets panel for Lab 04: tokens in the batch, model shape and GPU profile → each expert's tile rows
(real vs padding) and the modelled time of the layer for dense, 2:4 and Samoyeds.

As in :class:`samoyeds_lab.viz.end_to_end_panel.OffloadBudgetPanel`, :meth:`MoELayerPanel.compute` is pure
(values → :class:`LayerView` with two figures and a summary); the widget callbacks call it and copy the
figures into ``go.FigureWidget``\\ s inside ``batch_update()``. Tests drive every widget over its range.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..bench.roofline import GPU_PROFILES
from ..bench.moe_layer import MOE_SHAPES, TIME_OPS, LayerTime, layer_time, padded_fraction, routing_counts
from .moe_layer import OP_LABELS, expert_time_figure, tile_rows_figure
from .panels import _copy_into

#: Widget labels get the room their text needs ("decode batch", "GPU profile" were cut at the default 80 px).
_LABEL = {"description_width": "105px"}

__all__ = ["MoELayerPanel", "LayerView", "BATCH_OPTIONS"]

#: Tokens per batch offered by the slider: decode batches 1–64, then prefill sizes up to 4096.
BATCH_OPTIONS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass
class LayerView:
    """One :meth:`MoELayerPanel.compute`: ``settings``, tokens per expert (``counts``, ``source``), the
    modelled ``times`` per op, the two figures, a one-line ``summary`` and ``elapsed_s``."""

    settings: dict
    counts: np.ndarray
    source: str
    times: dict[str, LayerTime]
    tiles_figure: go.Figure
    time_figure: go.Figure
    summary: str
    elapsed_s: float


class MoELayerPanel:
    """Batch size, model shape and GPU profile → tile padding per expert and modelled layer time.

    Parameters
    ----------
    trace : RoutingTrace, optional
        Routing of the tiny model (8 experts, top-2): used for shapes with the same ``E`` and ``k``
        (Mixtral, MiniCPM-MoE); other shapes get uniform random routing (said in the summary).
    layer : int
        Layer of ``trace`` to read.
    batch_tokens, shape, profile :
        Initial values (one of :data:`BATCH_OPTIONS`, a key of ``MOE_SHAPES``, one of ``GPU_PROFILES``).
    pad_to : int
        Token tile height (64 in Samoyeds).
    """

    def __init__(self, trace=None, *, layer: int = 0, batch_tokens: int = 16, shape: str = "Mixtral-8x7B",
                 profile: str = "h100_sxm", pad_to: int = 64) -> None:
        if batch_tokens not in BATCH_OPTIONS:
            raise ValueError(f"batch_tokens: expected one of {BATCH_OPTIONS}, got {batch_tokens!r}")
        if shape not in MOE_SHAPES:
            raise ValueError(f"shape: expected one of {tuple(MOE_SHAPES)}, got {shape!r}")
        if profile not in GPU_PROFILES:
            raise ValueError(f"profile: expected one of {GPU_PROFILES}, got {profile!r}")
        if trace is not None:
            if not hasattr(trace, "topk_ids") or not hasattr(trace, "num_layers"):
                raise TypeError(f"trace: expected a RoutingTrace, got {type(trace).__name__}")
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < trace.num_layers:
                raise ValueError(f"layer: expected an int in [0, {trace.num_layers}), got {layer!r}")
        if isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 1:
            raise ValueError(f"pad_to: expected a positive int, got {pad_to!r}")
        self.trace, self.layer, self.pad_to = trace, layer, pad_to
        self.batch = widgets.SelectionSlider(options=list(BATCH_OPTIONS), value=batch_tokens,
                                             description="tokens/batch", continuous_update=False,
                                             style=_LABEL, layout=widgets.Layout(width="420px"))
        self.shape = widgets.Dropdown(options=list(MOE_SHAPES), value=shape, description="model", style=_LABEL)
        self.profile = widgets.Dropdown(options=list(GPU_PROFILES), value=profile, description="GPU profile", style=_LABEL)
        self.status = widgets.HTML()
        view = self.compute(batch_tokens, shape, profile)
        self.tiles = go.FigureWidget(view.tiles_figure)
        self.time = go.FigureWidget(view.time_figure)
        self.view = view
        self.status.value = html.escape(view.summary)
        for w in (self.batch, self.shape, self.profile):
            w.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.batch, self.shape, self.profile]), self.status,
                                    self.tiles, self.time])

    def compute(self, batch_tokens: int, shape: str, profile: str) -> LayerView:
        """Pure: one batch's tokens per expert, tile rows, and every op's modelled layer time."""
        t0 = time.perf_counter()
        if batch_tokens not in BATCH_OPTIONS:
            raise ValueError(f"batch_tokens: expected one of {BATCH_OPTIONS}, got {batch_tokens!r}")
        counts, source = routing_counts(shape, batch_tokens, trace=self.trace, layer=self.layer)
        s = MOE_SHAPES[shape]
        times = {op: layer_time(counts, s, op, profile, num_tokens=batch_tokens) for op in TIME_OPS}
        frac = padded_fraction(counts, self.pad_to)
        tiles = tile_rows_figure(counts, pad_to=self.pad_to, title=(
            f"{shape}, {batch_tokens} token(s) × top-{s.top_k}: {frac:.0%} of {self.pad_to}-row tile rows are "
            f"padding<br><sup>{source}</sup>"))
        fig = expert_time_figure(times)
        d = times["dense"].total_s
        speed = ", ".join(f"{OP_LABELS[op]} {d / times[op].total_s:.2f}×" for op in TIME_OPS[1:] if times[op].total_s)
        busy = counts[counts > 0]
        mem = times["ssmm"].memory_bound[counts > 0]
        summary = (f"{shape} on {profile}, {batch_tokens} token(s): {busy.size}/{counts.size} experts busy, "
                   f"{int(busy.max()) if busy.size else 0} tokens on the busiest; {frac:.0%} tile padding; "
                   f"layer {times['dense'].total_us:.3g} µs dense (model), speed-up {speed}; Samoyeds "
                   f"{'memory' if mem.all() else 'compute' if not mem.any() else 'mixed'}-bound. Routing: {source}.")
        return LayerView(settings={"batch_tokens": batch_tokens, "shape": shape, "profile": profile},
                         counts=counts, source=source, times=times, tiles_figure=tiles, time_figure=fig,
                         summary=summary, elapsed_s=time.perf_counter() - t0)

    def update(self, batch_tokens: int | None = None, shape: str | None = None, profile: str | None = None) -> LayerView:
        """Move the widgets (None = keep), recompute and redraw; returns the view."""
        ws = (self.batch, self.shape, self.profile)
        for w in ws:
            w.unobserve(self._on_change, names="value")
        try:
            if batch_tokens is not None:
                self.batch.value = batch_tokens
            if shape is not None:
                self.shape.value = shape
            if profile is not None:
                self.profile.value = profile
        finally:
            for w in ws:
                w.observe(self._on_change, names="value")
        return self._redraw()

    def _on_change(self, _change: dict) -> None:
        self._redraw()

    def _redraw(self) -> LayerView:
        view = self.compute(self.batch.value, self.shape.value, self.profile.value)
        _copy_into(self.tiles, view.tiles_figure)
        _copy_into(self.time, view.time_figure)
        self.status.value = html.escape(view.summary)
        self.view = view
        return view

    def _ipython_display_(self) -> None:  # pragma: no cover - display glue
        from IPython.display import display

        display(self.widget)
