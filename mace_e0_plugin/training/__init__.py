"""The training door: ``mace_run_train --E0s=linear_system``.

- ``_lifecycle``: the ``TrainingDoor``, one method per step of mace's run, and the run it holds;
- ``_adapters``: the two ways mace calls it, the ``mace.plugins`` entry point (``MacePlugin``) and
  wrappers around mace-torch 0.3.16's functions (``install``);
- ``_mace_run``: glue to mace's run objects (the foundation, each head's data, checkpoints).
"""

from ._adapters import DOOR, SUPPORTED_MACE, MacePlugin, install, mace_has_plugin_hook, uninstall
from ._lifecycle import KEYWORD, LinearSystemRun, TrainingDoor, add_arguments, plan_run

__all__ = ["MacePlugin", "install", "uninstall", "mace_has_plugin_hook", "DOOR", "TrainingDoor", "LinearSystemRun",
           "plan_run", "add_arguments", "KEYWORD", "SUPPORTED_MACE"]
