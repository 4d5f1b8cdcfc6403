"""The one table of every option, built from what declares and uses them: the declarations
(``_options``), ``mace-e0``'s parser and the Python functions' signatures; and the table of
``mace-e0``'s exit statuses. docs/options.md holds them, and a test keeps them equal:
``python tests/doc_outputs.py --write`` writes them."""

import argparse
import inspect
from typing import Dict, List

from mace_e0_plugin.doors import EXIT_MEANINGS, build_parser, check_e0s, diagnose_e0s, reestimate_e0s
from mace_e0_plugin.services import AUTOMATIC, DEFAULT_WORKERS, OPTIONS, Option

PYTHON_FUNCTIONS = (reestimate_e0s, diagnose_e0s, check_e0s)
CELL_BAR = " \\| "  # a | inside a Markdown table cell
AUTOMATIC_DEFAULTS = {"device": "cuda if available", "num_workers": DEFAULT_WORKERS}


def cli_commands() -> Dict[str, List[str]]:
    """{option name: the mace-e0 commands that take it}, read from the parser."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # pylint: disable=protected-access
    used: Dict[str, List[str]] = {}
    for command, subparser in commands.choices.items():
        for action in subparser._actions:  # pylint: disable=protected-access
            used.setdefault(action.dest, []).append(command)
    return used


def python_functions() -> Dict[str, List[str]]:
    """{option name: the Python functions that take it as a keyword}."""
    used: Dict[str, List[str]] = {}
    for function in PYTHON_FUNCTIONS:
        for name in inspect.signature(function).parameters:
            used.setdefault(name, []).append(function.__name__)
    return used


def _default(option: Option) -> str:
    if option.default is AUTOMATIC:  # also: no default (the help says what happens)
        return AUTOMATIC_DEFAULTS.get(option.name, "")
    return f"`{str(option.default).lower() if isinstance(option.default, bool) else option.default}`"


def _training(option: Option) -> str:
    if not option.train:
        return ""
    if option.added_to_training:
        return f"`{option.train}`" + (" (per head too)" if option.per_head else "")
    return f"mace's `{option.train}`"


def options_table() -> str:
    """Markdown: one row per declared option, in declaration order."""
    cli, python = cli_commands(), python_functions()
    rows = ["| Python keyword | `mace-e0` | `mace_run_train` | default | meaning |", "|---|---|---|---|---|"]
    for name, option in OPTIONS.items():
        keyword = option.python or name
        keyword = f"`{keyword}=` ({', '.join(python[keyword])})" if keyword in python else ""
        command = f"`{option.cli_flag}` ({', '.join(cli[name])})" if name in cli else ""
        choices = CELL_BAR.join(option.choices or ())
        meaning = option.help + (f" ({choices})" if choices else "")
        rows.append(f"| {keyword} | {command} | {_training(option)} | {_default(option)} | {meaning} |")
    return "\n".join(rows) + "\n"


def exit_statuses_table() -> str:
    rows = ["| exit status | meaning |", "|---|---|"] + [f"| {code} | {text} |" for code, text in EXIT_MEANINGS.items()]
    return "\n".join(rows) + "\n"
