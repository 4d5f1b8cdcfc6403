"""The two ways into mace's run for the ``TrainingDoor`` of ``_door``.

A mace-torch with the ``mace.plugins`` entry-point hook (patches/0002) calls ``MacePlugin``.
mace-torch 0.3.x has none, so ``install()`` wraps the functions that lead to each step
(``tools.build_default_arg_parser``, ``tools.check_args``, ``get_dataset_from_xyz``,
``get_atomic_energies``, ``tools.train``, ``train_one_epoch``). Each wrapper holds the door it
calls; there is no run at module level.

In a run that does not ask for linear_system every wrapper calls mace's function with the same
arguments and returns its result untouched; what ours do there is read the E0s values (and add
our options to the parser, so that they parse). Where the installed mace-torch differs from the
what the wrappers rely on (``_compat``), only those two are wrapped, and only to stop a run that asks.
"""

import functools
import inspect
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional

from .._switch import is_disabled
from ._compat import find, incompatibilities, unpack_pair
from ._door import TrainingDoor
from ._run import KEYWORD

_MARK = "_mace_e0_plugin_wraps"  # on a wrapper: the function it wraps
_DOOR = "_mace_e0_plugin_door"  # on a wrapper: the door it calls
RUN_TRAIN_MODULE = "mace.cli.run_train"


# -- adapter for a mace with the ``mace.plugins`` entry-point hook (see patches/) -----------------
class EntryPointHooks:
    """The ``mace.plugins`` entry point: mace calls these with keyword arguments, on one door."""

    def __init__(self, door: Optional[TrainingDoor] = None):
        self.door = door or TrainingDoor()

    def add_arguments(self, parser):
        if not is_disabled():
            self.door.add_arguments(parser)

    def configure(self, args):
        if not is_disabled():
            self.door.configure(args)

    def dataset_loaded(self, head_config, args):  # pylint: disable=unused-argument
        if self.door.active:
            collections = head_config.collections
            self.door.dataset_loaded(head_config.head_name, collections.train if collections else [],
                                     head_config.atomic_energies_dict)

    def atomic_energies(self, head_config, z_table, model_foundation=None, args=None):  # pylint: disable=unused-argument
        return self.door.atomic_energies(head_config.E0s, z_table, model_foundation) if self.door.active else None

    def before_training(self, args=None, **train_kwargs):  # pylint: disable=unused-argument
        self.door.before_training(**train_kwargs)

    def epoch_start(self, epoch, **_context):
        if self.door.run is not None:
            self.door.run.epoch_start(epoch)

    def epoch_end(self, epoch, **_context):
        if self.door.run is not None:
            self.door.run.epoch_end(epoch)

    def after_training(self, args=None, **train_kwargs):  # pylint: disable=unused-argument
        self.door.after_training(**train_kwargs)


MacePlugin = EntryPointHooks()  # what the entry point names: mace loads it once and keeps it


def mace_has_plugin_hook() -> bool:
    """A mace-torch that calls ``mace.plugins`` entry points itself (patches/0002) needs no wrappers."""
    plugins = find("mace.tools.plugins:GROUP")
    return plugins == "mace.plugins" and callable(find("mace.tools.plugins:call"))


# -- adapter for mace-torch 0.3.x without the hook: wrappers -----------------------------------------
def _argument(signature: inspect.Signature, args, kwargs, name: str):
    try:
        return signature.bind(*args, **kwargs).arguments.get(name)
    except TypeError:  # a mace whose signature changed (refusal mode): its first argument
        return args[0] if args else next(iter(kwargs.values()), None)


def _wrap_build_default_arg_parser(original, door: TrainingDoor):
    def build_default_arg_parser(*args, **kwargs):
        parser = original(*args, **kwargs)
        try:
            door.add_arguments(parser)
        except Exception as error:  # pylint: disable=broad-except  (mace's parser stays usable)
            warnings.warn(f"mace-e0-plugin: could not add its options to mace's parser ({error!r}); "
                          f"--E0s={KEYWORD} is unavailable in this run.", stacklevel=2)
        return parser
    return build_default_arg_parser


def _wrap_check_args(original, door: TrainingDoor):
    signature = inspect.signature(original)

    def check_args(*args, **kwargs):
        result = original(*args, **kwargs)
        given = _argument(signature, args, kwargs, "args")
        with door.stopping_before_training():
            if door.asks(given):  # only then is mace's result unpacked, and checked first
                given = unpack_pair(result, "mace.tools.check_args", "E0s")[0]
            door.configure(given)
        return result
    return check_args


def _wrap_get_dataset_from_xyz(original, door: TrainingDoor):
    signature = inspect.signature(original)

    def get_dataset_from_xyz(*args, **kwargs):
        result = original(*args, **kwargs)
        if not door.active:
            return result
        with door.stopping_before_training():
            collections, isolated_atoms = unpack_pair(result, "mace.tools.scripts_utils.get_dataset_from_xyz",
                                                      "train")
            head = _argument(signature, args, kwargs, "head_name") or "Default"
            if door.dataset_loaded(head, collections.train, isolated_atoms):
                return collections, None  # else mace would build from them and ignore --E0s
        return result
    return get_dataset_from_xyz


