"""Reading and writing the E0s of a MACE model (glue to mace's model layout).

MACE keeps E0s in the ``atomic_energies`` buffer of ``model.atomic_energies_fn``: shape
[n_heads, n_elements] in multihead-era models, [n_elements] in older ones (no ``heads``
attribute), columns ordered as ``model.atomic_numbers``.
"""

import copy
import os
from typing import Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import mace  # noqa: F401  (lets torch.load unpickle mace models, and e3nn import)
import torch

from ..errors import E0InputError, E0ModelError, as_option

BUFFER_NAME = "atomic_energies"
REPLAY_HEAD = "pt_head"


def model_heads(model: torch.nn.Module) -> List[str]:
    heads = getattr(model, "heads", None)
    return [str(h) for h in heads] if heads else ["Default"]


def model_atomic_numbers(model: torch.nn.Module) -> List[int]:
    return [int(z) for z in model.atomic_numbers]


def default_head(heads: Sequence[str]) -> str:
    """mace's choice when no head is named: the only head, else the first that is not pt_head."""
    return next((h for h in heads if h != REPLAY_HEAD), heads[0])


def select_head(heads: Sequence[str], requested: Optional[str]) -> int:
    """The index of the head asked for (option ``head``), or of mace's default head."""
    name = default_head(heads) if requested is None else requested
    if name not in heads:
        raise E0InputError("{head}: the model has no such head; its heads are {heads}.",
                           head=as_option(requested), heads=", ".join(heads))
    return list(heads).index(name)


def e0_buffers(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Every E0 buffer inside ``module``: the model's own, and those of wrappers around copies of
    it (DistributedDataParallel, SWA's AveragedModel)."""
    return state_e0_buffers(dict(module.named_buffers()))


def state_e0_buffers(state: Mapping[str, torch.Tensor]) -> Iterator[torch.Tensor]:
    """Every E0 buffer in a state dict (a checkpoint's ``"model"``), or in named buffers."""
    for name, buffer in state.items():
        if name.rsplit(".", 1)[-1] == BUFFER_NAME:
            yield buffer


def _row(buffer: torch.Tensor, head_index: int) -> torch.Tensor:
    if buffer.dim() == 1:
        if head_index != 0:
            raise ValueError("a model with 1-D atomic_energies has a single head")
        return buffer
    return buffer[head_index]


def read_e0s(model: torch.nn.Module, head_index: int) -> List[float]:
    return _row(model.atomic_energies_fn.atomic_energies, head_index).detach().double().cpu().tolist()


def read_state_e0s(state: Mapping[str, torch.Tensor], head_index: int) -> List[float]:
    """One head's E0s from a state dict (the first E0 buffer in it)."""
    buffer = next(state_e0_buffers(state))
    return _row(buffer, head_index).detach().double().cpu().tolist()


@torch.no_grad()
def write_e0s(module: torch.nn.Module, head_index: int, e0s: Sequence[float]) -> int:
    """Write one head's E0 row into every E0 buffer in ``module``; returns how many were written."""
    return write_rows(e0_buffers(module), head_index, e0s)


@torch.no_grad()
def write_rows(buffers: Iterable[torch.Tensor], head_index: int, e0s: Sequence[float]) -> int:
    written = 0
    for buffer in buffers:
        row = _row(buffer, head_index)
        row.copy_(torch.as_tensor(list(e0s), dtype=torch.float64).to(row))
        written += 1
    return written


# -- reading models -------------------------------------------------------------------------------
def default_device() -> str:
    """Where a model read from a file runs unless told otherwise."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def read_model(path: str, device: str = "cpu") -> torch.nn.Module:
    if not os.path.isfile(path):
        raise E0InputError(f"MODEL {path}: no such file.")
    try:
        model = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # torch raises many types for files it cannot unpickle
        raise E0ModelError(f"MODEL {path}: cannot read it as a MACE model ({type(error).__name__}: "
                           f"{error}); give a .model file saved by mace, not a *_compiled.model.") from None
    if not hasattr(model, "atomic_energies_fn") or not hasattr(model, "atomic_numbers"):
        raise E0ModelError(f"MODEL {path}: {type(model).__name__} is not a MACE model with E0s.")
    return model


def model_from(model, device: Union[str, torch.device, None] = None) -> torch.nn.Module:
    """The MACE module behind ``model`` (a path, a module, or a MACECalculator such as
    ``mace_mp()`` returns), on ``device`` when given; by default a module stays where it is, and a
    model read from a file goes to ``default_device()``. A module passed in is never changed in
    place (a moved copy is). The dtype a pass runs in is the pass's affair (``network_for_pass``)."""
    owned = isinstance(model, (str, os.PathLike))  # read here: ours to move in place
    if owned:
        module = read_model(str(model))
        device = device if device is not None else default_device()
    elif isinstance(model, torch.nn.Module):
        module = model
    elif hasattr(model, "models") and isinstance(getattr(model, "models"), (list, tuple)):
        # mace.calculators.MACECalculator keeps its model(s) in .models
        if len(model.models) != 1:
            raise E0InputError(f"model: a MACECalculator with {len(model.models)} models (a committee); "
                               "pass one of them, calculator.models[i].")
        module = model.models[0]
    else:
        raise E0InputError(f"model: {type(model).__name__} is not a MACE model; give a .model path, a MACE "
                           "torch.nn.Module, or a MACECalculator (mace.calculators.mace_mp() and the like).")
    if not hasattr(module, "atomic_energies_fn") or not hasattr(module, "atomic_numbers"):
        raise E0ModelError(f"model: {type(module).__name__} is not a MACE model with E0s.")
    if device is None or next(module.parameters()).device == torch.device(device):
        return module
    return (module if owned else copy.deepcopy(module)).to(device=device)
