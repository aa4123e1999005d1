r"""Per-expert and per-layer cost model for MoE offloading: move weights to the GPU, or compute near data.

Notation for one expert :math:`e` with :math:`n_e` routed tokens and :math:`P_e` parameters, stored with
:math:`b` bytes/parameter, activations of width :math:`d` with :math:`b_{act}` bytes/element:

.. math::

    T_{gpu}(n)  &= \underbrace{[\lnot\,resident]\,\frac{P b}{B_{link}}}_{transfer}
                 + \underbrace{\max\Big(\frac{2 n P}{F_{gpu}\,\eta},\ \frac{P b}{B_{hbm}}\Big)}_{compute}\\
    T_{near}(n) &= \underbrace{\frac{2 n d\, b_{act}}{B_{link}}}_{transfer}
                 + \underbrace{\max\Big(\frac{W_{near}}{B_{int}},\ \frac{2 n P}{F_{ndp}\,\eta}\Big)}_{compute}

(the GPU compute term is a roofline: weights are read from HBM at least once.) :math:`W_{near}` is the
bytes the near-data compute reads per expert: :math:`P b` for dense weights, or the compressed operand's
bytes (``near_bytes``; e.g. a Samoyeds 1:2 V=128 operand is ≈28 % of the bf16 bytes) when the near side
runs a sparse kernel straight from the compressed format; ``near_sparse=True`` then takes the near
profile's ``fp16_sparse_tflops`` (the sparse kernel's dense-equivalent FLOP/s) as :math:`F_{ndp}`. With ``overlap=True``
transfer and compute are pipelined and a path costs :math:`\max(transfer, compute)` instead of the sum.
An expert with :math:`n = 0` tokens costs nothing on either path. A layer whose GPU and near-data work
run concurrently (MoNDE's load balancing) costs :math:`\max(\sum_{e\in G} T_{gpu}, \sum_{e\notin G}
T_{near})`; run one after the other it costs the sum.

Units: seconds, bytes, FLOP. Profiles come from :mod:`samoyeds_lab.offload.hardware` (a name, a path
or a :class:`HardwareProfile`); the ``near`` device may be a ``near_data`` (CXL-NDP) or ``host``
(CPU computes, as in Fiddler) profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from samoyeds_lab._checks import check_alloc, check_bool, check_choice, check_instance, check_int, check_positive_int
from samoyeds_lab.offload.hardware import HardwareProfile, load_profile

__all__ = [
    "PathCost",
    "LayerCost",
    "gpu_path_cost",
    "near_data_path_cost",
    "layer_cost",
    "hot_set_placement",
    "crossover_tokens",
    "CROSSOVER_METHODS",
]

#: How :func:`crossover_tokens` finds :math:`n^*`.
CROSSOVER_METHODS = ("closed_form", "brute_force")


@dataclass(frozen=True)
class PathCost:
    """Time of one path for one expert (floats, or arrays shaped like the token counts), seconds.

    Attributes
    ----------
    transfer : float or numpy.ndarray
        Link time: weights to the GPU (GPU path) or activations there and back (near-data path).
    compute : float or numpy.ndarray
        Roofline compute time on the device that runs the expert.
    total : float or numpy.ndarray
        ``transfer + compute``, or ``max(transfer, compute)`` when overlapped.
    """

    transfer: float | np.ndarray
    compute: float | np.ndarray
    total: float | np.ndarray


@dataclass(frozen=True)
class LayerCost:
    """Cost of one MoE layer for a batch, with the per-expert breakdown (arrays of length E).

    Attributes
    ----------
    tokens_per_expert : numpy.ndarray
        The counts :math:`n_e` the cost was computed for.
    on_gpu : numpy.ndarray of bool
        Placement: expert computed on the GPU (True) or near data (False).
    gpu, near : PathCost
        Per-expert costs of the chosen path (zero for experts placed on the other side).
    gpu_time, near_time : float
        :math:`\\sum_{e\\in G} T_{gpu}(n_e)` and :math:`\\sum_{e\\notin G} T_{near}(n_e)`, seconds.
    total : float
        Layer latency: ``max(gpu_time, near_time)`` if concurrent else their sum, seconds.
    tokens : float
        Tokens in the batch, ``sum(n_e) / top_k``.
    throughput : float
        ``tokens / total``, tokens per second (``inf`` for an empty layer).
    gpu_weight_bytes : float
        GPU memory the layer's expert weights need: (resident or placed on GPU) experts × ``P·b``.
    """

    tokens_per_expert: np.ndarray
    on_gpu: np.ndarray
    gpu: PathCost
    near: PathCost
    gpu_time: float
    near_time: float
    total: float
    tokens: float
    throughput: float
    gpu_weight_bytes: float

    @property
    def latency(self) -> float:
        """Alias of :attr:`total`: every token of the batch waits for the whole layer, seconds."""
        return self.total


# ----------------------------------------------------------------------------------------- checks
#: The profile kinds each role of the cost model accepts (a profile says what it is in ``kind``).
ROLE_KINDS = {
    "gpu": ("gpu",),
    "near": ("near_data", "host"),
    "link_only": ("link",),
}


def _profile(name: str, p: object, role: str | None = None) -> HardwareProfile:
    """``p`` (a profile or a shipped name) as a profile, refused unless its ``kind`` fits ``role``."""
    if isinstance(p, str):
        p = load_profile(p)
    check_instance(name, p, HardwareProfile, "a HardwareProfile or a profile name")
    kinds = ROLE_KINDS.get(role or name)
    if kinds is not None and p.kind not in kinds:
        hint = (" (are the gpu and near profiles swapped?)" if role in ("gpu", "near") or name in ("gpu", "near")
                else "")
        raise ValueError(f"{name}: expected a profile of kind {' or '.join(map(repr, kinds))}, got {p.name!r} of "
                         f"kind {p.kind!r}{hint}")
    return p


def _flag(name: str, v: object) -> bool:
    return check_bool(name, v)


def _positive(name: str, v: object, *, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__} ({v!r})")
    v = float(v)
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise ValueError(f"{name}: expected a finite number {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return v


def _efficiency(v: object) -> float:
    """The fraction of peak FLOP/s reached, validated to lie in (0, 1]."""
    eta = _positive("efficiency", v)
    if eta > 1:
        raise ValueError(f"efficiency: expected a number in (0, 1], got {eta}")
    return eta


def _tokens(name: str, n: object) -> np.ndarray:
    """Token counts as a float64 array (accepts numbers, sequences, NumPy arrays, torch tensors)."""
    if hasattr(n, "detach") and hasattr(n, "cpu"):  # torch.Tensor, without importing torch here
        n = n.detach().cpu().numpy()
    if isinstance(n, bool):
        raise TypeError(f"{name}: expected token counts (number, array or tensor), got bool")
    try:
        a = np.asarray(n, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: expected token counts (number, array or tensor), got {type(n).__name__}"
        ) from None
    if a.size and (not np.all(np.isfinite(a)) or np.any(a < 0)):
        raise ValueError(f"{name}: expected finite counts >= 0, got min {a.min()!r}, max {a.max()!r}")
    return a


def _link_bw(link: object, *profiles: HardwareProfile) -> float:
    """Link bandwidth in bytes/s: ``link`` (GB/s or a link profile), else the slowest of the profiles'
    ``link_bandwidth_gbs`` (or of the link profile each names in ``link``)."""
    if link is None:
        bws = []
        for p in profiles:
            if p.link_bandwidth_gbs is not None:
                bws.append(p.link_bandwidth)
            elif p.link is not None:  # e.g. host DRAM names the PCIe link it sits behind
                bws.append(_profile("link", p.link, "link_only").link_bandwidth)
        if not bws:
            names = ", ".join(repr(p.name) for p in profiles)
            raise ValueError(
                f"link: expected a bandwidth in GB/s or a link profile, since no profile ({names}) "
                f"sets link_bandwidth_gbs or link; got None"
            )
        return min(bws)
    if isinstance(link, (HardwareProfile, str)):
        return _profile("link", link, "link_only").link_bandwidth
    return _positive("link", link) * 1e9


def _resident(v: object, shape: tuple) -> np.ndarray:
    """``resident`` as a bool array broadcastable to the token counts' ``shape``."""
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().numpy()
    a = np.asarray(v)
    if a.dtype != bool:
        raise TypeError(f"resident: expected a bool or a bool mask, got dtype {a.dtype}")
    try:
        np.broadcast_shapes(a.shape, shape)
    except ValueError:
        raise ValueError(f"resident: expected a mask broadcastable to n_tokens' shape {shape}, got {a.shape}") from None
    return a


