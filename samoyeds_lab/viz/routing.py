"""Pure figure builders for routing traces: hotness, token timelines, locality, transitions, batch shapes.

Every function takes plain data (torch tensors, numbers, mappings, the small result dataclasses of
:mod:`samoyeds_lab.routing`) and returns a new ``plotly.graph_objects.Figure``; nothing here runs a model,
reads files or touches widgets, so tests inspect ``fig.to_dict()`` and
:class:`samoyeds_lab.viz.routing_panel.RoutingPanel` copies the results into ``FigureWidget``\\ s.

Notation as in :mod:`samoyeds_lab.routing.analytics`: ``L`` layers, ``T`` tokens, ``k`` experts per token,
``E`` experts. *Usage* ``u[l, e]`` is the fraction of tokens that use expert ``e`` in layer ``l`` among the
choices considered (``u = k·f`` over all ``k`` choices, ``u = f_0`` over first choices only); uniform
routing gives ``u = k/E`` (all choices) or ``1/E`` (first choice).
"""

from __future__ import annotations

import colorsys
import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .._checks import check_bool, check_float, check_ids, check_int, check_positive_int, check_tensor
from ..routing import TemporalLocality
from ._args import (
    MAX_EXPERTS,
    check_counts,
    check_fractions,
    check_optional_float,
    check_str_keys,
    check_text,
)
from .palette import CATEGORICAL
from .sparsity import _TEMPLATE, COLORS, _layout

__all__ = [
    "EXPERT_COLORS",
    "MIXTRAL_LOCALITY",
    "DOMAIN_COLORS",
    "byte_labels",
    "coactivation_heatmap",
    "domain_hotness_figure",
    "expert_colors",
    "hotness_heatmap",
    "imbalance_figure",
    "locality_figure",
    "padding_curve_figure",
    "token_timeline",
    "tokens_per_expert_figure",
    "transition_heatmap",
]

#: One distinguishable hex colour per expert id (cycled through HSL beyond 12 experts, see :func:`expert_colors`).
EXPERT_COLORS: tuple[str, ...] = CATEGORICAL
#: Colours of the corpus domains (anything else gets ``COLORS["other"]``).
DOMAIN_COLORS: dict[str, str] = {"en": "#4f46e5", "de": "#a16207", "code": "#be123c"}
#: What the Mixtral paper reports (Jiang et al., arXiv 2401.04088, Sec. 5, Mixtral-8x7B, E=8, k=2): consecutive
#: tokens share the first choice 14–28 % of the time (uniform 12.5 %), and share one of their top-2 experts
#: 62–67 % of the time at layer 15 (uniform 46 %). Ranges over their datasets (ArXiv, GitHub, PubMed, …).
MIXTRAL_LOCALITY: dict[str, tuple[float, float]] = {"first": (0.14, 0.28), "first_or_second": (0.62, 0.67)}

_HOT = "#dc2626"
_COLD = "#2563eb"
_MID = "#f8fafc"
_SEQ_SCALE = [[0.0, "#f8fafc"], [0.35, "#93c5fd"], [0.7, "#2563eb"], [1.0, "#1e3a8a"]]
_METRIC_LABEL = {"first": "same first choice", "first_or_second": "top-2 sets share an expert"}


# ---------------------------------------------------------------------------------------------- helpers
def _tensor(name: str, t: object, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {tuple(t.shape)}")
    return t.detach().cpu()


def _names(name: str, given: Sequence[str] | None, n: int, default: str) -> list[str]:
    if given is None:
        return [f"{default} {i}" for i in range(n)]
    if isinstance(given, str) or len(given) != n or not all(isinstance(s, str) for s in given):
        raise ValueError(f"{name}: expected {n} strings, got {given!r}")
    return [str(s) for s in given]


def _short_layer(name: str) -> str:
    """``"layers.2.mlp"`` → ``"L2"``; names without a number are kept."""
    digits = [p for p in name.split(".") if p.isdigit()]
    return f"L{digits[0]}" if digits else name


def _check_layer(name: str, v: object, n: int, allow_none: bool = True) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
        raise ValueError(f"{name}: expected an int in [0, {n}), got {v!r}")
    return v


def _blank() -> go.Figure:
    """An empty figure on the house template (``update_layout(template=...)`` would *merge* into plotly's default)."""
    return go.Figure(layout={"template": _TEMPLATE})


def expert_colors(num_experts: int) -> list[str]:
    """``num_experts`` hex colours: :data:`EXPERT_COLORS`, then evenly spaced HSL hues for the rest."""
    check_positive_int("num_experts", num_experts, hi=MAX_EXPERTS)
    out = list(EXPERT_COLORS[:num_experts])
    extra = num_experts - len(out)
    for i in range(extra):
        r, g, b = colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.42, 0.65)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


