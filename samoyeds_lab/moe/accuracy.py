"""What pruning the experts costs in accuracy, compared at equal density: held-out perplexity of the tiny
MoE after magnitude, Wanda or OBS pruning to unstructured, N:M, VENOM and Samoyeds patterns, next to the
dense baseline (:func:`equal_density_study`; the older per-configuration :func:`sparsity_sweep` too).

For every configuration the shipped checkpoint (:class:`~samoyeds_lab.moe.TinyMoEForCausalLM`) is loaded
afresh and

1. every MoE block's routed experts (gate, up and down projections; router, attention, embeddings and
   any shared expert stay dense) are pruned and compressed with :meth:`MoEBlock.sparsify
   <samoyeds_lab.moe.MoEBlock.sparsify>`:

   ==================  =====================================================================  =========
   pattern             kept weights                                                           density
   ==================  =====================================================================  =========
   ``"dense"``         all (the baseline)                                                     1
   ``"2:4"``           2 of every 4 consecutive weights of a row (along K)                    1/2
   ``"1:4"``           1 of every 4                                                           1/4
   ``"venom"``         4 of every 8 columns per 64-row block, then 2:4 over the kept ones     1/4
                       (VENOM's "64:2:8", arXiv 2310.02065)
   ``"unstructured"``  the top ``density`` fraction by score (CSR operand)                    given
   ``"samoyeds"``      1 of every 2 rows per ``V``-wide window of K, then 2:4 inside the      1/4
                       kept row segments (``V ∈ {32, 64, 128}``; the paper uses 128)
   ==================  =====================================================================  =========

   scored by **magnitude** ``S_ij = |W_ij|``, by **Wanda** ``S_ij = |W_ij| · ‖X_{:,j}‖₂`` or pruned by
   **OBS** (second-order, SparseGPT-style: :mod:`samoyeds_lab.prune.obs`, which also updates the kept
   weights), with ``X`` the inputs the weight sees on calibration text from the *train* split. Wanda runs block by block in layer
   order and each block is calibrated on inputs that already pass through the pruned blocks before it
   (the sequential order of Sun et al., arXiv 2306.11695); inside a block gate/up are scored on the block's
   routed inputs and down on ``silu(X W_gate'ᵀ) ⊙ (X W_up'ᵀ)`` of the pruned gate/up.

   A Samoyeds row of K columns holds ``K / V`` windows: on the shipped tiny model (``H = 128``,
   ``I = 256``) gate/up have 4, 2, 1 windows per row at V = 32, 64, 128 and down 8, 4, 2; Mixtral's
   ``K = 4096`` has 32 at V = 128. With one window per row, a row segment the pattern drops is a whole
   neuron of gate or up. By default (``joint=True``) the gate and up weights of an expert share one row
   selection per window (:func:`samoyeds_lab.prune.sparsify_joint`), so a neuron keeps both or neither
   segment; ``joint=False`` prunes them independently. Each record reports the live-neuron fractions
   (:func:`samoyeds_lab.prune.live_neuron_fraction`: neurons whose gate and up both keep weights) and
   its windows per row;
2. optionally the pruned model is fine-tuned for ``recovery_steps`` with the masks held fixed (see
   :func:`recovery_finetune`); the dense baseline gets the same steps, so any gain that merely comes from
   training longer shows in the baseline too;
3. held-out perplexity is measured per domain and overall with :func:`samoyeds_lab.moe.train.evaluate`
   (``ppl = exp(mean next-byte NLL)``; bytes are the tokens of this model).

Modelled speed (no GPU number is invented here)
-----------------------------------------------
Decoding a few tokens at a time, an expert GEMM is memory-bound: its time is the time to stream its
weights. The *modelled decode speed-up* of a configuration is therefore the byte ratio

.. math::  s = \\frac{B_{dense}}{B_{compressed}}, \\qquad
           B_{dense} = \\sum_{\\text{experts, proj}} 2\\,\\text{rows}\\cdot\\text{cols},

with ``B_compressed`` the ``.nbytes`` of the compressed operands at fp16 (values + 2:4 metadata + the
Samoyeds row indices). It is a ceiling for the routed-expert GEMMs only — attention, router and the
kernels' own efficiency are not in it — and it is *not* a measurement.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .._checks import check_bool, check_int
from ..corpus import DOMAINS, load_corpus
from ..errors import CorruptFileError

__all__ = [
    "PATTERNS",
    "METHODS",
    "DEFAULT_METHODS",
    "VECTORS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SPEED_MODEL",
    "default_configs",
    "equal_density_configs",
    "pattern_label",
    "VENOM_V",
    "convergence_steps",
    "equal_density_study",
    "normalize_config",
    "config_label",
    "calibration_windows",
    "prune_model",
    "expert_masks",
    "windows_per_row",
    "live_neurons",
    "expert_bytes",
    "dense_expert_bytes",
    "recovery_finetune",
    "sparsity_sweep",
    "model_sha256",
    "write_sweep",
    "load_sweep",
]

#: Patterns a sweep accepts.
PATTERNS = ("dense", "2:4", "1:4", "venom", "unstructured", "samoyeds")
#: Pruning methods a configuration accepts (the dense baseline has method ``"none"``); ``"obs"`` is
#: second-order (SparseGPT-style, :mod:`samoyeds_lab.prune.obs`), calibrated like Wanda.
METHODS = ("magnitude", "wanda", "obs")
#: Methods of :func:`default_configs` and :func:`equal_density_configs` (the recorded study).
DEFAULT_METHODS = ("magnitude", "wanda", "obs")
#: Samoyeds window widths swept by :func:`default_configs`.
VECTORS = (32, 64, 128)
#: VENOM's block height ``v`` and kept columns ``n`` of ``m`` (then 2:4 inside: density ``n/m · 1/2``).
VENOM_V, VENOM_N, VENOM_M = 64, 4, 8
#: ``"schema"`` field of the recorded JSON, and its version (2: the equal-density study, resumable;
#: :func:`load_sweep` also reads version 1 files).
SCHEMA = "samoyeds-lab/accuracy-sweep"
SCHEMA_VERSION = 2
#: One-line statement of how "modelled decode speed-up" is computed (also written to the JSON).
SPEED_MODEL = (
    "modelled_decode_speedup = dense fp16 bytes of all routed-expert weights / bytes of their compressed "
    "operands at fp16 (values + metadata + indices: 2:4/1:4 metadata, Samoyeds row indices, VENOM column "
    "indices, CSR row pointers and column indices for unstructured): the ceiling for memory-bound "
    "(decode, few tokens per expert) expert GEMMs, not a measurement; attention, router and kernel "
    "efficiency are not included"
)
_NM = {"dense": None, "2:4": (2, 4), "1:4": (1, 4), "samoyeds": (1, 2), "venom": (VENOM_N, VENOM_M),
       "unstructured": None}
_CONFIG_KEYS = ("pattern", "method", "vector", "joint", "density")
_DERIVED_KEYS = ("n", "m")  # accepted when they match (a normalised config round-trips)


# ----------------------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------------------
def normalize_config(config: Mapping[str, Any], *, hidden: int | None = None,
                     intermediate: int | None = None) -> dict[str, Any]:
    """Validate one sweep configuration and fill in its defaults.

    Parameters
    ----------
    config : mapping
        ``{"pattern", "method", "vector", "joint", "density"}``:

        ================  ==========================================================  ==============
        ``pattern``       kept weights                                                density
        ================  ==========================================================  ==============
        ``"dense"``       all (the baseline; ``method`` left out or ``"none"``)       1
        ``"2:4"``         2 of every 4 consecutive weights of a row (along K)         1/2
        ``"1:4"``         1 of every 4                                                1/4
        ``"venom"``       ``n = 4`` of every ``m = 8`` columns per ``V``-row block,   1/4
                          then 2:4 over the kept columns (VENOM "64:2:8" at V=64)
        ``"unstructured"`` the largest-score ``density`` fraction (``density`` given)  ``density``
        ``"samoyeds"``    1 of every 2 rows per ``V``-wide window of K, then 2:4      1/4
                          inside the kept row segments
        ================  ==========================================================  ==============

        ``method``: ``"magnitude"`` (default), ``"wanda"`` or ``"obs"``. ``vector``: required for
        ``"samoyeds"`` (the window width ``V`` along K, a multiple of 4; a row of K columns holds ``K / V``
        windows), default 64 for ``"venom"`` (the block height along the rows), refused otherwise.
        ``joint`` (``"samoyeds"`` only, default ``True``): gate and up share one row selection; ``False``
        prunes them independently. ``density``: required for ``"unstructured"`` (``0 < density < 1``); for
        the other patterns it may be given only if it equals the nominal one.
    hidden, intermediate : int, optional
        The model's ``H`` and ``I``; when given, ``vector`` must divide both (Samoyeds: every expert weight
        is cut into ``V``-wide windows along its K, ``H`` for gate/up and ``I`` for down; VENOM: blocks of
        ``V`` rows, ``I`` rows for gate/up and ``H`` for down).

    Returns
    -------
    dict
        ``{"pattern", "method", "vector", "joint", "n", "m", "density"}`` with ``density`` the nominal kept
        fraction and ``joint`` ``None`` for patterns without rows to share.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a mapping such as {{'pattern': '2:4', 'method': 'wanda'}}, "
                        f"got {type(config).__name__}")
    unknown = [k for k in config if k not in _CONFIG_KEYS + _DERIVED_KEYS]
    if unknown:
        raise TypeError(f"config: unexpected key {unknown[0]!r}; expected some of {list(_CONFIG_KEYS)}")
    pattern = config.get("pattern")
    if not isinstance(pattern, str) or pattern.strip().lower() not in PATTERNS:
        raise ValueError(f"config['pattern']: expected one of {PATTERNS}, got {pattern!r}")
    pattern = pattern.strip().lower()
    method = config.get("method")
    vector = config.get("vector")
    if pattern == "dense":
        if method not in (None, "none"):
            raise ValueError(f"config['method']: the dense baseline prunes nothing, expected none, got {method!r}")
        method = "none"
    else:
        method = "magnitude" if method is None else method
        if not isinstance(method, str) or method.strip().lower() not in METHODS:
            raise ValueError(f"config['method']: expected one of {METHODS}, got {method!r}")
        method = method.strip().lower()
    if pattern in ("samoyeds", "venom"):
        if vector is None and pattern == "samoyeds":
            raise ValueError("config['vector']: required for pattern 'samoyeds' (e.g. 32, 64 or 128), got none")
        vector = check_int("config['vector']", VENOM_V if vector is None else vector, lo=4)
        if pattern == "samoyeds" and vector % 4:
            raise ValueError(f"config['vector']: expected a multiple of 4 (2:4 groups inside a window), got {vector}")
        what = "V-wide windows along K" if pattern == "samoyeds" else "blocks of V rows"
        for name, size in (("hidden", hidden), ("intermediate", intermediate)):
            if size is not None and size % vector:
                raise ValueError(
                    f"config['vector']: expected a divisor of the model's {name}={size} ({what}), got {vector}")
    elif vector is not None:
        raise ValueError(f"config['vector']: only patterns 'samoyeds' and 'venom' have a V, got vector={vector!r} "
                         f"for pattern {pattern!r}")
    joint = config.get("joint")
    if pattern == "samoyeds":
        joint = True if joint is None else check_bool("config['joint']", joint)
    elif joint is not None:
        raise ValueError(f"config['joint']: only pattern 'samoyeds' has rows for gate and up to share, got "
                         f"joint={joint!r} for pattern {pattern!r}")
    nm = _NM[pattern]
    given = config.get("density")
    if pattern == "unstructured":
        if given is None:
            raise ValueError("config['density']: required for pattern 'unstructured' (e.g. 0.25 or 0.5), got none")
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not (0 < given < 1):
            raise ValueError(f"config['density']: expected a number with 0 < density < 1, got {given!r}")
        density = float(given)
    else:
        density = 1.0 if nm is None else nm[0] / nm[1] * (0.5 if pattern in ("samoyeds", "venom") else 1.0)
        if given is not None and (isinstance(given, bool) or not isinstance(given, (int, float))
                                  or abs(given - density) > 1e-9):
            raise ValueError(f"config['density']: pattern {pattern!r} implies {density!r}, got {given!r}")
    out = {"pattern": pattern, "method": method, "vector": vector, "joint": joint,
           "n": None if nm is None else nm[0], "m": None if nm is None else nm[1], "density": density}
    for k in _DERIVED_KEYS:
        if k in config and config[k] != out[k]:
            raise ValueError(f"config[{k!r}]: pattern {pattern!r} implies {out[k]!r}, got {config[k]!r}")
    return out


