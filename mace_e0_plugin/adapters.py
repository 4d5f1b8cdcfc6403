"""The ``mace.plugins`` entry point and the 0.3.16 wrappers, where the entry point, patch 0002 and
the start-up watcher name them: ``mace_e0_plugin.adapters:MacePlugin``. They live in ``training``."""

from .training import MacePlugin, install, installed_door, mace_has_plugin_hook, uninstall

__all__ = ["MacePlugin", "install", "uninstall", "installed_door", "mace_has_plugin_hook"]
