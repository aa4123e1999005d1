"""A warpgroup-level CPU emulator of Hopper's sparse ``wgmma`` with A in registers and B in shared memory.

Emulates, for one warpgroup (4 warps, 128 threads), ::

    wgmma.mma_async.sp.sync.aligned.m64nNk32.f32.{f16,bf16}.{f16,bf16}
        d, a, b-desc, sp-meta, sp-sel, scale-d=1, imm-scale-a=1, imm-scale-b=1, imm-trans-b=0;

and the piece of the hardware that turns ``b-desc`` (a 64-bit *matrix descriptor*) into shared-memory
byte addresses, so that a kernel's descriptors, swizzles and register fragments can be checked on the CPU.
Everything follows the PTX ISA (9.7.15.5.1.2 "Shared Memory Matrix Layout", 9.7.15.6 "wgmma.mma_async.sp").

Matrix descriptor (:class:`SmemDescriptor`)
-------------------------------------------
=========  ====  ===================================================================================
bits       size  field
=========  ====  ===================================================================================
13-0       14    ``(start_address & 0x3FFFF) >> 4``
29-16      14    ``(leading_byte_offset & 0x3FFFF) >> 4`` (LBO)
45-32      14    ``(stride_byte_offset & 0x3FFFF) >> 4`` (SBO)
51-49      3     base offset (only meaningful with a swizzle; the emulator supports 0 only)
63-62      2     swizzle: 0 none, 1 128-byte, 2 64-byte, 3 32-byte (:data:`SWIZZLES` in that order)
=========  ====  ===================================================================================

All other bits (15-14, 31-30, 48-46, 61-52) are reserved; :meth:`SmemDescriptor.decode` rejects a
descriptor that sets any of them.

K-major operand layouts (:func:`k_major_offsets`)
-------------------------------------------------
B (K x N) is read "column-major", i.e. K-major: row ``n`` of Bᵀ (N x K) keeps its K values together.
With elements normalised to 16-byte chunks (``T = 16 / elem_bytes`` elements per chunk), the canonical
layouts of the PTX ISA, in CuTe notation with strides in elements, are ::

    no swizzle : ((8, m), (T, 2k)) : ((T, SBO), (1, LBO))      core matrix = 8 rows x 16 B, contiguous
    32B/64B/128B (row width W = 32/64/128 bytes, W/16 chunks per row):
                 ((8, m), (T, 2k)) : ((W/elem_bytes, SBO), (1, T))   then Swizzle<B,4,3> on the byte address

so the byte address of element ``(row, kk)`` is, with ``r = row % 8``, ``grp = row // 8``,
``chunk = kk·elem_bytes // 16`` and ``within = kk·elem_bytes % 16``::

    no swizzle : start + grp·SBO + 16·r + chunk·LBO + within
    swizzled   : swizzle(start + grp·SBO + W·r + 16·chunk + within)      (LBO unused)

:func:`swizzle_address` is CuTe's ``Swizzle<B,4,3>`` applied to the *absolute* shared-memory byte address
(bits ``[4, 4+B)`` ^= bits ``[7, 7+B)``, ``B`` = 0/1/2/3 for none/32B/64B/128B); it repeats every 256 /
512 / 1024 bytes, which is why the base-offset field is 0 when the pattern starts at such a boundary. The
swizzle is taken on absolute addresses, so advancing ``start_address`` by a K step inside a swizzle atom
(what CUTLASS does) is modelled exactly.

For a swizzled mode the emulator requires the K extent of the operand (``k · elem_bytes``) to fit in one
swizzle row of ``W`` bytes: the PTX formula continues the chunks at stride ``T`` past the row width,
which would land on the next row's bytes (see the 32B tf32 example in the tests). For the B operand of the
sparse ``m64nNk32`` f16/bf16 instruction (K = 32 halves = 64 bytes) that allows no swizzle, 64B and 128B,
and rejects 32B.

Register operands (:func:`wgmma_sp_m64nNk32`)
---------------------------------------------
Warp ``w`` (= ``%warpid % 4``) of the warpgroup supplies the A rows and metadata for rows
``16w … 16w+15``; inside a warp the compressed A fragment (4 x .b32 = 8 halves) and the metadata register
follow exactly the warp-level ``mma.sp.m16n8k32`` layouts (:mod:`samoyeds_lab.reference.mma_sp`). The fp32
accumulator of lane ``l`` (``g = l >> 2``, ``t = l & 3``) of warp ``w`` holds ``N/2`` floats ::

    d[4j + 2h + q] = D[16w + g + 8h, 8j + 2t + q]      j < N/8, h, q in {0, 1}

i.e. column block ``j``'s m16n8 fragment in registers ``4j … 4j+3``. The product is computed with the
warp-level emulator, per warp and per 8-column block of B: products exact in fp32, sums rounded in fp32
(hardware's adder tree rounds differently, so compare with a tolerance unless every sum is exact).

Metadata nibbles must be strictly ascending (``bits[1:0] < bits[3:2]``), as ``mma.sp::ordered_metadata``
demands; the wgmma.sp text only calls the four equal-position nibbles (0x0, 0x5, 0xA, 0xF) invalid, so the
emulator is deliberately stricter than the ISA (the project's formats only produce ascending nibbles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_alloc, check_int, check_tensor
from ..tiles import MMA_K, MMA_M, MMA_N, WARP_SIZE
from .mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_c, pack_e, sparse_a_to_dense, unpack_d

#: Swizzling modes in the order of their 2-bit encoding in descriptor bits 63-62.
SWIZZLES = ("none", "128B", "64B", "32B")

#: Warps in a warpgroup; rows of A / D per ``wgmma`` (``m64``).
WARPGROUP_WARPS = 4
WGMMA_M = WARPGROUP_WARPS * MMA_M
#: Dense K of the sparse f16/bf16 ``wgmma`` (``k32``).
WGMMA_K = MMA_K
#: Largest N of ``wgmma.mma_async.sp`` (``m64n256k32``).
WGMMA_MAX_N = 256

_HALF_DTYPES = (torch.float16, torch.bfloat16)
_E_DTYPES = (torch.uint32, torch.int64, torch.int32)
_FIELD_LIMIT = 1 << 18  # 14-bit fields hold address bits 17..4
_SWIZZLE_BITS = {"none": 0, "32B": 1, "64B": 2, "128B": 3}  # the B of Swizzle<B,4,3>
_ROW_BYTES = {"32B": 32, "64B": 64, "128B": 128}
_RESERVED_MASK = (
    (0b11 << 14) | (0b11 << 30) | (0b111 << 46) | (((1 << 10) - 1) << 52)
)  # bits 15-14, 31-30, 48-46, 61-52
_ELEM_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}


# --------------------------------------------------------------------------- descriptor
def _check_field(name: str, value: object) -> int:
    """A byte address/offset stored as ``(x & 0x3FFFF) >> 4``: a multiple of 16 in ``[0, 2**18)``."""
    v = check_int(name, value, lo=0)
    if v >= _FIELD_LIMIT:
        raise ValueError(
            f"{name}: expected a byte value < 2**18 = {_FIELD_LIMIT} (14-bit field of 16-byte units), got {v}"
        )
    if v % 16:
        raise ValueError(f"{name}: expected a multiple of 16 bytes (the field stores bits 17..4), got {v}")
    return v


def _check_swizzle(swizzle: object) -> str:
    if swizzle not in SWIZZLES:
        raise ValueError(f"swizzle: expected one of {SWIZZLES}, got {swizzle!r}")
    return swizzle


@dataclass(frozen=True)
class SmemDescriptor:
    """The fields of a ``wgmma`` shared-memory matrix descriptor (PTX "Matrix Descriptor Format").

    Attributes
    ----------
    start_address : int
        Byte address of the matrix in the shared-memory window, a multiple of 16 below ``2**18``.
    leading_byte_offset : int
        LBO in bytes (a multiple of 16). K-major without swizzle: distance between the 16-byte chunks
        (core matrices) along K. Unused by the swizzled K-major layouts (conventionally 16, encoded 1).
    stride_byte_offset : int
        SBO in bytes (a multiple of 16). K-major: distance between consecutive groups of 8 rows.
    base_offset : int
        The 3-bit base-offset field (bits 51-49); 0 when the swizzle pattern starts on its natural
        boundary (1024 / 512 / 256 bytes for 128B / 64B / 32B).
    swizzle : str
        One of :data:`SWIZZLES`.

    Raises
    ------
    ValueError, TypeError
        On construction, naming the field, if it is not an int of the right range and alignment.
    """

    start_address: int
    leading_byte_offset: int
    stride_byte_offset: int
    base_offset: int = 0
    swizzle: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_address", _check_field("start_address", self.start_address))
        object.__setattr__(self, "leading_byte_offset", _check_field("leading_byte_offset", self.leading_byte_offset))
        object.__setattr__(self, "stride_byte_offset", _check_field("stride_byte_offset", self.stride_byte_offset))
        object.__setattr__(self, "base_offset", check_int("base_offset", self.base_offset, lo=0, hi=7))
        _check_swizzle(self.swizzle)

    def encode(self) -> int:
        """The 64-bit descriptor as a Python int in ``[0, 2**64)``.

        Returns
        -------
        int
            ``start>>4 | (LBO>>4) << 16 | (SBO>>4) << 32 | base_offset << 49 | swizzle_code << 62``.
        """
        return (
            (self.start_address >> 4)
            | ((self.leading_byte_offset >> 4) << 16)
            | ((self.stride_byte_offset >> 4) << 32)
            | (self.base_offset << 49)
            | (SWIZZLES.index(self.swizzle) << 62)
        )

    @classmethod
    def decode(cls, desc: int) -> SmemDescriptor:
        """Split a 64-bit descriptor into its fields (inverse of :meth:`encode`).

        Parameters
        ----------
        desc : int
            The descriptor, in ``[0, 2**64)``; a negative value in ``[-2**63, 0)`` is taken as the bit
            pattern of a signed 64-bit register (as an ``int64`` tensor would hold it).

        Raises
        ------
        ValueError
            If ``desc`` is out of range or sets a reserved bit (15-14, 31-30, 48-46, 61-52).
        """
        d = _desc_bits(desc)
        return cls(
            start_address=(d & 0x3FFF) << 4,
            leading_byte_offset=((d >> 16) & 0x3FFF) << 4,
            stride_byte_offset=((d >> 32) & 0x3FFF) << 4,
            base_offset=(d >> 49) & 0x7,
            swizzle=SWIZZLES[(d >> 62) & 0x3],
        )


def _desc_bits(desc: object) -> int:
    """``desc`` (int or SmemDescriptor) as an unsigned 64-bit int with no reserved bits set."""
    if isinstance(desc, SmemDescriptor):
        return desc.encode()
    d = check_int("desc", desc, lo=-(1 << 63), hi=(1 << 64) - 1)
    d &= (1 << 64) - 1
    if d & _RESERVED_MASK:
        raise ValueError(
            f"desc: reserved bits set (0x{d & _RESERVED_MASK:016X}); only bits 13-0, 29-16, 45-32, 51-49 "
            f"and 63-62 carry fields, got 0x{d:016X}"
        )
    return d


def _as_descriptor(desc: object) -> SmemDescriptor:
    return desc if isinstance(desc, SmemDescriptor) else SmemDescriptor.decode(desc)


# --------------------------------------------------------------------------- swizzle and layouts
def swizzle_address(addr, swizzle: str):
    """Apply ``Swizzle<B,4,3>`` to absolute shared-memory byte addresses.

    Parameters
    ----------
    addr : int or numpy.ndarray
        Non-negative byte address(es), integer.
    swizzle : str
        One of :data:`SWIZZLES`; ``B`` = 0, 1, 2, 3 for ``"none"``, ``"32B"``, ``"64B"``, ``"128B"``.

    Returns
    -------
    int or numpy.ndarray
        ``addr ^ (((addr >> 7) & (2**B - 1)) << 4)`` — the 16-byte chunk index (bits 4…) is XORed with
        the 128-byte row index (bits 7…) modulo ``2**B``. Same type as ``addr`` (arrays become int64).
    """
    b = _SWIZZLE_BITS[_check_swizzle(swizzle)]
    mask = (1 << b) - 1
    if isinstance(addr, np.ndarray):
        if not np.issubdtype(addr.dtype, np.integer):
            raise TypeError(f"addr: expected an integer array, got dtype {addr.dtype}")
        a = addr.astype(np.int64)
        if a.size and int(a.min()) < 0:
            raise ValueError(f"addr: expected non-negative byte addresses, got minimum {int(a.min())}")
        return a ^ (((a >> 7) & mask) << 4)
    a = check_int("addr", addr, lo=0)
    return a ^ (((a >> 7) & mask) << 4)


def k_major_offsets(desc: int, rows: int, k: int, elem_bytes: int = 2) -> np.ndarray:
    """Physical shared-memory byte address of every element of a K-major operand.

    Parameters
    ----------
    desc : int or SmemDescriptor
        The 64-bit matrix descriptor (see :meth:`SmemDescriptor.encode`).
    rows : int
        Rows of the K-major view (N for B: row ``n`` of Bᵀ; M for A from shared memory).
    k : int
        Elements along K (32 for the B of the sparse f16/bf16 ``m64nNk32``).
    elem_bytes : int
        Bytes per element: 1, 2 or 4.

    Returns
    -------
    numpy.ndarray
        int64 ``[rows, k]``: byte address of element ``(row, kk)`` (see the module docstring).

    Raises
    ------
    ValueError
        If a swizzled mode's K extent ``k·elem_bytes`` exceeds its row width (32/64/128 bytes), or the
        descriptor's base offset is non-zero (not supported by the emulator).
    """
    d = _as_descriptor(desc)
    rows = check_int("rows", rows, lo=1)
    k = check_int("k", k, lo=1)
    elem_bytes = check_int("elem_bytes", elem_bytes, lo=1)
    if elem_bytes not in _ELEM_UINT:
        raise ValueError(f"elem_bytes: expected 1, 2 or 4, got {elem_bytes}")
    check_alloc("rows", (rows, k), 8, what="address table (rows x k, int64)")
    if d.base_offset != 0:
        raise ValueError(
            f"desc: base_offset={d.base_offset} is not supported by the emulator (only 0: the swizzle "
            f"pattern starting on its natural 256/512/1024-byte boundary)"
        )
    row = np.arange(rows, dtype=np.int64).reshape(rows, 1)
    kb = np.arange(k, dtype=np.int64).reshape(1, k) * elem_bytes  # byte offset along K
    chunk, within = kb // 16, kb % 16
    r, grp = row % 8, row // 8
    if d.swizzle == "none":
        return d.start_address + grp * d.stride_byte_offset + 16 * r + chunk * d.leading_byte_offset + within
    width = _ROW_BYTES[d.swizzle]
    if k * elem_bytes > width:
        raise ValueError(
            f"k: {k} elements x {elem_bytes} bytes = {k * elem_bytes} bytes along K do not fit one {width}-byte "
            f"row of the {d.swizzle} swizzle (one instruction's K must fit one swizzle row)"
        )
    return swizzle_address(d.start_address + grp * d.stride_byte_offset + width * r + 16 * chunk + within, d.swizzle)


def _check_smem(smem: object) -> np.ndarray:
    if not isinstance(smem, np.ndarray):
        raise TypeError(f"smem: expected a numpy.ndarray of uint8, got {type(smem).__name__}")
    if smem.dtype != np.uint8 or smem.ndim != 1:
        raise TypeError(
            f"smem: expected a 1-D uint8 array (the shared window from address 0), got {smem.dtype} {smem.shape}"
        )
    return smem


def _check_in_window(addr: np.ndarray, elem_bytes: int, size: int) -> None:
    hi = int(addr.max()) + elem_bytes
    if hi > size:
        raise ValueError(
            f"desc: the operand reaches byte {hi - 1}, outside smem of {size} bytes "
            f"(addresses {int(addr.min())}..{hi - 1})"
        )


def load_k_major(smem: np.ndarray, desc: int, rows: int, k: int, elem_bytes: int = 2) -> np.ndarray:
    """Read a K-major operand out of a shared-memory image through its descriptor.

    Parameters
    ----------
    smem : numpy.ndarray
        uint8 ``[bytes]``: the whole shared window, starting at address 0.
    desc, rows, k, elem_bytes
        As for :func:`k_major_offsets`.

    Returns
    -------
    numpy.ndarray
        ``[rows, k]`` bit patterns (little-endian): uint16 for ``elem_bytes=2`` (uint8 / uint32 for 1 / 4).

    Raises
    ------
    ValueError
        If an address falls outside ``smem``.
    """
    smem = _check_smem(smem)
    addr = k_major_offsets(desc, rows, k, elem_bytes)
    _check_in_window(addr, elem_bytes, smem.size)
    out = np.zeros(addr.shape, dtype=np.uint64)
    for i in range(elem_bytes):
        out |= smem[addr + i].astype(np.uint64) << np.uint64(8 * i)
    return out.astype(_ELEM_UINT[elem_bytes])


def _bit_patterns(name: str, matrix: object) -> np.ndarray:
    """``matrix`` (unsigned numpy ints or a torch fp16/bf16/fp32 tensor) as an unsigned numpy array."""
    if isinstance(matrix, torch.Tensor):
        ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32}
        size = matrix.element_size()
        if size not in ints:
            raise TypeError(f"{name}: expected 1-, 2- or 4-byte elements, got {matrix.dtype}")
        matrix = matrix.detach().cpu().contiguous().view(ints[size]).numpy().view(_ELEM_UINT[size])
    if not isinstance(matrix, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy array of unsigned ints or a torch tensor, got {type(matrix).__name__}"
        )
    if matrix.dtype not in (np.uint8, np.uint16, np.uint32):
        raise TypeError(f"{name}: expected dtype uint8/uint16/uint32 bit patterns, got {matrix.dtype}")
    if matrix.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [rows, k] matrix, got shape {matrix.shape}")
    return matrix


def store_k_major(smem: np.ndarray, desc: int, matrix_u16) -> None:
    """Write a K-major operand into a shared-memory image (inverse of :func:`load_k_major`).

    Parameters
    ----------
    smem : numpy.ndarray
        uint8 ``[bytes]`` shared window, modified in place.
    desc : int or SmemDescriptor
        The matrix descriptor.
    matrix_u16 : numpy.ndarray or torch.Tensor
        ``[rows, k]`` bit patterns (uint16; uint8 / uint32 give 1- / 4-byte elements), or a torch tensor
        whose raw bits are written (e.g. ``Bᵀ`` in fp16/bf16).

    Raises
    ------
    ValueError
        If an address falls outside ``smem``, or the descriptor maps two elements onto the same bytes
        (e.g. an LBO/SBO too small for the extent).
    """
    smem = _check_smem(smem)
    m = _bit_patterns("matrix_u16", matrix_u16)
    elem_bytes = m.dtype.itemsize
    addr = k_major_offsets(desc, m.shape[0], m.shape[1], elem_bytes)
    _check_in_window(addr, elem_bytes, smem.size)
    flat = addr.reshape(-1)
    if np.unique(flat).size != flat.size:
        raise ValueError("desc: the layout maps two elements of the matrix to the same shared-memory address")
    vals = m.astype(np.uint64)
    for i in range(elem_bytes):
        smem[addr + i] = ((vals >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.uint8)


def load_b(smem: np.ndarray, desc: int, n: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """The dense B (``32 x n``) that ``wgmma ... m64n{n}k32`` reads through ``b-desc`` (``imm-trans-b = 0``).

    Parameters
    ----------
    smem : numpy.ndarray
        uint8 shared window from address 0.
    desc : int or SmemDescriptor
        ``b-desc``.
    n : int
        N of the instruction (rows of Bᵀ).
    dtype : torch.dtype
        torch.float16 or torch.bfloat16.

    Returns
    -------
    torch.Tensor
        ``[32, n]`` in ``dtype``: ``B[kk, col] = bits at k_major_offsets(desc, n, 32)[col, kk]``.
    """
    if dtype not in _HALF_DTYPES:
        raise TypeError(f"dtype: expected torch.float16 or torch.bfloat16, got {dtype}")
    n = _check_n("n", n)
    bits = load_k_major(smem, desc, n, WGMMA_K, 2)
    return torch.from_numpy(bits.view(np.int16).copy()).view(dtype).T.contiguous()


# --------------------------------------------------------------------------- warpgroup fragments
def _check_n(name: str, n: object) -> int:
    n = check_int(name, n, lo=1)
    if n % MMA_N or n > WGMMA_MAX_N:
        raise ValueError(f"{name}: expected N a multiple of 8 in 8..256 (m64nNk32), got {n}")
    return n


def _check_selector(selector: object) -> int:
    s = check_int("selector", selector)
    if s not in (0, 1):
        raise ValueError(
            f"selector: the sparsity selector of wgmma.sp m64nNk32 f16/bf16 must be 0 (threads T0, T1) or "
            f"1 (threads T2, T3), got {s}"
        )
    return s


def _check_a(a: object) -> torch.Tensor:
    check_tensor("a", a, dtypes=_HALF_DTYPES)
    if tuple(a.shape) != (WARPGROUP_WARPS, WARP_SIZE, 4, 2):
        raise ValueError(f"a: expected [4 warps, 32 lanes, 4 regs, 2 halves], got {tuple(a.shape)}")
    return a


def _check_e(e: object) -> torch.Tensor:
    check_tensor("e", e, dtypes=_E_DTYPES)
    if tuple(e.shape) != (WARPGROUP_WARPS, WARP_SIZE):
        raise ValueError(f"e: expected one metadata register per thread, [4 warps, 32 lanes], got {tuple(e.shape)}")
    return e


def wgmma_sp_dense_a(a: torch.Tensor, e: torch.Tensor, selector: int = 0) -> torch.Tensor:
    """The dense ``64 x 32`` A that the warpgroup's registers describe.

    Parameters
    ----------
    a : torch.Tensor
        fp16/bf16 ``[4, 32, 4, 2]`` compressed A fragments (warp, lane, register, half).
    e : torch.Tensor
        ``[4, 32]`` metadata registers (uint32, or int64 / int32 bit patterns).
    selector : int
        Sparsity selector, 0 or 1.

    Returns
    -------
    torch.Tensor
        ``[64, 32]`` in ``a.dtype``; rows ``16w … 16w+15`` come from warp ``w``.

    Raises
    ------
    ValueError
        Bad shapes or selector (naming the argument) or an illegal metadata nibble (naming warp and A row).
    """
    _check_a(a)
    _check_e(e)
    selector = _check_selector(selector)
    parts = []
    for w in range(WARPGROUP_WARPS):
        try:
            parts.append(sparse_a_to_dense(a[w], e[w], selector))
        except ValueError as err:
            raise ValueError(f"e: warp {w} (A rows {16 * w}..{16 * w + 15}): {err}") from None
    return torch.cat(parts, dim=0)


def pack_wg_a(values: torch.Tensor) -> torch.Tensor:
    """Per-thread A registers ``[4, 32, 4, 2]`` from the stored values ``[64, 16]`` of a 64 x 32 2:4 tile."""
    check_tensor("values", values, dtypes=_HALF_DTYPES)
    if tuple(values.shape) != (WGMMA_M, WGMMA_K // 2):
        raise ValueError(f"values: expected [64, 16] stored values, got {tuple(values.shape)}")
    return pack_a(values.reshape(WARPGROUP_WARPS, MMA_M, WGMMA_K // 2))


def pack_wg_e(logical: torch.Tensor, selector: int = 0) -> torch.Tensor:
    """Per-thread metadata registers ``[4, 32]`` from logical 2:4 metadata ``[64, 1]`` (one word per row).

    ``logical`` is what ``NMWeight.sptc_metadata()`` returns for a ``64 x 32`` tile; warp ``w`` gets rows
    ``16w … 16w+15`` in the ``mma.sp.m16n8k32`` register order, in the lanes ``selector`` names.
    """
    from ..formats.sptc import mma_metadata

    selector = _check_selector(selector)
    check_tensor("logical", logical, dtypes=_E_DTYPES)
    if tuple(logical.shape) != (WGMMA_M, 1):
        raise ValueError(f"logical: expected [64, 1] metadata words, got {tuple(logical.shape)}")
    words = mma_metadata(logical)[:, 0, :]  # [4 warps, 16]
    return pack_e(words, selector)


def pack_wg_c(c_matrix: torch.Tensor) -> torch.Tensor:
    """Per-thread fp32 accumulators ``[4, 32, N/2]`` from a ``[64, N]`` matrix (layout in the module docstring)."""
    check_tensor("c_matrix", c_matrix)
    if c_matrix.ndim != 2 or c_matrix.shape[0] != WGMMA_M:
        raise ValueError(f"c_matrix: expected [64, N], got {tuple(c_matrix.shape)}")
    n = _check_n("c_matrix.shape[1]", c_matrix.shape[1])
    blocks = c_matrix.reshape(WARPGROUP_WARPS, MMA_M, n // MMA_N, MMA_N).permute(0, 2, 1, 3)  # [w, j, 16, 8]
    c = pack_c(blocks)  # [w, j, 32, 4]
    return c.permute(0, 2, 1, 3).reshape(WARPGROUP_WARPS, WARP_SIZE, n // 2).contiguous()


def unpack_wg_d(d: torch.Tensor) -> torch.Tensor:
    """The ``[64, N]`` matrix held by per-thread accumulators ``d [4, 32, N/2]`` (inverse of :func:`pack_wg_c`)."""
    check_tensor("d", d)
    if d.ndim != 3 or tuple(d.shape[:2]) != (WARPGROUP_WARPS, WARP_SIZE):
        raise ValueError(f"d: expected [4, 32, N/2], got {tuple(d.shape)}")
    n = _check_n("N (= 2 * d.shape[2])", 2 * d.shape[2])
    blocks = d.reshape(WARPGROUP_WARPS, WARP_SIZE, n // MMA_N, 4).permute(0, 2, 1, 3)  # [w, j, 32, 4]
    m = unpack_d(blocks)  # [w, j, 16, 8]
    return m.permute(0, 2, 1, 3).reshape(WGMMA_M, n).contiguous()


# --------------------------------------------------------------------------- the instruction
def wgmma_sp_m64nNk32(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, e: torch.Tensor, selector: int = 0
) -> torch.Tensor:
    """``wgmma.mma_async.sp.sync.aligned.m64nNk32.f32.{f16,bf16}.{f16,bf16}`` with A from registers.

    Computes ``D = A · B + C`` (64 x N, fp32) where ``A`` (64 x 32) is rebuilt from the 2:4 values in
    ``a`` and the metadata in ``e``; warp ``w`` of the warpgroup owns rows ``16w … 16w+15``.

    Parameters
    ----------
    a : torch.Tensor
        fp16/bf16 ``[4, 32, 4, 2]`` compressed A fragments (warp, lane, register, half), each warp laid
        out as ``mma.sp.m16n8k32``'s A (see :func:`samoyeds_lab.reference.mma_sp.pack_a`).
    b : torch.Tensor
        Same dtype as ``a``, ``[32, N]`` dense B (K x N); N a multiple of 8 in 8..256. Use :func:`load_b`
        to read it from a shared-memory image through ``b-desc``.
    c : torch.Tensor
        fp32 ``[4, 32, N/2]`` accumulators: ``c[w, l, 4j + 2h + q] = C[16w + g + 8h, 8j + 2t + q]``.
    e : torch.Tensor
        ``[4, 32]`` metadata registers (uint32 / int64 / int32); only the lanes ``selector`` names are read.
    selector : int
        Sparsity selector: 0 (threads T0, T1 of each quad) or 1 (T2, T3).

    Returns
    -------
    torch.Tensor
        fp32 ``[4, 32, N/2]`` accumulators ``d`` in the same layout as ``c``.

    Raises
    ------
    TypeError, ValueError
        Naming the argument, for wrong types, dtypes, shapes, selector or illegal metadata nibbles.
    """
    _check_a(a)
    check_tensor("b", b, dtypes=_HALF_DTYPES)
    if b.dtype != a.dtype:
        raise TypeError(
            f"b: wgmma.sp takes A and B of the same type (.f16.f16 or .bf16.bf16), got a {a.dtype} and b {b.dtype}"
        )
    if b.ndim != 2 or b.shape[0] != WGMMA_K:
        raise ValueError(f"b: expected a dense [32, N] B (K x N), got {tuple(b.shape)}")
    n = _check_n("b", b.shape[1])
    check_tensor("c", c, dtypes=(torch.float32,))
    if tuple(c.shape) != (WARPGROUP_WARPS, WARP_SIZE, n // 2):
        raise ValueError(
            f"c: expected fp32 [4, 32, {n // 2}] (N/2 accumulators per thread for N={n}), got {tuple(c.shape)}"
        )
    _check_e(e)
    selector = _check_selector(selector)
    wgmma_sp_dense_a(a, e, selector)  # validates the metadata with warp-level error messages

    nb = n // MMA_N
    b_blocks = pack_b(b.reshape(WGMMA_K, nb, MMA_N).permute(1, 0, 2))  # [j, 32, 4, 2]
    a_w = a.unsqueeze(1).expand(WARPGROUP_WARPS, nb, WARP_SIZE, 4, 2)
    b_w = b_blocks.unsqueeze(0).expand(WARPGROUP_WARPS, nb, WARP_SIZE, 4, 2)
    c_w = c.reshape(WARPGROUP_WARPS, WARP_SIZE, nb, 4).permute(0, 2, 1, 3)  # [w, j, 32, 4]
    e_w = e.unsqueeze(1).expand(WARPGROUP_WARPS, nb, WARP_SIZE)
    d = mma_sp_m16n8k32(a_w, b_w, c_w, e_w, selector)  # [w, j, 32, 4]
    return d.permute(0, 2, 1, 3).reshape(WARPGROUP_WARPS, WARP_SIZE, n // 2).contiguous()


__all__ = [
    "SWIZZLES", "SmemDescriptor", "swizzle_address", "k_major_offsets", "load_k_major", "store_k_major",
    "load_b", "wgmma_sp_m64nNk32", "wgmma_sp_dense_a", "pack_wg_a", "pack_wg_e", "pack_wg_c", "unpack_wg_d",
    "WGMMA_M", "WGMMA_K", "WGMMA_MAX_N", "WARPGROUP_WARPS",
]
