"""Panels for Lab 02: the roofline explorer (with recorded GPU results on top) and the live timing panel.

:class:`RooflinePanel` — GPU profile, model, expert matrix and dtype dropdowns → time, effective TFLOP/s
and speed-up ceilings of dense / 2:4 / Samoyeds vs tokens per expert (a *model*), with any recorded
kernel bench results for that shape drawn on top ("recorded on DEVICE, DATE").

:class:`LivePanel` — runs something *now* when a slider moves. On a GPU with Sparse Tensor Cores
(``samoyeds_lab.kernels.available()``) it runs the kernel benchmark for one model / token count / dtype
and plots the measurement over the roofline; elsewhere it times the CPU references
(:func:`cpu_reference_records`) on a small shape, labelled "CPU reference, not Sparse Tensor Cores".

As in the other panels, all logic is in ``update()`` (tests drive every widget over its range); the
callbacks only call it, and figures reach the ``go.FigureWidget``\\ s through ``batch_update()``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from .._checks import check_int
from ..bench.roofline import DEFAULT_TOKENS, GPU_PROFILES, expert_matrices, roofline, roofline_sweep
from ..formats import SamoyedsWeight
from ..offload.hardware import load_profile
from .kernels import CPU_LABEL, cpu_timing_figure, recorded_label, roofline_figure, speedup_figure
from .panels import _copy_into
from .sparsity import _TEMPLATE, message_figure

__all__ = [
    "RooflinePanel", "RooflineView", "LivePanel", "LiveView", "cpu_reference_records", "CPU_SIZES", "CPU_TOKENS",
    "matching_records", "profile_for_device",
]

#: Matrix shapes (m, k) the CPU live timing offers (small: each call must take well under a second).
CPU_SIZES = ((256, 512), (512, 1024), (1024, 2048), (2048, 4096))
#: Token counts the CPU live timing offers.
CPU_TOKENS = (1, 4, 16, 64, 256)
_DTYPES = ("float16", "bfloat16")


def matching_records(records: Sequence[Mapping[str, Any]], *, m: int, k: int, dtype: str,
                     model: str | None = None) -> list[Mapping[str, Any]]:
    """The records of one weight shape ``(m, k)`` and ``dtype`` (and ``model`` when both name one)."""
    out = []
    for r in records:
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
        figures = {
            "time": roofline_figure(sweep, metric="time", records=recs, title=f"Time per GEMM, {what}", height=460),
            "tflops": roofline_figure(sweep, metric="tflops", records=recs, title=f"Effective TFLOP/s, {what}",
                                      height=460),
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


# ---------------------------------------------------------------------------------------------- CPU timing
def _cpu_device() -> str:
    return f"CPU {platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def cpu_reference_records(m: int, k: int, tokens: int, dtype: str = "float16", *, total_tokens: int | None = None,
                          repeat: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Time, on this CPU, the reference ``ssmm`` / ``spmm`` against a dense torch matmul on the same tokens.

    A random ``m × k`` weight is pruned to Samoyeds 1:2 V=128 + 2:4 and to 2:4; ``tokens`` of
    ``total_tokens`` (default ``4·tokens``) activation rows are selected. Timed (median of ``repeat``
    after one warm-up), each including the gather of the selected rows:

    * ``dense torch matmul (fp32)``: ``x[idx].float() @ W32ᵀ`` with the dense fp32 weight prepared once;
    * ``reference spmm (2:4)``: :func:`samoyeds_lab.reference.spmm` on ``x[idx]``;
    * ``reference ssmm (Samoyeds)``: :func:`samoyeds_lab.reference.ssmm` (gathers by itself).

    The references rebuild the dense weight from the compressed operand on every call and then run the
    same fp32 matmul, so on a CPU they are *expected* to be slower: they exist to define correct results.

    Returns
    -------
    list of dict
        One record per op: ``op, m, k, tokens, dtype, ms, device, date, backend`` (``"CPU reference"``),
        with ``check`` = the largest difference between the op's result and the dense fp32 product
        with the same pruned weight (0 up to fp32 summation order).
    """
    from ..prune import sparsify
    from ..reference import spmm, ssmm

    m = check_int("m", m, lo=2)
    k = check_int("k", k, lo=128)
    tokens = check_int("tokens", tokens, lo=1)
    repeat = check_int("repeat", repeat, lo=1)
    if m % 2 or k % 128:
        raise ValueError(f"m, k: expected m even and k a multiple of 128 (Samoyeds 1:2, V=128), got m={m}, k={k}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: expected one of {_DTYPES}, got {dtype!r}")
    total = tokens * 4 if total_tokens is None else check_int("total_tokens", total_tokens, lo=tokens)
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(seed)
    w = (0.02 * torch.randn(m, k, generator=g)).to(dt)
    x = torch.randn(total, k, generator=g).to(dt)
    idx = torch.randperm(total, generator=g)[:tokens].sort().values
    sam = sparsify(w, "samoyeds", n=1, m=2, vector=128)
    nm = sparsify(w, "2:4")
    assert isinstance(sam, SamoyedsWeight)
    w_sam32 = sam.to_dense().float()
    # the dense products with the same (pruned) weights, to check each result against
    refs = {"dense torch matmul (fp32)": x[idx].float() @ w_sam32.T,
            "reference spmm (2:4)": x[idx].float() @ nm.to_dense().float().T}
    refs["reference ssmm (Samoyeds)"] = refs["dense torch matmul (fp32)"]
    cases = {
        "dense torch matmul (fp32)": lambda: x[idx].float() @ w_sam32.T,
        "reference spmm (2:4)": lambda: spmm(nm, x[idx], out_dtype=torch.float32),
        "reference ssmm (Samoyeds)": lambda: ssmm(sam, x, idx, out_dtype=torch.float32),
    }
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    device = _cpu_device()
    out = []
    for op, fn in cases.items():
        ms = _median_ms(fn, repeat)
        check = float((fn() - refs[op]).abs().max())
        out.append(dict(op=op, m=m, k=k, tokens=tokens, dtype=dtype, ms=ms, device=device, date=date,
                        backend="CPU reference", check=check))
    return out


