"""``mace_run_train --E0s=linear_system``: the plugin's life cycle inside mace's training run.

``TrainingDoor`` is the one object that mace's hooks (patches/0002) or our wrappers of mace-torch
0.3.16 (``_adapters``) call, one method per step of the run, in order::

    add_arguments(parser)                   our options, in mace's own parser (--help, YAML)
    configure(args)                         reads the E0s values; a run that asks starts here
    dataset_loaded(head, configs, atoms)    note a head's training set and IsolatedAtom energies
    atomic_energies(E0s, z_table, ...)      E0s to build the model with: the foundation's
    before_training(model, train_loader, ...)  collect, solve, write into every copy, report
    epoch_start(epoch)                      --E0s_refit=epoch: gather statistics from the loss...
    epoch_end(epoch)                        ...and re-solve before mace validates
    after_training(checkpoint_handler, ...) --E0s_refit=final: refit the checkpoints mace reloads
    training_failed()                       tools.train raised

It holds at most one ``LinearSystemRun``, and nothing else of the run lives anywhere else. Like
torch_ema's ``ExponentialMovingAverage``, it can be driven by hand around any training loop: build
one, ``configure(args)``, ``before_training(model=..., train_loader=..., device=...)``, bracket
each epoch with ``epoch_start``/``epoch_end``, and end with ``after_training``.

The rules it keeps, whoever calls it:
- A run that does not ask for linear_system is mace's own: ``configure`` reads its E0s values and
  nothing else, and a fault there leaves the run as if the plugin were not installed.
- Before the first step, bad input stops the run with one line (a SystemExit), options spelled as
  mace_run_train spells them; so does a mace-torch the wrappers were not written for.
- After the first step nothing of ours stops mace (``_failures``): a failure is one ERROR line,
  a record in the report and the provenance, and mace goes on.

Why at the entry of training: by then the model is built, LoRA is injected, the cueq conversion
and any checkpoint restore are done, and mace 0.3.16's ``load_foundations_elements`` has had its
chance to overwrite ``atomic_energies`` with the foundation's. Writing any earlier would be undone.
Why the final refit rewrites checkpoints: after training, mace 0.3.16 reloads the latest
checkpoint(s) to save ``name.model`` and to evaluate; anything written into the model is lost.
"""

import contextlib
import functools
import logging
from typing import Dict, List, Optional

from ase.data import chemical_symbols
from torch.optim import LBFGS

from ..services import build_request, training_spelling
from ..errors import E0Error, E0InputError
from ..glue import (EPOCH, SAMPLE_SIZE, LoadedData, Refitter, RefitFailed, agree, estimate_e0s, model_heads,
                    set_provenance, write_e0s)
from ..io import (Outputs, estimate_report, format_estimate, format_refit, provenance_from_report, read_report,
                  report_path, report_with_refits, save_torch, write_outputs)
from ._compat import UnsupportedMace, untested_warning
from ._failures import LOG_PREFIX, Failure, describe, refit_later_commands, saved_model_path
from ._mace_run import (datasets_by_head, foundation_e0s, locate_in_files, read_foundation_e0s,
                        restored_from_checkpoint, without_replication)
from ._plan import KEYWORD, HeadPlan, add_arguments, asks_for_linear_system, mentions_linear_system, pass_dtype, plan_heads

ERROR_PREFIX = "mace-e0-plugin: error: "

log = logging.getLogger("mace_e0_plugin")


def _symbols(numbers) -> str:
    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in numbers)


