"""Where every door's results are written, in one place: the JSON report (or DIAG.json, or a
check), an ``{Z: eV}`` file, figures and model files, each whole or not at all (I/O)."""

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from ..errors import E0InputError, as_option
from ..glue import Estimate
from ._estimate_figure import plot_solution
from ._files import save_torch, write_json
from ._report import e0s_mapping

log = logging.getLogger("mace_e0_plugin")


@dataclass
class Outputs:
    """Where a door wants its results; None: not written."""

    report: Optional[str] = None  # the JSON report (schema in docs/), DIAG.json, or a check's result
    e0s_json: Optional[str] = None  # one head's {Z: eV}, for mace_run_train --E0s=FILE
    figure: Optional[str] = None  # one figure per head: FIGURE, or FIGURE's stem + _HEAD.png for several
    model: Optional[str] = None  # a model file (mace-e0 apply)
    figure_failure_is_error: bool = True  # a fine-tune warns and goes on instead

    def paths(self) -> List[str]:
        return [p for p in (self.report, self.e0s_json, self.figure, self.model) if p]

    def refuse_overwrite(self, force: bool, inputs: Optional[Mapping[str, str]] = None) -> None:
        """Before any work: an existing output is kept unless the user said ``force``. ``inputs``,
        {name: path} (e.g. {"MODEL": ...}), say which input an output would write over."""
        for path in self.paths():
            if os.path.exists(path) and not force:
                same = [name for name, source in (inputs or {}).items()
                        if os.path.exists(source) and os.path.samefile(path, source)]
                what = f"is {same[0]} itself" if same else "exists"
                raise E0InputError("{path} {what}; pass {force} to write over it.", path=path, what=what,
                                   force=as_option())


def write_outputs(outputs: Outputs, content: Optional[Mapping[str, object]] = None,
                  estimate: Optional[Estimate] = None, draw: Optional[Callable[[str], str]] = None,
                  model: object = None) -> Dict[str, str]:
    """Write what ``outputs`` asks for, each file whole or not at all; returns {what: path}.
    ``content`` is the JSON (an estimate's report, with refits where there were any, a diagnosis
    or a check); ``estimate`` gives the E0s file and one figure per head, unless ``draw(path)``
    draws the figure instead; ``model`` is saved to ``outputs.model``."""
    written: Dict[str, str] = {}
    if outputs.report and content is not None:
        written["report"] = write_json(outputs.report, dict(content))
    if outputs.e0s_json and estimate is not None:
        if len(estimate.heads) != 1:
            raise E0InputError(f"{outputs.e0s_json}: an E0s file holds one head, and there are "
                               f"{len(estimate.heads)}; write the report instead.")
        (head,) = estimate.heads.values()
        written["e0s_json"] = write_json(outputs.e0s_json, e0s_mapping(head.solution))
    if outputs.model and model is not None:
        written["model"] = save_torch(outputs.model, model)
    figures: Dict[str, Callable[[], str]] = {}
    if outputs.figure and draw is not None:
        figures["figure"] = functools.partial(draw, outputs.figure)
    elif outputs.figure and estimate is not None:
        for head, path in figure_paths(outputs.figure, list(estimate.heads)).items():
            figures[f"figure {head}"] = functools.partial(plot_solution, path, head, estimate.heads[head].solution,
                                                          estimate.heads[head].sample)
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
