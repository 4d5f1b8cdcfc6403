"""Every config a pass sees, kept on the device: the one per-config record of a pass (MACE glue).
Broken labels are found in it (``_outliers``), and figures take their sample from it."""

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..math import usable

SAMPLE_SIZE = 20_000  # configs per head kept for figures: a fixed cost however large the data


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
        """(counts, residuals, loss weights, positions) of the usable configs (``math.usable``)."""
        columns = self.columns()
        if columns is None:
            return None
        counts, residuals, weights = columns
        positions = torch.as_tensor(self.positions[:len(residuals)], dtype=torch.long, device=residuals.device)
        kept = usable(residuals, weights)
        return counts[kept].double(), residuals[kept], weights[kept], positions[kept]


class ResidualSample:
    """Counts and residuals of a pass's first ``size`` configs (``sample_size``), for figures: a fixed
    cost however large the data, read from the pass's ledger and copied to the host once, by ``arrays``."""

    def __init__(self, ledger: ResidualLedger, size: int = SAMPLE_SIZE):
        self.ledger, self.size = ledger, size

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        """(counts [k, n_elements], residuals [k]) of the sampled configs that have an energy."""
        columns = self.ledger.columns()
        if columns is None:
            return np.zeros((0, 0)), np.zeros(0)
        counts, residuals, weights = (column[:self.size] for column in columns)
        kept = usable(residuals, weights)
        return counts[kept].double().cpu().numpy(), residuals[kept].cpu().numpy()
