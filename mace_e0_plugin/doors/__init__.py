"""The doors a user comes in by, each thin, on the services below them (``services``): ``mace-e0``,
the Python API and its result, check and diagnose. The training door, ``mace_run_train
--E0s=linear_system``, is ``mace_e0_plugin.training``; neither imports the other."""

from ._api import reestimate_e0s
from ._check import check_e0s
from ._cli import (EXIT_MEANINGS, EXIT_BAD_INPUT, EXIT_CRASH, EXIT_FLAGGED, EXIT_OK, EXIT_OUTSIDE,
                   EXIT_WRITE_FAILED, build_parser, main)
from ._diagnose import diagnose_e0s
from ._result import E0Result

__all__ = [
    "reestimate_e0s", "E0Result", "check_e0s", "diagnose_e0s", "main", "build_parser",
    "EXIT_OK", "EXIT_CRASH", "EXIT_BAD_INPUT", "EXIT_WRITE_FAILED", "EXIT_OUTSIDE", "EXIT_FLAGGED", "EXIT_MEANINGS",
]
