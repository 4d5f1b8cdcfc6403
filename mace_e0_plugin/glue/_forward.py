"""The one forward pass over data: the model in eval mode, batched, on its device (MACE glue).

``forward`` yields each batch with the model's output: energies only and no grad by default, or
forces (a pass with gradients) on request. What is done with them is elsewhere: the E0 residuals
(``_residuals``), every config's record (``_ledger``), the force slopes (``_force_statistics``).
"""

from typing import Iterable, Iterator, Optional, Tuple

import torch
from tqdm.auto import tqdm

from ._dtype import default_dtype, evaluation_mode


def element_counts(batch) -> torch.Tensor:
    """[n_graphs, n_elements] atoms of each element per config, from the one-hot node attributes."""
    n_graphs = batch.ptr.numel() - 1
    counts = torch.zeros(n_graphs, batch.node_attrs.shape[1], dtype=batch.node_attrs.dtype,
                         device=batch.node_attrs.device)
    return counts.index_add_(0, batch.batch, batch.node_attrs)


def model_inputs(batch, dtype: torch.dtype) -> dict:
    """The batch as the model's input, its floating tensors in the model's dtype. The batch itself
    keeps its own (float64 reference energies for a float32 model keep their digits)."""
    return {key: value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value
            for key, value in batch.to_dict().items()}


def forward(model: torch.nn.Module, batches: Iterable, device, *, forces: bool = False,
            progress: Optional[str] = None) -> Iterator[Tuple[object, dict]]:
    """(batch on ``device``, the model's output) for every batch, in eval mode. Energies only,
    under no_grad, unless ``forces``: then a pass with gradients (forces are -dE/dr).
    ``progress``: a tqdm bar with that label."""
    if progress:
        batches = tqdm(batches, desc=progress, unit="batch", mininterval=2.0, leave=False)
    dtype = next(model.parameters()).dtype
    with evaluation_mode(model):
        for batch in batches:
            batch = batch.to(device, non_blocking=True)
            # Per batch, so that nothing leaks into the caller's code between batches. The default
            # dtype: tensors the model makes on the fly take its dtype, not the graphs'.
            with torch.set_grad_enabled(forces), default_dtype(dtype):
                output = model(model_inputs(batch, dtype), training=False, compute_force=forces,
                               compute_virials=False, compute_stress=False)
            yield batch, output