def _tint(hex_color: str, amount: float) -> str:
    """``hex_color`` mixed with white (``amount`` = share of white)."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    mix = [round(c + (255 - c) * amount) for c in (r, g, b)]
    return "#{:02x}{:02x}{:02x}".format(*mix)


_SPECIAL = {0x20: "␣", 0x0A: "↵", 0x09: "⇥", 0x0D: "␍"}


def byte_labels(token_ids: torch.Tensor) -> list[str]:
    """One printable label per byte token: the character it starts, for a byte-level model.

    ASCII letters, digits and punctuation are shown as themselves; space ``␣``, newline ``↵``, tab ``⇥``,
    CR ``␍``; other control bytes as ``\\xNN``. The lead byte of a valid UTF-8 sequence shows the whole
    character (``ä`` = ``C3 A4`` → ``"ä"`` on ``C3``) and its continuation bytes ``"·"``; a stray byte
    ``≥ 0x80`` is shown as ``\\xNN``.
    """
    ids = _tensor("token_ids", token_ids, 1)
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"token_ids: expected an integer tensor, got {ids.dtype}")
    vals = ids.tolist()
    if any(v < 0 or v > 255 for v in vals):
        raise ValueError(f"token_ids: expected byte values in [0, 255], got min {min(vals)}, max {max(vals)}")
    out: list[str] = []
    i = 0
    while i < len(vals):
        b = vals[i]
        if b < 0x80:
            out.append(_SPECIAL.get(b, chr(b) if 0x21 <= b < 0x7F else f"\\x{b:02x}"))
            i += 1
            continue
        n = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
        chunk = bytes(vals[i : i + n]) if n else b""
        try:
            ch = chunk.decode("utf-8") if n and len(chunk) == n else None
        except UnicodeDecodeError:
            ch = None
        if ch is None:
            out.append(f"\\x{b:02x}")
            i += 1
        else:
            out.extend([ch] + ["·"] * (n - 1))
            i += n
    return out


def _hot_scale(zmin: float, zmid: float, zmax: float) -> list:
    """Blue (cold) → white (uniform) → red (hot), with white at ``zmid`` inside ``[zmin, zmax]``."""
    mid = 0.5 if zmax <= zmin else min(max((zmid - zmin) / (zmax - zmin), 0.0), 1.0)
    if mid <= 0.0:
        return [[0.0, _MID], [1.0, _HOT]]
    if mid >= 1.0:
        return [[0.0, _COLD], [1.0, _MID]]
    return [[0.0, _COLD], [mid, _MID], [1.0, _HOT]]


# ---------------------------------------------------------------------------------------------- hotness
def hotness_heatmap(
    usage: torch.Tensor,
    *,
    uniform: float,
    layer_names: Sequence[str] | None = None,
    highlight_layer: int | None = None,
    zmax: float | None = None,
    title: str = "Expert hotness: share of tokens using each expert",
) -> go.Figure:
    """Layer × expert heatmap of expert usage, white at the uniform share, red hot, blue cold.

    Parameters
    ----------
    usage : torch.Tensor
        ``[L, E]`` fraction of tokens using each expert (e.g. ``k · expert_frequency(trace)``, or
        ``expert_frequency(trace, choice=0)`` for first choices), values in ``[0, 1]``.
    uniform : float
        The share every expert would get under uniform routing (``k/E`` or ``1/E``): the white point.
    layer_names : sequence of str, optional
        Row labels (default ``"layer i"``).
    highlight_layer : int, optional
        A row outlined in amber (the panel's selected layer).
    zmax : float, optional
        Top of the colour scale (default ``max(usage, 2·uniform)``), to share a scale between figures.
    title : str
        Figure title.
    """
    u = _tensor("usage", usage, 2).double()
    if not bool(torch.isfinite(u).all()) or bool((u < 0).any()) or bool((u > 1 + 1e-9).any()):
        raise ValueError("usage: expected fractions in [0, 1]")
    uniform = check_float("uniform", uniform, lo=0, lo_open=True, hi=1)
    check_optional_float("zmax", zmax, lo=0, lo_open=True)
    check_text("title", title)
    L, E = u.shape
    names = [_short_layer(n) for n in _names("layer_names", layer_names, L, "layer")]
    hl = _check_layer("highlight_layer", highlight_layer, L)
    top = float(zmax) if zmax is not None else max(float(u.max()), 2 * uniform)
    z = u.numpy()
    text = [[f"{v:.0%}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[f"e{e}" for e in range(E)], y=names, text=text, texttemplate="%{text}",
            textfont=dict(size=11), colorscale=_hot_scale(0.0, uniform, top), zmin=0.0, zmax=top,
            xgap=1, ygap=1, colorbar=dict(title=dict(text="tokens"), tickformat=".0%", thickness=12),
            hovertemplate="%{y}, expert %{x}: %{z:.1%} of tokens<extra></extra>",
        ),
        layout=_layout(
            title=dict(text=f"{title}<br><sup>white = uniform ({uniform:.1%}), red = hot, blue = cold</sup>"),
            height=90 + 42 * L, margin=dict(l=60, r=20, t=70, b=40),
            xaxis=dict(title=dict(text="expert"), showgrid=False, side="bottom"),
            yaxis=dict(autorange="reversed", showgrid=False),
        ),
    )
    if hl is not None:
        fig.add_shape(type="rect", x0=-0.5, x1=E - 0.5, y0=hl - 0.5, y1=hl + 0.5,
                      line=dict(color=COLORS["highlight"], width=3))
    return fig


def domain_hotness_figure(
    usage: Mapping[str, torch.Tensor],
    *,
    uniform: float,
    layer_names: Sequence[str] | None = None,
    title: str = "Expert hotness per domain (share of tokens using each expert)",
) -> go.Figure:
    """Side-by-side layer × expert heatmaps, one per domain, on one shared colour scale.

    Parameters
    ----------
    usage : mapping str → torch.Tensor
        ``{domain: usage [L, E]}`` as in :func:`hotness_heatmap`; same shape for every domain.
    uniform : float
        The uniform share (white point).
    layer_names : sequence of str, optional
        Row labels.
    """
    if not isinstance(usage, Mapping) or not usage:
        raise ValueError(f"usage: expected a non-empty mapping domain -> [L, E] tensor, got {usage!r}")
    check_str_keys("usage", usage, "domain names")
    check_text("title", title)
    mats = {d: _tensor(f"usage[{d!r}]", u, 2).double() for d, u in usage.items()}
    shape = next(iter(mats.values())).shape
    for d, m in mats.items():
        if m.shape != shape:
            raise ValueError(f"usage[{d!r}]: expected shape {tuple(shape)} (as the first domain), got {tuple(m.shape)}")
        if bool((m < 0).any()) or bool((m > 1 + 1e-9).any()) or not bool(torch.isfinite(m).all()):
            raise ValueError(f"usage[{d!r}]: expected fractions in [0, 1]")
    uniform = check_float("uniform", uniform, lo=0, lo_open=True, hi=1)
    L, E = shape
    names = [_short_layer(n) for n in _names("layer_names", layer_names, L, "layer")]
    top = max(max(float(m.max()) for m in mats.values()), 2 * uniform)
    fig = make_subplots(rows=1, cols=len(mats), subplot_titles=list(mats), horizontal_spacing=0.04,
                        shared_yaxes=True, figure=_blank())
    for i, (d, m) in enumerate(mats.items(), 1):
        z = m.numpy()
        fig.add_trace(go.Heatmap(
            z=z, x=[f"e{e}" for e in range(E)], y=names, text=[[f"{v:.0%}" for v in row] for row in z],
            texttemplate="%{text}", textfont=dict(size=10), coloraxis="coloraxis", xgap=1, ygap=1,
            name=d, hovertemplate=f"{d}, %{{y}}, expert %{{x}}: %{{z:.1%}} of tokens<extra></extra>",
        ), row=1, col=i)
    fig.update_layout(**_layout(
        title=dict(text=f"{title}<br><sup>white = uniform ({uniform:.1%}), red = hot, blue = cold</sup>"),
        height=110 + 42 * L, margin=dict(l=60, r=20, t=80, b=40),
        coloraxis=dict(colorscale=_hot_scale(0.0, uniform, top), cmin=0.0, cmax=top,
                       colorbar=dict(title=dict(text="tokens"), tickformat=".0%", thickness=12)),
    ))
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(showgrid=False)
    return fig


def imbalance_figure(
    values: Mapping[str, torch.Tensor],
    *,
    layer_names: Sequence[str] | None = None,
    ideal: float | None = 1.0,
    worst: float | None = None,
    ytitle: str = "max / mean tokens per expert",
    title: str = "Load imbalance per layer",
) -> go.Figure:
    """Grouped bars of one per-layer imbalance number (e.g. ``imbalance(trace).max_over_mean``) per domain.

    Parameters
    ----------
    values : mapping str → torch.Tensor
        ``{domain: [L] values}``, same ``L`` for all.
    ideal, worst : float, optional
        Dashed reference lines: the balanced value (1 for max/mean) and the worst case (``E/k``).
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"values: expected a non-empty mapping domain -> [L] tensor, got {values!r}")
    check_str_keys("values", values, "domain names")
    ideal = check_optional_float("ideal", ideal)
    worst = check_optional_float("worst", worst)
    check_text("ytitle", ytitle)
    check_text("title", title)
    vecs = {d: _tensor(f"values[{d!r}]", v, 1).double() for d, v in values.items()}
    L = next(iter(vecs.values())).numel()
    for d, v in vecs.items():
        if v.numel() != L:
            raise ValueError(f"values[{d!r}]: expected {L} layers (as the first domain), got {v.numel()}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"values[{d!r}]: expected finite numbers")
    names = [_short_layer(n) for n in _names("layer_names", layer_names, L, "layer")]
    traces = [go.Bar(name=d, x=names, y=v.numpy(), marker=dict(color=DOMAIN_COLORS.get(d, COLORS["other"])),
                     text=[f"{x:.2f}" for x in v.tolist()], textposition="outside", cliponaxis=False,
                     hovertemplate=f"{d}, %{{x}}: %{{y:.3f}}<extra></extra>") for d, v in vecs.items()]
    top = max(float(v.max()) for v in vecs.values())
    shapes, annotations = [], []
    for val, label in ((ideal, "balanced"), (worst, "worst case")):
        if val is None:
            continue
        top = max(top, float(val))
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=val, y1=val,
                           line=dict(color=COLORS["muted"], dash="dash", width=1)))
        annotations.append(dict(xref="paper", x=1, y=val, text=f"{label} {val:g}", showarrow=False,
                                xanchor="right", yanchor="bottom", font=dict(size=10, color=COLORS["muted"])))
    return go.Figure(traces, layout=_layout(
        title=dict(text=title), barmode="group", showlegend=True, height=340, shapes=shapes,
        annotations=annotations, yaxis=dict(title=dict(text=ytitle), range=[0, 1.15 * top if top > 0 else 1]),
    ))


