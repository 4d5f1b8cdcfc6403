"""The E0 least-squares problem, kept as sufficient statistics. Pure math: torch, no mace.

For a usable config i with element counts a_i (row i of A), N_i atoms, residual
b_i = E_ref,i - E_pred,i under the model's current E0s and fit weight w_i, the correction x to
the E0s minimises

    sum_i w_i (b_i - a_i . x)^2,  with  w_i = weight_i * energy_weight_i / N_i^2   ("per_atom")
                                   or   w_i = 1                                    ("total")

"per_atom" is MACE's own energy loss, ``weight * energy_weight * ((E_ref - E_pred) / N)^2``;
"total" is the unweighted fit of mace's ``--E0s=estimated``.

Only the augmented Gram matrix ``sum_i w_i [a_i, b_i]^T [a_i, b_i]`` is kept: O(n_elements^2)
memory whatever the number of configs or atoms, summed over batches and ranks with one
all-reduce, and solved in O(n_elements^3), independent of the data size.

The data only determine E0s along the row space of A. Along its null space (every frame with
the same stoichiometry, say) the answer comes from a prior: among all least-squares solutions
we take the one closest to the prior, so the identifiable combinations fit the data and the
rest keep the prior's values. The rank is decided on an eigendecomposition (``torch.linalg.eigh``) of
the Gram matrix equilibrated by its diagonal (``_RowSpace``), never on CUDA's full-rank-only ``gels``
least-squares driver.
"""

from dataclasses import dataclass, field
from math import sqrt
from typing import List, Optional, Sequence

import torch

from ._combinations import Combination, row_space_combinations

WEIGHTINGS = ("per_atom", "total")
DEFAULT_WEIGHTING = "per_atom"  # MACE's own energy loss

# Eigenvalues of the equilibrated Gram matrix below this fraction of the largest count as zero: a
# singular-value ratio of 1e-5. Exact rank deficiencies (integer counts in fixed ratios) sit near 1e-16.
DEFAULT_RCOND = 1e-10

# |component of a unit vector outside the row space|^2 below this: the element's E0 is determined alone.
DETERMINED_TOLERANCE = 1e-8

_TALLY = ("used", "skipped", "non_finite")


def labelled(loss_weights: torch.Tensor) -> torch.Tensor:
    """[n] bool: the configs that have an energy, i.e. a loss weight > 0 (mace weighs unlabelled ones 0)."""
    return loss_weights > 0


def usable(residuals: torch.Tensor, loss_weights: torch.Tensor) -> torch.Tensor:
    """[n] bool: labelled configs whose residual is finite: the rows a fit uses."""
    return labelled(loss_weights) & torch.isfinite(residuals)

