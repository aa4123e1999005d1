r"""Offloaded-MoE inference replayed from a routing trace: expert caches per layer or global, SiDA and
next-layer prefetching, and a latency model on top of the hardware profiles.

Pipeline::

    acc   = expert_accesses(topk_ids, E, batch_tokens=B)     # what each (batch, layer) needs
    st    = simulate_offload(topk_ids, E, policy="lru", capacity=16, scope="global")
    st    = simulate_offload(topk_ids, E, policy="sida", capacity=16, predicted=noisy_predictions(...))
    lat   = offload_latency(st, profile_gpu="h100_sxm", expert_flops=..., expert_bytes=...)

Accesses
--------
``topk_ids`` is ``int [layers, tokens, k]`` (as in :class:`~samoyeds_lab.routing.RoutingTrace`). With
``batch_tokens = B`` the tokens are cut, in trace order, into batches of ``B`` consecutive tokens (the last
one may be shorter). A batch runs through the layers as a decoder does, so the access order is
batch 0 layer 0, batch 0 layer 1, …, batch 0 layer L-1, batch 1 layer 0, … . The *step* ``s = b·L + l``
of batch ``b`` at layer ``l`` needs the union of its tokens' experts, each once, in order of first
appearance (token order, then choice order); ``B = 1`` reproduces
:func:`~samoyeds_lab.offload.cache.flatten_layer_expert`.

Scopes
------
``"global"``: one cache over all (layer, expert) pairs, id ``l·E + e``. ``"per_layer"``: one independent
cache per layer (as mixtral-offloading keeps), each seeing its own layer's accesses in the same order; an
integer capacity is the total over layers, split as evenly as possible (layer ``l`` gets
``⌊C/L⌋ + [l < C mod L]``), or give one capacity per layer.

Prefetching
-----------
``predicted`` is ``int [layers, tokens, p]`` (``-1`` = no prediction). For the batch ``b`` and layer
``l`` the prefetch group is the union of the batch's predicted experts at layer ``l``, ordered by the
number of the batch's tokens that predict them (descending), then expert id, applied just before the
step's first access (after layer ``l-1`` of the batch has run). ``"sida"``: the predictions come from
SiDA's offline predictor run ahead of inference, so every layer, including layer 0, is prefetched.
``"next_layer"``: the prediction for layer ``l`` is made during layer ``l-1`` (gate ``l`` applied to the
hidden state of layer ``l-1``), so layer 0 has none: ``predicted[0]`` is ignored. The cache rules (LRU,
a group never evicts its own members, what counts as a prefetch hit) are those of
:func:`~samoyeds_lab.offload.cache.simulate_cache`.

Latency model (:func:`offload_latency`)
---------------------------------------
With :math:`n_{s,e}` tokens of step :math:`s` routed to expert :math:`e`, FLOP per token
:math:`f_e`, expert bytes :math:`S_e`, GPU peak :math:`F` (times efficiency :math:`\eta`), HBM bandwidth
:math:`B_{hbm}` and link bandwidth :math:`B_{link}`:

.. math::

    C_s = \sum_{e \in need(s)} \max\Big(\frac{n_{s,e} f_e}{F\eta}, \frac{S_e}{B_{hbm}}\Big),\quad
    D_s = \frac{\sum_{e\ \mathrm{missed\ at}\ s} S_e}{B_{link}},\quad
    P_s = \frac{\sum_{e\ \mathrm{prefetched\ for}\ s} S_e}{B_{link}}

    T_s = D_s + \max(0,\ P_s - C_{s-1}) + C_s,\qquad C_{-1} = 0,\qquad T = \sum_s T_s

Demand loads stall the step (:math:`D_s`); the prefetch for step :math:`s` streams over the link while
step :math:`s-1` computes, so only its excess over :math:`C_{s-1}` is exposed. The all-resident baseline
is :math:`\sum_s C_s`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samoyeds_lab.offload.cache import (
    ALL_POLICIES,
    PREFETCH_POLICIES,
    CacheStats,
    _as_int_array,
    _check_count,
    _check_distinct,
    _jit,
    simulate_cache,
)
from samoyeds_lab._checks import check_alloc

__all__ = [
    "ExpertAccesses",
    "OffloadStats",
    "OffloadLatency",
    "SCOPES",
    "expert_accesses",
    "simulate_offload",
    "offload_latency",
    "oracle_predictions",
    "noisy_predictions",
]

SCOPES = ("global", "per_layer")


# ----------------------------------------------------------------------------------------- checks
def _positive_int(name: str, v: object) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(v).__name__} ({v!r})")
    if v < 1:
        raise ValueError(f"{name}: expected a positive int, got {v}")
    return int(v)


def _topk(topk_ids, num_experts) -> tuple[np.ndarray, int]:
    a = _as_int_array("topk_ids", topk_ids, ndim=3)
    E = _positive_int("num_experts", num_experts)
    if min(a.shape) < 1:
        raise ValueError(f"topk_ids: expected shape [layers, tokens, k] with every size >= 1, got {a.shape}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= E:
        raise ValueError(f"topk_ids: expected expert ids in [0, {E}), got {lo if lo < 0 else hi}")
    _check_distinct("topk_ids", a)
    return a.astype(np.int64, copy=False), E


@_jit
def _segments_kernel(a, E, B, out_step, out_e, out_cnt):
    L, T, k = a.shape
    nb = (T + B - 1) // B
    stamp = np.full(E, -1, np.int64)  # last step that needed expert e
    pos = np.zeros(E, np.int64)  # its output slot in that step
    n = 0
    for b in range(nb):
        t1 = min(T, (b + 1) * B)
        for layer in range(L):
            s = b * L + layer
            for t in range(b * B, t1):
                for j in range(k):
                    e = a[layer, t, j]
                    if e < 0:
                        continue
                    if stamp[e] != s:
                        stamp[e] = s
                        pos[e] = n
                        out_step[n] = s
                        out_e[n] = e
                        out_cnt[n] = 1
                        n += 1
                    else:
                        out_cnt[pos[e]] += 1
    return n


def _segments(a: np.ndarray, E: int, B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per step ``s = b·L + l`` the distinct ids of ``a [L, T, k]`` (``-1`` skipped) over batch ``b``.

    Returns (step, expert, count) in access order (step, then first appearance) and the number of
    batches; ``count`` is how many (token, choice) entries of the step name the expert.
    """
    L, T, k = a.shape
    nb = -(-T // B)
    size = a.size
    out_step = np.empty(size, np.int64)
    out_e = np.empty(size, np.int64)
    out_cnt = np.empty(size, np.int64)
    n = int(_segments_kernel(np.ascontiguousarray(a, dtype=np.int64), np.int64(E), np.int64(B),
                             out_step, out_e, out_cnt))
    return out_step[:n].copy(), out_e[:n].copy(), out_cnt[:n].copy(), nb


# --------------------------------------------------------------------------------------- accesses
@dataclass(frozen=True, eq=False)
class ExpertAccesses:
    """The expert accesses of a batched decoder run, in inference order (see the module docstring).

    Attributes
    ----------
    ids : numpy.ndarray
        ``int64[n]``, expert id within its layer, ``[0, num_experts)``.
    layer, batch : numpy.ndarray
        ``int64[n]``, the layer and the batch of each access.
    counts : numpy.ndarray
        ``int64[n]``, tokens of the batch routed to that expert at that layer (``>= 1``).
    offsets : numpy.ndarray
        ``int64[num_batches·num_layers + 1]``: step ``s = b·L + l`` owns accesses
        ``offsets[s]:offsets[s+1]``.
    num_layers, num_experts, num_batches, num_tokens, batch_tokens : int
        ``L``, ``E``, batches, tokens of the trace and the batch size ``B``.
    """

    ids: np.ndarray
    layer: np.ndarray
    batch: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    num_layers: int
    num_experts: int
    num_batches: int
    num_tokens: int
    batch_tokens: int

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def flat_ids(self) -> np.ndarray:
        """``layer · num_experts + ids``: the ids of one global cache."""
        return self.layer * self.num_experts + self.ids

    @property
    def step(self) -> np.ndarray:
        """``batch · num_layers + layer`` of each access."""
        return self.batch * self.num_layers + self.layer

    def __repr__(self) -> str:
        return (
            f"ExpertAccesses(accesses={len(self)}, layers={self.num_layers}, experts={self.num_experts}, "
            f"batches={self.num_batches}, batch_tokens={self.batch_tokens}, tokens={self.num_tokens})"
        )


def expert_accesses(topk_ids, num_experts: int, batch_tokens: int = 1) -> ExpertAccesses:
    """Per (batch, layer) distinct experts of a routing trace, flattened in inference order.

    Parameters
    ----------
    topk_ids : array_like of int, shape (layers, tokens, k)
        Selected experts (numpy array, nested list or torch tensor), ids in ``[0, num_experts)``.
    num_experts : int
        ``E``, experts per layer.
    batch_tokens : int, default 1
        ``B``, consecutive tokens (in trace order) that form one batch.

    Returns
    -------
    ExpertAccesses
        ``.ids`` / ``.layer`` / ``.batch`` / ``.counts`` per access, ``.flat_ids`` for a global cache.

    Examples
    --------
    >>> a = expert_accesses([[[0, 1], [1, 2]], [[3, 0], [3, 1]]], 4, batch_tokens=2)
    >>> a.ids.tolist(), a.layer.tolist(), a.counts.tolist()
    ([0, 1, 2, 3, 0, 1], [0, 0, 0, 1, 1, 1], [1, 2, 1, 2, 1, 1])
    """
    a, E = _topk(topk_ids, num_experts)
    B = _positive_int("batch_tokens", batch_tokens)
    L, T, _ = a.shape
    step, e, cnt, nb = _segments(a, E, B)
    offsets = np.searchsorted(step, np.arange(nb * L + 1, dtype=np.int64)).astype(np.int64)
    return ExpertAccesses(
        ids=e, layer=step % L, batch=step // L, counts=cnt, offsets=offsets,
        num_layers=L, num_experts=E, num_batches=nb, num_tokens=T, batch_tokens=B,
    )


# ------------------------------------------------------------------------------------ predictions
def oracle_predictions(topk_ids) -> np.ndarray:
    """A perfect predictor: the true experts, ``int64 [layers, tokens, k]`` (a copy of ``topk_ids``)."""
    a = _as_int_array("topk_ids", topk_ids, ndim=3)
    if a.size and int(a.min()) < 0:
        raise ValueError(f"topk_ids: expected expert ids >= 0, got {int(a.min())}")
    _check_distinct("topk_ids", a)
    return np.array(a, dtype=np.int64)


def noisy_predictions(topk_ids, num_experts: int, quality: float, seed: int = 0) -> np.ndarray:
    """A predictor of tunable quality: each true expert is kept with probability ``quality``.

    For every (layer, token) each of the ``k`` true experts is kept independently with probability
    ``quality`` (in its column); the other slots are filled with experts drawn uniformly without
    replacement from those not kept (which may include a dropped true expert). So ``quality=1`` returns
    the oracle exactly and ``quality=0`` a uniformly random ``k``-subset, whose expected hit rate is
    ``k / num_experts``. Ids within a token stay distinct when the true ones are.

    Parameters
    ----------
    topk_ids : array_like of int, shape (layers, tokens, k)
        True experts, ids in ``[0, num_experts)``.
    num_experts : int
        ``E``.
    quality : float
        In ``[0, 1]``.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    numpy.ndarray
        ``int64 [layers, tokens, k]``.
    """
    a, E = _topk(topk_ids, num_experts)
    if isinstance(quality, (bool, np.bool_)) or not isinstance(quality, (int, float, np.integer, np.floating)):
        raise TypeError(f"quality: expected a number in [0, 1], got {type(quality).__name__} ({quality!r})")
    q = float(quality)
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"quality: expected a number in [0, 1], got {quality!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__} ({seed!r})")
    if seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed}")
    L, T, k = a.shape
    check_alloc("num_experts", (L, T, E), 12, what="candidate keys [layers, tokens, E]")
    rng = np.random.default_rng(int(seed))
    keep = rng.random((L, T, k)) < q
    key = rng.random((L, T, E), dtype=np.float32)  # random order of the candidates, in [0, 1)
    # NOTE: kept experts get keys j - k < 0, so the argsort puts them first, in column order.
    li, ti, ji = np.nonzero(keep)
    key[li, ti, a[li, ti, ji]] = ji - k
    order = np.argsort(key, axis=-1, kind="stable")[..., :k]
    nkeep = keep.sum(-1, keepdims=True)
    src = np.where(keep, np.cumsum(keep, axis=-1) - 1, nkeep + np.cumsum(~keep, axis=-1) - 1)
    return np.take_along_axis(order, src, axis=-1).astype(np.int64)


