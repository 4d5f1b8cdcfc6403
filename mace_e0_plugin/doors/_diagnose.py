"""``mace-e0 diagnose`` and ``diagnose_e0s``: are a model's E0s, or its forces, what the data ask for?

A tight energy parity plot with a force parity plot split into one offset cloud per element is
the classic sign of mismatched E0s. This checks it three ways, per element:

- energy: the E0 correction the data ask for, through the same sequence and with the same prior as
  ``mace-e0 estimate`` (directions the data do not determine take the prior, with no standard
  error and no flag), with its standard error and z = correction / SE;
- forces: a second pass with gradients; the slope of predicted against reference components;
- the prior, when it is not the model's own E0s (isolated atoms at the data's level, the
  strongest): each E0 beside it.

The math and the flag rules are in ``math`` (force slopes); the table and figure in ``io``.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ase.data import chemical_symbols

from ..glue import (FOUNDATION, default_dtype, force_statistics, make_loader, model_atomic_numbers, network_for_pass,
                    read_e0s)
from ..io import Outputs, format_combination, plot_diagnosis, suspicious_entries, write_outputs
from ..math import (ENERGY_CORRECTION_THRESHOLD, FORCE_SLOPE_TOLERANCE, Z_THRESHOLD, E0Solution,
                    ForceSlopeStatistics, combination_correction, energy_is_off, energy_z, slope_is_off)
from ..services import DEFAULT_BATCH_SIZE, PASS_DTYPE, checked
from ..services import GRAPH_DTYPE, EstimateRequest, estimate_sequence


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
                 prior=None, head: Optional[str] = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 device=None, dtype: str = PASS_DTYPE, num_workers: int = 0, output: Optional[str] = None,
                 plot: Optional[str] = None) -> Dict[str, object]:
    """DIAG.json's content for ``model`` on ``configs`` (what ``glue.model_from`` and
    ``glue.data_from`` accept: paths, modules, a MACECalculator; files or lists of ase.Atoms).

    ``forces_key`` None leaves the forces out (slopes null). ``prior``: as ``reestimate_e0s``'s (an
    extxyz of isolated atoms, a JSON {Z: eV}, a dict or a list of ase.Atoms, or 'foundation');
    default, DATA's config_type=IsolatedAtom frames if any, else the model's own E0s. ``output`` and
    ``plot`` write DIAG.json and the figure (whole or not at all). The default dtype is restored
    afterwards. A bad option raises E0InputError, as in the other doors.
    """
    options = checked(batch_size=batch_size, dtype=dtype, num_workers=num_workers)
    diagnosis = diagnose(model, configs, energy_key, forces_key, prior, head, device=device, **options)
    content = diagnosis.to_dict()
    write_outputs(Outputs(report=output, figure=plot), content, draw=lambda path: plot_diagnosis(path, diagnosis))
    return content


def diagnose(model, configs, energy_key: Optional[str], forces_key: Optional[str], prior=None,
             head: Optional[str] = None, *, batch_size: int = DEFAULT_BATCH_SIZE, device=None,
             dtype: str = PASS_DTYPE, num_workers: int = 0) -> Diagnosis:
    """The diagnosis with the samples the figure needs (``diagnose_e0s`` without the files)."""
    steps = estimate_sequence(EstimateRequest(model, configs, energy_key, prior=prior, head=head, device=device,
                                              pass_dtype=dtype, batch_size=batch_size, num_workers=num_workers,
                                              forces_key=forces_key, progress=False))
    module, name = steps.model, steps.head
    atomic_numbers = model_atomic_numbers(module)
    statistics, force_sample = None, {}
    if forces_key:
        with default_dtype(GRAPH_DTYPE):  # the graphs are built as the estimate's were
            batches = make_loader(steps.data.dataset, batch_size, num_workers)
            statistics, force_sample = force_statistics(network_for_pass(module, dtype), batches,
                                                        len(atomic_numbers), next(module.parameters()).device)
    model_e0s = read_e0s(module, steps.request.index)
    # Each E0 beside the prior, where the prior is not the model's own E0s (and has the element).
    head_estimate = steps.head_estimate
    prior_e0s = ({} if head_estimate.prior_record.kind == FOUNDATION else
                 {z: e for z, e in zip(atomic_numbers, steps.request.prior_e0s) if z not in steps.lacking})
    solution = head_estimate.solution
    counts, residuals = head_estimate.sample.arrays()
    names = {"MODEL": str(model) if isinstance(model, (str, os.PathLike)) else "MODEL",
             "DATA": _data_names(configs), "K": energy_key or "energy"}
    entry = head_entry(solution, statistics, model_e0s, prior_e0s, names)
    entry["prior"] = head_estimate.prior_record.to_dict()
    entry["suspicious_configs"] = suspicious_entries(head_estimate.suspicious)
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


# -- the entry and its verdict --------------------------------------------------------------------
def head_entry(solution: E0Solution, statistics: Optional[ForceSlopeStatistics], model_e0s: List[float],
               prior_e0s: Dict[int, float], names: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """DIAG.json's entry for one head: per element, the flags, rank, combinations and a verdict.
    ``prior_e0s``: the prior's E0 per element, where it is not the model's own. ``names``: MODEL,
    DATA and K (the energy key) as the verdict's fix commands spell them."""
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
            "prior_E0": prior_e0s.get(z),
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
                  "compositions, or compare with --prior, isolated atoms at the data's level of theory."]
    if not lines:
        lines = [f"No E0 mismatch and no per-element force scale found (thresholds: |z| > {Z_THRESHOLD:g} and "
                 f"{1e3 * ENERGY_CORRECTION_THRESHOLD:g} meV per atom; slope > {Z_THRESHOLD:g} SE and "
                 f"{100 * FORCE_SLOPE_TOLERANCE:g}% from 1)."]
    return "\n".join(lines)