class E0LinearSystem:
    """Sufficient statistics of the E0 fit for one head, accumulated on the device of the data.

    >>> system = E0LinearSystem([1, 8])
    >>> system.update(counts, residuals, loss_weights)   # once per batch, no host sync
    >>> solution = system.solve(start_e0s, prior_e0s)
    """

    def __init__(self, atomic_numbers: Sequence[int], weighting: str = DEFAULT_WEIGHTING,
                 device: Optional[torch.device] = None):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.atomic_numbers = [int(z) for z in atomic_numbers]
        self.weighting = weighting
        size = len(self.atomic_numbers) + 1
        options = dict(dtype=torch.float64, device=device)
        self.fit_moments = torch.zeros(size, size, **options)  # weighted as the fit
        self.rmse_moments = torch.zeros(size, size, **options)  # weighted 1/N^2, for RMSE per atom
        self.tally = torch.zeros(len(_TALLY), **options)

    @property
    def device(self) -> torch.device:
        return self.fit_moments.device

    @torch.no_grad()
    def update(self, counts: torch.Tensor, residuals: torch.Tensor, loss_weights: torch.Tensor,
               selected: Optional[torch.Tensor] = None) -> None:
        """Add a batch: counts [B, n_elements], residuals E_ref - E_pred [B], and MACE's
        ``weight * energy_weight`` [B], which is 0 for configs without an energy label.

        Unlabelled configs are skipped and counted; labelled ones with a non-finite residual are
        counted separately (the caller turns them into an error) and kept out of the sums.
        ``selected`` [B] (bool), if given, keeps only those configs (one head's, in a batch that
        mixes heads); the others are neither used nor counted. A mask, not an index, so that
        nothing waits for the device.
        """
        self._add(counts, residuals, loss_weights, selected, 1.0)

    @torch.no_grad()
    def remove(self, counts: torch.Tensor, residuals: torch.Tensor, loss_weights: torch.Tensor) -> None:
        """Take configs added before back out (their exact contributions), e.g. broken labels."""
        self._add(counts, residuals, loss_weights, None, -1.0)

    def _add(self, counts, residuals, loss_weights, selected, sign: float) -> None:
        counts = counts.to(self.fit_moments)
        residuals = residuals.to(self.fit_moments).reshape(-1)
        loss_weights = loss_weights.to(self.fit_moments).reshape(-1)
        if selected is None:
            selected = torch.ones_like(residuals, dtype=torch.bool)
        selected = selected.to(device=residuals.device, dtype=torch.bool).reshape(-1)
        labelled_here = labelled(loss_weights) & selected
        finite = torch.isfinite(residuals)
        used = labelled_here & finite
        rows = torch.cat([counts, torch.where(used, residuals, 0.0).unsqueeze(1)], dim=1)
        per_atom = used / counts.sum(dim=1).clamp(min=1.0) ** 2
        fit_weights = per_atom * loss_weights if self.weighting == "per_atom" else used.to(rows)
        self.fit_moments += sign * ((rows * fit_weights.unsqueeze(1)).T @ rows)
        self.rmse_moments += sign * ((rows * per_atom.unsqueeze(1)).T @ rows)
        self.tally += sign * torch.stack([used.sum(), (selected & ~labelled_here).sum(),
                                          (labelled_here & ~finite).sum()]).to(self.tally)

    # -- counts ---------------------------------------------------------------------------------
    @property
    def n_configs(self) -> int:
        return int(self.tally[0].item())

    @property
    def n_skipped(self) -> int:
        return int(self.tally[1].item())

    @property
    def n_non_finite(self) -> int:
        return int(self.tally[2].item())

    def element_atom_fractions(self) -> torch.Tensor:
        """Sum over usable configs of (count / N)^2 per element: zero iff the element never occurs."""
        n = len(self.atomic_numbers)
        return self.rmse_moments.diagonal()[:n]

    def reset(self) -> None:
        """Forget every batch, e.g. at the start of an epoch."""
        for statistics in (self.fit_moments, self.rmse_moments, self.tally):
            statistics.zero_()

    # -- state ----------------------------------------------------------------------------------
    def flat(self) -> torch.Tensor:
        """All statistics as one vector: what ranks sum to combine their shards."""
        return torch.cat([self.fit_moments.reshape(-1), self.rmse_moments.reshape(-1), self.tally])

    def load_flat(self, flat: torch.Tensor) -> None:
        sizes = [self.fit_moments.numel(), self.rmse_moments.numel(), self.tally.numel()]
        fit, rmse, tally = torch.split(flat.to(self.fit_moments), sizes)
        self.fit_moments.copy_(fit.view_as(self.fit_moments))
        self.rmse_moments.copy_(rmse.view_as(self.rmse_moments))
        self.tally.copy_(tally)

    # -- solve ----------------------------------------------------------------------------------
    def solve(self, start_e0s: Sequence[float], prior_e0s: Sequence[float],
              rcond: float = DEFAULT_RCOND) -> "E0Solution":
        """E0s that fit the data, anchored to ``prior_e0s`` where the data say nothing.

        ``start_e0s`` are the E0s the residuals were computed with (the model's current ones).
        Runs on the statistics' device in float64; only the small results come back to the host.
        """
        n = len(self.atomic_numbers)
        if self.n_configs == 0:
            raise ValueError("no usable configs: nothing to fit")
        start = torch.as_tensor(start_e0s, dtype=torch.float64, device=self.device)
        offset = torch.as_tensor(prior_e0s, dtype=torch.float64, device=self.device) - start

        present = self.element_atom_fractions() > 0
        index = present.nonzero().squeeze(1)
        gram, rhs = self.fit_moments[:n, :n], self.fit_moments[:n, n]
        # Minimum-norm correction relative to the prior: x = d + G^+ (h - G d).
        gradient = (rhs - gram @ offset)[index]
        subspace = _RowSpace(gram[index][:, index], rcond)
        correction = offset.clone()
        correction[index] += subspace.pseudo_inverse @ gradient

        rank = subspace.rank
        residual_sum = _quadratic_residual(self.fit_moments, correction)
        degrees_of_freedom = self.n_configs - rank
        variance = residual_sum / degrees_of_freedom if degrees_of_freedom > 0 else float("nan")
        pseudo_inverse_diagonal = subspace.pseudo_inverse.diagonal()
        determined_present = subspace.null_weight < DETERMINED_TOLERANCE
        standard_errors = torch.full((n,), float("nan"), dtype=torch.float64, device=self.device)
        standard_errors[index] = torch.where(
            determined_present, (variance * pseudo_inverse_diagonal).clamp(min=0).sqrt(),
            torch.full_like(pseudo_inverse_diagonal, float("nan")))
        determined = torch.zeros(n, dtype=torch.bool, device=self.device)
        determined[index] = determined_present
        basis = subspace.row_basis

        present_numbers = [self.atomic_numbers[i] for i in index.tolist()]
        combinations = (row_space_combinations(basis.T.cpu().numpy(), present_numbers)
                        if rank < len(present_numbers) else [])
        m = float(self.n_configs)
        return E0Solution(
            atomic_numbers=list(self.atomic_numbers),
            weighting=self.weighting,
            start_e0s=start.tolist(),
            prior_e0s=(start + offset).tolist(),
            e0s=(start + correction).tolist(),
            standard_errors=standard_errors.tolist(),
            present=present.tolist(),
            determined=determined.tolist(),
            rank=rank,
            condition_number=subspace.condition_number,
            determined_combinations=combinations,
            n_configs=self.n_configs,
            n_skipped=self.n_skipped,
            rmse_per_atom_before_meV=1e3 * sqrt(max(self.rmse_moments[n, n].item(), 0.0) / m),
            rmse_per_atom_after_meV=1e3 * sqrt(_quadratic_residual(self.rmse_moments, correction) / m),
        )


