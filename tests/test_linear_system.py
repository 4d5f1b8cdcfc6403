"""The pure math, checked against independent NumPy computations on explicit matrices."""

import numpy as np
import pytest
import torch

from mace_e0_plugin.math import E0LinearSystem, row_space_combinations
from mace_e0_plugin.io import format_combination

Z = [1, 6, 8]


def random_problem(seed, n_configs=60, noise=1e-3, counts=None):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 9, size=(n_configs, 3)).astype(float) if counts is None else counts
    counts[counts.sum(1) == 0, 0] = 1
    shifts = np.array([-0.35, 1.25, -0.8])
    residuals = counts @ shifts + noise * rng.standard_normal(len(counts))
    weights = rng.uniform(0.5, 2.0, size=len(counts))
    return counts, residuals, weights


def fill(system, counts, residuals, weights, batch=7):
    for start in range(0, len(counts), batch):
        part = slice(start, start + batch)
        system.update(torch.tensor(counts[part]), torch.tensor(residuals[part]), torch.tensor(weights[part]))
    return system


@pytest.mark.parametrize("weighting", ["per_atom", "total"])
def test_full_rank_matches_weighted_least_squares_and_its_statistics(weighting):
    counts, residuals, weights = random_problem(0)
    start, prior = np.array([-13.6, -1029.5, -2041.8]), np.array([-10.0, -1000.0, -2000.0])
    solution = fill(E0LinearSystem(Z, weighting), counts, residuals, weights).solve(start, prior)

    n_atoms = counts.sum(1)
    w = weights / n_atoms ** 2 if weighting == "per_atom" else np.ones(len(counts))
    sqrt_w = np.sqrt(w)[:, None]
    x, *_ = np.linalg.lstsq(sqrt_w * counts, sqrt_w[:, 0] * residuals, rcond=None)
    assert np.allclose(solution.corrections, x, atol=1e-9)
    assert np.allclose(solution.e0s, start + x, atol=1e-9)

    fitted = residuals - counts @ x
    variance = np.sum(w * fitted ** 2) / (len(counts) - 3)
    covariance = variance * np.linalg.inv(counts.T @ (w[:, None] * counts))
    assert np.allclose(solution.standard_errors, np.sqrt(np.diag(covariance)), rtol=1e-6)
    assert solution.rmse_per_atom_before_meV == pytest.approx(1e3 * np.sqrt(np.mean((residuals / n_atoms) ** 2)))
    assert solution.rmse_per_atom_after_meV == pytest.approx(1e3 * np.sqrt(np.mean((fitted / n_atoms) ** 2)), rel=1e-6)
    singular = np.linalg.svd(sqrt_w * counts, compute_uv=False)
    assert solution.condition_number == pytest.approx(singular[0] / singular[-1], rel=1e-6)
    assert solution.rank == 3 and solution.determined == [True] * 3 and solution.determined_combinations == []


def test_noise_free_planted_shifts_are_recovered_exactly():
    counts, residuals, weights = random_problem(1, noise=0.0)
    solution = fill(E0LinearSystem(Z), counts, residuals, weights).solve([0.0] * 3, [5.0] * 3)
    assert solution.corrections == pytest.approx([-0.35, 1.25, -0.8], abs=1e-10)
    # From moments, the residual cancels to about sqrt(eps * sum b^2): nano-eV here.
    assert solution.rmse_per_atom_after_meV == pytest.approx(0.0, abs=1e-4)


def test_rank_deficient_fits_the_data_and_keeps_the_prior_along_the_null_space():
    # Ethanol and methanol only: rank 2 of 3.
    counts = np.array([[6.0, 2.0, 1.0], [4.0, 1.0, 1.0]] * 15)
    counts, residuals, weights = random_problem(2, counts=counts)
    start = np.array([-13.6, -1029.5, -2041.8])
    prior = np.array([-13.9, -1028.0, -2043.0])
    solution = fill(E0LinearSystem(Z), counts, residuals, weights).solve(start, prior)
    e0s = np.array(solution.e0s)

    null = np.linalg.svd(counts)[2][-1]  # the one direction the data cannot see
    assert abs(null @ (e0s - prior)) < 1e-9
    n_atoms = counts.sum(1)
    sqrt_w = np.sqrt(weights) / n_atoms
    best, *_ = np.linalg.lstsq(sqrt_w[:, None] * counts, sqrt_w * residuals, rcond=None)
    assert np.allclose(counts @ (e0s - start), counts @ best, atol=1e-9)  # same fitted values
    assert solution.rank == 2 and solution.n_elements == 3 and solution.rank_deficient
    assert [format_combination(c) for c in solution.determined_combinations] == ["2 H + O", "C - O"]
    assert solution.determined == [False, False, False]
    assert all(np.isnan(solution.standard_errors))


