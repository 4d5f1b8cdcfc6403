"""The E0 residuals of a pass, E_ref - E_pred, in float64 whatever the network's dtype, and the
check that the model's energy splits into its E0 sum and an interaction energy, which they assume
(MACE glue). ``accumulate`` adds a pass's residuals to an E0 linear system."""

from typing import Iterable, Optional

import torch

from ..errors import E0ModelError
from ..math import E0LinearSystem
from ._forward import element_counts, forward
from ._ledger import ResidualLedger


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
        raise E0ModelError(
            f"model: {type(model).__name__}'s energy is not its E0 sum plus its interaction energy (off by "
            f"{gap.max().item():.3g} eV on the first batch); the E0 fit needs that split. Use a MACE model whose "
            "output['energy'] is sum E0 + output['interaction_energy'] (ScaleShiftMACE, MACE).")


def accumulate(model: torch.nn.Module, batches: Iterable, system: E0LinearSystem,
               device: torch.device, progress: Optional[str] = None, ledger: Optional[ResidualLedger] = None,
               network: Optional[torch.nn.Module] = None) -> E0LinearSystem:
    """Add every batch to ``system``: residuals of the model's energies under its current E0s.

    ``network`` (default ``model``) is what runs, e.g. a float32 copy of a float64 model; the E0
    part of the energy is always ``model``'s own E0s, summed in float64. ``ledger`` keeps every
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
    return system
