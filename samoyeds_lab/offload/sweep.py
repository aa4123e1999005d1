r"""Policy sweeps for the offloading lab: hit rate against GPU budget for every policy, and the latency
of each policy at one budget, on one routing trace.

This is the glue between :func:`~samoyeds_lab.offload.simulate.simulate_offload` /
:func:`~samoyeds_lab.offload.simulate.offload_latency` and Lab 06's figures: it runs the same trace
through every policy with the *same* budget, batch size and expert sizes, so every number in one
chart is an apples-to-apples comparison.

What-if sizes
-------------
The routing comes from the tiny model (4 layers × 8 experts), whose experts are a few hundred kilobytes
— too small for transfer times to matter. :class:`ExpertShape` lets the lab replay that routing with the
experts of a real model (by default one Mixtral-8x7B SwiGLU expert: ``3 · 4096 · 14336`` parameters,
352 MB at fp16, ``6 · 4096 · 14336`` FLOP per token). The routing statistics are the tiny model's; the
sizes are Mixtral's. The lab says so wherever it shows a time.

Policies
--------
``"lru"``, ``"lfu"``, ``"fifo"`` (reactive caches), ``"static"`` (a hot set pinned from a *profiling*
trace, e.g. the other domains — Fiddler's offline profile), ``"sida"`` (prefetch the SiDA predictor's
experts for every layer of the batch), ``"next_layer"`` (prefetch with layer ``l``'s gate applied to layer
``l-1``'s hidden state) and ``"belady"`` (the offline optimum of demand paging: the bound every chart shows;
``static`` and the prefetching policies are not demand paging and may pass it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from samoyeds_lab._checks import check_float, check_int

from samoyeds_lab.offload.simulate import OffloadLatency, OffloadStats, offload_latency, simulate_offload

__all__ = [
    "ExpertShape",
    "MIXTRAL_EXPERT",
    "SWEEP_POLICIES",
    "BudgetSweep",
    "budget_sweep",
    "policy_latencies",
]

SWEEP_POLICIES = ("lru", "lfu", "fifo", "static", "sida", "next_layer", "belady")
_NEEDS_PREDICTION = ("sida", "next_layer")


@dataclass(frozen=True)
class ExpertShape:
    """The size of one SwiGLU expert (gate, up: ``d_ffn × d_model``; down: ``d_model × d_ffn``).

    Attributes
    ----------
    name : str
        Label for figures.
    d_model, d_ffn : int
        Hidden and expert intermediate sizes.
    bytes_per_param : float
        2 for fp16/bf16.
    """

    name: str
    d_model: int
    d_ffn: int
    bytes_per_param: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name: expected a str, got {type(self.name).__name__} ({self.name!r})")
        for n in ("d_model", "d_ffn"):
            check_int(n, getattr(self, n), lo=1)
        check_float("bytes_per_param", self.bytes_per_param, lo=0, lo_open=True)

    @property
    def params(self) -> int:
        """``3 · d_model · d_ffn``."""
        return 3 * self.d_model * self.d_ffn

    @property
    def nbytes(self) -> int:
        """Weight bytes of one expert."""
        return int(round(self.params * self.bytes_per_param))

    @property
    def flops_per_token(self) -> int:
        """``2 · params`` (three GEMVs)."""
        return 2 * self.params


MIXTRAL_EXPERT = ExpertShape("Mixtral-8x7B expert", 4096, 14336)


def _check_policies(policies) -> tuple[str, ...]:
    if isinstance(policies, str):
        policies = (policies,)
    out = tuple(policies)
    if not out:
        raise ValueError("policies: expected at least one policy, got none")
    for p in out:
        if p not in SWEEP_POLICIES:
            raise ValueError(f"policies: expected names from {SWEEP_POLICIES}, got {p!r}")
    return out


def _check_predictions(predictions) -> None:
    if predictions is not None and not isinstance(predictions, dict):
        raise TypeError(f"predictions: expected a dict {{policy: int [layers, tokens, p]}} or None, got "
                        f"{type(predictions).__name__}")


def _run(topk, E, policy, capacity, *, scope, batch_tokens, predictions, popularity, expert_bytes) -> OffloadStats:
    kw = {}
    if policy in _NEEDS_PREDICTION:
        if predictions is None or policy not in predictions:
            raise ValueError(f"predictions: policy {policy!r} needs predictions[{policy!r}] "
                             f"(int [layers, tokens, p]), got {None if predictions is None else sorted(predictions)}")
        kw["predicted"] = predictions[policy]
    if policy == "static" and popularity is not None:
        kw["popularity"] = popularity
    return simulate_offload(topk, E, policy=policy, capacity=int(capacity), scope=scope,
                            batch_tokens=batch_tokens, expert_bytes=expert_bytes, **kw)


@dataclass(frozen=True)
class BudgetSweep:
    """Hit rate of every policy at every GPU budget (:func:`budget_sweep`).

    Attributes
    ----------
    capacities : numpy.ndarray
        ``int64[c]`` budgets in experts (over all layers).
    hit_rate : dict of str to numpy.ndarray
        ``float64[c]`` per policy: fraction of expert uses served from GPU memory.
    bytes_loaded : dict of str to numpy.ndarray
        ``float64[c]`` per policy: units moved over the link (demand + prefetch), one per expert load.
    scope : str
    batch_tokens : int
    """

    capacities: np.ndarray
    hit_rate: dict = field(default_factory=dict)
    bytes_loaded: dict = field(default_factory=dict)
    scope: str = "global"
    batch_tokens: int = 1


def budget_sweep(
    topk_ids,
    num_experts: int,
    capacities,
    *,
    policies=SWEEP_POLICIES,
    scope: str = "global",
    batch_tokens: int = 1,
    predictions: dict | None = None,
    popularity=None,
) -> BudgetSweep:
    """Hit rate against GPU budget (in experts) for several policies on one trace.

    Parameters
    ----------
    topk_ids : array_like of int, shape (layers, tokens, k)
        The routing to replay.
    num_experts : int
        Experts per layer.
    capacities : sequence of int
        Budgets in experts (total over all layers), each ``>= 0``.
    policies : sequence of str
        Names from :data:`SWEEP_POLICIES`.
    scope : {"global", "per_layer"}
    batch_tokens : int
        Tokens per batch (a batch needs the union of its tokens' experts).
    predictions : dict, optional
        ``{"sida": int[layers, tokens, p], "next_layer": …}`` for the prefetching policies.
    popularity : array_like, shape (layers, E), optional
        Profile for ``static`` (default: the trace's own counts, an oracle hot set).

    Returns
    -------
    BudgetSweep
    """
    pols = _check_policies(policies)
    _check_predictions(predictions)
    if isinstance(capacities, (str, bytes)) or not hasattr(capacities, "__iter__"):
        raise TypeError(f"capacities: expected a sequence of ints, got {type(capacities).__name__}")
    caps_in = list(capacities)
    if not caps_in:
        raise ValueError(f"capacities: expected a non-empty sequence of ints, got {capacities!r}")
    caps = np.asarray([check_int("capacities", c, lo=0) for c in caps_in], dtype=np.int64)
    hr, moved = {}, {}
    for p in pols:
        h = np.empty(caps.size)
        b = np.empty(caps.size)
        for i, c in enumerate(caps):
            st = _run(topk_ids, num_experts, p, c, scope=scope, batch_tokens=batch_tokens,
                      predictions=predictions, popularity=popularity, expert_bytes=None)
            h[i] = st.hit_rate
            b[i] = st.bytes_demand + st.bytes_prefetched
        hr[p], moved[p] = h, b
    return BudgetSweep(capacities=caps, hit_rate=hr, bytes_loaded=moved, scope=scope, batch_tokens=batch_tokens)


def policy_latencies(
    topk_ids,
    num_experts: int,
    capacity: int,
    *,
    profile_gpu="h100_pcie",
    link_gbs: float | None = None,
    expert: ExpertShape = MIXTRAL_EXPERT,
    policies=SWEEP_POLICIES,
    scope: str = "global",
    batch_tokens: int = 1,
    predictions: dict | None = None,
    popularity=None,
) -> dict[str, tuple[OffloadStats, OffloadLatency]]:
    """Replay the trace under every policy at one budget and turn each replay into time.

    Every expert has ``expert``'s size; compute is the GPU roofline of
    :func:`~samoyeds_lab.offload.simulate.offload_latency`; loads cross a link of ``link_gbs`` GB/s
    (default: the GPU profile's own link).

    Returns
    -------
    dict
        ``policy -> (OffloadStats, OffloadLatency)``; each latency has ``.all_resident_s``, the time with
        every expert in GPU memory (the same for every policy).
    """
    pols = _check_policies(policies)
    _check_predictions(predictions)
    capacity = check_int("capacity", capacity, lo=0)
    if not isinstance(expert, ExpertShape):
        raise TypeError(f"expert: expected an ExpertShape, got {type(expert).__name__}")
    if link_gbs is not None and not (isinstance(link_gbs, (int, float)) and not isinstance(link_gbs, bool)
                                     and np.isfinite(link_gbs) and link_gbs > 0):
        raise ValueError(f"link_gbs: expected a positive number of GB/s, got {link_gbs!r}")
    out = {}
    for p in pols:
        st = _run(topk_ids, num_experts, p, capacity, scope=scope, batch_tokens=batch_tokens,
                  predictions=predictions, popularity=popularity, expert_bytes=expert.nbytes)
        lat = offload_latency(st, profile_gpu=profile_gpu, expert_flops=expert.flops_per_token,
                              link=None if link_gbs is None else float(link_gbs))
        out[p] = (st, lat)
    return out


# ----------------------------------------------------------------------------------------------------
# SiDA's regime: many small experts, top-1 (a Switch-like preset), and SiDA as the paper runs it
# ----------------------------------------------------------------------------------------------------
#: One Switch-base expert (``d_model = 768``, a 768 → 3072 → 768 ReLU FFN: ``2 · 768 · 3072`` parameters),
#: written as the SwiGLU shape with the same parameter count (``3 · 768 · 2048``): 4.7 MB at fp16.
SWITCH_BASE_EXPERT = ExpertShape("Switch-base expert", 768, 2048)

__all__ += ["SWITCH_BASE_EXPERT", "switch_like_trace", "hash_policy_latency"]


def switch_like_trace(num_layers: int = 6, num_experts: int = 128, tokens: int = 4096, *, vocab: int = 4096,
                      zipf: float = 0.0, token_share: float = 0.8, seed: int = 0) -> np.ndarray:
    r"""A synthetic top-1 routing trace with Switch-Transformer-like statistics: int64 ``[layers, tokens, 1]``.

    Switch routing is driven mostly by the token itself, and its load-balancing loss spreads the tokens
    evenly over the experts. Here every layer gives each of ``vocab`` token ids a *home* expert (each
    expert homes ``vocab / num_experts`` ids, a fixed random assignment, seed 123); token ids are drawn
    with :math:`P(v) \propto (v+1)^{-\text{zipf}}` (0 = uniform: flat expert popularity, what the balancing
    loss aims at); a share ``token_share`` of the tokens goes to its home expert, the rest to a uniformly
    random one (the context's part). A what-if, not a recorded Switch trace.

    Parameters
    ----------
    num_layers, num_experts, tokens, vocab : int
        ``>= 1``; ``vocab >= num_experts``.
    zipf : float
        ``>= 0``.
    token_share : float
        In ``[0, 1]``.
    seed : int
        Token draws and the context's share (the home table is fixed).
    """
    L = check_int("num_layers", num_layers, lo=1)
    E = check_int("num_experts", num_experts, lo=1)
    T = check_int("tokens", tokens, lo=1)
    V = check_int("vocab", vocab, lo=E)
    a = check_float("zipf", zipf, lo=0.0)
    c = check_float("token_share", token_share, lo=0.0, hi=1.0)
    seed = check_int("seed", seed, lo=0)
    home = np.random.default_rng(123).permuted(np.tile(np.arange(V) % E, (L, 1)), axis=1)
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, V + 1, dtype=np.float64) ** a
    tok = rng.choice(V, T, p=p / p.sum())
    ids = home[:, tok]
    ctx = rng.random((L, T)) >= c
    ids[ctx] = rng.integers(0, E, int(ctx.sum()))
    return ids[..., None].astype(np.int64)


def hash_policy_latency(
    predicted_ids,
    num_experts: int,
    capacity: int,
    *,
    profile_gpu="h100_pcie",
    link_gbs: float | None = None,
    expert: ExpertShape = MIXTRAL_EXPERT,
    scope: str = "global",
    batch_tokens: int = 1,
) -> tuple[OffloadStats, OffloadLatency]:
    """SiDA as the paper serves (hash routing): the predicted experts are the ones computed.

    The predicted routing is replayed as the trace *and* prefetched with itself (policy ``"sida"``), so
    no access can miss and no prefetch is wasted; what is left is the link time the previous step's
    compute does not hide. Same arguments and model as :func:`policy_latencies` (``predicted_ids``:
    int ``[layers, tokens, k]``, e.g. :attr:`~samoyeds_lab.offload.hash_routing.HashRoutingEval.hash_topk`).
    The fidelity cost (the router would have chosen otherwise) is not in this number: measure it with
    :func:`~samoyeds_lab.offload.hash_routing.hash_routing_eval`.
    """
    capacity = check_int("capacity", capacity, lo=0)
    if not isinstance(expert, ExpertShape):
        raise TypeError(f"expert: expected an ExpertShape, got {type(expert).__name__}")
    if link_gbs is not None and not (isinstance(link_gbs, (int, float)) and not isinstance(link_gbs, bool)
                                     and np.isfinite(link_gbs) and link_gbs > 0):
        raise ValueError(f"link_gbs: expected a positive number of GB/s, got {link_gbs!r}")
    st = simulate_offload(predicted_ids, num_experts, policy="sida", capacity=capacity, scope=scope,
                          batch_tokens=batch_tokens, expert_bytes=expert.nbytes, predicted=predicted_ids)
    lat = offload_latency(st, profile_gpu=profile_gpu, expert_flops=expert.flops_per_token,
                          link=None if link_gbs is None else float(link_gbs))
    return st, lat