def _d_model(v: object) -> float:
    if isinstance(v, (float, np.floating)):
        raise TypeError(f"d_model: expected an int (hidden size), got {type(v).__name__} ({v!r})")
    return float(check_positive_int("d_model", v))


def _out(a: np.ndarray) -> float | np.ndarray:
    return float(a) if a.ndim == 0 else a


# ------------------------------------------------------------------------------------ path costs
def gpu_path_cost(
    n_tokens,
    expert_params: float,
    gpu: HardwareProfile | str,
    *,
    link=None,
    bytes_per_param: float = 2.0,
    resident=False,
    sparse: bool = False,
    efficiency: float = 1.0,
    overlap: bool = False,
) -> PathCost:
    r"""Cost of running an expert on the GPU, moving its weights there first unless resident.

    .. math::

        transfer = [\lnot resident]\,\frac{P b}{B_{link}},\qquad
        compute = \max\Big(\frac{2 n P}{F_{gpu}\,\eta}, \frac{P b}{B_{hbm}}\Big)

    Both are 0 where ``n == 0`` (the expert is not run).

    Parameters
    ----------
    n_tokens : int, float, array-like or torch.Tensor
        Tokens routed to the expert (any shape; the result has the same shape).
    expert_params : float
        :math:`P`, parameters of the expert (all its matrices).
    gpu : HardwareProfile or str
        GPU profile (``fp16_tflops``/``fp16_sparse_tflops``, ``memory_bandwidth_gbs``).
    link : float, HardwareProfile, str or None
        :math:`B_{link}` in GB/s, or a link profile; default the GPU's ``link_bandwidth_gbs``.
    bytes_per_param : float
        :math:`b` (2 for fp16; ≈0.58 for Samoyeds' 29 % of fp16 bytes).
    resident : bool or array-like of bool
        Weights already in GPU memory (no transfer); broadcast against ``n_tokens``.
    sparse : bool
        Use the 2:4-sparse tensor peak (dense-equivalent FLOP) instead of the dense one.
    efficiency : float
        :math:`\eta \in (0, 1]`, fraction of the peak FLOP/s reached.
    overlap : bool
        Pipeline the weight transfer with compute: ``total = max(transfer, compute)``.
    """
    gpu = _profile("gpu", gpu)
    n = _tokens("n_tokens", n_tokens)
    P = _positive("expert_params", expert_params)
    b = _positive("bytes_per_param", bytes_per_param)
    eta = _efficiency(efficiency)
    sparse, overlap = _flag("sparse", sparse), _flag("overlap", overlap)
    bw = _link_bw(link, gpu)
    flops = (gpu.sparse_flops if sparse else gpu.flops) * eta
    res = _resident(resident, n.shape)
    active = n > 0
    transfer = np.where(active & ~res, P * b / bw, 0.0)
    compute = np.where(active, np.maximum(2.0 * n * P / flops, P * b / gpu.memory_bandwidth), 0.0)
    total = np.maximum(transfer, compute) if overlap else transfer + compute
    return PathCost(_out(transfer), _out(compute), _out(total))


