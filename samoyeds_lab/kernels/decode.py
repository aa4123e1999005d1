"""Host side of the decode SSMM kernel (``kernels/ssmm_decode.cu``): configs, pre-tiled operands, split-K, launches.

``ssmm(..., kernel="decode")`` and ``ssmm_plan(..., kernel="decode")`` run it; ``kernel="auto"`` picks it for
at most :data:`MAX_TOKENS` tokens per expert only where recorded measurements of this GPU model say it is
faster than the ``mma_sp`` path (:func:`choose_decode`); without records ``auto`` keeps the ``mma_sp`` path.

* **Configs.** :func:`default_config` gives the analytic model's decode defaults
  (:func:`samoyeds_lab.bench.ssmm_model.choose_defaults`, copied here as :data:`MODEL_DEFAULTS` and checked
  against the model by ``tests/kernels/test_decode.py``): H100 1–8 tokens: 8 tokens per tile, 6 stages,
  128 K per stage; 9–16 tokens: 8 per tile, 4 stages, 128 K. Every parameter is a ``-D`` define of the build
  (:meth:`~samoyeds_lab.reference.decode_replay.DecodeConfig.defines`), so each config is its own cached
  cubin (the options are part of the compile cache key).
* **Operand.** :func:`tiled_operand` is the weight pre-tiled once
  (:func:`samoyeds_lab.reference.decode_replay.pretile`) and cached per weight object (a
  ``WeakKeyDictionary``): a pipeline stage is one contiguous burst.
* **Split-K.** :func:`split_for` takes the SM count and the CTAs one SM holds (shared memory, threads) and picks
  the split with the least ``waves × k-steps per CTA``: the grid fills whole waves.
* **No finalize launch.** The last CTA of each (row block, token tile) reduces the splits' fp32 partials;
  its arrival counters (``int32 [token tiles, row blocks]``, zero) are reset by that CTA, so a plan re-runs
  without a memset.
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import Sequence

import numpy as np
import torch

from .._checks import check_int
from ..formats import NMWeight, SamoyedsWeight
from ..reference.decode_replay import DecodeConfig, pretile, smem_bytes, tile_bytes
from ..tiles import MMA_K, ceil_div
from .build import KERNEL_DIR, compile_source
from .launch import LaunchSpec, check_grid, device_token_tiles, num_token_tiles

#: The decode kernel's source.
SOURCE = KERNEL_DIR / "ssmm_decode.cu"
#: Most tokens per expert ``kernel="auto"`` considers the decode kernel for.
MAX_TOKENS = 16
#: Shared memory the driver reserves per CTA (sm_80 / sm_90).
CTA_RESERVED_SMEM = 1024
#: The model's decode defaults per device and token range: (block_n, stages, K per stage, split it assumed).
MODEL_DEFAULTS = {
    "h100_sxm": {"1-8": (8, 6, 128, 2), "9-16": (8, 4, 128, 2)},
    "h200": {"1-8": (8, 6, 64, 6), "9-16": (8, 6, 64, 3)},
}
#: Op name of the decode kernel in benchmark records (timed against baseline ``ssmm``, the mma_sp path).
RECORD_OP = "ssmm_decode"


def _profile_of(device_name: str | None) -> str:
    return "h200" if device_name and "H200" in device_name.upper() else "h100_sxm"


def default_config(tokens: int, weight: NMWeight | SamoyedsWeight, device_name: str | None = None) -> DecodeConfig:
    """The model's decode config for ``tokens`` per expert on ``device_name`` (H200 or else H100 defaults),
    with the weight's row selection (1:1 for a plain 2:4 weight)."""
    tokens = check_int("tokens", tokens, lo=0)
    sel = (weight.n, weight.m) if isinstance(weight, SamoyedsWeight) else (1, 1)
    rng = "1-8" if tokens <= 8 else "9-16"
    bn, st, kps, _ = MODEL_DEFAULTS[_profile_of(device_name)][rng]
    return DecodeConfig(block_m=128, block_n=bn, ksteps=kps // MMA_K, stages=st, sel_n=sel[0], sel_m=sel[1])


def module_name(cfg: DecodeConfig) -> str:
    """The :class:`~samoyeds_lab.kernels.launch.LaunchSpec` module of a config: ``"ssmm_decode:<defines>"``."""
    return "ssmm_decode:" + ",".join(f"{k}={v}" for k, v in cfg.defines().items())


def config_of_module(module: str) -> DecodeConfig:
    """Inverse of :func:`module_name`."""
    if not isinstance(module, str) or not module.startswith("ssmm_decode:"):
        raise ValueError(f"module: expected 'ssmm_decode:<defines>', got {module!r}")
    d = dict(kv.split("=") for kv in module.split(":", 1)[1].split(","))
    names = {"DEC_BLOCK_M": "block_m", "DEC_BLOCK_N": "block_n", "DEC_KSTEPS": "ksteps", "DEC_STAGES": "stages",
             "DEC_SEL_N": "sel_n", "DEC_SEL_M": "sel_m", "DEC_BULK": "bulk"}
    kw = {names[k]: int(v) for k, v in d.items()}
    if "bulk" in kw:
        kw["bulk"] = bool(kw["bulk"])
    return DecodeConfig(**kw)


def options(cfg: DecodeConfig) -> tuple[str, ...]:
    """NVRTC options the config adds to the standard ones (the ``-D`` defines)."""
    return tuple(f"-D{k}={v}" for k, v in cfg.defines().items())


def compile_config(cfg: DecodeConfig, arch: object, *, extra_options: tuple[str, ...] = ()):
    """Compile ``kernels/ssmm_decode.cu`` for ``cfg`` and ``arch`` (:func:`~samoyeds_lab.kernels.build.compile_source`)."""
    return compile_source(SOURCE, arch, extra_options=options(cfg) + tuple(extra_options))


@functools.lru_cache(maxsize=None)
def load_module(module: str, arch: str):
    """A CuPy ``RawModule`` of the decode build named ``module`` (see :func:`module_name`) for ``arch``."""
    import cupy

    res = compile_config(config_of_module(module), arch)
    path = res.cache_path
    if path is None:
        import hashlib
        import tempfile
        from pathlib import Path

        path = Path(tempfile.gettempdir()) / f"samoyeds_lab-ssmm_decode-{hashlib.sha256(res.cubin).hexdigest()[:20]}.cubin"
        if not path.exists():
            path.write_bytes(res.cubin)
    return cupy.RawModule(path=str(path))


_TILED: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def tiled_operand(weight: NMWeight | SamoyedsWeight, block_m: int = 128) -> torch.Tensor:
    """The pre-tiled operand of ``weight`` (built once per weight object and ``block_m``, on its device)."""
    per = _TILED.get(weight)
    if per is None:
        per = {}
        _TILED[weight] = per
    t = per.get(block_m)
    if t is None:
        t = pretile(weight, block_m)
        per[block_m] = t
    return t


def ctas_per_sm(cfg: DecodeConfig, smem_per_sm: int, max_threads_per_sm: int = 2048, max_ctas: int = 32) -> int:
    """Resident CTAs of ``cfg`` per SM from shared memory and threads (registers do not bind: ≤ 96 per thread,
    checked by the ptxas tests)."""
    by_smem = smem_per_sm // (smem_bytes(cfg) + CTA_RESERVED_SMEM)
    return max(0, min(by_smem, max_threads_per_sm // cfg.threads, max_ctas))


def split_cost(ksteps: int, blocks: int, cfg: DecodeConfig, slots: int, splits: int) -> tuple[float, int, int]:
    """``(cost, splits, steps_per_split)`` of asking for ``splits`` splits: the bytes one CTA moves (its weight
    tiles, plus, when split, its fp32 partials written and read back: ``2 · block_n · dense rows · 4``) times
    the waves of the grid (``ceil(blocks · splits / slots)``)."""
    units = ceil_div(ksteps, cfg.ksteps)
    per = ceil_div(units, min(splits, units)) * cfg.ksteps
    got = ceil_div(ksteps, per)
    per_cta = per * tile_bytes(cfg.block_m)
    if got > 1:
        per_cta += 2 * cfg.block_n * (cfg.block_m // cfg.sel_n * cfg.sel_m) * 4
    return ceil_div(blocks * got, slots) * per_cta, got, per


def split_for(ksteps: int, blocks: int, cfg: DecodeConfig, sms: int, per_sm: int, *,
              split_k: int | None = None) -> tuple[int, int]:
    """``(splits, steps_per_split)`` of a launch with ``blocks`` CTAs before splitting.

    A split holds whole stages (``steps_per_split`` is a multiple of ``cfg.ksteps``). Default: among 1..16
    splits the one with the least :func:`split_cost` (waves × bytes per CTA, ``slots = sms · per_sm``), fewer
    splits on a tie, so the grid fills whole waves; ``split_k`` asks for a number (clamped to K's stages).
    """
    ksteps = check_int("ksteps", ksteps, lo=1)
    blocks = check_int("blocks", blocks, lo=1)
    slots = max(1, check_int("sms", sms, lo=1) * max(int(per_sm), 1))
    if split_k is not None:
        _, got, per = split_cost(ksteps, blocks, cfg, slots, check_int("split_k", split_k, lo=1))
        return got, per
    best = None
    for s in range(1, min(16, ceil_div(ksteps, cfg.ksteps)) + 1):
        cost, got, per = split_cost(ksteps, blocks, cfg, slots, s)
        if best is None or cost < best[0]:
            best = (cost, got, per)
    return best[1], best[2]


def unsupported(weight: object, cfg: DecodeConfig | None = None) -> str | None:
    """Why the decode kernel cannot take ``weight`` (None when it can)."""
    if isinstance(weight, SamoyedsWeight):
        if weight.n not in (1, 2, 4, 8) or weight.m > 16:
            return f"row selection {weight.n}:{weight.m} (decode: n in 1, 2, 4, 8 and m <= 16)"
        if weight.vector % MMA_K:
            return f"vector={weight.vector} (a multiple of {MMA_K})"
    elif not isinstance(weight, NMWeight):
        return f"weight format {type(weight).__name__}"
    if cfg is not None and smem_bytes(cfg) > 227 * 1024:
        return f"config needs {smem_bytes(cfg)} B of shared memory per CTA"
    return None


def decode_specs(weights: Sequence[object], x: torch.Tensor, idx: torch.Tensor | None, offsets, epilogue: str,
                 up, out, scatter_idx, scale, split_k: int | None, *, gather: bool, epilogues: dict,
                 sms: int, smem_per_sm: int, device_name: str | None = None,
                 cfg: DecodeConfig | None = None) -> tuple[torch.Tensor, list[LaunchSpec]]:
    """The launch of one (grouped) decode call; ``out`` is allocated by the caller (``ops._ssmm_specs``), the
    arguments are checked, ``positions``, ``rows`` and ``cols`` are > 0."""
    w0 = weights[0]
    rows, cols = w0.shape
    positions = int(offsets[-1])
    per_expert = -(-positions // max(len(weights), 1))
    why = unsupported(w0)
    if why is None:
        cfg = default_config(per_expert, w0, device_name) if cfg is None else cfg
        why = unsupported(w0, cfg)
    if why is not None:
        raise ValueError(f"kernel: 'decode' does not take this call: {why}")
    has_ri = isinstance(w0, SamoyedsWeight)
    crows = w0.values.shape[0]
    ksteps = ceil_div(cols, MMA_K)
    mblocks = max(1, ceil_div(crows, cfg.block_m))
    ntiles = num_token_tiles(offsets, cfg.block_n)
    splits, per = split_for(ksteps, mblocks * ntiles, cfg, sms, ctas_per_sm(cfg, smem_per_sm), split_k=split_k)
    grid = check_grid((mblocks, ntiles, splits))
    dev = x.device
    if len(weights) == 1:
        tiled = tiled_operand(w0, cfg.block_m).to(dev)
    else:
        tiled = torch.stack([tiled_operand(w, cfg.block_m).to(dev) for w in weights]).contiguous()
    tt = device_token_tiles(offsets, dev, cfg.block_n)
    ws = torch.empty(splits, positions, rows, dtype=torch.float32, device=dev) if splits > 1 else None
    counters = torch.zeros(ntiles * mblocks, dtype=torch.int32, device=dev) if splits > 1 else None
    tok = idx.to(device=dev, dtype=torch.int32).contiguous() if (gather and idx is not None) else None
    sidx = scatter_idx.to(device=dev, dtype=torch.int32).contiguous() if epilogue == "scatter_add" else None
    sc = scale.to(device=dev, dtype=torch.float32).contiguous() if (epilogue == "scatter_add" and scale is not None) \
        else None
    upc = up.contiguous() if up is not None else None
    fn = "ssmm_decode_bf16" if x.dtype == torch.bfloat16 else "ssmm_decode_f16"
    args = (tiled, np.int32(has_ri), x, np.int32(x.stride(0)), np.int32(x.shape[0]), tok, tt.expert, tt.start,
            tt.count, np.int32(rows), np.int32(crows), np.int32(cols), np.int32(w0.vector if has_ri else cols),
            np.int32(per), ws, counters, np.int64(positions), np.int32(epilogues[epilogue]), out, np.int32(rows),
            np.int32(out.dtype == torch.float32), upc, sidx, sc)
    return out, [LaunchSpec(module_name(cfg), fn, grid, cfg.threads, smem_bytes(cfg), args)]


def choose_decode(tokens: int, dtype: torch.dtype | str, device: str, records: Sequence[dict]) -> bool:
    """True when ``records`` (benchmark records) show the decode kernel faster than the ``mma_sp`` path on this
    GPU model and dtype at the recorded tokens count nearest ``tokens`` (log scale; ≤ :data:`MAX_TOKENS`):
    op :data:`RECORD_OP` against baseline ``ssmm``, median ratio of ``ms / baseline_ms`` below 1. Records whose
    ``status`` is not ``"ok"`` are ignored; no such records: False."""
    import statistics

    tokens = check_int("tokens", tokens, lo=0)
    if tokens > MAX_TOKENS:
        return False
    dt = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    mine = [r for r in records if isinstance(r, dict) and r.get("op") == RECORD_OP and r.get("baseline") == "ssmm"
            and r.get("device") == device and r.get("dtype") == dt and r.get("status", "ok") == "ok"
            and r.get("baseline_ms", 0) > 0 and int(r.get("tokens", 0)) <= MAX_TOKENS]
    if not mine:
        return False
    t = max(tokens, 1)
    try:
        near = min({int(r["tokens"]) for r in mine}, key=lambda v: (abs(math.log(max(v, 1)) - math.log(t)), v))
        ratio = statistics.median(float(r["ms"]) / float(r["baseline_ms"]) for r in mine if int(r["tokens"]) == near)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"records: expected {RECORD_OP} records with numeric 'tokens', 'ms' and 'baseline_ms', "
                         f"got a malformed one ({type(exc).__name__}: {exc})") from None
    return ratio < 1.0


__all__ = ["SOURCE", "MAX_TOKENS", "MODEL_DEFAULTS", "RECORD_OP", "default_config", "module_name", "config_of_module",
           "options", "compile_config", "load_module", "tiled_operand", "tile_bytes", "ctas_per_sm", "split_cost", "split_for",
           "unsupported", "decode_specs", "choose_decode"]
