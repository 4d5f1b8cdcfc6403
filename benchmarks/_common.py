"""Shared by the benchmarks: real inputs from ../shared, the machine's description, the command
line and RESULTS.md section of each run, `mace-e0` in this process, and the pieces of the fine-tune
benchmarks (mace_run_train's arguments, its timing, its log and the plugin's report, seeded
splits, a model's E0s, scoring a saved .model on a fixed set)."""

import contextlib
import datetime
import io
import os
import platform
import re
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
RESULTS = HERE / "RESULTS.md"
HEAD = "Default"  # the fine-tuning head of every fine-tune here
RUN_NAME = "ft"  # mace_run_train --name of every fine-tune here

for noise in ("Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "The TorchScript type system",
              "'pin_memory' argument"):
    warnings.filterwarnings("ignore", message=noise)


# ---------------------------------------------------------------- inputs


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        sys.exit(f"this benchmark needs ../shared/{'/'.join(parts)} (real models and data), which is absent")
    return path


def frames(parts, isolated: bool = False) -> list:
    """The ase frames of a file in ../shared/data: those that are not IsolatedAtom (or, isolated=True, only those)."""
    import ase.io

    return [a for a in ase.io.read(shared("data", *parts), ":")
            if (a.info.get("config_type") == "IsolatedAtom") == isolated]


def seeded_subsets(configs, sizes, seed: int = 0):
    """Consecutive slices of one seeded permutation of configs, one list per size."""
    if sum(sizes) > len(configs):
        sys.exit(f"{len(configs)} configs, fewer than {' + '.join(map(str, sizes))}")
    order = np.random.default_rng(seed).permutation(len(configs))
    out, start = [], 0
    for size in sizes:
        out.append([configs[i] for i in order[start:start + size]])
        start += size
    return out


# ---------------------------------------------------------------- what a run says about itself


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model_names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = model_names[0] if model_names else cpu
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    else:
        text += ", no GPU"
    return text


def versions() -> str:
    import mace
    import torch

    import mace_e0_plugin

    return (f"python {platform.python_version()}, torch {torch.__version__}, mace-torch {mace.__version__}, "
            f"mace-e0-plugin {mace_e0_plugin.__version__}")


