"""kernels/ssmm.cu's addressing replayed in Python on the exact arguments the launcher passes (no GPU).

The wrappers of ``samoyeds_lab.kernels.ops`` run on CPU tensors with the CuPy layer replaced by a
recorder (:func:`tests.kernels.test_launch.install_recorder`). :class:`SsmmEmulator` then replays every
block of every recorded launch, thread loop by thread loop, with the kernel's own index formulas: token
ids into ``tok_s``, the cp.async / scalar loads of A, B and metadata into a byte-exact shared memory, the
``ldmatrix`` and metadata-register addresses, the window flush to dense rows, the epilogue store / atomic
predicates, the split-K workspace and ``ssmm_*_finalize``. Every formula is a transcription of one line of
the .cu, and :data:`TRANSCRIBED` lists those lines verbatim: ``test_transcribed_lines_exist`` fails the
moment the .cu changes a formula without this file changing with it.

Only the arithmetic of one ``mma.sp`` is delegated (to the warp-level emulator
:func:`samoyeds_lab.reference.mma_sp.mma_sp_m16n8k32`, whose layouts tests/kernels/test_layout.py and the
one-warp GPU probe pin down). Shared memory starts as 0xFF bytes (NaN halves, illegal metadata nibbles),
so a fragment that reads a byte no load wrote fails loudly; every global read is bounds-checked; cp.async
sources must be 16-byte aligned; shared-memory stores may not race within one flush. Weights and
activations are small integers, so every fp32 sum is exact and results are compared bit for bit with
the CPU reference.

What passes here therefore proves: the kernel reads exactly the bytes the formats write (values,
register-ordered metadata, row_index, gathered x rows, zero-fill for every tail), writes every output
element exactly once (plain / SiLU·up), adds every (scatter row, feature) exactly the scaled sum of its
positions (scatter-add, SENTINEL skipped), and that split-K partials cover K exactly once and are summed
exactly once by the finalize pass.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from samoyeds_lab import tiles
from samoyeds_lab.formats import SENTINEL, TokenSelection, compress_nm, compress_samoyeds
from samoyeds_lab.kernels import ops
from samoyeds_lab.kernels.build import KERNEL_DIR
from samoyeds_lab.reference.mma_sp import mma_sp_m16n8k32
from samoyeds_lab.reference.wgmma import SmemDescriptor, k_major_offsets, load_k_major, wgmma_sp_m64nNk32

from ..formats.helpers import random_samoyeds
from .test_launch import _entry_params, check_args, cu_macros, install_recorder

SRC = (KERNEL_DIR / "sptc_common.cuh").read_text() + (KERNEL_DIR / "ssmm.cu").read_text()  # + the header it includes
D = cu_macros("ssmm")  # BLOCK_*, WARPS_*, MMA_*, STAGES, ACC_PAD, *_STAGE_BYTES, THREADS, ... as compiled
BLOCK_M, BLOCK_N, STAGES, ACC_PAD = D["BLOCK_M"], D["BLOCK_N"], D["STAGES"], D["ACC_PAD"]
WARPS_M, WARPS_N, THREADS = D["WARPS_M"], D["WARPS_N"], D["THREADS"]
MMA_M, MMA_N, MMA_K, KC_STEP = D["MMA_M"], D["MMA_N"], D["MMA_K"], D["KC_STEP"]
WARP_TILE_M, WARP_TILE_N, FRAGS_M, FRAGS_N = D["WARP_TILE_M"], D["WARP_TILE_N"], D["FRAGS_M"], D["FRAGS_N"]
A_STAGE_BYTES, B_STAGE_BYTES, M_STAGE_BYTES, STAGE_BYTES = (D[k] for k in ("A_STAGE_BYTES", "B_STAGE_BYTES",
                                                                            "M_STAGE_BYTES", "STAGE_BYTES"))
PAD_WORD = 0x44444444
SENT = D["SENTINEL"]
WG_M, WG_FRAGS_M, WG_FRAGS_N, B_SBO, SMEM_ALIGN = (D[k] for k in ("WG_M", "WG_FRAGS_M", "WG_FRAGS_N", "B_SBO",
                                                                   "SMEM_ALIGN"))
#: Shared-window address the replay gives ``smem_raw`` (16-byte aligned, deliberately not SMEM_ALIGN-aligned,
#: so the wgmma path's round-up is exercised).
RAW_BASE = 0x2A0

#: The lines of kernels/ssmm.cu transcribed below (each must still be in the .cu, verbatim).
TRANSCRIBED = [
    # smem carve-up, block coordinates, per-expert operand offsets
    "int* tok_s = (int*)(smem + STAGES * STAGE_BYTES);",
    "float* acc_s = (float*)(smem + STAGES * STAGE_BYTES + BLOCK_N * 4);",
    "const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;",
    "const int wm = warp / WARPS_N, wn = warp % WARPS_N;",
    "const int bm = blockIdx.x;",
    "const int expert = tile_expert[blockIdx.y];",
    "const i64 p0 = tile_start[blockIdx.y];",
    "const int cnt = tile_count[blockIdx.y];",
    "const int kc = cols / 2;",
    "const int ksteps = (cols + MMA_K - 1) / MMA_K;",
    "const int mtiles = (crows + MMA_M - 1) / MMA_M;",
    "const int windows = row_index ? cols / vector : 1;",
    "const int window_steps = row_index ? vector / MMA_K : 0x7fffffff;",
    "const int k_begin = blockIdx.z * steps_per_split;",
    "const int k_end = min(ksteps, k_begin + steps_per_split);",
    "values += (i64)expert * crows * kc;",
    "meta += (i64)expert * mtiles * ksteps * 16;",
    "if (row_index) row_index += (i64)expert * windows * crows;",
    "const int c0 = bm * BLOCK_M;",
    "const int r_tile = BLOCK_M / sel_n * sel_m;",
    "const int r0 = c0 / sel_n * sel_m;",
    "const int acc_ld = r_tile + ACC_PAD;",
    # token ids
    "for (int n = tid; n < BLOCK_N; n += THREADS) {",
    "if (n < cnt) {",
    "id = token_idx ? token_idx[p0 + n] : (int)(p0 + n);",
    "if (id < 0 || id >= x_rows) id = SENTINEL;  // the wrapper validated; never read out of bounds",
    "for (int i = tid; i < BLOCK_N * acc_ld; i += THREADS) acc_s[i] = 0.0f;",
    "const bool a_vec = (kc % 8 == 0) && (((unsigned long long)values & 15ull) == 0);",
    "const bool x_vec = (ldx % 8 == 0) && (((unsigned long long)x & 15ull) == 0);",
    # load_stage
    "const u32 sb = sa + A_STAGE_BYTES;",
    "const u32 sm = sb + B_STAGE_BYTES;",
    "for (int i = tid; i < BLOCK_M * 2; i += THREADS) {",
    "const int row = i >> 1, chunk = i & 1;",
    "const int c = c0 + row;",
    "const int k0 = ks * KC_STEP + chunk * 8;",
    "int valid = (c < crows) ? min(8, max(0, kc - k0)) : 0;",
    "const u32 dst = sa + a_off(row, chunk);",
    "const u16* src = values + (i64)(valid ? c : 0) * kc + (valid ? k0 : 0);",
    "cp_async16(dst, valid ? (const void*)src : (const void*)values, valid * 2);",
    "for (int i = tid; i < BLOCK_N * 4; i += THREADS) {",
    "const int n = i >> 2, chunk = i & 3;",
    "const int id = tok_s[n];",
    "const int k0 = ks * MMA_K + chunk * 8;",
    "const int valid = (id >= 0) ? min(8, max(0, cols - k0)) : 0;",
    "const u32 dst = sb + b_off(n, chunk);",
    "const u16* src = x + (i64)(valid ? id : 0) * ldx + (valid ? k0 : 0);",
    "cp_async16(dst, valid ? (const void*)src : (const void*)x, valid * 2);",
    "for (int h = 0; h < 8; ++h) st_shared_u16(dst + 2 * h, h < valid ? src[h] : (u16)0);",
    "if (tid < M_STAGE_BYTES / 16) {",
    "const int t = tid >> 2, chunk = tid & 3;",
    "const int mt = c0 / MMA_M + t;",
    "const u32 dst = sm + tid * 16;",
    "cp_async16(dst, meta + ((i64)mt * ksteps + ks) * 16 + chunk * 4, 16);",
    "for (int w = 0; w < 4; ++w) st_shared_u32(dst + 4 * w, PAD_WORD);",
    # pipeline
    "if (k_begin + s < k_end) load_stage(s, k_begin + s);",
    "const int it = ks - k_begin;",
    "const int nk = ks + STAGES - 1;",
    "if (nk < k_end) load_stage((it + STAGES - 1) % STAGES, nk);",
    "const int stage = it % STAGES;",
    "const u32 sa = smem_base + stage * STAGE_BYTES;",
    "const u32* sm = (const u32*)(smem + stage * STAGE_BYTES + A_STAGE_BYTES + B_STAGE_BYTES);",
    # fragments
    "const int g = lane >> 2, t = lane & 3;",
    "const int row = wm * WARP_TILE_M + i * MMA_M + (lane & 15);",
    "ldmatrix_x4(a[i], sa + a_off(row, lane >> 4));",
    "e[i] = sm[(wm * FRAGS_M + i) * 16 + 2 * g + (lane & 1)];",
    "const int tok = wn * WARP_TILE_N + j * MMA_N + (lane & 7);",
    "ldmatrix_x4(b[j], sb + b_off(tok, lane >> 3));",
    "for (int j = 0; j < FRAGS_N; ++j) mma_sp_16832<BF16>(acc[i][j], a[i], b[j], e[i]);",
    # window flush
    "if ((ks + 1) % window_steps == 0 || ks + 1 == k_end) {",
    "const int w = ks / (row_index ? window_steps : 1);",
    "for (int i = 0; i < FM; ++i) {",
    "const int c = c0 + frag_row<WG>(wm, warp, i) + g + 8 * half;",
    "if (c >= crows) continue;",
    "const int dense = row_index ? (c / sel_n) * sel_m + (int)row_index[(i64)w * crows + c] : c;",
    "float* dst = acc_s + (dense - r0);",
    "for (int j = 0; j < FN; ++j) {",
    "const int n = frag_tok<WG>(wn, j) + 2 * t;",
    "dst[n * acc_ld] += acc[i][j][2 * half];",
    "dst[(n + 1) * acc_ld] += acc[i][j][2 * half + 1];",
    "acc[i][j][2 * half] = 0.0f;",
    # epilogue of the main kernel
    "const int r_valid = min(r_tile, rows - r0);",
    "if (r_valid <= 0) return;",
    "for (int i = tid; i < cnt * r_tile; i += THREADS) {",
    "const int n = i / r_tile, rl = i - n * r_tile;",
    "if (rl >= r_valid) continue;",
    "const float v = acc_s[n * acc_ld + rl];",
    "if (gridDim.z > 1) {",
    "workspace[((i64)blockIdx.z * positions + p0 + n) * rows + r0 + rl] = v;",
    "apply_epilogue<BF16>(ep, p0 + n, r0 + rl, v);",
    # apply_epilogue
    "if (ep.epilogue == 2) {",
    "const i64 dst = ep.scatter_idx ? (i64)ep.scatter_idx[p] : p;",
    "if (dst < 0) return;  // SENTINEL",
    "const float s = ep.scale ? ep.scale[p] : 1.0f;",
    "if (ep.out_f32) atomicAdd((float*)ep.out + dst * ep.ldo + r, s * v);",
    "else red_add_16<BF16>((u16*)ep.out + dst * ep.ldo + r, s * v);",
    "const u16 nxt = from_float<BF16>(to_float<BF16>(cur) + v);",
    "if (ep.epilogue == 1) {",
    "const float u = to_float<BF16>(ep.up[p * ep.ldo + r]);",
    "v = v / (1.0f + __expf(-v)) * u;",
    "((u16*)ep.out)[p * ep.ldo + r] = from_float<BF16>(v);",
    # finalize
    "const i64 total = positions * rows;",
    "for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {",
    "for (int z = 0; z < splits; ++z) v += workspace[z * total + i];",
    "apply_epilogue<BF16>(ep, i / rows, (int)(i % rows), v);",
    # the wgmma (sm_90a) path
    "unsigned char* smem = smem_raw + (WG ? (SMEM_ALIGN - (smem_u32(smem_raw) & (SMEM_ALIGN - 1))) & (SMEM_ALIGN - 1) : 0);",
    "constexpr int FM = WG ? WG_FRAGS_M : FRAGS_M;",
    "constexpr int FN = WG ? WG_FRAGS_N : FRAGS_N;",
    "return WG ? i * WG_M + warp * MMA_M : wm * WARP_TILE_M + i * MMA_M;",
    "return WG ? j * MMA_N : wn * WARP_TILE_N + j * MMA_N;",
    "if (WG) fence_proxy_async();",
    "const int row = frag_row<true>(wm, warp, i) + (lane & 15);",
    "e[i] = sm[(frag_row<true>(wm, warp, i) / MMA_M) * 16 + 2 * g + (lane & 1)];",
    "for (int i = 0; i < WG_FRAGS_M; ++i) wgmma_sp_m64n64k32<BF16>(acc[i], a[i], b_desc(sb), e[i]);",
    "wgmma_wait0();  // before the flush reads acc and before the next barrier frees this stage",
    "return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) |",
    "((unsigned long long)((B_SBO & 0x3FFFF) >> 4) << 32) | (2ull << 62);",
    "\"{%32, %33, %34, %35}, %36, %37, 0, p, 1, 1, 0;\\n}\\n\"",
    # swizzles
    "int a_off(int row, int chunk) { return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4); }",
    "int b_off(int tok, int chunk) { return tok * 64 + ((chunk ^ ((tok >> 1) & 3)) << 4); }",
]


def test_transcribed_lines_exist():
    missing = [line for line in TRANSCRIBED if line not in SRC]
    assert not missing, f"kernels/ssmm.cu changed; update the emulator for: {missing}"


def a_off(row, chunk):
    return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4)


def b_off(tok, chunk):
    return tok * 64 + ((chunk ^ ((tok >> 1) & 3)) << 4)


def frag_row(wg, wm, warp, i):
    return i * WG_M + warp * MMA_M if wg else wm * WARP_TILE_M + i * MMA_M


def frag_tok(wg, wn, j):
    return j * MMA_N if wg else wn * WARP_TILE_N + j * MMA_N


def b_desc(addr):
    return ((addr & 0x3FFFF) >> 4) | (1 << 16) | (((B_SBO & 0x3FFFF) >> 4) << 32) | (2 << 62)


# ------------------------------------------------------------------ global and shared memory models
class Global:
    """One kernel argument buffer: a flat numpy view of the tensor, its byte address, and read/write checks."""

    def __init__(self, name: str, t: torch.Tensor | None, np_dtype):
        self.name = name
        self.null = t is None
        if t is None:
            self.a, self.addr = np.zeros(0, np_dtype), 0
            return
        # the bytes from the pointer to the tensor's last element (x may be row-strided: ldx = stride(0))
        extent = 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride())) if t.numel() else 0
        self.addr = t.data_ptr()
        self.a = t.detach().as_strided((extent,), (1,)).numpy().view(np_dtype).copy()
        self.writes = np.zeros(self.a.size, np.int64)

    def _check(self, off: int, count: int) -> None:
        assert not self.null, f"{self.name}: NULL dereferenced"
        assert 0 <= off and off + count <= self.a.size, \
            f"{self.name}: out of bounds access [{off}, {off + count}) of {self.a.size} elements"

    def read(self, off: int, count: int = 1) -> np.ndarray:
        self._check(off, count)
        return self.a[off: off + count]

    def byte_addr(self, off: int) -> int:
        return self.addr + off * self.a.itemsize


class Shared:
    """The block's dynamic shared memory (exactly ``smem`` bytes), filled with 0xFF: NaN halves, illegal nibbles."""

    def __init__(self, size: int):
        self.b = np.full(size, 0xFF, np.uint8)
        self.h = self.b.view(np.uint16)
        self.w = self.b.view(np.uint32)
        self.f = self.b.view(np.float32)

    def check(self, byte: int, nbytes: int, lo: int, hi: int, what: str) -> None:
        assert lo <= byte and byte + nbytes <= hi, f"{what}: shared bytes [{byte}, {byte + nbytes}) outside [{lo}, {hi})"
        assert byte + nbytes <= self.b.size, f"{what}: beyond the {self.b.size} B of dynamic shared memory"


