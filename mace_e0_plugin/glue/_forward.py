"""The one forward pass over data: the model in eval mode, batched, on its device (MACE glue).

``forward`` yields each batch with the model's output: energies only and no grad by default, or
forces (a pass with gradients) on request. Everything the estimate keeps per batch stays on the
device; the host sees nothing until the statistics are solved.
"""

import contextlib
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

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


def e0_energies(model: torch.nn.Module, batch, counts: torch.Tensor, dtype: torch.dtype,
                magnitude: bool = False) -> torch.Tensor:
    """counts . E0 [B] in ``dtype``: each config's E0 part, with its head's row of the model's E0s
    (``magnitude``: counts . |E0|, the size of the terms that sum)."""
    e0s = model.atomic_energies_fn.atomic_energies.detach().to(dtype)
    if magnitude:
        e0s = e0s.abs()
    if e0s.dim() == 1:
        return counts.to(dtype) @ e0s
    return (counts.to(dtype) * e0s[batch.head.reshape(-1)]).sum(dim=1)


def residuals_in_float64(model: torch.nn.Module, batch, output, counts: torch.Tensor) -> torch.Tensor:
    """E_ref - E_pred [B] in float64 whatever the model's dtype: E_pred = counts . E0 + E_interaction,
    with the E0 part summed here in float64. In float32 that sum (thousands of eV per config) is
    what loses the digits; the interaction energy, small, keeps them."""
    interaction = output.get("interaction_energy")
    if interaction is None:  # a model that does not split its energy: take it whole
        return batch.energy.double() - output["energy"].double()
    return batch.energy.double() - e0_energies(model, batch, counts, torch.float64) - interaction.double()


# The energy split is checked to this many machine epsilons of the model's dtype, relative to the
# size of the terms the model sums, sum |E0| + |E_interaction| per config: a sum of N atoms' terms
# rounds at ~sqrt(N) eps times that, ~17 eps for 300 atoms. (Relative to |E| it would fail where
# E0s of opposite sign cancel, as a rank-deficient fit's +714 eV and -1672 eV do.)
SPLIT_TOLERANCE_EPS = 64


def check_energy_split(model: torch.nn.Module, batch, output, counts: torch.Tensor) -> None:
    """``output["energy"]`` must be the E0 sum plus ``output["interaction_energy"]``, which the
    residuals assume; a model with another energy term (or a changed mace) would give wrong E0s
    silently. Checked on a pass's first batch: one small sync, once."""
    interaction = output.get("interaction_energy")
    if interaction is None:
        return
    energy, interaction = output["energy"].detach(), interaction.detach()
    gap = (energy - e0_energies(model, batch, counts, energy.dtype) - interaction).abs()
    size = e0_energies(model, batch, counts, energy.dtype, magnitude=True) + interaction.abs()
    tolerance = SPLIT_TOLERANCE_EPS * torch.finfo(energy.dtype).eps * size.clamp(min=1.0)
    if bool((gap > tolerance).any()):
        from ..errors import E0InputError

        raise E0InputError(
            f"model: {type(model).__name__}'s energy is not its E0 sum plus its interaction energy (off by "
            f"{gap.max().item():.3g} eV on the first batch); the E0 fit needs that split. Use a MACE model whose "
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


class ResidualLedger:
    """Counts, residual and loss weight of every config a pass sees, in the order it sees them,
    kept on the device (counts as int16: an element's atoms in a config stay below 32768), copied
    nowhere until the solve. The one per-config record of a pass: broken labels are found in it,
    and figures take their sample from it."""

    def __init__(self, positions: Sequence[int]):
        self.positions = positions  # each row's position in the request's dataset
        self._parts = []

    def add(self, counts: torch.Tensor, residuals: torch.Tensor, loss_weights: torch.Tensor) -> None:
        self._parts.append((counts.to(torch.int16), residuals.double(), loss_weights.double()))

    def columns(self) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(counts, residuals, loss weights) of every row, in order; None before any."""
        if not self._parts:
            return None
        if len(self._parts) > 1:  # concatenated once, however often it is read
            self._parts = [tuple(torch.cat(part) for part in zip(*self._parts))]
        return self._parts[0]

    def rows(self):
        """(counts, residuals, loss weights, positions) of the labelled, finite configs."""
        columns = self.columns()
        if columns is None:
            return None
        counts, residuals, weights = columns
        positions = torch.as_tensor(self.positions[:len(residuals)], dtype=torch.long, device=residuals.device)
        usable = (weights > 0) & torch.isfinite(residuals)
        return counts[usable].double(), residuals[usable], weights[usable], positions[usable]


class ResidualSample:
    """Counts and residuals of a pass's first ``limit`` configs, for figures: a fixed cost however
    large the data, read from the pass's ledger and copied to the host once, by ``arrays``."""

    def __init__(self, ledger: ResidualLedger, limit: int = SAMPLE_SIZE):
        self.ledger, self.limit = ledger, limit

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        """(counts [k, n_elements], residuals [k]) of the sampled configs that have an energy."""
        columns = self.ledger.columns()
        if columns is None:
            return np.zeros((0, 0)), np.zeros(0)
        counts, residuals, weights = (column[:self.limit].double().cpu().numpy() for column in columns)
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
               stop: Optional[Callable[[int], bool]] = None, ledger: Optional[ResidualLedger] = None,
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