class LinearSystemRun:
    """One mace_run_train run that asked for linear_system on some head: its steps."""

    def __init__(self, args, heads: Dict[str, HeadPlan], dtype: str):
        self.args = args
        self.heads = heads
        self.pass_dtype = dtype  # --E0s_dtype: the network's dtype in our passes (not the loss's)
        self._foundation_e0s: Optional[Dict[int, float]] = None
        self.refitter: Optional[Refitter] = None  # while tools.train runs, if any head refits
        self.report: Dict[str, object] = {}  # the JSON report's content
        self.failures: List[Failure] = []  # what failed after the first step
        self.stage_two = False  # --swa: mace saves a second model
        self.rank = 0

    @property
    def refitting(self) -> bool:
        """Refits go on until one fails: the E0s then stay those of the last that succeeded."""
        return self.refitter is not None and not any(f.heads for f in self.failures)

    def foundation_e0s(self) -> Dict[int, float]:
        if self._foundation_e0s is None:
            self._foundation_e0s = read_foundation_e0s(self.args)
        return self._foundation_e0s

    # -- before training ------------------------------------------------------------------------
    def dataset_loaded(self, head_name: str, train_configs, isolated_atoms: Optional[dict]) -> bool:
        """Note a linear_system head's training-set size (mace may later repeat it to balance replay
        data) and its IsolatedAtom energies, a candidate prior. True if the head is ours."""
        plan = self.heads.get(head_name)
        if plan is None:
            return False
        plan.n_train_configs = len(train_configs)
        if isolated_atoms:
            plan.isolated_atoms = {int(z): float(e) for z, e in isolated_atoms.items()}
        return True

    def atomic_energies(self, E0s, z_table, model_foundation=None) -> Optional[Dict[int, float]]:  # pylint: disable=invalid-name
        """For --E0s=linear_system: the foundation's E0s, a well-defined placeholder to build the
        model with, replaced before the first epoch. None for any other --E0s."""
        if not isinstance(E0s, str) or E0s.strip().lower() != KEYWORD:
            return None
        if model_foundation is not None and self._foundation_e0s is None:
            self._foundation_e0s = foundation_e0s(model_foundation, self.args)
        foundation = self.foundation_e0s()
        missing = [z for z in z_table.zs if z not in foundation]
        if missing:
            raise E0InputError(
                f"the training data contain {_symbols(missing)}, which the foundation model "
                f"--foundation_model={self.args.foundation_model} has no E0 for. A fine-tune can only "
                "use the foundation's elements: drop the configs with them, or choose a foundation that "
                "covers them.")
        log.info(f"--E0s={KEYWORD}: building the model with the foundation's E0s; they are re-estimated "
                 "from the training data before the first epoch")
        return {z: foundation[z] for z in z_table.zs}

    def before_training(self, model, train_loader, device, swa=None, distributed: bool = False,
                        checkpoint_handler=None, rank: int = 0, loss_fn=None, optimizer=None,
                        **_unused) -> bool:
        """Collect, solve, write the new E0s into every copy of the model, and report; then set up
        the refits of --E0s_refit. False when nothing is left to do in this run."""
        self.rank = rank
        self.stage_two = swa is not None
        requests = self._head_requests(model, train_loader.dataset)
        copies = [model] + ([swa.model] if swa is not None else [])
        if agree(restored_from_checkpoint(self.args, checkpoint_handler), distributed):  # rank 0's file system decides
            log.info(f"--E0s={KEYWORD}: restarted from a checkpoint, whose E0s were already re-estimated; "
                     "keeping them")
            self.report = read_report(report_path(self.args.results_dir, self.args.name))
        else:
            self.report = self._estimate(model, requests, copies, device, distributed, rank)
        _record_provenance(model, self.report)
        modes = {name: plan.refit for name, plan in self.heads.items()}
        if not any(modes.values()):
            return False
        args = self.args
        self.refitter = Refitter(requests, modes, model, copies, device, save=save_torch,
                                 batch_size=args.valid_batch_size, num_workers=args.num_workers,
                                 pin_memory=args.pin_memory, distributed=distributed, rank=rank,
                                 one_pass_per_epoch=not isinstance(optimizer, LBFGS), pass_dtype=self.pass_dtype)
        self.refitter.attach(loss_fn, swa.loss_fn if swa is not None else None)
        return True

    def _estimate(self, model, requests, copies, device, distributed: bool, rank: int):
        args = self.args
        log.info(f"--E0s={KEYWORD}: running the model over the training data of head(s) "
                 f"{', '.join(r.name for r in requests)} to re-estimate E0s")
        plotting = bool(getattr(args, "plot", False)) and rank == 0
        estimate = estimate_e0s(model, requests, device, batch_size=args.valid_batch_size,
                                num_workers=args.num_workers, pin_memory=args.pin_memory,
                                distributed=distributed, progress=(rank == 0),
                                sample_limit=SAMPLE_SIZE if plotting else 0, pass_dtype=self.pass_dtype)
        for request in requests:
            for copy in copies:
                write_e0s(copy, request.index, estimate.solutions[request.name].e0s)
        if rank == 0:  # who reports names broken-looking labels by their place in the training file
            for request in requests:
                estimate.suspicious[request.name] = locate_in_files(
                    request.dataset, estimate.suspicious.get(request.name, []), self.heads[request.name].train_files)
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
        for head, found in estimate.suspicious.items():
            left_out = estimate.excluded.get(head, 0)
            for entry in found:
                where = (f"config {entry['index']} of {entry['file']}" if entry.get("located")
                         else f"training config {entry['index']} of {self.heads[head].source}")
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
        for name, plan in self.heads.items():
            if name not in heads or name not in datasets:
                raise E0InputError(f"head '{name}' asked for --E0s={KEYWORD} but has no training data "
                                   f"in this run (model heads: {', '.join(heads)}).")
            data = LoadedData(without_replication(datasets[name], plan.n_train_configs), plan.isolated_atoms or {},
                              plan.source)
            request, prior_info, lacking = build_request(
                model, name, data, plan.prior, fallback=foundation, weighting=plan.weighting,
                energy_key=plan.energy_key, exclude_suspicious=plan.exclude_suspicious)
            log.info(f"head '{name}': the prior of --E0s={KEYWORD} is {prior_info['source']}"
                     + (f"; it lacks {_symbols(lacking)}, which keep the foundation's E0s" if lacking else ""))
            requests.append(request)
        return requests

    # -- during and after training: nothing raised from here on ---------------------------------
    def epoch_start(self, epoch: int) -> None:
        if self.refitting and self.refitter.epoch_requests:
            with self._refit_guard(epoch):
                self.refitter.epoch_start()

    def epoch_end(self, epoch: int) -> None:
        """--E0s_refit=epoch: re-solve from the epoch's training batches, before mace validates."""
        if not (self.refitting and self.refitter.epoch_requests):
            return
        with self._refit_guard(epoch):
            refits = self.refitter.epoch_end(epoch)
            self._log_refits(refits)
        if self.rank == 0:
            self._write_report()

    def after_training(self, checkpoint_handler=None, **_unused) -> None:
        """--E0s_refit=final: refit the checkpoints mace is about to reload; then the provenance of
        the model mace saves, and the last report."""
        if self.refitter is None:
            return
        self.close()
        refitted = False
        if self.refitting and self.refitter.final_requests and checkpoint_handler is not None:
            with self._refit_guard(None):
                self._log_refits(self.refitter.final(checkpoint_handler.io, stage_two=self.stage_two))
                refitted = True
        if not refitted and checkpoint_handler is not None:  # the E0s mace will save, for the report
            with self._output_guard("reading the E0s of the checkpoints mace saves from", "the report keeps "
                                    "the E0s of the last estimate or refit that succeeded"):
                self.refitter.final(checkpoint_handler.io, stage_two=self.stage_two, refit=False)
        with self._output_guard("recording the E0 provenance in the model mace saves",
                                "the saved model's E0s; it carries no provenance"):
            # mace reloads weights into this object, then saves a copy of it
            _record_provenance(self.refitter.model, self._with_refits())
        if self.rank == 0:
            path = self._write_report()
            if path:
                log.info(f"--E0s={KEYWORD}: report with the E0s of the saved model(s) written to {path}")

    def close(self) -> None:
        """Stop watching mace's loss."""
        if self.refitter is not None:
            self.refitter.detach()

    # -- failures after the first step ----------------------------------------------------------
    @contextlib.contextmanager
    def _refit_guard(self, epoch: Optional[int]):
        """A refit that fails ends the refits: one ERROR line, recorded, and mace goes on."""
        try:
            yield
        except Exception as error:  # pylint: disable=broad-except  (out of memory included)
            failed = error if isinstance(error, RefitFailed) else None
            cause = error.__cause__ if failed is not None and error.__cause__ is not None else error
            self.close()
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
        heads = [r.name for r in (refitter.epoch_requests + refitter.final_requests)]
        heads = list(dict.fromkeys(heads))
        names = ", ".join(f"'{h}'" for h in heads)
        final = failed is not None and failed.checkpoint is not None
        if final:
            step = f"the final E0 refit of checkpoint {failed.checkpoint} (head {names})"
            source = self._e0_source(heads, failed.epoch)
            kept = (f"that checkpoint as it was, with the E0s it was saved with ({source}), which mace saves "
                    "and evaluates; no further E0 refits in this run")
        else:
            epoch = failed.epoch if failed is not None else epoch
            step = f"the E0 refit at the end of epoch {epoch} (head {names})"
            kept = (f"the E0s of {self._e0_source(heads, None)} in the model; no further E0 refits in this run"
                    + (", the final one included" if refitter.final_requests else ""))
        # The model to refit later: the checkpoint's, or for an epoch refit the last one mace saves.
        model_path = saved_model_path(self.args, stage_two=failed.stage_two if final else self.stage_two)
        multihead = len(model_heads(refitter.model)) > 1
        commands = [command for head in heads
                    for command in refit_later_commands(self.args, self.heads[head], model_path, multihead)]
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

    def _outputs(self, plotting: bool = False) -> Outputs:
        """The run's report, ``{results_dir}/{name}_E0s_linear_system.json``, and its figure(s) beside it."""
        report = report_path(self.args.results_dir, self.args.name)
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


