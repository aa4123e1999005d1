"""One entry point per question: which weights to keep (:func:`prune_mask`), and the compressed operand
they make (:func:`sparsify`), for any pattern and any method: ``"magnitude"``, ``"wanda"`` (scores; the
kept weights keep their values) or ``"obs"`` (second-order, :func:`~samoyeds_lab.prune.obs.obs_prune`:
the mask *and* updated kept weights)."""

from __future__ import annotations

import re
from typing import Any

import torch

from ..formats import as_dense, compress_nm, compress_samoyeds, compress_venom, to_csr
from . import masks as _m
from . import obs as _obs_mod
from .scores import _check_finite, _check_weight, _magnitude, _wanda, column_norms, score_rows

#: Pattern kinds and their keyword arguments with defaults (``None`` = required).
PATTERNS: dict[str, dict[str, Any]] = {
    "dense": {},
    "nm": {"n": 2, "m": 4},
    "samoyeds": {"n": 1, "m": 2, "vector": 128},
    "venom": {"v": 64, "n": 4, "m": 8},
    "unstructured": {"density": None},
}

#: Pruning methods: score-based (``"magnitude"``, ``"wanda"``) and second-order (``"obs"``).
METHODS = ("magnitude", "wanda", "obs")

_METHODS_TEXT = "'magnitude', 'wanda' or 'obs'"

_NM_SPELLING = re.compile(r"^(\d+):(\d+)$")


def parse_pattern(pattern: str, **pattern_kwargs: Any) -> tuple[str, dict[str, Any]]:
    """Resolve a pattern spelling and its keyword arguments to ``(kind, params)``.

    Accepted spellings (case-insensitive, spaces ignored):

    - ``"n:m"`` with two integers, e.g. ``"2:4"``, ``"1:2"``, ``"4:8"``: N:M along the last dimension
      (the keywords ``n``/``m`` may not be given as well);
    - ``"nm"`` (keywords ``n=2, m=4``);
    - ``"samoyeds"`` (keywords ``n=1, m=2, vector=128``);
    - ``"venom"`` (keywords ``v=64, n=4, m=8``; ``n`` = kept columns per ``v x m`` block, so the
      default is VENOM's "64:2:8");
    - ``"unstructured"`` (keyword ``density``, required);
    - ``"dense"`` (no keywords; keeps everything).

    Returns
    -------
    tuple[str, dict]
        ``kind`` in :data:`PATTERNS` and the full keyword dict (defaults filled in).

    Raises
    ------
    TypeError, ValueError
        Naming the keyword: an unknown spelling or keyword, a keyword given twice, a missing ``density``,
        or a value the pattern cannot take (``1 <= n < m <= 16`` for N:M, ``1 <= n < m`` and ``vector`` a
        multiple of 4 for Samoyeds, ``1 <= n <= m`` for VENOM, ``0 <= density <= 1``). Shape constraints
        (multiples of ``m``, ``vector``, ``v``) are checked by the mask builders, which see the weight.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern: expected a str such as '2:4' or 'samoyeds', got {type(pattern).__name__}")
    key = pattern.replace(" ", "").lower()
    fixed: dict[str, Any] = {}
    spelled_nm = _NM_SPELLING.match(key)
    if spelled_nm:
        kind = "nm"
        fixed = {"n": int(spelled_nm.group(1)), "m": int(spelled_nm.group(2))}
        for name in fixed:
            if name in pattern_kwargs:
                raise TypeError(
                    f"{name}: given both in pattern={pattern!r} and as a keyword ({name}={pattern_kwargs[name]!r})"
                )
    elif key in PATTERNS:
        kind = key
    else:
        raise ValueError(
            f"pattern: expected 'n:m' (e.g. '2:4'), 'nm', 'samoyeds', 'venom', 'unstructured' or 'dense', "
            f"got {pattern!r}"
        )
    allowed = PATTERNS[kind]
    for name in pattern_kwargs:
        if name not in allowed:
            accepted = ", ".join(k for k in allowed if k not in fixed) or "none"
            raise TypeError(f"{name}: not an argument of pattern {pattern!r} (accepted: {accepted})")
    params = {**allowed, **fixed, **pattern_kwargs}
    missing = [k for k, v in params.items() if v is None]
    if missing:
        raise ValueError(f"{missing[0]}: required for pattern {pattern!r}, got none")
    _check_params(kind, params)
    return kind, params


def _check_params(kind: str, p: dict[str, Any]) -> None:
    """Raise naming the keyword if a pattern's values are out of range (the same rules as the builders)."""
    if kind == "nm":
        _m._check_nm(p["n"], p["m"])
    elif kind == "samoyeds":
        _m._check_samoyeds(p["n"], p["m"], p["vector"])
    elif kind == "venom":
        _m._check_venom(p["v"], p["n"], p["m"])
    elif kind == "unstructured":
        _m._check_density(p["density"])