# ---------------------------------------------------------------------------------------------- timeline
def token_timeline(
    token_ids: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    num_experts: int,
    weights: torch.Tensor | None = None,
    layer_names: Sequence[str] | None = None,
    view: str = "first",
    highlight_layer: int | None = None,
    first_position: int = 0,
    title: str = "Which expert each token chose",
) -> go.Figure:
    """Tokens left to right, one row per layer (per choice with ``view="all"``), coloured by expert.

    Each cell shows the byte it routes (see :func:`byte_labels`) and is coloured by the expert chosen:
    the same colour in consecutive cells is *temporal locality*. With ``view="all"`` every layer has
    ``k`` rows, choice ``j`` drawn in a lighter tint of the expert's colour as ``j`` grows.

    Parameters
    ----------
    token_ids : torch.Tensor
        int ``[T]`` byte ids of the shown tokens.
    topk_ids : torch.Tensor
        int ``[L, T, k]`` expert ids (column 0 = first choice), e.g. ``trace.topk_ids[:, a:b]``.
    num_experts : int
        ``E`` (fixes the colours, so an expert keeps its colour across views).
    weights : torch.Tensor, optional
        ``[L, T, k]`` routing weights, shown on hover.
    layer_names : sequence of str, optional
        Row labels.
    view : {"first", "all"}
        First choice only, or all ``k`` choices.
    highlight_layer : int, optional
        A layer whose rows are outlined in amber.
    first_position : int
        Position of the first shown token in its sequence (hover and x-axis labels).
    """
    tok = _tensor("token_ids", token_ids, 1)
    ids = _tensor("topk_ids", topk_ids, 3)
    if ids.is_floating_point():
        raise TypeError(f"topk_ids: expected an integer tensor, got {ids.dtype}")
    L, T, k = ids.shape
    if tok.numel() != T:
        raise ValueError(f"token_ids: expected {T} ids (the tokens of topk_ids), got {tok.numel()}")
    check_int("num_experts", num_experts, hi=MAX_EXPERTS)
    if num_experts < k:
        raise ValueError(f"num_experts: expected an int >= k = {k}, got {num_experts!r}")
    check_ids("topk_ids", ids, num=num_experts, distinct_rows=True)
    if weights is not None:
        w = _tensor("weights", weights, 3)
        if not w.is_floating_point():
            raise TypeError(f"weights: expected a float tensor, got {w.dtype}")
        if tuple(w.shape) != (L, T, k):
            raise ValueError(f"weights: expected shape {(L, T, k)} (as topk_ids), got {tuple(w.shape)}")
        w = check_tensor("weights", w, finite=True).float()
    else:
        w = None
    if view not in ("first", "all"):
        raise ValueError(f"view: expected 'first' or 'all', got {view!r}")
    check_int("first_position", first_position, lo=0)
    check_text("title", title)
    names = [_short_layer(n) for n in _names("layer_names", layer_names, L, "layer")]
    hl = _check_layer("highlight_layer", highlight_layer, L)
    kk = 1 if view == "first" else k
    E = num_experts
    base = expert_colors(E)
    # z = e + E·j: choice j of expert e; one flat colour band per (e, j)
    n_codes = E * kk
    scale = []
    for j in range(kk):
        for e in range(E):
            c = base[e] if j == 0 else _tint(base[e], min(0.3 + 0.2 * j, 0.8))
            code = j * E + e
            scale += [[code / n_codes, c], [(code + 1) / n_codes, c]]
    labels = byte_labels(tok)
    rows_y, z, text, custom = [], [], [], []
    for l in range(L):
        for j in range(kk):
            rows_y.append(names[l] if kk == 1 else f"{names[l]} #{j + 1}")
            row_ids = ids[l, :, j].tolist()
            z.append([e + E * j + 0.5 for e in row_ids])  # band centre of code e + E·j
            text.append(labels if j == 0 else [f"{e}" for e in row_ids])
            ws = w[l, :, j].tolist() if w is not None else [None] * T
            custom.append([[e, j + 1, lab, x] for e, lab, x in zip(row_ids, labels, ws)])
    x = list(range(first_position, first_position + T))
    height = 160 + (28 if kk == 1 else 22 * kk) * L
    plot_h = height - 160
    hover = ("position %{x} '%{customdata[2]}' · %{y}: choice %{customdata[1]} = expert %{customdata[0]}"
             + (" (weight %{customdata[3]:.2f})" if w is not None else "") + "<extra></extra>")
    fig = go.Figure(
        go.Heatmap(
            z=z, x=x, y=rows_y, text=text, texttemplate="%{text}", textfont=dict(size=11, color="#ffffff"),
            customdata=custom, colorscale=scale, zmin=0.0, zmax=float(n_codes), showscale=False,
            xgap=1, ygap=2, hovertemplate=hover,
        ),
        layout=_layout(
            title=dict(text=title),
            height=height,
            width=max(520, min(1400, 90 + 15 * T)),
            margin=dict(l=70, r=20, t=60, b=100),
            xaxis=dict(title=dict(text="position in the text"), showgrid=False, zeroline=False),
            yaxis=dict(autorange="reversed", showgrid=False, type="category"),
        ),
    )
    # a legend of expert colours (invisible points, one per expert)
    for e in range(E):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"expert {e}",
                                 marker=dict(color=base[e], size=10, symbol="square"), showlegend=True,
                                 hoverinfo="skip"))
    # the legend sits below the x-axis title: 55 px under the plot area, whatever the number of rows
    fig.update_layout(showlegend=True, legend=dict(orientation="h", yanchor="top", y=-55 / plot_h, x=0,
                                                   font=dict(size=10)))
    if hl is not None:
        fig.add_shape(type="rect", xref="x", yref="y", x0=x[0] - 0.5, x1=x[-1] + 0.5,
                      y0=hl * kk - 0.5, y1=hl * kk + kk - 0.5, line=dict(color=COLORS["highlight"], width=3))
    return fig