@contextlib.contextmanager
def stopping_before_training(door: "TrainingDoor"):
    """Before the first step, bad input (or a mace-torch the wrappers do not support) stops mace
    with one line, in mace_run_train's spelling of options, and no traceback (a SystemExit, as
    argparse's own errors are)."""
    try:
        yield
    except E0Error as error:
        door.end()
        raise SystemExit(ERROR_PREFIX + error.render(training_spelling)) from None
    except UnsupportedMace as error:
        door.end()
        raise SystemExit(ERROR_PREFIX + str(error)) from None


def _stops_before_training(step):
    @functools.wraps(step)
    def guarded(door: "TrainingDoor", *args, **kwargs):
        with stopping_before_training(door):
            return step(door, *args, **kwargs)
    return guarded


def _never_stops_training(step):
    """After the first step: whatever escapes a run's own guards is one ERROR line, and the run
    ends; mace goes on."""
    @functools.wraps(step)
    def guarded(door: "TrainingDoor", *args, **kwargs):
        try:
            return step(door, *args, **kwargs)
        except Exception as error:  # pylint: disable=broad-except
            log.error(f"{LOG_PREFIX}{step.__name__} failed: {describe(error)}; kept: the E0s in the model and "
                      "its checkpoints as they were; the plugin does nothing more in this run")
            door.end()
            return None
    return guarded


