"""``mace_run_train --E0s=linear_system``: the plugin's life cycle inside mace's training run.

``TrainingDoor`` is what mace (or our wrappers of mace-torch 0.3.16, in ``_adapters``) calls, one
method per step of the run, in order:

    add_arguments(parser)                   our options, in mace's own parser (--help, YAML)
    configure(args)                         read our options, fail early on bad ones: starts a run
    dataset_loaded(head, configs, atoms)    note a head's training set and IsolatedAtom energies
    atomic_energies(E0s, z_table, ...)      E0s to build the model with: the foundation's
    before_training(model, train_loader, ...)  collect, solve, write into every copy, report
    epoch_start(epoch)                      --E0s_refit=epoch: gather statistics from the loss...
    epoch_end(epoch)                        ...and re-solve before mace validates
    after_training(checkpoint_handler, ...) --E0s_refit=final: refit the checkpoints mace reloads: ends the run
    training_failed()                       tools.train raised: ends the run

The door holds at most one ``LinearSystemRun``: ``configure`` starts it and ``end`` is the one place
it stops. Bad input stops mace before the first step with one line (a SystemExit), options
spelled as mace_run_train spells them.

Why at the entry of training: by then the model is built, LoRA is injected, the cueq conversion
and any checkpoint restore are done, and mace 0.3.16's ``load_foundations_elements`` has had its
chance to overwrite ``atomic_energies`` with the foundation's. Writing any earlier would be undone.
Why the final refit rewrites checkpoints: after training, mace 0.3.16 reloads the latest
checkpoint(s) to save ``name.model`` and to evaluate; anything written into the model is lost.
"""

import ast
import functools
import logging
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional

from ..errors import E0InputError
from ..doors import OPTIONS, training_spelling

KEYWORD = "linear_system"
# Ours, as --E0s_<name> in mace's parser; each can be set per head too, but the pass dtype (one network).
OUR_OPTIONS = ("prior", "weighting", "max_configs", "se_tolerance", "refit", "exclude_suspicious", "dtype")
HEAD_OPTIONS = ("weighting", "max_configs", "se_tolerance", "refit", "exclude_suspicious")
ERROR_PREFIX = "mace-e0-plugin: error: "

log = logging.getLogger("mace_e0_plugin")


def add_arguments(parser) -> None:
    """Our options, grouped in mace's parser so that --help and --config YAML files know them.
    Each can also be set per head in a ``heads:`` YAML block."""
    for action in parser._actions:  # pylint: disable=protected-access
        if action.dest == "E0s" and KEYWORD not in (action.help or ""):
            action.help = (f"{action.help}; or '{KEYWORD}' to re-estimate them from the foundation "
                           "model's errors on the training data (mace-e0-plugin)")
    group = parser.add_argument_group(
        "E0 re-estimation (mace-e0-plugin)",
        f"With --E0s={KEYWORD}, the model about to be trained is run over the training data before "
        "the first epoch, and its E0s are corrected by least squares on E_ref - E_pred.")
    for name in OUR_OPTIONS:
        option = OPTIONS[name]
        # Text, checked in configure: one check, and one error, for the command line and heads: blocks.
        group.add_argument(option.train, type=str, default=option.default, help=option.help,
                           choices=list(option.choices) if option.choices else None)


@dataclass
class HeadPlan:
    """What one head asked for, and what mace told us about its data while loading."""

    name: str
    weighting: str
    prior: object  # io.Prior: automatic, 'foundation' or a file, read at the start of the run
    energy_key: str
    train_files: List[str]
    max_configs: Optional[int] = None
    se_tolerance: Optional[float] = None
    refit: FrozenSet[str] = frozenset()  # --E0s_refit: when to re-solve during and after training
    exclude_suspicious: bool = False  # --E0s_exclude_suspicious: fit without broken-looking labels
    isolated_atoms: Optional[Dict[int, float]] = None  # the training file's IsolatedAtom frames
    n_train_configs: Optional[int] = None  # xyz heads: before mace replicates them for replay

    @property
    def source(self) -> str:
        return f"{', '.join(self.train_files)} (energy key '{self.energy_key}')"


