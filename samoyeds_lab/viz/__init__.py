"""Figures and interactive panels for the labs.

Pure figure builders (return ``plotly.graph_objects.Figure``, testable through ``fig.to_dict()``) live in
topic modules such as :mod:`samoyeds_lab.viz.sparsity`; ipywidgets panels built on them live in
:mod:`samoyeds_lab.viz.panels`. Nothing else in the package imports ``viz``.
"""

from .accuracy import ACCURACY_COLORS, AccuracyPanel, ppl_density_figure, ppl_speed_figure, sweep_table
from .panels import METHODS, PATTERNS, SparsityPanel, SparsityView
from .routing import (
    DOMAIN_COLORS,
    EXPERT_COLORS,
    MIXTRAL_LOCALITY,
    byte_labels,
    coactivation_heatmap,
    domain_hotness_figure,
    expert_colors,
    hotness_heatmap,
    imbalance_figure,
    locality_figure,
    padding_curve_figure,
    token_timeline,
    tokens_per_expert_figure,
    transition_heatmap,
)
from .routing_panel import ROUTING_VIEWS, RoutingPanel, RoutingView
from .sparsity import (
    COLORS,
    activation_scale_figure,
    bytes_bar,
    decode_metadata_word,
    error_bar,
    mask_heatmap,
    message_figure,
    metadata_word_figure,
    values_heatmap,
)

__all__ = [
    "COLORS",
    "METHODS",
    "PATTERNS",
    "SparsityPanel",
    "SparsityView",
    "activation_scale_figure",
    "bytes_bar",
    "decode_metadata_word",
    "error_bar",
    "mask_heatmap",
    "message_figure",
    "metadata_word_figure",
    "values_heatmap",
    "DOMAIN_COLORS", "EXPERT_COLORS", "MIXTRAL_LOCALITY", "ROUTING_VIEWS", "RoutingPanel", "RoutingView",
    "byte_labels", "coactivation_heatmap", "domain_hotness_figure", "expert_colors", "hotness_heatmap",
    "imbalance_figure", "locality_figure", "padding_curve_figure", "token_timeline",
    "tokens_per_expert_figure", "transition_heatmap",
    "ACCURACY_COLORS", "AccuracyPanel", "ppl_density_figure", "ppl_speed_figure", "sweep_table",
]
