"""The services every door stands on: the options (declared once, spelled per door) and the estimate
sequence (written once). ``mace-e0``, the Python API and the training door all use them; none of
the doors imports another."""

from ._options import (AUTOMATIC, DEFAULT_BATCH_SIZE, DEFAULT_WEIGHTING, DEFAULT_WORKERS, FLAG, OPTIONS,
                       PASS_DTYPE, POSITIONAL, Option, checked, cli_spelling, default_workers, training_spelling)
from ._sequence import GRAPH_DTYPE, EstimateRequest, build_request, estimate_sequence, resolve_model

__all__ = [
    "OPTIONS", "Option", "AUTOMATIC", "checked", "cli_spelling", "training_spelling", "DEFAULT_BATCH_SIZE",
    "DEFAULT_WEIGHTING", "PASS_DTYPE", "FLAG", "POSITIONAL", "default_workers",
    "DEFAULT_WORKERS",
    "estimate_sequence", "EstimateRequest", "build_request", "resolve_model", "GRAPH_DTYPE",
]
