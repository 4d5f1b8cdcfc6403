"""``mace_run_train --E0s=linear_system``: the plugin's life cycle inside mace's training run.

The public functions below are named after the step of the run at which they act, in order:

    add_arguments(parser)                   our options, in mace's own parser (--help, YAML)
    configure(args)                         read our options, fail early on bad ones
    dataset_loaded(head, configs, atoms)    note a head's training set and IsolatedAtom energies
    atomic_energies(E0s, z_table, ...)      E0s to build the model with: the foundation's
    before_training(model, train_loader, ...)  collect, solve, write into every copy, report
    epoch_start(epoch)                      --E0s_refit=epoch: gather statistics from the loss...
    epoch_end(epoch)                        ...and re-solve before mace validates
    after_training(checkpoint_handler, ...) --E0s_refit=final: refit the checkpoints mace reloads

``adapters`` calls them, from mace's plugin hook or from wrappers around mace-torch 0.3.16;
``mace_training`` holds the glue to mace's objects; requests and reports go through ``pipeline``.

Why at the entry of training: by then the model is built, LoRA is injected, the cueq conversion
and any checkpoint restore are done, and mace 0.3.16's ``load_foundations_elements`` has had its
chance to overwrite ``atomic_energies`` with the foundation's. Writing any earlier would be undone.
Why the final refit rewrites checkpoints: after training, mace 0.3.16 reloads the latest
checkpoint(s) to save ``name.model`` and to evaluate; anything written into the model is lost.
"""

import ast
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, FrozenSet, List, Optional

from .errors import E0InputError
from .refit import DEFAULT_MODE as DEFAULT_REFIT
from .refit import MODES as REFIT_MODES

if TYPE_CHECKING:
    from .pipeline import Prior

KEYWORD = "linear_system"

log = logging.getLogger("mace_e0_plugin")

_run: Optional["LinearSystemRun"] = None  # the mace_run_train run in progress, if it uses linear_system


def active() -> Optional["LinearSystemRun"]:
    """The run in progress, if it asked for linear_system on any head."""
    return _run


# -- options --------------------------------------------------------------------------------------
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
    group.add_argument(
        "--E0s_prior", type=str, default=None,
        help="E0s along the element combinations the data cannot determine (e.g. every frame has "
             "the same stoichiometry): 'foundation' (the foundation model's E0s), a JSON file "
             "{Z: eV}, or an extxyz of isolated atoms. Default: the training file's "
             "config_type=IsolatedAtom frames if it has any, else 'foundation'.")
    group.add_argument(
        "--E0s_weighting", type=str, default="per_atom", choices=["per_atom", "total"],
        help="'per_atom' (default) minimises MACE's energy loss, weight*((E_ref-E_pred)/N)^2; "
             "'total' is the unweighted fit of total energies, as in --E0s=estimated.")
    group.add_argument(
        "--E0s_max_configs", type=int, default=None,
        help="Estimate from a composition-stratified sample of at most this many training configs "
             "per head, so that a giant set costs a fixed amount. Default: all of them.")
    group.add_argument(
        "--E0s_se_tolerance", type=float, default=None,
        help="Stop collecting (in stratified order) once every E0 the data determine has a standard "
             "error below this many eV. Default: no early stop.")
    group.add_argument(
        "--E0s_refit", type=str, default=DEFAULT_REFIT, choices=list(REFIT_MODES),
        help="Keep the E0s optimal while the network trains (its energies drift): 'epoch' re-solves "
             "them at the end of every epoch, before validation, from the training batches' own "
             "predictions (no extra pass); 'final' refits each checkpoint mace saves from, with its "
             "exact (EMA/stage-two) weights, in one no-grad pass after the last epoch; 'none' keeps "
             f"the first estimate. Default: {DEFAULT_REFIT}.")


# -- the life cycle -------------------------------------------------------------------------------
@dataclass
class HeadPlan:
    """What one head asked for, and what mace told us about its data while loading."""

    name: str
    weighting: str
    prior: "Prior"  # --E0s_prior: automatic, 'foundation' or a file, read at the start of the run
    energy_key: str
    train_files: List[str]
    max_configs: Optional[int] = None
    se_tolerance: Optional[float] = None
    refit: FrozenSet[str] = frozenset()  # --E0s_refit: when to re-solve during and after training
    isolated_atoms: Optional[Dict[int, float]] = None  # the training file's IsolatedAtom frames
    n_train_configs: Optional[int] = None  # xyz heads: before mace replicates them for replay

    @property
    def source(self) -> str:
        return f"{', '.join(self.train_files)} (energy key '{self.energy_key}')"


