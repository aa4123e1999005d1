r"""MoNDE hot/cold expert placement: which of a layer's experts move to the GPU for this batch.

Given the tokens :math:`n_e` each expert of one MoE layer receives in a batch, a *placement* is a bool
mask :math:`G` (True: move the expert's weights to the GPU and compute there; False: compute it near
data, sending only its activations over the link). Its predicted time is exactly
:func:`samoyeds_lab.offload.cost.layer_cost` for that mask:

.. math::

    T(G) = \max\Big(\sum_{e \in G} T_{gpu}(n_e),\ \sum_{e \notin G} T_{near}(n_e)\Big)

when GPU and near-data work run concurrently (MoNDE's load balancing, ``concurrent=True``), and the sum
of the two when they run one after the other. The per-expert times :math:`T_{gpu}`, :math:`T_{near}` are
those of :mod:`samoyeds_lab.offload.cost` (link transfer + roofline compute; see there).

Policies (:data:`POLICIES`):

``"threshold"``
    MoNDE's rule: experts with :math:`n_e \ge t` are hot and go to the GPU; default :math:`t` = the cost
    model's :func:`~samoyeds_lab.offload.cost.crossover_tokens` (the token count from which moving the
    weights is no slower than moving the activations). Resident experts with tokens stay on the GPU.
``"greedy"``
    Experts are taken in order of decreasing benefit :math:`T_{near}(n_e) - T_{gpu}(n_e)`; each one is
    moved to the GPU if that lowers :math:`T(G)` and fits the memory budget, else left near data (one
    pass, :math:`O(E)` evaluations).
``"exact"``
    The optimum: every subset of the experts that have tokens (at most :data:`EXACT_MAX_EXPERTS`) is
    evaluated at once, :math:`O(2^m m)`. Ties go to fewer experts on the GPU (less memory), then to the
    lowest-numbered experts.
``"all_gpu"`` / ``"all_near"``
    Baselines: every expert on the GPU (parameter offloading: all weights cross the link) / every
    expert near data.

Why both greedy and exact: with ``concurrent=False`` the objective is separable,
:math:`T = \sum_e T_{near}(n_e) - \sum_{e \in G} (T_{near} - T_{gpu})(n_e)`, and greedy is optimal
(also under an expert-count budget: it keeps the ``cap`` largest positive benefits). With
``concurrent=True`` minimising a max of two sums is a partition problem (NP-hard in general); greedy can
stop early and ``"exact"`` shows by how much.

Memory budget: ``max_on_gpu`` (experts) and/or ``gpu_budget_bytes`` (bytes; one expert needs
:math:`P b` bytes) cap the number of experts whose weights are in GPU memory during the layer, counting
the ``resident`` ones, as :attr:`~samoyeds_lab.offload.cost.LayerCost.gpu_weight_bytes` does. Idle
experts (:math:`n_e = 0`) cost nothing on either side and are never moved by the searching policies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from samoyeds_lab.offload.cost import LayerCost, crossover_tokens, layer_cost

__all__ = ["POLICIES", "EXACT_MAX_EXPERTS", "Placement", "place_experts", "place_layers"]

#: Placement policies of :func:`place_experts`.
POLICIES = ("threshold", "greedy", "exact", "all_gpu", "all_near")
#: Most experts with tokens the ``"exact"`` policy searches over (2^16 = 65 536 subsets).
EXACT_MAX_EXPERTS = 16


@dataclass(frozen=True)
class Placement:
    r"""Where one layer's experts run for one batch, and what the cost model predicts for it.

    Attributes
    ----------
    policy : str
        The policy that chose it (one of :data:`POLICIES`).
    mask : numpy.ndarray of bool, shape (E,)
        True: the expert runs on the GPU (weights moved there unless resident); False: near data.
    time : float
        Predicted layer time :math:`T(G)`, seconds (``cost.total``).
    gpu_time, near_time : float
        :math:`\sum_{e \in G} T_{gpu}` and :math:`\sum_{e \notin G} T_{near}`, seconds.
    cost : LayerCost
        The full breakdown (per-expert transfer/compute of the chosen path, memory, throughput).
    threshold : float or None
        The token threshold the ``"threshold"`` policy used (``inf`` when near data wins for every token
        count); ``None`` for the other policies.
    evaluated : int
        Placements whose layer time was evaluated to choose this one.
    """

    policy: str
    mask: np.ndarray
    time: float
    gpu_time: float
    near_time: float
    cost: LayerCost
    threshold: float | None
    evaluated: int

    @property
    def num_on_gpu(self) -> int:
        """Experts placed on the GPU (``mask.sum()``)."""
        return int(np.count_nonzero(self.mask))

    @property
    def gpu_bytes(self) -> float:
        """GPU memory the layer's expert weights need (placed or resident experts × ``P·b``), bytes."""
        return self.cost.gpu_weight_bytes


