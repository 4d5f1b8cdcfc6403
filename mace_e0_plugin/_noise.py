"""Third-party notices that say nothing to a ``mace-e0`` user, hidden unless ``--verbose`` (standard
library only: the command reads this before it imports mace)."""

import contextlib
import warnings

NOISY_WARNINGS = ("Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "The TorchScript type system")


@contextlib.contextmanager
def hidden_warnings(verbose: bool):
    """A block in which NOISY_WARNINGS are not shown, unless ``verbose``; the filters are restored after."""
    with warnings.catch_warnings():
        if not verbose:
            for message in NOISY_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
        yield
