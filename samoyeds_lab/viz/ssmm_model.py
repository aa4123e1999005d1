"""Pure figure builders for the analytic SSMM launch model (:mod:`samoyeds_lab.bench.ssmm_model`).

Everything drawn is a *prediction* and says so in the title and the legend; no measured number is drawn
here. :func:`model_ratio_figure` plots the predicted speed-up over a dense cuBLAS roofline against tokens
per expert, one line per (config, matrix); :func:`default_model_figure` builds it for today's kernel and the
decode default the model picks per token range.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from ..bench.ssmm_model import MIXTRAL, TODAY, Prediction, choose_defaults, predict
from .palette import CONCEPTS

__all__ = ["PREDICTED", "model_ratio_figure", "default_model_figure"]

#: The label every model trace carries.
PREDICTED = "predicted (model, not a measurement)"
_DASH = ("solid", "dash", "dot", "dashdot")
_SYMBOL = ("circle", "square", "diamond", "triangle-up")


def model_ratio_figure(series: Mapping[str, Sequence[Prediction]], *, targets: Sequence[float] = (2.0,),
                       title: str | None = None) -> go.Figure:
    """Predicted ``dense roofline / predicted time`` against tokens (log x), one line per series.

    Parameters
    ----------
    series : mapping of str to sequence of Prediction
        Legend name → predictions (one per tokens count; sorted by tokens here).
    targets : sequence of float
        Horizontal guide lines (speed-up targets); 1× (dense) is always drawn.
    title : str, optional
    """
    if not isinstance(series, Mapping) or not series:
        raise ValueError(f"series: expected a non-empty mapping of name -> predictions, got {series!r}")
    fig = go.Figure()
    for i, (name, preds) in enumerate(series.items()):
        if not preds or not all(isinstance(p, Prediction) for p in preds):
            raise TypeError(f"series: expected Prediction objects for {name!r}, got {preds!r}")
        preds = sorted(preds, key=lambda p: p.tokens)
        fig.add_trace(go.Scatter(
            x=[p.tokens for p in preds], y=[p.predicted_ratio_vs_dense for p in preds], mode="lines+markers",
            name=f"{name} — {PREDICTED}", line=dict(color=CONCEPTS["samoyeds"], dash=_DASH[i % len(_DASH)]),
            marker=dict(symbol=_SYMBOL[i % len(_SYMBOL)], size=8),
            customdata=[[p.predicted_s * 1e6, p.bound, p.waves, p.bytes_in_flight_per_sm / 1024] for p in preds],
            hovertemplate=("%{x} tokens: %{y:.2f}× dense (predicted)<br>%{customdata[0]:.1f} µs predicted, "
                           "%{customdata[1]}-bound, %{customdata[2]:.2f} waves, %{customdata[3]:.1f} KiB in flight/SM"
                           "<extra></extra>")))
    fig.add_hline(y=1.0, line=dict(color=CONCEPTS["dense"], dash="dot"), annotation_text="dense cuBLAS roofline")
    for t in targets:
        fig.add_hline(y=float(t), line=dict(color="#111827", dash="dash", width=1), annotation_text=f"target {t:g}×")
    fig.update_layout(
        title=dict(text=title or "SSMM launch configs: predicted speed-up over dense<br><sup>model, not a "
                                 "measurement</sup>"),
        xaxis=dict(title=dict(text="tokens per expert (log scale)"), type="log",
                   tickvals=sorted({p.tokens for preds in series.values() for p in preds})),
        yaxis=dict(title=dict(text="predicted × dense cuBLAS roofline"), rangemode="tozero"),
        legend=dict(orientation="h", y=-0.25), height=440, template="plotly_white",
        margin=dict(l=60, r=20, t=80, b=110))
    return fig


def default_model_figure(device: str = "h100_sxm", tokens: Sequence[int] = (1, 8, 16, 64),
                         matrices: Mapping[str, tuple[int, int]] = MIXTRAL) -> go.Figure:
    """Today's ``ssmm.cu`` config against the decode default the model picks for each token range, for
    each of ``matrices`` (default Mixtral w1/w2) on ``device`` (all predicted)."""
    picked = choose_defaults(dev=device)
    series: dict[str, list[Prediction]] = {}
    for mname, (m, k) in matrices.items():
        series[f"today {mname}"] = [predict(TODAY, m, k, t, device) for t in tokens]
        best = []
        for t in tokens:
            rng = next((r for r, ts in _ranges(picked).items() if ts[0] <= t <= ts[1]), None)
            if rng is not None:
                best.append(predict(picked[rng]["config"], m, k, t, device))
        series[f"model's decode default {mname}"] = best
    return model_ratio_figure(series, title=f"SSMM on {device}: today's config vs the model's decode defaults"
                                            "<br><sup>predicted by samoyeds_lab.bench.ssmm_model, not measured"
                                            "</sup>")


def _ranges(picked: Mapping[str, dict]) -> dict[str, tuple[int, int]]:
    out = {}
    for rng in picked:
        lo, hi = rng.split("-")
        out[rng] = (int(lo), int(hi))
    return out
