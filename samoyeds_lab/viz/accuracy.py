"""Figures for the accuracy of structured expert pruning (Lab 05), and a panel that runs a live sweep.

The figure builders take the records of :func:`samoyeds_lab.moe.accuracy.sparsity_sweep` (or the
``"records"`` of a file read with :func:`~samoyeds_lab.moe.accuracy.load_sweep`) and return new
``go.Figure``\\ s:

* :func:`sweep_table` — perplexity per domain and overall, density, bytes, modelled speed-up (``go.Table``);
* :func:`ppl_density_figure` — held-out perplexity against the kept fraction of expert weights;
* :func:`ppl_speed_figure` — held-out perplexity against the *modelled* decode speed-up
  (dense expert bytes / compressed expert bytes; a memory-bound ceiling, not a measurement);
* :func:`convergence_figure` — the study's convergence curves (held-out perplexity during the recovery
  fine-tune of the dense model and one pruned configuration) and the step count chosen from them;
* :func:`pareto_figure` — held-out perplexity against operand bytes, one point per pattern × method,
  one-shot and after the recovery fine-tune, each with its Pareto front (no other point has both fewer
  bytes and a lower perplexity) drawn as a line.

Records of Samoyeds with independent gate/up rows (``joint`` False) are left out of the scatters unless
``independent=True``: the study's comparison is the joint selection, the default.

:class:`AccuracyPanel` prunes the checkpoint live for one (pattern, V, method) chosen with widgets and
adds the result to the recorded trade-off plot.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any, Mapping, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go

from ._axes import log_axis
from .._checks import check_bool, check_float, check_int, check_path, check_positive_int
from ._args import check_text, offered
from .panels import _copy_into
from .sparsity import _TEMPLATE, COLORS, _layout

__all__ = ["sweep_table", "ppl_density_figure", "ppl_speed_figure", "pareto_figure", "pareto_front",
           "convergence_figure",
           "AccuracyPanel", "ACCURACY_COLORS"]

#: Hex colours: one per method (dense baseline grey), live results amber-outlined.
ACCURACY_COLORS: dict[str, str] = {
    "none": COLORS["dense"],
    "magnitude": COLORS["magnitude"],
    "wanda": COLORS["wanda"],
    "obs": COLORS["obs"],
    "live": COLORS["highlight"],
    "baseline": "#a8a29e",
    "header": "#e5e7eb",
    "row_a": "#ffffff",
    "row_b": "#f8fafc",
    "worse": "#fee2e2",
    "better": "#dcfce7",
}
_REQUIRED = ("label", "pattern", "method", "density", "expert_bytes", "dense_expert_bytes",
             "modelled_decode_speedup", "heldout_ppl")


_RECORD_METHODS = ("none", "magnitude", "wanda", "obs")


def _check_ppl(name: str, ppl: object, domains: Sequence[str] | None) -> list[str]:
    """A mapping domain -> perplexity (finite, > 0) with ``"overall"`` (and exactly ``domains`` if given)."""
    if not isinstance(ppl, Mapping):
        raise TypeError(f"{name}: expected a mapping domain -> perplexity, got {type(ppl).__name__}")
    if "overall" not in ppl:
        raise ValueError(f"{name}: expected an 'overall' perplexity, got domains {list(ppl)}")
    if domains is not None and set(ppl) != set(domains):
        raise ValueError(f"{name}: expected the domains of the first record {list(domains)}, got {list(ppl)}")
    for d, v in ppl.items():
        check_float(f"{name}[{d!r}]", v, lo=0, lo_open=True)
    return list(ppl)


def _check_records(name: str, records: object, *, allow_empty: bool = False) -> list[Mapping[str, Any]]:
    """Sweep records (:func:`~samoyeds_lab.moe.accuracy.sparsity_sweep`), each field of the kind and range the
    figures read: a NaN perplexity or an unknown method would otherwise be drawn (or dropped) in silence."""
    if not isinstance(records, (list, tuple)) or (not records and not allow_empty):
        raise ValueError(f"{name}: expected a non-empty list of sweep records (sparsity_sweep), got {records!r}")
    domains: list[str] | None = None
    for i, r in enumerate(records):
        where = f"{name}[{i}]"
        if not isinstance(r, Mapping):
            raise ValueError(f"{where}: expected a record dict, got {type(r).__name__}")
        missing = [k for k in _REQUIRED if k not in r]
        if missing:
            raise ValueError(f"{where}: expected a sweep record, missing field {missing[0]!r}")
        check_text(f"{where}['label']", r["label"])
        check_text(f"{where}['pattern']", r["pattern"])
        if r["method"] not in _RECORD_METHODS:
            raise ValueError(f"{where}['method']: expected one of {_RECORD_METHODS}, got {r['method']!r}")
        check_float(f"{where}['density']", r["density"], lo=0, lo_open=True, hi=1)
        check_float(f"{where}['expert_bytes']", r["expert_bytes"], lo=0)
        check_float(f"{where}['dense_expert_bytes']", r["dense_expert_bytes"], lo=0, lo_open=True)
        check_float(f"{where}['modelled_decode_speedup']", r["modelled_decode_speedup"], lo=0, lo_open=True)
        domains = _check_ppl(f"{where}['heldout_ppl']", r["heldout_ppl"], domains)
        if r.get("recovered_ppl") is not None:
            _check_ppl(f"{where}['recovered_ppl']", r["recovered_ppl"], domains)
    return list(records)


def _ppl_of(r: Mapping[str, Any], domain: str, recovered: bool) -> float | None:
    src = r.get("recovered_ppl") if recovered else r["heldout_ppl"]
    if src is None:
        return None
    if domain not in src:
        raise ValueError(f"domain: expected one of {list(src)}, got {domain!r}")
    return float(src[domain])


def _dense(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((r for r in records if r["pattern"] == "dense"), None)


# ---------------------------------------------------------------------------------------------- table
def sweep_table(records: Sequence[Mapping[str, Any]], *, title: str = "Held-out perplexity after pruning the experts"
                ) -> go.Figure:
    """A ``go.Table``: one row per configuration with density, expert bytes (% of dense fp16), modelled
    decode speed-up, held-out perplexity per domain and overall, and the overall change vs the dense
    record (``Δ = ppl / ppl_dense − 1``). When records carry ``recovered_ppl`` two more columns show the
    overall perplexity after the recovery fine-tune and its change vs the *fine-tuned* dense record."""
    records = _check_records("records", records)
    check_text("title", title)
    domains = [d for d in records[0]["heldout_ppl"] if d != "overall"] + ["overall"]
    dense = _dense(records)
    base = dense["heldout_ppl"]["overall"] if dense else None
    has_rec = any(r.get("recovered_ppl") for r in records)
    base_rec = dense["recovered_ppl"]["overall"] if (dense and has_rec and dense.get("recovered_ppl")) else None
    header = ["configuration", "density", "expert bytes", "modelled<br>decode speed-up"]
    header += [f"ppl {d}" for d in domains] + ["Δ vs dense"]
    cols: list[list[str]] = [[] for _ in header]
    fills: list[str] = []
    if has_rec:
        header += ["ppl after<br>recovery", "Δ vs dense<br>(recovered)"]
        cols += [[], []]
    for i, r in enumerate(records):
        row = [r["label"], f"{r['density']:.0%}",
               f"{r['expert_bytes'] / 2**20:.2f} MiB ({r['expert_bytes'] / r['dense_expert_bytes']:.1%})",
               f"{r['modelled_decode_speedup']:.2f}×"]
        row += [f"{r['heldout_ppl'][d]:.3f}" for d in domains]
        row.append("—" if (base is None or r["pattern"] == "dense")
                   else f"{r['heldout_ppl']['overall'] / base - 1:+.1%}")
        if has_rec:
            rp = r.get("recovered_ppl")
            row.append("—" if not rp else f"{rp['overall']:.3f}")
            row.append("—" if (not rp or base_rec is None or r["pattern"] == "dense")
                       else f"{rp['overall'] / base_rec - 1:+.1%}")
        for c, v in zip(cols, row):
            c.append(v)
        fills.append(ACCURACY_COLORS["row_a" if i % 2 == 0 else "row_b"])
    fig = go.Figure(go.Table(
        columnwidth=[190, 70, 150, 100] + [80] * (len(header) - 4),
        header=dict(values=[f"<b>{h}</b>" for h in header], fill_color=ACCURACY_COLORS["header"],
                    align="center", font=dict(color=COLORS["text"], size=12)),
        cells=dict(values=cols, fill_color=[fills] * len(header), align=["left"] + ["right"] * (len(header) - 1),
                   font=dict(color=COLORS["text"], size=12), height=28),
    ))
    # NOTE: a two-line header, and labels that wrap once when the notebook is narrow, need this much room;
    # too little and plotly hides the last rows behind a scroll the page does not show (issue 14)
    fig.update_layout(_layout(title=dict(text=title), height=140 + 40 * len(records),
                              margin=dict(l=10, r=10, t=50, b=10),
                              xaxis=dict(visible=False), yaxis=dict(visible=False)))
    return fig


# ---------------------------------------------------------------------------------------------- scatters
def _series(r: Mapping[str, Any]) -> str:
    """The pattern of a record without its method: ``"Samoyeds V=32"``, ``"2:4"``, ``"VENOM 64:2:8"`` …"""
    if r["pattern"] == "dense":
        return "dense"
    return str(r["label"]).replace(f" · {r['method']}", "", 1)


_SERIES_SYMBOLS = {"dense": "square", "2:4": "circle", "Samoyeds V=32": "triangle-up",
                   "Samoyeds V=64": "diamond", "Samoyeds V=128": "hexagon", "1:4": "square-x",
                   "unstructured 25%": "cross", "unstructured 50%": "x", "Samoyeds V=32 · independent":
                   "triangle-down", "Samoyeds V=128 · independent": "hexagram"}


def _symbol(r: Mapping[str, Any]) -> str:
    series = _series(r)
    if series.startswith("VENOM"):
        return "pentagon"
    return _SERIES_SYMBOLS.get(series, "star-triangle-up")


def _shown(records: Sequence[Mapping[str, Any]], independent: bool) -> list[Mapping[str, Any]]:
    return [r for r in records if independent or r.get("joint") is not False]


def _dodge(xs: list[float], span: float) -> list[float]:
    """Spread points that share an x value by up to ±1.5% of the axis span (display only)."""
    groups: dict[float, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(round(x, 2), []).append(i)
    out = list(xs)
    for idx in groups.values():
        k = len(idx)
        for j, i in enumerate(idx):
            out[i] = xs[i] + (0.0 if k == 1 else (j / (k - 1) - 0.5) * 0.03 * span)
    return out


def _tradeoff(records, live, *, x_key: str, x_title: str, domain: str, recovered: bool, title: str,
              x_range: list[float], independent: bool = False) -> go.Figure:
    records = _shown(_check_records("records", records), check_bool("independent", independent))
    if live is not None and not isinstance(live, (list, tuple)):
        raise TypeError(f"live: expected a list of sweep records (or None), got {type(live).__name__}")
    live = _check_records("live", list(live or []), allow_empty=True)
    if not isinstance(domain, str):
        raise TypeError(f"domain: expected a str such as 'overall', got {type(domain).__name__}")
    check_bool("recovered", recovered)
    check_text("title", title)
    if recovered and not any(r.get("recovered_ppl") for r in records):
        raise ValueError("recovered: True needs records with 'recovered_ppl' (a sweep with recovery_steps > 0)")
    shown = [r for r in records if _ppl_of(r, domain, recovered) is not None]
    xs = _dodge([float(r[x_key]) for r in shown], x_range[1] - x_range[0])
    traces = []
    for method in _RECORD_METHODS:
        idx = [i for i, r in enumerate(shown) if r["method"] == method]
        if not idx:
            continue
        rs = [shown[i] for i in idx]
        traces.append(go.Scatter(
            name="dense" if method == "none" else method,
            x=[xs[i] for i in idx],
            y=[_ppl_of(r, domain, recovered) for r in rs],
            mode="markers",
            marker=dict(size=13, color=ACCURACY_COLORS[method], symbol=[_symbol(r) for r in rs],
                        line=dict(color="#ffffff", width=1)),
            customdata=[[r["label"], r["density"], r["modelled_decode_speedup"]] for r in rs],
            hovertemplate="%{customdata[0]}<br>ppl %{y:.3f}<br>density %{customdata[1]:.0%}, "
                          "modelled speed-up %{customdata[2]:.2f}×<extra></extra>",
            cliponaxis=False,
        ))
    # symbol key: one legend entry per pattern series, grey, no data
    for series in dict.fromkeys(_series(r) for r in shown if r["pattern"] != "dense"):
        traces.append(go.Scatter(name=series, x=[None], y=[None], mode="markers", legendgroup="symbols",
                                 marker=dict(size=11, color=COLORS["muted"],
                                             symbol=_symbol(next(r for r in shown if _series(r) == series))),
                                 hoverinfo="skip"))
    ys = [_ppl_of(r, domain, recovered) for r in shown]
    if live:
        ly = [_ppl_of(r, domain, False) for r in live]
        ys += ly
        traces.append(go.Scatter(
            name="live (this session)",
            x=[float(r[x_key]) for r in live],
            y=ly,
            mode="markers",
            marker=dict(size=17, symbol="star", color=[ACCURACY_COLORS[r["method"]] for r in live],
                        line=dict(color=ACCURACY_COLORS["live"], width=2)),
            customdata=[[r["label"], r.get("eval_tokens", {}).get("overall", 0)] for r in live],
            hovertemplate="live: %{customdata[0]}<br>ppl %{y:.3f} on %{customdata[1]} held-out bytes"
                          "<extra></extra>",
        ))
    shapes, notes = [], []
    dense = _dense(records)
    if dense is not None and _ppl_of(dense, domain, recovered) is not None:
        y0 = _ppl_of(dense, domain, recovered)
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=y0, y1=y0,
                           line=dict(color=ACCURACY_COLORS["baseline"], dash="dash", width=1.5)))
        # NOTE: annotations on a log axis take log10 of the value (shapes take the value itself)
        notes.append(dict(xref="paper", x=1, y=math.log10(y0), text=f"dense {y0:.2f}", showarrow=False,
                          xanchor="right", yanchor="bottom", font=dict(color=COLORS["muted"], size=11)))
    lo, hi = min(ys), max(ys)
    which = "after recovery fine-tune" if recovered else "one-shot (no fine-tune)"
    return go.Figure(traces, layout=_layout(
        title=dict(text=f"{title}<br><sup>{which}; colour = method, symbol = pattern; points with equal x "
                        f"are spread slightly</sup>"),
        height=440, showlegend=True, shapes=shapes, annotations=notes,
        legend=dict(orientation="v", yanchor="top", y=1, x=1.02, xanchor="left", tracegroupgap=12),
        xaxis=dict(title=dict(text=x_title), range=x_range),
        yaxis=log_axis(f"held-out ppl, {domain} (log)", lo, hi),
        margin=dict(l=70, r=190, t=80, b=60), width=900,
    ))


def ppl_density_figure(
    records: Sequence[Mapping[str, Any]],
    live: Sequence[Mapping[str, Any]] | None = None,
    *,
    domain: str = "overall",
    recovered: bool = False,
    title: str = "Accuracy vs density of the expert weights",
    independent: bool = False,
) -> go.Figure:
    """Held-out perplexity (log axis) against density (kept fraction of the routed-expert weights).

    One trace per method (``"dense"``, ``"magnitude"``, ``"wanda"``; symbols by pattern), a dashed line at
    the dense baseline, and ``live`` records (e.g. from :class:`AccuracyPanel`) as amber-outlined stars.
    ``recovered=True`` plots ``recovered_ppl`` of the records (live ones stay one-shot).
    ``independent=True`` also shows Samoyeds records with independent gate/up rows.
    """
    return _tradeoff(records, live, x_key="density", x_title="density (kept fraction of expert weights)",
                     domain=domain, recovered=recovered, title=title, x_range=[0.15, 1.1],
                     independent=independent)


def ppl_speed_figure(
    records: Sequence[Mapping[str, Any]],
    live: Sequence[Mapping[str, Any]] | None = None,
    *,
    domain: str = "overall",
    recovered: bool = False,
    title: str = "Accuracy vs modelled decode speed-up",
    independent: bool = False,
) -> go.Figure:
    """Held-out perplexity (log axis) against the *modelled* decode speed-up of the expert GEMMs,
    ``dense fp16 expert bytes / compressed expert bytes`` (memory-bound ceiling, not a measurement).
    Same traces as :func:`ppl_density_figure`."""
    top = max(float(r["modelled_decode_speedup"]) for r in _check_records("records", records))
    return _tradeoff(records, live, x_key="modelled_decode_speedup",
                     x_title="modelled decode speed-up of the expert GEMMs (dense bytes / compressed bytes)",
                     domain=domain, recovered=recovered, title=title, x_range=[0.7, top * 1.15],
                     independent=independent)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal ``(bytes, ppl)`` points, by ascending bytes: no other point has
    ``bytes <=`` and ``ppl <=`` with one of them strictly lower. Equal points: the first one."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    out: list[int] = []
    best = math.inf
    for i in order:
        if points[i][1] < best:
            out.append(i)
            best = points[i][1]
    return out


def pareto_figure(
    records: Sequence[Mapping[str, Any]],
    *,
    domain: str = "overall",
    recovered: bool | None = None,
    independent: bool = False,
    title: str = "Accuracy vs operand bytes: the Pareto front",
) -> go.Figure:
    """Held-out perplexity (log y, labelled ticks) against the routed experts' operand bytes at fp16
    (values + metadata + indices; MiB), one point per pattern × method.

    Colour = method, symbol = pattern; filled markers one-shot, open markers after the recovery
    fine-tune (``recovered=None``: both when any record has ``recovered_ppl``; ``True``/``False``: only
    one). Each set's Pareto front (:func:`pareto_front`) is a line through its optimal points, and those
    points are named on the chart. The dense baseline is a point like the others (at 100 % of the
    bytes). ``independent=True`` also shows Samoyeds with independent gate/up rows.
    """
    records = _shown(_check_records("records", records), check_bool("independent", independent))
    if not isinstance(domain, str):
        raise TypeError(f"domain: expected a str such as 'overall', got {type(domain).__name__}")
    check_text("title", title)
    has_rec = any(r.get("recovered_ppl") for r in records)
    if recovered is not None:
        check_bool("recovered", recovered)
        if recovered and not has_rec:
            raise ValueError("recovered: True needs records with 'recovered_ppl' (a study with recovery steps)")
    sets = [False, True] if recovered is None and has_rec else [bool(recovered)]
    traces, notes, ys = [], [], []
    for rec_set in sets:
        shown = [r for r in records if _ppl_of(r, domain, rec_set) is not None]
        if not shown:
            continue
        pts = [(r["expert_bytes"] / 2**20, _ppl_of(r, domain, rec_set)) for r in shown]
        ys += [p[1] for p in pts]
        which = "after recovery" if rec_set else "one-shot"
        front = pareto_front(pts)
        traces.append(go.Scatter(
            name=f"Pareto front, {which}", x=[pts[i][0] for i in front], y=[pts[i][1] for i in front],
            mode="lines", line=dict(color=COLORS["text"] if not rec_set else COLORS["muted"], width=2,
                                     dash="solid" if not rec_set else "dot", shape="hv"),
            hoverinfo="skip", legendgroup="front"))
        for method in _RECORD_METHODS:
            idx = [i for i, r in enumerate(shown) if r["method"] == method]
            if not idx:
                continue
            traces.append(go.Scatter(
                name=("dense" if method == "none" else method) + f" ({which})", showlegend=False,
                x=[pts[i][0] for i in idx], y=[pts[i][1] for i in idx], mode="markers",
                legendgroup=method,
                marker=dict(size=12, symbol=[_symbol(shown[i]) + ("-open" if rec_set and not _symbol(shown[i])
                                                                  .endswith("-open") else "") for i in idx],
                            color=ACCURACY_COLORS[method],
                            line=dict(color=ACCURACY_COLORS[method] if rec_set else "#ffffff", width=2 if rec_set else 1)),
                customdata=[[shown[i]["label"], shown[i]["density"], which] for i in idx],
                hovertemplate="%{customdata[0]} (%{customdata[2]})<br>ppl %{y:.3f}<br>%{x:.2f} MiB, density "
                              "%{customdata[1]:.0%}<extra></extra>",
                cliponaxis=False))
        for i in front:
            # NOTE: annotations on a log axis take log10 of the value
            notes.append(dict(x=pts[i][0], y=math.log10(pts[i][1]), text=shown[i]["label"], showarrow=False,
                              xanchor="left", yanchor="bottom" if not rec_set else "top", xshift=6,
                              font=dict(size=10, color=COLORS["text"] if not rec_set else COLORS["muted"])))
    # legend keys without data: one colour per method (a plain circle), one symbol per pattern (grey)
    for method in dict.fromkeys(r["method"] for r in records):
        traces.append(go.Scatter(name="dense" if method == "none" else method, x=[None], y=[None], mode="markers",
                                 legendgroup=method, marker=dict(size=11, color=ACCURACY_COLORS[method],
                                                                 symbol="circle"), hoverinfo="skip"))
    for series in dict.fromkeys(_series(r) for r in records if r["pattern"] != "dense"):
        traces.append(go.Scatter(name=series, x=[None], y=[None], mode="markers", legendgroup="symbols",
                                 marker=dict(size=11, color=COLORS["muted"],
                                             symbol=_symbol(next(r for r in records if _series(r) == series))),
                                 hoverinfo="skip"))
    top = max(r["expert_bytes"] for r in records) / 2**20
    sub = " and ".join("after recovery (open, dotted front)" if x else "one-shot (filled, solid front)" for x in sets)
    return go.Figure(traces, layout=_layout(
        title=dict(text=f"{title}<br><sup>{sub}; colour = method, symbol = pattern<br>operand bytes at fp16 "
                        f"(values + metadata + indices; CSR for unstructured)</sup>"),
        height=540, width=980, showlegend=True, annotations=notes,
        legend=dict(orientation="v", yanchor="top", y=1, x=1.02, xanchor="left", tracegroupgap=8, font=dict(size=11)),
        xaxis=dict(title=dict(text="routed-expert operand bytes (MiB, fp16 values)"), range=[0, top * 1.08]),
        yaxis=log_axis(f"held-out ppl, {domain} (log)", min(ys), max(ys)),
        margin=dict(l=70, r=230, t=110, b=60),
    ))


def convergence_figure(convergence: Mapping[str, Any], *, title: str = "Does the recovery fine-tune converge?"
                       ) -> go.Figure:
    """Held-out perplexity (log y, labelled ticks) against fine-tune step for every curve of a study's
    ``convergence`` entry (:func:`samoyeds_lab.moe.accuracy.equal_density_study`), with a dotted line at
    the step count the study chose and the flatness rule in the subtitle."""
    if not isinstance(convergence, Mapping) or not isinstance(convergence.get("curves"), Mapping) \
            or not convergence["curves"]:
        raise ValueError("convergence: expected a study's 'convergence' dict with non-empty 'curves', got "
                         f"{convergence!r:.80}")
    check_text("title", title)
    palette = [COLORS["dense"], COLORS["wanda"], COLORS["obs"], COLORS["magnitude"]]
    traces, ys = [], []
    for k, (name, pts) in enumerate(convergence["curves"].items()):
        if not isinstance(pts, (list, tuple)) or not pts:
            raise ValueError(f"convergence['curves'][{name!r}]: expected a non-empty list of {{'step', 'ppl'}}")
        x = [check_int(f"convergence['curves'][{name!r}] step", p["step"], lo=0) for p in pts]
        y = [check_float(f"convergence['curves'][{name!r}] ppl", p["ppl"], lo=0, lo_open=True) for p in pts]
        ys += y
        traces.append(go.Scatter(name=str(name), x=x, y=y, mode="lines+markers",
                                 line=dict(color=palette[k % len(palette)], width=2.5), marker=dict(size=7),
                                 hovertemplate=f"{html.escape(str(name))}<br>step %{{x}}: ppl %{{y:.3f}}<extra></extra>"))
    chosen = convergence.get("chosen_steps")
    shapes, notes = [], []
    if chosen:
        shapes.append(dict(type="line", x0=chosen, x1=chosen, yref="paper", y0=0, y1=1,
                           line=dict(color=COLORS["muted"], dash="dot", width=1.5)))
        notes.append(dict(x=chosen, yref="paper", y=1, text=f"recovery: {chosen} steps", showarrow=False,
                          xanchor="right", yanchor="bottom", font=dict(color=COLORS["muted"], size=11)))
    flat = convergence.get("converged_at")
    rule = (f"flat = at most {convergence.get('tol', 0.02):.0%} better over the last {convergence.get('window', 100)} "
            f"steps: " + (f"reached at step {flat}" if flat else "not reached within the curve"))
    n = convergence.get("eval_tokens_per_domain")
    return go.Figure(traces, layout=_layout(
        title=dict(text=f"{title}<br><sup>{rule}; held-out subset of {n:,} bytes per domain</sup>" if n else
                   f"{title}<br><sup>{rule}</sup>"),
        height=400, width=820, showlegend=True, shapes=shapes, annotations=notes,
        xaxis=dict(title=dict(text="fine-tune step (masks held)")),
        yaxis=log_axis("held-out ppl (log)", min(ys), max(ys)),
        margin=dict(l=70, r=30, t=80, b=60),
    ))


# ---------------------------------------------------------------------------------------------- panel
_PATTERNS = ("2:4", "1:4", "VENOM", "unstructured 25%", "unstructured 50%", "Samoyeds")
_VECTORS = (32, 64, 128)
_METHODS = ("magnitude", "wanda", "obs")
_JOINT = (True, False)


class AccuracyPanel:
    """Prune the checkpoint live for one configuration and put it on the recorded trade-off plot.

    Widgets: pattern (2:4, 1:4, VENOM 64:2:8, unstructured 25 % / 50 %, Samoyeds), V (the Samoyeds
    window, 32/64/128; active for Samoyeds only), method (magnitude / Wanda / OBS), and — only when the
    records hold Samoyeds with both joint and independent gate/up rows — a *joint gate/up rows* toggle
    (active for Samoyeds); then a button. Every widget moves the ring to the recorded point of its
    configuration at once; a click runs :func:`~samoyeds_lab.moe.accuracy.sparsity_sweep` for that one
    configuration on a small held-out slice (``eval_tokens`` per domain) and adds it as a star. Live
    numbers use fewer held-out bytes than the recorded study, so they scatter around the recorded points.

    Parameters
    ----------
    model_dir : path
        The checkpoint (``data/tiny_moe``).
    records : list of dict
        The recorded study's records (drawn as the background).
    calib_tokens, eval_tokens : int
        Wanda/OBS calibration bytes and held-out bytes per domain of a live run.
    seed : int
        Seed of the calibration windows.

    Notes
    -----
    ``panel.run(pattern=..., vector=..., method=..., joint=...)`` does what the button does, without a
    front-end, and returns the record.
    """

    def __init__(self, model_dir, records: Sequence[Mapping[str, Any]], *, calib_tokens: int = 2048,
                 eval_tokens: int = 1024, seed: int = 0) -> None:
        self.records = _check_records("records", records)
        check_positive_int("calib_tokens", calib_tokens)
        check_positive_int("eval_tokens", eval_tokens)
        check_int("seed", seed)
        self.model_dir = check_path("model_dir", model_dir, kind="dir")
        if not (self.model_dir / "model.safetensors").is_file():
            raise FileNotFoundError(f"model_dir: {self.model_dir / 'model.safetensors'} missing")
        self.calib_tokens, self.eval_tokens, self.seed = calib_tokens, eval_tokens, seed
        self.live: list[dict[str, Any]] = []
        sam_joint = {r.get("joint") for r in self.records if r["pattern"] == "samoyeds"}
        self.has_joint_toggle = {True, False} <= sam_joint
        style = {"description_width": "80px"}
        lay = widgets.Layout(width="280px")
        self.controls = {
            "pattern": widgets.Dropdown(options=_PATTERNS, value="Samoyeds", description="pattern", style=style,
                                        layout=lay),
            "vector": widgets.SelectionSlider(options=_VECTORS, value=32, description="V (window)",
                                              continuous_update=False, style=style, layout=lay),
            "method": widgets.ToggleButtons(options=_METHODS, value="obs", description="pruning",
                                            style={"description_width": "80px", "button_width": "110px"}),
        }
        if self.has_joint_toggle:
            self.controls["joint"] = widgets.ToggleButtons(
                options=[("joint", True), ("independent", False)], value=True, description="gate/up rows",
                style={"description_width": "95px", "button_width": "115px"})  # 'independent' fits
        self.button = widgets.Button(description="prune + evaluate", button_style="primary",
                                     layout=widgets.Layout(width="180px"))
        self.status = widgets.HTML("")
        self.figure = go.FigureWidget(layout={"template": _TEMPLATE})
        self._draw()
        self.controls["pattern"].observe(self._sync, names="value")
        for w in self.controls.values():  # every widget moves the ring at once; the button prunes live
            w.observe(self._preview, names="value")
        self.button.on_click(lambda _b: self.run())
        self._sync()
        self._preview()
        self.status.layout = widgets.Layout(flex="1", min_width="300px")
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox(list(self.controls.values()) + [self.button],
                                       layout=widgets.Layout(min_width="300px", flex="0 0 auto")), self.status]),
            self.figure,
        ])

    def _sync(self, _change: Any = None) -> None:
        off = self.controls["pattern"].value != "Samoyeds"
        self.controls["vector"].disabled = off
        if "joint" in self.controls:
            self.controls["joint"].disabled = off

    def _draw(self) -> None:
        """The recorded sweep (and live runs), plus an empty ring trace ``selected`` that :meth:`_preview` moves."""
        fig = ppl_speed_figure(self.records, self.live, independent=self.has_joint_toggle)
        fig.add_trace(go.Scatter(name="selected", x=[], y=[], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(size=26, symbol="circle-open", color=ACCURACY_COLORS["live"],
                                             line=dict(width=3))))
        _copy_into(self.figure, fig, width=820)

    def selected_record(self) -> Mapping[str, Any] | None:
        """The recorded sweep's record of the configuration the widgets show, or None if it was not recorded."""
        from ..moe.accuracy import config_label

        label = config_label(self.config())
        return next((r for r in self.records if r["label"] == label), None)

    def _preview(self, _change: Any = None) -> None:
        """Ring the recorded point of the widgets' configuration and say its numbers (no model run)."""
        from ..moe.accuracy import config_label

        label = config_label(self.config())
        rec = self.selected_record()
        ring = next(t for t in self.figure.data if t.name == "selected")
        point = None
        if rec is not None:
            for t in self.figure.data:
                if t.customdata is not None and t.name not in ("selected",) and not t.name.startswith("live"):
                    for x, y, cd in zip(t.x, t.y, t.customdata):
                        if cd[0] == label:
                            point = (x, y)
        with self.figure.batch_update():
            ring.x, ring.y = ([point[0]], [point[1]]) if point else ([], [])
        if rec is None:
            self.status.value = (f"<b>{html.escape(label)}</b> is not in the recorded sweep: press "
                                 f"<b>prune + evaluate</b> to measure it live (a few seconds).")
        else:
            self.status.value = (
                f"ringed: <b>{html.escape(label)}</b>, recorded held-out ppl {rec['heldout_ppl']['overall']:.3f} · "
                f"density {rec['density']:.0%} · modelled speed-up {rec['modelled_decode_speedup']:.2f}×. "
                f"Press <b>prune + evaluate</b> to prune it live on a smaller held-out slice.")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def options(self) -> dict[str, tuple]:
        """Every value each widget can take (``"joint"`` only when the records hold both selections)."""
        out = {"pattern": _PATTERNS, "vector": _VECTORS, "method": _METHODS}
        if self.has_joint_toggle:
            out["joint"] = _JOINT
        return out

    def config(self, **values: Any) -> dict[str, Any]:
        """The sweep configuration for widget values (the rest from the widgets; the widgets move)."""
        opts = self.options()
        for name, value in values.items():
            if name not in opts:
                raise TypeError(f"run: unexpected argument {name!r}; expected some of {list(opts)}")
            if not offered(value, opts[name]):
                raise ValueError(f"{name}: expected one of {opts[name]}, got {value!r}")
            self.controls[name].value = value
        from ..moe.accuracy import VENOM_V

        v = {k: w.value for k, w in self.controls.items()}
        pattern, method = v["pattern"], v["method"]
        if pattern in ("2:4", "1:4"):
            return {"pattern": pattern, "method": method}
        if pattern == "VENOM":
            return {"pattern": "venom", "method": method, "vector": VENOM_V}
        if pattern.startswith("unstructured"):
            return {"pattern": "unstructured", "method": method, "density": 0.25 if "25" in pattern else 0.5}
        return {"pattern": "samoyeds", "method": method, "vector": v["vector"]} | (
            {} if v.get("joint", True) else {"joint": False})

    def run(self, **values: Any) -> dict[str, Any]:
        """Prune + evaluate the configuration of ``values`` (see :meth:`options`); returns its record."""
        from ..moe.accuracy import config_label, sparsity_sweep

        cfg = self.config(**values)
        self.button.disabled = True
        self.status.value = f"running <b>{html.escape(config_label(cfg))}</b> …"
        t0 = time.perf_counter()
        try:
            (rec,) = sparsity_sweep(self.model_dir, [cfg], calib_tokens=self.calib_tokens,
                                    eval_tokens=self.eval_tokens, seed=self.seed, check_backend=False)
        finally:
            self.button.disabled = False
        self.live.append(rec)
        recorded = next((r for r in self.records if r["label"] == rec["label"]), None)
        same = (f"; recorded sweep: {recorded['heldout_ppl']['overall']:.3f} on "
                f"{recorded.get('eval_tokens', {}).get('overall', '?')} bytes") if recorded else ""
        self.status.value = (
            f"<b>{html.escape(rec['label'])}</b>: held-out ppl {rec['heldout_ppl']['overall']:.3f} on "
            f"{rec['eval_tokens']['overall']:,} bytes{same} · density {rec['density']:.0%} · modelled "
            f"speed-up {rec['modelled_decode_speedup']:.2f}× · {time.perf_counter() - t0:.1f} s")
        status = self.status.value
        self._draw()
        self._preview()
        self.status.value = status  # the live result stays on screen until a widget moves
        return rec
