"""Per-element force scale and the diagnosis flags: the math only (torch, no mace, no I/O).

A force error that is a per-element *scale* (reference forces in other units, another level of
theory, or a model that learnt one element's forces too soft or too stiff) shows as a slope of the
predicted against the reference force components, through the origin, away from 1. Over one
element's components r (reference) and p (predicted):

    slope = sum(p r) / sum(r r),   SE = sqrt(s2 / sum(r r)),   s2 = sum((p - slope r)^2) / (n - 1)

The SE treats components as independent; the three components of an atom, and atoms of one
config, are not quite, so it is optimistic. That is why a slope must also be off by a relative
amount that matters (``FORCE_SLOPE_TOLERANCE``) to be flagged, not only by ``Z_THRESHOLD`` SEs.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

Z_THRESHOLD = 3.0  # standard errors: beyond it an offset is not noise (0.3% two-sided under a normal law)
# eV per atom of the element. Energy RMSEs of good fine-tuned MACE models are 1-5 meV/atom: an E0
# off by less than 5 meV is within that and does no harm; beyond it, it is the model's largest
# energy error on configs rich in that element.
ENERGY_CORRECTION_THRESHOLD = 0.005
# eV. Float64 energies of thousands of eV are rounded at ~1e-12 eV; below this an energy SE is
# rounding, not statistics. z divides by no less, so data that fit exactly (SE 0) give a large,
# finite z (JSON holds no infinity) rather than an infinite one.
ENERGY_SE_FLOOR = 1e-9
FORCE_SLOPE_TOLERANCE = 0.02  # relative: a 2% force scale is what two DFT codes or settings can differ by

_SUMS = ("n", "rr", "pr", "pp", "dd")  # components, sum r^2, sum p r, sum p^2, sum (p - r)^2


class ForceSlopeStatistics:
    """Sums per element, kept on the device, from which slopes, SEs and RMSEs follow."""

    def __init__(self, n_elements: int, device: Optional[torch.device] = None):
        self.sums = torch.zeros(n_elements, len(_SUMS), dtype=torch.float64, device=device)

    def update(self, element: torch.Tensor, predicted: torch.Tensor, reference: torch.Tensor,
               used: Optional[torch.Tensor] = None) -> None:
        """``element`` [atoms] the element index of each atom, ``predicted`` and ``reference``
        [atoms, 3] forces; ``used`` [atoms] bool leaves out atoms without reference forces."""
        p, r = predicted.double(), reference.double()
        if used is not None:
            element, p, r = element[used], p[used], r[used]
        per_atom = torch.stack([torch.full_like(r[:, 0], r.shape[1]), (r * r).sum(1), (p * r).sum(1),
                                (p * p).sum(1), ((p - r) ** 2).sum(1)], dim=1)
        self.sums.index_add_(0, element, per_atom)

    def results(self) -> List["ForceSlope"]:
        return [force_slope(*row) for row in self.sums.cpu().tolist()]


@dataclass
class ForceSlope:
    n_components: int
    slope: Optional[float]  # None without reference forces (or all of them zero)
    standard_error: Optional[float]
    rmse: Optional[float]  # of predicted - reference, in the forces' units


def force_slope(n: float, rr: float, pr: float, pp: float, dd: float) -> ForceSlope:
    """Slope through the origin of p against r, its SE and the RMSE, from the sums."""
    count = int(round(n))
    if count == 0 or rr <= 0:
        return ForceSlope(count, None, None, math.sqrt(dd / count) if count else None)
    slope = pr / rr
    residual = max(pp - slope * pr, 0.0)  # sum (p - slope r)^2, without a second pass
    standard_error = math.sqrt(residual / (count - 1) / rr) if count > 1 else None
    return ForceSlope(count, slope, standard_error, math.sqrt(dd / count))


def slope_is_off(slope: Optional[float], standard_error: Optional[float]) -> bool:
    """More than Z_THRESHOLD standard errors AND more than FORCE_SLOPE_TOLERANCE away from 1."""
    if slope is None or standard_error is None:
        return False
    deviation = abs(slope - 1.0)
    return deviation > Z_THRESHOLD * standard_error and deviation > FORCE_SLOPE_TOLERANCE


def energy_z(correction: float, standard_error: float) -> Optional[float]:
    """correction / SE (at least ENERGY_SE_FLOOR); None where the data alone do not determine the
    E0 (no SE)."""
    if standard_error is None or not math.isfinite(standard_error):
        return None
    return correction / max(standard_error, ENERGY_SE_FLOOR)


def energy_is_off(correction: float, z: Optional[float]) -> bool:
    """|z| > Z_THRESHOLD and the correction large enough to matter (ENERGY_CORRECTION_THRESHOLD)."""
    return z is not None and abs(z) > Z_THRESHOLD and abs(correction) > ENERGY_CORRECTION_THRESHOLD


def combination_correction(combination: Sequence, atomic_numbers: Sequence[int],
                           corrections: Sequence[float]) -> float:
    """sum_c c * correction_Z over a determined combination [(c, Z), ...]: what the data ask for
    along it, whatever the prior put in the directions they do not determine."""
    return sum(c * corrections[list(atomic_numbers).index(z)] for c, z in combination)
