"""The guard against mace changes: the wrappers are written for one mace-torch, checked before
anything is wrapped (its version, the functions we wrap and call, and their parameters), and what
mace returns is checked where we first unpack it.

Where something differs, nothing that depends on mace's internals is wrapped: a run that asks for
``--E0s=linear_system`` stops before loading data, with one line naming the installed mace-torch
and the supported one (``unsupported_message``); every other run is mace's own.
"""

import importlib
import inspect
from importlib.metadata import version
from typing import List, Optional, Sequence, Tuple

import torch

# The mace-torch releases the wrappers are tested with; pyproject.toml pins the same (a test keeps them equal).
TESTED_MACE = ("0.3.16",)
PIN = "mace-torch==" + TESTED_MACE[-1]

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
    """This mace-torch is not the one the wrappers are written for; ``reasons`` say how."""

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
    return (f"--E0s=linear_system is not available: mace-e0-plugin supports {PIN}, and this environment's "
            f"mace-torch {installed_mace_version() or '(version unknown)'} differs from it ({'; '.join(reasons)}), "
            f"so the plugin left mace as it was. Install {PIN}, or estimate the E0s with `mace-e0 estimate MODEL "
            "DATA --energy-key KEY --e0s-json E0S.json` and train with --E0s=E0S.json.")


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
    """How this mace-torch differs from the tested one: empty if it does not."""
    reasons = []
    version = installed_mace_version()
    if version not in TESTED_MACE:
        reasons.append(f"version {version}")
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
    """``result`` as the (first, second) pair mace-torch 0.3.16 returns, whose first item has
    ``first_has``; else UnsupportedMace, naming ``what`` returned what."""
    if isinstance(result, tuple) and len(result) == 2 and hasattr(result[0], first_has):
        return result
    shape = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
    raise UnsupportedMace([f"{what} returned {shape}, not ({first_has}-holder, ...)"])
