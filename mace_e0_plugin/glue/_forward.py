"""The one forward pass over data: the model in eval mode, batched, on its device (MACE glue).

``forward`` yields each batch with the model's output: energies only and no grad by default, or
forces (a pass with gradients) on request. Everything the estimate keeps per batch stays on the
device; the host sees nothing until the statistics are solved.
"""

import contextlib
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..math import E0LinearSystem, ForceSlopeStatistics

SAMPLE_SIZE = 20_000  # configs per head kept for figures: a fixed cost however large the data
FORCE_SAMPLE_ATOMS = 5_000  # atoms per element kept for the parity plot, likewise


def element_counts(batch) -> torch.Tensor:
    """[n_graphs, n_elements] atoms of each element per config, from the one-hot node attributes."""
    n_graphs = batch.ptr.numel() - 1
    counts = torch.zeros(n_graphs, batch.node_attrs.shape[1], dtype=batch.node_attrs.dtype,
                         device=batch.node_attrs.device)
    return counts.index_add_(0, batch.batch, batch.node_attrs)


def model_inputs(batch, dtype: torch.dtype) -> dict:
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


# The energy split is checked to this many machine epsilons of the model's dtype, relative to the
# largest energy: a sum of N atoms' energies rounds at ~sqrt(N) eps |E|, ~17 eps for 300 atoms.
SPLIT_TOLERANCE_EPS = 64


def check_energy_split(model: torch.nn.Module, batch, output, counts: torch.Tensor) -> None:
    """``output["energy"]`` must be the E0 sum plus ``output["interaction_energy"]``, which the
    residuals assume; a model with another energy term (or a changed mace) would give wrong E0s
    silently. Checked on a pass's first batch: one small sync, once."""
    interaction = output.get("interaction_energy")
    if interaction is None:
        return
    energy = output["energy"].detach()
    e0s = model.atomic_energies_fn.atomic_energies.detach().to(energy)
    heads = batch.head.reshape(-1) if e0s.dim() > 1 else None
    e0_part = (counts.to(energy) * (e0s[heads] if heads is not None else e0s)).sum(dim=1)
    gap = (energy - e0_part - interaction.detach()).abs().max()
    tolerance = SPLIT_TOLERANCE_EPS * torch.finfo(energy.dtype).eps * max(1.0, energy.abs().max().item())
    if gap.item() > tolerance:
        from ..errors import E0InputError

        raise E0InputError(
            f"model: {type(model).__name__}'s energy is not its E0 sum plus its interaction energy (off by "
            f"{gap.item():.3g} eV on the first batch); the E0 fit needs that split. Use a MACE model whose "
            "output['energy'] is sum E0 + output['interaction_energy'] (ScaleShiftMACE, MACE).")


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """torch's default dtype set for a block, and always restored."""
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


def forward(model: torch.nn.Module, batches: Iterable, device, *, forces: bool = False,
            progress: Optional[str] = None) -> Iterator[Tuple[object, dict]]:
    """(batch on ``device``, the model's output) for every batch, in eval mode. Energies only,
    under no_grad, unless ``forces``: then a pass with gradients (forces are -dE/dr).
    ``progress``: a tqdm bar with that label."""
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=progress, unit="batch", mininterval=2.0, leave=False)
    dtype = next(model.parameters()).dtype
    with evaluation_mode(model):
        for batch in batches:
            batch = batch.to(device, non_blocking=True)
            # Per batch, so that nothing leaks into the caller's code between batches. The default
            # dtype: tensors the model makes on the fly take its dtype, not the graphs'.
            with torch.set_grad_enabled(forces), default_dtype(dtype):
                output = model(model_inputs(batch, dtype), training=False, compute_force=forces,
                               compute_virials=False, compute_stress=False)
            yield batch, output


class ResidualSample:
    """Counts and residuals of the first ``limit`` configs, for plots: a fixed cost however large
    the data. Kept on the device and copied to the host once, by ``arrays``."""

    def __init__(self, limit: int = SAMPLE_SIZE):
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


def network_for_pass(model: torch.nn.Module, dtype=None) -> torch.nn.Module:
    """The network a pass runs: ``model`` itself, or a copy in ``dtype`` ('float32', 'float64' or a
    torch dtype; None: the model's own). The copy leaves the model, its E0s and its training alone."""
    if dtype is None:
        return model
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if next(model.parameters()).dtype == dtype:
        return model
    import copy

    return copy.deepcopy(model).to(dtype)


def accumulate(model: torch.nn.Module, batches: Iterable, system: E0LinearSystem,
               device: torch.device, progress: Optional[str] = None,
               sample: Optional[ResidualSample] = None,
               stop: Optional[Callable[[int], bool]] = None, ledger=None,
               network: Optional[torch.nn.Module] = None) -> E0LinearSystem:
    """Add every batch to ``system``: residuals of the model's energies under its current E0s.

    ``network`` (default ``model``) is what runs, e.g. a float32 copy of a float64 model; the E0
    part of the energy is always ``model``'s own E0s, summed in float64. ``stop(n_batches_done)``,
    if given, is asked after each batch whether enough has been seen; ``ledger`` keeps every
    config's row, for finding broken labels after the solve.
    """
    network = model if network is None else network
    for done, (batch, output) in enumerate(forward(network, batches, device, progress=progress), start=1):
        counts = element_counts(batch)
        if done == 1:
            check_energy_split(network, batch, output, counts)
        residuals = residuals_in_float64(model, batch, output, counts)
        loss_weights = batch.weight * batch.energy_weight
        system.update(counts, residuals, loss_weights)
        if sample is not None:
            sample.add(counts, residuals, loss_weights)
        if ledger is not None:
            ledger.add(counts, residuals, loss_weights)
        if stop is not None and stop(done):
            break
    return system


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
