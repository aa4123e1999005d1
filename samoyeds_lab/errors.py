"""Error types raised by samoyeds-lab.

Every error names the offending argument, what was expected and what was given. The classes subclass
the built-in ``ValueError``/``TypeError`` so callers can catch either the precise or the generic type.
"""

from __future__ import annotations


class SamoyedsLabError(Exception):
    """Base class of every error raised on purpose by samoyeds-lab."""


class FormatError(SamoyedsLabError, ValueError):
    """A tensor does not follow the sparsity pattern (N:M, row selection, …) it is claimed to follow."""


class CorruptFileError(SamoyedsLabError, ValueError):
    """A file on disk does not match the schema samoyeds-lab expects."""
