"""The estimate's figure, one per head: what the E0 re-estimation did, at a glance (I/O only)."""

from typing import Optional

import numpy as np
from ase.data import chemical_symbols
from matplotlib.figure import Figure

from ..glue import ResidualSample
from ..math import E0Solution
from ._files import write_atomically
from ._tables import format_combination

DPI = 110  # 1210 x 880 pixels: the four panels stay legible in a report or a README


def plot_solution(path: str, head: str, solution: E0Solution, sample: Optional[ResidualSample]) -> str:
    """Write ``build_figure``'s figure to ``path`` (PNG), whole or not at all."""
    return save_figure(path, build_figure(head, solution, sample))


def save_figure(path: str, figure) -> str:
    write_atomically(path, lambda handle: figure.savefig(handle, format="png", dpi=DPI))
    return path


def build_figure(head: str, solution: E0Solution, sample: Optional[ResidualSample]):
    """Errors per atom before and after, corrections with standard errors, and the rank.

    A bare ``matplotlib.figure.Figure``, not a pyplot one: it needs no GUI backend (so none is
    forced on the caller, and a notebook still shows it inline) and is freed with its last reference.
    """
    figure = Figure(figsize=(11, 8))
    axes = figure.subplots(2, 2)
    figure.suptitle(f"E0 re-estimation, head '{head}' ({solution.n_configs} configs, "
                    f"{solution.weighting} weighting)", fontsize=13)

    counts, residuals = sample.arrays() if sample is not None else (np.zeros((0, 0)), np.zeros(0))
    correction = np.array(solution.corrections)
    if len(residuals):
        n_atoms = counts.sum(axis=1)
        before = 1e3 * residuals / n_atoms
        after = 1e3 * (residuals - counts @ correction) / n_atoms
        for axis, errors, label, rmse, colour in (
                (axes[0, 0], before, "before: starting E0s", solution.rmse_per_atom_before_meV, "tab:red"),
                (axes[0, 1], after, "after: re-estimated E0s", solution.rmse_per_atom_after_meV, "tab:green")):
            scale, unit = (1e-3, "eV") if np.abs(errors).max() > 1e4 else (1.0, "meV")
            axis.hist(errors * scale, bins=40, color=colour, alpha=0.8)
            axis.ticklabel_format(axis="x", useOffset=False)
            axis.set_title(f"{label}\nRMSE {rmse * scale:.4g} {unit}/atom")
            axis.set_xlabel(f"E_ref - E_pred per atom / {unit}")
            axis.set_ylabel("configs")
    else:
        for axis in axes[0]:
            axis.text(0.5, 0.5, "no per-config sample kept", ha="center", va="center")
            axis.set_axis_off()

    draw_corrections(axes[1, 0], solution)

    axis = axes[1, 1]
    axis.set_axis_off()
    lines = [f"rank {solution.rank} of {solution.n_elements} elements",
             f"condition number {solution.condition_number:.3g}"]
    if solution.rank_deficient:
        lines = ["RANK-DEFICIENT"] + lines + ["", "the data determine only:"]
        lines += [f"  E0({format_combination(c)})" for c in solution.determined_combinations]
        lines += ["", "every other direction keeps the prior"]
        colour = "tab:red"
    else:
        lines += ["", "full rank: every E0 is fixed by the data"]
        colour = "tab:green"
    axis.text(0.02, 0.95, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=11,
              color=colour if solution.rank_deficient else "black",
              bbox=dict(boxstyle="round", facecolor="white", edgecolor=colour))

    figure.tight_layout()
    return figure


def draw_corrections(axis, solution: E0Solution) -> None:
    """The panel that says most alone: each element's correction, ± its standard error; hatched
    grey where the prior, not the data, set it."""
    present = [i for i, p in enumerate(solution.present) if p]
    symbols = [chemical_symbols[solution.atomic_numbers[i]] for i in present]
    values = np.array(solution.corrections)[present]
    errors = np.array([solution.standard_errors[i] for i in present], dtype=float)
    determined = [solution.determined[i] for i in present]
    bars = axis.bar(symbols, values, yerr=np.where(np.isfinite(errors), errors, 0.0), capsize=4,
                    color=["tab:blue" if d else "lightgray" for d in determined])
    for bar, is_determined in zip(bars, determined):
        if not is_determined:
            bar.set_hatch("//")
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_ylabel("correction to E0 / eV")
    axis.set_title("corrections (± standard error; hatched: set by the prior)")