def near_data_path_cost(
    n_tokens,
    expert_params: float,
    near: HardwareProfile | str,
    *,
    d_model: int,
    link=None,
    bytes_per_param: float = 2.0,
    bytes_per_act: float = 2.0,
    efficiency: float = 1.0,
    overlap: bool = False,
    weight_bytes: float | None = None,
    sparse: bool = False,
) -> PathCost:
    r"""Cost of computing an expert where its weights live (CXL near-data units or the host CPU).

    .. math::

        transfer = \frac{2 n d\, b_{act}}{B_{link}},\qquad
        compute = \max\Big(\frac{W}{B_{int}}, \frac{2 n P}{F_{ndp}\,\eta}\Big),\qquad W = P b
        \ \text{(dense) or the compressed operand's bytes}

    (activations cross the link there and back; the weights are streamed once from the device's
    internal memory). Both are 0 where ``n == 0``.

    Parameters
    ----------
    n_tokens, expert_params, bytes_per_param, efficiency, overlap
        As in :func:`gpu_path_cost`.
    near : HardwareProfile or str
        ``near_data`` or ``host`` profile (``fp16_tflops``, ``memory_bandwidth_gbs``).
    d_model : int
        :math:`d`, hidden size (width of the activations crossing the link).
    link : float, HardwareProfile, str or None
        :math:`B_{link}` in GB/s or a link profile; default the profile's ``link_bandwidth_gbs``, or
        the bandwidth of the link profile it names in ``link``.
    bytes_per_act : float
        :math:`b_{act}` (2 for fp16 activations).
    weight_bytes : float, optional
        :math:`W`, bytes the near-data compute reads per expert call (all its matrices). Default
        :math:`P b` (dense weights); for a sparse kernel working from the compressed operand pass those
        bytes (e.g. the sum of :func:`samoyeds_lab.kernels.cpu.cpu_operand` ``(op).nbytes`` over the
        expert's three projections).
    sparse : bool
        Use the near profile's ``fp16_sparse_tflops`` (the sparse kernel's measured dense-equivalent
        FLOP/s, :math:`2 n P` counted on the dense shape) instead of ``fp16_tflops``.
    """
    near = _profile("near", near)
    n = _tokens("n_tokens", n_tokens)
    P = _positive("expert_params", expert_params)
    d = _d_model(d_model)
    sparse, overlap = _flag("sparse", sparse), _flag("overlap", overlap)
    b = _positive("bytes_per_param", bytes_per_param)
    ba = _positive("bytes_per_act", bytes_per_act)
    eta = _efficiency(efficiency)
    W = P * b if weight_bytes is None else _positive("weight_bytes", weight_bytes)
    flops = near.sparse_flops if sparse else near.flops
    bw = _link_bw(link, near)
    active = n > 0
    transfer = 2.0 * n * d * ba / bw
    compute = np.where(
        active, np.maximum(W / near.memory_bandwidth, 2.0 * n * P / (flops * eta)), 0.0
    )
    total = np.maximum(transfer, compute) if overlap else transfer + compute
    return PathCost(_out(transfer), _out(compute), _out(total))


