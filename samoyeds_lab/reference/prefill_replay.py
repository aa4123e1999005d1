"""CPU replay of the Hopper prefill SSMM (``kernels/ssmm_prefill_sm90.cu``), block by block.

:func:`replay_prefill` walks the kernel's grid (128-row weight blocks x token tiles of ``bn`` positions),
its pipeline stages (``k_stage`` K each) and, inside a stage, the two consumer warpgroups (compressed rows
``64c .. 64c + 63``) and their four warps (one 16-row metadata tile each), reading every operand from the
same bytes the kernel reads:

* the weight from the pre-tiled bursts of :func:`samoyeds_lab.kernels.prefill.pretile` (values through the
  ldmatrix chunk swizzle ``chunk ^ ((row >> 2) & 1)``, the ``mma.sp`` metadata words ``2g + h`` of each
  16-row tile, the stage's ``row_index`` bytes);
* the tokens gathered by id as the producer does (SENTINEL / out-of-range ids and K past ``cols`` read 0);
* each ``wgmma.m64nNk32`` as four warp products (16 rows x N tokens x 32 K, fp32), accumulated in stage
  order into the warp's working accumulator; at the end of every Samoyeds window (every
  ``vector / k_stage`` stages, and after the last) the working accumulator goes into the candidate
  accumulator ``row_index[w, c]`` selects and is cleared — the register flush of the kernel;
* the epilogue's row map: compressed row ``c``'s candidate ``m`` is dense row ``c · sel_m + m``.

Products are exact in fp32 and sums rounded in fp32 in the kernel's order per element (K steps in order,
windows in order), so on integer-valued operands whose sums stay below 2^24 the replay equals the dense
fp32 reference bit for bit; that is what the tests check on awkward shapes.

The replay computes each warp's product with a torch matmul on the tile it decodes from the burst;
:func:`emulate_consumer_kstep` proves that decoding against the hardware layouts: it builds one consumer's
``wgmma`` operands exactly as the kernel's lanes hold them (``ldmatrix.x4`` addresses into the swizzled A
slab, metadata word ``2g + (lane & 1)``, B through the kernel's shared-memory descriptor) and runs
:func:`samoyeds_lab.reference.wgmma.wgmma_sp_m64nNk32` on them.
"""

from __future__ import annotations

import torch

from ..formats import SENTINEL

