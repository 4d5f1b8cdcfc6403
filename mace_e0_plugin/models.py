"""Reading and writing the E0s of a MACE model (glue to mace's model layout).

MACE keeps E0s in the ``atomic_energies`` buffer of ``model.atomic_energies_fn``: shape
[n_heads, n_elements] in multihead-era models, [n_elements] in older ones (no ``heads``
attribute), columns ordered as ``model.atomic_numbers``.
"""

from typing import Iterable, Iterator, List, Mapping, Optional, Sequence

import torch

from .errors import E0InputError

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


def select_head(heads: Sequence[str], requested: Optional[str], option: str = "--head") -> int:
    name = default_head(heads) if requested is None else requested
    if name not in heads:
        raise E0InputError(f"{option}={requested}: the model has no such head; its heads are "
                           f"{', '.join(heads)}.")
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
