"""MACE glue: the plugin's math applied to MACE models and data.

- models: E0s in a model's ``atomic_energies`` buffer, its heads and elements, reading it;
- data: files and ase.Atoms as graphs for a model, their compositions, the loader;
- dtype: the dtype a pass runs in, and the network it runs (the model, or a copy in that dtype);
- forward: the one forward pass (energies, or forces on request);
- residuals: the E0 residuals of a pass in float64, and the check that the energy splits;
- ledger: every config a pass sees, kept on the device; the figures' sample is a view of it;
- force statistics: the forces pass of diagnose;
- outliers: broken labels, found in the fit's residuals;
- estimate: collect and solve per head (``estimate_e0s``); refit: ``--E0s_refit``'s modes and records;
- provenance: how the E0s were set, kept in the model;
- distributed: every collective, in one module.
"""

from ._data import LoadedData, data_from, frame_energy, load_data, make_loader, read_compositions, shard
from ._distributed import agree, all_reduce_, barrier, broadcast_e0s
from ._dtype import default_dtype, evaluation_mode, network_for_pass
from ._estimate import SAMPLING_SEED, Estimate, HeadEstimate, HeadRequest, estimate_e0s
from ._force_statistics import force_statistics
from ._forward import element_counts, forward
from ._ledger import SAMPLE_SIZE, ResidualSample
from ._models import (REPLAY_HEAD, default_device, model_atomic_numbers, model_from, model_heads, read_e0s, read_model,
                      read_state_e0s, select_head, state_e0_buffers, write_e0s, write_rows)
from ._provenance import (ATTRIBUTE, E0S_FILE, FOUNDATION, ISOLATED_ATOMS, METHOD, PriorRecord, read_provenance,
                          set_provenance)
from ._refit import DEFAULT_MODE, EPOCH, FINAL, MODES, Refit
from ._residuals import check_energy_split, residuals_in_float64

__all__ = [
    # models
    "REPLAY_HEAD", "default_device", "model_atomic_numbers", "model_from", "model_heads", "read_e0s", "read_model",
    "read_state_e0s", "select_head", "state_e0_buffers", "write_e0s", "write_rows",
    # data
    "LoadedData", "data_from", "frame_energy", "load_data", "make_loader", "read_compositions", "shard",
    # the forward pass
    "default_dtype", "evaluation_mode", "network_for_pass", "element_counts", "forward", "check_energy_split",
    "residuals_in_float64", "SAMPLE_SIZE", "ResidualSample", "force_statistics",
    # estimate and refit
    "Estimate", "HeadEstimate", "HeadRequest", "estimate_e0s", "SAMPLING_SEED",
    "DEFAULT_MODE", "EPOCH", "FINAL", "MODES", "Refit",
    # provenance
    "ATTRIBUTE", "METHOD", "PriorRecord", "FOUNDATION", "ISOLATED_ATOMS", "E0S_FILE", "read_provenance",
    "set_provenance",
    # distributed
    "agree", "all_reduce_", "broadcast_e0s", "barrier",
]
