"""Running the model over data into an ``E0LinearSystem`` (glue to mace's data and models).

One energy-only, no-grad pass in eval mode, batched, on the model's device. Everything per batch
stays on that device: the host sees nothing until the statistics are solved.
"""

import contextlib
from typing import Callable, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from .linear_system import E0LinearSystem


def element_counts(batch) -> torch.Tensor:
    """[n_graphs, n_elements] atoms of each element per config, from the one-hot node attributes."""
    n_graphs = batch.ptr.numel() - 1
    counts = torch.zeros(n_graphs, batch.node_attrs.shape[1], dtype=batch.node_attrs.dtype,
                         device=batch.node_attrs.device)
    return counts.index_add_(0, batch.batch, batch.node_attrs)


def _inputs_in(batch, dtype: torch.dtype) -> dict:
    """The batch as the model's input, its floating tensors in the model's dtype. The batch itself
    keeps its own (float64 reference energies for a float32 model keep their digits)."""
    return {key: value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value
            for key, value in batch.to_dict().items()}


def residuals_in_float64(model: torch.nn.Module, batch, output, counts: torch.Tensor) -> torch.Tensor:
    """E_ref - E_pred [B] in float64 whatever the model's dtype: E_pred = counts . E0 + E_interaction,
    with the E0 part summed here in float64. In float32 that sum (thousands of eV per config) is
    what loses the digits; the interaction energy, small, keeps them."""
    interaction = output.get("interaction_energy")
    if interaction is None:  # a model that does not split its energy: take it whole
        return batch.energy.double() - output["energy"].double()
    e0s = model.atomic_energies_fn.atomic_energies.detach().double()
    if e0s.dim() == 1:
        e0_part = counts.double() @ e0s
    else:
        e0_part = (counts.double() * e0s[batch.head.reshape(-1)]).sum(dim=1)
    return batch.energy.double() - e0_part - interaction.double()


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """This rank's share, strided: every config on exactly one rank, no padding duplicates."""
    if world_size <= 1:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world_size))


def compositions(dataset: Dataset) -> List[Tuple[int, ...]]:
    """Element counts of every config, in the model's element order, without running the model:
    from configs or h5 arrays where the dataset keeps them, else from the graphs' one-hot nodes."""
    if isinstance(dataset, ConcatDataset):
        return [c for part in dataset.datasets for c in compositions(part)]
    if isinstance(dataset, Subset):
        inner = compositions(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    z_table = getattr(dataset, "z_table", None)
    if z_table is not None and hasattr(dataset, "configs"):  # ConfigGraphs: configs in memory
        return [_counts(config.atomic_numbers, z_table.zs) for config in dataset.configs]
    if z_table is not None and hasattr(dataset, "file") and hasattr(dataset, "batch_size"):  # HDF5Dataset
        return [_counts(dataset.file[f"config_batch_{i // dataset.batch_size}"]
                        [f"config_{i % dataset.batch_size}"]["atomic_numbers"][()], z_table.zs)
                for i in range(len(dataset))]
    return [tuple(int(round(c)) for c in item.node_attrs.sum(dim=0).tolist()) for item in dataset]


def _counts(atomic_numbers, zs) -> Tuple[int, ...]:
    numbers = np.asarray(atomic_numbers)
    return tuple(int(np.sum(numbers == z)) for z in zs)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False):
    from mace.tools import torch_geometric

    return torch_geometric.dataloader.DataLoader(
        dataset=dataset, batch_size=batch_size, shuffle=False, drop_last=False,
        num_workers=num_workers, pin_memory=pin_memory)


class ResidualSample:
    """Counts and residuals of the first ``limit`` configs, for plots: a fixed cost however large
    the data. Kept on the device and copied to the host once, by ``arrays``."""

    def __init__(self, limit: int = 20_000):
        self.limit = limit
        self._parts = []
        self._size = 0

    def add(self, counts: torch.Tensor, residuals: torch.Tensor, loss_weights: torch.Tensor) -> None:
        take = min(self.limit - self._size, counts.shape[0])
        if take > 0:
            self._parts.append((counts[:take], residuals[:take], loss_weights[:take]))
            self._size += take

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        """(counts [k, n_elements], residuals [k]) of the sampled configs that have an energy."""
        if not self._parts:
            return np.zeros((0, 0)), np.zeros(0)
        counts, residuals, weights = (torch.cat(parts).double().cpu().numpy() for parts in zip(*self._parts))
        usable = (weights > 0) & np.isfinite(residuals)
        return counts[usable], residuals[usable]


@torch.no_grad()
def accumulate(model: torch.nn.Module, batches: Iterable, system: E0LinearSystem,
               device: torch.device, progress: Optional[str] = None,
               sample: Optional[ResidualSample] = None,
               stop: Optional[Callable[[int], bool]] = None) -> E0LinearSystem:
    """Add every batch to ``system``: residuals of the model's energies under its current E0s.

    ``stop(n_batches_done)``, if given, is asked after each batch whether enough has been seen.
    """
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=progress, unit="batch", mininterval=2.0, leave=False)
    dtype = next(model.parameters()).dtype
    with evaluation_mode(model):
        for done, batch in enumerate(batches, start=1):
            batch = batch.to(device, non_blocking=True)
            with default_dtype(dtype):  # tensors the model makes on the fly: its dtype, not the graphs'
                output = model(_inputs_in(batch, dtype), training=False, compute_force=False,
                               compute_virials=False, compute_stress=False)
            counts = element_counts(batch)
            residuals = residuals_in_float64(model, batch, output, counts)
            loss_weights = batch.weight * batch.energy_weight
            system.update(counts, residuals, loss_weights)
            if sample is not None:
                sample.add(counts, residuals, loss_weights)
            if stop is not None and stop(done):
                break
    return system
