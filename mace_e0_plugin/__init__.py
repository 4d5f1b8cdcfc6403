"""Re-estimate MACE atomic reference energies (E0s) for fine-tuning: ``--E0s=linear_system``.

Importing this package is cheap on purpose: the start-up hook (``_bootstrap``) imports it in every
Python process, so torch, numpy and mace are only imported by the layers that need them, when a
name below is first used.

Layers, lowest first (each imports only those below it): ``math`` (pure), ``glue`` (MACE),
``io`` (priors, the report, files, figures, tables), ``services`` (the options, the estimate
sequence), then the doors side by side: ``doors`` (mace-e0, the Python API, check, diagnose) and
``training`` (mace_run_train, and ``E0Fit`` for a loop of one's own). ``testing`` builds toy data.
"""

__version__ = "0.1.0"

_LAZY = {
    "E0LinearSystem": "mace_e0_plugin.math",
    "E0Solution": "mace_e0_plugin.math",
    "E0InputError": "mace_e0_plugin.errors",
    "estimate_e0s": "mace_e0_plugin.glue",
    "check_e0s": "mace_e0_plugin.doors",
    "diagnose_e0s": "mace_e0_plugin.doors",
    "reestimate_e0s": "mace_e0_plugin.doors",
    "E0Result": "mace_e0_plugin.doors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mace_e0_plugin' has no attribute {name!r}")
