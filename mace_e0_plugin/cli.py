"""``mace-e0``: estimate, inspect and apply E0s without starting a training run.

    mace-e0 estimate MODEL DATA [DATA ...] --energy-key KEY [options]
    mace-e0 show MODEL
    mace-e0 apply MODEL E0S.json|REPORT.json --output NEW.model [--head NAME]
    mace-e0 check MODEL DATA [DATA ...] [--head NAME] [--output CHECK.json]
    mace-e0 diagnose MODEL DATA [DATA ...] --energy-key KEY --forces-key KEY [options]

``estimate`` goes through the same collection and solve as ``mace_run_train --E0s=linear_system``,
and writes the same report. Under ``torchrun --nproc_per_node=K`` it shards the data.
"""

import argparse
import os
import sys
import warnings
from typing import List, Optional

from .errors import E0InputError

PROG = "mace-e0"
EXIT_OUTSIDE = 3  # check: some configs lie outside what the E0s were fitted on (2: bad input, 1: a crash)
EXIT_FLAGGED = 3  # diagnose: some element's E0 or force scale is flagged (the same "look at this" status)


# -- estimate -------------------------------------------------------------------------------------
def estimate(args) -> int:
    import torch
    from ase.data import chemical_symbols

    from .estimate import estimate_e0s
    from .models import model_heads, select_head
    from .pipeline import Outputs, build_request, data_from, model_from, prior_from, write_outputs
    from .plot import SAMPLE_SIZE
    from .report import format_estimate

    if args.num_workers is None:
        args.num_workers = default_workers()
    outputs = Outputs(report=args.output, e0s_json=args.e0s_json, figure=args.plot)
    _refuse_overwrite(outputs.paths(), args.force)
    prior = prior_from(args.prior, args.energy_key, "--prior")
    distributed, rank = _start_distributed(args.device)
    # Graphs in float64, so that reference energies keep every digit; the model runs in its own
    # dtype (or --dtype), and the E0 part of its energy is summed in float64 (collect.py).
    torch.set_default_dtype(torch.float64)
    model = model_from(args.model, args.device, args.dtype)
    heads = model_heads(model)
    head = heads[select_head(heads, args.head)]
    data = data_from(args.data, model, head, args.energy_key)
    request, prior_info, lacking = build_request(model, head, data, prior, weighting=args.weighting,
                                                 max_configs=args.max_configs, se_tolerance=args.se_tolerance,
                                                 seed=args.seed)
    result = estimate_e0s(model, [request], args.device, batch_size=args.batch_size,
                          num_workers=args.num_workers, distributed=distributed, progress=rank == 0,
                          sample_limit=SAMPLE_SIZE if args.plot else 0)
    if rank != 0:
        return 0
    symbols = ", ".join(chemical_symbols[z] for z in lacking)
    print(f"prior: {prior_info['source']}" + (f" (it lacks {symbols}, which keep the model's E0s)" if lacking else ""))
    print(format_estimate(result))
    written = write_outputs(outputs, result.to_dict(), result)
    if "report" in written:
        print(f"report: {written['report']}")
    if "e0s_json" in written:
        print(f"E0s for mace_run_train --E0s={written['e0s_json']}")
    if f"figure {head}" in written:
        print(f"figure: {written[f'figure {head}']}")
    return 0


