"""Start-up hook, run by ``mace_e0_plugin.pth`` in every Python process. Standard library only.

Every process pays for this module, so it does nothing but put a watcher on ``sys.meta_path``.
The watcher installs the plugin's hooks into mace the moment mace's training script is loading,
then leaves ``sys.meta_path`` for good:
- the first time anything imports ``mace.cli.run_train`` (the ``mace_run_train`` script,
  ``python -m mace.cli.run_train``, janus-core, or code that calls its ``main`` or ``run``),
  before the module executes;
- when mace's ``cli/run_train.py`` is run as a file (``python path/to/mace/cli/run_train.py``, as
  the mace-foundations scripts do), no module of that name is ever imported: the script is
  ``__main__``. The watcher then installs at the first mace import after the functions it wraps
  exist, and the wrappers are bound into ``__main__`` too.
Processes that never touch mace's training script import neither torch nor mace because of us.

Set ``MACE_E0_PLUGIN=0`` (or false/no/off) to turn the plugin off.
"""

import os
import sys

from mace_e0_plugin._switch import is_disabled

TRIGGER_MODULE = "mace.cli.run_train"
SCRIPT_TAIL = ("mace", "cli", "run_train.py")  # the end of the path of mace's training script
# What must exist before the wrappers can be installed from a script run: "module:attribute",
# training._adapters.TARGETS' own list (a test keeps them equal; this module may not import torch).
WRAPPED = ("mace.tools:check_args", "mace.tools:build_default_arg_parser", "mace.tools:train",
           "mace.tools.scripts_utils:get_dataset_from_xyz", "mace.tools.scripts_utils:get_atomic_energies",
           "mace.tools.train:train_one_epoch")


def runs_training_script(argv0: object) -> bool:
    """Whether this process runs mace's ``cli/run_train.py`` as a file."""
    if not isinstance(argv0, str) or not argv0.endswith(SCRIPT_TAIL[-1]):
        return False
    return tuple(os.path.normpath(os.path.abspath(argv0)).split(os.sep)[-3:]) == SCRIPT_TAIL


def _wrapped_functions_exist() -> bool:
    for where in WRAPPED:
        module, _, name = where.partition(":")
        found = getattr(sys.modules.get(module), name, None)
        if found is None or type(found).__name__ == "module":  # mace.tools.train: a module until tools binds the function
            return False
    return True


class RunTrainWatcher:
    """A meta-path finder that finds nothing: it only notices that mace's training script is loading."""

    is_mace_e0_plugin_watcher = True  # recognised by name, so a reloaded module adds no second one
    script_run = False  # set at start-up: this process runs mace's run_train.py as a file

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == TRIGGER_MODULE:
            # Patch before mace.cli.run_train executes, so that its ``from ... import`` lines bind
            # the wrapped functions. Returning None lets the ordinary finders load the module.
            _install_plugin()
        elif cls.script_run and fullname.startswith("mace.") and _wrapped_functions_exist():
            _install_plugin()
        return None


def _install_plugin() -> None:
    uninstall()
    try:
        from mace_e0_plugin import adapters

        adapters.install()
    except Exception as error:  # never break mace because of the plugin
        import warnings

        warnings.warn(f"mace-e0-plugin: could not install its hook into mace ({error!r}); "
                      "--E0s=linear_system is unavailable in this process.", stacklevel=3)


def _is_watcher(finder):
    return getattr(finder, "is_mace_e0_plugin_watcher", False)


def install():
    RunTrainWatcher.script_run = runs_training_script(sys.argv[0] if getattr(sys, "argv", None) else None)
    if not any(_is_watcher(finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, RunTrainWatcher)


def uninstall():
    sys.meta_path[:] = [finder for finder in sys.meta_path if not _is_watcher(finder)]


if not is_disabled() and TRIGGER_MODULE not in sys.modules:
    install()
