"""Figures for Lab 08 (one MoE served three ways): the side-by-side table and figure, the offload policies, the
GPU budget curve and the recorded GPU kernel results.

Every builder is pure: it takes results of :mod:`samoyeds_lab.bench.end_to_end` (or kernel bench records)
and returns a new ``go.Figure``. Every number shown keeps its provenance: *live* / *measured* (this
machine), *recorded* (a shipped JSON file, with its date) or *model* (roofline / offload cost model).
"""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._axes import log_ticks, positive_range
from ..bench.end_to_end import BOUND_POLICY, OFFLOAD_POLICIES, EndToEndResult, OffloadChoice
from .palette import CONCEPTS, FAMILIES, POLICY_STYLES
from .sparsity import COLORS, _layout, message_figure

__all__ = ["E2E_COLORS", "POLICY_COLORS", "end_to_end_table", "end_to_end_figure", "expert_calls_figure",
           "offload_policy_figure", "budget_curve_figure", "kernel_records_figure", "MORE_COLORS",
           "five_ways_model_figure", "monde_measured_figure"]

#: One colour per way, and the shades of the provenance kinds.
E2E_COLORS: dict[str, str] = {
    "dense": COLORS["dense"],
    "samoyeds": COLORS["samoyeds"],
    "offloaded": CONCEPTS["offloaded"],
    "recorded": FAMILIES["provenance"]["recorded"],
    "recovered": "#0f172a",
    "model": "#818cf8",
    "header": "#e5e7eb",
    "row_a": "#ffffff",
    "row_b": "#f8fafc",
}
#: One colour per offload policy (Belady, the bound, in black).
POLICY_COLORS: dict[str, str] = dict(FAMILIES["policy"])
_PARTS = (("compute_ms", "compute", FAMILIES["time"]["compute"]), ("stall_ms", "demand-load stall", FAMILIES["time"]["stall"]),
          ("prefetch_exposed_ms", "exposed prefetch", FAMILIES["time"]["prefetch_exposed"]))


def _check_result(result: object) -> EndToEndResult:
    if not isinstance(result, EndToEndResult):
        raise TypeError(f"result: expected an EndToEndResult from serve_three_ways, got {type(result).__name__}")
    return result


def _fmt(v: float | None, spec: str = ".3g", none: str = "—") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def end_to_end_table(result: EndToEndResult) -> go.Figure:
    """Accuracy, time and memory of the three ways in one ``go.Table``, each column saying where it comes from.

    Columns: way · held-out ppl (live) · ppl recorded (one-shot → recovered) · CPU ms/token (measured) ·
    GPU expert ms/token (model) · expert bytes resident (and % of dense).
    """
    r = _check_result(result)
    w = r.ways
    rec = [(_fmt(x.recorded_ppl, ".2f") + (f" → {x.recorded_recovered_ppl:.2f}" if x.recorded_recovered_ppl else ""))
           for x in w]
    cells = [
        [html.escape(x.label) for x in w],
        [f"{x.ppl['overall']:.2f}" for x in w],
        rec,
        [_fmt(x.measured_ms_per_token, ".3f", "n/a here") for x in w],
        [f"{x.model_ms_per_token:.3f}" for x in w],
        [f"{x.expert_bytes:,} ({x.memory_fraction:.0%})" for x in w],
    ]
    s = r.settings
    header = [
        "way",
        f"held-out ppl<br><i>live</i><br><i>{s['eval_bytes_per_domain']:,} B/domain</i>",
        "held-out ppl<br><i>recorded</i><br><i>one-shot → recovered</i>",
        f"ms / token<br><i>measured here, tiny model</i><br><i>{html.escape(str(r.machine.get('device', '?')))}</i>",
        f"expert ms / token<br><i>model: {html.escape(str(s['shape']))}</i><br><i>on {html.escape(str(s['profile']))}</i>",
        "expert bytes resident<br><i>tiny model</i><br><i>(% of dense fp16)</i>",
    ]
    fill = [[E2E_COLORS["row_a"] if i % 2 == 0 else E2E_COLORS["row_b"] for i in range(len(w))]]
    fig = go.Figure(go.Table(
        columnwidth=[2.6, 1.2, 1.5, 1.5, 1.6, 1.6],
        header=dict(values=header, fill_color=E2E_COLORS["header"], align="left", font=dict(size=12)),
        cells=dict(values=cells, fill_color=fill * 6, align="left", height=26),
    ))
    fig.update_layout(_layout(title=dict(text="One MoE, three ways: accuracy · time · memory"), height=300,
                              margin=dict(l=10, r=10, t=50, b=10)))
    return fig


