"""Pure math of the E0 fit: torch and numpy only (no mace, ase, files or torch.distributed).

- the solver: ``E0LinearSystem`` (sufficient statistics, rank-aware solve anchored to a prior)
  and its result ``E0Solution``;
- combinations: the element combinations the data determine, and compositions split against them;
- sampling: a composition-stratified order of configs;
- force slopes: per-element force scale and the diagnosis flag rules;
- outliers: configs whose residual after the fit is far outside the others' (broken labels).
"""

from ._combinations import Combination, determined_span, row_space_combinations, split_compositions
from ._force_slopes import (ENERGY_CORRECTION_THRESHOLD, FORCE_SLOPE_TOLERANCE, Z_THRESHOLD, ForceSlopeStatistics,
                            combination_correction, energy_is_off, energy_z, force_slope, slope_is_off)
from ._linear_system import DEFAULT_WEIGHTING, WEIGHTINGS, E0LinearSystem, E0Solution, usable
from ._outliers import SUSPICIOUS_ROBUST_Z, robust_z, suspicious_mask, suspicious_scores
from ._sampling import stratified_order

__all__ = [
    "E0LinearSystem", "E0Solution", "WEIGHTINGS", "DEFAULT_WEIGHTING", "usable",
    "Combination", "row_space_combinations", "determined_span", "split_compositions",
    "stratified_order",
    "SUSPICIOUS_ROBUST_Z", "robust_z", "suspicious_mask", "suspicious_scores",
    "ForceSlopeStatistics", "force_slope", "slope_is_off", "energy_z", "energy_is_off",
    "combination_correction", "Z_THRESHOLD", "ENERGY_CORRECTION_THRESHOLD", "FORCE_SLOPE_TOLERANCE",
]
