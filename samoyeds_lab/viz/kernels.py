"""Pure figure builders for Lab 02: ``mma.sp`` fragments of one lane, roofline ceilings, recorded GPU results
and measured CPU-kernel timings.

Every function takes plain data (tensors, lists of dicts, :class:`~samoyeds_lab.bench.roofline.RooflinePoint`
lists) and returns a new ``plotly.graph_objects.Figure``; nothing here touches widgets, files or timers.
Modelled numbers and measured numbers never share a label: roofline curves say *model (roofline
ceiling), not a measurement*; recorded GPU points say *recorded on DEVICE, DATE*; CPU timings say
*measured on CPU, DATE, N threads* (:func:`cpu_label`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..bench.roofline import OP_LABELS, RooflinePoint
from .palette import CONCEPTS
from .sparsity import COLORS, _layout, _matrix_axes

__all__ = [
    "KERNEL_COLORS", "MODEL_LABEL", "CPU_LABEL", "CPU_KINDS",
    "fragment_heatmap", "register_table", "roofline_figure", "speedup_figure", "cpu_expert_figure",
    "recorded_label", "cpu_label",
]

#: One colour per op (model curves and measured points of the same op share it). Record op names of
#: :mod:`samoyeds_lab.bench.kernels` (``ssmm_wg``, ``spmm_24``, ``dense_mm``, ``torch_dense``, ``torch_24``) included.
KERNEL_COLORS: dict[str, str] = {
    "dense": CONCEPTS["dense"],
    "spmm": CONCEPTS["2:4"],
    "ssmm": CONCEPTS["samoyeds"],
    "ssmm_wg": "#047857",  # Samoyeds' green, darker: the wgmma path
    "ssmm_decode": "#10b981",  # Samoyeds' green, lighter: the decode kernel
    "ssmm_prefill": "#065f46",  # Samoyeds' green, darkest: the Hopper prefill kernel
    "spmm_24": CONCEPTS["2:4"],
    "dense_mm": "#374151",
    "torch_dense": "#a8a29e",
    "torch_24": "#60a5fa",  # 2:4's blue, lighter: torch's 2:4
    "lane": "#f59e0b",
    "meta": "#dc2626",
    "ceiling": "#111827",
}
#: The caption every modelled curve carries.
MODEL_LABEL = "model (roofline ceiling), not a measurement"
#: The caption every CPU timing carries (with :func:`cpu_label`'s CPU, date and threads where a record has them).
CPU_LABEL = "measured on this CPU (CPU kernels, not Sparse Tensor Cores)"

_METRICS = {"time": ("time_s", 1e6, "time per GEMM (µs), log scale"),
            "tflops": ("tflops", 1.0, "effective TFLOP/s (2·m·k·tokens / time)")}


def _op_color(op: str) -> str:
    return KERNEL_COLORS.get(op, COLORS["other"])


# ---------------------------------------------------------------------------------------------- mma.sp
def fragment_heatmap(
    matrix: torch.Tensor,
    *,
    title: str,
    cells: Sequence[tuple[int, int, str]] = (),
    boxes: Sequence[tuple[int, int, int, int]] = (),
    hover: Sequence[Sequence[str]] | None = None,
    xtitle: str = "column",
    ytitle: str = "row",
    height: int | None = None,
) -> go.Figure:
    """A small matrix (an ``mma.sp`` operand) with one lane's registers outlined and labelled.

    Parameters
    ----------
    matrix : torch.Tensor
        2-D real tensor (≤ 64 × 64), shown on a zero-centred diverging scale; exact zeros (pruned
        weights) are pale grey.
    title : str
        Figure title.
    cells : sequence of (row, col, label)
        Cells held by the lane: outlined in amber and labelled (e.g. ``"a0.lo"``).
    boxes : sequence of (row0, col0, row1, col1)
        Inclusive cell ranges outlined with a dashed red box (e.g. the 2:4 groups the lane's metadata
        register describes).
    hover : rows × cols nested sequence of str, optional
        Extra hover text per cell (e.g. which lane holds it).
    """
    if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
        raise TypeError(f"matrix: expected a 2-D torch.Tensor, got {type(matrix).__name__}"
                        + (f" of shape {tuple(matrix.shape)}" if isinstance(matrix, torch.Tensor) else ""))
    rows, cols = matrix.shape
    if rows > 64 or cols > 64 or rows == 0 or cols == 0:
        raise ValueError(f"matrix: expected a fragment of 1..64 × 1..64, got {rows}×{cols}")
    z = matrix.detach().cpu().float()
    for name, seq, n in (("cells", cells, 3), ("boxes", boxes, 4)):
        for item in seq:
            if len(item) != n:
                raise ValueError(f"{name}: expected tuples of {n} entries, got {item!r}")
    for r, c, _ in cells:
        if not (0 <= r < rows and 0 <= c < cols):
            raise ValueError(f"cells: ({r}, {c}) is outside the {rows}×{cols} matrix")
    if hover is not None and (len(hover) != rows or any(len(h) != cols for h in hover)):
        raise ValueError(f"hover: expected {rows} rows of {cols} strings")
    bound = float(z.abs().max()) or 1.0
    text = [["" for _ in range(cols)] for _ in range(rows)]
    for r, c, label in cells:
        text[r][c] = label
    custom = [[hover[r][c] if hover is not None else "" for c in range(cols)] for r in range(rows)]
    # NOTE: None, not NaN, for the cells to leave blank: a FigureWidget sends its data as JSON, which has no NaN
    zeros = [[1.0 if v == 0 else None for v in row] for row in z.tolist()]
    traces = [
        go.Heatmap(z=z.numpy(), zmin=-bound, zmax=bound, zmid=0.0, xgap=1, ygap=1,
                   colorscale=[[0.0, COLORS["negative"]], [0.5, COLORS["zero"]], [1.0, COLORS["positive"]]],
                   colorbar=dict(title=dict(text="value"), thickness=10), text=text, texttemplate="%{text}",
                   textfont=dict(size=9, color=COLORS["text"]), customdata=custom,
                   hovertemplate=f"{ytitle} %{{y}}, {xtitle} %{{x}}: %{{z:.4g}} %{{customdata}}<extra></extra>"),
        go.Heatmap(z=zeros, zmin=0, zmax=1, colorscale=[[0, COLORS["pruned"]], [1, COLORS["pruned"]]],
                   showscale=False, xgap=1, ygap=1, hoverinfo="skip"),
    ]
    shapes = [dict(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                   line=dict(color=KERNEL_COLORS["lane"], width=2.5), layer="above") for r, c, _ in cells]
    shapes += [dict(type="rect", x0=c0 - 0.5, x1=c1 + 0.5, y0=r0 - 0.5, y1=r1 + 0.5,
                    line=dict(color=KERNEL_COLORS["meta"], width=2, dash="dot"), layer="above")
               for r0, c0, r1, c1 in boxes]
    axes = _matrix_axes(rows, cols, xtitle)
    axes["yaxis"]["title"] = dict(text=ytitle)
    return go.Figure(traces, layout=_layout(
        title=dict(text=title), shapes=shapes,
        height=height or int(min(560, max(240, 110 + rows * 520 / max(cols, 8)))), **axes))


def register_table(rows: Sequence[Mapping[str, object]], *, title: str = "") -> go.Figure:
    """A table of one lane's registers: one row per (register, half), columns as the dicts' keys.

    ``rows`` are dicts with the same keys (e.g. ``register``, ``bits``, ``holds``, ``value``).
    """
    if not rows:
        raise ValueError("rows: expected at least one register row, got none")
    keys = list(rows[0])
    for r in rows:
        if list(r) != keys:
            raise ValueError(f"rows: expected every row to have the keys {keys}, got {list(r)}")
    cols = [[str(r[k]) for r in rows] for k in keys]
    lane = [KERNEL_COLORS["lane"] + "22" if str(r.get("operand", "")) != "e" else KERNEL_COLORS["meta"] + "22"
            for r in rows]
    return go.Figure(go.Table(
        columnwidth=[5 if k == "holds" else 1 for k in keys],
        header=dict(values=[f"<b>{k}</b>" for k in keys], fill_color="#f3f4f6", align="left",
                    font=dict(size=12, color=COLORS["text"])),
        cells=dict(values=cols, align="left", fill_color=[lane] * len(keys), font=dict(size=11),
                   height=22)),
        layout=_layout(title=dict(text=title), height=min(760, 90 + 24 * len(rows)),
                       margin=dict(l=10, r=10, t=50, b=10)))


# ---------------------------------------------------------------------------------------------- roofline
def recorded_label(record: Mapping[str, object]) -> str:
    """``"recorded on DEVICE, DATE"`` for a kernel bench record (raises if it lacks either key)."""
    for key in ("device", "date"):
        if not record.get(key):
            raise ValueError(f"record: expected a non-empty {key!r} (where and when it was measured), "
                             f"got {record.get(key)!r}")
    return f"recorded on {record['device']}, {record['date']}"


def _check_sweep(sweep: Mapping[str, Sequence[RooflinePoint]]) -> None:
    if not isinstance(sweep, Mapping) or not sweep:
        raise ValueError(f"sweep: expected a non-empty mapping op -> list of RooflinePoint, got {sweep!r}")
    for op, pts in sweep.items():
        if not pts or not all(isinstance(p, RooflinePoint) for p in pts):
            raise TypeError(f"sweep[{op!r}]: expected a non-empty list of RooflinePoint")


def roofline_figure(
    sweep: Mapping[str, Sequence[RooflinePoint]],
    *,
    metric: str = "time",
    records: Sequence[Mapping[str, object]] = (),
    title: str = "",
    subtitle: str = "",
    height: int = 420,
) -> go.Figure:
    """Roofline ceilings vs tokens per expert (log x), one line per op, recorded points on top.

    Parameters
    ----------
    sweep : {op: [RooflinePoint, ...]}
        From :func:`samoyeds_lab.bench.roofline.roofline_sweep`. Points with 0 tokens are skipped.
    metric : str
        ``"time"`` (µs per GEMM, log y; lower is faster) or ``"tflops"`` (effective TFLOP/s of the
        useful work ``2·m·k·tokens``; higher is faster).
    records : list of dict
        Measured kernel bench records (keys ``op``, ``tokens``, ``ms``, ``device``, ``date``; ``tflops``
        optional, else computed from ``m``, ``k``). Drawn as markers labelled
        :func:`recorded_label`; baselines in a record (``baseline``, ``baseline_ms``) are drawn too.
    title, subtitle : str
        The title (default: the metric) and a subtitle line above the shape line (e.g. the model and
        matrix); keep both short: two of these charts sit side by side in Lab 02.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric: expected one of {tuple(_METRICS)}, got {metric!r}")
    _check_sweep(sweep)
    attr, scale, ytitle = _METRICS[metric]
    fig = go.Figure()
    for op, pts in sweep.items():
        pts = [p for p in pts if p.tokens > 0]
        bound = [p.bound for p in pts]
        fig.add_trace(go.Scatter(
            x=[p.tokens for p in pts], y=[getattr(p, attr) * scale for p in pts], mode="lines",
            name=f"{OP_LABELS.get(op, op)} — model", line=dict(color=_op_color(op), width=2.5, dash="dash"),
            customdata=bound,
            hovertemplate=f"{op} ceiling, %{{x}} tokens: %{{y:.4g}} (%{{customdata}}-bound)<extra>model</extra>"))
    seen = set()
    for rec in records:
        label = recorded_label(rec)
        for op, ms in ((rec.get("op"), rec.get("ms")), (rec.get("baseline"), rec.get("baseline_ms"))):
            if op is None or ms is None:
                continue
            y = float(ms) * 1e3 if metric == "time" else _record_tflops(rec, float(ms), op == rec.get("op"))
            key = (op, label)
            fig.add_trace(go.Scatter(
                x=[int(rec["tokens"])], y=[y], mode="markers", name=f"{op} — {label}", legendgroup=str(key),
                showlegend=key not in seen,
                marker=dict(color=_op_color(str(op)), size=9, symbol="circle", line=dict(color="#ffffff", width=1)),
                hovertemplate=f"{op}, %{{x}} tokens: %{{y:.4g}}<extra>{label}</extra>"))
            seen.add(key)
    first = next(iter(sweep.values()))[0]
    shape = f"{first.m}×{first.k} {first.dtype} on {first.profile}"
    # NOTE: one short fact per subtitle line: side by side, a chart is ~50 subtitle characters wide
    fig.update_layout(_layout(
        title=dict(text=(title or ("Time per GEMM" if metric == "time" else "Effective TFLOP/s"))
                   + (f"<br><sup>{subtitle}</sup>" if subtitle else "")
                   + f"<br><sup>{shape}</sup><br><sup>lines: {MODEL_LABEL}</sup><br><sup>"
                   + ("markers: measured" if records else "no GPU measurement recorded") + "</sup>"),
        showlegend=True, legend=dict(orientation="h", y=-0.22, x=0, font=dict(size=11)),
        height=height, margin=dict(l=70, r=20, t=145 if subtitle else 125, b=110),
        xaxis=dict(type="log", title=dict(text="tokens per expert (log scale)"), dtick=0.30102999566),
        yaxis=dict(type="log" if metric == "time" else "linear", title=dict(text=ytitle), rangemode="tozero"),
    ))
    return fig