# ----------------------------------------------------------------------------------------- layer
def _both(n, P, gpu, near, d_model, link, b, b_act, resident, sparse, efficiency, overlap,
          near_bytes=None, near_sparse=False):
    if near_bytes is not None:
        near_bytes = _positive("near_bytes", near_bytes)
    near_sparse = _flag("near_sparse", near_sparse)
    bw = _link_bw(link, gpu, near)
    g = gpu_path_cost(n, P, gpu, link=bw / 1e9, bytes_per_param=b, resident=resident,
                      sparse=sparse, efficiency=efficiency, overlap=overlap)
    m = near_data_path_cost(n, P, near, d_model=d_model, link=bw / 1e9, bytes_per_param=b,
                            bytes_per_act=b_act, efficiency=efficiency, overlap=overlap,
                            weight_bytes=near_bytes, sparse=near_sparse)
    return g, m


def _mask(name: str, v, E: int, default: bool) -> np.ndarray:
    if v is None:
        return np.full(E, default)
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().numpy()
    a = np.asarray(v)
    if a.dtype != bool:
        raise TypeError(f"{name}: expected a bool mask (or None), got dtype {a.dtype}")
    a = np.broadcast_to(a, (E,)) if a.ndim == 0 else a
    if a.shape != (E,):
        raise ValueError(f"{name}: expected shape ({E},) like tokens_per_expert, got {a.shape}")
    return a


