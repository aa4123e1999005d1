"""Self-checking exercises used by the labs.

Each ``check_*`` function takes the learner's function, prints "yours vs expected" with a mismatch mask
when they differ, and returns ``True``/``False`` without raising because of the learner's code.
"""

from .cpu_kernels import check_decode_ceiling, check_unit_columns
from .offload import check_crossover, check_path_times
from .sparsity import check_decode_word, check_mask_24

__all__ = ["check_decode_word", "check_mask_24", "check_unit_columns", "check_decode_ceiling",
           "check_path_times", "check_crossover"]