def end_to_end_figure(result: EndToEndResult) -> go.Figure:
    """Four panels side by side: held-out perplexity (live bars, recorded one-shot and recovered markers),
    time per token *measured here* on the tiny model, expert time per token *modelled* at the real model's
    shapes on a GPU profile, and expert bytes resident (% of dense).

    The measured and the modelled times are of different models on different machines, so they get
    separate panels and axes (never one axis to compare them on).
    """
    r = _check_result(result)
    s = r.settings
    dev = str(r.machine.get("device", "this machine"))
    fig = make_subplots(rows=1, cols=4, horizontal_spacing=0.075, subplot_titles=(
        "accuracy: held-out perplexity<br>(lower is better)",
        f"measured here: tiny model<br>on {html.escape(dev)}",
        f"model: {html.escape(str(s['shape']))} experts<br>on {html.escape(str(s['profile']))}",
        "memory: expert bytes<br>on the accelerator"))
    names = [x.way for x in r.ways]
    colors = [E2E_COLORS[n] for n in names]
    fig.add_trace(go.Bar(x=names, y=[x.ppl["overall"] for x in r.ways], marker_color=colors, name="live",
                         text=[f"{x.ppl['overall']:.2f}" for x in r.ways], textposition="outside",
                         hovertext=[x.ppl_source for x in r.ways], showlegend=False), 1, 1)
    rec = [(n, x.recorded_ppl) for n, x in zip(names, r.ways) if x.recorded_ppl is not None]
    if rec:
        fig.add_trace(go.Scatter(x=[a for a, _ in rec], y=[b for _, b in rec], mode="markers",
                                 marker=dict(symbol="diamond-open", size=12, color=E2E_COLORS["recorded"],
                                             line=dict(width=2)),
                                 name="recorded one-shot (whole held-out split)"), 1, 1)
    recov = [(n, x.recorded_recovered_ppl) for n, x in zip(names, r.ways) if x.recorded_recovered_ppl is not None]
    if recov:
        fig.add_trace(go.Scatter(x=[a for a, _ in recov], y=[b for _, b in recov], mode="markers",
                                 marker=dict(symbol="x", size=11, color=E2E_COLORS["recovered"]),
                                 name="recorded after recovery fine-tune"), 1, 1)
    meas = [(n, x) for n, x in zip(names, r.ways) if x.measured_ms_per_token is not None]
    fig.add_trace(go.Bar(x=[a for a, _ in meas], y=[x.measured_ms_per_token for _, x in meas],
                         name="measured here (tiny model)", marker_color=[E2E_COLORS[a] for a, _ in meas],
                         marker_line=dict(color="#475569", width=1), opacity=0.75,
                         text=[f"{x.measured_ms_per_token:.3g} ms" for _, x in meas], textposition="outside",
                         hovertext=[x.measured_source for _, x in meas]), 1, 2)
    fig.add_trace(go.Bar(x=names, y=[x.model_ms_per_token for x in r.ways],
                         name=f"model: {s['shape']} experts, {s['profile']}",
                         marker_color=E2E_COLORS["model"], text=[f"{x.model_ms_per_token:.3g} ms" for x in r.ways],
                         textposition="outside", hovertext=[x.model_source for x in r.ways]), 1, 3)
    fig.add_trace(go.Bar(x=names, y=[100 * x.memory_fraction for x in r.ways], marker_color=colors,
                         text=[f"{x.expert_bytes / 1e6:.2f} MB ({x.memory_fraction:.0%})" for x in r.ways],
                         textposition="outside", hovertext=[x.memory_source for x in r.ways], showlegend=False), 1, 4)
    top = max(max(x.ppl["overall"] for x in r.ways), max((b for _, b in rec), default=0))
    mtop = max((x.measured_ms_per_token for _, x in meas), default=1.0)
    fig.update_yaxes(title_text="perplexity (bytes)", range=[0, top * 1.2], row=1, col=1)
    fig.update_yaxes(title_text="ms per token (measured, linear)", range=[0, mtop * 1.25], row=1, col=2)
    rng3 = positive_range([x.model_ms_per_token for x in r.ways])
    if rng3 is not None:
        t3, tt3 = log_ticks(rng3[0] / 1.5, rng3[1] * 1.5)
        fig.update_yaxes(title_text="expert ms per token (model, log)", type="log", tickvals=t3, ticktext=tt3,
                         row=1, col=3)
    else:
        fig.update_yaxes(title_text="expert ms per token (model, log)", type="log", row=1, col=3)
    fig.update_yaxes(title_text="% of dense fp16 expert bytes", range=[0, 118], row=1, col=4)
    fig.update_layout(_layout(height=460, showlegend=True, legend=dict(orientation="h", y=-0.18, x=0),
                              title=dict(text="One MoE served three ways<br><sup>bars: live / measured / model · "
                                              "markers: recorded</sup><br><sup>measured and modelled times on "
                                              "separate axes</sup>"),
                              margin=dict(l=60, r=20, t=110, b=90)))
    fig.update_layout(xaxis=dict(visible=True), yaxis=dict(visible=True))
    return fig