def layer_cost(
    tokens_per_expert,
    expert_params: float,
    gpu: HardwareProfile | str,
    near: HardwareProfile | str,
    *,
    d_model: int,
    on_gpu=None,
    resident=None,
    concurrent: bool = True,
    top_k: int = 1,
    link=None,
    bytes_per_param: float = 2.0,
    bytes_per_act: float = 2.0,
    sparse: bool = False,
    efficiency: float = 1.0,
    overlap: bool = False,
    near_bytes: float | None = None,
    near_sparse: bool = False,
) -> LayerCost:
    r"""Latency, throughput and GPU memory of one MoE layer for a batch.

    .. math::

        T_{layer} = \max\Big(\sum_{e \in G} T_{gpu}(n_e),\ \sum_{e \notin G} T_{near}(n_e)\Big)
        \quad(\text{concurrent; else the sum}),\qquad
        throughput = \frac{\sum_e n_e / k}{T_{layer}}

    Parameters
    ----------
    tokens_per_expert : array-like or torch.Tensor, shape (E,)
        :math:`n_e`, tokens routed to each expert in this batch.
    expert_params : float
        :math:`P`, parameters per expert (all experts the same size).
    gpu, near : HardwareProfile or str
        The GPU and the device holding the offloaded experts (``near_data`` or ``host``).
    d_model : int
        Hidden size.
    on_gpu : array-like of bool, shape (E,), "best" or None
        Placement. ``None``: the resident experts run on the GPU, the rest near data. ``"best"``:
        :func:`hot_set_placement`.
    resident : array-like of bool, shape (E,), or None
        Experts already in GPU memory (default none).
    concurrent : bool
        GPU and near-data work overlap in time (MoNDE) or run one after the other.
    top_k : int
        Experts per token, to turn assignments into tokens for the throughput.
    link, bytes_per_param, bytes_per_act, sparse, efficiency, overlap
        As in :func:`gpu_path_cost` / :func:`near_data_path_cost`; the default link is the slower
        of the two profiles' links.
    near_bytes, near_sparse
        :func:`near_data_path_cost`'s ``weight_bytes`` and ``sparse``: the bytes the near side reads per
        expert (a compressed operand's, default :math:`P b`) and whether it runs at the near profile's
        sparse-kernel FLOP/s. The GPU path is unchanged (it moves and reads :math:`P b`).
    """
    gpu = _profile("gpu", gpu)
    near = _profile("near", near)
    n = _tokens("tokens_per_expert", tokens_per_expert)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"tokens_per_expert: expected a non-empty 1-D array (one count per expert), got shape {n.shape}")
    top_k = check_positive_int("top_k", top_k)
    concurrent = _flag("concurrent", concurrent)
    E = n.shape[0]
    res = _mask("resident", resident, E, False)
    if isinstance(on_gpu, str):
        if on_gpu != "best":
            raise ValueError(f"on_gpu: expected a bool mask, 'best' or None, got {on_gpu!r}")
        place = hot_set_placement(n, expert_params, gpu, near, d_model=d_model, resident=res,
                                  concurrent=concurrent, link=link, bytes_per_param=bytes_per_param,
                                  bytes_per_act=bytes_per_act, sparse=sparse, efficiency=efficiency,
                                  overlap=overlap, near_bytes=near_bytes, near_sparse=near_sparse)
    else:
        place = _mask("on_gpu", on_gpu, E, False) if on_gpu is not None else res.copy()
    g, m = _both(n, expert_params, gpu, near, d_model, link, bytes_per_param, bytes_per_act,
                 res, sparse, efficiency, overlap, near_bytes, near_sparse)
    z = np.zeros(E)

    def pick(pc: PathCost, mask: np.ndarray) -> PathCost:
        return PathCost(*(np.where(mask, np.broadcast_to(x, (E,)), z) for x in
                          (pc.transfer, pc.compute, pc.total)))

    gsel, msel = pick(g, place), pick(m, ~place)
    gpu_time, near_time = float(gsel.total.sum()), float(msel.total.sum())
    total = max(gpu_time, near_time) if concurrent else gpu_time + near_time
    tokens = float(n.sum()) / int(top_k)
    thr = tokens / total if total > 0 else math.inf
    mem = float(np.count_nonzero(place | res)) * float(expert_params) * float(bytes_per_param)
    return LayerCost(n, place, gsel, msel, gpu_time, near_time, total, tokens, thr, mem)


