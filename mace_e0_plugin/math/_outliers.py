"""Broken labels: configs whose residual after the fit lies far outside the fit's own robust
spread (pure math: torch only).

A failed SCF or a unit slip shifts one config's reference energy by eV, not meV. After the E0 fit
every correct config's residual is what the network gets wrong about it, a spread of meV per atom;
a broken label stands out of that spread by tens of robust standard deviations. Both per atom and
per config are looked at: a shift of a large config can hide in per-atom terms, and of a small
one in per-config terms.

    z = (r - median(r)) / max(1.4826 MAD(r), floor)        robust z, for r = residual / N and for r = residual

A config is suspicious when max(|z_atom|, |z_config|) > SUSPICIOUS_ROBUST_Z. Measured on the real
sets in ../shared (benchmarks/suspicious_labels.py): correct configs reach 9.3 at most (a hard
NaCl-water optB88 frame), corrupted labels of +15, -25 and +40 eV at least 27.
"""

import torch

SUSPICIOUS_ROBUST_Z = 15.0  # in the gap between hard correct configs (<= 9.3) and broken labels (>= 27)
MAD_TO_SD = 1.4826  # the MAD of a normal law times this is its standard deviation
# eV per atom: a robust spread below this is rounding, not statistics (exact toy data would make
# every float rounding look like an outlier). 0.1 meV/atom is far below any label's precision.
SPREAD_FLOOR_PER_ATOM = 1e-4


def robust_z(values: torch.Tensor, floor: float) -> torch.Tensor:
    """(value - median) / max(1.4826 MAD, floor): the z of a normal law, unmoved by a few outliers."""
    values = values.double()
    median = values.median()
    spread = MAD_TO_SD * (values - median).abs().median()
    return (values - median) / max(float(spread), floor)


def suspicious_scores(residuals: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """The score per config: max(|z per atom|, |z per config|)."""
    n_atoms = n_atoms.double()
    per_atom = robust_z(residuals / n_atoms, SPREAD_FLOOR_PER_ATOM)
    per_config = robust_z(residuals, SPREAD_FLOOR_PER_ATOM * float(n_atoms.median()))
    return torch.maximum(per_atom.abs(), per_config.abs())


def suspicious_mask(residuals: torch.Tensor, n_atoms: torch.Tensor,
                    threshold: float = SUSPICIOUS_ROBUST_Z) -> torch.Tensor:
    """True for the configs far outside the robust spread of the others: the rule, in one place."""
    if residuals.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=residuals.device)
    return suspicious_scores(residuals, n_atoms) > threshold
