"""What ``reestimate_e0s`` returns: one head's E0s, with the log's table, the report's entry, the
figure, and a copy of a model that carries them (I/O only, no math)."""

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import matplotlib
import torch

from ..errors import E0InputError
from ..glue import Estimate, model_atomic_numbers, model_from, model_heads, set_provenance, write_e0s
from ..io import (build_figure, draw_corrections, estimate_report, format_combination, format_estimate,
                  provenance_from_report, save_figure)
from ..math import E0Solution


@dataclass
class E0Result:
    """One head's re-estimated E0s. Per-element dicts are keyed by atomic number (int) and hold every
    element of the model: elements absent from the data keep their prior."""

    head: str
    estimate: Estimate  # the pipeline's own result (every head it solved, timing, per-config sample)
    model: object = field(default=None, repr=False)  # what the estimate ran on, for ``apply()``

    @property
    def solution(self) -> E0Solution:
        return self.estimate.heads[self.head].solution

    def _by_element(self, values) -> Dict[int, float]:
        return {int(z): float(v) for z, v in zip(self.solution.atomic_numbers, values)}

    @property
    def e0s(self) -> Dict[int, float]:
        """The new E0s, eV."""
        return self._by_element(self.solution.e0s)

    @property
    def corrections(self) -> Dict[int, float]:
        """New minus the model's starting E0s, eV."""
        return self._by_element(self.solution.corrections)

    @property
    def standard_errors(self) -> Dict[int, float]:
        """eV; nan where the data alone do not determine that element's E0 (the prior sets part of it)."""
        return self._by_element(self.solution.standard_errors)

    @property
    def prior_e0s(self) -> Dict[int, float]:
        return self._by_element(self.solution.prior_e0s)

    @property
    def rank(self) -> int:
        return self.solution.rank

    @property
    def determined_combinations(self) -> List[str]:
        """The element combinations the data determine, e.g. ``['2 H + O']``; empty at full rank."""
        return [format_combination(c) for c in self.solution.determined_combinations]

    @property
    def determined_values(self) -> Dict[str, float]:
        """Each determined combination's value under the new E0s, eV: what the data fixed."""
        e0s = self.e0s
        return {format_combination(c): sum(coefficient * e0s[z] for coefficient, z in c)
                for c in self.solution.determined_combinations}

    def table(self) -> str:
        """The table ``mace-e0 estimate`` prints and a fine-tune logs."""
        return format_estimate(self.estimate)

    def to_dict(self) -> Dict[str, object]:
        """This head's entry of the JSON report (README: the report's schema)."""
        return estimate_report(self.estimate)["heads"][self.head]

    def plot(self, path: Optional[str] = None, ax=None):
        """The figure of ``mace-e0 estimate --plot``, as a matplotlib Figure (it shows inline in a
        notebook); with ``ax``, only its corrections panel, drawn into ``ax``, and ``ax.figure`` is
        returned. With ``path``, the figure is also written there as PNG."""
        _show_inline_in_notebooks()
        if ax is not None:
            draw_corrections(ax, self.solution)
            figure = ax.figure
        else:
            figure = build_figure(self.head, self.solution, self.estimate.heads[self.head].sample)
        if path is not None:
            save_figure(str(path), figure)
        return figure

    def apply(self, model=None) -> torch.nn.Module:
        """A deep copy of ``model`` (a path, a MACE module or a MACECalculator; default: the model
        the estimate ran on) with these E0s in this head's row and their provenance. The model
        given is left as it was. Use the copy in ASE with ``MACECalculator(models=copy, ...)``."""
        source = self.model if model is None else model
        new = copy.deepcopy(model_from(source))  # a module read from a path is ours already; cheap to copy
        heads = model_heads(new)
        if self.head not in heads:
            raise E0InputError(f"model: it has no head '{self.head}' (its heads are {', '.join(heads)}); "
                               "apply the E0s to the model they were estimated for.")
        if model_atomic_numbers(new) != self.solution.atomic_numbers:
            raise E0InputError("model: its elements differ from those the E0s were estimated for; "
                               "apply them to the model they were estimated for.")
        write_e0s(new, heads.index(self.head), self.solution.e0s)
        report = {"heads": {self.head: self.to_dict()}}
        set_provenance(new, {self.head: provenance_from_report(report, "the estimate")[self.head]})
        return new

    def __repr__(self) -> str:
        solution = self.solution
        return (f"E0Result(head={self.head!r}, {solution.n_configs} configs, rank {solution.rank} of "
                f"{solution.n_elements}, RMSE {solution.rmse_per_atom_before_meV:.3f} -> "
                f"{solution.rmse_per_atom_after_meV:.3f} meV/atom)")

    def __str__(self) -> str:
        return self.table()


def _show_inline_in_notebooks() -> None:
    """A bare Figure shows inline once matplotlib-inline has hooked its display into IPython, which
    it does when its backend module is imported: pyplot does that on first use, and so do we here,
    where the caller's backend is the inline one (Jupyter's default). Nothing else is chosen."""
    backend = dict.__getitem__(matplotlib.rcParams, "backend")  # as set: reading it never resolves it
    if backend in INLINE_BACKENDS:
        try:  # imported here, only then: importing it hooks matplotlib into IPython
            import matplotlib_inline.backend_inline  # noqa: F401  pylint: disable=import-outside-toplevel
        except ImportError:
            pass


INLINE_BACKENDS = ("inline", "module://matplotlib_inline.backend_inline")
