"""The one pipeline: where a request is built from (model, data, options), and where outputs are
written. The training hook (``lifecycle``), ``mace-e0`` (``cli``) and the Python API (``api``) are
thin doors onto it, so the three give the same numbers and write the same files.

    model_from(model, device, dtype)        a path, a MACE module or a MACECalculator -> the module
    data_from(configs, model, head, key)    files or ase.Atoms -> graphs for that head, + IsolatedAtom energies
                                            (and reference forces, given forces_key)
    prior_from(prior, energy_key)           'foundation', a file, {Z or symbol: eV} or isolated Atoms
    build_request(model, head, data, ...)   -> HeadRequest (then ``estimate.estimate_e0s``)
    write_outputs(outputs, content, ...)    the JSON report, an {Z: eV} file, figures: whole or not at all
"""

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .datasets import LoadedData, graphs_from_atoms, load_data, read_model
from .errors import E0InputError
from .estimate import Estimate, HeadRequest
from .models import model_atomic_numbers, model_heads, read_e0s
from .priors import (E0S_FILE, FOUNDATION, ISOLATED_ATOMS, choose_prior, e0s_from_mapping, isolated_atoms_prior,
                     prior_vector, read_prior_file)

log = logging.getLogger("mace_e0_plugin")

PYTHON_E0S = "a dict of E0s"  # how a prior given as {Z or symbol: eV} is named in reports
PYTHON_ATOMS = "isolated ase.Atoms"  # ... and one given as a list of isolated atoms


# -- inputs ---------------------------------------------------------------------------------------
def default_device() -> str:
    """Where a model read from a file runs unless told otherwise."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_from(model, device: Union[str, torch.device, None] = None,
               dtype: Union[str, torch.dtype, None] = None) -> torch.nn.Module:
    """The MACE module behind ``model`` (a path, a module, or a MACECalculator such as
    ``mace_mp()`` returns), on ``device`` and in ``dtype`` when given; by default a module stays
    where it is, and a model read from a file goes to ``default_device()``. A module passed in is
    never changed in place (a moved copy is)."""
    owned = isinstance(model, (str, os.PathLike))  # read here: ours to move in place
    if owned:
        module = read_model(str(model))
        device = device if device is not None else default_device()
    elif isinstance(model, torch.nn.Module):
        module = model
    elif hasattr(model, "models") and isinstance(getattr(model, "models"), (list, tuple)):
        # mace.calculators.MACECalculator keeps its model(s) in .models
        if len(model.models) != 1:
            raise E0InputError(f"model: a MACECalculator with {len(model.models)} models (a committee); "
                               "pass one of them, calculator.models[i].")
        module = model.models[0]
    else:
        raise E0InputError(f"model: {type(model).__name__} is not a MACE model; give a .model path, a MACE "
                           "torch.nn.Module, or a MACECalculator (mace.calculators.mace_mp() and the like).")
    if not hasattr(module, "atomic_energies_fn") or not hasattr(module, "atomic_numbers"):
        raise E0InputError(f"model: {type(module).__name__} is not a MACE model with E0s.")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if device is None and dtype is None:
        return module
    current = next(module.parameters())
    if (device is None or current.device == torch.device(device)) and (dtype is None or current.dtype == dtype):
        return module
    import copy

    return (module if owned else copy.deepcopy(module)).to(device=device if device is not None else current.device,
                                    dtype=dtype if dtype is not None else current.dtype)


def data_from(configs, model: torch.nn.Module, head: str, energy_key: Optional[str],
              forces_key: Optional[str] = None) -> LoadedData:
    """``configs`` (a path, a list of paths, or a list of ase.Atoms) as graphs for ``model``'s
    ``head``. ``energy_key=None`` takes ``atoms.get_potential_energy()`` (extxyz ``energy=``).
    ``forces_key``: the graphs carry those reference forces too (``mace-e0 diagnose``)."""
    if isinstance(configs, (str, os.PathLike)):
        configs = [configs]
    configs = list(configs)
    if not configs:
        raise E0InputError("configs: empty; give ase.Atoms or data files.")
    if all(isinstance(c, (str, os.PathLike)) for c in configs):
        return load_data([str(c) for c in configs], model, head, energy_key, forces_key)
    from ase import Atoms

    if all(isinstance(c, Atoms) for c in configs):
        return graphs_from_atoms(configs, model, head, energy_key, "the configs passed in", forces_key)
    raise E0InputError("configs: a mix of types; give a list of ase.Atoms, or a list of file paths.")


PriorSpec = Union[None, str, os.PathLike, Mapping, Sequence]


@dataclass
class Prior:
    """A prior resolved from any door's form: ``source`` is what ``choose_prior`` reads."""

    source: Optional[str] = None  # None (automatic), 'foundation', a file path or a label
    e0s: Optional[Dict[int, float]] = None  # read from that file, dict or list of atoms
    kind: Optional[str] = None  # priors.PRIOR_KINDS; None: decided from the source


