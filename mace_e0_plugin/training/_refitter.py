"""``--E0s_refit``: keep the E0s optimal for the network while it trains.

For a fixed network the energy loss is quadratic in the E0s, so their best values are the
solution of the same linear system the first estimate solves, with the network's current
predictions. Fine-tuning drifts the network's energies composition-linearly; a refit undoes that
at the cost of a solve:

    epoch   at the end of every epoch, before mace validates, from statistics that a forward
            hook on mace's loss module gathers from every training batch's predictions: no extra
            pass. (LBFGS evaluates the loss many times per step, so there a no-grad pass is made.)
    final   after the last epoch, for each checkpoint that mace reloads to save and evaluate
            (stage one, and stage two with --swa), one no-grad pass with exactly its weights (EMA
            ones where mace saved those); the new E0s are written into that checkpoint, so
            name.model, name_compiled.model, name_stagetwo.model and mace's closing error table
            each carry the refit of their own weights.

A loop of one's own, with no checkpoints, refits the model itself after its last epoch (``final_in_place``).

The solve, its prior and its rank handling are the first estimate's: directions the data do not
determine keep the prior. A refit that fails raises ``RefitFailed``, which says which refit (the
cause is chained); the checkpoint being refitted is then left as it was. What to do about it is the
run's decision (``_run``).
"""

import functools
import inspect
import logging
import os
import time
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence

import torch

from ..errors import E0ModelError
from ..glue import (EPOCH, FINAL, Estimate, HeadRequest, Refit, agree, all_reduce_, barrier, broadcast_e0s,
                    check_energy_split, element_counts, estimate_e0s, model_atomic_numbers, read_e0s, read_state_e0s,
                    residuals_in_float64, state_e0_buffers, write_e0s, write_rows)
from ..math import E0LinearSystem, E0Solution
from ._mace_run import latest_checkpoint, unpickle

log = logging.getLogger("mace_e0_plugin")


class RefitFailed(Exception):
    """A refit failed: ``kind`` (EPOCH or FINAL), the ``epoch`` trained or of the ``checkpoint``
    (the file's name, FINAL only; ``stage_two`` for mace's SWA checkpoint); ``__cause__`` is why."""

    def __init__(self, kind: str, epoch: Optional[int], checkpoint: Optional[str] = None, stage_two: bool = False):
        self.kind, self.epoch, self.checkpoint, self.stage_two = kind, epoch, checkpoint, stage_two
        super().__init__(f"{kind} refit" + (f" of {checkpoint}" if checkpoint else f" at epoch {epoch}"))


