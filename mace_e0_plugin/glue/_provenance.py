"""E0 provenance: a record, kept in the model, of how the plugin set each head's E0s (MACE glue).

It is a plain string attribute of the model, JSON inside, so it survives pickling (``torch.save``
of the whole module, as mace saves models), deepcopy (mace copies the model to save it) and
TorchScript compilation (``*_compiled.model``); mace's calculators never look at it. Its content
is built from the estimate's report (``io.provenance_from_report``).
"""

import json
from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional

import torch

ATTRIBUTE = "e0_provenance"
METHOD = "linear_system"
FORMAT = 1

# What a prior is, as reports and provenance record it.
FOUNDATION = "foundation"  # the E0s of the model being fine-tuned (its starting E0s)
ISOLATED_ATOMS = "isolated_atoms"  # computed at the new level: meaningful along the null space
E0S_FILE = "e0s_file"  # a JSON {Z: eV}, of unknown origin


@dataclass(frozen=True)
class PriorRecord:
    """The prior a head used, as the report and the provenance record it (not its values)."""

    kind: str  # FOUNDATION, ISOLATED_ATOMS or E0S_FILE
    source: str  # what it was read from, for people: a file, or "the foundation model's E0s"

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)


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
