"""An analytic model of one SSMM launch configuration on one GPU: every number it gives is *predicted*.

Written before any GPU measurement so that the first one meets a prediction. For a config (tile
``block_m × block_n × k_per_stage`` per CTA, ``stages``, split-K, threads, registers, the fp32 shared flush
tile or not) and a device (:class:`DeviceLimits`: SMs, HBM bandwidth, an *assumed* loaded DRAM latency,
shared memory and registers per SM, the 2:4 tensor-core peak) it computes, for a Samoyeds weight
``[m, k]`` (1:2, V=128 by default) and ``tokens`` routed tokens::

    smem / CTA         = stages · stage_bytes + block_n · 4 (token ids)
                         + flush tile (block_n · (dense rows/CTA + pad) · 4)
    stage_bytes        = block_m · k_s/2 · b (values) + block_m · k_s/8 (metadata) + block_n · k_s · b (tokens)
    CTAs / SM          = min(smem limit, register limit, thread limit, 32)
    grid               = ceil(crows / block_m) · ceil(tokens / block_n) · splits
    waves              = grid / (SMs · CTAs/SM)            wave factor = ceil(waves) / waves  (1 below one wave)
    bytes in flight    = resident CTAs · (stages - 1) · loaded stage bytes      (cp.async: stages-1 outstanding)
    Little's law       : HBM needs latency · bandwidth bytes in flight (÷ SMs per SM)
    memory fraction    = min(1, in flight / (latency · bandwidth)) · streaming efficiency
    HBM bytes          = weight · reads + tokens + output     reads = 1 when the weight fits the reusable L2, else
                         ceil(token tiles / tiles of one row block resident together)
    SM bytes           = weight · token tiles + tokens · row blocks + output    (what the SMs load, L2 or HBM)
    t_memory           = max(HBM bytes / (bandwidth · memory fraction), SM bytes / (busy SMs · per-SM bandwidth))
    t_compute          = 2 · crows · k · (tiles · block_n) / (2:4 peak · path fraction · busy SMs / SMs)
    predicted time     = max(t_memory, t_compute) · wave factor  (+ finalize: workspace bytes / bandwidth + gap)
    predicted ratio    = dense cuBLAS roofline / predicted time

The dense cuBLAS roofline is ``max(dense bytes / (bandwidth · streaming efficiency), 2·m·k·tokens / dense
peak)`` (:func:`samoyeds_lab.bench.roofline.op_bytes`, the same byte counts Lab 02 plots). The model leaves
out what it cannot count: shared-memory bank conflicts, the window flush, instruction issue limits other
than the tensor cores, L2 hits. Assumptions are fields with defaults, named ``*_assumed`` in the results.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Sequence

from .. import tiles
from .._checks import check_float, check_int
from ..offload.hardware import load_profile

#: Shared memory the driver reserves per CTA on sm_80/sm_90 (bytes).
CTA_RESERVED_SMEM = 1024
#: fp32 padding per row of the shared flush tile (``ACC_PAD`` of the kernels).
ACC_PAD = 4
#: Register allocation granularity per thread (registers are handed out in units of 8 per thread).
REG_GRANULE = 8


@dataclass(frozen=True)
class DeviceLimits:
    """What the model needs of a GPU. Datasheet figures unless the name says ``assumed``.

    Attributes
    ----------
    name : str
    sms : int
        Streaming multiprocessors.
    hbm_bytes_per_s : float
        HBM bandwidth (datasheet).
    dram_latency_s_assumed : float
        Loaded DRAM latency seen by a ``cp.async`` (assumed 800 ns: the issue's 20–35 KB per SM to saturate
        HBM3/HBM3e corresponds to 790–960 ns at 132 SMs).
    smem_per_sm, smem_per_block : int
        Shared memory per SM and the opt-in maximum per block (bytes).
    regs_per_sm, max_threads_per_sm, max_ctas_per_sm : int
    l2_bytes : int
    dense_flops, sparse_flops : float
        fp16/bf16 tensor peaks, dense and 2:4 (dense-equivalent), FLOP/s.
    mma_sp_fraction_assumed, wgmma_sp_fraction_assumed : float
        Fraction of the 2:4 peak the warp-level ``mma.sp`` / the warpgroup ``wgmma.sp`` path reaches.
    streaming_efficiency_assumed : float
        Fraction of the HBM datasheet bandwidth a well-fed streaming kernel reaches (both sides of the ratio).
    launch_gap_s_assumed : float
        Cost of one more dependent launch on the same stream (the split-K finalize).
    sm_bytes_per_s_assumed : float
        Most one SM can pull from memory (assumed 64 B/clock at 1.755 GHz ≈ 112 GB/s): a grid that keeps only
        a few SMs busy cannot stream HBM however much each has in flight.
    l2_reuse_fraction_assumed : float
        A weight at most this fraction of L2 is read from HBM once however many token tiles stream it;
        a larger one is read from HBM once per group of token tiles resident at the same time.
    """

    name: str
    sms: int
    hbm_bytes_per_s: float
    dram_latency_s_assumed: float
    smem_per_sm: int
    smem_per_block: int
    regs_per_sm: int
    max_threads_per_sm: int
    max_ctas_per_sm: int
    l2_bytes: int
    dense_flops: float
    sparse_flops: float
    mma_sp_fraction_assumed: float = 0.6
    wgmma_sp_fraction_assumed: float = 0.85
    streaming_efficiency_assumed: float = 0.9
    launch_gap_s_assumed: float = 2e-6
    sm_bytes_per_s_assumed: float = 64 * 1.755e9
    l2_reuse_fraction_assumed: float = 0.5

    def __post_init__(self) -> None:
        for f in ("sms", "smem_per_sm", "smem_per_block", "regs_per_sm", "max_threads_per_sm", "max_ctas_per_sm",
                  "l2_bytes"):
            check_int(f, getattr(self, f), lo=1)
        for f in ("hbm_bytes_per_s", "dram_latency_s_assumed", "dense_flops", "sparse_flops"):
            check_float(f, getattr(self, f), lo=0, lo_open=True)
        for f in ("mma_sp_fraction_assumed", "wgmma_sp_fraction_assumed", "streaming_efficiency_assumed",
                  "l2_reuse_fraction_assumed"):
            check_float(f, getattr(self, f), lo=0, hi=1, lo_open=True)
        check_float("launch_gap_s_assumed", self.launch_gap_s_assumed, lo=0)
        check_float("sm_bytes_per_s_assumed", self.sm_bytes_per_s_assumed, lo=0, lo_open=True)

    @property
    def littles_law_bytes(self) -> float:
        """Bytes that must be in flight to stream HBM at full rate: latency × bandwidth (predicted need)."""
        return self.dram_latency_s_assumed * self.hbm_bytes_per_s

    @property
    def littles_law_bytes_per_sm(self) -> float:
        return self.littles_law_bytes / self.sms


#: SM-level facts of Hopper (sm_90) shared by H100 SXM and H200 (CUDA programming guide, compute capability
#: 9.0 table): 228 KB shared memory per SM, 227 KB per block opt-in, 64 K registers, 2048 threads, 32 CTAs.
_HOPPER_SM = dict(sms=132, smem_per_sm=228 * 1024, smem_per_block=227 * 1024, regs_per_sm=65536,
                  max_threads_per_sm=2048, max_ctas_per_sm=32)
#: L2 per device (bytes): 50 MB on H100 SXM, 60 MB reported on H200.
_L2 = {"h100_sxm": 50 * 1024 * 1024, "h200": 60 * 1024 * 1024}


def device_limits(name: str = "h100_sxm", **overrides) -> DeviceLimits:
    """:class:`DeviceLimits` of a Hopper profile of ``data/hardware`` (``"h100_sxm"`` or ``"h200"``).

    Bandwidth and tensor peaks come from the profile; SM limits from the sm_90 table; ``overrides``
    replace any field (e.g. ``dram_latency_s_assumed=900e-9``).
    """
    if name not in _L2:
        raise ValueError(f"name: expected one of {sorted(_L2)} (Hopper profiles with SM limits), got {name!r}")
    prof = load_profile(name)
    base = DeviceLimits(name=name, hbm_bytes_per_s=prof.memory_bandwidth_gbs * 1e9, dram_latency_s_assumed=800e-9,
                        l2_bytes=_L2[name], dense_flops=prof.fp16_tflops * 1e12,
                        sparse_flops=prof.fp16_sparse_tflops * 1e12, **_HOPPER_SM)
    return replace(base, **overrides) if overrides else base


@dataclass(frozen=True)
class SsmmConfig:
    """One launch configuration of the SSMM kernel family.

    Attributes
    ----------
    block_m : int
        Compressed weight rows per CTA (multiple of 16).
    block_n : int
        Tokens per tile (multiple of 8).
    k_per_stage : int
        Dense K per pipeline stage (multiple of 32).
    stages : int
        Pipeline depth (>= 2).
    split_k : int or None
        K splits; None = the launcher's automatic plan (:func:`samoyeds_lab.kernels.launch.split_plan`).
    threads : int
        Threads per CTA.
    regs_per_thread : int or None
        From ``ptxas -v``; None = :func:`estimate_registers` (an estimate, labelled so).
    flush_tile : bool
        The fp32 shared-memory flush tile of today's kernel (False: window accumulators in registers).
    path : {"mma_sp", "wgmma_sp"}
    finalize_launch : bool
        Split-K ends in a separate finalize launch (False: a last-CTA reduction in the same launch).
    name : str
    """

    block_m: int = tiles.BLOCK_M
    block_n: int = tiles.BLOCK_N
    k_per_stage: int = tiles.BLOCK_K
    stages: int = tiles.STAGES
    split_k: int | None = None
    threads: int = tiles.THREADS
    regs_per_thread: int | None = None
    flush_tile: bool = True
    path: str = "mma_sp"
    finalize_launch: bool = True
    name: str = "custom"

    def __post_init__(self) -> None:
        check_int("block_m", self.block_m, lo=16)
        if self.block_m % 16:
            raise ValueError(f"block_m: expected a multiple of 16, got {self.block_m}")
        check_int("block_n", self.block_n, lo=8)
        if self.block_n % 8:
            raise ValueError(f"block_n: expected a multiple of 8, got {self.block_n}")
        check_int("k_per_stage", self.k_per_stage, lo=32)
        if self.k_per_stage % 32:
            raise ValueError(f"k_per_stage: expected a multiple of 32, got {self.k_per_stage}")
        check_int("stages", self.stages, lo=2)
        if self.split_k is not None:
            check_int("split_k", self.split_k, lo=1)
        check_int("threads", self.threads, lo=32, hi=1024)
        if self.threads % 32:
            raise ValueError(f"threads: expected a multiple of 32, got {self.threads}")
        if self.regs_per_thread is not None:
            check_int("regs_per_thread", self.regs_per_thread, lo=16, hi=255)
        if self.path not in ("mma_sp", "wgmma_sp"):
            raise ValueError(f"path: expected 'mma_sp' or 'wgmma_sp', got {self.path!r}")


#: Today's ``kernels/ssmm.cu`` defaults (mma.sp path): 128 × 64 × 32, 2 stages, the shared flush tile.
TODAY = SsmmConfig(name="today (ssmm.cu defaults)")


def estimate_registers(cfg: SsmmConfig, sel_n: int = 1, sel_m: int = 2) -> int:
    """Estimated registers per thread: 64 for addresses/fragments + fp32 accumulators per thread
    (``block_m · block_n / threads``), times ``1 + sel_m`` without a flush tile (a working accumulator
    plus one per candidate row, as the decode variant keeps them in registers). Capped at 255."""
    acc = cfg.block_m * cfg.block_n // cfg.threads
    copies = 1 if cfg.flush_tile else 1 + sel_m // sel_n
    return min(255, 64 + acc * copies)


def stage_bytes(cfg: SsmmConfig, tokens_loaded: int | None = None, dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes of one pipeline stage of one CTA: ``values``, ``meta``, ``tokens``, ``weight`` (values + meta),
    ``total``. ``tokens_loaded`` (default ``block_n``): real token rows (a tail tile loads fewer)."""
    t = cfg.block_n if tokens_loaded is None else min(cfg.block_n, tokens_loaded)
    values = cfg.block_m * cfg.k_per_stage // 2 * dtype_bytes
    meta = cfg.block_m * cfg.k_per_stage // 8
    tok = t * cfg.k_per_stage * dtype_bytes
    return {"values": values, "meta": meta, "tokens": tok, "weight": values + meta, "total": values + meta + tok}