def expert_calls_figure(calls: Mapping[str, Any]) -> go.Figure:
    """One expert GEMM alone on this CPU (``EndToEndResult.expert_calls``): µs per call of the backend's
    ``ssmm``, the bare CPU kernel and torch's dense ``F.linear``, grouped by token count (measured)."""
    keys = ("rows", "cols", "dtype", "dense_bytes", "compressed_bytes", "path", "calls")
    if not isinstance(calls, Mapping) or any(k not in calls for k in keys) or not calls["calls"]:
        raise ValueError(f"calls: expected EndToEndResult.expert_calls (keys {keys}, non-empty 'calls'), got "
                         f"{type(calls).__name__}")
    pts = list(calls["calls"])
    x = [f"{int(c['tokens'])} token{'s' if int(c['tokens']) > 1 else ''}" for c in pts]
    fig = go.Figure()
    for key, name, color in (("samoyeds_us", "samoyeds backend's ssmm (whole call)", E2E_COLORS["samoyeds"]),
                             ("kernel_us", "the CPU kernel alone", "#34d399"),
                             ("dense_us", "torch dense F.linear, same pruned weight", E2E_COLORS["dense"])):
        ys = [c.get(key) for c in pts]
        if all(v is None for v in ys):
            continue
        fig.add_trace(go.Bar(x=x, y=ys, name=name, marker_color=color,
                             text=[_fmt(v) + " µs" if v is not None else "" for v in ys], textposition="outside"))
    fig.update_layout(_layout(
        barmode="group", showlegend=True, height=360, legend=dict(orientation="h", y=-0.2, x=0),
        title=dict(text=f"One {calls['rows']}×{calls['cols']} {calls['dtype']} expert GEMM, measured on this CPU"
                        f"<br><sup>{calls['dense_bytes'] / 1e3:.0f} kB dense, {calls['compressed_bytes'] / 1e3:.0f} kB "
                        f"compressed · samoyeds backend: {html.escape(str(calls['path']))} · medians</sup>"),
        yaxis=dict(title="µs per call (measured)", rangemode="tozero"), margin=dict(l=60, r=20, t=80, b=80)))
    return fig


def _check_choice(choice: object) -> OffloadChoice:
    if not isinstance(choice, OffloadChoice):
        raise TypeError(f"choice: expected an OffloadChoice (offload_policy_sweep), got {type(choice).__name__}")
    return choice


def offload_policy_figure(choice: OffloadChoice, *, shape: str = "Mixtral-8x7B") -> go.Figure:
    """Modelled time per token of every offload policy, split into compute, demand-load stall and exposed
    prefetch (stacked), with each policy's hit rate; the chosen policy is starred, Belady is the bound."""
    c = _check_choice(choice)
    order = [p for p in (*c.ranking(), BOUND_POLICY) if p in c.policies]
    labels = [(f"★ {p}" if p == c.best else f"{p} (bound)" if p == BOUND_POLICY else p) for p in order]
    fig = go.Figure()
    for key, name, color in _PARTS:
        fig.add_trace(go.Bar(y=labels, x=[getattr(c.policies[p], key) for p in order], name=name,
                             orientation="h", marker_color=color))
    fig.add_trace(go.Scatter(
        y=labels, x=[c.policies[p].ms_per_token for p in order], mode="text", showlegend=False,
        text=[f"  {c.policies[p].ms_per_token:.3g} ms · hit {c.policies[p].hit_rate:.0%}" for p in order],
        textposition="middle right"))
    xmax = max(c.policies[p].ms_per_token for p in order)
    fig.update_layout(_layout(
        barmode="stack", showlegend=True, height=80 + 46 * len(order),
        # two lines: one line of this length is cut at notebook width
        title=dict(text=f"Offloaded: modelled time per token, {c.capacity}/{c.num_slots} experts on the GPU"
                        f"<br><sub>{c.scope} cache, {c.batch_tokens} token/step, {shape} experts</sub>"),
        xaxis=dict(title="ms per token (model)", range=[0, xmax * 1.45]),
        yaxis=dict(autorange="reversed"),
        legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=110, r=20, t=80, b=70)))
    return fig


