"""The activation side of dual-side sparsity: which tokens each expert sees.

A router gives every token ``k`` experts (``topk_ids [tokens, k]``). Expert ``e`` only multiplies the
tokens routed to it, so its activation operand is a *selection* of rows of ``x``. :class:`TokenSelection`
sorts the ``tokens·k`` (token, expert) pairs by expert and records, per expert, where its segment starts::

    topk_ids = [[0, 2],          token_ids = [0, 1 | 1, 2 | 0, 2]       expert 0 | 1 | 2
                [0, 1],          offsets   = [0, 2, 4, 6]
                [1, 2]]          slot_ids  = [0, 2 | 3, 4 | 1, 5]       (token·k + j: finds routing weights)

Kernels process tokens in tiles of ``pad_to`` (64 in Samoyeds), so each segment is also padded up to a
multiple of ``pad_to`` with :data:`SENTINEL` (``-1``). The published Samoyeds code pads with token 0,
which lets a scatter epilogue add garbage into token 0's output; a negative sentinel cannot name a real
row, and every consumer here skips it (the reference returns zeros for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import INT_DTYPES, check_alloc, check_int, check_tensor

#: Padding token id: never a real row. Kernels and references skip it.
SENTINEL = -1


@dataclass(frozen=True, eq=False)
class TokenSelection:
    """Tokens grouped by expert, with per-expert offsets and kernel-tile padding.

    Attributes
    ----------
    token_ids, slot_ids : torch.Tensor
        int32 ``[tokens·k]`` sorted by expert (ascending token id inside an expert); ``slot_ids`` are
        the flat indices ``token·k + j`` into ``topk_ids`` (and into the routing weights).
    counts : torch.Tensor
        int64 ``[num_experts]`` tokens per expert.
    offsets : torch.Tensor
        int64 ``[num_experts + 1]``; expert ``e`` owns ``token_ids[offsets[e]:offsets[e+1]]``.
    padded_token_ids, padded_slot_ids : torch.Tensor
        int32; each segment padded to a multiple of ``pad_to`` with :data:`SENTINEL`.
    padded_offsets : torch.Tensor
        int64 ``[num_experts + 1]`` segment starts in the padded arrays (multiples of ``pad_to``).
    num_tokens, num_experts, top_k, pad_to : int

    Constructing one directly checks that the arrays agree (dtypes, lengths, offsets = cumulative counts,
    padded segments = each expert's tokens then :data:`SENTINEL`, ids in range) and raises a
    ``ValueError``/``TypeError`` naming the first field that does not; :meth:`from_topk` builds a
    consistent one without repeating those checks.
    """

    token_ids: torch.Tensor
    slot_ids: torch.Tensor
    counts: torch.Tensor
    offsets: torch.Tensor
    padded_token_ids: torch.Tensor
    padded_slot_ids: torch.Tensor
    padded_offsets: torch.Tensor
    num_tokens: int
    num_experts: int
    top_k: int
    pad_to: int

    def __post_init__(self) -> None:
        tokens = check_int("num_tokens", self.num_tokens, lo=0)
        experts = check_int("num_experts", self.num_experts, lo=1)
        k = check_int("top_k", self.top_k, lo=0)
        pad_to = check_int("pad_to", self.pad_to, lo=1)
        slots = tokens * k
        i32, i64 = (torch.int32,), (torch.int64,)
        check_tensor("token_ids", self.token_ids, shape=(slots,), dtypes=i32)
        check_tensor("slot_ids", self.slot_ids, shape=(slots,), dtypes=i32)
        check_tensor("counts", self.counts, shape=(experts,), dtypes=i64)
        check_tensor("offsets", self.offsets, shape=(experts + 1,), dtypes=i64)
        check_tensor("padded_offsets", self.padded_offsets, shape=(experts + 1,), dtypes=i64)
        check_tensor("padded_token_ids", self.padded_token_ids, ndim=1, dtypes=i32)
        check_tensor("padded_slot_ids", self.padded_slot_ids, ndim=1, dtypes=i32)
        counts = self.counts
        if int(counts.min()) < 0 or int(counts.sum()) != slots:
            raise ValueError(
                f"counts: expected non-negative counts summing to num_tokens·top_k = {slots}, got {counts.tolist()}"
            )
        expect = torch.zeros_like(self.offsets)
        expect[1:] = torch.cumsum(counts, 0)
        if not torch.equal(self.offsets, expect):
            raise ValueError(f"offsets: expected [0, cumsum(counts)] = {expect.tolist()}, got {self.offsets.tolist()}")
        padded = (counts + pad_to - 1) // pad_to * pad_to
        expect_p = torch.zeros_like(self.padded_offsets)
        expect_p[1:] = torch.cumsum(padded, 0)
        if not torch.equal(self.padded_offsets, expect_p):
            raise ValueError(
                f"padded_offsets: expected every segment padded to a multiple of pad_to={pad_to}, i.e. "
                f"{expect_p.tolist()}, got {self.padded_offsets.tolist()}"
            )
        total = int(expect_p[-1])
        for name, t in (("padded_token_ids", self.padded_token_ids), ("padded_slot_ids", self.padded_slot_ids)):
            if t.numel() != total:
                raise ValueError(f"{name}: expected padded_offsets[-1] = {total} entries, got {t.numel()}")
        if slots:
            slot = self.slot_ids.to(torch.int64)
            lo, hi = int(slot.min()), int(slot.max())
            if lo < 0 or hi >= slots:
                raise ValueError(f"slot_ids: expected slots in [0, num_tokens·top_k = {slots}), got [{lo}, {hi}]")
            if not torch.equal(torch.sort(slot).values, torch.arange(slots, device=slot.device)):
                raise ValueError("slot_ids: expected every slot token·k + j exactly once, got a repeated slot")
            tok = self.token_ids.to(torch.int64)
            lo, hi = int(tok.min()), int(tok.max())
            if lo < 0 or hi >= tokens:
                raise ValueError(f"token_ids: expected token ids in [0, num_tokens={tokens}), got [{lo}, {hi}]")
            if not torch.equal(tok, slot // k):
                i = int((tok != slot // k).nonzero()[0])
                raise ValueError(
                    f"token_ids: expected token_ids = slot_ids // top_k, got token {int(tok[i])} for slot "
                    f"{int(slot[i])} at position {i}"
                )
            starts = self.offsets[1:-1]
            step = slot[1:] > slot[:-1]
            boundary = torch.zeros(slots - 1, dtype=torch.bool, device=slot.device)
            inner = starts[(starts > 0) & (starts < slots)] - 1
            boundary[inner] = True
            if not bool((step | boundary).all()):
                i = int((~(step | boundary)).nonzero()[0])
                raise ValueError(
                    f"token_ids: expected ascending tokens (slots) inside each expert's segment, got slot "
                    f"{int(slot[i])} then {int(slot[i + 1])} at position {i}"
                )
        expert_of = torch.repeat_interleave(torch.arange(experts, device=counts.device), counts)
        dest = self.padded_offsets[expert_of] + (torch.arange(slots, device=counts.device) - self.offsets[expert_of])
        for name, t, real in (("padded_token_ids", self.padded_token_ids, self.token_ids),
                              ("padded_slot_ids", self.padded_slot_ids, self.slot_ids)):
            want = torch.full((total,), SENTINEL, dtype=torch.int32, device=t.device)
            want[dest] = real
            if not torch.equal(t, want):
                i = int((t != want).nonzero()[0])
                raise ValueError(
                    f"{name}: expected each expert's ids followed by SENTINEL={SENTINEL} padding, got "
                    f"{int(t[i])} at position {i} (expected {int(want[i])})"
                )

    @classmethod
    def _trusted(cls, *values: object) -> "TokenSelection":
        """Build without the consistency checks (for :meth:`from_topk`, whose arrays agree by construction)."""
        obj = object.__new__(cls)
        for f, v in zip(cls.__dataclass_fields__, values):
            object.__setattr__(obj, f, v)
        return obj

    @classmethod
    def from_topk(cls, topk_ids: torch.Tensor, num_experts: int, pad_to: int = 64) -> "TokenSelection":
        """Build the selection from router output ``topk_ids [tokens, k]`` (integer expert ids).

        Raises
        ------
        TypeError
            ``topk_ids`` is not an integer tensor.
        ValueError
            Wrong rank, an id outside ``[0, num_experts)`` (named with its token), the same expert twice
            for one token, ``num_experts`` / ``pad_to`` < 1, or sizes whose arrays would not fit in memory
            (checked before allocating).
        """
        check_tensor("topk_ids", topk_ids, dtypes=INT_DTYPES)
        if topk_ids.ndim == 1:
            topk_ids = topk_ids.unsqueeze(1)
        if topk_ids.ndim != 2:
            raise ValueError(f"topk_ids: expected shape [tokens, k], got {tuple(topk_ids.shape)}")
        num_experts = check_int("num_experts", num_experts, lo=1)
        pad_to = check_int("pad_to", pad_to, lo=1)
        tokens, k = topk_ids.shape
        # sizes before anything is allocated: counts/offsets grow with num_experts (padding: below)
        check_alloc("num_experts", (4, num_experts + 1), torch.int64, what="per-expert counts/offsets")
        ids = topk_ids.to(torch.int64)
        if ids.numel():
            bad = (ids < 0) | (ids >= num_experts)
            if bool(bad.any()):
                t, j = (int(v) for v in bad.nonzero()[0])
                raise ValueError(
                    f"topk_ids: expected expert ids in [0, {num_experts}), got {int(ids[t, j])} "
                    f"for token {t} (choice {j})"
                )
            if k > 1:
                s = torch.sort(ids, dim=1).values
                dup = (s[:, 1:] == s[:, :-1]).any(1)
                if bool(dup.any()):
                    t = int(dup.nonzero()[0])
                    raise ValueError(
                        f"topk_ids: expected distinct experts per token, token {t} has {ids[t].tolist()}"
                    )
        flat = ids.reshape(-1)
        order = torch.sort(flat, stable=True).indices  # by expert, then by slot (= token order)
        slot_ids = order.to(torch.int32)
        token_ids = (order // max(k, 1)).to(torch.int32)
        counts = torch.bincount(flat, minlength=num_experts).to(torch.int64)
        offsets = torch.zeros(num_experts + 1, dtype=torch.int64, device=ids.device)
        offsets[1:] = torch.cumsum(counts, 0)
        padded_counts = (counts + pad_to - 1) // pad_to * pad_to
        padded_offsets = torch.zeros_like(offsets)
        padded_offsets[1:] = torch.cumsum(padded_counts, 0)
        total = int(padded_offsets[-1])
        check_alloc("pad_to", (2, total), torch.int32, what=f"padded token/slot ids (pad_to={pad_to})")
        padded_tok = torch.full((total,), SENTINEL, dtype=torch.int32, device=ids.device)
        padded_slot = torch.full((total,), SENTINEL, dtype=torch.int32, device=ids.device)
        if flat.numel():
            expert_of = flat[order]
            dest = padded_offsets[expert_of] + (torch.arange(flat.numel(), device=ids.device) - offsets[expert_of])
            padded_tok[dest] = token_ids
            padded_slot[dest] = slot_ids
        return cls._trusted(token_ids, slot_ids, counts, offsets, padded_tok, padded_slot, padded_offsets,
                            tokens, num_experts, k, pad_to)

    def tokens_of(self, expert: int) -> torch.Tensor:
        """int64 token ids routed to ``expert`` (ascending)."""
        e = check_int("expert", expert, lo=0, hi=self.num_experts - 1)
        return self.token_ids[int(self.offsets[e]): int(self.offsets[e + 1])].to(torch.int64)

    def slots_of(self, expert: int) -> torch.Tensor:
        """int64 flat slots ``token·k + j`` routed to ``expert`` (index routing weights with these)."""
        e = check_int("expert", expert, lo=0, hi=self.num_experts - 1)
        return self.slot_ids[int(self.offsets[e]): int(self.offsets[e + 1])].to(torch.int64)

    def padded_tokens_of(self, expert: int) -> torch.Tensor:
        """int32 padded token ids of ``expert`` (a multiple of ``pad_to``, tail = :data:`SENTINEL`)."""
        e = check_int("expert", expert, lo=0, hi=self.num_experts - 1)
        return self.padded_token_ids[int(self.padded_offsets[e]): int(self.padded_offsets[e + 1])]

    @property
    def padding_overhead(self) -> float:
        """Padded slots / real slots − 1 (wasted kernel work from tile padding)."""
        real = int(self.offsets[-1])
        return (int(self.padded_offsets[-1]) / real - 1.0) if real else 0.0

    def __repr__(self) -> str:
        return (f"TokenSelection(tokens={self.num_tokens}, k={self.top_k}, experts={self.num_experts}, "
                f"pad_to={self.pad_to}, counts={self.counts.tolist()})")