class _RowSpace:
    """The row space of A from its Gram matrix G = A^T W A, decided on G equilibrated by its diagonal.

    Scaling every element's column to unit norm first (D G D, D = diag(G)^-1/2) makes the rank test
    blind to how often an element occurs: an element in three frames of a million is as well
    conditioned as one in every frame, while elements in fixed ratios (a single stoichiometry)
    still give exact zeros. Null directions of G are D times those of D G D; the row space is their
    orthogonal complement, and the pseudo-inverse is P (D (D G D)^+ D) P with P its projector, so
    the answer is still the least-squares solution closest to the prior in plain eV.
    """

    def __init__(self, gram: torch.Tensor, rcond: float):
        scale = gram.diagonal().clamp(min=torch.finfo(gram.dtype).tiny).rsqrt()
        values, vectors = torch.linalg.eigh(scale[:, None] * gram * scale[None, :])
        kept = values > rcond * values.max()
        self.rank = int(kept.sum().item())
        size = gram.shape[0]
        null = torch.linalg.qr(scale[:, None] * vectors[:, ~kept])[0] if self.rank < size else gram[:, :0]
        projector = torch.eye(size, dtype=gram.dtype, device=gram.device) - null @ null.T
        inverse = (scale[:, None] * vectors[:, kept] / values[kept]) @ (vectors[:, kept].T * scale[None, :])
        self.pseudo_inverse = projector @ inverse @ projector
        self.null_weight = (null * null).sum(dim=1)  # |component of e_j in the null space|^2
        self.row_basis = torch.linalg.qr(vectors[:, kept] / scale[:, None])[0]  # orthonormal columns
        # Of sqrt(W) A itself (not equilibrated), over the retained directions: what the report means.
        plain = torch.linalg.eigvalsh(gram)[size - self.rank:]
        self.condition_number = sqrt((plain.max() / plain.min()).item())


def _quadratic_residual(moments: torch.Tensor, correction: torch.Tensor) -> float:
    """sum_i w_i (b_i - a_i . x)^2 from the augmented Gram matrix, without the rows."""
    n = correction.numel()
    value = moments[n, n] - 2 * moments[:n, n] @ correction + correction @ moments[:n, :n] @ correction
    return max(value.item(), 0.0)


@dataclass
class E0Solution:
    """The result for one head. Lists are per element, in the order of ``atomic_numbers``."""

    atomic_numbers: List[int]
    weighting: str
    start_e0s: List[float]  # the E0s the residuals were computed with
    prior_e0s: List[float]
    e0s: List[float]
    standard_errors: List[float]  # nan where the data alone do not determine the element's E0
    present: List[bool]  # the element occurs in at least one usable config
    determined: List[bool]
    rank: int
    condition_number: float  # of sqrt(W) A over the retained singular values
    determined_combinations: List[Combination] = field(default_factory=list)
    n_configs: int = 0
    n_skipped: int = 0
    rmse_per_atom_before_meV: float = float("nan")
    rmse_per_atom_after_meV: float = float("nan")

    @property
    def corrections(self) -> List[float]:
        return [new - old for new, old in zip(self.e0s, self.start_e0s)]

    @property
    def n_elements(self) -> int:
        return sum(self.present)

    @property
    def rank_deficient(self) -> bool:
        return self.rank < self.n_elements