# ---------------------------------------------------------------------------------------------- live
@dataclass
class LiveView:
    """One :meth:`LivePanel.update`: settings, records measured now, the figure and a summary."""

    settings: dict[str, Any]
    records: list[dict[str, Any]]
    figure: go.Figure
    summary: str
    mode: str


def _kernels_available() -> bool:
    try:
        from .. import kernels
    except Exception:  # the GPU package is optional
        return False
    fn = getattr(kernels, "available", None)
    try:
        return bool(fn()) if callable(fn) else False
    except Exception:
        return False


class LivePanel:
    """Run now, with sliders: GPU kernels when this machine has Sparse Tensor Cores, CPU references otherwise.

    Parameters
    ----------
    shapes : mapping model → (d_model, d_ffn)
        The models of the GPU mode (``MODEL_SHAPES``); unused on CPU.
    mode : str, optional
        ``"gpu"`` or ``"cpu"``; default: ``"gpu"`` if ``samoyeds_lab.kernels.available()`` else ``"cpu"``.
    full_size : bool
        CPU mode: offer the largest :data:`CPU_SIZES` entry too (slower).
    repeat : int
        CPU mode: timed repetitions per op.
    gpu_tokens : sequence of int
        GPU mode: the token counts of the slider.
    profile : str, optional
        GPU profile of the roofline drawn under live GPU measurements (default: the one matching
        this machine's GPU, see :func:`profile_for_device`).
    """

    def __init__(self, shapes: Mapping[str, tuple[int, int]] | None = None, *, mode: str | None = None,
                 full_size: bool = False, repeat: int = 5, gpu_tokens: Sequence[int] = (1, 8, 16, 64, 256, 1024, 4096),
                 profile: str | None = None) -> None:
        mode = mode if mode is not None else ("gpu" if _kernels_available() else "cpu")
        if mode not in ("gpu", "cpu"):
            raise ValueError(f"mode: expected 'gpu' or 'cpu', got {mode!r}")
        if mode == "gpu" and not shapes:
            raise ValueError("shapes: the GPU mode needs the model shapes (MODEL_SHAPES)")
        self.mode = mode
        self.shapes = dict(shapes or {})
        self.repeat = check_int("repeat", repeat, lo=1)
        if profile is None:
            from ..device import device_info

            profile = profile_for_device(device_info().gpu_name)
        self.profile_name = profile
        self.profile = load_profile(profile)
        style = {"description_width": "70px"}
        lay = widgets.Layout(width="380px")
        if mode == "cpu":
            sizes = CPU_SIZES if full_size else CPU_SIZES[:-1]
            self.controls = {
                "size": widgets.SelectionSlider(options=[(f"{m}×{k}", (m, k)) for m, k in sizes], value=sizes[0],
                                                description="m × k", continuous_update=False, style=style, layout=lay),
                "tokens": widgets.SelectionSlider(options=CPU_TOKENS, value=16, description="tokens",
                                                  continuous_update=False, style=style, layout=lay),
                "dtype": widgets.ToggleButtons(options=_DTYPES, description="dtype",
                                               style={"description_width": "70px", "button_width": "90px"}),
            }
        else:
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
        view = self._run_cpu(**s) if self.mode == "cpu" else self._run_gpu(**s)
        _copy_into(self.figure_widget, view.figure, width=980)
        self.status.value = view.summary
        self.last = view
        return view

    def _run_cpu(self, size: tuple[int, int], tokens: int, dtype: str) -> LiveView:
        m, k = size
        recs = cpu_reference_records(m, k, tokens, dtype, repeat=self.repeat)
        dense = recs[0]["ms"]
        fig = cpu_timing_figure(recs, title=f"{m}×{k} weight, {tokens} of {4 * tokens} tokens, {dtype} storage")
        ratios = ", ".join(f"{r['op']}: {r['ms'] / dense:.2f}× the dense time" for r in recs[1:])
        summary = (f"<b>{CPU_LABEL}.</b> Measured now on {recs[0]['device']}: {ratios}. "
                   "On a CPU the sparse references are not expected to be faster: they expand the compressed "
                   "weight to dense on every call and then run the same fp32 matmul; CPUs have no Sparse "
                   "Tensor Cores. The speed-ups of this lab come from fewer HBM bytes and mma.sp on a GPU.")
        return LiveView(settings=dict(size=size, tokens=tokens, dtype=dtype), records=recs, figure=fig,
                        summary=summary, mode="cpu")

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