BLOCK_M = 128
_ROWS = torch.arange(16).view(16, 1)
_GRPS = torch.arange(8).view(1, 8)
#: metadata word and bit shift of (row i, group q) of a 16-row tile: word 2(i % 8) + q // 4, bits
#: 16 (i // 8) + 4 (q % 4)
_WORD_IDX = 2 * (_ROWS % 8) + _GRPS // 4
_SHIFT = 16 * (_ROWS // 8) + 4 * (_GRPS % 4)


def _decode_tile(stored: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Dense ``[16, 32]`` fp32 of one 16-row tile and k32 step from its stored halves ``[16, 16]`` (logical
    order) and its 16 metadata words (word ``2g + h``: row g bits [15:0], row g + 8 bits [31:16], groups
    ``4h .. 4h + 3``)."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    nib = (w[_WORD_IDX] >> _SHIFT) & 0xF                   # [16 rows, 8 groups]
    grp4 = 4 * torch.arange(8).view(1, 8)
    out = torch.zeros(16, 32, dtype=torch.float32)
    out.scatter_add_(1, grp4 + (nib & 3), stored[:, 0::2])  # the kept element with the lower index
    out.scatter_add_(1, grp4 + (nib >> 2), stored[:, 1::2])
    return out


def replay_prefill(tiled: torch.Tensor, config, x: torch.Tensor, token_idx: torch.Tensor | None,
                   offsets: list[int], *, rows: int, crows: int, cols: int, sel_m: int = 1,
                   vector: int | None = None, has_ri: bool = False) -> torch.Tensor:
    """The fp32 products ``y[p, r]`` the prefill kernel hands to its epilogue, replayed on the CPU.

    Parameters
    ----------
    tiled : torch.Tensor
        ``uint8 [mblocks, kstages, tile_bytes]`` (one expert) or ``[experts, mblocks, kstages, tile_bytes]``
        from :func:`samoyeds_lab.kernels.prefill.pretile`.
    config : PrefillConfig
        The build replayed (``bn``, ``k_stage``, ``cand``).
    x : torch.Tensor
        ``[x_rows, cols]`` fp16/bf16 activations.
    token_idx : torch.Tensor or None
        Row of ``x`` per position (SENTINEL: zero row); None: position p reads row p.
    offsets : list of int
        Expert segments of the positions (``[0, positions]`` for one expert).
    rows, crows, cols, sel_m, vector, has_ri
        The kernel's scalar arguments.

    Returns
    -------
    torch.Tensor
        fp32 ``[positions, rows]``.
    """
    from ..kernels.launch import token_tiles

    if tiled.dim() == 3:
        tiled = tiled.unsqueeze(0)
    tiled = tiled.cpu()
    dtype = x.dtype
    xs = x.detach().cpu().to(torch.float32)
    positions = int(offsets[-1])
    mblocks, kstages = tiled.shape[1], tiled.shape[2]
    ks, bn = config.ksteps, config.bn
    a_bytes, m_bytes = ks * BLOCK_M * 32, ks * 8 * 64
    win_stages = (vector // config.k_stage) if has_ri else None
    y = torch.zeros(positions, rows, dtype=torch.float32)
    idx = None if token_idx is None else token_idx.detach().cpu().to(torch.int64)
    tt = token_tiles(list(offsets), bn)
    swz = (torch.arange(16) >> 2) & 1  # the ldmatrix chunk swizzle of rows slab_row + 0..15 (slab_row % 16 == 0)
    for ti in range(len(tt)):
        e, p0, cnt = int(tt.expert[ti]), int(tt.start[ti]), int(tt.count[ti])
        ids = torch.full((bn,), SENTINEL, dtype=torch.int64)
        for n in range(cnt):
            i = int(idx[p0 + n]) if idx is not None else p0 + n
            ids[n] = i if 0 <= i < xs.shape[0] else SENTINEL
        for bm in range(mblocks):
            acc = torch.zeros(2, 4, 16, bn)            # [consumer, warp, row, token]
            cand = torch.zeros(max(config.cand, 1), 2, 4, 16, bn)
            for it in range(kstages):
                # the producer's B stage: bn gathered rows x k_stage halves, zero-filled
                b = torch.zeros(bn, config.k_stage)
                k0, k1 = it * config.k_stage, min(cols, (it + 1) * config.k_stage)
                ok = ids >= 0
                if k1 > k0 and bool(ok.any()):
                    b[ok, : k1 - k0] = xs[ids[ok], k0:k1]
                burst = tiled[e, bm, it]
                halves = burst[:a_bytes].contiguous().view(torch.int16).view(dtype).to(torch.float32)
                words = burst[a_bytes:a_bytes + m_bytes].contiguous().view(torch.int32)
                ri = burst[a_bytes + m_bytes:]
                for c in range(2):
                    for w in range(4):
                        slab_row = c * 64 + w * 16
                        tile16 = slab_row // 16
                        for kk in range(ks):
                            slab = halves[kk * BLOCK_M * 16:(kk + 1) * BLOCK_M * 16].view(BLOCK_M, 2, 8)
                            rows16 = slab[slab_row:slab_row + 16]
                            # stored chunk s of row r holds logical chunk s ^ swizzle(r)
                            logical = torch.stack([rows16[torch.arange(16), swz], rows16[torch.arange(16), 1 - swz]],
                                                  dim=1).reshape(16, 16)
                            wd = words[kk * 128 + tile16 * 16: kk * 128 + tile16 * 16 + 16]
                            a = _decode_tile(logical, wd)
                            acc[c, w] += a @ b[:, kk * 32:(kk + 1) * 32].T
                        if has_ri and ((it + 1) % win_stages == 0 or it + 1 == kstages):
                            sel = ri[slab_row:slab_row + 16].to(torch.int64)
                            for m in range(config.cand):
                                cand[m, c, w] += torch.where((sel == m).unsqueeze(1), acc[c, w],
                                                             torch.zeros(()))
                            acc[c, w] = 0
            # epilogue row map
            for c in range(2):
                for w in range(4):
                    for i in range(16):
                        cr = bm * BLOCK_M + c * 64 + w * 16 + i
                        if cr >= crows:
                            continue
                        if not has_ri:
                            if cr < rows:
                                y[p0:p0 + cnt, cr] = acc[c, w, i, :cnt]
                            continue
                        for m in range(min(sel_m, config.cand)):
                            r = cr * sel_m + m
                            if r < rows:
                                y[p0:p0 + cnt, r] = cand[m, c, w, i, :cnt]
    return y


def _b_off(tok: int, chunk: int) -> int:
    """kernels/sptc_common.cuh ``b_off``: byte offset of 16-byte chunk ``chunk`` of token row ``tok`` in a B slab."""
    return tok * 64 + ((chunk ^ ((tok >> 1) & 3)) << 4)


def _a_off(row: int, chunk: int) -> int:
    """kernels/ssmm_prefill_sm90.cu ``pf_a_off``: the ldmatrix chunk swizzle of an A slab."""
    return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4)


def emulate_consumer_kstep(burst: torch.Tensor, config, b_rows: torch.Tensor, consumer: int, kk: int) -> torch.Tensor:
    """One consumer's ``wgmma.mma_async.sp.m64n{bn}k32`` of one k32 step, through the warpgroup emulator.

    Builds what the kernel's threads hold, from bytes laid out as the kernel lays them out: lane ``l`` of warp
    ``w`` points its ``ldmatrix.x4`` at row ``64·consumer + 16w + (l & 15)``, chunk ``l >> 4`` of the A slab
    (``pf_a_off``) — matrix ``i`` of the x4 is rows ``8(i & 1) ..`` of chunk ``i >> 1``, so register ``i`` of lane
    ``l`` holds row ``g + 8(i & 1)``, stored halves ``2t + 8(i >> 1)`` —, its metadata register is word
    ``2g + (l & 1)`` of its 16-row tile; B is written into a shared-memory image at ``b_off`` (64-byte swizzle,
    1024-aligned slab) and read back through the kernel's descriptor (SBO 512, LBO 16, swizzle 64B) by
    :func:`samoyeds_lab.reference.wgmma.load_b`.

    Parameters
    ----------
    burst : torch.Tensor
        uint8 ``[tile_bytes]``: one pre-tiled (block, stage) burst.
    config : PrefillConfig
    b_rows : torch.Tensor
        fp16/bf16 ``[bn, 32]``: the gathered token rows of this k32 step (zeros where the producer zero-fills).
    consumer, kk : int
        Consumer warpgroup (0, 1) and k32 step inside the stage.

    Returns
    -------
    torch.Tensor
        fp32 ``[64, bn]``: ``D = A · B`` of compressed rows ``64·consumer ..`` (zero accumulators in).
    """
    import numpy as np

    from . import wgmma as wg

    dtype, bn = b_rows.dtype, config.bn
    a_slab = burst[kk * BLOCK_M * 32:(kk + 1) * BLOCK_M * 32].numpy()
    words = burst[config.ksteps * BLOCK_M * 32:].numpy()[: config.ksteps * 512].view(np.uint32)
    a = torch.zeros(4, 32, 4, 2, dtype=torch.int16)
    e = torch.zeros(4, 32, dtype=torch.int64)
    for w in range(4):
        slab_row = consumer * 64 + w * 16
        # ldmatrix.x4: the row address lane l supplies, then the 8x8 b16 fragments every lane receives
        addr = [_a_off(slab_row + (l & 15), l >> 4) for l in range(32)]
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            for i in range(4):
                src = addr[8 * i + g]  # matrix i, row g: the row address of lane 8i + g
                halves = a_slab[src + 4 * t: src + 4 * t + 4].view(np.int16)
                a[w, lane, i, 0], a[w, lane, i, 1] = int(halves[0]), int(halves[1])
            e[w, lane] = int(words[kk * 128 + (slab_row // 16) * 16 + 2 * g + (lane & 1)])
    smem = np.zeros(bn * 64, dtype=np.uint8)
    bits = b_rows.contiguous().view(torch.int16).numpy().view(np.uint8).reshape(bn, 64)
    for n in range(bn):
        for chunk in range(4):
            smem[_b_off(n, chunk):_b_off(n, chunk) + 16] = bits[n, 16 * chunk:16 * chunk + 16]
    desc = (0 >> 4) | (1 << 16) | ((512 >> 4) << 32) | (2 << 62)  # pf_b_desc of a slab at address 0
    b = wg.load_b(smem, desc, bn, dtype)
    c = torch.zeros(4, 32, bn // 2, dtype=torch.float32)
    d = wg.wgmma_sp_m64nNk32(a.view(dtype), b, c, e, 0)
    return wg.unpack_wg_d(d)


__all__ = ["replay_prefill", "emulate_consumer_kstep"]
