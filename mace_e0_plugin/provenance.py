"""E0 provenance carried in the model (MACE glue): how its E0s were set, and along which element
combinations the data determined them, per head.

It is a JSON string in the model's attribute ``e0_provenance``. A plain string survives what
mace does to a model: pickling (``.model`` files), deepcopy (mace copies the model to save it) and
TorchScript compilation (``*_compiled.model``); mace's calculators never look at it.
"""

import json
from typing import Dict, Mapping, Optional

import torch

from .errors import E0InputError
from .schema import format_combination

ATTRIBUTE = "e0_provenance"
METHOD = "linear_system"
FORMAT = 1
_NEEDED = ("weighting", "rank", "n_elements", "present_elements", "determined_coefficients", "n_configs")


def from_report(content: Mapping[str, object], source: str = "the report") -> Dict[str, dict]:
    """Each head's provenance from an estimate's JSON report (``mace-e0 estimate --output`` or the
    training report): the one source of it, for fine-tunes and for ``mace-e0 apply``."""
    from . import __version__

    heads = content.get("heads") if isinstance(content, Mapping) else None
    if not isinstance(heads, Mapping) or not heads:
        raise E0InputError(f"{source}: not an E0 report (no \"heads\"); give the JSON that "
                           "mace-e0 estimate --output or a fine-tune's results folder has.")
    refits = content.get("refits", [])
    provenance = {}
    for name, entry in heads.items():
        missing = [key for key in _NEEDED if key not in entry]
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
    return provenance


def read_provenance(model: torch.nn.Module) -> Dict[str, dict]:
    """``{head: provenance}`` of the heads whose E0s the plugin set; empty if none."""
    text = getattr(model, ATTRIBUTE, None)
    if not text:
        return {}
    try:
        return dict(json.loads(text)["heads"])
    except (ValueError, KeyError, TypeError):
        return {}


def set_provenance(model: torch.nn.Module, heads: Mapping[str, Optional[dict]]) -> None:
    """Record (or, for None, forget) some heads' provenance; the other heads' is kept."""
    current = read_provenance(model)
    for name, provenance in heads.items():
        if provenance is None:
            current.pop(name, None)
        else:
            current[name] = provenance
    # A str, never a dict: TorchScript and pickling keep it as it is.
    setattr(model, ATTRIBUTE, json.dumps({"format": FORMAT, "heads": current}) if current else "")


def format_provenance(provenance: Optional[dict]) -> str:
    """The line ``mace-e0 show`` prints for a head."""
    if not provenance:
        return "E0 provenance: none (these E0s were not set by mace-e0-plugin)"
    combinations = [[(c, z) for c, z in combination] for combination in provenance["determined_combinations"]]
    determined = ("; ".join(format_combination(c) for c in combinations) if combinations
                  else "every element alone")
    prior = provenance["prior"]
    return (f"E0 provenance: {provenance['method']}, rank {provenance['rank']} of {provenance['n_elements']}, "
            f"prior {prior['source']} ({prior['kind']}), determined {determined}, "
            f"weighting {provenance['weighting']}, {provenance['n_configs']} configs, "
            f"{provenance['n_refits']} refits, mace-e0-plugin {provenance['plugin_version']}")
