"""The Python door, for notebooks and scripts: ``reestimate_e0s(model, configs)``.

It replaces the seed notebook's ``reestimate_e0s_linear_system(foundation_model, foundation_e0s,
training_configs, elements)`` and goes through the same pipeline as ``mace-e0 estimate`` (same
defaults, same numbers), taking Python objects as well as files.
"""

import os
from typing import Optional, Sequence

from .errors import E0InputError
from .result import E0Result  # no torch: the module stays cheap to import until it is called

DEFAULT_BATCH_SIZE = 32  # as mace-e0 estimate --batch-size
DTYPES = ("float32", "float64")


def reestimate_e0s(model, configs, energy_key: Optional[str] = None, *, prior=None, weighting: str = "per_atom",
                   head: Optional[str] = None, device=None, dtype=None, batch_size: int = DEFAULT_BATCH_SIZE,
                   max_configs: Optional[int] = None, se_tolerance: Optional[float] = None, seed: int = 0,
                   progress: bool = True) -> E0Result:
    """Re-estimate one head's E0s of ``model`` on ``configs``; nothing is changed or written.

    model: a .model path, a MACE torch.nn.Module, or a MACECalculator (``mace_mp()`` and the like).
    configs: a list of ase.Atoms, or of data files (extxyz, h5, LMDB); one Atoms or one path too.
    energy_key: the ``atoms.info`` key of the reference energy; None: ``atoms.get_potential_energy()``
        (a SinglePointCalculator, extxyz ``energy=``).
    prior: E0s along the element combinations the data cannot determine: 'foundation' (the model's
        own), a JSON ``{Z: eV}`` or extxyz file of isolated atoms, a dict ``{Z or symbol: eV}``, or a
        list of isolated-atom ase.Atoms; None: the configs' IsolatedAtom frames if any, else 'foundation'.
    weighting, max_configs, se_tolerance, seed: as ``mace-e0 estimate``'s options.
    device: default the module's own device, or for a path cuda when available. dtype: 'float32' or
        'float64' to run the model in (on a copy); default its own.
    """
    import torch

    from .collect import default_dtype
    from .estimate import estimate_e0s
    from .models import model_heads, select_head
    from .pipeline import build_request, data_from, model_from, prior_from
    from .plot import SAMPLE_SIZE

    _check_options(batch_size, max_configs, se_tolerance, dtype)
    prior_spec = prior_from(prior, energy_key, "prior")
    configs = _as_list(configs)
    # Graphs in float64, so that reference energies keep every digit (as mace-e0 estimate); the model
    # runs in its own dtype, or ``dtype``. The caller's default dtype is restored afterwards.
    with default_dtype(torch.float64):
        module = model_from(model, device, dtype)
        device = next(module.parameters()).device
        heads = model_heads(module)
        name = heads[select_head(heads, head, "head")]
        data = data_from(configs, module, name, energy_key)
        request, _, _ = build_request(module, name, data, prior_spec, weighting=weighting, max_configs=max_configs,
                                      se_tolerance=se_tolerance, seed=seed)
        # No DataLoader workers: forked workers are fragile in notebooks, and the configs are in memory.
        estimate = estimate_e0s(module, [request], device, batch_size=batch_size, num_workers=0,
                                progress=progress, sample_limit=SAMPLE_SIZE)
    return E0Result(name, estimate, model)


def _check_options(batch_size, max_configs, se_tolerance, dtype) -> None:
    import torch

    for option, value, kind in (("batch_size", batch_size, int), ("max_configs", max_configs, int),
                                ("se_tolerance", se_tolerance, (int, float))):
        if value is None and option != "batch_size":
            continue
        if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
            raise E0InputError(f"{option}={value!r}: must be a positive {'number' if kind != int else 'integer'}.")
    if dtype is not None and dtype not in DTYPES and dtype not in (torch.float32, torch.float64):
        raise E0InputError(f"dtype={dtype!r}: use 'float32' or 'float64' (or None for the model's own).")


def _as_list(configs) -> Sequence:
    from ase import Atoms

    if isinstance(configs, (Atoms, str, os.PathLike)):
        return [configs]
    return list(configs)