class Refitter:
    """The refits of one ``tools.train`` call, for the heads that asked for any.

    >>> refitter = Refitter(requests, modes, model, copies, device, save=io.save_torch, ...)
    >>> refitter.attach(loss_fn, swa.loss_fn)      # before the first epoch
    >>> refitter.epoch_start(); ...; refitter.epoch_end(epoch)    # around each epoch's steps
    >>> refitter.final(checkpoint_handler.io, stage_two=swa is not None)
    >>> refitter.detach()
    """

    def __init__(self, requests: Sequence[HeadRequest], modes: Dict[str, FrozenSet[str]],
                 model: torch.nn.Module, copies: Sequence[torch.nn.Module], device, batch_size: int,
                 num_workers: int = 0, pin_memory: bool = False, distributed: bool = False, rank: int = 0,
                 one_pass_per_epoch: bool = True, save: Optional[Callable[[str, object], str]] = None,
                 pass_dtype=None):
        self.epoch_requests = [r for r in requests if EPOCH in modes[r.name]]
        self.final_requests = [r for r in requests if FINAL in modes[r.name]]
        if self.final_requests and save is None:
            raise ValueError("a final refit needs save=, the writer of checkpoints")
        self.model, self.copies, self.device = model, list(copies), device
        # The final refit's writer of checkpoints (the training door's, whole or not at all).
        self.save = save
        self.pass_dtype = pass_dtype  # of the network in our own passes (final, LBFGS); the loss's is mace's
        self.loader = dict(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.distributed, self.rank = distributed, rank
        # Statistics from the loss hold only where each config is seen once per epoch; LBFGS
        # evaluates the whole set many times per step.
        self.from_loss = one_pass_per_epoch
        elements = model_atomic_numbers(model)
        self.systems = {r.name: E0LinearSystem(elements, r.weighting, device=device) for r in self.epoch_requests}
        self.refits: List[Refit] = []
        self.saved_e0s: Dict[str, List[float]] = {}  # per head, of the last model mace will save
        self._handles = []
        self._collecting = False
        self._first_batch = True
        self._observe_error: Optional[Exception] = None  # raised at the epoch's end: mace's step never sees it

    # -- epoch refits ---------------------------------------------------------------------------
    def attach(self, *loss_modules: Optional[torch.nn.Module]) -> None:
        """Watch every call of mace's loss modules (stage one's, and stage two's with --swa)."""
        if not (self.epoch_requests and self.from_loss):
            return
        for module in {id(m): m for m in loss_modules if m is not None}.values():
            signature = inspect.signature(module.forward)  # bound by name: any call convention of mace's
            self._handles.append(module.register_forward_hook(
                functools.partial(self._observe, signature), with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def epoch_start(self) -> None:
        for system in self.systems.values():
            system.reset()
        self._collecting = True  # validation and mace's error tables call the loss too: not counted
        self._first_batch = True

    def _observe(self, signature, _module, args, kwargs, _output) -> None:
        """A forward hook on mace's loss: runs inside mace's training step, so it never raises
        there; a failure stops the collection and is raised at the epoch's end."""
        if not self._collecting:
            return
        try:
            call = signature.bind(*args, **kwargs).arguments
            self._collect(call.get("pred"), call.get("ref"))
        except Exception as error:  # pylint: disable=broad-except
            self._observe_error = error
            self._collecting = False
            self.detach()

    @torch.no_grad()
    def _collect(self, pred, ref) -> None:
        energy = pred.get("energy") if isinstance(pred, dict) else None
        if energy is None or ref is None or getattr(ref, "energy", None) is None:
            return
        counts = element_counts(ref)
        if self._first_batch:
            check_energy_split(self.model, ref, pred, counts)
            self._first_batch = False
        # In float64 whatever the training dtype, as the first estimate's (a float32 E0 sum of
        # -1e4 eV keeps ~1e-3 eV).
        residuals = residuals_in_float64(self.model, ref, pred, counts)
        loss_weights = ref.weight * ref.energy_weight
        heads = getattr(ref, "head", None)
        for request in self.epoch_requests:
            selected = None if heads is None else heads.reshape(-1) == request.index
            self.systems[request.name].update(counts, residuals, loss_weights, selected)

    def epoch_end(self, epoch: int) -> List[Refit]:
        """Re-solve and write every epoch-refitted head's E0s, before mace validates; RefitFailed
        if that fails (the E0s in the model are then as they were)."""
        self._collecting = False
        if not self.epoch_requests:
            return []
        started = time.perf_counter()
        try:
            if self._observe_error is not None:
                raise self._observe_error
            solutions = self._solve_collected() if self.from_loss else self._solve_by_pass(self.epoch_requests)
        except Exception as error:
            raise RefitFailed(EPOCH, epoch) from error
        self._write(self.epoch_requests, solutions)
        return self._record(solutions, EPOCH, epoch, time.perf_counter() - started)

    def _write(self, requests: Sequence[HeadRequest], solutions: Dict[str, E0Solution]) -> None:
        """Each solved head's E0s into the model and every copy of it."""
        for request in requests:
            if request.name in solutions:
                for copy in self.copies:
                    write_e0s(copy, request.index, solutions[request.name].e0s)

    def _solve_collected(self) -> Dict[str, E0Solution]:
        requests = self.epoch_requests
        systems = [self.systems[r.name] for r in requests]
        if self.distributed:
            all_reduce_(systems)
        solutions = {}
        for request, system in zip(requests, systems):
            if system.n_configs == 0:  # same on every rank: the statistics are summed
                log.warning(f"--E0s_refit: head '{request.name}' had no usable energies this epoch; "
                            "its E0s are kept")
                continue
            solutions[request.name] = system.solve(read_e0s(self.model, request.index), request.prior_e0s)
        if self.distributed:
            broadcast_e0s(list(solutions.values()), self.device)  # bit-identical E0s on every rank
        return solutions

    def _solve_by_pass(self, requests: Sequence[HeadRequest]) -> Dict[str, E0Solution]:
        """One no-grad pass and solve (a diverged network's NaN energies raise: the refit fails)."""
        estimate: Estimate = estimate_e0s(self.model, requests, self.device, distributed=self.distributed,
                                          progress=self.rank == 0, pass_dtype=self.pass_dtype, **self.loader)
        return {name: head.solution for name, head in estimate.heads.items()}

    # -- the final refit ------------------------------------------------------------------------
    def final(self, checkpoint_io, stage_two: bool, refit: bool = True) -> List[Refit]:
        """Refit, in place, each checkpoint that mace is about to reload to save and evaluate
        (``refit=False``: only read their E0s into ``saved_e0s``). RefitFailed if a refit fails:
        that checkpoint is left as it was, and the later ones are not refitted."""
        refits = []
        for swa in ([False, True] if stage_two else [False]):
            # Rank 0's view of the files, for all: ranks that saw others would enter other collectives.
            latest = agree(latest_checkpoint(checkpoint_io, swa), self.distributed)
            if latest is None:
                continue
            path, epoch = latest
            try:
                checkpoint = unpickle(path)
                for request in self.epoch_requests + self.final_requests:  # as saved, until refitted
                    self.saved_e0s[request.name] = read_state_e0s(checkpoint["model"], request.index)
                if refit and self.final_requests:
                    refits += self._refit_checkpoint(checkpoint, path, epoch)
            except Exception as error:
                if not refit:
                    raise
                raise RefitFailed(FINAL, epoch, os.path.basename(path), stage_two=swa) from error
        return refits

    def final_in_place(self) -> List[Refit]:
        """Refit the model itself, and every copy, after the last epoch: for a training loop that
        saves the model it holds (no checkpoints to reload). RefitFailed if the refit fails: the E0s
        are then as they were."""
        started = time.perf_counter()
        try:
            solutions = self._solve_by_pass(self.final_requests)
        except Exception as error:
            raise RefitFailed(FINAL, None) from error
        self._write(self.final_requests, solutions)
        self.read_model_e0s()
        return self._record(solutions, FINAL, None, time.perf_counter() - started)

    def read_model_e0s(self) -> None:
        """``saved_e0s`` from the model itself: what a loop that saves the model it holds saves."""
        for request in self.epoch_requests + self.final_requests:
            self.saved_e0s[request.name] = read_e0s(self.model, request.index)

    def _refit_checkpoint(self, checkpoint: dict, path: str, epoch: int) -> List[Refit]:
        started = time.perf_counter()
        try:  # exactly the weights mace will load: a key mismatch would refit other weights
            self.model.load_state_dict(checkpoint["model"], strict=True)
        except RuntimeError as error:
            summary = " ".join(str(error).split())[:300]
            raise E0ModelError(f"checkpoint {path}: its keys do not match the model being trained ({summary})") from None
        solutions = self._solve_by_pass(self.final_requests)
        for name, solution in solutions.items():
            index = next(r.index for r in self.final_requests if r.name == name)
            write_rows(state_e0_buffers(checkpoint["model"]), index, solution.e0s)
            self.saved_e0s[name] = read_state_e0s(checkpoint["model"], index)  # in the model's dtype
        if solutions and self.rank == 0:
            self.save(path, checkpoint)
        if self.distributed:
            barrier()  # no rank goes on to mace's reload before the file is whole
        return self._record(solutions, FINAL, epoch, time.perf_counter() - started, os.path.basename(path))

    def _record(self, solutions: Dict[str, E0Solution], kind: str, epoch: Optional[int], seconds: float,
                checkpoint: Optional[str] = None) -> List[Refit]:
        refits = [Refit(name, kind, epoch, solution, seconds, checkpoint) for name, solution in solutions.items()]
        self.refits += refits
        return refits
