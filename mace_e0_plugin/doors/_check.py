"""``mace-e0 check`` and ``check_e0s``: which configs a model's E0s are trustworthy for.

The data a model's E0s were fitted on determine them only along some element combinations (its
provenance records them). Any composition splits into a part inside their span, whose E0 energy
the data fixed, and a part outside, whose E0 energy is the prior's: a config with an outside part
is predicted only as well as the prior is right (isolated atoms at the new level, or merely the
foundation's E0s).
"""

import os
from typing import Dict, List, Optional, Sequence

import torch
from ase.data import chemical_symbols

from ..errors import E0InputError
from ..glue import ISOLATED_ATOMS, model_atomic_numbers, read_compositions, read_provenance
from ..io import format_combination
from ..math import determined_span, split_compositions
from ..services import resolve_model

OUTSIDE_TOLERANCE = 1e-6  # atoms: below this an outside part is rounding
N_EXAMPLES = 5


def check_compositions(provenance: dict, atomic_numbers: Sequence[int], counts: Sequence[Sequence[int]],
                       labels: Sequence[str]) -> Dict[str, object]:
    """One head's check: how many configs have an outside part, with the first few as examples."""
    span = determined_span(atomic_numbers, provenance["present_elements"], provenance["determined_combinations"])
    matrix = torch.tensor([list(c) for c in counts], dtype=torch.float64).reshape(len(counts), len(atomic_numbers))
    _, outside = split_compositions(matrix, span)
    is_outside = outside.abs().amax(dim=1) > OUTSIDE_TOLERANCE if len(counts) else torch.zeros(0, dtype=torch.bool)
    examples: List[Dict[str, object]] = []
    for index in is_outside.nonzero().flatten().tolist()[:N_EXAMPLES]:
        examples.append({
            "config": labels[index],
            "composition": {chemical_symbols[z]: int(n) for z, n in zip(atomic_numbers, counts[index]) if n},
            "outside_atoms": {chemical_symbols[z]: round(float(v), 6) for z, v in
                              zip(atomic_numbers, outside[index].tolist()) if abs(v) > OUTSIDE_TOLERANCE},
        })
    combinations = [[(c, z) for c, z in combination] for combination in provenance["determined_combinations"]]
    return {
        "n_configs": len(counts),
        "n_outside": int(is_outside.sum().item()),
        "examples": examples,
        "determined_combinations": [format_combination(c) for c in combinations],
        "present_elements": list(provenance["present_elements"]),
        "prior": dict(provenance["prior"]),
        "prior_is_isolated_atoms": provenance["prior"].get("kind") == ISOLATED_ATOMS,
    }


def check_e0s(model, configs: Sequence[str], head: Optional[str] = None,
              model_name: str = "MODEL") -> Dict[str, object]:
    """``{"heads": {head: check}}`` of data files (``configs``, as the other doors name them)
    against ``model``'s E0 provenance (a path, a MACE module or a MACECalculator): the Python API of
    ``mace-e0 check``. Raises E0InputError when the head has no provenance."""
    model, name, _ = resolve_model(model, head, device="cpu" if isinstance(model, (str, os.PathLike)) else None)
    provenance = read_provenance(model).get(name)
    if provenance is None:
        raise E0InputError(f"{model_name}: no E0 provenance for head '{name}' (its E0s were not set by "
                           "mace-e0-plugin 0.1+ with linear_system or apply REPORT.json); nothing to check against.")
    counts, labels = read_compositions(list(configs), model, name)
    return {"heads": {name: check_compositions(provenance, model_atomic_numbers(model), counts, labels)}}
