"""What a refit of ``--E0s_refit`` is: when it runs (the modes) and its record (``Refit``). The
refits themselves are the training door's (``training``); the report and tables show these records."""

from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional

from ..math import E0Solution

EPOCH, FINAL = "epoch", "final"
MODES: Dict[str, FrozenSet[str]] = {
    "none": frozenset(),
    EPOCH: frozenset({EPOCH}),
    FINAL: frozenset({FINAL}),
    f"{EPOCH}+{FINAL}": frozenset({EPOCH, FINAL}),
}
# The benchmark's choice (benchmarks/refit.py): as low an energy error as epoch+final, and the
# training trajectory, hence the forces, of 'none' exactly; epoch refits change the forces.
DEFAULT_MODE = FINAL


@dataclass
class Refit:
    """One head's refit: at an epoch's end, or of a checkpoint after training."""

    head: str
    kind: str  # EPOCH or FINAL
    epoch: Optional[int]  # the epoch just trained, or the checkpoint's
    solution: E0Solution
    seconds: float
    checkpoint: Optional[str] = None  # FINAL: the file written

    @property
    def largest_change(self):
        """(|ΔE0| in eV, atomic number) of the element whose E0 moved most."""
        return max((abs(c), z) for c, z in zip(self.solution.corrections, self.solution.atomic_numbers))