def default_workers() -> int:
    """Build graphs in workers, overlapped with inference, only where cores are left for both."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores < 4 else min(4, cores // 4)


def _start_distributed(device: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group; every rank takes a shard."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, 0
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend)
    return True, torch.distributed.get_rank()


def _refuse_overwrite(paths: List[str], force: bool) -> None:
    for path in paths:
        if os.path.exists(path) and not force:
            raise E0InputError(f"{path} exists; pass --force to write over it.")


# -- show -----------------------------------------------------------------------------------------
def show(args) -> int:
    from ase.data import chemical_symbols

    from .datasets import read_model
    from .models import model_atomic_numbers, model_heads, read_e0s
    from .provenance import format_provenance, read_provenance

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
    return 0


# -- apply ----------------------------------------------------------------------------------------
def apply(args) -> int:
    from ase.data import chemical_symbols

    from .datasets import read_model
    from .files import save_torch
    from .models import model_atomic_numbers, model_heads, read_e0s, select_head, write_e0s
    from .provenance import set_provenance

    if os.path.exists(args.output) and not args.force:
        same = os.path.exists(args.model) and os.path.samefile(args.output, args.model)
        raise E0InputError(f"--output {args.output} {'is MODEL itself' if same else 'exists'}; "
                           "pass --force to write over it.")
    model = read_model(args.model)
    heads = model_heads(model)
    index = select_head(heads, args.head)
    new, provenance = _read_e0s_or_report(args.e0s, heads[index])
    numbers = model_atomic_numbers(model)
    unknown = sorted(set(new) - set(numbers))
    if unknown:
        raise E0InputError(f"E0S {args.e0s}: the model has no {', '.join(chemical_symbols[z] for z in unknown)}; "
                           f"it has {', '.join(chemical_symbols[z] for z in numbers)}.")
    row = [new.get(z, old) for z, old in zip(numbers, read_e0s(model, index))]
    write_e0s(model, index, row)
    # A plain {Z: eV} file says nothing of where its E0s come from: the old provenance no longer holds.
    set_provenance(model, {heads[index]: provenance})
    save_torch(args.output, model)
    kept = [chemical_symbols[z] for z in numbers if z not in new]
    print(f"wrote {args.output}: head '{heads[index]}' with the E0s of "
          f"{', '.join(chemical_symbols[z] for z in numbers if z in new)}"
          + (f"; kept {', '.join(kept)}" if kept else "")
          + ("; with the report's E0 provenance" if provenance else ""))
    return 0


def _read_e0s_or_report(path: str, head: str):
    """({Z: eV}, provenance or None) from a plain E0s file or an estimate's report. A report's
    head of the same name is taken, else its only head."""
    import json

    from .priors import read_e0s_json
    from .provenance import from_report

    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError):
        content = None  # read_e0s_json says what is wrong with it
    if not (isinstance(content, dict) and "heads" in content):
        return read_e0s_json(path, "E0S"), None
    provenance = from_report(content, f"REPORT {path}")
    names = list(provenance)
    name = head if head in provenance else (names[0] if len(names) == 1 else None)
    if name is None:
        raise E0InputError(f"REPORT {path}: no head '{head}' among its heads {', '.join(names)}; "
                           "pass --head with one of them.")
    e0s = {int(z): float(e) for z, e in content["heads"][name]["E0s"].items()}
    return e0s, provenance[name]


# -- check ----------------------------------------------------------------------------------------
def check(args) -> int:
    from .check import check_e0s, format_check
    from .datasets import read_model
    from .files import write_json

    _refuse_overwrite([args.output] if args.output else [], args.force)
    result = check_e0s(read_model(args.model), args.data, args.head, model_name=f"MODEL {args.model}")
    print(format_check(result))
    if args.output:
        print(f"check: {write_json(args.output, result)}")
    return EXIT_OUTSIDE if any(h["n_outside"] for h in result["heads"].values()) else 0


# -- diagnose -------------------------------------------------------------------------------------
def diagnose(args) -> int:
    from .diagnose import diagnose as run_diagnosis, format_diagnosis
    from .pipeline import Outputs, write_outputs
    from .plot_diagnosis import plot_diagnosis

    if args.num_workers is None:
        args.num_workers = default_workers()
    outputs = Outputs(report=args.output, figure=args.plot)
    _refuse_overwrite(outputs.paths(), args.force)
    diagnosis = run_diagnosis(args.model, args.data, args.energy_key, args.forces_key, args.isolated_atoms,
                              args.head, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                              num_workers=args.num_workers, option="--isolated-atoms")
    print(format_diagnosis(diagnosis))
    written = write_outputs(outputs, diagnosis.to_dict(), draw=lambda path: plot_diagnosis(path, diagnosis))
    if "report" in written:
        print(f"diagnosis: {written['report']}")
    if "figure" in written:
        print(f"figure: {written['figure']}")
    flagged = diagnosis.entry["flagged"]
    return EXIT_FLAGGED if flagged["energy"] or flagged["forces"] else 0


# -- parser ---------------------------------------------------------------------------------------
def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command = commands.add_parser("estimate", help="re-estimate a model's E0s on data")
    command.set_defaults(run=estimate)
    command.add_argument("model", metavar="MODEL", help="a MACE .model file")
    command.add_argument("data", metavar="DATA", nargs="+", help="extxyz (or any ASE format), MACE h5, or LMDB")
    command.add_argument("--energy-key", required=True, help="info key of the reference energy in extxyz DATA")
    command.add_argument("--head", help="head of a multihead model (default: mace's, the first that is not pt_head)")
    command.add_argument("--prior", default=None,
                         help="'foundation' (the model's E0s), a JSON {Z: eV}, or an extxyz of isolated atoms; "
                              "default: DATA's config_type=IsolatedAtom frames if any, else 'foundation'")
    command.add_argument("--weighting", default="per_atom", choices=["per_atom", "total"],
                         help="per_atom: MACE's energy loss (default); total: unweighted total energies")
    command.add_argument("--max-configs", type=_positive(int), default=None,
                         help="use a composition-stratified sample of at most this many configs")
    command.add_argument("--se-tolerance", type=_positive(float), default=None, metavar="EV",
                         help="stop early once every determined E0's standard error is below EV")
    command.add_argument("--seed", type=int, default=0, help="seed of the stratified sample")
    command.add_argument("--batch-size", type=_positive(int), default=32)
    command.add_argument("--num-workers", type=int, default=None,
                         help="DataLoader workers that build the graphs while the model runs "
                              "(default: 0 below 4 cores, else a quarter of them, at most 4)")
    command.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    command.add_argument("--dtype", default=None, choices=["float32", "float64"],
                         help="run the model in this dtype (default: its own; the solve is float64 either way)")
    command.add_argument("--output", help="write the JSON report here")
    command.add_argument("--e0s-json", help="write {Z: eV} here, for mace_run_train --E0s=FILE")
    command.add_argument("--plot", help="write a figure (PNG) here")
    command.add_argument("--force", action="store_true", help="write over existing outputs")

    command = commands.add_parser("show", help="print a model's E0s per head and element")
    command.set_defaults(run=show)
    command.add_argument("model", metavar="MODEL")

    command = commands.add_parser("apply", help="copy a model with one head's E0s replaced")
    command.set_defaults(run=apply)
    command.add_argument("model", metavar="MODEL")
    command.add_argument("e0s", metavar="E0S.json", help="{Z: eV}, as written by estimate --e0s-json, or the "
                         "estimate's report (estimate --output), whose provenance the new model then carries")
    command.add_argument("--output", required=True, help="the new model file")
    command.add_argument("--head", help="the head whose E0s to replace (default: mace's)")
    command.add_argument("--force", action="store_true", help="write over an existing file, MODEL included")

    command = commands.add_parser(
        "check", help="find configs outside the element combinations a model's E0s were fitted on",
        description=f"Exit status: 0 if every config lies inside, {EXIT_OUTSIDE} if some lie outside "
                    "(their energies rest on the prior), 2 on bad input or a model without E0 provenance.")
    command.set_defaults(run=check)
    command.add_argument("model", metavar="MODEL")
    command.add_argument("data", metavar="DATA", nargs="+", help="extxyz (or any ASE format), MACE h5, or LMDB")
    command.add_argument("--head", help="the head to check (default: mace's)")
    command.add_argument("--output", help="write the JSON result here")
    command.add_argument("--force", action="store_true", help="write over an existing --output")

    command = commands.add_parser(
        "diagnose", help="per element: the E0 correction the data ask for, the force slope, isolated atoms",
        description=f"Exit status: 0 if nothing is flagged, {EXIT_FLAGGED} if an element's E0 or force scale is "
                    "flagged, 2 on bad input, 1 on an unexpected error.")
    command.set_defaults(run=diagnose)
    command.add_argument("model", metavar="MODEL", help="a MACE .model file")
    command.add_argument("data", metavar="DATA", nargs="+", help="extxyz (or any ASE format), MACE h5, or LMDB")
    command.add_argument("--energy-key", required=True, help="info key of the reference energy in extxyz DATA")
    command.add_argument("--forces-key", required=True, help="arrays key of the reference forces in extxyz DATA")
    command.add_argument("--isolated-atoms", default=None, metavar="FILE",
                         help="isolated-atom energies at DATA's level of theory: an extxyz of isolated atoms "
                              "(energy under --energy-key) or a JSON {Z: eV}; default: DATA's IsolatedAtom frames")
    command.add_argument("--head", help="head of a multihead model (default: mace's)")
    command.add_argument("--batch-size", type=_positive(int), default=32)
    command.add_argument("--num-workers", type=int, default=None, help="as for estimate")
    command.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    command.add_argument("--dtype", default=None, choices=["float32", "float64"],
                         help="run the model in this dtype (default: its own)")
    command.add_argument("--output", metavar="DIAG.json", help="write the diagnosis here")
    command.add_argument("--plot", metavar="FIGURE.png", help="write the figure (PNG) here")
    command.add_argument("--force", action="store_true", help="write over existing outputs")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for noise in ("Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "The TorchScript type system"):
        warnings.filterwarnings("ignore", message=noise)  # mace's and e3nn's, not the user's concern
    if getattr(args, "device", "cpu") is None:
        from .pipeline import default_device

        args.device = default_device()
    try:
        return args.run(args)
    except E0InputError as error:
        print(f"{PROG}: error: {error.message}", file=sys.stderr)
        return 2
    except Exception as error:  # one line, not a traceback, unless asked for
        if args.traceback:
            raise
        print(f"{PROG}: error: {type(error).__name__}: {error} (--traceback for details)", file=sys.stderr)
        return 1
