r"""One MoE model served three ways — dense, Samoyeds dual-side sparse, offloaded — with accuracy, time and
memory side by side, each number labelled with where it comes from (Lab 08).

The model is the shipped tiny MoE (:class:`~samoyeds_lab.moe.TinyMoEForCausalLM`, ``data/tiny_moe``).

=============  ==========================================================================================
way            what runs
=============  ==========================================================================================
``dense``      every expert resident, fp16-sized, the ``"grouped"`` backend (one sort, three matmuls per
               expert, one scatter).
``samoyeds``   experts pruned to the Samoyeds pattern (1 of 2 rows per ``V``-wide window of K, 2:4
               inside; 25% of the weights) with Wanda on *train*-split calibration text
               (:func:`~samoyeds_lab.moe.accuracy.prune_model`), compressed, run by the ``"samoyeds"``
               backend: compressed weights × the tokens routed to each expert (``ssmm``; the CUDA kernel
               on an SM80+ GPU, the CPU kernels of :mod:`samoyeds_lab.kernels.cpu` on a CPU).
``offloaded``  the dense model with its experts living in host memory and a GPU cache of
               ``capacity`` experts; the shipped held-out routing traces of this checkpoint
               (``data/traces``) are replayed through :func:`~samoyeds_lab.offload.simulate.simulate_offload`
               for every policy of :data:`OFFLOAD_POLICIES`; the best by modelled latency is served, and
               Belady's offline optimum is shown as the bound no demand-paging policy beats.
=============  ==========================================================================================

Numbers and their provenance
----------------------------
* **Accuracy** (live): held-out perplexity ``exp(mean next-byte NLL)`` per domain on a small slice
  (``eval_tokens`` bytes per domain) of the corpus *held-out* split, with
  :func:`samoyeds_lab.moe.train.evaluate`; the Samoyeds way is evaluated *through the samoyeds backend*.
  Offloading moves weights and never changes them, and the router still decides (a predictor only
  prefetches; a miss is a demand load), so the offloaded way computes exactly what the dense way
  computes: its perplexity *is* the dense one (labelled so, not re-measured).
  **Accuracy** (recorded): the dense and Samoyeds rows of ``data/accuracy/tiny_moe_sparsity.json``
  (whole held-out split, one-shot and after the recorded mask-preserving recovery fine-tune).
* **Time** (measured): wall time of a forward pass over ``time_tokens`` held-out bytes, divided by the
  bytes, on this machine (``"dense"`` and ``"samoyeds"`` backends). On a CPU the ``"samoyeds"`` backend
  runs the CPU kernels (compressed operand read directly, :func:`samoyeds_cpu_path` says which); the tiny
  model's expert matrices (fp32, 256 × 128: 128 kB each, cache-resident) leave few bytes to save, and
  :func:`expert_call_times` times one expert GEMM alone so the lab can say where the time goes
  (``EndToEndResult.expert_calls``).
  The offloaded way has no measured time here (this machine has no host/GPU split to measure).
* **Time** (model): expert GEMM time per token at a real model's expert shapes (default Mixtral-8x7B,
  ``d_model = 4096``, ``d_ffn = 14336``) on a GPU profile (default H100 SXM), over the same recorded
  routing (``batch_tokens`` consecutive tokens per decode step; step ``s`` of layer ``l`` runs each
  expert ``e`` it needs on its ``n_{s,e}`` tokens)::

      T_dense    = Σ_s Σ_{e ∈ need(s)} [ 2·R_dense(d_ffn, d_model, n_{s,e}) + R_dense(d_model, d_ffn, n_{s,e}) ]
      T_samoyeds = the same with R_ssmm                       (R = roofline ceiling, bench.roofline)
      T_offload  = offload_latency(...).total_s               (compute + demand stalls + exposed prefetch)

  divided by the tokens. The roofline and the offload model are ceilings on datasheet peaks, not
  measurements; they share the same routing, shapes and GPU profile.
* **Memory**: expert bytes resident on the accelerator for the *tiny* model: dense = fp16 bytes of all
  routed-expert weights; Samoyeds = the compressed operands' ``.nbytes`` at fp16 values; offloaded =
  ``capacity`` dense experts (the GPU budget) + the prefetch predictor's weights when the chosen policy
  needs one (``sida``: the shipped SiDA predictor's trainable parameters; ``next_layer`` reuses the
  routers, 0 extra bytes). The fractions of dense carry over to any model with the same layout.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .._checks import check_int

__all__ = [
    "WAYS",
    "WAY_LABELS",
    "OFFLOAD_POLICIES",
    "BOUND_POLICY",
    "WayResult",
    "PolicyResult",
    "OffloadChoice",
    "EndToEndResult",
    "expert_step_counts",
    "modelled_expert_time",
    "offload_policy_sweep",
    "offload_budget_curve",
    "measure_time_per_token",
    "recorded_accuracy",
    "train_popularity",
    "gpu_section",
    "serve_three_ways",
    "expert_call_times",
    "samoyeds_cpu_path",
]

#: The three ways, in table order.
WAYS = ("dense", "samoyeds", "offloaded")
#: Row labels.
WAY_LABELS = {"dense": "dense (grouped)", "samoyeds": "Samoyeds dual-side sparse", "offloaded": "offloaded"}
#: Non-oracle offload policies the best one is chosen from (by modelled latency).
OFFLOAD_POLICIES = ("lru", "lfu", "static", "sida", "next_layer")
#: The offline optimum shown as a bound (it needs the future, so it is never "chosen").
BOUND_POLICY = "belady"
_REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class WayResult:
    """Accuracy, time and memory of one way, each with its provenance.

    Attributes
    ----------
    way, label : str
        One of :data:`WAYS`, and its row label.
    ppl : dict
        Live held-out perplexity ``{domain…, "overall"}``.
    ppl_source : str
        Where ``ppl`` comes from (e.g. ``"live, 1,020 held-out bytes/domain, samoyeds backend"``).
    recorded_ppl, recorded_recovered_ppl : float or None
        Overall perplexity of the recorded sweep (whole held-out split): right after pruning, and after
        the recorded recovery fine-tune (None when the file has no such record).
    recorded_source : str or None
        ``"recorded <UTC date>, …"``.
    measured_ms_per_token : float or None
        Wall time of a forward pass per token on this machine (None: not measurable here).
    measured_source : str
        The machine and backend, or why there is no measurement.
    model_ms_per_token : float
        Modelled expert time per token (all MoE layers of the trace), see the module docstring.
    model_source : str
        ``"model: …"`` (shapes, GPU profile, batch).
    expert_bytes : int
        Expert bytes resident on the accelerator (tiny model).
    dense_expert_bytes : int
        The dense fp16 bytes of all routed experts (the denominator of :attr:`memory_fraction`).
    memory_source : str
        How ``expert_bytes`` is counted.
    """

    way: str
    label: str
    ppl: dict
    ppl_source: str
    recorded_ppl: float | None
    recorded_recovered_ppl: float | None
    recorded_source: str | None
    measured_ms_per_token: float | None
    measured_source: str
    model_ms_per_token: float
    model_source: str
    expert_bytes: int
    dense_expert_bytes: int
    memory_source: str

    @property
    def memory_fraction(self) -> float:
        """``expert_bytes / dense_expert_bytes``."""
        return self.expert_bytes / self.dense_expert_bytes


@dataclass(frozen=True)
class PolicyResult:
    """One offload policy replayed over the held-out traces (all domains together).

    ``hit_rate`` = hits / expert accesses; ``ms_per_token`` = modelled total per token; its parts
    ``compute_ms``, ``stall_ms`` (demand loads), ``prefetch_exposed_ms`` (prefetch not hidden behind the
    previous step's compute) per token; ``demand_loads``, ``prefetches``; ``slowdown`` = total /
    all-resident.
    """

    policy: str
    hit_rate: float
    ms_per_token: float
    compute_ms: float
    stall_ms: float
    prefetch_exposed_ms: float
    demand_loads: int
    prefetches: int
    slowdown: float


@dataclass(frozen=True)
class OffloadChoice:
    """Every policy's modelled result and the chosen one.

    Attributes
    ----------
    policies : dict
        ``{policy: PolicyResult}`` for :data:`OFFLOAD_POLICIES` and :data:`BOUND_POLICY`.
    best : str
        The non-oracle policy with the smallest ``ms_per_token`` (ties: the earlier in
        :data:`OFFLOAD_POLICIES`).
    capacity : int
        Experts the GPU cache holds (all layers together with ``scope="global"``).
    num_slots : int
        ``layers · experts``: every expert of the trace.
    scope : str
    batch_tokens : int
    tokens : int
        Tokens replayed (all domains).
    """

    policies: dict
    best: str
    capacity: int
    num_slots: int
    scope: str
    batch_tokens: int
    tokens: int

    @property
    def bound(self) -> PolicyResult:
        """Belady's result (offline optimum of demand paging)."""
        return self.policies[BOUND_POLICY]

    def ranking(self) -> list[str]:
        """Non-oracle policies from best to worst by modelled time per token."""
        return sorted(OFFLOAD_POLICIES, key=lambda p: (self.policies[p].ms_per_token, OFFLOAD_POLICIES.index(p)))


@dataclass(frozen=True)
class EndToEndResult:
    """What :func:`serve_three_ways` measured and modelled.

    Attributes
    ----------
    ways : tuple of WayResult
        In :data:`WAYS` order.
    offload : OffloadChoice
    settings : dict
        The arguments (sizes, seed, pattern, shapes, profile…).
    machine : dict
        :func:`samoyeds_lab.bench.timing.environment_record` of this run.
    backend_max_abs_diff : float
        Largest logit difference between the ``"samoyeds"`` backend and ``"grouped"`` on the same pruned
        weights (the compressed operands compute what the dense pruned weights compute).
    trace_is_shipped_checkpoint : bool
        The replayed traces were recorded on the checkpoint that was served.
    expert_calls : dict
        On a CPU, :func:`expert_call_times` of one pruned expert of the served model (why the measured
        Samoyeds time is what it is); empty on a GPU.
    replay : dict
        What the offload replay ran on, for :func:`offload_budget_curve` and the lab's budget slider:
        ``{"traces", "predictions", "popularity", "num_experts", "scope", "batch_tokens", "shape",
        "profile", "link"}``.
    """

    ways: tuple
    offload: OffloadChoice
    settings: dict
    machine: dict
    backend_max_abs_diff: float
    trace_is_shipped_checkpoint: bool
    replay: dict = field(default_factory=dict, repr=False)
    expert_calls: dict = field(default_factory=dict)

    def way(self, name: str) -> WayResult:
        """The :class:`WayResult` of ``name`` (one of :data:`WAYS`)."""
        for w in self.ways:
            if w.way == name:
                return w
        raise ValueError(f"name: expected one of {WAYS}, got {name!r}")

    def table_rows(self) -> list[dict]:
        """One plain dict per way, the columns of the lab's table (numbers + provenance strings)."""
        rows = []
        for w in self.ways:
            rows.append({
                "way": w.label,
                "ppl_live": w.ppl["overall"], "ppl_source": w.ppl_source,
                "ppl_recorded": w.recorded_ppl, "ppl_recorded_recovered": w.recorded_recovered_ppl,
                "recorded_source": w.recorded_source,
                "cpu_ms_per_token": w.measured_ms_per_token, "measured_source": w.measured_source,
                "model_ms_per_token": w.model_ms_per_token, "model_source": w.model_source,
                "expert_bytes": w.expert_bytes, "memory_fraction": w.memory_fraction,
                "memory_source": w.memory_source,
            })
        return rows


# ---------------------------------------------------------------------------------------------- checks
def _check_topk(name: str, topk: object) -> np.ndarray:
    if isinstance(topk, torch.Tensor):
        topk = topk.detach().cpu().numpy()
    if not isinstance(topk, np.ndarray) or topk.ndim != 3 or topk.dtype.kind not in "iu":
        got = f"{type(topk).__name__}" + (f" {topk.dtype} {topk.shape}" if isinstance(topk, np.ndarray) else "")
        raise ValueError(f"{name}: expected an int array [layers, tokens, k], got {got}")
    if min(topk.shape) < 1:
        raise ValueError(f"{name}: expected every size >= 1, got shape {topk.shape}")
    return topk.astype(np.int64, copy=False)


def _check_shape(shape: object) -> tuple[str, int, int]:
    """``"Mixtral-8x7B"`` (a key of MODEL_SHAPES) or ``(d_model, d_ffn)`` → (label, d_model, d_ffn)."""
    from .kernels import MODEL_SHAPES

    if isinstance(shape, str):
        if shape not in MODEL_SHAPES:
            raise ValueError(f"shape: expected one of {tuple(MODEL_SHAPES)} or (d_model, d_ffn), got {shape!r}")
        d, f = MODEL_SHAPES[shape]
        return shape, d, f
    if isinstance(shape, (tuple, list)) and len(shape) == 2:
        d = check_int("shape[0] (d_model)", shape[0], lo=1)
        f = check_int("shape[1] (d_ffn)", shape[1], lo=1)
        return f"{d}×{f}", d, f
    raise TypeError(f"shape: expected a model name or a (d_model, d_ffn) pair, got {shape!r}")


# ---------------------------------------------------------------------------------------------- model
def expert_step_counts(topk_ids, num_experts: int, batch_tokens: int = 1) -> np.ndarray:
    """Tokens per (decode step, layer, needed expert): ``n_{s,e}`` of every expert access, int64 ``[accesses]``.

    Thin wrapper of :func:`samoyeds_lab.offload.simulate.expert_accesses` (``.counts``): the tokens of
    each step are ``batch_tokens`` consecutive tokens of the trace, and an expert is counted once per
    step with the number of the step's tokens routed to it.
    """
    from ..offload.simulate import expert_accesses

    return expert_accesses(_check_topk("topk_ids", topk_ids), num_experts, batch_tokens).counts


def modelled_expert_time(
    topk_ids,
    num_experts: int,
    *,
    op: str = "dense",
    shape: str | tuple[int, int] = "Mixtral-8x7B",
    profile: str = "h100_sxm",
    batch_tokens: int = 1,
    dtype: str = "float16",
) -> float:
    r"""Modelled seconds of all expert GEMMs for a routing trace, at a real model's expert shapes.

    .. math::
        T = \sum_{s}\sum_{e \in need(s)} \big[2\,R_{op}(d_{ffn}, d_{model}, n_{s,e})
            + R_{op}(d_{model}, d_{ffn}, n_{s,e})\big]

    with :math:`R_{op}(m, k, n)` the roofline ceiling (:func:`samoyeds_lab.bench.roofline.roofline`) of
    ``op`` (``"dense"``, ``"spmm"`` = 2:4, ``"ssmm"`` = Samoyeds 1:2 V=128 + 2:4) for an ``m × k``
    weight on ``n`` tokens: gate and up are ``d_ffn × d_model``, down is ``d_model × d_ffn``. A model,
    not a measurement. Divide by the trace's tokens for time per token.

    Parameters
    ----------
    topk_ids : array_like of int, shape (layers, tokens, k)
    num_experts : int
    op : str
    shape : str or (int, int)
        A key of :data:`samoyeds_lab.bench.kernels.MODEL_SHAPES` or ``(d_model, d_ffn)``.
    profile : str
        GPU profile (``data/hardware``).
    batch_tokens : int
        Consecutive tokens per decode step.
    dtype : str
        ``"float16"`` or ``"bfloat16"``.
    """
    from .roofline import roofline

    _, d, f = _check_shape(shape)
    counts = expert_step_counts(topk_ids, num_experts, batch_tokens)
    uniq, mult = np.unique(counts, return_counts=True)
    total = 0.0
    for n, c in zip(uniq.tolist(), mult.tolist()):
        t = 2 * roofline(op, f, d, n, profile, dtype).time_s + roofline(op, d, f, n, profile, dtype).time_s
        total += c * t
    return float(total)


def offload_policy_sweep(
    traces: Mapping[str, Any],
    num_experts: int,
    *,
    capacity: int,
    predictions: Mapping[str, Mapping[str, Any]] | None = None,
    popularity=None,
    policies: Sequence[str] = OFFLOAD_POLICIES + (BOUND_POLICY,),
    scope: str = "global",
    batch_tokens: int = 1,
    shape: str | tuple[int, int] = "Mixtral-8x7B",
    profile: str = "h100_sxm",
    link=None,
) -> OffloadChoice:
    """Replay every domain's trace through every policy and pick the best non-oracle one by modelled latency.

    Each domain is replayed from a cold cache (its own run of :func:`simulate_offload`) and the totals of
    the domains are added. Expert bytes and FLOP are those of the ``shape`` model at fp16
    (``S = 3·d·f·2`` bytes, ``6·d·f`` FLOP per token); time from :func:`offload_latency` on ``profile``
    (link default: the profile's).

    Parameters
    ----------
    traces : mapping
        ``{domain: topk_ids [layers, tokens, k]}`` (same layers and k for all).
    num_experts : int
    capacity : int
        Experts the GPU holds (1 ≤ capacity ≤ layers·experts for ``scope="global"``; per-layer split
        otherwise, see :func:`simulate_offload`).
    predictions : mapping, optional
        ``{domain: {"sida": pred, "next_layer": pred}}`` aligned with ``traces``; required when
        ``"sida"`` or ``"next_layer"`` is in ``policies``.
    popularity : array_like, shape (layers, experts), optional
        Scores for ``"static"`` (from a *profiling* trace, e.g. :func:`train_popularity`); without it the
        simulator pins each trace's own most used experts (an oracle hot set).
    policies : sequence of str
        Must include at least one of :data:`OFFLOAD_POLICIES`.
    scope, batch_tokens : as :func:`simulate_offload`.
    shape, profile, link : the model shape, GPU profile and link of the latency model.

    Returns
    -------
    OffloadChoice
    """
    from ..offload.simulate import offload_latency, simulate_offload

    if not isinstance(traces, Mapping) or not traces:
        raise ValueError(f"traces: expected a non-empty mapping {{domain: topk_ids}}, got {traces!r}")
    arrays = {dom: _check_topk(f"traces[{dom!r}]", t) for dom, t in traces.items()}
    shapes = {a.shape[0::2] for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"traces: expected the same layers and k in every domain, got (layers, k) {sorted(shapes)}")
    L = next(iter(arrays.values())).shape[0]
    E = check_int("num_experts", num_experts, lo=1)
    capacity = check_int("capacity", capacity, lo=1)
    if isinstance(policies, str) or not policies:
        raise ValueError(f"policies: expected a non-empty list of policy names, got {policies!r}")
    policies = list(dict.fromkeys(policies))
    allowed = OFFLOAD_POLICIES + (BOUND_POLICY,)
    for p in policies:
        if p not in allowed:
            raise ValueError(f"policies: expected names from {allowed}, got {p!r}")
    if not any(p in OFFLOAD_POLICIES for p in policies):
        raise ValueError(f"policies: expected at least one non-oracle policy of {OFFLOAD_POLICIES}, got {policies}")
    needs_pred = [p for p in policies if p in ("sida", "next_layer")]
    if needs_pred:
        if not isinstance(predictions, Mapping):
            raise ValueError(f"predictions: required by policies {needs_pred} ({{domain: {{policy: pred}}}}), "
                             f"got {type(predictions).__name__}")
        for dom in arrays:
            for p in needs_pred:
                if dom not in predictions or p not in predictions[dom]:
                    raise ValueError(f"predictions: expected {p!r} predictions for domain {dom!r}")
    _, d, f = _check_shape(shape)
    S = 3 * d * f * 2
    flops = 6.0 * d * f
    out: dict[str, PolicyResult] = {}
    tokens = sum(a.shape[1] for a in arrays.values())
    for pol in policies:
        hits = acc = dl = pf = 0
        comp = stall = exp_ = total = resident = 0.0
        for dom, a in arrays.items():
            kw: dict[str, Any] = {}
            if pol in ("sida", "next_layer"):
                pr = predictions[dom][pol]
                kw["predicted"] = pr.detach().cpu().numpy() if isinstance(pr, torch.Tensor) else np.asarray(pr)
            if pol == "static" and popularity is not None:
                kw["popularity"] = popularity
            st = simulate_offload(a, E, policy=pol, capacity=capacity, expert_bytes=S, scope=scope,
                                  batch_tokens=batch_tokens, **kw)
            lat = offload_latency(st, profile_gpu=profile, expert_flops=flops, link=link)
            hits += st.hits
            acc += st.num_accesses
            dl += st.demand_loads
            pf += st.prefetches
            comp += lat.compute_s
            stall += lat.stall_s
            exp_ += lat.prefetch_exposed_s
            total += lat.total_s
            resident += lat.all_resident_s
        out[pol] = PolicyResult(policy=pol, hit_rate=hits / acc, ms_per_token=total / tokens * 1e3,
                                compute_ms=comp / tokens * 1e3, stall_ms=stall / tokens * 1e3,
                                prefetch_exposed_ms=exp_ / tokens * 1e3, demand_loads=dl, prefetches=pf,
                                slowdown=total / resident if resident > 0 else float("nan"))
    candidates = [p for p in OFFLOAD_POLICIES if p in out]
    best = min(candidates, key=lambda p: (out[p].ms_per_token, OFFLOAD_POLICIES.index(p)))
    return OffloadChoice(policies=out, best=best, capacity=capacity, num_slots=L * E, scope=scope,
                         batch_tokens=batch_tokens, tokens=tokens)


def offload_budget_curve(replay: Mapping[str, Any], capacities: Sequence[int], *,
                         progress: bool = False) -> dict[int, OffloadChoice]:
    """:func:`offload_policy_sweep` at every GPU budget in ``capacities`` (experts), on the inputs of
    ``EndToEndResult.replay``: ``{capacity: OffloadChoice}``. ``progress``: a tqdm bar."""
    keys = ("traces", "predictions", "popularity", "num_experts")
    if not isinstance(replay, Mapping) or any(k not in replay for k in keys):
        raise ValueError(f"replay: expected EndToEndResult.replay (a dict with keys {keys}), got {type(replay).__name__}")
    if isinstance(capacities, (str, bytes)) or not isinstance(capacities, Sequence) or not capacities:
        raise ValueError(f"capacities: expected a non-empty sequence of ints, got {capacities!r}")
    caps = [check_int("capacities[i]", c, lo=1) for c in capacities]
    it = caps
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(caps, desc="GPU budgets", unit="budget", leave=False)
    extra = {k: replay[k] for k in ("scope", "batch_tokens", "shape", "profile", "link") if k in replay}
    return {c: offload_policy_sweep(replay["traces"], replay["num_experts"], capacity=c,
                                    predictions=replay["predictions"], popularity=replay["popularity"], **extra)
            for c in it}


# ---------------------------------------------------------------------------------------------- measurement
def measure_time_per_token(model, input_ids: torch.Tensor, *, backend: str, repeat: int = 3,
                           warmup: int = 1) -> float:
    """Median wall seconds of ``model(input_ids)`` with every MoE block on ``backend``, per input token.

    On a CUDA model the device is synchronised around each call. The model's backend is restored after.
    """
    from ..moe.block import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.numel() == 0:
        raise ValueError(f"input_ids: expected a non-empty [batch, seq] tensor, got {getattr(input_ids, 'shape', input_ids)!r}")
    repeat = check_int("repeat", repeat, lo=1)
    warmup = check_int("warmup", warmup, lo=0)
    blocks = model.moe_blocks()
    before = [b.backend for _, b in blocks]
    dev = next(model.parameters()).device
    x = input_ids.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    try:
        model.set_backend(backend)
        with torch.no_grad():
            for i in range(warmup + repeat):
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        for (_, b), be in zip(blocks, before):
            b.backend = be
    return float(np.median(times)) / x.numel()


def samoyeds_cpu_path() -> str:
    """What the ``"samoyeds"`` backend runs on CPU tensors here: ``"CPU kernels (avx512)"`` or, without a
    CPU kernel, ``"dense tiles (…why…)"`` (:func:`samoyeds_lab.kernels.cpu.cpu_path`)."""
    from ..kernels import cpu as ck

    path = ck.cpu_path()
    return f"CPU kernels ({path.isa})" if path.isa != "none" else f"dense tiles ({path.reason})"


def expert_call_times(weight, x: torch.Tensor, tokens: Sequence[int] = (1, 64), *, repeat: int = 20) -> dict:
    """One expert GEMM alone, on the CPU: the ``ssmm`` of the ``"samoyeds"`` backend on the compressed
    ``weight`` (argument checks, token gather and epilogue included), the bare CPU kernel
    (:func:`samoyeds_lab.kernels.cpu.kernel_gemm`, None without one) and torch's dense ``F.linear`` on the
    same pruned weight, at each token count.

    Shows where the time of a small model's sparse forward goes: with a weight of a few hundred kB (in
    cache) the bytes saved are worth well under a microsecond, while each call has a fixed cost.

    Parameters
    ----------
    weight : SamoyedsWeight or NMWeight
        A compressed expert operand (``SwiGLUExperts.compressed[...]``), on the CPU.
    x : torch.Tensor
        ``[T, cols]`` activations; the first ``n`` rows are gathered for ``n`` tokens.
    tokens : sequence of int
        Token counts (each ≤ ``T``).
    repeat : int
        Timed calls per point (median, after one warm-up).

    Returns
    -------
    dict
        ``{"rows", "cols", "dtype", "dense_bytes", "compressed_bytes", "path", "calls": [{"tokens",
        "samoyeds_us", "kernel_us", "dense_us"}, …]}`` (medians in µs).
    """
    import torch.nn.functional as F

    from ..kernels import ssmm
    from .moe_layer import time_cpu

    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.device.type != "cpu":
        raise ValueError(f"x: expected a 2-D CPU tensor [T, cols], got {getattr(x, 'shape', type(x).__name__)}")
    rows, cols = (int(v) for v in weight.shape)
    if x.shape[1] != cols:
        raise ValueError(f"x: expected {cols} columns (the weight's), got {x.shape[1]}")
    repeat = check_int("repeat", repeat, lo=1)
    toks = [check_int("tokens", n, lo=1, hi=x.shape[0]) for n in tokens]
    if not toks:
        raise ValueError("tokens: expected at least one token count")
    from ..kernels import cpu as ck

    dense = weight.to_dense().to(x.dtype)
    has_kernel = ck.cpu_path().isa != "none" and ck.cpu_unsupported(weight) is None
    calls = []
    for n in toks:
        idx = torch.arange(n)
        xn = x[:n]
        t_s = time_cpu(lambda: ssmm(weight, x, idx), repeat=repeat)
        t_k = time_cpu(lambda: ck.kernel_gemm(weight, x, idx), repeat=repeat) if has_kernel else None
        t_d = time_cpu(lambda: F.linear(xn, dense), repeat=repeat)
        calls.append({"tokens": n, "samoyeds_us": t_s * 1e6, "kernel_us": None if t_k is None else t_k * 1e6,
                      "dense_us": t_d * 1e6})
    return {"rows": rows, "cols": cols, "dtype": str(x.dtype).removeprefix("torch."),
            "dense_bytes": rows * cols * x.element_size(), "compressed_bytes": int(weight.nbytes),
            "path": samoyeds_cpu_path(), "calls": calls}


def recorded_accuracy(sweep: Mapping[str, Any], label: str) -> dict | None:
    """``{"ppl", "recovered_ppl", "source"}`` of the record ``label`` of a recorded sweep
    (:func:`samoyeds_lab.moe.accuracy.load_sweep`), or None if the sweep has no such record."""
    if not isinstance(sweep, Mapping) or "records" not in sweep:
        raise ValueError("sweep: expected a recorded sweep dict (load_sweep) with 'records'")
    for r in sweep["records"]:
        if r.get("label") == label:
            rec = r.get("recovered_ppl")
            steps = (r.get("recovery") or {}).get("steps")
            n = (r.get("eval_tokens") or {}).get("overall")
            src = (f"recorded {str(sweep.get('created_utc', '?'))[:10]}, whole held-out split"
                   + (f" ({n:,} bytes)" if isinstance(n, int) else "")
                   + (f"; recovered = after {steps} fine-tune steps" if rec else ""))
            return {"ppl": float(r["heldout_ppl"]["overall"]),
                    "recovered_ppl": None if not rec else float(rec["overall"]), "source": src}
    return None


@torch.no_grad()
def train_popularity(model, windows: torch.Tensor, *, batch: int = 8) -> np.ndarray:
    """Expert use counts ``[layers, experts]`` (all top-k slots) of ``model`` on ``windows`` (train text):
    the profile a ``"static"`` offload policy pins its hot set from, without looking at the held-out trace."""
    if not isinstance(windows, torch.Tensor) or windows.ndim != 2 or windows.numel() == 0:
        raise ValueError(f"windows: expected a non-empty [n, seq] int tensor, got {getattr(windows, 'shape', windows)!r}")
    blocks = model.moe_blocks()
    E = model.config.num_experts
    counts = np.zeros((len(blocks), E), np.int64)
    was = model.training
    model.eval()
    try:
        for i in range(0, windows.shape[0], batch):
            model(windows[i: i + batch].to(next(model.parameters()).device))
            for li, (_, b) in enumerate(blocks):
                ids = b.last_router_output.topk_ids.reshape(-1).cpu()
                counts[li] += torch.bincount(ids, minlength=E).numpy()
    finally:
        model.train(was)
    return counts


def gpu_section(records: Sequence[Mapping[str, Any]] | None = None) -> dict:
    """What changes on a GPU: whether the kernels run here, and the recorded GPU kernel results.

    Parameters
    ----------
    records : sequence of dict, optional
        Kernel bench records (default :func:`samoyeds_lab.bench.kernels.load_kernel_records`).

    Returns
    -------
    dict
        ``{"kernels_available": bool, "banner": str, "records": list, "devices": [(device, date)…],
        "text": str}`` — ``text`` states plainly that none have been recorded when ``records`` is empty.
    """
    from ..device import device_info
    from ..kernels import available
    from .kernels import load_kernel_records

    recs = list(load_kernel_records() if records is None else records)
    info = device_info()
    avail = bool(available())
    devices = sorted({(str(r.get("device")), str(r.get("date"))) for r in recs})
    if avail:
        here = (f"This machine runs the CUDA kernels ({info.gpu_name}): the timing cells above measured the "
                f"real kernels.")
    else:
        here = ("This machine has no usable GPU: the timing cells above measured the CPU path ("
                + samoyeds_cpu_path() + "); on an SM80+ GPU with CuPy the same cells time the CUDA kernels.")
    if recs:
        rec = "Recorded GPU kernel results: " + "; ".join(f"{d} ({day})" for d, day in devices) + "."
    else:
        rec = ("No GPU kernel results have been recorded yet (data/bench/gpu_kernels*.json is absent); "
               "`samoyeds-lab bench kernels` on a GPU machine records them.")
    return {"kernels_available": avail, "banner": info.banner(), "records": recs, "devices": devices,
            "text": here + " " + rec}


# ---------------------------------------------------------------------------------------------- the lab
def _on(model, device: torch.device, dtype: torch.dtype):
    """``model`` itself on the CPU; a copy in ``dtype`` on a GPU (the compressed operands move with it)."""
    if device.type == "cpu":
        return model
    import copy

    return copy.deepcopy(model).to(device=device, dtype=dtype)


def _env(device: torch.device, threads: int) -> dict:
    import platform

    from .timing import environment_record

    env = environment_record()
    env["threads"] = threads
    if device.type == "cpu":
        env["device"] = f"{os.cpu_count()}-core CPU ({platform.machine()})"
    return env


def serve_three_ways(
    model_dir: str | os.PathLike | None = None,
    *,
    eval_tokens: int = 1024,
    calib_tokens: int = 2048,
    method: str = "wanda",
    vector: int = 128,
    time_tokens: int = 256,
    repeat: int = 3,
    trace_tokens: int | None = 2048,
    capacity: int | None = None,
    scope: str = "global",
    batch_tokens: int = 1,
    shape: str | tuple[int, int] = "Mixtral-8x7B",
    profile: str = "h100_sxm",
    link=None,
    domains: Sequence[str] | None = None,
    sweep_path: str | os.PathLike | None = None,
    trace_dir: str | os.PathLike | None = None,
    sida_dir: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    progress: bool | Callable[[str], None] = False,
) -> EndToEndResult:
    """Serve the shipped tiny MoE three ways and measure / model accuracy, time and memory of each.

    See the module docstring for what each way runs and where every number comes from.

    Parameters
    ----------
    model_dir : path, optional
        Checkpoint directory (default ``data/tiny_moe``).
    eval_tokens : int
        Held-out bytes per domain for the live perplexities (``max(1, eval_tokens // 256)`` windows).
    calib_tokens : int
        Train-split calibration bytes for Wanda (and for the ``static`` policy's popularity profile).
    method : {"wanda", "magnitude"}
        Pruning scores of the Samoyeds way.
    vector : int
        Samoyeds window ``V`` (the kernel's is 128).
    time_tokens : int
        Held-out bytes of the timed forward pass (one window of ``min(time_tokens, max_seq)`` bytes per
        ``max_seq``).
    repeat : int
        Timed repetitions (median).
    trace_tokens : int or None
        First tokens of each domain's shipped trace to replay (None = all 8,192).
    capacity : int, optional
        GPU expert budget of the offloaded way; default ``round(layers·experts · Samoyeds bytes / dense
        bytes)``: the same GPU bytes as the Samoyeds way.
    scope, batch_tokens : offload cache scope and tokens per decode step (also used by the time model).
    shape, profile, link : model shape, GPU profile and link of the time models.
    domains : sequence of str, optional
        Corpus domains (default all).
    sweep_path, trace_dir, sida_dir : path, optional
        Recorded sweep, shipped traces and shipped SiDA predictions (defaults under ``data/``).
    device : {"auto", "cpu", "cuda"}
        Where the *timed* forward passes run. ``"auto"``: CUDA when :func:`samoyeds_lab.kernels.available`,
        else the CPU. On CUDA a fp16 copy of the model is timed (the ``"samoyeds"`` backend then calls the
        CUDA SSMM); accuracy is always measured on the CPU in fp32.
    seed : int
        Seeds torch and the calibration windows.
    threads : int, optional
        ``torch.set_num_threads`` during the run (restored after).
    progress : bool or callable
        ``True``: a tqdm bar over the stages; a callable gets one line per stage.

    Returns
    -------
    EndToEndResult
    """
    from ..corpus import DOMAINS, load_corpus
    from ..moe import TinyMoEForCausalLM
    from ..moe.accuracy import (
        calibration_windows,
        config_label,
        dense_expert_bytes,
        expert_bytes,
        load_sweep,
        model_sha256,
        normalize_config,
        prune_model,
    )
    from ..moe.train import evaluate
    from ..offload.predictor import load_shipped_predictions, load_shipped_predictor
    from ..routing.ship import load_shipped_trace

    model_dir = Path(model_dir) if model_dir is not None else _REPO / "data" / "tiny_moe"
    eval_tokens = check_int("eval_tokens", eval_tokens, lo=1)
    calib_tokens = check_int("calib_tokens", calib_tokens, lo=1)
    time_tokens = check_int("time_tokens", time_tokens, lo=1)
    repeat = check_int("repeat", repeat, lo=1)
    if trace_tokens is not None:
        trace_tokens = check_int("trace_tokens", trace_tokens, lo=1)
    batch_tokens = check_int("batch_tokens", batch_tokens, lo=1)
    seed = check_int("seed", seed, lo=0)
    if threads is not None:
        threads = check_int("threads", threads, lo=1)
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    doms = tuple(DOMAINS if domains is None else domains)
    if not doms or any(d not in DOMAINS for d in doms):
        raise ValueError(f"domains: expected a non-empty subset of {DOMAINS}, got {domains!r}")
    shape_label, _, _ = _check_shape(shape)
    if device == "auto":
        from ..kernels import available

        device = "cuda" if (available() and torch.cuda.is_available()) else "cpu"
    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32

    stages = ["load", "dense accuracy", "dense time", "prune (Wanda)", "samoyeds accuracy", "samoyeds time",
              "offload replay", "models"]
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(stages), desc="serve three ways", unit="stage", leave=False)

    def step(msg: str) -> None:
        if bar is not None:
            bar.set_postfix_str(msg)
            bar.update(1)
        elif callable(progress):
            progress(msg)

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        run_threads = torch.get_num_threads()
        model = TinyMoEForCausalLM.from_pretrained(model_dir).eval()
        cfg = model.config
        cfg_prune = normalize_config({"pattern": "samoyeds", "method": method, "vector": vector},
                                     hidden=cfg.hidden, intermediate=cfg.intermediate)
        seq = cfg.max_seq
        held = load_corpus("heldout", doms)
        train = load_corpus("train", doms)
        calib = calibration_windows(train, calib_tokens, seq, seed=seed)
        max_windows = max(1, eval_tokens // seq)
        first = held[doms[0]]
        tlen = min(time_tokens, seq)
        nwin = max(1, time_tokens // tlen)
        twin = torch.stack([torch.tensor(list(first[i * tlen: (i + 1) * tlen]), dtype=torch.long)
                            for i in range(nwin)])
        sha = model_sha256(model_dir)
        sweep = load_sweep(sweep_path if sweep_path is not None else _REPO / "data" / "accuracy" / "tiny_moe_sparsity.json")
        sweep_same = sweep["model"]["sha256"] == sha
        step("loaded model, corpus, recorded sweep")

        # ---- dense (accuracy on the CPU in fp32 everywhere; only the timed copy goes to the GPU)
        popularity = train_popularity(model, calib)
        ev = evaluate(model, held, seq=seq, max_windows=max_windows)
        n_eval = ev["overall"]["tokens"] // len(doms)
        ppl_dense = {d: float(v["ppl"]) for d, v in ev["domains"].items()}
        ppl_dense["overall"] = float(ev["overall"]["ppl"])
        step("dense accuracy")
        dense_t = measure_time_per_token(_on(model, dev, dtype), twin, backend="grouped", repeat=repeat)
        dense_b = dense_expert_bytes(model)
        step("dense time")

        # ---- Samoyeds
        prune_model(model, cfg_prune, calib)
        sam_b = expert_bytes(model)
        step("pruned")
        probe = twin[:1, : min(64, tlen)]
        with torch.no_grad():
            model.set_backend("grouped")
            ref = model(probe)
            model.set_backend("samoyeds")
            gap = float((ref - model(probe)).abs().max())
            ev_s = evaluate(model, held, seq=seq, max_windows=max_windows)
        ppl_sam = {d: float(v["ppl"]) for d, v in ev_s["domains"].items()}
        ppl_sam["overall"] = float(ev_s["overall"]["ppl"])
        step("samoyeds accuracy")
        sam_t = measure_time_per_token(_on(model, dev, dtype), twin, backend="samoyeds", repeat=repeat)
        calls: dict = {}
        if dev.type == "cpu":
            from .moe_layer import capture_block_input

            blk = model.moe_blocks()[0][1]
            hidden = capture_block_input(model, twin, 0)  # what MoE block 0 saw in the timed forward
            with torch.no_grad():
                routed = blk.router(hidden).topk_ids.reshape(-1)
            per_expert = torch.bincount(routed, minlength=cfg.num_experts).float().mean().item()
            op = blk.experts.compressed["up"][0]
            calls = expert_call_times(op, hidden, sorted({1, max(1, round(per_expert))}))
            calls["tokens_per_expert"] = per_expert
            calls["forward_tokens"] = int(twin.numel())
        model.set_backend("grouped")
        step("samoyeds time")

        # ---- offloaded: replay the shipped held-out traces
        traces, preds, trace_same = {}, {}, True
        for d in doms:
            tr = load_shipped_trace(d, trace_dir=trace_dir)
            trace_same &= tr.meta.get("model_sha256") == sha
            T = tr.topk_ids.shape[1] if trace_tokens is None else min(trace_tokens, tr.topk_ids.shape[1])
            traces[d] = tr.topk_ids[:, :T].numpy()
            p = load_shipped_predictions(d, directory=sida_dir)
            preds[d] = {k: v[:, :T].numpy() for k, v in p.items()}
        L, E = next(iter(traces.values())).shape[0], cfg.num_experts
        if capacity is None:
            capacity = max(1, round(L * E * sam_b / dense_b))
        capacity = check_int("capacity", capacity, lo=1)
        choice = offload_policy_sweep(traces, E, capacity=capacity, predictions=preds, popularity=popularity,
                                      scope=scope, batch_tokens=batch_tokens, shape=shape, profile=profile,
                                      link=link)
        step(f"offload replay: best {choice.best}")

        # ---- modelled GPU time at real shapes, same routing
        all_ids = np.concatenate(list(traces.values()), axis=1)
        ntok = all_ids.shape[1]
        kw = dict(shape=shape, profile=profile, batch_tokens=batch_tokens)
        model_dense = modelled_expert_time(all_ids, E, op="dense", **kw) / ntok * 1e3
        model_sam = modelled_expert_time(all_ids, E, op="ssmm", **kw) / ntok * 1e3
        step("models")
        pred_bytes = 0
        if choice.best == "sida":
            pr = load_shipped_predictor(sida_dir)
            pred_bytes = sum(p.numel() * p.element_size() for p in pr.parameters() if p.requires_grad)
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.close()

    env = _env(dev, run_threads)
    where = (f"{'measured' if dev.type == 'cpu' else 'measured on GPU'}, {env['device']}, {run_threads} thread"
             f"{'s' if run_threads > 1 else ''}, forward pass over {twin.numel()} held-out tokens")
    model_src = (f"model: roofline ceiling, {shape_label} expert shapes, {profile}, {batch_tokens} token(s)/step, "
                 f"{L} MoE layers of the recorded routing")
    live_src = f"live, {n_eval:,} held-out bytes/domain"
    sam_label = config_label(cfg_prune)
    rec_dense = recorded_accuracy(sweep, "dense")
    rec_sam = recorded_accuracy(sweep, sam_label)
    note_sweep = "" if sweep_same else " (NOT this checkpoint)"
    per_expert = dense_b // (L * E)
    best = choice.policies[choice.best]
    ways = (
        WayResult(
            way="dense", label=WAY_LABELS["dense"], ppl=ppl_dense, ppl_source=live_src + ", grouped backend",
            recorded_ppl=rec_dense and rec_dense["ppl"], recorded_recovered_ppl=rec_dense and rec_dense["recovered_ppl"],
            recorded_source=rec_dense and rec_dense["source"] + note_sweep,
            measured_ms_per_token=dense_t * 1e3, measured_source=where + ", grouped backend",
            model_ms_per_token=model_dense, model_source=model_src + ", dense GEMMs, all experts resident",
            expert_bytes=dense_b, dense_expert_bytes=dense_b,
            memory_source="all routed-expert weights, dense fp16"),
        WayResult(
            way="samoyeds", label=f"{WAY_LABELS['samoyeds']} ({sam_label})", ppl=ppl_sam,
            ppl_source=live_src + ", samoyeds backend", recorded_ppl=rec_sam and rec_sam["ppl"],
            recorded_recovered_ppl=rec_sam and rec_sam["recovered_ppl"],
            recorded_source=rec_sam and rec_sam["source"] + note_sweep,
            measured_ms_per_token=sam_t * 1e3,
            measured_source=where + (f", samoyeds backend ({samoyeds_cpu_path()})" if dev.type == "cpu"
                                     else ", samoyeds backend (CUDA ssmm)"),
            model_ms_per_token=model_sam, model_source=model_src + ", Samoyeds SSMM (1:2 V=128 + 2:4), all resident",
            expert_bytes=sam_b, dense_expert_bytes=dense_b,
            memory_source="compressed operands' .nbytes (fp16 values + 2:4 metadata + row indices)"),
        WayResult(
            way="offloaded", label=f"{WAY_LABELS['offloaded']} ({choice.best}, {capacity}/{L * E} experts on GPU)",
            ppl=dict(ppl_dense), ppl_source="= dense: same weights and routing, only where the weights live changes",
            recorded_ppl=rec_dense and rec_dense["ppl"], recorded_recovered_ppl=None,
            recorded_source=rec_dense and "= dense " + rec_dense["source"].split(";")[0] + note_sweep,
            measured_ms_per_token=None,
            measured_source="not measured: this machine has no host↔GPU link to offload over",
            model_ms_per_token=best.ms_per_token,
            model_source=(f"model: offload_latency, {shape_label} experts over the {profile} link, policy "
                          f"{choice.best}, {choice.scope} cache of {capacity}/{L * E} experts, "
                          f"{batch_tokens} token(s)/step"),
            expert_bytes=capacity * per_expert + pred_bytes, dense_expert_bytes=dense_b,
            memory_source=(f"GPU budget {capacity} dense fp16 experts"
                           + (f" + SiDA predictor {pred_bytes:,} B" if pred_bytes else
                              " (no predictor weights: next_layer reuses the routers)" if choice.best == "next_layer"
                              else " (no predictor)"))),
    )
    settings = {"model_dir": str(model_dir), "model_sha256": sha, "eval_tokens": eval_tokens,
                "eval_bytes_per_domain": n_eval, "calib_tokens": calib_tokens, "method": method, "vector": vector,
                "time_tokens": int(twin.numel()), "repeat": repeat, "trace_tokens": trace_tokens,
                "capacity": capacity, "scope": scope, "batch_tokens": batch_tokens, "shape": shape_label,
                "profile": profile, "link": link, "domains": list(doms), "device": str(dev), "seed": seed,
                "recorded_sweep_is_this_checkpoint": sweep_same,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    replay = {"traces": traces, "predictions": preds, "popularity": popularity, "num_experts": E, "scope": scope,
              "batch_tokens": batch_tokens, "shape": shape, "profile": profile, "link": link}
    return EndToEndResult(ways=ways, offload=choice, settings=settings, machine=env, backend_max_abs_diff=gap,
                          trace_is_shipped_checkpoint=bool(trace_same), replay=replay, expert_calls=calls)