def hot_set_placement(
    tokens_per_expert,
    expert_params: float,
    gpu: HardwareProfile | str,
    near: HardwareProfile | str,
    *,
    d_model: int,
    resident=None,
    concurrent: bool = True,
    max_on_gpu: int | None = None,
    link=None,
    bytes_per_param: float = 2.0,
    bytes_per_act: float = 2.0,
    sparse: bool = False,
    efficiency: float = 1.0,
    overlap: bool = False,
    near_bytes: float | None = None,
    near_sparse: bool = False,
) -> np.ndarray:
    r"""MoNDE-style hot set: the placement minimising the layer time among "the h hottest on the GPU".

    Experts are ordered by :math:`T_{near}(n_e) - T_{gpu}(n_e)` (what moving them saves, which puts
    hot and resident experts first); for every prefix length :math:`h = 0..E` (at most
    ``max_on_gpu`` non-resident ones beyond the resident) the layer time is evaluated and the best
    prefix is returned as a bool mask of shape (E,). Exhaustive over prefixes, :math:`O(E^2)`; a
    heuristic for the max objective (optimal when ``concurrent=False``). Idle, non-resident experts
    are never placed on the GPU. Arguments as in :func:`layer_cost`.
    """
    gpu = _profile("gpu", gpu)
    near = _profile("near", near)
    n = _tokens("tokens_per_expert", tokens_per_expert)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"tokens_per_expert: expected a non-empty 1-D array, got shape {n.shape}")
    concurrent = _flag("concurrent", concurrent)
    if max_on_gpu is not None:
        max_on_gpu = check_int("max_on_gpu", max_on_gpu, lo=0)
    E = n.shape[0]
    res = _mask("resident", resident, E, False)
    g, m = _both(n, expert_params, gpu, near, d_model, link, bytes_per_param, bytes_per_act,
                 res, sparse, efficiency, overlap, near_bytes, near_sparse)
    tg = np.broadcast_to(g.total, (E,))
    tm = np.broadcast_to(m.total, (E,))
    order = np.argsort(-(tm - tg), kind="stable")
    best, best_mask = math.inf, np.zeros(E, dtype=bool)
    for h in range(E + 1):
        mask = np.zeros(E, dtype=bool)
        mask[order[:h]] = True
        if max_on_gpu is not None and np.count_nonzero(mask & ~res) > max_on_gpu:
            break
        a, c = float(tg[mask].sum()), float(tm[~mask].sum())
        t = max(a, c) if concurrent else a + c
        if t < best - 1e-15:
            best, best_mask = t, mask
    # NOTE: an idle expert costs 0 on either side; keep it off the GPU so it takes no memory.
    return best_mask & ((n > 0) | res)


