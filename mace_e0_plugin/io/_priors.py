"""Priors: where E0s come from along directions the training data do not determine (I/O).

A prior is a ``{Z: eV}`` mapping. It is read from
- ``foundation``: the E0s of the model being fine-tuned (its starting E0s);
- a JSON file ``{"1": -13.6, "8": -2041.8}`` (atomic numbers or chemical symbols as keys), the
  same format as ``mace_run_train --E0s=file.json``;
- any ASE-readable file (extxyz, ...) of isolated atoms: its single-atom frames, with the energy
  under the training energy key;
- from Python, a dict ``{Z or symbol: eV}`` or a list of isolated-atom ase.Atoms.
Elements the prior lacks fall back to the foundation's E0s.

Errors name the option the prior came in (``prior``; ``e0s``, ``mace-e0 apply``'s E0S file, read
the same way) as an option field, which each door spells its own way (``errors``).
"""

import json
import math
import numbers
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import ase.io
from ase import Atoms
from ase.data import atomic_numbers

from ..errors import NAME_ONLY, E0InputError, as_option
from ..glue import E0S_FILE, FOUNDATION, ISOLATED_ATOMS, PriorRecord, frame_energy

PYTHON_E0S = "a dict of E0s"  # how a prior given as {Z or symbol: eV} is named in reports
PYTHON_ATOMS = "isolated ase.Atoms"  # ... and one given as a list of isolated atoms

_HOW = ("give 'foundation', a JSON file of {Z: eV}, or an extxyz of isolated atoms "
        "(config_type=IsolatedAtom) with their energies")


def check_prior_source(source: Optional[str], option: str = "prior") -> None:
    """Fail early, before any data are loaded, on a prior that cannot be read."""
    if source is None or source == FOUNDATION:
        return
    if not os.path.isfile(source):
        raise E0InputError("{prior}: no such file; {how}.", prior=as_option(source, option), how=_HOW)


def read_prior_file(path: str, energy_key: Optional[str], option: str = "prior") -> Dict[int, float]:
    """Read a prior file into ``{Z: eV}``, or fail with one clear error naming the file."""
    check_prior_source(path, option)
    if path.lower().endswith(".json"):
        return read_e0s_json(path, option)
    return _read_isolated_atoms(path, energy_key, option)


def read_e0s_json(path: str, option: str, value: object = None) -> Dict[int, float]:
    """A JSON file {Z or symbol: eV}, as mace_run_train --E0s=file.json reads it."""
    value = path if value is None else value
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError) as error:
        raise E0InputError("{prior}: not valid JSON ({error}); {how}.", prior=as_option(value, option), error=error,
                           how=_HOW) from None
    if not isinstance(content, dict) or not content:
        raise E0InputError("{prior}: expected a non-empty JSON object {{Z: eV}}; {how}.",
                           prior=as_option(value, option), how=_HOW)
    return e0s_from_mapping(content, option, value)


def e0s_from_mapping(content, option: str, value: object = NAME_ONLY) -> Dict[int, float]:
    """{Z or symbol: eV} (a JSON object, or a dict from Python) as {Z: eV}."""
    if not content:
        raise E0InputError("{prior}: empty; give at least one element's E0 in eV.", prior=as_option(value, option))
    prior = {}
    for key, energy in content.items():
        z = atomic_number(key)
        if z is None:
            raise E0InputError("{prior}: {key!r} is not an element: key the E0s by atomic number or chemical "
                               "symbol, like \"1\" or \"H\".", prior=as_option(value, option), key=key)
        if isinstance(energy, bool) or not isinstance(energy, numbers.Real) or not math.isfinite(energy):
            raise E0InputError("{prior}: the E0 of {key!r} is {energy!r}; every value must be a finite number "
                               "in eV.", prior=as_option(value, option), key=key, energy=energy)
        prior[z] = float(energy)
    return prior


def _read_isolated_atoms(path: str, energy_key: Optional[str], option: str) -> Dict[int, float]:
    try:
        frames = ase.io.read(path, index=":")
    except Exception as error:  # ase raises many types for unreadable files
        raise E0InputError("{prior}: ASE cannot read it ({error}); {how}.", prior=as_option(path, option),
                           error=error, how=_HOW) from None
    return isolated_atoms_prior(frames, energy_key, option, path)