def test_minimum_norm_would_be_wrong_but_the_prior_anchor_is_right():
    # CaCO3 + 98 H2O in every frame: rank 1 of 4, the seed analysis's case.
    counts = np.array([[196.0, 1.0, 101.0, 1.0]] * 10)
    truth = np.array([-13.9, -1028.0, -2043.0, -18420.0])
    residuals = counts @ truth  # start E0s of zero
    system = fill(E0LinearSystem([1, 6, 8, 20]), counts, residuals, np.ones(10))
    anchored = system.solve([0.0] * 4, truth + np.array([0.01, -0.01, 0.02, 0.0]))
    minimum_norm = system.solve([0.0] * 4, [0.0] * 4)
    assert abs(minimum_norm.e0s[0] - truth[0]) > 100  # an unanchored fit puts H hundreds of eV off
    assert np.allclose(anchored.e0s, truth, atol=0.05)
    assert [format_combination(c) for c in anchored.determined_combinations] == ["196 H + C + 101 O + Ca"]


def test_elements_absent_from_the_data_take_the_prior():
    counts = np.array([[2.0, 0.0, 1.0], [4.0, 0.0, 2.0], [2.0, 0.0, 2.0]])
    system = fill(E0LinearSystem(Z), counts, counts @ np.array([0.1, 0.0, 0.2]), np.ones(3))
    solution = system.solve([-1.0, -2.0, -3.0], [-1.5, -7.0, -3.5])
    assert solution.present == [True, False, True] and solution.n_elements == 2 and solution.rank == 2
    assert solution.e0s == pytest.approx([-0.9, -7.0, -2.8], abs=1e-10)
    assert np.isnan(solution.standard_errors[1]) and not solution.rank_deficient


def test_unlabelled_and_non_finite_configs_are_counted_not_fitted():
    system = E0LinearSystem(Z)
    system.update(torch.tensor([[2.0, 0, 1], [1, 1, 1], [0, 2, 2], [3, 1, 0]]),
                  torch.tensor([1.0, float("nan"), 5.0, float("inf")]),
                  torch.tensor([1.0, 1.0, 0.0, 2.0]))
    assert (system.n_configs, system.n_skipped, system.n_non_finite) == (1, 1, 2)
    assert torch.isfinite(system.fit_moments).all()


def test_the_shards_summed_flat_equal_one_pass_and_the_flat_round_trips():
    counts, residuals, weights = random_problem(3)
    whole = fill(E0LinearSystem(Z), counts, residuals, weights)
    first = fill(E0LinearSystem(Z), counts[:25], residuals[:25], weights[:25])
    second = fill(E0LinearSystem(Z), counts[25:], residuals[25:], weights[25:])
    first.load_flat(first.flat() + second.flat())  # what the all-reduce of the ranks' shards does
    assert torch.allclose(first.flat(), whole.flat(), rtol=1e-12, atol=0)

    restored = E0LinearSystem(Z)
    restored.load_flat(whole.flat())
    assert torch.equal(restored.flat(), whole.flat())
    assert restored.solve([0.0] * 3, [0.0] * 3) == whole.solve([0.0] * 3, [0.0] * 3)


@pytest.mark.parametrize("weighting", ["per_atom", "total"])
def test_removing_configs_equals_never_adding_them(weighting):
    counts, residuals, weights = random_problem(4)
    residuals[[5, 40]] += (15.0, -25.0)  # broken labels
    weights[7] = 0.0  # unlabelled: neither used nor counted as used, before or after
    gone = np.zeros(len(counts), dtype=bool)
    gone[[5, 7, 40]] = True
    system = fill(E0LinearSystem(Z, weighting), counts, residuals, weights)
    system.remove(torch.tensor(counts[gone]), torch.tensor(residuals[gone]), torch.tensor(weights[gone]))
    never = fill(E0LinearSystem(Z, weighting), counts[~gone], residuals[~gone], weights[~gone])
    assert torch.allclose(system.flat(), never.flat(), rtol=1e-10, atol=1e-9)
    assert (system.n_configs, system.n_skipped) == (never.n_configs, never.n_skipped) == (57, 0)
    assert system.solve([0.0] * 3, [0.0] * 3).e0s == pytest.approx(never.solve([0.0] * 3, [0.0] * 3).e0s, abs=1e-9)