def plan_run(args) -> Optional["LinearSystemRun"]:
    """The run's plan for every head that asked for linear_system, or None; fails before any data load."""
    from ..glue import MODES, REPLAY_HEAD
    from ..io import prior_from

    heads = _head_dicts(args)
    if str(heads.get(REPLAY_HEAD, {}).get("E0s", "")).lower() == KEYWORD:
        raise E0InputError(f"--E0s={KEYWORD} cannot apply to {REPLAY_HEAD}: the replay head keeps the "
                           "foundation's E0s. Set it on the fine-tuning heads only.")
    requested = {name: head for name, head in heads.items()
                 if name != REPLAY_HEAD and str(head.get("E0s", args.E0s)).lower() == KEYWORD}
    if not requested:
        return None
    if args.foundation_model is None:
        raise E0InputError(
            f"--E0s={KEYWORD} corrects the E0s of a pretrained model and needs --foundation_model. "
            "To train from scratch use --E0s=average, a JSON file of E0s, or isolated atoms in the "
            "training file.")
    plans = {}
    for name, head in requested.items():
        def given(option: str, head=head):
            flag = OPTIONS[option].train.lstrip("-")
            return head.get(flag, getattr(args, flag, None))

        try:
            energy_key = head.get("energy_key", args.energy_key)
            values = {option: OPTIONS[option].value(given(option)) for option in HEAD_OPTIONS}
            prior = prior_from(given("prior"), energy_key)
        except E0InputError as error:  # where a heads: block set it, say which head and where
            spell = functools.partial(training_spelling, head=name, head_options=head)
            ours = any(OPTIONS[option].train.lstrip("-") in head for option in OUR_OPTIONS)
            raise E0InputError((f"head '{name}': " if ours else "") + error.render(spell)) from None
        train_files = head.get("train_file", args.train_file)
        plans[name] = HeadPlan(name=name, weighting=values["weighting"], prior=prior, energy_key=energy_key,
                               train_files=[train_files] if isinstance(train_files, str) else list(train_files or []),
                               max_configs=values["max_configs"], se_tolerance=values["se_tolerance"],
                               refit=MODES[values["refit"]], exclude_suspicious=values["exclude_suspicious"])
    return LinearSystemRun(args, plans, OPTIONS["dtype"].value(getattr(args, "E0s_dtype", None)))


def _head_dicts(args) -> Dict[str, dict]:
    heads = args.heads
    if heads is None:
        return {"Default": {}}
    return dict(ast.literal_eval(heads) if isinstance(heads, str) else heads)


def _symbols(numbers) -> str:
    from ase.data import chemical_symbols

    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in numbers)


class LinearSystemRun:
    """One mace_run_train run that asked for linear_system on some head: its steps."""

    def __init__(self, args, heads: Dict[str, HeadPlan], pass_dtype: str):
        self.args = args
        self.heads = heads
        self.pass_dtype = pass_dtype  # --E0s_dtype: the network's dtype in our passes (not the loss's)
        self._foundation_e0s: Optional[Dict[int, float]] = None
        self.refitter = None  # a glue.Refitter while tools.train runs, if any head refits
        self.report: Dict[str, object] = {}  # the JSON report's content
        self.rank = 0

    def foundation_e0s(self) -> Dict[int, float]:
        if self._foundation_e0s is None:
            from ._mace_run import read_foundation_e0s

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
        if not isinstance(E0s, str) or E0s.lower() != KEYWORD:
            return None
        if model_foundation is not None and self._foundation_e0s is None:
            from ._mace_run import foundation_e0s

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
        from ..glue import agree
        from ._mace_run import restored_from_checkpoint

        self.rank = rank
        requests = self._head_requests(model, train_loader.dataset)
        copies = [model] + ([swa.model] if swa is not None else [])
        if agree(restored_from_checkpoint(self.args, checkpoint_handler), distributed):  # rank 0's file system decides
            from ..io import read_report, report_path

            log.info(f"--E0s={KEYWORD}: restarted from a checkpoint, whose E0s were already re-estimated; "
                     "keeping them")
            self.report = read_report(report_path(self.args.results_dir, self.args.name))
        else:
            self.report = self._estimate(model, requests, copies, device, distributed, rank)
        _record_provenance(model, self.report)
        modes = {name: plan.refit for name, plan in self.heads.items()}
        if not any(modes.values()):
            return False
        from torch.optim import LBFGS

        from ..glue import Refitter
        from ..io import save_torch

        args = self.args
        self.refitter = Refitter(requests, modes, model, copies, device, save=save_torch,
                                 batch_size=args.valid_batch_size, num_workers=args.num_workers,
                                 pin_memory=args.pin_memory, distributed=distributed, rank=rank,
                                 one_pass_per_epoch=not isinstance(optimizer, LBFGS), pass_dtype=self.pass_dtype)
        self.refitter.attach(loss_fn, swa.loss_fn if swa is not None else None)
        return True

    def _estimate(self, model, requests, copies, device, distributed: bool, rank: int):
        from ..glue import SAMPLE_SIZE, estimate_e0s, write_e0s
        from ..io import estimate_report, format_estimate, write_outputs
        from ._mace_run import locate_in_files

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
        from ..doors import build_request
        from ..glue import LoadedData, model_heads
        from ._mace_run import datasets_by_head, without_replication

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
                max_configs=plan.max_configs, se_tolerance=plan.se_tolerance, seed=getattr(self.args, "seed", 0),
                energy_key=plan.energy_key, exclude_suspicious=plan.exclude_suspicious)
            log.info(f"head '{name}': the prior of --E0s={KEYWORD} is {prior_info['source']}"
                     + (f"; it lacks {_symbols(lacking)}, which keep the foundation's E0s" if lacking else ""))
            requests.append(request)
        return requests

    # -- during and after training --------------------------------------------------------------
    def epoch_start(self, epoch: int) -> None:  # pylint: disable=unused-argument
        if self.refitter is not None:
            self.refitter.epoch_start()

    def epoch_end(self, epoch: int) -> None:
        """--E0s_refit=epoch: re-solve from the epoch's training batches, before mace validates."""
        if self.refitter is None:
            return
        refits = self.refitter.epoch_end(epoch)
        self._log_refits(refits)
        if refits and self.rank == 0:
            self._write_report(self._with_refits())

    def after_training(self, checkpoint_handler=None, swa=None, **_unused) -> None:
        """--E0s_refit=final: refit the checkpoints mace is about to reload, then the last report."""
        if self.refitter is None:
            return
        try:
            if checkpoint_handler is not None:
                self._log_refits(self.refitter.final(checkpoint_handler.io, stage_two=swa is not None))
        finally:
            self.close()
        content = self._with_refits()
        _record_provenance(self.refitter.model, content)  # mace reloads weights into this object, then saves it
        if self.rank == 0:
            path = self._write_report(content)
            log.info(f"--E0s={KEYWORD}: report with the E0s of the saved model(s) written to {path}")

    def close(self) -> None:
        """Stop watching mace's loss."""
        if self.refitter is not None:
            self.refitter.detach()

    def _log_refits(self, refits) -> None:
        from ..io import format_refit

        if self.rank == 0:
            for refit in refits:
                log.info(format_refit(refit))

    def _with_refits(self) -> Dict[str, object]:
        from ..io import report_with_refits

        refitter = self.refitter
        return report_with_refits(self.report, refitter.refits, refitter.saved_e0s,
                                  refitter.model.atomic_numbers.tolist())

    def _outputs(self, plotting: bool = False):
        """The run's report, ``{results_dir}/{name}_E0s_linear_system.json``, and its figure(s) beside it."""
        from ..io import Outputs, report_path

        report = report_path(self.args.results_dir, self.args.name)
        figure = report[:-len(".json")] + ".png" if plotting else None
        return Outputs(report=report, figure=figure, figure_failure_is_error=False)  # a figure never fails a fine-tune

    def _write_report(self, content: Dict[str, object]) -> str:
        from ..io import write_outputs

        return write_outputs(self._outputs(), content)["report"]


