"""Self-checking exercises used by the labs, two or more per lab.

Each ``check_*`` function takes the learner's function, prints "yours vs expected" with a mismatch view and
a hint when they differ, and returns ``True``/``False`` without raising because of the learner's code (an
unfinished stub that still raises ``NotImplementedError`` is "not yet solved"). The solutions live beside
the checks, in each lab's submodule (``solution_*``): read them after trying.

======  ======================================  ===================================================
lab     submodule                               checks
======  ======================================  ===================================================
01      :mod:`~.sparsity`                       :func:`check_mask_24`, :func:`check_decode_word`
02      :mod:`~.cpu_kernels`                    :func:`check_unit_columns`, :func:`check_decode_ceiling`
03      :mod:`~.routing`                        :func:`check_top_k_routing`, :func:`check_locality`
04      :mod:`~.moe_layer`                      :func:`check_expert_gather`, :func:`check_moe_combine`
05      :mod:`~.pruning`                        :func:`check_wanda_mask`, :func:`check_samoyeds_mask`
06      :mod:`~.caching`                        :func:`check_lru_hits`, :func:`check_belady_hits`
07      :mod:`~.offload`                        :func:`check_path_times`, :func:`check_crossover`
08      :mod:`~.end_to_end`                     :func:`check_hot_set`, :func:`check_offload_time`
======  ======================================  ===================================================
"""

from .caching import check_belady_hits, check_lru_hits
from .cpu_kernels import check_decode_ceiling, check_unit_columns
from .end_to_end import check_hot_set, check_offload_time
from .moe_layer import check_expert_gather, check_moe_combine
from .offload import check_crossover, check_path_times
from .pruning import check_samoyeds_mask, check_wanda_mask
from .routing import check_locality, check_top_k_routing
from .sparsity import check_decode_word, check_mask_24

__all__ = ["check_mask_24", "check_decode_word", "check_unit_columns", "check_decode_ceiling",
           "check_top_k_routing", "check_locality", "check_expert_gather", "check_moe_combine",
           "check_wanda_mask", "check_samoyeds_mask", "check_lru_hits", "check_belady_hits",
           "check_path_times", "check_crossover", "check_hot_set", "check_offload_time"]
