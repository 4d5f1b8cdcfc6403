"""Reports: the table logged after an estimate, the E0s file's content and the report's path (I/O only,
no math; files are written by pipeline.write_outputs)."""

import math
import os
from typing import Dict, Optional

from ase.data import chemical_symbols

from .estimate import Estimate
from .linear_system import E0Solution
from .schema import format_combination


def _number(value: float, digits: int = 6) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "prior"


def format_solution(head: str, solution: E0Solution) -> str:
    """A short table per element, then rank, conditioning and RMSE before and after."""
    lines = [
        f"E0 re-estimation for head '{head}': {solution.n_configs} configs"
        + (f" ({solution.n_skipped} without energy skipped)" if solution.n_skipped else "")
        + f", weighting {solution.weighting}",
        f"{'El':>3} {'Z':>3} {'old E0 / eV':>16} {'prior / eV':>16} {'correction / eV':>16} "
        f"{'new E0 / eV':>16} {'std. err. / eV':>15}",
    ]
    for i, z in enumerate(solution.atomic_numbers):
        if not solution.present[i]:
            continue
        lines.append(
            f"{chemical_symbols[z]:>3} {z:>3} {solution.start_e0s[i]:>16.6f} {solution.prior_e0s[i]:>16.6f} "
            f"{solution.corrections[i]:>16.6f} {solution.e0s[i]:>16.6f} "
            f"{_number(solution.standard_errors[i]):>15}")
    absent = len(solution.atomic_numbers) - solution.n_elements
    if absent:
        lines.append(f"{absent} other element(s) of the model are not in the data and take their prior E0s.")
    lines.append(f"rank {solution.rank} / {solution.n_elements} elements, condition number "
                 f"{solution.condition_number:.3g}")
    if solution.rank_deficient:
        lines.append("RANK-DEFICIENT: the data determine only these element combinations; every other "
                     "direction keeps the prior ('prior' in the error column):")
        for combination in solution.determined_combinations:
            value = sum(c * solution.e0s[solution.atomic_numbers.index(z)] for c, z in combination)
            lines.append(f"    E0({format_combination(combination)}) = {value:.6f} eV")
    lines.append(f"RMSE of E per atom: {solution.rmse_per_atom_before_meV:.3f} meV before, "
                 f"{solution.rmse_per_atom_after_meV:.3f} meV after")
    return "\n".join(lines)


def format_sampling(sampling: Dict[str, object]) -> str:
    text = (f"used a composition-stratified sample: {sampling['n_sampled']} of {sampling['n_available']} "
            "configs")
    if sampling.get("stopped_early"):
        text += f", stopped early once every determined E0's standard error was below {sampling['se_tolerance']} eV"
    return text


def format_estimate(estimate: Estimate) -> str:
    parts = []
    for head, solution in estimate.solutions.items():
        parts.append(format_solution(head, solution))
        if head in estimate.sampling:
            parts.append(format_sampling(estimate.sampling[head]))
    timing = estimate.timing
    if timing:
        parts.append(f"E0 estimate took {timing.get('inference_s', 0.0):.2f} s of inference and "
                     f"{timing.get('solve_s', 0.0) * 1e3:.1f} ms of solving")
    return "\n".join(parts)


def e0s_mapping(solution: E0Solution) -> Dict[str, float]:
    """``{"Z": eV}`` for every element of the model: the file ``mace_run_train --E0s=file.json`` reads."""
    return {str(z): e for z, e in zip(solution.atomic_numbers, solution.e0s)}


def report_path(results_dir: str, name: Optional[str]) -> str:
    return os.path.join(results_dir, f"{name or 'MACE'}_E0s_linear_system.json")
