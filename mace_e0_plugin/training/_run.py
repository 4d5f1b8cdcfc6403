"""``E0Fit``: the E0s of one training run, fitted to the model being trained and kept fitted. Like
torch_ema's ``ExponentialMovingAverage``, it is one object the caller drives around any training
loop; mace's run drives it through ``_door``, a loop of one's own drives it by hand::

    fit = E0Fit(RunSettings(heads={"Default": HeadSettings(...)}, ...))
    fit.start(model, train_loader, device, loss_fn=loss_fn)   # collect, solve, write, report
    for epoch in range(epochs):
        fit.epoch_start(epoch)                                  # --E0s_refit=epoch: watch the loss...
        ...                                                     # the loop's own steps
        fit.epoch_end(epoch)                                    # ...and re-solve from its batches
    fit.finish()                  # final refit: the model itself, or mace's checkpoints (checkpoint_io)

Shapes: the model is a MACE module whose ``atomic_energies`` buffer is [n_heads, n_elements]; the
loader yields mace's ``AtomicData`` batches, each config carrying its head's index.

The rules it keeps, whoever drives it:
- Before the first step, bad input raises an ``E0Error`` naming the option (mace's door turns it
  into one line that stops mace).
- After the first step nothing raises (``epoch_start``, ``epoch_end``, ``finish``): a failure of
  ours is one ERROR line, a record in the report and the provenance, and the loop goes on.
"""

import contextlib
import functools
import logging
from dataclasses import replace
from typing import Dict, List, Optional, Sequence

from ase.data import chemical_symbols
from torch.optim import LBFGS

from ..errors import E0InputError
from ..glue import EPOCH, SAMPLE_SIZE, LoadedData, agree, estimate_e0s, model_heads, set_provenance, write_e0s
from ..io import (Outputs, estimate_report, format_estimate, format_refit, provenance_from_report, read_report,
                  report_path, report_with_refits, save_torch, write_outputs)
from ..services import build_request
from ._failures import LOG_PREFIX, Failure, describe, refit_later_commands
from ._mace_run import (checkpoint_files, datasets_by_head, foundation_e0s, load_foundation, locate_in_files,
                        without_replication)
from ._refitter import RefitFailed, Refitter
from ._settings import RunSettings

KEYWORD = "linear_system"

log = logging.getLogger("mace_e0_plugin")


def _symbols(numbers) -> str:
    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in numbers)


def _never_raises(step):
    """After the first step: whatever escapes the fit's own guards is one ERROR line, and the fit
    does nothing more; the training loop goes on."""
    @functools.wraps(step)
    def guarded(fit: "E0Fit", *args, **kwargs):
        if fit.ended:
            return None
        try:
            return step(fit, *args, **kwargs)
        except Exception as error:  # pylint: disable=broad-except
            log.error(f"{LOG_PREFIX}{step.__name__} failed: {describe(error)}; kept: the E0s in the model and "
                      "its checkpoints as they were; the plugin does nothing more in this run")
            fit.close()
            return None
    return guarded