def _record_tflops(rec: Mapping[str, object], ms: float, own: bool) -> float:
    if own and rec.get("tflops") is not None:
        return float(rec["tflops"])
    if ms <= 0:
        return 0.0
    return 2.0 * int(rec["m"]) * int(rec["k"]) * int(rec["tokens"]) / (ms * 1e-3) / 1e12


def speedup_figure(sweep: Mapping[str, Sequence[RooflinePoint]], *, title: str = "", height: int = 360) -> go.Figure:
    """Speed-up ceilings over dense (``t_dense / t_op`` at the roofline) vs tokens per expert."""
    _check_sweep(sweep)
    if "dense" not in sweep:
        raise ValueError(f"sweep: expected a 'dense' entry to compare against, got {list(sweep)}")
    dense = {p.tokens: p.time_s for p in sweep["dense"] if p.tokens > 0}
    fig = go.Figure()
    for op, pts in sweep.items():
        pts = [p for p in pts if p.tokens in dense]
        fig.add_trace(go.Scatter(
            x=[p.tokens for p in pts], y=[dense[p.tokens] / p.time_s for p in pts], mode="lines+markers",
            name=OP_LABELS.get(op, op), line=dict(color=_op_color(op), width=2.5),
            hovertemplate=f"{op}: ≤ %{{y:.2f}}× dense at %{{x}} tokens<extra>model</extra>"))
    first = sweep["dense"][0]
    fig.update_layout(_layout(
        title=dict(text=(title or "Speed-up ceiling over dense")
                   + f"<br><sup>{first.m}×{first.k} {first.dtype} on {first.profile}</sup><br><sup>{MODEL_LABEL}</sup>"),
        showlegend=True, legend=dict(orientation="h", y=-0.3, x=0), height=height,
        margin=dict(l=70, r=20, t=100, b=100),
        xaxis=dict(type="log", title=dict(text="tokens per expert (log scale)"), dtick=0.30102999566),
        yaxis=dict(title=dict(text="× faster than dense (at most)"), rangemode="tozero"),
    ))
    return fig