def smem_per_cta(cfg: SsmmConfig, sel_n: int = 1, sel_m: int = 2) -> int:
    """Dynamic shared memory of one CTA (bytes), the layout of today's kernel for its defaults."""
    flush = cfg.block_n * (cfg.block_m // sel_n * sel_m + ACC_PAD) * 4 if cfg.flush_tile else 0
    return cfg.stages * stage_bytes(cfg)["total"] + cfg.block_n * 4 + flush


def ctas_per_sm(cfg: SsmmConfig, dev: DeviceLimits, sel_n: int = 1, sel_m: int = 2) -> dict[str, int]:
    """Resident CTAs per SM and each limit: ``smem``, ``regs``, ``threads``, ``hw``, ``ctas`` (the minimum)."""
    smem = smem_per_cta(cfg, sel_n, sel_m)
    regs = cfg.regs_per_thread if cfg.regs_per_thread is not None else estimate_registers(cfg, sel_n, sel_m)
    regs = -(-regs // REG_GRANULE) * REG_GRANULE
    lim = {
        "smem": dev.smem_per_sm // (smem + CTA_RESERVED_SMEM) if smem <= dev.smem_per_block else 0,
        "regs": dev.regs_per_sm // (regs * cfg.threads),
        "threads": dev.max_threads_per_sm // cfg.threads,
        "hw": dev.max_ctas_per_sm,
    }
    lim["ctas"] = min(lim.values())
    return lim


def wave_factor(grid: int, slots: int) -> tuple[float, int, float]:
    """``(waves, quantised waves, factor)``: ``grid / slots``, its ceiling, and ``ceil / waves`` (the tail
    wave costs a whole wave); below one wave the factor is 1 (fewer resident CTAs is modelled instead)."""
    check_int("grid", grid, lo=1)
    check_int("slots", slots, lo=1)
    waves = grid / slots
    q = math.ceil(waves)
    return waves, q, (q / waves if waves >= 1 else 1.0)


def _splits(cfg: SsmmConfig, ksteps: int, unit: int, blocks: int, sms: int) -> int:
    from ..kernels.launch import split_plan

    if cfg.k_per_stage == tiles.MMA_K:
        return split_plan(ksteps, unit, blocks, split_k=cfg.split_k, sms=sms).splits
    # deeper stages: a split must hold whole stages and whole windows
    stage_steps = cfg.k_per_stage // tiles.MMA_K
    unit = unit * stage_steps // math.gcd(unit, stage_steps)
    return split_plan(ksteps, unit, blocks, split_k=cfg.split_k, sms=sms).splits


@dataclass(frozen=True)
class Prediction:
    """Everything :func:`predict` derived (times in seconds, every one predicted)."""

    config: SsmmConfig
    device: str
    m: int
    k: int
    tokens: int
    smem_per_cta: int
    regs_per_thread: int
    ctas_per_sm: int
    limiter: str
    grid: int
    splits: int
    slots: int
    waves: float
    quantised_waves: int
    wave_factor: float
    stage_bytes: int
    weight_bytes_in_flight_per_sm: float
    bytes_in_flight_per_sm: float
    littles_law_bytes_per_sm: float
    memory_fraction: float
    hbm_bytes: int
    sm_bytes: int
    t_memory_s: float
    t_compute_s: float
    t_finalize_s: float
    predicted_s: float
    bound: str
    dense_roofline_s: float
    predicted_ratio_vs_dense: float
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["config"] = asdict(self.config)
        d["label"] = "predicted (analytic model, not measured)"
        return d


def predict(cfg: SsmmConfig, m: int, k: int, tokens: int, dev: DeviceLimits | str = "h100_sxm", *,
            pattern: tuple[int, int, int] = (1, 2, 128), dtype: str = "bfloat16") -> Prediction:
    """Predicted time of ``ssmm`` with ``cfg`` on a Samoyeds ``[m, k]`` weight and ``tokens`` tokens.

    Parameters
    ----------
    cfg : SsmmConfig
    m, k : int
        Dense weight rows (outputs) and columns (inputs): Mixtral w1 is 14336 × 4096, w2 4096 × 14336.
    tokens : int
        Routed tokens (>= 1).
    dev : DeviceLimits or str
        A :class:`DeviceLimits` or a name for :func:`device_limits`.
    pattern : (n, M, V)
        Samoyeds row selection (default 1:2, V = 128).

    Raises
    ------
    ValueError
        A config that fits no CTA on an SM (shared memory or registers), bad sizes.
    """
    from .roofline import op_bytes

    if not isinstance(cfg, SsmmConfig):
        raise TypeError(f"cfg: expected an SsmmConfig, got {type(cfg).__name__}")
    dev = device_limits(dev) if isinstance(dev, str) else dev
    if not isinstance(dev, DeviceLimits):
        raise TypeError(f"dev: expected a DeviceLimits or a profile name, got {type(dev).__name__}")
    m = check_int("m", m, lo=1)
    k = check_int("k", k, lo=32)
    tokens = check_int("tokens", tokens, lo=1)
    sel_n, sel_m, vector = pattern
    crows = m // sel_m * sel_n
    lim = ctas_per_sm(cfg, dev, sel_n, sel_m)
    if lim["ctas"] < 1:
        smem = smem_per_cta(cfg, sel_n, sel_m)
        raise ValueError(f"cfg: expected a config that fits one CTA per SM, got {smem} B shared memory "
                         f"(limit {dev.smem_per_block}) and limits {lim}")
    per_sm = lim["ctas"]
    limiter = min((v, n) for n, v in lim.items() if n != "ctas")[1]
    ksteps = -(-k // tiles.MMA_K)
    mblocks = -(-crows // cfg.block_m)
    ntiles = -(-tokens // cfg.block_n)
    splits = _splits(cfg, ksteps, vector // tiles.MMA_K, mblocks * ntiles, dev.sms)
    grid = mblocks * ntiles * splits
    slots = dev.sms * per_sm
    waves, qwaves, wfac = wave_factor(grid, slots)
    resident = min(grid, slots)
    sb = stage_bytes(cfg, min(tokens, cfg.block_n))
    in_flight = resident * (cfg.stages - 1) * sb["total"]
    w_in_flight = resident * (cfg.stages - 1) * sb["weight"]
    frac = min(1.0, in_flight / dev.littles_law_bytes) * dev.streaming_efficiency_assumed
    b = op_bytes("ssmm", m, k, tokens, dtype, samoyeds=pattern)
    ws = splits * tokens * m * 4 if splits > 1 else 0
    out_main = 0 if splits > 1 else b["output"]
    # every token tile's CTAs stream their row block's weight again: from L2 when the weight fits in the
    # assumed reusable part of it; else the tiles of one row block resident at the same time (x = row blocks
    # runs fastest in the grid) share one HBM read; the gathered activations are re-read per row block (from L2)
    together = max(1, min(ntiles, slots // (mblocks * splits)))
    w_reads = 1 if b["weight"] <= dev.l2_reuse_fraction_assumed * dev.l2_bytes else -(-ntiles // together)
    main_bytes = b["weight"] * w_reads + b["activation"] + b["index"] + out_main + ws
    sm_bytes = b["weight"] * ntiles + (b["activation"] + b["index"]) * mblocks + out_main + ws
    busy = min(dev.sms, grid) / dev.sms
    t_mem = max(main_bytes / (dev.hbm_bytes_per_s * frac), sm_bytes / (min(dev.sms, grid) * dev.sm_bytes_per_s_assumed))
    rate = dev.sparse_flops * (dev.mma_sp_fraction_assumed if cfg.path == "mma_sp" else dev.wgmma_sp_fraction_assumed)
    t_cmp = 2.0 * crows * k * ntiles * cfg.block_n / (rate * busy)
    t_fin = 0.0
    if splits > 1 and cfg.finalize_launch:
        t_fin = (ws + b["output"]) / (dev.hbm_bytes_per_s * dev.streaming_efficiency_assumed) + dev.launch_gap_s_assumed
    pred = max(t_mem, t_cmp) * wfac + t_fin
    dense_b = op_bytes("dense", m, k, tokens, dtype)["total"]
    dense_t = max(dense_b / (dev.hbm_bytes_per_s * dev.streaming_efficiency_assumed),
                  2.0 * m * k * tokens / dev.dense_flops)
    notes = []
    if cfg.regs_per_thread is None:
        notes.append("registers estimated, not from ptxas")
    if in_flight < dev.littles_law_bytes:
        notes.append(f"latency-bound: {in_flight / dev.sms / 1024:.1f} KiB in flight per SM, "
                     f"{dev.littles_law_bytes_per_sm / 1024:.1f} KiB needed")
    return Prediction(
        config=cfg, device=dev.name, m=m, k=k, tokens=tokens, smem_per_cta=smem_per_cta(cfg, sel_n, sel_m),
        regs_per_thread=cfg.regs_per_thread or estimate_registers(cfg, sel_n, sel_m), ctas_per_sm=per_sm,
        limiter=limiter, grid=grid, splits=splits, slots=slots, waves=waves, quantised_waves=qwaves, wave_factor=wfac,
        stage_bytes=sb["total"], weight_bytes_in_flight_per_sm=w_in_flight / dev.sms,
        bytes_in_flight_per_sm=in_flight / dev.sms, littles_law_bytes_per_sm=dev.littles_law_bytes_per_sm,
        memory_fraction=frac, hbm_bytes=int(main_bytes + (ws + b["output"] if splits > 1 else 0)),
        sm_bytes=int(sm_bytes),
        t_memory_s=t_mem, t_compute_s=t_cmp, t_finalize_s=t_fin, predicted_s=pred,
        bound="memory" if t_mem >= t_cmp else "compute", dense_roofline_s=dense_t,
        predicted_ratio_vs_dense=dense_t / pred, notes=tuple(notes))


#: Mixtral-8x7B expert matrices (dense rows × columns): w1/w3 (gate/up) and w2 (down).
MIXTRAL = {"w1": (14336, 4096), "w2": (4096, 14336)}
#: Decode token counts of the candidate sweep.
DECODE_TOKENS = (1, 8, 16, 64)
#: Token ranges a default is chosen for, and the token counts that represent each.
TOKEN_RANGES = {"1-8": (1, 8), "9-16": (16,), "17-64": (64,)}


def decode_candidates(stages: Sequence[int] = (2, 4, 6), k_per_stage: Sequence[int] = (32, 64, 128),
                      split_k: Sequence[int] = tuple(range(1, 9)), block_n: Sequence[int] = (8, 16, 64)
                      ) -> list[SsmmConfig]:
    """The candidate decode configs: register window accumulators (no flush tile), no finalize launch
    (a last-CTA reduction), every combination of the given stages, K per stage, split-K and tokens per tile."""
    out = []
    for s in stages:
        for kp in k_per_stage:
            for sk in split_k:
                for bn in block_n:
                    out.append(SsmmConfig(block_n=bn, k_per_stage=kp, stages=s, split_k=sk, flush_tile=False,
                                          finalize_launch=False, name=f"decode n{bn} s{s} k{kp} split{sk}"))
    return out


def sweep(configs: Iterable[SsmmConfig], shapes: dict[str, tuple[int, int]] = MIXTRAL,
          tokens: Sequence[int] = DECODE_TOKENS, dev: DeviceLimits | str = "h100_sxm") -> list[Prediction]:
    """:func:`predict` for every (config, shape, tokens); configs that fit no CTA per SM are left out."""
    dev = device_limits(dev) if isinstance(dev, str) else dev
    out = []
    for cfg in configs:
        for m, k in shapes.values():
            for t in tokens:
                try:
                    out.append(predict(cfg, m, k, t, dev))
                except ValueError:
                    continue
    return out


def choose_defaults(configs: Sequence[SsmmConfig] | None = None, shapes: dict[str, tuple[int, int]] = MIXTRAL,
                    ranges: dict[str, tuple[int, ...]] = TOKEN_RANGES, dev: DeviceLimits | str = "h100_sxm"
                    ) -> dict[str, dict]:
    """Per token range, the config with the lowest mean predicted time relative to the best config of each
    (shape, tokens) case; returns ``{range: {"config", "score", "predictions"}}`` (all predicted)."""
    configs = list(decode_candidates() if configs is None else configs)
    if not configs:
        raise ValueError("configs: expected at least one SsmmConfig, got none")
    dev = device_limits(dev) if isinstance(dev, str) else dev
    out = {}
    for rng, toks in ranges.items():
        preds = sweep(configs, shapes, toks, dev)
        if not preds:
            raise ValueError(f"configs: none of them fits {dev.name}")
        best = {}
        for p in preds:
            key = (p.m, p.k, p.tokens)
            best[key] = min(best.get(key, math.inf), p.predicted_s)
        by_cfg: dict[SsmmConfig, list[Prediction]] = {}
        for p in preds:
            by_cfg.setdefault(p.config, []).append(p)
        cases = len(best)
        scored = [(sum(p.predicted_s / best[(p.m, p.k, p.tokens)] for p in ps) / len(ps), i, c)
                  for i, (c, ps) in enumerate(by_cfg.items()) if len(ps) == cases]
        score, _, cfg = min(scored)
        out[rng] = {"config": cfg, "score": score, "predictions": by_cfg[cfg]}
    return out


#: The Hopper prefill build (kernels/ssmm_prefill_sm90.cu, samoyeds_lab.kernels.prefill.DEFAULT_CONFIG): 128
#: compressed rows x 128 tokens, 6 stages of 32 K, 3 warpgroups of which 2 compute, 168 registers per thread
#: (ptxas, the launch value; tests/kernels/test_prefill_sm90.py checks it), window accumulators in registers,
#: no split-K, wgmma.sp.
PREFILL = SsmmConfig(block_m=128, block_n=128, k_per_stage=32, stages=6, split_k=1, threads=384, regs_per_thread=168,
                     flush_tile=False, path="wgmma_sp", finalize_launch=False, name="prefill sm90 128x128x32 s6")
#: Token counts the prefill build is meant for.
PREFILL_TOKENS = (1024, 4096)


def predict_prefill(dev: DeviceLimits | str = "h100_sxm", tokens: Sequence[int] = PREFILL_TOKENS,
                    shapes: dict[str, tuple[int, int]] = MIXTRAL) -> list[Prediction]:
    """Predictions of :data:`PREFILL` and, for comparison, :data:`TODAY` on ``shapes`` at ``tokens`` (1:2,
    V = 128): ``[prefill w1 t0, today w1 t0, prefill w1 t1, ...]``. Every number predicted."""
    return [predict(cfg, m, k, t, dev) for m, k in shapes.values() for t in tokens for cfg in (PREFILL, TODAY)]


def table(preds: Sequence[Prediction]) -> str:
    """A plain-text table of predictions (every time labelled predicted)."""
    head = (f"{'config':34s} {'device':9s} {'m x k':>12s} {'tok':>4s} {'CTA/SM':>6s} {'grid':>5s} {'waves':>5s} "
            f"{'KiB fly/SM':>10s} {'need':>5s} {'pred us':>8s} {'bound':>7s} {'x dense':>7s}")
    lines = [head, "-" * len(head)]
    for p in preds:
        lines.append(f"{p.config.name[:34]:34s} {p.device:9s} {f'{p.m}x{p.k}':>12s} {p.tokens:>4d} {p.ctas_per_sm:>6d} "
                     f"{p.grid:>5d} {p.waves:>5.2f} {p.bytes_in_flight_per_sm / 1024:>10.1f} "
                     f"{p.littles_law_bytes_per_sm / 1024:>5.1f} {p.predicted_s * 1e6:>8.1f} {p.bound:>7s} "
                     f"{p.predicted_ratio_vs_dense:>7.2f}")
    lines.append("all times and ratios are predicted by samoyeds_lab.bench.ssmm_model (no GPU measurement)")
    return "\n".join(lines)


def report(devices: Sequence[str] = ("h100_sxm", "h200"), tokens: Sequence[int] = (1, 8, 16, 64, 1024, 4096)) -> str:
    """Text report: today's config on Mixtral w1/w2 and the decode default picked per token range, per device
    (``python -m samoyeds_lab.bench.ssmm_model``). Every number in it is predicted."""
    parts = []
    for d in devices:
        dev = device_limits(d)
        parts.append(f"== {d}: today's ssmm.cu config (predicted)")
        parts.append(table([predict(TODAY, m, k, t, dev) for m, k in MIXTRAL.values() for t in tokens]))
        for rng, v in choose_defaults(dev=dev).items():
            c = v["config"]
            parts.append(f"-- tokens {rng}: default {c.name} (mean {v['score']:.3f}x the best candidate per case)")
            parts.append(table(v["predictions"]))
    return "\n".join(parts)


__all__ = ["DeviceLimits", "device_limits", "SsmmConfig", "TODAY", "estimate_registers", "stage_bytes", "smem_per_cta",
           "ctas_per_sm", "wave_factor", "Prediction", "predict", "MIXTRAL", "DECODE_TOKENS", "TOKEN_RANGES",
           "decode_candidates", "sweep", "choose_defaults", "table", "report", "CTA_RESERVED_SMEM",
           "PREFILL", "PREFILL_TOKENS", "predict_prefill"]


if __name__ == "__main__":  # pragma: no cover
    print(report())
