"""Collect and solve E0s for one or more heads of a model: the one path that the training door,
``mace-e0`` and the Python API all go through (MACE glue)."""

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils.data import Dataset, Subset

from ..errors import E0InputError, as_option
from ..math import DEFAULT_WEIGHTING, E0LinearSystem, E0Solution, stratified_order
from ._data import compositions, make_loader, shard
from ._distributed import all_reduce_, broadcast_e0s, rank_and_size, synchronize
from ._dtype import network_for_pass
from ._ledger import ResidualLedger, ResidualSample
from ._residuals import accumulate
from ._models import model_atomic_numbers, read_e0s
from ._outliers import exclude, find_suspicious, origin_of
from ._provenance import FOUNDATION, PriorRecord

# The stratified sample of --max-configs: always the same for the same configs (no option: a
# user who wants another sample asks for a larger one).
SAMPLING_SEED = 0


@dataclass
class HeadRequest:
    """What to estimate for one head of the model."""

    name: str
    index: int  # the head's row in the model's E0 buffer
    dataset: Dataset  # that head's configs, as graphs for this model
    prior_e0s: List[float]  # per element of the model, in its order
    weighting: str = DEFAULT_WEIGHTING
    source: str = "the training data"  # names the files and energy key in error messages
    energy_key: Optional[str] = None  # as given, for error messages
    max_configs: Optional[int] = None  # use a composition-stratified sample of at most this many
    prior_record: PriorRecord = PriorRecord(FOUNDATION, "the model's E0s")
    origins: Optional[Sequence[Dict[str, object]]] = None  # per config: where in the input it came from
    exclude_suspicious: bool = False  # refit without the configs that look like broken labels

    @property
    def samples_part(self) -> bool:
        return self.max_configs is not None


@dataclass(frozen=True)
class HeadEstimate:
    """One head's estimate, built whole."""

    solution: E0Solution
    prior_record: PriorRecord
    suspicious: List[Dict[str, object]] = field(default_factory=list)  # broken-looking labels, worst first
    n_excluded: int = 0  # of them, left out of the fit (exclude_suspicious)
    sample: Optional[ResidualSample] = None  # per-config residuals for figures, when asked for
    sampling: Optional[Dict[str, object]] = None  # where part of the data was used (max_configs)


@dataclass(frozen=True)
class Estimate:
    """One pass's estimate: a record per head (``heads[name].solution`` is that head's E0s), and what
    the pass cost. The one place each head's results live: nothing else keys them by head."""

    heads: Dict[str, HeadEstimate]  # in the order of the requests
    timing: Dict[str, float] = field(default_factory=dict)  # inference_s, solve_s
    pass_dtype: str = ""  # the dtype the network ran in


def estimate_e0s(model: torch.nn.Module, requests: Sequence[HeadRequest], device, batch_size: int,
                 num_workers: int = 0, pin_memory: bool = False, distributed: bool = False,
                 progress: bool = True, sample_size: int = 0, pass_dtype=None) -> Estimate:
    """Run ``model`` once over each head's data (this rank's shard of it) and solve for E0s.

    Under torch.distributed every rank must call this with the same requests; the statistics
    are summed with one all-reduce and rank 0's E0s are broadcast, so all ranks agree bit for bit.
    ``sample_size`` > 0 keeps that many per-config residuals per head (of this rank's shard), for plots.
    ``pass_dtype`` runs the network in that dtype (on a copy; default the model's own); the E0 sums
    and the solve are float64 either way.
    """
    rank, world_size = rank_and_size(distributed)
    atomic_numbers = model_atomic_numbers(model)
    started = time.perf_counter()
    network = network_for_pass(model, pass_dtype)
    systems, samples, sampling, ledgers = [], {}, {}, []
    for request in requests:
        system = E0LinearSystem(atomic_numbers, request.weighting, device=device)
        dataset = _ordered(request) if request.samples_part else request.dataset
        mine = shard(dataset, rank, world_size)
        order = dataset.indices if request.samples_part else range(len(dataset))  # positions in request.dataset
        ledgers.append(ResidualLedger(order[rank::world_size]))  # the rows of ``mine``, in order
        label = f"E0s: head {request.name}" if progress and rank == 0 else None
        if sample_size:
            samples[request.name] = ResidualSample(ledgers[-1], sample_size)
        loader = make_loader(mine, batch_size, num_workers, pin_memory)
        systems.append(accumulate(model, loader, system, device, progress=label, ledger=ledgers[-1],
                                  network=network))
        if request.samples_part:
            sampling[request.name] = {"n_available": len(request.dataset), "n_sampled": len(dataset),
                                      "max_configs": request.max_configs}
    if world_size > 1:
        all_reduce_(systems)
    synchronize(device)
    inference_s = time.perf_counter() - started

    for request, system in zip(requests, systems):
        _check_usable(request, system)
    started = time.perf_counter()
    solutions = {
        request.name: system.solve(read_e0s(model, request.index), request.prior_e0s)
        for request, system in zip(requests, systems)
    }
    if world_size > 1:
        broadcast_e0s(list(solutions.values()), device)
    suspicious, excluded = {}, {}
    for request, system, ledger in zip(requests, systems, ledgers):
        origin = origin_of(request.origins, request.source)
        suspicious[request.name] = find_suspicious(ledger, solutions[request.name], origin, world_size > 1)
        if request.exclude_suspicious and suspicious[request.name]:
            excluded[request.name] = exclude(system, ledger, suspicious[request.name], world_size > 1)
            solutions[request.name] = system.solve(read_e0s(model, request.index), request.prior_e0s)
            if world_size > 1:
                broadcast_e0s([solutions[request.name]], device)
    solve_s = time.perf_counter() - started
    dtype = str(next(network.parameters()).dtype).replace("torch.", "")
    heads = {request.name: HeadEstimate(solutions[request.name], request.prior_record, suspicious[request.name],
                                        excluded.get(request.name, 0), samples.get(request.name),
                                        sampling.get(request.name))
             for request in requests}
    return Estimate(heads, {"inference_s": inference_s, "solve_s": solve_s}, dtype)


def _ordered(request: HeadRequest) -> Dataset:
    """The head's configs in composition-stratified order, cut to ``max_configs``."""
    order = stratified_order(compositions(request.dataset), seed=SAMPLING_SEED)
    return Subset(request.dataset, order[:request.max_configs] if request.max_configs else order)


def _check_usable(request: HeadRequest, system: E0LinearSystem) -> None:
    if system.n_non_finite:
        raise E0InputError(
            f"head '{request.name}': {system.n_non_finite} config(s) in {request.source} have a "
            "non-finite energy (NaN or inf, in the reference or the model's prediction); "
            "remove or fix them before fine-tuning.")
    if system.n_configs == 0:
        raise E0InputError(
            "head '{head}': none of the {n_skipped} config(s) in {source} has a usable energy (the key is "
            "missing or the energy weight is 0); check {energy_key} and that the file holds energies.",
            head=request.name, n_skipped=system.n_skipped, source=request.source,
            energy_key=as_option(request.energy_key))
