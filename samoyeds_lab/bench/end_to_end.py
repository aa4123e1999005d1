r"""One MoE model served three ways — dense, Samoyeds dual-side sparse, offloaded — with accuracy, time and
memory side by side, each number labelled with where it comes from (Lab 08).

The model is the shipped tiny MoE (:class:`~samoyeds_lab.moe.TinyMoEForCausalLM`, ``data/tiny_moe``).

=============  ==========================================================================================
way            what runs
=============  ==========================================================================================
``dense``      every expert resident, fp16-sized, the ``"grouped"`` backend (one sort, three matmuls per
               expert, one scatter).
``samoyeds``   experts pruned to the Samoyeds pattern (1 of 2 rows per ``V``-wide window of K, 2:4
               inside; 25% of the weights; default ``V = 32``: 4 windows per gate/up row of the tiny
               model's hidden 128) with OBS (second-order, the best one-shot method for every pattern of
               the recorded equal-density study) on *train*-split calibration text, gate and up sharing their row
               choice (:func:`~samoyeds_lab.moe.accuracy.prune_model`), compressed, run by the ``"samoyeds"``
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
    "MORE_WAYS",
    "MORE_WAY_LABELS",
    "MondeWay",
    "CompressedOffloadWay",
    "MoreWays",
    "hot_slots",
    "compressed_expert_bytes",
    "modelled_monde_time",
    "measure_monde",
    "serve_more_ways",
    "hf_expert_shape",
    "byo_offload_costs",
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
    expert_bytes: int | None = None,
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
    expert_bytes : int, optional
        Bytes one expert occupies and moves over the link (default ``3·d·f·2``, dense fp16); e.g.
        :func:`compressed_expert_bytes` ``["compressed"]`` for Samoyeds-compressed experts. The compute is still
        the roofline of ``6·d·f`` FLOP per token against reading these bytes from HBM.

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
    S = 3 * d * f * 2 if expert_bytes is None else check_int("expert_bytes", expert_bytes, lo=1)
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
    method: str = "obs",
    vector: int = 32,
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
        Train-split calibration bytes for OBS / Wanda (and for the ``static`` policy's popularity profile).
    method : {"obs", "wanda", "magnitude"}
        Pruning method of the Samoyeds way (default OBS: the lowest one-shot perplexity for every pattern
        of the recorded equal-density study; gate/up rows are always chosen jointly).
    vector : int
        Samoyeds window ``V`` (default 32: ``H / V = 4`` windows per gate/up row of the tiny model; the
        kernel's V = 128 leaves one window per row at ``H = 128`` and deletes whole neurons).
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

    stages = ["load", "dense accuracy", "dense time", f"prune ({method})", "samoyeds accuracy", "samoyeds time",
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


# ---------------------------------------------------------------------------------------------- two more ways
#: The two ways :func:`serve_more_ways` adds beside :data:`WAYS`.
MORE_WAYS = ("monde", "samoyeds_offloaded")
#: Their row labels.
MORE_WAY_LABELS = {"monde": "MoNDE: hot experts fast, cold near data",
                   "samoyeds_offloaded": "Samoyeds + offloaded (compressed experts over the link)"}


def hot_slots(popularity, capacity: int) -> np.ndarray:
    """The static hot set as a bool mask ``[layers, experts]``: the ``capacity`` (layer, expert) slots with the
    highest ``popularity`` (ties: the smaller flat slot id ``l·E + e``), as the ``static`` offload policy pins."""
    pop = np.asarray(popularity)
    if pop.ndim != 2 or pop.size == 0 or pop.dtype.kind not in "iuf" or not np.all(np.isfinite(pop)):
        raise ValueError(f"popularity: expected a finite [layers, experts] array of use counts, got "
                         f"{getattr(pop, 'dtype', '?')} {getattr(pop, 'shape', '?')}")
    capacity = check_int("capacity", capacity, lo=0, hi=pop.size)
    flat = pop.reshape(-1)
    order = sorted(range(flat.size), key=lambda i: (-flat[i], i))[:capacity]
    mask = np.zeros(flat.size, dtype=bool)
    mask[order] = True
    return mask.reshape(pop.shape)


def compressed_expert_bytes(shape: str | tuple[int, int] = "Mixtral-8x7B", *, dtype: str = "float16",
                            index_bits: int | None = None) -> dict:
    """Bytes of one SwiGLU expert (gate, up: ``d_ffn × d_model``; down: ``d_model × d_ffn``) dense and as
    Samoyeds 1:2 V=128 + 2:4 compressed operands (values + metadata + row indices,
    :func:`samoyeds_lab.bench.roofline.op_bytes`' weight term): ``{"dense", "compressed", "ratio"}``
    (``ratio`` = dense / compressed, ≈3.5). ``"vector"``: the window ``V`` used — 128 (the kernel's), or for a
    small model whose ``d_model`` and ``d_ffn`` are not multiples of 128, the largest of 64, 32, 16 that
    divides both. ``index_bits``: bits per kept row index (default the roofline's, uint8, what the kernel
    reads; 1 = ``ceil(log2 M)`` reproduces :attr:`SamoyedsWeight.nbytes`)."""
    from .roofline import ROW_INDEX_BITS, op_bytes

    _, d, f = _check_shape(shape)
    v = next((v for v in (128, 64, 32, 16) if d % v == 0 and f % v == 0), None)
    if v is None or d % 2 or f % 2:
        raise ValueError(f"shape: expected d_model and d_ffn even and multiples of 16 (whole Samoyeds windows), "
                         f"got ({d}, {f})")
    pat = (1, 2, v)
    ib = ROW_INDEX_BITS if index_bits is None else check_int("index_bits", index_bits, lo=1)
    dense = 2 * op_bytes("dense", f, d, 1, dtype)["weight"] + op_bytes("dense", d, f, 1, dtype)["weight"]
    comp = (2 * op_bytes("ssmm", f, d, 1, dtype, samoyeds=pat, index_bits=ib)["weight"]
            + op_bytes("ssmm", d, f, 1, dtype, samoyeds=pat, index_bits=ib)["weight"])
    return {"dense": int(dense), "compressed": int(comp), "ratio": dense / comp, "vector": v}


def _step_counts(topk: np.ndarray, num_experts: int, batch_tokens: int) -> np.ndarray:
    """Tokens per expert of every (layer, step): int64 ``[layers, steps, E]``, ``batch_tokens`` tokens a step."""
    L, T, k = topk.shape
    if int(topk.max()) >= num_experts or int(topk.min()) < 0:
        raise ValueError(f"topk_ids: expected expert ids in [0, {num_experts}), "
                         f"got [{int(topk.min())}, {int(topk.max())}]")
    steps = -(-T // batch_tokens)
    out = np.zeros((L, steps, num_experts), np.int64)
    s = np.repeat(np.arange(T) // batch_tokens, k)
    for li in range(L):
        np.add.at(out[li], (s, topk[li].reshape(-1)), 1)
    return out


def modelled_monde_time(
    topk_ids,
    num_experts: int,
    hot,
    *,
    shape: str | tuple[int, int] = "Mixtral-8x7B",
    profile: str = "h100_sxm",
    near: str = "cxl_ndp_monde",
    batch_tokens: int = 1,
    link=None,
) -> dict:
    r"""MoNDE's split, modelled: hot experts resident on the GPU, every other expert computed near its data.

    Per MoE layer and decode step (``batch_tokens`` consecutive tokens), with :math:`n_e` tokens per expert and
    the cost model of :mod:`samoyeds_lab.offload.cost` (the same formulas as
    :func:`~samoyeds_lab.offload.cost.layer_cost` with ``concurrent=True``: the two sides run at the same time)::

        T_step = max( Σ_{e hot} T_gpu(n_e, resident),  Σ_{e cold} T_near(n_e) )

    ``T_gpu`` reads the weights from HBM (no transfer: resident), ``T_near`` moves the activations
    (``2·n·d`` fp16) over the link and streams the weights from the near device's own memory. A model, not a
    measurement.

    Parameters
    ----------
    topk_ids : array_like of int, shape (layers, tokens, k)
    num_experts : int
    hot : array_like of bool, shape (layers, experts)
        The experts resident on the GPU (e.g. :func:`hot_slots`).
    shape, profile, batch_tokens, link : as :func:`offload_policy_sweep`.
    near : str
        Near-data profile (``data/hardware``): ``"cxl_ndp_monde"`` (MoNDE's CXL device) or ``"host_ddr5"``.

    Returns
    -------
    dict
        ``{"ms_per_token", "gpu_ms", "near_ms", "resident_ms", "near_share", "tokens"}``: the modelled total,
        what each side alone spends per token, all experts resident on the GPU (the same model), and the share
        of expert accesses computed near data.
    """
    from ..offload.cost import gpu_path_cost, near_data_path_cost

    topk = _check_topk("topk_ids", topk_ids)
    E = check_int("num_experts", num_experts, lo=1)
    batch_tokens = check_int("batch_tokens", batch_tokens, lo=1)
    L = topk.shape[0]
    h = hot.detach().cpu().numpy() if isinstance(hot, torch.Tensor) else np.asarray(hot)
    if h.dtype != bool or h.shape != (L, E):
        raise ValueError(f"hot: expected a bool mask of shape ({L}, {E}), got {h.dtype} {h.shape}")
    _, d, f = _check_shape(shape)
    P = 3.0 * d * f
    n = _step_counts(topk, E, batch_tokens)  # [L, S, E]
    g = gpu_path_cost(n, P, profile, resident=True, link=link)
    m = near_data_path_cost(n, P, near, d_model=d, link=link)
    hb = h[:, None, :]
    gpu_t = np.where(hb, g.total, 0.0).sum(-1)
    near_t = np.where(hb, 0.0, m.total).sum(-1)
    total = np.maximum(gpu_t, near_t).sum()
    T = topk.shape[1]
    acc = n > 0
    return {"ms_per_token": float(total) / T * 1e3, "gpu_ms": float(gpu_t.sum()) / T * 1e3,
            "near_ms": float(near_t.sum()) / T * 1e3, "resident_ms": float(g.total.sum()) / T * 1e3,
            "near_share": float((acc & ~hb).sum() / acc.sum()), "tokens": int(T)}


@dataclass(frozen=True)
class MondeWay:
    """The MoNDE way: hot experts on the fast side, cold experts computed where they live.

    Attributes
    ----------
    hot : numpy.ndarray of bool, shape (layers, experts)
        The resident (fast-side) experts: the static hot set of the train-split profile.
    measured : dict
        This machine, the tiny model's expert layers alone (every MoE layer of the timed forward, its real
        inputs and routing), :class:`~samoyeds_lab.offload.hybrid.HybridExecutor` medians per token:
        ``{"hybrid_ms", "fast_ms", "near_ms", "resident_ms", "max_abs_diff", "source"}`` — hot experts on the
        calling thread, cold ones on a near-side worker thread, both at once; ``resident_ms``: every expert on
        the fast side (the same executor); ``max_abs_diff``: hybrid output vs ``forward_grouped``.
    model : dict
        :func:`modelled_monde_time` at the real model's shapes, plus ``"source"``.
    expert_bytes, dense_expert_bytes : int
        Expert bytes on the accelerator (tiny model, fp16): the hot set, and all experts.
    """

    hot: np.ndarray
    measured: dict
    model: dict
    expert_bytes: int
    dense_expert_bytes: int

    @property
    def memory_fraction(self) -> float:
        return self.expert_bytes / self.dense_expert_bytes


@dataclass(frozen=True)
class CompressedOffloadWay:
    """Samoyeds + offloading: the offloaded way with compressed experts, modelled.

    Attributes
    ----------
    choice : OffloadChoice
        Every policy replayed with the compressed expert bytes (same routing, same number of experts on the GPU
        as the offloaded way).
    bytes : dict
        :func:`compressed_expert_bytes` at the model's shapes (what one miss moves, dense vs compressed).
    expert_bytes, dense_expert_bytes : int
        GPU bytes of the tiny model: ``capacity`` compressed experts, and all dense experts.
    source : str
    """

    choice: OffloadChoice
    bytes: dict
    expert_bytes: int
    dense_expert_bytes: int
    source: str

    @property
    def memory_fraction(self) -> float:
        return self.expert_bytes / self.dense_expert_bytes


@dataclass(frozen=True)
class MoreWays:
    """:func:`serve_more_ways`: the MoNDE and Samoyeds + offloaded ways of an :class:`EndToEndResult`."""

    monde: MondeWay
    samoyeds_offloaded: CompressedOffloadWay
    settings: dict

    def modelled_rows(self, result: EndToEndResult) -> list[dict]:
        """All five ways modelled at the same shapes, GPU profile and routing: ``{"way", "label", "ms_per_token",
        "memory_fraction", "source"}`` (the memory fraction is the tiny model's)."""
        _check_result_type(result)
        rows = [{"way": w.way, "label": w.label, "ms_per_token": w.model_ms_per_token,
                 "memory_fraction": w.memory_fraction, "source": w.model_source} for w in result.ways]
        m, c = self.monde, self.samoyeds_offloaded
        rows.append({"way": "monde", "label": MORE_WAY_LABELS["monde"], "ms_per_token": m.model["ms_per_token"],
                     "memory_fraction": m.memory_fraction, "source": m.model["source"]})
        rows.append({"way": "samoyeds_offloaded", "label": MORE_WAY_LABELS["samoyeds_offloaded"],
                     "ms_per_token": c.choice.policies[c.choice.best].ms_per_token,
                     "memory_fraction": c.memory_fraction, "source": c.source})
        return rows


def _check_result_type(result: object) -> EndToEndResult:
    if not isinstance(result, EndToEndResult):
        raise TypeError(f"result: expected an EndToEndResult from serve_three_ways, got {type(result).__name__}")
    return result


def measure_monde(model, input_ids: torch.Tensor, hot, *, repeat: int = 3, threads: int = 1) -> dict:
    """Time every MoE layer of ``model``'s forward on ``input_ids`` through a
    :class:`~samoyeds_lab.offload.hybrid.HybridExecutor` (CPU): hot experts resident on the fast side (the
    calling thread), the others computed near data (one worker thread) at the same time; and the same executor
    with every expert on the fast side. Inputs and routing are each layer's real ones (one dense forward).

    Returns ``{"hybrid_ms", "fast_ms", "near_ms", "resident_ms", "max_abs_diff", "tokens"}``: medians per token
    summed over the layers, and the largest difference of the hybrid output from ``forward_grouped``.
    """
    from ..offload.hybrid import HybridExecutor, time_hybrid
    from .moe_layer import capture_block_input

    blocks = getattr(model, "moe_blocks", None)
    if blocks is None:
        raise TypeError(f"model: expected a model with moe_blocks() (TinyMoEForCausalLM), got {type(model).__name__}")
    blocks = blocks()
    E = blocks[0][1].experts.num_experts
    h = hot.detach().cpu().numpy() if isinstance(hot, torch.Tensor) else np.asarray(hot)
    if h.dtype != bool or h.shape != (len(blocks), E):
        raise ValueError(f"hot: expected a bool mask of shape ({len(blocks)}, {E}), got {h.dtype} {h.shape}")
    repeat = check_int("repeat", repeat, lo=1)
    threads = check_int("threads", threads, lo=1)
    tot = {"hybrid_ms": 0.0, "fast_ms": 0.0, "near_ms": 0.0, "resident_ms": 0.0}
    diff = 0.0
    all_on = np.ones(E, dtype=bool)
    with torch.no_grad():
        for li, (_, blk) in enumerate(blocks):
            x = capture_block_input(model, input_ids, li)
            r = blk.router(x)
            ids, w = r.topk_ids, r.topk_weights.to(x.dtype)
            with HybridExecutor(blk.experts, device="cpu", near_workers=1, threads=threads) as ex:
                hy = time_hybrid(ex, x, ids, w, h[li], resident=h[li], repeats=repeat)
                rs = time_hybrid(ex, x, ids, w, all_on, resident=all_on, repeats=repeat)
                out = ex.forward(x, ids, w, h[li], resident=h[li]).output
            ref = blk.experts.forward_grouped(x, ids, w)
            diff = max(diff, float((out - ref).abs().max()))
            tot["hybrid_ms"] += hy.total_s
            tot["fast_ms"] += hy.fast_s
            tot["near_ms"] += hy.near_s
            tot["resident_ms"] += rs.total_s
    n = int(input_ids.numel())
    out_d = {k: v / n * 1e3 for k, v in tot.items()}
    out_d.update(max_abs_diff=diff, tokens=n)
    return out_d


def serve_more_ways(
    result: EndToEndResult,
    *,
    near: str = "cxl_ndp_monde",
    repeat: int = 3,
    threads: int | None = None,
) -> MoreWays:
    """Add the MoNDE way and the Samoyeds + offloaded way beside the three ways of ``result``.

    * **MoNDE** (cold experts near data): the hot set is the static policy's (the offloaded way's number of
      experts, by the train-split popularity). *Measured* here with
      :class:`~samoyeds_lab.offload.hybrid.HybridExecutor` on the tiny model's own expert layers (the dense
      checkpoint reloaded, the timed forward's inputs); *modelled* with :func:`modelled_monde_time` at the
      result's shapes and GPU profile with the ``near`` profile, over the same recorded routing as the other
      ways. On a CPU-only machine both sides are the same cores: the measurement shows the split's
      overheads, not a faster device.
    * **Samoyeds + offloaded**: :func:`offload_policy_sweep` with the compressed expert bytes
      (:func:`compressed_expert_bytes`, ≈3.5× fewer per miss) and the offloaded way's number of GPU experts.
      Its perplexity is the Samoyeds way's (same compressed weights); a model, not a measurement.

    Parameters
    ----------
    result : EndToEndResult
        From :func:`serve_three_ways`.
    near : str
        Near-data hardware profile of the MoNDE model.
    repeat : int
        Timed repetitions of the hybrid runs (median).
    threads : int, optional
        Torch threads of each side (default ``result.machine["threads"]``).
    """
    from ..corpus import load_corpus
    from ..moe import TinyMoEForCausalLM
    from ..offload.hardware import load_profile

    r = _check_result_type(result)
    if not isinstance(near, str):
        raise TypeError(f"near: expected a hardware profile name, got {type(near).__name__}")
    load_profile(near)  # a bad name raises here, naming the profiles
    repeat = check_int("repeat", repeat, lo=1)
    threads = check_int("threads", int(r.machine.get("threads", 1)) if threads is None else threads, lo=1)
    s, rp = r.settings, r.replay
    E, cap = rp["num_experts"], r.offload.capacity
    hot = hot_slots(rp["popularity"], cap)

    model = TinyMoEForCausalLM.from_pretrained(s["model_dir"]).eval()
    seq = model.config.max_seq
    first = load_corpus("heldout", s["domains"][:1])[s["domains"][0]]
    tlen = min(s["time_tokens"], seq)
    nwin = max(1, s["time_tokens"] // tlen)
    twin = torch.stack([torch.tensor(list(first[i * tlen: (i + 1) * tlen]), dtype=torch.long) for i in range(nwin)])
    old = torch.get_num_threads()
    try:
        meas = measure_monde(model, twin, hot, repeat=repeat, threads=threads)
    finally:
        torch.set_num_threads(old)
    env = r.machine
    meas["source"] = (f"measured, {env.get('device', '?')}, HybridExecutor, {threads} thread(s) per side, the tiny "
                      f"model's {hot.shape[0]} expert layers on the timed forward's {meas['tokens']} tokens "
                      f"(both sides share this CPU)")
    all_ids = np.concatenate(list(rp["traces"].values()), axis=1)
    kw = dict(shape=rp["shape"], profile=rp["profile"], batch_tokens=rp["batch_tokens"], link=rp["link"])
    mod = modelled_monde_time(all_ids, E, hot, near=near, **kw)
    mod["source"] = (f"model: cost model (concurrent GPU / near-data), {s['shape']} experts, {s['profile']} + "
                     f"{near}, {int(hot.sum())}/{hot.size} experts resident, {rp['batch_tokens']} token(s)/step")
    dense_b = r.way("dense").dense_expert_bytes
    per_dense = dense_b // hot.size
    monde = MondeWay(hot=hot, measured=meas, model=mod, expert_bytes=int(hot.sum()) * per_dense,
                     dense_expert_bytes=dense_b)

    cb = compressed_expert_bytes(rp["shape"])
    choice = offload_policy_sweep(rp["traces"], E, capacity=cap, predictions=rp["predictions"],
                                  popularity=rp["popularity"], scope=rp["scope"], batch_tokens=rp["batch_tokens"],
                                  shape=rp["shape"], profile=rp["profile"], link=rp["link"],
                                  expert_bytes=cb["compressed"])
    sam_b = r.way("samoyeds").expert_bytes
    per_comp = sam_b / hot.size
    comp = CompressedOffloadWay(
        choice=choice, bytes=cb, expert_bytes=int(round(cap * per_comp)), dense_expert_bytes=dense_b,
        source=(f"model: offload_latency, {s['shape']} compressed experts ({cb['compressed'] / 1e6:.0f} MB each, "
                f"dense {cb['dense'] / 1e6:.0f} MB) over the {s['profile']} link, policy {choice.best}, "
                f"{cap}/{hot.size} experts on GPU, {rp['batch_tokens']} token(s)/step"))
    settings = {"near": near, "repeat": repeat, "threads": threads, "capacity": cap}
    return MoreWays(monde=monde, samoyeds_offloaded=comp, settings=settings)


def hf_expert_shape(model) -> tuple[int, int]:
    """``(d_model, d_ffn)`` of one routed expert of a Hugging Face MoE model (its config's ``hidden_size`` and
    ``moe_intermediate_size``, else ``intermediate_size``)."""
    cfg = getattr(model, "config", None)
    d = getattr(cfg, "hidden_size", None)
    f = getattr(cfg, "moe_intermediate_size", None) or getattr(cfg, "intermediate_size", None)
    if not isinstance(d, int) or not isinstance(f, int):
        raise TypeError(f"model: expected a Hugging Face MoE model with config.hidden_size and "
                        f"(moe_)intermediate_size, got {type(model).__name__}")
    return d, f


def byo_offload_costs(trace, shape: tuple[int, int], *, capacity: int | None = None, profile: str = "h100_sxm",
                      near: str = "cxl_ndp_monde", batch_tokens: int = 1) -> dict:
    """The offload and MoNDE cost models on any model's routing trace and expert shapes (Labs 03/08's
    bring-your-own-model cell).

    ``trace`` is a :class:`~samoyeds_lab.routing.RoutingTrace`; ``shape`` its model's ``(d_model, d_ffn)``
    (:func:`hf_expert_shape`). The GPU holds ``capacity`` experts (default a quarter of all, at least 1). The
    static hot set is profiled on the first half of the trace and both models replay the second half.

    Returns ``{"shape", "capacity", "num_slots", "expert_mb", "compressed_mb", "resident_ms", "offload": {policy:
    ms/token}, "best", "samoyeds_offload_ms", "monde_ms", "monde_near_share", "tokens"}`` (all modelled).
    """
    from ..routing.trace import RoutingTrace

    if not isinstance(trace, RoutingTrace):
        raise TypeError(f"trace: expected a RoutingTrace, got {type(trace).__name__}")
    if trace.num_tokens < 2:
        raise ValueError(f"trace: expected at least 2 tokens (half profiles the hot set), got {trace.num_tokens}")
    _, d, f = _check_shape(shape)
    ids = trace.topk_ids.numpy()
    L, T, _ = ids.shape
    E = int(trace.num_experts)
    cap = max(1, (L * E) // 4) if capacity is None else check_int("capacity", capacity, lo=1, hi=L * E)
    half = T // 2
    prof, test = ids[:, :half], ids[:, half:]
    pop = np.stack([np.bincount(prof[li].reshape(-1), minlength=E) for li in range(L)])
    pols = ("lru", "lfu", "static", "belady")
    kw = dict(scope="global", batch_tokens=batch_tokens, shape=(d, f), profile=profile)
    dense = offload_policy_sweep({"byo": test}, E, capacity=cap, popularity=pop, policies=pols, **kw)
    cb = compressed_expert_bytes((d, f))
    comp = offload_policy_sweep({"byo": test}, E, capacity=cap, popularity=pop, policies=pols,
                                expert_bytes=cb["compressed"], **kw)
    mon = modelled_monde_time(test, E, hot_slots(pop, cap), shape=(d, f), profile=profile, near=near,
                              batch_tokens=batch_tokens)
    return {"shape": (d, f), "capacity": cap, "num_slots": L * E, "expert_mb": cb["dense"] / 1e6,
            "compressed_mb": cb["compressed"] / 1e6, "resident_ms": mon["resident_ms"],
            "offload": {p: dense.policies[p].ms_per_token for p in pols}, "best": dense.best,
            "samoyeds_offload_ms": comp.policies[comp.best].ms_per_token, "monde_ms": mon["ms_per_token"],
            "monde_near_share": mon["near_share"], "tokens": int(test.shape[1])}
