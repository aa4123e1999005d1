"""Pure figure builders for MoNDE near-data experts: tokens per expert with the placement, placement grids,
per-policy layer times, the "move the weights" vs "move the activations" crossover, measured vs modelled.

Every function takes plain data (NumPy arrays, sequences, mappings of numbers) and returns a new
``plotly.graph_objects.Figure``; :class:`samoyeds_lab.viz.monde_panel.MoNDEPanel` copies them into widgets.
Times are given in seconds and drawn in milliseconds.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ._axes import log_axis, positive_range
from .palette import CATEGORICAL, FAMILIES
from .sparsity import COLORS, _layout

__all__ = [
    "placement_checks_figure",
    "MONDE_COLORS",
    "PROFILE_COLORS",
    "crossover_figure",
    "hybrid_figure",
    "placement_grid_figure",
    "policy_times_figure",
    "tokens_placement_figure",
]

#: Colours: experts on the GPU / near data, and one per placement policy.
MONDE_COLORS: dict[str, str] = {
    **FAMILIES["placement"], "model": FAMILIES["provenance"]["model"], "measured": FAMILIES["provenance"]["measured"],
}
#: Colours cycled over hardware profiles in the crossover chart.
PROFILE_COLORS: tuple[str, ...] = CATEGORICAL[:8]


_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")

def _vec(name: str, v, *, n: int | None = None, dtype=np.float64) -> np.ndarray:
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().numpy()
    try:
        a = np.asarray(v, dtype=dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a 1-D array of numbers, got {type(v).__name__}") from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {a.shape}")
    if n is not None and a.size != n:
        raise ValueError(f"{name}: expected {n} entries, got {a.size}")
    return a


def _mat(name: str, v, dtype=np.float64) -> np.ndarray:
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().numpy()
    a = np.asarray(v, dtype=dtype)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array [layers, experts], got shape {a.shape}")
    return a


def _names(name: str, given, n: int, default: str) -> list[str]:
    if given is None:
        return [f"{default} {i}" for i in range(n)]
    if isinstance(given, str) or len(given) != n or not all(isinstance(s, str) for s in given):
        raise ValueError(f"{name}: expected {n} strings, got {given!r}")
    return list(given)


def tokens_placement_figure(counts, on_gpu, *, threshold: float | None = None, layer_name: str = "layer",
                            title: str | None = None) -> go.Figure:
    """Tokens each expert receives in one batch, bars coloured by where the placement runs it.

    Parameters
    ----------
    counts : array-like, shape (E,)
        Tokens per expert.
    on_gpu : array-like of bool, shape (E,)
        The placement (True = GPU, weights moved; False = near data, activations moved).
    threshold : float, optional
        The crossover token count, drawn as a dashed line (``inf``/None: not drawn).
    """
    c = _vec("counts", counts)
    m = _vec("on_gpu", on_gpu, n=c.size, dtype=bool)
    x = [f"e{e}" for e in range(c.size)]
    colors = [MONDE_COLORS["gpu"] if g else MONDE_COLORS["near"] for g in m]
    hover = [f"expert {e}: {int(v)} tokens → {'GPU (move weights)' if g else 'near data (move activations)'}"
             for e, (v, g) in enumerate(zip(c, m))]
    fig = go.Figure(go.Bar(x=x, y=c, marker=dict(color=colors), hovertext=hover, hoverinfo="text", showlegend=False),
                    layout=_layout(title=dict(text=title or f"Tokens per expert, {layer_name}: "
                                              f"<span style='color:{MONDE_COLORS['gpu']}'>GPU</span> / "
                                              f"<span style='color:{MONDE_COLORS['near']}'>near data</span>"),
                                   xaxis=dict(title=dict(text="expert")),
                                   yaxis=dict(title=dict(text="tokens in the batch"), rangemode="tozero")))
    if threshold is not None and math.isfinite(threshold):
        fig.add_hline(y=float(threshold), line=dict(color=COLORS["highlight"], dash="dash", width=2),
                      annotation_text=f"crossover {threshold:g} tokens", annotation_position="top left")
    return fig


def placement_grid_figure(counts, masks, *, layer_names: Sequence[str] | None = None,
                          highlight_layer: int | None = None, title: str = "Placement per layer") -> go.Figure:
    """Layers × experts: red = GPU, blue = near data, grey = idle; the cell text is the token count."""
    c = _mat("counts", counts)
    m = _mat("masks", masks, dtype=bool)
    if m.shape != c.shape:
        raise ValueError(f"masks: expected shape {c.shape} like counts, got {m.shape}")
    L, E = c.shape
    names = _names("layer_names", layer_names, L, "layer")
    z = np.where(c == 0, 0.5, np.where(m, 1.0, 0.0))
    scale = [[0.0, MONDE_COLORS["near"]], [0.45, MONDE_COLORS["near"]], [0.46, "#e5e7eb"], [0.55, "#e5e7eb"],
             [0.56, MONDE_COLORS["gpu"]], [1.0, MONDE_COLORS["gpu"]]]
    text = [[f"{int(v)}" for v in row] for row in c]
    fig = go.Figure(go.Heatmap(z=z, x=[f"e{e}" for e in range(E)], y=names, zmin=0, zmax=1, colorscale=scale,
                               showscale=False, text=text, texttemplate="%{text}", hoverinfo="text", xgap=2, ygap=2),
                    layout=_layout(title=dict(text=title), height=120 + 40 * L,
                                   xaxis=dict(title=dict(text="expert (cell: tokens)")),
                                   yaxis=dict(autorange="reversed")))
    if highlight_layer is not None:
        if not isinstance(highlight_layer, int) or not 0 <= highlight_layer < L:
            raise ValueError(f"highlight_layer: expected an int in [0, {L}), got {highlight_layer!r}")
        fig.add_shape(type="rect", x0=-0.5, x1=E - 0.5, y0=highlight_layer - 0.5, y1=highlight_layer + 0.5,
                      line=dict(color=COLORS["highlight"], width=3))
    return fig


def policy_times_figure(times: Mapping[str, Sequence[float]], *, layer_names: Sequence[str] | None = None,
                        title: str = "Predicted layer time per policy") -> go.Figure:
    """Grouped bars: for each layer, the predicted time (ms) of every policy in ``times`` (seconds)."""
    if not isinstance(times, Mapping) or not times:
        raise ValueError(f"times: expected a non-empty mapping policy -> per-layer seconds, got {times!r}")
    arrays = {k: _vec(f"times[{k!r}]", v) for k, v in times.items()}
    L = next(iter(arrays.values())).size
    for k, a in arrays.items():
        if a.size != L:
            raise ValueError(f"times[{k!r}]: expected {L} layers like the first entry, got {a.size}")
    names = _names("layer_names", layer_names, L, "layer")
    bars = [go.Bar(name=k, x=names, y=a * 1e3, marker=dict(color=MONDE_COLORS.get(k, COLORS["other"])),
                   hovertemplate=f"{k}: %{{y:.3g}} ms<extra></extra>") for k, a in arrays.items()]
    return go.Figure(bars, layout=_layout(title=dict(text=title), barmode="group", showlegend=True,
                                          legend=dict(orientation="h", y=-0.25),
                                          margin=dict(l=60, r=20, t=80 if "<br>" in title else 60, b=40),
                                          yaxis=dict(title=dict(text="ms per layer"), rangemode="tozero")))


def crossover_figure(n_tokens, curves: Mapping[str, tuple], *, crossovers: Mapping[str, int | None] | None = None,
                     title: str = "Move the weights vs move the activations") -> go.Figure:
    """Per-expert time vs tokens for each system: solid = GPU path (weights move), dashed = near data.

    Parameters
    ----------
    n_tokens : array-like, shape (N,)
        Token counts (x axis, log scale).
    curves : mapping name → (gpu_seconds, near_seconds)
        Two arrays of shape (N,) per system (profile pair, or "measured here").
    crossovers : mapping name → int or None, optional
        The crossover token count per system, marked with a diamond on its GPU curve.
    """
    n = _vec("n_tokens", n_tokens)
    if (n <= 0).any():
        raise ValueError("n_tokens: expected counts > 0 (log axis)")
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves: expected a non-empty mapping name -> (gpu_s, near_s), got {curves!r}")
    crossovers = dict(crossovers or {})
    ys: list[float] = []
    fig = go.Figure(layout=_layout(
        title=dict(text=title), showlegend=True, height=380, legend=dict(orientation="h", y=-0.3),
        xaxis=dict(type="log", title=dict(text="tokens routed to the expert")),
        yaxis=dict(type="log", title=dict(text="ms per expert"))))
    for i, (name, pair) in enumerate(curves.items()):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"curves[{name!r}]: expected a pair (gpu_seconds, near_seconds), got {type(pair).__name__}")
        g = _vec(f"curves[{name!r}][0]", pair[0], n=n.size)
        m = _vec(f"curves[{name!r}][1]", pair[1], n=n.size)
        col = PROFILE_COLORS[i % len(PROFILE_COLORS)]
        # NOTE: systems that share a link have the same GPU-path curve; earlier curves are drawn wider and
        # each system has its own marker symbol, so a curve hidden under another still shows at its edges
        width = 2.0 + 2.5 * (len(curves) - 1 - i)
        sym = _SYMBOLS[i % len(_SYMBOLS)]
        every = max(1, n.size // 8)
        fig.add_trace(go.Scatter(x=n, y=g * 1e3, mode="lines+markers", name=f"{name}: GPU (move weights)",
                                 line=dict(color=col, width=width), opacity=0.9,
                                 marker=dict(symbol=sym, size=8,
                                             opacity=[1.0 if j % every == i % every else 0.0 for j in range(n.size)])))
        fig.add_trace(go.Scatter(x=n, y=m * 1e3, mode="lines+markers", name=f"{name}: near data (move activations)",
                                 line=dict(color=col, width=width, dash="dash"), opacity=0.9,
                                 marker=dict(symbol=sym, size=8,
                                             opacity=[1.0 if j % every == i % every else 0.0 for j in range(n.size)])))
        ys += [float(v) for v in g * 1e3] + [float(v) for v in m * 1e3]
        x = crossovers.get(name)
        if x is not None:
            y = float(np.interp(math.log(x), np.log(n), g * 1e3))
            fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers+text", text=[f"{x}"], textposition="top center",
                                     marker=dict(symbol="diamond", size=11, color=col, line=dict(color="#ffffff", width=1)),
                                     name=f"{name}: crossover {x} tokens", showlegend=False))
    rng = positive_range(ys)
    if rng is not None:
        fig.update_yaxes(**log_axis("ms per expert (log)", *rng))
    fig.update_xaxes(**log_axis("tokens routed to the expert (log)", float(n.min()), float(n.max()), pad=1.05))
    return fig


def placement_checks_figure(checks, *, title: str = "Hybrid layer: cost model vs measured (this machine)") -> go.Figure:
    """:func:`hybrid_figure` of :func:`samoyeds_lab.offload.hybrid.check_placements` results (label with the
    number of fast-side experts, modelled vs measured, IQR/2 error bars)."""
    checks = list(checks)
    return hybrid_figure([f"{c.label} ({int(c.mask.sum())} fast)" for c in checks], [c.modelled_s for c in checks],
                         [c.timing.total_s for c in checks], measured_err_s=[c.spread_s for c in checks], title=title)


def hybrid_figure(labels: Sequence[str], modelled_s, measured_s, *, measured_err_s=None,
                  title: str = "Hybrid layer: cost model vs measured (this machine)") -> go.Figure:
    """Grouped bars per placement: modelled vs measured layer time (ms); optional error bars (e.g. IQR/2)."""
    if isinstance(labels, str) or not all(isinstance(s, str) for s in labels) or not labels:
        raise ValueError(f"labels: expected a non-empty sequence of strings, got {labels!r}")
    a = _vec("modelled_s", modelled_s, n=len(labels))
    b = _vec("measured_s", measured_s, n=len(labels))
    err = None if measured_err_s is None else dict(type="data", array=_vec("measured_err_s", measured_err_s,
                                                                          n=len(labels)) * 1e3)
    return go.Figure([
        go.Bar(name="cost model", x=list(labels), y=a * 1e3, marker=dict(color=MONDE_COLORS["model"]),
               hovertemplate="model %{y:.3g} ms<extra></extra>"),
        go.Bar(name="measured (median)", x=list(labels), y=b * 1e3, marker=dict(color=MONDE_COLORS["measured"]),
               error_y=err, hovertemplate="measured %{y:.3g} ms<extra></extra>"),
    ], layout=_layout(title=dict(text=title), barmode="group", showlegend=True, legend=dict(orientation="h", y=-0.25),
                      yaxis=dict(title=dict(text="ms per layer"), rangemode="tozero")))
