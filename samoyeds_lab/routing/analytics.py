"""Hotness and locality analytics of a :class:`~samoyeds_lab.routing.RoutingTrace`.

Pure functions of a trace (no model needed), returning torch tensors. Notation: ``L`` layers, ``T``
tokens, ``k`` experts per token, ``E`` experts, ``c[l, e]`` the number of (token, choice) slots of
layer ``l`` routed to expert ``e`` (``Σ_e c[l, e] = T·k``).

What they answer:

* :func:`expert_frequency`, :func:`imbalance` — which experts are hot, and how uneven the load is
  (what an expert cache or MoNDE's hot/cold split exploits, and what stalls expert parallelism).
* :func:`temporal_locality` — do consecutive tokens reuse experts? (Mixtral paper, Sec. 5: 14–28 %
  same first choice vs 12.5 % random; first-or-second 62–67 % vs 46 % at layer 15.)
* :func:`transition_matrix`, :func:`coactivation` — structure across layers and inside a layer
  (what Pre-gated MoE / next-layer prefetch rely on).
* :func:`tokens_per_expert` — the per-expert token counts of a batch, which decide the kernels' ``n``
  (Samoyeds pads every expert's tokens up to 64-token tiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from .._checks import check_alloc, check_bool, check_int
from .trace import RoutingTrace


def _check_trace(trace: object) -> RoutingTrace:
    if not isinstance(trace, RoutingTrace):
        raise TypeError(f"trace: expected a RoutingTrace, got {type(trace).__name__}")
    return trace


def expert_counts(trace: RoutingTrace, *, choice: int | None = None) -> torch.Tensor:
    """int64 ``[L, E]`` number of slots routed to each expert: ``c[l, e] = #{(t, j) : ids[l, t, j] = e}``.

    ``choice=j`` counts only the ``j``-th choice (``choice=0``: first choices, ``Σ_e = T``).
    """
    trace = _check_trace(trace)
    check_alloc("num_experts", (trace.num_layers, trace.num_experts), torch.int64, what="count table [layers, E]")
    ids = trace.topk_ids
    if choice is not None:
        j = check_int("choice", choice, lo=0, hi=trace.top_k - 1)
        ids = ids[:, :, j : j + 1]
    L, E = trace.num_layers, trace.num_experts
    offs = (torch.arange(L) * E).view(L, 1, 1)
    return torch.bincount((ids + offs).reshape(-1), minlength=L * E).view(L, E)


def expert_frequency(trace: RoutingTrace, *, choice: int | None = None, weighted: bool = False) -> torch.Tensor:
    """float64 ``[L, E]`` share of each expert in a layer's routing; every row sums to 1.

    .. math:: f[l, e] = c[l, e] / (T·k)

    so ``k·f[l, e]`` is the fraction of tokens that use expert ``e``. ``choice=j`` restricts to the
    ``j``-th choice (``f = c_j / T``). ``weighted=True`` uses routing-weight mass instead of counts:
    ``f[l, e] = Σ_{t,j: ids=e} w[l,t,j] / Σ w[l]``.
    """
    trace = _check_trace(trace)
    weighted = check_bool("weighted", weighted)
    if not weighted:
        c = expert_counts(trace, choice=choice).double()
        return c / c.sum(dim=1, keepdim=True)
    check_alloc("num_experts", (trace.num_layers, trace.num_experts), torch.float64, what="weight table [layers, E]")
    ids, w = trace.topk_ids, trace.weights.double()
    if choice is not None:
        j = check_int("choice", choice, lo=0, hi=trace.top_k - 1)
        ids, w = ids[:, :, j : j + 1], w[:, :, j : j + 1]
    L, E = trace.num_layers, trace.num_experts
    mass = torch.zeros(L, E, dtype=torch.float64).scatter_add_(1, ids.reshape(L, -1), w.reshape(L, -1))
    total = mass.sum(dim=1, keepdim=True)
    if bool((total == 0).any()):
        raise ValueError("trace: weighted frequency needs a positive weight sum in every layer, got an all-zero layer")
    return mass / total


@dataclass(frozen=True)
class Imbalance:
    """Load imbalance of every layer (tensors ``[L]``, float64).

    Attributes
    ----------
    max_over_mean
        ``max_e c[l, e] / mean_e c[l, e]`` with ``mean = T·k/E`` (1 = perfectly balanced; at most
        ``E/k``, reached when some expert serves every token). The straggler factor of expert-parallel
        execution.
    cv
        Coefficient of variation ``std_e(c) / mean_e(c)`` (population std; 0 = balanced).
    entropy
        Shannon entropy of ``f[l, ·]`` in bits, ``-Σ_e f log2 f`` (``0·log 0 = 0``).
    normalized_entropy
        ``entropy / log2(E)`` in ``[0, 1]`` (1 = uniform).
    """

    max_over_mean: torch.Tensor
    cv: torch.Tensor
    entropy: torch.Tensor
    normalized_entropy: torch.Tensor


def imbalance(trace: RoutingTrace) -> Imbalance:
    """Per-layer load imbalance (max/mean, CV, entropy) of the expert counts; see :class:`Imbalance`."""
    trace = _check_trace(trace)
    c = expert_counts(trace).double()
    mean = c.mean(dim=1)
    f = c / c.sum(dim=1, keepdim=True)
    plogp = torch.where(f > 0, f * torch.log2(f.clamp_min(1e-300)), torch.zeros_like(f))
    ent = -plogp.sum(dim=1)
    E = trace.num_experts
    return Imbalance(
        max_over_mean=c.max(dim=1).values / mean,
        cv=c.std(dim=1, unbiased=False) / mean,
        entropy=ent,
        normalized_entropy=ent / math.log2(E) if E > 1 else torch.ones_like(ent),
    )


# ------------------------------------------------------------------------------- temporal locality
def _uniform_overlap(num_experts: int, depth: int) -> float:
    """P(two independent uniformly random ``depth``-subsets of ``E`` experts intersect) = 1 − C(E−d, d)/C(E, d)."""
    return 1.0 - math.comb(num_experts - depth, depth) / math.comb(num_experts, depth)


def _measured_overlap_baseline(sets: np.ndarray) -> float:
    """P(two tokens drawn independently from the empirical distribution of top-d sets intersect).

    Inclusion–exclusion over the shared subsets ``S``:
    ``P(A ∩ B ≠ ∅) = Σ_{S ≠ ∅} (−1)^{|S|+1} P(S ⊆ A)·P(S ⊆ B) = Σ_S (−1)^{|S|+1} (n_S / T)²``,
    with ``n_S`` the number of tokens whose top-d set contains ``S`` (sets of a row are sorted, so a
    sub-tuple of columns identifies ``S``). For ``d = 1`` this is ``Σ_e p_e²``.
    """
    T, d = sets.shape
    total = 0.0
    for r in range(1, d + 1):
        # every token contributes each of its r-subsets once (rows are sorted, ids distinct)
        subsets = np.concatenate([sets[:, list(cols)] for cols in combinations(range(d), r)], axis=0)
        _, counts = np.unique(subsets, axis=0, return_counts=True)
        total += (-1) ** (r + 1) * float(np.sum((counts / T) ** 2))
    return total


def repetition_rate(trace: RoutingTrace, depth: int = 1) -> tuple[torch.Tensor, torch.Tensor, float]:
    """How often consecutive tokens share an expert among their top-``depth`` choices.

    For every layer ``l`` and every pair of consecutive tokens ``(t, t+1)`` of the same sequence
    (pairs never cross :attr:`RoutingTrace.sequence_lengths` boundaries)::

        rate[l] = mean_t [ top_d(l, t) ∩ top_d(l, t+1) ≠ ∅ ]

    ``depth=1``: the same first choice; ``depth=2``: the Mixtral paper's "first or second choice"
    (some expert among token t's two is among token t+1's two).

    Returns
    -------
    rate : torch.Tensor
        float64 ``[L]`` measured rate.
    random_measured : torch.Tensor
        float64 ``[L]`` the rate if tokens were independent draws from the layer's *measured* choice
        distribution (``Σ_e p_e²`` for depth 1; inclusion–exclusion over shared subsets for depth > 1).
        Skewed routing raises it above the uniform baseline, so locality = rate above *this*.
    random_uniform : float
        ``1 − C(E−d, d) / C(E, d)`` (``1/E`` for depth 1; 46.4 % for E=8, d=2, as in the paper).
    """
    trace = _check_trace(trace)
    depth = check_int("depth", depth, lo=1, hi=trace.top_k)
    mask = trace.same_pair_mask()
    if not bool(mask.any()):
        raise ValueError("trace: expected at least one pair of consecutive tokens in one sequence, got "
                         f"sequence_lengths {trace.sequence_lengths.tolist()}")
    sets = trace.topk_ids[:, :, :depth]
    a, b = sets[:, :-1, :], sets[:, 1:, :]
    share = (a.unsqueeze(-1) == b.unsqueeze(-2)).flatten(-2).any(-1)  # [L, T-1]
    rate = share[:, mask].double().mean(dim=1)
    srt = torch.sort(sets, dim=-1).values.numpy()
    base = torch.tensor([_measured_overlap_baseline(srt[l]) for l in range(trace.num_layers)], dtype=torch.float64)
    return rate, base, _uniform_overlap(trace.num_experts, depth)


@dataclass(frozen=True)
class TemporalLocality:
    """Expert reuse between consecutive tokens, per layer (tensors float64 ``[L]``), Mixtral-paper style.

    ``first_*``: the same first choice; ``first_or_second_*``: top-2 sets intersect (``None`` when
    ``k = 1``). ``*_random`` is the baseline from the measured choice frequencies, ``*_uniform`` the
    uniform-routing baseline (scalars). ``num_pairs`` counts the consecutive same-sequence pairs.
    """

    first: torch.Tensor
    first_random: torch.Tensor
    first_uniform: float
    first_or_second: torch.Tensor | None
    first_or_second_random: torch.Tensor | None
    first_or_second_uniform: float | None
    num_pairs: int


def temporal_locality(trace: RoutingTrace) -> TemporalLocality:
    """Same-first-choice and first-or-second repetition rates vs random baselines; see :func:`repetition_rate`."""
    trace = _check_trace(trace)
    first = repetition_rate(trace, 1)
    second = repetition_rate(trace, 2) if trace.top_k >= 2 else (None, None, None)
    return TemporalLocality(first[0], first[1], first[2], second[0], second[1], second[2],
                            int(trace.same_pair_mask().sum()))


# ----------------------------------------------------------------------------- structure matrices
def transition_matrix(trace: RoutingTrace, layer: int | str, *, normalize: bool = True) -> torch.Tensor:
    """First-choice transitions from layer ``l`` to layer ``l+1``, ``[E, E]``.

    ``n[i, j] = #{t : ids[l, t, 0] = i and ids[l+1, t, 0] = j}``. With ``normalize`` (default) rows are
    conditional probabilities ``P(first_{l+1} = j | first_l = i) = n[i, j] / Σ_j n[i, j]`` (float64;
    rows of experts never chosen first stay 0); otherwise the int64 counts. ``layer`` is an index or a
    name and must not be the last layer.
    """
    trace = _check_trace(trace)
    l = trace.layer_index(layer)
    normalize = check_bool("normalize", normalize)
    if l == trace.num_layers - 1:
        raise ValueError(f"layer: expected a layer with a next layer (index < {trace.num_layers - 1}), got {layer!r}")
    E = trace.num_experts
    check_alloc("num_experts", (E, E), torch.float64, what="transition matrix [E, E]")
    src, dst = trace.topk_ids[l, :, 0], trace.topk_ids[l + 1, :, 0]
    n = torch.bincount(src * E + dst, minlength=E * E).view(E, E)
    if not normalize:
        return n
    n = n.double()
    rows = n.sum(dim=1, keepdim=True)
    return torch.where(rows > 0, n / rows.clamp_min(1), torch.zeros_like(n))


def coactivation(trace: RoutingTrace, layer: int | str, *, normalize: bool = False) -> torch.Tensor:
    """How often two experts serve the same token in one layer, symmetric ``[E, E]``.

    ``C[i, j] = #{t : i ∈ top_k(l, t) and j ∈ top_k(l, t)}`` for ``i ≠ j``; the diagonal ``C[i, i]`` is
    the number of tokens using ``i`` (so ``C[i, j] / C[i, i] = P(j | i)``). int64 counts, or with
    ``normalize`` float64 fractions of the ``T`` tokens.
    """
    trace = _check_trace(trace)
    l = trace.layer_index(layer)
    normalize = check_bool("normalize", normalize)
    E = trace.num_experts
    check_alloc("num_experts", (trace.num_tokens + E, E), torch.float64, what="co-activation [E, E] and one-hot [T, E]")
    onehot = torch.zeros(trace.num_tokens, E, dtype=torch.int64)
    onehot.scatter_(1, trace.topk_ids[l], 1)
    C = onehot.T @ onehot
    return C.double() / trace.num_tokens if normalize else C


# -------------------------------------------------------------------------------- batch shapes
@dataclass(frozen=True)
class TokensPerExpert:
    """Tokens each expert receives per batch of ``batch_tokens`` consecutive tokens.

    Attributes
    ----------
    counts : torch.Tensor
        int64 ``[L, batches, E]``; ``Σ_e counts[l, b] = batch_tokens·k``.
    batch_tokens : int
    dropped_tokens : int
        Trailing tokens that did not fill a last batch (left out).
    """

    counts: torch.Tensor
    batch_tokens: int
    dropped_tokens: int

    def histogram(self, layer: int | None = None) -> torch.Tensor:
        """int64 ``[batch_tokens + 1]``: ``h[n]`` = number of (layer, batch, expert) with exactly ``n`` tokens."""
        if layer is not None:
            layer = check_int("layer", layer, lo=-self.counts.shape[0], hi=self.counts.shape[0] - 1)
        c = self.counts if layer is None else self.counts[layer]
        return torch.bincount(c.reshape(-1), minlength=self.batch_tokens + 1)

    def idle_fraction(self) -> torch.Tensor:
        """float64 ``[L]`` share of (batch, expert) pairs with no token (experts a batch never needs)."""
        return (self.counts == 0).double().mean(dim=(1, 2))

    def padded_fraction(self, pad_to: int = 64) -> torch.Tensor:
        """float64 ``[L]`` share of computed token rows that are padding when every expert's tokens are
        padded up to a multiple of ``pad_to`` (Samoyeds' 64-token tile):
        ``1 − Σ n / Σ ceil(n / pad_to)·pad_to`` over (batch, expert); experts with no token cost nothing.
        """
        pad_to = check_int("pad_to", pad_to, lo=1)
        padded = ((self.counts + pad_to - 1) // pad_to * pad_to).double().sum(dim=(1, 2))
        return 1.0 - self.counts.double().sum(dim=(1, 2)) / padded


def tokens_per_expert(trace: RoutingTrace, batch_tokens: int) -> TokensPerExpert:
    """Split the trace into batches of ``batch_tokens`` consecutive tokens and count each expert's tokens.

    ``counts[l, b, e] = #{(t, j) : b·batch_tokens ≤ t < (b+1)·batch_tokens, ids[l, t, j] = e}`` — the
    ``n`` of expert ``e``'s GEMM in that batch. Batches follow token order (they may span sequence
    boundaries, as a serving batch does); a trailing partial batch is dropped and reported.
    """
    trace = _check_trace(trace)
    batch_tokens = check_int("batch_tokens", batch_tokens, lo=1, hi=trace.num_tokens)
    nb = trace.num_tokens // batch_tokens
    L, E, k = trace.num_layers, trace.num_experts, trace.top_k
    check_alloc("num_experts", (L, nb, E), torch.int64, what="counts [layers, batches, E]")
    ids = trace.topk_ids[:, : nb * batch_tokens].reshape(L * nb, batch_tokens * k)
    offs = (torch.arange(L * nb) * E).view(-1, 1)
    counts = torch.bincount((ids + offs).reshape(-1), minlength=L * nb * E).view(L, nb, E)
    return TokensPerExpert(counts, batch_tokens, trace.num_tokens - nb * batch_tokens)