# ---------------------------------------------------------------------------------------------- locality
def locality_figure(
    locality: TemporalLocality | Mapping[str, TemporalLocality],
    *,
    layer_names: Sequence[str] | None = None,
    metric: str = "both",
    paper: bool = True,
    title: str = "Temporal locality: do consecutive tokens reuse experts?",
) -> go.Figure:
    """Measured repetition rates per layer vs the two random baselines (and the Mixtral paper's range).

    For each layer and domain two bars: the *measured* rate (solid) and the rate expected if tokens
    were independent draws from that layer's measured expert distribution (light) — skewed routing
    alone raises it. The dashed line is uniform random routing (``1/E``; ``1 − C(E−2,2)/C(E,2)`` for
    top-2 sets), the shaded band the Mixtral-8x7B range (:data:`MIXTRAL_LOCALITY`). Locality is the gap
    between solid and light bars, not the height of the solid bar.

    Parameters
    ----------
    locality : TemporalLocality or mapping str → TemporalLocality
        From :func:`samoyeds_lab.routing.temporal_locality`, one per domain.
    metric : {"both", "first", "first_or_second"}
        Which rate(s); ``"both"`` draws two panels.
    paper : bool
        Draw the Mixtral paper's ranges.
    """
    if isinstance(locality, TemporalLocality):
        locality = {"": locality}
    if not isinstance(locality, Mapping) or not locality:
        raise ValueError(f"locality: expected a TemporalLocality or a non-empty mapping of them, got {locality!r}")
    for d, t in locality.items():
        if not isinstance(t, TemporalLocality):
            raise TypeError(f"locality[{d!r}]: expected a TemporalLocality, got {type(t).__name__}")
    if metric not in ("both", "first", "first_or_second"):
        raise ValueError(f"metric: expected 'both', 'first' or 'first_or_second', got {metric!r}")
    check_bool("paper", paper)
    check_text("title", title)
    metrics = ["first", "first_or_second"] if metric == "both" else [metric]
    first = next(iter(locality.values()))
    L = first.first.numel()
    for d, t in locality.items():
        if t.first.numel() != L:
            raise ValueError(f"locality[{d!r}]: expected {L} layers (as the first entry), got {t.first.numel()}")
        if "first_or_second" in metrics and t.first_or_second is None:
            raise ValueError(f"locality[{d!r}]: has no first-or-second rates (k = 1); use metric='first'")
        for m in metrics:
            for f in (m, f"{m}_random"):
                rates = check_tensor(f"locality[{d!r}].{f}", getattr(t, f), ndim=1)
                if rates.numel() != L:
                    raise ValueError(f"locality[{d!r}].{f}: expected {L} layers, got {rates.numel()}")
                check_fractions(f"locality[{d!r}].{f}", rates.double())
            check_float(f"locality[{d!r}].{m}_uniform", getattr(t, f"{m}_uniform"), lo=0, hi=1)
    names = [_short_layer(n) for n in _names("layer_names", layer_names, L, "layer")]
    if len(metrics) > 1:
        fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[_METRIC_LABEL[m] for m in metrics],
                            horizontal_spacing=0.08, figure=_blank())
    else:  # NOTE: a plain figure; make_subplots costs ~50 ms, a third of a panel update
        fig = _blank()
        title = f"{title}<br><sup>{_METRIC_LABEL[metrics[0]]}</sup>"
    for col, m in enumerate(metrics, 1):
        cell = dict(row=1, col=col) if len(metrics) > 1 else {}
        uniform = None
        for d, t in locality.items():
            rate, rnd = getattr(t, m), getattr(t, f"{m}_random")
            uniform = getattr(t, f"{m}_uniform")
            color = DOMAIN_COLORS.get(d, COLORS["other"])
            label = d or "measured"
            fig.add_trace(go.Bar(
                name=f"{label} measured" if d else "measured", x=names, y=rate.numpy(), marker=dict(color=color),
                legendgroup=label, showlegend=col == 1, offsetgroup=f"{label}",
                text=[f"{v:.0%}" for v in rate.tolist()], textposition="outside", cliponaxis=False,
                textfont=dict(size=9),
                hovertemplate=f"{label} %{{x}}: {_METRIC_LABEL[m]} %{{y:.1%}}<extra></extra>",
            ), **cell)
            fig.add_trace(go.Bar(
                name=f"{label} random (measured skew)" if d else "random, measured skew", x=names, y=rnd.numpy(),
                marker=dict(color=_tint(color, 0.6), line=dict(color=color, width=1)), legendgroup=label,
                showlegend=col == 1, offsetgroup=f"{label} rnd",
                hovertemplate=f"{label} %{{x}}: independent draws from the measured frequencies "
                              f"%{{y:.1%}}<extra></extra>",
            ), **cell)
        axis = "" if col == 1 else str(col)
        fig.add_shape(type="line", xref=f"x{axis} domain", yref=f"y{axis}", x0=0, x1=1, y0=uniform, y1=uniform,
                      line=dict(color=COLORS["text"], dash="dash", width=1.5))
        fig.add_annotation(xref=f"x{axis} domain", yref=f"y{axis}", x=1, y=uniform, text=f"uniform {uniform:.1%}",
                           showarrow=False, xanchor="right", yanchor="top", font=dict(size=10))
        if paper:
            lo, hi = MIXTRAL_LOCALITY[m]
            fig.add_shape(type="rect", xref=f"x{axis} domain", yref=f"y{axis}", x0=0, x1=1, y0=lo, y1=hi,
                          fillcolor=COLORS["highlight"], opacity=0.15, line=dict(width=0), layer="below")
            where = "" if m == "first" else ", layer 15"
            fig.add_annotation(xref=f"x{axis} domain", yref=f"y{axis}", x=0, y=hi,
                               text=f"Mixtral-8x7B {lo:.0%}–{hi:.0%}{where}", showarrow=False, xanchor="left",
                               yanchor="bottom", font=dict(size=10, color="#92400e"))
        fig.update_yaxes(range=[0, 1.05], tickformat=".0%", **cell)
    fig.update_layout(**_layout(
        title=dict(text=title), barmode="group", showlegend=True, height=400,
        legend=dict(orientation="h", y=-0.15, x=0, font=dict(size=10)), margin=dict(l=60, r=20, t=80, b=40),
    ))
    return fig