def config_label(config: Mapping[str, Any]) -> str:
    """Short label: ``"dense"``, ``"2:4 · wanda"``, ``"1:4 · obs"``, ``"VENOM 64:2:8 · wanda"`` (VENOM's own
    notation: V rows, 2 of 8 weights per row kept), ``"unstructured 25% · magnitude"``,
    ``"Samoyeds V=64 · magnitude"`` (gate/up rows chosen jointly, the default) or
    ``"Samoyeds V=64 · magnitude · independent"`` (``joint=False``)."""
    c = normalize_config(config)
    p = c["pattern"]
    if p == "dense":
        return "dense"
    if p in ("2:4", "1:4"):
        return f"{p} · {c['method']}"
    if p == "venom":
        return f"VENOM {c['vector']}:{c['n'] // 2}:{c['m']} · {c['method']}"
    if p == "unstructured":
        return f"unstructured {c['density']:.0%} · {c['method']}"
    return f"Samoyeds V={c['vector']} · {c['method']}" + ("" if c["joint"] else " · independent")


def pattern_label(config: Mapping[str, Any]) -> str:
    """The label of a configuration without its method: ``"Samoyeds V=32"``, ``"2:4"``, ``"dense"`` …
    (one point per pattern on a Pareto chart, one recovery run per pattern in the study). ``config`` may
    also be a sweep record (its configuration keys are read, ``nominal_density`` as the density)."""
    if isinstance(config, Mapping) and "label" in config:  # a record: keep its configuration keys
        rec = config
        config = {k: rec[k] for k in ("pattern", "method", "vector", "joint") if rec.get(k) is not None}
        if rec.get("pattern") == "unstructured":
            config["density"] = rec.get("nominal_density", rec.get("density"))
    c = normalize_config(config)
    label = config_label(c)
    return label if c["pattern"] == "dense" else label.replace(f" · {c['method']}", "", 1)


def default_configs(vectors: Sequence[int] = VECTORS, methods: Sequence[str] = DEFAULT_METHODS,
                    joint: Sequence[bool] = (True,)) -> list[dict[str, Any]]:
    """The dense baseline, then 2:4 and Samoyeds (1:2 rows per ``V`` window + 2:4) for every ``V`` in
    ``vectors`` (``K / V`` windows per row), each with every method in ``methods`` and every gate/up
    selection in ``joint`` (default: joint only; ``(True, False)`` adds the independent one)."""
    out: list[dict[str, Any]] = [{"pattern": "dense"}]
    out += [{"pattern": "2:4", "method": m} for m in methods]
    out += [{"pattern": "samoyeds", "method": m, "vector": int(v)} | ({} if j else {"joint": False})
            for v in vectors for m in methods for j in joint]
    for c in out:
        normalize_config(c)
    return out


