"""Shared by the benchmarks: real inputs from ../shared, the machine's description, the
RESULTS.md section each benchmark rewrites with its figures, and the pieces of the fine-tune
benchmarks (running mace_run_train, seeded splits, scoring a saved .model on a fixed set)."""

import contextlib
import datetime
import io
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
RESULTS = HERE / "RESULTS.md"

for noise in ("Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "The TorchScript type system",
              "'pin_memory' argument"):
    warnings.filterwarnings("ignore", message=noise)


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        sys.exit(f"this benchmark needs ../shared/{'/'.join(parts)} (real models and data), which is absent")
    return path


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


def record(name: str, command: str, body: str) -> None:
    """Replace this benchmark's section of RESULTS.md (created if absent) and print it."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (f"<!-- {name} -->\n## {name}\n\n`{command}`, {stamp}\n\n- machine: {machine()}\n"
               f"- versions: {versions()}\n\n{body.strip()}\n<!-- /{name} -->\n")
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmark results\n\nEach section is rewritten by the command it names; ratios are measured "
        "within one run of that command.\n\n")
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + section + "\n"
    RESULTS.write_text(text)
    print(section)


def run_checked(argv, what: str) -> subprocess.CompletedProcess:
    """Run a command (each argument str()-ed); exit with the tail of its stderr if it fails."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{what} failed ({' '.join(map(str, argv))}):\n{result.stderr[-4000:]}")
    return result


def fmt(x, spec=".2f"):
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def seeded_subsets(frames, sizes, seed: int = 0):
    """Consecutive slices of one seeded permutation of frames, one list per size."""
    if sum(sizes) > len(frames):
        sys.exit(f"{len(frames)} configs, fewer than {' + '.join(map(str, sizes))}")
    order = np.random.default_rng(seed).permutation(len(frames))
    out, start = [], 0
    for size in sizes:
        out.append([frames[i] for i in order[start:start + size]])
        start += size
    return out


def load_model(path: Path, device: str = "cpu"):
    import torch

    return torch.load(path, map_location=device, weights_only=False)


def graphs_of(model, configs, head: str = None):
    """mace graphs of ase configs for a model, for one of its heads (default: its first)."""
    import torch
    from mace import data
    from mace.tools.utils import AtomicNumberTable

    heads = list(getattr(model, "heads", None) or ["Default"])
    head = head or heads[0]
    if head not in heads:
        raise ValueError(f"head {head!r} not in the model's heads {heads}")
    z_table = AtomicNumberTable([int(z) for z in model.atomic_numbers])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(next(model.parameters()).dtype)
    try:
        return [data.AtomicData.from_config(
            data.config_from_atoms(atoms, key_specification=data.KeySpecification(), head_name=head),
            z_table=z_table, cutoff=float(model.r_max), heads=heads) for atoms in configs]
    finally:
        torch.set_default_dtype(previous)


def evaluate(path: Path, configs, energy_key: str, forces_key: str, device: str, batch_size: int,
             forces: bool = True, head: str = None):
    """(energy RMSE in meV/atom, force RMSE in meV/A, seconds) of a saved model on ase configs,
    with the model's own E0s; the force RMSE is nan when forces=False."""
    import torch
    from mace.tools import torch_geometric

    model = load_model(path, device)
    model.eval()
    loader = torch_geometric.dataloader.DataLoader(graphs_of(model, configs, head), batch_size=batch_size,
                                                   shuffle=False, drop_last=False)
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
