"""Element combinations the data determine, and compositions split against their span (pure math:
numpy and torch only).

A rank-deficient composition matrix determines E0s only along its row space. These functions give
that space a canonical, readable basis ("196 H + C + 101 O + Ca") and split any composition into
the part inside it, whose E0 energy the data fix, and the part outside, which rests on the prior.
"""

from fractions import Fraction
from math import gcd
from typing import List, Sequence, Tuple

import numpy as np
import torch

Combination = List[Tuple[float, int]]  # [(coefficient, atomic number), ...]

# Row-echelon entries below this are zero: counts are integers, so exact zeros come out ~1e-15.
ECHELON_TOLERANCE = 1e-9
MAX_DENOMINATOR = 10_000  # a coefficient is read as a fraction of at most this denominator
# Singular values of a span below this fraction of the largest are zero (as the solver's rank test).
SPAN_RCOND = 1e-10


def row_space_combinations(basis: np.ndarray, atomic_numbers: Sequence[int]) -> List[Combination]:
    """A canonical basis of the element combinations the data determine.

    ``basis`` spans the row space of A (rows). Its reduced row echelon form, pivoting on the
    lightest elements first, is unique; each row is scaled to small integers where it is rational,
    which it is for counts: CaCO3(H2O)98 gives "196 H + C + 101 O + Ca".
    """
    rows = _reduced_row_echelon(np.array(basis, dtype=np.float64))
    return [_integer_combination(row, atomic_numbers) for row in rows]


def _reduced_row_echelon(matrix: np.ndarray, tolerance: float = ECHELON_TOLERANCE) -> np.ndarray:
    matrix = matrix.copy()
    n_rows, n_cols = matrix.shape
    pivot_row = 0
    for col in range(n_cols):
        if pivot_row == n_rows:
            break
        best = pivot_row + int(np.argmax(np.abs(matrix[pivot_row:, col])))
        if abs(matrix[best, col]) < tolerance:
            continue
        matrix[[pivot_row, best]] = matrix[[best, pivot_row]]
        matrix[pivot_row] /= matrix[pivot_row, col]
        for other in range(n_rows):
            if other != pivot_row:
                matrix[other] -= matrix[other, col] * matrix[pivot_row]
        pivot_row += 1
    matrix[np.abs(matrix) < tolerance] = 0.0
    return matrix[:pivot_row]


def _integer_combination(row: np.ndarray, atomic_numbers: Sequence[int]) -> Combination:
    fractions = [Fraction(float(c)).limit_denominator(MAX_DENOMINATOR) for c in row]
    scale = 1
    for f in fractions:
        scale = scale * f.denominator // gcd(scale, f.denominator)
    integers = [int(f * scale) for f in fractions]
    divisor = 0
    for value in integers:
        divisor = gcd(divisor, abs(value))
    if divisor and np.allclose(np.array(integers) / scale, row, atol=1e-7):
        coefficients = [value / divisor for value in integers]
    else:  # not a ratio of small integers: keep the normalised row
        coefficients = list(row)
    return [(float(c), int(z)) for c, z in zip(coefficients, atomic_numbers) if c != 0]


def determined_span(atomic_numbers: Sequence[int], present: Sequence[int],
                    combinations: Sequence[Combination]) -> torch.Tensor:
    """Rows spanning the element combinations the data determine, over ``atomic_numbers``.

    ``combinations`` as a solution reports them; none (full rank) means every element in
    ``present`` is determined on its own. Elements outside ``present`` are in no row.
    """
    column = {int(z): i for i, z in enumerate(atomic_numbers)}
    if not combinations:
        combinations = [[(1.0, int(z))] for z in present]
    span = torch.zeros(len(combinations), len(column), dtype=torch.float64)
    for row, combination in enumerate(combinations):
        for coefficient, z in combination:
            span[row, column[int(z)]] = float(coefficient)
    return span


def split_compositions(counts: torch.Tensor, span: torch.Tensor,
                       rcond: float = SPAN_RCOND) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each composition (row of ``counts``, atoms per element) as inside + outside: the orthogonal
    projection onto the rows of ``span``, and the rest. An energy's E0 part is fixed by the data
    only for the inside part; the outside part's rests on the prior.

    For the span of 2 H + O, OH (1, 1) is (1.2, 0.6) inside and (-0.2, 0.4) outside.
    """
    counts = counts.to(torch.float64)
    if span.numel() == 0:
        return torch.zeros_like(counts), counts.clone()
    _, values, right = torch.linalg.svd(span.to(counts), full_matrices=False)
    basis = right[values > rcond * values.max()]  # orthonormal rows
    inside = (counts @ basis.T) @ basis
    return inside, counts - inside
