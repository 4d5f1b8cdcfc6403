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

Two adapters call them. A mace-torch with the ``mace.plugins`` entry-point hook (patches/) calls
``MacePlugin``. mace-torch 0.3.16 has none, so ``install()`` wraps the functions that lead to those
steps (``tools.build_default_arg_parser``, ``tools.check_args``, ``get_dataset_from_xyz``,
``get_atomic_energies``, ``tools.train``, ``train_one_epoch``); the wrappers do nothing unless the
run asked for ``linear_system`` on at least one head.

Why at the entry of training: by then the model is built, LoRA is injected, the cueq conversion
and any checkpoint restore are done, and mace 0.3.16's ``load_foundations_elements`` has had its
chance to overwrite ``atomic_energies`` with the foundation's. Writing any earlier would be undone.
Why the final refit rewrites checkpoints: after training, mace 0.3.16 reloads the latest
checkpoint(s) to save ``name.model`` and to evaluate; anything written into the model is lost.
"""

import ast
import functools
import importlib
import inspect
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional

from .errors import E0InputError
from .priors import FOUNDATION, check_prior_source, choose_prior, prior_vector, read_prior_file
from .refit import DEFAULT_MODE as DEFAULT_REFIT
from .refit import MODES as REFIT_MODES

KEYWORD = "linear_system"
SUPPORTED_MACE = "mace-torch 0.3.x (tested with 0.3.16)"
_MARK = "_mace_e0_plugin_wraps"

log = logging.getLogger("mace_e0_plugin")

_run: Optional["LinearSystemRun"] = None  # the mace_run_train run in progress, if it uses linear_system


# -- the life cycle -------------------------------------------------------------------------------
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


@dataclass
class HeadPlan:
    """What one head asked for, and what mace told us about its data while loading."""

    name: str
    weighting: str
    prior_source: Optional[str]  # --E0s_prior: None (automatic), 'foundation' or a file
    file_prior: Optional[Dict[int, float]]  # read from that file at the start of the run
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
            self._foundation_e0s = read_foundation_e0s(self.args)
        return self._foundation_e0s


def configure(args) -> Optional[LinearSystemRun]:
    """Read our options for every head that asked for linear_system; fail before any data load."""
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
        source = head.get("E0s_prior", getattr(args, "E0s_prior", None))
        option = "--E0s_prior" if "E0s_prior" not in head else f"heads.{name}.E0s_prior"
        check_prior_source(source, option)
        energy_key = head.get("energy_key", args.energy_key)
        file_prior = None if source in (None, FOUNDATION) else read_prior_file(source, energy_key, option)
        train_files = head.get("train_file", args.train_file)
        plans[name] = HeadPlan(name=name, weighting=weighting, prior_source=source, file_prior=file_prior,
                               energy_key=energy_key,
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


def foundation_e0s(model, args) -> Dict[int, float]:
    """A foundation model's E0s by element: of ``--foundation_head`` if it has several heads."""
    from .models import model_atomic_numbers, model_heads, read_e0s, select_head

    heads = model_heads(model)
    index = select_head(heads, args.foundation_head, "--foundation_head") if len(heads) > 1 else 0
    return dict(zip(model_atomic_numbers(model), read_e0s(model, index)))


def read_foundation_e0s(args) -> Dict[int, float]:
    """mace 0.3.16 keeps its foundation model to itself, so we read ``--foundation_model`` again."""
    return foundation_e0s(_load_foundation(args), args)


def _load_foundation(args):
    import torch

    source = args.foundation_model
    if os.path.isfile(source):
        return torch.load(source, map_location="cpu", weights_only=False)
    from mace.calculators import foundations_models as named

    options = dict(device="cpu", default_dtype=args.default_dtype)
    if source in getattr(named, "polar_model_names", []):
        return named.mace_polar(model=source, return_raw_model=True, **options)
    if source in [name for name in named.mace_mp_names if name]:
        return named.mace_mp(model=source, return_raw_model=True, **options)
    if source in ("small_off", "medium_off", "large_off"):
        return named.mace_off(model=source.split("_")[0], return_raw_model=True, **options)
    if source == "mace_omol":
        return named.mace_omol(return_raw_model=True, **options)
    raise E0InputError(f"--foundation_model={source}: no such file, and not a model name mace knows.")


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
    args = run.args
    run.rank = rank
    requests = _head_requests(run, model, train_loader.dataset)
    copies = [model] + ([swa.model] if swa is not None else [])
    if _restored_from_checkpoint(args, checkpoint_handler):
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
        path = _write_report(run.args, content)
        log.info(f"--E0s={KEYWORD}: report written to {path}")
        if plotting:
            _plot(estimate, path)
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


def _write_report(args, content: Dict[str, object]) -> str:
    from .files import write_json
    from .report import report_path

    return write_json(report_path(args.results_dir, args.name), content)


