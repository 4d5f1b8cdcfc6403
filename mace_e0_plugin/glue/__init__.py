"""MACE glue: the plugin's math applied to MACE models and data.

- models: E0s in a model's ``atomic_energies`` buffer, its heads and elements, reading it;
- data: files and ase.Atoms as graphs for a model, their compositions, the loader;
- forward: the one forward pass (energies, or forces on request) and the residuals it gives;
- outliers: broken labels, found in the fit's residuals;
- estimate: collect and solve per head (``estimate_e0s``); refit: ``--E0s_refit``'s refits;
- provenance: how the E0s were set, kept in the model;
- distributed: every collective, in one module.
"""

from ._data import (ISOLATED_ATOM, ConfigGraphs, LoadedData, compositions, data_from, graphs_from_atoms,
                    load_data, make_loader, read_compositions, shard)
from ._distributed import agree, all_reduce_, barrier, broadcast_e0s, rank_and_size, synchronize
from ._estimate import CHECK_EVERY, MIN_DEGREES_OF_FREEDOM, Estimate, HeadRequest, estimate_e0s
from ._forward import (FORCE_SAMPLE_ATOMS, SAMPLE_SIZE, ResidualLedger, ResidualSample, accumulate,
                       check_energy_split, default_dtype, element_counts, evaluation_mode, force_statistics, forward,
                       model_inputs, network_for_pass, residuals_in_float64)
from ._models import (REPLAY_HEAD, default_device, default_head, e0_buffers, model_atomic_numbers, model_from,
                      model_heads, read_e0s, read_model, read_state_e0s, select_head, state_e0_buffers, write_e0s,
                      write_rows)
from ._outliers import find_suspicious
from ._provenance import (ATTRIBUTE, E0S_FILE, FOUNDATION, ISOLATED_ATOMS, METHOD, PRIOR_KINDS, read_provenance,
                          set_provenance)
from ._refit import DEFAULT_MODE, EPOCH, FINAL, MODES, Refit, RefitFailed, Refitter, latest_checkpoint

__all__ = [
    # models
    "REPLAY_HEAD", "default_device", "default_head", "e0_buffers", "model_atomic_numbers", "model_from",
    "model_heads", "read_e0s", "read_model", "read_state_e0s", "select_head", "state_e0_buffers", "write_e0s",
    "write_rows",
    # data
    "ISOLATED_ATOM", "ConfigGraphs", "LoadedData", "compositions", "data_from", "graphs_from_atoms", "load_data",
    "make_loader", "read_compositions", "shard",
    # the forward pass
    "FORCE_SAMPLE_ATOMS", "SAMPLE_SIZE", "ResidualSample", "accumulate", "check_energy_split", "default_dtype",
    "element_counts",
    "evaluation_mode", "force_statistics", "forward", "model_inputs", "network_for_pass", "residuals_in_float64",
    "ResidualLedger", "find_suspicious",
    # estimate and refit
    "Estimate", "HeadRequest", "estimate_e0s", "CHECK_EVERY", "MIN_DEGREES_OF_FREEDOM",
    "DEFAULT_MODE", "EPOCH", "FINAL", "MODES", "Refit", "RefitFailed", "Refitter", "latest_checkpoint",
    # provenance
    "ATTRIBUTE", "METHOD", "FOUNDATION", "ISOLATED_ATOMS", "E0S_FILE", "PRIOR_KINDS", "read_provenance",
    "set_provenance",
    # distributed
    "rank_and_size", "agree", "all_reduce_", "broadcast_e0s", "barrier", "synchronize",
]
