"""Every option of the doors, declared once: its name, default, check and help, and how each door
spells it. ``mace-e0``'s parser, ``mace_run_train``'s option group and the Python API's keywords
are all built from, and checked by, these declarations.

A name is the Python keyword (``energy_key``); ``mace-e0`` spells it ``--energy-key`` and
``mace_run_train`` by its ``train`` flag (``--energy_key``, ``--E0s_weighting``). Error messages name
options as fields (``errors``), and each door renders them with its spelling here.
"""

import math
import numbers
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

from ..errors import NAME_ONLY, E0InputError, as_option
from ..glue import DEFAULT_MODE, MODES
from ..math import DEFAULT_WEIGHTING, WEIGHTINGS

DTYPES = ("float32", "float64")
PASS_DTYPE = "float32"  # the network's arithmetic is what a pass costs; the E0 sums keep float64
DEFAULT_BATCH_SIZE = 32
AUTOMATIC = None  # a default that the door decides at run time (the device, the workers)

# What an option takes, which decides how each door builds it (mace-e0's parser, most visibly).
VALUE = "value"  # a value: mace-e0 --name VALUE, mace_run_train --E0s_name=VALUE, name=VALUE from Python
FLAG = "flag"  # yes or no: mace-e0's bare --name, mace_run_train's --E0s_name=true|false, a bool from Python
POSITIONAL = "positional"  # one of mace-e0's positional arguments, named by its metavar (``cli``: MODEL)
KINDS = (VALUE, FLAG, POSITIONAL)


def default_workers(cores: Optional[int] = None) -> int:
    """DataLoader workers where none are asked for (``DEFAULT_WORKERS`` says it in words): graphs are
    built in workers, overlapped with inference, only where cores are left for both. ``cores``:
    default, those this process may run on."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores < 4 else min(4, cores // 4)


DEFAULT_WORKERS = "0 below 4 cores, else a quarter of them, at most 4"  # ``default_workers``, in words


# -- checks: (option name, value) -> the value to use, or one E0InputError naming the option ------
def _invalid(name: str, value: object, what: str) -> E0InputError:
    return E0InputError("{option}: {what}.", option=as_option(value, name), what=what)


def positive(kind: type) -> Callable[[str, object], object]:
    """A positive int or float; text (the command line, YAML) is converted; None stays None."""
    noun = "integer" if kind is int else "number"

    def check(name: str, value: object):
        if value is None:
            return None
        number = value
        if isinstance(value, str):
            try:
                number = kind(value)
            except ValueError:
                raise _invalid(name, value, f"must be a positive {noun}") from None
        if (isinstance(number, bool) or not isinstance(number, numbers.Real)
                or (kind is int and not isinstance(number, numbers.Integral))
                or not math.isfinite(number) or not number > 0):
            raise _invalid(name, value, f"must be a positive {noun}")
        return kind(number)
    return check


def workers(name: str, value: object):
    """DataLoader workers: a count of at least 0, or None to let the door decide."""
    if value is None:
        return None
    count = None
    if isinstance(value, str):
        try:
            count = int(value)
        except ValueError:
            pass
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        count = int(value)
    if count is None or count < 0:
        raise _invalid(name, value, "must be an integer, 0 or more")
    return count


def one_of(choices: Sequence[str]) -> Callable[[str, object], object]:
    def check(name: str, value: object):
        text = str(value).strip().lower() if isinstance(value, str) else value
        if text not in choices:
            raise _invalid(name, value, f"use one of {', '.join(choices)}")
        return text
    return check


def dtype_name(name: str, value: object):
    """'float32' or 'float64' (or the torch dtype); None: the model's own (mace glue's choice)."""
    if value is None:
        return None
    text = str(value).replace("torch.", "") if not isinstance(value, str) else value.strip().lower()
    if text not in DTYPES:
        raise _invalid(name, value, f"use {' or '.join(DTYPES)}")
    return text


def flag(name: str, value: object):
    """True or False; text from the command line or YAML as true/false, yes/no, 1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise _invalid(name, value, "use true or false")


TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def anything(_name: str, value: object):
    return value


# -- the declarations -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    name: str  # the Python keyword
    kind: str = VALUE  # VALUE, FLAG (checked by ``flag`` unless told otherwise) or POSITIONAL
    default: object = None
    help: str = ""
    check: Callable[[str, object], object] = anything
    choices: Optional[Sequence[str]] = None
    train: Optional[str] = None  # mace_run_train's flag (ours start --E0s_); None: not an option of training
    per_head: bool = False  # ours: can also be set per head in a heads: block
    python: Optional[str] = None  # the Python keyword where it is not ``name``
    cli: Optional[str] = None  # mace-e0's flag, or its positional's metavar; default --name-with-dashes
    metavar: Optional[str] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == POSITIONAL and (not self.cli or self.cli.startswith("--")):
            raise ValueError(f"option {self.name}: a positional is declared with its metavar (cli='NAME')")
        if self.kind == FLAG and self.check is anything:
            object.__setattr__(self, "check", flag)  # a flag's value is a yes or no, whatever the door

    @property
    def cli_flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")

    @property
    def added_to_training(self) -> bool:
        """One the plugin adds to mace's parser (the others are mace's own, which training reads)."""
        return bool(self.train and self.train.startswith(TRAINING_PREFIX))

    def value(self, given: object) -> object:
        """``given`` checked (and converted from text); its default when None."""
        return self.check(self.name, self.default if given is None else given)