def budget_curve_figure(curve: Mapping[int, OffloadChoice], *, resident_ms: float | None = None,
                        samoyeds_ms: float | None = None, mark: int | None = None) -> go.Figure:
    """Modelled ms/token of every policy against the GPU budget (experts), log y; optional horizontal lines
    for the all-resident dense and Samoyeds ways, and a vertical line at the budget ``mark``."""
    if not isinstance(curve, Mapping) or not curve:
        raise ValueError(f"curve: expected a non-empty {{capacity: OffloadChoice}} (offload_budget_curve), got {curve!r}")
    caps = sorted(curve)
    for k in caps:
        _check_choice(curve[k])
    fig = go.Figure()
    for p in (*OFFLOAD_POLICIES, BOUND_POLICY):
        if p not in curve[caps[0]].policies:
            continue
        dash, symbol = POLICY_STYLES.get(p, ("solid", "circle"))
        fig.add_trace(go.Scatter(x=caps, y=[curve[k].policies[p].ms_per_token for k in caps], name=p,
                                 mode="lines+markers", marker=dict(symbol=symbol, size=7),
                                 line=dict(color=POLICY_COLORS[p], dash=dash, width=3 if p == "sida" else 2)))
    shapes, ann = [], []
    for val, name, col in ((resident_ms, "dense, all resident", E2E_COLORS["dense"]),
                           (samoyeds_ms, "Samoyeds, all resident", E2E_COLORS["samoyeds"])):
        if val is not None:
            shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=val, y1=val, line=dict(color=col, dash="dash")))
            ann.append(dict(xref="paper", x=0.8, y=math.log10(val), text=name, showarrow=False, xanchor="right",
                            yanchor="bottom", font=dict(color=col)))
    vals = [curve[k].policies[p].ms_per_token for k in caps for p in curve[k].policies]
    vals += [v for v in (resident_ms, samoyeds_ms) if v is not None]
    yrange = [math.log10(min(vals) * 0.7), math.log10(max(vals) * 1.4)]
    yticks, ytext = log_ticks(min(vals) * 0.7, max(vals) * 1.4)
    if mark is not None:
        shapes.append(dict(type="line", yref="paper", y0=0, y1=1, x0=mark, x1=mark, line=dict(color="#111827", width=1)))
    fig.update_layout(_layout(showlegend=True, height=380, shapes=shapes, annotations=ann,
                              title=dict(text="Offloaded: modelled time per token vs GPU budget"),
                              xaxis=dict(title=f"experts resident on the GPU (of {curve[caps[0]].num_slots})"),
                              yaxis=dict(title="ms per token (model, log)", type="log", range=yrange,
                                         tickvals=yticks, ticktext=ytext)))
    return fig


