"""One palette for the course: a colour means one concept in every lab.

The concepts a learner follows from lab to lab — the weight formats and the three systems — each own one
hue, and no other key of any figure module uses it (:data:`CONCEPTS`, checked by
``tests/viz/test_palette.py``): green is Samoyeds in Lab 01's masks, Lab 02's kernels, Lab 04's backends
and Lab 08's ways, and nothing else; pink is SiDA wherever SiDA appears; cyan is MoNDE's near-data side.

The other families (pruning methods, cache policies, time parts, provenance) take their colours from
:data:`FAMILIES`; inside a family every colour differs, and no family reuses a concept's hue. Categorical
series whose legend names them (experts, corpus domains, hardware profiles) cycle :data:`CATEGORICAL`.
"""

from __future__ import annotations

__all__ = ["CATEGORICAL", "CONCEPTS", "FAMILIES", "POLICY_STYLES", "concept"]

#: The concepts that span labs, one hue each (Tailwind-like 600 shades, readable on white).
CONCEPTS: dict[str, str] = {
    "dense": "#6b7280",  # grey: the dense weight, the dense GEMM, the dense way
    "2:4": "#2563eb",  # blue: N:M / 2:4 semi-structured sparsity, the spmm kernel
    "samoyeds": "#059669",  # green: the Samoyeds dual-side format, the ssmm kernel, the Samoyeds way
    "venom": "#7c3aed",  # violet: VENOM's vector-wise N:M
    "unstructured": "#9ca3af",  # light grey: CSR / unstructured
    "sida": "#db2777",  # pink: SiDA's offline-trained predictor
    "monde": "#0891b2",  # cyan: MoNDE, experts computed near their data
    "offloaded": "#ea580c",  # orange: weights moved over PCIe to the GPU on demand
    "samoyeds_offloaded": "#0d9488",  # teal (Samoyeds' family): the compressed operand moved over PCIe
}

#: Families of keys that live inside one lab or figure kind; colours differ within a family and never
#: take a concept's hue (the alias entries reuse a concept on purpose, e.g. MoNDE's near-data side).
FAMILIES: dict[str, dict[str, str]] = {
    "method": {"magnitude": "#64748b", "wanda": "#ca8a04", "obs": "#1e3a8a", "none": CONCEPTS["dense"]},
    "policy": {"lru": "#4f46e5", "lfu": "#65a30d", "fifo": "#94a3b8", "static": "#92400e",
               "sida": CONCEPTS["sida"], "next_layer": "#0369a1", "next_layer_residual": "#7dd3fc",
               "frequency": "#a16207", "belady": "#111827"},
    "time": {"compute": "#334155", "stall": "#dc2626", "prefetch_exposed": "#f59e0b"},
    "placement": {"gpu": "#b91c1c", "near": CONCEPTS["monde"], "threshold": "#ca8a04", "greedy": "#4f46e5",
                  "exact": "#111827", "all_gpu": "#fca5a5", "all_near": "#67e8f9"},
    "provenance": {"model": "#94a3b8", "measured": "#111827", "recorded": "#78716c", "live": "#f59e0b"},
}

#: ``(dash, marker symbol)`` per cache policy: LRU, LFU and FIFO often lie within a point of each other, so
#: every chart of policies (Labs 06 and 08) tells them apart by dash and marker too, not by colour alone.
POLICY_STYLES: dict[str, tuple[str, str]] = {
    "belady": ("dash", "circle"), "lru": ("solid", "square"), "lfu": ("dot", "triangle-up"),
    "fifo": ("dashdot", "x"), "static": ("longdash", "diamond"), "sida": ("solid", "star"),
    "next_layer": ("longdashdot", "cross"),
}

#: Cycled for categorical series named by their legend (experts, domains, profiles).
CATEGORICAL: tuple[str, ...] = (
    "#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2",
    "#db2777", "#65a30d", "#92400e", "#4f46e5", "#0f766e", "#a16207",
)

_ALIASES = {"nm": "2:4", "spmm": "2:4", "spmm_24": "2:4", "ssmm": "samoyeds", "csr": "unstructured",
            "near_data": "monde"}


def concept(name: str) -> str:
    """The colour of a concept (``"samoyeds"``, ``"2:4"``, ``"sida"``, …; ``"nm"``/``"spmm"``/``"ssmm"``/
    ``"csr"`` are aliases).

    Raises
    ------
    KeyError
        Naming the concept and listing the known ones.
    """
    key = _ALIASES.get(name, name)
    if key not in CONCEPTS:
        raise KeyError(f"name: expected one of {sorted(CONCEPTS) + sorted(_ALIASES)}, got {name!r}")
    return CONCEPTS[key]
