"""The doors a user comes in by, each thin: the options (declared once), the estimate sequence
(written once), ``mace-e0``, the Python API and its result, check and diagnose. The training
door, ``mace_run_train --E0s=linear_system``, is ``mace_e0_plugin.training``."""

from ._api import reestimate_e0s
from ._check import check_compositions, check_e0s
from ._cli import (EXIT_BAD_INPUT, EXIT_CRASH, EXIT_FLAGGED, EXIT_MODEL_DOES_NOT_FIT, EXIT_OK, EXIT_OUTSIDE,
                   EXIT_WRITE_FAILED, build_parser, main)
from ._diagnose import Diagnosis, diagnose, diagnose_e0s, head_entry, verdict
from ._options import (DEFAULT_BATCH_SIZE, DTYPES, OPTIONS, PASS_DTYPE, Option, checked, cli_spelling, positive,
                       training_spelling)
from ._reference import exit_statuses_table, options_table
from ._result import E0Result
from ._sequence import GRAPH_DTYPE, EstimateRequest, EstimateSteps, build_request, estimate_sequence, resolve_model

__all__ = [
    "reestimate_e0s", "E0Result", "check_e0s", "check_compositions", "diagnose_e0s", "diagnose", "Diagnosis",
    "head_entry", "verdict", "main", "build_parser", "EXIT_OK", "EXIT_CRASH", "EXIT_BAD_INPUT", "EXIT_WRITE_FAILED",
    "EXIT_MODEL_DOES_NOT_FIT", "EXIT_OUTSIDE", "EXIT_FLAGGED",
    "OPTIONS", "Option", "checked", "positive", "cli_spelling", "training_spelling", "DEFAULT_BATCH_SIZE", "DTYPES", "PASS_DTYPE",
    "options_table", "exit_statuses_table", "estimate_sequence", "EstimateRequest", "EstimateSteps", "build_request", "resolve_model", "GRAPH_DTYPE",
]
