"""The settings of one training run that re-estimates E0s, typed: built once from mace's options
(``_mace_args.settings_from_args``) or by hand around any training loop. Nothing below this object
reads mace's argparse ``Namespace``.

>>> settings = RunSettings(heads={"Default": HeadSettings(energy_key="REF_energy", train_files=("train.xyz",))},
...                        results_dir="results", name="ft")
"""

import os
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional, Tuple

from ..glue import DEFAULT_MODE, MODES
from ..io import ResolvedPrior
from ..math import DEFAULT_WEIGHTING
from ..services import DEFAULT_BATCH_SIZE, PASS_DTYPE


@dataclass(frozen=True)
class HeadSettings:
    """What one head asks for (mace: ``--E0s=linear_system`` and ``--E0s_*``, per head or for all)."""

    name: str = "Default"
    energy_key: Optional[str] = None  # of the reference energy: named in messages and refit-later commands
    train_files: Tuple[str, ...] = ()  # where broken labels are named, and what a later refit reads
    # The prior as resolved (io.prior_from); default automatic: the data's IsolatedAtom energies if any, else the foundation's.
    resolved_prior: ResolvedPrior = field(default_factory=ResolvedPrior)
    weighting: str = DEFAULT_WEIGHTING
    refit: FrozenSet[str] = MODES[DEFAULT_MODE]  # when to re-solve: EPOCH, FINAL, both, or neither
    exclude_suspicious: bool = False  # fit without broken-looking labels

    @property
    def source(self) -> str:
        """The head's data, as messages name it."""
        files = ", ".join(self.train_files) or f"the training data of head '{self.name}'"
        return files + (f" (energy key '{self.energy_key}')" if self.energy_key else "")


@dataclass(frozen=True)
class RunSettings:
    """One run's settings: its heads, where the foundation and the outputs are, and how passes run."""

    heads: Dict[str, HeadSettings] = field(default_factory=lambda: {"Default": HeadSettings()})
    # The foundation: a file or a name mace knows; None: the model before the first step is it.
    foundation: Optional[str] = None
    foundation_head: Optional[str] = None  # of a multihead foundation (mace's --foundation_head)
    foundation_dtype: str = "float64"  # a named foundation is loaded in it (mace's --default_dtype)
    pass_dtype: str = PASS_DTYPE  # the network's dtype in our passes (the loss's is the training's)
    batch_size: int = DEFAULT_BATCH_SIZE  # of our passes (mace: --valid_batch_size)
    num_workers: int = 0
    pin_memory: bool = False
    results_dir: str = "results"  # the report, {results_dir}/{name}_E0s_linear_system.json
    name: str = "run"
    model_dir: str = "."  # where the trained model is saved, as {model_dir}/{name}.model
    restart_latest: bool = False  # a restart keeps the E0s its checkpoint carries
    plot: bool = False  # the report's figure beside it

    def saved_model_path(self, stage_two: bool = False) -> str:
        """Where mace saves the trained model: ``{model_dir}/{name}.model`` (``_stagetwo`` with SWA)."""
        return os.path.join(self.model_dir, f"{self.name}{'_stagetwo' if stage_two else ''}.model")
