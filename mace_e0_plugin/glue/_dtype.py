"""The dtypes a pass runs in (MACE glue): torch's default dtype for a block, and the network a pass
runs, the model itself or a copy of it in another dtype, so that the model, its E0s and its training
are left alone. The E0 sums and the solve are float64 whatever runs (``_residuals``)."""

import contextlib
import copy

import torch


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """torch's default dtype set for a block, and always restored."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def network_for_pass(model: torch.nn.Module, pass_dtype=None) -> torch.nn.Module:
    """The network a pass runs: ``model`` itself, or a copy in ``pass_dtype`` ('float32', 'float64' or a
    torch dtype; None: the model's own). The copy leaves the model, its E0s and its training alone."""
    if pass_dtype is None:
        return model
    dtype = getattr(torch, pass_dtype) if isinstance(pass_dtype, str) else pass_dtype
    if next(model.parameters()).dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype)


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
