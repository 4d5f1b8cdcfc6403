"""The ``MACE_E0_PLUGIN`` switch, read by the start-up watcher and by the training door. Standard
library only: ``_bootstrap`` imports it in every Python process."""

import os

ENVIRONMENT_VARIABLE = "MACE_E0_PLUGIN"
OFF_VALUES = frozenset({"0", "false", "no", "off"})


def is_disabled(environ=os.environ) -> bool:
    """True when ``MACE_E0_PLUGIN`` says off (0, false, no, off; any case)."""
    return environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower() in OFF_VALUES
