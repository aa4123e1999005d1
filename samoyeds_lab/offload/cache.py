"""Expert-cache simulator: replay an expert access trace through a GPU-side cache and count hits.

An offloading MoE runtime (SiDA, MoE-Infinity, Pre-gated MoE, …) keeps only some experts in GPU memory
and fetches the others from host memory when the router selects them. :func:`simulate_cache` replays a
1-D trace of expert ids through a cache of a given capacity under one replacement policy and returns
:class:`CacheStats`: hits, misses, hit rate, bytes fetched and a per-access timeline.

The cache starts empty (cold). Every access is served; on a miss the expert is fetched (its bytes count
in ``bytes_loaded``) and, if the policy admits it, inserted after evicting as many residents as needed.

Policies
--------
``"lru"``
    Evict the least recently used resident.
``"fifo"``
    Evict the resident inserted longest ago (a hit does not refresh it). Exhibits Belady's anomaly.
``"lfu"``
    Evict the resident with the fewest accesses; ties are broken by least recent access. Counts are
    in-cache counts (reset when an expert is evicted) unless ``lfu_history=True``, in which case an
    expert's count covers the whole trace so far ("perfect LFU").
``"belady"``
    Offline optimum (Belady's MIN): evict the resident whose next use is furthest in the future; among
    residents never used again, the one with the largest id. With unit sizes (``capacity``) the miss
    count is the exact minimum over all demand-paging policies (every policy that inserts each missed
    expert). With ``capacity_bytes`` and unequal sizes it is the classic furthest-next-use heuristic,
    not an optimum (that problem is NP-hard).
``"static"``
    Pin a fixed hot set and never evict: the ``capacity`` ids with the highest ``popularity`` (per-id
    scores, e.g. counts from a profiling trace), or with the highest access counts in the trace itself
    when ``popularity`` is None; ties go to the smaller id. With ``capacity_bytes`` ids are taken in that
    order while they fit (greedy). A pinned expert misses once (its first, cold load); other experts
    always miss and are streamed without being cached. Because it bypasses the cache, ``static`` is not a
    demand-paging policy and can beat ``"belady"`` (capacity 1, trace ``0 1 0``: 2 misses vs 3).

``"sida"``, ``"next_layer"``
    Prefetching on top of the LRU cache above (the two behave identically here; they differ in where
    the predictions come from and when they are issued, see :mod:`samoyeds_lab.offload.simulate`).
    ``prefetch_at`` (``int[g]``, non-decreasing access indices) and ``prefetch_ids`` (``int[g, p]``,
    ``-1`` = padding) describe ``g`` prefetch groups. Group ``j`` is applied just before access
    ``prefetch_at[j]`` (groups at the same index in order of ``j``), its ids in column order (earlier
    columns have priority), repeats within the group skipped:

    * an id already resident is moved to the most-recently-used end (not counted as a prefetch);
    * an id not resident is loaded (a *prefetch load*: counted in ``prefetches`` and
      ``bytes_prefetched``, not in ``misses``/``bytes_loaded``), after evicting least-recently-used
      residents until it fits. A prefetch never evicts an id of its own group: if the group's resident
      members plus the new id exceed the capacity, the id is *dropped* (not loaded, not counted, nothing
      evicted). Ids of earlier groups may be evicted.

    Demand accesses then behave exactly as in ``"lru"`` (a miss may evict prefetched, not yet used
    ids). ``prefetch_hits`` counts accesses that are the first use of an id since its prefetch load
    (each load is useful at most once). With no prefetch groups the replay equals ``"lru"``.

Sizes
-----
With ``capacity`` (a number of experts) every expert occupies one slot; ``sizes`` (bytes per expert id),
if given, only weights ``bytes_loaded``. With ``capacity_bytes`` the cache holds any set of experts whose
``sizes`` sum to at most ``capacity_bytes``; an expert larger than the whole cache is streamed (a miss that
evicts nothing and is not inserted).

Every per-access hit/miss of ``lru``, ``fifo``, ``lfu`` and ``belady`` (and of ``lru``/``fifo`` with byte
capacities) is checked against libCacheSim, an independent C implementation, in
``tests/offload/test_libcachesim.py``.

The replay loops are compiled with Numba when it is importable (tens of millions of accesses per second);
otherwise the same loops run as plain Python (about a million per second).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # NOTE: numba is optional; the kernels are plain Python functions that it compiles when present.
    import numba as _numba

    def _jit(f):
        try:
            return _numba.njit(cache=True, nogil=True)(f)
        except RuntimeError:  # no writable cache location (read-only install): compile on each start
            return _numba.njit(nogil=True)(f)

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    _numba = None

    def _jit(f):
        return f

    HAVE_NUMBA = False

__all__ = [
    "CacheStats", "POLICIES", "PREFETCH_POLICIES", "ALL_POLICIES", "simulate_cache", "flatten_layer_expert",
    "HAVE_NUMBA",
]

POLICIES = ("lru", "fifo", "lfu", "belady", "static")  # demand policies: no prefetch arguments
PREFETCH_POLICIES = ("sida", "next_layer")  # LRU + prefetch groups; need prefetch_at / prefetch_ids
ALL_POLICIES = POLICIES + PREFETCH_POLICIES

# Ids above this (relative to the trace length) are renumbered densely with np.unique first.
_DENSE_ID_LIMIT = 1 << 24


@dataclass(frozen=True, eq=False)
class CacheStats:
    """Result of :func:`simulate_cache`.

    Attributes
    ----------
    policy : str
        The replacement policy replayed.
    capacity : int or None
        Capacity in experts (None when ``capacity_bytes`` was used).
    capacity_bytes : int or None
        Capacity in bytes (None when ``capacity`` was used).
    hits, misses : int
        Counts over the whole trace; ``hits + misses == len(accesses)``.
    bytes_loaded : int
        Bytes fetched into the GPU: the sum of ``sizes[id]`` over misses, or ``misses`` when no ``sizes``
        were given (one unit per expert).
    hit : numpy.ndarray
        ``bool[n]``, True where access ``i`` hit.
    evicted : numpy.ndarray
        ``int64[n]``, the id evicted at access ``i`` (the last one, if several had to go to make room in
        byte mode or by the prefetch groups applied just before access ``i``), or -1 when nothing was
        evicted.
    eviction_steps, eviction_ids : numpy.ndarray
        Every eviction in order: access index and evicted id (``int64``). For demand policies in
        unit-size mode each access evicts at most one id, so these are ``np.flatnonzero(evicted >= 0)``
        and its ids. Evictions made by a prefetch group applied before access ``i`` are logged at step
        ``i`` (before that access's own demand eviction, if any).
    prefetches : int
        ``sida`` / ``next_layer``: prefetch loads, i.e. prefetched ids that were not resident and were
        loaded (0 for the demand policies). Resident ids named by a prefetch and dropped ids (see the
        module docstring) are not counted.
    bytes_prefetched : int
        Bytes of those loads (``sizes``), or ``prefetches`` when no ``sizes`` were given. Total link
        traffic is ``bytes_loaded + bytes_prefetched``.
    prefetch_hits : int
        Useful prefetches: accesses that hit an id whose residency began with a prefetch load and that
        is the first access to it since that load. Each prefetch load yields at most one, so
        ``prefetch_hits <= prefetches``; ``prefetches - prefetch_hits`` loads were wasted (evicted
        before use or never used). ``prefetch_hits <= hits``.
    peak_resident_bytes : int
        Peak over the replay of the summed ``sizes`` (or the number, without ``sizes``) of the resident
        experts. ``static``: its pinned ids that were accessed.
    prefetch_hit : numpy.ndarray
        ``bool[n]``, True where access ``i`` is a prefetch hit (all False for demand policies).
    prefetch_loaded : numpy.ndarray
        ``bool[g, p]``, True where ``prefetch_ids[j, c]`` was loaded (shape ``(0, 0)`` for demand policies).
    eviction_by_prefetch : numpy.ndarray
        ``bool`` like ``eviction_ids``: True for evictions made by a prefetch load.
    """

    policy: str
    capacity: int | None
    capacity_bytes: int | None
    hits: int
    misses: int
    bytes_loaded: int
    hit: np.ndarray
    evicted: np.ndarray
    eviction_steps: np.ndarray
    eviction_ids: np.ndarray
    prefetches: int = 0
    bytes_prefetched: int = 0
    prefetch_hits: int = 0
    peak_resident_bytes: int = 0
    prefetch_hit: np.ndarray | None = None
    prefetch_loaded: np.ndarray | None = None
    eviction_by_prefetch: np.ndarray | None = None

    @property
    def accesses(self) -> int:
        """Number of accesses replayed."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """``hits / accesses``."""
        return self.hits / self.accesses

    @property
    def miss_rate(self) -> float:
        """``misses / accesses``."""
        return self.misses / self.accesses

    @property
    def prefetch_precision(self) -> float:
        """``prefetch_hits / prefetches``: share of prefetch loads used before eviction (NaN if none)."""
        return self.prefetch_hits / self.prefetches if self.prefetches else float("nan")

    def __repr__(self) -> str:
        if self.capacity is not None:
            cap = f"capacity={self.capacity}"
        else:
            cap = f"capacity_bytes={self.capacity_bytes}"
        pf = ""
        if self.policy in PREFETCH_POLICIES:
            pf = (f", prefetches={self.prefetches}, prefetch_hits={self.prefetch_hits}, "
                  f"bytes_prefetched={self.bytes_prefetched}")
        return (
            f"CacheStats(policy={self.policy!r}, {cap}, accesses={self.accesses}, hits={self.hits}, "
            f"misses={self.misses}, hit_rate={self.hit_rate:.4f}, bytes_loaded={self.bytes_loaded}{pf})"
        )


# --------------------------------------------------------------------------------------------------
# Kernels. Shared signature: (acc int64[n], w int64[m] slot weights, sz int64[m] bytes (for the peak),
# cap int64, hit bool[n] out, evicted int64[n] out, log_t int64[n] out, log_id int64[n] out,
# peak int64[1] out) -> number of evictions logged.
# An id is admitted only if w[id] <= cap; residents are evicted until used + w[id] <= cap.
# --------------------------------------------------------------------------------------------------


@_jit
def _lru_kernel(acc, w, sz, cap, hit, evicted, log_t, log_id, peak):
    m = w.shape[0]
    used_b = 0
    top = 0
    prev = np.full(m, -1, np.int64)  # doubly linked list, head = most recent
    nxt = np.full(m, -1, np.int64)
    res = np.zeros(m, np.bool_)
    head = -1
    tail = -1
    used = 0
    ne = 0
    for i in range(acc.shape[0]):
        x = acc[i]
        if res[x]:
            hit[i] = True
            if x != head:  # unlink, then push at head
                p = prev[x]
                q = nxt[x]
                nxt[p] = q
                if q >= 0:
                    prev[q] = p
                else:
                    tail = p
                prev[x] = -1
                nxt[x] = head
                prev[head] = x
                head = x
            continue
        s = w[x]
        if s > cap:
            continue
        while used + s > cap:
            v = tail
            tail = prev[v]
            if tail >= 0:
                nxt[tail] = -1
            else:
                head = -1
            res[v] = False
            used -= w[v]
            used_b -= sz[v]
            evicted[i] = v
            log_t[ne] = i
            log_id[ne] = v
            ne += 1
        res[x] = True
        used += s
        used_b += sz[x]
        if used_b > top:
            top = used_b
        prev[x] = -1
        nxt[x] = head
        if head >= 0:
            prev[head] = x
        else:
            tail = x
        head = x
    peak[0] = top
    return ne


@_jit
def _fifo_kernel(acc, w, sz, cap, hit, evicted, log_t, log_id, peak):
    m = w.shape[0]
    used_b = 0
    top = 0
    ring = np.empty(m + 1, np.int64)  # each id is queued at most once
    res = np.zeros(m, np.bool_)
    lo = 0
    hi = 0
    size = m + 1
    used = 0
    ne = 0
    for i in range(acc.shape[0]):
        x = acc[i]
        if res[x]:
            hit[i] = True
            continue
        s = w[x]
        if s > cap:
            continue
        while used + s > cap:
            v = ring[lo]
            lo += 1
            if lo == size:
                lo = 0
            res[v] = False
            used -= w[v]
            used_b -= sz[v]
            evicted[i] = v
            log_t[ne] = i
            log_id[ne] = v
            ne += 1
        res[x] = True
        used += s
        used_b += sz[x]
        if used_b > top:
            top = used_b
        ring[hi] = x
        hi += 1
        if hi == size:
            hi = 0
    peak[0] = top
    return ne


# Indexed binary min-heap over ids: heap[0:n] holds ids, pos[id] their slot, key[id] their priority.


@_jit
def _sift_up(heap, pos, key, j):
    x = heap[j]
    k = key[x]
    while j > 0:
        p = (j - 1) >> 1
        y = heap[p]
        if key[y] <= k:
            break
        heap[j] = y
        pos[y] = j
        j = p
    heap[j] = x
    pos[x] = j


@_jit
def _sift_down(heap, pos, key, j, n):
    x = heap[j]
    k = key[x]
    while True:
        c = 2 * j + 1
        if c >= n:
            break
        if c + 1 < n and key[heap[c + 1]] < key[heap[c]]:
            c += 1
        y = heap[c]
        if key[y] >= k:
            break
        heap[j] = y
        pos[y] = j
        j = c
    heap[j] = x
    pos[x] = j


@_jit
def _heap_policy_kernel(acc, w, sz, cap, hit, evicted, log_t, log_id, peak, mode, lfu_history):
    """LFU (mode 0) or Belady (mode 1): evict the resident with the smallest key.

    LFU key = count * (n + 1) + last access time (fewest uses, then least recent).
    Belady key = -(next use), with "never again" = n + id (furthest; largest id first among those).
    """
    n = acc.shape[0]
    m = w.shape[0]
    heap = np.empty(m, np.int64)
    pos = np.full(m, -1, np.int64)  # -1 = not resident
    key = np.zeros(m, np.int64)
    count = np.zeros(m, np.int64)
    nxt = np.empty(n, np.int64)
    if mode == 1:  # next-use of every access, by a backward scan
        last = np.full(m, -1, np.int64)
        for i in range(n - 1, -1, -1):
            x = acc[i]
            nu = last[x]
            nxt[i] = nu if nu >= 0 else n + x
            last[x] = i
    stride = n + 1
    hn = 0
    used = 0
    used_b = 0
    top = 0
    ne = 0
    for i in range(n):
        x = acc[i]
        if mode == 0:
            count[x] += 1
            newkey = count[x] * stride + i
        else:
            newkey = -nxt[i]
        j = pos[x]
        if j >= 0:
            hit[i] = True
            old = key[x]
            key[x] = newkey
            if newkey > old:
                _sift_down(heap, pos, key, j, hn)
            else:
                _sift_up(heap, pos, key, j)
            continue
        s = w[x]
        if s <= cap:
            while used + s > cap:
                v = heap[0]
                pos[v] = -1
                hn -= 1
                if hn > 0:
                    heap[0] = heap[hn]
                    pos[heap[0]] = 0
                    _sift_down(heap, pos, key, 0, hn)
                used -= w[v]
                used_b -= sz[v]
                if mode == 0 and not lfu_history:
                    count[v] = 0
                evicted[i] = v
                log_t[ne] = i
                log_id[ne] = v
                ne += 1
            key[x] = newkey
            heap[hn] = x
            pos[x] = hn
            hn += 1
            _sift_up(heap, pos, key, hn - 1)
            used += s
            used_b += sz[x]
            if used_b > top:
                top = used_b
        elif mode == 0 and not lfu_history:
            count[x] = 0  # streamed, never resident: nothing to remember in-cache
    peak[0] = top
    return ne


@_jit
def _static_kernel(acc, pinned, hit):
    seen = np.zeros(pinned.shape[0], np.bool_)
    for i in range(acc.shape[0]):
        x = acc[i]
        if pinned[x]:
            if seen[x]:
                hit[i] = True
            else:
                seen[x] = True


@_jit
def _lru_prefetch_kernel(acc, w, sz, cap, pf_at, pf_ids, hit, evicted, log_t, log_id, log_pf, peak,
                         pf_loaded, pf_hit):
    """LRU with prefetch groups ("sida" / "next_layer").

    Before access ``i``, every group ``j`` with ``pf_at[j] == i`` is applied in order: its ids (column
    order, -1 and repeats skipped) are moved to the most-recent end if resident, else loaded after
    evicting least-recent residents, unless that would need evicting an id of the same group (then the
    id is dropped). Group members form the most-recent prefix of the list while a group is applied, so
    the check ``group_weight + w[x] <= cap`` guarantees the eviction loop never reaches one of them.
    Returns the number of evictions logged; ``log_pf[k]`` is True for evictions made by a prefetch.
    """
    n = acc.shape[0]
    m = w.shape[0]
    g = pf_at.shape[0]
    p = pf_ids.shape[1]
    prev = np.full(m, -1, np.int64)  # doubly linked list, head = most recent
    nxt = np.full(m, -1, np.int64)
    res = np.zeros(m, np.bool_)
    fresh = np.zeros(m, np.bool_)  # resident by a prefetch load and not accessed since
    stamp = np.full(m, -1, np.int64)  # last group that named the id
    head = -1
    tail = -1
    used = 0
    used_b = 0
    top = 0
    ne = 0
    j = 0
    for i in range(n):
        while j < g and pf_at[j] == i:
            gw = 0  # weight of this group's members that are resident
            for c in range(p):
                x = pf_ids[j, c]
                if x < 0 or stamp[x] == j:
                    continue
                stamp[x] = j
                if res[x]:
                    gw += w[x]
                    if x != head:  # refresh: unlink, push at head
                        pp = prev[x]
                        q = nxt[x]
                        nxt[pp] = q
                        if q >= 0:
                            prev[q] = pp
                        else:
                            tail = pp
                        prev[x] = -1
                        nxt[x] = head
                        prev[head] = x
                        head = x
                    continue
                s = w[x]
                if gw + s > cap:
                    continue  # would have to evict a member of its own group (or larger than the cache)
                while used + s > cap:
                    v = tail
                    tail = prev[v]
                    if tail >= 0:
                        nxt[tail] = -1
                    else:
                        head = -1
                    res[v] = False
                    fresh[v] = False
                    used -= w[v]
                    used_b -= sz[v]
                    evicted[i] = v
                    log_t[ne] = i
                    log_id[ne] = v
                    log_pf[ne] = True
                    ne += 1
                res[x] = True
                fresh[x] = True
                pf_loaded[j, c] = True
                used += s
                used_b += sz[x]
                if used_b > top:
                    top = used_b
                gw += s
                prev[x] = -1
                nxt[x] = head
                if head >= 0:
                    prev[head] = x
                else:
                    tail = x
                head = x
            j += 1
        x = acc[i]
        if res[x]:
            hit[i] = True
            if fresh[x]:
                pf_hit[i] = True
                fresh[x] = False
            if x != head:
                pp = prev[x]
                q = nxt[x]
                nxt[pp] = q
                if q >= 0:
                    prev[q] = pp
                else:
                    tail = pp
                prev[x] = -1
                nxt[x] = head
                prev[head] = x
                head = x
            continue
        s = w[x]
        if s > cap:
            continue
        while used + s > cap:
            v = tail
            tail = prev[v]
            if tail >= 0:
                nxt[tail] = -1
            else:
                head = -1
            res[v] = False
            fresh[v] = False
            used -= w[v]
            used_b -= sz[v]
            evicted[i] = v
            log_t[ne] = i
            log_id[ne] = v
            ne += 1
        res[x] = True
        used += s
        used_b += sz[x]
        if used_b > top:
            top = used_b
        prev[x] = -1
        nxt[x] = head
        if head >= 0:
            prev[head] = x
        else:
            tail = x
        head = x
    peak[0] = top
    return ne


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------


def _as_int_array(name: str, v: object, *, ndim: int) -> np.ndarray:
    if type(v).__module__.startswith("torch"):
        v = v.detach().cpu().numpy()  # type: ignore[attr-defined]
    try:
        a = np.asarray(v)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{name}: expected a {ndim}-D integer array, got {type(v).__name__} ({e})") from None
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D integer array, got shape {a.shape}")
    if a.size == 0 and not isinstance(v, np.ndarray):
        a = a.astype(np.int64)  # an empty list has no dtype of its own
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer dtype, got {a.dtype}")
    return a


def _check_distinct(name: str, a: np.ndarray) -> None:
    """Raise unless the ids along the last axis of ``a`` (one token's top-k choices) are distinct."""
    if a.ndim < 1 or a.size == 0 or a.shape[-1] < 2:
        return
    s = np.sort(a.reshape(-1, a.shape[-1]), axis=-1)
    dup = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=-1))
    if dup.size:
        row = int(dup[0])
        where = np.unravel_index(row, a.shape[:-1]) if a.ndim > 1 else ()
        raise ValueError(f"{name}: expected distinct expert ids per token, got "
                         f"{a.reshape(-1, a.shape[-1])[row].tolist()} at index {tuple(int(i) for i in where)}")