def cpu_label(record: Mapping[str, object]) -> str:
    """``"measured on CPU, DATE, N threads"`` for a CPU benchmark record (raises if it lacks any)."""
    for key in ("cpu", "date", "threads"):
        if record.get(key) in (None, ""):
            raise ValueError(f"record: expected a non-empty {key!r} (where and when it was measured), "
                             f"got {record.get(key)!r}")
    n = int(record["threads"])  # type: ignore[arg-type]
    return f"measured on {record['cpu']}, {record['date']}, {n} thread{'s' if n != 1 else ''}"


#: The CPU record kinds of :func:`samoyeds_lab.bench.cpu.bench_expert` drawn by :func:`cpu_expert_figure`.
CPU_KINDS = ("dense", "2:4", "samoyeds")
_CPU_COLORS = {"dense": KERNEL_COLORS["dense"], "2:4": KERNEL_COLORS["spmm"], "samoyeds": KERNEL_COLORS["ssmm"]}
_CPU_NAMES = {"dense": "dense (torch, fastest dtype)", "2:4": "2:4 CPU kernel", "samoyeds": "Samoyeds CPU kernel"}
_CPU_BYTES = {"dense": "dense 16-bit weight", "2:4": "2:4 operand", "samoyeds": "Samoyeds operand"}
_GPU_OPS = {"spmm": "2:4", "ssmm": "samoyeds"}


