"""The ``mace.plugins`` entry point and the 0.3.16 wrappers, where the entry point, patch 0002 and
the start-up watcher name them: ``mace_e0_plugin.adapters:MacePlugin``. They live in ``training``."""

from .training._adapters import _MARK, _TARGETS, DOOR, MacePlugin, install, mace_has_plugin_hook, uninstall

__all__ = ["MacePlugin", "install", "uninstall", "mace_has_plugin_hook", "DOOR"]