# ---------------------------------------------------------------------------------------------- structure
def transition_heatmap(
    transitions: torch.Tensor,
    *,
    layer_from: str = "layer l",
    layer_to: str = "layer l+1",
    row_counts: torch.Tensor | None = None,
    title: str | None = None,
) -> go.Figure:
    """``P(first choice at the next layer = j | first choice here = i)`` as an ``E × E`` heatmap.

    Parameters
    ----------
    transitions : torch.Tensor
        ``[E, E]`` row-stochastic matrix (rows of never-chosen experts all 0), from
        :func:`samoyeds_lab.routing.transition_matrix`.
    layer_from, layer_to : str
        Layer names for the axes.
    row_counts : torch.Tensor, optional
        ``[E]`` tokens whose first choice was ``i`` (shown in the row labels).
    """
    P = _tensor("transitions", transitions, 2).double()
    check_text("layer_from", layer_from)
    check_text("layer_to", layer_to)
    check_text("title", title, optional=True)
    E = P.shape[0]
    if P.shape != (E, E):
        raise ValueError(f"transitions: expected a square [E, E] matrix, got {tuple(P.shape)}")
    if not bool(torch.isfinite(P).all()) or bool((P < -1e-12).any()) or bool((P > 1 + 1e-9).any()):
        raise ValueError("transitions: expected probabilities in [0, 1]")
    sums = P.sum(1)
    if not bool(((sums - 1).abs() < 1e-6).logical_or(sums == 0).all()):
        raise ValueError(f"transitions: expected rows summing to 1 (or 0 for unused experts), got {sums.tolist()}")
    ylab = [f"e{i}" for i in range(E)]
    if row_counts is not None:
        rc = _tensor("row_counts", row_counts, 1)
        if rc.numel() != E:
            raise ValueError(f"row_counts: expected {E} counts, got {rc.numel()}")
        check_counts("row_counts", rc)
        ylab = [f"e{i} (n={int(c)})" for i, c in enumerate(rc.tolist())]
    z = P.numpy()
    src, dst = _short_layer(layer_from), _short_layer(layer_to)
    return go.Figure(
        go.Heatmap(z=z, x=[f"e{j}" for j in range(E)], y=ylab, zmin=0, zmax=1, colorscale=_SEQ_SCALE,
                   text=[[f"{v:.0%}" if v >= 0.005 else "" for v in row] for row in z], texttemplate="%{text}",
                   textfont=dict(size=10), xgap=1, ygap=1,
                   colorbar=dict(title=dict(text="P"), tickformat=".0%", thickness=12),
                   hovertemplate=f"{src} first = %{{y}} → {dst} first = %{{x}}: %{{z:.1%}}<extra></extra>"),
        layout=_layout(
            title=dict(text=title or f"First-choice transitions {src} → {dst}<br><sup>row i: where tokens that "
                                     f"chose e_i in {src} go in {dst}; uniform row = {1 / E:.1%} each</sup>"),
            height=140 + 30 * E, width=140 + 42 * E + 80, margin=dict(l=90, r=20, t=80, b=50),
            xaxis=dict(title=dict(text=f"first choice in {dst}"), showgrid=False),
            yaxis=dict(title=dict(text=f"first choice in {src}"), autorange="reversed", showgrid=False),
        ),
    )


