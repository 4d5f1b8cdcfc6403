"""What the plugin does when its own work fails after the first training step: one ERROR line in
mace's log, and a record in the report and the saved model's provenance. Nothing is raised: mace
trains, saves and evaluates as it would without the plugin, and the run's exit status is mace's.

A failed refit (epoch or final) ends the refits of the run: the E0s stay those of the last
estimate or refit that succeeded, and the checkpoint being refitted is left as it was (files are
written whole or not at all). A failed output (the report, a figure, the provenance) is logged;
the refits go on.
"""

import os
import shlex
from dataclasses import dataclass, field
from typing import Dict, List

from ..math import DEFAULT_WEIGHTING
from ._settings import HeadSettings, RunSettings

LOG_PREFIX = "mace-e0-plugin: "
REFIT_LATER_SUFFIX = "_E0s_refit_later.json"


@dataclass
class Failure:
    """One failure of ours after the first step: ``step`` failed because of ``error``; ``kept`` says
    what stayed as it was, and ``commands`` refit the saved model(s) later (refit failures only)."""

    step: str  # e.g. "the final E0 refit of checkpoint ft_run-1_epoch-9.pt (head 'Default')"
    error: str  # "OutOfMemoryError: CUDA out of memory ..."
    kept: str
    heads: List[str] = field(default_factory=list)  # heads whose E0s were not refitted
    commands: List[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        """The one ERROR line in mace's log."""
        text = f"{LOG_PREFIX}{self.step} failed: {self.error}; kept: {self.kept}"
        if self.commands:
            text += f". To refit the saved model later: {' && '.join(self.commands)}"
        return text

    def to_dict(self) -> Dict[str, object]:
        return {"step": self.step, "error": self.error, "kept": self.kept, "heads": list(self.heads),
                "refit_later": list(self.commands)}


def describe(error: BaseException) -> str:
    """``Type: message`` on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def refit_later_commands(settings: RunSettings, head: HeadSettings, model_path: str, multihead: bool) -> List[str]:
    """``mace-e0 estimate`` on the head's training data, then ``mace-e0 apply``: the final refit,
    made on the saved model after the run."""
    stem = os.path.splitext(model_path)[0]
    report = os.path.join(settings.results_dir, f"{settings.name}_{head.name}{REFIT_LATER_SUFFIX}")
    estimate = ["mace-e0", "estimate", model_path, *head.train_files]
    if head.energy_key:
        estimate += ["--energy-key", head.energy_key]
    if multihead:
        estimate += ["--head", head.name]
    if head.resolved_prior.source is not None:
        estimate += ["--prior", str(head.resolved_prior.source)]
    if head.weighting != DEFAULT_WEIGHTING:
        estimate += ["--weighting", head.weighting]
    if head.exclude_suspicious:
        estimate.append("--exclude-suspicious")
    estimate += ["--output", report]
    apply = ["mace-e0", "apply", model_path, report, "--output", f"{stem}_refit.model"]
    if multihead:
        apply += ["--head", head.name]
    return [shlex.join(estimate), shlex.join(apply)]
