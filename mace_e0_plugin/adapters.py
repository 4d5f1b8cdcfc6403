"""The ``mace.plugins`` entry point, ``e0 = "mace_e0_plugin.adapters"``, and the names the start-up
watcher calls. Standard library only, and lazy: importing this module imports no mace, no torch and
nothing else of ours, patches nothing and changes no global, because mace imports it where it
imports every ``mace.plugins`` entry:

- mace v1 imports each ``mace.plugins`` module at start-up for the registrations it makes (this one
  makes none yet: v1 has no E0 registry) and refuses any that reaches into the legacy ``mace``;
- a mace-torch 0.3.x with patches/0002 loads the entry once and calls the hooks below by name, with
  keyword arguments, at each step of ``mace_run_train``.

The first hook called imports ``mace_e0_plugin.training`` and forwards to its ``MacePlugin``;
``install``, ``uninstall``, ``installed_door`` and ``mace_has_plugin_hook`` forward the same way.
"""

import importlib

TRAINING = "mace_e0_plugin.training"  # imported on the first call below, never at import
HOOKS = ("add_arguments", "configure", "dataset_loaded", "atomic_energies", "before_training", "epoch_start",
         "epoch_end", "after_training")


def _training():
    return importlib.import_module(TRAINING)


class LazyPlugin:
    """``training.MacePlugin``'s hooks, with its signatures; the first call imports it."""

    __slots__ = ()

    def add_arguments(self, parser):
        return _training().MacePlugin.add_arguments(parser=parser)

    def configure(self, args):
        return _training().MacePlugin.configure(args=args)

    def dataset_loaded(self, head_config, args):
        return _training().MacePlugin.dataset_loaded(head_config=head_config, args=args)

    def atomic_energies(self, head_config, z_table, model_foundation=None, args=None):
        return _training().MacePlugin.atomic_energies(head_config=head_config, z_table=z_table,
                                                       model_foundation=model_foundation, args=args)

    def before_training(self, args=None, **train_kwargs):
        return _training().MacePlugin.before_training(args=args, **train_kwargs)

    def epoch_start(self, epoch, **context):
        return _training().MacePlugin.epoch_start(epoch=epoch, **context)

    def epoch_end(self, epoch, **context):
        return _training().MacePlugin.epoch_end(epoch=epoch, **context)

    def after_training(self, args=None, **train_kwargs):
        return _training().MacePlugin.after_training(args=args, **train_kwargs)


MacePlugin = LazyPlugin()  # holds nothing: the run's door is training.MacePlugin's, one per process

# The entry point names this module, so patch 0002's loader finds the hooks here, by name.
add_arguments = MacePlugin.add_arguments
configure = MacePlugin.configure
dataset_loaded = MacePlugin.dataset_loaded
atomic_energies = MacePlugin.atomic_energies
before_training = MacePlugin.before_training
epoch_start = MacePlugin.epoch_start
epoch_end = MacePlugin.epoch_end
after_training = MacePlugin.after_training


def install():
    """``training.install()``: wrap mace-torch 0.3.x's functions (the start-up watcher calls this)."""
    return _training().install()


def uninstall():
    """``training.uninstall()``."""
    return _training().uninstall()


def installed_door():
    """``training.installed_door()``."""
    return _training().installed_door()


def mace_has_plugin_hook():
    """``training.mace_has_plugin_hook()``."""
    return _training().mace_has_plugin_hook()


__all__ = ["MacePlugin", "LazyPlugin", *HOOKS, "install", "uninstall", "installed_door", "mace_has_plugin_hook"]
