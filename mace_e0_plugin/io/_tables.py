"""Text tables and lines a person reads: the estimate's table, refit lines, provenance, the
diagnosis and the check (I/O only, no math)."""

import math
from typing import Dict, Optional

from ase.data import chemical_symbols

from ..glue import EPOCH, FOUNDATION, Estimate, Refit
from ..math import SUSPICIOUS_ROBUST_Z, Combination, E0Solution


def format_combination(combination: Combination) -> str:
    """[(196, 1), (1, 6)] -> "196 H + C"."""
    text = ""
    for coefficient, z in combination:
        sign = "-" if coefficient < 0 else "+"
        magnitude = abs(coefficient)
        number = "" if magnitude == 1 else (f"{magnitude:g}" if magnitude == int(magnitude) else f"{magnitude:.4g}")
        term = f"{number} {chemical_symbols[z]}".strip()
        text = (f"-{term}" if sign == "-" else term) if not text else f"{text} {sign} {term}"
    return text


# -- the estimate ---------------------------------------------------------------------------------
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
    return (f"used a composition-stratified sample: {sampling['n_sampled']} of {sampling['n_available']} "
            "configs")


def format_suspicious(found, excluded: int = 0) -> str:
    """The configs whose labels look broken, one line each; empty when there are none."""
    if not found:
        return ""
    lines = [f"SUSPICIOUS LABELS: {len(found)} config(s) lie more than {SUSPICIOUS_ROBUST_Z:g} robust standard "
             "deviations from the fit (a failed calculation or a unit slip?); "
             + (f"{excluded} left out of the fit" if excluded else "kept in the fit")]
    for entry in found:
        kind = f", config_type {entry['config_type']}" if entry.get("config_type") else ""
        lines.append(f"    config {entry['index']} of {entry['file']}{kind}: residual {entry['residual_eV']:+.4f} eV "
                     f"({entry['residual_per_atom_meV']:+.1f} meV/atom, z {entry['robust_z']:.0f})")
    return "\n".join(lines)


def format_estimate(estimate: Estimate) -> str:
    parts = []
    for name, head in estimate.heads.items():
        parts.append(format_solution(name, head.solution))
        if head.sampling is not None:
            parts.append(format_sampling(head.sampling))
        if head.suspicious:
            parts.append(format_suspicious(head.suspicious, head.n_excluded))
    timing = estimate.timing
    if timing:
        parts.append(f"E0 estimate took {timing.get('inference_s', 0.0):.2f} s of inference and "
                     f"{timing.get('solve_s', 0.0) * 1e3:.1f} ms of solving")
    return "\n".join(parts)


# -- refits, provenance ---------------------------------------------------------------------------
def format_refit(refit: Refit) -> str:
    """One log line: head, when, the largest |ΔE0| and the training energy RMSE before and after."""
    change, z = refit.largest_change
    when = (f"epoch {refit.epoch}" if refit.kind == EPOCH
            else f"final, checkpoint {refit.checkpoint} (epoch {refit.epoch})" if refit.checkpoint
            else "final, the model itself")
    return (f"E0 refit, head '{refit.head}', {when}: largest |dE0| {change:.6f} eV ({chemical_symbols[z]}), "
            f"training E RMSE {refit.solution.rmse_per_atom_before_meV:.3f} -> "
            f"{refit.solution.rmse_per_atom_after_meV:.3f} meV/atom ({refit.seconds:.2f} s)")


def format_provenance(provenance: Optional[dict]) -> str:
    """The line ``mace-e0 show`` prints for a head."""
    if not provenance:
        return "E0 provenance: none recorded (E0s set by mace, or applied from a plain {Z: eV} file)"
    combinations = [[(c, z) for c, z in combination] for combination in provenance["determined_combinations"]]
    determined = ("; ".join(format_combination(c) for c in combinations) if combinations
                  else "every element alone")
    prior = provenance["prior"]
    return (f"E0 provenance: {provenance['method']}, rank {provenance['rank']} of {provenance['n_elements']}, "
            f"prior {prior['source']} ({prior['kind']}), determined {determined}, "
            f"weighting {provenance['weighting']}, {provenance['n_configs']} configs, "
            f"{provenance['n_refits']} refits, mace-e0-plugin {provenance['plugin_version']}"
            + (f"; NOT refitted after training ({provenance['refit_failed']})" if provenance.get("refit_failed") else ""))


# -- the diagnosis and the check -----------------------------------------------------------------
def format_diagnosis(diagnosis) -> str:
    """The table per element, then the verdict."""
    entry = diagnosis.entry
    flagged = entry["flagged"]
    lines = [f"E0 and force diagnosis for head '{diagnosis.head}' (rank {entry['rank']}; * flagged)",
             f"{'El':>3} {'Z':>3} {'E0 corr. / eV':>14} {'std. err.':>10} {'z':>9}  "
             f"{'F slope':>8} {'std. err.':>10} {'F RMSE':>8} {'F comps':>7}  {'model E0 / eV':>15} "
             f"{'E0 - prior':>13}"]
    for z, element in entry["elements"].items():
        symbol = element["symbol"]
        if element["energy_correction"] is None and not element["n_force_components"]:
            continue
        prior = element["prior_E0"]
        lines.append(
            f"{symbol:>3} {z:>3} {_cell(element['energy_correction'], '.6f', 14)} "
            f"{_cell(element['energy_standard_error'], '.2g', 10)} {_cell(element['energy_z'], '.3g', 9)}"
            f"{'*' if symbol in flagged['energy'] else ' '} "
            f"{_cell(element['force_slope'], '.5f', 8)} {_cell(element['force_slope_standard_error'], '.2g', 10)} "
            f"{_cell(element['force_rmse'], '.4f', 8)} {element['n_force_components']:>7}"
            f"{'*' if symbol in flagged['forces'] else ' '} {element['model_E0']:>15.6f} "
            f"{_cell(None if prior is None else element['model_E0'] - prior, '.6f', 13)}")
    lines.append("F RMSE in the forces' units (eV/A); E0 corrections: what the data ask for, per atom of the element")
    if entry.get("suspicious_configs"):
        lines.append(format_suspicious(entry["suspicious_configs"]))
    lines.append(entry["verdict"])
    return "\n".join(lines)


def _cell(value: Optional[float], spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_check(result: Dict[str, object]) -> str:
    lines = []
    for head, entry in result["heads"].items():
        prior = entry["prior"]
        where = ", ".join(entry["determined_combinations"]) or "each element alone"
        lines.append(f"head '{head}': {entry['n_outside']} of {entry['n_configs']} configs lie outside the "
                     f"element combinations its E0s were fitted on ({where})")
        if entry["n_outside"]:
            trust = ("isolated atoms" if entry["prior_is_isolated_atoms"]
                     else "not isolated atoms: only " + ("the foundation's E0s" if prior.get("kind") == FOUNDATION
                                                         else "E0s of unknown origin"))
            lines.append(f"  their energies rest on the prior, {prior.get('source')} ({trust}); e.g.")
            for example in entry["examples"]:
                outside = " ".join(f"{v:+g} {el}" for el, v in example["outside_atoms"].items())
                lines.append(f"  {example['config']}: outside part {outside} (atoms)")
    return "\n".join(lines)
