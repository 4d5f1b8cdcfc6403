"""The two ways into mace's run for the life cycle in ``_lifecycle`` (one ``TrainingDoor``).

A mace-torch with the ``mace.plugins`` entry-point hook (patches/0002) calls ``MacePlugin``.
mace-torch 0.3.16 has none, so ``install()`` wraps the functions that lead to each step
(``tools.build_default_arg_parser``, ``tools.check_args``, ``get_dataset_from_xyz``,
``get_atomic_energies``, ``tools.train``, ``train_one_epoch``); the wrappers do nothing unless the
run asked for ``linear_system`` on at least one head.
"""

import functools
import importlib
import inspect
import sys
import warnings

from .._switch import is_disabled
from ._lifecycle import KEYWORD, TrainingDoor

SUPPORTED_MACE = "mace-torch 0.3.x (tested with 0.3.16)"
_MARK = "_mace_e0_plugin_wraps"

DOOR = TrainingDoor()  # the one run in progress, whichever way mace calls us


# -- adapter for a mace with the ``mace.plugins`` entry-point hook (see patches/) -----------------
class MacePlugin:
    """The ``mace.plugins`` entry point: mace calls these with keyword arguments."""

    @staticmethod
    def add_arguments(parser):
        if not is_disabled():
            DOOR.add_arguments(parser)

    @staticmethod
    def configure(args):
        if not is_disabled():
            DOOR.configure(args)

    @staticmethod
    def dataset_loaded(head_config, args):  # pylint: disable=unused-argument
        collections = head_config.collections
        DOOR.dataset_loaded(head_config.head_name, collections.train if collections else [],
                            head_config.atomic_energies_dict)

    @staticmethod
    def atomic_energies(head_config, z_table, model_foundation=None, args=None):  # pylint: disable=unused-argument
        return DOOR.atomic_energies(head_config.E0s, z_table, model_foundation)

    @staticmethod
    def before_training(args=None, **train_kwargs):  # pylint: disable=unused-argument
        DOOR.before_training(**train_kwargs)

    @staticmethod
    def epoch_start(epoch, **_context):
        DOOR.epoch_start(epoch)

    @staticmethod
    def epoch_end(epoch, **_context):
        DOOR.epoch_end(epoch)

    @staticmethod
    def after_training(args=None, **train_kwargs):  # pylint: disable=unused-argument
        DOOR.after_training(**train_kwargs)


def mace_has_plugin_hook() -> bool:
    """A mace-torch that calls ``mace.plugins`` entry points itself (patches/0002) needs no wrappers."""
    try:
        plugins = importlib.import_module("mace.tools.plugins")
    except ImportError:
        return False
    return getattr(plugins, "GROUP", None) == "mace.plugins" and callable(getattr(plugins, "call", None))


# -- adapter for mace-torch 0.3.x without the hook: wrappers -----------------------------------------
def _wrap_build_default_arg_parser(original):
    def build_default_arg_parser(*args, **kwargs):
        parser = original(*args, **kwargs)
        DOOR.add_arguments(parser)
        return parser
    return build_default_arg_parser


def _wrap_check_args(original):
    def check_args(args):
        args, messages = original(args)
        DOOR.configure(args)
        return args, messages
    return check_args


def _wrap_get_dataset_from_xyz(original):
    def get_dataset_from_xyz(*args, **kwargs):
        collections, isolated_atoms = original(*args, **kwargs)
        if DOOR.dataset_loaded(kwargs.get("head_name", "Default"), collections.train, isolated_atoms):
            isolated_atoms = None  # else mace would build from them and ignore --E0s
        return collections, isolated_atoms
    return get_dataset_from_xyz


def _wrap_get_atomic_energies(original):
    def get_atomic_energies(E0s, train_collection, z_table, *args, **kwargs):  # pylint: disable=invalid-name
        placeholder = DOOR.atomic_energies(E0s, z_table)
        if placeholder is not None:
            return placeholder
        return original(E0s, train_collection, z_table, *args, **kwargs)
    return get_atomic_energies


def _wrap_train(original):
    signature = inspect.signature(original)

    def train(*args, **kwargs):
        if not DOOR.active:
            return original(*args, **kwargs)
        arguments = signature.bind(*args, **kwargs).arguments
        DOOR.before_training(**arguments)
        try:
            result = original(*args, **kwargs)
        except BaseException:
            DOOR.training_failed()
            raise
        DOOR.after_training(**arguments)
        return result
    return train


def _wrap_train_one_epoch(original):
    signature = inspect.signature(original)

    def train_one_epoch(*args, **kwargs):
        if not DOOR.active:
            return original(*args, **kwargs)
        epoch = signature.bind(*args, **kwargs).arguments["epoch"]
        DOOR.epoch_start(epoch)
        result = original(*args, **kwargs)
        DOOR.epoch_end(epoch)
        return result
    return train_one_epoch


# (module, attribute, wrapper factory). mace.cli.run_train binds the middle two with
# ``from ... import``, so they are patched in their home module before it loads; tools.train
# looks train_one_epoch up in its own module at each call.
_TARGETS = [
    ("mace.tools", "build_default_arg_parser", _wrap_build_default_arg_parser),
    ("mace.tools", "check_args", _wrap_check_args),
    ("mace.tools.scripts_utils", "get_dataset_from_xyz", _wrap_get_dataset_from_xyz),
    ("mace.tools.scripts_utils", "get_atomic_energies", _wrap_get_atomic_energies),
    ("mace.tools", "train", _wrap_train),
    ("mace.tools.train", "train_one_epoch", _wrap_train_one_epoch),
]


def install() -> bool:
    """Wrap mace's functions; idempotent. Returns False when mace calls us through its own plugin
    hook, and False with a warning when this mace-torch lacks something we wrap: then nothing is
    patched and mace runs as if we were absent."""
    if mace_has_plugin_hook():
        return False
    try:
        originals = [(importlib.import_module(module), name, factory) for module, name, factory in _TARGETS]
        missing = [f"{module.__name__}.{name}" for module, name, _ in originals if not hasattr(module, name)]
    except ImportError as error:
        missing = [str(error)]
    if missing:
        warnings.warn(f"mace-e0-plugin supports {SUPPORTED_MACE}; this mace-torch lacks "
                      f"{', '.join(missing)}, so --E0s={KEYWORD} is unavailable.", stacklevel=2)
        return False
    run_train = sys.modules.get("mace.cli.run_train")  # already imported: rebind its names too
    for module, name, factory in originals:
        current = getattr(module, name)
        if getattr(current, _MARK, None) is not None:
            continue
        wrapper = functools.wraps(current)(factory(current))
        setattr(wrapper, _MARK, current)
        setattr(module, name, wrapper)
        if run_train is not None and getattr(run_train, name, None) is current:
            setattr(run_train, name, wrapper)
    return True


def uninstall() -> None:
    """Undo install() (for tests)."""
    run_train = sys.modules.get("mace.cli.run_train")
    for module_name, name, _ in _TARGETS:
        module = sys.modules.get(module_name)
        current = getattr(module, name, None) if module else None
        original = getattr(current, _MARK, None)
        if original is not None:
            setattr(module, name, original)
            if run_train is not None and getattr(run_train, name, None) is current:
                setattr(run_train, name, original)
