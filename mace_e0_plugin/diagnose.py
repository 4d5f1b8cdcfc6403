"""``mace-e0 diagnose``: are a model's E0s, or its forces, what the data ask for? (MACE glue)

A tight energy parity plot with a force parity plot split into one offset cloud per element is
the classic sign of mismatched E0s. This checks it three ways, per element:

- energy: the E0 correction the data ask for, through the same pipeline as ``mace-e0 estimate``
  (prior: the model's own E0s, so directions the data do not determine ask for nothing), with its
  standard error and z = correction / SE;
- forces: a second pass with gradients; the slope of predicted against reference components;
- isolated atoms, when given: the model's E0 beside the isolated-atom energy.

The math and the flag rules are in ``force_slopes``; the figure in ``plot_diagnosis``.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .collect import _inputs_in, default_dtype, evaluation_mode, make_loader
from .errors import E0InputError
from .force_slopes import (ENERGY_CORRECTION_THRESHOLD, FORCE_SLOPE_TOLERANCE, Z_THRESHOLD, ForceSlopeStatistics,
                           combination_correction, energy_is_off, energy_z, slope_is_off)
from .linear_system import E0Solution
from .schema import format_combination

FORCE_SAMPLE_ATOMS = 5_000  # atoms per element kept for the parity plot: a fixed cost however large the data
ENERGY_SAMPLE_CONFIGS = 20_000  # configs kept for the residual-against-composition plot


@dataclass
class Diagnosis:
    """One head's diagnosis: ``entry`` is what DIAG.json holds for it; the samples feed the figure."""

    head: str
    entry: Dict[str, object]
    atomic_numbers: List[int]
    counts: np.ndarray  # [configs, elements] of the sampled configs
    residuals: np.ndarray  # [configs] E_ref - E_pred with the model's E0s, eV
    forces: Dict[int, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # Z: (reference, predicted)

    def to_dict(self) -> Dict[str, object]:
        return {"heads": {self.head: self.entry}}


def diagnose_e0s(model, configs, energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                 isolated_atoms=None, head: Optional[str] = None, *, batch_size: int = 32,
                 device=None, dtype=None, num_workers: int = 0, output: Optional[str] = None,
                 plot: Optional[str] = None) -> Dict[str, object]:
    """DIAG.json's content for ``model`` on ``configs`` (what ``pipeline.model_from`` and
    ``data_from`` accept: paths, modules, a MACECalculator; files or lists of ase.Atoms).

    ``forces_key`` None leaves the forces out (slopes null). ``isolated_atoms``: an extxyz of
    isolated atoms, a JSON {Z: eV}, a dict or a list of ase.Atoms; default, DATA's
    config_type=IsolatedAtom frames if any. ``output`` and ``plot`` write DIAG.json and the figure
    (whole or not at all). The default dtype is restored afterwards.
    """
    diagnosis = diagnose(model, configs, energy_key, forces_key, isolated_atoms, head, batch_size=batch_size,
                         device=device, dtype=dtype, num_workers=num_workers)
    from .pipeline import Outputs, write_outputs
    from .plot_diagnosis import plot_diagnosis

    content = diagnosis.to_dict()
    write_outputs(Outputs(report=output, figure=plot), content, draw=lambda path: plot_diagnosis(path, diagnosis))
    return content


def diagnose(model, configs, energy_key: Optional[str], forces_key: Optional[str], isolated_atoms=None,
             head: Optional[str] = None, *, batch_size: int = 32, device=None, dtype=None,
             num_workers: int = 0, option: str = "isolated_atoms") -> Diagnosis:
    """The diagnosis with the samples the figure needs (``diagnose_e0s`` without the files)."""
    from .estimate import estimate_e0s
    from .models import model_atomic_numbers, model_heads, read_e0s, select_head
    from .pipeline import build_request, data_from, model_from, prior_from
    from .priors import FOUNDATION

    isolated = _isolated_energies(isolated_atoms, energy_key, option)
    previous = torch.get_default_dtype()
    # Graphs in float64, so that reference energies keep every digit (as mace-e0 estimate does).
    torch.set_default_dtype(torch.float64)
    try:
        module = model_from(model, device, dtype)
        device = next(module.parameters()).device
        heads = model_heads(module)
        index = select_head(heads, head, "--head" if option.startswith("--") else "head")
        name = heads[index]
        data = data_from(configs, module, name, energy_key, forces_key)
        # The model's own E0s as the prior: along what the data do not determine, they ask for nothing.
        request, _, _ = build_request(module, name, data, prior_from(FOUNDATION, energy_key))
        estimate = estimate_e0s(module, [request], device, batch_size=batch_size, num_workers=num_workers,
                                progress=False, sample_limit=ENERGY_SAMPLE_CONFIGS)
        atomic_numbers = model_atomic_numbers(module)
        statistics, force_sample = (collect_forces(module, data.dataset, len(atomic_numbers), device,
                                                   batch_size, num_workers) if forces_key else (None, {}))
        model_e0s = read_e0s(module, index)
    finally:
        torch.set_default_dtype(previous)
    if isolated is None:
        isolated = dict(data.isolated_atoms)
    solution = estimate.solutions[name]
    counts, residuals = estimate.samples[name].arrays()
    names = {"MODEL": str(model) if isinstance(model, (str, os.PathLike)) else "MODEL",
             "DATA": _data_names(configs), "K": energy_key or "energy"}
    entry = head_entry(solution, statistics, model_e0s, isolated, names)
    forces = {atomic_numbers[i]: arrays for i, arrays in force_sample.items()}
    return Diagnosis(name, entry, atomic_numbers, counts, residuals, forces)


def _data_names(configs) -> str:
    """DATA as the fix commands should spell it: the files, or a placeholder for ase.Atoms."""
    if isinstance(configs, (str, os.PathLike)):
        return str(configs)
    configs = list(configs)
    if configs and all(isinstance(c, (str, os.PathLike)) for c in configs):
        return " ".join(str(c) for c in configs)
    return "DATA"


def _isolated_energies(isolated_atoms, energy_key: Optional[str], option: str) -> Optional[Dict[int, float]]:
    if isolated_atoms is None:
        return None
    from .pipeline import prior_from

    energies = prior_from(isolated_atoms, energy_key, option).e0s
    if energies is None:
        raise E0InputError(f"{option}={isolated_atoms}: give isolated-atom energies (an extxyz of isolated "
                           "atoms, a JSON {Z: eV}, a dict or a list of ase.Atoms), not the model's own E0s.")
    return energies


# -- the forces pass ------------------------------------------------------------------------------
def collect_forces(model: torch.nn.Module, dataset, n_elements: int, device: torch.device, batch_size: int,
                   num_workers: int = 0) -> Tuple[ForceSlopeStatistics, Dict[int, Tuple[np.ndarray, np.ndarray]]]:
    """One pass with gradients (forces are -dE/dr): per-element sums for the slopes, and the first
    FORCE_SAMPLE_ATOMS atoms of each element for the parity plot. Configs without reference forces
    (forces weight 0) are left out."""
    statistics = ForceSlopeStatistics(n_elements, device)
    kept: Dict[int, List[Tuple[torch.Tensor, torch.Tensor]]] = {}
    sizes = [0] * n_elements
    dtype = next(model.parameters()).dtype
    with evaluation_mode(model):
        for batch in make_loader(dataset, batch_size, num_workers):
            batch = batch.to(device)
            with default_dtype(dtype):  # tensors the model makes on the fly: its dtype, not the graphs'
                output = model(_inputs_in(batch, dtype), training=False, compute_force=True,
                               compute_virials=False, compute_stress=False)
            predicted = output["forces"].detach()
            element = batch.node_attrs.argmax(dim=1)
            used = batch.forces_weight[batch.batch] > 0
            statistics.update(element, predicted, batch.forces, used)
            for i in range(n_elements):
                take = FORCE_SAMPLE_ATOMS - sizes[i]
                if take <= 0:
                    continue
                mine = (used & (element == i)).nonzero().flatten()[:take]
                if mine.numel():
                    kept.setdefault(i, []).append((batch.forces[mine], predicted[mine]))
                    sizes[i] += mine.numel()
    sample = {i: tuple(torch.cat(part).double().cpu().numpy().ravel() for part in zip(*parts))
              for i, parts in kept.items()}
    return statistics, sample


# -- the entry and its verdict --------------------------------------------------------------------
def head_entry(solution: E0Solution, statistics: Optional[ForceSlopeStatistics], model_e0s: List[float],
               isolated: Dict[int, float], names: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """DIAG.json's entry for one head: per element, the flags, rank, combinations and a verdict.
    ``names``: MODEL, DATA and K (the energy key) as the verdict's fix commands spell them."""
    from ase.data import chemical_symbols

    slopes = statistics.results() if statistics is not None else None
    corrections = solution.corrections
    elements: Dict[str, Dict[str, object]] = {}
    flagged_energy, flagged_forces = [], []
    for i, z in enumerate(solution.atomic_numbers):
        symbol = chemical_symbols[z]
        present = solution.present[i]
        standard_error = _finite(solution.standard_errors[i]) if present else None
        z_value = energy_z(corrections[i], standard_error) if present else None
        slope = slopes[i] if slopes is not None else None
        elements[str(z)] = {
            "symbol": symbol,
            "energy_correction": corrections[i] if present else None,
            "energy_standard_error": standard_error,
            "energy_z": z_value,
            "force_slope": slope.slope if slope else None,
            "force_slope_standard_error": slope.standard_error if slope else None,
            "force_rmse": slope.rmse if slope else None,
            "n_force_components": slope.n_components if slope else 0,
            "model_E0": model_e0s[i],
            "isolated_atom_energy": isolated.get(z),
        }
        if present and energy_is_off(corrections[i], z_value):
            flagged_energy.append(symbol)
        if slope and slope_is_off(slope.slope, slope.standard_error):
            flagged_forces.append(symbol)
    entry = {
        "elements": elements,
        "flagged": {"energy": flagged_energy, "forces": flagged_forces},
        "rank": solution.rank,
        "determined_combinations": [format_combination(c) for c in solution.determined_combinations],
    }
    entry["verdict"] = verdict(entry, solution, names)
    return entry


def _finite(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def verdict(entry: Dict[str, object], solution: E0Solution, names: Optional[Dict[str, str]] = None) -> str:
    """What looks wrong, and the command that fixes it."""
    names = {"MODEL": "MODEL", "DATA": "DATA", "K": "K", **(names or {})}
    elements, flagged = entry["elements"], entry["flagged"]
    by_symbol = {e["symbol"]: e for e in elements.values()}
    lines = []
    if flagged["energy"]:
        asked = ", ".join(f"{s} {by_symbol[s]['energy_correction']:+.4f} eV" for s in flagged["energy"])
        lines += [f"E0 MISMATCH: the data ask for E0 corrections of {asked} (|z| > {Z_THRESHOLD:g} and "
                  f"> {1e3 * ENERGY_CORRECTION_THRESHOLD:g} meV per atom). Pure configs of these elements are off "
                  "by that much per atom, mixed ones by the composition-weighted mean. Fix the E0s:",
                  f"  mace-e0 estimate {names['MODEL']} {names['DATA']} --energy-key {names['K']} --e0s-json E0s.json",
                  f"  mace-e0 apply {names['MODEL']} E0s.json --output fixed.model",
                  "  (or, when fine-tuning, mace_run_train ... --E0s=linear_system)"]
    if flagged["forces"]:
        off = ", ".join(f"{s} slope {by_symbol[s]['force_slope']:.4f}" for s in flagged["forces"])
        lines += [f"FORCE SCALE: predicted against reference forces have {off} (> {Z_THRESHOLD:g} SE and "
                  f"> {100 * FORCE_SLOPE_TOLERANCE:g}% from 1). E0s add a constant per atom and never change "
                  "forces: check the data's forces (units, level of theory, --forces-key) or the model's "
                  "training on these elements; new E0s will not fix this."]
    if solution.rank_deficient:
        numbers, corrections = solution.atomic_numbers, solution.corrections
        asked = "; ".join(f"E0({format_combination(c)}) {combination_correction(c, numbers, corrections):+.4f} eV"
                          for c in solution.determined_combinations)
        lines += [f"RANK-DEFICIENT (rank {solution.rank} of {solution.n_elements}): the data determine only "
                  f"these combinations of E0s, and ask for these corrections along them: {asked}. "
                  "Single elements cannot be judged on these data (their z is null): add configs of other "
                  "compositions, or compare with --isolated-atoms at the data's level of theory."]
    if not lines:
        lines = [f"No E0 mismatch and no per-element force scale found (thresholds: |z| > {Z_THRESHOLD:g} and "
                 f"{1e3 * ENERGY_CORRECTION_THRESHOLD:g} meV per atom; slope > {Z_THRESHOLD:g} SE and "
                 f"{100 * FORCE_SLOPE_TOLERANCE:g}% from 1)."]
    return "\n".join(lines)


def format_diagnosis(diagnosis: Diagnosis) -> str:
    """The table per element, then the verdict."""
    entry = diagnosis.entry
    flagged = entry["flagged"]
    lines = [f"E0 and force diagnosis for head '{diagnosis.head}' (rank {entry['rank']}; * flagged)",
             f"{'El':>3} {'Z':>3} {'E0 corr. / eV':>14} {'std. err.':>10} {'z':>9}  "
             f"{'F slope':>8} {'std. err.':>10} {'F RMSE':>8} {'F comps':>7}  {'model E0 / eV':>15} "
             f"{'E0 - isolated':>13}"]
    for z, element in entry["elements"].items():
        symbol = element["symbol"]
        if element["energy_correction"] is None and not element["n_force_components"]:
            continue
        isolated = element["isolated_atom_energy"]
        lines.append(
            f"{symbol:>3} {z:>3} {_cell(element['energy_correction'], '.6f', 14)} "
            f"{_cell(element['energy_standard_error'], '.2g', 10)} {_cell(element['energy_z'], '.3g', 9)}"
            f"{'*' if symbol in flagged['energy'] else ' '} "
            f"{_cell(element['force_slope'], '.5f', 8)} {_cell(element['force_slope_standard_error'], '.2g', 10)} "
            f"{_cell(element['force_rmse'], '.4f', 8)} {element['n_force_components']:>7}"
            f"{'*' if symbol in flagged['forces'] else ' '} {element['model_E0']:>15.6f} "
            f"{_cell(None if isolated is None else element['model_E0'] - isolated, '.6f', 13)}")
    lines.append("F RMSE in the forces' units (eV/A); E0 corrections: what the data ask for, per atom of the element")
    lines.append(entry["verdict"])
    return "\n".join(lines)


def _cell(value: Optional[float], spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"
