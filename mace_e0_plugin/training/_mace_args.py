"""mace's run options, the one place that reads them: our options in mace's parser, whether any head
asks for ``--E0s=linear_system`` (read from the E0s values alone), and ``settings_from_args``, which
turns mace's argparse ``Namespace`` into the typed ``RunSettings`` once. Nothing else reads it.

``asks_for_linear_system`` is the only code of ours that runs in a run that did not ask, so it
reads nothing but the ``E0s`` values, and a fault in it cannot change such a run (``_door``).
"""

import ast
import functools
from typing import Dict

from ..errors import E0InputError
from ..glue import MODES, REPLAY_HEAD
from ..io import prior_from
from ..services import OPTIONS, training_spelling
from ._settings import HeadSettings, RunSettings

KEYWORD = "linear_system"
# Ours, as --E0s_<name> in mace's parser, as declared (services); each can be set per head too,
# but the pass dtype (one network). The prior is read on its own (a file).
OUR_OPTIONS = tuple(name for name, option in OPTIONS.items() if option.added_to_training)
HEAD_OPTIONS = tuple(name for name in OUR_OPTIONS if OPTIONS[name].per_head and name != "prior")
GROUP_TITLE = "E0 re-estimation (mace-e0-plugin)"


def add_arguments(parser) -> None:
    """Our options, grouped in mace's parser so that --help and --config YAML files know them.
    Each can also be set per head in a ``heads:`` YAML block. A parser that already has one of
    them (another copy of the plugin, or a mace that took the name) is left as it was."""
    flags = [OPTIONS[name].train for name in OUR_OPTIONS]
    if any(flag in parser._option_string_actions for flag in flags):  # pylint: disable=protected-access
        return
    group = parser.add_argument_group(
        GROUP_TITLE,
        f"With --E0s={KEYWORD}, the model about to be trained is run over the training data before "
        "the first epoch, and its E0s are corrected by least squares on E_ref - E_pred.")
    for name in OUR_OPTIONS:
        option = OPTIONS[name]
        # Text, checked in plan_heads: one check, and one error, for the command line and heads:
        # blocks; no argparse choices, so that choices are case-insensitive as mace's per-head E0s are.
        text = option.help + (f" ({' | '.join(option.choices)})" if option.choices else "")
        group.add_argument(option.train, type=str, default=option.default, help=text)
    for action in parser._actions:  # pylint: disable=protected-access
        if action.dest == "E0s" and KEYWORD not in (action.help or ""):
            action.help = (f"{action.help}; or '{KEYWORD}' to re-estimate them from the foundation "
                           "model's errors on the training data (mace-e0-plugin)")


def asks_for_linear_system(args) -> bool:
    """Whether ``--E0s`` or a head's ``E0s`` says linear_system (any case, as mace reads per-head
    values). Reads those values only."""
    return any(_is_keyword(head.get("E0s", args.E0s)) for head in head_dicts(args).values())


def mentions_linear_system(args) -> bool:
    """The fallback when ``asks_for_linear_system`` cannot read ``args``: does the keyword appear
    in any of its values? A run that may have asked is stopped rather than trained without us."""
    try:
        values = vars(args).values()
    except TypeError:
        values = [args]
    return any(KEYWORD in str(value).lower() for value in values)


def _is_keyword(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == KEYWORD


def head_dicts(args) -> Dict[str, dict]:
    """``{head: its options}`` from mace's ``--heads`` (a dict, or its text from the command line)."""
    heads = args.heads
    if heads is None:
        return {"Default": {}}
    return dict(ast.literal_eval(heads) if isinstance(heads, str) else heads)


def settings_from_args(args) -> RunSettings:
    """The run's settings, from mace's ``Namespace``; one E0InputError, before any data are loaded,
    for a bad option. Only for a run that asks for linear_system (``asks_for_linear_system``)."""
    return RunSettings(
        heads=heads_from_args(args), foundation=args.foundation_model, foundation_head=args.foundation_head,
        foundation_dtype=args.default_dtype, pass_dtype=OPTIONS["dtype"].value(getattr(args, "E0s_dtype", None)),
        batch_size=args.valid_batch_size, num_workers=args.num_workers, pin_memory=bool(args.pin_memory),
        results_dir=args.results_dir, name=args.name, model_dir=args.model_dir or args.work_dir,
        restart_latest=bool(getattr(args, "restart_latest", False)), plot=bool(getattr(args, "plot", False)))


def heads_from_args(args) -> Dict[str, HeadSettings]:
    """The settings of every head that asked for linear_system."""
    heads = head_dicts(args)
    if _is_keyword(str(heads.get(REPLAY_HEAD, {}).get("E0s", ""))):
        raise E0InputError(f"--E0s={KEYWORD} cannot apply to {REPLAY_HEAD}: the replay head keeps the "
                           "foundation's E0s. Set it on the fine-tuning heads only.")
    requested = {name: head for name, head in heads.items()
                 if name != REPLAY_HEAD and _is_keyword(head.get("E0s", args.E0s))}
    if requested and args.foundation_model is None:
        raise E0InputError(
            f"--E0s={KEYWORD} corrects the E0s of a pretrained model and needs --foundation_model. "
            "To train from scratch use --E0s=average, a JSON file of E0s, or isolated atoms in the "
            "training file.")
    return {name: _head_settings(args, name, head) for name, head in requested.items()}


def _head_settings(args, name: str, head: dict) -> HeadSettings:
    def given(option: str):
        flag = OPTIONS[option].train.lstrip("-")
        return head.get(flag, getattr(args, flag, None))

    try:
        energy_key = head.get("energy_key", args.energy_key)
        values = {option: OPTIONS[option].value(given(option)) for option in HEAD_OPTIONS}
        resolved_prior = prior_from(given("prior"), energy_key)
    except E0InputError as error:  # where a heads: block set it, say which head and where
        spell = functools.partial(training_spelling, head=name, head_options=head)
        ours = any(OPTIONS[option].train.lstrip("-") in head for option in OUR_OPTIONS)
        raise E0InputError((f"head '{name}': " if ours else "") + error.render(spell)) from None
    train_files = head.get("train_file", args.train_file)
    return HeadSettings(name=name, weighting=values["weighting"], resolved_prior=resolved_prior, energy_key=energy_key,
                        train_files=(train_files,) if isinstance(train_files, str) else tuple(train_files or ()),
                        refit=MODES[values["refit"]], exclude_suspicious=values["exclude_suspicious"])