def prior_from(prior: PriorSpec, energy_key: Optional[str], option: str = "prior") -> Prior:
    """What ``--prior`` and ``--E0s_prior`` take (None, 'foundation', a JSON or extxyz file), plus,
    from Python, ``{Z or symbol: eV}`` or a list of isolated-atom ase.Atoms."""
    if prior is None or (isinstance(prior, str) and prior == FOUNDATION):
        return Prior(prior)
    if isinstance(prior, (str, os.PathLike)):
        source = str(prior)
        return Prior(source, read_prior_file(source, energy_key, option))
    if isinstance(prior, Mapping):
        return Prior(PYTHON_E0S, e0s_from_mapping(prior, option), E0S_FILE)
    from ase import Atoms

    if isinstance(prior, Sequence) and prior and all(isinstance(a, Atoms) for a in prior):
        return Prior(PYTHON_ATOMS, isolated_atoms_prior(prior, energy_key, option), ISOLATED_ATOMS)
    raise E0InputError(f"{option}: {type(prior).__name__}; give 'foundation', a JSON or extxyz file, "
                       "a dict {Z or symbol: eV}, or a list of isolated-atom ase.Atoms.")


# -- the request ----------------------------------------------------------------------------------
def build_request(model: torch.nn.Module, head: str, data: LoadedData, prior: Prior, *,
                  fallback: Optional[Mapping[int, float]] = None, weighting: str = "per_atom",
                  max_configs: Optional[int] = None, se_tolerance: Optional[float] = None,
                  seed: int = 0) -> Tuple[HeadRequest, Dict[str, str], List[int]]:
    """One head's request, the prior's description, and the elements the prior lacks (they keep
    ``fallback``: the model's own E0s unless the door says otherwise, as training does with the
    foundation's)."""
    heads = model_heads(model)
    if head not in heads:
        raise E0InputError(f"head '{head}': the model has only {', '.join(heads)}.")
    if weighting not in ("per_atom", "total"):
        raise E0InputError(f"weighting={weighting!r}; use 'per_atom' or 'total'.")
    index = heads.index(head)
    elements = model_atomic_numbers(model)
    if fallback is None:
        fallback = dict(zip(elements, read_e0s(model, index)))
    chosen, info = choose_prior(prior.source, prior.e0s, data.isolated_atoms, kind=prior.kind)
    values, fell_back = prior_vector(elements, chosen or fallback, fallback)
    request = HeadRequest(name=head, index=index, dataset=data.dataset, prior_e0s=values, weighting=weighting,
                          source=data.source, max_configs=max_configs, se_tolerance=se_tolerance, seed=seed,
                          prior=info)
    return request, info, (fell_back if chosen else [])


# -- outputs --------------------------------------------------------------------------------------
@dataclass
class Outputs:
    """Where a door wants its results; None: not written."""

    report: Optional[str] = None  # the JSON report (schema in the README), or DIAG.json
    e0s_json: Optional[str] = None  # one head's {Z: eV}, for mace_run_train --E0s=FILE
    figure: Optional[str] = None  # one figure per head: FIGURE, or FIGURE's stem + _HEAD.png for several
    figure_failure_is_error: bool = True  # a fine-tune warns and goes on instead

    def paths(self) -> List[str]:
        return [p for p in (self.report, self.e0s_json, self.figure) if p]


def write_outputs(outputs: Outputs, content: Mapping[str, object], estimate: Optional[Estimate] = None,
                  draw: Optional[Callable[[str], str]] = None) -> Dict[str, str]:
    """Write what ``outputs`` asks for, each file whole or not at all; returns {what: path}.
    ``content`` is the JSON (``Estimate.to_dict()``, with refits where there were any, or a
    diagnosis); ``estimate`` gives the E0s file and one figure per head, unless ``draw(path)``
    draws the figure instead."""
    from .files import write_json
    from .report import e0s_mapping

    written: Dict[str, str] = {}
    if outputs.report:
        written["report"] = write_json(outputs.report, dict(content))
    if outputs.e0s_json and estimate is not None:
        if len(estimate.solutions) != 1:
            raise E0InputError(f"{outputs.e0s_json}: an E0s file holds one head, and there are "
                               f"{len(estimate.solutions)}; write the report instead.")
        (solution,) = estimate.solutions.values()
        written["e0s_json"] = write_json(outputs.e0s_json, e0s_mapping(solution))
    figures: Dict[str, Callable[[], str]] = {}
    if outputs.figure and draw is not None:
        figures["figure"] = functools.partial(draw, outputs.figure)
    elif outputs.figure and estimate is not None:
        from .plot import plot_solution

        for head, path in figure_paths(outputs.figure, list(estimate.solutions)).items():
            figures[f"figure {head}"] = functools.partial(plot_solution, path, head, estimate.solutions[head],
                                                          estimate.samples.get(head))
    for what, make in figures.items():
        try:
            written[what] = make()
        except Exception as error:  # pylint: disable=broad-except
            if outputs.figure_failure_is_error:
                raise
            log.warning(f"could not draw the {what} ({error})")
    return written


def figure_paths(figure: str, heads: Sequence[str]) -> Dict[str, str]:
    """One figure per head: ``figure`` itself for one head, ``stem_HEAD.png`` for several."""
    if len(heads) == 1:
        return {heads[0]: figure}
    stem = str(Path(figure).with_suffix(""))
    return {head: f"{stem}_{head}.png" for head in heads}
