"""The JSON report: the one module that builds its format and reads it back (I/O).

    {"heads": {HEAD: entry}, "timing": {...}, "refits": [refit, ...]}

``entry`` is an E0Solution's per-head record (``solution_entry``), plus the prior and, where part
of the data was used, the sampling; after refits its ``E0s`` are those of the last model mace saves
and ``estimated_E0s`` keep the first estimate. A fine-tune whose own work failed after its first
step adds ``"failures": [{step, error, kept, heads, refit_later}]``; those heads' provenance then
says ``refit_failed``. Provenance, ``mace-e0 apply REPORT.json`` and a
restarted fine-tune read it back through the functions here, and nowhere else.
"""

import json
import os
from math import isfinite
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .. import __version__
from ..errors import E0InputError, as_option
from ..glue import METHOD, Estimate, HeadEstimate, Refit
from ..math import E0Solution
from ._priors import read_e0s_json
from ._tables import format_combination

REPORT_SUFFIX = "_E0s_linear_system.json"
_PROVENANCE_NEEDS = ("weighting", "rank", "n_elements", "present_elements", "determined_coefficients", "n_configs")


# -- building -------------------------------------------------------------------------------------
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


def estimate_report(estimate: Estimate) -> Dict[str, object]:
    """The report of an estimate: every head's entry, with its prior and sampling, and the timing."""
    def entry(head: HeadEstimate) -> Dict[str, object]:
        extra = {"prior": head.prior_record.to_dict()}
        if head.sampling is not None:
            extra["sampling"] = head.sampling
        extra["pass_dtype"] = estimate.pass_dtype
        extra["suspicious_configs"] = suspicious_entries(head.suspicious)
        extra["n_excluded_suspicious"] = head.n_excluded
        return {**solution_entry(head.solution), **extra}

    return {"heads": {name: entry(head) for name, head in estimate.heads.items()},
            "timing": dict(estimate.timing)}


SUSPICIOUS_FIELDS = ("index", "file", "residual_eV", "residual_per_atom_meV", "config_type", "robust_z")


def suspicious_entries(found: Sequence[Mapping[str, object]]) -> List[Dict[str, object]]:
    """``suspicious_configs``: [{index, file, residual_eV, residual_per_atom_meV, config_type, robust_z}]."""
    return [{key: entry.get(key) for key in SUSPICIOUS_FIELDS} for entry in found]


def refit_entry(refit: Refit) -> Dict[str, object]:
    change, z = refit.largest_change
    solution = solution_entry(refit.solution)
    return {"head": refit.head, "kind": refit.kind, "epoch": refit.epoch, "checkpoint": refit.checkpoint,
            "E0s": solution["E0s"], "max_abs_change_eV": change, "max_change_element": z,
            "rmse_per_atom_before_meV": solution["rmse_per_atom_before_meV"],
            "rmse_per_atom_after_meV": solution["rmse_per_atom_after_meV"],
            "n_configs": refit.solution.n_configs, "seconds": refit.seconds}


def report_with_refits(report: Mapping[str, object], refits: Sequence[Refit],
                       saved_e0s: Mapping[str, Sequence[float]], atomic_numbers: Sequence[int]) -> Dict[str, object]:
    """``report`` with ``refits`` appended; each head in ``saved_e0s`` gets the E0s of the last model
    mace saves (``estimated_E0s`` keeps the first estimate, ``corrections`` follow the new E0s)."""
    content = dict(report)
    content["refits"] = list(content.get("refits", [])) + [refit_entry(r) for r in refits]
    heads = {name: dict(entry) for name, entry in content.get("heads", {}).items()}
    for name, e0s in saved_e0s.items():
        entry = heads.setdefault(name, {})
        entry.setdefault("estimated_E0s", entry.get("E0s"))
        entry["E0s"] = {str(z): e for z, e in zip(atomic_numbers, e0s)}
        if "starting_E0s" in entry:
            entry["corrections"] = {z: entry["E0s"][z] - entry["starting_E0s"][z] for z in entry["E0s"]}
    content["heads"] = heads
    return content


