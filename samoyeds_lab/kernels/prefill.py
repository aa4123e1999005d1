"""Host side of the Hopper prefill SSMM (``kernels/ssmm_prefill_sm90.cu``, sm_90a only).

The kernel (see the comment at the top of the ``.cu``) is warp-specialised: a producer warpgroup fills
``stages`` shared-memory stages of ``k_stage`` K each, two consumer warpgroups (64 compressed rows each) issue
``wgmma.mma_async.sp.m64n{bn}k32`` and keep one group in flight (``wait_group 1``). Per stage the weight side
is ONE ``cp.async.bulk`` of a burst pre-tiled here, once per weight and config (:func:`pretile`)::

    tiled[expert, row block, stage] = [ A: k_stage/32 slabs of 128 rows x 16 stored halves (ldmatrix swizzle)
                                        | metadata: k_stage/32 slabs of 8 tiles x 16 mma.sp words
                                        | row_index: 128 bytes of the stage's window ]

so the kernel has no weight-side tails: rows past ``crows`` and K past ``cols`` are zero values with the
legal padding word ``0x44444444``. The token side (rows of ``x`` picked by id) is gathered by the producer
with 16-byte ``cp.async`` and counted on the same mbarrier.

:class:`PrefillConfig` holds the compile-time parameters (``-D`` options, hence part of the compile cache
key); :func:`prefill_unsupported` says why a weight cannot run; :func:`prefill_specs` builds the launch of one
(grouped) ssmm call for :mod:`samoyeds_lab.kernels.ops` (``kernel="wgmma_prefill"``) and, through it,
:func:`samoyeds_lab.kernels.plan.ssmm_plan`. The CPU replay of the kernel is
:mod:`samoyeds_lab.reference.prefill_replay`.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import tiles
from .._checks import check_int
from ..formats import NMWeight, SamoyedsWeight
from ..formats.sptc import mma_metadata
from .build import KERNEL_DIR, compile_source
from .launch import LaunchSpec, check_grid, device_token_tiles, num_token_tiles

#: The CUDA source of the prefill kernel.
SOURCE: Path = KERNEL_DIR / "ssmm_prefill_sm90.cu"
#: Prefix of the module name in a :class:`~samoyeds_lab.kernels.launch.LaunchSpec`: ``MODULE + ":" +`` the
#: comma-joined ``-DPF_*`` defines of its build (``ops`` hands such names to :func:`load_module`).
MODULE = "ssmm_prefill_sm90"
#: Compressed weight rows per CTA (two m64 consumer slabs) and threads per CTA (3 warpgroups).
BLOCK_M = 128
THREADS = 384
#: Shared-memory base alignment the kernel rounds up to (64-byte swizzle phase from address bits).
SMEM_ALIGN = 1024
#: Shared memory per CTA the H100/H200 allow (sm_90 opt-in maximum).
SMEM_LIMIT = 227 * 1024
PAD_WORD = 0x44444444


@dataclass(frozen=True)
class PrefillConfig:
    """Compile-time parameters of the prefill kernel (the ``-D`` options of its build).

    Parameters
    ----------
    bn : int
        Tokens per tile = N of each ``wgmma.m64nNk32`` (128 or 256).
    stages : int
        Shared-memory pipeline stages (2..12).
    k_stage : int
        K per stage, a multiple of 32 (``k_stage / 32`` wgmma per stage and consumer).
    cand : int
        Candidate accumulators per compressed row (the register window flush): the largest ``sel_m`` of a
        ``SamoyedsWeight`` (with ``sel_n = 1``) it runs; 0 runs plain 2:4 weights only.
    """

    bn: int = 128
    stages: int = 6
    k_stage: int = 32
    cand: int = 2

    def __post_init__(self):
        if self.bn not in (128, 256):
            raise ValueError(f"bn: expected 128 or 256 tokens per tile, got {self.bn!r}")
        check_int("stages", self.stages, lo=2, hi=12)
        check_int("k_stage", self.k_stage, lo=32, hi=256)
        if self.k_stage % 32:
            raise ValueError(f"k_stage: expected a multiple of 32, got {self.k_stage}")
        check_int("cand", self.cand, lo=0, hi=4)
        if self.smem_bytes > SMEM_LIMIT:
            raise ValueError(f"stages: {self} needs {self.smem_bytes} B of shared memory per CTA, sm_90 allows "
                             f"{SMEM_LIMIT}")

    @property
    def ksteps(self) -> int:
        """k32 wgmma steps per stage."""
        return self.k_stage // 32

    @property
    def b_bytes(self) -> int:
        """Gathered-token bytes of one stage (``bn`` rows x ``k_stage`` halves)."""
        return self.ksteps * self.bn * 64

    @property
    def tile_bytes(self) -> int:
        """Bytes of one pre-tiled weight burst (A slabs + metadata + row_index) = one ``cp.async.bulk``."""
        return self.ksteps * (BLOCK_M * 32 + (BLOCK_M // 16) * 64) + BLOCK_M

    @property
    def stage_bytes(self) -> int:
        return -(-(self.b_bytes + self.tile_bytes) // 1024) * 1024

    @property
    def smem_bytes(self) -> int:
        """Dynamic shared memory per CTA (``PF_SMEM_BYTES``): stages, token ids, 2 mbarriers per stage, slack."""
        return self.stages * self.stage_bytes + self.bn * 4 + self.stages * 16 + SMEM_ALIGN

    @property
    def module(self) -> str:
        """The LaunchSpec module name of this build (:data:`MODULE` ``:`` defines)."""
        return MODULE + ":" + ",".join(self.defines())

    def defines(self) -> tuple[str, ...]:
        """The ``-D`` options of this build."""
        return (f"-DPF_BN={self.bn}", f"-DPF_STAGES={self.stages}", f"-DPF_KS={self.k_stage}",
                f"-DPF_CAND={self.cand}")


#: The default build: 128 tokens per tile, 6 stages of 32 K, two candidates (1:2 Samoyeds weights).
DEFAULT_CONFIG = PrefillConfig()
#: The other build the CPU tests check: 256 tokens per tile, plain 2:4 weights only.
WIDE_CONFIG = PrefillConfig(bn=256, stages=4, k_stage=32, cand=0)


def compile_prefill(config: PrefillConfig = DEFAULT_CONFIG, arch: object = "90a", *,
                    extra_options: tuple[str, ...] = ()):
    """NVRTC build of the prefill kernel for ``config`` (the loader's options plus ``config.defines()``)."""
    if not isinstance(config, PrefillConfig):
        raise TypeError(f"config: expected a PrefillConfig, got {type(config).__name__}")
    return compile_source(SOURCE, arch, extra_options=config.defines() + tuple(extra_options))


def config_from_options(options: tuple[str, ...]) -> PrefillConfig:
    """The :class:`PrefillConfig` whose :meth:`~PrefillConfig.defines` are ``options``."""
    vals = {}
    for o in options:
        if not (isinstance(o, str) and o.startswith("-DPF_") and "=" in o):
            raise ValueError(f"options: expected -DPF_<NAME>=<int> defines, got {o!r}")
        k, v = o[5:].split("=", 1)
        vals[{"BN": "bn", "STAGES": "stages", "KS": "k_stage", "CAND": "cand"}[k]] = int(v)
    return PrefillConfig(**vals)


def config_from_module(module: str) -> PrefillConfig:
    """The :class:`PrefillConfig` of a LaunchSpec module name made by :attr:`PrefillConfig.module`."""
    if not isinstance(module, str) or not module.startswith(MODULE + ":"):
        raise ValueError(f"module: expected '{MODULE}:<defines>', got {module!r}")
    return config_from_options(tuple(module.split(":", 1)[1].split(",")))


@functools.lru_cache(maxsize=None)
def load_module(module: str):
    """CuPy ``RawModule`` of the sm_90a build named ``module`` (:attr:`PrefillConfig.module`), once per process."""
    import cupy

    res = compile_prefill(config_from_module(module), "90a")
    if res.cache_path is not None:
        return cupy.RawModule(path=str(res.cache_path))
    import hashlib
    import tempfile

    path = Path(tempfile.gettempdir()) / f"samoyeds_lab-prefill-{hashlib.sha256(res.cubin).hexdigest()[:20]}.cubin"
    if not path.exists():
        path.write_bytes(res.cubin)
    return cupy.RawModule(path=str(path))


# ----------------------------------------------------------------------------------------- operands
def prefill_unsupported(weight: object, config: PrefillConfig = DEFAULT_CONFIG) -> str | None:
    """Why the prefill kernel of ``config`` cannot take ``weight`` (None when it can)."""
    if isinstance(weight, NMWeight):
        return None if (weight.n, weight.m) == (2, 4) else f"NMWeight {weight.n}:{weight.m} (2:4 only)"
    if not isinstance(weight, SamoyedsWeight):
        return f"weight format {type(weight).__name__} (NMWeight 2:4 or SamoyedsWeight)"
    if weight.n != 1 or weight.m > config.cand:
        return (f"SamoyedsWeight {weight.n}:{weight.m} (this build keeps {config.cand} candidate accumulators: "
                f"sel_n = 1 and sel_m <= {config.cand})")
    if weight.vector % config.k_stage:
        return f"vector={weight.vector} (must be a multiple of k_stage={config.k_stage})"
    return None


def _pretile_one(values: torch.Tensor, meta: torch.Tensor, row_index: torch.Tensor | None, cols: int, vector: int,
                 config: PrefillConfig) -> torch.Tensor:
    """``uint8 [mblocks, kstages, tile_bytes]`` of one expert (see the module docstring)."""
    dev = values.device
    crows = values.shape[0]
    mb = -(-crows // BLOCK_M)
    kst = -(-cols // config.k_stage)
    ks = config.ksteps
    half = config.k_stage // 2
    v = torch.zeros(mb * BLOCK_M, kst * half, dtype=torch.int16, device=dev)
    v[:crows, : values.shape[1]] = values.view(torch.int16)
    # [mb, 128 rows, kst, ks, 2 chunks, 8] -> [mb, kst, ks, 128, 2, 8], chunk swizzled by (row >> 2) & 1
    v = v.view(mb, BLOCK_M, kst, ks, 2, 8).permute(0, 2, 3, 1, 4, 5)
    swz = ((torch.arange(BLOCK_M, device=dev) >> 2) & 1).view(1, 1, 1, BLOCK_M, 1)
    src_chunk = torch.arange(2, device=dev).view(1, 1, 1, 1, 2) ^ swz  # stored chunk c holds logical chunk c ^ s
    v = torch.gather(v, 4, src_chunk.unsqueeze(-1).expand(mb, kst, ks, BLOCK_M, 2, 8))
    a_bytes = v.contiguous().view(torch.uint8).reshape(mb, kst, -1)
    mt, mk = meta.shape[0], meta.shape[1]
    m = torch.full((mb * 8, kst * ks, 16), PAD_WORD, dtype=torch.int32, device=dev)
    m[:mt, :mk] = meta.view(torch.int32)
    m_bytes = m.view(mb, 8, kst, ks, 16).permute(0, 2, 3, 1, 4).contiguous().view(torch.uint8).reshape(mb, kst, -1)
    ri = torch.zeros(mb, kst, BLOCK_M, dtype=torch.uint8, device=dev)
    if row_index is not None:
        w = (torch.arange(kst, device=dev) * config.k_stage) // vector  # window of each stage
        r = torch.zeros(row_index.shape[0], mb * BLOCK_M, dtype=torch.uint8, device=dev)
        r[:, :crows] = row_index
        ri = r[w].view(kst, mb, BLOCK_M).permute(1, 0, 2)
    return torch.cat([a_bytes, m_bytes, ri], dim=2).contiguous()


_TILED: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def pretile(weight: NMWeight | SamoyedsWeight, config: PrefillConfig = DEFAULT_CONFIG) -> torch.Tensor:
    """The pre-tiled weight bursts ``uint8 [ceil(crows/128), ceil(cols/k_stage), tile_bytes]`` of ``weight``
    for ``config``, on the weight's device; made once per weight and ``k_stage`` (cached).

    Raises
    ------
    ValueError
        When the kernel cannot take the weight (:func:`prefill_unsupported`).
    """
    why = prefill_unsupported(weight, config)
    if why is not None:
        raise ValueError(f"weight: the prefill kernel does not take {why}")
    per = _TILED.setdefault(weight, {})
    key = config.k_stage
    if key not in per:
        rows, cols = weight.shape
        meta = mma_metadata(weight.sptc_metadata()).view(torch.int32).to(weight.values.device)
        ri = weight.row_index if isinstance(weight, SamoyedsWeight) else None
        vector = weight.vector if isinstance(weight, SamoyedsWeight) else max(cols, 1)
        per[key] = _pretile_one(weight.values.contiguous(), meta, ri, cols, vector, config)
    return per[key]


def _dt(x: torch.Tensor) -> str:
    return "bf16" if x.dtype == torch.bfloat16 else "f16"


def prefill_specs(weights, x, idx, offsets, epilogue_code: int, up, out, scatter_idx, scale, *,
                  config: PrefillConfig = DEFAULT_CONFIG) -> list[LaunchSpec]:
    """The launch of one (grouped) ssmm call on the prefill kernel; the arguments are checked already.

    All host work is here (pre-tiling is cached per weight; token tiles are made on the device), so a
    :class:`~samoyeds_lab.kernels.plan.KernelPlan` of it launches one kernel and nothing else.
    """
    w0 = weights[0]
    rows, cols = w0.shape
    positions = int(offsets[-1])
    dev = x.device
    tiled = pretile(w0, config) if len(weights) == 1 else torch.stack([pretile(w, config) for w in weights])
    kst = -(-cols // config.k_stage)
    mblocks = -(-w0.values.shape[0] // BLOCK_M)
    grid = check_grid((mblocks, num_token_tiles(offsets, config.bn), 1))
    tt = device_token_tiles(offsets, dev, block_n=config.bn)
    has_ri = isinstance(w0, SamoyedsWeight)
    sel_m = w0.m if has_ri else 1
    vector = w0.vector if has_ri else cols
    tok = idx.to(device=dev, dtype=torch.int32).contiguous() if idx is not None else None
    sidx = scatter_idx.to(device=dev, dtype=torch.int32).contiguous() if epilogue_code == 2 else None
    sc = scale.to(device=dev, dtype=torch.float32).contiguous() if (epilogue_code == 2 and scale is not None) else None
    upc = up.contiguous() if up is not None else None
    args = (tiled, np.int32(kst), x, np.int32(x.stride(0)), np.int32(x.shape[0]), tok, tt.expert, tt.start,
            tt.count, np.int32(rows), np.int32(w0.values.shape[0]), np.int32(cols), np.int32(sel_m),
            np.int32(vector), np.int32(has_ri), np.int32(epilogue_code), out, np.int32(rows),
            np.int32(out.dtype == torch.float32), upc, sidx, sc)
    return [LaunchSpec(config.module, f"ssmm_prefill_{_dt(x)}", grid, THREADS, config.smem_bytes, args)]


__all__ = ["SOURCE", "MODULE", "BLOCK_M", "THREADS", "PrefillConfig", "DEFAULT_CONFIG", "WIDE_CONFIG",
           "compile_prefill", "config_from_options", "config_from_module", "load_module", "prefill_unsupported", "pretile",
           "prefill_specs"]