# ----------------------------------------------------------------------------------------- checks
def _cap(max_on_gpu, gpu_budget_bytes, expert_bytes: float, E: int) -> int:
    """The number of experts allowed in GPU memory (E when unconstrained)."""
    cap = E
    if max_on_gpu is not None:
        if isinstance(max_on_gpu, bool) or not isinstance(max_on_gpu, (int, np.integer)) or max_on_gpu < 0:
            raise ValueError(f"max_on_gpu: expected an int >= 0 or None, got {max_on_gpu!r}")
        cap = min(cap, int(max_on_gpu))
    if gpu_budget_bytes is not None:
        if (isinstance(gpu_budget_bytes, bool) or not isinstance(gpu_budget_bytes, (int, float, np.integer, np.floating))
                or not gpu_budget_bytes >= 0 or not math.isfinite(gpu_budget_bytes)):
            raise ValueError(f"gpu_budget_bytes: expected a finite number of bytes >= 0 or None, got {gpu_budget_bytes!r}")
        cap = min(cap, int(math.floor(float(gpu_budget_bytes) / expert_bytes + 1e-9)))
    return cap


def _bool_mask(name: str, v, E: int) -> np.ndarray:
    if v is None:
        return np.zeros(E, dtype=bool)
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().numpy()
    a = np.asarray(v)
    if a.dtype != bool:
        raise TypeError(f"{name}: expected a bool mask (or None), got dtype {a.dtype}")
    if a.shape != (E,):
        raise ValueError(f"{name}: expected shape ({E},) like tokens_per_expert, got {a.shape}")
    return a.copy()


def _counts(n) -> np.ndarray:
    if hasattr(n, "detach") and hasattr(n, "cpu"):
        n = n.detach().cpu().numpy()
    if isinstance(n, (bool, str)) or n is None:
        raise TypeError(f"tokens_per_expert: expected a 1-D array of token counts, got {type(n).__name__}")
    try:
        a = np.asarray(n, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"tokens_per_expert: expected a 1-D array of token counts, got {type(n).__name__}") from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"tokens_per_expert: expected a non-empty 1-D array (one count per expert), got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"tokens_per_expert: expected finite counts >= 0, got min {a.min()!r}, max {a.max()!r}")
    return a