# ------------------------------------------------------------------------------------- simulation
def _expert_sizes(expert_bytes, L: int, E: int) -> np.ndarray | None:
    if expert_bytes is None:
        return None
    if type(expert_bytes).__module__.startswith("torch"):
        expert_bytes = expert_bytes.detach().cpu().numpy()
    a = np.asarray(expert_bytes)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"expert_bytes: expected integer byte counts, got dtype {a.dtype}")
    if a.ndim == 0:
        a = np.full((L, E), a)
    elif a.ndim == 1:
        if a.shape[0] != L:
            raise ValueError(f"expert_bytes: expected a scalar, shape ({L},) per layer or ({L}, {E}), got {a.shape}")
        a = np.repeat(a[:, None], E, axis=1)
    elif a.shape != (L, E):
        raise ValueError(f"expert_bytes: expected a scalar, shape ({L},) per layer or ({L}, {E}), got {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a != np.round(a)):
        raise ValueError("expert_bytes: expected whole numbers of bytes >= 0")
    return a.astype(np.int64)


def _split_capacity(name: str, v, L: int) -> list[int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        c = _check_count(name, v)
        return [c // L + (1 if l < c % L else 0) for l in range(L)]
    a = _as_int_array(name, v, ndim=1)
    if a.shape[0] != L:
        raise ValueError(f"{name}: expected an int (total) or one value per layer ({L}), got shape {a.shape}")
    return [_check_count(name, int(x)) for x in a]


@dataclass(frozen=True, eq=False)
class OffloadStats:
    """Result of :func:`simulate_offload`.

    Attributes
    ----------
    policy, scope : str
        The cache policy and ``"global"`` / ``"per_layer"``.
    accesses : ExpertAccesses
        The replayed accesses (inference order).
    hit, prefetch_hit : numpy.ndarray
        ``bool[n]`` per access: hit, and hit on a not yet used prefetch load (see ``CacheStats``).
    access_bytes : numpy.ndarray
        ``int64[n]`` bytes of each access's expert (1 without ``expert_bytes``).
    expert_bytes : numpy.ndarray or None
        ``int64 [layers, E]`` sizes used, or None (unit sizes).
    hits, demand_loads : int
        Hits and misses (each miss is a demand load from host memory).
    bytes_demand, bytes_prefetched : int
        Bytes moved by demand loads and by prefetch loads (units without ``expert_bytes``).
    prefetches, prefetch_hits : int
        Prefetch loads and the useful ones.
    gpu_bytes : int
        Peak resident bytes (units without ``expert_bytes``); with ``per_layer`` the sum of each layer
        cache's peak.
    step_demand_loads, step_demand_bytes, step_prefetch_loads, step_prefetch_bytes : numpy.ndarray
        ``int64 [num_batches, num_layers]`` per step (prefetches of a step: those applied just before it).
    prefetch_load_step, prefetch_load_expert : numpy.ndarray
        ``int64[prefetches]``: every prefetch load, its step and its expert (layer = ``step % layers``),
        in step order.
    capacities : tuple
        Capacity of each cache (experts or bytes; one entry for ``global``).
    stats : list of CacheStats
        The underlying replays: one (global) or one per layer.
    """

    policy: str
    scope: str
    accesses: ExpertAccesses
    hit: np.ndarray
    prefetch_hit: np.ndarray
    access_bytes: np.ndarray
    expert_bytes: np.ndarray | None
    hits: int
    demand_loads: int
    bytes_demand: int
    bytes_prefetched: int
    prefetches: int
    prefetch_hits: int
    gpu_bytes: int
    step_demand_loads: np.ndarray
    step_demand_bytes: np.ndarray
    step_prefetch_loads: np.ndarray
    step_prefetch_bytes: np.ndarray
    prefetch_load_step: np.ndarray
    prefetch_load_expert: np.ndarray
    capacities: tuple
    stats: list

    @property
    def num_accesses(self) -> int:
        """Accesses replayed (distinct experts per step, summed over steps)."""
        return len(self.accesses)

    @property
    def hit_rate(self) -> float:
        """``hits / num_accesses``."""
        return self.hits / self.num_accesses

    @property
    def misses(self) -> int:
        """Alias of :attr:`demand_loads`."""
        return self.demand_loads

    @property
    def per_layer_hit_rate(self) -> np.ndarray:
        """``float64[layers]``: hit rate of each layer's accesses."""
        L = self.accesses.num_layers
        n = np.bincount(self.accesses.layer, minlength=L)
        h = np.bincount(self.accesses.layer, weights=self.hit, minlength=L)
        with np.errstate(invalid="ignore", divide="ignore"):
            return h / n

    @property
    def token_hit_rate(self) -> float:
        """Token-weighted hit rate: share of (token, expert) assignments whose expert was resident."""
        c = self.accesses.counts
        return float((c * self.hit).sum() / c.sum())

    @property
    def prefetch_precision(self) -> float:
        """``prefetch_hits / prefetches`` (NaN without prefetches)."""
        return self.prefetch_hits / self.prefetches if self.prefetches else float("nan")

    def __repr__(self) -> str:
        return (
            f"OffloadStats(policy={self.policy!r}, scope={self.scope!r}, accesses={self.num_accesses}, "
            f"hit_rate={self.hit_rate:.4f}, demand_loads={self.demand_loads}, prefetches={self.prefetches}, "
            f"prefetch_hits={self.prefetch_hits}, gpu_bytes={self.gpu_bytes})"
        )


def _prefetch_groups(pred, L: int, T: int, E: int, B: int, policy: str):
    """Rows of prefetch ids per step (ordered by batch votes, then id) → (step[g], ids[g, p])."""
    a = _as_int_array("predicted", pred, ndim=3)
    if a.shape[:2] != (L, T):
        raise ValueError(
            f"predicted: expected shape ({L}, {T}, p) [layers, tokens, p] like topk_ids, got {a.shape}"
        )
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < -1 or hi >= E:
            raise ValueError(f"predicted: expected ids in [0, {E}) or -1 (none), got {lo if lo < -1 else hi}")
    a = a.astype(np.int64)
    if policy == "next_layer":
        a = a.copy()
        a[0] = -1  # NOTE: next-layer prediction for layer l is made during layer l-1; layer 0 has none.
    if a.shape[2] == 0:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.int64)
    step, e, cnt, _ = _segments(a, E, B)
    o = np.lexsort((e, -cnt, step))
    step, e = step[o], e[o]
    if step.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.int64)
    ustep, start, size = np.unique(step, return_index=True, return_counts=True)
    col = np.arange(step.size) - np.repeat(start, size)
    ids = np.full((ustep.size, int(size.max())), -1, np.int64)
    ids[np.repeat(np.arange(ustep.size), size), col] = e
    return ustep, ids


def simulate_offload(
    topk_ids,
    num_experts: int,
    *,
    policy: str,
    capacity=None,
    capacity_bytes=None,
    expert_bytes=None,
    scope: str = "global",
    batch_tokens: int = 1,
    predicted=None,
    popularity=None,
    lfu_history: bool = False,
) -> OffloadStats:
    """Replay a routing trace through a GPU expert cache (global or per layer), with optional prefetching.

    Parameters
    ----------
    topk_ids : array_like of int, shape (layers, tokens, k)
        Routing decisions (``RoutingTrace.topk_ids``), ids in ``[0, num_experts)``.
    num_experts : int
        ``E``, experts per layer.
    policy : {"lru", "fifo", "lfu", "belady", "static", "sida", "next_layer"}
        Cache policy (see :func:`~samoyeds_lab.offload.cache.simulate_cache`).
    capacity : int or array_like of int, optional
        Experts the GPU holds: total (global, or split evenly per layer), or one value per layer
        (``per_layer`` only). Exactly one of ``capacity`` / ``capacity_bytes``.
    capacity_bytes : int or array_like of int, optional
        The same in bytes; needs ``expert_bytes``.
    expert_bytes : int, array_like shape (layers,) or (layers, E), optional
        Bytes of each expert; weights the byte counts (default: one unit per expert).
    scope : {"global", "per_layer"}
        One cache over (layer, expert) ids ``l·E + e``, or one cache per layer.
    batch_tokens : int, default 1
        Tokens per batch; a step needs the union of its tokens' experts.
    predicted : array_like of int, shape (layers, tokens, p), optional
        ``sida`` / ``next_layer`` only (required): predicted experts per token, ``-1`` = none.
    popularity : array_like of float, shape (layers, E), optional
        ``static`` only: scores choosing the pinned experts (e.g. counts from a profiling trace); per
        layer with ``per_layer``. Default: this trace's access counts (an oracle hot set).
    lfu_history : bool, default False
        ``lfu`` only, as in ``simulate_cache``.

    Returns
    -------
    OffloadStats
        ``.hit_rate``, ``.per_layer_hit_rate``, ``.demand_loads``, ``.bytes_demand``,
        ``.bytes_prefetched``, ``.gpu_bytes``, per-step loads and ``.stats``.

    Examples
    --------
    >>> topk = [[[0], [1], [0]], [[2], [2], [3]]]  # 2 layers, 3 tokens, top-1, E = 4
    >>> simulate_offload(topk, 4, policy="lru", capacity=4).hits  # 0 2 | 1 2 | 0 3 -> hits on 2, 0
    2
    """
    a, E = _topk(topk_ids, num_experts)
    if not isinstance(policy, str):
        raise TypeError(f"policy: expected one of {ALL_POLICIES}, got {type(policy).__name__} ({policy!r})")
    pol = policy.lower()
    if pol not in ALL_POLICIES:
        raise ValueError(f"policy: expected one of {ALL_POLICIES}, got {policy!r}")
    if not isinstance(scope, str) or scope not in SCOPES:
        raise ValueError(f"scope: expected one of {SCOPES}, got {scope!r}")
    B = _positive_int("batch_tokens", batch_tokens)
    if not isinstance(lfu_history, (bool, np.bool_)):
        raise TypeError(f"lfu_history: expected a bool, got {type(lfu_history).__name__} ({lfu_history!r})")
    L, T, _ = a.shape
    if (capacity is None) == (capacity_bytes is None):
        raise ValueError(
            "capacity: expected exactly one of capacity (experts) or capacity_bytes (bytes), got "
            + ("neither" if capacity is None else "both")
        )
    sizes = _expert_sizes(expert_bytes, L, E)
    if capacity_bytes is not None and sizes is None:
        raise ValueError("expert_bytes: expected expert sizes in bytes when capacity_bytes is given, got None")
    prefetching = pol in PREFETCH_POLICIES
    if prefetching and predicted is None:
        raise ValueError(f"predicted: required by policy={policy!r} ([layers, tokens, p] expert ids), got None")
    if not prefetching and predicted is not None:
        raise ValueError(f"predicted: only used by policies {PREFETCH_POLICIES}, got policy={policy!r}")
    pop = None
    if popularity is not None:
        if pol != "static":
            raise ValueError(f"popularity: only used by policy='static', got policy={policy!r}")
        if type(popularity).__module__.startswith("torch"):
            popularity = popularity.detach().cpu().numpy()
        pop = np.asarray(popularity)
        if pop.shape != (L, E):
            raise ValueError(f"popularity: expected shape ({L}, {E}) [layers, experts], got {pop.shape}")

    acc = expert_accesses(a, E, B)
    n = len(acc)
    nsteps = acc.num_batches * L
    if prefetching:
        g_step, g_ids = _prefetch_groups(predicted, L, T, E, B, pol)
    access_bytes = sizes[acc.layer, acc.ids] if sizes is not None else np.ones(n, np.int64)

    hit = np.zeros(n, bool)
    pf_hit = np.zeros(n, bool)
    load_step: list[np.ndarray] = [np.zeros(0, np.int64)]
    load_expert: list[np.ndarray] = [np.zeros(0, np.int64)]
    stats: list[CacheStats] = []
    kw = dict(policy=pol, lfu_history=lfu_history) if pol == "lfu" else dict(policy=pol)

    def one(trace, cap, sz, popu, pf_at, pf_ids, pf_step):
        extra = dict(kw)
        if capacity is not None:
            extra["capacity"] = cap
        else:
            extra["capacity_bytes"] = cap
        if sz is not None:
            extra["sizes"] = sz
        if popu is not None:
            extra["popularity"] = popu
        if prefetching:
            extra["prefetch_at"] = pf_at
            extra["prefetch_ids"] = pf_ids
        st = simulate_cache(trace, **extra)
        if prefetching and pf_ids.size:
            loaded = st.prefetch_loaded
            rows, cols = np.nonzero(loaded)
            load_step.append(pf_step[rows])
            load_expert.append(pf_ids[rows, cols] % E)
        return st

    if scope == "global":
        cap_raw = capacity if capacity is not None else capacity_bytes
        if not (isinstance(cap_raw, (int, np.integer)) and not isinstance(cap_raw, (bool, np.bool_))):
            name = "capacity" if capacity is not None else "capacity_bytes"
            raise TypeError(f"{name}: expected an int with scope='global', got {type(cap_raw).__name__}")
        flat_sizes = None if sizes is None else sizes.reshape(-1)
        pf_at = pf_ids = pf_step = None
        if prefetching:
            layer_of = g_step % L
            pf_ids = np.where(g_ids >= 0, g_ids + (layer_of * E)[:, None], -1)
            pf_at = acc.offsets[g_step]
            pf_step = g_step
        st = one(acc.flat_ids, cap_raw, flat_sizes, None if pop is None else pop.reshape(-1),
                 pf_at, pf_ids, pf_step)
        stats.append(st)
        hit[:] = st.hit
        pf_hit[:] = st.prefetch_hit
        capacities = (st.capacity if st.capacity is not None else st.capacity_bytes,)
        gpu_bytes = st.peak_resident_bytes
    else:
        if capacity is not None:
            caps = _split_capacity("capacity", capacity, L)
        else:
            caps = _split_capacity("capacity_bytes", capacity_bytes, L)
        gpu_bytes = 0
        by_layer = np.argsort(acc.layer, kind="stable")
        bounds = np.searchsorted(acc.layer[by_layer], np.arange(L + 1))
        for l in range(L):
            idx = by_layer[bounds[l] : bounds[l + 1]]
            lsz = None if sizes is None else sizes[l]
            pf_at = pf_ids = pf_step = None
            if prefetching:
                sel = (g_step % L) == l
                pf_step = g_step[sel]
                pf_ids = g_ids[sel]
                pf_at = np.searchsorted(idx, acc.offsets[pf_step])
            st = one(acc.ids[idx], caps[l], lsz, None if pop is None else pop[l], pf_at, pf_ids, pf_step)
            stats.append(st)
            hit[idx] = st.hit
            pf_hit[idx] = st.prefetch_hit
            gpu_bytes += st.peak_resident_bytes
        capacities = tuple(caps)

    pls = np.concatenate(load_step).astype(np.int64)
    ple = np.concatenate(load_expert).astype(np.int64)
    o = np.argsort(pls, kind="stable")  # per_layer: interleave the layers' loads in step order
    pls, ple = pls[o], ple[o]
    ple_bytes = sizes[pls % L, ple] if sizes is not None else np.ones(pls.size, np.int64)
    step_pf_loads = np.bincount(pls, minlength=nsteps).astype(np.int64)
    step_pf_bytes = np.bincount(pls, weights=ple_bytes, minlength=nsteps).astype(np.int64)
    miss = ~hit
    step = acc.step
    shape = (acc.num_batches, L)
    d_loads = np.bincount(step[miss], minlength=nsteps).astype(np.int64)
    d_bytes = np.bincount(step[miss], weights=access_bytes[miss], minlength=nsteps).astype(np.int64)
    return OffloadStats(
        policy=pol,
        scope=scope,
        accesses=acc,
        hit=hit,
        prefetch_hit=pf_hit,
        access_bytes=access_bytes,
        expert_bytes=sizes,
        hits=int(hit.sum()),
        demand_loads=int(miss.sum()),
        bytes_demand=int(access_bytes[miss].sum()),
        bytes_prefetched=int(sum(s.bytes_prefetched for s in stats)),
        prefetches=int(sum(s.prefetches for s in stats)),
        prefetch_hits=int(pf_hit.sum()),
        gpu_bytes=int(gpu_bytes),
        step_demand_loads=d_loads.reshape(shape),
        step_demand_bytes=d_bytes.reshape(shape),
        step_prefetch_loads=step_pf_loads.reshape(shape),
        step_prefetch_bytes=step_pf_bytes.reshape(shape),
        prefetch_load_step=pls,
        prefetch_load_expert=ple,
        capacities=capacities,
        stats=stats,
    )


# ---------------------------------------------------------------------------------------- latency
@dataclass(frozen=True, eq=False)
class OffloadLatency:
    r"""Latency breakdown of :func:`offload_latency` (seconds; see the module docstring for the model).

    Attributes
    ----------
    tokens : int
        Tokens of the trace.
    compute_s, stall_s, prefetch_hidden_s, prefetch_exposed_s, total_s : float
        :math:`\sum_s C_s`, :math:`\sum_s D_s`, :math:`\sum_s \min(P_s, C_{s-1})`,
        :math:`\sum_s \max(0, P_s - C_{s-1})` and :math:`T` over the whole trace;
        ``total_s = compute_s + stall_s + prefetch_exposed_s``.
    all_resident_s : float
        Baseline with every expert resident: ``compute_s``.
    step_compute_s, step_stall_s, step_prefetch_s, step_exposed_s, step_total_s : numpy.ndarray
        ``float64 [num_batches, num_layers]`` per step: :math:`C_s, D_s, P_s`, exposed prefetch, :math:`T_s`.
    """

    tokens: int
    compute_s: float
    stall_s: float
    prefetch_hidden_s: float
    prefetch_exposed_s: float
    total_s: float
    all_resident_s: float
    step_compute_s: np.ndarray
    step_stall_s: np.ndarray
    step_prefetch_s: np.ndarray
    step_exposed_s: np.ndarray
    step_total_s: np.ndarray

    @property
    def slowdown(self) -> float:
        """``total_s / all_resident_s`` (>= 1)."""
        return self.total_s / self.all_resident_s if self.all_resident_s > 0 else float("nan")

    def per_token(self) -> dict:
        """Seconds per token: ``compute``, ``stall``, ``prefetch_hidden``, ``prefetch_exposed``,
        ``total``, ``all_resident``."""
        t = self.tokens
        return {
            "compute": self.compute_s / t,
            "stall": self.stall_s / t,
            "prefetch_hidden": self.prefetch_hidden_s / t,
            "prefetch_exposed": self.prefetch_exposed_s / t,
            "total": self.total_s / t,
            "all_resident": self.all_resident_s / t,
        }

    def __repr__(self) -> str:
        pt = self.per_token()
        return (
            f"OffloadLatency(tokens={self.tokens}, per_token_ms: total={pt['total'] * 1e3:.4g}, "
            f"compute={pt['compute'] * 1e3:.4g}, stall={pt['stall'] * 1e3:.4g}, "
            f"prefetch_exposed={pt['prefetch_exposed'] * 1e3:.4g}, slowdown={self.slowdown:.3f})"
        )


def _per_layer_expert(name: str, v, L: int, E: int, *, allow_zero: bool) -> np.ndarray:
    if type(v).__module__.startswith("torch"):
        v = v.detach().cpu().numpy()
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a number or an array, got bool")
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number or an array of numbers, got {type(v).__name__}") from None
    if a.ndim == 1:
        if a.shape[0] != L:
            raise ValueError(f"{name}: expected a scalar, shape ({L},) or ({L}, {E}), got {a.shape}")
        a = a[:, None]
    try:
        a = np.broadcast_to(a, (L, E))
    except ValueError:
        raise ValueError(f"{name}: expected a scalar, shape ({L},) or ({L}, {E}), got {a.shape}") from None
    bad = ~np.isfinite(a) | ((a < 0) if allow_zero else (a <= 0))
    if bad.any():
        raise ValueError(f"{name}: expected finite values {'>= 0' if allow_zero else '> 0'}, got {a[bad][0]!r}")
    return a


def offload_latency(
    stats: OffloadStats,
    *,
    profile_gpu,
    expert_flops,
    link=None,
    expert_bytes=None,
    compute_s_per_layer=None,
    efficiency: float = 1.0,
    sparse: bool = False,
) -> OffloadLatency:
    r"""Turn an offload replay into time: compute, demand-load stalls, hidden and exposed prefetch.

    .. math::

        T = \sum_s \Big[ D_s + \max(0, P_s - C_{s-1}) + C_s \Big],\qquad
        C_s = \sum_{e \in need(s)} \max\Big(\frac{n_{s,e} f_e}{F\eta}, \frac{S_e}{B_{hbm}}\Big)

    (:math:`D_s, P_s` = demand and prefetch bytes of step :math:`s` over :math:`B_{link}`; the GPU roofline
    is the one of :func:`samoyeds_lab.offload.cost.gpu_path_cost`.)

    Parameters
    ----------
    stats : OffloadStats
        From :func:`simulate_offload`.
    profile_gpu : HardwareProfile or str
        GPU profile (``fp16_tflops`` / ``fp16_sparse_tflops``, ``memory_bandwidth_gbs``).
    expert_flops : float or array_like, shape (layers,) or (layers, E)
        :math:`f_e`, FLOP per token of one expert (``2 · params``; a SwiGLU expert is ``6 · d · d_ffn``).
    link : float, HardwareProfile, str or None
        :math:`B_{link}` in GB/s or a link profile; default the GPU profile's ``link_bandwidth_gbs``.
    expert_bytes : int or array_like, shape (layers,) or (layers, E), optional
        :math:`S_e`; default the ``expert_bytes`` given to :func:`simulate_offload` (one of them is needed).
    compute_s_per_layer : float or array_like, shape (layers,), optional
        If given, :math:`C_s` is this time per (batch, layer) instead of the roofline (e.g. measured).
    efficiency : float, default 1.0
        :math:`\eta \in (0, 1]`, fraction of peak FLOP/s reached.
    sparse : bool, default False
        Use the 2:4-sparse tensor peak.

    Returns
    -------
    OffloadLatency
        Totals, per-step arrays, ``.per_token()`` and ``.slowdown`` vs the all-resident baseline.
    """
    from samoyeds_lab.offload.cost import _efficiency, _link_bw, _profile

    if not isinstance(stats, OffloadStats):
        raise TypeError(f"stats: expected an OffloadStats from simulate_offload, got {type(stats).__name__}")
    gpu = _profile("profile_gpu", profile_gpu, "gpu")
    if not isinstance(sparse, (bool, np.bool_)):
        raise TypeError(f"sparse: expected a bool, got {type(sparse).__name__} ({sparse!r})")
    acc = stats.accesses
    L, E = acc.num_layers, acc.num_experts
    if expert_bytes is not None:
        sizes = _per_layer_expert("expert_bytes", expert_bytes, L, E, allow_zero=True)
        if stats.expert_bytes is not None and not np.array_equal(sizes, stats.expert_bytes):
            raise ValueError("expert_bytes: differs from the expert_bytes the replay used; pass one or the other")
    elif stats.expert_bytes is not None:
        sizes = stats.expert_bytes.astype(np.float64)
    else:
        raise ValueError(
            "expert_bytes: needed to turn loads into transfer time (the replay was run without it), got None"
        )
    flops = _per_layer_expert("expert_flops", expert_flops, L, E, allow_zero=False)
    eta = _efficiency(efficiency)
    bw = _link_bw(link, gpu)
    peak = (gpu.sparse_flops if sparse else gpu.flops) * eta
    nsteps = acc.num_batches * L
    shape = (acc.num_batches, L)
    if compute_s_per_layer is not None:
        if isinstance(compute_s_per_layer, (bool, np.bool_, str, bytes)):
            raise TypeError(f"compute_s_per_layer: expected a number or shape (layers,), got "
                            f"{type(compute_s_per_layer).__name__}")
        try:
            c = np.asarray(compute_s_per_layer, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"compute_s_per_layer: expected a number or shape (layers,), got "
                            f"{type(compute_s_per_layer).__name__}") from None
        if c.ndim > 1 or (c.ndim == 1 and c.shape[0] != L):
            raise ValueError(f"compute_s_per_layer: expected a scalar or shape ({L},), got {c.shape}")
        if not np.all(np.isfinite(c)) or np.any(c < 0):
            raise ValueError("compute_s_per_layer: expected finite seconds >= 0")
        comp = np.broadcast_to(c, shape).astype(np.float64)
    else:
        e_bytes = sizes[acc.layer, acc.ids]
        t = np.maximum(acc.counts * flops[acc.layer, acc.ids] / peak, e_bytes / gpu.memory_bandwidth)
        comp = np.bincount(acc.step, weights=t, minlength=nsteps).reshape(shape)
    miss = ~stats.hit
    d_bytes = np.bincount(acc.step[miss], weights=sizes[acc.layer[miss], acc.ids[miss]], minlength=nsteps)
    stall = (d_bytes / bw).reshape(shape)
    ps = stats.prefetch_load_step
    pf_bytes = np.bincount(ps, weights=sizes[ps % L, stats.prefetch_load_expert], minlength=nsteps)
    pref = (pf_bytes / bw).reshape(shape)
    prev = np.concatenate([[0.0], comp.reshape(-1)[:-1]]).reshape(shape)
    exposed = np.maximum(0.0, pref - prev)
    hidden = pref - exposed
    total = stall + exposed + comp
    return OffloadLatency(
        tokens=acc.num_tokens,
        compute_s=float(comp.sum()),
        stall_s=float(stall.sum()),
        prefetch_hidden_s=float(hidden.sum()),
        prefetch_exposed_s=float(exposed.sum()),
        total_s=float(total.sum()),
        all_resident_s=float(comp.sum()),
        step_compute_s=comp,
        step_stall_s=stall,
        step_prefetch_s=pref,
        step_exposed_s=exposed,
        step_total_s=total,
    )