class E0Fit:
    """The E0s of one run: estimated before the first step, refitted as ``settings`` ask."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self._foundation_e0s: Optional[Dict[int, float]] = None
        self._n_train_configs: Dict[str, int] = {}  # per head, before mace repeats them for replay
        self._isolated_atoms: Dict[str, Dict[int, float]] = {}  # per head, the data's IsolatedAtom energies
        self.refitter: Optional[Refitter] = None  # from start() on, if any head refits
        self.report: Dict[str, object] = {}  # the JSON report's content
        self.failures: List[Failure] = []  # what failed after the first step
        self.stage_two = False  # an SWA copy: mace saves a second model
        self.rank = 0
        self.ended = False

    @property
    def refitting(self) -> bool:
        """Refits go on until one fails: the E0s then stay those of the last that succeeded."""
        return self.refitter is not None and not any(f.heads for f in self.failures) and not self.ended

    def foundation_e0s(self) -> Dict[int, float]:
        """The foundation's E0s by element (read from ``settings.foundation`` once)."""
        if self._foundation_e0s is None:
            settings = self.settings
            self._foundation_e0s = foundation_e0s(load_foundation(settings.foundation, settings.foundation_dtype),
                                                  settings.foundation_head)
        return self._foundation_e0s

    # -- before training: bad input raises --------------------------------------------------------
    def data_loaded(self, head: str, n_configs: int, isolated_atoms: Optional[Dict[int, float]] = None) -> bool:
        """Note a head's training-set size as loaded (mace may later repeat it to balance replay
        data) and its IsolatedAtom energies, a candidate prior. True if the head is ours."""
        if head not in self.settings.heads:
            return False
        self._n_train_configs[head] = n_configs
        if isolated_atoms:
            self._isolated_atoms[head] = {int(z): float(e) for z, e in isolated_atoms.items()}
        return True

    def placeholder_e0s(self, atomic_numbers: Sequence[int], foundation_model=None) -> Dict[int, float]:
        """The foundation's E0s for ``atomic_numbers``: a well-defined value to build the model with,
        replaced before the first step. ``foundation_model``: the one mace loaded, where it says."""
        if foundation_model is not None and self._foundation_e0s is None:
            self._foundation_e0s = foundation_e0s(foundation_model, self.settings.foundation_head)
        foundation = self.foundation_e0s()
        missing = [z for z in atomic_numbers if z not in foundation]
        if missing:
            raise E0InputError(
                f"the training data contain {_symbols(missing)}, which the foundation model "
                f"--foundation_model={self.settings.foundation} has no E0 for. A fine-tune can only "
                "use the foundation's elements: drop the configs with them, or choose a foundation that "
                "covers them.")
        log.info(f"--E0s={KEYWORD}: building the model with the foundation's E0s; they are re-estimated "
                 "from the training data before the first epoch")
        return {z: foundation[z] for z in atomic_numbers}

    def start(self, model, train_loader, device, *, loss_fn=None, optimizer=None, swa_model=None,
              swa_loss_fn=None, checkpoint_io=None, distributed: bool = False, rank: int = 0) -> bool:
        """Collect, solve, write the new E0s into the model (and ``swa_model``), and report; then set
        up the refits the heads ask for. False when nothing is left to do in this run."""
        if self.settings.foundation is None and self._foundation_e0s is None:  # the model is the foundation
            self._foundation_e0s = foundation_e0s(model)
        self.rank = rank
        self.stage_two = swa_model is not None
        requests = self._head_requests(model, train_loader.dataset)
        copies = [model] + ([swa_model] if swa_model is not None else [])
        restarted = self.settings.restart_latest and checkpoint_io is not None and bool(checkpoint_files(checkpoint_io))
        if agree(restarted, distributed):  # rank 0's file system decides
            log.info(f"--E0s={KEYWORD}: restarted from a checkpoint, whose E0s were already re-estimated; "
                     "keeping them")
            self.report = read_report(self._report_path())
        else:
            self.report = self._estimate(model, requests, copies, device, distributed, rank)
        _record_provenance(model, self.report)
        modes = {name: head.refit for name, head in self.settings.heads.items()}
        if not any(modes.values()):
            return False
        settings = self.settings
        self.refitter = Refitter(requests, modes, model, copies, device, save=save_torch,
                                 batch_size=settings.batch_size, num_workers=settings.num_workers,
                                 pin_memory=settings.pin_memory, distributed=distributed, rank=rank,
                                 one_pass_per_epoch=not isinstance(optimizer, LBFGS), pass_dtype=settings.pass_dtype)
        self.refitter.attach(loss_fn, swa_loss_fn)
        return True

    def _estimate(self, model, requests, copies, device, distributed: bool, rank: int):
        settings = self.settings
        log.info(f"--E0s={KEYWORD}: running the model over the training data of head(s) "
                 f"{', '.join(r.name for r in requests)} to re-estimate E0s")
        plotting = settings.plot and rank == 0
        estimate = estimate_e0s(model, requests, device, batch_size=settings.batch_size,
                                num_workers=settings.num_workers, pin_memory=settings.pin_memory,
                                distributed=distributed, progress=(rank == 0),
                                sample_size=SAMPLE_SIZE if plotting else 0, pass_dtype=settings.pass_dtype)
        for request in requests:
            for copy in copies:
                write_e0s(copy, request.index, estimate.heads[request.name].solution.e0s)
        if rank == 0:  # who reports names broken-looking labels by their place in the training file
            estimate = replace(estimate, heads={
                request.name: replace(estimate.heads[request.name], suspicious=locate_in_files(
                    request.dataset, estimate.heads[request.name].suspicious, settings.heads[request.name].train_files))
                for request in requests})
        content = estimate_report(estimate)
        if rank == 0:
            log.info("\n" + format_estimate(estimate))
            self._warn_suspicious(estimate)
            written = write_outputs(self._outputs(plotting), content, estimate)
            for what, path in written.items():
                log.info(f"--E0s={KEYWORD}: {what} written to {path}")
        return content

    def _warn_suspicious(self, estimate) -> None:
        """One warning per broken-looking label, before the first epoch, naming it."""
        for head, head_estimate in estimate.heads.items():
            left_out = head_estimate.n_excluded
            for entry in head_estimate.suspicious:
                where = (f"config {entry['index']} of {entry['file']}" if entry.get("located")
                         else f"training config {entry['index']} of {self.settings.heads[head].source}")
                log.warning(f"head '{head}': {where} looks like "
                            f"a broken label: residual {entry['residual_eV']:+.4f} eV after the E0 fit "
                            f"({entry['residual_per_atom_meV']:+.1f} meV/atom, robust z {entry['robust_z']:.0f}); "
                            + ("left out of the fit (--E0s_exclude_suspicious)" if left_out else
                               "kept in the fit; check it, or pass --E0s_exclude_suspicious=true"))

    def _head_requests(self, model, dataset):
        heads = model_heads(model)
        datasets = datasets_by_head(dataset, heads)
        foundation = self.foundation_e0s()
        requests = []
        for name, head in self.settings.heads.items():
            if name not in heads or name not in datasets:
                raise E0InputError(f"head '{name}' asked for --E0s={KEYWORD} but has no training data "
                                   f"in this run (model heads: {', '.join(heads)}).")
            data = LoadedData(without_replication(datasets[name], self._n_train_configs.get(name)),
                              self._isolated_atoms.get(name, {}), head.source)
            request, lacking = build_request(
                model, name, data, head.resolved_prior, fallback=foundation, weighting=head.weighting,
                energy_key=head.energy_key, exclude_suspicious=head.exclude_suspicious)
            log.info(f"head '{name}': the prior of --E0s={KEYWORD} is {request.prior_record.source}"
                     + (f"; it lacks {_symbols(lacking)}, which keep the foundation's E0s" if lacking else ""))
            requests.append(request)
        return requests

    # -- during and after training: nothing raised from here on ---------------------------------
    @_never_raises
    def epoch_start(self, epoch: int) -> None:
        if self.refitting and self.refitter.epoch_requests:
            with self._refit_guard(epoch):
                self.refitter.epoch_start()

    @_never_raises
    def epoch_end(self, epoch: int) -> None:
        """--E0s_refit=epoch: re-solve from the epoch's training batches, before the loop validates."""
        if not (self.refitting and self.refitter.epoch_requests):
            return
        with self._refit_guard(epoch):
            self._log_refits(self.refitter.epoch_end(epoch))
        if self.rank == 0:
            self._write_report()

    @_never_raises
    def finish(self, checkpoint_io=None) -> None:
        """--E0s_refit=final: refit the network to be saved, then record the provenance of the model
        and write the last report. ``checkpoint_io``: mace's, whose latest checkpoints mace reloads
        to save (each is refitted in its file); None: the model itself is refitted."""
        if self.refitter is None:
            return
        refitter = self.refitter
        refitter.detach()  # the loss is no longer watched: mace's closing evaluation calls it too
        refitted = False
        if self.refitting and refitter.final_requests:
            with self._refit_guard(None):
                refits = (refitter.final(checkpoint_io, stage_two=self.stage_two) if checkpoint_io is not None
                          else refitter.final_in_place())
                self._log_refits(refits)
                refitted = True
        if not refitted:  # the E0s that will be saved, for the report: mace's checkpoints', or the model's
            step = ("reading the E0s of the checkpoints mace saves from" if checkpoint_io is not None
                    else "reading the E0s of the model")
            with self._output_guard(step, "the report keeps the E0s of the last estimate or refit that succeeded"):
                if checkpoint_io is not None:
                    refitter.final(checkpoint_io, stage_two=self.stage_two, refit=False)
                else:
                    refitter.read_model_e0s()
        with self._output_guard("recording the E0 provenance in the model mace saves",
                                "the saved model's E0s; it carries no provenance"):
            # mace reloads weights into this object, then saves a copy of it
            _record_provenance(refitter.model, self._with_refits())
        if self.rank == 0:
            path = self._write_report()
            if path:
                log.info(f"--E0s={KEYWORD}: report with the E0s of the saved model(s) written to {path}")
        self.ended = True

    def close(self) -> None:
        """Stop watching the loss; nothing more is done."""
        self.ended = True
        if self.refitter is not None:
            self.refitter.detach()

    # -- failures after the first step ----------------------------------------------------------
    @contextlib.contextmanager
    def _refit_guard(self, epoch: Optional[int]):
        """A refit that fails ends the refits: one ERROR line, recorded, and the loop goes on."""
        try:
            yield
        except Exception as error:  # pylint: disable=broad-except  (out of memory included)
            failed = error if isinstance(error, RefitFailed) else None
            cause = error.__cause__ if failed is not None and error.__cause__ is not None else error
            if self.refitter is not None:
                self.refitter.detach()
            self._fail(self._refit_failure(failed, epoch, cause))

    @contextlib.contextmanager
    def _output_guard(self, step: str, kept: str):
        """An output that fails is one ERROR line; the refits go on."""
        try:
            yield
        except Exception as error:  # pylint: disable=broad-except
            self._fail(Failure(step=step, error=describe(error), kept=kept))

    def _fail(self, failure: Failure) -> None:
        self.failures.append(failure)
        log.error(failure.line)

    def _refit_failure(self, failed: Optional[RefitFailed], epoch: Optional[int], cause: BaseException) -> Failure:
        refitter = self.refitter
        heads = list(dict.fromkeys(r.name for r in (refitter.epoch_requests + refitter.final_requests)))
        names = ", ".join(f"'{h}'" for h in heads)
        final = failed is not None and failed.kind != EPOCH
        if final and failed.checkpoint is not None:
            step = f"the final E0 refit of checkpoint {failed.checkpoint} (head {names})"
            source = self._e0_source(heads, failed.epoch)
            kept = (f"that checkpoint as it was, with the E0s it was saved with ({source}), which mace saves "
                    "and evaluates; no further E0 refits in this run")
        elif final:
            step = f"the final E0 refit (head {names})"
            kept = f"the E0s of {self._e0_source(heads, None)} in the model"
        else:
            epoch = failed.epoch if failed is not None else epoch
            step = f"the E0 refit at the end of epoch {epoch} (head {names})"
            kept = (f"the E0s of {self._e0_source(heads, None)} in the model; no further E0 refits in this run"
                    + (", the final one included" if refitter.final_requests else ""))
        # The model to refit later: the checkpoint's, or for an epoch refit the last one mace saves.
        model_path = self.settings.saved_model_path(stage_two=failed.stage_two if final else self.stage_two)
        multihead = len(model_heads(refitter.model)) > 1
        commands = [command for head in heads
                    for command in refit_later_commands(self.settings, self.settings.heads[head], model_path,
                                                        multihead)]
        return Failure(step=step, error=describe(cause), kept=kept, heads=heads, commands=commands)

    def _e0_source(self, heads: List[str], up_to_epoch: Optional[int]) -> str:
        """Which estimate or refit gave the E0s that were kept: the last epoch refit (up to a
        checkpoint's epoch), else the first estimate."""
        epochs = [r.epoch for r in self.refitter.refits
                  if r.kind == EPOCH and r.head in heads and (up_to_epoch is None or r.epoch <= up_to_epoch)]
        return f"the epoch-{max(epochs)} refit" if epochs else "the first estimate"

    # -- the report -------------------------------------------------------------------------------
    def _log_refits(self, refits) -> None:
        if self.rank == 0:
            for refit in refits:
                log.info(format_refit(refit))

    def _with_refits(self) -> Dict[str, object]:
        refitter = self.refitter
        content = report_with_refits(self.report, refitter.refits, refitter.saved_e0s,
                                     refitter.model.atomic_numbers.tolist())
        if self.failures:
            content["failures"] = [failure.to_dict() for failure in self.failures]
        return content

    def _report_path(self) -> str:
        return report_path(self.settings.results_dir, self.settings.name)

    def _outputs(self, plotting: bool = False) -> Outputs:
        """The run's report, ``{results_dir}/{name}_E0s_linear_system.json``, and its figure(s) beside it."""
        report = self._report_path()
        figure = report[:-len(".json")] + ".png" if plotting else None
        return Outputs(report=report, figure=figure, figure_failure_is_error=False)  # a figure never fails a fine-tune

    def _write_report(self) -> Optional[str]:
        """The report with the refits and failures so far; None if it could not be written."""
        outputs = self._outputs()
        with self._output_guard(f"writing the report {outputs.report}", "the E0s in the model and its checkpoints"):
            return write_outputs(outputs, self._with_refits())["report"]
        return None


def _record_provenance(model, content: Dict[str, object]) -> None:
    """The report's provenance into the model: a plain attribute, which survives mace's
    load_latest (weights only) and the deepcopy it saves, so every saved .model carries it."""
    if not content.get("heads"):  # a restart without its report has nothing to record
        return
    try:
        set_provenance(model, provenance_from_report(content))
    except E0InputError as error:  # a restart from an older plugin's report: train on, without it
        log.warning(f"--E0s={KEYWORD}: no E0 provenance recorded ({error.message})")