def _record_provenance(model, content: Dict[str, object]) -> None:
    """The report's provenance into the model: a plain attribute, which survives mace's
    load_latest (weights only) and the deepcopy it saves, so every saved .model carries it."""
    from ..glue import set_provenance
    from ..io import provenance_from_report

    if not content.get("heads"):  # a restart without its report has nothing to record
        return
    try:
        set_provenance(model, provenance_from_report(content))
    except E0InputError as error:  # a restart from an older plugin's report: train on, without it
        log.warning(f"--E0s={KEYWORD}: no E0 provenance recorded ({error.message})")


def _stops_training(step):
    """Bad input stops mace before its first step: one line, in mace_run_train's spelling of options,
    and no traceback (a SystemExit, as argparse's own errors are)."""
    @functools.wraps(step)
    def guarded(door: "TrainingDoor", *args, **kwargs):
        try:
            return step(door, *args, **kwargs)
        except E0InputError as error:
            door.end()
            raise SystemExit(ERROR_PREFIX + error.render(training_spelling)) from None
    return guarded


class TrainingDoor:
    """The run in progress, if it asked for linear_system: ``configure`` starts it, ``end`` stops it."""

    def __init__(self):
        self.run: Optional[LinearSystemRun] = None

    @property
    def active(self) -> bool:
        return self.run is not None

    def add_arguments(self, parser) -> None:
        add_arguments(parser)

    @_stops_training
    def configure(self, args) -> Optional[LinearSystemRun]:
        self.end()
        self.run = plan_run(args)
        return self.run

    @_stops_training
    def dataset_loaded(self, head_name: str, train_configs, isolated_atoms: Optional[dict]) -> bool:
        return self.run is not None and self.run.dataset_loaded(head_name, train_configs, isolated_atoms)

    @_stops_training
    def atomic_energies(self, E0s, z_table, model_foundation=None):  # pylint: disable=invalid-name
        return None if self.run is None else self.run.atomic_energies(E0s, z_table, model_foundation)

    @_stops_training
    def before_training(self, **train_arguments) -> None:
        if self.run is not None and not self.run.before_training(**train_arguments):
            self.end()  # nothing more to do in this run

    def epoch_start(self, epoch: int) -> None:
        if self.run is not None:
            self.run.epoch_start(epoch)

    def epoch_end(self, epoch: int) -> None:
        if self.run is not None:
            self.run.epoch_end(epoch)

    @_stops_training
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