def test_solve_needs_data():
    with pytest.raises(ValueError, match="no usable configs"):
        E0LinearSystem(Z).solve([0.0] * 3, [0.0] * 3)


def test_row_space_combinations_are_canonical_integers():
    basis = np.linalg.svd(np.array([[1.0, 4.0, 0.0], [3.0, 12.0, 2.0]]))[2][:2]
    assert [format_combination(c) for c in row_space_combinations(basis, Z)] == ["H + 4 C", "O"]


def test_a_composition_splits_into_its_projection_on_the_determined_span_and_the_rest():
    from mace_e0_plugin.math import determined_span, split_compositions

    water = determined_span(Z, [1, 8], [[(2.0, 1), (1.0, 8)]])  # water only: rank 1 of 2
    counts = torch.tensor([[1, 0, 1], [3, 0, 1], [4, 0, 2], [4, 1, 0]])  # OH, H3O, (H2O)2, CH4
    inside, outside = split_compositions(counts, water)
    # OH = ((1*2 + 1*1) / 5) (2, 0, 1) + the rest, by hand.
    assert inside[0].tolist() == pytest.approx([1.2, 0.0, 0.6], abs=1e-12)
    assert outside[0].tolist() == pytest.approx([-0.2, 0.0, 0.4], abs=1e-12)
    assert outside[1].tolist() == pytest.approx([0.2, 0.0, -0.4], abs=1e-12)
    assert outside[2].abs().max().item() < 1e-12  # a water dimer lies inside
    assert outside[3].tolist() == pytest.approx([0.8, 1.0, -1.6], abs=1e-12)  # C was never seen: all outside
    assert torch.allclose(inside + outside, counts.double())

    # Full rank over H and O (no combinations reported): only carbon is outside.
    inside, outside = split_compositions(counts, determined_span(Z, [1, 8], []))
    assert outside[:3].abs().max().item() == 0.0 and outside[3].tolist() == [0.0, 1.0, 0.0]


def test_a_trace_element_in_a_giant_set_is_determined_with_its_standard_error():
    # 10^6 frames of 300 atoms, H and O in varying ratios, Cu in 3 frames: the unscaled Gram matrix
    # has Cu's eigenvalue ~1e-11 of the largest, which a plain rank test drops; the equilibrated
    # one keeps it, and Cu's standard error says how (un)certain it is.
    rng = np.random.default_rng(7)
    n_frames, size, batch = 1_000_000, 300, 200_000
    shifts = np.array([-0.35, -0.8, 0.6])
    system = E0LinearSystem([1, 8, 29])
    for start in range(0, n_frames, batch):
        hydrogen = rng.integers(150, 210, size=batch)
        counts = np.stack([hydrogen, size - hydrogen, np.zeros(batch)], axis=1).astype(float)
        if start == 0:
            counts[:3, 2], counts[:3, 1] = 2.0, counts[:3, 1] - 2.0  # three frames with two Cu atoms
        residuals = counts @ shifts + 0.003 * size * rng.standard_normal(batch)
        system.update(torch.tensor(counts), torch.tensor(residuals), torch.ones(batch))
    solution = system.solve([0.0] * 3, [0.0] * 3)
    assert solution.rank == 3 and not solution.rank_deficient
    errors = np.array(solution.standard_errors)
    assert np.all(np.isfinite(errors)) and errors[2] > 100 * errors[0]  # Cu known far less well
    assert np.all(np.abs(np.array(solution.corrections) - shifts) < 4 * errors)


@pytest.mark.parametrize("counts, rank", [
    (np.array([[196.0, 1.0, 101.0, 1.0]] * 40), 1),  # fixed stoichiometry (CaCO3-water)
    (np.array([[6.0, 2.0, 1.0, 0.0], [4.0, 1.0, 1.0, 0.0]] * 20), 2),  # ethanol + methanol
    (np.array([[2.0, 0.0, 1.0, 0.0]] * 30 + [[0.0, 0.0, 0.0, 1.0]] * 2), 2),  # water, a trace of Ca alone
])
def test_genuinely_collinear_elements_are_still_found(counts, rank):
    residuals = counts @ np.array([-0.35, 1.25, -0.8, 0.3]) + 1e-3 * np.random.default_rng(1).standard_normal(len(counts))
    solution = fill(E0LinearSystem([1, 6, 8, 20]), counts, residuals, np.ones(len(counts))).solve([0.0] * 4, [0.0] * 4)
    assert solution.rank == rank