def _check_count(name: str, v: object) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected a non-negative int, got {type(v).__name__} ({v!r})")
    if v < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {v}")
    return int(v)


def _per_id(name: str, v: object, m: int, *, integer: bool) -> np.ndarray:
    if integer:
        a = _as_int_array(name, v, ndim=1)
    else:
        if type(v).__module__.startswith("torch"):
            v = v.detach().cpu().numpy()  # type: ignore[attr-defined]
        a = np.asarray(v)
        if a.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array with one entry per id, got shape {a.shape}")
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
            raise TypeError(f"{name}: expected a numeric dtype, got {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: expected finite values, got NaN or inf")
    if a.shape[0] < m:
        raise ValueError(
            f"{name}: expected one entry per id (length > max id in accesses/prefetch_ids = {m - 1}), "
            f"got length {a.shape[0]}"
        )
    if np.any(a < 0):
        raise ValueError(f"{name}: expected non-negative values, got minimum {a.min()}")
    return a


def simulate_cache(
    accesses,
    capacity: int | None = None,
    policy: str = "lru",
    *,
    sizes=None,
    capacity_bytes: int | None = None,
    popularity=None,
    lfu_history: bool = False,
    prefetch_at=None,
    prefetch_ids=None,
) -> CacheStats:
    """Replay an expert access trace through a cache and count hits and misses.

    Parameters
    ----------
    accesses : array_like of int, shape (n,)
        Expert ids in access order, ``n >= 1``, ids ``>= 0``. For one cache shared by all layers,
        flatten (layer, expert) pairs first, e.g. with :func:`flatten_layer_expert`.
    capacity : int, optional
        Number of experts the cache holds (``>= 0``). Give exactly one of ``capacity`` and
        ``capacity_bytes``.
    policy : {"lru", "fifo", "lfu", "belady", "static", "sida", "next_layer"}
        Replacement policy; see the module docstring for the exact rules and tie-breaks.
    sizes : array_like of int, shape (m,), optional
        Bytes of each expert id (``m > max(accesses)`` and ``> max(prefetch_ids)``). Weights
        ``bytes_loaded``, ``bytes_prefetched`` and ``peak_resident_bytes``; required with ``capacity_bytes``.
    capacity_bytes : int, optional
        Cache size in bytes (``>= 0``): the resident experts' ``sizes`` sum to at most this.
    popularity : array_like of float, shape (m,), optional
        ``static`` only: per-id score (e.g. access counts from a profiling run) used to choose the pinned
        set. Defaults to the access counts of ``accesses`` itself (an oracle hot set).
    lfu_history : bool, default False
        ``lfu`` only: keep an expert's access count across evictions (perfect LFU) instead of resetting it.
    prefetch_at : array_like of int, shape (g,)
        ``sida`` / ``next_layer`` only (required there): non-decreasing access indices in ``[0, n)``;
        prefetch group ``j`` is applied just before access ``prefetch_at[j]`` (groups sharing an index
        in order of ``j``).
    prefetch_ids : array_like of int, shape (g, p)
        ``sida`` / ``next_layer`` only (required there): the ids of each prefetch group, highest
        priority first, ``-1`` = padding; ``p`` may be 0.

    Returns
    -------
    CacheStats
        ``hits``, ``misses``, ``hit_rate``, ``bytes_loaded`` and the timeline ``hit`` / ``evicted``;
        for the prefetching policies also ``prefetches``, ``bytes_prefetched``, ``prefetch_hits``.

    Raises
    ------
    TypeError
        Non-integer ``accesses``/``sizes``/capacities/prefetch arrays, or an unknown-type ``policy``.
    ValueError
        Empty trace, negative ids/capacities/sizes, unknown policy, both or neither capacity given,
        prefetch arguments missing (``sida``/``next_layer``) or given to another policy, mismatched
        prefetch shapes, ``prefetch_ids < -1``, ``prefetch_at`` outside ``[0, n)`` or decreasing.

    Examples
    --------
    >>> simulate_cache([1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5], 3, "fifo").misses
    9
    >>> simulate_cache([1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5], 4, "fifo").misses  # Belady's anomaly
    10
    >>> s = simulate_cache([0, 1, 2, 0], 2, "sida", prefetch_at=[2], prefetch_ids=[[2, -1]])
    >>> s.hit.tolist(), s.prefetches, s.prefetch_hits
    ([False, False, True, False], 1, 1)
    """
    if not isinstance(policy, str):
        raise TypeError(f"policy: expected one of {ALL_POLICIES}, got {type(policy).__name__} ({policy!r})")
    pol = policy.lower()
    if pol not in ALL_POLICIES:
        raise ValueError(f"policy: expected one of {ALL_POLICIES}, got {policy!r}")
    acc = _as_int_array("accesses", accesses, ndim=1)
    n = acc.shape[0]
    if n == 0:
        raise ValueError("accesses: expected at least one access, got an empty trace")
    lo, hi = int(acc.min()), int(acc.max())
    if lo < 0:
        raise ValueError(f"accesses: expected expert ids >= 0, got {lo}")
    if (capacity is None) == (capacity_bytes is None):
        raise ValueError(
            "capacity: expected exactly one of capacity (experts) or capacity_bytes (bytes), got "
            + ("neither" if capacity is None else "both")
        )
    if capacity is not None:
        cap = _check_count("capacity", capacity)
    else:
        cap = _check_count("capacity_bytes", capacity_bytes)
        if sizes is None:
            raise ValueError("sizes: expected per-id sizes in bytes when capacity_bytes is given, got None")
    if popularity is not None and pol != "static":
        raise ValueError(f"popularity: only used by policy='static', got policy={policy!r}")
    if not isinstance(lfu_history, (bool, np.bool_)):
        raise TypeError(f"lfu_history: expected a bool, got {type(lfu_history).__name__}")
    if lfu_history and pol != "lfu":
        raise ValueError(f"lfu_history: only used by policy='lfu', got lfu_history=True with policy={policy!r}")
    if n >= (1 << 31):
        raise ValueError(f"accesses: expected fewer than 2**31 accesses, got {n}")

    prefetching = pol in PREFETCH_POLICIES
    pf_at = pf_ids = None
    if not prefetching:
        for name, v in (("prefetch_at", prefetch_at), ("prefetch_ids", prefetch_ids)):
            if v is not None:
                raise ValueError(f"{name}: only used by policies {PREFETCH_POLICIES}, got policy={policy!r}")
    else:
        for name, v in (("prefetch_at", prefetch_at), ("prefetch_ids", prefetch_ids)):
            if v is None:
                raise ValueError(
                    f"{name}: required by policy={policy!r} (use empty arrays for no prefetches), got None"
                )
        pf_at = _as_int_array("prefetch_at", prefetch_at, ndim=1)
        pf_ids = _as_int_array("prefetch_ids", prefetch_ids, ndim=2)
        if pf_ids.shape[0] != pf_at.shape[0]:
            raise ValueError(
                f"prefetch_ids: expected shape ({pf_at.shape[0]}, p) (one row per prefetch_at entry), "
                f"got {pf_ids.shape}"
            )
        if pf_at.size:
            if int(pf_at.min()) < 0 or int(pf_at.max()) >= n:
                bad = int(pf_at.min()) if int(pf_at.min()) < 0 else int(pf_at.max())
                raise ValueError(f"prefetch_at: expected access indices in [0, {n}), got {bad}")
            dec = np.flatnonzero(np.diff(pf_at.astype(np.int64)) < 0)
            if dec.size:
                k = int(dec[0])
                raise ValueError(
                    f"prefetch_at: expected non-decreasing indices, got {int(pf_at[k])} then "
                    f"{int(pf_at[k + 1])} at positions {k}, {k + 1}"
                )
        if pf_ids.size:
            if int(pf_ids.min()) < -1:
                raise ValueError(f"prefetch_ids: expected ids >= 0 or -1 (padding), got {int(pf_ids.min())}")
            hi = max(hi, int(pf_ids.max()))

    m = hi + 1
    size_arr = None if sizes is None else _per_id("sizes", sizes, m, integer=True).astype(np.int64)
    pop_arr = None if popularity is None else _per_id("popularity", popularity, m, integer=False)

    # Dense ids keep the kernels' per-id arrays small; renumber sparse huge ids (order-preserving).
    uniq = None
    pf64 = None
    if m > max(_DENSE_ID_LIMIT, 4 * (n + (0 if pf_ids is None else pf_ids.size))):
        if pf_ids is not None:
            valid = pf_ids[pf_ids >= 0].astype(np.int64)
            uniq = np.unique(np.concatenate([acc.astype(np.int64), valid]))
            acc64 = np.searchsorted(uniq, acc.astype(np.int64)).astype(np.int64)
            pf64 = np.where(pf_ids >= 0, np.searchsorted(uniq, np.maximum(pf_ids, 0).astype(np.int64)), -1)
            pf64 = np.ascontiguousarray(pf64, dtype=np.int64)
        else:
            uniq, acc64 = np.unique(acc, return_inverse=True)
            acc64 = acc64.astype(np.int64).reshape(-1)
    else:
        acc64 = np.ascontiguousarray(acc, dtype=np.int64)
        if pf_ids is not None:
            pf64 = np.ascontiguousarray(pf_ids, dtype=np.int64)
    ids = uniq if uniq is not None else np.arange(m, dtype=np.int64)  # dense index -> original id
    md = ids.shape[0]
    sz = size_arr[ids] if size_arr is not None else None
    w = sz if capacity_bytes is not None else np.ones(md, np.int64)
    szk = sz if sz is not None else np.ones(md, np.int64)  # bytes (or unit) per id, for the peak
    cap64 = np.int64(cap)

    hit = np.zeros(n, np.bool_)
    evicted = np.full(n, -1, np.int64)
    n_log = n + (0 if pf64 is None else pf64.size)
    log_t = np.empty(n_log, np.int64)
    log_id = np.empty(n_log, np.int64)
    log_pf = np.zeros(n_log if prefetching else 0, np.bool_)
    peak = np.zeros(1, np.int64)
    pf_hit = np.zeros(n, np.bool_)  # NOTE: calloc'd, never touched by the demand policies
    pf_loaded = np.zeros((0, 0), np.bool_) if pf64 is None else np.zeros(pf64.shape, np.bool_)
    ne = 0
    if pol == "lru":
        ne = _lru_kernel(acc64, w, szk, cap64, hit, evicted, log_t, log_id, peak)
    elif pol == "fifo":
        ne = _fifo_kernel(acc64, w, szk, cap64, hit, evicted, log_t, log_id, peak)
    elif pol == "lfu":
        ne = _heap_policy_kernel(acc64, w, szk, cap64, hit, evicted, log_t, log_id, peak, 0, bool(lfu_history))
    elif pol == "belady":
        ne = _heap_policy_kernel(acc64, w, szk, cap64, hit, evicted, log_t, log_id, peak, 1, False)
    elif prefetching:
        at64 = np.ascontiguousarray(pf_at, dtype=np.int64)
        ne = _lru_prefetch_kernel(acc64, w, szk, cap64, at64, pf64, hit, evicted, log_t, log_id, log_pf,
                                  peak, pf_loaded, pf_hit)
    else:
        if pop_arr is not None:
            score = pop_arr[ids].astype(np.float64)
        else:
            score = np.bincount(acc64, minlength=md).astype(np.float64)
        order = np.lexsort((ids, -score))  # highest score first, then smaller id
        pinned = np.zeros(md, np.bool_)
        if capacity_bytes is None:
            pinned[order[:cap]] = True
        else:
            used = 0
            for j in order:
                if used + w[j] <= cap:
                    pinned[j] = True
                    used += int(w[j])
        _static_kernel(acc64, pinned, hit)
        seen = np.zeros(md, np.bool_)
        seen[acc64] = True
        peak[0] = int(szk[pinned & seen].sum())
    ne = int(ne)
    if uniq is not None:
        evicted = np.where(evicted >= 0, uniq[np.maximum(evicted, 0)], -1)
        ev_ids = uniq[log_id[:ne]]
    else:
        ev_ids = log_id[:ne].copy()
    hits = int(np.count_nonzero(hit))
    misses = n - hits
    if sz is None:
        bytes_loaded = misses
    else:
        bytes_loaded = int(sz[acc64[~hit]].sum())
    prefetches = bytes_prefetched = 0
    if pf64 is not None and pf64.size:
        loaded = pf64[pf_loaded]
        prefetches = int(loaded.size)
        bytes_prefetched = int(szk[loaded].sum())
    return CacheStats(
        policy=pol,
        capacity=None if capacity is None else cap,
        capacity_bytes=None if capacity_bytes is None else cap,
        hits=hits,
        misses=misses,
        bytes_loaded=bytes_loaded,
        hit=hit,
        evicted=evicted,
        eviction_steps=log_t[:ne].copy(),
        eviction_ids=ev_ids,
        prefetches=prefetches,
        bytes_prefetched=bytes_prefetched,
        prefetch_hits=int(np.count_nonzero(pf_hit)) if prefetching else 0,
        peak_resident_bytes=int(peak[0]),
        prefetch_hit=pf_hit,
        prefetch_loaded=pf_loaded,
        eviction_by_prefetch=log_pf[:ne].copy() if prefetching else np.zeros(ne, np.bool_),
    )


