"""Third-party notices that say nothing to a ``mace-e0`` user, hidden unless ``--verbose`` (standard
library only: the command reads this before it imports mace)."""

NOISY_WARNINGS = ("Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "The TorchScript type system")