class LinearSystemRun:
    def __init__(self, args, heads: Dict[str, HeadPlan]):
        self.args = args
        self.heads = heads
        self._foundation_e0s: Optional[Dict[int, float]] = None
        self.refitter = None  # a refit.Refitter while tools.train runs, if any head refits
        self.report: Dict[str, object] = {}  # the JSON report's content
        self.rank = 0

    def foundation_e0s(self) -> Dict[int, float]:
        if self._foundation_e0s is None:
            from .mace_training import read_foundation_e0s

            self._foundation_e0s = read_foundation_e0s(self.args)
        return self._foundation_e0s


def configure(args) -> Optional[LinearSystemRun]:
    """Read our options for every head that asked for linear_system; fail before any data load."""
    from .pipeline import prior_from

    global _run
    _run = None
    heads = _head_dicts(args)
    if str(heads.get("pt_head", {}).get("E0s", "")).lower() == KEYWORD:
        raise E0InputError(f"--E0s={KEYWORD} cannot apply to pt_head: the replay head keeps the "
                           "foundation's E0s. Set it on the fine-tuning heads only.")
    requested = {name: head for name, head in heads.items()
                 if name != "pt_head" and str(head.get("E0s", args.E0s)).lower() == KEYWORD}
    if not requested:
        return None
    if args.foundation_model is None:
        raise E0InputError(
            f"--E0s={KEYWORD} corrects the E0s of a pretrained model and needs --foundation_model. "
            "To train from scratch use --E0s=average, a JSON file of E0s, or isolated atoms in the "
            "training file.")
    plans = {}
    for name, head in requested.items():
        weighting = head.get("E0s_weighting", getattr(args, "E0s_weighting", "per_atom"))
        if weighting not in ("per_atom", "total"):
            raise E0InputError(f"head '{name}': E0s_weighting={weighting}; use 'per_atom' or 'total'.")
        option = "--E0s_prior" if "E0s_prior" not in head else f"heads.{name}.E0s_prior"
        energy_key = head.get("energy_key", args.energy_key)
        prior = prior_from(head.get("E0s_prior", getattr(args, "E0s_prior", None)), energy_key, option)
        train_files = head.get("train_file", args.train_file)
        plans[name] = HeadPlan(name=name, weighting=weighting, prior=prior, energy_key=energy_key,
                               train_files=[train_files] if isinstance(train_files, str) else list(train_files or []),
                               max_configs=_positive(name, head, args, "E0s_max_configs", int, "number of configs"),
                               se_tolerance=_positive(name, head, args, "E0s_se_tolerance", float, "energy in eV"),
                               refit=_refit_mode(name, head, args))
    _run = LinearSystemRun(args, plans)
    return _run


def _positive(head_name: str, head: dict, args, option: str, kind, what: str):
    """A head's numeric option (its own, else the command line's): None or a positive ``kind``."""
    value = head.get(option, getattr(args, option, None))
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not number > 0:
        raise E0InputError(f"head '{head_name}': {option}={value!r}; give a positive {what}.")
    return number


def _refit_mode(head_name: str, head: dict, args) -> FrozenSet[str]:
    mode = str(head.get("E0s_refit", getattr(args, "E0s_refit", DEFAULT_REFIT))).strip().lower()
    if mode not in REFIT_MODES:
        option = f"heads.{head_name}.E0s_refit" if "E0s_refit" in head else "--E0s_refit"
        raise E0InputError(f"{option}={mode}; use one of {', '.join(REFIT_MODES)}.")
    return REFIT_MODES[mode]


def _head_dicts(args) -> Dict[str, dict]:
    heads = args.heads
    if heads is None:
        return {"Default": {}}
    return dict(ast.literal_eval(heads) if isinstance(heads, str) else heads)


def dataset_loaded(head_name: str, train_configs, isolated_atoms: Optional[dict]) -> bool:
    """Note a linear_system head's training-set size (mace may later repeat it to balance replay
    data) and its IsolatedAtom energies, a candidate prior. True if the head is ours."""
    plan = _run.heads.get(head_name) if _run else None
    if plan is None:
        return False
    plan.n_train_configs = len(train_configs)
    if isolated_atoms:
        plan.isolated_atoms = {int(z): float(e) for z, e in isolated_atoms.items()}
    return True


