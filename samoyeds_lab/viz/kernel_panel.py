"""Panels for Lab 02 (and Lab 04): the roofline explorer (recorded GPU results on top), one expert timed on
this CPU, and the live GPU timing panel.

:class:`RooflinePanel` — GPU profile, model, expert matrix and dtype dropdowns → time, effective TFLOP/s
and speed-up ceilings of dense / 2:4 / Samoyeds vs tokens per expert (a *model*), with any recorded
kernel bench results for that shape drawn on top ("recorded on DEVICE, DATE").

:class:`CpuExpertPanel` — one expert matrix (default Mixtral-8x7B w1, 14336×4096 bf16) timed *now* on this
CPU: torch's fastest dense dtype vs the 2:4 and Samoyeds CPU kernels (which compute from the compressed
operand, :mod:`samoyeds_lab.kernels.cpu`), cache flushed, with a tokens-per-expert slider that
re-measures; next to this CPU's byte ceilings (measured read bandwidth) and a GPU's roofline ceilings
(model). Every number says *measured on CPU, DATE, N threads* or *model*.

:class:`LivePanel` — on a GPU with Sparse Tensor Cores (``samoyeds_lab.kernels.available()``) runs the
kernel benchmark for one model / token count / dtype and plots the measurement over the roofline.

As in the other panels, all logic is in ``update()`` (tests drive every widget over its range); the
callbacks only call it, and figures reach the ``go.FigureWidget``\\ s through ``batch_update()``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from .._checks import check_int
from ..bench.roofline import DEFAULT_TOKENS, GPU_PROFILES, expert_matrices, roofline, roofline_sweep
from ..offload.hardware import load_profile
from .kernels import CPU_KINDS, cpu_expert_figure, cpu_label, recorded_label, roofline_figure, speedup_figure
from .panels import _copy_into
from .sparsity import _TEMPLATE, message_figure

__all__ = [
    "RooflinePanel", "RooflineView", "CpuExpertPanel", "CpuExpertView", "LivePanel", "LiveView",
    "cpu_expert_records", "cpu_kernel_reason", "crossover_tokens", "CPU_TOKENS", "matching_records",
    "profile_for_device",
]

#: Tokens per expert the CPU expert slider offers.
CPU_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_DTYPES = ("float16", "bfloat16")
_CPU_DTYPES = ("bfloat16", "float16", "float32")


def matching_records(records: Sequence[Mapping[str, Any]], *, m: int, k: int, dtype: str,
                     model: str | None = None) -> list[Mapping[str, Any]]:
    """The records of one weight shape ``(m, k)`` and ``dtype`` (and ``model`` when both name one); a record
    whose ``status`` is not ``"ok"`` (a config that failed on the GPU) is no measurement and is left out."""
    out = []
    for r in records:
        if r.get("status", "ok") != "ok":
            continue
        if int(r.get("m", -1)) != m or int(r.get("k", -1)) != k or str(r.get("dtype")) != dtype:
            continue
        if model is not None and r.get("model") not in (None, model):
            continue
        out.append(r)
    return out


def profile_for_device(device: str | None, default: str = "h100_sxm") -> str:
    """The shipped GPU profile whose datasheet matches a device name (``"NVIDIA H200"`` → ``"h200"``).

    Matches H200, H100 (PCIe when the name says so, else SXM), A100, RTX 4090 and RTX 4070 SUPER;
    anything else gives ``default``.
    """
    name = (device or "").upper().replace(" ", "")
    if "H200" in name:
        return "h200"
    if "H100" in name:
        return "h100_pcie" if "PCIE" in name else "h100_sxm"
    if "A100" in name:
        return "a100_sxm"
    if "4090" in name:
        return "rtx_4090"
    if "4070SUPER" in name:
        return "rtx_4070_super"
    return default


# ---------------------------------------------------------------------------------------------- roofline
@dataclass
class RooflineView:
    """One :meth:`RooflinePanel.update`: settings, figures, the decode ceilings and the records shown."""

    settings: dict[str, Any]
    figures: dict[str, go.Figure]
    ceilings: dict[str, dict[int, float]]
    records: list[Mapping[str, Any]] = field(default_factory=list)
    summary: str = ""


class RooflinePanel:
    """Roofline ceilings of one expert matrix on one GPU profile, recorded results on top.

    Parameters
    ----------
    shapes : mapping model name → (d_model, d_ffn)
        E.g. ``samoyeds_lab.bench.kernels.MODEL_SHAPES``.
    records : sequence of dict
        Kernel bench records (``load_kernel_records()``); may be empty.
    profiles : sequence of str
        GPU profile names offered (default H100 SXM, H200, A100).
    tokens : sequence of int
        The token counts of the sweep (default 1, 2, 4, … 4096).
    """

    def __init__(self, shapes: Mapping[str, tuple[int, int]], records: Sequence[Mapping[str, Any]] = (), *,
                 profiles: Sequence[str] = GPU_PROFILES, tokens: Sequence[int] = DEFAULT_TOKENS) -> None:
        if not isinstance(shapes, Mapping) or not shapes:
            raise ValueError(f"shapes: expected a non-empty mapping model -> (d_model, d_ffn), got {shapes!r}")
        self.shapes = {name: tuple(int(v) for v in s) for name, s in shapes.items()}
        for name, s in self.shapes.items():
            if len(s) != 2:
                raise ValueError(f"shapes[{name!r}]: expected (d_model, d_ffn), got {s}")
            expert_matrices(*s)
        self.profiles = {p: load_profile(p) for p in profiles}
        if not self.profiles:
            raise ValueError("profiles: expected at least one GPU profile name")
        self.records = list(records)
        for r in self.records:
            recorded_label(r)  # every record must say where and when
        self.tokens = tuple(check_int("tokens", t, lo=1) for t in tokens)
        style = {"description_width": "70px"}
        lay = widgets.Layout(width="360px")
        first = next(iter(self.shapes))
        self.controls: dict[str, widgets.ValueWidget] = {
            "profile": widgets.Dropdown(options=[(p.name, k) for k, p in self.profiles.items()],
                                        value=next(iter(self.profiles)), description="GPU", style=style, layout=lay),
            "model": widgets.Dropdown(options=list(self.shapes), value=first, description="model", style=style,
                                      layout=lay),
            "matrix": widgets.ToggleButtons(options=list(expert_matrices(1, 1)), description="matrix",
                                            style={"description_width": "70px", "button_width": "130px"}),
            "dtype": widgets.ToggleButtons(options=_DTYPES, description="dtype",
                                           style={"description_width": "70px", "button_width": "90px"}),
        }
        self.status = widgets.HTML()
        self.figure_widgets = {n: go.FigureWidget(layout={"template": _TEMPLATE}) for n in ("time", "tflops", "speedup")}
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        fw = self.figure_widgets
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox(list(self.controls.values())), self.status]),
                                    widgets.HBox([fw["time"], fw["tflops"]]), fw["speedup"]])
        self.last: RooflineView | None = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.widget)

    def _on_change(self, change: dict) -> None:
        self.update()

    def options(self) -> dict[str, tuple]:
        """Every value each widget can take (what a test sweeps)."""
        return {"profile": tuple(self.profiles), "model": tuple(self.shapes),
                "matrix": tuple(expert_matrices(1, 1)), "dtype": _DTYPES}

    def update(self, **values: Any) -> RooflineView:
        """Move the widgets to ``values`` (any of ``profile, model, matrix, dtype``), recompute, refresh."""
        _set_controls(self, values)
        s = {name: w.value for name, w in self.controls.items()}
        view = self.compute(**s)
        for name, fig in view.figures.items():
            _copy_into(self.figure_widgets[name], fig, width=980 if name == "speedup" else 490)
        self.status.value = view.summary
        self.last = view
        return view

    def compute(self, profile: str, model: str, matrix: str, dtype: str) -> RooflineView:
        """The pure part of :meth:`update`."""
        prof = self.profiles[profile]
        m, k = expert_matrices(*self.shapes[model])[matrix]
        sweep = roofline_sweep(m, k, self.tokens, prof, dtype)
        recs = matching_records(self.records, m=m, k=k, dtype=dtype, model=model)
        what = f"{model} {matrix}: {m}×{k}"
        # NOTE: the two roofline charts sit side by side, ~40 characters wide: the model goes in the subtitle
        figures = {
            "time": roofline_figure(sweep, metric="time", records=recs, title="Time per GEMM",
                                    subtitle=f"{model} {matrix}", height=500),
            "tflops": roofline_figure(sweep, metric="tflops", records=recs, title="Effective TFLOP/s",
                                      subtitle=f"{model} {matrix}", height=500),
            "speedup": speedup_figure(sweep, title=f"Speed-up ceiling over dense, {what}"),
        }
        ceilings = {op: {t: roofline("dense", m, k, t, prof, dtype).time_s / roofline(op, m, k, t, prof, dtype).time_s
                         for t in (1, 16, 64, 1024, 4096)} for op in ("spmm", "ssmm")}
        devices = sorted({recorded_label(r) for r in recs})
        lines = [f"<b>{what}</b>, {dtype}, on {prof.name} ({prof.memory_bandwidth_gbs:g} GB/s HBM, "
                 f"{prof.fp16_tflops:g} / {prof.fp16_sparse_tflops:g} dense / 2:4 TFLOP/s)",
                 "Speed-up ceilings over dense (model): "
                 + "; ".join(f"{t} tokens: 2:4 ≤ {ceilings['spmm'][t]:.2f}×, Samoyeds ≤ {ceilings['ssmm'][t]:.2f}×"
                             for t in (1, 64, 4096))]
        if recs:
            lines.append(f"Markers: {len(recs)} measured records ({'; '.join(devices)}).")
        else:
            lines.append("No GPU measurement recorded for this shape and dtype: every curve is the model.")
        return RooflineView(settings=dict(profile=profile, model=model, matrix=matrix, dtype=dtype), figures=figures,
                            ceilings=ceilings, records=recs, summary="<br>".join(lines))


def _set_controls(panel: Any, values: Mapping[str, Any]) -> None:
    """Validate ``values`` against ``panel.options()`` and move the widgets without firing callbacks."""
    opts = panel.options()
    for name, value in values.items():
        if name not in opts:
            raise TypeError(f"update: unexpected argument {name!r}; expected some of {list(opts)}")
        if isinstance(value, bool) or value not in opts[name]:
            raise ValueError(f"{name}: expected one of {opts[name]}, got {value!r}")
    for name, value in values.items():
        w = panel.controls[name]
        if w.value != value:
            w.unobserve(panel._on_change, names="value")
            try:
                w.value = value
            finally:
                w.observe(panel._on_change, names="value")


# ---------------------------------------------------------------------------------------------- CPU kernels
def cpu_kernel_reason() -> str | None:
    """Why the CPU kernels cannot run on this machine (None when they can): ``cpu_path()`` is ``"none"``."""
    from ..kernels import cpu as ck

    path = ck.cpu_path()
    return None if path.isa != "none" else path.reason


def cpu_expert_records(rows: int, cols: int, tokens: Sequence[int], *, weights: Mapping[str, Any],
                       dtype: str = "bfloat16", repeat: int = 3, nthreads: int | None = None,
                       bandwidth: float | None = None, reference: bool = False, name: str = "") -> list[dict]:
    """Time one expert on this CPU at each token count: :func:`samoyeds_lab.bench.cpu.bench_expert`.

    Torch's dense ``F.linear`` (fp32, bf16 and fp16; the fastest is the baseline), the 2:4 and Samoyeds
    CPU kernels on the compressed operands in ``weights`` (:func:`samoyeds_lab.bench.cpu.make_weights`,
    reused across calls: pruning a 14336×4096 matrix takes seconds), the cache flushed before every
    timed call, medians of ``repeat``; ``reference``: also the pure-torch reference once (it rebuilds
    the dense weight on every call). Raises ``RuntimeError`` when no CPU kernel can run here.
    """
    from ..bench.cpu import bench_expert

    why = cpu_kernel_reason()
    if why is not None:
        raise RuntimeError(f"no CPU kernel can run on this machine ({why})")
    toks = [check_int("tokens", t, lo=1, hi=1 << 16) for t in tokens]
    if not toks:
        raise ValueError("tokens: expected at least one token count")
    if dtype not in _CPU_DTYPES:
        raise ValueError(f"dtype: expected one of {_CPU_DTYPES}, got {dtype!r}")
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("weights: expected {pattern: compressed weight} (bench.cpu.make_weights)")
    for pat, w in weights.items():
        if tuple(w.shape) != (rows, cols):
            raise ValueError(f"weights[{pat!r}]: expected shape {(rows, cols)}, got {tuple(w.shape)}")
    return bench_expert(rows, cols, toks, nthreads=nthreads, dtype=getattr(torch, dtype), patterns=tuple(weights),
                        repeat=check_int("repeat", repeat, lo=1), tiles=False, reference=reference,
                        bandwidth=bandwidth, name=name, weights=dict(weights))


def crossover_tokens(records: Sequence[Mapping[str, Any]], kind: str = "samoyeds") -> int | None:
    """The smallest measured token count from which the ``kind`` kernel is no faster than dense (None: it
    is faster at every measured count)."""
    pts = sorted((int(r["tokens"]), float(r["speedup"])) for r in records if r.get("kind") == kind)
    for i, (t, sp) in enumerate(pts):
        if sp <= 1.0 and all(s <= 1.0 for _, s in pts[i:]):
            return t
    return None


@dataclass
class CpuExpertView:
    """One :meth:`CpuExpertPanel.update`: the token count, every record measured so far, those at the
    token count, the figure and a summary."""

    settings: dict[str, Any]
    records: list[dict[str, Any]]
    current: list[dict[str, Any]]
    figure: go.Figure
    summary: str
    measured: bool


class CpuExpertPanel:
    """One expert GEMM timed on this CPU — dense vs 2:4 vs Samoyeds kernels — with a tokens-per-expert slider.

    Moving the slider measures that token count again (:func:`cpu_expert_records`, cache flushed, medians
    of ``repeat``) and redraws :func:`~samoyeds_lab.viz.kernels.cpu_expert_figure` with every token count
    measured so far, next to this CPU's byte ceilings (measured read bandwidth) and the GPU roofline
    ceilings of ``profile`` (a model). The compressed weights are made once and kept.

    Parameters
    ----------
    rows, cols : int
        The expert matrix (default Mixtral-8x7B's w1: 14336 × 4096).
    dtype : str
        Storage of weights and tokens (``"bfloat16"``, ``"float16"`` or ``"float32"``).
    weights : dict, optional
        ``{pattern: compressed weight}`` of that shape (:func:`samoyeds_lab.bench.cpu.make_weights`);
        made on first use otherwise.
    records : list of dict, optional
        Earlier measurements of the same weights (e.g. the lab's table) to start from.
    tokens : sequence of int
        The slider's token counts (default 1, 2, 4, … 256).
    value : int
        The slider's start.
    repeat, nthreads : timed calls per point, torch threads (default torch's).
    bandwidth : float, optional
        Read bandwidth in GB/s for the byte ceilings (default: measured once, :func:`bench.cpu.read_bandwidth`).
    profile : str or None
        GPU profile of the modelled ceilings (None: none drawn).
    """

    def __init__(self, rows: int = 14336, cols: int = 4096, *, dtype: str = "bfloat16",
                 weights: Mapping[str, Any] | None = None, records: Sequence[Mapping[str, Any]] = (),
                 tokens: Sequence[int] = CPU_TOKENS, value: int = 16, repeat: int = 3, nthreads: int | None = None,
                 bandwidth: float | None = None, profile: str | None = "h100_sxm") -> None:
        self.rows = check_int("rows", rows, lo=2)
        self.cols = check_int("cols", cols, lo=128)
        if dtype not in _CPU_DTYPES:
            raise ValueError(f"dtype: expected one of {_CPU_DTYPES}, got {dtype!r}")
        self.dtype = dtype
        self.tokens = tuple(check_int("tokens", t, lo=1, hi=1 << 16) for t in tokens)
        if not self.tokens:
            raise ValueError("tokens: expected at least one token count")
        if value not in self.tokens:
            raise ValueError(f"value: expected one of {self.tokens}, got {value!r}")
        self.repeat = check_int("repeat", repeat, lo=1)
        self.nthreads = None if nthreads is None else check_int("nthreads", nthreads, lo=1)
        if bandwidth is not None and not (isinstance(bandwidth, (int, float)) and bandwidth > 0):
            raise ValueError(f"bandwidth: expected GB/s > 0, got {bandwidth!r}")
        self.bandwidth = None if bandwidth is None else float(bandwidth)
        self.profile_name = profile
        self.weights = dict(weights) if weights is not None else None
        self._records: dict[int, list[dict[str, Any]]] = {}
        for r in records:
            if (int(r["rows"]), int(r["cols"])) != (self.rows, self.cols):
                raise ValueError(f"records: expected {self.rows}×{self.cols} records, got {r['rows']}×{r['cols']}")
            if r.get("kind") in CPU_KINDS:
                self._records.setdefault(int(r["tokens"]), []).append(dict(r))
        self._sweep = None
        self.controls: dict[str, widgets.ValueWidget] = {
            "tokens": widgets.SelectionSlider(options=self.tokens, value=value, description="tokens",
                                              continuous_update=False, style={"description_width": "70px"},
                                              layout=widgets.Layout(width="420px")),
        }
        self.status = widgets.HTML()
        self.figure_widget = go.FigureWidget(layout={"template": _TEMPLATE})
        self.controls["tokens"].observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.controls["tokens"], self.status]), self.figure_widget])
        self.last: CpuExpertView | None = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update(measure=False)
        display(self.widget)

    def _on_change(self, change: dict) -> None:
        self.update(measure=True)

    def options(self) -> dict[str, tuple]:
        """Every value each widget can take."""
        return {"tokens": self.tokens}

    def _gpu_sweep(self):
        if self.profile_name is None:
            return None
        if self._sweep is None:
            dt = self.dtype if self.dtype != "float32" else "float16"
            self._sweep = roofline_sweep(self.rows, self.cols, [t for t in DEFAULT_TOKENS if 0 < t <= 4096],
                                         self.profile_name, dt)
        return self._sweep

    def measure(self, tokens: int) -> list[dict[str, Any]]:
        """Time the expert at ``tokens`` now (weights and bandwidth made once) and keep the records."""
        from ..bench.cpu import make_weights, read_bandwidth, threads

        if self.weights is None:
            self.weights = make_weights(self.rows, self.cols, dtype=getattr(torch, self.dtype))
        if self.bandwidth is None:
            with threads(self.nthreads):
                self.bandwidth = read_bandwidth(1 << 28, repeat=3)
        recs = cpu_expert_records(self.rows, self.cols, [tokens], weights=self.weights, dtype=self.dtype,
                                  repeat=self.repeat, nthreads=self.nthreads, bandwidth=self.bandwidth)
        self._records[int(tokens)] = [r for r in recs if r["kind"] in CPU_KINDS]
        return self._records[int(tokens)]

    def update(self, *, measure: bool = True, **values: Any) -> CpuExpertView:
        """Move the slider to ``values`` (``tokens``), measure that count (``measure=False``: only when it has
        not been measured yet), redraw; return the view."""
        _set_controls(self, values)
        t = int(self.controls["tokens"].value)
        why = cpu_kernel_reason()
        if why is not None:
            fig = message_figure(f"No CPU kernel can run on this machine: {html.escape(why)}.<br>"
                                 "backend='auto' uses the tile-by-tile dense path here (never the whole dense "
                                 "weight), so there is no kernel to time.", title="CPU kernels")
            view = CpuExpertView(settings={"tokens": t}, records=[], current=[], figure=fig, measured=False,
                                 summary=f"<b>No CPU kernel here</b> ({html.escape(why)}).")
        else:
            did = measure or t not in self._records
            if did:
                self.measure(t)
            view = self.compute(t)
            view.measured = did
        _copy_into(self.figure_widget, view.figure, width=1000)
        self.status.value = view.summary
        self.last = view
        return view

    def compute(self, tokens: int) -> CpuExpertView:
        """The figure and summary of the records measured so far, with ``tokens`` highlighted (pure)."""
        if tokens not in self._records:
            raise ValueError(f"tokens: {tokens} has not been measured yet (measured: {sorted(self._records)})")
        recs = [r for t in sorted(self._records) for r in self._records[t]]
        cur = self._records[tokens]
        fig = cpu_expert_figure(recs, gpu_sweep=self._gpu_sweep(), highlight=tokens,
                                title=f"One {self.rows}×{self.cols} {self.dtype} expert on this CPU")
        by = {r["kind"]: r for r in cur}
        dense = min((r for r in cur if r["kind"] == "dense"), key=lambda r: r["ms"])
        parts = [f"<b>{tokens} token{'s' if tokens > 1 else ''}</b> ({html.escape(cpu_label(dense))}): "
                 f"dense {dense['ms']:.3g} ms ({dense['dtype']})"]
        for kind in ("samoyeds", "2:4"):
            if kind in by:
                r = by[kind]
                ceil = ""
                if r.get("ceiling_ms") and r.get("dense_ceiling_ms"):
                    ceil = f", byte ceiling {r['dense_ceiling_ms'] / r['ceiling_ms']:.2f}×"
                parts.append(f"{'Samoyeds' if kind == 'samoyeds' else '2:4'} kernel {r['ms']:.3g} ms = "
                             f"<b>{r['speedup']:.2f}×</b> dense{ceil}")
        lines = ["; ".join(parts) + "."]
        over = [k for k in ("samoyeds", "2:4") if k in by and by[k].get("ceiling_ms") and by[k].get("dense_ceiling_ms")
                and by[k]["speedup"] > by[k]["dense_ceiling_ms"] / by[k]["ceiling_ms"]]
        if over:
            r = by[over[0]]
            lines.append(f"Above the byte ratio: torch's fastest dense path ({html.escape(str(r['dense_dtype']))}) runs "
                         f"at {r['dense_ceiling_ms'] / r['dense_ms']:.0%} of the 16-bit weight's byte ceiling here (no "
                         "fast 16-bit GEMM on this CPU, or compute-bound at this token count), so the speed-up is not "
                         "bytes alone.")
        if "samoyeds" in by:
            kern = [r for r in recs if r["kind"] == "samoyeds"]
            x = crossover_tokens(kern)
            meas = ", ".join(str(int(r["tokens"])) for r in kern)
            lines.append(f"Measured so far at {meas} tokens: " + (
                f"the Samoyeds kernel is no faster than dense from {x} tokens upwards." if x is not None else
                "the Samoyeds kernel is faster than dense at every one of them."))
        if self._gpu_sweep() is not None and "samoyeds" in by:
            sw = self._gpu_sweep()
            d = {p.tokens: p.time_s for p in sw["dense"]}
            near = min(d, key=lambda v: abs(v - tokens))
            s_ = next(p for p in sw["ssmm"] if p.tokens == near)
            lines.append(f"GPU roofline on {html.escape(str(s_.profile))} (model) at {near} tokens: Samoyeds ≤ "
                         f"{d[near] / s_.time_s:.2f}× dense.")
        return CpuExpertView(settings={"tokens": tokens}, records=recs, current=list(cur), figure=fig,
                             summary="<br>".join(lines), measured=False)


# ---------------------------------------------------------------------------------------------- live
@dataclass
class LiveView:
    """One :meth:`LivePanel.update`: settings, records measured now, the figure and a summary."""

    settings: dict[str, Any]
    records: list[dict[str, Any]]
    figure: go.Figure
    summary: str
    mode: str


class LivePanel:
    """Run the GPU kernels now, with sliders (a machine with Sparse Tensor Cores; on a CPU the live timing
    is :class:`CpuExpertPanel`, the CPU kernels).

    Parameters
    ----------
    shapes : mapping model → (d_model, d_ffn)
        The models offered (``MODEL_SHAPES``).
    gpu_tokens : sequence of int
        The token counts of the slider.
    profile : str, optional
        GPU profile of the roofline drawn under live GPU measurements (default: the one matching
        this machine's GPU, see :func:`profile_for_device`).
    """

    def __init__(self, shapes: Mapping[str, tuple[int, int]], *,
                 gpu_tokens: Sequence[int] = (1, 8, 16, 64, 256, 1024, 4096), profile: str | None = None) -> None:
        if not isinstance(shapes, Mapping) or not shapes:
            raise ValueError("shapes: the live GPU panel needs the model shapes (MODEL_SHAPES)")
        self.mode = "gpu"
        self.shapes = dict(shapes)
        if profile is None:
            from ..device import device_info

            profile = profile_for_device(device_info().gpu_name)
        self.profile_name = profile
        self.profile = load_profile(profile)
        style = {"description_width": "70px"}
        lay = widgets.Layout(width="380px")
        self.controls = {
            "model": widgets.Dropdown(options=list(self.shapes), description="model", style=style, layout=lay),
            "matrix": widgets.ToggleButtons(options=list(expert_matrices(1, 1)), description="matrix",
                                            style={"description_width": "70px", "button_width": "130px"}),
            "tokens": widgets.SelectionSlider(options=tuple(gpu_tokens), value=tuple(gpu_tokens)[0],
                                              description="tokens", continuous_update=False, style=style,
                                              layout=lay),
            "dtype": widgets.ToggleButtons(options=_DTYPES, description="dtype",
                                           style={"description_width": "70px", "button_width": "90px"}),
        }
        self.status = widgets.HTML()
        self.figure_widget = go.FigureWidget(layout={"template": _TEMPLATE})
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox(list(self.controls.values())), self.status]),
                                    self.figure_widget])
        self.last: LiveView | None = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.widget)

    def _on_change(self, change: dict) -> None:
        self.update()

    def options(self) -> dict[str, tuple]:
        """Every value each widget can take."""
        out = {}
        for name, w in self.controls.items():
            opts = w.options
            out[name] = tuple(o[1] if isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) else o
                              for o in opts)
        return out

    def update(self, **values: Any) -> LiveView:
        """Move the widgets to ``values``, run the measurement, refresh the figure; return the view."""
        _set_controls(self, values)
        s = {name: w.value for name, w in self.controls.items()}
        view = self._run_gpu(**s)
        _copy_into(self.figure_widget, view.figure, width=980)
        self.status.value = view.summary
        self.last = view
        return view

    def _run_gpu(self, model: str, matrix: str, tokens: int, dtype: str) -> LiveView:
        from ..bench.kernels import run_kernel_bench

        m, k = expert_matrices(*self.shapes[model])[matrix]
        recs = [r for r in run_kernel_bench({model: self.shapes[model]}, (tokens,), dtype, profile=self.profile_name)
                if int(r["m"]) == m and int(r["k"]) == k]
        sweep = roofline_sweep(m, k, DEFAULT_TOKENS, self.profile, dtype)
        if recs:
            fig = roofline_figure(sweep, metric="time", records=recs, title=f"Measured now: {model} {matrix}")
            summary = "; ".join(f"{r['op']}: {float(r['ms']) * 1e3:.1f} µs ({recorded_label(r)})" for r in recs)
        else:
            fig = message_figure(f"The benchmark returned no record for {m}×{k}.", title="Live GPU run")
            summary = "no record"
        return LiveView(settings=dict(model=model, matrix=matrix, tokens=tokens, dtype=dtype), records=recs,
                        figure=fig, summary=summary, mode="gpu")
