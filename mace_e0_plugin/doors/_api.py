"""The Python door, for notebooks and scripts: ``reestimate_e0s(model, configs)``.

It replaces the seed notebook's ``reestimate_e0s_linear_system(foundation_model, foundation_e0s,
training_configs, elements)`` and goes through the same sequence as ``mace-e0 estimate`` (same
defaults, same numbers), taking Python objects as well as files. Bad input raises
``E0InputError``, a ValueError, whose message names options as Python spells them (``energy_key=``).
"""

import os
from typing import Optional, Sequence

from ase import Atoms

from ..services import DEFAULT_BATCH_SIZE, DEFAULT_WEIGHTING, PASS_DTYPE, checked
from ._result import E0Result
from ..services import EstimateRequest, estimate_sequence


def reestimate_e0s(model, configs, energy_key: Optional[str] = None, *, prior=None, weighting: str = DEFAULT_WEIGHTING,
                   head: Optional[str] = None, device=None, dtype: str = PASS_DTYPE,
                   batch_size: int = DEFAULT_BATCH_SIZE, max_configs: Optional[int] = None,
                   exclude_suspicious: bool = False, progress: bool = True) -> E0Result:
    """Re-estimate one head's E0s of ``model`` on ``configs``; nothing is changed or written.

    model: a .model path, a MACE torch.nn.Module, or a MACECalculator (``mace_mp()`` and the like).
    configs: a list of ase.Atoms, or of data files (extxyz, h5, LMDB); one Atoms or one path too.
    energy_key: the ``atoms.info`` key of the reference energy; None: ``atoms.get_potential_energy()``
        (a SinglePointCalculator, extxyz ``energy=``).
    prior: E0s along the element combinations the data cannot determine: 'foundation' (the model's
        own), a JSON ``{Z: eV}`` or extxyz file of isolated atoms, a dict ``{Z or symbol: eV}``, or a
        list of isolated-atom ase.Atoms; None: the configs' IsolatedAtom frames if any, else 'foundation'.
    weighting, max_configs, exclude_suspicious: as ``mace-e0 estimate``'s options.
    device: default the module's own device, or for a path cuda when available. dtype: the dtype the
        network runs in, on a copy (default 'float32'; 'float64' for the model's full precision). The
        reference energies, E0 sums and solve are float64 either way. The result's
        ``suspicious_configs`` lists configs whose labels look broken.
    """
    options = checked(weighting=weighting, batch_size=batch_size, max_configs=max_configs, dtype=dtype,
                      exclude_suspicious=exclude_suspicious, progress=progress)
    # No DataLoader workers: forked workers are fragile in notebooks, and the configs are in memory.
    steps = estimate_sequence(EstimateRequest(model, _as_list(configs), energy_key, prior=prior, head=head,
                                              device=device, num_workers=0, pass_dtype=options.pop("dtype"),
                                              **options))
    return E0Result(steps.head, steps.estimate, model)


def _as_list(configs) -> Sequence:
    if isinstance(configs, (Atoms, str, os.PathLike)):
        return [configs]
    return list(configs)