def _previous_report(args) -> Dict[str, object]:
    """A restarted run goes on with the report of the run it restarts, if it is there."""
    import json

    from .report import report_path

    try:
        with open(report_path(args.results_dir, args.name), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _plot(estimate, report_file: str) -> None:
    from .plot import plot_solution

    stem = report_file[:-len(".json")]
    for head, solution in estimate.solutions.items():
        path = f"{stem}.png" if len(estimate.solutions) == 1 else f"{stem}_{head}.png"
        try:
            plot_solution(path, head, solution, estimate.samples.get(head))
            log.info(f"--E0s={KEYWORD}: figure written to {path}")
        except (Exception, E0InputError) as error:  # a figure is never worth a failed fine-tune
            log.warning(f"--E0s={KEYWORD}: could not plot ({error})")


def _head_requests(run: LinearSystemRun, model, dataset):
    from .estimate import HeadRequest
    from .models import model_atomic_numbers, model_heads

    heads = model_heads(model)
    datasets = _datasets_by_head(dataset, heads)
    foundation = run.foundation_e0s()
    elements = model_atomic_numbers(model)
    requests = []
    for name, plan in run.heads.items():
        if name not in heads or name not in datasets:
            raise E0InputError(f"head '{name}' asked for --E0s={KEYWORD} but has no training data "
                               f"in this run (model heads: {', '.join(heads)}).")
        prior, prior_info = choose_prior(plan.prior_source, plan.file_prior, plan.isolated_atoms)
        values, fell_back = prior_vector(elements, prior or foundation, foundation)
        log.info(f"head '{name}': the prior of --E0s={KEYWORD} is {prior_info['source']}"
                 + (f"; it lacks {_symbols(fell_back)}, which keep the foundation's E0s" if fell_back else ""))
        requests.append(HeadRequest(
            name=name, index=heads.index(name), weighting=plan.weighting, prior_e0s=values,
            dataset=_without_replication(datasets[name], plan.n_train_configs), source=plan.source,
            max_configs=plan.max_configs, se_tolerance=plan.se_tolerance, seed=getattr(run.args, "seed", 0),
            prior=prior_info))
    return requests


def _datasets_by_head(dataset, heads: List[str]) -> Dict[str, object]:
    """mace concatenates one dataset per head (replay pt_head data included); each config
    carries its head's index. Returns each head's dataset, the graphs training already built."""
    from torch.utils.data import ConcatDataset

    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    by_head: Dict[str, list] = {}
    for part in parts:
        if len(part) > 0:
            by_head.setdefault(heads[int(part[0].head)], []).append(part)
    return {head: p[0] if len(p) == 1 else ConcatDataset(p) for head, p in by_head.items()}


def _without_replication(dataset, n_original: Optional[int]):
    """Multihead fine-tuning repeats the fine-tuning configs to balance a large replay set
    (``train += train * k``). Each config counts once: keep the first copy."""
    from torch.utils.data import Subset

    if not n_original or len(dataset) <= n_original or len(dataset) % n_original:
        return dataset
    if not (dataset[0].positions.shape == dataset[n_original].positions.shape
            and bool((dataset[0].positions == dataset[n_original].positions).all())):
        return dataset
    return Subset(dataset, range(n_original))


def _restored_from_checkpoint(args, checkpoint_handler) -> bool:
    if not getattr(args, "restart_latest", False) or checkpoint_handler is None:
        return False
    io = checkpoint_handler.io
    if not os.path.isdir(io.directory):
        return False
    prefix = f"{io.tag}_epoch-"
    return any(name.startswith(prefix) and name.endswith(".pt") for name in os.listdir(io.directory))


# -- adapter for a mace with the ``mace.plugins`` entry-point hook (see patches/) -----------------
class MacePlugin:
    """The ``mace.plugins`` entry point: mace calls these with keyword arguments."""

    @staticmethod
    def add_arguments(parser):
        if not is_disabled():
            add_arguments(parser)

    @staticmethod
    def configure(args):
        if not is_disabled():
            configure(args)

    @staticmethod
    def dataset_loaded(head_config, args):  # pylint: disable=unused-argument
        collections = head_config.collections
        dataset_loaded(head_config.head_name, collections.train if collections else [],
                       head_config.atomic_energies_dict)

    @staticmethod
    def atomic_energies(head_config, z_table, model_foundation=None, args=None):  # pylint: disable=unused-argument
        return atomic_energies(head_config.E0s, z_table, model_foundation)

    @staticmethod
    def before_training(args=None, **train_kwargs):  # pylint: disable=unused-argument
        before_training(**train_kwargs)

    @staticmethod
    def epoch_start(epoch, **_context):
        epoch_start(epoch)

    @staticmethod
    def epoch_end(epoch, **_context):
        epoch_end(epoch)

    @staticmethod
    def after_training(args=None, **train_kwargs):  # pylint: disable=unused-argument
        after_training(**train_kwargs)


def is_disabled() -> bool:
    from ._bootstrap import is_disabled as environment_says_off

    return environment_says_off()


def mace_has_plugin_hook() -> bool:
    """A mace-torch that calls ``mace.plugins`` entry points itself (patches/0002) needs no wrappers."""
    try:
        plugins = importlib.import_module("mace.tools.plugins")
    except ImportError:
        return False
    return getattr(plugins, "GROUP", None) == "mace.plugins" and callable(getattr(plugins, "call", None))


# -- adapter for mace-torch 0.3.x without the hook: wrappers -----------------------------------------
def _wrap_build_default_arg_parser(original):
    def build_default_arg_parser(*args, **kwargs):
        parser = original(*args, **kwargs)
        add_arguments(parser)
        return parser
    return build_default_arg_parser


def _wrap_check_args(original):
    def check_args(args):
        args, messages = original(args)
        configure(args)
        return args, messages
    return check_args


def _wrap_get_dataset_from_xyz(original):
    def get_dataset_from_xyz(*args, **kwargs):
        collections, isolated_atoms = original(*args, **kwargs)
        if dataset_loaded(kwargs.get("head_name", "Default"), collections.train, isolated_atoms):
            isolated_atoms = None  # else mace would build from them and ignore --E0s
        return collections, isolated_atoms
    return get_dataset_from_xyz


def _wrap_get_atomic_energies(original):
    def get_atomic_energies(E0s, train_collection, z_table, *args, **kwargs):  # pylint: disable=invalid-name
        placeholder = atomic_energies(E0s, z_table)
        if placeholder is not None:
            return placeholder
        return original(E0s, train_collection, z_table, *args, **kwargs)
    return get_atomic_energies


def _wrap_train(original):
    signature = inspect.signature(original)

    def train(*args, **kwargs):
        if _run is None:
            return original(*args, **kwargs)
        arguments = signature.bind(*args, **kwargs).arguments
        before_training(**arguments)
        try:
            result = original(*args, **kwargs)
        except BaseException:
            training_failed()
            raise
        after_training(**arguments)
        return result
    return train


def _wrap_train_one_epoch(original):
    signature = inspect.signature(original)

    def train_one_epoch(*args, **kwargs):
        if _run is None:
            return original(*args, **kwargs)
        epoch = signature.bind(*args, **kwargs).arguments["epoch"]
        epoch_start(epoch)
        result = original(*args, **kwargs)
        epoch_end(epoch)
        return result
    return train_one_epoch


# (module, attribute, wrapper factory). mace.cli.run_train binds the middle two with
# ``from ... import``, so they are patched in their home module before it loads; tools.train
# looks train_one_epoch up in its own module at each call.
_TARGETS = [
    ("mace.tools", "build_default_arg_parser", _wrap_build_default_arg_parser),
    ("mace.tools", "check_args", _wrap_check_args),
    ("mace.tools.scripts_utils", "get_dataset_from_xyz", _wrap_get_dataset_from_xyz),
    ("mace.tools.scripts_utils", "get_atomic_energies", _wrap_get_atomic_energies),
    ("mace.tools", "train", _wrap_train),
    ("mace.tools.train", "train_one_epoch", _wrap_train_one_epoch),
]


def install() -> bool:
    """Wrap mace's functions; idempotent. Returns False when mace calls us through its own plugin
    hook, and False with a warning when this mace-torch lacks something we wrap: then nothing is
    patched and mace runs as if we were absent."""
    if mace_has_plugin_hook():
        return False
    try:
        originals = [(importlib.import_module(module), name, factory) for module, name, factory in _TARGETS]
        missing = [f"{module.__name__}.{name}" for module, name, _ in originals if not hasattr(module, name)]
    except ImportError as error:
        missing = [str(error)]
    if missing:
        warnings.warn(f"mace-e0-plugin supports {SUPPORTED_MACE}; this mace-torch lacks "
                      f"{', '.join(missing)}, so --E0s={KEYWORD} is unavailable.", stacklevel=2)
        return False
    run_train = sys.modules.get("mace.cli.run_train")  # already imported: rebind its names too
    for module, name, factory in originals:
        current = getattr(module, name)
        if getattr(current, _MARK, None) is not None:
            continue
        wrapper = functools.wraps(current)(factory(current))
        setattr(wrapper, _MARK, current)
        setattr(module, name, wrapper)
        if run_train is not None and getattr(run_train, name, None) is current:
            setattr(run_train, name, wrapper)
    return True


def uninstall() -> None:
    """Undo install() (for tests)."""
    run_train = sys.modules.get("mace.cli.run_train")
    for module_name, name, _ in _TARGETS:
        module = sys.modules.get(module_name)
        current = getattr(module, name, None) if module else None
        original = getattr(current, _MARK, None)
        if original is not None:
            setattr(module, name, original)
            if run_train is not None and getattr(run_train, name, None) is current:
                setattr(run_train, name, original)