def _check_method(method: object) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method: expected {_METHODS_TEXT}, got {type(method).__name__}")
    key = method.strip().lower()
    if key not in METHODS:
        raise ValueError(f"method: expected {_METHODS_TEXT}, got {method!r}")
    return key


def _obs(name: str, w: object, pattern: str, acts: object, kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(updated weight, mask)`` of :func:`~samoyeds_lab.prune.obs.obs_prune` with its defaults."""
    w = _check_weight(name, w)
    parse_pattern(pattern, **kwargs)
    if acts is None:
        raise ValueError(
            "acts: required for method='obs' ([tokens, in_features] calibration inputs: the Hessian 2XᵀX/n)"
        )
    if w.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [rows, cols] weight for method='obs', got shape {tuple(w.shape)}")
    return _obs_mod.obs_prune(w, acts, pattern, **kwargs)


def _mask(name: str, w: object, pattern: str, method: str, acts: object, kwargs: dict[str, Any]) -> torch.Tensor:
    w = _check_weight(name, w)
    kind, p = parse_pattern(pattern, **kwargs)
    method = _check_method(method)
    if method == "obs":
        return _obs(name, w, pattern, acts, kwargs)[1]
    if method == "wanda" and acts is None:
        raise ValueError("acts: required for method='wanda' ([tokens, in_features] calibration activations)")
    if method == "magnitude" and acts is not None:
        raise ValueError(
            f"acts: method='magnitude' takes no activations (only 'wanda' and 'obs' use them), got "
            f"{type(acts).__name__}" + (f" of shape {tuple(acts.shape)}" if isinstance(acts, torch.Tensor) else "")
        )
    if acts is not None:
        column_norms(acts, w.shape[-1])  # shape, dtype, finiteness: before any score is computed
    shape = tuple(w.shape)
    if kind == "dense":
        _check_finite(name, w)
        return torch.ones(shape, dtype=torch.bool, device=w.device)
    if kind == "unstructured":
        density = _m._check_density(p["density"])
        s = _magnitude(name, w) if method == "magnitude" else _wanda(name, w, acts)
        return _m._unstructured(s, density)
    if kind == "nm":
        n, m = _m._check_nm(p["n"], p["m"])
        _m._check_div(name, shape, "the last dimension (cols)", shape[-1], "m", m)
        return _m._nm_rows(score_rows(w, method, acts, name), shape, n, m, w.device)  # type: ignore[arg-type]
    if w.ndim < 2:
        raise ValueError(f"{name}: expected a 2-D [rows, cols] weight for pattern {pattern!r}, got shape {shape}")
    if kind == "samoyeds":
        n, m, vector = _m._check_samoyeds(p["n"], p["m"], p["vector"])
        _m._check_samoyeds_shape(name, shape, m, vector)
        return _m._samoyeds_rows(score_rows(w, method, acts, name), shape, n, m, vector, w.device)  # type: ignore[arg-type]
    v, n, m = _m._check_venom(p["v"], p["n"], p["m"])
    _m._check_venom_shape(name, shape, v, n, m)
    return _m._venom_rows(score_rows(w, method, acts, name), shape, v, n, m, w.device)  # type: ignore[arg-type]


def prune_mask(
    w: torch.Tensor,
    pattern: str,
    method: str = "magnitude",
    acts: torch.Tensor | None = None,
    **pattern_kwargs: Any,
) -> torch.Tensor:
    """The keep-mask of ``w`` for a sparsity pattern, from magnitude, Wanda or second-order (OBS) saliency.

    ``mask = <pattern>_mask(S)`` with ``S = |W|`` (``"magnitude"``) or ``S = |W| · ||X[:, j]||₂``
    (``"wanda"``); see :func:`nm_mask`, :func:`samoyeds_mask`, :func:`venom_mask`,
    :func:`unstructured_mask`. Scores are computed in fp32 block by block, never for the whole weight
    at once (except for ``"unstructured"``, whose threshold is global).

    ``"obs"`` returns the mask of :func:`~samoyeds_lab.prune.obs.obs_prune` (default ``blocksize=128``,
    ``percdamp=0.01``): chosen during the SparseGPT column sweep from ``W²/[H⁻¹]`` saliencies of the
    *updated* weights, so it is only meaningful together with the updated weight, which
    :func:`sparsify` compresses (``w ⊙ mask`` is not what OBS produces). Unstructured OBS keeps the same
    density in every 128-column block rather than one global threshold. 2-D weights only.

    Parameters
    ----------
    w : torch.Tensor
        ``[out, in]`` weight, fp16/bf16/fp32, finite (``"nm"``, ``"unstructured"`` and ``"dense"`` also
        take ``[..., in]``; ``"samoyeds"``/``"venom"`` take ``[..., rows, cols]`` stacks).
    pattern : str
        ``"2:4"``-like ``"n:m"``, ``"nm"``, ``"samoyeds"``, ``"venom"``, ``"unstructured"`` or ``"dense"``
        (see :func:`parse_pattern`).
    method : str
        ``"magnitude"`` (default), ``"wanda"`` or ``"obs"``.
    acts : torch.Tensor, optional
        ``[tokens, in]`` calibration activations; required for ``"wanda"`` and ``"obs"`` (for an expert:
        the tokens routed to it), refused for ``"magnitude"`` (a ``ValueError`` naming ``acts``:
        magnitude takes no activations).
    **pattern_kwargs
        The pattern's arguments: ``n``, ``m`` (nm); ``n``, ``m``, ``vector`` (samoyeds); ``v``, ``n``, ``m``
        (venom); ``density`` (unstructured).

    Returns
    -------
    torch.Tensor
        ``bool`` of ``w.shape``, ``True`` = kept.
    """
    return _mask("w", w, pattern, method, acts, pattern_kwargs)


def sparsify(
    dense: torch.Tensor,
    pattern: str,
    method: str = "magnitude",
    acts: torch.Tensor | None = None,
    **pattern_kwargs: Any,
):
    """Prune ``dense`` with :func:`prune_mask` and compress it into the pattern's operand.

    ``op.to_dense() == dense ⊙ mask`` exactly for ``"magnitude"`` and ``"wanda"``, which only choose
    weights. ``"obs"`` also *changes the kept values* (the OBS update compensates the pruned weights on
    the calibration inputs): ``op.to_dense() == w_obs`` with ``(w_obs, mask) =``
    :func:`~samoyeds_lab.prune.obs.obs_prune` ``(dense, acts, pattern)``, zero outside ``mask``. The
    operand is

    ============== ===================================================
    pattern        operand
    ============== ===================================================
    ``"n:m"/"nm"`` :class:`~samoyeds_lab.formats.NMWeight` (``compress_nm``)
    ``"samoyeds"`` :class:`~samoyeds_lab.formats.SamoyedsWeight` (``compress_samoyeds``)
    ``"venom"``    :class:`~samoyeds_lab.formats.VenomWeight` (``compress_venom``)
    ``"unstructured"`` :class:`~samoyeds_lab.formats.CSRWeight` (``to_csr``)
    ``"dense"``    :class:`~samoyeds_lab.formats.DenseWeight` (``as_dense``)
    ============== ===================================================

    Parameters
    ----------
    dense : torch.Tensor
        ``[rows, cols]`` weight, fp16/bf16/fp32.
    pattern, method, acts, **pattern_kwargs
        As for :func:`prune_mask`.
    """
    dense = _check_weight("dense", dense)
    if dense.ndim != 2:
        raise ValueError(f"dense: expected a 2-D [rows, cols] weight, got shape {tuple(dense.shape)}")
    kind, p = parse_pattern(pattern, **pattern_kwargs)
    if _check_method(method) == "obs":
        pruned, mask = _obs("dense", dense, pattern, acts, pattern_kwargs)
    else:
        mask = _mask("dense", dense, pattern, method, acts, pattern_kwargs)
        pruned = dense.masked_fill(~mask, 0)
    if kind == "dense":
        return as_dense(dense)
    if kind == "nm":
        return compress_nm(pruned, n=p["n"], m=p["m"])
    if kind == "samoyeds":
        return compress_samoyeds(pruned, n=p["n"], m=p["m"], vector=p["vector"])
    if kind == "venom":
        return compress_venom(pruned, v=p["v"], n=p["n"], m=p["m"])
    return to_csr(pruned)