def equal_density_configs(vectors: Sequence[int] = VECTORS, methods: Sequence[str] = DEFAULT_METHODS, *,
                          independent: Sequence[int] = (32, 128), venom_v: int = VENOM_V) -> list[dict[str, Any]]:
    """The equal-density study: patterns compared at the same kept fraction of the expert weights.

    * the dense baseline;
    * **25 %**: unstructured 25 %, N:M 1:4, VENOM 64:2:8 (4 of 8 columns per 64-row block, 2:4 inside),
      Samoyeds 1:2 rows + 2:4 at every ``V`` in ``vectors`` (gate/up rows chosen jointly);
    * **50 %**: 2:4 and unstructured 50 %;

    each with every method in ``methods``; then, for the joint-vs-independent comparison, Samoyeds with
    ``joint=False`` at every ``V`` in ``independent`` (every method). Every density is exact on the tiny
    model's shapes (``H = 128``, ``I = 256``).
    """
    out: list[dict[str, Any]] = [{"pattern": "dense"}]
    for m in methods:
        out += [{"pattern": "unstructured", "density": 0.25, "method": m}, {"pattern": "1:4", "method": m},
                {"pattern": "venom", "vector": int(venom_v), "method": m}]
        out += [{"pattern": "samoyeds", "vector": int(v), "method": m} for v in vectors]
        out += [{"pattern": "2:4", "method": m}, {"pattern": "unstructured", "density": 0.5, "method": m}]
    out += [{"pattern": "samoyeds", "vector": int(v), "method": m, "joint": False}
            for v in independent for m in methods]
    for c in out:
        normalize_config(c)
    return out


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
def calibration_windows(texts: Mapping[str, bytes], tokens: int, seq: int, *, seed: int = 0) -> torch.Tensor:
    """``ceil(tokens / seq)`` random byte windows ``[n, seq]`` (int64), domains taken in turn.

    Window ``i`` comes from domain ``i mod D`` at a start drawn uniformly with ``torch.Generator(seed)``.
    """
    tokens = check_int("tokens", tokens, lo=1)
    seq = check_int("seq", seq, lo=1)
    data = [torch.frombuffer(bytearray(t), dtype=torch.uint8) for t in texts.values()]
    for d, t in zip(texts, data):
        if t.numel() < seq + 1:
            raise ValueError(f"seq: expected < {t.numel()} (the {d!r} text's length), got {seq}")
    gen = torch.Generator().manual_seed(seed)
    n = math.ceil(tokens / seq)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    rows = []
    for i in range(n):
        t = data[i % len(data)]
        start = int(u[i] * (t.numel() - seq))
        rows.append(t[start: start + seq])
    return torch.stack(rows).long()


class _Stop(Exception):
    """Raised by a forward pre-hook once it has what it needs (the rest of the model is not run)."""


@torch.no_grad()
def _block_inputs(model, index: int, calib: torch.Tensor, batch: int) -> torch.Tensor:
    """The ``[tokens, H]`` input of MoE block ``index`` on ``calib`` windows (layers after it are not run)."""
    name, block = model.moe_blocks()[index]
    got: list[torch.Tensor] = []

    def hook(_module, args):
        got.append(args[0].detach().reshape(-1, args[0].shape[-1]).clone())
        raise _Stop

    handle = block.register_forward_pre_hook(hook)
    try:
        for i in range(0, calib.shape[0], batch):
            try:
                model(calib[i: i + batch])
            except _Stop:
                pass
    finally:
        handle.remove()
    return torch.cat(got)


# ----------------------------------------------------------------------------------------------------
# pruning, masks, bytes
# ----------------------------------------------------------------------------------------------------
def prune_model(model, config: Mapping[str, Any], calib: torch.Tensor | None = None, *, batch: int = 16):
    """Prune and compress every MoE block's experts of ``model`` in place for one sweep configuration.

    ``method="wanda"`` (and ``"obs"``) calibrates block ``ℓ`` on its inputs for ``calib`` windows computed
    *after* blocks ``0 … ℓ-1`` were pruned (Wanda's sequential order). ``"dense"`` leaves the model untouched.

    Parameters
    ----------
    model : TinyMoEForCausalLM
    config : mapping
        See :func:`normalize_config`.
    calib : torch.Tensor, optional
        ``[n, S]`` int64 calibration windows (:func:`calibration_windows`); required for Wanda and OBS.
    batch : int
        Windows per forward pass while capturing calibration inputs.

    Returns
    -------
    dict
        The normalised configuration.
    """
    cfg = normalize_config(config, hidden=model.config.hidden, intermediate=model.config.intermediate)
    if cfg["pattern"] == "dense":
        return cfg
    if cfg["method"] in ("wanda", "obs") and calib is None:
        raise ValueError(f"calib: required for method {cfg['method']!r} (calibration windows [n, S]), got None")
    kw = _sparsify_kwargs(cfg)
    was_training = model.training
    model.eval()
    for i, (_, block) in enumerate(model.moe_blocks()):
        acts = _block_inputs(model, i, calib, batch) if cfg["method"] in ("wanda", "obs") else None
        block.sparsify(cfg["pattern"], cfg["method"], acts, **kw)
    model.train(was_training)
    return cfg


