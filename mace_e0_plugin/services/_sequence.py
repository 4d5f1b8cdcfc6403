"""The estimate sequence, written once: prior, model, head, data, request, estimate. ``mace-e0
estimate``, diagnose, check and the Python API go through it, and the training door builds its
requests with ``build_request``.

Graphs are built under a float64 default dtype (``GRAPH_DTYPE``), so that reference energies keep
every digit; the model runs in its own dtype (or the one asked for), and the E0 part of its energy is
summed in float64 (``glue.residuals_in_float64``). The caller's default dtype is always restored.
"""

from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

import torch

from ..glue import (HeadEstimate, HeadRequest, LoadedData, SAMPLE_SIZE, Estimate, data_from, default_dtype,
                    estimate_e0s, model_atomic_numbers, model_from, model_heads, read_e0s, select_head)
from ..io import PriorSpec, ResolvedPrior, choose_prior, prior_from, prior_vector
from ..math import DEFAULT_WEIGHTING
from ._options import DEFAULT_BATCH_SIZE, PASS_DTYPE

GRAPH_DTYPE = torch.float64


def resolve_model(model, head: Optional[str] = None, device=None) -> Tuple[torch.nn.Module, str, int]:
    """(the MACE module, the head's name, its row in the E0 buffer) for any door's model and head."""
    module = model_from(model, device)
    heads = model_heads(module)
    index = select_head(heads, head)
    return module, heads[index], index


def build_request(model: torch.nn.Module, head: str, data: LoadedData, resolved_prior: ResolvedPrior, *,
                  fallback: Optional[Mapping[int, float]] = None, weighting: str = DEFAULT_WEIGHTING,
                  max_configs: Optional[int] = None, energy_key: Optional[str] = None,
                  exclude_suspicious: bool = False) -> Tuple[HeadRequest, List[int]]:
    """One head's request (its ``prior_record`` says what the prior is), and the elements the prior lacks (they keep
    ``fallback``: the model's own E0s unless the door says otherwise, as training does with the
    foundation's). The doors have checked ``head`` and the options (``_options``)."""
    heads = model_heads(model)
    index = heads.index(head)
    elements = model_atomic_numbers(model)
    if fallback is None:
        fallback = dict(zip(elements, read_e0s(model, index)))
    chosen, prior_record = choose_prior(resolved_prior, data.isolated_atoms)
    values, fell_back = prior_vector(elements, chosen or fallback, fallback)
    request = HeadRequest(name=head, index=index, dataset=data.dataset, prior_e0s=values, weighting=weighting,
                          source=data.source, energy_key=energy_key, max_configs=max_configs, prior_record=prior_record,
                          origins=data.origins, exclude_suspicious=exclude_suspicious)
    return request, (fell_back if chosen else [])


@dataclass(frozen=True)
class EstimateRequest:
    """What a door asks of the estimate sequence, for one head: the model and configs in any form
    ``glue.model_from`` and ``glue.data_from`` take, the prior as the user gave it (``io.PriorSpec``,
    resolved by ``io.prior_from``), and the options, checked by the door (``_options``)."""

    model: object
    configs: object
    energy_key: Optional[str] = None
    prior: PriorSpec = None
    head: Optional[str] = None
    weighting: str = DEFAULT_WEIGHTING
    max_configs: Optional[int] = None
    exclude_suspicious: bool = False
    device: object = None
    pass_dtype: Optional[str] = PASS_DTYPE  # the network's, in the pass (a copy where the model's differs)
    batch_size: int = DEFAULT_BATCH_SIZE
    num_workers: int = 0
    forces_key: Optional[str] = None
    distributed: bool = False
    progress: bool = True
    sample_size: int = SAMPLE_SIZE  # configs kept per head for the figure (0: none)


@dataclass
class EstimateSteps:
    """What the sequence made, step by step: a door shows or writes what it needs of it."""

    model: torch.nn.Module  # the module the estimate ran on (a moved copy where asked for)
    head: str
    data: LoadedData
    request: HeadRequest
    lacking: List[int]  # elements the prior lacks: they keep the model's E0s
    estimate: Estimate

    @property
    def head_estimate(self) -> HeadEstimate:
        """The head's record in ``estimate``: its solution, prior record, suspicious configs, sample."""
        return self.estimate.heads[self.head]


def estimate_sequence(asked: EstimateRequest) -> EstimateSteps:
    """One head's estimate: prior, model, head, data, request, estimate. Nothing is changed in the
    caller's objects, and nothing is written."""
    resolved_prior = prior_from(asked.prior, asked.energy_key)
    with default_dtype(GRAPH_DTYPE):
        module, name, _ = resolve_model(asked.model, asked.head, asked.device)
        data = data_from(asked.configs, module, name, asked.energy_key, asked.forces_key)
        request, lacking = build_request(module, name, data, resolved_prior, weighting=asked.weighting,
                                         max_configs=asked.max_configs, energy_key=asked.energy_key,
                                         exclude_suspicious=asked.exclude_suspicious)
        estimate = estimate_e0s(module, [request], next(module.parameters()).device, batch_size=asked.batch_size,
                                num_workers=asked.num_workers, distributed=asked.distributed,
                                progress=asked.progress, sample_size=asked.sample_size, pass_dtype=asked.pass_dtype)
    return EstimateSteps(module, name, data, request, lacking, estimate)
