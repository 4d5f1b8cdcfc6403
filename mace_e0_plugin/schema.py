"""The report schema: an E0Solution as the JSON report's per-head entry, and element
combinations as text ("196 H + C"). I/O layer: the math in linear_system.py knows neither."""

from math import isfinite
from typing import Dict, Optional

from .linear_system import Combination, E0Solution


def solution_entry(solution: E0Solution) -> Dict[str, object]:
    """The per-head entry of the JSON report: energies in eV, keys atomic numbers as strings."""
    def by_element(values):
        return {str(z): _json_number(v) for z, v in zip(solution.atomic_numbers, values)}

    return {
        "E0s": by_element(solution.e0s),
        "prior_E0s": by_element(solution.prior_e0s),
        "starting_E0s": by_element(solution.start_e0s),
        "corrections": by_element(solution.corrections),
        "standard_errors": by_element(solution.standard_errors),
        "rank": solution.rank,
        "n_elements": solution.n_elements,
        "condition_number": _json_number(solution.condition_number),
        "n_configs": solution.n_configs,
        "n_skipped": solution.n_skipped,
        "weighting": solution.weighting,
        "determined_combinations": [format_combination(c) for c in solution.determined_combinations],
        # the same, machine-readable: [[coefficient, Z], ...] per combination; none at full rank
        "determined_coefficients": [[[c, z] for c, z in combination]
                                    for combination in solution.determined_combinations],
        "present_elements": [z for z, p in zip(solution.atomic_numbers, solution.present) if p],
        "rmse_per_atom_before_meV": _json_number(solution.rmse_per_atom_before_meV),
        "rmse_per_atom_after_meV": _json_number(solution.rmse_per_atom_after_meV),
    }


def _json_number(value: float) -> Optional[float]:
    return float(value) if isfinite(value) else None


def format_combination(combination: Combination) -> str:
    """[(196, 1), (1, 6)] -> "196 H + C"."""
    from ase.data import chemical_symbols

    text = ""
    for coefficient, z in combination:
        sign = "-" if coefficient < 0 else "+"
        magnitude = abs(coefficient)
        number = "" if magnitude == 1 else (f"{magnitude:g}" if magnitude == int(magnitude) else f"{magnitude:.4g}")
        term = f"{number} {chemical_symbols[z]}".strip()
        text = (f"-{term}" if sign == "-" else term) if not text else f"{text} {sign} {term}"
    return text