def isolated_atoms_prior(frames, energy_key: Optional[str], option: str,
                         value: object = NAME_ONLY) -> Dict[int, float]:
    """{Z: eV} from the single-atom frames among ``frames``."""
    prior: Dict[int, float] = {}
    for atoms in frames:
        if len(atoms) != 1:
            continue
        energy = isolated_atom_energy(atoms, energy_key)
        z = int(atoms.numbers[0])
        symbol = atoms.get_chemical_symbols()[0]
        if energy is None or not math.isfinite(energy):
            raise E0InputError("{prior}: the isolated {symbol} atom has no finite energy under key {key!r} (its "
                               "info keys: {info_keys}); the prior must be at the training data's level of theory, "
                               "under the same {energy_key}.", prior=as_option(value, option), symbol=symbol,
                               key=energy_key, info_keys=sorted(atoms.info), energy_key=as_option())
        if z in prior and abs(prior[z] - energy) > DUPLICATE_TOLERANCE:
            raise E0InputError("{prior}: two different energies for the isolated {symbol} atom ({first} and "
                               "{second} eV); keep one.", prior=as_option(value, option), symbol=symbol,
                               first=prior[z], second=energy)
        prior[z] = energy
    if not prior:
        raise E0InputError("{prior}: no single-atom frames in it; {how}.", prior=as_option(value, option), how=_HOW)
    return prior


DUPLICATE_TOLERANCE = 1e-8  # eV: two frames of the same isolated atom may differ by rounding only


def isolated_atom_energy(atoms, energy_key: Optional[str]) -> Optional[float]:
    """The isolated atom's energy under ``energy_key``, the key the training data use, and no other:
    another key may hold another level of theory's energies."""
    energy = frame_energy(atoms, energy_key)
    try:
        return None if energy is None else float(energy)
    except (TypeError, ValueError):
        return None


def atomic_number(key) -> Optional[int]:
    text = str(key).strip()
    if text.lstrip("-").isdigit():
        z = int(text)
        return z if 0 < z < 119 else None
    return atomic_numbers.get(text)


# -- a prior in any door's form -------------------------------------------------------------------
PriorSpec = Union[None, str, os.PathLike, Mapping, Sequence]


@dataclass(frozen=True)
class ResolvedPrior:
    """A prior as resolved from the form a user gives (``PriorSpec``: the ``prior`` option or keyword),
    its values read. ``choose_prior`` turns it, with the data's isolated atoms, into the values a head
    uses and their ``PriorRecord`` (what the report and the provenance say)."""

    source: Optional[str] = None  # None (automatic), 'foundation', a file path or a label
    e0s: Optional[Dict[int, float]] = None  # read from that file, dict or list of atoms
    kind: Optional[str] = None  # FOUNDATION, ISOLATED_ATOMS or E0S_FILE (glue); None: from the source


def prior_from(prior: PriorSpec, energy_key: Optional[str], option: str = "prior") -> ResolvedPrior:
    """What ``--prior`` and ``--E0s_prior`` take (None, 'foundation', a JSON or extxyz file), plus,
    from Python, ``{Z or symbol: eV}`` or a list of isolated-atom ase.Atoms."""
    if prior is None or (isinstance(prior, str) and prior == FOUNDATION):
        return ResolvedPrior(prior)
    if isinstance(prior, (str, os.PathLike)):
        source = str(prior)
        return ResolvedPrior(source, read_prior_file(source, energy_key, option))
    if isinstance(prior, Mapping):
        return ResolvedPrior(PYTHON_E0S, e0s_from_mapping(prior, option), E0S_FILE)
    if isinstance(prior, Sequence) and prior and all(isinstance(a, Atoms) for a in prior):
        return ResolvedPrior(PYTHON_ATOMS, isolated_atoms_prior(prior, energy_key, option), ISOLATED_ATOMS)
    raise E0InputError("{prior}: {type}; give 'foundation', a JSON or extxyz file, a dict {{Z or symbol: eV}}, or "
                       "a list of isolated-atom ase.Atoms.", prior=as_option(name=option), type=type(prior).__name__)


def choose_prior(resolved_prior: ResolvedPrior, isolated_atoms: Optional[Dict[int, float]]
                 ) -> Tuple[Optional[Dict[int, float]], PriorRecord]:
    """The prior's values a head uses ({Z: eV}; None for the model's own, starting, E0s), and its record.

    An explicit prior wins (its ``kind`` given, or told from the file name); 'foundation' means
    the model's E0s; by default (``source`` None) the data's config_type=IsolatedAtom frames
    (``isolated_atoms``) are the prior if there are any, else the model's E0s.
    """
    source = resolved_prior.source
    if source not in (None, FOUNDATION):
        kind = resolved_prior.kind or (E0S_FILE if source.lower().endswith(".json") else ISOLATED_ATOMS)
        return resolved_prior.e0s, PriorRecord(kind, source)
    if source is None and isolated_atoms:
        return dict(isolated_atoms), PriorRecord(ISOLATED_ATOMS, "the data's IsolatedAtom frames")
    return None, PriorRecord(FOUNDATION, "the foundation model's E0s")


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