# ------------------------------------------------------------------------------------------ policies
def place_experts(
    tokens_per_expert,
    expert_params: float,
    gpu,
    near,
    *,
    d_model: int,
    policy: str = "greedy",
    threshold: float | None = None,
    resident=None,
    concurrent: bool = True,
    max_on_gpu: int | None = None,
    gpu_budget_bytes: float | None = None,
    link=None,
    bytes_per_param: float = 2.0,
    bytes_per_act: float = 2.0,
    sparse: bool = False,
    efficiency: float = 1.0,
    overlap: bool = False,
    near_bytes: float | None = None,
    near_sparse: bool = False,
) -> Placement:
    r"""Choose which experts of one layer run on the GPU for a batch, and predict the layer time.

    Parameters
    ----------
    tokens_per_expert : array-like or torch.Tensor, shape (E,)
        :math:`n_e`, tokens routed to each expert in this batch (e.g. one row of
        :func:`samoyeds_lab.routing.tokens_per_expert`'s ``counts[l, b]``).
    expert_params : float
        :math:`P`, parameters per expert (Mixtral-8x7B: ``3 · 4096 · 14336``).
    gpu, near : HardwareProfile or str
        The GPU and the device holding the offloaded experts (``near_data`` or ``host`` profile).
    d_model : int
        Hidden size (activation width crossing the link on the near-data path).
    policy : str
        One of :data:`POLICIES` (see the module docstring).
    threshold : float, optional
        ``"threshold"`` only: tokens from which an expert is hot; default
        :func:`~samoyeds_lab.offload.cost.crossover_tokens` for these profiles and settings.
    resident : array-like of bool, shape (E,), optional
        Experts already in GPU memory (no weight transfer; they count against the budget).
    concurrent : bool
        GPU and near-data work overlap in time (MoNDE, the default) or run one after the other.
    max_on_gpu : int, optional
        At most this many experts' weights in GPU memory (resident included).
    gpu_budget_bytes : float, optional
        At most this many bytes of expert weights in GPU memory (``floor(budget / (P·b))`` experts).
    link, bytes_per_param, bytes_per_act, sparse, efficiency, overlap, near_bytes, near_sparse
        As in :func:`samoyeds_lab.offload.cost.layer_cost` (``near_bytes``: the bytes the near side reads
        per expert, e.g. a Samoyeds operand's; ``near_sparse``: it computes at its sparse-kernel rate).

    Returns
    -------
    Placement

    Raises
    ------
    ValueError
        Unknown ``policy``; ``threshold`` given to another policy; more resident experts than the
        budget allows; ``"all_gpu"`` with a budget smaller than ``E``; ``"exact"`` with more than
        :data:`EXACT_MAX_EXPERTS` experts that have tokens; bad counts or numbers.
    TypeError
        A wrong type (a non-bool ``resident`` mask, a non-numeric count, ...).
    """
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"policy: expected one of {POLICIES}, got {policy!r}")
    n = _counts(tokens_per_expert)
    E = n.shape[0]
    res = _bool_mask("resident", resident, E)
    if threshold is not None and policy != "threshold":
        raise ValueError(f"threshold: only used by policy='threshold', got threshold={threshold!r} with policy={policy!r}")
    kw = dict(d_model=d_model, resident=res, concurrent=concurrent, link=link, bytes_per_param=bytes_per_param,
              bytes_per_act=bytes_per_act, sparse=sparse, efficiency=efficiency, overlap=overlap,
              near_bytes=near_bytes, near_sparse=near_sparse)
    # Per-expert path times (validates every argument): all on the GPU / all near data.
    on = layer_cost(n, expert_params, gpu, near, on_gpu=np.ones(E, dtype=bool), **kw)
    off = layer_cost(n, expert_params, gpu, near, on_gpu=np.zeros(E, dtype=bool), **kw)
    tg = np.asarray(on.gpu.total, dtype=np.float64)
    tm = np.asarray(off.near.total, dtype=np.float64)
    cap = _cap(max_on_gpu, gpu_budget_bytes, float(expert_params) * float(bytes_per_param), E)
    if int(res.sum()) > cap:
        raise ValueError(f"resident: {int(res.sum())} resident experts exceed the GPU budget of {cap} experts "
                         f"(max_on_gpu={max_on_gpu!r}, gpu_budget_bytes={gpu_budget_bytes!r})")
    active = n > 0

    def total(mask: np.ndarray) -> float:
        a, c = float(tg[mask].sum()), float(tm[~mask].sum())
        return max(a, c) if concurrent else a + c

    used_threshold = None
    evaluated = 1
    if policy == "all_gpu":
        if cap < E:
            raise ValueError(f"policy: 'all_gpu' places all {E} experts on the GPU, more than the budget of {cap} "
                             f"(max_on_gpu={max_on_gpu!r}, gpu_budget_bytes={gpu_budget_bytes!r})")
        mask = np.ones(E, dtype=bool)
    elif policy == "all_near":
        mask = np.zeros(E, dtype=bool)
    elif policy == "threshold":
        if threshold is None:
            x = crossover_tokens(gpu, near, expert_params, d_model=d_model, link=link,
                                 bytes_per_param=bytes_per_param, bytes_per_act=bytes_per_act, sparse=sparse,
                                 efficiency=efficiency, overlap=overlap, near_bytes=near_bytes,
                                 near_sparse=near_sparse)
            used_threshold = math.inf if x is None else float(x)
        else:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
                    or math.isnan(threshold) or threshold < 0:
                raise ValueError(f"threshold: expected a number of tokens >= 0, got {threshold!r}")
            used_threshold = float(threshold)
        hot = active & ((n >= used_threshold) | res)
        mask = res.copy()
        free = cap - int(res.sum())
        # NOTE: over budget, keep the hottest (most tokens; ties to the lower id) non-resident hot experts.
        cand = np.nonzero(hot & ~res)[0]
        cand = cand[np.argsort(-n[cand], kind="stable")][:free]
        mask[cand] = True
        mask &= active | res
        mask[res & ~active] = True
    elif policy == "greedy":
        mask = np.zeros(E, dtype=bool)
        best = total(mask)
        order = np.argsort(-(tm - tg), kind="stable")
        for e in order:
            if not active[e]:
                continue
            if not res[e] and int(np.count_nonzero(mask | res)) >= cap:
                continue
            mask[e] = True
            t = total(mask)
            evaluated += 1
            if t < best * (1 - 1e-12):
                best = t
            else:
                mask[e] = False
        mask[res & ~active] = True
    else:  # exact
        idx = np.nonzero(active)[0]
        m = idx.size
        if m > EXACT_MAX_EXPERTS:
            raise ValueError(
                f"tokens_per_expert: policy='exact' searches all 2^m subsets of the m experts with tokens; expected "
                f"m <= {EXACT_MAX_EXPERTS}, got m={m} (of E={E}); use policy='greedy' for larger layers")
        codes = np.arange(1 << m, dtype=np.int64)
        bits = ((codes[:, None] >> np.arange(m)) & 1).astype(bool)  # [2^m, m]
        g = bits @ tg[idx]
        c = tm[idx].sum() - bits @ tm[idx]
        c = np.maximum(c, 0.0)
        times = np.maximum(g, c) if concurrent else g + c
        size = bits.sum(1) + int((res & ~active).sum())
        used = size + (~bits & res[idx]).sum(1)  # in GPU memory: placed, or resident anyway
        ok = used <= cap
        times = np.where(ok, times, np.inf)
        tmin = times.min()
        near_best = np.nonzero(times <= tmin * (1 + 1e-12) + 1e-300)[0]
        pick = near_best[np.lexsort((near_best, size[near_best]))[0]]
        mask = np.zeros(E, dtype=bool)
        mask[idx[bits[pick]]] = True
        mask[res & ~active] = True
        evaluated = int(codes.size)
    lc = layer_cost(n, expert_params, gpu, near, on_gpu=mask, **kw)
    return Placement(policy=policy, mask=mask, time=lc.total, gpu_time=lc.gpu_time, near_time=lc.near_time,
                     cost=lc, threshold=used_threshold, evaluated=evaluated)


def place_layers(counts, expert_params: float, gpu, near, *, d_model: int, policy: str = "greedy",
                 **kwargs) -> list[Placement]:
    """:func:`place_experts` for every layer: ``counts`` is ``[L, E]`` (one batch's tokens per expert per layer).

    Extra keywords are passed on (``resident`` then applies to every layer). Returns ``L`` placements.
    """
    if hasattr(counts, "detach") and hasattr(counts, "cpu"):
        counts = counts.detach().cpu().numpy()
    try:
        a = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"counts: expected an [L, E] array of token counts, got {type(counts).__name__}") from None
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"counts: expected an [L, E] array (layers × experts) with L >= 1, got shape {a.shape}")
    return [place_experts(row, expert_params, gpu, near, d_model=d_model, policy=policy, **kwargs) for row in a]
