"""Priors: where E0s come from along directions the training data do not determine.

A prior is a ``{Z: eV}`` mapping. It is read from
- ``foundation``: the E0s of the model being fine-tuned (its starting E0s);
- a JSON file ``{"1": -13.6, "8": -2041.8}`` (atomic numbers or chemical symbols as keys), the
  same format as ``mace_run_train --E0s=file.json``;
- any ASE-readable file (extxyz, ...) of isolated atoms: its single-atom frames, with the energy
  under the training energy key.
Elements the prior lacks fall back to the foundation's E0s.
"""

import json
import math
import numbers
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import E0InputError

FOUNDATION = "foundation"
ISOLATED_ATOMS = "isolated_atoms"  # computed at the new level: meaningful along the null space
E0S_FILE = "e0s_file"  # a JSON {Z: eV}, of unknown origin
PRIOR_KINDS = (FOUNDATION, ISOLATED_ATOMS, E0S_FILE)

_HOW = ("give 'foundation', a JSON file of {Z: eV}, or an extxyz of isolated atoms "
        "(config_type=IsolatedAtom) with their energies")


def check_prior_source(source: Optional[str], option: str) -> None:
    """Fail early, before any data are loaded, on a prior that cannot be read."""
    if source is None or source == FOUNDATION:
        return
    if not os.path.isfile(source):
        raise E0InputError(f"{option}={source}: no such file; {_HOW}.")


def read_prior_file(path: str, energy_key: Optional[str], option: str = "--E0s_prior") -> Dict[int, float]:
    """Read a prior file into ``{Z: eV}``, or fail with one clear error naming the file."""
    check_prior_source(path, option)
    if path.lower().endswith(".json"):
        return read_e0s_json(path, option)
    return _read_isolated_atoms(path, energy_key, option)


def read_e0s_json(path: str, option: str) -> Dict[int, float]:
    """A JSON file {Z or symbol: eV}, as mace_run_train --E0s=file.json reads it."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError) as error:
        raise E0InputError(f"{option}={path}: not valid JSON ({error}); {_HOW}.") from None
    if not isinstance(content, dict) or not content:
        raise E0InputError(f"{option}={path}: expected a non-empty JSON object {{Z: eV}}; {_HOW}.")
    return e0s_from_mapping(content, f"{option}={path}")


def e0s_from_mapping(content, where: str) -> Dict[int, float]:
    """{Z or symbol: eV} (a JSON object, or a dict from Python) as {Z: eV}; ``where`` names it in errors."""
    if not content:
        raise E0InputError(f"{where}: empty; give at least one element's E0 in eV.")
    prior = {}
    for key, value in content.items():
        z = atomic_number(key)
        if z is None:
            raise E0InputError(f"{where}: {key!r} is not an element: key the E0s by atomic number or chemical "
                               "symbol, like \"1\" or \"H\".")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise E0InputError(f"{where}: the E0 of {key!r} is {value!r}; every value must be "
                               "a finite number in eV.")
        prior[z] = float(value)
    return prior


def _read_isolated_atoms(path: str, energy_key: Optional[str], option: str) -> Dict[int, float]:
    import ase.io

    try:
        frames = ase.io.read(path, index=":")
    except Exception as error:  # ase raises many types for unreadable files
        raise E0InputError(f"{option}={path}: ASE cannot read it ({error}); {_HOW}.") from None
    return isolated_atoms_prior(frames, energy_key, f"{option}={path}")


def isolated_atoms_prior(frames, energy_key: Optional[str], where: str) -> Dict[int, float]:
    """{Z: eV} from the single-atom frames among ``frames``; ``where`` names them in errors."""
    prior: Dict[int, float] = {}
    for atoms in frames:
        if len(atoms) != 1:
            continue
        energy = isolated_atom_energy(atoms, energy_key)
        z = int(atoms.numbers[0])
        if energy is None or not math.isfinite(energy):
            raise E0InputError(f"{where}: the isolated {atoms.get_chemical_symbols()[0]} atom has "
                               f"no finite energy under key {energy_key!r}; set --energy_key to the key "
                               "that holds it.")
        if z in prior and abs(prior[z] - energy) > 1e-8:
            raise E0InputError(f"{where}: two different energies for the isolated "
                               f"{atoms.get_chemical_symbols()[0]} atom ({prior[z]} and {energy} eV); keep one.")
        prior[z] = energy
    if not prior:
        raise E0InputError(f"{where}: no single-atom frames in it; {_HOW}.")
    return prior


def isolated_atom_energy(atoms, energy_key: Optional[str]) -> Optional[float]:
    for key in (energy_key, "REF_energy", "energy"):
        if key and key in atoms.info:
            try:
                return float(atoms.info[key])
            except (TypeError, ValueError):
                return None
    if atoms.calc is not None:
        try:
            return float(atoms.get_potential_energy())
        except Exception:  # a calculator without stored energy
            return None
    return None


def atomic_number(key) -> Optional[int]:
    from ase.data import atomic_numbers

    text = str(key).strip()
    if text.lstrip("-").isdigit():
        z = int(text)
        return z if 0 < z < 119 else None
    return atomic_numbers.get(text)


def choose_prior(source: Optional[str], file_prior: Optional[Dict[int, float]],
                 isolated_atoms: Optional[Dict[int, float]],
                 kind: Optional[str] = None) -> Tuple[Optional[Dict[int, float]], Dict[str, str]]:
    """The prior a head uses, None for the model's own (starting) E0s, and what it is:
    ``{"kind": KIND, "source": label}``, KIND one of PRIOR_KINDS.

    An explicit prior wins (its ``kind`` given, or told from the file name); 'foundation' means
    the model's E0s; by default the data's config_type=IsolatedAtom frames are the prior if there
    are any, else the model's E0s.
    """
    if source not in (None, FOUNDATION):
        kind = kind or (E0S_FILE if source.lower().endswith(".json") else ISOLATED_ATOMS)
        return file_prior, {"kind": kind, "source": source}
    if source is None and isolated_atoms:
        return dict(isolated_atoms), {"kind": ISOLATED_ATOMS, "source": "the data's IsolatedAtom frames"}
    return None, {"kind": FOUNDATION, "source": "the foundation model's E0s"}


def prior_vector(atomic_numbers: Sequence[int], prior: Mapping[int, float],
                 fallback: Mapping[int, float]) -> Tuple[List[float], List[int]]:
    """The prior per element, and the elements that had to fall back."""
    values, fell_back = [], []
    for z in atomic_numbers:
        if z in prior:
            values.append(float(prior[z]))
        else:
            values.append(float(fallback[z]))
            fell_back.append(z)
    return values, fell_back
