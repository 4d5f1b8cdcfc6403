"""The diagnosis figure (I/O only): force parity per element, and the energy error per atom
against composition, where an E0 mismatch shows as a line that is not flat."""

import numpy as np
from matplotlib.figure import Figure

from ._files import write_atomically

PANEL_SIZE = 3.4  # inches per force-parity panel


def plot_diagnosis(path: str, diagnosis) -> str:
    """Top: predicted against reference force components, one panel per element, with the fitted
    slope. Bottom, one panel per element: E_ref - E_pred per atom (model's E0s) against that
    element's atom fraction, with the correction the data ask for at fraction 1 (a star): a
    mismatched E0 of element Z tilts its cloud towards the correction the data ask for at fraction 1
    (pure Z); mixed configs average the corrections, weighted by composition."""
    entry = diagnosis.entry
    elements = entry["elements"]
    with_forces = [z for z in diagnosis.atomic_numbers if z in diagnosis.forces]
    columns = max(len(with_forces), 1)
    # A bare Figure, not pyplot's: no backend is chosen for the caller, and it is freed with its last reference.
    figure = Figure(figsize=(max(PANEL_SIZE * columns, 8), 2 * PANEL_SIZE + 1.0))
    grid = figure.add_gridspec(2, columns)
    figure.suptitle(f"E0 and force diagnosis, head '{diagnosis.head}'", fontsize=13)

    for column, z in enumerate(with_forces):
        axis = figure.add_subplot(grid[0, column])
        reference, predicted = diagnosis.forces[z]
        element = elements[str(z)]
        flagged = element["symbol"] in entry["flagged"]["forces"]
        axis.scatter(reference, predicted, s=4, alpha=0.4, color="tab:red" if flagged else "tab:blue")
        limit = float(np.abs(np.concatenate([reference, predicted])).max()) if reference.size else 1.0
        line = np.array([-limit, limit])
        axis.plot(line, line, color="black", linewidth=0.8, label="y = x")
        if element["force_slope"] is not None:
            axis.plot(line, element["force_slope"] * line, color="tab:orange", linewidth=1.2,
                      label=f"slope {element['force_slope']:.4f}")
        axis.set_xlim(-limit, limit)
        axis.set_ylim(-limit, limit)
        axis.set_aspect("equal")
        axis.set_title(f"{element['symbol']} forces" + (" (FLAGGED)" if flagged else ""),
                       color="tab:red" if flagged else "black")
        axis.set_xlabel("reference / eV/A")
        if column == 0:
            axis.set_ylabel("predicted / eV/A")
        axis.legend(loc="upper left", fontsize=8)
    if not with_forces:
        axis = figure.add_subplot(grid[0, :])
        axis.text(0.5, 0.5, "no reference forces", ha="center", va="center")
        axis.set_axis_off()

    counts, residuals = diagnosis.counts, diagnosis.residuals
    in_data = [i for i, _ in enumerate(diagnosis.atomic_numbers) if len(residuals) and counts[:, i].any()]
    energy_grid = figure.add_gridspec(2, max(len(in_data), 1))
    if not in_data:
        axis = figure.add_subplot(energy_grid[1, :])
        axis.text(0.5, 0.5, "no configs with energies", ha="center", va="center")
        axis.set_axis_off()
    else:
        n_atoms = counts.sum(axis=1)
        per_atom = residuals / n_atoms
        scale, unit = (1.0, "eV") if np.abs(per_atom).max() > 1.0 else (1e3, "meV")
        for column, i in enumerate(in_data):
            axis = figure.add_subplot(energy_grid[1, column])
            element = elements[str(diagnosis.atomic_numbers[i])]
            flagged = element["symbol"] in entry["flagged"]["energy"]
            axis.scatter(counts[:, i] / n_atoms, per_atom * scale, s=10, alpha=0.6,
                         color="tab:red" if flagged else "tab:blue")
            axis.axhline(0.0, color="black", linewidth=0.8)
            correction = element["energy_correction"]
            if correction is not None and element["energy_z"] is not None:
                axis.plot([1.0], [correction * scale], marker="*", markersize=16, color="tab:orange",
                          markerfacecolor="none", markeredgewidth=1.5, zorder=3,
                          linestyle="none", label=f"correction asked {correction:+.4f} eV")
                axis.legend(loc="best", fontsize=8)
            axis.set_xlim(-0.05, 1.05)
            axis.set_xlabel(f"atom fraction of {element['symbol']}")
            if column == 0:
                axis.set_ylabel(f"E_ref - E_pred per atom / {unit}")
            axis.set_title(f"energy error vs {element['symbol']} content" + (" (FLAGGED)" if flagged else ""),
                           color="tab:red" if flagged else "black")

    figure.tight_layout()
    write_atomically(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    return path