def _sparsify_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keywords of :meth:`MoEBlock.sparsify` for a normalised configuration."""
    if cfg["pattern"] == "samoyeds":
        return {"n": cfg["n"], "m": cfg["m"], "vector": cfg["vector"], "joint": cfg["joint"]}
    if cfg["pattern"] == "venom":
        return {"v": cfg["vector"], "n": cfg["n"], "m": cfg["m"]}
    if cfg["pattern"] == "unstructured":
        return {"density": cfg["density"]}
    return {}


def windows_per_row(config: Mapping[str, Any], hidden: int, intermediate: int) -> dict[str, int] | None:
    """Samoyeds windows per row ``K / V`` of the expert weights: ``{"gate_up": H / V, "down": I / V}``
    (``None`` for patterns without windows)."""
    cfg = normalize_config(config, hidden=hidden, intermediate=intermediate)
    if cfg["pattern"] != "samoyeds":
        return None
    return {"gate_up": hidden // cfg["vector"], "down": intermediate // cfg["vector"]}


def live_neurons(model, vector: int | None = None) -> dict[str, Any]:
    """Live SwiGLU neurons of every MoE block (:meth:`MoEBlock.live_neurons`), JSON-ready.

    Returns
    -------
    dict
        ``{"overall": fraction over all blocks, "paired": …, "per_layer": {name: {"overall", "paired",
        "per_window": [...], "paired_per_window": [...]}}}``; a neuron is live when its gate and up rows
        both keep a weight (per window: inside that window; see
        :func:`samoyeds_lab.prune.live_neuron_fraction`). Every block has the same neuron count, so the
        overall fractions are means over blocks.
    """
    per = model.live_neurons(vector)
    out = {name: {"overall": ln.overall, "paired": ln.paired, "per_window": ln.per_window.tolist(),
                  "paired_per_window": ln.paired_per_window.tolist()} for name, ln in per.items()}
    k = max(1, len(out))
    return {"overall": sum(v["overall"] for v in out.values()) / k,
            "paired": sum(v["paired"] for v in out.values()) / k, "per_layer": out}


def expert_masks(model) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """``[(parameter, keep-mask)]`` for every routed-expert weight of every MoE block: ``mask = W ≠ 0``.

    Read right after pruning, the nonzeros are the kept weights (a trained fp32 weight is exactly 0 with
    negligible probability, and a kept weight that is 0 keeps the pattern valid anyway).
    """
    out = []
    for _, block in model.moe_blocks():
        for p in block.experts.weights().values():
            out.append((p, p.detach() != 0))
    return out


def _nbytes_as(op: Any, dtype: torch.dtype) -> int:
    """``op.nbytes`` with its floating tensors (the values) stored in ``dtype`` (index tensors unchanged)."""
    changes = {f.name: getattr(op, f.name).to(dtype) for f in dataclasses.fields(op)
               if isinstance(getattr(op, f.name), torch.Tensor) and getattr(op, f.name).is_floating_point()}
    return int(dataclasses.replace(op, **changes).nbytes) if changes else int(op.nbytes)


def dense_expert_bytes(model, dtype: torch.dtype = torch.float16) -> int:
    """Bytes of all routed-expert weights stored dense in ``dtype``: ``Σ 3·E·H·I · itemsize`` over blocks."""
    size = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() * size for _, b in model.moe_blocks() for p in b.experts.weights().values())


def expert_bytes(model, dtype: torch.dtype = torch.float16) -> int:
    """Bytes of all routed-expert weights as stored: each compressed operand's ``.nbytes`` with its values in
    ``dtype`` (dense ``rows·cols·itemsize`` for a block that was not sparsified)."""
    size = torch.empty((), dtype=dtype).element_size()
    total = 0
    for _, block in model.moe_blocks():
        ops = block.experts.compressed
        if ops is None:
            total += sum(p.numel() * size for p in block.experts.weights().values())
        else:
            total += sum(_nbytes_as(op, dtype) for per in ops.values() for op in per)
    return total


# ----------------------------------------------------------------------------------------------------
# recovery fine-tune
# ----------------------------------------------------------------------------------------------------
def recovery_finetune(
    model,
    texts: Mapping[str, bytes],
    steps: int,
    *,
    masks: Sequence[tuple[torch.nn.Parameter, torch.Tensor]] = (),
    lr: float = 3e-4,
    batch: int = 8,
    seq: int | None = None,
    aux_coef: float = 0.01,
    seed: int = 0,
    callback: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """A short fine-tune of the whole model with the pruning masks held fixed.

    Loss as in training (:mod:`samoyeds_lab.moe.train`): next-byte cross entropy ``+ aux_coef ·`` load
    balancing. AdamW (β = 0.9, 0.95, no weight decay), gradient clipping at 1.0, learning rate
    ``lr_at(s, lr, warmup=max(1, steps/10), total=steps, min_lr_frac=0.1)`` (warm-up, cosine). For every
    ``(W, M)`` in ``masks``: ``∇W ← ∇W ⊙ M`` before and ``W ← W ⊙ M`` after each step, so pruned weights
    stay exactly 0 and the sparsity pattern is kept. Batches are random ``seq+1``-byte windows of
    ``texts`` (the train split), domains in turn, drawn with ``torch.Generator(seed)``.

    ``callback(s)``, if given, is called after step ``s`` (the weights re-masked; e.g. to log held-out
    perplexity while it trains).

    Returns
    -------
    dict
        ``{"steps", "lr", "batch", "seq", "first_loss", "last_loss", "seconds"}`` (losses: mean CE of the
        first / last ``min(10, steps)`` steps).
    """
    from . import load_balancing_loss
    from .train import lr_at

    steps = check_int("steps", steps, lo=1)
    batch = check_int("batch", batch, lo=1)
    seq = check_int("seq", seq if seq is not None else model.config.max_seq, lo=2, hi=model.config.max_seq)
    for name, v in (("lr", lr), ("aux_coef", aux_coef)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    gen_seed = seed
    t0 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 10)
    ces: list[float] = []
    model.train()
    for s in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(s, lr=lr, warmup=warmup, total=steps, min_lr_frac=0.1)
        xb = calibration_windows(texts, batch * (seq + 1), seq + 1, seed=gen_seed * 100_003 + s)
        logits = model(xb[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), xb[:, 1:].reshape(-1))
        loss = ce + aux_coef * load_balancing_loss(model.router_logits(), model.config.top_k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p, m in masks:
            if p.grad is not None:
                p.grad.mul_(m)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for p, m in masks:
                p.mul_(m)
        ces.append(float(ce.detach()))
        if callback is not None:
            callback(s)
    model.eval()
    k = min(10, steps)
    return {"steps": steps, "lr": lr, "batch": batch, "seq": seq, "first_loss": sum(ces[:k]) / k,
            "last_loss": sum(ces[-k:]) / k, "seconds": round(time.perf_counter() - t0, 2)}


def _resparsify_unchanged(model, cfg: dict[str, Any]) -> None:
    """Rebuild the compressed operands after a fine-tune and check that the masks held (weights unchanged)."""
    kw = _sparsify_kwargs(cfg)
    for name, block in model.moe_blocks():
        before = [p.detach().clone() for p in block.experts.weights().values()]
        block.sparsify(cfg["pattern"], "magnitude", None, **kw)
        for b, p in zip(before, block.experts.weights().values()):
            if not torch.equal(b, p.detach()):
                raise RuntimeError(f"{name}: the fine-tuned expert weights left the {cfg['pattern']!r} pattern")


@torch.no_grad()
def _backend_gap(model, window: torch.Tensor) -> float:
    """Max |logits(grouped) − logits(samoyeds)| on one window: the compressed operands compute what was
    evaluated."""
    model.set_backend("grouped")
    ref = model(window)
    model.set_backend("samoyeds")
    try:
        out = model(window)
    finally:
        model.set_backend("grouped")
    return float((ref - out).abs().max())


# ----------------------------------------------------------------------------------------------------
# the sweep
# ----------------------------------------------------------------------------------------------------
def _ppl(ev: dict[str, Any]) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    ppl = {d: float(v["ppl"]) for d, v in ev["domains"].items()}
    bpb = {d: float(v["bits_per_byte"]) for d, v in ev["domains"].items()}
    tok = {d: int(v["tokens"]) for d, v in ev["domains"].items()}
    ppl["overall"], bpb["overall"], tok["overall"] = (float(ev["overall"]["ppl"]),
                                                      float(ev["overall"]["bits_per_byte"]),
                                                      int(ev["overall"]["tokens"]))
    return ppl, bpb, tok


def sparsity_sweep(
    model_dir: str | os.PathLike,
    configs: Sequence[Mapping[str, Any]],
    *,
    calib_tokens: int,
    eval_tokens: int | None,
    recovery_steps: int = 0,
    seed: int = 0,
    seq: int | None = None,
    domains: Sequence[str] = DOMAINS,
    eval_batch: int = 16,
    recovery_lr: float = 3e-4,
    recovery_batch: int = 8,
    check_backend: bool = True,
    corpus_root: str | os.PathLike | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Prune the checkpoint in ``model_dir`` once per configuration and measure held-out perplexity.

    Parameters
    ----------
    model_dir : path
        A directory written by :meth:`TinyMoEForCausalLM.save_pretrained` (e.g. ``data/tiny_moe``); it is
        re-loaded for every configuration.
    configs : sequence of mapping
        Configurations (:func:`normalize_config`), e.g. :func:`default_configs`. All are validated before
        anything runs.
    calib_tokens : int
        Calibration bytes for Wanda, from the *train* split (``ceil(calib_tokens/seq)`` windows, domains in
        turn). Must be ``>= 1`` if any configuration uses Wanda.
    eval_tokens : int or None
        Held-out bytes predicted per domain, at most (``max(1, eval_tokens // seq)`` windows of ``seq``);
        ``None`` = the whole held-out split.
    recovery_steps : int
        Steps of :func:`recovery_finetune` after pruning (0 = none). Every configuration, the dense
        baseline included, then gets a second, ``"recovered_ppl"`` evaluation.
    seed : int
        Seeds the calibration windows and the fine-tune batches.
    seq : int, optional
        Window length (default: the model's ``max_seq``).
    domains : sequence of str
        Corpus domains to calibrate, fine-tune and evaluate on.
    eval_batch, recovery_lr, recovery_batch : optional
        Evaluation batch (windows), fine-tune learning rate and batch.
    check_backend : bool
        Also run one window of ``min(64, seq)`` bytes through the ``"samoyeds"`` backend (compressed
        operands × selected tokens, reference ``ssmm``) and record the largest logit difference to the
        evaluated ``"grouped"`` backend.
    corpus_root : path, optional
        Corpus directory (default :func:`samoyeds_lab.corpus.corpus_dir`).
    threads : int, optional
        ``torch.set_num_threads`` for the sweep (restored afterwards). On a CPU shared with other jobs,
        1 thread avoids oversubscription, which can slow PyTorch's parallel kernels down many times.
    progress : callable, optional
        Called with one line of text per finished step.

    Returns
    -------
    list of dict
        One record per configuration, in order, with keys ``label``, ``pattern``, ``method``
        (``"none"`` for dense), ``vector`` (Samoyeds only, else None), ``n``, ``m``, ``density`` (stored
        values / dense elements of the expert weights), ``nonzero_fraction`` (measured), ``expert_bytes``
        and ``dense_expert_bytes`` (fp16, see the module docstring), ``modelled_decode_speedup``
        (``dense_expert_bytes / expert_bytes``), ``heldout_ppl`` and ``heldout_bits_per_byte``
        (``{domain…, "overall"}``, right after pruning), ``eval_tokens`` (per domain + overall),
        ``recovered_ppl`` / ``recovered_bits_per_byte`` (after the fine-tune; None without one), ``recovery``
        (its statistics or None), ``backend_max_abs_diff`` (None for dense or without ``check_backend``),
        ``seconds``; ``joint`` (Samoyeds: whether gate/up shared their row selection, else None),
        ``windows_per_row`` (Samoyeds: ``{"gate_up": H/V, "down": I/V}``, else None) and ``live_neurons``
        (:func:`live_neurons` right after pruning, per window of ``V`` for Samoyeds, whole rows otherwise).
    """
    from . import TinyMoEForCausalLM

    if not isinstance(configs, (list, tuple)) or not configs:
        raise ValueError(f"configs: expected a non-empty list of configuration dicts, got {configs!r}")
    calib_tokens = check_int("calib_tokens", calib_tokens, lo=0)
    if eval_tokens is not None:
        eval_tokens = check_int("eval_tokens", eval_tokens, lo=1)
    recovery_steps = check_int("recovery_steps", recovery_steps, lo=0)
    seed = check_int("seed", seed, lo=0)
    eval_batch = check_int("eval_batch", eval_batch, lo=1)
    if threads is not None:
        threads = check_int("threads", threads, lo=1)
    base = TinyMoEForCausalLM.from_pretrained(model_dir)
    H, I = base.config.hidden, base.config.intermediate
    norm = [normalize_config(c, hidden=H, intermediate=I) for c in configs]
    seq = check_int("seq", seq if seq is not None else base.config.max_seq, lo=2, hi=base.config.max_seq)
    if calib_tokens == 0 and any(c["method"] in ("wanda", "obs") for c in norm):
        raise ValueError("calib_tokens: expected >= 1 when a configuration uses method 'wanda' or 'obs', got 0")
    say = progress or (lambda _msg: None)
    held = load_corpus("heldout", domains, root=corpus_root)
    train = load_corpus("train", domains, root=corpus_root) if (calib_tokens or recovery_steps) else {}
    calib = calibration_windows(train, calib_tokens, seq, seed=seed) if calib_tokens else None
    max_windows = None if eval_tokens is None else max(1, eval_tokens // seq)
    probe_ids = torch.tensor(list(next(iter(held.values()))[: min(64, seq)]), dtype=torch.long)[None]
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _sweep(model_dir, base, configs, norm, held, train, calib, max_windows, probe_ids, seq, seed,
                      eval_batch, recovery_steps, recovery_lr, recovery_batch, check_backend, say)
    finally:
        torch.set_num_threads(old_threads)


def _sweep(model_dir, base, configs, norm, held, train, calib, max_windows, probe_ids, seq, seed, eval_batch,
           recovery_steps, recovery_lr, recovery_batch, check_backend, say) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for raw, cfg in zip(configs, norm):
        reuse = len(records) == 0 and cfg["pattern"] == "dense"  # the validation load, still untouched
        rec, model = _one_shot(model_dir, raw, cfg, calib, held, max_windows, probe_ids, seq, seed, eval_batch,
                               check_backend, say, model=base if reuse else None)
        if recovery_steps:
            _recover(model, rec, cfg, train, held, max_windows, probe_ids, seq, seed, eval_batch, recovery_steps,
                     recovery_lr, recovery_batch, check_backend, say)
        records.append(rec)
    return records


def _backend_gap_or_none(model, probe_ids) -> float | None:
    """:func:`_backend_gap`, or None when the reference ``ssmm`` has no path for the pattern's operand."""
    try:
        return _backend_gap(model, probe_ids)
    except (TypeError, ValueError, NotImplementedError):
        model.set_backend("grouped")
        return None


def _one_shot(model_dir, raw, cfg, calib, held, max_windows, probe_ids, seq, seed, eval_batch, check_backend,
              say, *, model=None):
    """Load (unless ``model`` is given), prune for ``cfg`` and evaluate: ``(record, pruned model)``."""
    from . import TinyMoEForCausalLM
    from .train import evaluate

    label = config_label(raw)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = model if model is not None else TinyMoEForCausalLM.from_pretrained(model_dir)
    model.eval()
    prune_model(model, cfg, calib)
    t_prune = time.perf_counter() - t0
    dense_b = dense_expert_bytes(model)
    comp_b = expert_bytes(model)
    n_w = sum(p.numel() for _, b in model.moe_blocks() for p in b.experts.weights().values())
    nnz = sum(int((p != 0).sum()) for _, b in model.moe_blocks() for p in b.experts.weights().values())
    if cfg["pattern"] == "dense":
        stored = n_w
    else:
        stored = sum(op.values.numel() for _, b in model.moe_blocks()
                     for per in b.experts.compressed.values() for op in per)
    gap = _backend_gap_or_none(model, probe_ids) if (check_backend and cfg["pattern"] != "dense") else None
    t1 = time.perf_counter()
    ev = evaluate(model, held, seq=seq, batch=eval_batch, max_windows=max_windows)
    ppl, bpb, tok = _ppl(ev)
    t_eval = time.perf_counter() - t1
    say(f"{label}: ppl {ppl['overall']:.3f} (pruned in {t_prune:.1f} s, evaluated in {t_eval:.1f} s)")
    H, I = model.config.hidden, model.config.intermediate
    rec: dict[str, Any] = {
        "label": label, "pattern": cfg["pattern"], "method": cfg["method"], "vector": cfg["vector"],
        "joint": cfg["joint"], "windows_per_row": windows_per_row(cfg, H, I),
        "live_neurons": live_neurons(model, cfg["vector"] if cfg["pattern"] == "samoyeds" else None),
        "n": cfg["n"], "m": cfg["m"], "nominal_density": cfg["density"], "density": stored / n_w,
        "nonzero_fraction": nnz / n_w, "expert_bytes": comp_b, "dense_expert_bytes": dense_b,
        "modelled_decode_speedup": dense_b / comp_b,
        "heldout_ppl": ppl, "heldout_bits_per_byte": bpb, "eval_tokens": tok,
        "recovered_ppl": None, "recovered_bits_per_byte": None, "recovery": None,
        "backend_max_abs_diff": gap,
        "seconds": {"prune": round(t_prune, 2), "eval": round(t_eval, 2), "recovery": 0.0},
    }
    return rec, model


def _recover(model, rec, cfg, train, held, max_windows, probe_ids, seq, seed, eval_batch, steps, lr, batch,
             check_backend, say, *, callback=None) -> None:
    """Fine-tune the pruned ``model`` for ``steps`` with its masks held and add the recovered fields to ``rec``."""
    from .train import evaluate

    t2 = time.perf_counter()
    masks = expert_masks(model) if cfg["pattern"] != "dense" else []
    rec["recovery"] = recovery_finetune(model, train, steps, masks=masks, lr=lr, batch=batch, seq=seq, seed=seed,
                                        callback=callback)
    if cfg["pattern"] != "dense":
        _resparsify_unchanged(model, cfg)
        if check_backend and rec.get("backend_max_abs_diff") is not None:
            after = _backend_gap_or_none(model, probe_ids)
            if after is not None:
                rec["backend_max_abs_diff"] = max(rec["backend_max_abs_diff"], after)
    ev = evaluate(model, held, seq=seq, batch=eval_batch, max_windows=max_windows)
    rec["recovered_ppl"], rec["recovered_bits_per_byte"], _ = _ppl(ev)
    t_rec = time.perf_counter() - t2
    rec["seconds"] = dict(rec.get("seconds") or {}, recovery=round(t_rec, 2))
    say(f"{rec['label']}: after {steps} recovery steps ppl {rec['recovered_ppl']['overall']:.3f} ({t_rec:.1f} s)")


# ----------------------------------------------------------------------------------------------------
# the equal-density study (resumable)
# ----------------------------------------------------------------------------------------------------
#: Settings of the convergence curve: changing one on ``resume`` redoes the curve (and the recoveries).
_CURVE_SETTINGS = frozenset({"curve_config", "curve_steps", "curve_every", "curve_eval_tokens", "curve_window",
                             "curve_tol", "recovery_lr", "recovery_batch"})
#: Settings that change only the fine-tune: ``resume`` keeps the one-shot records and redoes the recoveries.
_RECOVERY_SETTINGS = _CURVE_SETTINGS | {"recover"}


def convergence_steps(curves: Mapping[str, Sequence[Mapping[str, float]]], *, window: int = 100,
                      tol: float = 0.02) -> int | None:
    """The first logged step ``s >= window`` at which *every* curve has flattened: for each curve,
    ``ppl(s - window) / ppl(s) - 1 <= tol`` (it improved by at most ``tol`` over the last ``window``
    steps). ``None`` if some curve never flattens within what was logged.

    Parameters
    ----------
    curves : mapping
        ``{name: [{"step": s, "ppl": p}, …]}``, steps ascending, logged at least every ``window`` steps and
        including step 0 (or any step ``s - window`` looked up).
    window : int
        Look-back in steps (must itself be a logged step distance).
    tol : float
        Relative improvement still called flat.
    """
    window = check_int("window", window, lo=1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (0 <= tol < 1):
        raise ValueError(f"tol: expected a number in [0, 1), got {tol!r}")
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves: expected a non-empty {{name: [{{'step', 'ppl'}}, …]}}, got {curves!r}")
    tables = {}
    for name, pts in curves.items():
        try:
            tables[name] = {int(p["step"]): float(p["ppl"]) for p in pts}
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"curves[{name!r}]: expected a list of {{'step': int, 'ppl': float}}, got {pts!r}") from exc
    steps = sorted(set.intersection(*(set(t) for t in tables.values())))
    for s in steps:
        if s < window:
            continue
        if all((s - window) in t and t[s - window] / t[s] - 1 <= tol for t in tables.values()):
            return s
    return None


def _group_key(cfg: Mapping[str, Any]) -> str:
    return pattern_label(cfg)


def equal_density_study(
    path: str | os.PathLike,
    model_dir: str | os.PathLike,
    configs: Sequence[Mapping[str, Any]] | None = None,
    *,
    calib_tokens: int = 16384,
    eval_tokens: int | None = None,
    curve_config: Mapping[str, Any] | None = None,
    curve_steps: int = 600,
    curve_every: int = 50,
    curve_eval_tokens: int = 2048,
    curve_window: int = 100,
    curve_tol: float = 0.02,
    recovery_steps: int | None = None,
    recover: str = "best",
    seed: int = 0,
    eval_batch: int = 16,
    recovery_lr: float = 3e-4,
    recovery_batch: int = 8,
    check_backend: bool = True,
    domains: Sequence[str] = DOMAINS,
    corpus_root: str | os.PathLike | None = None,
    threads: int | None = None,
    resume: bool = False,
    progress: bool | Callable[[str], None] = True,
) -> dict[str, Any]:
    """Run the equal-density accuracy study and record it in ``path`` (JSON), resumably.

    Three phases, the file rewritten (atomically) after every finished item:

    1. **Convergence curve** (skipped when ``recovery_steps`` is given): the dense model and
       ``curve_config`` (default Samoyeds V=32 · Wanda) are fine-tuned for ``curve_steps`` with the
       recovery schedule (:func:`recovery_finetune`, cosine over ``curve_steps``), held-out perplexity on
       ``curve_eval_tokens`` bytes per domain every ``curve_every`` steps. The recovery step count is then
       :func:`convergence_steps` of both curves (``window``/``tol``: flat = at most ``curve_tol`` better
       over the last ``curve_window`` steps), or ``curve_steps`` if they do not flatten in time.
    2. **One-shot**: every configuration (default :func:`equal_density_configs`) pruned and evaluated on
       the held-out split (``eval_tokens`` per domain, ``None`` = all of it).
    3. **Recovery**: the dense baseline and, with ``recover="best"``, the best one-shot method of each
       pattern (lowest overall perplexity, joint selection only), or every configuration with
       ``recover="all"``, fine-tuned for the chosen steps with the masks held (the dense model gets the
       same steps) and evaluated again.

    Parameters
    ----------
    path : path
        Output JSON (schema :data:`SCHEMA` version :data:`SCHEMA_VERSION`; read it with :func:`load_sweep`).
    model_dir : path
        Checkpoint directory (``save_pretrained``).
    configs : sequence of mapping, optional
        Default :func:`equal_density_configs`; must include ``{"pattern": "dense"}`` first.
    resume : bool
        Continue a file written with the same checkpoint and settings: finished records, the curve and
        finished recoveries are kept and skipped. Where only fine-tune settings differ (the curve's, the
        recovery learning rate / batch, ``recover``), the one-shot records are kept and the curve (when its
        settings changed) and all recoveries are redone. ``False`` starts afresh (an existing file is replaced when
        the first item finishes).
    progress : bool or callable
        ``True``: a tqdm bar over all items (curve steps count as items of ``curve_every``) on stderr, and
        one line per finished item; a callable gets the lines only; ``False``: silent.
    Other parameters
        As for :func:`sparsity_sweep`.

    Returns
    -------
    dict
        The written payload: ``schema``, ``version``, ``study`` (``"equal-density"``), ``status``
        (``"complete"`` or ``"partial"`` while running), ``created_utc``, ``updated_utc``, ``machine``,
        ``model``, ``settings``, ``speed_model``, ``convergence`` (``{"configs", "steps", "every",
        "eval_tokens_per_domain", "window", "tol", "curves", "converged_at", "chosen_steps"}`` or None),
        ``records`` (as :func:`sparsity_sweep`'s, plus ``nominal_density``) and ``elapsed_s`` (summed over
        resumed runs).
    """
    from . import TinyMoEForCausalLM

    configs = equal_density_configs() if configs is None else list(configs)
    if not configs or normalize_config(configs[0])["pattern"] != "dense":
        raise ValueError("configs: expected a non-empty list whose first entry is the dense baseline "
                         f"{{'pattern': 'dense'}}, got {configs[:1]!r}")
    calib_tokens = check_int("calib_tokens", calib_tokens, lo=0)
    if eval_tokens is not None:
        eval_tokens = check_int("eval_tokens", eval_tokens, lo=1)
    curve_steps = check_int("curve_steps", curve_steps, lo=1)
    curve_every = check_int("curve_every", curve_every, lo=1)
    curve_eval_tokens = check_int("curve_eval_tokens", curve_eval_tokens, lo=1)
    if recovery_steps is not None:
        recovery_steps = check_int("recovery_steps", recovery_steps, lo=0)
    if recover not in ("best", "all"):
        raise ValueError(f"recover: expected 'best' or 'all', got {recover!r}")
    resume = check_bool("resume", resume)
    if threads is not None:
        threads = check_int("threads", threads, lo=1)
    curve_config = {"pattern": "samoyeds", "method": "wanda", "vector": 32} if curve_config is None else dict(curve_config)
    base = TinyMoEForCausalLM.from_pretrained(model_dir)
    H, I = base.config.hidden, base.config.intermediate
    norm = [normalize_config(c, hidden=H, intermediate=I) for c in configs]
    curve_norm = normalize_config(curve_config, hidden=H, intermediate=I)
    labels = [config_label(c) for c in configs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"configs: expected distinct configurations, got repeated labels in {labels}")
    seq = base.config.max_seq
    if calib_tokens == 0 and any(c["method"] in ("wanda", "obs") for c in norm + [curve_norm]):
        raise ValueError("calib_tokens: expected >= 1 when a configuration uses method 'wanda' or 'obs', got 0")
    sha = model_sha256(model_dir)
    settings = {"study": "equal-density", "calib_tokens": calib_tokens, "eval_tokens": eval_tokens, "seed": seed,
                "seq": seq, "domains": list(domains), "eval_batch": eval_batch, "recovery_lr": recovery_lr,
                "recovery_batch": recovery_batch, "recover": recover, "check_backend": check_backend,
                "curve_config": config_label(curve_config), "curve_steps": curve_steps, "curve_every": curve_every,
                "curve_eval_tokens": curve_eval_tokens, "curve_window": curve_window, "curve_tol": curve_tol,
                "recovery_steps_given": recovery_steps,
                "corpus_root": None if corpus_root is None else str(corpus_root)}
    out = Path(path)
    payload: dict[str, Any] | None = None
    if resume and out.is_file():
        old = json.loads(out.read_text())
        if old.get("schema") != SCHEMA or old.get("version") != SCHEMA_VERSION or old.get("study") != "equal-density":
            raise ValueError(f"resume: {out} is not an equal-density study file of version {SCHEMA_VERSION}")
        if old["model"]["sha256"] != sha:
            raise ValueError(f"resume: {out} was made on checkpoint {old['model']['sha256'][:12]}…, "
                             f"{model_dir} is {sha[:12]}…; start afresh (without resume)")
        diff = [k for k in settings if k != "recovery_steps_given" and old["settings"].get(k) != settings[k]]
        hard = [k for k in diff if k not in _RECOVERY_SETTINGS]
        if hard:
            raise ValueError(f"resume: {out} was made with other settings ({', '.join(hard)}: "
                             f"{[old['settings'].get(k) for k in hard]} vs {[settings[k] for k in hard]})")
        payload = old
        if diff:
            # only the fine-tune changed: the one-shot records stand; the curve (if its settings changed) and
            # every recovered result are redone with the new settings
            if any(k in _CURVE_SETTINGS for k in diff):
                payload["convergence"] = None
            for r in payload["records"]:
                for k in ("recovered_ppl", "recovered_bits_per_byte", "recovery"):
                    r[k] = None
            payload["status"] = "partial"
            if progress:
                (progress if callable(progress) else print)(
                    f"resume: fine-tune settings changed ({', '.join(diff)}): one-shot records kept, "
                    + ("curve and " if payload["convergence"] is None else "") + "recoveries redone")
        payload["settings"] = {**settings, "recovery_steps": old["settings"].get("recovery_steps")}
    if payload is None:
        d = Path(model_dir)
        training = None
        if (d / "metrics.json").is_file():
            m = json.loads((d / "metrics.json").read_text())
            training = {k: m.get(k) for k in ("status", "steps", "tokens_trained", "train_seconds")}
            training["heldout_ppl"] = {k: v.get("ppl") for k, v in (m.get("heldout") or {}).items()}
        payload = {
            "schema": SCHEMA, "version": SCHEMA_VERSION, "study": "equal-density", "status": "partial",
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": _machine(),
            "model": {"dir": str(model_dir), "sha256": sha, "config": json.loads((d / "config.json").read_text()),
                      "training": training},
            "settings": settings, "speed_model": SPEED_MODEL, "convergence": None, "records": [], "elapsed_s": 0.0,
        }
    done = {r["label"]: r for r in payload["records"]}
    t_start = time.perf_counter()
    elapsed0 = float(payload.get("elapsed_s") or 0.0)

    def save() -> None:
        payload["updated_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        payload["elapsed_s"] = round(elapsed0 + time.perf_counter() - t_start, 1)
        payload["records"] = [done[lb] for lb in labels if lb in done]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        os.replace(tmp, out)

    # ---- what is left to do (for the progress bar)
    need_curve = recovery_steps is None and not (payload.get("convergence") or {}).get("complete")
    n_curve_ticks = 2 * math.ceil(curve_steps / curve_every) if need_curve else 0
    todo_one_shot = [i for i, lb in enumerate(labels) if lb not in done]
    n_recover_max = len(configs) if recover == "all" else 1 + len({_group_key(c) for c in norm[1:] if c["joint"] is not False})
    n_recover_done = sum(1 for r in done.values() if r.get("recovered_ppl") is not None)
    if recovery_steps == 0:
        n_recover_max = n_recover_done = 0
    total = n_curve_ticks + len(todo_one_shot) + max(0, n_recover_max - n_recover_done)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="equal-density study", unit="item", dynamic_ncols=True)

        def say(msg: str) -> None:
            bar.write(msg)
    elif callable(progress):
        say = progress
    else:
        def say(msg: str) -> None:
            pass

    def tick(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label[:40])
            bar.update(1)

    held = load_corpus("heldout", domains, root=corpus_root)
    train = load_corpus("train", domains, root=corpus_root)
    calib = calibration_windows(train, calib_tokens, seq, seed=seed) if calib_tokens else None
    max_windows = None if eval_tokens is None else max(1, eval_tokens // seq)
    curve_windows = max(1, curve_eval_tokens // seq)
    probe_ids = torch.tensor(list(next(iter(held.values()))[: min(64, seq)]), dtype=torch.long)[None]
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    payload["machine"]["threads"] = torch.get_num_threads()
    try:
        # ---- 1. convergence curve
        if need_curve:
            from .train import evaluate

            conv = {"configs": ["dense", config_label(curve_config)], "steps": curve_steps, "every": curve_every,
                    "eval_tokens_per_domain": curve_windows * seq, "window": curve_window, "tol": curve_tol,
                    "schedule": "recovery_finetune's: warm-up then cosine over 'steps'", "curves": {},
                    "converged_at": None, "chosen_steps": None, "complete": False}
            payload["convergence"] = conv
            for raw, cn in ((configs[0], norm[0]), (curve_config, curve_norm)):
                name = config_label(raw)
                model = TinyMoEForCausalLM.from_pretrained(model_dir).eval()
                torch.manual_seed(seed)
                prune_model(model, cn, calib)
                pts: list[dict[str, float]] = []

                def log(step: int, model=model, pts=pts, name=name) -> None:
                    if step % curve_every and step != curve_steps:
                        return
                    was = model.training
                    ev = evaluate(model, held, seq=seq, batch=eval_batch, max_windows=curve_windows)
                    model.train(was)
                    pts.append({"step": step, "ppl": float(ev["overall"]["ppl"])})
                    if step:
                        tick(f"curve {name} @ {step}")

                log(0)
                t0 = time.perf_counter()
                recovery_finetune(model, train, curve_steps, masks=expert_masks(model) if cn["pattern"] != "dense" else [],
                                  lr=recovery_lr, batch=recovery_batch, seq=seq, seed=seed, callback=log)
                conv["curves"][name] = pts
                conv.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
                say(f"curve {name}: ppl " + " → ".join(f"{p['ppl']:.2f}@{p['step']}" for p in pts))
                save()
            conv["converged_at"] = convergence_steps(conv["curves"], window=curve_window, tol=curve_tol)
            conv["chosen_steps"] = conv["converged_at"] or curve_steps
            conv["complete"] = True
            say(f"recovery steps: {conv['chosen_steps']} "
                + ("(both curves flat)" if conv["converged_at"] else f"(not flat within {curve_steps} steps)"))
            save()
        steps = recovery_steps if recovery_steps is not None else payload["convergence"]["chosen_steps"]
        payload["settings"]["recovery_steps"] = steps
        # ---- 2. one-shot
        for i in todo_one_shot:
            rec, _ = _one_shot(model_dir, configs[i], norm[i], calib, held, max_windows, probe_ids, seq, seed,
                               eval_batch, check_backend, say)
            done[labels[i]] = rec
            save()
            tick(labels[i])
        # ---- 3. recovery
        if steps:
            if recover == "all":
                chosen = list(range(len(configs)))
            else:
                best: dict[str, int] = {}
                for i, c in enumerate(norm):
                    if i == 0 or c["joint"] is False:
                        continue
                    k = _group_key(c)
                    if k not in best or (done[labels[i]]["heldout_ppl"]["overall"]
                                         < done[labels[best[k]]]["heldout_ppl"]["overall"]):
                        best[k] = i
                chosen = [0] + list(best.values())
            for i in chosen:
                rec = done[labels[i]]
                if rec.get("recovered_ppl") is not None and (rec.get("recovery") or {}).get("steps") == steps:
                    continue
                from . import TinyMoEForCausalLM as _M

                model = _M.from_pretrained(model_dir).eval()
                torch.manual_seed(seed)
                prune_model(model, norm[i], calib)
                _recover(model, rec, norm[i], train, held, max_windows, probe_ids, seq, seed, eval_batch, steps,
                         recovery_lr, recovery_batch, check_backend, say)
                save()
                tick(f"recovered {labels[i]}")
        payload["status"] = "complete"
        save()
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.close()
    return payload


# ----------------------------------------------------------------------------------------------------
# recorded sweeps
# ----------------------------------------------------------------------------------------------------
def model_sha256(model_dir: str | os.PathLike) -> str:
    """SHA-256 (hex) of ``model_dir/model.safetensors``: identifies the checkpoint a sweep was run on."""
    p = Path(model_dir) / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing (expected a directory written by save_pretrained)")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _machine() -> dict[str, Any]:
    from ..device import device_info

    info = device_info()
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "backend": getattr(info, "backend", None)}


def write_sweep(
    path: str | os.PathLike,
    model_dir: str | os.PathLike,
    configs: Sequence[Mapping[str, Any]] | None = None,
    **sweep_kwargs: Any,
) -> dict[str, Any]:
    """Run :func:`sparsity_sweep` and write it, with what it was run on, as JSON to ``path``.

    The file holds ``schema``/``version``, ``created_utc``, ``machine``, ``model`` (directory, sha256 of
    ``model.safetensors``, config, and the training summary of ``metrics.json`` when present),
    ``settings`` (the sweep's keyword arguments), ``speed_model`` (:data:`SPEED_MODEL`), ``records`` and
    ``elapsed_s``. Defaults: ``configs = default_configs()``, ``calib_tokens = 16384``,
    ``eval_tokens = None`` (the whole held-out split). Returns the written dict.
    """
    configs = default_configs() if configs is None else list(configs)
    sweep_kwargs.setdefault("calib_tokens", 16384)
    sweep_kwargs.setdefault("eval_tokens", None)
    t0 = time.perf_counter()
    sha = model_sha256(model_dir)
    records = sparsity_sweep(model_dir, configs, **sweep_kwargs)
    if model_sha256(model_dir) != sha:
        raise RuntimeError(f"model_dir: {model_dir} changed while the sweep ran (a training run still writing?)")
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text())
    training = None
    if (d / "metrics.json").is_file():
        m = json.loads((d / "metrics.json").read_text())
        training = {k: m.get(k) for k in ("status", "steps", "tokens_trained", "train_seconds")}
        training["heldout_ppl"] = {k: v.get("ppl") for k, v in (m.get("heldout") or {}).items()}
    settings = {k: v for k, v in sweep_kwargs.items() if k != "progress"}
    settings["corpus_root"] = None if settings.get("corpus_root") is None else str(settings["corpus_root"])
    settings.setdefault("recovery_steps", 0)
    settings.setdefault("seed", 0)
    settings["domains"] = list(settings.get("domains", DOMAINS))
    payload = {
        "schema": SCHEMA, "version": SCHEMA_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "model": {"dir": str(model_dir), "sha256": sha, "config": cfg, "training": training},
        "settings": settings,
        "speed_model": SPEED_MODEL,
        "records": records,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, out)
    return payload


_RECORD_FIELDS = ("label", "pattern", "method", "vector", "density", "expert_bytes", "dense_expert_bytes",
                  "modelled_decode_speedup", "heldout_ppl", "recovered_ppl")


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file written by :func:`write_sweep`, validating its schema.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CorruptFileError
        Not JSON, wrong ``schema``/``version``, or a record missing a field or holding a bad value (the
        file, record and field are named).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing (regenerate it with `samoyeds-lab accuracy`)")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise CorruptFileError(f"{p}: schema: expected {SCHEMA!r}, got {got!r}")
    if data.get("version") not in (1, SCHEMA_VERSION):
        raise CorruptFileError(f"{p}: version: expected 1 or {SCHEMA_VERSION}, got {data.get('version')!r}")
    for key in ("model", "settings", "records", "created_utc", "machine"):
        if key not in data:
            raise CorruptFileError(f"{p}: field {key!r}: missing")
    recs = data["records"]
    if not isinstance(recs, list) or not recs:
        raise CorruptFileError(f"{p}: records: expected a non-empty list, got {recs!r}")
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            raise CorruptFileError(f"{p}: records[{i}]: expected an object, got {type(r).__name__}")
        for f in _RECORD_FIELDS:
            if f not in r:
                raise CorruptFileError(f"{p}: records[{i}] ({r.get('label', '?')}): field {f!r} missing")
        if r["pattern"] not in PATTERNS:
            raise CorruptFileError(f"{p}: records[{i}]: pattern: expected one of {PATTERNS}, got {r['pattern']!r}")
        ppl = r["heldout_ppl"]
        if not isinstance(ppl, dict) or "overall" not in ppl:
            raise CorruptFileError(f"{p}: records[{i}]: heldout_ppl: expected {{domain: ppl, 'overall': ppl}}")
        for d, v in ppl.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 1:
                raise CorruptFileError(
                    f"{p}: records[{i}]: heldout_ppl[{d!r}]: expected a finite number >= 1, got {v!r}")
        for f in ("density", "modelled_decode_speedup"):
            v = r[f]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < 100):
                raise CorruptFileError(f"{p}: records[{i}]: {f}: expected a positive number, got {v!r}")
    return data