def coactivation_heatmap(
    coactivation: torch.Tensor,
    *,
    num_tokens: int,
    layer_name: str = "layer",
    title: str | None = None,
) -> go.Figure:
    """Which experts serve the same token: ``C[i, j] / T`` off the diagonal, usage ``C[i, i] / T`` in the labels.

    Parameters
    ----------
    coactivation : torch.Tensor
        Symmetric int ``[E, E]`` counts from :func:`samoyeds_lab.routing.coactivation` (diagonal =
        tokens using expert ``i``).
    num_tokens : int
        ``T``, the tokens of the trace (normalises the counts).
    layer_name : str
        For the title.
    """
    C = _tensor("coactivation", coactivation, 2)
    if C.is_floating_point() or C.is_complex() or C.dtype == torch.bool:
        raise TypeError(f"coactivation: expected an integer tensor of counts, got {C.dtype} "
                        f"(use coactivation(trace, layer) without normalize)")
    check_text("layer_name", layer_name)
    check_text("title", title, optional=True)
    E = C.shape[0]
    if C.shape != (E, E):
        raise ValueError(f"coactivation: expected a square [E, E] matrix, got {tuple(C.shape)}")
    if not torch.equal(C, C.T) or bool((C < 0).any()):
        raise ValueError("coactivation: expected a symmetric matrix of non-negative counts")
    check_positive_int("num_tokens", num_tokens)
    if float(C.max()) > num_tokens:
        raise ValueError(f"num_tokens: expected at least the largest count {int(C.max())}, got {num_tokens}")
    frac = C.double() / num_tokens
    usage = frac.diagonal().clone()
    z = frac.numpy().copy()
    np.fill_diagonal(z, np.nan)
    off = z[~np.isnan(z)]
    top = float(off.max()) if off.size and float(off.max()) > 0 else 1.0
    labels = [f"e{i} ({u:.0%})" for i, u in enumerate(usage.tolist())]
    text = [["" if i == j else (f"{v:.0%}" if v >= 0.005 else "") for j, v in enumerate(row)] for i, row in enumerate(z)]
    name = _short_layer(layer_name)
    return go.Figure(
        # NOTE: the diagonal is None (a gap), not NaN: NaN is not valid JSON for a FigureWidget's messages
        go.Heatmap(z=[[None if i == j else float(v) for j, v in enumerate(row)] for i, row in enumerate(z)],
                   x=labels, y=labels, zmin=0, zmax=top, colorscale=_SEQ_SCALE, text=text,
                   texttemplate="%{text}", textfont=dict(size=10), xgap=1, ygap=1, hoverongaps=False,
                   colorbar=dict(title=dict(text="tokens"), tickformat=".0%", thickness=12),
                   hovertemplate="%{y} with %{x}: %{z:.1%} of tokens<extra></extra>"),
        layout=_layout(
            title=dict(text=title or f"Co-activation in {name}<br><sup>cell: share of tokens routed to both "
                                     f"experts</sup><br><sup>label: share of tokens using the expert at all</sup>"),
            height=160 + 30 * E, width=160 + 42 * E + 80, margin=dict(l=90, r=20, t=100, b=70),
            xaxis=dict(showgrid=False), yaxis=dict(autorange="reversed", showgrid=False),
        ),
    )