TRAINING_PREFIX = "--E0s_"


def _declare(*options: Option) -> Dict[str, Option]:
    return {option.name: option for option in options}


OPTIONS: Dict[str, Option] = _declare(
    # where the data and model are
    Option("model", POSITIONAL, cli="MODEL", help="a MACE .model file"),
    Option("data", POSITIONAL, cli="DATA", python="configs",
           help="extxyz (or any ASE format), MACE h5, or LMDB; from Python also a list of ase.Atoms"),
    Option("e0s", POSITIONAL, cli="E0S",
           help="{Z: eV}, as written by estimate --e0s-json, or the estimate's report (estimate --output), whose "
                "provenance the new model then carries"),
    Option("energy_key", train="--energy_key", help="info key of the reference energy in extxyz DATA"),
    Option("forces_key", train="--forces_key", help="arrays key of the reference forces in extxyz DATA"),
    Option("head", train="--foundation_head",
           help="head of a multihead model (default: mace's, the first that is not pt_head)"),
    # what the estimate does
    Option("prior", train="--E0s_prior", per_head=True, metavar="PRIOR",
           help="E0s along the element combinations the data cannot determine (e.g. every frame has the same "
                "stoichiometry): 'foundation' (the model's E0s), a JSON file {Z: eV}, or an extxyz of isolated "
                "atoms at the data's level of theory (the strongest prior). Default: the data's "
                "config_type=IsolatedAtom frames if any, else 'foundation'. diagnose shows each E0 beside it."),
    Option("weighting", default=DEFAULT_WEIGHTING, check=one_of(WEIGHTINGS), choices=WEIGHTINGS,
           train="--E0s_weighting", per_head=True,
           help="'per_atom' (default) minimises MACE's energy loss, weight*((E_ref-E_pred)/N)^2; 'total' is the "
                "unweighted fit of total energies, as in --E0s=estimated."),
    Option("max_configs", check=positive(int),
           help="estimate from a composition-stratified sample of at most this many configs, so that a giant "
                "file costs a fixed amount (the same sample every time). Default: all of them."),
    Option("exclude_suspicious", FLAG, default=False, train="--E0s_exclude_suspicious", per_head=True,
           help="refit without the configs whose residual after the fit is far outside the others' (likely "
                "broken labels: a failed calculation, a unit slip). Default: they are listed, and kept, so that the "
                "E0s stay the least-squares optimum of MACE's loss on all the data."),
    Option("refit", default=DEFAULT_MODE, check=one_of(tuple(MODES)), choices=tuple(MODES), train="--E0s_refit",
           per_head=True,
           help="keep the E0s optimal while the network trains (its energies drift): 'epoch' re-solves them at "
                "the end of every epoch, before validation, from the training batches' own predictions (no "
                "extra pass); 'final' refits each checkpoint mace saves from, with its exact (EMA/stage-two) "
                "weights, in one no-grad pass after the last epoch; 'epoch+final' does both; 'none' keeps the "
                f"first estimate. Default: {DEFAULT_MODE}."),
    # how it runs
    Option("batch_size", default=DEFAULT_BATCH_SIZE, check=positive(int), train="--valid_batch_size",
           help=f"configs per batch of the pass (default {DEFAULT_BATCH_SIZE})"),
    Option("num_workers", default=AUTOMATIC, check=workers, train="--num_workers",
           help=f"DataLoader workers that build the graphs while the model runs (default: {DEFAULT_WORKERS})"),
    Option("device", default=AUTOMATIC, train="--device", help="cpu or cuda (default: cuda if available)"),
    Option("dtype", default=PASS_DTYPE, check=dtype_name, choices=DTYPES, train="--E0s_dtype",
           help=f"the dtype the network runs in for the estimate and refit passes (default {PASS_DTYPE}, on a copy, "
                "whatever the model's or the training's dtype: several times faster, with E0s within 1e-4 eV of "
                "float64); the reference energies, the E0 sums and the solve are float64 either way"),
    # outputs
    Option("output", help="write the JSON result here"),
    Option("e0s_json", help="write {Z: eV} here, for mace_run_train --E0s=FILE"),
    Option("plot", metavar="FIGURE.png", help="write the figure (PNG) here"),
    Option("force", FLAG, default=False, help="write over existing outputs"),
    Option("progress", FLAG, default=True, help="a progress bar while the pass runs (tqdm)"),
)


def checked(**given: object) -> Dict[str, object]:
    """Each keyword checked by its declaration (defaults filled in), or one E0InputError."""
    return {name: OPTIONS[name].value(value) for name, value in given.items()}


# -- spellings: how each door names an option in its messages ----------------------------------------
def cli_spelling(name: str, value: object) -> str:
    """``--energy-key REF`` (positionals as their metavar: ``MODEL x.model``)."""
    option = OPTIONS.get(name)
    flag = option.cli_flag if option else "--" + name.replace("_", "-")
    return flag if value is NAME_ONLY else f"{flag} {value}"


def training_spelling(name: str, value: object, head: Optional[str] = None,
                      head_options: Optional[dict] = None) -> str:
    """``--energy_key=REF``; ``heads.NAME.E0s_prior=...`` where the value came from a head's block."""
    option = OPTIONS.get(name)
    flag = option.train if option and option.train else "--" + name
    if head is not None and head_options and flag.lstrip("-") in head_options:
        flag = f"heads.{head}.{flag.lstrip('-')}"
    return flag if value is NAME_ONLY else f"{flag}={value}"
