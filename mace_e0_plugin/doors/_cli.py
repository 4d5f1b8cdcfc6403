"""``mace-e0``: estimate, inspect and apply E0s without starting a training run.

    mace-e0 estimate MODEL DATA [DATA ...] --energy-key KEY [options]
    mace-e0 show MODEL
    mace-e0 apply MODEL E0S.json|REPORT.json --output NEW.model [--head NAME]
    mace-e0 check MODEL DATA [DATA ...] [--head NAME] [--output CHECK.json]
    mace-e0 diagnose MODEL DATA [DATA ...] --energy-key KEY --forces-key KEY [options]

``estimate`` goes through the same sequence as the Python API and the same collection and solve
as ``mace_run_train --E0s=linear_system``, and writes the same report. Under
``torchrun --nproc_per_node=K`` it shards the data.
"""

import argparse
import os
import sys
from typing import List, Optional

import torch
from ase.data import chemical_symbols

from .._noise import hidden_warnings
from ..errors import E0Error, E0InputError, E0ModelError, E0WriteError, as_option
from ..glue import (SAMPLE_SIZE, default_device, model_atomic_numbers, model_heads, read_e0s, read_model,
                    read_provenance, set_provenance, write_e0s)
from ..io import (Outputs, estimate_report, format_check, format_diagnosis, format_estimate, format_provenance,
                  plot_diagnosis, read_e0s_or_report, write_outputs)
from ._check import check_e0s
from ._diagnose import diagnose as run_diagnosis
from ..services import FLAG, OPTIONS, POSITIONAL, checked, cli_spelling, default_workers
from ..services import EstimateRequest, estimate_sequence, resolve_model

PROG = "mace-e0"
DESCRIPTION = "Estimate, inspect and apply the E0s of a MACE model without starting a training run."
# Exit statuses, one per outcome, and the one table of what each means: in general, and for the
# commands whose outcome it reports. --help, each command's description and docs/options.md are
# built from it.
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 3
EXIT_MODEL_DOES_NOT_FIT = 4
EXIT_OUTSIDE = 5
EXIT_FLAGGED = 6
EXIT_CODES = {E0InputError: EXIT_BAD_INPUT, E0WriteError: EXIT_WRITE_FAILED, E0ModelError: EXIT_MODEL_DOES_NOT_FIT}
# code: (what it means for every command, or "" where it is only some commands'; {command: what it means there})
EXIT_TABLE = {
    EXIT_OK: ("done", {"check": "every config lies inside", "diagnose": "nothing is flagged"}),
    EXIT_CRASH: ("an unexpected error (--traceback shows it)", {}),
    EXIT_BAD_INPUT: ("bad input (E0InputError): a file, an option or the data", {}),
    EXIT_WRITE_FAILED: ("an output could not be written (E0WriteError): nothing was, and any old file is unchanged",
                        {}),
    EXIT_MODEL_DOES_NOT_FIT: ("the model or a checkpoint does not fit (E0ModelError): not a MACE model with E0s, or "
                              "its energy is not its E0 sum plus an interaction energy", {}),
    EXIT_OUTSIDE: ("", {"check": "some configs lie outside the element combinations the E0s were fitted on"}),
    EXIT_FLAGGED: ("", {"diagnose": "an element's E0 or force scale, or a label, is flagged"}),
}


def _meaning(general: str, by_command) -> str:
    """One line for every command: 'done; for check, ...' or 'check: ...'."""
    if general:
        return "; ".join([general] + [f"for {command}, {text}" for command, text in by_command.items()])
    return "; ".join(f"{command}: {text}" for command, text in by_command.items())


EXIT_MEANINGS = {code: _meaning(*entry) for code, entry in EXIT_TABLE.items()}
EXIT_STATUSES = "exit status: " + "; ".join(f"{code} {text}" for code, text in EXIT_MEANINGS.items()) + "."


def command_exit_statuses(command: str) -> str:
    """The exit statuses ``command`` ends with, each in what it means there."""
    statuses = [f"{code} {by_command.get(command) or general}" for code, (general, by_command) in EXIT_TABLE.items()
                if general or command in by_command]
    return "Exit status: " + "; ".join(statuses) + "."


