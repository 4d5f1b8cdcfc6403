"""The training door: ``mace_run_train --E0s=linear_system``, and ``E0Fit`` for a loop of one's own.

- ``_settings``: ``RunSettings`` and ``HeadSettings``, the run's settings, typed;
- ``_run``: ``E0Fit``, the E0s of one run: estimated before the first step, refitted after;
- ``_refitter``: the refits of ``--E0s_refit`` (epoch, final);
- ``_failures``: what a failure of ours after the first step becomes (never a stop);
- ``_mace_args``: mace's options, read once into ``RunSettings``, and ours added to its parser;
- ``_door``: ``TrainingDoor``, mace's run translated for the fit, one method per step;
- ``_compat``: the guard against a mace-torch that differs from what the wrappers rely on;
- ``_adapters``: the two ways mace calls the door, the ``mace.plugins`` entry point
  (``MacePlugin``) and wrappers around mace-torch 0.3.x's functions (``install``);
- ``_mace_run``: the one module that knows mace's run objects (the foundation, each head's data,
  checkpoints).
"""

from ._adapters import TARGETS, MacePlugin, install, installed_door, mace_has_plugin_hook, uninstall
from ._compat import REQUIREMENT, TESTED_MACE, incompatibilities
from ._door import TrainingDoor
from ._run import E0Fit
from ._settings import HeadSettings, RunSettings

__all__ = ["E0Fit", "RunSettings", "HeadSettings", "MacePlugin", "install", "uninstall", "installed_door",
           "mace_has_plugin_hook", "TARGETS", "TrainingDoor", "TESTED_MACE", "REQUIREMENT", "incompatibilities"]