def f32_to_half_bits(v: np.ndarray, bf16: bool) -> np.ndarray:
    """cvt.rn.{f16,bf16}.f32 (round to nearest even) → 16-bit patterns."""
    t = torch.from_numpy(np.asarray(v, np.float32).copy()).to(torch.bfloat16 if bf16 else torch.float16)
    return t.view(torch.int16).numpy().view(np.uint16)


def half_bits_to_f32(h: np.ndarray, bf16: bool) -> np.ndarray:
    t = torch.from_numpy(np.asarray(h, np.uint16).astype(np.int16)).view(torch.bfloat16 if bf16 else torch.float16)
    return t.float().numpy()


# ------------------------------------------------------------------ the kernel, replayed
PARAMS = _entry_params(SRC, "SSMM_ENTRY", False)
FIN_PARAMS = _entry_params(SRC, "SSMM_ENTRY", True)
_NP = {"u16": np.uint16, "u32": np.uint32, "unsigned char": np.uint8, "int": np.int32, "float": np.float32}


def _pname(p: str) -> str:
    return p.rsplit(" ", 1)[1].lstrip("*")


class SsmmEmulator:
    """Replays ``ssmm_{f16,bf16}`` and ``ssmm_*_finalize`` launches on numpy memory.

    ``out`` and ``workspace`` start as NaN (plain / SiLU outputs, partials) or the caller's ``out``
    (scatter-add), and count their writes; atomics record which positions added into each element.
    """

    def __init__(self, bf16: bool, out_init: torch.Tensor | None):
        self.bf16 = bf16
        self.out_init = out_init
        self.mem: dict[str, Global] = {}
        self.adds: dict[tuple[int, int], list[int]] = {}
        self.flushes = 0

    # -- buffers
    def _buffers(self, names, params, args, shape_ws):
        for p, a in zip(params, args):  # scalars first: the buffers below depend on out_f32
            if not p.rsplit(" ", 1)[0].strip().endswith("*"):
                names[_pname(p)] = int(a)
        for p, a in zip(params, args):
            name = _pname(p)
            ctype = p.rsplit(" ", 1)[0].replace("const ", "").replace("*", "").strip()
            if not p.rsplit(" ", 1)[0].strip().endswith("*"):
                continue
            if name in self.mem:  # out / workspace persist between the main kernel and finalize
                continue
            if name == "out":
                f32 = bool(names["out_f32"])
                if self.out_init is not None:
                    t = self.out_init.clone()
                else:
                    t = torch.full(tuple(a.shape), float("nan"), dtype=torch.float32 if f32 else
                                   (torch.bfloat16 if self.bf16 else torch.float16))
                self.mem[name] = Global(name, t.view(torch.int16) if not f32 else t, np.float32 if f32 else np.uint16)
                self.mem[name].addr = a.data_ptr() if a is not None else 0
            elif name == "workspace":
                if a is None:
                    self.mem[name] = Global(name, None, np.float32)
                else:
                    assert tuple(a.shape) == shape_ws, f"workspace {tuple(a.shape)} != [splits, positions, rows] {shape_ws}"
                    self.mem[name] = Global(name, torch.full(shape_ws, float("nan")), np.float32)
            else:
                self.mem[name] = Global(name, a, _NP[ctype])

    def run(self, launch) -> None:
        fin = launch.fn.endswith("_finalize")
        params = FIN_PARAMS if fin else PARAMS
        check_args(params, launch.args)
        self.s: dict[str, int] = {}
        if fin:
            names = {}
            args = dict(zip(map(_pname, params), launch.args))
            shape_ws = (int(args["splits"]), int(args["positions"]), int(args["rows"]))
            self._buffers(names, params, launch.args, shape_ws)
            self._finalize(names, launch.grid[0], launch.block)
            return
        names: dict[str, int] = {}
        args = dict(zip(map(_pname, params), launch.args))
        ws = args["workspace"]
        shape_ws = tuple(ws.shape) if ws is not None else None
        self._buffers(names, params, launch.args, shape_ws)
        if ws is not None:
            assert shape_ws == (launch.grid[2], int(args["positions"]), int(args["rows"]))
        assert launch.block == THREADS
        self.wg = launch.fn.startswith("ssmm_wg_")
        for bz in range(launch.grid[2]):
            for by in range(launch.grid[1]):
                for bx in range(launch.grid[0]):
                    self._block(names, launch, bx, by, bz)

    # -- one block of ssmm_body
    def _block(self, P, launch, bx, by, bz):
        M = self.mem
        rows, crows, cols, sel_n, sel_m, vector = (P[k] for k in ("rows", "crows", "cols", "sel_n", "sel_m", "vector"))
        ldx, x_rows, steps_per_split, positions = P["ldx"], P["x_rows"], P["steps_per_split"], P["positions"]
        has_ri, has_tok = not M["row_index"].null, not M["token_idx"].null
        grid_z = launch.grid[2]
        sh = Shared(launch.smem)
        wg = self.wg
        # smem = smem_raw + (WG ? round-up : 0); offsets below are from smem_raw, addresses = RAW_BASE + offset
        s0 = (SMEM_ALIGN - (RAW_BASE & (SMEM_ALIGN - 1))) & (SMEM_ALIGN - 1) if wg else 0
        tok_base = s0 + STAGES * STAGE_BYTES
        acc_base = s0 + STAGES * STAGE_BYTES + BLOCK_N * 4

        bm = bx
        expert = int(M["tile_expert"].read(by)[0])
        p0 = int(M["tile_start"].read(by)[0])
        cnt = int(M["tile_count"].read(by)[0])
        kc = cols // 2
        ksteps = (cols + MMA_K - 1) // MMA_K
        mtiles = (crows + MMA_M - 1) // MMA_M
        windows = cols // vector if has_ri else 1
        window_steps = vector // MMA_K if has_ri else 0x7FFFFFFF
        k_begin = bz * steps_per_split
        k_end = min(ksteps, k_begin + steps_per_split)
        v_off = expert * crows * kc  # values += (i64)expert * crows * kc;
        m_off = expert * mtiles * ksteps * 16
        ri_off = expert * windows * crows if has_ri else 0
        c0 = bm * BLOCK_M
        r_tile = BLOCK_M // sel_n * sel_m
        r0 = c0 // sel_n * sel_m
        acc_ld = r_tile + ACC_PAD

        # token ids → tok_s
        tok = []
        for n in range(BLOCK_N):
            id_ = SENT
            if n < cnt:
                id_ = int(M["token_idx"].read(p0 + n)[0]) if has_tok else p0 + n
                if id_ < 0 or id_ >= x_rows:
                    id_ = SENT
            sh.check(tok_base + 4 * n, 4, tok_base, acc_base, "tok_s")
            sh.w[(tok_base + 4 * n) // 4] = np.uint32(id_ & 0xFFFFFFFF)
            tok.append(id_)
        sh.check(acc_base, BLOCK_N * acc_ld * 4, acc_base, launch.smem, "acc_s zero-init")
        sh.f[acc_base // 4: acc_base // 4 + BLOCK_N * acc_ld] = 0.0

        a_vec = kc % 8 == 0 and M["values"].byte_addr(v_off) % 16 == 0
        x_vec = ldx % 8 == 0 and M["x"].byte_addr(0) % 16 == 0

        def cp_async16(dst, buf, off, src_bytes, written):
            assert dst % 16 == 0, f"cp.async destination {dst} not 16-byte aligned"
            data = np.zeros(8, np.uint16) if buf.a.itemsize == 2 else np.zeros(4, np.uint32)
            if src_bytes:
                assert buf.byte_addr(off) % 16 == 0, f"{buf.name}: cp.async source not 16-byte aligned (offset {off})"
                data[: src_bytes // buf.a.itemsize] = buf.read(off, src_bytes // buf.a.itemsize)
            sh.b[dst: dst + 16] = data.view(np.uint8)
            written.append(dst)

        def scalar16(dst, buf, off, valid, written):
            vals = np.zeros(8, np.uint16)
            if valid:
                vals[:valid] = buf.read(off, valid)  # h < valid ? src[h] : 0
            sh.b[dst: dst + 16] = vals.view(np.uint8)
            written.append(dst)

        def load_stage(stage, ks):
            sa = s0 + stage * STAGE_BYTES
            sb = sa + A_STAGE_BYTES
            smm = sb + B_STAGE_BYTES
            written: list[int] = []
            for i in range(BLOCK_M * 2):
                row, chunk = i >> 1, i & 1
                c = c0 + row
                k0 = ks * KC_STEP + chunk * 8
                valid = min(8, max(0, kc - k0)) if c < crows else 0
                dst = sa + a_off(row, chunk)
                sh.check(dst, 16, sa, sb, "A stage")
                src = v_off + (c if valid else 0) * kc + (k0 if valid else 0)
                if a_vec:
                    cp_async16(dst, M["values"], src if valid else v_off, valid * 2, written)
                else:
                    scalar16(dst, M["values"], src, valid, written)
            for i in range(BLOCK_N * 4):
                n, chunk = i >> 2, i & 3
                id_ = tok[n]
                k0 = ks * MMA_K + chunk * 8
                valid = min(8, max(0, cols - k0)) if id_ >= 0 else 0
                dst = sb + b_off(n, chunk)
                sh.check(dst, 16, sb, smm, "B stage")
                src = (id_ if valid else 0) * ldx + (k0 if valid else 0)
                if x_vec:
                    cp_async16(dst, M["x"], src if valid else 0, valid * 2, written)
                else:
                    scalar16(dst, M["x"], src, valid, written)
            for tid in range(THREADS):
                if tid < M_STAGE_BYTES // 16:
                    t, chunk = tid >> 2, tid & 3
                    mt = c0 // MMA_M + t
                    dst = smm + tid * 16
                    sh.check(dst, 16, smm, sa + STAGE_BYTES, "metadata stage")
                    if mt < mtiles:
                        cp_async16(dst, M["meta"], m_off + (mt * ksteps + ks) * 16 + chunk * 4, 16, written)
                    else:
                        sh.w[dst // 4: dst // 4 + 4] = PAD_WORD
                        written.append(dst)
            # every 16-byte chunk of the stage is (re)written: no stale bytes from an earlier k-step survive
            assert sorted(written) == list(range(sa, sa + STAGE_BYTES, 16)), "a load_stage leaves bytes unwritten"

        def ldmatrix_x4(addrs: np.ndarray, lo: int, hi: int) -> np.ndarray:
            """Lane 8q+r names row r of matrix q; lane l receives row l//4, halves 2(l%4), 2(l%4)+1 of each q."""
            for a in addrs.tolist():
                assert a % 16 == 0, "ldmatrix row address not 16-byte aligned"
                sh.check(a, 16, lo, hi, "ldmatrix")
            lane = np.arange(32)
            q = np.arange(4).reshape(1, 4, 1)
            h = np.arange(2).reshape(1, 1, 2)
            idx = addrs[8 * q + (lane // 4).reshape(32, 1, 1)] // 2 + 2 * (lane % 4).reshape(32, 1, 1) + h
            return sh.h[idx]  # [32 lanes, 4 regs, 2 halves]

        dt = torch.bfloat16 if self.bf16 else torch.float16
        as_half = lambda u: torch.from_numpy(u.astype(np.int16)).view(dt)  # noqa: E731
        FM, FN = (WG_FRAGS_M, WG_FRAGS_N) if wg else (FRAGS_M, FRAGS_N)
        acc = torch.zeros(4, FM, FN, 32, 4)  # [warp, i, j, lane, q]
        lane = np.arange(32)
        g, t = lane >> 2, lane & 3

        for s in range(STAGES - 1):
            if k_begin + s < k_end:
                load_stage(s, k_begin + s)
        for ks in range(k_begin, k_end):
            it = ks - k_begin
            nk = ks + STAGES - 1
            if nk < k_end:
                assert (it + STAGES - 1) % STAGES != it % STAGES  # never overwrite the stage being read
                load_stage((it + STAGES - 1) % STAGES, nk)
            stage = it % STAGES
            sa = s0 + stage * STAGE_BYTES
            sb = sa + A_STAGE_BYTES
            smw = (s0 + stage * STAGE_BYTES + A_STAGE_BYTES + B_STAGE_BYTES) // 4
            if wg:
                self._wgmma_step(sh, acc, sa, sb, smw, ldmatrix_x4, as_half, dt)
            for warp in range(0 if wg else THREADS // 32):
                wm, wn = warp // WARPS_N, warp % WARPS_N
                a, e, b = [], [], []
                for i in range(FRAGS_M):
                    row = wm * WARP_TILE_M + i * MMA_M + (lane & 15)
                    a.append(as_half(ldmatrix_x4(np.array([a_off(r, c) for r, c in zip(row, lane >> 4)]) + sa, sa, sb)))
                    widx = smw + (wm * FRAGS_M + i) * 16 + 2 * g + (lane & 1)
                    sh.check(int(widx.min()) * 4, 4, sb + B_STAGE_BYTES, sa + STAGE_BYTES, "metadata register")
                    sh.check(int(widx.max()) * 4, 4, sb + B_STAGE_BYTES, sa + STAGE_BYTES, "metadata register")
                    e.append(torch.from_numpy(sh.w[widx].astype(np.int64)))
                for j in range(FRAGS_N):
                    tk = wn * WARP_TILE_N + j * MMA_N + (lane & 7)
                    b.append(as_half(ldmatrix_x4(np.array([b_off(n, c) for n, c in zip(tk, lane >> 3)]) + sb,
                                                 sb, sb + B_STAGE_BYTES)))
                A = torch.stack(a).unsqueeze(1).expand(FRAGS_M, FRAGS_N, 32, 4, 2)
                B = torch.stack(b).unsqueeze(0).expand(FRAGS_M, FRAGS_N, 32, 4, 2)
                E = torch.stack(e).unsqueeze(1).expand(FRAGS_M, FRAGS_N, 32)
                acc[warp] = mma_sp_m16n8k32(A, B, acc[warp], E, 0)

            if (ks + 1) % window_steps == 0 or ks + 1 == k_end:
                self.flushes += 1
                w = ks // (window_steps if has_ri else 1)
                owner: dict[int, int] = {}
                for warp in range(THREADS // 32):
                    wm, wn = warp // WARPS_N, warp % WARPS_N
                    for i in range(FM):
                        for half in range(2):
                            for ln in range(32):
                                c = c0 + frag_row(wg, wm, warp, i) + int(g[ln]) + 8 * half
                                if c >= crows:
                                    continue
                                dense = ((c // sel_n) * sel_m + int(M["row_index"].read(ri_off + w * crows + c)[0])
                                         if has_ri else c)
                                assert 0 <= dense - r0 < r_tile, f"dense row {dense} outside this block's tile"
                                assert dense < rows, f"compressed row {c} lands on dense row {dense} >= rows"
                                for j in range(FN):
                                    n = frag_tok(wg, wn, j) + 2 * int(t[ln])
                                    for dn, q in ((0, 2 * half), (1, 2 * half + 1)):
                                        fi = acc_base // 4 + (dense - r0) + (n + dn) * acc_ld
                                        sh.check(fi * 4, 4, acc_base, launch.smem, "acc_s flush")
                                        tid = warp * 32 + ln
                                        assert owner.setdefault(fi, tid) == tid, f"race on acc_s[{fi}] in one flush"
                                        sh.f[fi] += np.float32(acc[warp, i, j, ln, q])
                acc.zero_()
        assert np.isfinite(sh.f[acc_base // 4: acc_base // 4 + BLOCK_N * acc_ld]).all()

        # epilogue
        r_valid = min(r_tile, rows - r0)
        if r_valid <= 0:
            return
        for i in range(cnt * r_tile):
            n, rl = i // r_tile, i - (i // r_tile) * r_tile
            if rl >= r_valid:
                continue
            v = np.float32(sh.f[acc_base // 4 + n * acc_ld + rl])
            if grid_z > 1:
                ws = self.mem["workspace"]
                off = (bz * positions + p0 + n) * rows + r0 + rl
                ws._check(off, 1)
                ws.a[off] = v
                ws.writes[off] += 1
            else:
                self._epilogue(P, p0 + n, r0 + rl, v)

    def _wgmma_step(self, sh, acc, sa, sb, smw, ldmatrix_x4, as_half, dt):
        """One k-step of the sm_90a path: per 64-row slab i, each warp's A fragment (ldmatrix) and metadata
        register, B read through the kernel's descriptor by the wgmma emulator, then wgmma.mma_async.sp."""
        lane = np.arange(32)
        g = lane >> 2
        desc = b_desc(RAW_BASE + sb)
        assert SmemDescriptor.decode(desc).start_address == RAW_BASE + sb
        window = np.concatenate([np.full(RAW_BASE, 0xFF, np.uint8), sh.b])  # the shared window from address 0
        bt = load_k_major(window, desc, BLOCK_N, MMA_K)  # [tokens, K] bit patterns, as the tensor cores read them
        # the descriptor must address exactly the B stage
        offs = k_major_offsets(desc, BLOCK_N, MMA_K) - RAW_BASE
        assert offs.min() >= sb and offs.max() < sb + B_STAGE_BYTES, "descriptor reads outside the B stage"
        assert len(np.unique(offs // 2)) == BLOCK_N * MMA_K, "descriptor maps two elements to one address"
        b = as_half(bt).T.contiguous()  # [K, N]
        for i in range(WG_FRAGS_M):
            a, e = [], []
            for warp in range(THREADS // 32):
                row = frag_row(True, 0, warp, i) + (lane & 15)
                a.append(as_half(ldmatrix_x4(np.array([a_off(r, c) for r, c in zip(row, lane >> 4)]) + sa, sa, sb)))
                widx = smw + (frag_row(True, 0, warp, i) // MMA_M) * 16 + 2 * g + (lane & 1)
                sh.check(int(widx.min()) * 4, 4, sb + B_STAGE_BYTES, sa + STAGE_BYTES, "metadata register")
                sh.check(int(widx.max()) * 4, 4, sb + B_STAGE_BYTES, sa + STAGE_BYTES, "metadata register")
                e.append(torch.from_numpy(sh.w[widx].astype(np.int64)))
            c = acc[:, i].permute(0, 2, 1, 3).reshape(4, 32, WG_FRAGS_N * 4)  # d[4j + q] of warp, lane
            d = wgmma_sp_m64nNk32(torch.stack(a).to(dt), b, c, torch.stack(e), 0)
            acc[:, i] = d.reshape(4, 32, WG_FRAGS_N, 4).permute(0, 2, 1, 3)

    def _epilogue(self, P, p, r, v):
        M, ldo = self.mem, P["ldo"]
        out = M["out"]
        if P["epilogue"] == 2:
            dst = int(M["scatter_idx"].read(p)[0]) if not M["scatter_idx"].null else p
            if dst < 0:
                return
            s = np.float32(M["scale"].read(p)[0]) if not M["scale"].null else np.float32(1.0)
            off = dst * ldo + r
            out._check(off, 1)
            if P["out_f32"]:
                out.a[off] = np.float32(out.a[off] + np.float32(s * v))
            else:
                cur = half_bits_to_f32(out.a[off: off + 1], self.bf16)[0]
                out.a[off] = f32_to_half_bits(np.float32(cur + np.float32(s * v)), self.bf16)
            self.adds.setdefault((dst, r), []).append(p)
            return
        if P["epilogue"] == 1:
            u = half_bits_to_f32(M["up"].read(p * ldo + r), self.bf16)[0]
            with np.errstate(over="ignore"):  # exp(-v) = inf for v << 0 gives -0, as __expf does
                v = np.float32(v / (np.float32(1.0) + np.exp(-v, dtype=np.float32)) * u)
        off = p * ldo + r
        out._check(off, 1)
        out.a[off] = f32_to_half_bits(v, self.bf16)
        out.writes[off] += 1

    def _finalize(self, P, blocks, block):
        total = P["positions"] * P["rows"]
        ws = self.mem["workspace"]
        visits = np.zeros(total, np.int64)
        for start in range(0, blocks * block):  # i = blockIdx.x * blockDim.x + threadIdx.x
            for i in range(start, total, blocks * block):  # i += gridDim.x * blockDim.x
                visits[i] += 1
                v = np.float32(0.0)
                for z in range(P["splits"]):
                    w = ws.read(z * total + i)[0]
                    assert not np.isnan(w), f"finalize reads workspace[{z}, {i // P['rows']}, {i % P['rows']}] never written"
                    v = np.float32(v + w)
                self._epilogue(P, i // P["rows"], i % P["rows"], v)
        assert (visits == 1).all(), "finalize must visit every (position, row) exactly once"


# ------------------------------------------------------------------ drivers
def int_dense(dense: torch.Tensor, seed: int) -> torch.Tensor:
    """Replace the nonzeros of a patterned matrix by small nonzero integers (exact fp32 sums)."""
    g = torch.Generator().manual_seed(seed)
    vals = torch.randint(1, 4, dense.shape, generator=g) * (torch.randint(0, 2, dense.shape, generator=g) * 2 - 1)
    return torch.where(dense != 0, vals.to(dense.dtype), torch.zeros((), dtype=dense.dtype))


def int_x(rows, cols, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (rows, cols), generator=g).to(dtype)


def samoyeds_weight(rows, cols, n, m, vector, dtype, seed=0):
    return compress_samoyeds(int_dense(random_samoyeds(rows, cols, n, m, vector, dtype=dtype, seed=seed), seed), n, m, vector)


def emulate(monkeypatch, call, *, bf16: bool, out_init=None, sms=132, arch="90a"):
    """Run ``call()`` (an ops.* call with backend="cupy") against the recorder on a GPU of ``arch``; replay
    its launches."""
    rec = install_recorder(monkeypatch, sms=sms)
    monkeypatch.setattr(ops, "_arch", lambda: arch)
    monkeypatch.setattr(ops, "_device_name", lambda: "NVIDIA H100 80GB HBM3")
    call()
    emu = SsmmEmulator(bf16, out_init)
    launches = [launch for launch in rec.launches if launch.module == "ssmm"]
    assert launches, "no ssmm launch recorded"
    for launch in launches:
        emu.run(launch)
    return emu, launches


def out_tensor(emu, like: torch.Tensor) -> torch.Tensor:
    o = emu.mem["out"]
    if like.dtype == torch.float32:
        return torch.from_numpy(o.a.copy()).view(like.shape)
    return torch.from_numpy(o.a.astype(np.int16)).view(like.dtype).view(like.shape)


def assert_written_once(emu, positions, rows):
    w = emu.mem["out"].writes.reshape(positions, rows)
    assert (w == 1).all(), f"outputs written {sorted(set(w.flatten().tolist()))} times (want exactly once)"


IDX_70 = torch.tensor([3, SENTINEL, 0, 10, 7, 7, SENTINEL, 1] * 8 + [2, 4, SENTINEL, 9, 5, 6], dtype=torch.int32)


KERNELS = ["mma_sp", "wgmma_sp"]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("split_k", [1, 2, None])
def test_ssmm_1of2_v32_plain(monkeypatch, split_k, kernel):
    """40 x 96, 1:2 rows per 32-wide window: 20 compressed rows (M tail in the second m16 tile), 3 windows."""
    w = samoyeds_weight(40, 96, 1, 2, 32, torch.float16)
    x = int_x(11, 96, torch.float16)
    emu, launches = emulate(monkeypatch, lambda: ops.ssmm(w, x, IDX_70, split_k=split_k, backend="cupy", kernel=kernel),
                            bf16=False)
    main = launches[0]
    assert main.fn == {"mma_sp": "ssmm_f16", "wgmma_sp": "ssmm_wg_f16"}[kernel]
    assert main.grid[:2] == (1, 2) and main.grid[2] == {1: 1, 2: 2, None: 3}[split_k]
    assert emu.flushes == 2 * 3  # 2 token tiles x 3 windows
    want = ops.ssmm(w, x, IDX_70, backend="reference")
    assert_written_once(emu, 70, 40)
    assert torch.equal(out_tensor(emu, want), want)  # integer data: bit-exact
    if split_k != 1:
        assert (emu.mem["workspace"].writes == 1).all()  # every partial written exactly once


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ssmm_2of4_v64_two_row_blocks_silu(monkeypatch, dtype, kernel):
    """272 x 192, 2:4 rows per 64-wide window: 136 compressed rows = two row blocks, the second 8 rows."""
    w = samoyeds_weight(272, 192, 2, 4, 64, dtype, seed=3)
    x = int_x(11, 192, dtype, seed=4)
    idx = IDX_70[:9]
    y = ops.ssmm(w, x, idx, backend="reference")
    emu, launches = emulate(monkeypatch, lambda: ops.ssmm(w, x, idx, split_k=1, backend="cupy", kernel=kernel),
                            bf16=dtype == torch.bfloat16)
    assert launches[0].grid == (2, 1, 1)
    assert_written_once(emu, 9, 272)
    assert torch.equal(out_tensor(emu, y), y)
    up = int_x(9, 272, dtype, seed=5)
    want = ops.ssmm(w, x, idx, epilogue="silu_mul", up=up, backend="reference")
    emu, _ = emulate(monkeypatch, lambda: ops.ssmm(w, x, idx, epilogue="silu_mul", up=up, split_k=3, backend="cupy",
                                                   kernel=kernel), bf16=dtype == torch.bfloat16)
    assert_written_once(emu, 9, 272)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out_tensor(emu, want).float(), want.float(), **tol)


@pytest.mark.parametrize("kernel", KERNELS)
def test_plain_24_ragged_k_and_strided_x(monkeypatch, kernel):
    """2:4 NMWeight through the same kernel (row_index NULL): 19 x 100 (kc = 50: scalar A loads, K tail
    zero-filled in the last k-step) with x a column slice of a wider, misaligned buffer (scalar B loads)."""
    g = torch.Generator().manual_seed(7)
    from ..formats.helpers import random_24_rows

    w = compress_nm(int_dense(random_24_rows(19, 100, g), 7).half())
    wide = int_x(12, 123, torch.float16, seed=8)
    x = wide[1:, 3:103]  # storage offset 126 halves, ldx 123: neither 16-byte aligned
    assert x.stride(0) == 123 and x.data_ptr() % 16
    idx = torch.tensor([0, SENTINEL, 10, 4, 4], dtype=torch.int32)
    want = ops.ssmm(w, x, idx, backend="reference")
    emu, launches = emulate(monkeypatch, lambda: ops.ssmm(w, x, idx, split_k=2, backend="cupy", kernel=kernel), bf16=False)
    assert launches[0].args[4] == np.int32(123)
    assert_written_once(emu, 5, 19)
    assert torch.equal(out_tensor(emu, want), want)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("split_k", [1, 2])
def test_grouped_scatter_add_every_row_gets_its_scaled_sum(monkeypatch, padded, split_k, kernel):
    """3 experts (one empty), 1:2 V=32, grouped gather → scatter-add into fp32 out with power-of-2 weights."""
    topk = torch.tensor([[0, 2], [2, 0], [0, 2], [2, 0], [0, 2]])
    sel = TokenSelection.from_topk(topk, 3, pad_to=8)
    ws = [samoyeds_weight(48, 64, 1, 2, 32, torch.float16, seed=10 + e) for e in range(3)]
    x = int_x(5, 64, torch.float16, seed=11)
    rw = torch.tensor([0.5, 0.25, 1.0, 2.0, 0.125]).repeat_interleave(2).view(5, 2)
    out0 = torch.randint(-2, 3, (5, 48)).float()
    want = ops.ssmm_grouped(ws, x, sel, padded=padded, epilogue="scatter_add", out=out0.clone(), routing_weights=rw,
                            backend="reference")
    emu, launches = emulate(monkeypatch, lambda: ops.ssmm_grouped(
        ws, x, sel, padded=padded, epilogue="scatter_add", out=out0.clone(), routing_weights=rw, split_k=split_k,
        backend="cupy", kernel=kernel), bf16=False, out_init=out0.clone())
    assert launches[0].grid[1] == 2  # experts 0 and 2; the empty expert 1 has no tile
    assert torch.equal(out_tensor(emu, want), want)
    ids = (sel.padded_token_ids if padded else sel.token_ids).tolist()
    for tok in range(5):
        for r in range(48):
            assert sorted(emu.adds[(tok, r)]) == [p for p, t in enumerate(ids) if t == tok]
    assert set(emu.adds) == {(t, r) for t in range(5) for r in range(48)}


@pytest.mark.parametrize("kernel", KERNELS)
def test_grouped_gather_false_bf16_out_atomics(monkeypatch, kernel):
    """gather=False (x = per-position rows, e.g. SwiGLU activations) and a bf16 scatter target (CAS path)."""
    topk = torch.tensor([[1, 0], [1, 2], [0, 1]])
    sel = TokenSelection.from_topk(topk, 3, pad_to=tiles.TOKEN_PAD)
    ws = [samoyeds_weight(32, 64, 1, 2, 32, torch.bfloat16, seed=20 + e) for e in range(3)]
    h = int_x(int(sel.padded_offsets[-1]), 64, torch.bfloat16, seed=21)
    out0 = torch.zeros(3, 32, dtype=torch.bfloat16)
    want = ops.ssmm_grouped(ws, h, sel, gather=False, epilogue="scatter_add", out=out0.clone(), backend="reference")
    emu, launches = emulate(monkeypatch, lambda: ops.ssmm_grouped(
        ws, h, sel, gather=False, epilogue="scatter_add", out=out0.clone(), split_k=1, backend="cupy", kernel=kernel),
        bf16=True, out_init=out0.clone())
    assert launches[0].args[6] is None  # token_idx NULL: position p reads x row p
    assert launches[0].grid[1] == 3
    got = out_tensor(emu, want)
    y = ops.ssmm_grouped(ws, h, sel, gather=False, backend="reference").float()
    for t in range(3):
        ps = [p for p, v in enumerate(sel.padded_token_ids.tolist()) if v == t]
        assert sorted(emu.adds[(t, 0)]) == ps
        torch.testing.assert_close(got[t].float(), y[ps].sum(0), rtol=2e-2, atol=0.5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_grouped_plain_padding_rows_are_zero(monkeypatch, kernel):
    """Padded positions (SENTINEL ids) are computed as zero rows and still written exactly once."""
    topk = torch.tensor([[0], [1], [1], [0], [1]])
    sel = TokenSelection.from_topk(topk, 2, pad_to=tiles.TOKEN_PAD)
    ws = [samoyeds_weight(24, 64, 1, 2, 32, torch.float16, seed=30 + e) for e in range(2)]
    x = int_x(5, 64, torch.float16, seed=31)
    want = ops.ssmm_grouped(ws, x, sel, backend="reference")
    emu, _ = emulate(monkeypatch, lambda: ops.ssmm_grouped(ws, x, sel, split_k=2, backend="cupy", kernel=kernel),
                     bf16=False)
    positions = int(sel.padded_offsets[-1])
    assert_written_once(emu, positions, 24)
    got = out_tensor(emu, want)
    assert torch.equal(got, want)
    pad = sel.padded_token_ids == SENTINEL
    assert bool((got[pad] == 0).all()) and int(pad.sum()) == positions - 5


def test_emulator_catches_a_wrong_dense_row_formula(monkeypatch):
    """The replay is sensitive: with the group base off by one row the result no longer matches."""
    w = samoyeds_weight(40, 96, 1, 2, 32, torch.float16)
    x = int_x(11, 96, torch.float16)
    idx = IDX_70[:5]
    want = ops.ssmm(w, x, idx, backend="reference")
    orig = SsmmEmulator._block

    def shifted(self, P, launch, bx, by, bz):  # row_index read for the *next* compressed row
        ri = self.mem["row_index"]
        saved = ri.a.copy()
        ri.a = np.roll(saved, -1)
        try:
            return orig(self, P, launch, bx, by, bz)
        finally:
            ri.a = saved

    monkeypatch.setattr(SsmmEmulator, "_block", shifted)
    emu, _ = emulate(monkeypatch, lambda: ops.ssmm(w, x, idx, split_k=1, backend="cupy"), bf16=False)
    assert not torch.equal(out_tensor(emu, want), want)


@pytest.mark.parametrize("kernel", KERNELS)
def test_emulator_catches_a_wrong_b_swizzle(monkeypatch, kernel):
    """Both paths read B through the swizzle: with the XOR term dropped from b_off the replay must fail
    (the wgmma path's descriptor then disagrees with how the stage was written)."""
    w = samoyeds_weight(40, 96, 1, 2, 32, torch.float16)
    x = int_x(11, 96, torch.float16)
    idx = IDX_70[:16]
    want = ops.ssmm(w, x, idx, backend="reference")
    monkeypatch.setattr(sys.modules[__name__], "b_off", lambda tok, chunk: tok * 64 + (chunk << 4))
    emu, _ = emulate(monkeypatch, lambda: ops.ssmm(w, x, idx, split_k=1, backend="cupy", kernel=kernel), bf16=False)
    got = out_tensor(emu, want)
    if kernel == "mma_sp":  # stores and ldmatrix loads agree with each other: no swizzle, same result
        assert torch.equal(got, want)
    else:  # the tensor cores apply the 64-byte swizzle from the descriptor regardless
        assert not torch.equal(got, want)


def test_wgmma_launch_shape_and_shared_memory(monkeypatch):
    """The wgmma launch has the mma.sp grid and SMEM_ALIGN more bytes of shared memory."""
    from samoyeds_lab.kernels.launch import SMEM_ALIGN as PY_ALIGN, smem_bytes

    assert PY_ALIGN == SMEM_ALIGN
    w = samoyeds_weight(40, 96, 1, 2, 32, torch.float16)
    x = int_x(11, 96, torch.float16)
    grids = {}
    for kernel in KERNELS:
        rec = install_recorder(monkeypatch)
        monkeypatch.setattr(ops, "_arch", lambda: "90a")
        ops.ssmm(w, x, IDX_70, split_k=2, backend="cupy", kernel=kernel)
        grids[kernel] = [(launch.fn, launch.grid, launch.smem) for launch in rec.launches]
    (f1, g1, s1), (f2, g2, s2) = grids["mma_sp"][0], grids["wgmma_sp"][0]
    assert g1 == g2 and s2 == s1 + SMEM_ALIGN == smem_bytes("ssmm", 1, 2, wgmma=True)
    assert grids["wgmma_sp"][1][0] == "ssmm_wg_f16_finalize"


def test_wgmma_needs_hopper(monkeypatch):
    install_recorder(monkeypatch)
    monkeypatch.setattr(ops, "_arch", lambda: "80")
    w = samoyeds_weight(40, 96, 1, 2, 32, torch.float16)
    x = int_x(11, 96, torch.float16)
    with pytest.raises(ValueError, match="kernel: 'wgmma_sp' needs a Hopper GPU"):
        ops.ssmm(w, x, IDX_70, backend="cupy", kernel="wgmma_sp")
    with pytest.raises(ValueError, match="kernel: expected one of"):
        ops.ssmm(w, x, IDX_70, backend="cupy", kernel="wgmma")
