"""Re-estimate MACE atomic reference energies (E0s) for fine-tuning: ``--E0s=linear_system``.

Importing this package is cheap on purpose: the start-up hook (``_bootstrap``) imports it in every
Python process, so torch, numpy and mace are only imported by the submodules that need them.
"""

__version__ = "0.1.0"

_LAZY = {
    "E0LinearSystem": "mace_e0_plugin.linear_system",
    "E0Solution": "mace_e0_plugin.linear_system",
    "E0InputError": "mace_e0_plugin.errors",
    "estimate_e0s": "mace_e0_plugin.estimate",
    "check_e0s": "mace_e0_plugin.check",
    "diagnose_e0s": "mace_e0_plugin.diagnose",
    "reestimate_e0s": "mace_e0_plugin.api",
    "E0Result": "mace_e0_plugin.result",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mace_e0_plugin' has no attribute {name!r}")