def flatten_layer_expert(topk_ids, num_experts: int) -> np.ndarray:
    """Turn per-layer top-k routing into one global access trace, in inference order.

    Expert ``e`` of layer ``l`` becomes id ``l * num_experts + e``. The order is the order a decoder
    runs: token 0 layer 0 (its ``k`` experts in the given order), token 0 layer 1, …, token 0 last
    layer, then token 1 layer 0, and so on.

    Parameters
    ----------
    topk_ids : array_like of int, shape (layers, tokens, k)
        Selected experts (a numpy array, nested list or torch tensor).
    num_experts : int
        Experts per layer (``>= 1``); every entry must lie in ``[0, num_experts)``.

    Returns
    -------
    numpy.ndarray
        ``int64[tokens * layers * k]`` access trace.

    Examples
    --------
    >>> flatten_layer_expert([[[0, 1]], [[2, 3]]], 4).tolist()  # 2 layers, 1 token, top-2
    [0, 1, 6, 7]
    """
    a = _as_int_array("topk_ids", topk_ids, ndim=3)
    if isinstance(num_experts, (bool, np.bool_)) or not isinstance(num_experts, (int, np.integer)):
        raise TypeError(
            f"num_experts: expected a positive int, got {type(num_experts).__name__} ({num_experts!r})"
        )
    if num_experts < 1:
        raise ValueError(f"num_experts: expected a positive int, got {num_experts}")
    if a.size and (a.min() < 0 or a.max() >= num_experts):
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise ValueError(f"topk_ids: expected expert ids in [0, {num_experts}), got {bad}")
    _check_distinct("topk_ids", a)
    layers = a.shape[0]
    g = a.astype(np.int64) + (np.arange(layers, dtype=np.int64) * int(num_experts))[:, None, None]
    return np.ascontiguousarray(g.transpose(1, 0, 2)).reshape(-1)