def command_line(script: str, parser, options, always=(), skip=()) -> str:
    """`python benchmarks/<script>` with every option that differs from its default (and those in
    always): the command that reproduces a run. A flag set to True is written alone."""
    words = [f"python benchmarks/{script}"]
    for name, value in vars(options).items():
        if name in skip or value is None or value is False or (
                name not in always and value == parser.get_default(name)):
            continue
        words.append(f"--{name.replace('_', '-')}")
        if value is not True:
            words.append(" ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    return " ".join(words)


def _marked(name: str):
    return re.compile(rf"<!-- {re.escape(name)} -->(.*?)<!-- /{re.escape(name)} -->\n?", re.S)


def record(name: str, command: str, body: str) -> None:
    """Replace this benchmark's section of RESULTS.md (created if absent) and print it."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (f"<!-- {name} -->\n## {name}\n\n`{command}`, {stamp}\n\n- machine: {machine()}\n"
               f"- versions: {versions()}\n\n{body.strip()}\n<!-- /{name} -->\n")
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmark results\n\nEach section is rewritten by the command it names; ratios are measured "
        "within one run of that command.\n\n")
    pattern = _marked(name)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + section + "\n"
    RESULTS.write_text(text)
    print(section)


def recorded(name: str) -> str:
    """The text of a section of RESULTS.md, as its command last wrote it."""
    match = _marked(name).search(RESULTS.read_text())
    if match is None:
        raise SystemExit(f"{RESULTS}: no section '{name}'; run the command that writes it first")
    return match.group(1)


# ---------------------------------------------------------------- timing


def best_of_interleaved(repeats: int, *functions) -> list:
    """The fastest of a few runs of each function, in seconds, run in turn (a, b, a, b, ...) so
    that a slow spell of the machine hits all of them alike."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, spent in zip(functions, times):
            started = time.perf_counter()
            function()
            spent.append(time.perf_counter() - started)
    return [min(spent) for spent in times]


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def mace_e0(argv) -> int:
    """`mace-e0 ARGV` in this process (the command's own entry point); its exit status."""
    from mace_e0_plugin.__main__ import main

    return main([str(a) for a in argv])


def run_checked(argv, what: str) -> subprocess.CompletedProcess:
    """Run a command (each argument str()-ed); exit with the tail of its stderr if it fails."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{what} failed ({' '.join(map(str, argv))}):\n{result.stderr[-4000:]}")
    return result


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (Linux /proc/stat; nan elsewhere)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed_run(argv, what: str):
    """Run a command as run_checked does; (its wall seconds, its CPU seconds, the share of all the
    machine's cores that other processes used meanwhile)."""
    before, busy_before, started = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu_seconds(), time.perf_counter()
    run_checked(argv, what)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, max(0.0, busy_cpu_seconds() - busy_before - cpu) / (wall * os.cpu_count())


# ---------------------------------------------------------------- fine-tunes


def finetune_args(work, foundation, train, valid, energy_key: str, *, epochs, batch_size, valid_batch_size,
                  device: str = "cpu", dtype: str = "float64", seed=1) -> list:
    """The mace_run_train arguments (program name left out) every fine-tune here passes: valid is a
    file, or a float for --valid_fraction."""
    valid_args = ["--valid_fraction", valid] if isinstance(valid, float) else ["--valid_file", valid]
    return [str(a) for a in [
        "--name", RUN_NAME, "--work_dir", work, "--seed", seed, "--foundation_model", foundation,
        "--train_file", train, *valid_args, "--energy_key", energy_key, "--max_num_epochs", epochs,
        "--batch_size", batch_size, "--valid_batch_size", valid_batch_size, "--device", device,
        "--default_dtype", dtype, "--plot", "False"]]


def epoch_stamps(log: str, head: str = HEAD) -> list:
    """The times (s) of mace's validation lines for a head, "Initial" then each "Epoch N"."""
    return [datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp() for stamp in
            re.findall(rf"^(\S+ \S+) INFO: (?:Initial|Epoch \d+): head: {head},", log, re.M)]


def initial_errors(log: str, head: str = HEAD):
    """mace's "Initial" validation errors of a head, before the first epoch: (E meV/atom, F meV/A), nan if absent."""
    found = re.search(rf"Initial: head: {head}, .*?RMSE_E_per_atom=\s*([-0-9.naif]+) meV, "
                      rf"RMSE_F=\s*([-0-9.naif]+) meV", log)
    return (float(found.group(1)), float(found.group(2))) if found else (float("nan"), float("nan"))


def linear_system_report(work: Path) -> dict:
    """The plugin's JSON report of a fine-tune in work ({} if it wrote none)."""
    import json

    path = Path(work) / "results" / f"{RUN_NAME}_E0s_linear_system.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ---------------------------------------------------------------- models


def load_model(path: Path, device: str = "cpu"):
    import torch

    return torch.load(path, map_location=device, weights_only=False)


def model_e0s(model, head: str = HEAD) -> dict:
    """{Z: eV} of a model (or a path to one) for a head (old single-head models: their one row)."""
    if not hasattr(model, "atomic_energies_fn"):
        model = load_model(model)
    energies = model.atomic_energies_fn.atomic_energies.detach().double().cpu().numpy()
    if energies.ndim > 1:
        heads = list(getattr(model, "heads", None) or [HEAD])
        energies = energies[heads.index(head) if head in heads else 0]
    return {int(z): float(e) for z, e in zip(model.atomic_numbers, energies)}


def loader_of(model, configs, batch_size: int, head: str = None, energy_key: str = None, forces_key: str = None):
    """mace's batches of ase configs for a model and one of its heads (default: its first), graphs
    in the model's dtype; with energy_key (and forces_key), labelled as mace_run_train labels them."""
    import torch
    from mace import data
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

    heads = list(getattr(model, "heads", None) or ["Default"])
    head = head or heads[0]
    if head not in heads:
        raise ValueError(f"head {head!r} not in the model's heads {heads}")
    keys = data.KeySpecification()
    if energy_key:
        keys = data.KeySpecification.from_defaults()
        keys.update(info_keys={"energy": energy_key}, arrays_keys={"forces": forces_key} if forces_key else {})
    z_table = AtomicNumberTable([int(z) for z in model.atomic_numbers])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(next(model.parameters()).dtype)
    try:
        graphs = [data.AtomicData.from_config(data.config_from_atoms(atoms, key_specification=keys, head_name=head),
                                              z_table=z_table, cutoff=float(model.r_max), heads=heads)
                  for atoms in configs]
    finally:
        torch.set_default_dtype(previous)
    return torch_geometric.dataloader.DataLoader(graphs, batch_size=batch_size, shuffle=False, drop_last=False)


def evaluate(path: Path, configs, energy_key: str, forces_key: str, device: str, batch_size: int,
             forces: bool = True, head: str = None):
    """(energy RMSE in meV/atom, force RMSE in meV/A, seconds) of a saved model on ase configs,
    with the model's own E0s; the force RMSE is nan when forces=False."""
    import torch

    model = load_model(path, device)
    model.eval()
    loader = loader_of(model, configs, batch_size, head)
    energies, force_blocks = [], []
    started = time.perf_counter()
    with torch.set_grad_enabled(forces):
        for batch in loader:
            output = model(batch.to(device).to_dict(), training=False, compute_force=forces)
            energies.extend(output["energy"].detach().double().cpu().tolist())
            if forces:
                force_blocks.append(output["forces"].detach().double().cpu().numpy())
    seconds = time.perf_counter() - started
    atoms = np.array([len(a) for a in configs])
    reference = np.array([a.info[energy_key] for a in configs])
    e_rmse = 1000 * float(np.sqrt(np.mean(((np.array(energies) - reference) / atoms) ** 2)))
    f_rmse = float("nan")
    if forces:
        reference_f = np.concatenate([a.arrays[forces_key] for a in configs])
        f_rmse = 1000 * float(np.sqrt(np.mean((np.concatenate(force_blocks) - reference_f) ** 2)))
    return e_rmse, f_rmse, seconds


# ---------------------------------------------------------------- output


def fmt(x, spec=".2f"):
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def pyplot():
    """matplotlib's pyplot, drawing to files only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
