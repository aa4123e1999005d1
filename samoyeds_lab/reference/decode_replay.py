"""The decode SSMM kernel (``kernels/ssmm_decode.cu``) replayed block by block on the CPU.

Two pieces the kernel and its launcher share:

* :func:`pretile` — the pre-tiled weight operand: for every (row block, k-step) one tile of
  :func:`tile_bytes` bytes that is exactly the shared-memory image of that k-step in the kernel::

      [ A image: block_m rows x 2 chunks of 8 stored halves, chunk c of row r at r·32 + ((c ^ ((r >> 2) & 1)) << 4)
      | metadata: block_m/16 tiles x 16 register-ordered words (formats.sptc.mma_metadata; padding 0x44444444)
      | row_index: block_m bytes, row_index[ks // (vector/32), c0 + r] of the k-step's window (zeros for 2:4) ]

  laid out ``[row block][k-step][tile]``, so one pipeline stage (``ksteps`` consecutive k-steps of one row
  block) is one contiguous burst the kernel copies to shared memory in 16-byte chunks.

* :func:`decode_replay` — the kernel's grid walked exactly as the ``.cu`` does: CTA ``(x, y, z)`` = (row block,
  token tile, split); split ``z`` covers k-steps ``[z·steps_per_split, min(ksteps, (z+1)·steps_per_split))``,
  in stages of ``ksteps`` k-steps; per k-step every warp's ``m16n8k32`` fragments run on the ``mma.sp``
  emulator (:mod:`samoyeds_lab.reference.mma_sp`) with operands read from the tile image through the
  kernel's own addressing (``ldmatrix`` rows of the swizzled A image, the ``b_off`` B image, metadata word
  ``2g + (lane & 1)``); at the k-step that ends a window (or the split) the working accumulator is added to
  the candidate accumulator ``row_index[w, c]`` names and reset; after the last stage the ``sel_n`` compressed
  rows of a group are summed in the kernel's butterfly order; with several splits every split's partials go
  to a workspace and the last CTA of a (row block, token tile) sums them in split order ``0, 1, ...``.

The replay returns the fp32 products ``[positions, rows]`` before the epilogue, and a :class:`ReplayTrace`
(what each CTA computed, which dense row every swap fed, how often each output was written). With integer
inputs every fp32 sum is exact, so it equals :func:`samoyeds_lab.reference.ssmm` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .._checks import check_int, check_tensor
from ..formats import SENTINEL, NMWeight, SamoyedsWeight
from ..formats.sptc import mma_metadata
from ..tiles import MMA_K, MMA_M, MMA_N, ceil_div
from .core import check_token_idx
from .mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_e, unpack_d

#: Warps per CTA of the decode kernel (all along M).
WARPS = 4
#: Metadata word of an all-zero 16x32 tile (nibble 0x4 = positions {0, 1}).
PAD_WORD = 0x44444444
_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class DecodeConfig:
    """Compile-time parameters of one decode build (the ``-D`` defines of ``kernels/ssmm_decode.cu``).

    Attributes
    ----------
    block_m : int
        Compressed weight rows per CTA (a multiple of 64: four warps of whole m16 fragments).
    block_n : int
        Tokens per tile: 8 or 16.
    ksteps : int
        ``m16n8k32`` k-steps per pipeline stage (K per stage = 32 · ksteps).
    stages : int
        Pipeline depth (>= 2).
    sel_n, sel_m : int
        Samoyeds row selection ``n:m`` (1:1 for a plain 2:4 weight); ``sel_m`` candidate accumulators per
        working accumulator.
    bulk : bool
        sm_90+: a stage's weight burst is one ``cp.async.bulk`` on an mbarrier (else 16-byte ``cp.async``
        chunks); the bytes that land in shared memory are the same.
    """

    block_m: int = 128
    block_n: int = 8
    ksteps: int = 4
    stages: int = 6
    sel_n: int = 1
    sel_m: int = 2
    bulk: bool = False

    def __post_init__(self) -> None:
        check_int("block_m", self.block_m, lo=64, hi=256)
        if self.block_m % (WARPS * MMA_M):
            raise ValueError(f"block_m: expected a multiple of {WARPS * MMA_M}, got {self.block_m}")
        if self.block_n not in (8, 16):
            raise ValueError(f"block_n: expected 8 or 16 tokens per tile, got {self.block_n!r}")
        check_int("ksteps", self.ksteps, lo=1, hi=16)
        check_int("stages", self.stages, lo=2, hi=16)
        check_int("sel_n", self.sel_n, lo=1)
        check_int("sel_m", self.sel_m, lo=1)
        if self.sel_n not in (1, 2, 4, 8) or self.sel_m < self.sel_n:
            raise ValueError(f"sel_n, sel_m: expected sel_n in (1, 2, 4, 8) and sel_m >= sel_n, "
                             f"got {self.sel_n}:{self.sel_m}")
        if not isinstance(self.bulk, bool):
            raise TypeError(f"bulk: expected a bool, got {type(self.bulk).__name__}")

    @property
    def k_per_stage(self) -> int:
        return self.ksteps * MMA_K

    @property
    def threads(self) -> int:
        return WARPS * 32

    def defines(self) -> dict[str, int]:
        """The ``-D`` defines of this build."""
        return {"DEC_BLOCK_M": self.block_m, "DEC_BLOCK_N": self.block_n, "DEC_KSTEPS": self.ksteps,
                "DEC_STAGES": self.stages, "DEC_SEL_N": self.sel_n, "DEC_SEL_M": self.sel_m,
                "DEC_BULK": int(self.bulk)}


def tile_bytes(block_m: int) -> int:
    """Bytes of one (row block, k-step) tile: A image + metadata + row_index."""
    return block_m * 32 + block_m // MMA_M * 64 + block_m


def stage_bytes(cfg: DecodeConfig) -> int:
    """Shared memory of one stage: ``ksteps`` tiles + ``ksteps`` B images of ``block_n`` tokens x 64 bytes."""
    return cfg.ksteps * (tile_bytes(cfg.block_m) + cfg.block_n * 64)


def smem_bytes(cfg: DecodeConfig) -> int:
    """Dynamic shared memory of one CTA: the stages, the tile's token ids, the last-CTA flag (16 bytes) and one
    8-byte mbarrier per stage (used by the ``bulk`` build)."""
    return cfg.stages * stage_bytes(cfg) + cfg.block_n * 4 + 16 + 8 * cfg.stages


def _check_weight(weight: object) -> tuple[NMWeight, torch.Tensor | None, int, int, int]:
    """(2:4 operand, row_index or None, vector, sel_n, sel_m)."""
    if isinstance(weight, SamoyedsWeight):
        if weight.vector % MMA_K:
            raise ValueError(f"weight: the decode kernel needs vector % {MMA_K} == 0, got vector={weight.vector}")
        return weight.inner, weight.row_index, weight.vector, weight.n, weight.m
    if isinstance(weight, NMWeight):
        if (weight.n, weight.m) != (2, 4):
            raise ValueError(f"weight: Sparse Tensor Cores take 2:4 weights, got {weight.n}:{weight.m}")
        return weight, None, 0, 1, 1
    raise TypeError(f"weight: expected NMWeight (2:4) or SamoyedsWeight, got {type(weight).__name__}")


def pretile(weight: NMWeight | SamoyedsWeight, block_m: int = 128) -> torch.Tensor:
    """The pre-tiled operand of ``weight``: ``uint8 [row blocks, ksteps, tile_bytes(block_m)]`` (see the module doc).

    Built on the weight's device with torch ops only; rows past the compressed rows are zero values with
    ``0x44444444`` metadata, columns past ``cols`` (the last k-step) are zero values.
    """
    block_m = check_int("block_m", block_m, lo=64)
    if block_m % (WARPS * MMA_M):
        raise ValueError(f"block_m: expected a multiple of {WARPS * MMA_M}, got {block_m}")
    inner, row_index, vector, _, _ = _check_weight(weight)
    crows, kc = inner.values.shape
    cols = weight.shape[1]
    dev = inner.values.device
    ksteps = ceil_div(cols, MMA_K)
    mblocks = max(1, ceil_div(crows, block_m))
    prow = mblocks * block_m
    # A: [prow, ksteps, 16] halves → [mb, ks, BM, 2 chunks, 8] in the swizzled order
    v = torch.zeros(prow, ksteps * 16, dtype=inner.values.dtype, device=dev)
    v[:crows, :kc] = inner.values
    v = v.view(torch.int16).view(mblocks, block_m, ksteps, 2, 8).permute(0, 2, 1, 3, 4)
    r = torch.arange(block_m, device=dev)
    src_chunk = torch.arange(2, device=dev).view(1, 2) ^ ((r.view(-1, 1) >> 2) & 1)  # image chunk p holds chunk p ^ s
    a = v[:, :, r.view(-1, 1), src_chunk]  # [mb, ks, BM, 2, 8]
    a = a.contiguous().view(torch.uint8).reshape(mblocks, ksteps, block_m * 32)
    # metadata: [mtiles, ksteps, 16] words → [mb, ks, BM/16 · 16] words
    mt = block_m // MMA_M
    words = torch.full((mblocks * mt, ksteps, 16), PAD_WORD, dtype=torch.int64, device=dev)
    if crows:
        m = mma_metadata(inner.sptc_metadata()).to(dev).to(torch.int64)
        words[: m.shape[0]] = m
    words = words.view(mblocks, mt, ksteps, 16).permute(0, 2, 1, 3).contiguous()
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # the same 32-bit patterns
    meta = words.view(torch.uint8).reshape(mblocks, ksteps, mt * 64)
    # row_index of each k-step's window: [mb, ks, BM]
    ri = torch.zeros(ksteps, prow, dtype=torch.uint8, device=dev)
    if row_index is not None and crows:
        w_of = torch.arange(ksteps, device=dev) // (vector // MMA_K)
        ri[:, :crows] = row_index.to(dev)[w_of]
    ri = ri.view(ksteps, mblocks, block_m).permute(1, 0, 2)
    return torch.cat([a, meta, ri], dim=2).contiguous()


def _i32_to_u32words(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF


@dataclass
class ReplayTrace:
    """What the replay saw, CTA by CTA.

    Attributes
    ----------
    ctas : list of dict
        One per CTA, grid order (x fastest): ``block``, ``tile``, ``split``, ``k_begin``, ``k_end``,
        ``stages`` (k-step ranges of each stage) and ``swaps`` (k-steps where the window accumulators swapped).
    swap_rows : dict
        ``(split, row block, k-step, compressed row) -> dense row`` the working accumulator was added to.
    writes : torch.Tensor
        int ``[positions, rows]``: how many times the epilogue wrote each output (must be 1 everywhere).
    finalizers : dict
        ``(row block, tile) -> split`` of the CTA that summed the partials (the last to arrive; with the
        replay's grid order the highest split).
    """

    ctas: list = field(default_factory=list)
    swap_rows: dict = field(default_factory=dict)
    writes: torch.Tensor | None = None
    finalizers: dict = field(default_factory=dict)


def _a_tile(img: torch.Tensor, row0: int) -> torch.Tensor:
    """The 16x16 stored halves ldmatrix.x4 reads at rows row0 .. row0+15 of an A image (dec_a_off)."""
    rows = torch.arange(row0, row0 + MMA_M)
    chunk = torch.arange(2)
    off = rows.view(-1, 1) * 32 + ((chunk.view(1, -1) ^ ((rows.view(-1, 1) >> 2) & 1)) << 4)  # [16, 2]
    byte = off.view(16, 2, 1) + 2 * torch.arange(8).view(1, 1, 8)  # [16, 2, 8]
    lo = img[byte].to(torch.int32)
    hi = img[byte + 1].to(torch.int32)
    return ((hi << 8) | lo).to(torch.int16).reshape(16, 16)


def _b_off(n: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
    return n * 64 + ((chunk ^ ((n >> 1) & 3)) << 4)


def decode_replay(weight: NMWeight | SamoyedsWeight, x: torch.Tensor, token_idx: torch.Tensor | None,
                  cfg: DecodeConfig, steps_per_split: int, *, tiled: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, ReplayTrace]:
    """Run ``kernels/ssmm_decode.cu``'s grid on the CPU: fp32 products ``[positions, rows]`` and a trace.

    Parameters
    ----------
    weight : NMWeight (2:4) or SamoyedsWeight
        fp16/bf16; ``cfg.sel_n:cfg.sel_m`` must be the weight's row selection (1:1 for 2:4).
    x : torch.Tensor
        ``[tokens, cols]`` of the weight's dtype.
    token_idx : torch.Tensor or None
        Rows of ``x`` per position (SENTINEL: zero row); None: position ``p`` reads row ``p``.
    cfg : DecodeConfig
    steps_per_split : int
        k-steps per split (a multiple of ``cfg.ksteps``, what the launcher passes); ``gridDim.z`` follows.
    tiled : torch.Tensor, optional
        The pre-tiled operand (default: :func:`pretile` of ``weight``): pass the launcher's to replay it.
    """
    if not isinstance(cfg, DecodeConfig):
        raise TypeError(f"cfg: expected a DecodeConfig, got {type(cfg).__name__}")
    inner, row_index, vector, sel_n, sel_m = _check_weight(weight)
    has_ri = row_index is not None
    if (cfg.sel_n, cfg.sel_m) != ((sel_n, sel_m) if has_ri else (cfg.sel_n, cfg.sel_m)):
        raise ValueError(f"cfg: expected sel_n:sel_m = {sel_n}:{sel_m} (the weight's), got {cfg.sel_n}:{cfg.sel_m}")
    if not has_ri:
        sel_n, sel_m = 1, 1
    check_tensor("x", x, ndim=2, dtypes=_HALF)
    if x.dtype != inner.dtype:
        raise TypeError(f"x: expected {inner.dtype} like the weight's values, got {x.dtype}")
    rows, cols = weight.shape
    if x.shape[1] != cols:
        raise ValueError(f"x: expected shape [tokens, {cols}], got {tuple(x.shape)}")
    steps_per_split = check_int("steps_per_split", steps_per_split, lo=1)
    if steps_per_split % cfg.ksteps:
        raise ValueError(f"steps_per_split: expected a multiple of cfg.ksteps={cfg.ksteps}, got {steps_per_split}")
    x = x.cpu()
    positions = x.shape[0] if token_idx is None else int(token_idx.numel())
    ids = torch.arange(positions) if token_idx is None else check_token_idx(token_idx, x.shape[0]).cpu().to(torch.int64)
    crows = inner.values.shape[0]
    ksteps = ceil_div(cols, MMA_K)
    mblocks = max(1, ceil_div(crows, cfg.block_m))
    splits = max(1, ceil_div(ksteps, steps_per_split))
    ntiles = ceil_div(positions, cfg.block_n)
    tb = tile_bytes(cfg.block_m)
    img_all = (pretile(weight, cfg.block_m) if tiled is None else tiled).cpu().reshape(mblocks, ksteps, tb)
    window_steps = vector // MMA_K if has_ri else 1 << 30
    fm = cfg.block_m // (WARPS * MMA_M)
    fn = cfg.block_n // MMA_N
    # x as raw 16-bit words (the gather copies bit patterns), padded with one zero row for SENTINEL
    xw = torch.zeros(x.shape[0] + 1, ksteps * MMA_K, dtype=torch.int16)
    xw[: x.shape[0], :cols] = x.view(torch.int16)
    y = torch.zeros(positions, rows, dtype=torch.float32)
    ws = torch.zeros(splits, positions, rows, dtype=torch.float32)
    trace = ReplayTrace(writes=torch.zeros(positions, rows, dtype=torch.int32))
    # per-(block, tile) arrival counters of the last-CTA reduction
    arrivals = {}
    dt = x.dtype

    # The m16 fragment of warp w, fragment i covers rows (w·fm + i)·16 of the block: frag order [warp][i].
    mtile_rows = [(w * fm + i) * MMA_M for w in range(WARPS) for i in range(fm)]
    for z in range(splits):  # blockIdx.z slowest, then y, then x (grid order)
        for ty in range(ntiles):
            p0, cnt = ty * cfg.block_n, min(cfg.block_n, positions - ty * cfg.block_n)
            tok = torch.full((cfg.block_n,), SENTINEL, dtype=torch.int64)
            tok[:cnt] = ids[p0: p0 + cnt]
            for rb in range(mblocks):
                k_begin, k_end = z * steps_per_split, min(ksteps, (z + 1) * steps_per_split)
                c0 = rb * cfg.block_m
                rec = {"block": rb, "tile": ty, "split": z, "k_begin": k_begin, "k_end": k_end, "stages": [],
                       "swaps": []}
                acc = torch.zeros(len(mtile_rows) * fn, 32, 4)
                cand = torch.zeros(sel_m, cfg.block_m, cfg.block_n)
                for ks0 in range(k_begin, k_end, cfg.ksteps):
                    rec["stages"].append((ks0, min(k_end, ks0 + cfg.ksteps)))
                    for ks in range(ks0, min(k_end, ks0 + cfg.ksteps)):
                        img = img_all[rb, ks]
                        # B image of this k-step: b_off(n, chunk) holds x[tok[n], ks·32 + 8·chunk ...]
                        bimg = torch.zeros(cfg.block_n * 32, dtype=torch.int16)
                        n = torch.arange(cfg.block_n).view(-1, 1)
                        ch = torch.arange(4).view(1, -1)
                        src = xw[torch.where(tok >= 0, tok, x.shape[0])][:, ks * MMA_K:(ks + 1) * MMA_K]
                        half_off = (_b_off(n, ch) // 2).view(-1, 4, 1) + torch.arange(8).view(1, 1, 8)
                        bimg[half_off.reshape(-1)] = src.view(cfg.block_n, 4, 8).reshape(-1)
                        # ldmatrix of B: k = 8·chunk + e of token n at b_off(n, chunk) + 2e
                        kk = torch.arange(MMA_K).view(-1, 1)
                        a_list, b_list, e_list = [], [], []
                        meta = _i32_to_u32words(img[cfg.block_m * 32: cfg.block_m * 32 + cfg.block_m // MMA_M * 64]
                                                .clone().view(torch.int32)).view(-1, 16)
                        for r0 in mtile_rows:
                            at = pack_a(_a_tile(img, r0).view(dt))
                            et = pack_e(meta[r0 // MMA_M], 0)
                            for j in range(fn):
                                nn = j * MMA_N + torch.arange(MMA_N).view(1, -1)
                                bmat = bimg[(_b_off(nn, kk // 8) // 2) + (kk % 8)].view(dt)  # [32, 8]
                                a_list.append(at)
                                b_list.append(pack_b(bmat))
                                e_list.append(et)
                        acc = mma_sp_m16n8k32(torch.stack(a_list), torch.stack(b_list), acc, torch.stack(e_list), 0)
                        if (ks + 1) % window_steps == 0 or ks + 1 == k_end:  # swap
                            rec["swaps"].append(ks)
                            d = unpack_d(acc).view(len(mtile_rows), fn, MMA_M, MMA_N)
                            wmat = d.permute(0, 2, 1, 3).reshape(cfg.block_m, cfg.block_n)
                            ri = img[cfg.block_m * 32 + cfg.block_m // MMA_M * 64:].to(torch.int64) if has_ri \
                                else torch.zeros(cfg.block_m, dtype=torch.int64)
                            for s in range(sel_m):
                                sel = (ri == s).view(-1, 1)
                                cand[s] = torch.where(sel, cand[s] + wmat, cand[s])
                            for c in range(c0, min(c0 + cfg.block_m, crows)):
                                trace.swap_rows[(z, rb, ks, c)] = (c // sel_n) * sel_m + int(ri[c - c0])
                            acc = torch.zeros_like(acc)
                # butterfly over the sel_n compressed rows of a group (shfl_xor of lanes 4·o apart = rows g ^ o)
                o = 1
                while o < sel_n:
                    perm = torch.arange(cfg.block_m) ^ o
                    cand = cand + cand[:, perm]
                    o <<= 1
                trace.ctas.append(rec)
                # outputs of this CTA: leader rows c (c % sel_n == 0), candidates s, tokens n < cnt
                lr = torch.arange(c0, min(c0 + cfg.block_m, crows))
                lr = lr[lr % sel_n == 0]
                dense = ((lr // sel_n) * sel_m).view(-1, 1) + torch.arange(sel_m).view(1, -1)  # [L, sel_m]
                keep = dense < rows
                vals = cand[:, lr - c0, :cnt].permute(1, 0, 2)  # [L, sel_m, cnt]
                if splits == 1:
                    for s in range(sel_m):
                        k = keep[:, s]
                        y[p0: p0 + cnt, dense[k, s]] = vals[k, s].T
                        trace.writes[p0: p0 + cnt, dense[k, s]] += 1
                    continue
                for s in range(sel_m):
                    k = keep[:, s]
                    ws[z, p0: p0 + cnt, dense[k, s]] = vals[k, s].T
                key = (rb, ty)
                arrivals[key] = arrivals.get(key, 0) + 1
                if arrivals[key] == splits:  # the last CTA: sum the partials in split order
                    trace.finalizers[key] = z
                    arrivals[key] = 0  # the kernel resets its counter
                    for s in range(sel_m):
                        k = keep[:, s]
                        cols_ = dense[k, s]
                        v = ws[0, p0: p0 + cnt][:, cols_].clone()
                        for zz in range(1, splits):
                            v = v + ws[zz, p0: p0 + cnt][:, cols_]
                        y[p0: p0 + cnt, cols_] = v
                        trace.writes[p0: p0 + cnt, cols_] += 1
    return y, trace


__all__ = ["DecodeConfig", "WARPS", "PAD_WORD", "tile_bytes", "stage_bytes", "smem_bytes", "pretile", "ReplayTrace",
           "decode_replay"]
