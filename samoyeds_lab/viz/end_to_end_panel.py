"""An ipywidgets panel for Lab 08: move the offloaded way's GPU budget and decode batch, see every policy's
modelled time per token and which one wins.

As in :class:`samoyeds_lab.viz.routing_panel.RoutingPanel`, :meth:`OffloadBudgetPanel.compute` is pure
(values → :class:`BudgetView` with a figure and the sweep); :meth:`OffloadBudgetPanel.update` moves the
widgets, calls it and copies the figure into a ``go.FigureWidget`` inside ``batch_update()``. Results are
cached per (budget, batch), so moving back is instant. Tests drive every widget over its range.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any, Mapping

import ipywidgets as widgets
import plotly.graph_objects as go

from ..bench.end_to_end import BOUND_POLICY, OffloadChoice, offload_policy_sweep
from .end_to_end import offload_policy_figure
from .panels import _copy_into

#: Widget labels get the room their text needs ("decode batch", "GPU profile" were cut at the default 80 px).
_LABEL = {"description_width": "105px"}

__all__ = ["OffloadBudgetPanel", "BudgetView", "BATCH_OPTIONS"]

#: Tokens per decode step offered by the panel.
BATCH_OPTIONS = (1, 4, 16, 64)


@dataclass
class BudgetView:
    """One :meth:`OffloadBudgetPanel.compute`: ``settings`` (capacity, batch), the ``choice`` (every
    policy's result and the best), its ``figure``, a one-line ``summary`` and ``elapsed_s``."""

    settings: dict
    choice: OffloadChoice
    figure: go.Figure
    summary: str
    elapsed_s: float


class OffloadBudgetPanel:
    """GPU budget (experts resident) and decode batch → modelled offload time of every policy.

    Parameters
    ----------
    replay : dict
        ``EndToEndResult.replay`` of :func:`samoyeds_lab.bench.end_to_end.serve_three_ways`.
    capacity : int, optional
        Initial budget (default: the replay's own, i.e. the lab's result).
    batch_tokens : int
        Initial tokens per step, one of :data:`BATCH_OPTIONS`.
    """

    def __init__(self, replay: Mapping[str, Any], *, capacity: int | None = None, batch_tokens: int = 1) -> None:
        keys = ("traces", "predictions", "popularity", "num_experts")
        if not isinstance(replay, Mapping) or any(k not in replay for k in keys):
            raise ValueError(f"replay: expected EndToEndResult.replay (keys {keys}), got {type(replay).__name__}")
        self.replay = dict(replay)
        first = next(iter(self.replay["traces"].values()))
        self.num_slots = int(first.shape[0]) * int(self.replay["num_experts"])
        if capacity is None:
            capacity = max(1, self.num_slots // 4)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= self.num_slots:
            raise ValueError(f"capacity: expected an int in [1, {self.num_slots}], got {capacity!r}")
        if batch_tokens not in BATCH_OPTIONS:
            raise ValueError(f"batch_tokens: expected one of {BATCH_OPTIONS}, got {batch_tokens!r}")
        self._cache: dict[tuple[int, int], OffloadChoice] = {}
        self.capacity = widgets.IntSlider(value=capacity, min=1, max=self.num_slots, step=1,
                                          description="GPU experts", continuous_update=False,
                                          style=_LABEL, layout=widgets.Layout(width="420px"))
        self.batch = widgets.Dropdown(options=[(f"{b} token{'s' if b > 1 else ''}/step", b) for b in BATCH_OPTIONS],
                                      value=batch_tokens, description="decode batch", style=_LABEL)
        self.status = widgets.HTML()
        view = self.compute(capacity, batch_tokens)
        self.figure = go.FigureWidget(view.figure)
        self.view = view
        self.status.value = html.escape(view.summary)
        self.capacity.observe(self._on_change, names="value")
        self.batch.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.capacity, self.batch]), self.status, self.figure])

    def compute(self, capacity: int, batch_tokens: int) -> BudgetView:
        """Pure: the policy sweep at ``capacity`` experts and ``batch_tokens`` tokens per step, and its figure."""
        t0 = time.perf_counter()
        key = (int(capacity), int(batch_tokens))
        if key not in self._cache:
            r = self.replay
            self._cache[key] = offload_policy_sweep(
                r["traces"], r["num_experts"], capacity=key[0], predictions=r["predictions"],
                popularity=r["popularity"], scope=r.get("scope", "global"), batch_tokens=key[1],
                shape=r.get("shape", "Mixtral-8x7B"), profile=r.get("profile", "h100_sxm"), link=r.get("link"))
        c = self._cache[key]
        fig = offload_policy_figure(c, shape=str(self.replay.get("shape", "Mixtral-8x7B")))
        best, bound = c.policies[c.best], c.policies[BOUND_POLICY] if BOUND_POLICY in c.policies else None
        summary = (f"{key[0]}/{self.num_slots} experts on the GPU, {key[1]} token(s)/step: best {c.best} "
                   f"{best.ms_per_token:.3g} ms/token (hit rate {best.hit_rate:.0%}, {best.slowdown:.1f}× the "
                   f"all-resident time)" + (f"; Belady bound {bound.ms_per_token:.3g} ms" if bound else ""))
        return BudgetView(settings={"capacity": key[0], "batch_tokens": key[1]}, choice=c, figure=fig,
                          summary=summary, elapsed_s=time.perf_counter() - t0)

    def update(self, capacity: int | None = None, batch_tokens: int | None = None) -> BudgetView:
        """Move the widgets (None = keep), recompute and redraw; returns the view."""
        if capacity is not None or batch_tokens is not None:
            self.capacity.unobserve(self._on_change, names="value")
            self.batch.unobserve(self._on_change, names="value")
            try:
                if capacity is not None:
                    self.capacity.value = capacity
                if batch_tokens is not None:
                    self.batch.value = batch_tokens
            finally:
                self.capacity.observe(self._on_change, names="value")
                self.batch.observe(self._on_change, names="value")
        return self._redraw()

    def _on_change(self, _change: dict) -> None:
        self._redraw()

    def _redraw(self) -> BudgetView:
        view = self.compute(self.capacity.value, self.batch.value)
        _copy_into(self.figure, view.figure)
        self.status.value = html.escape(view.summary)
        self.view = view
        return view

    def _ipython_display_(self) -> None:  # pragma: no cover - display glue
        from IPython.display import display

        display(self.widget)
