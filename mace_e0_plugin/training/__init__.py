"""The training door: ``mace_run_train --E0s=linear_system``.

- ``_plan``: our options in mace's parser, whether a run asks, and the plan of the heads that do;
- ``_lifecycle``: the ``TrainingDoor``, one method per step of mace's run, and the run it holds;
- ``_failures``: what a failure of ours after the first step becomes (never a stop);
- ``_compat``: the guard against a mace-torch the wrappers were not written for;
- ``_adapters``: the two ways mace calls the door, the ``mace.plugins`` entry point
  (``MacePlugin``) and wrappers around mace-torch 0.3.16's functions (``install``);
- ``_mace_run``: glue to mace's run objects (the foundation, each head's data, checkpoints).
"""

from ._adapters import TARGETS, EntryPointHooks, MacePlugin, install, installed_door, mace_has_plugin_hook, uninstall
from ._compat import REQUIREMENT, TESTED_MACE, UnsupportedMace, incompatibilities, unpack_pair
from ._failures import Failure
from ._lifecycle import LinearSystemRun, TrainingDoor
from ._plan import KEYWORD, add_arguments, asks_for_linear_system, plan_heads

__all__ = ["MacePlugin", "EntryPointHooks", "install", "uninstall", "installed_door", "mace_has_plugin_hook",
           "TARGETS", "TrainingDoor", "LinearSystemRun", "Failure", "plan_heads", "asks_for_linear_system",
           "add_arguments", "KEYWORD", "TESTED_MACE", "REQUIREMENT", "UnsupportedMace", "incompatibilities", "unpack_pair"]
