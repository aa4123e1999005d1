"""Figures for data-aware offloading (Lab 06): predictor quality per layer, hit rate against GPU budget for
every cache policy with the Belady bound, and the latency breakdown of each policy.

Pure functions: each takes numbers (or the results of :mod:`samoyeds_lab.offload.sweep`) and returns a
``go.Figure``; :class:`samoyeds_lab.viz.sida_panel.SiDAPanel` wires them to sliders.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..offload.simulate import OffloadLatency
from ..offload.sweep import BudgetSweep
from .palette import FAMILIES, POLICY_STYLES
from .sparsity import _layout

__all__ = [
    "POLICY_COLORS",
    "POLICY_LABELS",
    "predictor_hit_rate_figure",
    "hit_rate_budget_figure",
    "latency_breakdown_figure",
    "quality_figure",
]

POLICY_COLORS: dict[str, str] = {
    **FAMILIES["policy"],
}
POLICY_LABELS: dict[str, str] = {
    "lru": "LRU",
    "lfu": "LFU",
    "fifo": "FIFO",
    "static": "static hot set (profiled)",
    "sida": "SiDA predictor prefetch",
    "next_layer": "next-layer gate prefetch",
    "belady": "Belady (offline optimum)",
    "frequency": "most frequent experts",
    "next_layer_residual": "next-layer gate on residual",
}
_BREAKDOWN = (("compute", FAMILIES["time"]["compute"], "expert compute (GPU)"),
              ("stall", FAMILIES["time"]["stall"], "demand loads (stall)"),
              ("prefetch_exposed", FAMILIES["time"]["prefetch_exposed"], "prefetch not hidden"))


def _label(p: str) -> str:
    return POLICY_LABELS.get(p, p)


def predictor_hit_rate_figure(metrics: Mapping, domain: str, *, methods: Sequence[str] = ("sida", "next_layer", "frequency")) -> go.Figure:
    """Grouped bars: per-layer top-k hit rate of each predictor on one domain's held-out trace.

    Parameters
    ----------
    metrics : dict
        ``data/sida/metrics.json`` as loaded by :func:`samoyeds_lab.offload.predictor.load_shipped_metrics`.
    domain : str
        A key of ``metrics["domains"]``.
    methods : sequence of str
        Methods to show (keys of ``metrics["domains"][domain]["methods"]``).
    """
    doms = metrics.get("domains", {})
    if domain not in doms:
        raise ValueError(f"domain: expected one of {sorted(doms)}, got {domain!r}")
    entry = doms[domain]["methods"]
    fig = go.Figure()
    for m in methods:
        if m not in entry:
            raise ValueError(f"methods: {m!r} is not in the metrics (have {sorted(entry)})")
        hr = [np.nan if v is None else 100 * v for v in entry[m]["hit_rate"]]
        fig.add_bar(x=[f"layer {i}" for i in range(len(hr))], y=hr, name=_label(m),
                    marker_color=POLICY_COLORS.get(m, "#94a3b8"),
                    text=["—" if np.isnan(v) else f"{v:.0f}%" for v in hr], textposition="outside",
                    hovertemplate="%{x}: %{y:.1f}%<extra>" + _label(m) + "</extra>")
    k = doms[domain].get("k", "k")
    fig.update_layout(_layout(title=dict(text=f"Top-{k} hit rate of each predictor on held-out {domain!r} text"),
                              barmode="group", showlegend=True, height=340,
                              yaxis=dict(title="true experts predicted (%)", range=[0, 110]),
                              legend=dict(orientation="h", y=-0.18)))
    return fig


def hit_rate_budget_figure(sweep: BudgetSweep, *, num_layers: int, num_experts: int,
                           budget: int | None = None, expert_gb: float | None = None) -> go.Figure:
    """Hit rate against GPU budget for every policy; Belady dashed as the demand-paging bound.

    Parameters
    ----------
    sweep : BudgetSweep
        From :func:`samoyeds_lab.offload.sweep.budget_sweep`.
    num_layers, num_experts : int
        For the x-axis label (budget as a share of all experts).
    budget : int, optional
        Marks the currently chosen budget with a vertical line.
    expert_gb : float, optional
        If given, hover text also shows the budget in GB.
    """
    if not isinstance(sweep, BudgetSweep):
        raise TypeError(f"sweep: expected a BudgetSweep, got {type(sweep).__name__}")
    total = num_layers * num_experts
    x = sweep.capacities
    fig = go.Figure()
    for p, hr in sweep.hit_rate.items():
        dash, symbol = POLICY_STYLES.get(p, ("solid", "circle"))
        width = 3 if p in ("sida", "belady") else 2
        extra = "" if expert_gb is None else " (%{customdata:.1f} GB)"
        fig.add_scatter(x=x, y=100 * hr, mode="lines+markers", name=_label(p),
                        line=dict(color=POLICY_COLORS.get(p, "#94a3b8"), dash=dash, width=width),
                        marker=dict(size=7, symbol=symbol), customdata=None if expert_gb is None else x * expert_gb,
                        hovertemplate="budget %{x} experts" + extra + ": %{y:.1f}%<extra>" + _label(p) + "</extra>")
    if budget is not None:
        fig.add_vline(x=budget, line=dict(color="#f59e0b", width=2, dash="dot"))
    fig.update_layout(_layout(
        title=dict(text=f"Expert uses served from GPU memory · batch {sweep.batch_tokens} token(s), "
                        f"{'one cache' if sweep.scope == 'global' else 'a cache per layer'}"),
        showlegend=True, height=380, legend=dict(orientation="h", y=-0.2),
        xaxis=dict(title=f"GPU budget (experts resident, of {total})"),
        yaxis=dict(title="hit rate (%)", range=[0, 102])))
    return fig


def latency_breakdown_figure(latencies: Mapping[str, OffloadLatency], *, title: str = "") -> go.Figure:
    """Stacked bars of modelled time per token for each policy, with the all-resident time as a line.

    Parameters
    ----------
    latencies : dict of str to OffloadLatency
        From :func:`samoyeds_lab.offload.sweep.policy_latencies` (the second item of each value) or
        :func:`samoyeds_lab.offload.simulate.offload_latency`.
    """
    if not latencies:
        raise ValueError("latencies: expected at least one policy, got none")
    names = list(latencies)
    for n, lat in latencies.items():
        if not isinstance(lat, OffloadLatency):
            raise TypeError(f"latencies[{n!r}]: expected an OffloadLatency, got {type(lat).__name__}")
    per = {n: latencies[n].per_token() for n in names}
    fig = go.Figure()
    # NOTE: policy names wrap onto lines instead of being rotated: rotated, they ran into the legend below
    ticks = [textwrap.fill(_label(n), 12).replace("\n", "<br>") for n in names]
    for key, color, label in _BREAKDOWN:
        fig.add_bar(x=ticks, y=[1e3 * per[n][key] for n in names], name=label, marker_color=color,
                    customdata=[_label(n) for n in names],
                    hovertemplate="%{customdata}: %{y:.3g} ms/token<extra>" + label + "</extra>")
    resident = 1e3 * per[names[0]]["all_resident"]
    fig.add_hline(y=resident, line=dict(color="#111827", dash="dash"))
    top = max(sum(1e3 * per[n][k] for k, _, _ in _BREAKDOWN) for n in names)
    fig.add_annotation(xref="paper", x=1, y=resident, yanchor="bottom", xanchor="right", showarrow=False,
                       text=f"all experts resident: {resident:.3g} ms", bgcolor="rgba(255,255,255,0.85)",
                       font=dict(size=11))
    fig.update_layout(_layout(title=dict(text=title or "Modelled time per token by policy"), barmode="stack",
                              margin=dict(l=60, r=20, t=80, b=40),
                              showlegend=True, height=420, legend=dict(orientation="h", y=-0.32),
                              xaxis=dict(tickangle=0),
                              yaxis=dict(title="ms per token (model)", range=[0, 1.08 * max(top, resident)])))
    return fig


def quality_figure(qualities: Sequence[float], hit_rate: Sequence[float], slowdown: Sequence[float], *,
                   trained: tuple[float, float] | None = None) -> go.Figure:
    """Hit rate and modelled slowdown (vs all resident) of SiDA prefetching against predictor quality.

    ``trained`` marks the shipped predictor's measured (hit rate, slowdown).
    """
    q = np.asarray(qualities, dtype=float)
    if q.ndim != 1 or q.size == 0 or len(hit_rate) != q.size or len(slowdown) != q.size:
        raise ValueError("qualities, hit_rate, slowdown: expected 1-D sequences of the same non-zero length")
    fig = go.Figure()
    fig.add_scatter(x=100 * q, y=100 * np.asarray(hit_rate, float), mode="lines+markers", name="cache hit rate",
                    line=dict(color=POLICY_COLORS["sida"]), hovertemplate="quality %{x:.0f}%: hit %{y:.1f}%<extra></extra>")
    fig.add_scatter(x=100 * q, y=np.asarray(slowdown, float), mode="lines+markers", name="slowdown vs all resident",
                    yaxis="y2", line=dict(color="#dc2626", dash="dot"),
                    hovertemplate="quality %{x:.0f}%: %{y:.2f}×<extra></extra>")
    if trained is not None:
        fig.add_scatter(x=[None], y=[None], mode="markers", showlegend=False)
        fig.add_hline(y=100 * trained[0], line=dict(color=POLICY_COLORS["sida"], dash="dash", width=1),
                      annotation_text=f"trained predictor: {100 * trained[0]:.1f}% hits", annotation_position="bottom right")
    fig.update_layout(_layout(title=dict(text="How good must the predictor be? (prefetch = SiDA)"), showlegend=True,
                              height=360, legend=dict(orientation="h", y=-0.25),
                              xaxis=dict(title="predictor quality: share of true experts predicted (%)"),
                              yaxis=dict(title="hit rate (%)", range=[0, 102]),
                              yaxis2=dict(title="slowdown (×)", overlaying="y", side="right", showgrid=False)))
    return fig