def crossover_tokens(
    gpu: HardwareProfile | str,
    near: HardwareProfile | str,
    expert_params: float,
    *,
    d_model: int,
    link=None,
    bytes_per_param: float = 2.0,
    bytes_per_act: float = 2.0,
    sparse: bool = False,
    efficiency: float = 1.0,
    overlap: bool = False,
    max_tokens: int = 1 << 20,
    near_bytes: float | None = None,
    near_sparse: bool = False,
    method: str = "closed_form",
) -> int | None:
    r"""Smallest token count :math:`n \ge 1` at which moving the weights to the GPU is no slower.

    .. math::

        n^* = \min\{\, n \in \{1, …, n_{max}\} : T_{gpu}(n) \le T_{near}(n) \,\}\quad(\text{non-resident expert})

    ``None`` if near data wins throughout. Below :math:`n^*` compute near data, from :math:`n^*` on the
    expert is "hot". With a compressed near side (``near_bytes`` < :math:`P b`, ``near_sparse``) the
    near path reads fewer bytes, so :math:`n^*` moves (up, where the near side is bandwidth-bound).

    Parameters
    ----------
    gpu, near, expert_params, d_model, link, bytes_per_param, bytes_per_act, sparse, efficiency, overlap
        As in :func:`layer_cost`.
    max_tokens : int
        :math:`n_{max}`, the largest count considered.
    near_bytes, near_sparse
        As in :func:`layer_cost`.
    method : {"closed_form", "brute_force"}
        ``"closed_form"``: both path times are piecewise linear in :math:`n`; between the breakpoints of
        their rooflines (:math:`n = C/k` for every constant term :math:`C` and slope :math:`k` that meet
        in a ``max``) the difference :math:`T_{gpu} - T_{near} = \alpha + \beta n` is linear, so the first
        integer with :math:`\alpha + \beta n \le 0` is :math:`\lceil -\alpha/\beta \rceil`; that integer and
        its neighbours are then evaluated with the path-cost functions so the answer is exactly the brute
        force's. ``"brute_force"``: every integer ``1..max_tokens`` evaluated (the reference).
    """
    gpu = _profile("gpu", gpu)
    near = _profile("near", near)
    nmax = check_positive_int("max_tokens", max_tokens)
    check_choice("method", method, CROSSOVER_METHODS)
    sparse, overlap = _flag("sparse", sparse), _flag("overlap", overlap)
    if method == "brute_force":  # evaluates every count: a few float64 arrays of max_tokens entries
        check_alloc("max_tokens", (8, nmax), 8, what="brute-force sweep")

    def diff(ns) -> np.ndarray:
        """:math:`T_{gpu}(n) - T_{near}(n)` for a non-resident expert (validates every argument)."""
        g, m = _both(np.asarray(ns, dtype=np.float64), expert_params, gpu, near, d_model, link,
                     bytes_per_param, bytes_per_act, False, sparse, efficiency, overlap, near_bytes, near_sparse)
        return np.asarray(g.total, dtype=np.float64) - np.asarray(m.total, dtype=np.float64)

    if method == "brute_force":
        wins = np.nonzero(diff(np.arange(1, nmax + 1)) <= 0)[0]
        return int(wins[0]) + 1 if wins.size else None

    cuts = _breakpoints(gpu, near, expert_params, d_model, link, bytes_per_param, bytes_per_act, sparse,
                        efficiency, near_bytes, near_sparse)
    edges = [1.0] + sorted(c for c in cuts if 1.0 < c < nmax) + [float(nmax)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        a, b = max(1, math.ceil(lo)), min(nmax, math.floor(hi))
        if a > b:
            continue
        f_lo, f_hi = diff([lo, hi if hi > lo else lo + 1.0])
        slope = (f_hi - f_lo) / ((hi - lo) if hi > lo else 1.0)
        if f_lo <= 0:
            guess = a
        elif slope < 0:
            guess = max(a, math.ceil(lo - f_lo / slope))
            if guess > b + 1:
                continue
        else:
            continue
        # NOTE: the linear solve is exact in real arithmetic; evaluating a few integers around it with the
        # path-cost functions themselves makes the rounding agree with the brute force to the last bit.
        ks = np.arange(max(a, guess - 2), min(b, guess + 2) + 1)
        hit = np.nonzero(diff(ks) <= 0)[0] if ks.size else np.array([], dtype=np.int64)
        if hit.size:
            return int(ks[hit[0]])
        rest = np.arange(min(b, guess + 2) + 1, b + 1)  # rounding pushed it past the window (never seen)
        hit = np.nonzero(diff(rest) <= 0)[0] if rest.size else hit
        if hit.size:
            return int(rest[hit[0]])
    return None


def _breakpoints(gpu, near, P, d_model, link, b, b_act, sparse, efficiency, near_bytes, near_sparse) -> list[float]:
    """Token counts where a ``max`` inside either path time switches branch (with or without overlap)."""
    P = _positive("expert_params", P)
    b = _positive("bytes_per_param", b)
    eta = _efficiency(efficiency)
    bw = _link_bw(link, gpu, near)
    kg = 2.0 * P / ((gpu.sparse_flops if sparse else gpu.flops) * eta)  # GPU compute slope
    cg, a = P * b / gpu.memory_bandwidth, P * b / bw  # HBM floor, weight transfer
    W = P * b if near_bytes is None else _positive("near_bytes", near_bytes)
    kn = 2.0 * P / ((near.sparse_flops if near_sparse else near.flops) * eta)  # near compute slope
    km = 2.0 * _d_model(d_model) * _positive("bytes_per_act", b_act) / bw  # activations
    cm = W / near.memory_bandwidth
    cuts = [cg / kg, a / kg, max(a, cg) / kg, cm / kn, cm / km]
    return [c for c in cuts if math.isfinite(c)]