def atomic_energies(E0s, z_table, model_foundation=None) -> Optional[Dict[int, float]]:  # pylint: disable=invalid-name
    """For --E0s=linear_system: the foundation's E0s, a well-defined placeholder to build the
    model with, replaced before the first epoch. None for any other --E0s."""
    if _run is None or not isinstance(E0s, str) or E0s.lower() != KEYWORD:
        return None
    if model_foundation is not None and _run._foundation_e0s is None:
        from .mace_training import foundation_e0s

        _run._foundation_e0s = foundation_e0s(model_foundation, _run.args)
    foundation = _run.foundation_e0s()
    missing = [z for z in z_table.zs if z not in foundation]
    if missing:
        raise E0InputError(
            f"the training data contain {_symbols(missing)}, which the foundation model "
            f"--foundation_model={_run.args.foundation_model} has no E0 for. A fine-tune can only "
            "use the foundation's elements: drop the configs with them, or choose a foundation that "
            "covers them.")
    log.info(f"--E0s={KEYWORD}: building the model with the foundation's E0s; they are re-estimated "
             "from the training data before the first epoch")
    return {z: foundation[z] for z in z_table.zs}


def _symbols(numbers) -> str:
    from ase.data import chemical_symbols

    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in numbers)


def before_training(model, train_loader, device, swa=None, distributed: bool = False,
                    checkpoint_handler=None, rank: int = 0, loss_fn=None, optimizer=None,
                    **_unused) -> None:
    """Collect, solve, write the new E0s into every copy of the model, and report; then set up
    the refits of --E0s_refit."""
    global _run
    run = _run
    if run is None:
        return
    from .mace_training import restored_from_checkpoint

    args = run.args
    run.rank = rank
    requests = _head_requests(run, model, train_loader.dataset)
    copies = [model] + ([swa.model] if swa is not None else [])
    if restored_from_checkpoint(args, checkpoint_handler):
        log.info(f"--E0s={KEYWORD}: restarted from a checkpoint, whose E0s were already re-estimated; "
                 "keeping them")
        run.report = _previous_report(args)
    else:
        run.report = _estimate(run, model, requests, copies, device, distributed, rank)
    _record_provenance(model, run.report)
    modes = {name: plan.refit for name, plan in run.heads.items()}
    if not any(modes.values()):
        _run = None  # nothing more to do in this run
        return
    from torch.optim import LBFGS

    from .refit import Refitter

    run.refitter = Refitter(requests, modes, model, copies, device, batch_size=args.valid_batch_size,
                            num_workers=args.num_workers, pin_memory=args.pin_memory,
                            distributed=distributed, rank=rank,
                            one_pass_per_epoch=not isinstance(optimizer, LBFGS))
    run.refitter.attach(loss_fn, swa.loss_fn if swa is not None else None)


def _estimate(run: LinearSystemRun, model, requests, copies, device, distributed: bool, rank: int):
    from .estimate import estimate_e0s
    from .models import write_e0s
    from .pipeline import write_outputs
    from .plot import SAMPLE_SIZE
    from .report import format_estimate

    args = run.args
    log.info(f"--E0s={KEYWORD}: running the model over the training data of head(s) "
             f"{', '.join(r.name for r in requests)} to re-estimate E0s")
    plotting = bool(getattr(args, "plot", False)) and rank == 0
    estimate = estimate_e0s(model, requests, device, batch_size=args.valid_batch_size,
                            num_workers=args.num_workers, pin_memory=args.pin_memory,
                            distributed=distributed, progress=(rank == 0),
                            sample_limit=SAMPLE_SIZE if plotting else 0)
    for request in requests:
        for copy in copies:
            write_e0s(copy, request.index, estimate.solutions[request.name].e0s)
    content = estimate.to_dict()
    if rank == 0:
        log.info("\n" + format_estimate(estimate))
        written = write_outputs(_outputs(args, plotting), content, estimate)
        for what, path in written.items():
            log.info(f"--E0s={KEYWORD}: {what} written to {path}")
    return content


def epoch_start(epoch: int) -> None:  # pylint: disable=unused-argument
    if _run is not None and _run.refitter is not None:
        _run.refitter.epoch_start()


def epoch_end(epoch: int) -> None:
    """--E0s_refit=epoch: re-solve from the epoch's training batches, before mace validates."""
    if _run is None or _run.refitter is None:
        return
    refits = _run.refitter.epoch_end(epoch)
    _log_refits(refits)
    if refits and _run.rank == 0:
        _write_report(_run.args, _with_refits(_run))