def _wrap_get_atomic_energies(original, door: TrainingDoor):
    signature = inspect.signature(original)

    def get_atomic_energies(*args, **kwargs):
        if door.active:
            call = signature.bind(*args, **kwargs).arguments
            placeholder = door.atomic_energies(call["E0s"], call["z_table"])
            if placeholder is not None:
                return placeholder
        return original(*args, **kwargs)
    return get_atomic_energies


def _wrap_train(original, door: TrainingDoor):
    signature = inspect.signature(original)

    def train(*args, **kwargs):
        if not door.active:
            return original(*args, **kwargs)
        arguments = signature.bind(*args, **kwargs).arguments
        door.before_training(**arguments)
        try:
            result = original(*args, **kwargs)
        except BaseException:
            door.training_failed()
            raise
        door.after_training(**arguments)  # never raises: mace saves and evaluates as it would
        return result
    return train


def _wrap_train_one_epoch(original, door: TrainingDoor):
    signature = inspect.signature(original)

    def train_one_epoch(*args, **kwargs):
        fit = door.run
        if fit is None:
            return original(*args, **kwargs)
        epoch = signature.bind(*args, **kwargs).arguments["epoch"]
        fit.epoch_start(epoch)  # neither raises: after the first step nothing of ours stops mace
        result = original(*args, **kwargs)
        fit.epoch_end(epoch)
        return result
    return train_one_epoch


@dataclass(frozen=True)
class Target:
    where: str  # "module:attribute"
    wrap: Callable
    refusal: bool = False  # wrapped also for a mace-torch we do not support, to stop a run that asks

    @property
    def module(self) -> str:
        return self.where.partition(":")[0]

    @property
    def name(self) -> str:
        return self.where.partition(":")[2]


# mace.cli.run_train binds the middle two with ``from ... import``, so they are patched in their
# home module before it loads (or rebound there, and in a run_train.py run as a script, after);
# tools.train looks train_one_epoch up in its own module at each call.
TARGETS: List[Target] = [
    Target("mace.tools:build_default_arg_parser", _wrap_build_default_arg_parser, refusal=True),
    Target("mace.tools:check_args", _wrap_check_args, refusal=True),
    Target("mace.tools.scripts_utils:get_dataset_from_xyz", _wrap_get_dataset_from_xyz),
    Target("mace.tools.scripts_utils:get_atomic_energies", _wrap_get_atomic_energies),
    Target("mace.tools:train", _wrap_train),
    Target("mace.tools.train:train_one_epoch", _wrap_train_one_epoch),
]


def installed_door() -> Optional[TrainingDoor]:
    """The door the installed wrappers call, or None."""
    return getattr(find("mace.tools:check_args"), _DOOR, None)


def _run_train_modules() -> list:
    """Where mace's training script bound the wrapped names: ``mace.cli.run_train``, and
    ``__main__`` when that script is run as a file (``python path/to/mace/cli/run_train.py``)."""
    modules = [sys.modules.get(RUN_TRAIN_MODULE)]
    main = sys.modules.get("__main__")
    script, package = getattr(main, "__file__", None), find("mace:__path__")
    if script and package and os.path.realpath(script) == os.path.realpath(
            os.path.join(list(package)[0], "cli", "run_train.py")):
        modules.append(main)
    return [module for module in modules if module is not None]


def install() -> Optional[TrainingDoor]:
    """Wrap mace's functions around one new door, and return it; idempotent (the installed door is
    returned). None when mace calls ``MacePlugin`` through its own hook, or when even the refusal
    cannot be wrapped (with a warning). For a mace-torch that differs from the tested one
    (``_compat``) only the refusal targets are wrapped."""
    if mace_has_plugin_hook():
        return None
    door = installed_door()
    if door is not None:
        return door
    reasons = incompatibilities()
    targets = [target for target in TARGETS if target.refusal or not reasons]
    missing = [target.where for target in targets if not callable(find(target.where))]
    if missing:
        warnings.warn(f"mace-e0-plugin: this mace-torch lacks {', '.join(missing)}, so --E0s={KEYWORD} is "
                      "unavailable and cannot be refused either.", stacklevel=2)
        return None
    door = TrainingDoor(unsupported=reasons or None)
    rebind = _run_train_modules()
    for target in targets:
        module = sys.modules[target.module]
        current = getattr(module, target.name)
        wrapper = functools.wraps(current)(target.wrap(current, door))
        setattr(wrapper, _MARK, current)
        setattr(wrapper, _DOOR, door)
        setattr(module, target.name, wrapper)
        for script in rebind:  # already imported: rebind its names too
            if getattr(script, target.name, None) is current:
                setattr(script, target.name, wrapper)
    return door


def uninstall() -> None:
    """Undo install() (for tests)."""
    rebind = _run_train_modules()
    for target in TARGETS:
        module = sys.modules.get(target.module)
        current = getattr(module, target.name, None) if module else None
        original = getattr(current, _MARK, None)
        if original is not None:
            setattr(module, target.name, original)
            for script in rebind:
                if getattr(script, target.name, None) is current:
                    setattr(script, target.name, original)