def kernel_records_figure(records: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Recorded GPU kernel results (``load_kernel_records``) as a table with device and date on every row, or
    a plain statement that none have been recorded."""
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
        raise TypeError(f"records: expected a list of kernel bench records, got {type(records).__name__}")
    if not records:
        return message_figure("No GPU kernel results have been recorded yet.<br>"
                              "Run `samoyeds-lab bench kernels` on an SM80+ GPU to record them.",
                              title="Recorded GPU kernel results")
    cols = ("device", "date", "model", "op", "m", "k", "tokens", "dtype", "ms", "baseline", "baseline_ms")
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or any(c not in r for c in cols):
            raise ValueError(f"records[{i}]: expected a kernel bench record with fields {cols}")
    vals = [[html.escape(str(r[c])) if not isinstance(r[c], float) else f"{r[c]:.4g}" for r in records] for c in cols]
    vals.append([f"{r['baseline_ms'] / r['ms']:.2f}×" if r["ms"] > 0 else "—" for r in records])
    fig = go.Figure(go.Table(header=dict(values=[*cols, "speed-up"], fill_color=E2E_COLORS["header"], align="left"),
                             cells=dict(values=vals, align="left")))
    fig.update_layout(_layout(title=dict(text="Recorded GPU kernel results (measured on the device named, that date)"),
                              height=min(900, 120 + 24 * len(records)), margin=dict(l=10, r=10, t=50, b=10)))
    return fig


# ---------------------------------------------------------------------------------------------- five ways
#: Colours of the two ways added by :func:`samoyeds_lab.bench.end_to_end.serve_more_ways`.
MORE_COLORS: dict[str, str] = {"monde": CONCEPTS["monde"], "samoyeds_offloaded": CONCEPTS["samoyeds_offloaded"],
                               "fast": FAMILIES["placement"]["gpu"], "near": FAMILIES["placement"]["near"],
                               "resident": CONCEPTS["dense"]}
_TICKS = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000)  # plain magnitudes on the log axis
_SHORT = {"dense": "dense", "samoyeds": "Samoyeds", "offloaded": "offloaded", "monde": "MoNDE",
          "samoyeds_offloaded": "Samoyeds<br>+ offloaded"}


def _check_more(more: object):
    from ..bench.end_to_end import MoreWays

    if not isinstance(more, MoreWays):
        raise TypeError(f"more: expected a MoreWays from serve_more_ways, got {type(more).__name__}")
    return more


def five_ways_model_figure(result: EndToEndResult, more) -> go.Figure:
    """The five ways' *modelled* expert time per token at the real model's shapes on one GPU profile (one
    kind, one model: one axis, log), each bar labelled with its ms and the tiny model's GPU-memory share."""
    r = _check_result(result)
    rows = _check_more(more).modelled_rows(r)
    colors = {**{k: E2E_COLORS[k] for k in ("dense", "samoyeds", "offloaded")}, **MORE_COLORS}
    s = r.settings
    fig = go.Figure(go.Bar(
        x=[_SHORT[x["way"]] for x in rows], y=[x["ms_per_token"] for x in rows],
        marker_color=[colors[x["way"]] for x in rows],
        text=[f"{x['ms_per_token']:.3g} ms<br>{x['memory_fraction']:.0%} mem" for x in rows], textposition="outside",
        textfont=dict(size=12), hovertext=[html.escape(x["source"]) for x in rows], hoverinfo="text+y"))
    vals = [x["ms_per_token"] for x in rows]
    fig.update_layout(_layout(
        height=430, margin=dict(l=70, r=20, t=80, b=70),
        title=dict(text=f"Model: {html.escape(str(s['shape']))} experts on {html.escape(str(s['profile']))},<br>"
                        f"{s['batch_tokens']} token(s)/step, the recorded routing"),
        xaxis=dict(title="way (bar text: GPU memory, % of dense expert bytes)"),
        yaxis=dict(title="expert ms per token (model, log)", type="log",
                   range=[math.log10(min(vals) * 0.5), math.log10(max(vals) * 4)],
                   tickvals=_TICKS, ticktext=[f"{t:g}" for t in _TICKS])))
    return fig


def monde_measured_figure(more) -> go.Figure:
    """The MoNDE way *measured* on this machine (tiny model, expert layers alone): every expert on the fast side
    vs the hybrid split, with the hybrid's two sides (they run at the same time, so the total is about the
    slower of the two plus the split's overhead)."""
    m = _check_more(more).monde.measured
    names = ["all experts<br>fast side", "MoNDE split<br>(total)", "its fast side<br>(hot experts)",
             "its near side<br>(cold experts)"]
    vals = [m["resident_ms"], m["hybrid_ms"], m["fast_ms"], m["near_ms"]]
    cols = [MORE_COLORS["resident"], MORE_COLORS["monde"], MORE_COLORS["fast"], MORE_COLORS["near"]]
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=cols, text=[f"{v:.3g} ms" for v in vals],
                           textposition="outside", textfont=dict(size=12)))
    fig.update_layout(_layout(
        height=380, margin=dict(l=70, r=20, t=80, b=60),
        title=dict(text="Measured here: the tiny model's expert layers,<br>HybridExecutor on this CPU"),
        yaxis=dict(title="ms per token (measured, linear)", range=[0, max(vals) * 1.3])))
    return fig
