"""Start-up hook, run by ``mace_e0_plugin.pth`` in every Python process. Standard library only.

Every process pays for this module, so it does nothing but put a watcher on ``sys.meta_path``.
The watcher asks for one module name, ``mace.cli.run_train``; the first time anything imports it
(the ``mace_run_train`` script, ``python -m mace.cli.run_train``, or code that calls its ``main`` or
``run``), it installs the plugin's hooks into mace, then leaves ``sys.meta_path`` for good. Processes
that never touch mace's training script import neither torch nor mace because of us.

Set ``MACE_E0_PLUGIN=0`` (or false/no/off) to turn the plugin off.
"""

import sys

from mace_e0_plugin._switch import is_disabled

TRIGGER_MODULE = "mace.cli.run_train"


class RunTrainWatcher:
    """A meta-path finder that finds nothing: it only notices that mace's training script is loading."""

    is_mace_e0_plugin_watcher = True  # recognised by name, so a reloaded module adds no second one

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != TRIGGER_MODULE:
            return None
        uninstall()
        # Patch before mace.cli.run_train executes, so that its ``from ... import`` lines bind the
        # wrapped functions. Returning None lets the ordinary finders load the module.
        try:
            from mace_e0_plugin import adapters

            adapters.install()
        except Exception as error:  # never break mace because of the plugin
            import warnings

            warnings.warn(f"mace-e0-plugin: could not install its hook into mace ({error!r}); "
                          "--E0s=linear_system is unavailable in this process.", stacklevel=2)
        return None


def _is_watcher(finder):
    return getattr(finder, "is_mace_e0_plugin_watcher", False)


def install():
    if not any(_is_watcher(finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, RunTrainWatcher)


def uninstall():
    sys.meta_path[:] = [finder for finder in sys.meta_path if not _is_watcher(finder)]


if not is_disabled() and TRIGGER_MODULE not in sys.modules:
    install()