# ---------------------------------------------------------------------------------------------- batch shapes
def _padded_fraction(counts: torch.Tensor, pad_to: int) -> float:
    padded = int(((counts + pad_to - 1) // pad_to * pad_to).sum())
    return 1.0 - int(counts.sum()) / padded if padded else 0.0


def tokens_per_expert_figure(
    counts: torch.Tensor,
    *,
    batch_tokens: int,
    top_k: int,
    pad_to: int = 64,
    layer_name: str = "",
    title: str | None = None,
) -> go.Figure:
    """Histogram of the tokens each expert receives per batch: the ``n`` of every expert GEMM.

    Parameters
    ----------
    counts : torch.Tensor
        int ``[batches, E]`` tokens per (batch, expert) for one layer (a slice of
        :attr:`samoyeds_lab.routing.TokensPerExpert.counts`); every row sums to ``batch_tokens·k``.
    batch_tokens : int
        Tokens per batch (1 = one decode step of one sequence; thousands = a prefill).
    top_k : int
        ``k`` (the mean is ``batch_tokens·k/E``).
    pad_to : int
        The kernel's token tile (Samoyeds: 64). Tile boundaries are drawn when few enough, and the
        title reports the share of computed rows that are padding,
        ``1 − Σ n / Σ ceil(n/pad_to)·pad_to`` (experts with no token launch nothing), and the share of
        idle (batch, expert) pairs.
    """
    c = _tensor("counts", counts, 2)
    if c.is_floating_point():
        raise TypeError(f"counts: expected an integer tensor, got {c.dtype}")
    check_positive_int("batch_tokens", batch_tokens)
    check_positive_int("pad_to", pad_to)
    check_text("layer_name", layer_name)
    check_text("title", title, optional=True)
    B, E = c.shape
    check_positive_int("top_k", top_k)
    if top_k > E:
        raise ValueError(f"top_k: expected an int <= E = {E} (the experts of counts), got {top_k}")
    if bool((c < 0).any()) or bool((c > batch_tokens).any()):
        raise ValueError(f"counts: expected values in [0, batch_tokens={batch_tokens}], got min {int(c.min())}, "
                         f"max {int(c.max())}")
    if bool((c.sum(1) != batch_tokens * top_k).any()):
        raise ValueError(f"counts: expected every batch to hold batch_tokens·k = {batch_tokens * top_k} slots, "
                         f"got sums {sorted(set(c.sum(1).tolist()))[:5]}")
    vals = c.reshape(-1).numpy()
    if batch_tokens <= 64:
        edges = np.arange(batch_tokens + 2) - 0.5
    else:
        width = max(1, math.ceil((batch_tokens + 1) / 48))
        edges = np.arange(0, batch_tokens + width + 1, width) - 0.5
    hist, _ = np.histogram(vals, bins=edges)
    centers = (edges[:-1] + edges[1:]) / 2
    widths = edges[1:] - edges[:-1]
    share = hist / hist.sum()
    mean = batch_tokens * top_k / E
    padded = _padded_fraction(c, pad_to)
    idle = float((c == 0).double().mean())
    shapes = [dict(type="line", x0=mean, x1=mean, yref="paper", y0=0, y1=1,
                   line=dict(color=COLORS["text"], dash="dash", width=1.5))]
    annotations = [dict(x=mean, yref="paper", y=1, text=f"mean {mean:g}", showarrow=False, yanchor="bottom",
                        font=dict(size=10))]
    n_tiles = batch_tokens // pad_to
    if 1 <= n_tiles <= 16:
        for t in range(1, n_tiles + 1):
            shapes.append(dict(type="line", x0=t * pad_to + 0.5, x1=t * pad_to + 0.5, yref="paper", y0=0, y1=1,
                               line=dict(color=COLORS["highlight"], width=1)))
        annotations.append(dict(x=pad_to, yref="paper", y=0.92, text=f"{pad_to}-token tile", showarrow=False,
                                xanchor="left", font=dict(size=10, color="#92400e")))
    name = _short_layer(layer_name) if layer_name else ""
    head = title or (f"Tokens per expert per batch of {batch_tokens} token{'s' if batch_tokens > 1 else ''}"
                     + (f" ({name})" if name else ""))
    sub = (f"{B} batches × {E} experts · idle experts {idle:.0%}<br><sup>padding to {pad_to}-token tiles: "
           f"{padded:.0%} of computed rows wasted")
    return go.Figure(
        go.Bar(x=centers, y=share, width=widths * 0.92, marker=dict(color=COLORS["kept"]),
               customdata=np.stack([edges[:-1] + 0.5, edges[1:] - 0.5, hist], axis=1),
               hovertemplate="%{customdata[0]:.0f}–%{customdata[1]:.0f} tokens: %{y:.1%} of (batch, expert) "
                             "pairs (%{customdata[2]})<extra></extra>"),
        layout=_layout(
            title=dict(text=f"{head}<br><sup>{sub}</sup>"), height=360, shapes=shapes, annotations=annotations,
            margin=dict(l=60, r=20, t=100, b=50), bargap=0,
            xaxis=dict(title=dict(text="tokens routed to one expert in one batch (the GEMM's n)"),
                       range=[-0.5 - 0.02 * batch_tokens, batch_tokens + 0.5 + 0.02 * batch_tokens]),
            yaxis=dict(title=dict(text="share of (batch, expert) pairs"), tickformat=".0%"),
        ),
    )


def padding_curve_figure(
    batch_sizes: Sequence[int],
    padded_fraction: torch.Tensor,
    idle_fraction: torch.Tensor,
    *,
    pad_to: int = 64,
    highlight: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """Padding waste and idle experts against the batch size (log x axis).

    Parameters
    ----------
    batch_sizes : sequence of int
        Tokens per batch, increasing.
    padded_fraction, idle_fraction : torch.Tensor
        ``[len(batch_sizes)]`` from :meth:`TokensPerExpert.padded_fraction` / :meth:`idle_fraction`
        (e.g. averaged over layers).
    pad_to : int
        The tile the padding was computed for (title).
    highlight : int, optional
        A batch size marked with a vertical amber line (the panel's selection).
    """
    check_positive_int("pad_to", pad_to)
    check_text("title", title, optional=True)
    if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
        raise ValueError(f"batch_sizes: expected a non-empty sequence of positive ints, got {batch_sizes!r}")
    bs = list(batch_sizes)
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bs) or bs != sorted(set(bs)):
        raise ValueError(f"batch_sizes: expected strictly increasing positive ints, got {bs!r}")
    curves = {}
    for name, v in (("padded_fraction", padded_fraction), ("idle_fraction", idle_fraction)):
        t = _tensor(name, v, 1).double()
        if t.numel() != len(bs):
            raise ValueError(f"{name}: expected {len(bs)} values (one per batch size), got {t.numel()}")
        if bool((t < -1e-12).any()) or bool((t > 1 + 1e-12).any()) or not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: expected fractions in [0, 1]")
        curves[name] = t.numpy()
    if highlight is not None and highlight not in bs:
        raise ValueError(f"highlight: expected one of {bs}, got {highlight!r}")
    traces = [
        go.Scatter(x=bs, y=curves["padded_fraction"], mode="lines+markers", name=f"padding rows ({pad_to}-token tiles)",
                   line=dict(color=COLORS["highlight"], width=2),
                   hovertemplate="batch %{x}: %{y:.1%} of computed rows are padding<extra></extra>"),
        go.Scatter(x=bs, y=curves["idle_fraction"], mode="lines+markers", name="idle experts (no token)",
                   line=dict(color=COLORS["kept"], width=2),
                   hovertemplate="batch %{x}: %{y:.1%} of experts get no token<extra></extra>"),
    ]
    shapes = []
    if highlight is not None:
        shapes.append(dict(type="line", x0=highlight, x1=highlight, yref="paper", y0=0, y1=1,
                           line=dict(color=COLORS["highlight"], dash="dot", width=1.5)))
    return go.Figure(traces, layout=_layout(
        title=dict(text=title or f"Why batch size decides kernel shapes (token tile = {pad_to})"),
        height=340, showlegend=True, shapes=shapes, legend=dict(orientation="h", y=-0.25, x=0),
        xaxis=dict(type="log", title=dict(text="tokens per batch (log)"), tickvals=bs,
                   ticktext=[str(b) for b in bs]),
        yaxis=dict(title=dict(text="share"), tickformat=".0%", range=[0, 1.05]),
    ))
