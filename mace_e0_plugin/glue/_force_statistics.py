"""The forces pass of ``mace-e0 diagnose`` (MACE glue): per-element sums for the force slopes, and
a fixed-size sample of each element's force components for the parity plot."""

from typing import Dict, Iterable, List, Tuple

import numpy as np
import torch

from ..math import ForceSlopeStatistics
from ._forward import forward

FORCE_SAMPLE_ATOMS = 5_000  # atoms per element kept for the parity plot: a fixed cost however large the data


def force_statistics(model: torch.nn.Module, batches: Iterable, n_elements: int, device
                     ) -> Tuple[ForceSlopeStatistics, Dict[int, Tuple[np.ndarray, np.ndarray]]]:
    """One pass with forces: per-element sums for the force slopes, and the first
    FORCE_SAMPLE_ATOMS atoms of each element (reference, predicted) for the parity plot. Configs
    without reference forces (forces weight 0) are left out."""
    statistics = ForceSlopeStatistics(n_elements, device)
    kept: Dict[int, List[Tuple[torch.Tensor, torch.Tensor]]] = {}
    sizes = [0] * n_elements
    for batch, output in forward(model, batches, device, forces=True):
        predicted = output["forces"].detach()
        element = batch.node_attrs.argmax(dim=1)
        used = batch.forces_weight[batch.batch] > 0
        statistics.update(element, predicted, batch.forces, used)
        for i in range(n_elements):
            take = FORCE_SAMPLE_ATOMS - sizes[i]
            if take <= 0:
                continue
            mine = (used & (element == i)).nonzero().flatten()[:take]
            if mine.numel():
                kept.setdefault(i, []).append((batch.forces[mine], predicted[mine]))
                sizes[i] += mine.numel()
    sample = {i: tuple(torch.cat(part).double().cpu().numpy().ravel() for part in zip(*parts))
              for i, parts in kept.items()}
    return statistics, sample