def _check_cpu_records(records: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence) or not records:
        raise ValueError("records: expected a non-empty list of bench.cpu.bench_expert records")
    keys = ("kind", "tokens", "ms", "rows", "cols", "dtype", "cpu", "date", "threads")
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or any(k not in r for k in keys):
            raise ValueError(f"records[{i}]: expected a bench_expert record with the keys {keys}")
    kern = [r for r in records if r["kind"] in ("2:4", "samoyeds")]
    if not kern:
        raise ValueError("records: expected at least one kernel record (kind '2:4' or 'samoyeds')")
    for i, r in enumerate(kern):
        for k in ("dense_ms", "dense_dtype"):
            if k not in r:
                raise ValueError(f"records: kernel record {i} lacks {k!r} (the dense baseline of the same run)")
    shapes = {(int(r["rows"]), int(r["cols"])) for r in records}
    if len(shapes) != 1:
        raise ValueError(f"records: expected one expert shape, got {sorted(shapes)}")
    return list(records)


def cpu_expert_figure(records: Sequence[Mapping[str, object]], *,
                      gpu_sweep: Mapping[str, Sequence[RooflinePoint]] | None = None,
                      highlight: int | None = None, title: str = "", height: int = 480) -> go.Figure:
    """One expert GEMM on this CPU: measured time and speed-up vs tokens, next to the byte and GPU ceilings.

    Left: median ms per GEMM (min–max as error bars) of torch's fastest dense dtype and of the 2:4 and
    Samoyeds CPU kernels (:func:`samoyeds_lab.bench.cpu.bench_expert` records), with each operand's byte
    ceiling on this CPU (its bytes / the measured read bandwidth: a *model*, drawn dashed). Right: the
    measured speed-up over dense (``dense_ms / kernel_ms`` of the same run) against the byte-ratio
    ceiling of this CPU and, when ``gpu_sweep`` is given
    (:func:`samoyeds_lab.bench.roofline.roofline_sweep` of the same shape), the GPU roofline ceiling
    (dotted). ``highlight``: the token count the slider is on (a vertical line in both panels).
    """
    recs = _check_cpu_records(records)
    if gpu_sweep is not None:
        _check_sweep(gpu_sweep)
    first = next(r for r in recs if r["kind"] in ("2:4", "samoyeds"))
    rows, cols = int(first["rows"]), int(first["cols"])
    label = cpu_label(first)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "time per GEMM (ms, log scale)",
        "speed-up over the fastest dense path"))
    dense_rows: dict[int, Mapping[str, object]] = {}
    for r in recs:  # the dense baseline: the fastest dense dtype of each token count (as the kernels' dense_ms)
        if r["kind"] == "dense":
            t = int(r["tokens"])
            if t not in dense_rows or float(r["ms"]) < float(dense_rows[t]["ms"]):
                dense_rows[t] = r
    series: dict[str, list[Mapping[str, object]]] = {"dense": [dense_rows[t] for t in sorted(dense_rows)]}
    for kind in ("2:4", "samoyeds"):
        series[kind] = sorted((r for r in recs if r["kind"] == kind), key=lambda r: int(r["tokens"]))
    tokens = sorted({int(r["tokens"]) for r in recs})
    for kind in CPU_KINDS:
        pts = series[kind]
        if not pts:
            continue
        ms = [float(r["ms"]) for r in pts]
        lo = [ms[i] - float(r.get("min_ms", ms[i])) for i, r in enumerate(pts)]
        hi = [float(r.get("max_ms", ms[i])) - ms[i] for i, r in enumerate(pts)]
        extra = [f" ({r['dtype']})" if kind == "dense" else "" for r in pts]
        fig.add_trace(go.Scatter(
            x=[int(r["tokens"]) for r in pts], y=ms, mode="lines+markers", name=f"{_CPU_NAMES[kind]}, measured",
            legendgroup=kind, line=dict(color=_CPU_COLORS[kind], width=2), marker=dict(size=8),
            error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, thickness=1),
            customdata=extra, hovertemplate=f"{_CPU_NAMES[kind]}%{{customdata}}, %{{x}} tokens: %{{y:.3g}} ms"
                                            f"<extra>{label}</extra>"), 1, 1)
    bw = first.get("bandwidth_gbps")
    ceil = {}
    if first.get("dense_ceiling_ms") is not None:
        ceil["dense"] = float(first["dense_ceiling_ms"])  # type: ignore[arg-type]
    for kind in ("2:4", "samoyeds"):
        if series[kind] and series[kind][0].get("ceiling_ms") is not None:
            ceil[kind] = float(series[kind][0]["ceiling_ms"])  # type: ignore[arg-type]
    for kind, c in ceil.items():
        fig.add_trace(go.Scatter(
            x=[tokens[0], tokens[-1]], y=[c, c], mode="lines", legendgroup=kind,
            name=f"{_CPU_BYTES[kind]}: byte ceiling at {float(bw or 0):.0f} GB/s (model)",
            line=dict(color=_CPU_COLORS[kind], width=1.5, dash="dash"),
            hovertemplate=f"{kind}: weight bytes / measured read bandwidth = %{{y:.3g}} ms<extra>model</extra>"), 1, 1)
    for kind in ("2:4", "samoyeds"):
        pts = series[kind]
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[int(r["tokens"]) for r in pts], y=[float(r["dense_ms"]) / float(r["ms"]) for r in pts],
            mode="lines+markers", name=f"{_CPU_NAMES[kind]} vs dense, measured", legendgroup=kind, showlegend=False,
            line=dict(color=_CPU_COLORS[kind], width=2), marker=dict(size=8),
            customdata=[str(r["dense_dtype"]) for r in pts],
            hovertemplate=f"{_CPU_NAMES[kind]}: %{{y:.2f}}× dense (%{{customdata}}) at %{{x}} tokens"
                          f"<extra>{label}</extra>"), 1, 2)
        if kind in ceil and "dense" in ceil:
            r = ceil["dense"] / ceil[kind]
            fig.add_trace(go.Scatter(
                x=[tokens[0], tokens[-1]], y=[r, r], mode="lines", legendgroup=kind, showlegend=False,
                name=f"{kind} byte ratio on this CPU (model)", line=dict(color=_CPU_COLORS[kind], width=1.5, dash="dash"),
                hovertemplate=f"{kind}: dense bytes / compressed bytes = %{{y:.2f}}×<extra>model (this CPU)</extra>"),
                1, 2)
    if gpu_sweep is not None and "dense" in gpu_sweep:
        dense_t = {p.tokens: p.time_s for p in gpu_sweep["dense"] if p.tokens > 0}
        prof = gpu_sweep["dense"][0].profile
        for op, kind in _GPU_OPS.items():
            if op not in gpu_sweep:
                continue
            pts = [p for p in gpu_sweep[op] if p.tokens in dense_t and tokens[0] <= p.tokens <= max(tokens[-1], 256)]
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[p.tokens for p in pts], y=[dense_t[p.tokens] / p.time_s for p in pts], mode="lines",
                name=f"{_CPU_BYTES[kind].split(' ')[0]} roofline ceiling on {prof} (model)",
                line=dict(color=_CPU_COLORS[kind], width=1.5, dash="dot"),
                hovertemplate=f"{op} roofline on {prof}: ≤ %{{y:.2f}}× dense at %{{x}} tokens<extra>model</extra>"),
                1, 2)
    fig.add_hline(y=1.0, line=dict(color=KERNEL_COLORS["ceiling"], width=1), row=1, col=2)
    if highlight is not None:
        for col in (1, 2):
            fig.add_vline(x=int(highlight), line=dict(color=KERNEL_COLORS["lane"], width=2), row=1, col=col)
    fig.update_layout(_layout(
        title=dict(text=(title or f"One {rows}×{cols} {first['dtype']} expert on this CPU")
                   + f"<br><sup>markers: {label} (median, min–max) · dashed/dotted: model</sup>"),
        showlegend=True, legend=dict(orientation="h", y=-0.2, x=0, font=dict(size=11)), height=height,
        margin=dict(l=70, r=20, t=110, b=150)))
    fig.update_xaxes(type="log", title_text="tokens per expert (log scale)", dtick=0.30102999566)
    # log axis labelled 0.1, 0.2, 0.5, 1, 2, 5, ... in full (plotly's default minor digits read as the wrong magnitude)
    ticks = [m * 10.0 ** e for e in range(-2, 5) for m in (1, 2, 5)]
    fig.update_yaxes(type="log", title_text="ms per GEMM (log)", tickvals=ticks, ticktext=[f"{v:g}" for v in ticks],
                     row=1, col=1)
    fig.update_yaxes(title_text="× faster than dense", rangemode="tozero", row=1, col=2)
    return fig