def after_training(checkpoint_handler=None, swa=None, **_unused) -> None:
    """--E0s_refit=final: refit the checkpoints mace is about to reload, then the last report."""
    global _run
    run, _run = _run, None
    if run is None or run.refitter is None:
        return
    try:
        if checkpoint_handler is not None:
            _log_refits(run.refitter.final(checkpoint_handler.io, stage_two=swa is not None))
    finally:
        run.refitter.detach()
    content = _with_refits(run)
    _record_provenance(run.refitter.model, content)  # mace reloads weights into this object, then saves it
    if run.rank == 0:
        path = _write_report(run.args, content)
        log.info(f"--E0s={KEYWORD}: report with the E0s of the saved model(s) written to {path}")


def training_failed() -> None:
    """tools.train raised: stop watching the loss, and forget the run."""
    global _run
    run, _run = _run, None
    if run is not None and run.refitter is not None:
        run.refitter.detach()


def _log_refits(refits) -> None:
    from .refit import format_refit

    if _run is None or _run.rank == 0:
        for refit in refits:
            log.info(format_refit(refit))


def _with_refits(run: LinearSystemRun) -> Dict[str, object]:
    """The report with every refit so far; each head's E0s are those of the last model mace saves."""
    content = dict(run.report)
    content["refits"] = list(content.get("refits", [])) + [r.to_dict() for r in run.refitter.refits]
    heads = {name: dict(entry) for name, entry in content.get("heads", {}).items()}
    elements = run.refitter.model.atomic_numbers.tolist()
    for name, e0s in run.refitter.saved_e0s.items():
        entry = heads.setdefault(name, {})
        entry.setdefault("estimated_E0s", entry.get("E0s"))
        entry["E0s"] = {str(z): e for z, e in zip(elements, e0s)}
        if "starting_E0s" in entry:
            entry["corrections"] = {z: entry["E0s"][z] - entry["starting_E0s"][z] for z in entry["E0s"]}
    content["heads"] = heads
    return content


def _record_provenance(model, content: Dict[str, object]) -> None:
    """The report's provenance into the model: a plain attribute, which survives mace's
    load_latest (weights only) and the deepcopy it saves, so every saved .model carries it."""
    from .provenance import from_report, set_provenance

    if not content.get("heads"):  # a restart without its report has nothing to record
        return
    try:
        set_provenance(model, from_report(content))
    except E0InputError as error:  # a restart from an older plugin's report: train on, without it
        log.warning(f"--E0s={KEYWORD}: no E0 provenance recorded ({error.message})")


def _outputs(args, plotting: bool = False):
    """The run's report, ``{results_dir}/{name}_E0s_linear_system.json``, and its figure(s) beside it."""
    from .pipeline import Outputs
    from .report import report_path

    report = report_path(args.results_dir, args.name)
    figure = report[:-len(".json")] + ".png" if plotting else None
    return Outputs(report=report, figure=figure, figure_failure_is_error=False)  # a figure never fails a fine-tune


def _write_report(args, content: Dict[str, object]) -> str:
    from .pipeline import write_outputs

    return write_outputs(_outputs(args), content)["report"]


def _previous_report(args) -> Dict[str, object]:
    """A restarted run goes on with the report of the run it restarts, if it is there."""
    import json

    from .report import report_path

    try:
        with open(report_path(args.results_dir, args.name), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _head_requests(run: LinearSystemRun, model, dataset):
    from .datasets import LoadedData
    from .mace_training import datasets_by_head, without_replication
    from .models import model_heads
    from .pipeline import build_request

    heads = model_heads(model)
    datasets = datasets_by_head(dataset, heads)
    foundation = run.foundation_e0s()
    requests = []
    for name, plan in run.heads.items():
        if name not in heads or name not in datasets:
            raise E0InputError(f"head '{name}' asked for --E0s={KEYWORD} but has no training data "
                               f"in this run (model heads: {', '.join(heads)}).")
        data = LoadedData(without_replication(datasets[name], plan.n_train_configs), plan.isolated_atoms or {},
                          plan.source)
        request, prior_info, lacking = build_request(
            model, name, data, plan.prior, fallback=foundation, weighting=plan.weighting,
            max_configs=plan.max_configs, se_tolerance=plan.se_tolerance, seed=getattr(run.args, "seed", 0))
        log.info(f"head '{name}': the prior of --E0s={KEYWORD} is {prior_info['source']}"
                 + (f"; it lacks {_symbols(lacking)}, which keep the foundation's E0s" if lacking else ""))
        requests.append(request)
    return requests
