"""Every collective the plugin makes under torch.distributed, in one place (MACE glue).

Ranks must enter the same collectives in the same order, so each decision that changes which
collectives follow is taken here, once for all ranks, not by each rank from its own view.
"""

from typing import List, Sequence, Tuple

import torch
import torch.distributed as dist

from ..math import E0LinearSystem, E0Solution


def rank_and_size(distributed: bool = True) -> Tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside an initialised process group."""
    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(value, distributed: bool = True):
    """Rank 0's ``value`` on every rank (any picklable object): for a decision each rank could
    take differently from its own view (a float compared to a tolerance, what its file system
    shows), so that all ranks go on into the same collectives. The value itself outside a group."""
    _, world_size = rank_and_size(distributed)
    if world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_(systems: Sequence[E0LinearSystem], group=None) -> None:
    """Sum every system over all ranks in place, with a single all-reduce."""
    if not systems:
        return
    flats = [system.flat() for system in systems]
    packed = torch.cat(flats)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    for system, flat in zip(systems, torch.split(packed, [f.numel() for f in flats])):
        system.load_flat(flat)


def all_gather_tensors(tensors: Sequence[torch.Tensor], distributed: bool = True) -> List[torch.Tensor]:
    """Every rank's tensors, concatenated along their first dimension in rank order, on every rank
    (their first sizes may differ between ranks)."""
    _, world_size = rank_and_size(distributed)
    if world_size == 1:
        return list(tensors)
    gathered = [None] * world_size
    dist.all_gather_object(gathered, [t.cpu() for t in tensors])
    device = tensors[0].device
    return [torch.cat([part[i] for part in gathered]).to(device) for i in range(len(tensors))]


def broadcast_e0s(solutions: List[E0Solution], device) -> None:
    """Rank 0's E0s to every rank, so that all models agree bit for bit."""
    packed = torch.tensor([e for s in solutions for e in s.e0s], dtype=torch.float64, device=device)
    dist.broadcast(packed, src=0)
    values = packed.tolist()
    for solution in solutions:
        count = len(solution.e0s)
        solution.e0s, values = values[:count], values[count:]


def barrier() -> None:
    dist.barrier()


def synchronize(device) -> None:
    """Wait for the device, so that a timing covers the work it measures."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
