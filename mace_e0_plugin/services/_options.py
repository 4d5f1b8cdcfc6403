"""Every option of the doors, declared once: its name, default, check and help, and how each door
spells it. ``mace-e0``'s parser, ``mace_run_train``'s option group and the Python API's keywords
are all built from, and checked by, these declarations.

A name is the Python keyword (``energy_key``); ``mace-e0`` spells it ``--energy-key`` and
``mace_run_train`` by its ``train`` flag (``--energy_key``, ``--E0s_weighting``). Error messages name
options as fields (``errors``), and each door renders them with its spelling here.
"""

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

from ..errors import NAME_ONLY, E0InputError
from ..glue import DEFAULT_MODE, MODES
from ..math import DEFAULT_WEIGHTING, WEIGHTINGS

DTYPES = ("float32", "float64")
PASS_DTYPE = "float32"  # the network's arithmetic is what a pass costs; the E0 sums keep float64
DEFAULT_BATCH_SIZE = 32
AUTOMATIC = None  # a default that the door decides at run time (the device, the workers)


# -- checks: (option name, value) -> the value to use, or one E0InputError naming the option ------
def _invalid(name: str, value: object, what: str) -> E0InputError:
    return E0InputError(f"{{{name}}}: {what}.", **{name: value})


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
    default: object = None
    help: str = ""
    check: Callable[[str, object], object] = anything
    choices: Optional[Sequence[str]] = None
    train: Optional[str] = None  # mace_run_train's flag (ours start --E0s_); None: not an option of training
    per_head: bool = False  # ours: can also be set per head in a heads: block
    python: Optional[str] = None  # the Python keyword where it is not ``name``
    cli: Optional[str] = None  # mace-e0's flag, or its positional's metavar; default --name-with-dashes
    metavar: Optional[str] = None

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
    Option("model", cli="MODEL", help="a MACE .model file"),
    Option("data", cli="DATA", python="configs",
           help="extxyz (or any ASE format), MACE h5, or LMDB; from Python also a list of ase.Atoms"),
    Option("e0s", cli="E0S", help="{Z: eV}, as written by estimate --e0s-json, or the estimate's report "
                                  "(estimate --output), whose provenance the new model then carries"),
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
    Option("exclude_suspicious", default=False, check=flag, train="--E0s_exclude_suspicious", per_head=True,
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
           help="DataLoader workers that build the graphs while the model runs "
                "(default: 0 below 4 cores, else a quarter of them, at most 4)"),
    Option("device", default=AUTOMATIC, train="--device", help="cpu or cuda (default: cuda if available)"),
    Option("dtype", default=PASS_DTYPE, check=dtype_name, choices=DTYPES, train="--E0s_dtype",
           help=f"the dtype the network runs in for the estimate and refit passes (default {PASS_DTYPE}, on a copy, "
                "whatever the model's or the training's dtype: several times faster, with E0s within 1e-4 eV of "
                "float64); the reference energies, the E0 sums and the solve are float64 either way"),
    # outputs
    Option("output", help="write the JSON result here"),
    Option("e0s_json", help="write {Z: eV} here, for mace_run_train --E0s=FILE"),
    Option("plot", metavar="FIGURE.png", help="write the figure (PNG) here"),
    Option("force", help="write over existing outputs"),
    Option("progress", default=True, check=flag, help="a progress bar while the pass runs (tqdm)"),
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