class TrainingDoor:
    """The run in progress, if it asked for linear_system: ``configure`` starts it, ``end`` stops it.

    ``unsupported``: how the installed mace-torch differs from the tested one (``_compat``); a run
    that asks for linear_system then stops at ``configure``, and every other run is untouched.
    """

    def __init__(self, unsupported: Optional[List[str]] = None):
        self.run: Optional[LinearSystemRun] = None
        self.unsupported = unsupported

    def stopping_before_training(self):
        """A context in which bad input stops mace with one line (for the adapters' own checks)."""
        return stopping_before_training(self)

    @property
    def active(self) -> bool:
        return self.run is not None

    def add_arguments(self, parser) -> None:
        add_arguments(parser)

    def asks(self, args) -> bool:
        """Whether ``args`` ask for linear_system, reading the E0s values only. Never raises for a
        run that did not ask; a run whose options cannot be read but mention the keyword is
        stopped (UnsupportedMace), rather than trained without us."""
        try:
            return asks_for_linear_system(args)
        except Exception as error:  # pylint: disable=broad-except
            try:
                mentioned = mentions_linear_system(args)
            except Exception:  # pylint: disable=broad-except
                mentioned = False
            if mentioned:
                raise UnsupportedMace([f"its run options could not be read ({describe(error)})"]) from None
            return False

    @_stops_before_training
    def configure(self, args) -> Optional[LinearSystemRun]:
        self.end()
        if not self.asks(args):
            return None
        if self.unsupported:
            raise UnsupportedMace(self.unsupported)
        warning = untested_warning()
        if warning:
            log.warning(warning)
        heads = plan_heads(args)
        self.run = LinearSystemRun(args, heads, pass_dtype(args)) if heads else None
        return self.run

    @_stops_before_training
    def dataset_loaded(self, head_name: str, train_configs, isolated_atoms: Optional[dict]) -> bool:
        return self.run is not None and self.run.dataset_loaded(head_name, train_configs, isolated_atoms)

    @_stops_before_training
    def atomic_energies(self, E0s, z_table, model_foundation=None):  # pylint: disable=invalid-name
        return None if self.run is None else self.run.atomic_energies(E0s, z_table, model_foundation)

    @_stops_before_training
    def before_training(self, **train_arguments) -> None:
        if self.run is not None and not self.run.before_training(**train_arguments):
            self.end()  # nothing more to do in this run

    @_never_stops_training
    def epoch_start(self, epoch: int) -> None:
        if self.run is not None:
            self.run.epoch_start(epoch)

    @_never_stops_training
    def epoch_end(self, epoch: int) -> None:
        if self.run is not None:
            self.run.epoch_end(epoch)

    @_never_stops_training
    def after_training(self, **train_arguments) -> None:
        try:
            if self.run is not None:
                self.run.after_training(**train_arguments)
        finally:
            self.end()

    def training_failed(self) -> None:
        self.end()

    def end(self) -> None:
        """The one place a run stops: its loss hooks go, and it is forgotten."""
        run, self.run = self.run, None
        if run is not None:
            run.close()
