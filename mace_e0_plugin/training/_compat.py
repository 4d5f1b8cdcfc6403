"""The guard against mace changes: the wrappers rely on named functions of mace-torch 0.3.x, their
parameters, and the shapes of what they return. They are checked by what we rely on, not by the
version string: before anything is wrapped, every function we wrap or call and the parameters we
bind; what mace returns, where we first unpack it.

- Every parameter matches, on a tested release (``TESTED_MACE``): the plugin runs.
- Every parameter matches, on another release: it runs too, and a run that asks for
  ``--E0s=linear_system`` logs one warning line naming the tested releases (``untested_warning``).
- Something differs: nothing that depends on mace's internals is wrapped; a run that asks stops
  before loading data with one line naming the installed mace-torch and what differs
  (``unsupported_message``); every other run is mace's own.
"""

import importlib
import inspect
from importlib.metadata import version
from typing import List, Optional, Sequence, Tuple

import torch

# The mace-torch releases the suite trains on (tests/test_mace_releases.py, one by one); pyproject.toml
# requires the same range (a test keeps them equal). 0.3.13 is the floor: the first with
# ``mace.data.KeySpecification``, which mace-e0 reads extxyz files with.
TESTED_MACE = ("0.3.13", "0.3.14", "0.3.15", "0.3.16")
NEXT_BREAKING = "0.4"  # mace v1: a new training engine, which these wrappers are not written for
REQUIREMENT = f"mace-torch>={TESTED_MACE[0]},<{NEXT_BREAKING}"
TESTED_RANGE = f"mace-torch {TESTED_MACE[0]} to {TESTED_MACE[-1]}"

# The functions we wrap or call ("module:attribute"), and the parameters whose names we bind or read.
EXPECTED_PARAMETERS = {
    "mace.tools:build_default_arg_parser": (),
    "mace.tools:check_args": ("args",),
    "mace.tools.scripts_utils:get_dataset_from_xyz": ("train_path", "head_name"),
    "mace.tools.scripts_utils:get_atomic_energies": ("E0s", "train_collection", "z_table"),
    "mace.tools:train": ("model", "loss_fn", "train_loader", "optimizer", "checkpoint_handler", "device", "swa",
                         "distributed", "rank"),
    "mace.tools.train:train_one_epoch": ("epoch",),
    "mace.tools.checkpoint:CheckpointIO._list_file_paths": ("self",),
    "mace.tools.checkpoint:CheckpointIO._parse_checkpoint_path": ("self", "path"),
}
LOSS_MODULE = "mace.modules.loss"  # every loss module's forward: the epoch refit binds its call to them
LOSS_PARAMETERS = ("ref", "pred")  # what the epoch refit reads from every call of mace's loss


class UnsupportedMace(Exception):
    """This mace-torch differs from what the wrappers rely on; ``reasons`` say how."""

    def __init__(self, reasons: Sequence[str]):
        self.reasons = list(reasons)
        super().__init__(unsupported_message(self.reasons))


def installed_mace_version() -> Optional[str]:
    """The version of the mace package that is imported (a copy on PYTHONPATH included)."""
    try:
        return str(importlib.import_module("mace").__version__)
    except (ImportError, AttributeError):
        try:
            return version("mace-torch")
        except Exception:  # pylint: disable=broad-except
            return None


def unsupported_message(reasons: Sequence[str]) -> str:
    return (f"--E0s=linear_system is not available: mace-e0-plugin relies on functions of {TESTED_RANGE} "
            f"(tested), and this environment's mace-torch {installed_mace_version() or '(version unknown)'} differs "
            f"({'; '.join(reasons)}), so the plugin left mace as it was. Install a tested release "
            f"(pip install 'mace-torch=={TESTED_MACE[-1]}'), or estimate the E0s with `mace-e0 estimate MODEL DATA "
            "--energy-key KEY --e0s-json E0S.json` and train with --E0s=E0S.json.")


def untested_warning() -> Optional[str]:
    """The one warning line for a release outside ``TESTED_MACE`` whose functions match; None on a tested one."""
    installed = installed_mace_version()
    if installed in TESTED_MACE:
        return None
    return (f"mace-e0-plugin: mace-torch {installed or '(version unknown)'} is not a tested release "
            f"({TESTED_RANGE}); every function and parameter the plugin relies on matches, so --E0s=linear_system "
            "runs. Report anything odd, with the version, to mace-e0-plugin.")


def find(where: str):
    """The object at ``module:attribute[.attribute]``, or None."""
    module_name, _, path = where.partition(":")
    try:
        found = importlib.import_module(module_name)
    except ImportError:
        return None
    for name in path.split("."):
        found = getattr(found, name, None)
    return found


def incompatibilities() -> List[str]:
    """How this mace-torch differs from what the wrappers rely on: empty if it does not. The
    version string is not among them (``untested_warning``)."""
    reasons = []
    for dotted, names in EXPECTED_PARAMETERS.items():
        reasons += _parameter_differences(dotted, find(dotted), names)
    try:
        losses = importlib.import_module(LOSS_MODULE)
    except ImportError:
        losses = None
    if losses is None:
        reasons.append(f"{LOSS_MODULE} is missing")
    else:
        for name, cls in sorted(vars(losses).items()):
            if isinstance(cls, type) and issubclass(cls, torch.nn.Module) and cls.__module__ == LOSS_MODULE:
                reasons += _parameter_differences(f"{LOSS_MODULE}:{name}.forward", cls.forward, LOSS_PARAMETERS)
    return reasons


def _parameter_differences(dotted: str, function, names: Sequence[str]) -> List[str]:
    if not callable(function):
        return [f"{dotted} is missing"]
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return [f"{dotted} has no readable signature"]
    return [f"{dotted} has no parameter '{name}'" for name in names if name not in parameters]


def unpack_pair(result, what: str, first_has: str) -> Tuple[object, object]:
    """``result`` as the (first, second) pair mace-torch 0.3.x returns, whose first item has
    ``first_has``; else UnsupportedMace, naming ``what`` returned what."""
    if isinstance(result, tuple) and len(result) == 2 and hasattr(result[0], first_has):
        return result
    shape = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
    raise UnsupportedMace([f"{what} returned {shape}, not ({first_has}-holder, ...)"])
