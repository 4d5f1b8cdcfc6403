"""Broken labels found before training (MACE glue): every config's residual after the fit, judged
against the others' robust spread (``math.suspicious_mask``), named by its place in the input.

The pass keeps one row per config of this rank's shard, on the device (``glue.ResidualLedger``);
after the solve the fitted residuals of all ranks are gathered, so every rank lists the same configs,
and excluding them takes the same rows, gathered from every rank, out of every rank's statistics.
"""

from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..math import E0LinearSystem, E0Solution, suspicious_mask, suspicious_scores
from ._distributed import all_gather_tensors
from ._ledger import ResidualLedger

Origin = Callable[[int], Dict[str, object]]  # dataset position -> {"index", "file", "config_type"}


def find_suspicious(ledger: ResidualLedger, solution: E0Solution, origin: Origin,
                    distributed: bool = False) -> List[Dict[str, object]]:
    """The suspicious configs of every rank's shard, most suspicious first."""
    rows = ledger.rows()
    if rows is None:
        empty = torch.zeros(0, dtype=torch.float64)
        counts, residuals, positions = empty.reshape(0, len(solution.atomic_numbers)), empty, empty.long()
    else:
        counts, residuals, _, positions = rows
    correction = torch.tensor(solution.corrections, dtype=torch.float64, device=residuals.device)
    fitted = residuals - counts @ correction
    n_atoms = counts.sum(dim=1)
    fitted, n_atoms, positions = all_gather_tensors([fitted, n_atoms, positions], distributed)
    flagged = suspicious_mask(fitted, n_atoms).nonzero().flatten().tolist()
    if not flagged:
        return []
    scores = suspicious_scores(fitted, n_atoms)  # what each flagged config reports, and its rank
    flagged.sort(key=lambda i: -float(scores[i]))
    return [{**origin(int(positions[i])), "residual_eV": float(fitted[i]),
             "residual_per_atom_meV": 1e3 * float(fitted[i] / n_atoms[i]), "robust_z": float(scores[i])}
            for i in flagged]


def exclude(system: E0LinearSystem, ledger: ResidualLedger, suspicious: Sequence[Dict[str, object]],
            distributed: bool = False) -> int:
    """Take the suspicious configs out of ``system`` (summed over ranks); returns how many.

    Each rank finds its own rows of them, the rows of all ranks are gathered, and every rank removes
    them all (``E0LinearSystem.remove``), so that the ranks' statistics stay equal."""
    rows = ledger.rows()
    wanted = {entry["position"] for entry in suspicious}
    if rows is None:
        counts = torch.zeros(0, len(system.atomic_numbers), dtype=torch.float64, device=system.device)
        residuals = weights = torch.zeros(0, dtype=torch.float64, device=system.device)
    else:
        counts, residuals, weights, positions = rows
        mask = torch.tensor([int(p) in wanted for p in positions.tolist()], dtype=torch.bool,
                            device=residuals.device)
        counts, residuals, weights = counts[mask], residuals[mask], weights[mask]
    counts, residuals, weights = all_gather_tensors([counts, residuals, weights], distributed)
    before = system.n_configs
    system.remove(counts, residuals, weights)
    return before - system.n_configs


def origin_of(origins: Optional[Sequence[Dict[str, object]]], default_file: Optional[str]) -> Origin:
    """Where a dataset position came from: the data's own record, or just the position."""
    def origin(position: int) -> Dict[str, object]:
        if origins is not None and position < len(origins):
            return {"position": position, **origins[position]}
        return {"position": position, "index": position, "file": default_file, "config_type": None}
    return origin