# -- estimate -------------------------------------------------------------------------------------
def estimate(args) -> int:
    outputs = Outputs(report=args.output, e0s_json=args.e0s_json, figure=args.plot)
    outputs.refuse_overwrite(args.force)
    distributed, rank = _start_distributed(args.device)
    steps = estimate_sequence(EstimateRequest(
        args.model, args.data, args.energy_key, prior=args.prior, head=args.head, weighting=args.weighting,
        max_configs=args.max_configs, exclude_suspicious=args.exclude_suspicious, device=args.device,
        pass_dtype=args.dtype, batch_size=args.batch_size, num_workers=args.num_workers, distributed=distributed,
        progress=rank == 0, sample_size=SAMPLE_SIZE if args.plot else 0))
    if rank != 0:
        return EXIT_OK
    print(f"prior: {steps.head_estimate.prior_record.source}"
          + (f" (it lacks {_symbols(steps.lacking)}, which keep the model's E0s)" if steps.lacking else ""))
    print(format_estimate(steps.estimate))
    written = write_outputs(outputs, estimate_report(steps.estimate), steps.estimate)
    if "report" in written:
        print(f"report: {written['report']}")
    if "e0s_json" in written:
        print(f"E0s for mace_run_train --E0s={written['e0s_json']}")
    if f"figure {steps.head}" in written:
        print(f"figure: {written[f'figure {steps.head}']}")
    return EXIT_OK


def _start_distributed(device: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group; every rank takes a shard."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, 0
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend)
    return True, torch.distributed.get_rank()


def _symbols(numbers) -> str:
    return ", ".join(chemical_symbols[z] for z in numbers)


# -- show -----------------------------------------------------------------------------------------
def show(args) -> int:
    model = read_model(args.model)
    provenance = read_provenance(model)
    heads = model_heads(model)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    print(f"{args.model}: {type(model).__name__}, {dtype}, r_max {float(model.r_max):g} A, "
          f"heads: {', '.join(heads)}")
    numbers = model_atomic_numbers(model)
    for index, head in enumerate(heads):
        print(f"head '{head}'")
        print(f"  {format_provenance(provenance.get(head))}")
        print(f"  {'El':<3} {'Z':>3}  {'E0 / eV':>24}")
        for z, e0 in zip(numbers, read_e0s(model, index)):
            print(f"  {chemical_symbols[z]:<3} {z:>3}  {e0!r:>24}")
    return EXIT_OK


# -- apply ----------------------------------------------------------------------------------------
def apply(args) -> int:
    outputs = Outputs(model=args.output)
    outputs.refuse_overwrite(args.force, inputs={"MODEL": args.model})
    model, head, index = resolve_model(args.model, args.head, device="cpu")
    new, provenance = read_e0s_or_report(args.e0s, head)
    numbers = model_atomic_numbers(model)
    unknown = sorted(set(new) - set(numbers))
    if unknown:
        raise E0InputError("{e0s}: the model has no {unknown}; it has {numbers}.", e0s=as_option(args.e0s),
                           unknown=_symbols(unknown), numbers=_symbols(numbers))
    row = [new.get(z, old) for z, old in zip(numbers, read_e0s(model, index))]
    write_e0s(model, index, row)
    # A plain {Z: eV} file says nothing of where its E0s come from: the old provenance no longer holds.
    set_provenance(model, {head: provenance})
    write_outputs(outputs, model=model)
    kept = [chemical_symbols[z] for z in numbers if z not in new]
    print(f"wrote {args.output}: head '{head}' with the E0s of {_symbols([z for z in numbers if z in new])}"
          + (f"; kept {', '.join(kept)}" if kept else "")
          + ("; with the report's E0 provenance" if provenance else ""))
    return EXIT_OK


# -- check ----------------------------------------------------------------------------------------
def check(args) -> int:
    outputs = Outputs(report=args.output)
    outputs.refuse_overwrite(args.force)
    result = check_e0s(args.model, args.data, args.head, model_name=f"MODEL {args.model}")
    print(format_check(result))
    written = write_outputs(outputs, result)
    if "report" in written:
        print(f"check: {written['report']}")
    return EXIT_OUTSIDE if any(h["n_outside"] for h in result["heads"].values()) else EXIT_OK


# -- diagnose -------------------------------------------------------------------------------------
def diagnose(args) -> int:
    outputs = Outputs(report=args.output, figure=args.plot)
    outputs.refuse_overwrite(args.force)
    diagnosis = run_diagnosis(args.model, args.data, args.energy_key, args.forces_key, args.prior, args.head,
                              batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                              num_workers=args.num_workers)
    print(format_diagnosis(diagnosis))
    written = write_outputs(outputs, diagnosis.to_dict(), draw=lambda path: plot_diagnosis(path, diagnosis))
    if "report" in written:
        print(f"diagnosis: {written['report']}")
    if "figure" in written:
        print(f"figure: {written['figure']}")
    flagged = diagnosis.entry["flagged"]
    return EXIT_FLAGGED if flagged["energy"] or flagged["forces"] or diagnosis.entry["suspicious_configs"] else EXIT_OK