def e0s_mapping(solution: E0Solution) -> Dict[str, float]:
    """``{"Z": eV}`` for every element of the model: the file ``mace_run_train --E0s=file.json`` reads."""
    return {str(z): e for z, e in zip(solution.atomic_numbers, solution.e0s)}


def report_path(results_dir: str, name: Optional[str]) -> str:
    """Where a fine-tune's report goes: ``{results_dir}/{name}_E0s_linear_system.json``."""
    return os.path.join(results_dir, f"{name or 'MACE'}{REPORT_SUFFIX}")


# -- reading --------------------------------------------------------------------------------------
def read_report(path: str) -> Dict[str, object]:
    """A report written earlier (a restarted fine-tune goes on with it); empty if there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def provenance_from_report(content: Mapping[str, object], source: str = "the report") -> Dict[str, dict]:
    """Each head's provenance from an estimate's report (``mace-e0 estimate --output`` or the
    training report): the one source of it, for fine-tunes and for ``mace-e0 apply``."""
    heads = content.get("heads") if isinstance(content, Mapping) else None
    if not isinstance(heads, Mapping) or not heads:
        raise E0InputError(f"{source}: not an E0 report (no \"heads\"); give the JSON that "
                           "mace-e0 estimate --output or a fine-tune's results folder has.")
    refits = content.get("refits", [])
    not_refitted = _not_refitted(content.get("failures", []))
    provenance = {}
    for name, entry in heads.items():
        missing = [key for key in _PROVENANCE_NEEDS if key not in entry]
        if missing:
            raise E0InputError(f"{source}: head '{name}' lacks {', '.join(missing)} (a report of an older "
                               "mace-e0-plugin); re-run mace-e0 estimate to get one with provenance.")
        provenance[name] = {
            "method": METHOD,
            "weighting": entry["weighting"],
            "prior": dict(entry.get("prior") or {"kind": "unknown", "source": "unknown"}),
            "rank": int(entry["rank"]),
            "n_elements": int(entry["n_elements"]),
            "present_elements": [int(z) for z in entry["present_elements"]],
            "determined_combinations": [[[float(c), int(z)] for c, z in combination]
                                        for combination in entry["determined_coefficients"]],
            "n_configs": int(entry["n_configs"]),
            "n_refits": sum(1 for refit in refits if refit.get("head") == name),
            "plugin_version": __version__,
        }
        if name in not_refitted:
            provenance[name]["refit_failed"] = not_refitted[name]
    return provenance


def _not_refitted(failures: Sequence[Mapping[str, object]]) -> Dict[str, str]:
    """{head: why its E0s were not refitted}, from a fine-tune's ``failures``: the first that named it."""
    reasons: Dict[str, str] = {}
    for failure in failures:
        for head in failure.get("heads") or []:
            reasons.setdefault(head, f"{failure['step']} failed: {failure['error']}")
    return reasons


def read_e0s_or_report(path: str, head: str) -> Tuple[Dict[int, float], Optional[dict]]:
    """({Z: eV}, provenance or None) from a plain E0s file or an estimate's report. A report's
    head of the same name is taken, else its only head."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError):
        content = None  # read_e0s_json says what is wrong with it
    if not (isinstance(content, dict) and "heads" in content):
        return read_e0s_json(path, "e0s", path), None
    provenance = provenance_from_report(content, f"REPORT {path}")
    names = list(provenance)
    name = head if head in provenance else (names[0] if len(names) == 1 else None)
    if name is None:
        raise E0InputError("REPORT {path}: no head '{name}' among its heads {names}; pass {head} with one of them.",
                           path=path, name=head, names=", ".join(names), head=as_option())
    e0s = {int(z): float(e) for z, e in content["heads"][name]["E0s"].items()}
    return e0s, provenance[name]

