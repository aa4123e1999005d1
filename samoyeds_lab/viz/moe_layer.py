"""Figures for Lab 04 (the MoE layer on sparse kernels): token dispatch into padded tiles, what each backend
moves and computes, measured CPU times, tile padding per expert and the modelled layer time on a GPU profile.

Every builder is pure: plain data or results of :mod:`samoyeds_lab.bench.moe_layer` in, a new ``go.Figure`` out.
Every number keeps its provenance in the figure: *measured, N-core CPU, DATE* (the CPU kernels, not Sparse
Tensor Cores) or *model* (roofline ceilings on a datasheet GPU profile, not a measurement).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..formats import SENTINEL, TokenSelection
from ..bench.moe_layer import COST_BACKENDS, TIME_OPS, LayerCost, LayerTime, tile_rows
from .kernels import CPU_LABEL, MODEL_LABEL
from .palette import CATEGORICAL, CONCEPTS
from .sparsity import COLORS, _layout

__all__ = ["MOE_COLORS", "BACKEND_LABELS", "OP_LABELS", "dispatch_figure", "backend_costs_figure",
           "cpu_time_figure", "tile_rows_figure", "padding_by_model_figure", "layer_time_figure",
           "expert_time_figure"]

#: One colour per backend / op / cost part.
MOE_COLORS: dict[str, str] = {
    "dense": CONCEPTS["dense"],
    "grouped": "#374151",
    "samoyeds": COLORS["samoyeds"],
    "spmm": CONCEPTS["2:4"],
    "ssmm": COLORS["samoyeds"],
    "real": "#1d4ed8",
    "padding": "#fca5a5",
    "outside": "#f8fafc",
    "weight": "#1f2937",
    "activation": "#1d4ed8",
    "intermediate": "#f59e0b",
    "index": "#dc2626",
    "useful": "#0f766e",
    "executed": "#ca8a04",
    "decode": "#eff6ff",
    "prefill": "#fef3c7",
}
#: Legend labels of the block backends and of the roofline ops.
BACKEND_LABELS = {"dense": "dense (HF per-expert loop)", "grouped": "grouped (one sorted dispatch)",
                  "samoyeds": "Samoyeds (compressed weights, SSMM)"}
OP_LABELS = {"dense": "dense", "spmm": "2:4 (mma.sp)", "ssmm": "Samoyeds 1:2 rows + 2:4"}
_SHORT = {"dense": "dense (HF loop)", "grouped": "grouped", "samoyeds": "Samoyeds"}


def _check_int(name: str, v: object, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------------------------- dispatch
def dispatch_figure(selection: TokenSelection, labels: Sequence[str] | None = None, *,
                    title: str | None = None) -> go.Figure:
    """Each expert's padded token list as one row of tile slots: real tokens (with their byte), SENTINEL padding.

    Parameters
    ----------
    selection : TokenSelection
        From :meth:`TokenSelection.from_topk` (any ``pad_to``).
    labels : sequence of str, optional
        A label per token id (e.g. ``byte_labels``); default the token id.
    title : str, optional
    """
    if not isinstance(selection, TokenSelection):
        raise TypeError(f"selection: expected a TokenSelection, got {type(selection).__name__}")
    T, E = selection.num_tokens, selection.num_experts
    if labels is not None:
        labels = list(labels)
        if len(labels) != T:
            raise ValueError(f"labels: expected {T} labels (one per token), got {len(labels)}")
    po = selection.padded_offsets.tolist()
    width = max(1, max(po[e + 1] - po[e] for e in range(E)))
    z = np.full((E, width), np.nan)
    text = [[""] * width for _ in range(E)]
    hover = [[""] * width for _ in range(E)]
    for e in range(E):
        seg = selection.padded_token_ids[po[e]: po[e + 1]].tolist()
        for i, t in enumerate(seg):
            if t == SENTINEL:
                z[e, i] = 0.0
                hover[e][i] = f"expert {e}, slot {i}: padding (SENTINEL)"
            else:
                z[e, i] = 1.0
                lab = str(t) if labels is None else labels[t]
                text[e][i] = lab
                hover[e][i] = f"expert {e}, slot {i}: token {t} {lab!r}"
    counts = selection.counts.tolist()
    ylabels = [f"e{e}: {counts[e]} → {po[e + 1] - po[e]}" for e in range(E)]
    trace = go.Heatmap(z=z, x=list(range(width)), y=ylabels, text=text, texttemplate="%{text}",
                       customdata=hover, hovertemplate="%{customdata}<extra></extra>", zmin=0, zmax=1,
                       showscale=False, xgap=1, ygap=2,
                       colorscale=[[0.0, MOE_COLORS["padding"]], [0.5, MOE_COLORS["padding"]],
                                   [0.5, MOE_COLORS["real"]], [1.0, MOE_COLORS["real"]]],
                       textfont=dict(color="#ffffff", size=9))
    real = int(selection.counts.sum())
    total = int(po[-1])
    t = title or (f"Token dispatch: {T} tokens × top-{selection.top_k} → {real} rows in tiles of "
                  f"{selection.pad_to}, {total - real} padding rows ({(total - real) / max(total, 1):.0%})")
    return go.Figure(trace, layout=_layout(
        title=dict(text=t), height=120 + 26 * E,
        xaxis=dict(title=dict(text="slot in the expert's padded token list (blue: a token, red: SENTINEL)"),
                   showgrid=False, zeroline=False),
        yaxis=dict(title=dict(text="expert: tokens → rows"), autorange="reversed", showgrid=False)))


# ---------------------------------------------------------------------------------------------- costs
def backend_costs_figure(costs: Mapping[str, LayerCost], *, title: str = "") -> go.Figure:
    """Bytes (stacked by kind) and FLOPs (useful vs executed) of one layer for every backend of ``costs``."""
    if not isinstance(costs, Mapping) or not costs or not all(isinstance(v, LayerCost) for v in costs.values()):
        raise TypeError("costs: expected a non-empty {backend: LayerCost} mapping (moe.anatomy.layer_costs)")
    names = [b for b in COST_BACKENDS if b in costs] + [b for b in costs if b not in COST_BACKENDS]
    x = [_SHORT.get(b, b) for b in names]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("HBM bytes per layer (MB)", "GFLOP per layer"),
                        horizontal_spacing=0.14)
    for part in ("weight", "activation", "intermediate", "index"):
        vals = [getattr(costs[b], f"{part}_bytes") / 1e6 for b in names]
        fig.add_bar(x=x, y=vals, name=f"{part} bytes", marker_color=MOE_COLORS[part], row=1, col=1,
                    hovertemplate=f"{part}: %{{y:.4g}} MB<extra></extra>")
    pos = list(range(len(names)))
    fig.add_bar(x=[i - 0.2 for i in pos], y=[costs[b].flops / 1e9 for b in names], width=0.38,
                name="useful FLOP (dense-equivalent)", marker_color=MOE_COLORS["useful"], row=1, col=2,
                hovertemplate="useful: %{y:.4g} GFLOP<extra></extra>")
    fig.add_bar(x=[i + 0.2 for i in pos], y=[costs[b].executed_flops / 1e9 for b in names], width=0.38,
                name="executed FLOP (kept weights × tile rows)", marker_color=MOE_COLORS["executed"], row=1, col=2,
                text=[f"{costs[b].launches} launches" for b in names], textposition="outside",
                hovertemplate="executed: %{y:.4g} GFLOP<extra></extra>")
    fig.update_layout(_layout(title=dict(text=title or "What one MoE layer moves and computes (a model)"),
                              barmode="stack", showlegend=True, height=440, legend=dict(orientation="h", y=-0.15)))
    fig.update_xaxes(tickvals=pos, ticktext=x, row=1, col=2)
    return fig


def cpu_time_figure(times_s: Mapping[str, float], *, tokens: int, title: str = "", machine: str | None = None,
                    date: str | None = None, samoyeds_path: str = "") -> go.Figure:
    """Measured wall time of one block forward per backend (ms), labelled with the machine and date.

    ``machine`` defaults to ``"N-core CPU"`` of this machine, ``date`` to today (UTC); ``samoyeds_path``
    says what the ``samoyeds`` backend ran (e.g. ``"CPU kernels (avx512)"``).
    """
    if not isinstance(times_s, Mapping) or not times_s:
        raise TypeError("times_s: expected a non-empty {backend: seconds} mapping")
    for k, v in times_s.items():
        if not isinstance(v, (int, float)) or not v > 0 or math.isinf(v):
            raise ValueError(f"times_s[{k!r}]: expected a positive number of seconds, got {v!r}")
    tokens = _check_int("tokens", tokens)
    machine = machine or f"{os.cpu_count()}-core CPU"
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    names = list(times_s)
    ms = [times_s[b] * 1e3 for b in names]
    labels = [BACKEND_LABELS.get(b, b) + (f"<br>{samoyeds_path}" if b == "samoyeds" and samoyeds_path else "")
              for b in names]
    fig = go.Figure(go.Bar(x=ms, y=labels, orientation="h",
                           marker_color=[MOE_COLORS.get(b, COLORS["other"]) for b in names],
                           text=[f"{v:.3g} ms" for v in ms], textposition="outside",
                           hovertemplate="%{y}: %{x:.4g} ms<extra></extra>"))
    fig.update_layout(_layout(
        title=dict(text=title or f"One MoE block, {tokens} tokens: measured, {machine}, {date}"
                                 f"<br><sup>{CPU_LABEL} · median wall time</sup>"),
        height=280, margin=dict(l=250, r=60, t=70, b=40),
        xaxis=dict(title=dict(text="median wall time per forward (ms)")),
        yaxis=dict(autorange="reversed")))
    return fig


# ---------------------------------------------------------------------------------------------- padding
def tile_rows_figure(counts, *, pad_to: int = 64, title: str = "", expert_labels: Sequence[str] | None = None
                     ) -> go.Figure:
    """Per expert, real token rows and padding rows of its ``pad_to``-row tiles (stacked bars)."""
    real, pad = tile_rows(counts, pad_to)
    E = real.size
    names = list(expert_labels) if expert_labels is not None else [f"e{e}" for e in range(E)]
    if len(names) != E:
        raise ValueError(f"expert_labels: expected {E} labels, got {len(names)}")
    total = int(real.sum() + pad.sum())
    frac = pad.sum() / total if total else 0.0
    fig = go.Figure()
    fig.add_bar(x=names, y=real, name="real token rows", marker_color=MOE_COLORS["real"],
                hovertemplate="%{x}: %{y} tokens<extra></extra>")
    fig.add_bar(x=names, y=pad, name=f"padding rows (to a multiple of {pad_to})", marker_color=MOE_COLORS["padding"],
                hovertemplate="%{x}: %{y} padding rows<extra></extra>")
    idle = int((real == 0).sum())
    t = title or (f"{int(real.sum())} routed rows → {total} tile rows: {frac:.0%} padding, {idle} of {E} "
                  f"experts idle")
    fig.update_layout(_layout(title=dict(text=t), barmode="stack", showlegend=True, height=340,
                              legend=dict(orientation="h", y=-0.3),
                              xaxis=dict(title=dict(text="expert"), type="category"),
                              yaxis=dict(title=dict(text="token rows"))))
    return fig


def padding_by_model_figure(batch_tokens: Sequence[int], fractions: Mapping[str, Sequence[float]], *,
                            pad_to: int = 64, title: str = "") -> go.Figure:
    """Share of tile rows that are padding vs tokens per batch, one line per model/routing (log x)."""
    b = [_check_int("batch_tokens", v) for v in batch_tokens]
    if not b:
        raise ValueError("batch_tokens: expected at least one batch size")
    if not isinstance(fractions, Mapping) or not fractions:
        raise TypeError("fractions: expected a non-empty {label: [fraction per batch size]} mapping")
    fig = go.Figure()
    palette = CATEGORICAL
    for i, (label, fr) in enumerate(fractions.items()):
        fr = [float(v) for v in fr]
        if len(fr) != len(b) or any(not 0 <= v <= 1 for v in fr):
            raise ValueError(f"fractions[{label!r}]: expected {len(b)} values in [0, 1], got {fr}")
        fig.add_scatter(x=b, y=fr, mode="lines+markers", name=label, line=dict(color=palette[i % len(palette)]),
                        hovertemplate=f"{label}<br>%{{x}} tokens: %{{y:.1%}} padding<extra></extra>")
    fig.add_vrect(x0=min(b), x1=64, fillcolor=MOE_COLORS["decode"], line_width=0, layer="below",
                  annotation_text="decode batches", annotation_position="top left")
    fig.update_layout(_layout(title=dict(text=title or f"Padding of {pad_to}-row token tiles vs batch size"),
                              showlegend=True, height=380, legend=dict(orientation="h", y=-0.3),
                              xaxis=dict(title=dict(text="tokens in the batch"), type="log"),
                              yaxis=dict(title=dict(text="share of tile rows that are padding"), tickformat=".0%",
                                         range=[0, 1.02])))
    return fig


# ---------------------------------------------------------------------------------------------- time
def layer_time_figure(sweep: Mapping, *, title: str = "", decode_max: int = 64) -> go.Figure:
    """Modelled layer time vs tokens per batch for every op, and the speed-up over dense (two panels).

    ``sweep`` is :func:`samoyeds_lab.bench.moe_layer.layer_time_sweep`'s dict. Batches up to ``decode_max``
    are shaded as decode.
    """
    if not isinstance(sweep, Mapping) or "batch_tokens" not in sweep:
        raise TypeError("sweep: expected the dict of moe.anatomy.layer_time_sweep")
    b = list(sweep["batch_tokens"])
    ops = [op for op in TIME_OPS if op in sweep]
    if not ops:
        raise ValueError(f"sweep: expected at least one of {TIME_OPS}")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("layer time (µs, log)", "speed-up over dense"))
    dense = [t.total_s for t in sweep["dense"]] if "dense" in sweep else None
    for op in ops:
        us = [t.total_us for t in sweep[op]]
        fig.add_scatter(x=b, y=us, mode="lines+markers", name=OP_LABELS[op], line=dict(color=MOE_COLORS[op]),
                        row=1, col=1, hovertemplate=f"{OP_LABELS[op]}<br>%{{x}} tokens: %{{y:.4g}} µs<extra></extra>")
        if dense is not None and op != "dense":
            fig.add_scatter(x=b, y=[d / t.total_s if t.total_s else float("nan") for d, t in zip(dense, sweep[op])],
                            mode="lines+markers", name=OP_LABELS[op], line=dict(color=MOE_COLORS[op], dash="dot"),
                            showlegend=False, row=1, col=2,
                            hovertemplate=f"{OP_LABELS[op]}<br>%{{x}} tokens: %{{y:.2f}}×<extra></extra>")
    for col in (1, 2):
        fig.add_vrect(x0=min(b), x1=min(decode_max, max(b)), fillcolor=MOE_COLORS["decode"], line_width=0,
                      layer="below", row=1, col=col)
    shape = sweep.get("shape", "")
    prof = sweep.get("profile", "")
    fig.update_layout(_layout(
        title=dict(text=title or f"{shape} MoE layer on {prof}<br><sup>{MODEL_LABEL}</sup>"), showlegend=True, height=420,
        legend=dict(orientation="h", y=-0.25)))
    fig.update_xaxes(type="log", title_text="tokens in the batch (shaded: decode)")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    return fig


def expert_time_figure(times: Mapping[str, LayerTime], *, title: str = "") -> go.Figure:
    """Modelled time of every expert (grouped bars per op) for one batch, shared expert as its own group."""
    if not isinstance(times, Mapping) or not times or not all(isinstance(v, LayerTime) for v in times.values()):
        raise TypeError("times: expected a non-empty {op: LayerTime} mapping (moe.anatomy.layer_time)")
    first = next(iter(times.values()))
    E = first.counts.size
    names = [f"e{e} ({n})" for e, n in enumerate(first.counts.tolist())]
    has_shared = any(t.shared_s for t in times.values())
    if has_shared:
        names = names + ["shared"]
    if E > 16:  # NOTE: 64 bars per op are unreadable; show the busy experts in descending load
        order = np.argsort(-first.counts, kind="stable")[:16]
    else:
        order = np.arange(E)
    x = [names[i] for i in order] + (["shared"] if has_shared else [])
    fig = go.Figure()
    for op, t in times.items():
        y = [t.per_expert_s[i] * 1e6 for i in order] + ([t.shared_s * 1e6] if has_shared else [])
        fig.add_bar(x=x, y=y, name=f"{OP_LABELS.get(op, op)}: layer {t.total_us:.4g} µs",
                    marker_color=MOE_COLORS.get(op, COLORS["other"]),
                    hovertemplate=f"{OP_LABELS.get(op, op)}<br>%{{x}}: %{{y:.4g}} µs<extra></extra>")
    sub = "" if E <= 16 else f" (16 busiest of {E} experts)"
    fig.update_layout(_layout(
        title=dict(text=title or f"Per-expert time{sub}, {first.shape} on {first.profile}<br><sup>{MODEL_LABEL}</sup>"),
        barmode="group", showlegend=True, height=360, legend=dict(orientation="h", y=-0.3),
        xaxis=dict(title=dict(text="expert (its tokens)"), type="category"),
        yaxis=dict(title=dict(text="µs"))))
    return fig