# -- parser ---------------------------------------------------------------------------------------
def _add(command, name: str, help: Optional[str] = None, **settings) -> None:  # pylint: disable=redefined-builtin
    """One option as its declaration says: values stay text here and are checked after parsing,
    so that a bad one is one line, like every other bad input."""
    option = OPTIONS[name]
    text = help or option.help
    if option.choices:
        text += f" ({' | '.join(option.choices)})"
    if option.kind == POSITIONAL:
        command.add_argument(name, metavar=option.cli, help=text, **settings)
    elif option.kind == FLAG:
        command.add_argument(option.cli_flag, dest=name, action="store_true", help=text)
    else:
        command.add_argument(option.cli_flag, dest=name, default=None, metavar=option.metavar, help=text, **settings)


def _add_pass_options(command) -> None:
    for name in ("batch_size", "num_workers", "device", "dtype"):
        _add(command, name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EXIT_STATUSES)
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an unexpected error")
    parser.add_argument("--verbose", action="store_true", help="also show mace's, e3nn's and torch's own notices")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command = commands.add_parser("estimate", help="re-estimate a model's E0s on data")
    command.set_defaults(handler=estimate)
    _add(command, "model")
    _add(command, "data", nargs="+")
    _add(command, "energy_key", required=True)
    for name in ("head", "prior", "weighting", "max_configs", "exclude_suspicious"):
        _add(command, name)
    _add_pass_options(command)
    _add(command, "output", help="write the JSON report here")
    _add(command, "e0s_json")
    _add(command, "plot")
    _add(command, "force")

    command = commands.add_parser("show", help="print a model's E0s per head and element")
    command.set_defaults(handler=show)
    _add(command, "model")

    command = commands.add_parser("apply", help="copy a model with one head's E0s replaced")
    command.set_defaults(handler=apply)
    _add(command, "model")
    _add(command, "e0s")
    _add(command, "output", help="the new model file", required=True)
    _add(command, "head", help="the head whose E0s to replace (default: mace's)")
    _add(command, "force", help="write over an existing file, MODEL included")

    command = commands.add_parser(
        "check", help="find configs outside the element combinations a model's E0s were fitted on",
        description=command_exit_statuses("check"))
    command.set_defaults(handler=check)
    _add(command, "model")
    _add(command, "data", nargs="+")
    _add(command, "head", help="the head to check (default: mace's)")
    _add(command, "output")
    _add(command, "force")

    command = commands.add_parser(
        "diagnose", help="per element: the E0 correction the data ask for, the force slope, isolated atoms",
        description=command_exit_statuses("diagnose"))
    command.set_defaults(handler=diagnose)
    _add(command, "model")
    _add(command, "data", nargs="+")
    _add(command, "energy_key", required=True)
    _add(command, "forces_key", required=True)
    _add(command, "prior", help="E0s to show each of the model's beside, and the prior of its fit: the one "
                                "you would estimate with (an extxyz of isolated atoms at DATA's level, a JSON {Z: eV}); "
                                "default: DATA's IsolatedAtom frames if any, else the model's own E0s")
    _add(command, "head")
    _add_pass_options(command)
    _add(command, "output", help="write the diagnosis (DIAG.json) here")
    _add(command, "plot")
    _add(command, "force")
    return parser


def _checked_args(args) -> argparse.Namespace:
    """Every declared option of the command checked and given its default; the automatic ones
    (device, workers) decided here."""
    given = {name: getattr(args, name) for name in OPTIONS if hasattr(args, name)}
    for name, value in checked(**given).items():
        setattr(args, name, value)
    if hasattr(args, "device") and args.device is None:
        args.device = default_device()
    if hasattr(args, "num_workers") and args.num_workers is None:
        args.num_workers = default_workers()
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """mace-e0 in this process (the command itself starts at ``mace_e0_plugin.__main__``, which
    also hides mace's import-time print)."""
    args = build_parser().parse_args(argv)
    try:
        with hidden_warnings(args.verbose):
            return args.handler(_checked_args(args))
    except E0Error as error:
        print(f"{PROG}: error: {error.render(cli_spelling)}", file=sys.stderr)
        return next(code for cls, code in EXIT_CODES.items() if isinstance(error, cls))
    except Exception as error:  # one line, not a traceback, unless asked for
        if args.traceback:
            raise
        print(f"{PROG}: error: {type(error).__name__}: {error} (--traceback for details)", file=sys.stderr)
        return EXIT_CRASH
